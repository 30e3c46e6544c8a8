//! Extended attributes of objects held as `O_PATH` fds.
//!
//! Every object, symlinks included, is reached through `/proc/self/fd/N`: the magic
//! link lands on exactly the object the fd holds and is not followed further. The one
//! exception is listing a directory's names (every merged directory lookup does it):
//! `listxattrat(fd, ".", AT_SYMLINK_NOFOLLOW)` (Linux 6.13) names the directory the
//! fd holds without the walk through /proc, which costs a new /proc dentry each
//! time; any failure of it (older kernel, seccomp, not a directory, no search
//! permission) falls back to the /proc path, whose answer is authoritative.

use super::{Errno, SysResult, cvt, cvt_size, fs::proc_fd_path};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// `listxattrat(2)`'s number (Linux 6.13) where the architecture uses the unified
/// numbers of new system calls (the libc crate does not name it for these yet);
/// elsewhere none, and listing goes through /proc.
const SYS_LISTXATTRAT: Option<libc::c_long> = if cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64",
    target_arch = "loongarch64",
    target_arch = "powerpc64",
    target_arch = "s390x"
)) {
    Some(465)
} else {
    None
};

/// Cleared once the kernel answered `ENOSYS` (or a filter `EPERM`) to `listxattrat`.
static LISTXATTRAT: AtomicBool = AtomicBool::new(true);

/// Which object to act on.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// The object an fd (`O_PATH` or not) holds, reached through /proc.
    Fd(BorrowedFd<'a>),
    /// A really open file: the `f*xattr` calls, no path walk.
    Open(BorrowedFd<'a>),
}

fn path_of(t: Target<'_>) -> CString {
    match t {
        Target::Fd(fd) | Target::Open(fd) => proc_fd_path(fd),
    }
}

fn cname(name: &OsStr) -> SysResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

/// The value of xattr `name`; `ENODATA` when absent.
pub fn get(t: Target<'_>, name: &OsStr) -> SysResult<Vec<u8>> {
    let n = cname(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid C strings and fd; `buf` is writable for its length.
        let r = unsafe {
            match t {
                Target::Open(fd) => libc::fgetxattr(fd.as_raw_fd(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
                Target::Fd(_) => libc::getxattr(path_of(t).as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
            }
        };
        match cvt_size(r) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(Errno::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 8, 0),
            Err(e) => return Err(e),
        }
    }
}

/// `listxattrat(fd, ".", AT_SYMLINK_NOFOLLOW)` into `buf`: the names of the directory
/// `fd` holds (`O_PATH` or not), or `ERANGE` when `buf` is too small. None when the
/// call failed otherwise, for whatever reason: the caller then asks through /proc.
fn list_dir_at(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Option<SysResult<usize>> {
    let nr = SYS_LISTXATTRAT?;
    if !LISTXATTRAT.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: valid fd and C string; `buf` is writable for its length.
    let r = unsafe { libc::syscall(nr, fd.as_raw_fd(), c".".as_ptr(), libc::AT_SYMLINK_NOFOLLOW, buf.as_mut_ptr(), buf.len()) };
    if r >= 0 {
        return Some(Ok(r as usize));
    }
    match Errno::last() {
        Errno::ERANGE => Some(Err(Errno::ERANGE)),
        Errno::ENOSYS | Errno::EPERM => {
            LISTXATTRAT.store(false, Ordering::Relaxed);
            None
        }
        _ => None,
    }
}

/// All xattr names, as the raw NUL-separated list split into names.
pub fn list(t: Target<'_>) -> SysResult<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    loop {
        let r = match t {
            // SAFETY: valid fd; `buf` is writable for its length.
            Target::Open(fd) => cvt_size(unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }),
            Target::Fd(fd) => match list_dir_at(fd, &mut buf) {
                Some(r) => r,
                // SAFETY: valid C string; `buf` is writable for its length.
                None => cvt_size(unsafe { libc::listxattr(path_of(t).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }),
            },
        };
        match r {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf.split(|&b| b == 0).filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect());
            }
            Err(Errno::ERANGE) if buf.len() < 1 << 24 => buf.resize(buf.len() * 8, 0),
            Err(e) => return Err(e),
        }
    }
}

pub fn set(t: Target<'_>, name: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
    let n = cname(name)?;
    // SAFETY: valid C strings and fd; `value` is readable for its length.
    cvt(unsafe {
        match t {
            Target::Open(fd) => libc::fsetxattr(fd.as_raw_fd(), n.as_ptr(), value.as_ptr().cast(), value.len(), flags),
            Target::Fd(_) => libc::setxattr(path_of(t).as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), flags),
        }
    })
    .map(drop)
}

pub fn remove(t: Target<'_>, name: &OsStr) -> SysResult<()> {
    let p = path_of(t);
    let n = cname(name)?;
    // SAFETY: valid C strings.
    cvt(unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    fn opath(p: &std::path::Path) -> OwnedFd {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string; the result is checked.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open {}", p.display());
        // SAFETY: a fresh fd owned by nobody else.
        unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
    }

    /// Directories (listxattrat on ".") and other objects (the /proc path) list the
    /// same names as listxattr(2) on their path, also past the first buffer's size.
    #[test]
    fn names_of_dirs_and_files_through_o_path_fds() {
        let t = tempfile::tempdir().unwrap();
        let (dir, file) = (t.path().join("d"), t.path().join("f"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(&file, b"x").unwrap();
        let mut want = Vec::new();
        for i in 0..60 {
            let n = format!("user.a-long-attribute-name-{i:03}");
            for p in [&dir, &file] {
                if let Err(e) = set(Target::Fd(opath(p).as_fd()), OsStr::new(&n), b"v", 0) {
                    assert_eq!(e, Errno::ENOTSUP);
                    eprintln!("skipped: the temp dir's file system has no user xattrs");
                    return;
                }
            }
            want.push(n.into_bytes());
        }
        for p in [&dir, &file] {
            let mut got = list(Target::Fd(opath(p).as_fd())).unwrap();
            got.retain(|n| n.starts_with(b"user."));
            got.sort();
            assert_eq!(got, want, "{}", p.display());
        }
    }
}
