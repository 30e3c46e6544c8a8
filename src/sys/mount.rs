//! The FUSE mount and unmount system calls (privileged path).
//!
//! fuser's own mount names the type plain `fuse`; we mount as root ourselves so
//! /proc/mounts shows `fuse.unionmount`, like any FUSE file system with a subtype.

use super::{Errno, SysResult, cpath, cvt, fs};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Why the fusermount3 helper did not mount or unmount.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("fusermount3 not found: install the fuse3 package")]
    Missing,
    #[error("cannot run {helper}: {source}")]
    Spawn { helper: &'static str, source: std::io::Error },
    /// The helper ran and refused; `stderr` is its message, on one line.
    #[error("{helper} failed: {stderr}")]
    Failed { helper: &'static str, stderr: String },
    #[error("{helper} passed no /dev/fuse fd: {errno}")]
    NoFd { helper: &'static str, errno: Errno },
    #[error("socketpair: {0}")]
    Socket(Errno),
}

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

/// Unprivileged mount through the setuid helper `fusermount3`: it opens
/// /dev/fuse, mounts with `opts` and passes the fd back over a socket.
pub fn fusermount(mnt: &Path, opts: &str) -> Result<OwnedFd, HelperError> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two fds; socketpair writes both on success.
    cvt(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) })
        .map_err(HelperError::Socket)?;
    // SAFETY: both fds are fresh and owned by us from here on.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: setting FD_CLOEXEC on our own end only.
    unsafe { libc::fcntl(ours.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let helper = ["fusermount3", "fusermount"]
        .into_iter()
        .find(|h| std::process::Command::new(h).arg("-V").output().is_ok())
        .ok_or(HelperError::Missing)?;
    let out = std::process::Command::new(helper)
        .arg("-o")
        .arg(opts)
        .arg("--")
        .arg(mnt)
        .env("_FUSE_COMMFD", theirs.as_raw_fd().to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| HelperError::Spawn { helper, source })?;
    drop(theirs);
    if !out.status.success() {
        return Err(HelperError::Failed { helper, stderr: one_line(&out.stderr) });
    }
    recv_fd(&ours).map_err(|errno| HelperError::NoFd { helper, errno })
}

/// Receive one fd sent with SCM_RIGHTS.
fn recv_fd(sock: &OwnedFd) -> SysResult<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; we point it at live local buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: `msg` describes valid buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(Errno::last());
    }
    // SAFETY: CMSG_FIRSTHDR/CMSG_DATA walk the control buffer recvmsg filled.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(Errno::EIO);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Unprivileged unmount through `fusermount3 -u -z`.
pub fn fuserumount(mnt: &Path) -> Result<(), HelperError> {
    let helper = "fusermount3";
    let out = std::process::Command::new(helper)
        .arg("-u")
        .arg("-z")
        .arg("--")
        .arg(mnt)
        .output()
        .map_err(|source| HelperError::Spawn { helper, source })?;
    if out.status.success() { Ok(()) } else { Err(HelperError::Failed { helper, stderr: one_line(&out.stderr) }) }
}

/// A helper's stderr as one line.
fn one_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr).trim().replace('\n', "; ")
}

/// statfs(2) on `mnt`: a FUSE mount whose daemon is gone fails with ENOTCONN even
/// while the kernel still answers lookups and stats of it from its caches.
pub fn statfs(mnt: &Path) -> SysResult<()> {
    let p = cpath(mnt)?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `p` is a valid C string and `st` has room for one statfs.
    cvt(unsafe { libc::statfs(p.as_ptr(), st.as_mut_ptr()) }).map(drop)
}
