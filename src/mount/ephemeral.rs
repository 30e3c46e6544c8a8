//! The throw-away writable layer of an image mount without `--upper`: a private
//! (0700) directory `unionmount-<pid>-<n>` under /var/tmp (`UNIONMOUNT_TMPDIR`)
//! holding `upper/`, `work/` and `lock`, removed when the mount ends.
//!
//! Invariants:
//! - exactly one process owns the directory and removes it (dropping the
//!   [`Ephemeral`]); a parent that forks the daemon hands it over with
//!   [`Ephemeral::hand_over`];
//! - while a mount uses the directory, an flock on its `lock` file is held (the fd is
//!   inherited by the daemon), so a directory whose lock can be taken belongs to a
//!   daemon that was killed: the next mount removes it ([`sweep`]), whatever its pid.
//!   Only directories of this user, mode 0700, named as above, are ever removed.

use super::{MountError, create_dir};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub(super) struct Ephemeral {
    dir: PathBuf,
    owned: bool,
    /// Held (locked) for the life of the mount.
    _lock: Option<File>,
}

impl Ephemeral {
    pub(super) fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub(super) fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// This process no longer removes the directory (the forked daemon does, and
    /// holds the lock through the inherited fd).
    pub(super) fn hand_over(mut self) {
        self.owned = false;
    }
}

impl Drop for Ephemeral {
    fn drop(&mut self) {
        if self.owned {
            remove(&self.dir);
        }
    }
}

fn base_dir() -> PathBuf {
    std::env::var_os("UNIONMOUNT_TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

/// A private (0700) directory with `upper/` and `work/` for a throw-away layer;
/// first removes those that killed daemons left behind.
pub(super) fn make() -> Result<Ephemeral, MountError> {
    let base = base_dir();
    sweep(&base);
    for i in 0..100u32 {
        let dir = base.join(format!("unionmount-{}-{i}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                let mut e = Ephemeral { dir, owned: true, _lock: None };
                let lock = e.dir.join("lock");
                let f = File::create(&lock).map_err(|source| MountError::Create { what: "lock file", path: lock.clone(), source })?;
                f.try_lock().map_err(|err| MountError::Create { what: "lock on", path: lock, source: err.into() })?;
                e._lock = Some(f);
                create_dir(&e.upper(), "writable layer")?;
                create_dir(&e.work(), "writable layer")?;
                return Ok(e);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(MountError::Ephemeral { base, source: Some(e) }),
        }
    }
    Err(MountError::Ephemeral { base, source: None })
}

/// Is `name` one of ours: `unionmount-<pid>-<n>`? Returns the pid.
fn our_name(name: &std::ffi::OsStr) -> Option<u32> {
    let rest = name.to_str()?.strip_prefix("unionmount-")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Remove the throw-away layers of daemons that were killed (their lock is free).
fn sweep(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    let me = crate::sys::euid();
    for e in entries.flatten() {
        let Some(pid) = our_name(&e.file_name()) else { continue };
        let path = e.path();
        let Ok(m) = std::fs::symlink_metadata(&path) else { continue };
        if !m.is_dir() || m.uid() != me || m.mode() & 0o777 != 0o700 {
            continue;
        }
        let abandoned = match File::open(path.join("lock")) {
            Ok(f) => f.try_lock().is_ok(),
            // Made before locks existed, or killed before the lock: go by the pid.
            Err(_) => pid != std::process::id() && !crate::sys::process::alive(pid),
        };
        if abandoned {
            log::info!("removing the throw-away layer of a mount whose daemon is gone: {}", path.display());
            remove(&path);
        }
    }
}

fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        log::warn!("could not remove the temporary writable layer {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(our_name("unionmount-123-0".as_ref()), Some(123));
        assert_eq!(our_name("unionmount-bench".as_ref()), None);
        assert_eq!(our_name("unionmount-1-x".as_ref()), None);
    }

    #[test]
    fn sweep_removes_only_abandoned_dirs_of_ours() {
        let t = tempfile::tempdir().unwrap();
        let mk = |name: &str, mode: u32| {
            let d = t.path().join(name);
            std::fs::DirBuilder::new().mode(mode).create(&d).unwrap();
            std::fs::write(d.join("lock"), "").unwrap();
            d
        };
        let abandoned = mk("unionmount-999999-0", 0o700);
        let held = mk("unionmount-999999-1", 0o700);
        let lock = File::open(held.join("lock")).unwrap();
        lock.try_lock().unwrap();
        let other = mk("unionmount-bench", 0o700);
        let open_mode = mk("unionmount-999999-2", 0o755);
        sweep(t.path());
        assert!(!abandoned.exists(), "a free lock means the daemon is gone");
        assert!(held.exists() && other.exists() && open_mode.exists());
    }
}
