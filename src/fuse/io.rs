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

use crate::union::UnionFs;
use crate::union::file::Handle;
use fuser::{BackingId, INodeNo, Notifier};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, OnceLock, Weak, mpsc};

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

/// The backing file an inode passes through to: its identity and the id the kernel
/// knows it by (alive while an open handle holds it).
struct Backing {
    file: (u64, u64),
    lower: bool,
    id: Weak<BackingId>,
}

#[derive(Default)]
struct IoState {
    cached: u32,
    backing: Option<Backing>,
}

/// What an open handle holds.
enum HandleIo {
    Cached,
    Passthrough(Arc<BackingId>),
}

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
    inval: Invalidator,
}

impl Io {
    pub fn new(mode: Passthrough) -> Io {
        Io { mode, inodes: Mutex::default(), handles: Mutex::default(), inval: Invalidator::default() }
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
        let live = st.backing.as_ref().and_then(|b| b.id.upgrade().map(|id| (b.file, b.lower, id)));
        let chosen = match live {
            Some((f, _, id)) if f == file => HandleIo::Passthrough(id),
            Some((_, live_lower, _)) => return Ok(Chosen::Stale { supersede: live_lower && !lower }),
            None if wanted && st.cached == 0 => match open(h.fd().as_fd()) {
                Ok(id) => {
                    let id = Arc::new(id);
                    st.backing = Some(Backing { file, lower, id: Arc::downgrade(&id) });
                    HandleIo::Passthrough(id)
                }
                Err(e) => {
                    log::debug!("passthrough unavailable for inode {ino}: {e}");
                    st.cached += 1;
                    HandleIo::Cached
                }
            },
            None => {
                st.cached += 1;
                HandleIo::Cached
            }
        };
        drop(inodes);
        let answer = match &chosen {
            HandleIo::Passthrough(b) => Chosen::Passthrough(b.clone()),
            HandleIo::Cached => Chosen::Cached,
        };
        self.handles.lock().insert(fh, (ino, chosen));
        Ok(answer)
    }

    /// Handle `fh` was released.
    pub fn release(&self, fh: u64) {
        let Some((ino, how)) = self.handles.lock().remove(&fh) else { return };
        let mut inodes = self.inodes.lock();
        if let Some(st) = inodes.get_mut(&ino) {
            match how {
                HandleIo::Cached => st.cached = st.cached.saturating_sub(1),
                HandleIo::Passthrough(b) => drop(b),
            }
            if st.backing.as_ref().is_some_and(|b| b.id.strong_count() == 0) {
                st.backing = None;
            }
            if st.cached == 0 && st.backing.is_none() {
                inodes.remove(&ino);
            }
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
