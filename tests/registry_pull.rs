//! Pulls from a real registry (docker-registry on 127.0.0.1) through the library: the
//! fixture pushed with skopeo from an OCI layout and from a docker-save archive, gzip and
//! zstd, a multi-platform index built here; the merged layers compared with `docker
//! export`; the cache reused with the registry stopped; a corrupted blob refused.

mod common;
mod registry_support;

use common::overlay_harness::kernel_overlay;
use common::tree;
use registry_support::*;
use std::path::Path;
use unionmount::registry::{self, Options, PullPolicy, RegistryError};

/// The merged tree of `layers` (top first) equals the fixture's `docker export`.
fn assert_matches_export(img: &unionmount::store::ResolvedImage, mnt: &Path) {
    let export = tree::snapshot_tar(&fixture().join("tiny-app-export.tar"));
    let layers: Vec<&Path> = img.layers.iter().map(|l| l.dir.as_path()).collect();
    match kernel_overlay(&layers, None, mnt) {
        Ok(m) => {
            let got = tree::snapshot_dir(&m.mnt);
            let d = tree::compare(&export, &got, tree::DOCKER_INIT);
            assert!(d.is_empty(), "merged tree differs from docker export:\n{}", d.join("\n"));
        }
        Err(e) => eprintln!("SKIP merged-tree check: {e}"),
    }
}

fn pull(reference: &str, cache: &Path, opts: &Options) -> Result<unionmount::store::ResolvedImage, RegistryError> {
    registry::resolve(reference, opts, cache, true)
}

fn no_leftovers(cache: &Path) {
    for d in ["tmp", "registry/tmp"] {
        let p = cache.join(d);
        if p.is_dir() {
            assert_eq!(std::fs::read_dir(&p).unwrap().count(), 0, "{} is empty", p.display());
        }
    }
}

#[test]
fn pull_gzip_and_docker_archive_then_offline() {
    if skip(false) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&t.path().join("reg"), RegAuth::None, None);
    let layout = oci_layout(t.path());
    let host = reg.host();
    skopeo_copy(&format!("oci:{}:app", layout.display()), &format!("docker://{host}/tiny:app"), &[]);
    skopeo_copy(
        &format!("docker-archive:{}:tiny:app", fixture().join("docker-save.tar").display()),
        &format!("docker://{host}/team/tiny:v1"),
        &[],
    );
    let cache = t.path().join("cache");
    let opts = Options::default();
    for (i, r) in [format!("docker://{host}/tiny:app"), format!("docker://{host}/team/tiny:v1")].iter().enumerate() {
        let img = pull(r, &cache, &opts).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(img.layers.len(), 5, "{r}");
        assert!(img.layers.iter().all(|l| l.dir.is_dir()), "{r}: layers unpacked");
        assert!(img.layers[0].created_by.as_deref().is_some_and(|c| c.contains("back")), "{r}: history {:?}", img.layers[0].created_by);
        assert_matches_export(&img, &t.path().join(format!("mnt{i}")));
    }
    // Both pushes hold the same layers: 5 entries in the layer cache, no layer blob kept.
    assert_eq!(std::fs::read_dir(cache.join("layers/sha256")).unwrap().count(), 5);
    no_leftovers(&cache);
    let listed = registry::cached_images(&cache);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().any(|r| r.names == vec![format!("{host}/tiny:app")]), "{listed:?}");

    // A second mount needs no network: the registry is gone.
    reg.kill();
    let img = pull(&format!("docker://{host}/tiny:app"), &cache, &opts).expect("cached pull with the registry stopped");
    assert_eq!(img.layers.len(), 5);
    let never = Options { pull: PullPolicy::Never, ..Default::default() };
    pull(&format!("docker://{host}/team/tiny:v1"), &cache, &never).expect("--pull=never from the cache");
    let e = pull(&format!("docker://{host}/tiny:other"), &cache, &never).unwrap_err();
    assert!(matches!(e, RegistryError::NotCached { .. }), "{e}");
    let always = Options { pull: PullPolicy::Always, ..Default::default() };
    let e = pull(&format!("docker://{host}/tiny:app"), &cache, &always).unwrap_err();
    assert!(matches!(e, RegistryError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains(&host) && !e.to_string().contains('\n'), "{e}");
}

#[test]
fn pull_zstd_and_missing_names() {
    if skip(false) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&t.path().join("reg"), RegAuth::None, None);
    let layout = oci_layout(t.path());
    let host = reg.host();
    skopeo_copy(
        &format!("oci:{}:app", layout.display()),
        &format!("docker://{host}/tiny:zstd"),
        &["--dest-compress-format", "zstd", "--dest-compress", "--format", "oci"],
    );
    let cache = t.path().join("cache");
    let img = pull(&format!("docker://{host}/tiny:zstd"), &cache, &Options::default()).unwrap();
    assert_matches_export(&img, &t.path().join("mnt"));
    for (r, code) in [("tiny:nope", "MANIFEST_UNKNOWN"), ("nothere:app", "_UNKNOWN")] {
        let e = pull(&format!("docker://{host}/{r}"), &cache, &Options::default()).unwrap_err();
        assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains(code), "{e}");
    }
}
