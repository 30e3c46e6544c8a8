//! Shared helpers for the integration tests.
//!
//! Environment knobs (all optional):
//! - `UNIONMOUNT_TEST_FUSE_BIN`: FUSE binary to test instead of unionmount (e.g.
//!   /usr/bin/fuse-overlayfs, to check the harness itself against another implementation);
//! - `UNIONMOUNT_SEED`: seed of random_ops, stress and the option fuzz (printed by each);
//! - `UNIONMOUNT_RANDOM_SEQS` / `UNIONMOUNT_RANDOM_OPS`: random_ops size (30 x 40);
//! - `UNIONMOUNT_STRESS_SECS`: stress duration (8);
//! - `UNIONMOUNT_TEST_VERBOSE`: print kernel transcripts of passing differential scenarios.
//!
//! Tests that mount skip (saying why) only when not root or /dev/fuse is absent.
//!
//! Every test binary compiles this whole module tree, and not every binary uses every
//! helper, so dead code is allowed here.
#![allow(dead_code)]

pub mod fsops;
pub mod layer_spec;
pub mod overlay_harness;
pub mod rng;
pub mod tree;
