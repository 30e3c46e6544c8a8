//! The fuser adapter: decode a request, call `UnionFs`, reply exactly once.
//!
//! No file-system logic lives here. What does: attribute conversion, TTLs, and
//! (in `io`) FUSE passthrough bookkeeping: per inode, either cached opens or
//! passthrough opens sharing one backing file, never both, as the kernel requires.

mod io;

pub use io::{Invalidator, Passthrough};

use crate::sys::fs::SetTime;
use crate::union::attr::SetAttr;
use crate::union::namespace::NewKind;
use crate::union::{Attr, Ctx, UnionFs};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct FuseFs {
    fs: Arc<UnionFs>,
    ttl: Duration,
    /// The kernel agreed to FUSE_NO_OPENDIR_SUPPORT.
    no_opendir: bool,
    io: io::Io,
}

impl FuseFs {
    pub fn new(fs: Arc<UnionFs>, ttl: Duration, passthrough: Passthrough) -> FuseFs {
        FuseFs { fs, ttl, no_opendir: false, io: io::Io::new(passthrough) }
    }

    /// What the mount code attaches the session's notifier to.
    pub fn invalidator(&self) -> Invalidator {
        self.io.invalidator()
    }
}

/// The entry of a negative lookup reply: inode 0, which the kernel caches as "absent".
const NEGATIVE: FileAttr = FileAttr {
    ino: INodeNo(0),
    size: 0,
    blocks: 0,
    atime: UNIX_EPOCH,
    mtime: UNIX_EPOCH,
    ctime: UNIX_EPOCH,
    crtime: UNIX_EPOCH,
    kind: FileType::RegularFile,
    perm: 0,
    nlink: 0,
    uid: 0,
    gid: 0,
    rdev: 0,
    blksize: 0,
    flags: 0,
};

fn err(e: crate::sys::Errno) -> Errno {
    Errno::from_i32(e.0)
}

fn systime((s, n): (i64, i64)) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, n as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + Duration::from_nanos(n as u64)
    }
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn to_attr(a: &Attr) -> FileAttr {
    let st = &a.st;
    FileAttr {
        ino: INodeNo(a.ino),
        size: st.size(),
        blocks: st.blocks(),
        atime: systime(st.atime()),
        mtime: systime(st.mtime()),
        ctime: systime(st.ctime()),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.mode()),
        perm: (st.mode() & 0o7777) as u16,
        nlink: st.nlink() as u32,
        uid: st.uid(),
        gid: st.gid(),
        rdev: st.rdev() as u32,
        blksize: st.blksize(),
        flags: 0,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => SetTime::At(d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (mut s, mut n) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i64));
                if n < 0 {
                    s -= 1;
                    n += 1_000_000_000;
                }
                SetTime::At(s, n)
            }
        },
    })
}

fn ctx(req: &Request) -> Ctx {
    Ctx { uid: req.uid(), gid: req.gid() }
}

impl FuseFs {
    /// Names of a multiply-linked file may stop sharing an inode when one of them
    /// is copied up (as in overlayfs): let the kernel recheck them soon.
    fn entry_ttl(&self, a: &Attr) -> Duration {
        if !a.st.is_dir() && a.st.nlink() > 1 { self.ttl.min(Duration::from_secs(1)) } else { self.ttl }
    }

    fn make(&self, req: &Request, parent: INodeNo, name: &OsStr, kind: NewKind<'_>, reply: ReplyEntry) {
        match self.fs.create(&ctx(req), parent.0, name, kind) {
            Ok((e, _)) => {
                reply.entry(&self.entry_ttl(&e.attr), &to_attr(&e.attr), Generation(0));
                e.into_kernel();
            }
            Err(e) => reply.error(err(e)),
        }
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO;
        let _ = config.add_capabilities(wanted & config.capabilities());
        if config.capabilities().contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT) {
            self.no_opendir = config.add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT).is_ok();
        }
        // Large reads for files the daemon serves (lower files in the page cache).
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        if self.io.mode() != Passthrough::Off {
            let ok = config.capabilities().contains(InitFlags::FUSE_PASSTHROUGH)
                && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !ok {
                log::info!("kernel offers no FUSE passthrough: file I/O goes through the daemon");
                self.io.disable_passthrough();
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&self.entry_ttl(&a), &to_attr(&a), Generation(0)),
            // A negative entry the kernel may cache for the same time.
            Err(crate::sys::Errno::ENOENT) => reply.entry(&self.ttl, &NEGATIVE, Generation(0)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0, _fh.map(|f| f.0)) {
            Ok(a) => reply.attr(&self.ttl, &to_attr(&a)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = SetAttr { mode, uid, gid, size, atime: set_time(atime), mtime: set_time(mtime), fh: fh.map(|f| f.0) };
        match self.fs.setattr(ino.0, &a) {
            Ok(a) => reply.attr(&self.ttl, &to_attr(&a)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str())),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let kind = NewKind::Node { mode: mode & !umask, rdev: rdev as u64 };
        self.make(req, parent, name, kind, reply);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.make(req, parent, name, NewKind::Dir { mode: mode & !umask & 0o7777 }, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.remove(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.remove(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        self.make(req, parent, link_name, NewKind::Symlink { target: target.as_os_str() }, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.fs.rename(parent.0, name, newparent.0, newname, flags.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        match self.fs.nodes.get(ino.0) {
            Some(node) => self.make(req, newparent, newname, NewKind::Link { node }, reply),
            None => reply.error(Errno::ESTALE),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (fh, h) = match self.fs.open(ino.0, flags.0) {
            Ok(x) => x,
            Err(e) => return reply.error(err(e)),
        };
        match self.io.choose(&self.fs, ino.0, fh, &h, |fd| reply.open_backing(fd)) {
            Ok(io::Chosen::Passthrough(b)) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
            Ok(io::Chosen::Cached) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Ok(io::Chosen::Stale { supersede }) => {
                self.fs.release(fh);
                if supersede {
                    self.io.supersede(&self.fs, ino.0);
                }
                reply.error(Errno::ESTALE);
            }
            Err(e) => {
                self.fs.release(fh);
                reply.error(err(e));
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(err(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }

    /// Nothing to do on close (no locks, write-through I/O): ENOSYS tells the
    /// kernel to stop sending FLUSH, which spares every close() a round trip.
    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        self.io.release(fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        match self.fs.fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    /// Directories need no handle (listing offsets carry their snapshot): where
    /// the kernel supports it, ENOSYS makes it stop sending OPENDIR/RELEASEDIR and
    /// cache listings by itself.
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir {
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.getattr(ino.0, None).and_then(|a| if a.st.is_dir() { Ok(0) } else { Err(crate::sys::Errno::ENOTDIR) }) {
            // Every change to a directory passes through the kernel, which then drops
            // its cached listing itself: let it keep listings across opens.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let page = match self.fs.readdir(ino.0, offset) {
            Ok(x) => x,
            Err(e) => return reply.error(err(e)),
        };
        for (i, e) in page.entries.iter().enumerate().skip(page.start) {
            if reply.add(INodeNo(e.ino), page.cookie(i), kind_of(e.kind), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    /// Entries with attributes: each one (but `.` and `..`, which the kernel does
    /// not link) counts as a lookup, taken back if it did not fit in the reply.
    fn readdirplus(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let page = match self.fs.readdir(ino.0, offset) {
            Ok(x) => x,
            Err(e) => return reply.error(err(e)),
        };
        for (i, e) in page.entries.iter().enumerate().skip(page.start) {
            let dot = e.name == "." || e.name == "..";
            // `.` and `..` take no lookup; other entries hold one until they are in the reply.
            let (attr, entry) = if dot {
                let Ok(a) = self.fs.getattr(e.ino, None) else { continue };
                (a, None)
            } else {
                let Ok(en) = self.fs.lookup_entry(ino.0, &e.name) else { continue };
                (en.attr, Some(en))
            };
            if reply.add(INodeNo(attr.ino), page.cookie(i), &e.name, &self.entry_ttl(&attr), &to_attr(&attr), Generation(0)) {
                break; // full: `entry` drops and gives its lookup back
            }
            if let Some(en) = entry {
                en.into_kernel();
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.fs.fsyncdir(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self.fs.setxattr(ino.0, name, value, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(err(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(err(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.removexattr(ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // default_permissions: the kernel checks; nothing to add.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let kind = NewKind::File { mode: mode & !umask & 0o7777, flags };
        let (entry, file) = match self.fs.create(&ctx(req), parent.0, name, kind) {
            Ok((e, Some(f))) => (e, f),
            Ok((_, None)) => return reply.error(Errno::EIO),
            Err(e) => return reply.error(err(e)),
        };
        let attr = entry.attr;
        let (fh, h) = self.fs.adopt(attr.ino, file, flags);
        match self.io.choose(&self.fs, attr.ino, fh, &h, |fd| reply.open_backing(fd)) {
            Ok(io::Chosen::Passthrough(b)) => {
                reply.created_passthrough(&self.ttl, &to_attr(&attr), Generation(0), FileHandle(fh), FopenFlags::empty(), &b);
                entry.into_kernel();
            }
            Ok(io::Chosen::Cached) => {
                reply.created(&self.ttl, &to_attr(&attr), Generation(0), FileHandle(fh), FopenFlags::empty());
                entry.into_kernel();
            }
            // A new file has no other backing file. The kernel gets no entry:
            // dropping `entry` gives its lookup back.
            Ok(io::Chosen::Stale { .. }) => {
                self.fs.release(fh);
                reply.error(Errno::EIO);
            }
            Err(e) => {
                self.fs.release(fh);
                reply.error(err(e));
            }
        }
    }

    fn fallocate(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, length: u64, mode: i32, reply: ReplyEmpty) {
        match self.fs.fallocate(fh.0, mode, offset, length) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn lseek(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: i64, whence: i32, reply: ReplyLseek) {
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(err(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self.fs.copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(err(e)),
        }
    }
}

fn xattr_reply(reply: ReplyXattr, v: &[u8], size: u32) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(v);
    }
}
