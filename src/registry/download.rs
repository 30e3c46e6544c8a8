//! Layer downloads: into a locked partial file in the cache, verified while streaming,
//! resumed with HTTP Range after an interruption, renamed into `blobs/` only when complete
//! and verified; several at once (bounded), unpacked as each completes.
//!
//! ```text
//! partial/sha256/<hex>  (flock) ──bytes from Range: bytes=LEN-──> hash as written
//!      │ LEN == size and digest matches ──rename──> blobs/sha256/<hex> ──unpack──> layers/
//!      │ digest mismatch / larger than its descriptor ──> removed, error
//!      └ connection lost ──> retried from LEN (4 tries); then kept for the next run
//! ```
//! Invariants: never more bytes than the descriptor's size are written; a partial is never
//! read as a blob; Ctrl-C stops every download at its next read and leaves the partial
//! (complete up to what was written, so it resumes); a worker that fails stops the others.

use super::client::{BlobAnswer, Client, MAX_TRIES};
use super::error::RegistryError;
use super::progress::{LayerBar, Progress};
use crate::store::digest::Digest;
use crate::store::registry::{LayerBlob, Partial, RegistryCache};
use std::collections::VecDeque;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Downloads in flight at once.
pub const DEFAULT_JOBS: usize = 3;

/// Hash the first `len` bytes already in the partial file.
fn hash_existing(p: &mut Partial, d: &Digest, len: u64) -> Result<crate::store::digest::Verifier, RegistryError> {
    let mut v = d.verifier();
    p.file.seek(SeekFrom::Start(0)).map_err(|e| RegistryError::io(&p.path, e))?;
    let mut r = crate::cancel::Reader((&p.file).take(len));
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = r.read(&mut buf).map_err(|e| RegistryError::io(&p.path, e))?;
        if n == 0 {
            break;
        }
        v.update(&buf[..n]);
    }
    Ok(v)
}

fn truncate(p: &mut Partial) -> Result<(), RegistryError> {
    p.file.set_len(0).map_err(|e| RegistryError::io(&p.path, e))?;
    p.file.seek(SeekFrom::Start(0)).map_err(|e| RegistryError::io(&p.path, e))?;
    Ok(())
}

/// Download layer blob `l` into the cache's `blobs/` (nothing to do when it is there).
/// `stop` is polled between reads: another worker failed.
pub fn fetch(client: &Client, cache: &RegistryCache, l: &LayerBlob, bar: &mut LayerBar, stop: &AtomicBool) -> Result<(), RegistryError> {
    let d = &l.digest;
    if cache.has_blob(d, l.size) {
        return Ok(());
    }
    let mut p = cache.lock_partial(d)?;
    let unpacked = crate::store::cache::lookup(&cache.root, &l.diff_id).is_some();
    if cache.has_blob(d, l.size) || unpacked {
        // Another process finished it while we waited for the lock (and maybe unpacked it:
        // then unpacking finds the entry and does nothing). No partial is needed.
        cache.discard_partial(p);
        return Ok(());
    }
    let mut have = p.file.metadata().map_err(|e| RegistryError::io(&p.path, e))?.len();
    if have > l.size {
        truncate(&mut p)?;
        have = 0;
    }
    let mut v = hash_existing(&mut p, d, have)?;
    if have > 0 {
        log::info!("resuming {d} at byte {have} of {}", l.size);
    }
    let host = client.endpoint().to_string();
    let mut tries = 0u32;
    let mut buf = vec![0u8; 256 << 10];
    while have < l.size {
        crate::cancel::check()?;
        let (start, mut reader) = match client.blob(d, have) {
            Ok(BlobAnswer::Body { start, reader }) => (start, reader),
            Ok(BlobAnswer::RangeNotSatisfiable) => {
                // Our partial is not a prefix the server knows: start over.
                truncate(&mut p)?;
                have = 0;
                v = d.verifier();
                tries += 1;
                if tries >= MAX_TRIES {
                    return Err(RegistryError::Protocol { host, detail: format!("cannot download {d}: ranges refused") });
                }
                continue;
            }
            // The client already retried transient failures: give up, keep the partial.
            Err(e @ (RegistryError::Unreachable { .. } | RegistryError::Server { .. })) if have > 0 => {
                return Err(RegistryError::Download { host, digest: d.clone(), detail: short(&e) });
            }
            Err(e) => return Err(e),
        };
        if start == 0 && have > 0 {
            // The server sent the whole blob: begin again.
            truncate(&mut p)?;
            have = 0;
            v = d.verifier();
        }
        p.file.seek(SeekFrom::Start(have)).map_err(|e| RegistryError::io(&p.path, e))?;
        bar.set_position(have);
        let cut = loop {
            if stop.load(Ordering::SeqCst) {
                return Err(RegistryError::Invalid("stopped".into()));
            }
            crate::cancel::check()?;
            let n = match reader.read(&mut buf) {
                Ok(n) => n,
                Err(e) => break Some(format!("connection lost ({})", e.kind())),
            };
            if n == 0 {
                break (have < l.size).then(|| "the server closed the connection early".to_string());
            }
            if have + n as u64 > l.size {
                cache.discard_partial(p);
                return Err(RegistryError::Protocol {
                    host,
                    detail: format!("blob {d} is larger than the {} bytes its descriptor says: discarded", l.size),
                });
            }
            p.file.write_all(&buf[..n]).map_err(|e| RegistryError::io(&p.path, e))?;
            v.update(&buf[..n]);
            have += n as u64;
            bar.inc(n as u64);
        };
        if let Some(why) = cut {
            tries += 1;
            if tries >= MAX_TRIES {
                return Err(RegistryError::Download { host, digest: d.clone(), detail: why });
            }
            log::info!("{d}: {why} at byte {have}; resuming");
            crate::cancel::sleep(Duration::from_millis(500 << (tries - 1).min(4)))?;
        }
    }
    if let Err(m) = v.finish() {
        cache.discard_partial(p);
        return Err(RegistryError::mismatch("layer", m));
    }
    cache.commit_partial(d, p)?;
    bar.done();
    Ok(())
}

fn short(e: &RegistryError) -> String {
    match e {
        RegistryError::Unreachable { detail, .. } => detail.clone(),
        RegistryError::Server { status, .. } => format!("HTTP {status}"),
        other => other.to_string(),
    }
}

/// Download the layers `todo` (at most `jobs` at once) and unpack each into the layer
/// cache as soon as it is complete. Returns when all are unpacked, at the first error, or
/// at Ctrl-C (without waiting for downloads stuck in a read: they stop at their next one).
pub fn fetch_all(client: &Arc<Client>, cache: &RegistryCache, todo: Vec<LayerBlob>, jobs: usize) -> Result<(), RegistryError> {
    if todo.is_empty() {
        return Ok(());
    }
    let n = todo.len();
    let progress = Arc::new(Progress::new());
    let queue = Arc::new(Mutex::new(todo.into_iter().collect::<VecDeque<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<(LayerBlob, Result<(), RegistryError>)>();
    let mut workers = Vec::new();
    for i in 0..jobs.clamp(1, n) {
        let (client, cache, queue, stop2, tx, progress) =
            (client.clone(), cache.clone(), queue.clone(), stop.clone(), tx.clone(), progress.clone());
        let w = std::thread::Builder::new().name(format!("pull-{i}")).spawn(move || {
            while let Some(job) = queue.lock().ok().and_then(|mut q| q.pop_front()) {
                if stop2.load(Ordering::SeqCst) || crate::cancel::signal().is_some() {
                    break;
                }
                let short = job.digest.hex().get(..12).unwrap_or("").to_string();
                let mut bar = progress.layer(&format!("layer {short}"), job.size);
                let r = fetch(&client, &cache, &job, &mut bar, &stop2);
                if r.is_err() {
                    bar.abandon();
                }
                if tx.send((job, r)).is_err() {
                    break;
                }
            }
        });
        match w {
            Ok(h) => workers.push(h),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                return Err(RegistryError::Invalid(format!("cannot start a download thread: {e}")));
            }
        }
    }
    drop(tx);
    let mut done = 0;
    let mut failure: Option<RegistryError> = None;
    while done < n {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((job, Ok(()))) => {
                done += 1;
                if let Err(e) = cache.unpack_layer(&job) {
                    failure = Some(e.into());
                    break;
                }
            }
            Ok((_, Err(e))) => {
                failure = Some(e);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(i) = crate::cancel::signal() {
                    failure = Some(RegistryError::Interrupted(i));
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failure = Some(crate::cancel::signal().map(RegistryError::Interrupted).unwrap_or_else(|| {
                    RegistryError::Invalid("a download thread ended without an answer".into())
                }));
                break;
            }
        }
    }
    if let Some(e) = failure {
        // Tell the others; they stop at their next read. Do not wait for a stuck one.
        stop.store(true, Ordering::SeqCst);
        return Err(match crate::cancel::signal() {
            Some(i) => RegistryError::Interrupted(i),
            None => e,
        });
    }
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}
