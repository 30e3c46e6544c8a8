//! Helpers shared by the integration tests: synthetic stores ([`synth`]) and tree
//! snapshots/comparison plus kernel overlay mounts ([`tree`]).
#![allow(dead_code)]

pub mod synth;
pub mod tree;

use std::path::PathBuf;

/// The shared fixture directory (`../shared/fixtures/tiny-image` beside the repo).
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/tiny-image")
}
