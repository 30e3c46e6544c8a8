//! `unionmount docker://…` end to end against a real registry (docker-registry on
//! 127.0.0.1): mounts compared with `docker export`, a second mount with the registry
//! stopped, `images` and `inspect`, a multi-platform index built here, auth (htpasswd and
//! the bearer flow through a token server), TLS with a private CA, a corrupted blob.

mod common;
mod registry_support;

use common::tree;
use registry_support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Mount `reference` at `mnt` with `args`; panics with stderr on failure.
fn mount(cmd: &mut Command, reference: &str, mnt: &Path) -> Mounted {
    std::fs::create_dir_all(mnt).unwrap();
    let o = cmd.arg(reference).arg(mnt).output().unwrap();
    assert!(o.status.success(), "mount {reference}: {}", err(&o));
    assert!(common::overlay_harness::is_mounted(mnt), "{} is mounted", mnt.display());
    Mounted(mnt.to_path_buf())
}

fn assert_export(mnt: &Path) {
    let export = tree::snapshot_tar(&fixture().join("tiny-app-export.tar"));
    let got = tree::snapshot_dir(mnt);
    let d = tree::compare(&export, &got, tree::DOCKER_INIT);
    assert!(d.is_empty(), "mounted tree differs from docker export:\n{}", d.join("\n"));
}

/// The error line of a failed command: exactly one line, exit 1.
fn one_line_failure(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "exit 1: {}", err(o));
    let e = err(o);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("unionmount")).collect();
    assert_eq!(lines.len(), 1, "one error line: {e}");
    lines[0].to_string()
}

#[test]
fn mount_from_registry_then_offline_images_inspect() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&t.path().join("reg"), RegAuth::None, None);
    let host = reg.host();
    skopeo_copy(&format!("oci:{}:app", oci_layout(t.path()).display()), &format!("docker://{host}/tiny:app"), &[]);
    let cache = t.path().join("cache");
    let r = format!("docker://{host}/tiny:app");

    // inspect reads the manifest and config only: no layer is downloaded or unpacked.
    let o = um(t.path()).args(["inspect", "--cache"]).arg(&cache).arg(&r).output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("Layers:   5") && s.contains("(registry)") && s.contains("not unpacked yet"), "{s}");
    assert!(!cache.join("layers/sha256").exists() || std::fs::read_dir(cache.join("layers/sha256")).unwrap().count() == 0);

    {
        let _m = mount(um(t.path()).arg("--cache").arg(&cache), &r, &t.path().join("m1"));
        assert_export(&t.path().join("m1"));
    }
    let o = um(t.path()).args(["images", "--cache"]).arg(&cache).output().unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.lines().any(|l| l.starts_with(&format!("{host}/tiny ")) && l.contains(" app ") && l.contains("07267ddda5c4")), "{s}");

    // The second mount needs no network: the registry is gone.
    reg.kill();
    {
        let _m = mount(um(t.path()).arg("--cache").arg(&cache), &r, &t.path().join("m2"));
        assert_export(&t.path().join("m2"));
    }
    // A fully qualified name without docker:// is fetched only when --pull allows it.
    let o = um(t.path()).arg("--cache").arg(&cache).arg(format!("{host}/tiny:app")).arg(t.path().join("m2")).output().unwrap();
    let line = one_line_failure(&o);
    assert!(line.contains("not found"), "{line}");
    {
        let mut c = um(t.path());
        c.args(["--pull", "missing", "--cache"]).arg(&cache);
        let _m = mount(&mut c, &format!("{host}/tiny:app"), &t.path().join("m3"));
    }
    // --pull=always asks the registry, which is down: one clear line.
    let o = um(t.path()).args(["--pull=always", "--cache"]).arg(&cache).arg(&r).arg(t.path().join("m3")).output().unwrap();
    let line = one_line_failure(&o);
    assert!(line.contains(&format!("cannot reach registry {host}")), "{line}");
    assert!(!common::overlay_harness::is_mounted(&t.path().join("m3")));
}

/// An OCI index with the fixture's app image for this machine and tiny:base for another
/// platform; the host gets app, --platform picks, a missing platform lists what there is.
#[test]
fn multi_platform_index() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&t.path().join("reg"), RegAuth::None, None);
    let host = reg.host();
    let layout = oci_layout(t.path());
    skopeo_copy(
        &format!("docker-archive:{}:tiny:base", fixture().join("docker-save.tar").display()),
        &format!("oci:{}:base", layout.display()),
        &["--format", "oci"],
    );
    // Build the index from the two manifests in the layout.
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let desc = |name: &str| {
        idx["manifests"].as_array().unwrap().iter().find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name).unwrap().clone()
    };
    let arch = unionmount::store::platform::Platform::host().architecture;
    let other = if arch == "s390x" { "riscv64" } else { "s390x" };
    let mut app = desc("app");
    let mut base = desc("base");
    for (d, a) in [(&mut app, arch.as_str()), (&mut base, other)] {
        d.as_object_mut().unwrap().remove("annotations");
        d["platform"] = serde_json::json!({"os": "linux", "architecture": a});
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [base, app],
    }))
    .unwrap();
    let d = unionmount::store::digest::Digest::sha256_of(&index);
    std::fs::write(layout.join("blobs/sha256").join(d.hex()), &index).unwrap();
    let mut top = idx.clone();
    top["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d.as_str(), "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"},
    }));
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    skopeo_copy(&format!("oci:{}:multi", layout.display()), &format!("docker://{host}/tiny:multi"), &["--all"]);

    let cache = t.path().join("cache");
    let r = format!("docker://{host}/tiny:multi");
    {
        let _m = mount(um(t.path()).arg("--cache").arg(&cache), &r, &t.path().join("m1"));
        assert_export(&t.path().join("m1"));
    }
    let o = um(t.path()).args(["inspect", "--json", "--platform", &format!("linux/{other}"), "--cache"]).arg(&cache).arg(&r).output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 1, "tiny:base for {other}");
    let o = um(t.path()).args(["--platform", "linux/mips64le", "--cache"]).arg(&cache).arg(&r).arg(t.path().join("m1")).output().unwrap();
    let line = one_line_failure(&o);
    assert!(line.contains("no image for linux/mips64le") && line.contains(&format!("linux/{arch}")) && line.contains("--platform"), "{line}");
}

#[test]
fn basic_auth_and_the_401_line() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&t.path().join("reg"), RegAuth::Basic { user: "alice".into(), pass: "s3cret-pw".into() }, None);
    let host = reg.host();
    skopeo_copy(&format!("oci:{}:app", oci_layout(t.path()).display()), &format!("docker://{host}/tiny:app"), &["--dest-creds", "alice:s3cret-pw"]);
    let cache = t.path().join("cache");
    std::fs::create_dir_all(t.path().join("m")).unwrap();
    let r = format!("docker://{host}/tiny:app");
    // No credentials at all.
    let o = um(t.path()).arg("--cache").arg(&cache).arg(&r).arg(t.path().join("m")).output().unwrap();
    let line = one_line_failure(&o);
    assert!(line.contains("requires credentials") && line.contains("podman login"), "{line}");
    // Wrong ones: the file read is named, the secret never shown.
    let auth = t.path().join("auth.json");
    auth_file(&auth, &host, "alice", "WRONG-pw-123");
    let o = um(t.path()).env("REGISTRY_AUTH_FILE", &auth).args(["-d", "--cache"]).arg(&cache).arg(&r).arg(t.path().join("m")).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let all = err(&o);
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode("alice:WRONG-pw-123");
    assert!(!all.contains("WRONG-pw-123") && !all.contains(&b64), "secret printed: {all}");
    let line = all.lines().rfind(|l| l.starts_with("unionmount:")).unwrap_or_default().to_string();
    assert!(line.contains("refused the credentials") && line.contains(&auth.display().to_string()), "{line}");
    // Right ones.
    auth_file(&auth, &host, "alice", "s3cret-pw");
    let mut c = um(t.path());
    c.env("REGISTRY_AUTH_FILE", &auth).arg("--cache").arg(&cache);
    let _m = mount(&mut c, &r, &t.path().join("m"));
    assert_export(&t.path().join("m"));
}

#[test]
fn bearer_token_flow() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ts = TokenServer::start(&t.path().join("tok"), "bob", "tok-pw");
    let reg = Registry::start(&t.path().join("reg"), RegAuth::Token { realm: ts.realm(), cert: ts.cert.clone() }, None);
    let host = reg.host();
    skopeo_copy(&format!("oci:{}:app", oci_layout(t.path()).display()), &format!("docker://{host}/team/tiny:app"), &["--dest-creds", "bob:tok-pw"]);
    let cache = t.path().join("cache");
    let r = format!("docker://{host}/team/tiny:app");
    std::fs::create_dir_all(t.path().join("m")).unwrap();
    let auth = t.path().join("auth.json");
    auth_file(&auth, &host, "bob", "not-it");
    let o = um(t.path()).env("REGISTRY_AUTH_FILE", &auth).arg("--cache").arg(&cache).arg(&r).arg(t.path().join("m")).output().unwrap();
    let line = one_line_failure(&o);
    assert!(line.contains("refused the credentials") && !line.contains("not-it"), "{line}");
    auth_file(&auth, &host, "bob", "tok-pw");
    ts.scopes.lock().unwrap().clear();
    let mut c = um(t.path());
    c.env("REGISTRY_AUTH_FILE", &auth).arg("--cache").arg(&cache);
    let _m = mount(&mut c, &r, &t.path().join("m"));
    assert_export(&t.path().join("m"));
    // One token for the pull scope, reused by the manifest, config and the 5 layer downloads.
    assert_eq!(*ts.scopes.lock().unwrap(), vec!["repository:team/tiny:pull".to_string()]);
}

#[test]
fn tls_with_a_private_ca() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let certs = make_certs(&t.path().join("pki"));
    let reg = Registry::start(&t.path().join("reg"), RegAuth::None, Some((&certs.cert, &certs.key)));
    let host = reg.host();
    skopeo_copy(&format!("oci:{}:app", oci_layout(t.path()).display()), &format!("docker://{host}/tiny:app"), &[]);
    let cache = t.path().join("cache");
    let r = format!("docker://{host}/tiny:app");
    std::fs::create_dir_all(t.path().join("m")).unwrap();
    let o = um(t.path()).arg("--cache").arg(&cache).arg(&r).arg(t.path().join("m")).output().unwrap();
    let line = one_line_failure(&o);
    assert!(line.contains("TLS") && line.contains("unknown CA") && line.contains("--cert-dir"), "{line}");
    let dir = t.path().join("certs.d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&certs.ca, dir.join("ca.crt")).unwrap();
    let mut c = um(t.path());
    c.arg("--cert-dir").arg(&dir).arg("--cache").arg(&cache);
    let _m = mount(&mut c, &r, &t.path().join("m"));
    assert_export(&t.path().join("m"));
    // --tls-verify=false also works (fresh cache, so it connects again).
    let o = um(t.path()).args(["inspect", "--tls-verify=false", "--cache"]).arg(t.path().join("cache2")).arg(&r).output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
}

#[test]
fn corrupt_blob_on_the_registry_is_refused() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&t.path().join("reg"), RegAuth::None, None);
    let host = reg.host();
    skopeo_copy(&format!("oci:{}:app", oci_layout(t.path()).display()), &format!("docker://{host}/tiny:app"), &["--preserve-digests"]);
    // The biggest layer of the fixture (busybox): flip bytes in the registry's copy.
    let big = "sha256:bb85de741e44ab17c2525eb51db90a32608052b9bfbfc08709b58597a4cc9306";
    let f = reg.blob_file(big);
    let mut data = std::fs::read(&f).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&f, &data).unwrap();
    let cache = t.path().join("cache");
    std::fs::create_dir_all(t.path().join("m")).unwrap();
    let o = um(t.path()).arg("--cache").arg(&cache).arg(format!("docker://{host}/tiny:app")).arg(t.path().join("m")).output().unwrap();
    let line = one_line_failure(&o);
    assert!(line.contains(big) && line.contains("does not match its digest") && line.contains("discarded"), "{line}");
    assert!(!common::overlay_harness::is_mounted(&t.path().join("m")));
    // Nothing of it is cached: no blob, no partial, no layer entry for it.
    let hex = &big[7..];
    assert!(!cache.join("registry/blobs/sha256").join(hex).exists());
    assert!(!cache.join("registry/partial/sha256").join(hex).exists());
    let entries: Vec<String> = std::fs::read_dir(cache.join("layers/sha256"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!entries.contains(&"45ba1fe9b143e7abf2bbc145f2b4751879cf4f2fcf089e9cdec7e6d658d38cbc".to_string()), "{entries:?}");
    assert_eq!(std::fs::read_dir(cache.join("tmp")).map(|d| d.count()).unwrap_or(0), 0);
}
