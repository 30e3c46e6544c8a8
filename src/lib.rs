//! unionmount: a userspace union filesystem for container images.
//!
//! Data flow: `cli` (argv → typed options) → `store` (image reference → layer
//! directories, top first) → `layers` (root fds of every layer, upper + work) →
//! `union` (overlayfs semantics over those fds, returning `Result<_, Errno>`) →
//! `fuse` (the thin `fuser::Filesystem` adapter) → kernel. `mount` owns the session,
//! threads, daemonizing and unmount. Every syscall lives in `sys`, the only module
//! with `unsafe`. See docs/ARCHITECTURE.md.

pub mod cli;
pub mod fuse;
pub mod inspect;
pub mod layers;
pub mod mount;
pub mod union;
pub mod record;
pub mod store;
pub mod sys;
