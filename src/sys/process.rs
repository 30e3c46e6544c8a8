//! Process control for the daemon: fork, session, signals, stdio.

use super::{SysResult, cvt};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub enum Fork {
    Parent(i32),
    Child,
}

/// fork(2). Call only while the process has a single thread.
pub fn fork() -> SysResult<Fork> {
    // SAFETY: the caller guarantees no other threads exist, so the child's memory
    // is consistent; we only return to ordinary Rust code in both processes.
    let pid = cvt(unsafe { libc::fork() })?;
    Ok(if pid == 0 { Fork::Child } else { Fork::Parent(pid) })
}

/// Start a new session so the daemon does not die with the caller's terminal.
pub fn setsid() {
    // SAFETY: no preconditions; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> SysResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded: both fds are new and owned by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Point stdin, stdout and stderr at /dev/null.
pub fn stdio_to_devnull() {
    // SAFETY: valid C string; dup2 onto 0..2 replaces them atomically.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

fn term_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset_t.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Block SIGINT/SIGTERM/SIGHUP in this thread (and threads it spawns later).
pub fn block_term_signals() {
    let set = term_set();
    // SAFETY: `set` is initialised; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Wait for one of the blocked termination signals; returns its number.
pub fn wait_term_signal() -> i32 {
    let set = term_set();
    let mut sig = 0;
    // SAFETY: `set` is initialised and `sig` is a valid out pointer.
    unsafe { libc::sigwait(&set, &mut sig) };
    sig
}

/// Write all of `buf` to `fd`, ignoring errors (the reader may be gone).
pub fn write_fd(fd: BorrowedFd<'_>, buf: &[u8]) {
    // SAFETY: `buf` is readable for its length.
    unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
}

/// Wait for child `pid` without blocking; true if it has exited.
pub fn child_exited(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: `status` is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid { Some(status) } else { None }
}

/// Clear the umask: modes the kernel sends are already masked.
pub fn clear_umask() {
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0) };
}

/// Number of CPUs this process may run on.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Is process `pid` alive (ours or another user's)? A zombie (exited, not yet
/// reaped) is not.
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    if r != 0 && super::Errno::last() != super::Errno::EPERM {
        return false;
    }
    // /proc/PID/stat: "PID (COMM) STATE ..."; COMM may hold spaces and parentheses.
    match std::fs::read(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.iter().rposition(|&b| b == b')').and_then(|i| stat.get(i + 2));
            !matches!(state, Some(b'Z' | b'X'))
        }
        Err(_) => true,
    }
}
