//! The FUSE mount and unmount system calls (privileged path).
//!
//! fuser's own mount names the type plain `fuse`; we mount as root ourselves so
//! /proc/mounts shows `fuse.unionmount`, like any FUSE file system with a subtype.

use super::{SysResult, cpath, cvt, fs};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Kernel mount flags we pass through.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flags {
    pub ro: bool,
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
    pub noatime: bool,
    pub sync: bool,
    pub dirsync: bool,
}

/// Open /dev/fuse and mount it at `mnt` as `fuse.SUBTYPE`; returns the channel fd.
pub fn fuse_mount(mnt: &Path, source: &str, subtype: &str, flags: Flags, extra: &str) -> SysResult<OwnedFd> {
    let dev = fs::open_path(Path::new("/dev/fuse"), libc::O_RDWR)?;
    let st = std::fs::metadata(mnt).map_err(super::Errno::from)?;
    let mode = std::os::unix::fs::MetadataExt::mode(&st) & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        dev.as_raw_fd(),
        mode,
        super::euid(),
        super::egid()
    );
    if !extra.is_empty() {
        data.push(',');
        data.push_str(extra);
    }
    let mut f: libc::c_ulong = 0;
    for (on, bit) in [
        (flags.ro, libc::MS_RDONLY),
        (flags.nodev, libc::MS_NODEV),
        (flags.nosuid, libc::MS_NOSUID),
        (flags.noexec, libc::MS_NOEXEC),
        (flags.noatime, libc::MS_NOATIME),
        (flags.sync, libc::MS_SYNCHRONOUS),
        (flags.dirsync, libc::MS_DIRSYNC),
    ] {
        if on {
            f |= bit;
        }
    }
    let src = CString::new(source).map_err(|_| super::Errno::EINVAL)?;
    let ty = CString::new(format!("fuse.{subtype}")).map_err(|_| super::Errno::EINVAL)?;
    let target = cpath(mnt)?;
    let d = CString::new(data).map_err(|_| super::Errno::EINVAL)?;
    // SAFETY: all pointers are valid C strings living across the call.
    cvt(unsafe { libc::mount(src.as_ptr(), target.as_ptr(), ty.as_ptr(), f, d.as_ptr().cast()) })?;
    Ok(dev)
}

/// Unmount `mnt`; `lazy` detaches it even while busy.
pub fn umount(mnt: &Path, lazy: bool) -> SysResult<()> {
    let target = cpath(mnt)?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: valid C string.
    cvt(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}
