//! Directory listings served to readdir, without directory handles.
//!
//! A listing is the merged snapshot `list_dir` builds when a reader starts at
//! offset 0. Every entry's offset cookie carries the snapshot's generation in its
//! high 32 bits and the entry's position + 1 in its low 32 bits, so a reader that
//! continues from a cookie reads on in the very snapshot it started with, whatever
//! happened to the directory (or to other readers) meanwhile. That is what lets the
//! kernel skip OPENDIR/RELEASEDIR altogether (FUSE_NO_OPENDIR_SUPPORT) while offsets
//! stay valid across calls. Snapshots live in a small LRU and are dropped once read
//! to the end; a reader whose snapshot was evicted gets a fresh one from the same
//! position (best effort, as any file system with huge numbers of open readers).

use super::UnionFs;
use super::readdir::DirEntry;
use crate::sys::SysResult;
use lru::LruCache;
use parking_lot::Mutex;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const KEEP: usize = 256;

struct Snapshot {
    ino: u64,
    entries: Arc<Vec<DirEntry>>,
}

pub struct Listings {
    snapshots: Mutex<LruCache<u64, Snapshot>>,
    next: AtomicU64,
}

impl Default for Listings {
    fn default() -> Self {
        Listings {
            snapshots: Mutex::new(LruCache::new(NonZeroUsize::new(KEEP).expect("nonzero"))),
            next: AtomicU64::new(1),
        }
    }
}

/// A page of a listing: entries from `start` on, and the cookie of entry i is
/// `cookie(i)`.
pub struct Page {
    pub entries: Arc<Vec<DirEntry>>,
    pub start: usize,
    generation: u64,
}

impl Page {
    /// The offset cookie that resumes after entry `i`.
    pub fn cookie(&self, i: usize) -> u64 {
        (self.generation << 32) | (i as u64 + 1)
    }
}

impl UnionFs {
    /// Entries of directory `ino` from readdir offset `offset` on.
    pub fn readdir(&self, ino: u64, offset: u64) -> SysResult<Page> {
        let l = &self.listings;
        if offset != 0 {
            let generation = offset >> 32;
            let start = (offset & 0xffff_ffff) as usize;
            let mut snaps = l.snapshots.lock();
            if let Some(s) = snaps.get(&generation).filter(|s| s.ino == ino) {
                let entries = s.entries.clone();
                if start >= entries.len() {
                    snaps.pop(&generation); // read to the end
                }
                return Ok(Page { entries, start, generation });
            }
            drop(snaps);
            return self.fresh_listing(ino, start);
        }
        self.fresh_listing(ino, 0)
    }

    fn fresh_listing(&self, ino: u64, start: usize) -> SysResult<Page> {
        let entries = Arc::new(self.list_dir(ino)?);
        let generation = self.listings.next.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
        self.listings.snapshots.lock().put(generation, Snapshot { ino, entries: entries.clone() });
        Ok(Page { entries, start, generation })
    }
}
