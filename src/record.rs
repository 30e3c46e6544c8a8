//! Mount records: what a running mount is made of, findable from its mountpoint.
//!
//! When a mount is ready the daemon writes one JSON file describing it (layers top
//! first, upper, work, image reference) into the record directory:
//! `/run/unionmount` for root, `$XDG_RUNTIME_DIR/unionmount` otherwise, falling back
//! to `/tmp/unionmount-<uid>`. The file name is derived from the canonical
//! mountpoint path, so `unionmount diff|commit|which` can find a mount from its
//! mountpoint alone. The daemon removes the record when the mount ends; a record
//! whose mountpoint is no longer a `fuse.unionmount` mount is stale and ignored.
//!
//! Invariant: a record is written with write-to-temp + rename, so readers never see
//! half of one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};

/// Why a mount record could not be found, read or written; `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{} is not a unionmount mountpoint", .0.display())]
    NotAMount(PathBuf),
    #[error("no mount record for {} in {}: {source}", mountpoint.display(), dir.display())]
    Missing { mountpoint: PathBuf, dir: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// serde_json refuses a path that is not UTF-8.
    #[error("cannot write the mount record: {0}")]
    Encode(serde_json::Error),
    #[error("mount record {} is not valid: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
}

impl RecordError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> RecordError + '_ {
        move |source| RecordError::Io { path: path.to_path_buf(), source }
    }
}

/// One lower layer of a mount, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// The layer's directory (the tree served).
    pub dir: PathBuf,
    /// `sha256:…` diff_id when the layer came from an image store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    /// Chain id / storage layer id when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_id: Option<String>,
}

/// Everything `diff`, `commit` and `which` need to know about a mount.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountRecord {
    pub mountpoint: PathBuf,
    /// Lower layers, top first.
    pub lowers: Vec<LayerRecord>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// The image reference the user gave, and the resolved image id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Store the image came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<PathBuf>,
    /// `"chardev"` or `"whfile"`: how this mount writes whiteouts in upper.
    pub whiteout_format: String,
    pub pid: u32,
}

/// The directory records live in for the current user.
pub fn record_dir() -> PathBuf {
    let uid = crate::sys::euid();
    if uid == 0 {
        return PathBuf::from("/run/unionmount");
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("unionmount");
    }
    PathBuf::from(format!("/tmp/unionmount-{uid}"))
}

fn record_path_in(dir: &Path, mountpoint: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(mountpoint.as_os_str().as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.json"))
}

impl MountRecord {
    /// Write (atomically) the record for `self.mountpoint`; returns its path.
    pub fn write(&self) -> Result<PathBuf, RecordError> {
        let dir = record_dir();
        std::fs::create_dir_all(&dir).map_err(RecordError::io(&dir))?;
        let path = record_path_in(&dir, &self.mountpoint);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let body = serde_json::to_vec_pretty(self).map_err(RecordError::Encode)?;
        std::fs::write(&tmp, body).map_err(RecordError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(RecordError::io(&path))?;
        Ok(path)
    }

    /// Remove the record of `mountpoint` if it belongs to process `pid`.
    pub fn remove(mountpoint: &Path, pid: u32) {
        let path = record_path_in(&record_dir(), mountpoint);
        if let Ok(r) = Self::read_file(&path)
            && r.pid == pid {
                let _ = std::fs::remove_file(path);
            }
    }

    fn read_file(path: &Path) -> Result<MountRecord, RecordError> {
        let data = std::fs::read(path).map_err(RecordError::io(path))?;
        serde_json::from_slice(&data).map_err(|e| RecordError::Corrupt { path: path.to_path_buf(), detail: e.to_string() })
    }

    /// Find the record of a live mount from its mountpoint (any path that
    /// canonicalizes to it).
    pub fn find(mountpoint: &Path) -> Result<MountRecord, RecordError> {
        let canon = std::fs::canonicalize(mountpoint).map_err(RecordError::io(mountpoint))?;
        if !is_unionmount_mountpoint(&canon) {
            return Err(RecordError::NotAMount(canon));
        }
        let dir = record_dir();
        let path = record_path_in(&dir, &canon);
        match Self::read_file(&path) {
            Err(RecordError::Io { source, .. }) => Err(RecordError::Missing { mountpoint: canon, dir, source }),
            other => other,
        }
    }
}

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
    fn record_paths_differ_per_mountpoint() {
        let d = Path::new("/x");
        assert_ne!(record_path_in(d, Path::new("/mnt/a")), record_path_in(d, Path::new("/mnt/b")));
    }

    #[test]
    fn root_is_not_unionmount() {
        assert!(!is_unionmount_mountpoint(Path::new("/")));
    }
}
