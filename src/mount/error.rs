//! Why a mount failed: one variant per thing that can go wrong, each carrying the path
//! it concerns; `Display` is the one line the front end prints.

use crate::layers::StackError;
use crate::record::RecordError;
use crate::store::StoreError;
use crate::sys::Errno;
use crate::sys::mount::HelperError;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A path given on the command line cannot be used (`what`: "mountpoint", "lowerdir", …).
    #[error("{what} {}: {source}", path.display())]
    Path { what: &'static str, path: PathBuf, source: io::Error },
    #[error("cannot create {what} {}: {source}", path.display())]
    Create { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{what} {} is not a directory", path.display())]
    NotADirectory { what: &'static str, path: PathBuf },
    #[error("{} is already a mount point ({fstype}): unmount it first or pick another directory", path.display())]
    AlreadyMounted { path: PathBuf, fstype: String },
    #[error("/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available")]
    NoFuse,
    /// One directory of the mount inside another that must stay apart.
    #[error("{what} {} is inside {outer_what} {}: {hint}", path.display(), outer.display())]
    Nested { what: &'static str, path: PathBuf, outer_what: &'static str, outer: PathBuf, hint: &'static str },
    #[error("upperdir {} is also a lowerdir", .0.display())]
    UpperIsLower(PathBuf),
    #[error("cannot create a writable layer under {}{}", base.display(), source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Ephemeral { base: PathBuf, source: Option<io::Error> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("cannot open the layers: {0}")]
    Open(Errno),
    /// A system call of the daemon's own set-up (pipe, fork).
    #[error("{what}: {errno}")]
    Sys { what: &'static str, errno: Errno },
    #[error("cannot mount on {}: {source}", path.display())]
    Mount { path: PathBuf, source: MountCallError },
    #[error("FUSE handshake on {} failed: {source}", path.display())]
    Handshake { path: PathBuf, source: io::Error },
    #[error("cannot start the signal thread: {0}")]
    Thread(io::Error),
    #[error("FUSE session ended with an error: {0}")]
    Session(io::Error),
    #[error("the mount daemon exited before the mount was ready (status {0:?})")]
    DaemonDied(Option<i32>),
    /// The daemon's own error line, relayed by the waiting parent.
    #[error("{0}")]
    Daemon(String),
}

/// The mount itself: our mount(2) as root, or the fusermount3 helper.
#[derive(Debug, thiserror::Error)]
pub enum MountCallError {
    #[error("{0}")]
    Sys(Errno),
    #[error(transparent)]
    Helper(#[from] HelperError),
}
