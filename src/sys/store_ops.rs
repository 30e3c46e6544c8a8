//! Path-based syscalls the image store needs while unpacking layers into its cache:
//! device nodes and fifos, xattrs on the link itself, and timestamps on symlinks.
//!
//! Invariants: every call takes a path that the caller has already confined to a
//! private directory it created; nothing here follows a final symlink (`l*` xattr calls,
//! `AT_SYMLINK_NOFOLLOW`). Paths with an interior NUL are rejected with `InvalidInput`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Kind of special file for [`mknod`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Char,
    Block,
    Fifo,
}

/// Create a device node or fifo at `path` with permission bits `mode`.
pub fn mknod(path: &Path, kind: NodeKind, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(path)?;
    let fmt = match kind {
        NodeKind::Char => libc::S_IFCHR,
        NodeKind::Block => libc::S_IFBLK,
        NodeKind::Fifo => libc::S_IFIFO,
    };
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let r = unsafe { libc::mknod(c.as_ptr(), fmt | (mode & 0o7777), dev) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Set xattr `name` on `path` itself (not a symlink's target).
pub fn lsetxattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let n = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name contains NUL"))?;
    // SAFETY: both strings are NUL-terminated and live across the call; `value` is a
    // valid slice of `value.len()` bytes.
    let r = unsafe {
        libc::lsetxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0)
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Set atime and mtime of `path` itself (works on symlinks).
pub fn lutimes(path: &Path, secs: i64, nsecs: u32) -> io::Result<()> {
    let c = cpath(path)?;
    let t = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsecs.min(999_999_999) as _ };
    let times = [t, t];
    // SAFETY: `c` is NUL-terminated; `times` points to two valid timespecs.
    let r = unsafe {
        libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_times() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        mknod(&p, NodeKind::Fifo, 0o640, 0, 0).unwrap();
        lutimes(&p, 1_000_000, 5).unwrap();
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(m.mtime(), 1_000_000);
        assert!(mknod(&p, NodeKind::Fifo, 0o640, 0, 0).is_err(), "exists");
        let bad = Path::new("a\0b");
        assert!(lutimes(bad, 0, 0).is_err());
    }
}
