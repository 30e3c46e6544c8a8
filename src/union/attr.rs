//! Attribute and xattr changes. Any change copies the object up first; reads of
//! xattrs come from the topmost object. Overlay-private xattrs are invisible:
//! reading one says ENODATA, listing skips them, setting or removing one is EPERM.
//! With an id mapping, new owners and the ids in POSIX ACL xattrs are translated to
//! on-disk ids before anything is copied up or written (`idmap`), and ACL ids are
//! translated back when read.

use super::idmap::is_acl_xattr;
use super::{Attr, UnionFs};
use crate::overlay::is_private_xattr;
use std::os::unix::ffi::OsStrExt;
use crate::sys::fs::{self, SetTime};
use crate::sys::{Errno, SysResult, xattr};
use std::ffi::OsStr;
use std::os::fd::AsFd;

/// What setattr changes; `None` leaves a field alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// Open handle the change came through (ftruncate), if any.
    pub fh: Option<u64>,
}

impl UnionFs {
    pub fn setattr(&self, ino: u64, a: &SetAttr) -> SysResult<Attr> {
        let node = self.node(ino)?;
        // New owners in on-disk ids, checked before anything changes: an id no range
        // covers cannot be stored (EINVAL, as chown(2) says for an id it cannot map).
        let ids = &self.cfg.ids;
        let uid = a.uid.map(|u| ids.uid_stored(u).ok_or(Errno::EINVAL)).transpose()?;
        let gid = a.gid.map(|g| ids.gid_stored(g).ok_or(Errno::EINVAL)).transpose()?;
        self.copy_up_opts(&node, a.size != Some(0))?;
        let (_, fd) = node.top()?;
        if let Some(size) = a.size {
            if node.is_dir() {
                return Err(Errno::EISDIR);
            }
            match a.fh.and_then(|fh| self.handles.get(fh)).filter(|h| h.writable()) {
                Some(h) => fs::ftruncate(h.fd().as_fd(), size)?,
                None => fs::ftruncate(fs::reopen(fd.as_fd(), libc::O_WRONLY)?.as_fd(), size)?,
            }
        }
        if uid.is_some() || gid.is_some() {
            fs::chown_fd(fd.as_fd(), uid, gid)?;
        }
        if let Some(mode) = a.mode
            && node.kind != libc::S_IFLNK {
                fs::chmod_fd(fd.as_fd(), mode)?;
            }
        if a.atime.is_some() || a.mtime.is_some() {
            fs::utimens_fd(fd.as_fd(), a.atime.unwrap_or(SetTime::Omit), a.mtime.unwrap_or(SetTime::Omit))?;
        }
        self.attr_of(&node)
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> SysResult<Vec<u8>> {
        if is_private_xattr(name.as_bytes()) {
            return Err(Errno::ENODATA);
        }
        let (_, fd) = self.node(ino)?.top()?;
        let value = xattr::get(xattr::Target::Fd(fd.as_fd()), name)?;
        if is_acl_xattr(name.as_bytes()) && !self.cfg.ids.writes_identity() {
            // Ids in ACL entries are shown as stat shows owners; a value that is not
            // an ACL cannot be translated (the layer holds a broken one).
            return self.cfg.ids.acl_shown(&value).map_err(|_| Errno::EIO);
        }
        Ok(value)
    }

    /// Xattr names as the NUL-terminated list listxattr(2) returns.
    pub fn listxattr(&self, ino: u64) -> SysResult<Vec<u8>> {
        let (_, fd) = self.node(ino)?.top()?;
        let mut out = Vec::new();
        for n in xattr::list(xattr::Target::Fd(fd.as_fd()))? {
            if !is_private_xattr(&n) {
                out.extend_from_slice(&n);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
        if is_private_xattr(name.as_bytes()) {
            return Err(Errno::EPERM);
        }
        let stored;
        let value = if is_acl_xattr(name.as_bytes()) && !self.cfg.ids.writes_identity() {
            // Checked before the copy-up: an entry no range covers cannot be stored.
            stored = self.cfg.ids.acl_stored(value).map_err(|_| Errno::EINVAL)?;
            &stored[..]
        } else {
            value
        };
        let node = self.node(ino)?;
        self.copy_up(&node)?;
        let (_, fd) = node.top()?;
        xattr::set(xattr::Target::Fd(fd.as_fd()), name, value, flags)
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> SysResult<()> {
        if is_private_xattr(name.as_bytes()) {
            return Err(Errno::EPERM);
        }
        let node = self.node(ino)?;
        // Nothing to copy up for an attribute that isn't there.
        let (_, fd) = node.top()?;
        xattr::get(xattr::Target::Fd(fd.as_fd()), name)?;
        self.copy_up(&node)?;
        let (_, fd) = node.top()?;
        xattr::remove(xattr::Target::Fd(fd.as_fd()), name)
    }
}
