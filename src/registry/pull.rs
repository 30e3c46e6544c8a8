//! From a `docker://` reference to the layer directories a mount needs.
//!
//! ```text
//! tag ──(cached answer, unless --pull=always)──> manifest digest ──> manifest or index
//!   index ──platform──> image manifest ──> config ──> diff_ids
//!   layers not in the layer cache ──download (3 at once)──> verify ──> unpack once
//! ```
//! Invariants: the network is used only for what the cache lacks (with everything cached,
//! and `--pull=missing`, no connection is made at all, not even TLS set-up);
//! `--pull=never` never connects; manifests and configs are kept by digest, verified when
//! fetched and when read back; the tag's answer is recorded only once the manifest and
//! config it leads to are cached; indexes nest at most [`MAX_NESTING`] deep.

use super::client::Client;
use super::download::{DEFAULT_JOBS, fetch_all};
use super::error::RegistryError;
use super::http::TlsOptions;
use super::manifest::{self, Parsed};
use super::reference::RemoteRef;
use crate::store::digest::Digest;
use crate::store::platform::Platform;
use crate::store::registry::{LayerBlob, MAX_CONFIG, MAX_MANIFEST, RefRecord, RegistryCache};
use crate::store::{ImageConfig, ResolvedImage, cache};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Deepest index-in-index followed.
pub const MAX_NESTING: usize = 2;

/// When to ask the registry (podman's `--pull` words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Only the cache.
    Never,
    /// The cache when it has the image, else the registry.
    #[default]
    Missing,
    /// Ask the registry what the tag points at now (layers already cached are reused).
    Always,
}

impl PullPolicy {
    pub fn parse(s: &str) -> Result<PullPolicy, String> {
        match s {
            "never" => Ok(PullPolicy::Never),
            "missing" => Ok(PullPolicy::Missing),
            "always" | "newer" => Ok(PullPolicy::Always),
            _ => Err(format!("invalid --pull value {s:?}: expected never, missing or always")),
        }
    }
}

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub pull: PullPolicy,
    /// `--platform`; None = this machine's.
    pub platform: Option<Platform>,
    pub tls: TlsOptions,
    /// Downloads at once (0 = the default, 3).
    pub jobs: usize,
}

/// Connects on first use only.
struct Lazy<'a> {
    r: &'a RemoteRef,
    opts: &'a Options,
    reference: String,
    client: OnceLock<Arc<Client>>,
}

impl Lazy<'_> {
    fn get(&self) -> Result<&Arc<Client>, RegistryError> {
        if self.opts.pull == PullPolicy::Never {
            return Err(RegistryError::NotCached { reference: self.reference.clone() });
        }
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = Arc::new(Client::new(self.r, &self.opts.tls)?);
        Ok(self.client.get_or_init(|| c))
    }
}

/// A manifest or index by digest: from the cache, else fetched (checked) and cached.
fn by_digest(cache: &RegistryCache, net: &Lazy, d: &Digest) -> Result<Vec<u8>, RegistryError> {
    if let Some(b) = cache.read_blob(d, MAX_MANIFEST) {
        return Ok(b);
    }
    let f = net.get()?.manifest(d.as_str())?;
    cache.write_blob(&f.digest, &f.bytes)?;
    Ok(f.bytes)
}

fn invalid(what: &str, r: &str, detail: String) -> RegistryError {
    RegistryError::Protocol { host: r.to_string(), detail: format!("{what}: {detail}") }
}

/// Resolve `r`: fetch what the cache lacks and, when `unpack`, download and unpack every
/// layer (`inspect` passes false: manifest and config only).
pub fn resolve(r: &RemoteRef, opts: &Options, cache_dir: &Path, unpack: bool) -> Result<ResolvedImage, RegistryError> {
    crate::cancel::check()?;
    let shown = r.to_string();
    let cache = RegistryCache::open(cache_dir)?;
    cache.clean_stale();
    let net = Lazy { r, opts, reference: shown.clone(), client: OnceLock::new() };
    let key = r.tag_key().unwrap_or_else(|| shown.clone());

    // 1. The manifest (or index) the reference names.
    let (top, mut bytes, mut ctype) = match &r.digest {
        Some(d) => (d.clone(), by_digest(&cache, &net, d)?, None),
        None => {
            let cached = (opts.pull != PullPolicy::Always)
                .then(|| cache.get_ref(&key))
                .flatten()
                .and_then(|rec| cache.read_blob(&rec.digest, MAX_MANIFEST).map(|b| (rec.digest, b)));
            match cached {
                Some((d, b)) => (d, b, None),
                None => {
                    let f = net.get()?.manifest(&r.manifest_ref())?;
                    cache.write_blob(&f.digest, &f.bytes)?;
                    (f.digest, f.bytes, f.content_type)
                }
            }
        }
    };

    // 2. An index: pick the platform's manifest.
    let want = opts.platform.clone().unwrap_or_else(Platform::host);
    let mut chosen = top.clone();
    let mut platform = None;
    let mut depth = 0;
    let (config, layers) = loop {
        let parsed = manifest::parse(&bytes, ctype.as_deref()).map_err(|d| invalid("manifest", r.endpoint(), format!("{chosen}: {d}")))?;
        match parsed {
            Parsed::Image { config, layers } => break (config, layers),
            Parsed::Index(entries) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(invalid("index", r.endpoint(), "indexes nested too deeply".into()));
                }
                let e = manifest::choose(&entries, &want).map_err(|available| RegistryError::NoPlatform {
                    reference: shown.clone(),
                    want: want.to_string(),
                    available,
                })?;
                if e.size > MAX_MANIFEST {
                    return Err(invalid("index", r.endpoint(), format!("manifest {} claims {} bytes", e.digest, e.size)));
                }
                platform = e.platform.as_ref().map(|p| p.display());
                chosen = e.digest.clone();
                bytes = by_digest(&cache, &net, &chosen)?;
                ctype = Some(e.media_type.clone()).filter(|t| !t.is_empty());
            }
        }
    };

    // 3. The config: diff_ids and history.
    let cfg_bytes = match cache.read_blob(&config.digest, MAX_CONFIG) {
        Some(b) => b,
        None => {
            let b = net.get()?.blob_bytes(&config.digest, config.size, "config")?;
            cache.write_blob(&config.digest, &b)?;
            b
        }
    };
    let cfg = ImageConfig::parse(&cfg_bytes, &cache.blob_path(&config.digest))?;
    if cfg.diff_ids().len() != layers.len() {
        return Err(invalid(
            "image",
            r.endpoint(),
            format!("{} layers in the manifest but {} diff_ids in the config", layers.len(), cfg.diff_ids().len()),
        ));
    }
    let blobs: Vec<LayerBlob> = layers
        .iter()
        .zip(cfg.diff_ids())
        .map(|(l, id)| LayerBlob { digest: l.digest.clone(), size: l.size, diff_id: id.clone() })
        .collect();
    cache.put_ref(&RefRecord {
        key,
        digest: top.clone(),
        manifest: (chosen != top).then(|| chosen.clone()),
        platform,
        config: Some(config.digest.clone()),
        fetched: 0,
    })?;

    // 4. Layers.
    if unpack {
        let mut todo: Vec<LayerBlob> = Vec::new();
        for b in &blobs {
            if cache::lookup(&cache.root, &b.diff_id).is_none() && !todo.iter().any(|t| t.diff_id == b.diff_id) {
                todo.push(b.clone());
            }
        }
        if !todo.is_empty() {
            let jobs = if opts.jobs == 0 { DEFAULT_JOBS } else { opts.jobs };
            fetch_all(net.get()?, &cache, todo, jobs)?;
        }
    }
    crate::cancel::check()?;
    Ok(cache.resolved(&shown, &config.digest, &cfg_bytes, &blobs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(PullPolicy::parse("never").unwrap(), PullPolicy::Never);
        assert_eq!(PullPolicy::parse("always").unwrap(), PullPolicy::Always);
        assert!(PullPolicy::parse("sometimes").unwrap_err().contains("never, missing or always"));
        assert_eq!(PullPolicy::default(), PullPolicy::Missing);
    }

    #[test]
    fn never_does_not_connect() {
        let t = tempfile::tempdir().unwrap();
        // Port 9 on a loopback address nobody listens on: a connection would fail differently.
        let r = RemoteRef::parse("docker://127.0.0.1:9/tiny:app").unwrap();
        let opts = Options { pull: PullPolicy::Never, ..Default::default() };
        let e = resolve(&r, &opts, t.path(), true).unwrap_err();
        assert!(matches!(e, RegistryError::NotCached { .. }), "{e}");
        assert!(e.to_string().contains("--pull=never"), "{e}");
    }
}
