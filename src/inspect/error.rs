//! Why `diff`, `commit` or `which` could not do what was asked. The scheme every layer's
//! error follows: a variant wraps the lower error (`io::Error`, `Errno`, `StoreError`,
//! `RecordError`) together with the path it concerns; `Display` is one line, which
//! only the front end prints.

use crate::layers::StackError;
use crate::record::RecordError;
use crate::store::StoreError;
use crate::sys::Errno;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {errno}", path.display())]
    Sys { path: PathBuf, errno: Errno },
    /// The layers could not be opened.
    #[error(transparent)]
    Stack(StackError),
    /// An entry carries an overlay xattr that changes its meaning.
    #[error("{}: carries {xattr} (overlay metacopy), which unionmount's inspect tools do not support", path.display())]
    Unsupported { path: PathBuf, xattr: String },
    /// A renamed directory (redirect xattr) whose contents are in lower layers that
    /// were not given.
    #[error("{}: a renamed directory (overlay redirect) whose contents are in the lower layers: give them with --lower DIR (top first), or inspect the mount", path.display())]
    NeedsLowers { path: PathBuf },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("{} is mounted read-only (no upper layer)", .0.display())]
    ReadOnly(PathBuf),
    #[error("{} is an {fstype} mountpoint; give its upper directory with --upper DIR and --lower DIR (top first) instead", path.display())]
    OtherMount { path: PathBuf, fstype: String },
    #[error("{} is not a unionmount mountpoint: give a mountpoint, or an upper directory with --upper DIR", .0.display())]
    NotATarget(PathBuf),
    #[error("{} is inside the unionmount at {}, not its mountpoint: give {}", path.display(), at.display(), at.display())]
    InsideMount { path: PathBuf, at: PathBuf },
    #[error("{} is a unionmount mountpoint, not an upper directory: give it without --upper", .0.display())]
    MountAsUpper(PathBuf),
    #[error("{} is a mountpoint ({fstype}), not an upper directory", path.display())]
    MountpointAsUpper { path: PathBuf, fstype: String },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{} is on a mount of type {fstype} at {}, not inside a unionmount", path.display(), at.display())]
    OtherMountAbove { path: PathBuf, fstype: String, at: PathBuf },
    #[error("{} is not inside a unionmount", .0.display())]
    NotInside(PathBuf),
    #[error("{} is neither empty nor an OCI image layout: give a new or empty directory, or an existing layout", .0.display())]
    NotALayout(PathBuf),
    #[error("invalid image name {0:?} (allowed: letters, digits and ._:@/+-)")]
    InvalidName(String),
}

impl InspectError {
    /// `map_err(InspectError::io(path))`: an I/O error on `path`.
    pub fn io(path: &Path) -> impl FnOnce(io::Error) -> InspectError + '_ {
        move |source| InspectError::Io { path: path.to_path_buf(), source }
    }
}
