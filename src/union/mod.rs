//! The union file system: overlayfs semantics over a `LayerStack`, no FUSE types.
//!
//! Every operation takes inode numbers and names and returns `Result<_, Errno>`, so
//! the logic can be driven without a mount. `fuse` adapts it to fuser.
//!
//! Lookup walks the merged parent's directories top-down and stops at the first
//! entry, whiteout (char 0/0 or `.wh.NAME`) or opaque directory. The rules (which
//! names are markers, which layers read them, which xattrs are private) are
//! `crate::overlay`'s; this module applies them.
//!
//! Module map: `inode` (node table, inode numbers), `cache` (lookup LRU), `resolve`
//! (the layer walk), `readdir` (merge), `copyup`, `namespace` (create, unlink,
//! rename…), `attr` (setattr, xattrs), `file` (open handles and I/O).

pub mod attr;
pub mod cache;
pub mod copyup;
pub mod file;
mod held;
pub mod idmap;
pub mod inode;
pub mod listing;
pub mod namespace;
pub mod readdir;
pub mod reaper;
pub mod rename;
pub mod redirect;
pub mod resolve;
pub mod view;

use crate::layers::LayerStack;
use crate::overlay::{self, WhiteoutForm};
use crate::sys::fs::{self, Stat};
use crate::sys::{Errno, SysResult};
use cache::LookupCache;
use inode::{Held, NewNode, Node, NodeRef, NodeTable};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Tunables of a mount.
#[derive(Debug, Clone)]
pub struct Config {
    /// Lookup cache size in entries (0 disables).
    pub cache_entries: usize,
    /// fsync copy-ups and honour fsync requests (false with `volatile`/`fsync=0`).
    pub fsync: bool,
    /// On-disk ↔ presented ids (`uidmapping=`, `squash_to_*`); identity by default.
    pub ids: idmap::IdMapping,
    /// Rename a directory lower layers hold by writing a redirect xattr (as kernel
    /// overlayfs with `redirect_dir=on`); false (`redirect_dir=off`): copy its tree up.
    /// Redirects in layers are followed either way.
    pub redirect_dir: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config { cache_entries: 100_000, fsync: true, ids: idmap::IdMapping::default(), redirect_dir: true }
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
}

/// Attributes as the merged view shows them: the topmost object's stat with the
/// node's inode number (and nlink 1 for merged directories, as overlayfs does).
#[derive(Clone, Copy)]
pub struct Attr {
    pub ino: u64,
    pub st: Stat,
}

/// A looked-up entry: its attributes and the lookup it holds on its node, given
/// back when dropped unless handed to the kernel.
pub struct Entry<'a> {
    pub attr: Attr,
    node: NodeRef<'a>,
}

impl Entry<'_> {
    /// The kernel now holds the lookup (an entry reply carrying `attr` was sent).
    pub fn into_kernel(self) -> Attr {
        self.node.into_kernel();
        self.attr
    }
}

pub struct UnionFs {
    pub stack: LayerStack,
    pub nodes: NodeTable,
    cache: LookupCache,
    pub cfg: Config,
    pub(crate) handles: file::Handles,
    listings: listing::Listings,
    pub(crate) reaper: reaper::Reaper,
    tmp_seq: AtomicU64,
    /// Copy-ups in progress, one lock per inode (never held nested).
    copyups: copyup::InProgress,
}

impl UnionFs {
    pub fn new(stack: LayerStack, cfg: Config) -> SysResult<UnionFs> {
        let dirs = resolve::root_dirs(&stack, 0)?;
        let (layer, fd) = dirs.first().cloned().ok_or(Errno::EINVAL)?;
        let root = NewNode { parent: 0, name: OsStr::new("."), layer, dir: fd, dirs: Some(dirs.into()) };
        let devs = stack.layers.iter().map(|l| l.dev).collect();
        let reaper = match &stack.upper {
            Some(u) => reaper::Reaper::new(u.work.try_clone().map_err(Errno::from)?),
            None => reaper::Reaper::default(),
        };
        Ok(UnionFs {
            nodes: NodeTable::new(root, devs),
            cache: LookupCache::new(cfg.cache_entries),
            handles: file::Handles::default(),
            listings: Default::default(),
            reaper,
            stack,
            cfg,
            tmp_seq: AtomicU64::new(0),
            copyups: Default::default(),
        })
    }

    pub fn has_upper(&self) -> bool {
        self.stack.has_upper()
    }

    pub(crate) fn node(&self, ino: u64) -> SysResult<Arc<Node>> {
        self.nodes.get(ino).ok_or(Errno::ESTALE)
    }

    /// A fresh name for a temporary object in the work directory.
    pub(crate) fn tmp_name(&self) -> std::ffi::CString {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        std::ffi::CString::new(format!("#{:x}-{n:x}", std::process::id())).expect("no NUL")
    }

    /// Merged attributes of `node`.
    pub fn attr_of(&self, node: &Node) -> SysResult<Attr> {
        let st = node.stat()?;
        Ok(self.attr_from(node.ino, st, node.is_merged()))
    }

    /// Every attribute the union returns is made here: owners as the mount presents them.
    fn attr_from(&self, ino: u64, mut st: Stat, merged_dir: bool) -> Attr {
        st.0.st_ino = ino;
        if merged_dir {
            st.0.st_nlink = 1;
        }
        self.cfg.ids.present(&mut st);
        Attr { ino, st }
    }

    /// Attributes of `ino`; through open handle `fh` when given (the name may be gone).
    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> SysResult<Attr> {
        let node = self.node(ino)?;
        match fh.and_then(|fh| self.handles.get(fh)) {
            Some(h) if node.is_unlinked() => Ok(self.attr_from(ino, fs::fstat(h.fd().as_fd())?, false)),
            _ => self.attr_of(&node),
        }
    }

    /// Look `name` up in directory `parent` for the kernel: on success the kernel
    /// holds one lookup on the node (given back by its FORGET).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> SysResult<Attr> {
        self.lookup_entry(parent, name).map(Entry::into_kernel)
    }

    /// Look `name` up in directory `parent`; the lookup it holds is given back when
    /// the entry is dropped, unless it is handed to the kernel (`Entry::into_kernel`).
    pub fn lookup_entry(&self, parent: u64, name: &OsStr) -> SysResult<Entry<'_>> {
        let (node, st) = self.lookup_node_stat(parent, name)?;
        let attr = match st {
            Some(st) => self.attr_from(node.ino, st, node.is_merged()),
            None => self.attr_of(&node)?,
        };
        Ok(Entry { attr, node })
    }

    /// Resolve `name` in `parent` to a node, holding one lookup on it.
    pub(crate) fn lookup_node(&self, parent: u64, name: &OsStr) -> SysResult<NodeRef<'_>> {
        self.lookup_node_stat(parent, name).map(|(n, _)| n)
    }

    /// `lookup_node`, plus the stat the layer walk saw when it had to walk.
    fn lookup_node_stat(&self, parent: u64, name: &OsStr) -> SysResult<(NodeRef<'_>, Option<Stat>)> {
        if overlay::is_reserved_name(name.as_bytes()) {
            return Err(Errno::ENOENT);
        }
        match self.cache.get(parent, name) {
            Some(None) => return Err(Errno::ENOENT),
            Some(Some(ino)) => {
                // A node detached meanwhile (removed, superseded) is walked past, and
                // so is a file copied up through another of its lower hard links: this
                // name is still the lower file, another object now (the walk says which).
                if let Some(n) = self.nodes.get_and_ref(ino)
                    && !n.is_unlinked()
                    && (n.is_dir() || !self.stack.is_upper(n.layer()) || n.is_at(parent, name))
                {
                    return Ok((n, None));
                }
            }
            None => {}
        }
        let pnode = self.node(parent)?;
        if !pnode.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let cname = crate::sys::component(name)?;
        let generation = self.cache.begin();
        let dirs = pnode.dirs();
        match resolve::resolve(&self.stack, &dirs, &cname, name)? {
            resolve::Resolved::Missing | resolve::Resolved::Deleted(_) => {
                self.cache.put(parent, name, None, generation);
                Err(Errno::ENOENT)
            }
            resolve::Resolved::Found(f) => {
                let upper = self.stack.is_upper(f.layer);
                let mut ino = self.nodes.ino_for(f.layer, &f.st, upper);
                if !upper && !f.st.is_dir() && f.st.nlink() > 1 {
                    // A lower file with several names: once one name was copied up,
                    // that node is the upper copy; this name is another object now.
                    if self.nodes.get(ino).is_some_and(|n| self.stack.is_upper(n.layer())) {
                        ino = self.nodes.alias_ino(f.layer, &f.st, parent, name);
                    }
                }
                let kind = f.st.file_type();
                let (node, created) = self.nodes.get_or_insert(
                    ino,
                    || NewNode {
                        parent,
                        name,
                        layer: f.layer,
                        dir: f.dir.clone(),
                        dirs: if f.dirs.is_empty() { None } else { Some(f.dirs.clone().into()) },
                    },
                    kind,
                );
                if !created && !node.is_at(parent, name) {
                    self.nodes.relocate(&node, parent, name.to_os_string(), f.layer, f.dir.clone());
                }
                self.cache.put(parent, name, Some(ino), generation);
                Ok((node, Some(f.st)))
            }
        }
    }

    /// The kernel dropped `count` lookups of `ino`.
    pub fn forget(&self, ino: u64, count: u64) {
        self.nodes.forget(ino, count);
    }

    pub(crate) fn invalidate(&self, parent: u64, name: &OsStr) {
        self.cache.invalidate(parent, name);
    }

    pub fn readlink(&self, ino: u64) -> SysResult<std::ffi::OsString> {
        let node = self.node(ino)?;
        if node.kind != libc::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        node.readlink()
    }

    pub fn statfs(&self) -> SysResult<libc::statvfs> {
        let mut st = fs::fstatvfs(self.stack.layers[0].root.as_fd())?;
        // With `.wh.NAME` whiteouts, a deletable name leaves room for the prefix.
        if self.stack.upper.as_ref().is_some_and(|u| u.whiteout == WhiteoutForm::WhFile) {
            st.f_namemax = st.f_namemax.min(overlay::MARKABLE_NAME_MAX as u64);
        }
        Ok(st)
    }

    /// Number of live nodes (for tests and diagnostics).
    pub fn node_count(&self) -> usize {
        self.nodes.count()
    }

    /// The upper layer's directory fd for `node` (a directory already copied up).
    pub(crate) fn upper_dir_of(&self, node: &Node) -> SysResult<Arc<Held>> {
        match node.top_dir() {
            Some((l, fd)) if self.stack.is_upper(l) => Ok(fd),
            _ => Err(Errno::EIO),
        }
    }

    pub(crate) fn require_upper(&self) -> SysResult<&crate::layers::UpperExtra> {
        self.stack.upper.as_ref().ok_or(Errno::EROFS)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod redirect_tests;
