//! `diff` and `commit` against kernel overlayfs (the reference): make scripted
//! changes through a kernel overlay mount, list and commit its upper directory,
//! then mount base + committed layer and compare with the changed tree; and
//! round-trip the image through an OCI layout checked with skopeo.
//!
//! Needs root (mount, mknod, trusted.* xattrs); skips, saying why, otherwise.

mod common;
mod inspect_support;

use inspect_support::*;
use std::path::Path;
use std::process::Command;

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn diff_commit_and_oci_round_trip_against_kernel_overlay() {
    if !is_root() {
        eprintln!("skipped: needs root (mount -t overlay, mknod, trusted.* xattrs)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let (bot, top) = base_layers(r);
    let (upper, work, m1) = (r.join("upper"), r.join("work"), r.join("m1"));
    let _m1 = match overlay(&[&top, &bot], Some((&upper, &work)), &m1) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    scripted_changes(&m1, true);
    let want = snapshot(&m1);

    // diff, text and JSON.
    let lowers = ["--lower".as_ref(), top.as_os_str(), "--lower".as_ref(), bot.as_os_str()];
    let out = run(Command::new(bin()).arg("diff").arg("--upper").arg(&upper).args(lowers));
    assert_eq!(show(&out.stdout), show(&expected_diff(true)));
    let mut opt = std::ffi::OsString::from("lowerdir=");
    opt.push(top.as_os_str());
    opt.push(":");
    opt.push(bot.as_os_str());
    let out = run(Command::new(bin()).arg("diff").arg("--upper").arg(&upper).arg("-o").arg(&opt).arg("--json"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), expected_diff(true).split(|&b| b == b'\n').count() - 1);
    assert_eq!(v[0]["path_bytes"].as_array().unwrap().len(), b"/bad\xffname".len());

    // A kernel overlay mountpoint is refused with a hint.
    let out = Command::new(bin()).arg("diff").arg(&m1).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = show(&out.stderr);
    assert!(err.contains("is an overlay mountpoint; give its upper directory") && err.lines().count() == 1, "{err}");

    // commit: the printed diff_id is the sha256 of the file.
    let layer = r.join("layer.tar");
    let out = run(Command::new(bin()).arg("commit").arg("--upper").arg(&upper).arg("--output").arg(&layer));
    let text = show(&out.stdout);
    assert_eq!(field(&text, "diff_id"), sha256_file(&layer));
    assert_eq!(field(&text, "size"), std::fs::metadata(&layer).unwrap().len().to_string());

    // base + committed layer, under kernel overlay, equals the changed tree.
    let x = r.join("x");
    std::fs::create_dir_all(&x).unwrap();
    apply_tar(std::fs::File::open(&layer).unwrap(), &x, true);
    let m2 = r.join("m2");
    let _m2 = overlay(&[&x, &top, &bot], None, &m2).unwrap();
    assert_same_tree(&want, &snapshot(&m2));

    // OCI layout: base layers re-serialised + the new one.
    let oci = r.join("oci");
    let base_config = r.join("base-config.json");
    let cfg = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},
        "rootfs":{"type":"layers","diff_ids":["sha256:1","sha256:2"]},
        "history":[{"created_by":"base 1"},{"created_by":"base 2"}]}"#;
    std::fs::write(&base_config, cfg).unwrap();
    let out = run(Command::new(bin())
        .arg("commit")
        .arg("--upper")
        .arg(&upper)
        .args(lowers)
        .args(["--gzip", "--image", "test:v1", "--oci"])
        .arg(&oci)
        .arg("--base-config")
        .arg(&base_config));
    let text = show(&out.stdout);
    assert_eq!(field(&text, "diff_id"), sha256_file(&layer), "same tree, same diff_id");
    let digest = field(&text, "digest");
    let blobs = oci.join("blobs/sha256");
    assert_eq!(sha256_file(&blobs.join(&digest["sha256:".len()..])), digest);

    // Unpack the image's three layers like an unpacker would; same tree again.
    let manifest_digest = field(&text, "manifest");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&manifest_digest["sha256:".len()..])).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    let rootfs = r.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    for l in layers {
        assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        let d = l["digest"].as_str().unwrap();
        let f = std::fs::File::open(blobs.join(&d["sha256:".len()..])).unwrap();
        apply_tar(flate2::read::GzDecoder::new(f), &rootfs, false);
    }
    assert_same_tree(&want, &snapshot(&rootfs));

    skopeo_check(&oci, "test:v1", &field(&text, "diff_id"), &digest);
}

fn skopeo_check(oci: &Path, name: &str, diff_id: &str, digest: &str) {
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("skipped skopeo check: skopeo is not installed (apt-get install skopeo)");
        return;
    }
    let r = format!("oci:{}:{name}", oci.display());
    let out = run(Command::new("skopeo").args(["inspect", &r]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{v:#}");
    assert_eq!(layers[2], digest);
    assert_eq!(v["Os"], "linux");
    let out = run(Command::new("skopeo").args(["inspect", "--config", &r]));
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["rootfs"]["diff_ids"][2], diff_id, "{c:#}");
    assert_eq!(c["history"].as_array().unwrap().len(), 3);
    assert_eq!(c["history"][0]["created_by"], "base 1");
    assert_eq!(c["config"]["Cmd"][0], "/bin/sh", "base config carried over");
    // skopeo can also copy it out (reads and verifies every blob).
    let dir = oci.with_file_name("copied");
    run(Command::new("skopeo").args(["copy", &r, &format!("dir:{}", dir.display())]));
    // and convert it for `docker load`.
    let archive = oci.with_file_name("docker.tar");
    run(Command::new("skopeo").args(["copy", &r, &format!("docker-archive:{}:test:v1", archive.display())]));
    assert!(std::fs::metadata(&archive).unwrap().len() > 0);
}
