//! Images straight from a registry (the OCI distribution API): `docker://HOST/REPO:TAG`.
//!
//! ```text
//! reference ─> pull::resolve ─> client (http + auth + credentials) ─> manifest / index / config
//!                  │                                                   (kept by digest in the cache)
//!                  └─> download: layers, 3 at once, verified while streaming, resumable
//!                        └─> store::registry (the cache side) ─> store::cache (unpack once)
//! ```
//! | module | job |
//! |---|---|
//! | `reference` | `docker://` references, which hosts may use plain HTTP |
//! | `http` | the ureq agent: rustls, system roots + cert dir, timeouts, failure classes |
//! | `credentials` | auth.json / docker config.json / credential helpers |
//! | `auth` | challenges, Basic, Bearer tokens (per scope) |
//! | `client` | one repository: scheme, retries, redirects, manifests, blobs |
//! | `manifest` | OCI and Docker v2 manifests and indexes, platform choice |
//! | `download` | partial files, Range resume, verification, parallel downloads |
//! | `progress` | bars on a terminal, lines otherwise |
//! | `pull` | the whole resolution, pull policies |
//!
//! Invariants (the module's, each held where it is written down): everything a registry
//! sends is untrusted: digests are parsed into `Digest` before use and are the only
//! thing that becomes a cache path; sizes are bounded by descriptors and caps; redirects
//! go to other hosts only for blobs; a secret is never printed; Ctrl-C stops promptly and
//! leaves only resumable partial files; errors are one line saying what to do.
//! This module uses `crate::store` (digests, the layer cache), never the other way round.

pub mod auth;
pub mod client;
pub mod credentials;
pub mod download;
pub mod error;
pub mod http;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod reference;

pub use error::RegistryError;
pub use http::TlsOptions;
pub use pull::{Options, PullPolicy};
pub use reference::{PREFIX, RemoteRef};

use crate::store::platform::Platform;
use crate::store::registry::RegistryCache;
use crate::store::{ImageRecord, ResolvedImage, StoreError, StoreQuery};
use std::path::Path;

/// The registry flags of a command line: `--pull`, `--tls-verify`, `--cert-dir`
/// (`--platform` comes with the query: the stores share it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flags {
    /// None: `missing` for `docker://` references, `never` for other names.
    pub pull: Option<PullPolicy>,
    /// `--tls-verify=false`.
    pub insecure: bool,
    pub cert_dir: Option<std::path::PathBuf>,
}

impl Flags {
    /// The pull options for a reference that is (`remote`) or is not a `docker://` one.
    pub fn options(&self, remote: bool, platform: Option<Platform>) -> Options {
        let default = if remote { PullPolicy::Missing } else { PullPolicy::Never };
        Options {
            pull: self.pull.unwrap_or(default),
            platform,
            tls: TlsOptions { insecure: self.insecure, cert_dir: self.cert_dir.clone() },
            jobs: 0,
        }
    }
}

/// Is `name` fully qualified (`HOST/REPO[:TAG]`, the registry typed)? Only such names may
/// be fetched without `docker://` (with `--pull=missing|always`): a typo never goes to the
/// network, and a short name is never guessed onto a registry.
pub fn fully_qualified(name: &str) -> bool {
    crate::store::reference::parse_name(name).is_ok_and(|n| n.short_path.is_none())
}

/// Resolve any image reference for a mount (`unpack`) or `inspect`: `docker://` goes to
/// the registry (through the cache); other names search the local stores, and a fully
/// qualified name not found there is fetched when `--pull` allows (`always`: straight
/// from the registry). With `--store`, only that store is searched.
pub fn resolve_image(q: &StoreQuery, flags: &Flags, unpack: bool) -> Result<ResolvedImage, RegistryError> {
    let cache = q.cache.clone().unwrap_or_else(crate::store::default_cache_dir);
    let platform = match &q.platform {
        Some(p) => Some(Platform::parse(p).map_err(RegistryError::Invalid)?),
        None => None,
    };
    if is_remote(&q.reference) {
        return resolve(&q.reference, &flags.options(true, platform), &cache, unpack);
    }
    let opts = flags.options(false, platform);
    let may_fetch = q.store.is_none() && opts.pull != PullPolicy::Never && fully_qualified(&q.reference);
    if may_fetch && opts.pull == PullPolicy::Always {
        return resolve(&q.reference, &opts, &cache, unpack);
    }
    match crate::store::resolve_with(q, unpack) {
        Err(StoreError::ImageNotFound { .. }) if may_fetch => resolve(&q.reference, &opts, &cache, unpack),
        r => Ok(r?),
    }
}

/// Does `reference` name a registry image (`docker://…`)?
pub fn is_remote(reference: &str) -> bool {
    reference.starts_with(PREFIX)
}

/// Resolve a `docker://` reference: fetch what the cache lacks, unpack the layers when
/// `unpack` (a mount), or only the manifest and config (`inspect`).
pub fn resolve(reference: &str, opts: &Options, cache: &Path, unpack: bool) -> Result<ResolvedImage, RegistryError> {
    let r = RemoteRef::parse(reference).map_err(RegistryError::Invalid)?;
    pull::resolve(&r, opts, cache, unpack)
}

/// The registry images complete in the cache at `cache` (no network).
pub fn cached_images(cache: &Path) -> Vec<ImageRecord> {
    match RegistryCache::existing(cache) {
        Some(c) => c.images(&manifest::layer_blobs),
        None => Vec::new(),
    }
}
