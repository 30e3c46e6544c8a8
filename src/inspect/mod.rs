//! `diff`, `commit` and `which`: look at what a mount changed and where files come from.
//!
//! One file per job: `layer` (the shared, safe reader of layer directories),
//! `diff` (A/C/D changes), `commit` (layer tar writing), `oci` (OCI image layout),
//! `which` (which layer provides a path), `target` (what a diff/commit TARGET
//! names), `error` (the one error type). Their command lines are in `cmd::changes` and
//! `cmd::which`.
//!
//! Invariants: nothing here prints an error or panics on bad input.

mod error;

pub mod commit;
pub mod diff;
pub mod layer;
pub mod oci;
pub mod which;
pub mod target;

pub use error::InspectError;
