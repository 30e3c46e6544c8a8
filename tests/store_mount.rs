//! End to end: `unionmount --store S --cache C tiny:app MNT` from each of the four
//! fixture formats gives exactly the tree of `docker export` (minus Docker's init layer),
//! by name, by the second tag and by short id.

mod common;

use common::tree;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::extract_fixture as extract;

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn mount_tiny_app_from_every_format_matches_docker_export() {
    if !common::fixture_dir().join("tiny-app-export.tar").exists() {
        eprintln!("SKIP: fixture not found");
        return;
    }
    if !tree::is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP: needs root and /dev/fuse");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let export = tree::snapshot_tar(&common::fixture_dir().join("tiny-app-export.tar"));
    let cases: Vec<(PathBuf, Vec<&str>)> = vec![
        (extract("docker-root", t.path()), vec!["tiny:app", "example.com/team/tiny:v1", "dadb3b6384b7"]),
        (extract("containers-storage", t.path()), vec!["tiny:app", "07267ddda5c4"]),
        (extract("oci-layout", t.path()), vec!["tiny:app", "07267ddda5c4"]),
        (common::fixture_dir().join("docker-save.tar"), vec!["tiny:app", "example.com/team/tiny:v1", "dadb3b6384b7"]),
    ];
    for (i, (store, refs)) in cases.iter().enumerate() {
        for (j, r) in refs.iter().enumerate() {
            let mnt = t.path().join(format!("mnt{i}-{j}"));
            std::fs::create_dir_all(&mnt).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_unionmount"))
                .arg("--store")
                .arg(store)
                .arg("--cache")
                .arg(&cache)
                .arg(r)
                .arg(&mnt)
                .output()
                .unwrap();
            assert!(out.status.success(), "{} {r}: {}", store.display(), String::from_utf8_lossy(&out.stderr));
            let _m = Mounted(mnt.clone());
            let got = tree::snapshot_dir(&mnt);
            let diffs = tree::compare(&export, &got, tree::DOCKER_INIT);
            assert!(diffs.is_empty(), "{} {r}:\n{}", store.display(), diffs.join("\n"));
        }
    }
}

/// A cache filled without root keeps OCI `.wh.` whiteouts (recorded in meta.json); the
/// union filesystem must honour them: same tree as `docker export`, owners aside.
#[test]
fn unprivileged_cache_with_wh_files_mounts_the_same_tree() {
    let save = common::fixture_dir().join("docker-save.tar");
    if !save.exists() {
        eprintln!("SKIP: fixture not found");
        return;
    }
    if !tree::is_root() || !Path::new("/dev/fuse").exists() || Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIP: needs root (to switch to nobody and back), setpriv and /dev/fuse");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = t.path().join("cache");
    let mnt = t.path().join("mnt");
    for d in [&cache, &mnt] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    // As nobody: resolving fills the cache (whether or not the rootless mount works).
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_unionmount"))
        .arg("--store")
        .arg(&save)
        .arg("--cache")
        .arg(&cache)
        .args(["tiny:app"])
        .arg(&mnt)
        .env("HOME", t.path())
        .output()
        .unwrap();
    if out.status.success() {
        let _ = Command::new("umount").arg(&mnt).status();
    }
    let layers: Vec<PathBuf> = std::fs::read_dir(cache.join("layers/sha256")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(layers.len(), 5, "{}", String::from_utf8_lossy(&out.stderr));
    for l in &layers {
        let meta = std::fs::read_to_string(l.join("meta.json")).unwrap();
        assert!(meta.contains("\"wh-files\""), "{meta}");
    }
    // As root, mount from that cache and compare.
    let out = Command::new(env!("CARGO_BIN_EXE_unionmount"))
        .arg("--store")
        .arg(&save)
        .arg("--cache")
        .arg(&cache)
        .arg("tiny:app")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _m = Mounted(mnt.clone());
    let export = tree::snapshot_tar(&common::fixture_dir().join("tiny-app-export.tar"));
    let got = tree::snapshot_dir(&mnt);
    let diffs = tree::compare_ignoring_owners(&export, &got, tree::DOCKER_INIT);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
