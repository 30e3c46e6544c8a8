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
//! │       ├── cache-id             <cache-id>         (a single safe path component)
//! │       └── size                 bytes, decimal
//! └── overlay2/<cache-id>/diff/    the layer tree (char-device whiteouts, opaque xattr)
//! ```
//! Invariants: an image resolves only if its config hashes to its id, every layerdb
//! `diff` equals the config's diff_id at that position (chain ids computed, never read),
//! every cache-id is a safe component, and every `overlay2/<cache-id>/diff` is a real
//! directory (not a symlink). Nothing is written.

use super::digest::{chain_id_strings as chain_ids, check_component, is_hex64, sha256_digest};
use super::{
    ImageConfig, ImageRecord, MAX_JSON, ResolvedImage, ResolvedLayer, StoreError, StoreKind,
    WhiteoutFormat, parse_object, read_capped,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A Docker data root.
pub struct DockerStore {
    pub root: PathBuf,
}

#[derive(serde::Deserialize)]
struct Repositories {
    #[serde(rename = "Repositories", default)]
    repositories: BTreeMap<String, BTreeMap<String, String>>,
}

/// Small files in layerdb (ids, sizes) are capped at this many bytes.
const MAX_SMALL: u64 = 4096;

fn read_small(p: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(p, e)),
        Ok(_) => {}
    }
    let b = read_capped(p, MAX_SMALL)?;
    let s = String::from_utf8(b).map_err(|_| StoreError::corrupt(p, "not UTF-8"))?;
    Ok(Some(s.trim().to_string()))
}

impl DockerStore {
    pub fn new(root: &Path) -> DockerStore {
        DockerStore { root: root.to_path_buf() }
    }
    fn img(&self) -> PathBuf {
        self.root.join("image/overlay2")
    }
    fn config_path(&self, id: &str) -> PathBuf {
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        self.img().join("imagedb/content/sha256").join(hex)
    }
    fn layerdb(&self, chain: &str) -> PathBuf {
        let hex = chain.strip_prefix("sha256:").unwrap_or(chain);
        self.img().join("layerdb/sha256").join(hex)
    }

    /// Every image: configs in imagedb plus names from repositories.json.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut by_id: BTreeMap<String, ImageRecord> = BTreeMap::new();
        let content = self.img().join("imagedb/content/sha256");
        match std::fs::read_dir(&content) {
            Ok(rd) => {
                for e in rd {
                    let e = e.map_err(|e| StoreError::io(&content, e))?;
                    if let Some(n) = e.file_name().to_str().filter(|n| is_hex64(n)) {
                        let id = format!("sha256:{n}");
                        by_id.insert(id.clone(), ImageRecord { key: id.clone(), id, ..Default::default() });
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&content, e)),
        }
        let rp = self.img().join("repositories.json");
        if rp.exists() {
            let repos: Repositories = parse_object(&read_capped(&rp, MAX_JSON)?, &rp)?;
            for (_repo, refs) in repos.repositories {
                for (name, id) in refs {
                    let Some(id) = super::digest::normalize_id(&id) else {
                        return Err(StoreError::corrupt(&rp, format!("invalid image id for {name:?}")));
                    };
                    let r = by_id
                        .entry(id.clone())
                        .or_insert_with(|| ImageRecord { key: id.clone(), id, ..Default::default() });
                    r.names.push(name);
                }
            }
        }
        let mut out: Vec<ImageRecord> = by_id.into_values().collect();
        for r in &mut out {
            // Cheap listing details; a broken config just leaves them empty here and
            // fails loudly at resolve time.
            if let Ok(b) = read_capped(&self.config_path(&r.id), MAX_JSON)
                && let Ok(c) = serde_json::from_slice::<ImageConfig>(&b) {
                    r.created = c.created.clone();
                    r.layer_count = Some(c.diff_ids().len());
                    let mut total = 0u64;
                    let mut known = true;
                    for ch in chain_ids(c.diff_ids()) {
                        match read_small(&self.layerdb(&ch).join("size")).ok().flatten() {
                            Some(s) => total += s.parse::<u64>().unwrap_or(0),
                            None => known = false,
                        }
                    }
                    r.size = known.then_some(total);
                }
        }
        Ok(out)
    }

    /// Verify and resolve one image's layers.
    pub fn resolve(&self, rec: &ImageRecord) -> Result<ResolvedImage, StoreError> {
        let cp = self.config_path(&rec.id);
        let image = rec.names.first().cloned().unwrap_or_else(|| rec.id.clone());
        if !cp.exists() {
            return Err(StoreError::LayerMissing { image, layer: "config".into(), file: cp });
        }
        let bytes = read_capped(&cp, MAX_JSON)?;
        let got = sha256_digest(&bytes);
        if got != rec.id {
            return Err(StoreError::corrupt(&cp, format!("sha256 is {got}, expected {}", rec.id)));
        }
        let cfg = ImageConfig::parse(&bytes, &cp)?;
        let diff_ids = cfg.diff_ids();
        let history = cfg.layer_history();
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (i, chain) in chain_ids(diff_ids).iter().enumerate() {
            let db = self.layerdb(chain);
            let diff_file = db.join("diff");
            let missing = |file: PathBuf| StoreError::LayerMissing {
                image: image.clone(),
                layer: chain.clone(),
                file,
            };
            let diff = read_small(&diff_file)?.ok_or_else(|| missing(diff_file.clone()))?;
            if diff != diff_ids[i] {
                // Only echo the file when it looks like a digest (never arbitrary content).
                let shown = if super::digest::parse_sha256(&diff).is_some() { diff.as_str() } else { "not a sha256 digest" };
                return Err(StoreError::corrupt(
                    &diff_file,
                    format!("layer {} has diff {shown}, expected {}", i + 1, diff_ids[i]),
                ));
            }
            let cid_file = db.join("cache-id");
            let cache_id = read_small(&cid_file)?.ok_or_else(|| missing(cid_file.clone()))?;
            if let Err(why) = check_component(&cache_id) {
                return Err(StoreError::corrupt(&cid_file, format!("unsafe cache-id {cache_id:?}: {why}")));
            }
            let dir = self.root.join("overlay2").join(&cache_id).join("diff");
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(StoreError::corrupt(&dir, "not a directory")),
                Err(_) => return Err(missing(dir)),
            }
            let size = read_small(&db.join("size")).ok().flatten().and_then(|s| s.parse().ok());
            layers.push(ResolvedLayer {
                dir,
                diff_id: diff_ids[i].clone(),
                layer_id: chain.clone(),
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
