//! Long work interrupted: the registry killed in the middle of a download (clear error,
//! nothing half-written, the next run resumes with an HTTP Range request), Ctrl-C and
//! SIGTERM during a download and during an unpack (exit 130 / 143, nothing mounted, no
//! cache entry, no temp leftovers), for the registry and for the local stores that unpack
//! (OCI layout, docker-save archive).
//!
//! Downloads go through a relay that slows answers down, so that "in the middle" is a
//! state the test waits for (bytes in the partial file), not a moment it guesses.

mod common;
mod registry_support;

use common::rng::Rng;
use common::synth::{self, Comp, E, Image};
use registry_support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The shared `um` with stdout dropped and stderr captured (the tests read its lines).
fn um_piped(home: &Path) -> Command {
    let mut c = um(home);
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// An image with one layer holding `size` random bytes (incompressible: the blob is as big).
fn big_image(dir: &Path, size: usize) -> PathBuf {
    let mut rng = Rng(42);
    let mut data = vec![0u8; size];
    for c in data.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    let layout = dir.join("big-layout");
    synth::write_oci(&layout, &[Image::new(&["big"], vec![vec![E::File("blob.bin".into(), data, 0o644)]])], |_| Comp::Gzip);
    layout
}

/// An image whose layer has `n` small files: cheap to download, slow to unpack.
fn many_files(n: usize) -> Image {
    let mut l = vec![synth::dir("d")];
    for i in 0..n {
        l.push(E::File(format!("d/f{i:06}"), format!("{i}").into_bytes(), 0o644));
    }
    Image::new(&["many"], vec![l])
}

/// Wait (bounded) until `cond` holds; panics with `what` otherwise.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Wait (bounded) for the child to exit; returns its code and stderr.
fn finish(mut c: Child) -> (Option<i32>, String) {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            let mut e = String::new();
            use std::io::Read;
            c.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            return (st.code(), e);
        }
        if Instant::now() > end {
            let _ = c.kill();
            panic!("unionmount did not stop");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(c: &Child, sig: i32) {
    // SAFETY-free: kill(1) is enough here.
    let st = Command::new("kill").arg(format!("-{sig}")).arg(c.id().to_string()).status().unwrap();
    assert!(st.success());
}

/// Bytes in the partial downloads of `cache`.
fn partial_bytes(cache: &Path) -> u64 {
    std::fs::read_dir(cache.join("registry/partial/sha256"))
        .map(|d| d.flatten().map(|e| e.metadata().map(|m| m.len()).unwrap_or(0)).sum())
        .unwrap_or(0)
}

fn count(dir: PathBuf) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Nothing half-written: no layer entry, no unpack or temp file left, nothing mounted.
fn nothing_left(cache: &Path, mnt: &Path) {
    assert_eq!(count(cache.join("layers/sha256")), 0, "no layer entry");
    assert_eq!(count(cache.join("tmp")), 0, "no unpack left in tmp/");
    assert_eq!(count(cache.join("registry/tmp")), 0, "no temp file left");
    assert!(!common::overlay_harness::is_mounted(mnt), "nothing mounted");
}

#[test]
fn registry_killed_mid_download_then_resume_with_range() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mut reg = Registry::start(&t.path().join("reg"), RegAuth::None, None);
    skopeo_copy(&format!("oci:{}:big", big_image(t.path(), 4 << 20).display()), &format!("docker://{}/big:1", reg.host()), &[]);
    let proxy = Proxy::start(reg.port, 1 << 20);
    let (cache, mnt) = (t.path().join("cache"), t.path().join("mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    let r = format!("docker://{}/big:1", proxy.host());
    let child = um_piped(t.path()).arg("--cache").arg(&cache).arg(&r).arg(&mnt).spawn().unwrap();
    wait_for("a partial download", || partial_bytes(&cache) > 256 << 10);
    reg.kill();
    let (code, e) = finish(child);
    assert_eq!(code, Some(1), "{e}");
    let line = e.lines().find(|l| l.starts_with("unionmount:")).unwrap_or_default();
    assert!(line.contains("partial download is kept") && line.contains("run the command again"), "{e}");
    nothing_left(&cache, &mnt);
    let kept = partial_bytes(&cache);
    assert!(kept > 256 << 10, "the partial download is kept ({kept} bytes)");

    // The registry is back: the next mount resumes where the partial ends.
    reg.restart();
    proxy.rate.store(0, std::sync::atomic::Ordering::SeqCst);
    let o = um_piped(t.path()).arg("--cache").arg(&cache).arg(&r).arg(&mnt).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = Command::new("umount").arg(&mnt).status();
    let ranges = proxy.seen().ranges;
    assert!(ranges.iter().any(|h| h.to_ascii_lowercase().starts_with(&format!("range: bytes={kept}-"))), "Range from {kept}: {ranges:?}");
    assert_eq!(partial_bytes(&cache), 0, "no partial left once complete");
    assert_eq!(count(cache.join("layers/sha256")), 1);
}

#[test]
fn sigint_and_sigterm_during_a_download() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&t.path().join("reg"), RegAuth::None, None);
    skopeo_copy(&format!("oci:{}:big", big_image(t.path(), 4 << 20).display()), &format!("docker://{}/big:1", reg.host()), &[]);
    let proxy = Proxy::start(reg.port, 512 << 10);
    let (cache, mnt) = (t.path().join("cache"), t.path().join("mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    let r = format!("docker://{}/big:1", proxy.host());
    let mut last = 0;
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let child = um_piped(t.path()).arg("--cache").arg(&cache).arg(&r).arg(&mnt).spawn().unwrap();
        wait_for("more downloaded bytes", || partial_bytes(&cache) > last + (64 << 10));
        kill(&child, sig);
        let (got, e) = finish(child);
        assert_eq!(got, Some(code), "signal {sig}: {e}");
        assert!(e.contains("interrupted by SIG") && e.contains("nothing was mounted"), "{e}");
        nothing_left(&cache, &mnt);
        last = partial_bytes(&cache);
        assert!(last > 0, "the partial download stays to resume");
    }
}

/// Ctrl-C while a layer is being unpacked (its temp dir exists): exit 130, the temp dir
/// removed, no layer entry, nothing mounted; for the registry and for the two local
/// stores that unpack into the cache.
#[test]
fn sigint_during_an_unpack_every_store() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = many_files(30_000);
    let layout = t.path().join("many-layout");
    synth::write_oci(&layout, std::slice::from_ref(&img), |_| Comp::Gzip);
    let archive = t.path().join("many-save.tar");
    synth::write_save(&archive, std::slice::from_ref(&img));
    let reg = Registry::start(&t.path().join("reg"), RegAuth::None, None);
    skopeo_copy(&format!("oci:{}:many", layout.display()), &format!("docker://{}/many:1", reg.host()), &[]);
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("registry", vec![format!("docker://{}/many:1", reg.host())]),
        ("oci-layout", vec!["--store".into(), layout.display().to_string(), "many".into()]),
        ("docker-archive", vec!["--store".into(), archive.display().to_string(), "many:latest".into()]),
    ];
    for (name, args) in cases {
        let (cache, mnt) = (t.path().join(format!("cache-{name}")), t.path().join(format!("mnt-{name}")));
        std::fs::create_dir_all(&mnt).unwrap();
        let child = um_piped(t.path()).arg("--cache").arg(&cache).args(&args).arg(&mnt).spawn().unwrap();
        wait_for("an unpack in progress", || count(cache.join("tmp")) > 0 || common::overlay_harness::is_mounted(&mnt));
        assert!(!common::overlay_harness::is_mounted(&mnt), "{name}: the unpack was too quick to interrupt");
        kill(&child, libc::SIGINT);
        let (code, e) = finish(child);
        assert_eq!(code, Some(130), "{name}: {e}");
        assert!(e.contains("interrupted by SIGINT"), "{name}: {e}");
        nothing_left(&cache, &mnt);
    }
}

/// The digest of the first layer of image `tag` in an OCI layout.
fn layer_digest(layout: &Path, tag: &str) -> String {
    let read = |p: PathBuf| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let idx = read(layout.join("index.json"));
    let m = idx["manifests"].as_array().unwrap().iter().find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag).unwrap();
    let hex = m["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let man = read(layout.join("blobs/sha256").join(hex));
    man["layers"][0]["digest"].as_str().unwrap().to_string()
}

/// Two mounts of one image at once into one cache: both succeed, the layer goes over the
/// wire once (the second waits on the first's locked partial download) and is unpacked once.
#[test]
fn two_pulls_at_once_share_one_download() {
    if skip(true) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::start(&t.path().join("reg"), RegAuth::None, None);
    let layout = big_image(t.path(), 2 << 20);
    skopeo_copy(&format!("oci:{}:big", layout.display()), &format!("docker://{}/big:1", reg.host()), &["--preserve-digests"]);
    let layer = layer_digest(&layout, "big");
    let proxy = Proxy::start(reg.port, 1 << 20);
    let cache = t.path().join("cache");
    let r = format!("docker://{}/big:1", proxy.host());
    let mnts = [t.path().join("m1"), t.path().join("m2")];
    let children: Vec<Child> = mnts
        .iter()
        .map(|m| {
            std::fs::create_dir_all(m).unwrap();
            um_piped(t.path()).arg("--cache").arg(&cache).arg(&r).arg(m).spawn().unwrap()
        })
        .collect();
    for c in children {
        let (code, e) = finish(c);
        assert_eq!(code, Some(0), "{e}");
    }
    for m in &mnts {
        assert!(common::overlay_harness::is_mounted(m), "{} mounted", m.display());
        let _ = Command::new("umount").arg(m).status();
    }
    assert_eq!(count(cache.join("layers/sha256")), 1, "one layer entry");
    assert_eq!(partial_bytes(&cache), 0, "no partial left");
    let gets: Vec<String> = proxy.seen().requests.into_iter().filter(|l| l.contains(&layer)).collect();
    assert_eq!(gets.len(), 1, "the layer is downloaded once: {gets:?}");
}
