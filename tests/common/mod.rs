//! Shared helpers for the integration tests.
//!
//! Every test binary compiles this whole module tree, and not every binary uses every
//! helper, so dead code is allowed here.
#![allow(dead_code)]

pub mod fsops;
pub mod layer_spec;
pub mod overlay_harness;
pub mod rng;
pub mod tree;
