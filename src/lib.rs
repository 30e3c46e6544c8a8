//! unionmount: a userspace union filesystem for container images.
//!
//! Data flow: `cmd` (the front end: argv → typed options, errors → one line) → `store`
//! (image reference → layer directories, top first) → `layers` (root fds of every layer,
//! upper + work) → `union` (overlayfs semantics over those fds, returning
//! `Result<_, Errno>`) → `fuse` (the thin `fuser::Filesystem` adapter) → kernel. `mount`
//! owns the session, threads, daemonizing and unmount; `record` the mount records that
//! `inspect` (diff, commit, which) reads. Every syscall lives in `sys`, the only module
//! with `unsafe`. See docs/ARCHITECTURE.md.
//!
//! The library exists for the binary, the integration tests and bench/: a module is
//! public only where those need it, and the few items they need from the others are
//! re-exported here.

mod cancel;
mod cmd;
mod fuse;
mod inspect;
mod mount;
mod overlay;
mod record;

/// bench/ drives a `LayerStack` directly (micro-benchmarks).
pub mod layers;
/// tests/ pull from a real registry through the library.
pub mod registry;
/// tests/ read every store format, parse references and unpack layers.
pub mod store;
/// tests/ build whiteouts and opaque markers with `sys::store_ops`.
pub mod sys;
/// bench/ drives `UnionFs` directly (micro-benchmarks).
pub mod union;

pub use cmd::run as run_command_line;
pub use cmd::{Parsed, Usage, parse_mount, split_lowerdir};
pub use inspect::oci::rfc3339;
pub use mount::{MountArgs, MountOpts, Passthrough};
