//! What a `diff` or `commit` TARGET names: a live unionmount mountpoint, whose mount
//! record gives the upper and lower directories, or an upper directory, whose lowers
//! the caller gives (top first).
//!
//! Invariant: a kernel overlay or fuse-overlayfs mountpoint is refused (its merged
//! tree is not an upper directory), and so is a read-only unionmount.

use super::InspectError;
use crate::record::{LayerRecord, MountRecord};
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
    /// Resolve `target`; `lowers` (top first) are for an upper directory only.
    pub fn resolve(target: &Path, lowers: Vec<PathBuf>) -> Result<Target, InspectError> {
        let canon = std::fs::canonicalize(target).map_err(InspectError::io(target))?;
        match crate::record::mount_fstype(&canon).as_deref() {
            Some("fuse.unionmount") => {
                if !lowers.is_empty() {
                    return Err(InspectError::LowersForMount(canon));
                }
                let rec = MountRecord::find(&canon)?;
                let upper = rec.upper.clone().ok_or(InspectError::ReadOnly(canon))?;
                Ok(Target { upper, lowers: rec.lowers.clone(), lowers_known: true, record: Some(rec) })
            }
            Some(t @ ("overlay" | "fuse.fuse-overlayfs")) => {
                Err(InspectError::OtherMount { path: canon, fstype: t.to_string() })
            }
            _ => {
                if !canon.is_dir() {
                    return Err(InspectError::NotATarget(canon));
                }
                let lowers_known = !lowers.is_empty();
                let lowers = lowers.into_iter().map(|dir| LayerRecord { dir, diff_id: None, layer_id: None }).collect();
                Ok(Target { upper: canon, lowers, lowers_known, record: None })
            }
        }
    }

    /// The lower layer directories, top first.
    pub fn lower_dirs(&self) -> Vec<PathBuf> {
        self.lowers.iter().map(|l| l.dir.clone()).collect()
    }
}
