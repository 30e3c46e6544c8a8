//! The inode table: one `Node` per object the kernel knows, keyed by inode number.
//!
//! Invariants:
//! - A node's inode number never changes. It is derived from the topmost real object
//!   (`(layer + 1) << 48 | st_ino`), and a copy-up registers the new upper object as
//!   an alias of the old number (`origins`), so st_ino survives copy-up for the life
//!   of the mount and readdir's d_ino can be computed the same way.
//! - A node lives while the kernel holds lookups on it or a child node names it as
//!   parent (children need their parent's path for copy-up). Counts are changed
//!   under the table lock only where a node may be removed, so a lookup can't revive
//!   a node being dropped.
//! - `NodeState` is only ever locked briefly; no lock is held across file I/O.

use crate::sys::fs::{self, Stat};
use crate::sys::{Errno, SysResult};
use std::os::fd::AsFd;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

pub const ROOT_INO: u64 = 1;
const LAYER_SHIFT: u32 = 48;
const INO_MASK: u64 = (1 << LAYER_SHIFT) - 1;

/// Layer index in `LayerStack::layers` (0 = upper when there is one).
pub type LayerIdx = u16;

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

/// The mutable part of a node.
#[derive(Debug)]
pub struct NodeState {
    /// Where the node sits in the merged tree: parent inode and name. `parent == 0`
    /// for the root and for nodes whose last name was removed.
    pub parent: u64,
    pub name: Name,
    /// Layer of the topmost real object.
    pub layer: LayerIdx,
    /// The directory (in `layer`) that holds the object as `name`. Non-directories
    /// are reached through it, so a file node costs no fd of its own.
    pub dir: Arc<Held>,
    /// Directories only: the directories merged here, top first; `dirs[0]` is an
    /// `O_PATH` fd on the topmost object. Ends at the first opaque directory.
    pub dirs: Option<Arc<[DirLayer]>>,
    /// The name was removed: `dir`/`name` may now hold something else.
    pub unlinked: bool,
    /// For a removed non-directory: an `O_PATH` fd taken before removal, so open
    /// files can still be stat'ed (fstat reaches us without a handle).
    pub pinned: Option<Arc<Held>>,
}

impl NodeState {
    fn cname(&self) -> SysResult<std::ffi::CString> {
        crate::sys::component(self.name.as_os_str())
    }

    /// The directories merged here (empty for non-directories).
    pub fn dir_layers(&self) -> &[DirLayer] {
        self.dirs.as_deref().unwrap_or(&[])
    }

    /// Number of merged directories (more than one = a merged directory).
    pub fn merged(&self) -> bool {
        self.dir_layers().len() > 1
    }
}

/// A file name stored inline when short (most are), so a node needs no extra
/// allocation for it.
#[derive(Debug, Clone)]
pub enum Name {
    Inline(u8, [u8; 22]),
    Heap(Box<[u8]>),
}

impl Name {
    pub fn as_os_str(&self) -> &OsStr {
        use std::os::unix::ffi::OsStrExt;
        match self {
            Name::Inline(n, b) => OsStr::from_bytes(&b[..*n as usize]),
            Name::Heap(b) => OsStr::from_bytes(b),
        }
    }
}

impl From<&OsStr> for Name {
    fn from(s: &OsStr) -> Name {
        use std::os::unix::ffi::OsStrExt;
        let b = s.as_bytes();
        if b.len() <= 22 {
            let mut a = [0u8; 22];
            a[..b.len()].copy_from_slice(b);
            Name::Inline(b.len() as u8, a)
        } else {
            Name::Heap(b.into())
        }
    }
}

/// The topmost object of a node: held (directories, pinned files) or a name in a
/// held directory.
enum Place {
    Held(LayerIdx, Arc<Held>),
    At(LayerIdx, Arc<Held>, std::ffi::CString),
}

#[derive(Debug)]
pub struct Node {
    pub ino: u64,
    /// `S_IFMT` bits: the type never changes for a node.
    pub kind: u32,
    children: AtomicU32,
    lookups: AtomicU64,
    pub state: Mutex<NodeState>,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
    /// Where the topmost object is, read under the state lock (released before
    /// any system call).
    fn place(&self) -> SysResult<Place> {
        let s = self.state.lock();
        if let Some((l, fd)) = s.dir_layers().first() {
            return Ok(Place::Held(*l, fd.clone()));
        }
        if s.unlinked {
            return s.pinned.clone().map(|p| Place::Held(s.layer, p)).ok_or(Errno::ENOENT);
        }
        Ok(Place::At(s.layer, s.dir.clone(), s.cname()?))
    }

    /// (layer, `O_PATH` fd) of the topmost object; opened on demand for
    /// non-directories.
    pub fn top(&self) -> SysResult<(LayerIdx, Arc<Held>)> {
        match self.place()? {
            Place::Held(l, fd) => Ok((l, fd)),
            Place::At(l, dir, name) => Ok((l, Held::new(fs::open_at(dir.as_fd(), &name, libc::O_PATH, 0)?))),
        }
    }

    /// stat of the topmost object.
    pub fn stat(&self) -> SysResult<Stat> {
        match self.place()? {
            Place::Held(_, fd) => fs::fstat(fd.as_fd()),
            Place::At(_, dir, name) => fs::stat_at(dir.as_fd(), &name),
        }
    }

    /// Open the topmost object for I/O (never following a symlink).
    pub fn open_real(&self, flags: i32) -> SysResult<(LayerIdx, OwnedFd)> {
        let flags = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
        match self.place()? {
            Place::Held(l, fd) => Ok((l, fs::reopen(fd.as_fd(), flags)?)),
            Place::At(l, dir, name) => Ok((l, fs::open_at(dir.as_fd(), &name, flags, 0)?)),
        }
    }

    /// Target of a symlink node.
    pub fn readlink(&self) -> SysResult<OsString> {
        let (_, fd) = self.top()?;
        fs::readlink_fd(fd.as_fd())
    }
    /// The merged directories (shared; cloning is one reference count).
    pub fn dirs(&self) -> Arc<[DirLayer]> {
        self.state.lock().dirs.clone().unwrap_or_else(|| Arc::from(Vec::new()))
    }
    pub fn location(&self) -> (u64, OsString) {
        let s = self.state.lock();
        (s.parent, s.name.as_os_str().to_os_string())
    }
}

/// All live nodes plus the inode-number bookkeeping.
pub struct NodeTable {
    nodes: RwLock<HashMap<u64, Arc<Node>>>,
    /// Upper st_ino → inode number, for objects copied up during this mount.
    origins: Mutex<HashMap<u64, u64>>,
    /// (layer, dev, st_ino) → inode number for objects that don't fit the formula.
    overflow: Mutex<HashMap<(LayerIdx, u64, u64), u64>>,
    /// (layer, st_ino, parent, name) → inode number for names of a hard-linked
    /// lower file whose node was copied up through another name.
    aliases: Mutex<HashMap<(LayerIdx, u64, u64, OsString), u64>>,
    next_overflow: AtomicU64,
    layer_devs: Vec<u64>,
}

impl NodeTable {
    pub fn new(root: NodeState, layer_devs: Vec<u64>) -> NodeTable {
        let root = Arc::new(Node {
            ino: ROOT_INO,
            kind: libc::S_IFDIR,
            state: Mutex::new(root),
            lookups: AtomicU64::new(1 << 62),
            children: AtomicU32::new(0),
        });
        let mut m = HashMap::new();
        m.insert(ROOT_INO, root);
        NodeTable {
            nodes: RwLock::new(m),
            origins: Mutex::new(HashMap::new()),
            overflow: Mutex::new(HashMap::new()),
            aliases: Mutex::new(HashMap::new()),
            // Overflow numbers live in the top layer slot, which no layer uses.
            next_overflow: AtomicU64::new((0xffffu64 << LAYER_SHIFT) + 1),
            layer_devs,
        }
    }

    /// The inode number for real object `st` found in `layer`.
    pub fn ino_for(&self, layer: LayerIdx, st: &Stat, has_upper: bool) -> u64 {
        self.ino_for_raw(layer, st.dev(), st.ino(), has_upper)
    }

    /// Same as `ino_for`, from a raw (dev, ino) pair (readdir's d_ino; dev = layer's).
    pub fn ino_for_raw(&self, layer: LayerIdx, dev: u64, ino: u64, has_upper: bool) -> u64 {
        if has_upper && layer == 0
            && let Some(&i) = self.origins.lock().get(&ino) {
                return i;
            }
        if ino <= INO_MASK && ino != 0 && self.layer_devs.get(layer as usize) == Some(&dev) {
            return ((layer as u64 + 1) << LAYER_SHIFT) | ino;
        }
        *self
            .overflow
            .lock()
            .entry((layer, dev, ino))
            .or_insert_with(|| self.next_overflow.fetch_add(1, Ordering::Relaxed))
    }

    /// A separate inode number for one name of a hard-linked lower file.
    pub fn alias_ino(&self, layer: LayerIdx, st: &Stat, parent: u64, name: &OsStr) -> u64 {
        *self
            .aliases
            .lock()
            .entry((layer, st.ino(), parent, name.to_os_string()))
            .or_insert_with(|| self.next_overflow.fetch_add(1, Ordering::Relaxed))
    }

    /// Record that upper object `upper_ino` is the copy-up of node `ino`.
    pub fn add_origin(&self, upper_ino: u64, ino: u64) {
        self.origins.lock().insert(upper_ino, ino);
    }

    /// Forget the alias of an upper object that no longer exists.
    pub fn drop_origin(&self, upper_ino: u64) {
        self.origins.lock().remove(&upper_ino);
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.nodes.read().get(&ino).cloned()
    }

    /// Take one kernel lookup on an existing node, if it is alive.
    pub fn get_and_ref(&self, ino: u64) -> Option<Arc<Node>> {
        let g = self.nodes.read();
        let n = g.get(&ino)?;
        n.lookups.fetch_add(1, Ordering::Relaxed);
        Some(n.clone())
    }

    /// Find node `ino` or insert the one `make` builds; either way take one lookup.
    /// Returns the node and whether it was created.
    pub fn get_or_insert(&self, ino: u64, make: impl FnOnce() -> NodeState, kind: u32) -> (Arc<Node>, bool) {
        if let Some(n) = self.get_and_ref(ino) {
            return (n, false);
        }
        let state = make();
        let parent = state.parent;
        let mut g = self.nodes.write();
        if let Some(n) = g.get(&ino) {
            n.lookups.fetch_add(1, Ordering::Relaxed);
            return (n.clone(), false);
        }
        if let Some(p) = g.get(&parent) {
            p.children.fetch_add(1, Ordering::Relaxed);
        }
        let node = Arc::new(Node {
            ino,
            kind,
            state: Mutex::new(state),
            lookups: AtomicU64::new(1),
            children: AtomicU32::new(0),
        });
        g.insert(ino, node.clone());
        (node, true)
    }

    /// Move `node` to (parent, name), now held as `name` in `dir` of `layer`,
    /// keeping the parents' child counts right.
    pub fn relocate(&self, node: &Node, parent: u64, name: OsString, layer: LayerIdx, dir: Arc<Held>) {
        let g = self.nodes.read();
        let mut s = node.state.lock();
        s.layer = layer;
        s.dir = dir;
        s.unlinked = false;
        s.pinned = None;
        if s.parent != parent {
            if let Some(p) = g.get(&parent) {
                p.children.fetch_add(1, Ordering::Relaxed);
            }
            let old = s.parent;
            s.parent = parent;
            s.name = name.as_os_str().into();
            drop(s);
            drop(g);
            if old != 0 {
                self.release_child(old);
            }
        } else {
            s.name = name.as_os_str().into();
        }
    }

    /// The node no longer has a name in the merged tree; `pin` keeps the object
    /// reachable while the kernel still uses it.
    pub fn detach(&self, node: &Node, pin: Option<Arc<Held>>) {
        let old = {
            let mut s = node.state.lock();
            s.unlinked = true;
            s.pinned = pin;
            std::mem::replace(&mut s.parent, 0)
        };
        if old != 0 {
            self.release_child(old);
        }
    }

    fn release_child(&self, parent: u64) {
        let mut g = self.nodes.write();
        let mut cur = parent;
        while let Some(n) = g.get(&cur).cloned() {
            if n.children.fetch_sub(1, Ordering::Relaxed) != 1 || n.lookups.load(Ordering::Relaxed) != 0 {
                break;
            }
            g.remove(&cur);
            cur = n.state.lock().parent;
            if cur == 0 {
                break;
            }
        }
    }

    /// Drop `count` kernel lookups; remove the node (and parents kept only by it)
    /// when nothing references it any more.
    pub fn forget(&self, ino: u64, count: u64) {
        if ino == ROOT_INO {
            return;
        }
        // Fast path: most forgets leave the node alive; only a drop to zero
        // needs the write lock (where the counts are checked again).
        {
            let g = self.nodes.read();
            let Some(n) = g.get(&ino) else { return };
            let prev = n.lookups.fetch_sub(count.min(n.lookups.load(Ordering::Relaxed)), Ordering::AcqRel);
            if prev > count || n.children.load(Ordering::Relaxed) != 0 {
                return;
            }
        }
        let mut g = self.nodes.write();
        let mut cur = ino;
        let mut first = true;
        loop {
            let Some(n) = g.get(&cur).cloned() else { break };
            if first {
                first = false;
                if n.lookups.load(Ordering::Relaxed) != 0 || n.children.load(Ordering::Relaxed) != 0 {
                    break;
                }
            } else if n.children.fetch_sub(1, Ordering::Relaxed) != 1 || n.lookups.load(Ordering::Relaxed) != 0 {
                break;
            }
            g.remove(&cur);
            let parent = n.state.lock().parent;
            if parent == 0 {
                break;
            }
            cur = parent;
        }
    }

    pub fn count(&self) -> usize {
        self.nodes.read().len()
    }

}
