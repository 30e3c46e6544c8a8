//! Every system call unionmount makes, behind small safe wrappers.
//!
//! This is the only module tree with `unsafe`; each block carries a `// SAFETY:` line.
//! Linux-specific calls (O_PATH, renameat2, getdents64, xattrs through
//! `/proc/self/fd`, FUSE passthrough) stay here so another platform is one backend
//! module later.
//!
//! Invariant: functions taking a `(dirfd, name)` pair never follow a symlink in
//! `name` and reject names holding `/`, so a walk that starts at a layer's root fd
//! and goes one component at a time can never leave that layer.

// Public: store_ops (tests/ build whiteouts and opaque markers with it) and beneath (the
// interface every store reader is written against); the rest serves the crate only.
pub mod beneath;
pub(crate) mod dir;
pub(crate) mod fs;
pub(crate) mod fusectl;
pub(crate) mod mount;
pub(crate) mod process;
pub mod store_ops;
pub(crate) mod xattr;

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

/// A positive errno value: what a failed request returns to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EXDEV: Errno = Errno(libc::EXDEV);
    pub const ENOTDIR: Errno = Errno(libc::ENOTDIR);
    pub const EISDIR: Errno = Errno(libc::EISDIR);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EROFS: Errno = Errno(libc::EROFS);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ENODATA: Errno = Errno(libc::ENODATA);
    pub const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    pub const ESTALE: Errno = Errno(libc::ESTALE);
    pub const ENOSYS: Errno = Errno(libc::ENOSYS);

    /// The calling thread's errno after a failed call.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

pub type SysResult<T> = Result<T, Errno>;

/// Map a `-1`-on-error return value to a Result.
pub(crate) fn cvt(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

pub(crate) fn cvt_size(ret: libc::ssize_t) -> SysResult<usize> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret as usize) }
}

/// A single path component as a C string: refuses `/`, NUL, `.` and `..`.
pub fn component(name: &OsStr) -> SysResult<CString> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    if b.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    CString::new(b).map_err(|_| Errno::EINVAL)
}

/// A path as a C string (for paths the user gave us, never for layer contents).
pub fn cpath(p: &std::path::Path) -> SysResult<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective group id of this process.
pub fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}
