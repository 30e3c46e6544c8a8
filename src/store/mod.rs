//! Image stores: resolve an image reference to its layer directories.
//!
//! CONTRACT used by the mount path (src/cmd/, src/mount.rs):
//! `resolve(&StoreQuery) -> Result<ResolvedImage, StoreError>` where
//! `ResolvedImage.layers` are top first and each `dir` is a directory to serve
//! read-only. Each layer also says which whiteout form it holds ([`WhiteoutFormat`]).
//!
//! ```text
//! reference ──parse──> Query ──> [store, …] ──listing()──> ImageRecord ──resolve()──> ResolvedImage
//!  (reference.rs)                (detect.rs)  docker.rs / cstorage.rs / oci.rs+archive.rs /
//!                                (select.rs)  containerd.rs (+ containerd_db.rs, bbolt.rs)
//!                                             OCI, archive (and containerd content-only)
//!                                             layers: cache.rs + unpack.rs
//! ```
//! Invariants (nothing a store holds is trusted):
//! - a store is only ever read: nothing under a store root is created, changed or removed;
//!   OCI/archive layers are unpacked into the separate cache (`--cache`);
//! - digests and ids are parsed into [`Digest`] / [`StoreId`] before anything else touches
//!   them, and only those types become paths ([`Digest::blob_path`],
//!   [`Digest::content_path`], [`StoreId::path`]);
//! - every file in a store directory is opened beneath the store's directory fd without
//!   following a symlink ([`crate::sys::beneath`]); blobs must be regular files of exactly
//!   their declared size; JSON is read with a cap ([`MAX_JSON`], [`json::MAX_MANIFEST`],
//!   [`json::MAX_CONFIG`]); bad JSON, a wrong shape or a digest mismatch is a
//!   [`StoreError`] (one line, no file content), never a panic;
//! - an entry a store cannot read spoils only the references that select it
//!   ([`BrokenImage`]);
//! - a name is tried before an id prefix; a prefix that selects two images is an error
//!   listing both; with no `--store` the first default store holding the image wins.

// Public where tests/ or the registry client need them; the readers are private.
pub(crate) mod archive;
pub mod bbolt;
pub(crate) mod cache;
mod config;
pub(crate) mod containerd;
pub(crate) mod containerd_db;
pub(crate) mod containerd_discover;
pub(crate) mod cstorage;
mod detect;
pub mod digest;
pub(crate) mod docker;
mod error;
pub(crate) mod json;
pub(crate) mod oci;
pub mod platform;
pub mod reference;
pub(crate) mod registry;
mod select;
pub(crate) mod shown;
pub mod unpack;

pub use detect::{StoreKind, default_stores, detect};
pub use digest::{Digest, StoreId};
pub use error::StoreError;
pub use select::{BrokenImage, ImageRecord, Listing, find, find_record, short_id, split_bare};

pub(crate) use config::ImageConfig;
use platform::Platform;
use std::path::{Path, PathBuf};

/// Largest metadata (JSON) file we read.
pub const MAX_JSON: u64 = 64 << 20;

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct StoreQuery {
    /// The image reference as typed (`alpine`, `sha256:…`, short id, `name@sha256:…`).
    pub reference: String,
    /// `--store PATH`; None = search the default stores.
    pub store: Option<PathBuf>,
    /// `--cache DIR` for unpacked OCI / docker-save layers; None = default.
    pub cache: Option<PathBuf>,
    /// `--namespace NS` (containerd); None = `moby` first, then the others.
    pub namespace: Option<String>,
    /// `--platform os/arch[/variant]` for multi-platform images; None = this machine.
    pub platform: Option<String>,
}

/// How a layer directory spells deletions (defined with the other overlay rules).
pub use crate::overlay::WhiteoutFormat;

/// One layer of a resolved image.
#[derive(Debug, Clone)]
pub struct ResolvedLayer {
    /// Directory holding the layer's tree.
    pub dir: PathBuf,
    /// Digest of the uncompressed layer tar.
    pub diff_id: Digest,
    /// Chain id (Docker), layer id (containers-storage) or diff_id (OCI/archive).
    pub layer_id: String,
    /// Whiteout form used in `dir`.
    pub whiteouts: WhiteoutFormat,
    /// Size in bytes as the store records it (uncompressed), if known.
    pub size: Option<u64>,
    /// The image history line that created this layer, if recorded.
    pub created_by: Option<String>,
}

/// A resolved image: what to mount.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Image id (config digest).
    pub id: Digest,
    /// The store it was found in.
    pub store: PathBuf,
    /// Layers, top first.
    pub layers: Vec<ResolvedLayer>,
    /// Store format.
    pub kind: StoreKind,
    /// Names as the store records them.
    pub names: Vec<String>,
    /// Creation time (RFC 3339) from the image config.
    pub created: Option<String>,
}

impl ResolvedImage {
    /// Per layer (top first): the whiteout forms it may hold (`StackSpec::lower_formats`).
    pub fn lower_formats(&self) -> Vec<WhiteoutFormat> {
        self.layers.iter().map(|l| l.whiteouts).collect()
    }
}

/// How to resolve: where the cache is, and whether layers may be unpacked now.
#[derive(Debug, Clone)]
pub struct ResolveCtx {
    pub cache: PathBuf,
    /// False for `inspect`: report where layers would be, unpack nothing.
    pub unpack: bool,
}

/// An opened store of any format.
pub enum Store {
    Docker(docker::DockerStore),
    CStorage(cstorage::CStore),
    Oci(oci::OciStore<oci::DirBlobs>),
    Archive(archive::ArchiveStore),
    Containerd(Box<containerd::ContainerdStore>),
}

impl Store {
    /// Open `path` as a store of `kind`.
    pub fn open(path: &Path, kind: StoreKind) -> Result<Store, StoreError> {
        Ok(match kind {
            StoreKind::Docker => Store::Docker(docker::DockerStore::open(path)?),
            StoreKind::ContainersStorage => Store::CStorage(cstorage::CStore::open(path)?),
            StoreKind::OciLayout => Store::Oci(oci::OciStore::new(oci::DirBlobs::open(path)?)),
            StoreKind::Archive => Store::Archive(archive::ArchiveStore::open(path)?),
            StoreKind::Registry => {
                return Err(StoreError::Store { path: path.into(), detail: "registry images are named docker://HOST/REPO:TAG".into() });
            }
            StoreKind::Containerd => Store::Containerd(Box::new(containerd::ContainerdStore::open(&containerd::root_of(path))?)),
        })
    }
    /// Apply `--namespace` (containerd stores) and `--platform` (every store with
    /// multi-platform indexes: containerd, OCI layouts, `docker save` archives).
    pub fn select(&mut self, namespace: Option<&str>, platform: Option<&str>) -> Result<(), StoreError> {
        let platform = platform.map(Platform::parse).transpose().map_err(StoreError::Other)?;
        match self {
            Store::Containerd(s) => s.select(namespace, platform.as_ref())?,
            Store::Oci(s) => s.platform = platform,
            Store::Archive(s) => s.select_platform(platform),
            Store::Docker(_) | Store::CStorage(_) => {}
        }
        Ok(())
    }
    /// The image `q` selects in this store's `listing` (containerd: in namespace order).
    pub fn find<'a>(&self, listing: &'a Listing, q: &reference::Query) -> Result<Option<&'a ImageRecord>, StoreError> {
        match self {
            Store::Containerd(s) => s.find(listing, q),
            _ => find(listing, q),
        }
    }
    pub fn kind(&self) -> StoreKind {
        match self {
            Store::Docker(_) => StoreKind::Docker,
            Store::CStorage(_) => StoreKind::ContainersStorage,
            Store::Oci(_) => StoreKind::OciLayout,
            Store::Archive(_) => StoreKind::Archive,
            Store::Containerd(_) => StoreKind::Containerd,
        }
    }
    pub fn root(&self) -> &Path {
        match self {
            Store::Docker(s) => &s.root,
            Store::CStorage(s) => &s.root,
            Store::Oci(s) => oci::Blobs::root(&s.blobs),
            Store::Archive(s) => s.path(),
            Store::Containerd(s) => &s.root,
        }
    }
    /// Every image the store holds, and the entries it cannot read.
    pub fn listing(&self) -> Result<Listing, StoreError> {
        match self {
            Store::Docker(s) => s.images(),
            Store::CStorage(s) => s.images(),
            Store::Oci(s) => s.images(),
            Store::Archive(s) => s.images(),
            Store::Containerd(s) => s.images(),
        }
    }
    /// Like [`Store::listing`], with the details `images` shows (containerd reads each
    /// image's manifest and config for them; the other stores list them anyway).
    pub fn listing_detailed(&self) -> Result<Listing, StoreError> {
        match self {
            Store::Containerd(s) => s.list(),
            _ => self.listing(),
        }
    }
    /// Every image the store holds; an entry it cannot read is logged and left out.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let l = self.listing()?;
        for b in &l.broken {
            log::warn!("{}: unreadable entry {}: {}", shown::path(self.root()), b.display_names().join(" "), b.error);
        }
        Ok(l.images)
    }
    /// The config of the image with id `id`, verified against it; `None` when the
    /// store keeps no config of it. Used by `commit` to carry a base image's config
    /// over, and by `inspect`.
    pub(crate) fn config(&self, id: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Docker(s) => s.config(id, id.as_str()).map(|(b, _)| Some(b)),
            Store::CStorage(s) => match StoreId::parse(id.hex()) {
                Ok(key) => Ok(s.config(&key, id)?.map(|(b, _)| b)),
                Err(_) => Ok(None),
            },
            // In an OCI layout the image id is the config blob's digest.
            Store::Oci(s) => s.config_blob(id),
            Store::Containerd(s) => s.config(id),
            Store::Archive(s) => s.image_config(id),
        }
    }

    /// The layers of one listed image.
    pub fn resolve(&self, rec: &ImageRecord, ctx: &ResolveCtx) -> Result<ResolvedImage, StoreError> {
        let mut r = match self {
            Store::Docker(s) => s.resolve(rec)?,
            Store::CStorage(s) => s.resolve(rec)?,
            Store::Oci(s) => s.resolve(rec, ctx)?,
            Store::Archive(s) => s.resolve(rec, ctx)?,
            Store::Containerd(s) => s.resolve(rec, ctx)?,
        };
        r.kind = self.kind();
        r.store = self.root().to_path_buf();
        if r.names.is_empty() {
            r.names = rec.display_names();
        }
        Ok(r)
    }
}

/// The config of image `id` in the store at `path` (any format, or the registry part of
/// a cache, which a registry image's `store` names), verified against the id; `None`
/// when the store keeps none of it (see [`Store::config`]).
pub(crate) fn image_config(path: &Path, id: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
    match detect(path) {
        Ok(kind) => Store::open(path, kind)?.config(id),
        Err(e) => match registry::RegistryCache::of_dir(path) {
            Some(cache) => Ok(cache.read_blob(id, json::MAX_CONFIG)),
            None => Err(e),
        },
    }
}

/// The cache directory: `--cache`, else /var/cache/unionmount for root, else
/// `$XDG_CACHE_HOME/unionmount` or `~/.cache/unionmount`.
pub fn default_cache_dir() -> PathBuf {
    if crate::sys::euid() == 0 {
        return PathBuf::from("/var/cache/unionmount");
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("unionmount");
    }
    match std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        Some(h) => PathBuf::from(h).join(".cache/unionmount"),
        None => PathBuf::from("/tmp/unionmount-cache"),
    }
}

/// The stores a query searches: `--store` (detected), or the default ones present.
pub fn stores_for(store: Option<&Path>) -> Result<(Vec<Store>, Vec<PathBuf>), StoreError> {
    match store {
        Some(p) => {
            let kind = detect(p)?;
            Ok((vec![Store::open(p, kind)?], vec![p.to_path_buf()]))
        }
        None => {
            let mut out = Vec::new();
            let mut searched = Vec::new();
            for p in default_stores() {
                match detect(&p) {
                    Ok(kind) => {
                        searched.push(p.clone());
                        match Store::open(&p, kind) {
                            Ok(s) => out.push(s),
                            Err(e) => log::warn!("skipping store {}: {e}", shown::path(&p)),
                        }
                    }
                    // There but unusable (e.g. not readable without root): say so in
                    // the "not found in …" line rather than pretend it is absent.
                    Err(e) if p.exists() && !is_empty_dir(&p) => {
                        log::warn!("skipping store: {e}");
                        let why = match &e {
                            StoreError::Store { detail, .. } => detail.clone(),
                            other => other.to_string(),
                        };
                        searched.push(PathBuf::from(format!("{} (unusable: {why})", p.display())));
                    }
                    Err(_) => {}
                }
            }
            Ok((out, searched))
        }
    }
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).map(|mut d| d.next().is_none()).unwrap_or(false)
}

/// Resolve with an explicit context (used by `inspect`, which does not unpack).
pub fn resolve_with(q: &StoreQuery, unpack: bool) -> Result<ResolvedImage, StoreError> {
    let query = reference::parse_query(&q.reference).map_err(StoreError::InvalidReference)?;
    let (mut stores, searched) = stores_for(q.store.as_deref())?;
    for s in &mut stores {
        s.select(q.namespace.as_deref(), q.platform.as_deref())?;
    }
    let ctx = ResolveCtx { cache: q.cache.clone().unwrap_or_else(default_cache_dir), unpack };
    let mut all_names: Vec<String> = Vec::new();
    let mut unreadable: Vec<String> = Vec::new();
    let mut first_err: Option<StoreError> = None;
    for s in &stores {
        let listing = match s.listing() {
            Ok(r) => r,
            Err(e) if q.store.is_none() => {
                log::warn!("skipping store {}: {e}", shown::path(s.root()));
                first_err.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(rec) = s.find(&listing, &query)? {
            return s.resolve(rec, &ctx);
        }
        all_names.extend(listing.images.iter().flat_map(|r| r.display_names()));
        all_names.extend(listing.broken.iter().flat_map(|r| r.display_names()));
        unreadable.extend(listing.broken.iter().filter(|b| b.display_names().is_empty()).map(|b| b.error.to_string()));
    }
    if stores.is_empty()
        && let Some(e) = first_err {
            return Err(e);
        }
    let closest = reference::closest(&q.reference, all_names.iter().map(String::as_str), 3);
    Err(StoreError::ImageNotFound { reference: q.reference.clone(), searched, closest, unreadable })
}

/// Resolve an image reference to its layers, unpacking OCI/archive layers into the cache.
pub fn resolve(q: &StoreQuery) -> Result<ResolvedImage, StoreError> {
    resolve_with(q, true)
}

