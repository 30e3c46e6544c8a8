//! What a `diff` or `commit` TARGET names: the mountpoint of a live unionmount, whose
//! mount record gives the upper and lower directories, or an upper directory named as
//! such (`--upper DIR`), whose lowers the caller gives (top first).
//!
//! Invariants (refusals, each one line):
//! - a mountpoint TARGET must be the root of a live unionmount: a path inside one, a
//!   dead one (its daemon gone), a kernel overlay or fuse-overlayfs mount, or any
//!   other directory is refused, so `diff /` or `commit /mnt/x/etc` never walk a tree
//!   that is not an upper layer;
//! - a read-only unionmount has no upper layer: refused;
//! - an upper directory must be a plain directory: not a mountpoint of any kind and
//!   not inside a unionmount.

use super::InspectError;
use crate::record::{LayerRecord, MountRecord, Mountpoint, RecordError, classify, mount_fstype};
use std::path::{Path, PathBuf};

/// A resolved TARGET.
pub struct Target {
    pub upper: PathBuf,
    /// The mount's record, when TARGET was a mountpoint.
    pub record: Option<MountRecord>,
    /// Top first.
    pub lowers: Vec<LayerRecord>,
    /// False when TARGET was an upper dir and no lowers were given.
    pub lowers_known: bool,
}

impl Target {
    /// The live unionmount mounted at `path`.
    pub fn mountpoint(path: &Path) -> Result<Target, InspectError> {
        match classify(path).map_err(InspectError::io(path))? {
            Mountpoint::Live(canon) => {
                let rec = MountRecord::find(&canon)?;
                let upper = rec.upper.clone().ok_or(InspectError::ReadOnly(canon))?;
                Ok(Target { upper, lowers: rec.lowers.clone(), lowers_known: true, record: Some(rec) })
            }
            Mountpoint::Dead(canon) => Err(RecordError::Dead(canon).into()),
            Mountpoint::Other(canon, Some(t)) if t == "overlay" || t == "fuse.fuse-overlayfs" => {
                Err(InspectError::OtherMount { path: canon, fstype: t })
            }
            Mountpoint::Other(canon, _) => match enclosing_unionmount(&canon) {
                Some(at) => Err(InspectError::InsideMount { path: canon, at }),
                None => Err(InspectError::NotATarget(canon)),
            },
        }
    }

    /// An upper directory and its lowers (top first; empty = not known).
    pub fn upper_dir(dir: &Path, lowers: Vec<LayerRecord>) -> Result<Target, InspectError> {
        let canon = match classify(dir).map_err(InspectError::io(dir))? {
            Mountpoint::Live(c) | Mountpoint::Dead(c) => return Err(InspectError::MountAsUpper(c)),
            Mountpoint::Other(c, Some(fstype)) => return Err(InspectError::MountpointAsUpper { path: c, fstype }),
            Mountpoint::Other(c, None) => c,
        };
        if let Some(at) = enclosing_unionmount(&canon) {
            return Err(InspectError::InsideMount { path: canon, at });
        }
        if !canon.is_dir() {
            return Err(InspectError::NotADirectory(canon));
        }
        Ok(Target { upper: canon, lowers_known: !lowers.is_empty(), lowers, record: None })
    }

}

/// The unionmount mountpoint above `path` (canonical), if any.
fn enclosing_unionmount(path: &Path) -> Option<PathBuf> {
    path.ancestors().skip(1).find(|a| mount_fstype(a).as_deref() == Some("fuse.unionmount")).map(Path::to_path_buf)
}
