//! `Held`: an `O_PATH` fd on an object of one layer, and what a directory fd
//! remembers about its directory so lookups can skip system calls.
//!
//! Invariants: marker knowledge only moves from "unknown" to a value when learnt
//! from a listing, and to "has markers" when this daemon writes one; a name filter
//! is recorded only for directories of lower layers, which never change.

use crate::layers::LayerIdx;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// An `O_PATH` fd on an object of one layer. For a directory it also remembers
/// whether it holds `.wh.` markers (unknown until listed), which spares lookups
/// the `.wh.NAME` probe where there are none. Lower layers never change; in the
/// upper layer only this daemon adds markers, and it records each one
/// (`note_marker_written`), which a concurrent listing cannot undo (`learn_markers`
/// only moves from "unknown").
///
/// A lower directory that was listed also keeps a filter of its names (sorted
/// 64-bit hashes), so a lookup of a name it cannot hold costs no system call:
/// deep layer stacks make most per-layer probes misses.
#[derive(Debug)]
pub struct Held {
    fd: OwnedFd,
    /// 0 unknown, 1 no markers, 2 has markers.
    markers: AtomicU8,
    names: std::sync::OnceLock<Box<[u64]>>,
}

/// FNV-1a: a fixed, fast hash for the name filter (a collision only costs a stat).
pub fn name_hash(prefix: &[u8], name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in prefix.iter().chain(name) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Held {
    pub fn new(fd: OwnedFd) -> Arc<Held> {
        Arc::new(Held { fd, markers: AtomicU8::new(0), names: std::sync::OnceLock::new() })
    }

    /// Record a full listing of this directory. `immutable`: it is in a lower
    /// layer, so a name filter stays true.
    pub fn learn_listing<'a>(&self, names: impl Iterator<Item = &'a [u8]>, immutable: bool) {
        let mut markers = false;
        let mut hashes = Vec::new();
        for n in names {
            markers |= crate::overlay::is_reserved_name(n);
            if immutable {
                hashes.push(name_hash(b"", n));
            }
        }
        self.learn_markers(markers);
        if immutable {
            hashes.sort_unstable();
            hashes.dedup();
            let _ = self.names.set(hashes.into_boxed_slice());
        }
    }

    /// Some(false) when the directory surely has no entry whose `name_hash` is `hash`.
    pub fn may_contain(&self, hash: u64) -> Option<bool> {
        self.names.get().map(|h| h.binary_search(&hash).is_ok())
    }

    /// Whether a listing was recorded (name filter or marker knowledge).
    pub fn listed(&self) -> bool {
        self.names.get().is_some()
    }
    /// Some(true/false) once known.
    pub fn has_markers(&self) -> Option<bool> {
        match self.markers.load(Ordering::Relaxed) {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        }
    }
    /// Record what a listing found, unless something is already known.
    pub fn learn_markers(&self, v: bool) {
        let _ = self.markers.compare_exchange(0, if v { 2 } else { 1 }, Ordering::AcqRel, Ordering::Relaxed);
    }
    /// This daemon wrote a `.wh.` marker into the directory.
    pub fn note_marker_written(&self) {
        self.markers.store(2, Ordering::Release)
    }
}

impl AsFd for Held {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One directory of a merged directory: its layer and an `O_PATH` fd.
pub type DirLayer = (LayerIdx, Arc<Held>);
