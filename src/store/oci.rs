//! OCI image layouts, in a directory or inside a tar (see archive.rs).
//!
//! ```text
//! DIR/
//! ├── oci-layout                {"imageLayoutVersion":"1.0.0"}
//! ├── index.json                {"manifests":[{"digest":"sha256:…","size":N,"mediaType":"…manifest…",
//! │                               "annotations":{"org.opencontainers.image.ref.name":"app"}}]}
//! └── blobs/<algo>/<hex>        manifests, nested indexes, configs, layers (tar/gzip/zstd)
//! ```
//! index.json → (nested index, platform chosen for this machine) → manifest → config
//! (`rootfs.diff_ids`) + layers. Ref names that are a full reference (`example.com/a:t`)
//! match like any name; a bare tag (`app`) matches any repository with that tag.
//!
//! Invariants: a descriptor parses only with a valid [`Digest`] and a `size`; its blob
//! path is [`Digest::blob_path`], opened beneath the layout (directory fd, no symlinks,
//! regular files only) or looked up in the archive's member index; a blob must hold
//! exactly `size` bytes; manifests, indexes and configs are capped
//! ([`json::MAX_MANIFEST`], [`json::MAX_CONFIG`]) before they are read and checked
//! against their digest after; layers are verified by the cache while unpacking (blob
//! digest and diff_id). Nesting is limited to [`MAX_DEPTH`] indexes. An index.json entry
//! that cannot be followed spoils only the references that select it. The layout is never
//! written.

use super::cache::{self, LayerSource};
use super::digest::Digest;
use super::json::{self, MAX_CONFIG, MAX_MANIFEST};
use super::platform::{IndexPlatform, Platform};
use super::{
    BrokenImage, ImageConfig, ImageRecord, Listing, MAX_JSON, ResolveCtx, ResolvedImage, ResolvedLayer, StoreError,
    StoreKind, WhiteoutFormat, shown, split_bare,
};
use crate::sys::beneath::Beneath;
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
    /// How to name `rel` in messages.
    fn display(&self, rel: &Path) -> PathBuf;
    /// Read the metadata file `rel` fully; more than `cap` bytes is an error.
    fn read(&self, rel: &Path, cap: u64) -> Result<Vec<u8>, StoreError>;
    /// Open `rel`, which must hold exactly `size` bytes (the stream checks it too).
    fn open_sized(&self, rel: &Path, size: u64) -> Result<Box<dyn Read + '_>, StoreError>;
    /// Is there anything at `rel`? (Whether it may be read is for `read`/`open_sized` to
    /// say: a symlink "exists" and is then refused, with that reason.)
    fn exists(&self, rel: &Path) -> bool;
}

/// An OCI layout directory, held by its directory fd.
pub struct DirBlobs {
    root: PathBuf,
    dir: Beneath,
}

impl DirBlobs {
    pub fn open(root: &Path) -> Result<DirBlobs, StoreError> {
        let dir = Beneath::open(root).map_err(|e| StoreError::io(root, e))?;
        Ok(DirBlobs { root: root.to_path_buf(), dir })
    }
}

impl Blobs for DirBlobs {
    fn root(&self) -> &Path {
        &self.root
    }
    fn display(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }
    fn read(&self, rel: &Path, cap: u64) -> Result<Vec<u8>, StoreError> {
        self.dir.read_capped(rel, cap).map_err(|e| StoreError::io(&self.display(rel), e))
    }
    fn open_sized(&self, rel: &Path, size: u64) -> Result<Box<dyn Read + '_>, StoreError> {
        let r = self.dir.open_sized(rel, size).map_err(|e| StoreError::io(&self.display(rel), e))?;
        Ok(Box::new(r))
    }
    fn exists(&self, rel: &Path) -> bool {
        !matches!(self.dir.stat(rel), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: Option<String>,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub platform: Option<IndexPlatform>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<serde_json::Value>,
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

/// A layer blob to unpack: where it is, its exact size, its digest when known.
pub(crate) struct LayerRef {
    pub rel: PathBuf,
    pub size: u64,
    pub digest: Option<Digest>,
}

/// The ref names of a descriptor, read from the raw entry (so a broken entry keeps them).
fn ref_names(v: &serde_json::Value) -> Vec<String> {
    let mut names = Vec::new();
    for k in [REF_NAME, CONTAINERD_NAME] {
        if let Some(n) = v.get("annotations").and_then(|a| a.get(k)).and_then(|n| n.as_str())
            && !names.iter().any(|x| x == n)
        {
            names.push(n.to_string());
        }
    }
    names
}

/// An OCI layout over some [`Blobs`].
pub struct OciStore<B: Blobs> {
    pub blobs: B,
    /// `--platform`: the entry a nested multi-platform index gives; None = this machine.
    pub platform: Option<Platform>,
}

/// One manifest reached from index.json, with the names pointing at it.
struct Found {
    manifest: Descriptor,
    names: Vec<String>,
}

/// What an entry of index.json leads to.
type Entry = (Vec<String>, Result<Vec<Found>, StoreError>);

impl<B: Blobs> OciStore<B> {
    pub fn new(blobs: B) -> Self {
        OciStore { blobs, platform: None }
    }

    /// Read a JSON blob by descriptor: at most `cap`, exactly its size, checked digest.
    pub(crate) fn blob(&self, d: &Descriptor, cap: u64, what: &str) -> Result<Vec<u8>, StoreError> {
        let rel = d.digest.blob_path();
        let file = self.blobs.display(&rel);
        if d.size > cap {
            return Err(StoreError::corrupt(&file, format!("{what} declared as {} bytes, more than the {cap} allowed", d.size)));
        }
        if !self.blobs.exists(&rel) {
            return Err(StoreError::LayerMissing {
                image: self.blobs.root().display().to_string(),
                layer: d.digest.to_string(),
                file,
            });
        }
        let mut b = Vec::with_capacity(d.size as usize);
        self.blobs
            .open_sized(&rel, d.size)?
            .read_to_end(&mut b)
            .map_err(|e| StoreError::io(&file, e))?;
        let got = d.digest.same_algorithm_of(&b);
        if got != d.digest {
            return Err(StoreError::corrupt(&file, format!("content has digest {got}, expected {}", d.digest)));
        }
        Ok(b)
    }

    /// The config blob with digest `id` (capped, checked); `None` when absent.
    pub(crate) fn config_blob(&self, id: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let rel = id.blob_path();
        if !self.blobs.exists(&rel) {
            return Ok(None);
        }
        let b = self.blobs.read(&rel, MAX_CONFIG)?;
        let got = id.same_algorithm_of(&b);
        if got != *id {
            return Err(StoreError::corrupt(&self.blobs.display(&rel), format!("content has digest {got}, expected {id}")));
        }
        Ok(Some(b))
    }

    fn walk(&self, descs: &[Descriptor], names: &[String], depth: usize, out: &mut Vec<Found>) -> Result<(), StoreError> {
        if depth > MAX_DEPTH {
            return Err(StoreError::corrupt(&self.blobs.display(Path::new("index.json")), "indexes nested too deeply"));
        }
        let nested = depth > 0;
        let host;
        let want = match &self.platform {
            Some(p) => p,
            None => {
                host = Platform::host();
                &host
            }
        };
        // An entry without a platform, or with its os or architecture left empty, is
        // taken as the wanted one in what it leaves out.
        let arch_ok = |d: &Descriptor| {
            d.platform.as_ref().is_none_or(|p| {
                let or = |s: &'_ str, dflt: &str| if s.is_empty() { dflt.to_string() } else { s.to_string() };
                want.matches(&or(&p.os, &want.os), &or(&p.architecture, &want.architecture), p.variant.as_deref())
            })
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
                        && !names.contains(v)
                    {
                        names.push(v.clone());
                    }
                }
            }
            let mt = d.media_type.as_deref().unwrap_or("");
            let is_index = mt.contains("image.index") || mt.contains("manifest.list");
            let is_manifest = mt.contains("image.manifest") || mt.contains("distribution.manifest.v2");
            if is_manifest {
                out.push(Found { manifest: d.clone(), names });
                picked = true;
                continue;
            }
            // An index, or an unlabelled descriptor: look inside.
            let b = self.blob(d, MAX_MANIFEST, "an index or manifest")?;
            let file = self.blobs.display(&d.digest.blob_path());
            let m: Manifest = json::parse_object(&b, &file, "an OCI index or image manifest")?;
            let inner_index = is_index
                || m.manifests.is_some()
                || m.media_type.as_deref().is_some_and(|t| t.contains("index") || t.contains("list"));
            if inner_index {
                let before = out.len();
                self.walk(m.manifests.as_deref().unwrap_or(&[]), &names, depth + 1, out)?;
                picked |= out.len() > before;
            } else {
                out.push(Found { manifest: d.clone(), names });
                picked = true;
            }
        }
        Ok(())
    }

    /// Every entry of index.json with the manifests it leads to, or why it cannot be
    /// followed. Only an unreadable index.json fails as a whole.
    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let rel = Path::new("index.json");
        let p = self.blobs.display(rel);
        if !self.blobs.exists(rel) {
            return Err(StoreError::Store { path: p, detail: "no index.json in OCI layout".into() });
        }
        let idx: Index = json::parse_object(&self.blobs.read(rel, MAX_JSON)?, &p, "an OCI index")?;
        let mut out = Vec::new();
        for (i, v) in idx.manifests.into_iter().enumerate() {
            let names = ref_names(&v);
            let what = format!("index entry {} to be a descriptor", i + 1);
            let found = json::from_value::<Descriptor>(v, &p, &what).and_then(|d| {
                let mut f = Vec::new();
                self.walk(std::slice::from_ref(&d), &[], 0, &mut f).map(|_| f)
            });
            out.push((names, found));
        }
        Ok(out)
    }

    fn manifest(&self, d: &Descriptor) -> Result<(Manifest, Descriptor, Vec<u8>), StoreError> {
        let path = self.blobs.display(&d.digest.blob_path());
        let m: Manifest = json::parse_object(&self.blob(d, MAX_MANIFEST, "a manifest")?, &path, "an OCI image manifest")?;
        let cfg = m.config.clone().ok_or_else(|| StoreError::corrupt(&path, "expected an OCI image manifest: no config"))?;
        let cb = self.blob(&cfg, MAX_CONFIG, "an image config")?;
        Ok((m, cfg, cb))
    }

    pub fn images(&self) -> Result<Listing, StoreError> {
        let mut out = Listing::default();
        for (entry_names, found) in self.entries()? {
            let found = match found {
                Ok(f) => f,
                Err(error) => {
                    let (names, bare_tags) = split_bare(entry_names);
                    out.broken.push(BrokenImage { names, bare_tags, digests: Vec::new(), error });
                    continue;
                }
            };
            for f in found {
                let (names, bare_tags) = split_bare(f.names);
                let (m, cfg, cb) = match self.manifest(&f.manifest) {
                    Ok(x) => x,
                    Err(error) => {
                        out.broken.push(BrokenImage { names, bare_tags, digests: vec![f.manifest.digest.clone()], error });
                        continue;
                    }
                };
                let c: ImageConfig = serde_json::from_slice(&cb).unwrap_or_default();
                let mut rec = ImageRecord::new(cfg.digest.clone(), f.manifest.digest.as_str());
                rec.names = names;
                rec.bare_tags = bare_tags;
                rec.digests = vec![f.manifest.digest.clone()];
                rec.created = c.created.clone();
                rec.layer_count = Some(m.layers.len());
                rec.size = Some(m.layers.iter().map(|l| l.size).sum());
                out.images.push(rec);
            }
        }
        Ok(out)
    }

    pub fn resolve(&self, rec: &ImageRecord, ctx: &ResolveCtx) -> Result<ResolvedImage, StoreError> {
        let desc = self
            .entries()?
            .into_iter()
            .filter_map(|(_, f)| f.ok())
            .flatten()
            .map(|f| f.manifest)
            .find(|m| m.digest.as_str() == rec.key)
            .ok_or_else(|| {
                StoreError::corrupt(&self.blobs.display(Path::new("index.json")), format!("manifest {} vanished", shown::name(&rec.key)))
            })?;
        let (m, cfg_desc, cb) = self.manifest(&desc)?;
        let cpath = self.blobs.display(&cfg_desc.digest.blob_path());
        let cfg = ImageConfig::parse(&cb, &cpath)?;
        let refs: Vec<LayerRef> =
            m.layers.iter().map(|d| LayerRef { rel: d.digest.blob_path(), size: d.size, digest: Some(d.digest.clone()) }).collect();
        let layers = self.unpack_layers(rec, &refs, cfg.diff_ids(), &cpath, ctx)?;
        Ok(self.finish(rec, cfg, layers))
    }

    /// Shared by OCI layouts and `docker save` manifests: unpack (or locate) each layer.
    pub(crate) fn unpack_layers(
        &self,
        rec: &ImageRecord,
        refs: &[LayerRef],
        diff_ids: &[Digest],
        cfg_path: &Path,
        ctx: &ResolveCtx,
    ) -> Result<Vec<ResolvedLayer>, StoreError> {
        if refs.len() != diff_ids.len() {
            return Err(StoreError::corrupt(
                cfg_path,
                format!("{} layers in the manifest but {} diff_ids in the config", refs.len(), diff_ids.len()),
            ));
        }
        let image = rec.display_names().first().cloned().unwrap_or_else(|| rec.id.to_string());
        let mut out = Vec::with_capacity(refs.len());
        for (r, diff_id) in refs.iter().zip(diff_ids) {
            let file = self.blobs.display(&r.rel);
            let cached = if ctx.unpack {
                if cache::lookup(&ctx.cache, diff_id).is_none() && !self.blobs.exists(&r.rel) {
                    return Err(StoreError::LayerMissing { image: image.clone(), layer: diff_id.to_string(), file });
                }
                let open = || self.blobs.open_sized(&r.rel, r.size);
                let src = LayerSource { diff_id, blob_digest: r.digest.as_ref(), size: r.size, file: file.clone(), open: &open };
                Some(cache::ensure(&ctx.cache, &src)?)
            } else {
                cache::lookup(&ctx.cache, diff_id)
            };
            let (dir, whiteouts, size) = match cached {
                Some(c) => (c.dir, c.meta.whiteouts, Some(c.meta.size)),
                None => (
                    cache::entry_path(&ctx.cache, diff_id).join("diff"),
                    if crate::sys::euid() == 0 { WhiteoutFormat::CharDevice } else { WhiteoutFormat::WhFiles },
                    Some(r.size),
                ),
            };
            out.push(ResolvedLayer { dir, diff_id: diff_id.clone(), layer_id: diff_id.to_string(), whiteouts, size, created_by: None });
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
