//! Namespace changes: create, mkdir, mknod, symlink, link, unlink, rmdir, rename.
//!
//! New entries go into the upper layer. A name whited out in the upper layer is
//! replaced atomically (built in work, RENAME_EXCHANGE'd with the whiteout) and a
//! directory made over a whiteout is opaque. Removing a name that lower layers also
//! have leaves a whiteout (RENAME_WHITEOUT / exchange with a fresh whiteout, or a
//! `.wh.NAME` written before the upper entry goes). Upper directories are removed
//! by moving them into work first. Renaming lower directories works (no EXDEV): see
//! `rename`.
//! Each change invalidates exactly the lookup-cache keys it touches.

use super::inode::{Held, NewNode, Node};
use super::resolve::{self, Resolved};
use super::{Ctx, Entry, UnionFs};
use crate::layers::{UPPER, remove_tree_at};
use crate::overlay::{self, WhiteoutForm};
use crate::sys::fs;
use crate::sys::{Errno, SysResult};
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// State of a name in the upper directory before something is created there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Slot {
    Free,
    CharWhiteout,
    WhFile,
}

/// What to create.
pub enum NewKind<'a> {
    File { mode: u32, flags: i32 },
    Dir { mode: u32 },
    Node { mode: u32, rdev: u64 },
    Symlink { target: &'a OsStr },
    Link { node: Arc<Node> },
}

impl UnionFs {
    /// Checks common to every new name; returns the parent node and its C name.
    fn new_name(&self, parent: u64, name: &OsStr) -> SysResult<(Arc<Node>, CString)> {
        let cname = crate::sys::component(name)?;
        if overlay::is_reserved_name(name.as_bytes()) {
            // `.wh.` names would read as whiteouts in a later mount.
            return Err(Errno::EINVAL);
        }
        self.require_upper()?;
        let pnode = self.node(parent)?;
        if !pnode.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok((pnode, cname))
    }

    fn slot_of(&self, pdir: BorrowedFd<'_>, cname: &CStr, name: &OsStr) -> SysResult<Slot> {
        match fs::stat_at(pdir, cname) {
            Ok(st) if overlay::is_whiteout(&st) => Ok(Slot::CharWhiteout),
            Ok(_) => Err(Errno::EEXIST),
            Err(Errno::ENOENT) => {
                Ok(if resolve::wh_marker_exists(pdir, name) { Slot::WhFile } else { Slot::Free })
            }
            Err(e) => Err(e),
        }
    }

    /// Make the object in `dir/nm`; returns an open fd for files.
    fn make(&self, kind: &NewKind<'_>, dir: BorrowedFd<'_>, nm: &CStr) -> SysResult<Option<OwnedFd>> {
        match kind {
            NewKind::File { mode, flags } => {
                let fl = (flags & !(libc::O_TRUNC | libc::O_NOFOLLOW)) | libc::O_CREAT | libc::O_EXCL;
                Ok(Some(fs::open_at(dir, nm, fl, *mode)?))
            }
            NewKind::Dir { mode } => fs::mkdir_at(dir, nm, *mode).map(|_| None),
            NewKind::Node { mode, rdev } => fs::mknod_at(dir, nm, *mode, *rdev).map(|_| None),
            NewKind::Symlink { target } => {
                let t = CString::new(target.as_bytes()).map_err(|_| Errno::EINVAL)?;
                fs::symlink_at(&t, dir, nm).map(|_| None)
            }
            NewKind::Link { node } => {
                let (_, fd) = node.top()?;
                fs::link_fd(fd.as_fd(), dir, nm).map(|_| None)
            }
        }
    }

    /// The on-disk ids of a new object's owner: the caller's, mapped back. `None` when
    /// the daemon cannot give objects away (not root), so new objects stay its own.
    /// A caller no id range covers cannot own anything here: EOVERFLOW, as the kernel
    /// answers on an idmapped mount.
    fn owner_on_disk(&self, ctx: &Ctx) -> SysResult<Option<(u32, u32)>> {
        if crate::sys::euid() != 0 {
            return Ok(None);
        }
        let ids = &self.cfg.ids;
        match (ids.uid_stored(ctx.uid), ids.gid_stored(ctx.gid)) {
            (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
            _ => Err(Errno(libc::EOVERFLOW)),
        }
    }

    /// Give a new object its owner (on-disk ids), or the parent's group under setgid.
    fn set_owner(&self, fd: BorrowedFd<'_>, owner: Option<(u32, u32)>, pdir: BorrowedFd<'_>) -> SysResult<()> {
        let Some((uid, gid)) = owner else { return Ok(()) };
        let pst = fs::fstat(pdir)?;
        let gid = if pst.mode() & libc::S_ISGID != 0 { pst.gid() } else { gid };
        fs::chown_fd(fd, Some(uid), Some(gid))
    }

    /// Create `name` in `parent`. Returns its entry (holding one lookup, for the
    /// kernel) and, for files, the open fd.
    pub fn create(&self, ctx: &Ctx, parent: u64, name: &OsStr, kind: NewKind<'_>) -> SysResult<(Entry<'_>, Option<OwnedFd>)> {
        let (pnode, cname) = self.new_name(parent, name)?;
        if let Resolved::Found(_) = resolve::resolve(&self.stack, &pnode.dirs(), &cname, name)? {
            return Err(Errno::EEXIST);
        }
        let is_link = matches!(kind, NewKind::Link { .. });
        let owner = if is_link { None } else { self.owner_on_disk(ctx)? };
        if let NewKind::Link { node } = &kind {
            if node.is_dir() {
                return Err(Errno::EPERM);
            }
            self.copy_up(node)?;
        }
        self.copy_up(&pnode)?;
        let pdir = self.upper_dir_of(&pnode)?;
        let upper = self.require_upper()?;
        let work = upper.work.as_fd();
        let slot = self.slot_of(pdir.as_fd(), &cname, name)?;
        let opaque = matches!(kind, NewKind::Dir { .. }) && slot != Slot::Free;
        let open = match slot {
            Slot::CharWhiteout => {
                // Build in work with owner and opacity, then swap with the whiteout.
                let tmp = self.tmp_name();
                let open = self.make(&kind, work, &tmp)?;
                let r = (|| {
                    let fd = Held::new(fs::open_at(work, &tmp, libc::O_PATH, 0)?);
                    self.set_owner(fd.as_fd(), owner, pdir.as_fd())?;
                    if opaque {
                        self.set_opaque(&fd)?;
                    }
                    fs::rename_at(work, &tmp, pdir.as_fd(), &cname, libc::RENAME_EXCHANGE)
                })();
                let _ = remove_tree_at(work, &tmp);
                r?;
                open
            }
            Slot::Free | Slot::WhFile => {
                let open = self.make(&kind, pdir.as_fd(), &cname)?;
                let r = (|| {
                    let fd = Held::new(fs::open_at(pdir.as_fd(), &cname, libc::O_PATH, 0)?);
                    self.set_owner(fd.as_fd(), owner, pdir.as_fd())?;
                    if opaque {
                        self.set_opaque(&fd)?;
                    }
                    if slot == Slot::WhFile {
                        fs::unlink_at(pdir.as_fd(), &overlay::whiteout_marker(name.as_bytes())?, false)?;
                    }
                    Ok(())
                })();
                if let Err(e) = r {
                    let _ = remove_tree_at(pdir.as_fd(), &cname);
                    return Err(e);
                }
                open
            }
        };
        self.invalidate(parent, name);
        let fd = Held::new(fs::open_at(pdir.as_fd(), &cname, libc::O_PATH, 0)?);
        let st = fs::fstat(fd.as_fd())?;
        let node = match kind {
            NewKind::Link { node } => {
                let n = self.nodes.get_and_ref(node.ino).ok_or(Errno::ESTALE)?;
                if n.parent() == 0 {
                    self.nodes.relocate(&n, parent, name.to_os_string(), UPPER, pdir.clone());
                }
                n
            }
            _ => {
                let ino = self.nodes.ino_for(UPPER, &st, true);
                let dirs = st.is_dir().then(|| vec![(UPPER, fd.clone())].into());
                let new = NewNode { parent, name, layer: UPPER, dir: pdir.clone(), dirs };
                self.nodes.get_or_insert(ino, || new, st.file_type()).0
            }
        };
        let attr = self.attr_of(&node)?;
        Ok((Entry { attr, node }, open))
    }

    /// Remove `name` from `parent` (`dir`: rmdir semantics).
    pub fn remove(&self, parent: u64, name: &OsStr, dir: bool) -> SysResult<()> {
        self.require_upper()?;
        let pnode = self.node(parent)?;
        let node = self.lookup_node(parent, name)?;
        if dir && !node.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if !dir && node.is_dir() {
            return Err(Errno::EISDIR);
        }
        if dir && !self.dir_is_empty(node.ino)? {
            return Err(Errno::ENOTEMPTY);
        }
        let pin = if node.is_dir() { None } else { node.top().ok().map(|(_, fd)| fd) };
        self.remove_entry(&pnode, name)?;
        self.invalidate(parent, name);
        if node.is_at(parent, name) {
            self.nodes.detach(&node, pin);
        }
        Ok(())
    }

    /// Take `name` out of the merged directory `pnode`, leaving a whiteout if a
    /// lower layer has it.
    fn remove_entry(&self, pnode: &Arc<Node>, name: &OsStr) -> SysResult<()> {
        let cname = crate::sys::component(name)?;
        self.copy_up(pnode)?;
        let pdir = self.upper_dir_of(pnode)?;
        let upper = self.require_upper()?;
        let work = upper.work.as_fd();
        let need_wh = resolve::lower_has(&self.stack, &pnode.dirs(), &cname, name)?;
        let in_upper = match fs::stat_at(pdir.as_fd(), &cname) {
            Ok(st) if !overlay::is_whiteout(&st) => Some(st),
            _ => None,
        };
        match (in_upper, need_wh, upper.whiteout) {
            (Some(st), false, _) => {
                if st.is_dir() {
                    let tmp = self.tmp_name();
                    fs::rename_at(pdir.as_fd(), &cname, work, &tmp, 0)?;
                    self.reaper.reap(work, tmp);
                } else {
                    fs::unlink_at(pdir.as_fd(), &cname, false)?;
                }
                self.forget_upper(&st);
            }
            (Some(st), true, WhiteoutForm::CharDev) => {
                let tmp = self.tmp_name();
                fs::mknod_at(work, &tmp, libc::S_IFCHR, 0)?;
                if let Err(e) = fs::rename_at(work, &tmp, pdir.as_fd(), &cname, libc::RENAME_EXCHANGE) {
                    let _ = fs::unlink_at(work, &tmp, false);
                    return Err(e);
                }
                self.discard(work, tmp, st.is_dir());
                self.forget_upper(&st);
            }
            (Some(st), true, WhiteoutForm::WhFile) => {
                self.make_wh_file(&pdir, name)?;
                let tmp = self.tmp_name();
                fs::rename_at(pdir.as_fd(), &cname, work, &tmp, 0)?;
                self.discard(work, tmp, st.is_dir());
                self.forget_upper(&st);
            }
            (None, true, WhiteoutForm::CharDev) => fs::mknod_at(pdir.as_fd(), &cname, libc::S_IFCHR, 0)?,
            (None, true, WhiteoutForm::WhFile) => self.make_wh_file(&pdir, name)?,
            (None, false, _) => return Err(Errno::ENOENT),
        }
        Ok(())
    }

    /// Write a `.wh.NAME` whiteout into upper directory `dir`.
    pub(crate) fn make_wh_file(&self, dir: &Held, name: &OsStr) -> SysResult<()> {
        dir.note_marker_written();
        match fs::open_at(dir.as_fd(), &overlay::whiteout_marker(name.as_bytes())?, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600) {
            Ok(_) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Get rid of `work/tmp`, just moved there: a file now (an open one must show
    /// nlink 0 at once), a directory tree in the background.
    fn discard(&self, work: BorrowedFd<'_>, tmp: CString, is_dir: bool) {
        if is_dir {
            self.reaper.reap(work, tmp);
        } else {
            let _ = fs::unlink_at(work, &tmp, false);
        }
    }

    /// An upper object lost a name: if that was its last, its st_ino may be reused.
    fn forget_upper(&self, st: &fs::Stat) {
        if st.is_dir() || st.nlink() <= 1 {
            self.nodes.drop_origin(st.ino());
        }
    }
}
