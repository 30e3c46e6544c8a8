//! The FUSE control file system: find a mount's connection and abort it.
//!
//! A FUSE mount copied into other mount namespaces (by `unshare -m`, a container
//! runtime) keeps its connection alive after our own unmount, so the session would go on
//! serving them. Writing to `/sys/fs/fuse/connections/N/abort` ends the connection
//! everywhere: requests fail with ENOTCONN and the daemon's reads with ENODEV.
//!
//! Invariants: [`connection_of`] reads only /proc/self/mountinfo, never a file of the
//! mount itself (so it cannot wait on the daemon that is about to serve it); `N` is the
//! kernel's device number of the mount's superblock, `(major << 20) | minor`.

use super::cvt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where the FUSE control file system is mounted.
pub const CONNECTIONS: &str = "/sys/fs/fuse/connections";

/// Undo mountinfo's octal escapes (`\040` for a space, `\012`, `\134`, …).
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The connection of the topmost FUSE mount at `mnt` in `mountinfo` text.
fn parse(mountinfo: &str, mnt: &Path) -> Option<u64> {
    let want = mnt.as_os_str().as_bytes();
    let mut found = None;
    for line in mountinfo.lines() {
        let mut parts = line.split(" - ");
        let (Some(head), Some(tail)) = (parts.next(), parts.next()) else { continue };
        let f: Vec<&str> = head.split(' ').collect();
        if f.len() < 5 || !tail.starts_with("fuse") || unescape(f[4]) != want {
            continue;
        }
        let (ma, mi) = f[2].split_once(':')?;
        let (ma, mi): (u64, u64) = (ma.parse().ok()?, mi.parse().ok()?);
        found = Some((ma << 20) | mi);
    }
    found
}

/// The connection number of the FUSE mount at `mnt` (an absolute, canonical path), if it
/// is mounted in this mount namespace.
pub fn connection_of(mnt: &Path) -> Option<u64> {
    parse(&std::fs::read_to_string("/proc/self/mountinfo").ok()?, mnt)
}

/// Mount the control file system when it is not (needs root; harmless when it is).
fn ensure_mounted() {
    let dir = Path::new(CONNECTIONS);
    let empty = std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false);
    if !empty {
        return;
    }
    let (src, ty, target) = (c"fusectl", c"fusectl", c"/sys/fs/fuse/connections");
    // SAFETY: all pointers are valid NUL-terminated strings; no data argument.
    let r = cvt(unsafe { libc::mount(src.as_ptr(), target.as_ptr(), ty.as_ptr(), 0, std::ptr::null()) });
    if let Err(e) = r {
        log::debug!("cannot mount fusectl on {CONNECTIONS}: {e}");
    }
}

/// Abort connection `n`: from now on no mount of it, in any namespace, is served.
pub fn abort(n: u64) -> io::Result<()> {
    let file: PathBuf = Path::new(CONNECTIONS).join(n.to_string()).join("abort");
    if !file.exists() {
        ensure_mounted();
    }
    std::fs::write(&file, b"1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_topmost_fuse_mount() {
        let info = "\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
90 22 0:52 / /tmp/a\\040b rw,nosuid,nodev - fuse.unionmount unionmount rw,user_id=0
91 22 0:60 / /tmp/a\\040b rw - fuse.unionmount unionmount rw
92 22 0:61 / /tmp/c rw - ext4 /dev/sda rw
93 22 259:3 / /tmp/d rw - fuseblk /dev/sdb rw
";
        assert_eq!(parse(info, Path::new("/tmp/a b")), Some(60));
        assert_eq!(parse(info, Path::new("/tmp/c")), None, "not FUSE");
        assert_eq!(parse(info, Path::new("/tmp/d")), Some((259 << 20) | 3));
        assert_eq!(parse(info, Path::new("/tmp/none")), None);
        assert_eq!(unescape("a\\012b\\134"), b"a\nb\\");
        assert_eq!(unescape("x\\0"), b"x\\0");
    }
}
