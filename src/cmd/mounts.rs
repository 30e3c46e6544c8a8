//! `unionmount ps` (the live mounts of this user) and `unionmount umount MNT`.
//!
//! Invariant: `ps` lists only records that match a live mount of ours (see `record`);
//! `umount` unmounts only a unionmount (live or dead), nothing else.

use super::format::{ago, now, table};
use crate::inspect::oci::rfc3339 as rfc3339_of;
use super::{Error, emit, parse};
use crate::record::{Mountpoint, MountRecord, RecordError, classify};
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "List the live mounts (image, mountpoint, upper, pid, start time)")]
struct PsArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub fn run_ps(args: &[OsString]) -> Result<i32, Error> {
    let a: PsArgs = parse("ps", args)?;
    let mounts = MountRecord::list()?;
    if a.json {
        let v: Vec<serde_json::Value> = mounts.iter().map(json).collect();
        emit(&format!("{:#}\n", serde_json::Value::from(v)))?;
        return Ok(0);
    }
    let t = now();
    let rows: Vec<Vec<String>> = mounts
        .iter()
        .map(|m| {
            vec![
                m.image.clone().unwrap_or_else(|| format!("{} layer{}", m.lowers.len(), if m.lowers.len() == 1 { "" } else { "s" })),
                m.mountpoint.to_string_lossy().into_owned(),
                m.upper.as_ref().map_or_else(|| "(read-only)".into(), |u| u.to_string_lossy().into_owned()),
                m.pid.to_string(),
                ago(m.started.map(|s| rfc3339_of(s as i64)).as_deref(), t),
            ]
        })
        .collect();
    emit(&table(&["IMAGE", "MOUNTPOINT", "UPPER", "PID", "STARTED"], &rows))?;
    Ok(0)
}

/// One mount as `ps --json` and `inspect MNT --json` show it.
pub(super) fn json(m: &MountRecord) -> serde_json::Value {
    let n = m.lowers.len();
    let layers: Vec<serde_json::Value> = m
        .lowers
        .iter()
        .enumerate()
        .map(|(i, l)| serde_json::json!({"index": n - i, "diff_id": l.diff_id, "dir": l.dir.to_string_lossy()}))
        .collect();
    serde_json::json!({
        "image": m.image, "image_id": m.image_id, "store": m.store.as_ref().map(|s| s.to_string_lossy()),
        "mountpoint": m.mountpoint.to_string_lossy(), "upper": m.upper.as_ref().map(|u| u.to_string_lossy()),
        "pid": m.pid, "started": m.started.map(|s| rfc3339_of(s as i64)), "layers": layers,
        "whiteout_format": m.whiteout_format,
    })
}

#[derive(Parser, Debug)]
#[command(about = "Unmount a unionmount (also one whose daemon has exited)")]
struct UmountArgs {
    /// The mountpoint
    mountpoint: PathBuf,
}

#[derive(Debug, thiserror::Error)]
enum UmountError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot unmount {}: {source}", path.display())]
    Failed { path: PathBuf, source: crate::mount::MountCallError },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

pub fn run_umount(args: &[OsString]) -> Result<i32, Error> {
    let a: UmountArgs = parse("umount", args)?;
    let p = &a.mountpoint;
    let (mnt, live) = match classify(p).map_err(|source| UmountError::Io { path: p.clone(), source })? {
        Mountpoint::Live(m) => (m, true),
        Mountpoint::Dead(m) => (m, false),
        Mountpoint::Other(m, _) => return Err(UmountError::Record(RecordError::NotAMount(m)).into()),
    };
    crate::mount::unmount(&mnt, !live).map_err(|source| UmountError::Failed { path: mnt.clone(), source })?;
    if !live {
        MountRecord::remove_stale(&mnt);
    }
    Ok(0)
}
