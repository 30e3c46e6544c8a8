//! Open files and directories: handles, I/O, fsync.
//!
//! A file handle owns a real fd on the topmost object at open time: opening for
//! write (or with O_TRUNC) copies up first, so writes only ever reach the upper
//! layer. A read-only handle opened on a lower file and served by this daemon moves
//! to the upper copy once the file is copied up (as overlayfs does), so every reader
//! sees the new data; one the kernel passes through keeps the lower file, and the
//! name moves to a new node (`supersede`, driven by `fuse::io`).
//! A handle keeps working after its name is unlinked or renamed. Directories need
//! no handles (see `listing`). The handle map is locked only to insert, find or
//! remove a handle.

use super::UnionFs;
use crate::layers::LayerIdx;
use crate::sys::fs;
use crate::sys::{Errno, SysResult};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Handle {
    pub ino: u64,
    pub flags: i32,
    /// Layer of the object opened.
    pub layer: LayerIdx,
    /// The real file; replaced by the upper copy after a copy-up.
    file: RwLock<(LayerIdx, Arc<OwnedFd>)>,
}

impl Handle {
    fn new(ino: u64, file: OwnedFd, flags: i32, layer: LayerIdx) -> Handle {
        Handle { ino, flags, layer, file: RwLock::new((layer, Arc::new(file))) }
    }
    pub fn writable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_RDONLY
    }
    /// The real file this handle does I/O on now.
    pub fn fd(&self) -> Arc<OwnedFd> {
        self.file.read().1.clone()
    }
}

#[derive(Default)]
pub struct Handles {
    files: RwLock<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl Handles {
    pub fn get(&self, fh: u64) -> Option<Arc<Handle>> {
        self.files.read().get(&fh).cloned()
    }

    fn insert(&self, h: Handle) -> (u64, Arc<Handle>) {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let h = Arc::new(h);
        self.files.write().insert(fh, h.clone());
        (fh, h)
    }
}

impl UnionFs {
    fn handle(&self, fh: u64) -> SysResult<Arc<Handle>> {
        self.handles.get(fh).ok_or(Errno::EBADF)
    }

    /// Open `ino` with open(2) `flags`; returns the handle id and the handle.
    pub fn open(&self, ino: u64, flags: i32) -> SysResult<(u64, Arc<Handle>)> {
        let node = self.node(ino)?;
        if node.is_dir() {
            return Err(Errno::EISDIR);
        }
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        if write || trunc {
            if !self.has_upper() {
                return Err(Errno::EROFS);
            }
            self.copy_up_opts(&node, !trunc)?;
        }
        let (layer, file) = node.open_real(flags)?;
        Ok(self.handles.insert(Handle::new(ino, file, flags, layer)))
    }

    /// Give the name of file `ino` (copied up) a new node for the same upper object,
    /// while `ino` lives on, detached with its object pinned, for what the kernel
    /// opened through it before: `fuse`'s passthrough bookkeeping needs this when the
    /// kernel's inode still passes through to the lower file (see `fuse::io`). The
    /// copy-up alias that lent the upper object `ino`'s number is dropped, so the next
    /// lookup of the name numbers the object by its own st_ino. Returns the name the
    /// kernel must forget; None when the node had no name any more.
    pub fn supersede(&self, ino: u64) -> SysResult<Option<(u64, std::ffi::OsString)>> {
        let node = self.node(ino)?;
        if node.is_dir() || !self.stack.is_upper(node.layer()) {
            return Err(Errno::EINVAL);
        }
        let (parent, name) = node.location();
        if parent == 0 {
            return Ok(None);
        }
        let (_, pin) = node.top()?;
        self.nodes.drop_origin(fs::fstat(pin.as_fd())?.ino());
        self.nodes.detach(&node, Some(pin));
        self.invalidate(parent, &name);
        Ok(Some((parent, name)))
    }

    /// Register a file `create` just opened.
    pub fn adopt(&self, ino: u64, file: OwnedFd, flags: i32) -> (u64, Arc<Handle>) {
        self.handles.insert(Handle::new(ino, file, flags, crate::layers::UPPER))
    }

    /// The fd a read on `h` should use: the upper copy once the file was copied up.
    fn read_fd(&self, h: &Handle) -> SysResult<Arc<OwnedFd>> {
        let (layer, fd) = h.file.read().clone();
        if !self.has_upper() || self.stack.is_upper(layer) {
            return Ok(fd);
        }
        let Some(node) = self.nodes.get(h.ino) else { return Ok(fd) };
        if !self.stack.is_upper(node.layer()) {
            return Ok(fd);
        }
        let (_, up) = node.open_real(libc::O_RDONLY)?;
        let up = Arc::new(up);
        *h.file.write() = (crate::layers::UPPER, up.clone());
        Ok(up)
    }

    pub fn read(&self, fh: u64, off: u64, size: u32) -> SysResult<Vec<u8>> {
        let h = self.handle(fh)?;
        let fd = self.read_fd(&h)?;
        let mut buf = vec![0u8; size as usize];
        let mut got = 0;
        while got < buf.len() {
            let n = fs::pread(fd.as_fd(), &mut buf[got..], off + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok(buf)
    }

    pub fn write(&self, fh: u64, off: u64, data: &[u8]) -> SysResult<u32> {
        let h = self.handle(fh)?;
        fs::write_all_at(h.fd().as_fd(), data, off)?;
        Ok(data.len() as u32)
    }

    pub fn release(&self, fh: u64) {
        self.handles.files.write().remove(&fh);
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> SysResult<()> {
        let h = self.handle(fh)?;
        if self.cfg.fsync { fs::fsync(h.fd().as_fd(), datasync) } else { Ok(()) }
    }

    pub fn fallocate(&self, fh: u64, mode: i32, off: u64, len: u64) -> SysResult<()> {
        let h = self.handle(fh)?;
        fs::fallocate(h.fd().as_fd(), mode, off, len)
    }

    pub fn lseek(&self, fh: u64, off: i64, whence: i32) -> SysResult<i64> {
        let h = self.handle(fh)?;
        fs::lseek(self.read_fd(&h)?.as_fd(), off, whence)
    }

    pub fn copy_file_range(&self, fh_in: u64, off_in: u64, fh_out: u64, off_out: u64, len: u64) -> SysResult<u32> {
        let (i, o) = (self.handle(fh_in)?, self.handle(fh_out)?);
        let n = fs::copy_file_range(self.read_fd(&i)?.as_fd(), off_in, o.fd().as_fd(), off_out, len.min(1 << 30) as usize)?;
        Ok(n as u32)
    }

    pub fn fsyncdir(&self, ino: u64) -> SysResult<()> {
        if !self.cfg.fsync {
            return Ok(());
        }
        let (layer, fd) = self.node(ino)?.top()?;
        if !self.stack.is_upper(layer) {
            return Ok(());
        }
        let d = fs::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
        fs::fsync(d.as_fd(), false)
    }
}
