//! The mount table (/proc/self/mountinfo): what is mounted where, and whether a
//! mountpoint is a live unionmount, a dead one (its daemon gone: ENOTCONN) or else.

use std::io;
use std::path::{Path, PathBuf};

/// Unescape the octal escapes (`\040`) /proc/self/mountinfo uses in paths.
fn unescape_mountinfo(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (s[i + 1] - b'0') as u32 * 64 + (s[i + 2] - b'0') as u32 * 8 + (s[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The filesystem types mounted at `path` (last one wins when stacked), from
/// /proc/self/mountinfo.
pub fn mount_fstype(path: &Path) -> Option<String> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    let mut found = None;
    for line in info.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        if fields.len() < 10 {
            continue;
        }
        let mp = std::ffi::OsString::from_vec(unescape_mountinfo(fields[4]));
        if mp.as_bytes() != path.as_os_str().as_bytes() {
            continue;
        }
        let dash = fields.iter().position(|f| *f == b"-")?;
        found = fields.get(dash + 1).map(|t| String::from_utf8_lossy(t).into_owned());
    }
    found
}

/// True when `path` (canonical) is the root of a live `fuse.unionmount` mount.
pub fn is_unionmount_mountpoint(path: &Path) -> bool {
    mount_fstype(path).as_deref() == Some("fuse.unionmount")
}


/// What a path is, as a mountpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Mountpoint {
    /// The root of a live `fuse.unionmount` mount (canonical path).
    Live(PathBuf),
    /// A unionmount whose daemon has exited: every access fails with ENOTCONN.
    Dead(PathBuf),
    /// Anything else that exists (canonical path) and the type mounted there, if any.
    Other(PathBuf, Option<String>),
}

/// Classify `path` without needing it to answer: a dead FUSE mount cannot be
/// canonicalized, so its parent is, and its name is looked up in the mount table.
pub fn classify(path: &Path) -> io::Result<Mountpoint> {
    match std::fs::canonicalize(path) {
        Ok(canon) => Ok(match mount_fstype(&canon) {
            // The kernel may answer stats of a dead mount from its caches: ask the daemon.
            Some(t) if t == "fuse.unionmount" => match crate::sys::mount::statfs(&canon) {
                Err(e) if e.0 == libc::ENOTCONN => Mountpoint::Dead(canon),
                _ => Mountpoint::Live(canon),
            },
            t => Mountpoint::Other(canon, t),
        }),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            let abs = std::path::absolute(path)?;
            let canon = match (abs.parent(), abs.file_name()) {
                (Some(parent), Some(name)) => std::fs::canonicalize(parent)?.join(name),
                _ => abs,
            };
            match mount_fstype(&canon) {
                Some(t) if t == "fuse.unionmount" => Ok(Mountpoint::Dead(canon)),
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo(br"/a\040b\134c"), b"/a b\\c".to_vec());
        assert_eq!(unescape_mountinfo(br"/plain"), b"/plain".to_vec());
        assert_eq!(unescape_mountinfo(br"/end\04"), br"/end\04".to_vec());
    }

    #[test]
    fn root_is_not_unionmount() {
        assert!(!is_unionmount_mountpoint(Path::new("/")));
        assert!(matches!(classify(Path::new("/")), Ok(Mountpoint::Other(_, Some(_)))));
    }
}
