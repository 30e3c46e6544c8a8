//! Every system call unionmount makes, behind small safe wrappers.
//!
//! This is the only module tree with `unsafe`; each block carries a `// SAFETY:` line.
//! Linux-specific calls (openat2, O_PATH, renameat2, statx, xattr flavours, FUSE
//! passthrough) stay here so another platform is one backend module later.

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub mod store_ops;
