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
//! Invariants: every file is read beneath the root's directory fd without following a
//! symlink; image and layer ids are [`StoreId`]s and digests [`Digest`]s before they are
//! used; an images.json or layers.json entry that does not parse spoils only the images
//! that use it; the parent walk from the image's top layer stops on a cycle or after
//! [`MAX_LAYERS`] layers; a config, when present, must hash to the image id. Whiteouts may
//! be char devices or `.wh.` files depending on how the store was written, so layers are
//! marked `Either`. Nothing is written.

use super::digest::{Digest, StoreId};
use super::shown;
use super::{
    BrokenImage, ImageConfig, ImageRecord, Listing, MAX_JSON, ResolvedImage, ResolvedLayer, StoreError, StoreKind,
    WhiteoutFormat, json,
};
use crate::sys::beneath::Beneath;
use base64::Engine as _;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

/// Longest parent chain we follow.
pub const MAX_LAYERS: usize = 4096;

const IMAGES: &str = "overlay-images/images.json";
const LAYERS: &str = "overlay-layers/layers.json";

/// A containers-storage root.
pub struct CStore {
    pub root: PathBuf,
    dir: Beneath,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct CsImage {
    id: StoreId,
    #[serde(default)]
    names: Option<Vec<String>>,
    #[serde(default)]
    layer: Option<String>,
    #[serde(default)]
    digest: Option<Digest>,
    #[serde(default)]
    digests: Option<Vec<Digest>>,
    #[serde(default)]
    created: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct CsLayer {
    id: StoreId,
    #[serde(default)]
    parent: Option<String>,
    #[serde(rename = "diff-digest", default)]
    diff_digest: Option<Digest>,
    #[serde(rename = "diff-size", default)]
    diff_size: Option<u64>,
}

/// layers.json and volatile-layers.json: the entries that parse, and why others did not
/// (by the id they claim, when they have a string one).
#[derive(Default)]
struct Layers {
    ok: HashMap<StoreId, CsLayer>,
    bad: HashMap<String, StoreError>,
}

/// images.json: the entries that parse (with their position) and those that do not.
type RawImages = (Vec<(usize, CsImage)>, Vec<BrokenImage>);

/// The names an unparsable entry still shows, so only references to it fail.
fn raw_names(v: &serde_json::Value) -> Vec<String> {
    v.get("names")
        .and_then(|n| n.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

impl CStore {
    pub fn open(root: &Path) -> Result<CStore, StoreError> {
        let dir = Beneath::open(root).map_err(|e| StoreError::io(root, e))?;
        Ok(CStore { root: root.to_path_buf(), dir })
    }

    /// A JSON list file; None when absent.
    fn list(&self, rel: &str, what: &str) -> Result<Option<Vec<serde_json::Value>>, StoreError> {
        let p = self.root.join(rel);
        match self.dir.read_capped(Path::new(rel), MAX_JSON) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&p, e)),
            Ok(b) => json::parse(&b, &p, what).map(Some),
        }
    }

    /// Parsed images with their entry index, and broken entries.
    fn raw_images(&self) -> Result<RawImages, StoreError> {
        let p = self.root.join(IMAGES);
        let mut ok = Vec::new();
        let mut broken = Vec::new();
        for (i, v) in self.list(IMAGES, "a list of images")?.unwrap_or_default().into_iter().enumerate() {
            let names = raw_names(&v);
            match json::from_value::<CsImage>(v, &p, &format!("image entry {} to be an image", i + 1)) {
                Ok(im) => ok.push((i, im)),
                Err(error) => broken.push(BrokenImage { names, bare_tags: Vec::new(), digests: Vec::new(), error }),
            }
        }
        Ok((ok, broken))
    }

    fn layers(&self) -> Result<Layers, StoreError> {
        let mut out = Layers::default();
        for f in [LAYERS, "overlay-layers/volatile-layers.json"] {
            let p = self.root.join(f);
            for (i, v) in self.list(f, "a list of layers")?.unwrap_or_default().into_iter().enumerate() {
                let raw_id = v.get("id").and_then(|x| x.as_str()).map(str::to_string);
                match json::from_value::<CsLayer>(v, &p, &format!("layer entry {} to be a layer", i + 1)) {
                    Ok(l) => {
                        out.ok.insert(l.id.clone(), l);
                    }
                    Err(e) => {
                        if let Some(id) = raw_id {
                            out.bad.insert(id, e);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn config_rel(id: &StoreId) -> PathBuf {
        let key = format!("sha256:{id}");
        let name = format!("={}", base64::engine::general_purpose::STANDARD.encode(key.as_bytes()));
        Path::new("overlay-images").join(id.path()).join(name)
    }

    /// The config of image `key` (its id in images.json), verified against its digest
    /// `id`, and the file it was read from; `None` when the store holds none.
    pub(crate) fn config(&self, key: &StoreId, id: &Digest) -> Result<Option<(Vec<u8>, PathBuf)>, StoreError> {
        let crel = Self::config_rel(key);
        let cp = self.root.join(&crel);
        match self.dir.read_capped(&crel, json::MAX_CONFIG) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&cp, e)),
            Ok(bytes) => {
                let got = id.same_algorithm_of(&bytes);
                if got != *id {
                    return Err(StoreError::corrupt(&cp, format!("content has digest {got}, expected {id}")));
                }
                Ok(Some((bytes, cp)))
            }
        }
    }

    /// The chain of layers from `top` down to the base, top first.
    fn chain(&self, image: &str, top: &str, all: &Layers) -> Result<Vec<CsLayer>, StoreError> {
        let lj = self.root.join(LAYERS);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = Some(top.to_string());
        while let Some(raw) = cur.filter(|s| !s.is_empty()) {
            if let Some(e) = all.bad.get(&raw) {
                return Err(e.clone());
            }
            let id = StoreId::parse(&raw).map_err(|e| StoreError::corrupt(&lj, format!("layer of {}: {e}", shown::name(image))))?;
            if !seen.insert(id.clone()) || out.len() >= MAX_LAYERS {
                return Err(StoreError::corrupt(&lj, format!("layer parent chain of {} loops or is too long", shown::name(image))));
            }
            let l = all.ok.get(&id).ok_or_else(|| StoreError::LayerMissing {
                image: image.to_string(),
                layer: id.to_string(),
                file: lj.clone(),
            })?;
            cur = l.parent.clone();
            out.push(l.clone());
        }
        Ok(out)
    }

    pub fn images(&self) -> Result<Listing, StoreError> {
        let layers = self.layers().unwrap_or_default();
        let (raw, mut broken) = self.raw_images()?;
        let mut images = Vec::new();
        for (i, im) in raw {
            let names = im.names.clone().unwrap_or_default();
            let id = match Digest::from_sha256_hex(im.id.as_str()) {
                Ok(d) => d,
                Err(e) => {
                    let error = StoreError::corrupt(&self.root.join(IMAGES), format!("image entry {}: {e}", i + 1));
                    broken.push(BrokenImage { names, bare_tags: Vec::new(), digests: Vec::new(), error });
                    continue;
                }
            };
            let mut digests: Vec<Digest> = im.digests.clone().unwrap_or_default();
            digests.extend(im.digest.clone());
            digests.sort();
            digests.dedup();
            let chain = im.layer.as_deref().and_then(|t| self.chain(im.id.as_str(), t, &layers).ok());
            let mut rec = ImageRecord::new(id, im.id.as_str());
            rec.names = names;
            rec.digests = digests;
            rec.created = im.created.clone();
            rec.layer_count = chain.as_ref().map(Vec::len);
            rec.size = chain.as_ref().map(|c| c.iter().filter_map(|l| l.diff_size).sum());
            images.push(rec);
        }
        Ok(Listing { images, broken })
    }

    pub fn resolve(&self, rec: &ImageRecord) -> Result<ResolvedImage, StoreError> {
        let ij = self.root.join(IMAGES);
        let (raw, _) = self.raw_images()?;
        let im = raw
            .into_iter()
            .map(|(_, im)| im)
            .find(|i| i.id.as_str() == rec.key)
            .ok_or_else(|| StoreError::corrupt(&ij, format!("image {} vanished", shown::name(&rec.key))))?;
        let image = rec.names.first().cloned().unwrap_or_else(|| rec.id.to_string());
        let all = self.layers()?;
        let chain = match im.layer.as_deref() {
            Some(t) if !t.is_empty() => self.chain(&image, t, &all)?,
            _ => Vec::new(),
        };
        // The config (optional in the store): verify and use for history.
        let cfg = match self.config(&im.id, &rec.id)? {
            None => ImageConfig::default(),
            Some((bytes, cp)) => ImageConfig::parse(&bytes, &cp)?,
        };
        let history = cfg.layer_history();
        let n = chain.len();
        let config_ids = (cfg.diff_ids().len() == n).then(|| cfg.diff_ids());
        let lj = self.root.join(LAYERS);
        let mut layers = Vec::with_capacity(n);
        for (i, l) in chain.iter().enumerate() {
            let rel = Path::new("overlay").join(l.id.path()).join("diff");
            let dir = self.root.join(&rel);
            match self.dir.stat(&rel) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(StoreError::corrupt(&dir, "not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StoreError::LayerMissing { image: image.clone(), layer: l.id.to_string(), file: dir });
                }
                Err(e) => return Err(StoreError::io(&dir, e)),
            }
            let bottom_index = n - 1 - i;
            let want = config_ids.map(|c| &c[bottom_index]);
            let diff_id = match (&l.diff_digest, want) {
                (Some(d), Some(w)) if d != w => {
                    return Err(StoreError::corrupt(&lj, format!("layer {} has diff-digest {d}, config says {w}", l.id)));
                }
                (Some(d), _) => d.clone(),
                (None, Some(w)) => w.clone(),
                (None, None) => return Err(StoreError::corrupt(&lj, format!("layer {} has no diff-digest", l.id))),
            };
            layers.push(ResolvedLayer {
                dir,
                diff_id,
                layer_id: l.id.to_string(),
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
    fn config_name_matches_fixture() {
        // From the fixture: overlay-images/07267…/=c2hhMjU2OjA3MjY3…
        let id = StoreId::parse("07267ddda5c4ef59ad6017e0abcd3155cbfae7e8d1756e028f977f3c5429b98d").unwrap();
        assert_eq!(
            CStore::config_rel(&id),
            Path::new("overlay-images").join(id.as_str()).join(
                "=c2hhMjU2OjA3MjY3ZGRkYTVjNGVmNTlhZDYwMTdlMGFiY2QzMTU1Y2JmYWU3ZThkMTc1NmUwMjhmOTc3ZjNjNTQyOWI5OGQ="
            )
        );
    }
}
