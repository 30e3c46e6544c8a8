//! OCI image layouts, in a directory or inside a tar (see archive.rs).
//!
//! ```text
//! DIR/
//! ├── oci-layout                {"imageLayoutVersion":"1.0.0"}
//! ├── index.json                {"manifests":[{"digest":"sha256:…","mediaType":"…manifest…",
//! │                               "annotations":{"org.opencontainers.image.ref.name":"app"}}]}
//! └── blobs/sha256/<hex>        manifests, nested indexes, configs, layers (tar/gzip/zstd)
//! ```
//! index.json → (nested index, platform chosen for this machine) → manifest → config
//! (`rootfs.diff_ids`) + layers. Ref names that are a full reference (`example.com/a:t`)
//! match like any name; a bare tag (`app`) matches any repository with that tag.
//!
//! Invariants: every blob path is built from a validated `sha256:<64 hex>` digest; every
//! manifest, index and config read is checked against its digest; layers are verified by
//! the cache while unpacking (blob digest and diff_id). Nesting is limited to
//! [`MAX_DEPTH`] indexes. The layout is never written.

use super::cache::{self, LayerSource};
use super::digest::{parse_sha256, sha256_digest};
use super::{
    ImageConfig, ImageRecord, MAX_JSON, ResolveCtx, ResolvedImage, ResolvedLayer, StoreError,
    StoreKind, WhiteoutFormat, parse_object,
};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Deepest index nesting followed.
pub const MAX_DEPTH: usize = 4;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Where a layout's files come from.
pub trait Blobs {
    /// The layout (directory or archive file), for messages.
    fn root(&self) -> &Path;
    /// Read `rel` (relative to the layout root) fully, at most `cap` bytes.
    fn read(&self, rel: &str, cap: u64) -> Result<Vec<u8>, StoreError>;
    /// Open `rel` for streaming; also returns its size.
    fn open(&self, rel: &str) -> Result<(Box<dyn Read + '_>, u64), StoreError>;
    /// Does `rel` exist?
    fn exists(&self, rel: &str) -> bool;
    /// How to name `rel` in messages.
    fn display(&self, rel: &str) -> PathBuf;
}

/// An OCI layout directory.
pub struct DirBlobs {
    root: PathBuf,
}

impl DirBlobs {
    pub fn new(root: &Path) -> DirBlobs {
        DirBlobs { root: root.to_path_buf() }
    }
}

impl Blobs for DirBlobs {
    fn root(&self) -> &Path {
        &self.root
    }
    fn read(&self, rel: &str, cap: u64) -> Result<Vec<u8>, StoreError> {
        super::read_capped(&self.root.join(rel), cap)
    }
    fn open(&self, rel: &str) -> Result<(Box<dyn Read + '_>, u64), StoreError> {
        let p = self.root.join(rel);
        let f = std::fs::File::open(&p).map_err(|e| StoreError::io(&p, e))?;
        let n = f.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((Box::new(f), n))
    }
    fn exists(&self, rel: &str) -> bool {
        self.root.join(rel).is_file()
    }
    fn display(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub digest: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The path of a blob, from a validated digest.
pub fn blob_path(digest: &str) -> Option<String> {
    parse_sha256(digest).map(|h| format!("blobs/sha256/{h}"))
}

fn this_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        a => a,
    }
}

/// An OCI layout over some [`Blobs`].
pub struct OciStore<B: Blobs> {
    pub blobs: B,
}

/// One manifest reached from index.json, with the names pointing at it.
struct Found {
    manifest_digest: String,
    names: Vec<String>,
}

impl<B: Blobs> OciStore<B> {
    pub fn new(blobs: B) -> Self {
        OciStore { blobs }
    }

    /// Read a blob by digest and check its sha256.
    pub(crate) fn blob(&self, digest: &str, cap: u64) -> Result<Vec<u8>, StoreError> {
        let rel = blob_path(digest).ok_or_else(|| {
            StoreError::corrupt(&self.blobs.display("index.json"), format!("invalid digest {digest:?}"))
        })?;
        if !self.blobs.exists(&rel) {
            return Err(StoreError::LayerMissing {
                image: self.blobs.root().display().to_string(),
                layer: digest.to_string(),
                file: self.blobs.display(&rel),
            });
        }
        let b = self.blobs.read(&rel, cap)?;
        let got = sha256_digest(&b);
        if got != digest {
            return Err(StoreError::corrupt(&self.blobs.display(&rel), format!("sha256 is {got}, expected {digest}")));
        }
        Ok(b)
    }

    fn walk(&self, descs: &[Descriptor], names: &[String], depth: usize, out: &mut Vec<Found>) -> Result<(), StoreError> {
        if depth > MAX_DEPTH {
            return Err(StoreError::corrupt(&self.blobs.display("index.json"), "indexes nested too deeply"));
        }
        let nested = depth > 0;
        let arch_ok = |d: &Descriptor| match &d.platform {
            None => true,
            Some(p) => (p.os.is_empty() || p.os == "linux") && (p.architecture.is_empty() || p.architecture == this_arch()),
        };
        let mut picked = false;
        for d in descs {
            if nested && (picked || !arch_ok(d)) {
                continue;
            }
            let mut names = names.to_vec();
            if let Some(a) = &d.annotations {
                for k in [REF_NAME, CONTAINERD_NAME] {
                    if let Some(v) = a.get(k)
                        && !names.contains(v) {
                            names.push(v.clone());
                        }
                }
            }
            let mt = d.media_type.as_deref().unwrap_or("");
            let is_index = mt.contains("image.index") || mt.contains("manifest.list");
            let is_manifest = mt.contains("image.manifest") || mt.contains("distribution.manifest.v2");
            if is_manifest {
                out.push(Found { manifest_digest: d.digest.clone(), names });
                picked = true;
                continue;
            }
            // An index, or an unlabelled descriptor: look inside.
            let b = self.blob(&d.digest, MAX_JSON)?;
            let m: Manifest = parse_object(&b, &self.blobs.display(&blob_path(&d.digest).unwrap_or_default()))?;
            let inner_index = is_index
                || m.manifests.is_some()
                || m.media_type.as_deref().is_some_and(|t| t.contains("index") || t.contains("list"));
            if inner_index {
                let before = out.len();
                self.walk(m.manifests.as_deref().unwrap_or(&[]), &names, depth + 1, out)?;
                picked |= out.len() > before;
            } else {
                out.push(Found { manifest_digest: d.digest.clone(), names });
                picked = true;
            }
        }
        Ok(())
    }

    fn found(&self) -> Result<Vec<Found>, StoreError> {
        let p = self.blobs.display("index.json");
        if !self.blobs.exists("index.json") {
            return Err(StoreError::Store { path: p, detail: "no index.json in OCI layout".into() });
        }
        let idx: Index = parse_object(&self.blobs.read("index.json", MAX_JSON)?, &p)?;
        let mut out = Vec::new();
        self.walk(&idx.manifests, &[], 0, &mut out)?;
        Ok(out)
    }

    fn manifest(&self, digest: &str) -> Result<(Manifest, Descriptor, Vec<u8>), StoreError> {
        let path = self.blobs.display(&blob_path(digest).unwrap_or_default());
        let m: Manifest = parse_object(&self.blob(digest, MAX_JSON)?, &path)?;
        let cfg = m.config.clone().ok_or_else(|| StoreError::corrupt(&path, "manifest has no config"))?;
        let cb = self.blob(&cfg.digest, MAX_JSON)?;
        Ok((m, cfg, cb))
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut out = Vec::new();
        for f in self.found()? {
            let (m, cfg, cb) = self.manifest(&f.manifest_digest)?;
            let c: ImageConfig = serde_json::from_slice(&cb).unwrap_or_default();
            let mut rec = ImageRecord {
                id: cfg.digest.clone(),
                digests: vec![f.manifest_digest.clone()],
                key: f.manifest_digest.clone(),
                created: c.created.clone(),
                layer_count: Some(m.layers.len()),
                size: Some(m.layers.iter().filter_map(|l| l.size).sum()),
                ..Default::default()
            };
            for n in f.names {
                let bare = !n.contains('/') && !n.contains(':') && !n.contains('@');
                if bare {
                    rec.bare_tags.push(n);
                } else {
                    rec.names.push(n);
                }
            }
            out.push(rec);
        }
        Ok(out)
    }

    pub fn resolve(&self, rec: &ImageRecord, ctx: &ResolveCtx) -> Result<ResolvedImage, StoreError> {
        let (m, cfg_desc, cb) = self.manifest(&rec.key)?;
        let cpath = self.blobs.display(&blob_path(&cfg_desc.digest).unwrap_or_default());
        let cfg = ImageConfig::parse(&cb, &cpath)?;
        let layers = self.unpack_layers(rec, &m.layers, cfg.diff_ids(), &cpath, ctx)?;
        Ok(self.finish(rec, cfg, layers))
    }

    /// Shared by OCI layouts and `docker save` manifests: unpack (or locate) each layer.
    pub(crate) fn unpack_layers(
        &self,
        rec: &ImageRecord,
        descs: &[Descriptor],
        diff_ids: &[String],
        cfg_path: &Path,
        ctx: &ResolveCtx,
    ) -> Result<Vec<ResolvedLayer>, StoreError> {
        if descs.len() != diff_ids.len() {
            return Err(StoreError::corrupt(
                cfg_path,
                format!("{} layers in the manifest but {} diff_ids in the config", descs.len(), diff_ids.len()),
            ));
        }
        let image = rec.display_names().first().cloned().unwrap_or_else(|| rec.id.clone());
        let mut out = Vec::with_capacity(descs.len());
        for (d, diff_id) in descs.iter().zip(diff_ids) {
            // Descriptor digests are blob paths in an OCI layout; `docker save` manifests
            // give paths directly (digest field holds the path there, see archive.rs).
            let (rel, blob_digest) = match blob_path(&d.digest) {
                Some(r) => (r, Some(d.digest.as_str())),
                None => (d.digest.clone(), None),
            };
            let file = self.blobs.display(&rel);
            let cached = if ctx.unpack {
                if cache::lookup(&ctx.cache, diff_id).is_none() && !self.blobs.exists(&rel) {
                    return Err(StoreError::LayerMissing { image: image.clone(), layer: diff_id.clone(), file });
                }
                let open = || self.blobs.open(&rel).map(|(r, _)| r);
                let src = LayerSource {
                    diff_id,
                    blob_digest,
                    size: d.size.unwrap_or(0),
                    file: file.clone(),
                    open: &open,
                };
                Some(cache::ensure(&ctx.cache, &src)?)
            } else {
                cache::lookup(&ctx.cache, diff_id)
            };
            let (dir, whiteouts, size) = match cached {
                Some(c) => (c.dir, c.meta.whiteouts, Some(c.meta.size)),
                None => (
                    cache::entry_path(&ctx.cache, diff_id).join("diff"),
                    if crate::sys::euid() == 0 { WhiteoutFormat::CharDevice } else { WhiteoutFormat::WhFiles },
                    d.size,
                ),
            };
            out.push(ResolvedLayer { dir, diff_id: diff_id.clone(), layer_id: diff_id.clone(), whiteouts, size, created_by: None });
        }
        Ok(out)
    }

    /// Attach history, reverse to top first, and build the result.
    pub(crate) fn finish(&self, rec: &ImageRecord, cfg: ImageConfig, mut layers: Vec<ResolvedLayer>) -> ResolvedImage {
        for (l, h) in layers.iter_mut().zip(cfg.layer_history()) {
            l.created_by = h;
        }
        layers.reverse();
        ResolvedImage {
            id: rec.id.clone(),
            store: self.blobs.root().to_path_buf(),
            layers,
            kind: StoreKind::OciLayout,
            names: Vec::new(),
            created: cfg.created.clone(),
        }
    }
}
