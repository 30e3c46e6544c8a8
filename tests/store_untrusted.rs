//! Stores built by an attacker (issue 10), in every format that has descriptors or ids:
//! descriptor digests that are paths, blobs that are symlinks or fifos, sizes that lie,
//! one bad index entry among good ones, deep paths in error lines. Nothing outside the
//! store may be opened (an inotify watch on a canary directory says so), nothing from an
//! attacker's path may be unpacked, and every error is one short line with no file content.

mod common;
mod untrusted_support;

use serde_json::json;
use std::path::{Path, PathBuf};
use untrusted_support::*;
use unionmount::store;

/// The descriptor stores: an OCI layout directory, the same as a tar, and a Docker ≥ 25
/// `docker save` tar (OCI layout plus manifest.json naming blobs by path).
#[derive(Debug, Clone, Copy)]
enum Form {
    Dir,
    Tar,
    SaveOci,
}
const FORMS: [Form; 3] = [Form::Dir, Form::Tar, Form::SaveOci];

/// Turn a hand-built layout into the store `form` and return its path.
fn finish(l: &Layout, form: Form, tmp: &Path, tag: &str) -> PathBuf {
    l.write();
    match form {
        Form::Dir => l.dir.clone(),
        Form::Tar => {
            let f = tmp.join(format!("{}.tar", l.dir.file_name().unwrap().to_string_lossy()));
            l.tar_to(&f);
            f
        }
        Form::SaveOci => {
            // manifest.json points at the first entry's config and layers by path.
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(l.blob(l.entries[0]["digest"].as_str().unwrap())).unwrap()).unwrap();
            let as_path = |d: &serde_json::Value| {
                let d = d["digest"].as_str().unwrap();
                match d.strip_prefix("sha256:") {
                    Some(h) if h.len() == 64 => format!("blobs/sha256/{h}"),
                    _ => d.to_string(),
                }
            };
            let layers: Vec<String> = m["layers"].as_array().unwrap().iter().map(as_path).collect();
            let save = json!([{"Config": as_path(&m["config"]), "RepoTags": [tag], "Layers": layers}]);
            std::fs::write(l.dir.join("manifest.json"), serde_json::to_vec(&save).unwrap()).unwrap();
            let f = tmp.join(format!("{}.tar", l.dir.file_name().unwrap().to_string_lossy()));
            l.tar_to(&f);
            f
        }
    }
}

#[test]
fn layer_digests_that_are_paths_are_refused_and_nothing_outside_is_read() {
    let t = tempfile::tempdir().unwrap();
    let mut c = Canary::new(t.path());
    let evil_diff = sha(&c.evil_bytes);
    let n = c.evil_bytes.len() as u64;
    let store_parent = t.path().join("stores");
    let hostile = [
        c.evil_tar.display().to_string(),
        Canary::climb(&store_parent.join("x"), &c.evil_tar),
        format!("sha256:{}", Canary::climb(Path::new("blobs/sha256"), &c.evil_tar)),
        "sha256:../../../outside/evil.tar".to_string(),
        c.secret.display().to_string(),
    ];
    for form in FORMS {
        for (i, h) in hostile.iter().enumerate() {
            let what = format!("{form:?} layer digest {h}");
            let mut l = Layout::new(&store_parent.join(format!("{form:?}{i}")));
            let cfg = config(std::slice::from_ref(&evil_diff));
            let cd = l.put(&cfg);
            let m = l.manifest(desc(CONFIG, &cd, cfg.len() as u64), vec![desc(LAYER_TAR, h, n)]);
            l.add(m, "evil:1");
            let s = finish(&l, form, t.path(), "evil:1");
            let cache = t.path().join(format!("cache-{form:?}{i}"));
            let e = resolve(&s, &cache, "evil:1").expect_err(&what);
            assert_clean_error(&e, &what);
            assert!(!cached(&cache, &evil_diff), "{what}: the attacker's tar was unpacked");
            c.assert_untouched(&what);
        }
    }
}

#[test]
fn legacy_docker_save_paths_stay_inside_the_archive() {
    let t = tempfile::tempdir().unwrap();
    let mut c = Canary::new(t.path());
    let evil_diff = sha(&c.evil_bytes);
    let cfg = config(std::slice::from_ref(&evil_diff));
    let abs = c.evil_tar.display().to_string();
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!([{"Config": "c.json", "RepoTags": ["evil:1"], "Layers": [abs]}]), "absolute layer path"),
        (json!([{"Config": "c.json", "RepoTags": ["evil:1"], "Layers": [Canary::climb(t.path(), &c.evil_tar)]}]), "../ layer path"),
        (json!([{"Config": c.secret.display().to_string(), "RepoTags": ["evil:1"], "Layers": []}]), "absolute config path"),
        (json!([{"Config": "../../../../outside/secret", "RepoTags": ["evil:1"], "Layers": []}]), "../ config path"),
    ];
    for (i, (m, what)) in cases.iter().enumerate() {
        let f = t.path().join(format!("save{i}.tar"));
        write_save(&f, m, &[("c.json", &cfg)]);
        let cache = t.path().join(format!("cache{i}"));
        let e = resolve(&f, &cache, "evil:1").expect_err(what);
        let msg = assert_clean_error(&e, what);
        assert!(msg.contains("no such member") || msg.contains("missing"), "{what}: {msg}");
        assert!(!cached(&cache, &evil_diff), "{what}: unpacked");
        c.assert_untouched(what);
    }
}

#[test]
fn blobs_that_are_symlinks_fifos_or_directories_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut c = Canary::new(t.path());
    // The manifest names a config of the secret's size whose blob is a symlink to it:
    // following it would print the file's digest ("content has digest …") or parse it.
    let secret_digest = sha(b"some other config");
    let secret_len = untrusted_support::SECRET.len() as u64;
    for form in [Form::Dir, Form::Tar] {
        let what = format!("{form:?} config blob symlink");
        let mut l = Layout::new(&t.path().join(format!("sym-{form:?}")));
        let (_, ld) = l.valid_image("x");
        let m = l.manifest(desc(CONFIG, &secret_digest, secret_len), vec![desc(LAYER_TAR, &ld, 0)]);
        std::os::unix::fs::symlink(&c.secret, l.blob(&secret_digest)).unwrap();
        l.add(m, "app:1");
        let s = finish(&l, form, t.path(), "app:1");
        let e = resolve(&s, &t.path().join("cache"), "app:1").expect_err(&what);
        let msg = assert_clean_error(&e, &what);
        if let Form::Dir = form {
            assert!(msg.contains("symlink"), "{what}: {msg}");
        }
        c.assert_untouched(&what);
    }
    // The whole blobs/ directory a symlink to a directory outside.
    let l = Layout::new(&t.path().join("blobsdir"));
    let outside_blobs = c.dir.join("sub");
    let (m, _) = l.valid_image("y");
    let mut l = l;
    l.add(m, "app:1");
    l.write();
    let real = l.dir.join("blobs");
    std::fs::rename(&real, t.path().join("moved-blobs")).unwrap();
    std::os::unix::fs::symlink(&outside_blobs, &real).unwrap();
    let e = resolve(&l.dir, &t.path().join("cache"), "app:1").unwrap_err();
    assert!(assert_clean_error(&e, "blobs symlink").contains("symlink"), "{e}");
    c.assert_untouched("blobs/ a symlink");
    // A fifo as the manifest blob: refused at once, never waited on.
    let mut l = Layout::new(&t.path().join("fifo"));
    let (m, _) = l.valid_image("z");
    let md = m["digest"].as_str().unwrap().to_string();
    std::fs::remove_file(l.blob(&md)).unwrap();
    unionmount::sys::store_ops::mknod(&l.blob(&md), unionmount::sys::store_ops::NodeKind::Fifo, 0o644, 0, 0).unwrap();
    l.add(m, "app:1");
    l.write();
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = l.dir.clone();
    let cache = t.path().join("cache");
    std::thread::spawn(move || tx.send(resolve(&dir, &cache, "app:1").map(|_| ())).unwrap());
    let r = rx.recv_timeout(std::time::Duration::from_secs(120)).expect("resolving a fifo blob blocked");
    let e = r.unwrap_err();
    assert!(assert_clean_error(&e, "fifo").contains("fifo"), "{e}");
    // A directory where a blob should be.
    let mut l = Layout::new(&t.path().join("dirblob"));
    let (m, _) = l.valid_image("w");
    let md = m["digest"].as_str().unwrap().to_string();
    std::fs::remove_file(l.blob(&md)).unwrap();
    std::fs::create_dir(l.blob(&md)).unwrap();
    l.add(m, "app:1");
    l.write();
    let e = resolve(&l.dir, &t.path().join("cache"), "app:1").unwrap_err();
    assert_clean_error(&e, "directory blob");
}

#[test]
fn declared_sizes_bound_every_read() {
    let t = tempfile::tempdir().unwrap();
    let mut c = Canary::new(t.path());
    // (A docker save's manifest.json has no sizes: its reads are bounded by the tar headers.)
    for form in [Form::Dir, Form::Tar] {
        let build = |name: &str, edit: &dyn Fn(&Layout, &mut serde_json::Value, &mut serde_json::Value)| {
            let l = Layout::new(&t.path().join(format!("{name}-{form:?}")));
            let (m, _) = l.valid_image("content");
            let mut man: serde_json::Value = serde_json::from_slice(&std::fs::read(l.blob(m["digest"].as_str().unwrap())).unwrap()).unwrap();
            let mut entry = m.clone();
            edit(&l, &mut entry, &mut man);
            let bytes = serde_json::to_vec(&man).unwrap();
            if entry["digest"] == m["digest"] {
                entry["digest"] = json!(l.put(&bytes));
                if entry["size"] == m["size"] {
                    entry["size"] = json!(bytes.len());
                }
            }
            let mut l = l;
            l.add(entry, "app:1");
            finish(&l, form, t.path(), "app:1")
        };
        let cases: Vec<(&str, PathBuf, &str)> = vec![
            ("manifest of 10^12 bytes", build("huge", &|_, e, _| e["size"] = json!(1_000_000_000_000u64)), "more than the"),
            ("manifest one byte short", build("short", &|_, e, _| e["size"] = json!(e["size"].as_u64().unwrap() - 1)), "bytes"),
            ("config size off", build("cfg", &|_, _, m| m["config"]["size"] = json!(m["config"]["size"].as_u64().unwrap() + 1)), "bytes"),
            ("layer smaller than declared", build("lsmall", &|_, _, m| m["layers"][0]["size"] = json!(m["layers"][0]["size"].as_u64().unwrap() + 512)), "bytes"),
            ("layer larger than declared", build("llarge", &|_, _, m| m["layers"][0]["size"] = json!(m["layers"][0]["size"].as_u64().unwrap() - 512)), "bytes"),
            ("no size", build("nosize", &|_, _, m| { m["layers"][0].as_object_mut().unwrap().remove("size"); }), "size"),
        ];
        for (what, s, want) in cases {
            let what = format!("{form:?} {what}");
            let cache = t.path().join(format!("cache-{what}"));
            let e = resolve(&s, &cache, "app:1").expect_err(&what);
            let msg = assert_clean_error(&e, &what);
            assert!(msg.contains(want), "{what}: {msg}");
            assert!(!cache.join("layers/sha256").exists() || std::fs::read_dir(cache.join("layers/sha256")).unwrap().count() == 0, "{what}: cached");
        }
    }
    // A metadata file beyond the cap is refused without being read into memory.
    let mut l = Layout::new(&t.path().join("bigindex"));
    let (m, _) = l.valid_image("x");
    l.add(m, "app:1");
    l.write();
    std::fs::File::options().write(true).open(l.dir.join("index.json")).unwrap().set_len(65 << 20).unwrap();
    let e = resolve(&l.dir, &t.path().join("cache"), "app:1").unwrap_err();
    assert!(assert_clean_error(&e, "big index").contains("larger than"), "{e}");
    c.assert_untouched("sizes");
}

#[test]
fn one_bad_index_entry_spoils_only_its_references() {
    let t = tempfile::tempdir().unwrap();
    let mut c = Canary::new(t.path());
    for form in FORMS {
        if let Form::SaveOci = form {
            continue; // manifest.json: tested with legacy archives below
        }
        let mut l = Layout::new(&t.path().join(format!("idx-{form:?}")));
        let (good, _) = l.valid_image("good");
        l.add(good, "app:1");
        l.add(desc(MANIFEST, &c.secret.display().to_string(), 10), "bad:1");
        l.add(desc(MANIFEST, &format!("sha256:{}", "0".repeat(64)), 10), "gone:1");
        l.add(json!({"digest": 5, "annotations": {"org.opencontainers.image.ref.name": "shape:1"}}), "");
        l.add(json!("not even an object"), "");
        let s = finish(&l, form, t.path(), "app:1");
        let cache = t.path().join(format!("cache-{form:?}"));
        let img = resolve(&s, &cache, "app:1").unwrap_or_else(|e| panic!("{form:?}: a good entry fails because of bad ones: {e}"));
        assert_eq!(img.layers.len(), 1);
        for bad in ["bad:1", "gone:1", "shape:1"] {
            let e = resolve(&s, &cache, bad).expect_err(bad);
            assert_clean_error(&e, bad);
        }
        let kind = store::detect(&s).unwrap();
        let listed = store::Store::open(&s, kind).unwrap().listing().unwrap();
        assert_eq!(listed.images.len(), 1, "{form:?}");
        assert_eq!(listed.broken.len(), 4, "{form:?}");
        c.assert_untouched("index entries");
    }
    // Legacy docker save: a manifest.json entry of the wrong shape.
    let good_layer = evil_layer();
    let cfg = config(&[sha(&good_layer)]);
    let f = t.path().join("save.tar");
    write_save(
        &f,
        &json!([{"Config": "c.json", "RepoTags": ["app:1"], "Layers": ["l/layer.tar"]},
                {"Config": 7, "RepoTags": ["bad:1"]},
                {"Config": "missing.json", "RepoTags": ["gone:1"], "Layers": []}]),
        &[("c.json", &cfg), ("l/layer.tar", &good_layer)],
    );
    let cache = t.path().join("cache-save");
    assert_eq!(resolve(&f, &cache, "app:1").unwrap().layers.len(), 1);
    assert_clean_error(&resolve(&f, &cache, "bad:1").unwrap_err(), "save bad");
    assert_clean_error(&resolve(&f, &cache, "gone:1").unwrap_err(), "save gone");
}

#[test]
fn docker_and_containers_storage_ids_and_symlinks_stay_inside() {
    use common::synth::{self, Image, dir, file};
    let t = tempfile::tempdir().unwrap();
    let mut c = Canary::new(t.path());
    let cache = t.path().join("cache");
    let ims = || vec![Image::new(&["app:1"], vec![vec![dir("d"), file("d/f", "x")]])];
    // Docker: a layer directory that is a symlink to a directory outside.
    let d = t.path().join("docker");
    let b = synth::write_docker(&d, &ims()).remove(0);
    let layer = d.join("overlay2").join(&b.cache_ids[0]);
    std::fs::remove_dir_all(&layer).unwrap();
    std::os::unix::fs::symlink(&c.dir, &layer).unwrap();
    std::fs::create_dir_all(c.dir.join("diff")).ok();
    c.events();
    let e = resolve(&d, &cache, "app:1").unwrap_err();
    assert!(assert_clean_error(&e, "docker layer symlink").contains("symlink"), "{e}");
    // Docker: the config a symlink to the secret, and an id in repositories.json that
    // climbs out; the good name still resolves.
    let d = t.path().join("docker2");
    let b = synth::write_docker(&d, &ims()).remove(0);
    let repos = d.join("image/overlay2/repositories.json");
    let mut r: serde_json::Value = serde_json::from_slice(&std::fs::read(&repos).unwrap()).unwrap();
    r["Repositories"]["evil"] = json!({"evil:1": Canary::climb(&d, &c.secret)});
    std::fs::write(&repos, serde_json::to_vec(&r).unwrap()).unwrap();
    assert!(resolve(&d, &cache, "app:1").is_ok());
    assert_clean_error(&resolve(&d, &cache, "evil:1").unwrap_err(), "docker repositories id");
    std::fs::remove_file(&b.config_path).unwrap();
    std::os::unix::fs::symlink(&c.secret, &b.config_path).unwrap();
    let e = resolve(&d, &cache, "app:1").unwrap_err();
    assert!(assert_clean_error(&e, "docker config symlink").contains("symlink"), "{e}");
    // containers-storage: the layer directory and the config symlinks; a layer id that
    // climbs out.
    let s = t.path().join("cs");
    let b = synth::write_cstorage(&s, &ims()).remove(0);
    let ld = s.join("overlay").join(&b.layer_ids[0]);
    std::fs::remove_dir_all(&ld).unwrap();
    std::os::unix::fs::symlink(&c.dir, &ld).unwrap();
    let e = resolve(&s, &cache, "app:1").unwrap_err();
    assert!(assert_clean_error(&e, "cstorage layer symlink").contains("symlink"), "{e}");
    let s = t.path().join("cs2");
    let b = synth::write_cstorage(&s, &ims()).remove(0);
    std::fs::remove_file(&b.config_path).unwrap();
    std::os::unix::fs::symlink(&c.secret, &b.config_path).unwrap();
    let e = resolve(&s, &cache, "app:1").unwrap_err();
    assert!(assert_clean_error(&e, "cstorage config symlink").contains("symlink"), "{e}");
    let lj = s.join("overlay-layers/layers.json");
    let txt = std::fs::read_to_string(&lj).unwrap().replace(&b.layer_ids[0], &Canary::climb(&s, &c.dir));
    std::fs::write(&lj, txt).unwrap();
    assert_clean_error(&resolve(&s, &cache, "app:1").unwrap_err(), "cstorage climbing id");
    c.assert_untouched("docker and containers-storage");
}

#[test]
fn error_lines_stay_short_for_deep_paths_and_huge_values() {
    let t = tempfile::tempdir().unwrap();
    // A layer entry 10,000 components deep that escapes at the end.
    let deep = format!("{}{}x", "a/".repeat(10_000), "../".repeat(10_001));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_pax_extensions([("path", deep.as_bytes())]).unwrap();
    h.set_path("placeholder").unwrap();
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let mut l = Layout::new(&t.path().join("deep"));
    let ld = l.put(&layer);
    let cfg = config(std::slice::from_ref(&ld));
    let cd = l.put(&cfg);
    let m = l.manifest(desc(CONFIG, &cd, cfg.len() as u64), vec![desc(LAYER_TAR, &ld, layer.len() as u64)]);
    l.add(m, "deep:1");
    // A huge digest string and a huge ref name beside it.
    let huge = format!("sha256:{}", "../".repeat(30_000));
    l.add(desc(MANIFEST, &huge, 1), &"n".repeat(50_000));
    l.write();
    let cache = t.path().join("cache");
    let e = resolve(&l.dir, &cache, "deep:1").unwrap_err();
    let msg = assert_clean_error(&e, "deep path");
    assert!(msg.len() < 600 && msg.contains("escapes"), "{} bytes: {msg}", msg.len());
    let e = resolve(&l.dir, &cache, "nope:1").unwrap_err();
    let msg = assert_clean_error(&e, "huge value");
    assert!(msg.len() < 1200, "{} bytes: {msg}", msg.len());
    // A store path deep enough to be cut in the middle.
    let mut p = t.path().to_path_buf();
    for _ in 0..60 {
        p.push("dddddddddddddddddddddddddddddddddddddddddddddddddd");
    }
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("index.json"), "{").unwrap();
    let e = resolve(&p, &cache, "x").unwrap_err();
    let msg = assert_clean_error(&e, "deep store");
    assert!(msg.contains('…') && msg.len() < 600, "{msg}");
}

/// The watch these tests rely on sees an open, a read and a stat-free listing.
#[test]
fn the_canary_sees_what_is_opened() {
    let t = tempfile::tempdir().unwrap();
    let mut c = Canary::new(t.path());
    assert!(c.events().is_empty());
    let _ = std::fs::read(&c.evil_tar).unwrap();
    assert!(!c.events().is_empty(), "an open of a canary file went unseen");
    let _ = std::fs::read_dir(c.dir.join("sub")).unwrap().count();
    assert!(!c.events().is_empty(), "a listing of the canary went unseen");
    c.assert_untouched("after draining");
}

// ---------------------------------------------------------------------------------------
// Property: an attacker's string in any slot of any store never opens a path outside it.

/// Where the attacker's string goes.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// OCI layout (directory, or as a tar when `tar`): index digest, ref name, media
    /// type, manifest config digest, layer digest, config diff_id, layer blob symlink.
    Oci { tar: bool, field: u8 },
    /// Legacy docker save: Config, Layers[0], RepoTags[0].
    Save(u8),
    /// Docker root: repositories id, repositories name, cache-id, layerdb diff, config symlink.
    Docker(u8),
    /// containers-storage: image id, top layer, name, layer id, parent, diff-digest, layer symlink.
    CStorage(u8),
    /// The reference the user typed, against an OCI layout.
    Query,
}

fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![
        (any::<bool>(), 0u8..7).prop_map(|(tar, field)| Slot::Oci { tar, field }),
        (0u8..3).prop_map(Slot::Save),
        (0u8..5).prop_map(Slot::Docker),
        (0u8..7).prop_map(Slot::CStorage),
        Just(Slot::Query),
    ]
}

/// Attacker strings; `{SECRET}`, `{EVIL}`, `{DIR}`, `{UP}` (enough `../` to reach `/`)
/// and `{EVILDIFF}` (the evil tar's digest) are filled in per case.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,60}",
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "\\PC{0,20}".prop_map(|s| format!("sha256:{s}")),
        prop::sample::select(TARGETED).prop_map(str::to_string),
        // A targeted string with arbitrary text around it.
        ("\\PC{0,8}", prop::sample::select(TARGETED), "\\PC{0,8}").prop_map(|(a, t, b)| format!("{a}{t}{b}")),
    ]
}

fn fill(template: &str, c: &Canary, store: &Path) -> String {
    let up = "../".repeat(store.components().count() + 2);
    template
        .replace("{UP}", &up)
        .replace("{SECRET}", c.secret.to_str().unwrap().trim_start_matches(if template.contains("{UP}") { "/" } else { "" }))
        .replace("{EVIL}", c.evil_tar.to_str().unwrap().trim_start_matches(if template.contains("{UP}") { "/" } else { "" }))
        .replace("{DIR}", c.dir.to_str().unwrap())
        .replace("{EVILDIFF}", &sha(&c.evil_bytes))
}

/// A harmless one-file layer (inside the store).
fn benign_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_mtime(0);
    b.append_data(&mut h, "fine", &b"fine"[..]).unwrap();
    b.into_inner().unwrap()
}

/// A one-image OCI layout named `app:1` with `field` set to `v`. When the layer digest
/// is the attacker's, so is the config: its diff_id is that of the evil tar.
fn oci_with(l: &mut Layout, field: u8, v: &str) {
    let layer = benign_layer();
    let ld = l.put(&layer);
    let diff = match field {
        5 => v.to_string(),
        4 => sha(&evil_layer()),
        _ => ld.clone(),
    };
    let cfg = config(&[diff]);
    let cd = l.put(&cfg);
    let cdig = if field == 3 { v.to_string() } else { cd };
    let ldig = if field == 4 { v.to_string() } else { ld.clone() };
    let mut m = l.manifest(desc(CONFIG, &cdig, cfg.len() as u64), vec![desc(LAYER_TAR, &ldig, layer.len() as u64)]);
    if field == 0 {
        m["digest"] = json!(v);
    }
    if field == 2 {
        m["mediaType"] = json!(v);
    }
    if field == 6 {
        std::fs::remove_file(l.blob(&ld)).unwrap();
        let _ = std::os::unix::fs::symlink(v, l.blob(&ld)); // "" or NUL: left absent
    }
    l.add(m, if field == 1 { v } else { "app:1" });
}

fn check(r: Result<store::ResolvedImage, store::StoreError>, what: &str) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        let m = e.to_string();
        prop_assert!(!m.contains('\n'), "{what}: multi-line error: {m}");
        prop_assert!(m.len() < 1200, "{what}: {} byte error", m.len());
        prop_assert!(!m.contains("SECRETHASH"), "{what}: leaks the secret: {m}");
    }
    Ok(())
}

use proptest::prelude::*;

/// Build the store with the attacker's string in `slot`, resolve (and locate without
/// unpacking) every reference it may select, and check the canary and the error lines.
fn attack(slot: Slot, template: &str) -> Result<(), TestCaseError> {
    use common::synth::{self, Image, file};
    let t = tempfile::tempdir().unwrap();
    let mut c = Canary::new(t.path());
    let cache = t.path().join("cache");
    let root = t.path().join("store");
    let v = fill(template, &c, &root);
    let what = format!("{slot:?} = {v:?}");
    let mut refs = vec!["app:1".to_string()];
    let store_path = match slot {
        Slot::Oci { tar, field } => {
            let mut l = Layout::new(&root);
            oci_with(&mut l, field, &v);
            l.write();
            if field == 1 {
                refs.push(v.clone());
            }
            if tar {
                let f = t.path().join("layout.tar");
                l.tar_to(&f);
                f
            } else {
                root.clone()
            }
        }
        Slot::Query => {
            let mut l = Layout::new(&root);
            oci_with(&mut l, 9, "");
            l.write();
            refs = vec![v.clone()];
            root.clone()
        }
        Slot::Save(f) => {
            let layer = benign_layer();
            let cfg = config(&[if f == 1 { sha(&evil_layer()) } else { sha(&layer) }]);
            let mut e = json!({"Config": "c.json", "RepoTags": ["app:1"], "Layers": ["l/layer.tar"]});
            match f {
                0 => e["Config"] = json!(v),
                1 => e["Layers"][0] = json!(v),
                _ => { e["RepoTags"][0] = json!(v); refs.push(v.clone()); }
            }
            let p = t.path().join("save.tar");
            write_save(&p, &json!([e]), &[("c.json", &cfg), ("l/layer.tar", &layer)]);
            p
        }
        Slot::Docker(f) => {
            let b = synth::write_docker(&root, &[Image::new(&["app:1"], vec![vec![file("f", "x")]])]).remove(0);
            let img = root.join("image/overlay2");
            let repos = img.join("repositories.json");
            match f {
                0 => std::fs::write(&repos, serde_json::to_vec(&json!({"Repositories": {"app": {"app:1": v}}})).unwrap()).unwrap(),
                1 => {
                    std::fs::write(&repos, serde_json::to_vec(&json!({"Repositories": {"app": {v.clone(): b.id}}})).unwrap()).unwrap();
                    refs.push(v.clone());
                }
                2 | 3 => {
                    let db = img.join("layerdb/sha256").join(&b.layer_ids[0][7..]);
                    std::fs::write(db.join(if f == 2 { "cache-id" } else { "diff" }), &v).unwrap();
                }
                _ => {
                    std::fs::remove_file(&b.config_path).unwrap();
                    let _ = std::os::unix::fs::symlink(&v, &b.config_path); // "" or NUL: left absent
                }
            }
            root.clone()
        }
        Slot::CStorage(f) => {
            let b = synth::write_cstorage(&root, &[Image::new(&["app:1"], vec![vec![file("f", "x")]])]).remove(0);
            let ij = root.join("overlay-images/images.json");
            let lj = root.join("overlay-layers/layers.json");
            let mut im: serde_json::Value = serde_json::from_slice(&std::fs::read(&ij).unwrap()).unwrap();
            let mut ly: serde_json::Value = serde_json::from_slice(&std::fs::read(&lj).unwrap()).unwrap();
            match f {
                0 => im[0]["id"] = json!(v),
                1 => im[0]["layer"] = json!(v),
                2 => { im[0]["names"][0] = json!(v); refs.push(v.clone()); }
                3 => { ly[0]["id"] = json!(v); im[0]["layer"] = json!(v); }
                4 => ly[0]["parent"] = json!(v),
                5 => ly[0]["diff-digest"] = json!(v),
                _ => {
                    let d = root.join("overlay").join(&b.layer_ids[0]);
                    std::fs::remove_dir_all(&d).unwrap();
                    let _ = std::os::unix::fs::symlink(&v, &d); // "" or NUL: left absent
                }
            }
            std::fs::write(&ij, serde_json::to_vec(&im).unwrap()).unwrap();
            std::fs::write(&lj, serde_json::to_vec(&ly).unwrap()).unwrap();
            root.clone()
        }
    };
    c.events();
    for r in &refs {
        check(resolve(&store_path, &cache, r), &what)?;
        check(store::resolve_with(&query(&store_path, &cache, r), false), &what)?;
    }
    let ev = c.events();
    prop_assert!(ev.is_empty(), "{what}: files outside the store were touched: {ev:?}");
    prop_assert!(!cached(&cache, &sha(&c.evil_bytes)), "{what}: the attacker's tar was unpacked");
    Ok(())
}

/// The targeted strings (paths to the canary, climbing chains) in every slot.
const TARGETED: &[&str] = &[
    "{SECRET}", "{EVIL}", "{DIR}", "{DIR}/", "{UP}{SECRET}", "{UP}{EVIL}", "sha256:{UP}{SECRET}",
    "sha256:../../../../outside/secret", "sha512:{UP}{EVIL}", "{EVILDIFF}", "/proc/self/root{SECRET}",
    "/proc/self/fd/0", "/dev/zero", "..", ".", "", "/", "a/../../b", "sha256:", "-rf", "x\ny", "\u{0}",
];

fn all_slots() -> Vec<Slot> {
    let mut v = Vec::new();
    for field in 0..7 {
        v.push(Slot::Oci { tar: false, field });
        v.push(Slot::Oci { tar: true, field });
        v.push(Slot::CStorage(field));
    }
    v.extend((0..3).map(Slot::Save));
    v.extend((0..5).map(Slot::Docker));
    v.push(Slot::Query);
    v
}

#[test]
fn every_slot_refuses_every_targeted_string() {
    for slot in all_slots() {
        for t in TARGETED {
            if let Err(e) = attack(slot, t) {
                panic!("{e}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn attacker_strings_never_open_a_path_outside_the_store(slot in slot(), template in value()) {
        attack(slot, &template)?;
    }
}
