//! containers-storage root (podman, buildah, CRI-O), overlay driver.
//!
//! ```text
//! ROOT/
//! ├── overlay-images/
//! │   ├── images.json          [{"id":"<hex>","names":["localhost/tiny:app"],"layer":"<top id>",
//! │   │                          "digest":"sha256:<manifest>","digests":[…],"created":"…"}]
//! │   └── <id>/=<base64("sha256:<id>")>   the image config (big data item)
//! ├── overlay-layers/
//! │   ├── layers.json          [{"id":"<id>","parent":"<id>","diff-digest":"sha256:…","diff-size":N}]
//! │   └── volatile-layers.json (optional, same shape)
//! └── overlay/<layer id>/diff/ the layer tree
//! ```
//! Invariants: layer ids pass [`check_component`] before they become paths; the parent
//! walk from the image's top layer stops on a cycle or after [`MAX_LAYERS`] layers; a
//! config, when present, must hash to the image id. Whiteouts may be char devices or
//! `.wh.` files depending on how the store was written, so layers are marked `Either`.
//! Nothing is written.

use super::digest::{check_component, is_hex64, sha256_digest};
use super::{
    ImageConfig, ImageRecord, MAX_JSON, ResolvedImage, ResolvedLayer, StoreError, StoreKind,
    WhiteoutFormat, parse_json, read_capped,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Longest parent chain we follow.
pub const MAX_LAYERS: usize = 4096;

/// A containers-storage root.
pub struct CStore {
    pub root: PathBuf,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct CsImage {
    id: String,
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    layer: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    digests: Option<Vec<String>>,
    #[serde(default)]
    created: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct CsLayer {
    id: String,
    #[serde(default)]
    parent: Option<String>,
    #[serde(rename = "diff-digest", default)]
    diff_digest: Option<String>,
    #[serde(rename = "diff-size", default)]
    diff_size: Option<u64>,
}

/// Standard base64 with padding (containers-storage names big-data files with it).
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

impl CStore {
    pub fn new(root: &Path) -> CStore {
        CStore { root: root.to_path_buf() }
    }

    fn raw_images(&self) -> Result<Vec<CsImage>, StoreError> {
        let p = self.root.join("overlay-images/images.json");
        if !p.exists() {
            return Ok(Vec::new());
        }
        parse_json(&read_capped(&p, MAX_JSON)?, &p)
    }

    fn layers(&self) -> Result<HashMap<String, CsLayer>, StoreError> {
        let mut m = HashMap::new();
        for f in ["layers.json", "volatile-layers.json"] {
            let p = self.root.join("overlay-layers").join(f);
            if !p.exists() {
                continue;
            }
            let v: Vec<CsLayer> = parse_json(&read_capped(&p, MAX_JSON)?, &p)?;
            for l in v {
                m.insert(l.id.clone(), l);
            }
        }
        Ok(m)
    }

    fn config_path(&self, hex: &str) -> PathBuf {
        let key = format!("sha256:{hex}");
        self.root.join("overlay-images").join(hex).join(format!("={}", base64(key.as_bytes())))
    }

    /// The chain of layers from `top` down to the base, top first.
    fn chain(&self, image: &str, top: &str, all: &HashMap<String, CsLayer>) -> Result<Vec<CsLayer>, StoreError> {
        let lj = self.root.join("overlay-layers/layers.json");
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = Some(top.to_string());
        while let Some(id) = cur.filter(|s| !s.is_empty()) {
            if let Err(why) = check_component(&id) {
                return Err(StoreError::corrupt(&lj, format!("unsafe layer id {id:?}: {why}")));
            }
            if !seen.insert(id.clone()) || out.len() >= MAX_LAYERS {
                return Err(StoreError::corrupt(&lj, format!("layer parent chain of {image} loops or is too long")));
            }
            let l = all.get(&id).ok_or_else(|| StoreError::LayerMissing {
                image: image.to_string(),
                layer: id.clone(),
                file: lj.clone(),
            })?;
            cur = l.parent.clone();
            out.push(l.clone());
        }
        Ok(out)
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let layers = self.layers().unwrap_or_default();
        let mut out = Vec::new();
        for im in self.raw_images()? {
            if !is_hex64(&im.id) {
                log::warn!("containers-storage: skipping image with invalid id {:?}", im.id);
                continue;
            }
            let mut digests: Vec<String> = im.digests.clone().unwrap_or_default();
            digests.extend(im.digest.clone());
            digests.sort();
            digests.dedup();
            let chain = im
                .layer
                .as_deref()
                .and_then(|t| self.chain(&im.id, t, &layers).ok());
            out.push(ImageRecord {
                id: format!("sha256:{}", im.id),
                names: im.names.clone().unwrap_or_default(),
                digests,
                key: im.id.clone(),
                created: im.created.clone(),
                layer_count: chain.as_ref().map(Vec::len),
                size: chain.as_ref().map(|c| c.iter().filter_map(|l| l.diff_size).sum()),
                ..Default::default()
            });
        }
        Ok(out)
    }

    pub fn resolve(&self, rec: &ImageRecord) -> Result<ResolvedImage, StoreError> {
        let ij = self.root.join("overlay-images/images.json");
        let im = self
            .raw_images()?
            .into_iter()
            .find(|i| i.id == rec.key)
            .ok_or_else(|| StoreError::corrupt(&ij, format!("image {} vanished", rec.key)))?;
        let image = rec.names.first().cloned().unwrap_or_else(|| rec.id.clone());
        let all = self.layers()?;
        let chain = match im.layer.as_deref() {
            Some(t) if !t.is_empty() => self.chain(&image, t, &all)?,
            _ => Vec::new(),
        };
        // The config (optional in the store): verify and use for history.
        let cp = self.config_path(&im.id);
        let mut cfg = ImageConfig::default();
        if cp.exists() {
            let bytes = read_capped(&cp, MAX_JSON)?;
            let got = sha256_digest(&bytes);
            if got != rec.id {
                return Err(StoreError::corrupt(&cp, format!("sha256 is {got}, expected {}", rec.id)));
            }
            cfg = ImageConfig::parse(&bytes, &cp)?;
        }
        let history = cfg.layer_history();
        let n = chain.len();
        let mut layers = Vec::with_capacity(n);
        for (i, l) in chain.iter().enumerate() {
            let dir = self.root.join("overlay").join(&l.id).join("diff");
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(StoreError::corrupt(&dir, "not a directory")),
                Err(_) => {
                    return Err(StoreError::LayerMissing { image: image.clone(), layer: l.id.clone(), file: dir });
                }
            }
            let diff_id = l.diff_digest.clone().unwrap_or_default();
            let bottom_index = n - 1 - i;
            if let Some(want) = cfg.diff_ids().get(bottom_index)
                && !diff_id.is_empty() && *want != diff_id && cfg.diff_ids().len() == n {
                    return Err(StoreError::corrupt(
                        &self.root.join("overlay-layers/layers.json"),
                        format!("layer {} has diff-digest {diff_id}, config says {want}", l.id),
                    ));
                }
            layers.push(ResolvedLayer {
                dir,
                diff_id,
                layer_id: l.id.clone(),
                whiteouts: WhiteoutFormat::Either,
                size: l.diff_size,
                created_by: if history.len() == n { history[bottom_index].clone() } else { None },
            });
        }
        Ok(ResolvedImage {
            id: rec.id.clone(),
            store: self.root.clone(),
            layers,
            kind: StoreKind::ContainersStorage,
            names: Vec::new(),
            created: cfg.created.clone().or(im.created.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_fixture_name() {
        // From the fixture: overlay-images/07267…/=c2hhMjU2OjA3MjY3…
        let id = "07267ddda5c4ef59ad6017e0abcd3155cbfae7e8d1756e028f977f3c5429b98d";
        assert_eq!(
            base64(format!("sha256:{id}").as_bytes()),
            "c2hhMjU2OjA3MjY3ZGRkYTVjNGVmNTlhZDYwMTdlMGFiY2QzMTU1Y2JmYWU3ZThkMTc1NmUwMjhmOTc3ZjNjNTQyOWI5OGQ="
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }
}
