//! How the kernel does I/O on each inode: FUSE passthrough bookkeeping.
//!
//! Per inode the kernel allows either cached opens (reads and writes go through its
//! page cache and this daemon) or passthrough opens (the kernel does the I/O on a
//! backing file, bypassing the daemon), never both, and all passthrough opens of an
//! inode share one backing file (fs/fuse/iomode.c: ETXTBSY and EBUSY otherwise, which
//! the opener sees as EIO). This module records, per inode, which it is and the
//! backing file in use, and settles every open against that before the kernel would
//! refuse it.
//!
//! Lower files are passed through as well (the default), so every mount of a layer
//! shares that layer's page cache. An inode whose open files pass through to a lower
//! file can then meet an open that needs the upper copy: a write open, an O_TRUNC open,
//! or any open after something else copied the file up. The kernel cannot change the
//! backing file of an inode with open files, so the name moves to a new inode instead
//! ([`UnionFs::supersede`]): this daemon drops the kernel's entry for the name
//! (FUSE_NOTIFY_INVAL_ENTRY, from a thread of its own) and answers the open with
//! ESTALE, which makes the VFS walk the path again with LOOKUP_REVAL (fs/namei.c,
//! `do_filp_open`; fs/fuse/dir.c revalidates every dentry with a LOOKUP then) and open
//! the new inode, whose backing file is the upper copy. Files opened before keep
//! reading the lower version, and the copy has an inode number of its own: the one
//! difference from overlayfs this costs (README, "Known differences").
//!
//! Invariants:
//! - A writable handle is never passed through to a lower file: the kernel opens the
//!   backing file anew with the opener's flags and this daemon's credentials, so a
//!   lower backing file would take the writes (what fuse-overlayfs 2.0 does).
//! - An inode never gets a second backing file while one is in use, passthrough
//!   while cached opens exist, or cached opens while passthrough ones exist.
//! - The state of an inode is settled under one lock, with the backing file registered
//!   before the lock is released, so concurrent opens of one inode agree.
//! - An inode's backing file is recorded exactly while passthrough handles of it are
//!   open (the kernel drops it from the inode at the last close), so a write open after
//!   every old handle closed meets no conflict. Backing files of lower files stay
//!   registered, unused, in a bounded LRU for the next open of the same file.

use crate::union::UnionFs;
use crate::union::file::Handle;
use fuser::{BackingId, INodeNo, Notifier};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, OnceLock, mpsc};

/// Which opened files go to the kernel as passthrough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passthrough {
    Off,
    /// Upper-layer files only: lower files are served through the page cache of each
    /// mount, and a read-only handle follows its file's copy-up.
    Upper,
    /// Upper-layer files, and lower files of at least [`AUTO_LOWER_MIN`] bytes.
    Auto,
    /// Every file: lower files share the page cache of their layer across mounts.
    /// The default.
    All,
}

/// Smallest lower file `Passthrough::Auto` passes through.
pub const AUTO_LOWER_MIN: u64 = 1 << 20;

/// The backing file an inode passes through to while `opens` handles use it.
struct Backing {
    /// (st_dev, st_ino) of the file.
    file: (u64, u64),
    lower: bool,
    opens: u32,
    id: Arc<BackingId>,
}

#[derive(Default)]
struct IoState {
    cached: u32,
    /// Present exactly while passthrough handles are open.
    backing: Option<Backing>,
}

/// What an open handle holds.
enum HandleIo {
    Cached,
    Passthrough,
}

/// Lower files whose backing files stay registered with the kernel after their last
/// close, so that opening them again costs no FUSE_DEV_IOC_BACKING_OPEN/CLOSE pair.
/// Only lower files (which are never deleted): an idle backing file keeps its file
/// open in the kernel, which for a deleted upper file would keep its space in use.
const IDLE_BACKING_FILES: usize = 16384;

/// How an open is to be answered.
pub enum Chosen {
    Cached,
    Passthrough(Arc<BackingId>),
    /// The inode passes through to another file than this handle's: answer ESTALE
    /// (the VFS retries the open once, after a fresh lookup). `supersede`: the stale
    /// one is the inode's lower backing file, so its name must move to a new inode
    /// first; otherwise the handle is the stale one (its file was copied up while it
    /// was being opened) and the retry finds the inode as it is now.
    Stale { supersede: bool },
}

pub struct Io {
    mode: Passthrough,
    inodes: Mutex<HashMap<u64, IoState>>,
    handles: Mutex<HashMap<u64, (u64, HandleIo)>>,
    /// Registered backing files of lower files no handle uses (a leaf lock).
    idle: Mutex<lru::LruCache<(u64, u64), Arc<BackingId>>>,
    inval: Invalidator,
}

impl Io {
    pub fn new(mode: Passthrough) -> Io {
        Io {
            mode,
            inodes: Mutex::default(),
            handles: Mutex::default(),
            idle: Mutex::new(crate::union::cache::growing_lru(
                std::num::NonZeroUsize::new(IDLE_BACKING_FILES).expect("nonzero"),
            )),
            inval: Invalidator::default(),
        }
    }

    pub fn mode(&self) -> Passthrough {
        self.mode
    }

    /// The kernel offers no passthrough: everything is cached.
    pub fn disable_passthrough(&mut self) {
        self.mode = Passthrough::Off;
    }

    pub fn invalidator(&self) -> Invalidator {
        self.inval.clone()
    }

    /// Decide how handle `fh` (of inode `ino`) does I/O, and record it unless the
    /// answer is `Stale`. `open` registers a backing file with the kernel.
    pub fn choose(
        &self,
        fs: &UnionFs,
        ino: u64,
        fh: u64,
        h: &Handle,
        open: impl Fn(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> Result<Chosen, crate::sys::Errno> {
        let lower = !fs.stack.is_upper(h.layer);
        if lower && h.writable() {
            // The union copies up before opening for write: never reached.
            log::error!("refusing a writable handle on a lower file (inode {ino})");
            return Err(crate::sys::Errno::EIO);
        }
        let fst = crate::sys::fs::fstat(h.fd().as_fd())?;
        let file = (fst.dev(), fst.ino());
        let wanted = match self.mode {
            Passthrough::Off => false,
            Passthrough::Upper => !lower,
            Passthrough::Auto => !lower || fst.size() >= AUTO_LOWER_MIN,
            Passthrough::All => true,
        };
        let mut inodes = self.inodes.lock();
        let st = inodes.entry(ino).or_default();
        let chosen = match &mut st.backing {
            Some(b) if b.file == file => {
                b.opens += 1;
                Chosen::Passthrough(b.id.clone())
            }
            Some(b) => return Ok(Chosen::Stale { supersede: b.lower && !lower }),
            None if wanted && st.cached == 0 => {
                let idle = if lower { self.idle.lock().pop(&file) } else { None };
                match idle.map(Ok).unwrap_or_else(|| open(h.fd().as_fd()).map(Arc::new)) {
                    Ok(id) => {
                        st.backing = Some(Backing { file, lower, opens: 1, id: id.clone() });
                        Chosen::Passthrough(id)
                    }
                    Err(e) => {
                        log::debug!("passthrough unavailable for inode {ino}: {e}");
                        st.cached += 1;
                        Chosen::Cached
                    }
                }
            }
            None => {
                st.cached += 1;
                Chosen::Cached
            }
        };
        drop(inodes);
        let how = match chosen {
            Chosen::Passthrough(_) => HandleIo::Passthrough,
            _ => HandleIo::Cached,
        };
        self.handles.lock().insert(fh, (ino, how));
        Ok(chosen)
    }

    /// Handle `fh` was released.
    pub fn release(&self, fh: u64) {
        let Some((ino, how)) = self.handles.lock().remove(&fh) else { return };
        let mut unused = None;
        {
            let mut inodes = self.inodes.lock();
            let Some(st) = inodes.get_mut(&ino) else { return };
            match how {
                HandleIo::Cached => st.cached = st.cached.saturating_sub(1),
                HandleIo::Passthrough => {
                    if let Some(b) = &mut st.backing {
                        b.opens -= 1;
                        if b.opens == 0 {
                            unused = st.backing.take();
                        }
                    }
                }
            }
            if st.cached == 0 && st.backing.is_none() {
                inodes.remove(&ino);
            }
        }
        // Outside the lock: dropping a backing id unregisters it (an ioctl).
        if let Some(b) = unused
            && b.lower
        {
            let evicted = self.idle.lock().push(b.file, b.id);
            drop(evicted);
        }
    }

    /// After [`Chosen::Stale`] with `supersede`: move the name of `ino` to a new
    /// inode and have the kernel forget its entry.
    pub fn supersede(&self, fs: &UnionFs, ino: u64) {
        match fs.supersede(ino) {
            Ok(Some((parent, name))) => self.inval.entry(parent, name),
            Ok(None) => {}
            Err(e) => log::warn!("cannot give inode {ino} a new node after its copy-up: {e}"),
        }
    }
}

/// Sends FUSE_NOTIFY_INVAL_ENTRY from a thread of its own: the kernel locks the
/// parent directory for it, so a request handler must not wait for it (a request
/// holding that lock may be queued behind the handler). Nothing depends on when it
/// lands: the ESTALE retry revalidates the entry anyway; it only spares other
/// processes a stale entry until then.
#[derive(Clone, Default)]
pub struct Invalidator(Arc<OnceLock<mpsc::Sender<(u64, OsString)>>>);

impl Invalidator {
    /// Start sending through `notifier` (once the session exists).
    pub fn attach(&self, notifier: Notifier) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel::<(u64, OsString)>();
        std::thread::Builder::new().name("inval".into()).spawn(move || {
            for (parent, name) in rx {
                if let Err(e) = notifier.inval_entry(INodeNo(parent), &name) {
                    // ENOENT: the kernel had no such entry cached.
                    log::debug!("inval_entry({parent}, {name:?}): {e}");
                }
            }
        })?;
        let _ = self.0.set(tx);
        Ok(())
    }

    fn entry(&self, parent: u64, name: OsString) {
        if let Some(tx) = self.0.get() {
            let _ = tx.send((parent, name));
        }
    }
}
