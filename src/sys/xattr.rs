//! Extended attributes of objects held as `O_PATH` fds.
//!
//! Every object, symlinks included, is reached through `/proc/self/fd/N`: the magic
//! link lands on exactly the object the fd holds and is not followed further.

use super::{Errno, SysResult, cvt, cvt_size, fs::proc_fd_path};
use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

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

/// All xattr names, as the raw NUL-separated list split into names.
pub fn list(t: Target<'_>) -> SysResult<Vec<Vec<u8>>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: valid C string and fd; `buf` is writable for its length.
        let r = unsafe {
            match t {
                Target::Open(fd) => libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()),
                Target::Fd(_) => libc::listxattr(path_of(t).as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
            }
        };
        match cvt_size(r) {
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
