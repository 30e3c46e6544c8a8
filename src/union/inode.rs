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
//!   a node being dropped. A lookup taken inside the daemon is a [`NodeRef`], given
//!   back when dropped; one handed to the kernel is given back by its FORGET.
//! - A node's state is private to this module and changes only through the named
//!   transitions: [`Node::copied_up`], [`Node::cut_lower_dirs`],
//!   [`NodeTable::relocate`], [`NodeTable::detach`]. Other modules read it through
//!   `Node`'s accessors, each of which locks it once, briefly: no lock is held across
//!   a system call that can block on I/O.
//! - Lock order: the table lock before a node's state lock before the
//!   `origins`/`overflow`/`aliases` maps (docs/ARCHITECTURE.md has the whole order).

pub use super::held::{DirLayer, Held};
pub use crate::layers::LayerIdx;
use crate::layers::UPPER;
use crate::sys::fs::{self, Stat};
use crate::sys::{Errno, SysResult};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const ROOT_INO: u64 = 1;
const LAYER_SHIFT: u32 = 48;
const INO_MASK: u64 = (1 << LAYER_SHIFT) - 1;

/// The mutable part of a node (private: see the module invariants).
#[derive(Debug)]
struct NodeState {
    /// Where the node sits in the merged tree: parent inode and name. `parent == 0`
    /// for the root and for nodes whose last name was removed.
    parent: u64,
    name: Name,
    /// Layer of the topmost real object.
    layer: LayerIdx,
    /// The directory (in `layer`) that holds the object as `name`. Non-directories
    /// are reached through it, so a file node costs no fd of its own.
    dir: Arc<Held>,
    /// Directories only: the directories merged here, top first; `dirs[0]` is an
    /// `O_PATH` fd on the topmost object. Ends at the first opaque directory.
    dirs: Option<Arc<[DirLayer]>>,
    /// The name was removed: `dir`/`name` may now hold something else.
    unlinked: bool,
    /// For a removed non-directory: an `O_PATH` fd taken before removal, so open
    /// files can still be stat'ed (fstat reaches us without a handle).
    pinned: Option<Arc<Held>>,
}

impl NodeState {
    fn cname(&self) -> SysResult<std::ffi::CString> {
        crate::sys::component(self.name.as_os_str())
    }

    fn dir_layers(&self) -> &[DirLayer] {
        self.dirs.as_deref().unwrap_or(&[])
    }
}

/// What a node starts as: where it sits and where its topmost object is.
pub struct NewNode<'a> {
    pub parent: u64,
    pub name: &'a OsStr,
    pub layer: LayerIdx,
    /// The directory (in `layer`) holding the object as `name`.
    pub dir: Arc<Held>,
    /// Directories only: the directories merged here, top first (non-empty).
    pub dirs: Option<Arc<[DirLayer]>>,
}

impl NewNode<'_> {
    fn into_state(self) -> NodeState {
        NodeState {
            parent: self.parent,
            name: self.name.into(),
            layer: self.layer,
            dir: self.dir,
            dirs: self.dirs,
            unlinked: false,
            pinned: None,
        }
    }
}

/// A file name stored inline when short (most are), so a node needs no extra
/// allocation for it.
#[derive(Debug, Clone)]
enum Name {
    Inline(u8, [u8; 22]),
    Heap(Box<[u8]>),
}

impl Name {
    fn as_os_str(&self) -> &OsStr {
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
    state: Mutex<NodeState>,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }

    /// Layer of the topmost real object.
    pub fn layer(&self) -> LayerIdx {
        self.state.lock().layer
    }

    /// (parent inode, name) in the merged tree; parent 0 once the name is gone.
    pub fn location(&self) -> (u64, OsString) {
        let s = self.state.lock();
        (s.parent, s.name.as_os_str().to_os_string())
    }

    /// The parent inode; 0 for the root and once the name is gone.
    pub fn parent(&self) -> u64 {
        self.state.lock().parent
    }

    /// Does the node sit at (parent, name)?
    pub fn is_at(&self, parent: u64, name: &OsStr) -> bool {
        let s = self.state.lock();
        s.parent == parent && s.name.as_os_str() == name
    }

    /// The name was removed (the object lives on while the kernel uses it).
    pub fn is_unlinked(&self) -> bool {
        self.state.lock().unlinked
    }

    /// The merged directories (shared; cloning is one reference count); empty for
    /// non-directories.
    pub fn dirs(&self) -> Arc<[DirLayer]> {
        self.state.lock().dirs.clone().unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// What a listing of this directory needs: its merged directories and its parent.
    pub fn listing_source(&self) -> (Arc<[DirLayer]>, u64) {
        let s = self.state.lock();
        (s.dirs.clone().unwrap_or_else(|| Arc::from(Vec::new())), s.parent)
    }

    /// A directory merging more than one layer's directory.
    pub fn is_merged(&self) -> bool {
        self.state.lock().dir_layers().len() > 1
    }

    /// A directory's topmost directory: (layer, fd).
    pub fn top_dir(&self) -> Option<(LayerIdx, Arc<Held>)> {
        self.state.lock().dir_layers().first().cloned()
    }

    /// Transition: the node's topmost object is now its copy in the upper layer,
    /// held as its name in `upper_parent`; a directory's copy (`upper_dir`) is now
    /// the top of the directories it merges.
    pub fn copied_up(&self, upper_parent: Arc<Held>, upper_dir: Option<Arc<Held>>) {
        let mut s = self.state.lock();
        s.layer = UPPER;
        s.dir = upper_parent;
        if let Some(d) = upper_dir {
            let mut dirs = vec![(UPPER, d)];
            dirs.extend(s.dir_layers().iter().cloned());
            s.dirs = Some(dirs.into());
        }
    }

    /// Transition: the directory no longer merges the directories below its top one
    /// (it was made self-contained and opaque).
    pub fn cut_lower_dirs(&self) {
        let mut s = self.state.lock();
        if let Some(top) = s.dir_layers().first().cloned() {
            s.dirs = Some(Arc::from(vec![top]));
        }
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
}

/// One lookup reference on a node, taken inside the daemon: dropping it gives the
/// reference back (drop = forget), unless it was handed to the kernel with
/// [`NodeRef::into_kernel`] (the kernel's FORGET gives it back then).
pub struct NodeRef<'a> {
    table: &'a NodeTable,
    node: Arc<Node>,
    to_kernel: bool,
}

impl<'a> NodeRef<'a> {
    fn new(table: &'a NodeTable, node: Arc<Node>) -> NodeRef<'a> {
        NodeRef { table, node, to_kernel: false }
    }

    /// The kernel now holds this lookup (an entry reply was sent for it).
    pub fn into_kernel(mut self) -> Arc<Node> {
        self.to_kernel = true;
        self.node.clone()
    }
}

impl std::ops::Deref for NodeRef<'_> {
    type Target = Arc<Node>;
    fn deref(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Drop for NodeRef<'_> {
    fn drop(&mut self) {
        if !self.to_kernel {
            self.table.forget(self.node.ino, 1);
        }
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
    pub fn new(root: NewNode, layer_devs: Vec<u64>) -> NodeTable {
        let root = Arc::new(Node {
            ino: ROOT_INO,
            kind: libc::S_IFDIR,
            state: Mutex::new(root.into_state()),
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

    /// The inode number for real object `st` found in `layer`; `upper`: that layer
    /// is the upper one (`LayerStack::is_upper`), where copied-up objects keep the
    /// number of their origin.
    pub fn ino_for(&self, layer: LayerIdx, st: &Stat, upper: bool) -> u64 {
        self.ino_for_raw(layer, st.dev(), st.ino(), upper)
    }

    /// Same as `ino_for`, from a raw (dev, ino) pair (readdir's d_ino; dev = layer's).
    pub fn ino_for_raw(&self, layer: LayerIdx, dev: u64, ino: u64, upper: bool) -> u64 {
        if upper && let Some(&i) = self.origins.lock().get(&ino) {
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

    /// Take one lookup on an existing node, if it is alive.
    pub fn get_and_ref(&self, ino: u64) -> Option<NodeRef<'_>> {
        let g = self.nodes.read();
        let n = g.get(&ino)?;
        n.lookups.fetch_add(1, Ordering::Relaxed);
        Some(NodeRef::new(self, n.clone()))
    }

    /// Find node `ino` or insert the one `make` describes; either way take one
    /// lookup. Returns the node and whether it was created.
    pub fn get_or_insert<'n>(&self, ino: u64, make: impl FnOnce() -> NewNode<'n>, kind: u32) -> (NodeRef<'_>, bool) {
        if let Some(n) = self.get_and_ref(ino) {
            return (n, false);
        }
        let state = make().into_state();
        let parent = state.parent;
        let mut g = self.nodes.write();
        if let Some(n) = g.get(&ino) {
            n.lookups.fetch_add(1, Ordering::Relaxed);
            return (NodeRef::new(self, n.clone()), false);
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
        (NodeRef::new(self, node), true)
    }

    /// Transition: `node` now sits at (parent, name), held as `name` in `dir` of
    /// `layer` (a rename, a link, a lookup finding it elsewhere), keeping the parents'
    /// child counts right.
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

    /// Transition: the node no longer has a name in the merged tree; `pin` keeps
    /// the object reachable while the kernel still uses it.
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

    /// Drop `count` lookups (the kernel's FORGET, or a `NodeRef` dropped); remove the
    /// node (and parents kept only by it) when nothing references it any more.
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
