//! `diff`, `commit` and `which`: look at what a mount changed and where files come from.
//!
//! One file per job: `layer` (the shared, safe reader of layer directories),
//! `diff` (A/C/D changes), `commit` (layer tar writing), `oci` (OCI image layout),
//! `which` (which layer provides a path). Their command lines are in `cmd::changes`
//! and `cmd::which`.
//!
//! Invariants: nothing here prints an error or panics on bad input.

pub mod commit;
pub mod diff;
pub mod layer;
pub mod oci;
pub mod which;
