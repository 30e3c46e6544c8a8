//! Mount records: what a running mount is made of, findable from its mountpoint.
//!
//! When a mount is ready the daemon writes one JSON file describing it (layers top
//! first, upper, work, image reference, pid, start time) into the record directory:
//! `/run/unionmount` for root, `$XDG_RUNTIME_DIR/unionmount` otherwise, falling back
//! to `/tmp/unionmount-<uid>`. The file name is derived from the canonical
//! mountpoint path, so `unionmount diff|commit|which|inspect` can find a mount from
//! its mountpoint alone, and `ps` lists them all. The daemon removes the record when
//! the mount ends.
//!
//! Invariants:
//! - the record directory is ours: created 0700, and refused (never read, never
//!   written) when it is a symlink, belongs to another user or is writable by group or
//!   others, so nobody else can plant a record that `diff` or `commit` would follow;
//! - a record file is read only if it is a regular file we own, not through a
//!   symlink, and at most [`MAX_RECORD`] bytes;
//! - a record counts only while it matches a live mount of ours: its mountpoint is a
//!   `fuse.unionmount` mount and its daemon process is alive; anything else is stale
//!   and ignored;
//! - a record is written with write-to-temp + rename, so readers never see half of one.

mod mountinfo;

pub use mountinfo::{Mountpoint, classify, is_unionmount_mountpoint, mount_fstype};

use crate::overlay::WhiteoutFormat;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest record file read.
pub const MAX_RECORD: u64 = 1 << 20;

/// Why a mount record could not be found, read or written; `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{} is not a unionmount mountpoint", .0.display())]
    NotAMount(PathBuf),
    #[error("{p} is a unionmount whose daemon has exited: run `umount {p}`", p = .0.display())]
    Dead(PathBuf),
    /// The record directory could be planted by someone else.
    #[error("record directory {} {why}: remove it, or set XDG_RUNTIME_DIR to a private directory", path.display())]
    UnsafeDir { path: PathBuf, why: String },
    /// A record file that is not ours or not a plain file.
    #[error("mount record {} {why}: ignored", path.display())]
    Untrusted { path: PathBuf, why: String },
    #[error("{} is mounted, but its daemon (pid {pid}) has exited: run `umount {}`", mountpoint.display(), mountpoint.display())]
    Stale { mountpoint: PathBuf, pid: u32 },
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
    /// The whiteout forms the layer may hold, as the mount reads it (`overlay` rule 3;
    /// `either` in records written before this was recorded).
    #[serde(default)]
    pub whiteouts: WhiteoutFormat,
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
    /// When the mount became ready (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
}

/// The directory records live in for the current user (not checked: see [`open_dir`]).
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

/// The record directory, created 0700 if missing, checked to be ours and private.
pub fn open_dir(create: bool) -> Result<PathBuf, RecordError> {
    let dir = record_dir();
    if create {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A missing parent ($XDG_RUNTIME_DIR): create it as private as the rest.
                std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&dir).map_err(RecordError::io(&dir))?;
            }
            Err(e) => return Err(RecordError::io(&dir)(e)),
        }
    }
    check_private(&dir)?;
    Ok(dir)
}

/// Refuse a directory another user could have planted records in.
fn check_private(dir: &Path) -> Result<(), RecordError> {
    let m = std::fs::symlink_metadata(dir).map_err(RecordError::io(dir))?;
    let unsafe_dir = |why: String| Err(RecordError::UnsafeDir { path: dir.to_path_buf(), why });
    let me = crate::sys::euid();
    if m.file_type().is_symlink() {
        return unsafe_dir("is a symlink".into());
    }
    if !m.is_dir() {
        return unsafe_dir("is not a directory".into());
    }
    if m.uid() != me {
        return unsafe_dir(format!("belongs to uid {}, not to you (uid {me})", m.uid()));
    }
    if m.mode() & 0o077 != 0 {
        // Ours but open to others (versions before 0.2 created it 0777 under umask 0):
        // close it. Records others may have left there are not ours and never read.
        use std::os::unix::fs::PermissionsExt;
        if std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).is_err() {
            return unsafe_dir(format!("is open to group or others (mode {:o})", m.mode() & 0o777));
        }
        log::info!("record directory {} was mode {:o}: now 0700", dir.display(), m.mode() & 0o777);
    }
    Ok(())
}

fn record_path_in(dir: &Path, mountpoint: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let digest = crate::store::Digest::sha256_of(mountpoint.as_os_str().as_bytes());
    dir.join(format!("{}.json", &digest.hex()[..32]))
}

impl MountRecord {
    /// Write (atomically) the record for `self.mountpoint`; returns its path.
    pub fn write(&self) -> Result<PathBuf, RecordError> {
        let dir = open_dir(true)?;
        let path = record_path_in(&dir, &self.mountpoint);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let body = serde_json::to_vec_pretty(self).map_err(RecordError::Encode)?;
        let _ = std::fs::remove_file(&tmp);
        let write = || -> io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(&body)
        };
        write().map_err(RecordError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(RecordError::io(&path))?;
        Ok(path)
    }

    /// Remove the record of `mountpoint` if it belongs to process `pid`.
    pub fn remove(mountpoint: &Path, pid: u32) {
        let Ok(dir) = open_dir(false) else { return };
        let path = record_path_in(&dir, mountpoint);
        if let Ok(r) = Self::read_file(&path)
            && r.pid == pid
        {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Remove the record of `mountpoint` if its daemon is gone.
    pub fn remove_stale(mountpoint: &Path) {
        let Ok(dir) = open_dir(false) else { return };
        let path = record_path_in(&dir, mountpoint);
        if let Ok(r) = Self::read_file(&path)
            && !crate::sys::process::alive(r.pid)
        {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Read one record file: a regular file we own, not through a symlink, bounded.
    fn read_file(path: &Path) -> Result<MountRecord, RecordError> {
        use std::io::Read;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(RecordError::io(path))?;
        let m = f.metadata().map_err(RecordError::io(path))?;
        let untrusted = |why: String| Err(RecordError::Untrusted { path: path.to_path_buf(), why });
        if !m.is_file() {
            return untrusted("is not a regular file".into());
        }
        if m.uid() != crate::sys::euid() {
            return untrusted(format!("belongs to uid {}", m.uid()));
        }
        let mut data = Vec::new();
        f.take(MAX_RECORD + 1).read_to_end(&mut data).map_err(RecordError::io(path))?;
        if data.len() as u64 > MAX_RECORD {
            return untrusted(format!("is larger than {MAX_RECORD} bytes"));
        }
        serde_json::from_slice(&data).map_err(|e| RecordError::Corrupt { path: path.to_path_buf(), detail: e.to_string() })
    }

    /// Does this record describe a live mount of ours at `mountpoint` (canonical)?
    fn is_live_at(&self, mountpoint: &Path) -> bool {
        self.mountpoint == mountpoint && crate::sys::process::alive(self.pid)
    }

    /// Find the record of a live mount from its mountpoint (any path that
    /// canonicalizes to it).
    pub fn find(mountpoint: &Path) -> Result<MountRecord, RecordError> {
        let canon = match classify(mountpoint).map_err(RecordError::io(mountpoint))? {
            Mountpoint::Live(c) => c,
            Mountpoint::Dead(c) => return Err(RecordError::Dead(c)),
            Mountpoint::Other(c, _) => return Err(RecordError::NotAMount(c)),
        };
        let dir = open_dir(false).map_err(|e| match e {
            RecordError::Io { path, source } => RecordError::Missing { mountpoint: canon.clone(), dir: path, source },
            e => e,
        })?;
        let path = record_path_in(&dir, &canon);
        let rec = match Self::read_file(&path) {
            Err(RecordError::Io { source, .. }) => return Err(RecordError::Missing { mountpoint: canon, dir, source }),
            other => other?,
        };
        if rec.mountpoint != canon {
            return Err(RecordError::Untrusted { path, why: format!("names another mountpoint, {}", rec.mountpoint.display()) });
        }
        if !rec.is_live_at(&canon) {
            return Err(RecordError::Stale { mountpoint: canon, pid: rec.pid });
        }
        Ok(rec)
    }

    /// Every live mount of ours, sorted by mountpoint; stale or foreign records are skipped.
    pub fn list() -> Result<Vec<MountRecord>, RecordError> {
        let dir = match open_dir(false) {
            Ok(d) => d,
            Err(RecordError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(RecordError::io(&dir))? {
            let e = e.map_err(RecordError::io(&dir))?;
            let path = e.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(rec) = Self::read_file(&path) else { continue };
            let live = is_unionmount_mountpoint(&rec.mountpoint) && rec.is_live_at(&rec.mountpoint);
            if live && record_path_in(&dir, &rec.mountpoint) == path {
                out.push(rec);
            }
        }
        out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_differ_per_mountpoint() {
        let d = Path::new("/x");
        assert_ne!(record_path_in(d, Path::new("/mnt/a")), record_path_in(d, Path::new("/mnt/b")));
    }

    #[test]
    fn private_dirs_only() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("r");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_private(&d).is_ok());
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        check_private(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700, "ours: closed, not refused");
        let l = t.path().join("l");
        std::os::unix::fs::symlink(&d, &l).unwrap();
        assert!(check_private(&l).unwrap_err().to_string().contains("symlink"));
    }
}
