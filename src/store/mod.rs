//! Image stores: resolve an image reference to its layer directories.
//!
//! CONTRACT used by the mount path (src/cmd/, src/mount.rs):
//! `resolve(&StoreQuery) -> Result<ResolvedImage, StoreError>` where
//! `ResolvedImage.layers` are top first and each `dir` is a directory to serve
//! read-only. Each layer also says which whiteout form it holds ([`WhiteoutFormat`]).
//!
//! ```text
//! reference ──parse──> Query ──> [store, …] ──images()──> ImageRecord ──resolve()──> ResolvedImage
//!  (reference.rs)                (detect.rs)  docker.rs / cstorage.rs / oci.rs+archive.rs
//!                                             OCI and archive layers: cache.rs + unpack.rs
//! ```
//! Invariants:
//! - a store is only ever read: nothing under a store root is created, changed or removed;
//!   OCI/archive layers are unpacked into the separate cache (`--cache`);
//! - every store-provided identifier that becomes a path passed [`digest::safe_component`];
//! - metadata files are read with a size cap ([`MAX_JSON`]); bad JSON, a wrong shape or a
//!   digest mismatch is a [`StoreError`], never a panic;
//! - a name is tried before an id prefix; a prefix that selects two images is an error
//!   listing both; with no `--store` the first default store holding the image wins.

pub mod archive;
pub mod bbolt;
pub mod cache;
pub mod cstorage;
pub mod detect;
pub mod digest;
pub mod docker;
pub mod shown;
pub mod oci;
pub mod reference;
pub mod unpack;

pub use detect::{StoreKind, default_stores, detect};

use reference::{IdQuery, NamedRef, Query};
use std::fmt;
use std::io::Read;
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
}

/// How a layer directory spells deletions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhiteoutFormat {
    /// Char device 0/0 and `trusted.overlay.opaque=y` (Docker overlay2, cache as root).
    CharDevice,
    /// `.wh.NAME` files and `.wh..wh..opq` (cache unpacked without privileges).
    WhFiles,
    /// Either form may occur (containers-storage: depends on its mount_program setting).
    Either,
}

/// One layer of a resolved image.
#[derive(Debug, Clone)]
pub struct ResolvedLayer {
    /// Directory holding the layer's tree.
    pub dir: PathBuf,
    /// `sha256:…` of the uncompressed layer tar.
    pub diff_id: String,
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
    /// `sha256:…` image id (config digest).
    pub id: String,
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
    /// Per layer (top first): may it hold `.wh.NAME` whiteouts? (`StackSpec::lower_wh_files`)
    pub fn lower_wh_files(&self) -> Vec<bool> {
        self.layers.iter().map(|l| l.whiteouts != WhiteoutFormat::CharDevice).collect()
    }
}

/// Why an image could not be resolved; `Display` is the one line the user sees.
#[derive(Debug)]
pub enum StoreError {
    /// The reference does not parse.
    InvalidReference(String),
    /// No store holds the image.
    ImageNotFound { reference: String, searched: Vec<PathBuf>, closest: Vec<String> },
    /// An id prefix (or name) selects more than one image.
    Ambiguous { reference: String, candidates: Vec<String> },
    /// A layer's directory or metadata file is missing.
    LayerMissing { image: String, layer: String, file: PathBuf },
    /// A store file exists but its content is wrong.
    Corrupt { file: PathBuf, detail: String },
    /// `--store PATH` is not a store, or an I/O error on a path.
    Store { path: PathBuf, detail: String },
    /// Anything else, already one line.
    Other(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::InvalidReference(m) | StoreError::Other(m) => f.write_str(m),
            StoreError::ImageNotFound { reference, searched, closest } => {
                let s: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
                if s.is_empty() {
                    write!(f, "image {reference:?} not found: no image store found")?;
                } else {
                    write!(f, "image {reference:?} not found in {}", s.join(", "))?;
                }
                if !closest.is_empty() {
                    write!(f, "; closest: {}", closest.join(", "))?;
                }
                Ok(())
            }
            StoreError::Ambiguous { reference, candidates } => {
                write!(f, "{reference:?} is ambiguous, it matches: {}", candidates.join(", "))
            }
            StoreError::LayerMissing { image, layer, file } => write!(
                f,
                "image {image}: layer {layer} is missing: {} does not exist",
                file.display()
            ),
            StoreError::Corrupt { file, detail } => {
                write!(f, "corrupt store file {}: {detail}", file.display())
            }
            StoreError::Store { path, detail } => write!(f, "{}: {detail}", path.display()),
        }
    }
}
impl std::error::Error for StoreError {}

impl StoreError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> StoreError {
        StoreError::Store { path: path.to_path_buf(), detail: e.to_string() }
    }
    pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt { file: path.to_path_buf(), detail: detail.into() }
    }
}

/// One image a store holds, as listed (cheap: no layer is opened).
#[derive(Debug, Clone, Default)]
pub struct ImageRecord {
    /// `sha256:<hex>` image id.
    pub id: String,
    /// Names as stored (`tiny:app`, `localhost/tiny:app`, OCI ref names).
    pub names: Vec<String>,
    /// Manifest digests recorded for this image (`sha256:…`), for `name@digest`.
    pub digests: Vec<String>,
    /// OCI ref names that are only a tag (`app`): match any repository with that tag.
    pub bare_tags: Vec<String>,
    /// Store-internal key (file, index position) to find the image again.
    pub key: String,
    /// Creation time, when cheap to know.
    pub created: Option<String>,
    /// Number of layers, when cheap to know.
    pub layer_count: Option<usize>,
    /// Total size in bytes, when cheap to know.
    pub size: Option<u64>,
}

impl ImageRecord {
    fn parsed_names(&self) -> Vec<NamedRef> {
        self.names.iter().filter_map(|n| reference::parse_name(n).ok()).collect()
    }

    /// Does the name part of a query select this image?
    pub fn matches_name(&self, q: &NamedRef, raw: &str) -> bool {
        let names = self.parsed_names();
        if let Some(d) = &q.digest {
            // Docker records `repo@digest` names; other stores record plain digests.
            if names.iter().any(|n| q.matches(n)) {
                return true;
            }
            if !self.digests.iter().any(|x| x == d) {
                return false;
            }
            // The repository must match one of the image's names, unless it has none
            // (an OCI layout whose ref names are bare tags).
            let tagged: Vec<&NamedRef> = names.iter().filter(|n| n.digest.is_none()).collect();
            return tagged.is_empty() || tagged.iter().any(|n| q.same_repo(n));
        }
        names.iter().any(|n| q.matches(n))
            // A bare OCI tag matches when typed as is (`app`) or as the tag (`tiny:app`);
            // an implied `latest` does not count, so a short id is not taken for a tag.
            || self.bare_tags.iter().any(|t| t == raw || q.tag.as_deref() == Some(t.as_str()))
    }

    /// `docker images`-style display names (`tiny:app`), or `<none>:<none>`.
    pub fn display_names(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for n in &self.names {
            match reference::parse_name(n) {
                Ok(r) if r.digest.is_some() => {}
                Ok(r) => v.push(r.familiar()),
                Err(_) => v.push(n.clone()),
            }
        }
        v.extend(self.bare_tags.iter().cloned());
        v
    }
}

/// Short (12 hex) form of an id.
pub fn short_id(id: &str) -> &str {
    let h = id.strip_prefix("sha256:").unwrap_or(id);
    h.get(..12).unwrap_or(h)
}

/// Find the image `q` selects among `records` (one store).
pub fn find<'a>(records: &'a [ImageRecord], q: &Query) -> Result<Option<&'a ImageRecord>, StoreError> {
    let pick = |hits: Vec<&'a ImageRecord>| -> Result<Option<&'a ImageRecord>, StoreError> {
        let mut ids: Vec<&str> = hits.iter().map(|r| r.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        match ids.len() {
            0 => Ok(None),
            1 => Ok(hits.first().copied()),
            _ => {
                let mut c: Vec<String> = Vec::new();
                for id in ids {
                    let names: Vec<String> =
                        hits.iter().filter(|r| r.id == id).flat_map(|r| r.display_names()).collect();
                    c.push(if names.is_empty() {
                        short_id(id).to_string()
                    } else {
                        format!("{} ({})", short_id(id), names.join(" "))
                    });
                }
                Err(StoreError::Ambiguous { reference: q.raw.clone(), candidates: c })
            }
        }
    };
    if let Some(n) = &q.name {
        let hits: Vec<&ImageRecord> = records.iter().filter(|r| r.matches_name(n, &q.raw)).collect();
        if let Some(r) = pick(hits)? {
            return Ok(Some(r));
        }
    }
    match &q.id {
        Some(IdQuery::Full(id)) => Ok(records.iter().find(|r| &r.id == id)),
        Some(IdQuery::Prefix(p)) => {
            let hits = records.iter().filter(|r| {
                r.id.strip_prefix("sha256:").is_some_and(|h| h.starts_with(p.as_str()))
            });
            pick(hits.collect())
        }
        None => Ok(None),
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
}

impl Store {
    /// Open `path` as a store of `kind`.
    pub fn open(path: &Path, kind: StoreKind) -> Result<Store, StoreError> {
        Ok(match kind {
            StoreKind::Docker => Store::Docker(docker::DockerStore::new(path)),
            StoreKind::ContainersStorage => Store::CStorage(cstorage::CStore::new(path)),
            StoreKind::OciLayout => Store::Oci(oci::OciStore::new(oci::DirBlobs::new(path))),
            StoreKind::Archive => Store::Archive(archive::ArchiveStore::open(path)?),
        })
    }
    pub fn kind(&self) -> StoreKind {
        match self {
            Store::Docker(_) => StoreKind::Docker,
            Store::CStorage(_) => StoreKind::ContainersStorage,
            Store::Oci(_) => StoreKind::OciLayout,
            Store::Archive(_) => StoreKind::Archive,
        }
    }
    pub fn root(&self) -> &Path {
        match self {
            Store::Docker(s) => &s.root,
            Store::CStorage(s) => &s.root,
            Store::Oci(s) => oci::Blobs::root(&s.blobs),
            Store::Archive(s) => s.path(),
        }
    }
    /// Every image the store holds.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        match self {
            Store::Docker(s) => s.images(),
            Store::CStorage(s) => s.images(),
            Store::Oci(s) => s.images(),
            Store::Archive(s) => s.images(),
        }
    }
    /// The layers of one listed image.
    pub fn resolve(&self, rec: &ImageRecord, ctx: &ResolveCtx) -> Result<ResolvedImage, StoreError> {
        let mut r = match self {
            Store::Docker(s) => s.resolve(rec)?,
            Store::CStorage(s) => s.resolve(rec)?,
            Store::Oci(s) => s.resolve(rec, ctx)?,
            Store::Archive(s) => s.resolve(rec, ctx)?,
        };
        r.kind = self.kind();
        r.store = self.root().to_path_buf();
        if r.names.is_empty() {
            r.names = rec.display_names();
        }
        Ok(r)
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
                            Err(e) => log::warn!("skipping store {}: {e}", p.display()),
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
    let (stores, searched) = stores_for(q.store.as_deref())?;
    let ctx = ResolveCtx { cache: q.cache.clone().unwrap_or_else(default_cache_dir), unpack };
    let mut all_names: Vec<String> = Vec::new();
    let mut first_err: Option<StoreError> = None;
    for s in &stores {
        let recs = match s.images() {
            Ok(r) => r,
            Err(e) if q.store.is_none() => {
                log::warn!("skipping store {}: {e}", s.root().display());
                first_err.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(rec) = find(&recs, &query)? {
            return s.resolve(rec, &ctx);
        }
        all_names.extend(recs.iter().flat_map(|r| r.display_names()));
    }
    if stores.is_empty()
        && let Some(e) = first_err {
            return Err(e);
        }
    let closest = reference::closest(&q.reference, all_names.iter().map(String::as_str), 3);
    Err(StoreError::ImageNotFound { reference: q.reference.clone(), searched, closest })
}

/// Resolve an image reference to its layers, unpacking OCI/archive layers into the cache.
pub fn resolve(q: &StoreQuery) -> Result<ResolvedImage, StoreError> {
    resolve_with(q, true)
}

/// Read at most `cap` bytes of `path`; larger files are an error.
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, StoreError> {
    let f = std::fs::File::open(path).map_err(|e| StoreError::io(path, e))?;
    read_all_capped(f, cap, path)
}

pub(crate) fn read_all_capped(r: impl Read, cap: u64, path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::new();
    r.take(cap + 1).read_to_end(&mut buf).map_err(|e| StoreError::io(path, e))?;
    if buf.len() as u64 > cap {
        return Err(StoreError::corrupt(path, format!("larger than {cap} bytes")));
    }
    Ok(buf)
}

/// Parse JSON bytes into `T`, naming `path` on error.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(path, format!("invalid JSON: {e}")))
}

/// Like [`parse_json`] for a struct `T`, but the document must be a JSON object
/// (serde alone would accept `[]` for a struct whose fields all have defaults).
pub(crate) fn parse_object<T: serde::de::DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T, StoreError> {
    let v: serde_json::Value = parse_json(bytes, path)?;
    if !v.is_object() {
        return Err(StoreError::corrupt(path, "invalid JSON: expected an object"));
    }
    serde_json::from_value(v).map_err(|e| StoreError::corrupt(path, format!("invalid JSON: {e}")))
}

/// The parts of an image config we use (OCI and Docker share them).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
    #[serde(default)]
    pub history: Option<Vec<History>>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct History {
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub empty_layer: Option<bool>,
}

impl ImageConfig {
    /// Parse and check the diff_ids (each `sha256:<64 hex>`).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<ImageConfig, StoreError> {
        let c: ImageConfig = parse_object(bytes, path)?;
        for d in c.diff_ids() {
            if digest::parse_sha256(d).is_none() {
                return Err(StoreError::corrupt(path, format!("invalid diff_id {d:?}")));
            }
        }
        Ok(c)
    }
    pub fn diff_ids(&self) -> &[String] {
        self.rootfs.as_ref().map(|r| r.diff_ids.as_slice()).unwrap_or(&[])
    }
    /// The history line of each layer, bottom first (`empty_layer` entries skipped).
    pub fn layer_history(&self) -> Vec<Option<String>> {
        let n = self.diff_ids().len();
        let mut v: Vec<Option<String>> = self
            .history
            .iter()
            .flatten()
            .filter(|h| !h.empty_layer.unwrap_or(false))
            .map(|h| h.created_by.clone())
            .collect();
        v.resize(n, None);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: char, names: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id.to_string().repeat(64)),
            names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn find_by_name_id_prefix() {
        let mut recs = vec![rec('a', &["tiny:app"]), rec('b', &["localhost/other:1"])];
        recs[1].id = format!("sha256:aaaa{}", "b".repeat(60));
        let q = |s: &str| reference::parse_query(s).unwrap();
        let f = |s: &str| find(&recs, &q(s)).map(|r| r.map(|r| r.id.clone()));
        assert_eq!(f("tiny:app").unwrap().unwrap(), recs[0].id);
        assert_eq!(f("docker.io/library/tiny:app").unwrap().unwrap(), recs[0].id);
        assert_eq!(f("other:1").unwrap().unwrap(), recs[1].id);
        assert_eq!(f("aaaab").unwrap().unwrap(), recs[1].id);
        assert_eq!(f(&"a".repeat(64)).unwrap().unwrap(), recs[0].id);
        let e = f("aaaa").unwrap_err();
        assert!(matches!(e, StoreError::Ambiguous { .. }));
        assert!(e.to_string().contains("tiny:app"), "{e}");
        assert!(f("tiny:nope").unwrap().is_none());
    }

    #[test]
    fn bare_oci_tags() {
        let mut r = rec('c', &[]);
        r.bare_tags = vec!["latest".into(), "app".into()];
        let recs = vec![r];
        let f = |s: &str| find(&recs, &reference::parse_query(s).unwrap()).unwrap().is_some();
        assert!(f("app") && f("tiny:app") && f("latest") && f("x:latest") && f("cccc"));
        assert!(!f("alpine"), "implied latest does not match");
        assert!(!f("dddd"), "a short id is not a bare tag");
    }

    #[test]
    fn history_skips_empty_layers() {
        let c = ImageConfig::parse(
            br#"{"rootfs":{"diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "sha256:1111111111111111111111111111111111111111111111111111111111111111"]},
            "history":[{"created_by":"ADD"},{"created_by":"ENV","empty_layer":true},{"created_by":"RUN"}]}"#,
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(c.layer_history(), vec![Some("ADD".into()), Some("RUN".into())]);
        assert!(ImageConfig::parse(br#"{"rootfs":{"diff_ids":[1]}}"#, Path::new("c")).is_err());
        assert!(ImageConfig::parse(br#"{"rootfs":{"diff_ids":["x"]}}"#, Path::new("c")).is_err());
        assert!(ImageConfig::parse(b"[", Path::new("c")).is_err());
    }

    #[test]
    fn errors_are_one_line() {
        let e = StoreError::ImageNotFound {
            reference: "x".into(),
            searched: vec!["/a".into()],
            closest: vec!["y".into()],
        };
        assert_eq!(e.to_string(), "image \"x\" not found in /a; closest: y");
        assert!(!e.to_string().contains('\n'));
    }
}
