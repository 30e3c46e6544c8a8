//! Thin libc wrappers returning `Result<_, Errno>` so tests can compare outcomes
//! (including the errno) between two mounts, plus an `mv`-style rename that falls back
//! to copy + delete on EXDEV, and a `Transcript` of labelled results.

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type SysResult<T> = Result<T, Errno>;

const NAMES: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::EIO, "EIO"),
    (libc::ENXIO, "ENXIO"),
    (libc::E2BIG, "E2BIG"),
    (libc::EBADF, "EBADF"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::EXDEV, "EXDEV"),
    (libc::ENODEV, "ENODEV"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENFILE, "ENFILE"),
    (libc::EMFILE, "EMFILE"),
    (libc::ETXTBSY, "ETXTBSY"),
    (libc::EFBIG, "EFBIG"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::ESPIPE, "ESPIPE"),
    (libc::EROFS, "EROFS"),
    (libc::EMLINK, "EMLINK"),
    (libc::EPIPE, "EPIPE"),
    (libc::ERANGE, "ERANGE"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ELOOP, "ELOOP"),
    (libc::ENODATA, "ENODATA"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::ESTALE, "ESTALE"),
    (libc::EOVERFLOW, "EOVERFLOW"),
    (libc::ENOTCONN, "ENOTCONN"),
    (libc::ECONNABORTED, "ECONNABORTED"),
    (libc::EPROTO, "EPROTO"),
];

impl Errno {
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
    pub fn name(self) -> String {
        NAMES
            .iter()
            .find(|(n, _)| *n == self.0)
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| format!("errno {}", self.0))
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL")
}

fn check(r: i32) -> SysResult<()> {
    if r < 0 { Err(Errno::last()) } else { Ok(()) }
}

fn checkl(r: isize) -> SysResult<usize> {
    if r < 0 { Err(Errno::last()) } else { Ok(r as usize) }
}

pub fn lstat(p: &Path) -> SysResult<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::lstat(cpath(p).as_ptr(), &mut st) })?;
    Ok(st)
}

pub fn stat(p: &Path) -> SysResult<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::stat(cpath(p).as_ptr(), &mut st) })?;
    Ok(st)
}

pub fn fstat(fd: &OwnedFd) -> SysResult<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn open(p: &Path, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let fd = unsafe { libc::open(cpath(p).as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(Errno::last());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn write_all(fd: &OwnedFd, mut data: &[u8]) -> SysResult<()> {
    while !data.is_empty() {
        let n = checkl(unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) })?;
        data = &data[n..];
    }
    Ok(())
}

pub fn pwrite(fd: &OwnedFd, data: &[u8], off: i64) -> SysResult<usize> {
    checkl(unsafe { libc::pwrite(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), off) })
}

pub fn read_fd(fd: &OwnedFd) -> SysResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = checkl(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

pub fn pread_all(fd: &OwnedFd) -> SysResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let off = out.len() as i64;
        let n =
            checkl(unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off) })?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// open + read everything + close.
pub fn read_file(p: &Path) -> SysResult<Vec<u8>> {
    let fd = open(p, libc::O_RDONLY, 0)?;
    read_fd(&fd)
}

/// open(flags) + write + close; an error from close (e.g. a failed flush) is reported.
pub fn write_file(p: &Path, flags: i32, data: &[u8]) -> SysResult<()> {
    let fd = open(p, libc::O_WRONLY | flags, 0o644)?;
    write_all(&fd, data)?;
    close(fd)
}

/// close(2) with its result (dropping an OwnedFd ignores it).
pub fn close(fd: OwnedFd) -> SysResult<()> {
    use std::os::fd::IntoRawFd;
    check(unsafe { libc::close(fd.into_raw_fd()) })
}

pub fn fsync(fd: &OwnedFd) -> SysResult<()> {
    check(unsafe { libc::fsync(fd.as_raw_fd()) })
}

pub fn ftruncate(fd: &OwnedFd, len: i64) -> SysResult<()> {
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len) })
}

pub fn truncate(p: &Path, len: i64) -> SysResult<()> {
    check(unsafe { libc::truncate(cpath(p).as_ptr(), len) })
}

pub fn fallocate(fd: &OwnedFd, mode: i32, off: i64, len: i64) -> SysResult<()> {
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off, len) })
}

pub fn mkdir(p: &Path, mode: u32) -> SysResult<()> {
    check(unsafe { libc::mkdir(cpath(p).as_ptr(), mode) })
}

pub fn rmdir(p: &Path) -> SysResult<()> {
    check(unsafe { libc::rmdir(cpath(p).as_ptr()) })
}

pub fn unlink(p: &Path) -> SysResult<()> {
    check(unsafe { libc::unlink(cpath(p).as_ptr()) })
}

pub fn symlink(target: &Path, p: &Path) -> SysResult<()> {
    check(unsafe { libc::symlink(cpath(target).as_ptr(), cpath(p).as_ptr()) })
}

pub fn readlink(p: &Path) -> SysResult<PathBuf> {
    std::fs::read_link(p).map_err(|e| Errno(e.raw_os_error().unwrap_or(0)))
}

pub fn link(old: &Path, new: &Path) -> SysResult<()> {
    check(unsafe { libc::link(cpath(old).as_ptr(), cpath(new).as_ptr()) })
}

pub fn rename2(old: &Path, new: &Path, flags: u32) -> SysResult<()> {
    check(unsafe {
        libc::renameat2(libc::AT_FDCWD, cpath(old).as_ptr(), libc::AT_FDCWD, cpath(new).as_ptr(), flags)
    })
}

pub fn mknod(p: &Path, mode: u32, dev: u64) -> SysResult<()> {
    check(unsafe { libc::mknod(cpath(p).as_ptr(), mode, dev) })
}

pub fn chmod(p: &Path, mode: u32) -> SysResult<()> {
    check(unsafe { libc::chmod(cpath(p).as_ptr(), mode) })
}

pub fn lchown(p: &Path, uid: u32, gid: u32) -> SysResult<()> {
    check(unsafe { libc::lchown(cpath(p).as_ptr(), uid, gid) })
}

/// Set atime and mtime (seconds, nanoseconds) without following a final symlink.
pub fn utimens(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> SysResult<()> {
    let ts = [
        libc::timespec { tv_sec: atime.0, tv_nsec: atime.1 },
        libc::timespec { tv_sec: mtime.0, tv_nsec: mtime.1 },
    ];
    check(unsafe {
        libc::utimensat(libc::AT_FDCWD, cpath(p).as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    })
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> SysResult<()> {
    let n = CString::new(name).unwrap();
    check(unsafe {
        libc::lsetxattr(cpath(p).as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), flags)
    })
}

pub fn lgetxattr(p: &Path, name: &str) -> SysResult<Vec<u8>> {
    let n = CString::new(name).unwrap();
    let c = cpath(p);
    let size = checkl(unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) })?;
    let mut buf = vec![0u8; size + 64];
    let got = checkl(unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(got);
    Ok(buf)
}

/// All xattr names of a path (not following symlinks), sorted.
pub fn llistxattr(p: &Path) -> SysResult<Vec<String>> {
    let c = cpath(p);
    let size = checkl(unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) })?;
    let mut buf = vec![0u8; size + 256];
    let got = checkl(unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(got);
    let mut names: Vec<String> = buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

pub fn lremovexattr(p: &Path, name: &str) -> SysResult<()> {
    let n = CString::new(name).unwrap();
    check(unsafe { libc::lremovexattr(cpath(p).as_ptr(), n.as_ptr()) })
}

pub fn statfs(p: &Path) -> SysResult<libc::statfs> {
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::statfs(cpath(p).as_ptr(), &mut s) })?;
    Ok(s)
}

/// Write `data` at `off` through a MAP_SHARED mapping of the whole file, then msync.
pub fn mmap_write(p: &Path, off: usize, data: &[u8]) -> SysResult<()> {
    let fd = open(p, libc::O_RDWR, 0)?;
    let len = fstat(&fd)?.st_size as usize;
    if off + data.len() > len || len == 0 {
        return Err(Errno(libc::EINVAL));
    }
    unsafe {
        let m = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0);
        if m == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), (m as *mut u8).add(off), data.len());
        let r = libc::msync(m, len, libc::MS_SYNC);
        let e = Errno::last();
        libc::munmap(m, len);
        if r < 0 {
            return Err(e);
        }
    }
    Ok(())
}

/// One raw directory entry: name, d_ino, d_type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEnt {
    pub name: Vec<u8>,
    pub ino: u64,
    pub dtype: u8,
}

/// readdir(3) including `.` and `..`, in the order the filesystem returns them.
pub fn read_dir_raw(p: &Path) -> SysResult<Vec<DirEnt>> {
    let c = cpath(p);
    let dir = unsafe { libc::opendir(c.as_ptr()) };
    if dir.is_null() {
        return Err(Errno::last());
    }
    let mut out = Vec::new();
    loop {
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(dir) };
        if ent.is_null() {
            let e = unsafe { *libc::__errno_location() };
            unsafe { libc::closedir(dir) };
            return if e != 0 { Err(Errno(e)) } else { Ok(out) };
        }
        let ent = unsafe { &*ent };
        let name = unsafe { std::ffi::CStr::from_ptr(ent.d_name.as_ptr()) }.to_bytes().to_vec();
        out.push(DirEnt { name, ino: ent.d_ino, dtype: ent.d_type });
    }
}

/// Sorted names in a directory, without `.` and `..`.
pub fn list_names(p: &Path) -> SysResult<Vec<String>> {
    let mut v: Vec<String> = read_dir_raw(p)?
        .into_iter()
        .filter(|e| e.name != b"." && e.name != b"..")
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    v.sort();
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// mv(1)-style rename: what a user-space tool does when the kernel says EXDEV.

/// rename with `flags`; on EXDEV do what `mv` does: copy the source tree to the target,
/// then delete the source. Returns whether the fallback was used.
pub fn mv(src: &Path, dst: &Path, flags: u32) -> SysResult<bool> {
    match rename2(src, dst, flags) {
        Err(Errno(libc::EXDEV)) => mv_fallback(src, dst, flags).map(|_| true),
        r => r.map(|_| false),
    }
}

fn mv_fallback(src: &Path, dst: &Path, flags: u32) -> SysResult<()> {
    let s = lstat(src)?;
    let d = lstat(dst).ok();
    if flags & libc::RENAME_EXCHANGE != 0 {
        if d.is_none() {
            return Err(Errno(libc::ENOENT));
        }
        let mut tmp = src.as_os_str().to_owned();
        tmp.push(".mv-exchange-tmp");
        let tmp = PathBuf::from(tmp);
        copy_tree(src, &tmp)?;
        remove_tree(src)?;
        mv(dst, src, 0)?;
        return mv(&tmp, dst, 0).map(|_| ());
    }
    if let Some(d) = d {
        if flags & libc::RENAME_NOREPLACE != 0 {
            return Err(Errno(libc::EEXIST));
        }
        match (is_dir(&s), is_dir(&d)) {
            (true, false) => return Err(Errno(libc::ENOTDIR)),
            (false, true) => return Err(Errno(libc::EISDIR)),
            (true, true) => rmdir(dst)?,
            (false, false) => unlink(dst)?,
        }
    }
    copy_tree(src, dst)?;
    remove_tree(src)
}

/// Copy a tree like `cp -a` does: type, content, mode, owner, xattrs, mtime.
pub fn copy_tree(src: &Path, dst: &Path) -> SysResult<()> {
    let st = lstat(src)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            mkdir(dst, 0o700)?;
            for name in list_names(src)? {
                copy_tree(&src.join(&name), &dst.join(&name))?;
            }
        }
        libc::S_IFREG => {
            let data = read_file(src)?;
            write_file(dst, libc::O_CREAT | libc::O_EXCL, &data)?;
        }
        libc::S_IFLNK => symlink(&readlink(src)?, dst)?,
        _ => mknod(dst, st.st_mode, st.st_rdev)?,
    }
    lchown(dst, st.st_uid, st.st_gid)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        chmod(dst, st.st_mode & 0o7777)?;
    }
    for name in llistxattr(src)? {
        let v = lgetxattr(src, &name)?;
        lsetxattr(dst, &name, &v, 0)?;
    }
    utimens(dst, (st.st_atime, st.st_atime_nsec), (st.st_mtime, st.st_mtime_nsec))
}

pub fn remove_tree(p: &Path) -> SysResult<()> {
    let st = lstat(p)?;
    if is_dir(&st) {
        for name in list_names(p)? {
            remove_tree(&p.join(name))?;
        }
        rmdir(p)
    } else {
        unlink(p)
    }
}

// ---------------------------------------------------------------------------------------

/// Labelled results of a scenario, compared line by line between two mounts.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Transcript(pub Vec<String>);

impl Transcript {
    /// Record `label: Ok(value)` or `label: Err(ERRNO)`.
    pub fn rec<T: fmt::Debug>(&mut self, label: &str, r: SysResult<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.0.push(format!("{label}: Ok({v:?})"));
                Some(v)
            }
            Err(e) => {
                self.0.push(format!("{label}: Err({e})"));
                None
            }
        }
    }
    /// Record an open's outcome without the fd number (which differs between mounts).
    pub fn rec_open(&mut self, label: &str, r: SysResult<OwnedFd>) -> Option<OwnedFd> {
        self.rec(label, r.as_ref().map(|_| "fd").map_err(|e| *e));
        r.ok()
    }
    /// Record a plain fact.
    pub fn note(&mut self, line: impl Into<String>) {
        self.0.push(line.into());
    }
}

/// Report of two transcripts aligned by a longest-common-subsequence diff (a missing or
/// extra line does not shift the rest), marking differing lines; None when equal.
pub fn diff_transcripts(a_label: &str, a: &Transcript, b_label: &str, b: &Transcript) -> Option<String> {
    if a == b {
        return None;
    }
    let (x, y) = (&a.0, &b.0);
    let (n, m) = (x.len(), y.len());
    // lcs[i][j] = LCS length of x[i..] and y[j..]
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if x[i] == y[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && x[i] == y[j] {
            out.push_str(&format!("    {}\n", x[i]));
            i += 1;
            j += 1;
        } else if j >= m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("  ! {a_label}: {}\n", x[i]));
            i += 1;
        } else {
            out.push_str(&format!("  ! {b_label}: {}\n", y[j]));
            j += 1;
        }
    }
    Some(out)
}

/// "type mode uid:gid size=N nlink=N" of a path (no inode numbers, no times), for
/// transcripts.
pub fn describe(p: &Path) -> SysResult<String> {
    let st = lstat(p)?;
    let t = match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => "dir",
        libc::S_IFREG => "file",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "chardev",
        libc::S_IFBLK => "blockdev",
        _ => "?",
    };
    let mut s = format!("{t} {:04o} {}:{}", st.st_mode & 0o7777, st.st_uid, st.st_gid);
    if t == "file" {
        s.push_str(&format!(" size={} nlink={}", st.st_size, st.st_nlink));
    }
    if t == "chardev" || t == "blockdev" {
        s.push_str(&format!(" rdev={},{}", libc::major(st.st_rdev), libc::minor(st.st_rdev)));
    }
    Ok(s)
}

/// File content as a (lossy) string, for transcripts.
pub fn cat(p: &Path) -> SysResult<String> {
    read_file(p).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// All names of a directory read with getdents64 into a `bufsize`-byte buffer, so that a
/// large directory takes many calls (each continuing from the previous offset).
pub fn getdents_names(p: &Path, bufsize: usize) -> SysResult<Vec<Vec<u8>>> {
    let fd = open(p, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut buf = vec![0u8; bufsize];
    let mut names = Vec::new();
    loop {
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(Errno::last());
        }
        if n == 0 {
            return Ok(names);
        }
        let mut off = 0usize;
        while off < n as usize {
            // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            names.push(name[..end].to_vec());
            off += reclen;
        }
    }
}

/// Run `op` in a forked child whose real, effective and saved uid/gid are `uid`/`gid` (no
/// supplementary groups); returns what `op` returned (0 or an errno). `op` must only make
/// raw syscalls: it runs after fork in a multi-threaded process.
pub fn as_user(uid: u32, gid: u32, op: impl Fn() -> i32) -> SysResult<()> {
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid == 0 {
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                libc::_exit(255);
            }
            libc::_exit(op());
        }
    }
    let mut status = 0;
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let code = libc::WEXITSTATUS(status);
    if code == 0 { Ok(()) } else { Err(Errno(code)) }
}
