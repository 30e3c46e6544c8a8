//! File system calls on fds: open, stat, create, link, rename, attributes, I/O.
//!
//! Objects are held as `O_PATH` fds; calls that need a real open file or have no
//! fd-based form go through `/proc/self/fd/N`, which names exactly the object the fd
//! holds (no path lookup in a layer happens there).

use super::{Errno, SysResult, cvt, cvt_size};
use std::ffi::{CStr, CString, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

/// File metadata (a `struct stat`).
#[derive(Clone, Copy)]
pub struct Stat(pub libc::stat);

impl Stat {
    pub fn mode(&self) -> u32 { self.0.st_mode }
    pub fn file_type(&self) -> u32 { self.0.st_mode & libc::S_IFMT }
    pub fn is_dir(&self) -> bool { self.file_type() == libc::S_IFDIR }
    pub fn is_reg(&self) -> bool { self.file_type() == libc::S_IFREG }
    pub fn is_lnk(&self) -> bool { self.file_type() == libc::S_IFLNK }
    pub fn ino(&self) -> u64 { self.0.st_ino }
    pub fn dev(&self) -> u64 { self.0.st_dev }
    pub fn nlink(&self) -> u64 { self.0.st_nlink }
    pub fn uid(&self) -> u32 { self.0.st_uid }
    pub fn gid(&self) -> u32 { self.0.st_gid }
    pub fn rdev(&self) -> u64 { self.0.st_rdev }
    pub fn size(&self) -> u64 { self.0.st_size as u64 }
    pub fn blocks(&self) -> u64 { self.0.st_blocks as u64 }
    pub fn blksize(&self) -> u32 { self.0.st_blksize as u32 }
    pub fn atime(&self) -> (i64, i64) { (self.0.st_atime, self.0.st_atime_nsec) }
    pub fn mtime(&self) -> (i64, i64) { (self.0.st_mtime, self.0.st_mtime_nsec) }
    pub fn ctime(&self) -> (i64, i64) { (self.0.st_ctime, self.0.st_ctime_nsec) }
}

fn own(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open-like call and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `/proc/self/fd/N` for `fd`.
pub fn proc_fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

/// Open one component below `dir` without following a symlink there.
pub fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: `name` is a valid C string and `dir` a live fd; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) };
    cvt(fd).map(own)
}

/// Open a path the user gave (a layer root, the mountpoint), following symlinks.
pub fn open_path(path: &Path, flags: i32) -> SysResult<OwnedFd> {
    let c = super::cpath(path)?;
    // SAFETY: `c` is a valid C string; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    cvt(fd).map(own)
}

/// Open the object an `O_PATH` fd holds for real I/O (`flags` without O_CREAT).
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> SysResult<OwnedFd> {
    let p = proc_fd_path(fd);
    let flags = (flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY)) | libc::O_CLOEXEC;
    // SAFETY: `p` is a valid C string; the result is checked.
    let nfd = unsafe { libc::open(p.as_ptr(), flags) };
    cvt(nfd).map(own)
}

/// stat of the object `fd` holds (works on `O_PATH` fds).
pub fn fstat(fd: BorrowedFd<'_>) -> SysResult<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: empty path with AT_EMPTY_PATH stats `fd` itself; `st` is written on success.
    let r = unsafe {
        libc::fstatat(fd.as_raw_fd(), c"".as_ptr(), st.as_mut_ptr(), libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
    };
    cvt(r)?;
    // SAFETY: fstatat succeeded, so `st` is initialised.
    Ok(Stat(unsafe { st.assume_init() }))
}

/// lstat of one component below `dir`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> SysResult<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid C string and fd; `st` is written on success.
    let r = unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    cvt(r)?;
    // SAFETY: fstatat succeeded, so `st` is initialised.
    Ok(Stat(unsafe { st.assume_init() }))
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: valid C string and fd.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub fn mknod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> SysResult<()> {
    // SAFETY: valid C string and fd.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) }).map(drop)
}

pub fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> SysResult<()> {
    // SAFETY: valid C strings and fd.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// The target of the symlink an `O_PATH|O_NOFOLLOW` fd holds.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> SysResult<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for its length; empty path reads the link `fd` holds.
    let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = cvt_size(n)?;
    buf.truncate(n);
    Ok(OsString::from_vec(buf))
}

/// A new hard link `newdir/newname` to the object `fd` holds.
pub fn link_fd(fd: BorrowedFd<'_>, newdir: BorrowedFd<'_>, newname: &CStr) -> SysResult<()> {
    let p = proc_fd_path(fd);
    // SAFETY: valid C strings and fds; AT_SYMLINK_FOLLOW resolves the /proc magic link
    // to the very object `fd` holds.
    cvt(unsafe {
        libc::linkat(libc::AT_FDCWD, p.as_ptr(), newdir.as_raw_fd(), newname.as_ptr(), libc::AT_SYMLINK_FOLLOW)
    })
    .map(drop)
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, rmdir: bool) -> SysResult<()> {
    let flags = if rmdir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid C string and fd.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn rename_at(olddir: BorrowedFd<'_>, old: &CStr, newdir: BorrowedFd<'_>, new: &CStr, flags: u32) -> SysResult<()> {
    // SAFETY: valid C strings and fds; renameat2 takes no pointers beyond them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            olddir.as_raw_fd(),
            old.as_ptr(),
            newdir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    };
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

/// chown of the object `fd` holds (never follows a symlink).
pub fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> SysResult<()> {
    let u = uid.unwrap_or(u32::MAX);
    let g = gid.unwrap_or(u32::MAX);
    // SAFETY: empty path + AT_EMPTY_PATH acts on `fd` itself; -1 leaves an id unchanged.
    cvt(unsafe {
        libc::fchownat(fd.as_raw_fd(), c"".as_ptr(), u, g, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
    })
    .map(drop)
}

/// chmod of the (non-symlink) object `fd` holds.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    let p = proc_fd_path(fd);
    // SAFETY: valid C string.
    cvt(unsafe { libc::chmod(p.as_ptr(), (mode & 0o7777) as libc::mode_t) }).map(drop)
}

/// fchmod of a really open file.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> SysResult<()> {
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), (mode & 0o7777) as libc::mode_t) }).map(drop)
}

/// A time to set: a value, "now", or leave as is.
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    Omit,
    Now,
    At(i64, i64),
}

fn timespec(t: SetTime) -> libc::timespec {
    match t {
        SetTime::Omit => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        SetTime::Now => libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
        SetTime::At(s, n) => libc::timespec { tv_sec: s, tv_nsec: n },
    }
}

/// Set atime/mtime of a really open file.
pub fn futimens(fd: BorrowedFd<'_>, atime: SetTime, mtime: SetTime) -> SysResult<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: a two-element timespec array on a live fd.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

/// Set atime/mtime of the object `fd` holds (through /proc).
pub fn utimens_fd(fd: BorrowedFd<'_>, atime: SetTime, mtime: SetTime) -> SysResult<()> {
    let ts = [timespec(atime), timespec(mtime)];
    let p = proc_fd_path(fd);
    // SAFETY: valid C string and a two-element timespec array.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), 0) }).map(drop)
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> SysResult<()> {
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) }).map(drop)
}

pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> SysResult<()> {
    // SAFETY: plain syscalls on a live fd.
    cvt(unsafe { if datasync { libc::fdatasync(fd.as_raw_fd()) } else { libc::fsync(fd.as_raw_fd()) } }).map(drop)
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> SysResult<usize> {
    // SAFETY: `buf` is writable for its length.
    cvt_size(unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t) })
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> SysResult<usize> {
    // SAFETY: `buf` is readable for its length.
    cvt_size(unsafe { libc::pwrite(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), off as libc::off_t) })
}

pub fn write_all_at(fd: BorrowedFd<'_>, mut buf: &[u8], mut off: u64) -> SysResult<()> {
    while !buf.is_empty() {
        let n = pwrite(fd, buf, off)?;
        if n == 0 {
            return Err(Errno::EIO);
        }
        buf = &buf[n..];
        off += n as u64;
    }
    Ok(())
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> SysResult<()> {
    // SAFETY: plain syscall on a live fd.
    cvt(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) }).map(drop)
}

pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> SysResult<i64> {
    // SAFETY: plain syscall on a live fd.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 { Err(Errno::last()) } else { Ok(r as i64) }
}

/// In-kernel copy (reflink where the file system can); returns bytes copied.
pub fn copy_file_range(src: BorrowedFd<'_>, soff: u64, dst: BorrowedFd<'_>, doff: u64, len: usize) -> SysResult<usize> {
    let mut so = soff as libc::loff_t;
    let mut d = doff as libc::loff_t;
    // SAFETY: offsets are valid pointers to local variables; fds are live.
    cvt_size(unsafe { libc::copy_file_range(src.as_raw_fd(), &mut so, dst.as_raw_fd(), &mut d, len, 0) })
}

/// statvfs of the file system holding `fd`.
pub fn fstatvfs(fd: BorrowedFd<'_>) -> SysResult<libc::statvfs> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `st` is written on success.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstatvfs succeeded.
    Ok(unsafe { st.assume_init() })
}

/// Raise RLIMIT_NOFILE as far as allowed (directory nodes hold fds): to
/// /proc/sys/fs/nr_open when privileged, else the soft limit to the hard one.
pub fn raise_nofile_limit() {
    let nr_open: libc::rlim_t = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `rl` is a valid rlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return;
        }
        let want = libc::rlimit { rlim_cur: nr_open.max(rl.rlim_max), rlim_max: nr_open.max(rl.rlim_max) };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}
