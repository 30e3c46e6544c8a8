//! Docker data root (legacy image store, overlay2 storage driver).
//!
//! ```text
//! ROOT/
//! ├── image/overlay2/
//! │   ├── repositories.json        {"Repositories":{"tiny":{"tiny:app":"sha256:<id>",
//! │   │                                                "tiny@sha256:<manifest>":"sha256:<id>"}}}
//! │   ├── imagedb/content/sha256/<id>   image config JSON; sha256(bytes) == <id>
//! │   └── layerdb/sha256/<chain-id>/
//! │       ├── diff                 sha256:<diff_id>   (must equal the config's diff_id)
//! │       ├── cache-id             <cache-id>         (a StoreId)
//! │       └── size                 bytes, decimal
//! └── overlay2/<cache-id>/diff/    the layer tree (char-device whiteouts, opaque xattr)
//! ```
//! Invariants: every file is read beneath the root's directory fd without following a
//! symlink; an image resolves only if its config hashes to its id, every layerdb `diff`
//! equals the config's diff_id at that position (chain ids computed, never read), every
//! cache-id parses as a [`StoreId`], and every `overlay2/<cache-id>/diff` is a directory
//! reached without a symlink. A repositories.json entry whose id does not parse spoils
//! only its own name. Nothing is written.

use super::digest::{Digest, StoreId, chain_ids};
use super::{
    BrokenImage, ImageConfig, ImageRecord, Listing, MAX_JSON, ResolvedImage, ResolvedLayer, StoreError,
    StoreKind, WhiteoutFormat, json,
};
use crate::sys::beneath::Beneath;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// A Docker data root.
pub struct DockerStore {
    pub root: PathBuf,
    dir: Beneath,
}

#[derive(serde::Deserialize)]
struct Repositories {
    #[serde(rename = "Repositories", default)]
    repositories: BTreeMap<String, BTreeMap<String, String>>,
}

/// Small files in layerdb (ids, sizes) are capped at this many bytes.
const MAX_SMALL: u64 = 4096;

const IMG: &str = "image/overlay2";

impl DockerStore {
    pub fn open(root: &Path) -> Result<DockerStore, StoreError> {
        let dir = Beneath::open(root).map_err(|e| StoreError::io(root, e))?;
        Ok(DockerStore { root: root.to_path_buf(), dir })
    }
    fn config_rel(id: &Digest) -> PathBuf {
        Path::new(IMG).join("imagedb/content").join(id.content_path())
    }
    fn layerdb_rel(chain: &Digest) -> PathBuf {
        Path::new(IMG).join("layerdb").join(chain.content_path())
    }
    fn err(&self, rel: &Path, e: io::Error) -> StoreError {
        StoreError::io(&self.root.join(rel), e)
    }
    /// A small layerdb file, trimmed; None when absent.
    fn read_small(&self, rel: &Path) -> Result<Option<String>, StoreError> {
        match self.dir.read_capped(rel, MAX_SMALL) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err(rel, e)),
            Ok(b) => {
                let s = String::from_utf8(b).map_err(|_| StoreError::corrupt(&self.root.join(rel), "not UTF-8"))?;
                Ok(Some(s.trim().to_string()))
            }
        }
    }

    /// Every image: configs in imagedb plus names from repositories.json.
    pub fn images(&self) -> Result<Listing, StoreError> {
        let mut by_id: BTreeMap<Digest, ImageRecord> = BTreeMap::new();
        let content = Path::new(IMG).join("imagedb/content/sha256");
        match self.dir.read_dir(&content) {
            Ok(names) => {
                for n in names {
                    if let Some(id) = n.to_str().and_then(|n| Digest::from_sha256_hex(n).ok()) {
                        by_id.insert(id.clone(), ImageRecord::new(id.clone(), id.as_str()));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.err(&content, e)),
        }
        let mut broken = Vec::new();
        let rp = Path::new(IMG).join("repositories.json");
        let repos = match self.dir.read_capped(&rp, MAX_JSON) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            r => Some(r.map_err(|e| self.err(&rp, e))?),
        };
        if let Some(bytes) = repos {
            let file = self.root.join(&rp);
            let repos: Repositories = json::parse_object(&bytes, &file, "Docker's repositories.json")?;
            for (_repo, refs) in repos.repositories {
                for (name, id) in refs {
                    let parsed = Digest::parse(&id).or_else(|e| Digest::from_sha256_hex(&id).map_err(|_| e));
                    match parsed {
                        Ok(id) => by_id
                            .entry(id.clone())
                            .or_insert_with(|| ImageRecord::new(id.clone(), id.as_str()))
                            .names
                            .push(name),
                        Err(e) => broken.push(BrokenImage {
                            error: StoreError::corrupt(&file, format!("image id of {}: {e}", super::shown::name(&name))),
                            names: vec![name],
                            bare_tags: Vec::new(),
                            digests: Vec::new(),
                        }),
                    }
                }
            }
        }
        let mut images: Vec<ImageRecord> = by_id.into_values().collect();
        for r in &mut images {
            // Cheap listing details; a broken config just leaves them empty here and
            // fails loudly at resolve time.
            let Ok(b) = self.dir.read_capped(&Self::config_rel(&r.id), super::json::MAX_CONFIG) else { continue };
            let Ok(c) = serde_json::from_slice::<ImageConfig>(&b) else { continue };
            r.created = c.created.clone();
            r.layer_count = Some(c.diff_ids().len());
            let mut total = 0u64;
            let mut known = true;
            for ch in chain_ids(c.diff_ids()) {
                match self.read_small(&Self::layerdb_rel(&ch).join("size")).ok().flatten() {
                    Some(s) => total += s.parse::<u64>().unwrap_or(0),
                    None => known = false,
                }
            }
            r.size = known.then_some(total);
        }
        Ok(Listing { images, broken })
    }

    /// The config of image `id` (named `image` in messages), verified against the
    /// id, and the file it was read from.
    pub(crate) fn config(&self, id: &Digest, image: &str) -> Result<(Vec<u8>, PathBuf), StoreError> {
        let crel = Self::config_rel(id);
        let cp = self.root.join(&crel);
        let bytes = match self.dir.read_capped(&crel, super::json::MAX_CONFIG) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::LayerMissing { image: image.to_string(), layer: "config".into(), file: cp });
            }
            r => r.map_err(|e| StoreError::io(&cp, e))?,
        };
        let got = id.same_algorithm_of(&bytes);
        if got != *id {
            return Err(StoreError::corrupt(&cp, format!("content has digest {got}, expected {id}")));
        }
        Ok((bytes, cp))
    }

    /// Verify and resolve one image's layers.
    pub fn resolve(&self, rec: &ImageRecord) -> Result<ResolvedImage, StoreError> {
        let image = rec.names.first().cloned().unwrap_or_else(|| rec.id.to_string());
        let (bytes, cp) = self.config(&rec.id, &image)?;
        let cfg = ImageConfig::parse(&bytes, &cp)?;
        let diff_ids = cfg.diff_ids();
        let history = cfg.layer_history();
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (i, chain) in chain_ids(diff_ids).iter().enumerate() {
            let db = Self::layerdb_rel(chain);
            let missing = |rel: &Path| StoreError::LayerMissing {
                image: image.clone(),
                layer: chain.to_string(),
                file: self.root.join(rel),
            };
            let diff_rel = db.join("diff");
            let diff = self.read_small(&diff_rel)?.ok_or_else(|| missing(&diff_rel))?;
            let diff_file = self.root.join(&diff_rel);
            let diff = Digest::parse(&diff).map_err(|e| StoreError::corrupt(&diff_file, e.to_string()))?;
            if diff != diff_ids[i] {
                return Err(StoreError::corrupt(
                    &diff_file,
                    format!("layer {} has diff {diff}, expected {}", i + 1, diff_ids[i]),
                ));
            }
            let cid_rel = db.join("cache-id");
            let cache_id = self.read_small(&cid_rel)?.ok_or_else(|| missing(&cid_rel))?;
            let cache_id = StoreId::parse(&cache_id)
                .map_err(|e| StoreError::corrupt(&self.root.join(&cid_rel), format!("cache-id: {e}")))?;
            let dir_rel = Path::new("overlay2").join(cache_id.path()).join("diff");
            match self.dir.stat(&dir_rel) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(StoreError::corrupt(&self.root.join(&dir_rel), "not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing(&dir_rel)),
                Err(e) => return Err(self.err(&dir_rel, e)),
            }
            let size = self.read_small(&db.join("size")).ok().flatten().and_then(|s| s.parse().ok());
            layers.push(ResolvedLayer {
                dir: self.root.join(dir_rel),
                diff_id: diff_ids[i].clone(),
                layer_id: chain.to_string(),
                whiteouts: WhiteoutFormat::CharDevice,
                size,
                created_by: history.get(i).cloned().flatten(),
            });
        }
        layers.reverse();
        Ok(ResolvedImage {
            id: rec.id.clone(),
            store: self.root.clone(),
            layers,
            kind: StoreKind::Docker,
            names: Vec::new(),
            created: cfg.created.clone(),
        })
    }
}
