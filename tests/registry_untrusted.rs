//! A registry is untrusted input like any store (issue 10): a real `docker-registry` on
//! 127.0.0.1 serving manifests planted straight into its storage (it serves what it
//! stores without checking the descriptors inside), as a hostile or broken registry
//! would. Layer and config digests that are paths, a declared size smaller than the
//! blob, an index entry declaring a terabyte manifest: each is refused with one line
//! that echoes no host file, nothing is mounted, and nothing outside the cache is written.

mod common;
mod registry_support;

use registry_support::*;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::process::{Command, Output};

fn hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Store `body` in the registry as a blob and make `repo:tag` point at it as a manifest
/// (the files distribution 2.8 keeps for a pushed manifest); returns its digest.
fn plant(reg: &Registry, repo: &str, tag: &str, body: &[u8]) -> String {
    let h = hex(body);
    let d = format!("sha256:{h}");
    let blob = reg.blob_file(&d);
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(&blob, body).unwrap();
    let m = reg.dir.join("data/docker/registry/v2/repositories").join(repo).join("_manifests");
    for link in [
        m.join("revisions/sha256").join(&h).join("link"),
        m.join("tags").join(tag).join("current/link"),
        m.join("tags").join(tag).join("index/sha256").join(&h).join("link"),
    ] {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::fs::write(link, &d).unwrap();
    }
    d
}

/// The manifest `repo:tag` points at, as the registry stores it.
fn stored_manifest(reg: &Registry, repo: &str, tag: &str) -> Value {
    let link = reg.dir.join("data/docker/registry/v2/repositories").join(repo).join("_manifests/tags").join(tag).join("current/link");
    let d = std::fs::read_to_string(link).unwrap();
    serde_json::from_slice(&std::fs::read(reg.blob_file(d.trim())).unwrap()).unwrap()
}

/// Exit 1, exactly one line on stderr, no line of /etc/passwd or /etc/shadow in it.
/// Layers are pulled in parallel, so another layer of the image may finish before the
/// hostile one is refused: its progress line (`layer …: pulled … in … s`, stderr not
/// being a terminal) is not the error and is left out.
fn refused(o: &Output, what: &str) -> String {
    let all = String::from_utf8_lossy(&o.stderr).into_owned();
    let progress = |l: &str| l.starts_with("layer ") && l.contains(": pulled ") && l.ends_with(" s");
    let e: String = all.lines().filter(|l| !progress(l)).map(|l| format!("{l}\n")).collect();
    assert_eq!(o.status.code(), Some(1), "{what}: exit 1: {all}");
    assert_eq!(e.trim().lines().count(), 1, "{what}: one line: {all}");
    assert!(!all.contains("root:") && !all.contains("/bin/"), "{what}: echoes a host file: {all}");
    assert!(e.len() < 600, "{what}: {} byte line", e.len());
    e
}

/// What the line for case `what` must say (it failed for that reason, not another).
fn expected(what: &str) -> &'static str {
    if what.contains("digest") {
        "invalid digest"
    } else if what.contains("without a size") {
        "size"
    } else {
        "bytes"
    }
}

#[test]
fn hostile_descriptors_from_a_registry_are_refused() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&t.path().join("reg"), RegAuth::None, None);
    let host = reg.host();
    skopeo_copy(&format!("oci:{}:app", oci_layout(t.path()).display()), &format!("docker://{host}/tiny:app"), &["--preserve-digests"]);
    let good = stored_manifest(&reg, "tiny", "app");
    assert!(good["layers"].as_array().is_some_and(|l| !l.is_empty()), "{good}");
    let mnt = t.path().join("m");
    std::fs::create_dir_all(&mnt).unwrap();
    // A canary beside the cache: a path digest that escaped would read or replace it.
    let canary = t.path().join("canary.tar");
    std::fs::write(&canary, b"canary").unwrap();
    let canary_rel = format!("../../../../../../../../../../..{}", canary.display());

    let mut cases: Vec<(&str, Value)> = Vec::new();
    for (what, v) in [
        ("layer digest /etc/shadow", "/etc/shadow".to_string()),
        ("layer digest ../ to a host file", canary_rel.clone()),
        ("layer digest sha256:../", "sha256:../../../../../../etc/passwd".to_string()),
        ("layer digest uppercase hex", good["layers"][0]["digest"].as_str().unwrap().to_uppercase()),
    ] {
        let mut m = good.clone();
        m["layers"][0]["digest"] = Value::String(v);
        cases.push((what, m));
    }
    let mut m = good.clone();
    m["config"]["digest"] = Value::String("/etc/passwd".into());
    cases.push(("config digest /etc/passwd", m));
    let mut m = good.clone();
    m["layers"][0]["size"] = Value::from(10u64);
    cases.push(("layer smaller than its blob", m));
    let mut m = good.clone();
    m["config"]["size"] = Value::from(1_000_000_000_000u64);
    cases.push(("config declared as a terabyte", m));
    let mut m = good.clone();
    m["layers"][0].as_object_mut().unwrap().remove("size");
    cases.push(("layer without a size", m));

    for (i, (what, m)) in cases.iter().enumerate() {
        let tag = format!("bad{i}");
        plant(&reg, "tiny", &tag, &serde_json::to_vec(m).unwrap());
        let cache = t.path().join(format!("cache{i}"));
        let o = um(t.path()).arg("--cache").arg(&cache).arg(format!("docker://{host}/tiny:{tag}")).arg(&mnt).output().unwrap();
        let line = refused(&o, what);
        assert!(line.contains(expected(what)), "{what}: {line}");
        assert!(!common::overlay_harness::is_mounted(&mnt), "{what}: mounted");
        assert_eq!(std::fs::read(&canary).unwrap(), b"canary", "{what}: the canary was touched");
        // inspect reads the manifest and config, not the layers: it sees every lie but
        // the size of a layer it does not download.
        if *what != "layer smaller than its blob" {
            let o = um(t.path()).args(["inspect", "--cache"]).arg(&cache).arg(format!("docker://{host}/tiny:{tag}")).output().unwrap();
            let line = refused(&o, what);
            assert!(line.contains(expected(what)), "inspect, {what}: {line}");
        }
    }

    // An index whose one entry declares a terabyte manifest: refused before it is fetched.
    let good_digest = std::fs::read_to_string(
        reg.dir.join("data/docker/registry/v2/repositories/tiny/_manifests/tags/app/current/link"),
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": good_digest.trim(),
            "size": 1_000_000_000_000u64,
            "platform": {"architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"), "os": "linux"}
        }]
    });
    plant(&reg, "tiny", "bigindex", &serde_json::to_vec(&index).unwrap());
    let o = um(t.path()).arg("--cache").arg(t.path().join("cache-index")).arg(format!("docker://{host}/tiny:bigindex")).arg(&mnt).output().unwrap();
    let line = refused(&o, "terabyte manifest in an index");
    assert!(line.contains("claims 1000000000000 bytes"), "{line}");

    // The untouched image still mounts from the same registry (the harness is sound).
    let o = um(t.path()).arg("--cache").arg(t.path().join("cache-good")).arg(format!("docker://{host}/tiny:app")).arg(&mnt).output().unwrap();
    assert!(o.status.success(), "good image: {}", String::from_utf8_lossy(&o.stderr));
    assert!(common::overlay_harness::is_mounted(&mnt));
    let st = Command::new("umount").arg(&mnt).status().unwrap();
    assert!(st.success());
}
