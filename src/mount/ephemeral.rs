//! The throw-away writable layer of an image mount without `--upper`: a private
//! (0700) directory holding `upper/` and `work/`, removed when the mount ends.
//!
//! Invariant: exactly one process owns the directory and removes it (dropping the
//! [`Ephemeral`]); a parent that forks the daemon hands it over with [`Ephemeral::hand_over`].

use super::{MountError, create_dir};
use std::path::{Path, PathBuf};

pub(super) struct Ephemeral {
    dir: PathBuf,
    owned: bool,
}

impl Ephemeral {
    pub(super) fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub(super) fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// This process no longer removes the directory (the forked daemon does).
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

/// A private (0700) directory with `upper/` and `work/` for a throw-away layer.
pub(super) fn make() -> Result<Ephemeral, MountError> {
    let base = std::env::var_os("UNIONMOUNT_TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
    for i in 0..100u32 {
        let dir = base.join(format!("unionmount-{}-{i}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
                let e = Ephemeral { dir, owned: true };
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


fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        log::warn!("could not remove the temporary writable layer {}: {e}", dir.display());
    }
}
