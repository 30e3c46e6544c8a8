//! Why `diff`, `commit` or `which` could not do what was asked. The scheme every layer's
//! error follows: a variant wraps the lower error (`io::Error`, `Errno`, `StoreError`,
//! `RecordError`) together with the path it concerns; `Display` is one line, which
//! only the front end prints.

use crate::record::RecordError;
use crate::store::StoreError;
use crate::sys::Errno;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[expect(dead_code, reason = "for inspect's walkers, which are moving to Errno")]
    #[error("{}: {errno}", path.display())]
    Sys { path: PathBuf, errno: Errno },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Record(#[from] RecordError),
    /// TARGET is a mountpoint but lowers were given too.
    #[error("{} is a mountpoint; --lower/-o lowerdir are for an upper directory", .0.display())]
    LowersForMount(PathBuf),
    #[error("{} is mounted read-only (no upper layer)", .0.display())]
    ReadOnly(PathBuf),
    #[error("{} is an {fstype} mountpoint; give its upper directory and --lower DIR (top first) instead", path.display())]
    OtherMount { path: PathBuf, fstype: String },
    #[error("{} is neither a unionmount mountpoint nor a directory", .0.display())]
    NotATarget(PathBuf),
    #[error("{} is on a mount of type {fstype} at {}, not inside a unionmount", path.display(), at.display())]
    OtherMountAbove { path: PathBuf, fstype: String, at: PathBuf },
    #[error("{} is not inside a unionmount", .0.display())]
    NotInside(PathBuf),
    #[error("invalid image name {0:?} (allowed: letters, digits and ._:@/+-)")]
    InvalidName(String),
}

impl InspectError {
    /// `map_err(InspectError::io(path))`: an I/O error on `path`.
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> InspectError + '_ {
        move |source| InspectError::Io { path: path.to_path_buf(), source }
    }
}
