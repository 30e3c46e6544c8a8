//! containerd's image store (Docker 29+ by default, nerdctl, Kubernetes nodes).
//!
//! ```text
//! ROOT/
//! ├── io.containerd.metadata.v1.bolt/meta.db        names → targets, snapshot keys (bbolt)
//! ├── io.containerd.content.v1.content/blobs/sha256/<hex>   indexes, manifests, configs, layers
//! └── io.containerd.snapshotter.v1.overlayfs/
//!     ├── metadata.db                               backend name → {id, kind, parent} (bbolt)
//!     └── snapshots/<id>/fs/                        a layer's tree (char-device whiteouts)
//! ```
//! name (namespace) → target → index (platform: the host's, or `--platform`) → manifest →
//! config (`rootfs.diff_ids`) → chain ids → meta.db `snapshots/overlayfs/<chain id>` →
//! metadata.db entry → `snapshots/<id>/fs`, listed top first. Namespaces: `--namespace`,
//! else `moby` (Docker) first, then the others in name order; the same reference naming
//! different images in two other namespaces is an error listing them.
//!
//! Ids: `docker images` on such a host shows the target's digest (manifest or index), so
//! that is the image id here; the config digest (what `crictl images` shows) selects the
//! image too.
//!
//! Invariants: read only (each bbolt file is read once, in one consistent snapshot);
//! every blob read is checked against its digest and must be recorded in the namespace;
//! the manifest's layers must match the config's diff_ids in number; every snapshot used is
//! committed, has a numeric id, and its parent is the layer below; paths are built only
//! from checked digests and numbers. Images not unpacked for the overlayfs snapshotter are
//! unpacked from their content blobs into the verified layer cache, as for OCI layouts.

use super::containerd_db::{self, KIND_COMMITTED, MetaDb, Namespace, SnapshotInfo};
use super::digest::{Digest, chain_ids};
use super::oci::{self, Descriptor, DirBlobs, LayerRef, OciStore};
use super::platform::{IndexPlatform, Platform};
use super::reference::{IdQuery, Query};
use super::{
    BrokenImage, ImageConfig, ImageRecord, Listing, ResolveCtx, ResolvedImage, ResolvedLayer, StoreError,
    WhiteoutFormat, json, shown,
};
use crate::sys::beneath::Beneath;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const META_DB: &str = "io.containerd.metadata.v1.bolt/meta.db";
pub const CONTENT: &str = "io.containerd.content.v1.content";
pub const OVERLAYFS: &str = "io.containerd.snapshotter.v1.overlayfs";

/// Docker's namespace, searched first.
pub const DOCKER_NS: &str = "moby";

#[derive(Debug, Clone, serde::Deserialize)]
struct IndexEntry {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    digest: Digest,
    size: u64,
    #[serde(default)]
    platform: Option<IndexPlatform>,
}

/// An index or a manifest: whichever fields are present.
#[derive(Debug, Default, serde::Deserialize)]
struct Document {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

fn is_index(media_type: &str) -> bool {
    media_type.contains("image.index") || media_type.contains("manifest.list")
}

fn descriptor(digest: &Digest, size: u64) -> Descriptor {
    Descriptor { media_type: None, digest: digest.clone(), size, annotations: None, platform: None }
}

/// A manifest reached from an image's target, with its config.
struct Walked {
    manifest: Document,
    config_digest: Digest,
    config: Vec<u8>,
}

/// A containerd root.
pub struct ContainerdStore {
    pub root: PathBuf,
    /// `--namespace`: only this one.
    pub namespace: Option<String>,
    /// `--platform`; None = this machine.
    pub platform: Option<Platform>,
    /// The content store (blobs by digest), held by its directory fd.
    content: Result<OciStore<DirBlobs>, StoreError>,
    meta: OnceLock<Result<MetaDb, containerd_db::DbError>>,
    /// Record key → what its manifest and config say (computed only when needed).
    summaries: OnceLock<BTreeMap<String, Summary>>,
}

/// What listing shows of an image, and its config digest (the id `crictl` shows).
#[derive(Debug, Clone)]
struct Summary {
    config: Digest,
    created: Option<String>,
    layers: usize,
    size: u64,
}

fn key_of(ns: &str, name: &str) -> String {
    format!("{ns}\0{name}")
}

fn split_key(key: &str) -> (&str, &str) {
    key.split_once('\0').unwrap_or(("", key))
}

/// The containerd root for a `--store` path: the path itself, or the containerd root a
/// Docker data root holds (`DOCKER_ROOT/containerd/daemon`, Docker running its own).
pub fn root_of(path: &Path) -> PathBuf {
    let own = path.join("containerd/daemon");
    if !path.join(META_DB).exists() && own.join(META_DB).exists() { own } else { path.to_path_buf() }
}

/// Is `path` a containerd root (or a Docker root whose images are in its own containerd)?
pub fn is_root(path: &Path) -> bool {
    root_of(path).join(META_DB).is_file()
}

impl ContainerdStore {
    /// Open the containerd root `root` (nothing is read yet).
    pub fn open(root: &Path) -> Result<ContainerdStore, StoreError> {
        Ok(ContainerdStore {
            root: root.to_path_buf(),
            namespace: None,
            platform: None,
            content: DirBlobs::open(&root.join(CONTENT)).map(OciStore::new),
            meta: OnceLock::new(),
            summaries: OnceLock::new(),
        })
    }

    /// Apply `--namespace` / `--platform` (before `images()`).
    pub fn select(&mut self, namespace: Option<&str>, platform: Option<&Platform>) -> Result<(), StoreError> {
        if let Some(ns) = namespace {
            if !super::containerd_discover::valid_namespace(ns) {
                return Err(StoreError::Other(format!(
                    "invalid namespace {}: letters, digits, '.', '_' and '-' only",
                    shown::excerpt(ns.as_bytes())
                )));
            }
            self.namespace = Some(ns.to_string());
        }
        if let Some(p) = platform {
            self.platform = Some(p.clone());
        }
        self.meta = OnceLock::new();
        self.summaries = OnceLock::new();
        Ok(())
    }

    fn content(&self) -> Result<&OciStore<DirBlobs>, StoreError> {
        self.content.as_ref().map_err(Clone::clone)
    }

    fn meta(&self) -> Result<&MetaDb, StoreError> {
        self.meta
            .get_or_init(|| {
                let root = Beneath::open(&self.root)
                    .map_err(|e| containerd_db::DbError { file: self.root.clone(), detail: e.to_string(), io: true })?;
                containerd_db::read_meta(&root, &self.root, META_DB, self.namespace.as_deref())
            })
            .as_ref()
            .map_err(containerd_db::DbError::to_store)
    }

    /// Namespaces in search order: `moby` first, then the others by name.
    fn namespaces<'a>(&self, db: &'a MetaDb) -> Vec<(&'a str, &'a Namespace)> {
        let mut v: Vec<(&str, &Namespace)> = db.namespaces.iter().map(|(k, n)| (k.as_str(), n)).collect();
        v.sort_by_key(|(k, _)| (*k != DOCKER_NS, *k));
        v
    }

    /// A JSON blob of namespace `ns`: recorded there, exactly `size` bytes (at most `cap`),
    /// read beneath the content root and checked against its digest.
    fn blob(&self, ns: &Namespace, digest: &Digest, size: u64, cap: u64, what: &str) -> Result<Vec<u8>, StoreError> {
        if !ns.blobs.contains(digest) {
            return Err(StoreError::LayerMissing {
                image: self.root.display().to_string(),
                layer: digest.to_string(),
                file: self.blob_file(digest),
            });
        }
        self.content()?.blob(&descriptor(digest, size), cap, what)
    }

    /// The image config with digest `id` from the content store (checked); `None`
    /// when absent. Used by `commit` to carry a base image's config over.
    pub(crate) fn config(&self, id: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.content()?.config_blob(id)
    }

    fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.root.join(CONTENT).join(digest.blob_path())
    }

    /// target → (index → the platform's manifest) → manifest → config.
    fn walk(&self, ns: &Namespace, target: &Digest, size: u64, media_type: &str) -> Result<Walked, StoreError> {
        let want = self.platform.clone().unwrap_or_else(Platform::host);
        let (mut digest, mut size, mut mt) = (target.clone(), size, media_type.to_string());
        for _ in 0..=oci::MAX_DEPTH {
            let bytes = self.blob(ns, &digest, size, json::MAX_MANIFEST, "manifest")?;
            let file = self.blob_file(&digest);
            let doc: Document = json::parse_object(&bytes, &file, "a manifest or index")?;
            let index = is_index(&mt) || doc.manifests.is_some() || doc.media_type.as_deref().is_some_and(is_index);
            if !index {
                let cfg = doc.config.clone().ok_or_else(|| StoreError::corrupt(&file, "manifest has no config"))?;
                let config = self.blob(ns, &cfg.digest, cfg.size, json::MAX_CONFIG, "config")?;
                return Ok(Walked { manifest: doc, config_digest: cfg.digest, config });
            }
            let entries = doc.manifests.unwrap_or_default();
            let Some(e) = want.best(&entries, |e| e.platform.as_ref()) else {
                let have: Vec<String> = entries
                    .iter()
                    .filter_map(|e| e.platform.as_ref())
                    .filter(|p| p.os != "unknown")
                    .map(IndexPlatform::display)
                    .collect();
                return Err(StoreError::Other(format!(
                    "image has no {want} variant (it has: {}); choose one with --platform",
                    if have.is_empty() { "none".to_string() } else { have.join(", ") }
                )));
            };
            (digest, size, mt) = (e.digest.clone(), e.size, e.media_type.clone().unwrap_or_default());
        }
        Err(StoreError::corrupt(&self.blob_file(target), "indexes nested too deeply"))
    }

    /// The broken image records of namespace `nsname`: selecting one by name is its error.
    fn broken_of(&self, nsname: &str, ns: &Namespace) -> Vec<BrokenImage> {
        ns.broken
            .iter()
            .map(|(name, why)| BrokenImage {
                names: vec![name.clone()],
                bare_tags: Vec::new(),
                digests: Vec::new(),
                error: StoreError::corrupt(
                    &self.root.join(META_DB),
                    format!("image {} in namespace {nsname}: {why}", shown::name(name)),
                ),
            })
            .collect()
    }

    /// Every image of the searched namespaces (moby first), and the unusable records.
    pub fn images(&self) -> Result<Listing, StoreError> {
        let db = self.meta()?;
        if let Some(ns) = &self.namespace
            && !db.namespaces.contains_key(ns)
        {
            let have: Vec<&str> = db.names.iter().map(String::as_str).collect();
            return Err(StoreError::Store {
                path: self.root.clone(),
                detail: format!("no containerd namespace {} (namespaces: {})", shown::name(ns), have.join(", ")),
            });
        }
        let mut out = Listing::default();
        for (nsname, ns) in self.namespaces(db) {
            for img in &ns.images {
                let mut r = ImageRecord::new(img.target.clone(), key_of(nsname, &img.name));
                r.names = vec![img.name.clone()];
                r.digests = vec![img.target.clone()];
                r.namespace = Some(nsname.to_string());
                out.images.push(r);
            }
            out.broken.extend(self.broken_of(nsname, ns));
        }
        Ok(out)
    }

    /// Like [`ContainerdStore::images`], with creation time, layer count and size (this
    /// reads every image's manifest and config: for listing, not for mounting).
    pub fn list(&self) -> Result<Listing, StoreError> {
        let mut out = self.images()?;
        let sums = self.summaries()?;
        for r in &mut out.images {
            if let Some(s) = sums.get(&r.key) {
                r.created = s.created.clone();
                r.layer_count = Some(s.layers);
                r.size = Some(s.size);
            }
        }
        Ok(out)
    }

    /// Every image's summary; one walk per (namespace, target). A broken image has none
    /// (it lists without details and fails, with its reason, when resolved).
    fn summaries(&self) -> Result<&BTreeMap<String, Summary>, StoreError> {
        let db = self.meta()?;
        Ok(self.summaries.get_or_init(|| {
            let mut by_target: BTreeMap<(&str, &Digest), Option<Summary>> = BTreeMap::new();
            let mut out = BTreeMap::new();
            for (nsname, ns) in self.namespaces(db) {
                for img in &ns.images {
                    let s = by_target.entry((nsname, &img.target)).or_insert_with(|| {
                        let w = self.walk(ns, &img.target, img.size, &img.media_type).ok()?;
                        let created = ImageConfig::parse(&w.config, Path::new("")).ok().and_then(|c| c.created);
                        Some(Summary {
                            config: w.config_digest,
                            created,
                            layers: w.manifest.layers.len(),
                            size: w.manifest.layers.iter().map(|l| l.size).sum(),
                        })
                    });
                    if let Some(s) = s {
                        out.insert(key_of(nsname, &img.name), s.clone());
                    }
                }
            }
            out
        }))
    }

    /// Select the image `q` names: in `moby` if it is there, else in exactly one image
    /// among the other namespaces (the same image in several is fine). A broken record
    /// that `q` names is its error, unless another namespace has the image.
    pub fn find<'a>(&self, listing: &'a Listing, q: &Query) -> Result<Option<&'a ImageRecord>, StoreError> {
        let db = self.meta()?;
        let mut hits: Vec<(&str, &ImageRecord)> = Vec::new();
        let mut broken: Option<StoreError> = None;
        for (nsname, ns) in self.namespaces(db) {
            let in_ns = |r: &&ImageRecord| r.namespace.as_deref() == Some(nsname);
            let sub = Listing { images: listing.images.iter().filter(in_ns).cloned().collect(), broken: self.broken_of(nsname, ns) };
            let hit = match super::find(&sub, q) {
                Ok(Some(h)) => Some(h.key.clone()),
                // The config digest (what crictl shows) as an id: read configs only now.
                Ok(None) if q.id.is_some() => by_config_id(&sub.images, q, self.summaries()?)?,
                Ok(None) => None,
                Err(e @ StoreError::Corrupt { .. }) => {
                    broken.get_or_insert(e);
                    None
                }
                Err(e) => return Err(e),
            };
            if let Some(key) = hit
                && let Some(r) = listing.images.iter().find(|r| r.key == key)
            {
                if nsname == DOCKER_NS {
                    return Ok(Some(r));
                }
                hits.push((nsname, r));
            }
        }
        let mut ids: Vec<&Digest> = hits.iter().map(|(_, r)| &r.id).collect();
        ids.sort();
        ids.dedup();
        if ids.len() > 1 {
            let c = hits.iter().map(|(ns, r)| format!("{} in namespace {ns}", r.id.short())).collect();
            return Err(StoreError::Ambiguous { reference: format!("{} (choose with --namespace)", q.raw), candidates: c });
        }
        match (hits.first(), broken) {
            (Some((_, r)), _) => Ok(Some(*r)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(None),
        }
    }

    /// Verify and resolve one image's layers.
    pub fn resolve(&self, rec: &ImageRecord, ctx: &ResolveCtx) -> Result<ResolvedImage, StoreError> {
        let db = self.meta()?;
        let (nsname, name) = split_key(&rec.key);
        let gone = || StoreError::Other(format!("image {} vanished from {}", shown::name(name), shown::path(&self.root)));
        let ns = db.namespaces.get(nsname).ok_or_else(gone)?;
        let img = ns.images.iter().find(|i| i.name == name).ok_or_else(gone)?;
        let w = self.walk(ns, &img.target, img.size, &img.media_type)?;
        let cfg_file = self.blob_file(&w.config_digest);
        let cfg = ImageConfig::parse(&w.config, &cfg_file)?;
        if let Some(want) = &self.platform {
            // A single-platform image asked for by platform: it must be that platform.
            let p: IndexPlatform = serde_json::from_slice(&w.config).unwrap_or_default();
            if !want.accepts(&p) {
                return Err(StoreError::Other(format!("image {} is {}, not {want}", shown::name(name), p.display())));
            }
        }
        let diff_ids = cfg.diff_ids();
        if w.manifest.layers.len() != diff_ids.len() {
            return Err(StoreError::corrupt(
                &cfg_file,
                format!("{} layers in the manifest but {} diff_ids in the config", w.manifest.layers.len(), diff_ids.len()),
            ));
        }
        let chains = chain_ids(diff_ids);
        let unpacked = !chains.is_empty() && chains.iter().all(|c| ns.snapshots.contains_key(c.as_str().as_bytes()));
        let mut layers = if unpacked {
            self.snapshot_layers(ns, name, &chains, diff_ids)?
        } else {
            // Not unpacked for overlayfs (another snapshotter, or content only): unpack the
            // layer blobs into the cache, each checked against its digest and diff_id.
            let refs: Vec<LayerRef> = w
                .manifest
                .layers
                .iter()
                .map(|l| LayerRef { rel: l.digest.blob_path(), size: l.size, digest: Some(l.digest.clone()) })
                .collect();
            let mut v = self.content()?.unpack_layers(rec, &refs, diff_ids, &cfg_file, ctx)?;
            v.reverse();
            v
        };
        // History lines (bottom first) onto the layers (top first).
        let hist = cfg.layer_history();
        let n = layers.len();
        for (i, l) in layers.iter_mut().enumerate() {
            l.created_by = hist.get(n - 1 - i).cloned().flatten();
        }
        Ok(ResolvedImage {
            id: rec.id.clone(),
            store: self.root.clone(),
            layers,
            kind: super::StoreKind::Containerd,
            names: Vec::new(),
            created: cfg.created.clone(),
        })
    }

    /// The committed overlayfs snapshots of `chains` (bottom first), returned top first.
    fn snapshot_layers(&self, ns: &Namespace, image: &str, chains: &[Digest], diff_ids: &[Digest]) -> Result<Vec<ResolvedLayer>, StoreError> {
        let snapdir = Beneath::open(&self.root.join(OVERLAYFS)).map_err(|e| StoreError::io(&self.root.join(OVERLAYFS), e))?;
        let dbp = self.root.join(OVERLAYFS).join("metadata.db");
        let snaps = containerd_db::read_snapshots(&snapdir, &self.root.join(OVERLAYFS), "metadata.db").map_err(|e| e.to_store())?;
        let mut out = Vec::with_capacity(chains.len());
        let mut below: Option<&[u8]> = None;
        for (i, chain) in chains.iter().enumerate() {
            let backend = &ns.snapshots[chain.as_str().as_bytes()].backend;
            let bad = |why: &str| {
                StoreError::corrupt(&dbp, format!("layer {} ({}) of {}: {why}", i + 1, chain.short(), shown::name(image)))
            };
            let info: &SnapshotInfo = match snaps.get(backend) {
                Some(Ok(s)) => s,
                Some(Err(why)) => return Err(bad(&format!("snapshot {why}"))),
                None => return Err(bad("its snapshot is missing from the snapshotter")),
            };
            if info.kind != KIND_COMMITTED {
                return Err(bad(&format!("its snapshot is not committed (kind {})", info.kind)));
            }
            if info.parent.as_deref() != below {
                return Err(bad("its snapshot's parent is not the layer below"));
            }
            below = Some(backend);
            // A number becomes the path: nothing from the file is used as a name.
            let rel = PathBuf::from("snapshots").join(info.id.to_string()).join("fs");
            let dir = self.root.join(OVERLAYFS).join(&rel);
            match snapdir.stat(&rel) {
                Ok(st) if st.is_dir() => {}
                Ok(_) => return Err(StoreError::corrupt(&dir, "not a directory")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::LayerMissing { image: image.to_string(), layer: chain.to_string(), file: dir });
                }
                Err(e) => return Err(StoreError::io(&dir, e)),
            }
            out.push(ResolvedLayer {
                dir,
                diff_id: diff_ids[i].clone(),
                layer_id: chain.to_string(),
                whiteouts: WhiteoutFormat::CharDevice,
                size: info.size,
                created_by: None,
            });
        }
        out.reverse();
        Ok(out)
    }
}

/// An id query against the images' config digests.
fn by_config_id(recs: &[ImageRecord], q: &Query, sums: &BTreeMap<String, Summary>) -> Result<Option<String>, StoreError> {
    let hits: Vec<&ImageRecord> = recs
        .iter()
        .filter(|r| {
            let Some(c) = sums.get(&r.key).map(|s| &s.config) else { return false };
            match &q.id {
                Some(IdQuery::Full(id)) => c == id,
                Some(IdQuery::Prefix(p)) => c.hex().starts_with(p.as_str()),
                None => false,
            }
        })
        .collect();
    let mut ids: Vec<&Digest> = hits.iter().map(|r| &r.id).collect();
    ids.sort();
    ids.dedup();
    match ids.len() {
        0 => Ok(None),
        1 => Ok(Some(hits[0].key.clone())),
        _ => Err(StoreError::Ambiguous {
            reference: q.raw.clone(),
            candidates: hits.iter().map(|r| format!("{} ({})", r.id.short(), r.names.join(" "))).collect(),
        }),
    }
}
