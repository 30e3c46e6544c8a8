//! The real tiny-image fixture in all four store formats: resolve by name, by the other
//! tag and by short id, compare layers across formats, and check the merged tree (via
//! kernel overlayfs over the resolved layer dirs) against `docker export`.

mod common;

use common::overlay_harness::kernel_overlay;
use common::tree;
use std::path::{Path, PathBuf};
use unionmount::store::{self, StoreError, StoreQuery, WhiteoutFormat};

const APP_DOCKER_ID: &str = "sha256:dadb3b6384b75c6e5f9e75745e2bb2d4b38b6d8c01dcfa56536d8081605b571a";
/// containers-storage and the OCI layout hold the image converted to OCI: another config.
const APP_OCI_ID: &str = "sha256:07267ddda5c4ef59ad6017e0abcd3155cbfae7e8d1756e028f977f3c5429b98d";

struct Fx {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

/// Extract the fixture tars (as root, keeping xattrs and devices); None = skip.
fn setup() -> Option<Fx> {
    let src = common::fixture_dir();
    if !src.join("docker-root.tar").exists() {
        eprintln!("SKIP: fixture {} not found", src.display());
        return None;
    }
    if !tree::is_root() {
        eprintln!("SKIP: extracting the fixture needs root (char-device whiteouts, trusted xattrs)");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    for n in ["docker-root", "containers-storage", "oci-layout"] {
        let d = dir.join(n);
        std::fs::create_dir_all(&d).unwrap();
        let st = std::process::Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(src.join(format!("{n}.tar")))
            .arg("-C")
            .arg(&d)
            .status()
            .unwrap();
        assert!(st.success(), "extracting {n}");
    }
    Some(Fx { _tmp: tmp, dir })
}

fn q(store: &Path, cache: &Path, r: &str) -> StoreQuery {
    StoreQuery { reference: r.into(), store: Some(store.into()), cache: Some(cache.into()), ..Default::default() }
}

#[test]
fn fixture_all_formats() {
    let Some(fx) = setup() else { return };
    let cache = fx.dir.join("cache");
    let save = common::fixture_dir().join("docker-save.tar");
    let stores: Vec<(&str, PathBuf, &str, Vec<&str>)> = vec![
        ("docker", fx.dir.join("docker-root"), APP_DOCKER_ID, vec!["tiny:app", "example.com/team/tiny:v1", "dadb3b6384b7", "docker.io/library/tiny:app"]),
        ("containers-storage", fx.dir.join("containers-storage"), APP_OCI_ID, vec!["tiny:app", "localhost/tiny:app", "07267ddda5c4"]),
        ("oci", fx.dir.join("oci-layout"), APP_OCI_ID, vec!["tiny:app", "app", "07267ddda5c4"]),
        ("archive", save.clone(), APP_DOCKER_ID, vec!["tiny:app", "example.com/team/tiny:v1", "dadb3b6384b7"]),
    ];
    let export = tree::snapshot_tar(&common::fixture_dir().join("tiny-app-export.tar"));
    assert!(export.len() > 50 && export[b"opt/copied.txt".as_slice()].mode == 0o4755, "export snapshot looks right");
    let mut all_diff_ids: Vec<Vec<String>> = Vec::new();
    for (name, path, want_id, refs) in &stores {
        let mut first: Option<store::ResolvedImage> = None;
        for r in refs {
            let img = store::resolve(&q(path, &cache, r)).unwrap_or_else(|e| panic!("{name} {r}: {e}"));
            assert_eq!(img.id, *want_id, "{name} {r}");
            assert_eq!(img.layers.len(), 5, "{name} {r}");
            for l in &img.layers {
                assert!(l.dir.is_dir(), "{name}: {} is a dir", l.dir.display());
            }
            if let Some(f) = &first {
                let a: Vec<_> = f.layers.iter().map(|l| &l.dir).collect();
                let b: Vec<_> = img.layers.iter().map(|l| &l.dir).collect();
                assert_eq!(a, b, "{name}: same layers whatever the reference");
            }
            first = Some(img);
        }
        let img = first.unwrap();
        all_diff_ids.push(img.layers.iter().map(|l| l.diff_id.to_string()).collect());
        // History lines are attached to the right layers (top layer wrote /etc/motd again).
        assert!(
            img.layers[0].created_by.as_deref().is_some_and(|c| c.contains("back")),
            "{name}: top layer history {:?}",
            img.layers[0].created_by
        );
        if *name == "oci" || *name == "archive" {
            assert_eq!(img.layers[0].whiteouts, WhiteoutFormat::CharDevice);
        }
        // The merged tree, through kernel overlayfs, equals `docker export` minus init entries.
        let mnt = fx.dir.join(format!("mnt-{name}"));
        let dirs: Vec<&Path> = img.layers.iter().map(|l| l.dir.as_path()).collect();
        match kernel_overlay(&dirs, None, &mnt) {
            Ok(m) => {
                let got = tree::snapshot_dir(&m.mnt);
                assert!(got.contains_key(b"var/lib/data/new".as_slice()) && !got.contains_key(b"etc/.wh.motd".as_slice()));
                let diffs = tree::compare(&export, &got, tree::DOCKER_INIT);
                assert!(diffs.is_empty(), "{name}: merged tree differs from docker export:\n{}", diffs.join("\n"));
            }
            Err(e) => eprintln!("SKIP merged-tree check for {name}: {e}"),
        }
    }
    for d in &all_diff_ids[1..] {
        assert_eq!(d, &all_diff_ids[0], "diff_ids agree across formats");
    }
    // The cache was filled once: resolving again unpacks nothing new.
    let n = std::fs::read_dir(cache.join("layers/sha256")).unwrap().count();
    assert_eq!(n, 5, "5 distinct layers in the cache (OCI and archive share them)");
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0, "no leftovers in tmp");
}

#[test]
fn fixture_errors_name_the_stores_and_closest() {
    let Some(fx) = setup() else { return };
    let cache = fx.dir.join("cache");
    let cs = fx.dir.join("containers-storage");
    let e = store::resolve(&q(&cs, &cache, "example.com/team/tiny:v1")).unwrap_err();
    assert!(matches!(e, StoreError::ImageNotFound { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&cs.display().to_string()) && msg.contains("localhost/tiny:app"), "{msg}");
    let e = store::resolve(&q(&fx.dir.join("docker-root"), &cache, "tiny:ap")).unwrap_err();
    assert!(e.to_string().contains("closest: tiny:app"), "{e}");
    // tiny:base by id prefix in Docker, short forms.
    let img = store::resolve(&q(&fx.dir.join("docker-root"), &cache, "1b99f173")).unwrap();
    assert_eq!(img.layers.len(), 1);
    let img = store::resolve(&q(&fx.dir.join("docker-root"), &cache, "tiny:base")).unwrap();
    assert_eq!(img.layers.len(), 1);
    // The store was not modified by resolving (Docker root: compare a listing).
    let before = tree::snapshot_dir(&fx.dir.join("docker-root"));
    store::resolve(&q(&fx.dir.join("docker-root"), &cache, "tiny:app")).unwrap();
    assert_eq!(before, tree::snapshot_dir(&fx.dir.join("docker-root")));
}

#[test]
fn fixture_cli_images_and_inspect() {
    let Some(fx) = setup() else { return };
    let bin = env!("CARGO_BIN_EXE_unionmount");
    let out = std::process::Command::new(bin)
        .args(["images", "--store"])
        .arg(fx.dir.join("docker-root"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.starts_with("REPOSITORY"), "{s}");
    assert!(s.lines().any(|l| l.starts_with("tiny ") && l.contains("app") && l.contains("dadb3b6384b7") && l.contains(" 5 ")), "{s}");
    assert!(s.lines().any(|l| l.starts_with("example.com/team/tiny ") && l.contains("v1")), "{s}");
    let out = std::process::Command::new(bin)
        .args(["inspect", "--json", "--store"])
        .arg(fx.dir.join("docker-root"))
        .arg("tiny:app")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["id"], APP_DOCKER_ID);
    assert_eq!(v["layers"].as_array().unwrap().len(), 5);
    assert_eq!(v["layers"][4]["diff_id"], "sha256:45ba1fe9b143e7abf2bbc145f2b4751879cf4f2fcf089e9cdec7e6d658d38cbc");
    assert!(v["layers"][1]["created_by"].as_str().unwrap().contains("mkfifo"));
    let out = std::process::Command::new(bin)
        .args(["inspect", "--store"])
        .arg(fx.dir.join("docker-root"))
        .arg("nope:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}
