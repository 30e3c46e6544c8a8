//! The few raw syscalls the benchmark needs, each wrapped to return `io::Result`.
//!
//! Everything `unsafe` in the bench crate lives here: whiteout device nodes, the opaque
//! xattr, the kernel overlay mount, unmount, dropping the page cache (all of it, or one
//! file's), `syncfs`, `uname`, `statfs`, `flock`, `geteuid`, `kill`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Create an overlayfs whiteout: a character device 0/0.
pub fn mknod_whiteout(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: `c` is a valid NUL-terminated path; mknod does not keep the pointer.
    check(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) })
}

/// Set an extended attribute (not following a final symlink).
pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cstr(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: both strings are NUL-terminated; value points to value.len() readable bytes.
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: page cache, dentries and inodes.
pub fn drop_caches() -> io::Result<()> {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", b"3")
}

/// `mount -t overlay overlay MNT -o DATA`, timed by the caller.
pub fn mount_overlay(mnt: &Path, data: &str) -> io::Result<()> {
    let target = cstr(mnt)?;
    let data = CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let src = c"overlay";
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    check(unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    })
}

/// umount2(MNT, flags); `lazy` adds MNT_DETACH.
pub fn umount(mnt: &Path, lazy: bool) -> io::Result<()> {
    let c = cstr(mnt)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `c` is a valid NUL-terminated path.
    check(unsafe { libc::umount2(c.as_ptr(), flags) })
}

/// Kernel release and machine, as `uname -rm` prints them.
pub fn uname() -> String {
    // SAFETY: utsname is plain old data; uname fills it or fails without touching it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".into();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!("{} {}", field(&u.release), field(&u.machine))
}

/// The filesystem magic number of the filesystem holding `path`.
pub fn statfs_type(path: &Path) -> io::Result<i64> {
    let c = cstr(path)?;
    // SAFETY: statfs is plain old data, filled by the call.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `s` is writable.
    check(unsafe { libc::statfs(c.as_ptr(), &mut s) })?;
    Ok(s.f_type as i64)
}

/// Block until `f` holds an exclusive flock (released when `f` is closed).
pub fn flock_exclusive(f: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is valid for the lifetime of `f`.
    check(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) })
}

/// Drop the clean cached pages of the file at `path` (`posix_fadvise` DONTNEED): makes
/// one file cold without dropping every cache on the machine.
pub fn evict(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: the fd is valid for the lifetime of `f`; fadvise only drops cached pages.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// Whether we run as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// SIGKILL `pid`.
pub fn kill(pid: u32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    check(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) })
}

/// syncfs(2) on the filesystem holding `path`: write back its dirty data and commit its
/// journal, so that what one sample left behind does not slow the next one down.
pub fn syncfs(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: the fd is valid for the lifetime of `f`.
    check(unsafe { libc::syncfs(f.as_raw_fd()) })
}
