//! containerd's two bbolt files, read once each into plain records (see containerd.rs).
//!
//! ```text
//! ROOT/io.containerd.metadata.v1.bolt/meta.db
//!   v1/<namespace>/images/<name>/target/{digest, mediatype, size (varint)}
//!   v1/<namespace>/snapshots/overlayfs/<key = chain id>/{name (backend name), parent (key)}
//!   v1/<namespace>/content/blob/<digest>/…            (the blobs this namespace may use)
//! ROOT/io.containerd.snapshotter.v1.overlayfs/metadata.db
//!   v1/snapshots/<backend name>/{id (uvarint), kind (1 byte: 3 = committed), parent (backend name)}
//! ```
//! (containerd core/metadata/buckets.go, core/snapshots/storage/bolt.go; the bucket of
//! images is `images`, though the schema comment there says `image`.)
//!
//! Invariants: each file is read in one [`bbolt::view`] (a consistent snapshot); values
//! are only parsed here, never turned into paths: digests become [`Digest`]-checked strings,
//! snapshot ids numbers; names that are not UTF-8 are skipped with a warning (no
//! reference can name them). Counts are bounded by the file, which is bounded in size.

use super::StoreError;
use super::bbolt::{self, BoltError, Bucket, Value};
use super::digest::Digest;
use crate::sys::beneath::Beneath;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The snapshotter whose layer directories we can serve.
pub const SNAPSHOTTER: &str = "overlayfs";

/// Largest bbolt file read (containerd's metadata is small; a node with thousands of
/// images stays far below this).
pub const MAX_DB: u64 = 1 << 30;

/// An image record of one namespace.
#[derive(Debug, Clone)]
pub struct ImageEntry {
    pub name: String,
    pub target: Digest,
    pub media_type: String,
    /// The target blob's size (bytes).
    pub size: u64,
}

/// A snapshot reference in meta.db (`snapshots/overlayfs/<key>`).
#[derive(Debug, Clone)]
pub struct SnapshotRef {
    /// The snapshotter's own name for it (`moby/12/sha256:…`), a key in metadata.db.
    pub backend: Vec<u8>,
}

/// One namespace's records.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    pub images: Vec<ImageEntry>,
    /// Keyed by snapshot key (an image layer's chain id).
    pub snapshots: BTreeMap<Vec<u8>, SnapshotRef>,
    /// The content blobs recorded in this namespace.
    pub blobs: BTreeSet<Digest>,
    /// Images whose record is unusable: (name, why).
    pub broken: Vec<(String, &'static str)>,
}

/// What meta.db holds that resolving needs.
#[derive(Debug, Clone, Default)]
pub struct MetaDb {
    /// The namespaces read (all, or the one asked for).
    pub namespaces: BTreeMap<String, Namespace>,
    /// Every namespace in the file, read or not.
    pub names: Vec<String>,
}

/// A committed-or-not snapshot in the overlayfs snapshotter's metadata.db.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The numeric id: the directory `snapshots/<id>/fs`.
    pub id: u64,
    /// containerd's kind byte: 1 view, 2 active, 3 committed.
    pub kind: u8,
    pub parent: Option<Vec<u8>>,
    /// Bytes used, as the snapshotter recorded it (committed snapshots).
    pub size: Option<u64>,
}

pub const KIND_COMMITTED: u8 = 3;

/// Decode an unsigned LEB128 varint (Go's `binary.Uvarint`); the whole value must be used.
pub fn uvarint(b: &[u8]) -> Option<u64> {
    let mut x: u64 = 0;
    for (i, &c) in b.iter().enumerate() {
        if i == 10 || (i == 9 && c > 1) {
            return None;
        }
        x |= u64::from(c & 0x7f) << (7 * i);
        if c < 0x80 {
            return (i + 1 == b.len()).then_some(x);
        }
    }
    None
}

/// Decode a signed zig-zag varint (Go's `binary.Varint`).
pub fn varint(b: &[u8]) -> Option<i64> {
    let u = uvarint(b)?;
    let x = (u >> 1) as i64;
    Some(if u & 1 != 0 { !x } else { x })
}

/// Why reading a database failed (kept, so a second use reports the same).
#[derive(Debug, Clone)]
pub struct DbError {
    pub file: PathBuf,
    pub detail: String,
    /// An I/O error (missing, permission denied) rather than bad content.
    pub io: bool,
}

impl DbError {
    fn io(file: PathBuf, e: std::io::Error) -> DbError {
        DbError { file, detail: e.to_string(), io: true }
    }
    fn bolt(file: PathBuf, e: BoltError) -> DbError {
        DbError { file, io: matches!(e, BoltError::Io(_)), detail: e.to_string() }
    }
    pub fn to_store(&self) -> StoreError {
        if self.io {
            StoreError::Store { path: self.file.clone(), detail: self.detail.clone() }
        } else {
            StoreError::Corrupt { file: self.file.clone(), detail: self.detail.clone() }
        }
    }
}

/// Open `rel` beneath the store root: a regular file, no symlink on the way.
fn open_db(root: &Beneath, root_path: &Path, rel: &str) -> Result<std::fs::File, DbError> {
    let path = root_path.join(rel);
    let f = root.open_file(Path::new(rel)).map_err(|e| DbError::io(path.clone(), e))?;
    let len = f.metadata().map_err(|e| DbError::io(path.clone(), e))?.len();
    if len > MAX_DB {
        return Err(DbError { file: path, detail: format!("larger than {MAX_DB} bytes"), io: false });
    }
    Ok(f)
}

fn utf8(b: Vec<u8>, what: &str) -> Option<String> {
    match String::from_utf8(b) {
        Ok(s) => Some(s),
        Err(_) => {
            // Not a warning line: no reference can name it, and the command's own error
            // (image not found) is the one line the user needs.
            log::info!("skipping a containerd {what} whose name is not UTF-8");
            None
        }
    }
}

/// Read `rel` (meta.db) beneath `root`: every namespace's images, overlayfs snapshot
/// references and blob digests. `only`: read just this namespace.
pub fn read_meta(root: &Beneath, root_path: &Path, rel: &str, only: Option<&str>) -> Result<MetaDb, DbError> {
    let f = open_db(root, root_path, rel)?;
    bbolt::view(&f, |tx| {
        let mut out = MetaDb::default();
        let Some(v1) = tx.bucket(&[b"v1"])? else { return Ok(out) };
        for (ns, v) in v1.entries()? {
            let Value::Bucket(nsb) = v else { continue }; // `version` and other plain keys
            let Some(ns) = utf8(ns, "namespace") else { continue };
            out.names.push(ns.clone());
            if only.is_some_and(|o| o != ns) {
                continue;
            }
            out.namespaces.insert(ns, read_namespace(&nsb)?);
        }
        Ok(out)
    })
    .map_err(|e| DbError::bolt(root_path.join(rel), e))
}

fn read_namespace(nsb: &Bucket) -> Result<Namespace, BoltError> {
    let mut ns = Namespace::default();
    if let Some(images) = nsb.bucket(b"images")? {
        for (name, v) in images.entries()? {
            let Value::Bucket(ib) = v else { continue };
            let Some(name) = utf8(name, "image") else { continue };
            let Some(t) = ib.bucket(b"target")? else {
                ns.broken.push((name, "its record has no target"));
                continue;
            };
            let digest = t.data(b"digest")?.and_then(|d| Digest::parse(std::str::from_utf8(&d).ok()?).ok());
            let Some(target) = digest else {
                ns.broken.push((name, "its record has no valid target digest"));
                continue;
            };
            let media_type = t.data(b"mediatype")?.and_then(|m| String::from_utf8(m).ok()).unwrap_or_default();
            let Some(size) = t.data(b"size")?.and_then(|s| varint(&s)).and_then(|s| u64::try_from(s).ok()) else {
                ns.broken.push((name, "its record has no valid target size"));
                continue;
            };
            ns.images.push(ImageEntry { name, target, media_type, size });
        }
    }
    if let Some(snaps) = nsb.bucket(b"snapshots")?.map(|s| s.bucket(SNAPSHOTTER.as_bytes())).transpose()?.flatten() {
        for (key, v) in snaps.entries()? {
            let Value::Bucket(sb) = v else { continue };
            if let Some(backend) = sb.data(b"name")? {
                ns.snapshots.insert(key, SnapshotRef { backend });
            }
        }
    }
    if let Some(blobs) = nsb.bucket(b"content")?.map(|c| c.bucket(b"blob")).transpose()?.flatten() {
        for (d, v) in blobs.entries()? {
            if let (Value::Bucket(_), Some(d)) = (v, std::str::from_utf8(&d).ok().and_then(|d| Digest::parse(d).ok())) {
                ns.blobs.insert(d);
            }
        }
    }
    Ok(ns)
}

/// What metadata.db says about each snapshot (backend name → info, or why it is unusable).
pub type Snapshots = BTreeMap<Vec<u8>, Result<SnapshotInfo, String>>;

/// Read the overlayfs snapshotter's metadata.db (`rel` beneath `root`). Entries whose id
/// or kind cannot be decoded are kept as an error, so that using them fails with a clear
/// message while the others still resolve.
pub fn read_snapshots(root: &Beneath, root_path: &Path, rel: &str) -> Result<Snapshots, DbError> {
    let f = open_db(root, root_path, rel)?;
    bbolt::view(&f, |tx| {
        let mut out = BTreeMap::new();
        let Some(snaps) = tx.bucket(&[b"v1", b"snapshots"])? else { return Ok(out) };
        for (name, v) in snaps.entries()? {
            let Value::Bucket(sb) = v else { continue };
            let id = sb.data(b"id")?;
            let kind = sb.data(b"kind")?;
            let info = match (id.as_deref().and_then(uvarint), kind.as_deref()) {
                (Some(id), Some([k])) => Ok(SnapshotInfo {
                    id,
                    kind: *k,
                    parent: sb.data(b"parent")?,
                    size: sb.data(b"size")?.and_then(|s| varint(&s)).and_then(|s| u64::try_from(s).ok()),
                }),
                (None, _) => Err("its id is not a number".to_string()),
                (_, _) => Err("its kind is not one byte".to_string()),
            };
            out.insert(name, info);
        }
        Ok(out)
    })
    .map_err(|e| DbError::bolt(root_path.join(rel), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_like_go() {
        assert_eq!(uvarint(&[0]), Some(0));
        assert_eq!(uvarint(&[5]), Some(5));
        assert_eq!(uvarint(&[0x96, 0x01]), Some(150));
        assert_eq!(uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), Some(u64::MAX));
        assert_eq!(uvarint(&[0xff; 10]), None, "overflow");
        assert_eq!(uvarint(&[0x80]), None, "truncated");
        assert_eq!(uvarint(&[]), None);
        assert_eq!(uvarint(&[1, 2]), None, "trailing bytes");
        assert_eq!(varint(&[0x03]), Some(-2));
        assert_eq!(varint(&[0x04]), Some(2));
        // containerd's recorded size of the tiny:app manifest (1062 bytes).
        assert_eq!(varint(&[0xcc, 0x10]), Some(1062));
    }
}
