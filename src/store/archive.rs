//! `docker save` archives (a tar file), legacy and OCI-based.
//!
//! ```text
//! legacy (Docker < 25)                          OCI-based (Docker ≥ 25, or any OCI tar)
//! manifest.json  [{"Config":"<id>.json",        manifest.json  (Layers: blobs/sha256/<hex>)
//!                  "RepoTags":["tiny:app"],     index.json, oci-layout
//!                  "Layers":["<v1id>/layer.tar",…]}]   blobs/sha256/<hex>
//! <id>.json      image config
//! <v1id>/layer.tar   (may be a symlink entry to another layer.tar)
//! ```
//! The tar is indexed once (names → offset and size, or symlink target) using seeks, so
//! a multi-gigabyte archive is not read to be listed. `manifest.json` is preferred; an
//! archive with only `index.json` is read as an OCI layout through the same index.
//!
//! Invariants: member names are normalised (`./` dropped) and symlink members resolve
//! only to members inside the archive (no `..` above its root, at most 8 hops); the
//! image id is the sha256 of the config bytes, computed, never trusted; the archive is
//! never written.

use super::oci::{Blobs, Descriptor, OciStore};
use super::{
    ImageConfig, ImageRecord, MAX_JSON, ResolveCtx, ResolvedImage, StoreError, StoreKind,
    parse_json,
};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most entries an archive may have.
pub const MAX_MEMBERS: usize = 1 << 20;

#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// An indexed tar file; cheap to clone.
#[derive(Clone)]
pub struct ArchiveBlobs {
    path: Arc<PathBuf>,
    members: Arc<HashMap<String, Member>>,
}

fn norm(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

impl ArchiveBlobs {
    /// Index the tar at `path`.
    pub fn index(path: &Path) -> Result<ArchiveBlobs, StoreError> {
        let f = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
        let mut ar = tar::Archive::new(f);
        let bad = |e: std::io::Error| StoreError::corrupt(path, format!("bad tar: {e}"));
        let mut members = HashMap::new();
        for e in ar.entries_with_seek().map_err(bad)? {
            let e = e.map_err(bad)?;
            if members.len() >= MAX_MEMBERS {
                return Err(StoreError::corrupt(path, "too many entries"));
            }
            let Ok(name) = std::str::from_utf8(&e.path_bytes()).map(str::to_string) else { continue };
            let Some(name) = norm(&name) else { continue };
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(name, Member::File { offset: e.raw_file_position(), size: e.size() });
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(t) = e.link_name_bytes().and_then(|b| String::from_utf8(b.into_owned()).ok()) {
                        let t = if e.header().entry_type() == tar::EntryType::Link {
                            format!("/{t}") // hard links name a member from the root
                        } else {
                            t
                        };
                        members.insert(name, Member::Link(t));
                    }
                }
                _ => {}
            }
        }
        Ok(ArchiveBlobs { path: Arc::new(path.to_path_buf()), members: Arc::new(members) })
    }

    fn lookup(&self, rel: &str) -> Option<(u64, u64)> {
        let mut name = norm(rel)?;
        for _ in 0..8 {
            match self.members.get(&name)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Link(t) => {
                    let base = if t.starts_with('/') {
                        String::new()
                    } else {
                        name.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default()
                    };
                    name = norm(&format!("{base}/{t}"))?;
                }
            }
        }
        None
    }
}

impl Blobs for ArchiveBlobs {
    fn root(&self) -> &Path {
        &self.path
    }
    fn read(&self, rel: &str, cap: u64) -> Result<Vec<u8>, StoreError> {
        let (r, _) = self.open(rel)?;
        super::read_all_capped(r, cap, &self.display(rel))
    }
    fn open(&self, rel: &str) -> Result<(Box<dyn Read + '_>, u64), StoreError> {
        let (off, size) = self.lookup(rel).ok_or_else(|| StoreError::Store {
            path: self.display(rel),
            detail: "no such member in the archive".into(),
        })?;
        let mut f = std::fs::File::open(&*self.path).map_err(|e| StoreError::io(&self.path, e))?;
        f.seek(SeekFrom::Start(off)).map_err(|e| StoreError::io(&self.path, e))?;
        Ok((Box::new(f.take(size)), size))
    }
    fn exists(&self, rel: &str) -> bool {
        self.lookup(rel).is_some()
    }
    fn display(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("{}:{rel}", self.path.display()))
    }
}

#[derive(Debug, serde::Deserialize)]
struct SaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// A `docker save` archive.
pub struct ArchiveStore {
    oci: OciStore<ArchiveBlobs>,
    has_manifest: bool,
}

impl ArchiveStore {
    pub fn open(path: &Path) -> Result<ArchiveStore, StoreError> {
        let blobs = ArchiveBlobs::index(path)?;
        let has_manifest = blobs.exists("manifest.json");
        if !has_manifest && !blobs.exists("index.json") {
            return Err(StoreError::Store {
                path: path.into(),
                detail: "tar has neither manifest.json nor index.json: not a docker save archive".into(),
            });
        }
        Ok(ArchiveStore { oci: OciStore::new(blobs), has_manifest })
    }
    pub fn path(&self) -> &Path {
        self.oci.blobs.root()
    }

    fn entries(&self) -> Result<Vec<SaveEntry>, StoreError> {
        let b = self.oci.blobs.read("manifest.json", MAX_JSON)?;
        parse_json(&b, &self.oci.blobs.display("manifest.json"))
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        if !self.has_manifest {
            return self.oci.images();
        }
        let mut out = Vec::new();
        for (i, e) in self.entries()?.into_iter().enumerate() {
            let cb = self.oci.blobs.read(&e.config, MAX_JSON)?;
            let c: ImageConfig = serde_json::from_slice(&cb).unwrap_or_default();
            out.push(ImageRecord {
                id: super::digest::sha256_digest(&cb),
                names: e.repo_tags.unwrap_or_default(),
                key: i.to_string(),
                created: c.created.clone(),
                layer_count: Some(e.layers.len()),
                size: Some(e.layers.iter().filter_map(|l| self.oci.blobs.lookup(l).map(|x| x.1)).sum()),
                ..Default::default()
            });
        }
        Ok(out)
    }

    pub fn resolve(&self, rec: &ImageRecord, ctx: &ResolveCtx) -> Result<ResolvedImage, StoreError> {
        if !self.has_manifest {
            let mut r = self.oci.resolve(rec, ctx)?;
            r.kind = StoreKind::Archive;
            return Ok(r);
        }
        let mp = self.oci.blobs.display("manifest.json");
        let i: usize = rec.key.parse().map_err(|_| StoreError::corrupt(&mp, "bad key"))?;
        let entries = self.entries()?;
        let e = entries.get(i).ok_or_else(|| StoreError::corrupt(&mp, "entry vanished"))?;
        let cpath = self.oci.blobs.display(&e.config);
        let cb = self.oci.blobs.read(&e.config, MAX_JSON)?;
        if super::digest::sha256_digest(&cb) != rec.id {
            return Err(StoreError::corrupt(&cpath, "config changed while reading"));
        }
        let cfg = ImageConfig::parse(&cb, &cpath)?;
        let descs: Vec<Descriptor> = e
            .layers
            .iter()
            .map(|l| {
                // `blobs/sha256/<hex>` paths carry their digest; legacy paths do not.
                let digest = norm(l)
                    .and_then(|n| n.strip_prefix("blobs/sha256/").map(|h| format!("sha256:{h}")))
                    .filter(|d| super::digest::parse_sha256(d).is_some())
                    .unwrap_or_else(|| l.clone());
                Descriptor { digest, size: self.oci.blobs.lookup(l).map(|x| x.1), ..Default::default() }
            })
            .collect();
        let layers = self.oci.unpack_layers(rec, &descs, cfg.diff_ids(), &cpath, ctx)?;
        let mut r = self.oci.finish(rec, cfg, layers);
        r.kind = StoreKind::Archive;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::norm;

    #[test]
    fn names() {
        assert_eq!(norm("./a/b").as_deref(), Some("a/b"));
        assert_eq!(norm("a/../b").as_deref(), Some("b"));
        assert_eq!(norm("../b"), None);
    }
}
