//! containerd's image store, end to end against a real containerd (started by the test with
//! its own root, state and socket): the fixture imported into `moby` and `k8s.io` mounts by
//! name, by the id `docker images` shows, by the config id and by digest, and the merged
//! tree equals `docker export`; namespaces take `moby` first and report ambiguity; an index
//! picks the host platform (`--platform` chooses); content-only images unpack into the
//! cache; a live mount survives imports; broken metadata is one clear line, never a panic;
//! and `images` finds the store through a Docker daemon's `/info`.

mod common;
mod containerd_harness;

use common::overlay_harness::kernel_overlay;
use common::tree;
use containerd_harness::{Containerd, fixture_export, fixture_save};
use std::path::{Path, PathBuf};
use std::process::Command;
use unionmount::store::{self, StoreError, StoreQuery};

const APP_CONFIG: &str = "sha256:dadb3b6384b75c6e5f9e75745e2bb2d4b38b6d8c01dcfa56536d8081605b571a";

fn q(root: &Path, cache: &Path, r: &str) -> StoreQuery {
    StoreQuery { reference: r.into(), store: Some(root.into()), cache: Some(cache.into()), ..Default::default() }
}

fn q_ns(root: &Path, cache: &Path, r: &str, ns: &str) -> StoreQuery {
    StoreQuery { namespace: Some(ns.into()), ..q(root, cache, r) }
}

/// The target digest of `name` in `ns`, as `ctr` reports it.
fn target(c: &Containerd, ns: &str, name: &str) -> String {
    let out = c.ctr(&["-n", ns, "images", "ls"]).unwrap();
    let line = out.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name} in {out}"));
    line.split_whitespace().find(|w| w.starts_with("sha256:")).unwrap().to_string()
}

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn can_fuse() -> bool {
    if !tree::is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("SKIP: FUSE mounts need root and /dev/fuse");
        return false;
    }
    true
}

fn mount(args: &[&std::ffi::OsStr], mnt: &Path) -> Result<Mounted, String> {
    std::fs::create_dir_all(mnt).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_unionmount")).args(args).arg(mnt).output().unwrap();
    if out.status.success() {
        Ok(Mounted(mnt.to_path_buf()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn is_mounted(p: &Path) -> bool {
    let m = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    m.lines().any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
}

#[test]
fn mounts_by_name_id_config_id_and_digest_like_docker_export() {
    let Some(c) = Containerd::start() else { return };
    if !can_fuse() {
        return;
    }
    c.import("moby", &fixture_save());
    let t = c.dir.join("t");
    let cache = t.join("cache");
    let app = target(&c, "moby", "docker.io/library/tiny:app");
    let export = tree::snapshot_tar(&fixture_export());
    let refs = [
        "tiny:app".to_string(),
        "docker.io/library/tiny:app".to_string(),
        "example.com/team/tiny:v1".to_string(),
        app[7..19].to_string(),
        APP_CONFIG[7..19].to_string(),
        format!("tiny@{app}"),
    ];
    let mut dirs = None;
    for (i, r) in refs.iter().enumerate() {
        let img = store::resolve(&q(&c.root, &cache, r)).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(img.id, app, "{r}: the id docker images shows is the target digest");
        assert_eq!(img.layers.len(), 5);
        let d: Vec<PathBuf> = img.layers.iter().map(|l| l.dir.clone()).collect();
        for l in &d {
            assert!(l.starts_with(c.root.join("io.containerd.snapshotter.v1.overlayfs/snapshots")), "{}", l.display());
        }
        if let Some(prev) = &dirs {
            assert_eq!(prev, &d, "{r}: same layers");
        }
        dirs = Some(d);
        let mnt = t.join(format!("mnt{i}"));
        let m = mount(&[os("--store"), c.root.as_os_str(), os("--cache"), cache.as_os_str(), os(r)], &mnt)
            .unwrap_or_else(|e| panic!("{r}: {e}"));
        let diffs = tree::compare(&export, &tree::snapshot_dir(&m.0), tree::DOCKER_INIT);
        assert!(diffs.is_empty(), "{r}: merged tree differs from docker export:\n{}", diffs.join("\n"));
    }
    assert!(!cache.join("layers").exists(), "unpacked snapshots are used as they are, nothing cached");
}

#[test]
fn namespaces_moby_first_then_one_image_or_an_error() {
    let Some(c) = Containerd::start() else { return };
    c.import("moby", &fixture_save());
    c.import("k8s.io", &fixture_save());
    let cache = c.dir.join("cache");
    let moby = store::resolve(&q(&c.root, &cache, "tiny:app")).unwrap();
    let k8s = store::resolve(&q_ns(&c.root, &cache, "tiny:app", "k8s.io")).unwrap();
    assert_eq!(moby.id, k8s.id, "the same image");
    assert_ne!(moby.layers[0].dir, k8s.layers[0].dir, "each namespace has its own snapshots");
    let again = store::resolve(&q_ns(&c.root, &cache, "tiny:app", "moby")).unwrap();
    assert_eq!(moby.layers[0].dir, again.layers[0].dir, "moby is searched first");
    // The same name for different images in two namespaces other than moby: an error.
    for (ns, src) in [("default", "docker.io/library/tiny:base"), ("k8s.io", "docker.io/library/tiny:app")] {
        if ns == "default" {
            c.import(ns, &fixture_save());
        }
        c.ctr(&["-n", ns, "images", "tag", src, "docker.io/library/dup:1"]).unwrap();
    }
    let e = store::resolve(&q(&c.root, &cache, "dup:1")).unwrap_err();
    assert!(matches!(e, StoreError::Ambiguous { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("default") && msg.contains("k8s.io") && msg.contains("--namespace") && !msg.contains('\n'), "{msg}");
    assert_eq!(store::resolve(&q_ns(&c.root, &cache, "dup:1", "default")).unwrap().layers.len(), 1);
    assert_eq!(store::resolve(&q_ns(&c.root, &cache, "dup:1", "k8s.io")).unwrap().layers.len(), 5);
    // Once moby has it, moby's wins.
    c.ctr(&["-n", "moby", "images", "tag", "docker.io/library/tiny:base", "docker.io/library/dup:1"]).unwrap();
    assert_eq!(store::resolve(&q(&c.root, &cache, "dup:1")).unwrap().layers.len(), 1);
    // An unknown namespace names the ones there are.
    let e = store::resolve(&q_ns(&c.root, &cache, "tiny:app", "nope")).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("moby") && e.contains("k8s.io"), "{e}");
}

#[test]
fn an_index_picks_the_host_platform_and_platform_chooses() {
    let Some(c) = Containerd::start() else { return };
    let save = fixture_save();
    c.import("moby", &save);
    c.ctr(&["-n", "moby", "images", "import", "--index-name", "docker.io/library/multi:1", save.to_str().unwrap()]).unwrap();
    let cache = c.dir.join("cache");
    let host = store::resolve(&q(&c.root, &cache, "multi:1"));
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let img = host.unwrap_or_else(|e| panic!("host platform linux/{arch}: {e}"));
    assert!(img.layers.len() == 1 || img.layers.len() == 5);
    let other = if arch == "amd64" { "linux/arm64" } else { "linux/amd64" };
    let e = store::resolve(&StoreQuery { platform: Some(other.into()), ..q(&c.root, &cache, "multi:1") }).unwrap_err().to_string();
    assert!(e.contains(other) && e.contains(&format!("linux/{arch}")) && e.contains("--platform"), "{e}");
    let ok = store::resolve(&StoreQuery { platform: Some(format!("linux/{arch}")), ..q(&c.root, &cache, "multi:1") });
    assert!(ok.is_ok());
    let e = store::resolve(&StoreQuery { platform: Some("linux".into()), ..q(&c.root, &cache, "multi:1") }).unwrap_err();
    assert!(e.to_string().contains("os/arch"), "{e}");
    // A single-platform image: --platform must name its platform.
    let e = store::resolve(&StoreQuery { platform: Some(other.into()), ..q(&c.root, &cache, "tiny:app") }).unwrap_err();
    assert!(e.to_string().contains(&format!("is linux/{arch}, not {other}")), "{e}");
    assert!(store::resolve(&StoreQuery { platform: Some(format!("linux/{arch}")), ..q(&c.root, &cache, "tiny:app") }).is_ok());
}

#[test]
fn images_not_unpacked_for_overlayfs_come_from_content_through_the_cache() {
    let Some(c) = Containerd::start() else { return };
    let save = fixture_save();
    c.ctr(&["-n", "default", "images", "import", "--no-unpack", save.to_str().unwrap()]).unwrap();
    c.ctr(&["-n", "native", "images", "import", "--snapshotter", "native", save.to_str().unwrap()]).unwrap();
    let cache = c.dir.join("cache");
    let export = tree::snapshot_tar(&fixture_export());
    for ns in ["default", "native"] {
        let img = store::resolve(&q_ns(&c.root, &cache, "tiny:app", ns)).unwrap_or_else(|e| panic!("{ns}: {e}"));
        assert_eq!(img.layers.len(), 5);
        for l in &img.layers {
            assert!(l.dir.starts_with(&cache), "{ns}: {} comes from the cache", l.dir.display());
        }
        let dirs: Vec<&Path> = img.layers.iter().map(|l| l.dir.as_path()).collect();
        match kernel_overlay(&dirs, None, &c.dir.join(format!("k-{ns}"))) {
            Ok(m) => {
                let diffs = tree::compare(&export, &tree::snapshot_dir(&m.mnt), tree::DOCKER_INIT);
                assert!(diffs.is_empty(), "{ns}:\n{}", diffs.join("\n"));
            }
            Err(e) => eprintln!("SKIP merged-tree check: {e}"),
        }
    }
    // inspect (no unpacking) of a not-yet-cached image reports where layers would go.
    let img = store::resolve_with(&q_ns(&c.root, &c.dir.join("empty-cache"), "tiny:app", "default"), false).unwrap();
    assert!(!img.layers[0].dir.exists());
}

#[test]
fn a_live_mount_survives_imports_into_its_store() {
    let Some(c) = Containerd::start() else { return };
    if !can_fuse() {
        return;
    }
    c.import("moby", &fixture_save());
    let mnt = c.dir.join("mnt");
    let cache = c.dir.join("cache");
    let m = mount(&[os("--store"), c.root.as_os_str(), os("--cache"), cache.as_os_str(), os("tiny:app")], &mnt).unwrap();
    let export = tree::snapshot_tar(&fixture_export());
    let before = tree::snapshot_dir(&m.0);
    for ns in ["k8s.io", "default", "moby"] {
        c.import(ns, &fixture_save());
        c.ctr(&["-n", ns, "images", "tag", "--force", "docker.io/library/tiny:base", "docker.io/library/tiny:app"]).unwrap();
        let now = tree::snapshot_dir(&m.0);
        assert_eq!(before, now, "after importing into {ns}");
    }
    assert!(tree::compare(&export, &before, tree::DOCKER_INIT).is_empty());
    // A new mount sees the retagged image: tiny:app is now tiny:base (one layer).
    let img = store::resolve(&q(&c.root, &cache, "tiny:app")).unwrap();
    assert_eq!(img.layers.len(), 1);
    drop(m);
}

fn replace_all(b: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= b.len() {
        if &b[i..i + from.len()] == from {
            b[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    n
}

/// Re-sign both meta pages of a bbolt file after editing them.
fn resign(b: &mut [u8], ps: usize) {
    for p in 0..2 {
        let o = p * ps + 16;
        let sum = unionmount::store::bbolt::fnv1a64(&b[o..o + 56]);
        b[o + 56..o + 64].copy_from_slice(&sum.to_le_bytes());
    }
}

#[test]
fn broken_metadata_is_one_clear_line_and_nothing_mounted() {
    let Some(mut c) = Containerd::start() else { return };
    c.import("moby", &fixture_save());
    c.stop();
    let (meta_p, snap_p) = (c.meta_db(), c.snap_db());
    let (meta, snap) = (std::fs::read(&meta_p).unwrap(), std::fs::read(&snap_p).unwrap());
    let ps = 4096;
    let m = unionmount::store::bbolt::read_meta(&&meta[..]).unwrap();
    assert_eq!(m.page_size as usize, ps);
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, bool, Edit)> = vec![
        ("meta.db truncated", true, Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 3))),
        ("meta.db bad checksums", true, Box::new(move |b: &mut Vec<u8>| {
            b[16 + 56] ^= 1;
            b[ps + 16 + 56] ^= 1;
        })),
        ("meta.db root page out of range", true, Box::new(move |b: &mut Vec<u8>| {
            for p in 0..2 {
                b[p * ps + 16 + 16..p * ps + 16 + 24].copy_from_slice(&(1u64 << 40).to_le_bytes());
            }
            resign(b, ps);
        })),
        ("meta.db root page a cycle", true, Box::new(move |b: &mut Vec<u8>| {
            let r = m.root as usize * ps;
            b[r + 8..r + 10].copy_from_slice(&1u16.to_le_bytes());
            b[r + 10..r + 12].copy_from_slice(&1u16.to_le_bytes());
            b[r + 16..r + 20].copy_from_slice(&16u32.to_le_bytes());
            b[r + 20..r + 24].copy_from_slice(&0u32.to_le_bytes());
            b[r + 24..r + 32].copy_from_slice(&m.root.to_le_bytes());
        })),
        ("image name not UTF-8", true, Box::new(|b: &mut Vec<u8>| {
            assert!(replace_all(b, b"tiny:app", b"tiny:ap\xff") > 0);
        })),
        ("metadata.db truncated", false, Box::new(|b: &mut Vec<u8>| b.truncate(5000))),
        ("snapshot not committed", false, Box::new(|b: &mut Vec<u8>| {
            assert!(replace_all(b, b"kind\x03", b"kind\x02") > 0);
        })),
        ("snapshot id not a number", false, Box::new(|b: &mut Vec<u8>| {
            // `id` values are one-byte uvarints here; a continuation bit with nothing after.
            let n = (1u8..=5).map(|i| replace_all(b, &[b'i', b'd', i], &[b'i', b'd', 0x80 | i])).sum::<usize>();
            assert!(n > 0);
        })),
    ];
    let cache = c.dir.join("cache");
    for (i, (what, in_meta, edit)) in cases.iter().enumerate() {
        let (path, orig) = if *in_meta { (&meta_p, &meta) } else { (&snap_p, &snap) };
        let mut b = orig.clone();
        edit(&mut b);
        std::fs::write(path, &b).unwrap();
        let e = store::resolve(&q(&c.root, &cache, "tiny:app")).unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.is_empty(), "{what}: {e}");
        eprintln!("{what}: {e}");
        if tree::is_root() && Path::new("/dev/fuse").exists() {
            let mnt = c.dir.join(format!("mnt{i}"));
            let err = mount(&[os("--store"), c.root.as_os_str(), os("--cache"), cache.as_os_str(), os("tiny:app")], &mnt)
                .err()
                .unwrap_or_else(|| panic!("{what}: mounted"));
            assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
            assert!(!is_mounted(&mnt), "{what}: nothing mounted");
        }
        std::fs::write(path, orig).unwrap();
    }
    store::resolve(&q(&c.root, &cache, "tiny:app")).expect("restored files resolve again");
    // A broken image record spoils only the references that name it.
    let mut b = meta.clone();
    assert!(replace_all(&mut b, b"digestsha256:1", b"digestsha256:Z") > 0);
    std::fs::write(&meta_p, &b).unwrap();
    let e = store::resolve(&q(&c.root, &cache, "tiny:app")).unwrap_err().to_string();
    assert!(e.contains("namespace moby") && e.contains("no valid target digest") && !e.contains('\n'), "{e}");
    assert_eq!(store::resolve(&q(&c.root, &cache, "tiny:base")).unwrap().layers.len(), 1);
    std::fs::write(&meta_p, &meta).unwrap();
}

fn mutate(base: &[u8], edits: &[(usize, u8)], hot: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    for &(at, v) in edits {
        b[at % hot.max(1)] = v;
    }
    b
}

#[test]
fn mutated_metadata_never_panics() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let Some(mut c) = Containerd::start() else { return };
    c.import("moby", &fixture_save());
    c.import("k8s.io", &fixture_save());
    c.stop();
    let (meta_p, snap_p) = (c.meta_db(), c.snap_db());
    let (meta, snap) = (std::fs::read(&meta_p).unwrap(), std::fs::read(&snap_p).unwrap());
    let hot = |b: &[u8]| {
        let m = unionmount::store::bbolt::read_meta(&b).unwrap();
        (m.high_water * m.page_size) as usize
    };
    let (hm, hs) = (hot(&meta), hot(&snap));
    let cache = c.dir.join("cache");
    let mut runner = TestRunner::new(Config { cases: 150, failure_persistence: None, ..Config::default() });
    let strat = (any::<bool>(), proptest::collection::vec((any::<usize>(), any::<u8>()), 1..10), any::<bool>());
    runner
        .run(&strat, |(which, edits, resign_metas)| {
            let (path, orig, h) = if which { (&meta_p, &meta, hm) } else { (&snap_p, &snap, hs) };
            let mut b = mutate(orig, &edits, h);
            if resign_metas {
                resign(&mut b, 4096);
            }
            std::fs::write(path, &b).unwrap();
            for r in ["tiny:app", "tiny:base", "dadb3b6384b7"] {
                match store::resolve_with(&q(&c.root, &cache, r), false) {
                    Ok(img) => prop_assert!(img.layers.len() <= 5),
                    Err(e) => prop_assert!(!e.to_string().contains('\n')),
                }
            }
            let _ = store::resolve_with(&q_ns(&c.root, &cache, "tiny:app", "k8s.io"), false);
            std::fs::write(path, orig).unwrap();
            Ok(())
        })
        .unwrap();
}

/// A stand-in for dockerd's API socket: answers `GET /info` the way dockerd 29 does (HTTP/1.1,
/// chunked), for a bounded number of connections.
fn fake_dockerd(sock: &Path, root_dir: &Path) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    let l = std::os::unix::net::UnixListener::bind(sock).unwrap();
    let body = serde_json::json!({
        "ID": "test", "Containers": 0, "Images": 3, "Driver": "overlayfs",
        "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
        "DockerRootDir": root_dir, "ServerVersion": "29.0.0",
        "Containerd": {"Address": "/var/run/docker/containerd/containerd.sock",
                       "Namespaces": {"Containers": "moby", "Plugins": "plugins.moby"}},
    })
    .to_string();
    std::thread::spawn(move || {
        for conn in l.incoming().take(8) {
            let Ok(mut s) = conn else { break };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let ok = req.starts_with(b"GET /info ") || req.starts_with(b"GET /v1.");
            let resp = if ok {
                let (a, b) = body.split_at(body.len() / 2);
                format!(
                    "HTTP/1.1 200 OK\r\nApi-Version: 1.52\r\nContent-Type: application/json\r\nServer: Docker/29.0.0 (linux)\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                    a.len(),
                    b.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
            };
            let _ = s.write_all(resp.as_bytes());
        }
    })
}

#[test]
fn a_docker_daemon_tells_where_its_containerd_store_is() {
    let tmp = tempfile::tempdir().unwrap();
    let docker_root = tmp.path().join("data/docker");
    let Some(c) = Containerd::start_at(&docker_root.join("containerd/daemon")) else { return };
    c.import("moby", &fixture_save());
    let sock = tmp.path().join("docker.sock");
    let _srv = fake_dockerd(&sock, &docker_root);
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_unionmount"))
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", sock.display()))
            .env("HOME", &home)
            .env_remove("XDG_DATA_HOME")
            .output()
            .unwrap()
    };
    let out = run(&["images"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(s.lines().any(|l| l.starts_with("tiny ") && l.contains("app") && l.contains("moby")), "{s}");
    let out = run(&["inspect", "--json", "tiny:app"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 5);
    assert!(v["store"].as_str().unwrap().ends_with("containerd/daemon"), "{v}");
}

#[test]
fn images_without_any_store_fails() {
    let defaults = ["/var/lib/docker", "/var/lib/containers/storage", "/var/lib/containerd", "/var/lib/docker/containerd/daemon"];
    if defaults.iter().any(|p| Path::new(p).exists()) {
        eprintln!("SKIP: this machine has a default image store");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_unionmount"))
        .arg("images")
        .env("DOCKER_HOST", format!("unix://{}/none.sock", tmp.path().display()))
        .env("HOME", tmp.path())
        .env_remove("XDG_DATA_HOME")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
}
