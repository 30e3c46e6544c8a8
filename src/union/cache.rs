//! Bounded LRU cache of resolved lookups: (parent inode, name) → inode or "absent".
//!
//! Invariants: an entry is only ever a summary of what a layer walk returned; every
//! change to a directory's namespace (create, unlink, rename, …) removes exactly the
//! (parent, name) keys it touched before the change is visible; copy-up changes no
//! inode number and so invalidates nothing. A positive entry whose node has been
//! forgotten is treated as a miss by the caller.
//!
//! Race: a walk that started before a change must not store its (now stale) answer
//! after the change's invalidation. Every invalidation bumps a generation first; a
//! walk stores its answer only if the generation it read before walking is still
//! current, checked under the shard lock the invalidation also takes.

use lru::LruCache;
use parking_lot::Mutex;
use std::ffi::OsStr;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDS: usize = 16;

/// (parent, hash of name) → (name, answer). The name is kept to rule out hash
/// collisions, so a probe costs no allocation.
type Shard = LruCache<(u64, u64), (Box<OsStr>, Option<u64>)>;

pub struct LookupCache {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    enabled: bool,
    generation: AtomicU64,
}

/// An LRU of capacity `cap` whose table grows as entries come (`LruCache::new`
/// allocates and clears the whole table at once, which costs a mount its first
/// milliseconds whether or not it ever looks much up).
pub fn growing_lru<K: std::hash::Hash + Eq, V>(cap: NonZeroUsize) -> LruCache<K, V> {
    let mut c = LruCache::new(NonZeroUsize::MIN);
    c.resize(cap);
    c
}

impl LookupCache {
    /// A cache holding about `entries` entries in all (0 disables it).
    pub fn new(entries: usize) -> LookupCache {
        let per = NonZeroUsize::new(entries.div_ceil(SHARDS).max(1)).expect("nonzero");
        LookupCache {
            shards: (0..SHARDS).map(|_| Mutex::new(growing_lru(per))).collect(),
            hasher: Default::default(),
            enabled: entries > 0,
            generation: AtomicU64::new(0),
        }
    }

    fn key(&self, parent: u64, name: &OsStr) -> ((u64, u64), &Mutex<Shard>) {
        let h = self.hasher.hash_one(name);
        let shard = &self.shards[((h ^ parent.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as usize) % SHARDS];
        ((parent, h), shard)
    }

    /// `Some(Some(ino))` hit, `Some(None)` negative hit, `None` miss.
    pub fn get(&self, parent: u64, name: &OsStr) -> Option<Option<u64>> {
        if !self.enabled {
            return None;
        }
        let (k, shard) = self.key(parent, name);
        match shard.lock().get(&k) {
            Some((n, ino)) if &**n == name => Some(*ino),
            _ => None,
        }
    }

    /// The generation to pass to `put` for a walk starting now.
    pub fn begin(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Store a walk's answer unless something was invalidated since `begin`.
    pub fn put(&self, parent: u64, name: &OsStr, ino: Option<u64>, generation: u64) {
        if self.enabled {
            let (k, shard) = self.key(parent, name);
            let mut shard = shard.lock();
            if self.generation.load(Ordering::Acquire) == generation {
                shard.put(k, (name.into(), ino));
            }
        }
    }

    pub fn invalidate(&self, parent: u64, name: &OsStr) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if self.enabled {
            let (k, shard) = self.key(parent, name);
            shard.lock().pop(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_miss_negative_invalidate() {
        let c = LookupCache::new(64);
        assert_eq!(c.get(1, "a".as_ref()), None);
        c.put(1, "a".as_ref(), Some(7), c.begin());
        c.put(1, "b".as_ref(), None, c.begin());
        assert_eq!(c.get(1, "a".as_ref()), Some(Some(7)));
        assert_eq!(c.get(1, "b".as_ref()), Some(None));
        assert_eq!(c.get(2, "a".as_ref()), None);
        c.invalidate(1, "a".as_ref());
        assert_eq!(c.get(1, "a".as_ref()), None);
    }

    #[test]
    fn bounded() {
        let c = LookupCache::new(32);
        for i in 0..10_000u64 {
            c.put(i, "x".as_ref(), Some(i), c.begin());
        }
        let total: usize = c.shards.iter().map(|s| s.lock().len()).sum();
        assert!(total <= 32, "{total}");
    }

    #[test]
    fn disabled() {
        let c = LookupCache::new(0);
        c.put(1, "a".as_ref(), Some(1), c.begin());
        assert_eq!(c.get(1, "a".as_ref()), None);
    }

    #[test]
    fn stale_walk_is_not_stored() {
        let c = LookupCache::new(64);
        let g = c.begin();
        c.invalidate(9, "other".as_ref());
        c.put(1, "a".as_ref(), None, g);
        assert_eq!(c.get(1, "a".as_ref()), None);
    }
}
