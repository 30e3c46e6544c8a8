//! Content-addressed cache of unpacked layers (for OCI layouts and `docker save` archives).
//!
//! ```text
//! CACHE/                               --cache, default /var/cache/unionmount (root)
//! ├── layers/<algo>/<diff_id hex>/     or $XDG_CACHE_HOME/unionmount, ~/.cache/unionmount
//! │   ├── diff/                        the layer tree
//! │   └── meta.json                    {"diff_id","whiteouts","size","blob_digest"}
//! └── tmp/<hex>.<pid>.<nanos>/         an unpack in progress (mode 0700), same layout
//! ```
//! Invariants:
//! - an entry is named only by its diff_id ([`Digest::content_path`]) and read beneath the
//!   cache's directory fd without following a symlink; its meta.json is capped and must
//!   name the same diff_id;
//! - an entry under `layers/` is complete and verified: it is unpacked into `tmp/`, the
//!   sha256 of the uncompressed stream must equal the diff_id (and of the compressed blob,
//!   when known, its manifest digest), then the whole directory is renamed into place;
//! - a rename that loses a race against another mount (target exists) discards its copy
//!   and uses the winner's, so concurrent mounts are safe and see one tree;
//! - `meta.json` records the whiteout form used, so the mount knows how to read it;
//! - a failed unpack leaves nothing under `layers/` (its tmp dir is removed).

use super::digest::{Algorithm, Digest, VerifyingReader};
use super::unpack::{self, Options};
use super::{StoreError, WhiteoutFormat};
use crate::sys::beneath::Beneath;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};

/// Show a progress bar for layers at least this large (compressed bytes).
const PROGRESS_MIN: u64 = 8 << 20;

/// What the cache records about an entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EntryMeta {
    pub diff_id: Digest,
    pub whiteouts: WhiteoutFormat,
    /// Bytes of regular file content.
    pub size: u64,
    #[serde(default)]
    pub blob_digest: Option<Digest>,
}

/// A layer present in the cache.
#[derive(Debug, Clone)]
pub struct CachedLayer {
    pub dir: PathBuf,
    pub meta: EntryMeta,
}

/// A layer blob to unpack.
pub struct LayerSource<'a> {
    /// Expected digest of the uncompressed tar.
    pub diff_id: &'a Digest,
    /// Expected digest of the blob as stored (compressed), when the manifest gives one.
    pub blob_digest: Option<&'a Digest>,
    /// Blob size (exact: the opener enforces it), for the progress bar.
    pub size: u64,
    /// Where the blob lives, for messages (`archive.tar:blobs/sha256/…`).
    pub file: PathBuf,
    /// Opens the blob stream.
    pub open: &'a dyn Fn() -> Result<Box<dyn Read + 'a>, StoreError>,
}

/// Largest meta.json read.
const MAX_META: u64 = 64 << 10;

/// An entry's directory relative to the cache root.
fn entry_rel(diff_id: &Digest) -> PathBuf {
    Path::new("layers").join(diff_id.content_path())
}

/// The entry directory of `diff_id` (whether or not it exists).
pub fn entry_path(cache: &Path, diff_id: &Digest) -> PathBuf {
    cache.join(entry_rel(diff_id))
}

/// The cached layer for `diff_id`, if complete.
pub fn lookup(cache: &Path, diff_id: &Digest) -> Option<CachedLayer> {
    let root = Beneath::open(cache).ok()?;
    let rel = entry_rel(diff_id);
    let b = root.read_capped(&rel.join("meta.json"), MAX_META).ok()?;
    let meta: EntryMeta = serde_json::from_slice(&b).ok()?;
    (meta.diff_id == *diff_id && root.is_dir(&rel.join("diff"))).then(|| CachedLayer { dir: cache.join(rel).join("diff"), meta })
}

#[derive(Clone, Copy)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Hashes the compressed stream as it is read and drives the progress bar.
struct Tap<R> {
    inner: VerifyingReader<R>,
    bar: Option<indicatif::ProgressBar>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

fn progress(size: u64, what: &str) -> Option<indicatif::ProgressBar> {
    if size < PROGRESS_MIN || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(size);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(s) = style {
        b.set_style(s);
    }
    b.set_message(format!("unpacking {what}"));
    Some(b)
}

/// Create `CACHE/layers/<algo>` and `CACHE/tmp`. `layers/` and `tmp/` are mode 0700:
/// unpacked trees keep setuid bits and device nodes, which must not be reachable by
/// other users (Docker keeps its overlay2 dir private for the same reason).
fn prepare(cache: &Path, algo: Algorithm) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::create_dir_all(cache).map_err(|e| StoreError::io(cache, e))?;
    for d in [cache.join("layers"), cache.join("tmp")] {
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io(&d, e)),
        }
    }
    let l = cache.join("layers").join(algo.name());
    std::fs::create_dir_all(&l).map_err(|e| StoreError::io(&l, e))
}

/// Remove unpacks abandoned by a crash (older than a day).
fn clean_stale(tmp_root: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp_root) else { return };
    let day = std::time::Duration::from_secs(86400);
    for e in rd.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > day);
        if old {
            let _ = unpack::remove_tree(&e.path());
        }
    }
}

/// Unpack `src` into the cache unless it is already there; returns the entry.
pub fn ensure(cache: &Path, src: &LayerSource<'_>) -> Result<CachedLayer, StoreError> {
    if let Some(c) = lookup(cache, src.diff_id) {
        return Ok(c);
    }
    let hex = src.diff_id.hex();
    let tmp_root = cache.join("tmp");
    prepare(cache, src.diff_id.algorithm())?;
    clean_stale(&tmp_root);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = tmp_root.join(format!("{hex}.{}.{nanos}", std::process::id()));
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    if let Err(e) = crate::cancel::check().map_err(StoreError::Interrupted).and_then(|()| unpack_into(&tmp, src)) {
        let _ = unpack::remove_tree(&tmp);
        // A signal makes any read or unpack step fail: say why it really stopped.
        return Err(crate::cancel::signal().map(StoreError::Interrupted).unwrap_or(e));
    }
    let final_dir = entry_path(cache, src.diff_id);
    let mut renamed = std::fs::rename(&tmp, &final_dir);
    if renamed.is_err() && lookup(cache, src.diff_id).is_none() && final_dir.exists() {
        // A broken entry (meta.json lost): no mount can be using it; replace it.
        let _ = unpack::remove_tree(&final_dir);
        renamed = std::fs::rename(&tmp, &final_dir);
    }
    if let Err(e) = renamed {
        let _ = unpack::remove_tree(&tmp);
        if lookup(cache, src.diff_id).is_none() {
            return Err(StoreError::io(&final_dir, e));
        }
        // Another mount won the race: use its copy.
    }
    lookup(cache, src.diff_id).ok_or_else(|| StoreError::Store {
        path: final_dir,
        detail: "cache entry vanished after unpacking".into(),
    })
}

fn unpack_into(tmp: &Path, src: &LayerSource<'_>) -> Result<EntryMeta, StoreError> {
    let privileged = crate::sys::euid() == 0;
    let file = &src.file;
    let bad = |d: String| StoreError::corrupt(file, d);
    let name = format!("layer {}", &src.diff_id.hex()[..12]);
    let raw: Box<dyn Read + '_> = Box::new(crate::cancel::Reader((src.open)()?));
    let blob_algo = src.blob_digest.map_or(Algorithm::Sha256, Digest::algorithm);
    let tap = Tap { inner: VerifyingReader::new(raw, blob_algo), bar: progress(src.size, &name) };
    let mut buf = BufReader::with_capacity(256 << 10, tap);
    let head = buf.fill_buf().map_err(|e| bad(format!("read error: {e}")))?.to_vec();
    let diff = tmp.join("diff");
    std::fs::create_dir(&diff).map_err(|e| StoreError::io(&diff, e))?;
    let opts = Options { privileged };
    let algo = src.diff_id.algorithm();
    let drain = |b: &mut BufReader<Tap<Box<dyn Read + '_>>>| {
        std::io::copy(b, &mut std::io::sink()).map_err(|e| bad(format!("read error: {e}")))
    };
    let (stats, uncompressed, mut buf) = match sniff(&head) {
        Compression::None => {
            let mut h = VerifyingReader::new(buf, algo);
            let s = unpack::unpack(&mut h, &diff, opts).map_err(|e| e.to_store(file, &diff))?;
            let (d, _, b) = h.finish().map_err(|e| bad(format!("read error: {e}")))?;
            (s, d, b)
        }
        Compression::Gzip => {
            let mut h = VerifyingReader::new(flate2::bufread::MultiGzDecoder::new(buf), algo);
            let s = unpack::unpack(&mut h, &diff, opts).map_err(|e| e.to_store(file, &diff))?;
            let (d, _, dec) = h.finish().map_err(|e| bad(format!("gzip: {e}")))?;
            (s, d, dec.into_inner())
        }
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(buf).map_err(|e| bad(format!("zstd: {e}")))?;
            let mut h = VerifyingReader::new(dec, algo);
            let s = unpack::unpack(&mut h, &diff, opts).map_err(|e| e.to_store(file, &diff))?;
            let (d, _, dec) = h.finish().map_err(|e| bad(format!("zstd: {e}")))?;
            (s, d, dec.finish())
        }
    };
    if uncompressed != *src.diff_id {
        return Err(bad(format!("uncompressed sha256 is {uncompressed}, expected diff_id {}", src.diff_id)));
    }
    drain(&mut buf)?;
    let tap = buf.into_inner();
    if let Some(b) = &tap.bar {
        b.finish_and_clear();
    }
    let (blob, _, _) = tap.inner.finish().map_err(|e| bad(format!("read error: {e}")))?;
    if let Some(want) = src.blob_digest
        && blob != *want {
            return Err(bad(format!("blob sha256 is {blob}, manifest says {want}")));
        }
    let meta = EntryMeta {
        diff_id: src.diff_id.clone(),
        whiteouts: if privileged { WhiteoutFormat::CharDevice } else { WhiteoutFormat::WhFiles },
        size: stats.bytes,
        blob_digest: src.blob_digest.cloned(),
    };
    let mj = tmp.join("meta.json");
    let text = serde_json::to_vec_pretty(&meta).map_err(|e| StoreError::Other(e.to_string()))?;
    std::fs::write(&mj, text).map_err(|e| StoreError::io(&mj, e))?;
    Ok(meta)
}
