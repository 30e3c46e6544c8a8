//! Helpers shared by the integration tests.
//!
//! Image tests: synthetic stores ([`synth`]).
//!
//! Every test that compares trees: [`tree`], the one snapshot of a directory or tar (merged
//! views, uppers with whiteouts normalised, image trees with mtimes and hard links) and
//! readable differences.
//!
//! Union filesystem tests (differential against kernel overlayfs, random ops, call forms,
//! reliability): libc wrappers returning errnos ([`fsops`]), layer directories built from a
//! compact spec ([`layer_spec`]), kernel overlay and FUSE mounts with cleanup guards
//! ([`overlay_harness`]: the one kernel overlay mount helper) and a seeded PRNG ([`rng`]).
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
pub mod synth;
pub mod tree;

use std::path::PathBuf;

/// The shared fixture directory (`../shared/fixtures/tiny-image` beside the repo).
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/tiny-image")
}

/// Extract the fixture store `NAME.tar` (docker-root, containers-storage, oci-layout)
/// into `into/NAME`, owners, modes and xattrs kept; returns that directory.
pub fn extract_fixture(name: &str, into: &std::path::Path) -> PathBuf {
    let d = into.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let st = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(fixture_dir().join(format!("{name}.tar")))
        .arg("-C")
        .arg(&d)
        .status()
        .unwrap();
    assert!(st.success(), "extracting the {name} fixture");
    d
}
