//! unionmount: a userspace union filesystem for container images.
//!
//! Data flow: `cmd` (the front end: argv → typed options, errors → one line) → `store`
//! (image reference → layer directories, top first) → `layers` (root fds of every layer,
//! upper + work) → `union` (overlayfs semantics over those fds, returning
//! `Result<_, Errno>`) → `fuse` (the thin `fuser::Filesystem` adapter) → kernel. `mount`
//! owns the session, threads, daemonizing and unmount. Every syscall lives in `sys`, the
//! only module with `unsafe`. See docs/ARCHITECTURE.md.

mod cmd;
pub mod fuse;
pub mod inspect;
pub mod layers;
pub mod mount;
pub mod union;
pub mod record;
pub mod store;
pub mod sys;

pub use cmd::run as run_command_line;
pub use cmd::{Parsed, Usage, parse_mount, split_lowerdir};
