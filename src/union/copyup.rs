//! Copy-up: make a lower object an upper one before it is modified.
//!
//! Parents first; the copy is built in the work directory (content with holes kept,
//! owner, mode, xattrs but overlay-private ones, timestamps last), fsynced unless the
//! mount is volatile, and renamed into place with RENAME_NOREPLACE, so a crash
//! leaves either no upper object (the lower one still shows) or the whole new one.
//! Copy-ups of one node are serialised by a lock of that node alone, which exists
//! only while a copy-up of it is running (`InProgress`); it is never held while
//! taking another (parents are copied up before the child's lock is taken), and no
//! other lock is held while data is copied. The node keeps its inode number (`NodeTable::add_origin`).

use super::UnionFs;
use super::inode::Node;
use crate::overlay::{self, WhiteoutForm};
use crate::sys::fs::{self, SetTime, Stat};
use crate::sys::{Errno, SysResult, xattr};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use super::inode::Held;
use std::sync::Arc;

const CHUNK: usize = 1 << 30;

/// Per-inode locks for copy-ups in progress.
#[derive(Default)]
pub struct InProgress {
    map: parking_lot::Mutex<std::collections::HashMap<u64, Arc<parking_lot::Mutex<()>>>>,
}

/// Holds one inode's copy-up lock; drops the entry when nobody else waits.
pub struct CopyupGuard<'a> {
    owner: &'a InProgress,
    ino: u64,
    lock: Arc<parking_lot::Mutex<()>>,
    guard: Option<parking_lot::ArcMutexGuard<parking_lot::RawMutex, ()>>,
}

impl InProgress {
    pub fn lock(&self, ino: u64) -> CopyupGuard<'_> {
        let lock = self.map.lock().entry(ino).or_default().clone();
        let guard = Some(lock.lock_arc());
        CopyupGuard { owner: self, ino, lock, guard }
    }
}

impl Drop for CopyupGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.owner.map.lock();
        // The map's reference, ours and no waiter's: the entry can go.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.ino);
        }
    }
}

/// Copy `[0, size)` of `src` to `dst`, skipping holes.
pub fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    let mut off = 0u64;
    while off < size {
        let data = match fs::lseek(src, off as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            Err(Errno(libc::ENXIO)) => break,
            Err(_) => off, // no SEEK_DATA support: copy everything
        };
        let end = match fs::lseek(src, data as i64, libc::SEEK_HOLE) {
            Ok(h) => (h as u64).min(size),
            Err(_) => size,
        };
        copy_range(src, dst, data, end)?;
        off = end.max(data + 1);
    }
    fs::ftruncate(dst, size)
}

fn copy_range(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, mut from: u64, to: u64) -> SysResult<()> {
    while from < to {
        let want = ((to - from) as usize).min(CHUNK);
        match fs::copy_file_range(src, from, dst, from, want) {
            Ok(0) => return Ok(()),
            Ok(n) => from += n as u64,
            Err(Errno(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)) => {
                return copy_range_rw(src, dst, from, to);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn copy_range_rw(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, mut from: u64, to: u64) -> SysResult<()> {
    let mut buf = vec![0u8; 1 << 20];
    while from < to {
        let want = ((to - from) as usize).min(buf.len());
        let n = fs::pread(src, &mut buf[..want], from)?;
        if n == 0 {
            break;
        }
        fs::write_all_at(dst, &buf[..n], from)?;
        from += n as u64;
    }
    Ok(())
}

/// Copy xattrs except overlay-private ones; a `security.*`/`trusted.*` one that
/// cannot be set (no privilege, no support) is skipped, others fail the copy.
pub fn copy_xattrs(src: xattr::Target<'_>, dst: xattr::Target<'_>) -> SysResult<()> {
    use std::os::unix::ffi::OsStrExt;
    let names = match xattr::list(src) {
        Ok(n) => n,
        Err(Errno::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for n in names {
        let name = std::ffi::OsStr::from_bytes(&n);
        if overlay::is_private_xattr(&n) {
            continue;
        }
        let lenient = n.starts_with(b"security.") || n.starts_with(b"trusted.");
        let r = xattr::get(src, name).and_then(|v| xattr::set(dst, name, &v, 0));
        match r {
            Ok(()) => {}
            Err(Errno::ENODATA) => {}
            Err(_) if lenient => log::debug!("copy-up: skipped xattr {}", name.to_string_lossy()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Give a fresh object `dst` the owner, mode and times of `st` (chown first: it
/// clears set-id bits). `open`: `dst` is a really open file, not an `O_PATH` fd.
pub fn copy_meta(dst: BorrowedFd<'_>, st: &Stat, open: bool) -> SysResult<()> {
    match fs::chown_fd(dst, Some(st.uid()), Some(st.gid())) {
        Ok(()) => {}
        Err(Errno::EPERM | Errno::EINVAL) if crate::sys::euid() != 0 => {}
        Err(e) => return Err(e),
    }
    let (a, an) = st.atime();
    let (m, mn) = st.mtime();
    let (at, mt) = (SetTime::At(a, an), SetTime::At(m, mn));
    if open {
        fs::fchmod(dst, st.mode())?;
        return fs::futimens(dst, at, mt);
    }
    if !st.is_lnk() {
        fs::chmod_fd(dst, st.mode())?;
    }
    fs::utimens_fd(dst, at, mt)
}

/// The object copied: regular files are opened for reading (their fd serves
/// stat, xattrs and data), others are held as `O_PATH`.
enum Source {
    Open(OwnedFd),
    Held(Arc<Held>),
}

impl Source {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Source::Open(f) => f.as_fd(),
            Source::Held(h) => h.as_fd(),
        }
    }
    fn xattrs(&self) -> xattr::Target<'_> {
        match self {
            Source::Open(f) => xattr::Target::Open(f.as_fd()),
            Source::Held(h) => xattr::Target::Fd(h.as_fd()),
        }
    }
}

impl UnionFs {
    /// Copy `node` (and its parents) up, content included.
    pub fn copy_up(&self, node: &Arc<Node>) -> SysResult<()> {
        self.copy_up_opts(node, true)
    }

    /// Copy `node` up; with `data == false` a regular file is copied up empty
    /// (it is about to be truncated to zero).
    pub fn copy_up_opts(&self, node: &Arc<Node>, data: bool) -> SysResult<()> {
        let upper = self.require_upper()?;
        if self.stack.is_upper(node.layer()) {
            return Ok(());
        }
        let (parent, _) = node.location();
        if parent == 0 {
            return Err(Errno::ESTALE);
        }
        let pnode = self.node(parent)?;
        self.copy_up(&pnode)?;
        let _guard = self.copyups.lock(node.ino);
        let (layer, src) = if node.kind == libc::S_IFREG {
            node.open_real(libc::O_RDONLY).map(|(l, f)| (l, Source::Open(f)))?
        } else {
            node.top().map(|(l, h)| (l, Source::Held(h)))?
        };
        if self.stack.is_upper(layer) {
            return Ok(());
        }
        // A rename may have moved the node while we waited.
        let (parent2, name) = node.location();
        if parent2 != parent {
            drop(_guard);
            return self.copy_up_opts(node, data);
        }
        let pdir = self.upper_dir_of(&pnode)?;
        let cname = crate::sys::component(&name)?;
        let st = fs::fstat(src.fd())?;
        let work = upper.work.as_fd();
        let tmp = self.tmp_name();
        let made = self.build_copy(work, &tmp, &src, &st, data);
        let nfd = match made.and_then(|fd| fs::rename_at(work, &tmp, pdir.as_fd(), &cname, libc::RENAME_NOREPLACE).map(|_| fd)) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = crate::layers::remove_tree_at(work, &tmp);
                return Err(e);
            }
        };
        let nst = fs::fstat(nfd.as_fd())?;
        if st.is_dir() || st.nlink() <= 1 {
            self.nodes.add_origin(nst.ino(), node.ino);
        }
        node.copied_up(pdir, st.is_dir().then(|| Held::new(nfd)));
        Ok(())
    }

    /// Build the copy of `src` as `work/tmp`; returns an fd on it.
    fn build_copy(&self, work: BorrowedFd<'_>, tmp: &CStr, source: &Source, st: &Stat, data: bool) -> SysResult<OwnedFd> {
        let src = source.fd();
        match st.file_type() {
            libc::S_IFREG => {
                // Everything through the open fd: no path walks.
                let dst = fs::open_at(work, tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)?;
                if data && st.size() > 0 {
                    copy_data(src, dst.as_fd(), st.size())?;
                }
                copy_xattrs(source.xattrs(), xattr::Target::Open(dst.as_fd()))?;
                copy_meta(dst.as_fd(), st, true)?;
                if self.cfg.fsync {
                    fs::fsync(dst.as_fd(), false)?;
                }
                return Ok(dst);
            }
            libc::S_IFDIR => fs::mkdir_at(work, tmp, 0o700)?,
            libc::S_IFLNK => {
                let target = fs::readlink_fd(src)?;
                let t = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str()))
                    .map_err(|_| Errno::EINVAL)?;
                fs::symlink_at(&t, work, tmp)?;
            }
            _ => fs::mknod_at(work, tmp, st.mode(), st.rdev())?,
        }
        let fd = fs::open_at(work, tmp, libc::O_PATH, 0)?;
        copy_xattrs(source.xattrs(), xattr::Target::Fd(fd.as_fd()))?;
        copy_meta(fd.as_fd(), st, false)?;
        Ok(fd)
    }

    /// Make directory `node` self-contained in the upper layer: copy up everything
    /// below it, then mark it opaque, so it can move anywhere. Used by rename.
    pub fn detach_dir(&self, node: &Arc<Node>) -> SysResult<()> {
        self.copy_up(node)?;
        if !node.is_merged() {
            return Ok(());
        }
        let top = self.upper_dir_of(node)?;
        for e in self.list_dir(node.ino)?.into_iter().skip(2) {
            let child = self.lookup_node(node.ino, &e.name)?;
            if child.is_dir() {
                self.detach_dir(&child)?;
                continue;
            }
            self.copy_up(&child)?;
            // Names of one lower file share its node, whose copy went to one of them:
            // the others become links to that copy (as a copy of the tree keeps them).
            let cname = crate::sys::component(&e.name)?;
            if matches!(fs::stat_at(top.as_fd(), &cname), Err(Errno::ENOENT)) {
                let (_, copy) = child.top()?;
                fs::link_fd(copy.as_fd(), top.as_fd(), &cname)?;
            }
        }
        self.set_opaque(&top)?;
        node.cut_lower_dirs();
        Ok(())
    }

    /// Mark upper directory `dir` opaque in this mount's format.
    pub(crate) fn set_opaque(&self, dir: &Held) -> SysResult<()> {
        let upper = self.require_upper()?;
        if upper.whiteout == WhiteoutForm::WhFile {
            dir.note_marker_written();
        }
        match upper.whiteout {
            WhiteoutForm::CharDev => xattr::set(xattr::Target::Fd(dir.as_fd()), upper.opaque_xattr.as_ref(), b"y", 0),
            WhiteoutForm::WhFile => match fs::open_at(
                dir.as_fd(),
                overlay::OPAQUE_MARKER,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o600,
            ) {
                Ok(_) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }
}
