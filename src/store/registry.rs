//! The registry's part of the layer cache: what a pull keeps so that the next mount of the
//! same image needs no network. No network code here (that is the `registry` module).
//!
//! ```text
//! CACHE/registry/                              (mode 0700, beside CACHE/layers and CACHE/tmp)
//! ├── blobs/sha256/<hex>       manifests, indexes and configs, kept; layer blobs only
//! │                            from a complete, verified download until they are unpacked
//! ├── partial/sha256/<hex>     a layer download in progress: resumable, locked (flock)
//! │                            by the process writing it, never read as a blob
//! ├── refs/<sha256 of KEY>     {"key":"127.0.0.1:5000/tiny:app","digest":"sha256:…",…}
//! │                            the answer a registry gave for a tag (KEY = repo:tag)
//! └── tmp/                     small files being written, renamed into blobs/ or refs/
//! ```
//! Invariants:
//! - every path comes from a parsed [`Digest`] (`Digest::blob_path`) or from the sha256
//!   of a key: never from a string a registry sent;
//! - a file under `blobs/` is complete and hashes to its name: small blobs are checked
//!   when written and again when read; layer blobs are renamed there only after their
//!   digest was verified while streaming (and are verified once more when unpacked);
//! - writes are atomic (a temp file renamed into place), so a crash or a signal leaves
//!   the old state or the new one, plus at most a stale temp or partial file;
//! - an image is listed only when its manifest, config and every layer are cached.

use super::cache::{self, CachedLayer, LayerSource};
use super::digest::Digest;
use super::{ImageConfig, ImageRecord, ResolvedImage, ResolvedLayer, StoreError, StoreKind, WhiteoutFormat};
use crate::sys::beneath::Beneath;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::sync::Arc;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Largest manifest or index accepted (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG: u64 = 16 << 20;

/// What a registry answered for a tag (or a digest reference), as cached.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RefRecord {
    /// `registry/repo:tag` or `registry/repo@digest`.
    pub key: String,
    /// The manifest (or index) digest the reference pointed at.
    pub digest: Digest,
    /// The platform manifest used when `digest` is an index, and its platform.
    #[serde(default)]
    pub manifest: Option<Digest>,
    #[serde(default)]
    pub platform: Option<String>,
    /// The config digest (the image id).
    #[serde(default)]
    pub config: Option<Digest>,
    /// Seconds since the epoch when the registry was asked.
    #[serde(default)]
    pub fetched: u64,
}

/// A layer as a manifest describes it, with its diff_id from the config.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// Reads the layer digests and sizes of a manifest (None when it is not an image manifest).
pub type LayersOf<'a> = &'a dyn Fn(&[u8]) -> Option<Vec<(Digest, u64)>>;

/// The registry part of a cache directory.
#[derive(Debug, Clone)]
pub struct RegistryCache {
    /// The whole cache (`--cache`), which also holds `layers/`.
    pub root: PathBuf,
    dir: PathBuf,
    /// `dir`, held: every read resolves beneath it without following a symlink.
    held: Arc<Beneath>,
}

fn mkdir_private(p: &Path) -> Result<(), StoreError> {
    match std::fs::DirBuilder::new().mode(0o700).recursive(true).create(p) {
        Ok(()) => Ok(()),
        Err(e) => Err(StoreError::io(p, e)),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}


impl RegistryCache {
    /// The registry cache under `root` (created, mode 0700, when missing).
    pub fn open(root: &Path) -> Result<RegistryCache, StoreError> {
        let dir = root.join("registry");
        for sub in ["blobs/sha256", "blobs/sha512", "partial/sha256", "partial/sha512", "refs", "tmp"] {
            mkdir_private(&dir.join(sub))?;
        }
        // The registry dir is private: partial downloads may come from private repositories.
        let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let held = Arc::new(Beneath::open(&dir).map_err(|e| StoreError::io(&dir, e))?);
        Ok(RegistryCache { root: root.to_path_buf(), dir, held })
    }

    /// The registry cache under `root` if it exists (never creates anything).
    pub fn existing(root: &Path) -> Option<RegistryCache> {
        let dir = root.join("registry");
        let held = Arc::new(Beneath::open(&dir).ok()?);
        held.is_dir(Path::new("refs")).then(|| RegistryCache { root: root.to_path_buf(), dir, held })
    }

    /// The registry cache whose own directory (a registry image's `store`) is `dir`, if
    /// it exists (never creates anything).
    pub fn of_dir(dir: &Path) -> Option<RegistryCache> {
        let root = dir.parent().filter(|_| dir.file_name() == Some(std::ffi::OsStr::new("registry")))?;
        RegistryCache::existing(root)
    }

    /// Where the complete blob `d` lives (whether or not it exists).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join(d.blob_path())
    }

    /// Where a download of `d` in progress lives.
    pub fn partial_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("partial").join(d.algorithm().name()).join(d.hex())
    }

    /// `refs/<sha256 of key>`, relative to the registry dir.
    fn ref_rel(key: &str) -> PathBuf {
        Path::new("refs").join(Digest::sha256_of(key.as_bytes()).hex())
    }

    /// Write `data` to `dest` atomically (temp file in tmp/, fsync, rename).
    fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<(), StoreError> {
        let tmp = self.dir.join("tmp").join(format!(
            "{}.{}.{}",
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        let r = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dest)
        })();
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io(dest, e));
        }
        Ok(())
    }

    /// A cached small blob (manifest, index, config), checked against its digest; None
    /// when absent, too large or damaged (a damaged one is removed).
    pub fn read_blob(&self, d: &Digest, cap: u64) -> Option<Vec<u8>> {
        let p = self.blob_path(d);
        let b = self.held.read_capped(&d.blob_path(), cap).ok()?;
        let mut v = d.verifier();
        v.update(&b);
        if v.finish().is_err() {
            log::warn!("cache: {} does not match its digest; removed", p.display());
            let _ = std::fs::remove_file(&p);
            return None;
        }
        Some(b)
    }

    /// Keep a small blob; `data` must hash to `d` (checked).
    pub fn write_blob(&self, d: &Digest, data: &[u8]) -> Result<(), StoreError> {
        let mut v = d.verifier();
        v.update(data);
        if let Err(m) = v.finish() {
            return Err(StoreError::Other(format!("refusing to cache {d}: {m}")));
        }
        self.write_atomic(&self.blob_path(d), data)
    }

    /// Is a complete layer blob present?
    pub fn has_blob(&self, d: &Digest, size: u64) -> bool {
        self.held.stat(&d.blob_path()).is_ok_and(|s| s.is_reg() && s.size() == size)
    }

    /// The cached answer for `key` (`registry/repo:tag`).
    pub fn get_ref(&self, key: &str) -> Option<RefRecord> {
        let b = self.held.read_capped(&Self::ref_rel(key), 1 << 16).ok()?;
        let r: RefRecord = serde_json::from_slice(&b).ok()?;
        (r.key == key).then_some(r)
    }

    /// Record the answer for `r.key`.
    pub fn put_ref(&self, r: &RefRecord) -> Result<(), StoreError> {
        let mut r = r.clone();
        if r.fetched == 0 {
            r.fetched = now_secs();
        }
        let text = serde_json::to_vec_pretty(&r).map_err(|e| StoreError::Other(e.to_string()))?;
        self.write_atomic(&self.dir.join(Self::ref_rel(&r.key)), &text)
    }

    /// Every cached reference.
    pub fn refs(&self) -> Vec<RefRecord> {
        let Ok(names) = self.held.read_dir(Path::new("refs")) else { return Vec::new() };
        let mut out: Vec<RefRecord> = names
            .into_iter()
            .filter_map(|name| {
                let key_hex = name.to_str()?;
                let b = self.held.read_capped(&Path::new("refs").join(key_hex), 1 << 16).ok()?;
                let r: RefRecord = serde_json::from_slice(&b).ok()?;
                (Digest::sha256_of(r.key.as_bytes()).hex() == key_hex).then_some(r)
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Unpack the complete layer blob of `l` into the layer cache (verifying blob digest and
    /// diff_id), then drop the blob: the unpacked tree is what later mounts use.
    pub fn unpack_layer(&self, l: &LayerBlob) -> Result<CachedLayer, StoreError> {
        let path = self.blob_path(&l.digest);
        let open = || -> Result<Box<dyn Read + '_>, StoreError> {
            let r = self.held.open_sized(&l.digest.blob_path(), l.size).map_err(|e| StoreError::io(&path, e))?;
            Ok(Box::new(r))
        };
        let src = LayerSource {
            diff_id: &l.diff_id,
            blob_digest: Some(&l.digest),
            size: l.size,
            file: path.clone(),
            open: &open,
        };
        let r = cache::ensure(&self.root, &src);
        match &r {
            Ok(_) => {
                let _ = std::fs::remove_file(&path);
            }
            // A blob that does not unpack to its diff_id is useless: do not keep it.
            Err(StoreError::Corrupt { .. }) if crate::cancel::signal().is_none() => {
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => {}
        }
        r
    }

    /// Build what a mount needs from a config and its layers (bottom first as in the
    /// manifest); layers not in the cache are given the directory they would have.
    pub fn resolved(&self, name: &str, config: &Digest, config_bytes: &[u8], layers: &[LayerBlob]) -> Result<ResolvedImage, StoreError> {
        let cpath = self.blob_path(config);
        let cfg = ImageConfig::parse(config_bytes, &cpath)?;
        let mut out: Vec<ResolvedLayer> = Vec::with_capacity(layers.len());
        for (l, h) in layers.iter().zip(cfg.layer_history()) {
            let (dir, whiteouts, size) = match cache::lookup(&self.root, &l.diff_id) {
                Some(c) => (c.dir, c.meta.whiteouts, Some(c.meta.size)),
                None => (
                    cache::entry_path(&self.root, &l.diff_id).join("diff"),
                    if crate::sys::euid() == 0 { WhiteoutFormat::CharDevice } else { WhiteoutFormat::WhFiles },
                    Some(l.size),
                ),
            };
            out.push(ResolvedLayer {
                dir,
                diff_id: l.diff_id.clone(),
                layer_id: l.diff_id.to_string(),
                whiteouts,
                size,
                created_by: h,
            });
        }
        out.reverse();
        Ok(ResolvedImage {
            id: config.clone(),
            store: self.dir.clone(),
            layers: out,
            kind: StoreKind::Registry,
            names: vec![name.to_string()],
            created: cfg.created.clone(),
        })
    }

    /// Listing records for `images`: every cached reference whose image is complete
    /// (manifest, config and all layers cached). `layers_of` reads a manifest's layer
    /// digests and sizes (the manifest format is the registry client's business).
    pub fn images(&self, layers_of: LayersOf) -> Vec<ImageRecord> {
        let mut out = Vec::new();
        for r in self.refs() {
            let (Some(m), Some(c)) = (r.manifest.as_ref().or(Some(&r.digest)), r.config.as_ref()) else { continue };
            let Some(mb) = self.read_blob(m, MAX_MANIFEST) else { continue };
            let Some(cb) = self.read_blob(c, MAX_CONFIG) else { continue };
            let Some(blobs) = layers_of(&mb) else { continue };
            let Ok(cfg) = ImageConfig::parse(&cb, &self.blob_path(c)) else { continue };
            if cfg.diff_ids().len() != blobs.len() || !cfg.diff_ids().iter().all(|d| cache::lookup(&self.root, d).is_some()) {
                continue;
            }
            let rec = ImageRecord {
                id: c.clone(),
                names: if r.key.contains('@') { Vec::new() } else { vec![r.key.clone()] },
                digests: vec![r.digest.clone()],
                bare_tags: Vec::new(),
                key: r.key.clone(),
                created: cfg.created.clone(),
                layer_count: Some(blobs.len()),
                size: Some(blobs.iter().map(|b| b.1).sum()),
                namespace: None,
            };
            out.push(rec);
        }
        out
    }

    /// Remove temp files older than a day (left by a crash).
    pub fn clean_stale(&self) {
        let Ok(rd) = std::fs::read_dir(self.dir.join("tmp")) else { return };
        let day = std::time::Duration::from_secs(86400);
        for e in rd.flatten() {
            let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok()).is_some_and(|a| a > day);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// An exclusively locked partial download (see [`RegistryCache::lock_partial`]).
pub struct Partial {
    pub file: File,
    pub path: PathBuf,
}

impl RegistryCache {
    /// Open (creating it empty if missing) and lock the partial download of `d`, waiting
    /// while another process holds it; Ctrl-C stops the wait. The file locked is the one
    /// at the path (a file renamed away meanwhile is not used).
    pub fn lock_partial(&self, d: &Digest) -> Result<Partial, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.partial_path(d);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| StoreError::io(&path, e))?;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(std::fs::TryLockError::WouldBlock) => {
                        if let Err(i) = crate::cancel::sleep(std::time::Duration::from_millis(100)) {
                            return Err(StoreError::Interrupted(i));
                        }
                    }
                    Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
                }
            }
            let held = file.metadata().map_err(|e| StoreError::io(&path, e))?;
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() && held.is_file() => {
                    return Ok(Partial { file, path });
                }
                _ => continue, // completed (renamed) or removed by its holder: look again
            }
        }
    }

    /// Move a complete, verified partial download into `blobs/` (keeps the lock until done).
    pub fn commit_partial(&self, d: &Digest, p: Partial) -> Result<PathBuf, StoreError> {
        p.file.sync_all().map_err(|e| StoreError::io(&p.path, e))?;
        let dest = self.blob_path(d);
        std::fs::rename(&p.path, &dest).map_err(|e| StoreError::io(&dest, e))?;
        drop(p);
        Ok(dest)
    }

    /// Throw a partial download away (its content was wrong).
    pub fn discard_partial(&self, p: Partial) {
        let _ = std::fs::remove_file(&p.path);
        drop(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_refs_and_partials() {
        let t = tempfile::tempdir().unwrap();
        let c = RegistryCache::open(t.path()).unwrap();
        let d = Digest::sha256_of(b"{}");
        assert!(c.read_blob(&d, 10).is_none());
        c.write_blob(&d, b"{}").unwrap();
        assert_eq!(c.read_blob(&d, 10).unwrap(), b"{}");
        assert!(c.read_blob(&d, 1).is_none(), "over the cap");
        assert!(c.write_blob(&d, b"[]").is_err(), "content must match");
        // A damaged blob is dropped, not served.
        std::fs::write(c.blob_path(&d), b"[]").unwrap();
        assert!(c.read_blob(&d, 10).is_none());
        assert!(!c.blob_path(&d).exists());

        let r = RefRecord { key: "r:1/tiny:app".into(), digest: d.clone(), manifest: None, platform: None, config: None, fetched: 0 };
        c.put_ref(&r).unwrap();
        let got = c.get_ref("r:1/tiny:app").unwrap();
        assert_eq!(got.digest, d);
        assert!(got.fetched > 0);
        assert!(c.get_ref("r:1/tiny:other").is_none());
        assert_eq!(c.refs().len(), 1);
        assert_eq!(std::fs::read_dir(t.path().join("registry/tmp")).unwrap().count(), 0);

        let big = Digest::sha256_of(b"layer");
        let mut p = c.lock_partial(&big).unwrap();
        p.file.write_all(b"layer").unwrap();
        assert!(!c.has_blob(&big, 5));
        let path = c.commit_partial(&big, p).unwrap();
        assert!(c.has_blob(&big, 5) && path.is_file());
        assert!(!c.partial_path(&big).exists());
    }
}
