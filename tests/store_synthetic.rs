//! Synthetic stores written by the tests: many layers, several tags, short ids,
//! ambiguous prefixes, corrupt configs, wrong digests, missing dirs, hostile ids,
//! invalid JSON and wrong JSON shapes, in every format.

mod common;

use common::synth::{self, Comp, E, Image, Layer, dir, file};
use std::path::{Path, PathBuf};
use unionmount::store::{self, StoreError, StoreQuery};

fn q(store: &Path, cache: &Path, r: &str) -> StoreQuery {
    StoreQuery { reference: r.into(), store: Some(store.into()), cache: Some(cache.into()), ..Default::default() }
}

/// 120 layers: layer i adds `f/i`, rewrites `common`; layer 60 deletes `f/10`.
fn many_layers() -> Vec<Layer> {
    (0..120)
        .map(|i| {
            let mut l = vec![dir("f"), file(&format!("f/{i}"), &format!("layer {i}")), file("common", &i.to_string())];
            if i == 60 {
                l.push(E::Whiteout("f/10".into()));
            }
            l
        })
        .collect()
}

fn small(tag_content: &str) -> Vec<Layer> {
    vec![vec![dir("etc"), file("etc/base", "base")], vec![file("etc/app", tag_content)]]
}

fn images() -> Vec<Image> {
    vec![
        Image::new(&["big:latest", "example.com:5000/team/big:v1"], many_layers()),
        Image::new(&["app:1", "user/app:2"], small("one")),
        Image::new(&["localhost/local:dev"], small("two")),
    ]
}

/// Every format holding the same images; returns (name, store path, built).
fn all_formats(tmp: &Path) -> Vec<(&'static str, PathBuf, Vec<synth::Built>)> {
    all_formats_of(tmp, &images())
}

fn all_formats_of(tmp: &Path, ims: &[Image]) -> Vec<(&'static str, PathBuf, Vec<synth::Built>)> {
    let d = tmp.join("docker");
    let c = tmp.join("cs");
    let o = tmp.join("oci");
    let a = tmp.join("save.tar");
    vec![
        ("docker", d.clone(), synth::write_docker(&d, ims)),
        ("containers-storage", c.clone(), synth::write_cstorage(&c, ims)),
        ("oci", o.clone(), synth::write_oci(&o, ims, |i| [Comp::Gzip, Comp::Zstd, Comp::None][i % 3])),
        ("archive", a.clone(), synth::write_save(&a, ims)),
    ]
}

#[test]
fn resolves_every_format_by_every_reference() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    for (name, path, built) in all_formats(t.path()) {
        let big = &built[0];
        let refs = [
            "big",
            "big:latest",
            "docker.io/library/big",
            "example.com:5000/team/big:v1",
            &big.id[7..19],
            &big.id[7..],
            &big.id,
        ];
        for r in refs {
            let img = store::resolve(&q(&path, &cache, r)).unwrap_or_else(|e| panic!("{name} {r}: {e}"));
            assert_eq!(img.id, big.id, "{name} {r}");
            assert_eq!(img.layers.len(), 120, "{name} {r}");
            let want: Vec<String> = big.diff_ids.iter().rev().cloned().collect();
            let got: Vec<String> = img.layers.iter().map(|l| l.diff_id.to_string()).collect();
            assert_eq!(got, want, "{name}: top first");
            let want_ids: Vec<String> = big.layer_ids.iter().rev().cloned().collect();
            let got_ids: Vec<String> = img.layers.iter().map(|l| l.layer_id.clone()).collect();
            assert_eq!(got_ids, want_ids, "{name}: layer ids");
            // Top layer holds f/119 and common=119.
            assert_eq!(std::fs::read_to_string(img.layers[0].dir.join("common")).unwrap(), "119");
            assert!(img.layers[0].dir.join("f/119").exists());
            assert_eq!(img.layers[0].created_by.as_deref(), Some("step 119"), "{name}: history skips empty_layer");
            assert_eq!(img.layers[119].created_by.as_deref(), Some("step 0"));
        }
        let app = store::resolve(&q(&path, &cache, "app:1")).unwrap();
        assert_eq!(app.id, built[1].id);
        let app2 = store::resolve(&q(&path, &cache, "user/app:2")).unwrap();
        assert_eq!(app2.id, built[1].id);
        let local = store::resolve(&q(&path, &cache, "local:dev")).unwrap();
        assert_eq!(local.id, built[2].id, "{name}: short name finds localhost/");
        // Shared base layer: same directory for both small images.
        assert_eq!(app.layers[1].dir, local.layers[1].dir, "{name}");
        let e = store::resolve(&q(&path, &cache, "app")).unwrap_err();
        assert!(matches!(e, StoreError::ImageNotFound { .. }), "{name}: app:latest does not exist: {e}");
        assert!(e.to_string().contains("app:1"), "{name}: closest names: {e}");
    }
}

#[test]
fn whiteout_in_layer_60_is_visible_in_each_format() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let root = common::tree::is_root();
    for (name, path, _) in all_formats(t.path()) {
        let img = store::resolve(&q(&path, &cache, "big")).unwrap();
        let l60 = &img.layers[119 - 60].dir;
        let dev = l60.join("f/10");
        let wh = l60.join("f/.wh.10");
        use std::os::unix::fs::FileTypeExt;
        let is_dev = std::fs::symlink_metadata(&dev).map(|m| m.file_type().is_char_device()).unwrap_or(false);
        if root {
            assert!(is_dev, "{name}: char device whiteout at {}", dev.display());
        } else {
            assert!(wh.exists(), "{name}: .wh. whiteout kept without root");
        }
    }
}

#[test]
fn ambiguous_prefix_lists_candidates() {
    let layers = small("x");
    let (c1, c2) = synth::colliding_created(&layers, 4);
    let mut a = Image::new(&["one:1"], layers.clone());
    a.created = c1;
    let mut b = Image::new(&["two:2"], layers);
    b.created = c2;
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let d = t.path().join("docker");
    let built = synth::write_docker(&d, &[a.clone(), b.clone()]);
    let o = t.path().join("oci");
    synth::write_oci(&o, &[a, b], |_| Comp::Gzip);
    let prefix = &built[0].id[7..11];
    assert_eq!(prefix, &built[1].id[7..11]);
    for s in [&d, &o] {
        let e = store::resolve(&q(s, &cache, prefix)).unwrap_err();
        assert!(matches!(e, StoreError::Ambiguous { .. }), "{e}");
        let m = e.to_string();
        assert!(m.contains(&built[0].id[7..19]) && m.contains(&built[1].id[7..19]), "{m}");
        assert!(m.contains("one:1") && m.contains("two:2"), "{m}");
        // A longer prefix is unique.
        let long = &built[0].id[7..30];
        assert_eq!(store::resolve(&q(s, &cache, long)).unwrap().id, built[0].id);
    }
}

#[test]
fn docker_corruptions_fail_with_one_clear_line() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let fresh = |n: &str| {
        let d = t.path().join(n);
        let b = synth::write_docker(&d, &[Image::new(&["app:1"], small("one"))]);
        (d, b.into_iter().next().unwrap())
    };
    let check = |d: &Path, want: &[&str]| {
        let e = store::resolve(&q(d, &cache, "app:1")).unwrap_err();
        let m = e.to_string();
        assert!(!m.contains('\n'), "one line: {m}");
        for w in want {
            assert!(m.contains(w), "{m:?} should mention {w:?}");
        }
        e
    };
    // Config bytes changed: sha256 no longer matches the id.
    let (d, b) = fresh("cfg");
    let mut c = std::fs::read(&b.config_path).unwrap();
    c.push(b' ');
    std::fs::write(&b.config_path, c).unwrap();
    assert!(matches!(check(&d, &["sha256", "expected"]), StoreError::Corrupt { .. }));
    // layerdb diff differs from the config's diff_id.
    let (d, b) = fresh("diff");
    let db = d.join("image/overlay2/layerdb/sha256").join(&b.layer_ids[1][7..]);
    std::fs::write(db.join("diff"), &b.diff_ids[0]).unwrap();
    check(&d, &["diff", &b.diff_ids[1]]);
    // Missing layer directory.
    let (d, b) = fresh("missing");
    let ld = d.join("overlay2").join(&b.cache_ids[0]).join("diff");
    std::fs::remove_dir_all(&ld).unwrap();
    let e = check(&d, &["app:1", &b.layer_ids[0], &ld.display().to_string()]);
    assert!(matches!(e, StoreError::LayerMissing { .. }));
    // Missing layerdb entry.
    let (d, b) = fresh("nolayerdb");
    std::fs::remove_dir_all(d.join("image/overlay2/layerdb/sha256").join(&b.layer_ids[1][7..])).unwrap();
    assert!(matches!(check(&d, &[&b.layer_ids[1]]), StoreError::LayerMissing { .. }));
    // Hostile cache-ids.
    for (i, bad) in ["../x", "a/b", "..", "", "x\0y"].iter().enumerate() {
        let (d, b) = fresh(&format!("hostile{i}"));
        let db = d.join("image/overlay2/layerdb/sha256").join(&b.layer_ids[0][7..]);
        std::fs::write(db.join("cache-id"), bad).unwrap();
        let e = store::resolve(&q(&d, &cache, "app:1")).unwrap_err();
        assert!(
            e.to_string().contains("cache-id") || matches!(e, StoreError::LayerMissing { .. }),
            "{bad:?}: {e}"
        );
    }
    // Invalid JSON and wrong shapes in repositories.json.
    for (i, bad) in [&b"{"[..], b"[]", b"{\"Repositories\":[]}", b"{\"Repositories\":{\"a\":{\"a:1\":5}}}", b"\xff\xfe"].iter().enumerate() {
        let (d, _) = fresh(&format!("json{i}"));
        std::fs::write(d.join("image/overlay2/repositories.json"), bad).unwrap();
        let e = check(&d, &["repositories.json"]);
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }
    // A config of the wrong shape (valid JSON, id matches).
    let (d, b) = fresh("shape");
    let bad = br#"{"rootfs":{"diff_ids":"nope"}}"#;
    let id = synth::sha(bad);
    let cp = d.join("image/overlay2/imagedb/content/sha256").join(&id[7..]);
    std::fs::write(&cp, bad).unwrap();
    std::fs::write(
        d.join("image/overlay2/repositories.json"),
        format!(r#"{{"Repositories":{{"app":{{"app:1":"{id}"}}}}}}"#),
    )
    .unwrap();
    let _ = b;
    check(&d, &["expected an image config", "invalid type"]);
    // Huge metadata file: refused, not read into memory.
    let (d, _) = fresh("huge");
    let f = std::fs::File::create(d.join("image/overlay2/repositories.json")).unwrap();
    f.set_len(65 << 20).unwrap();
    check(&d, &["larger than"]);
}

#[test]
fn cstorage_corruptions() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let fresh = |n: &str| {
        let d = t.path().join(n);
        let b = synth::write_cstorage(&d, &[Image::new(&["localhost/app:1"], small("one"))]);
        (d, b.into_iter().next().unwrap())
    };
    let err = |d: &Path| store::resolve(&q(d, &cache, "app:1")).unwrap_err();
    let (d, b) = fresh("ok");
    assert_eq!(store::resolve(&q(&d, &cache, "app:1")).unwrap().layers.len(), 2);
    let img = store::resolve(&q(&d, &cache, &format!("localhost/app@{}", b.manifest_digest))).unwrap();
    assert_eq!(img.id, b.id, "name@digest");
    // Missing layer dir.
    std::fs::remove_dir_all(d.join("overlay").join(&b.layer_ids[0]).join("diff")).unwrap();
    assert!(matches!(err(&d), StoreError::LayerMissing { .. }));
    // Hostile layer ids and a parent loop.
    for (i, bad) in ["../../etc", "a/b", "."].iter().enumerate() {
        let (d, b) = fresh(&format!("hostile{i}"));
        let lj = d.join("overlay-layers/layers.json");
        let s = std::fs::read_to_string(&lj).unwrap().replace(&b.layer_ids[0], bad);
        std::fs::write(&lj, s).unwrap();
        let e = err(&d).to_string();
        assert!(e.contains("layers.json") && e.contains("invalid"), "{e}");
    }
    let (d, b) = fresh("loop");
    let lj = d.join("overlay-layers/layers.json");
    let v = format!(
        r#"[{{"id":"{0}","parent":"{1}"}},{{"id":"{1}","parent":"{0}"}}]"#,
        b.layer_ids[0], b.layer_ids[1]
    );
    std::fs::write(&lj, v).unwrap();
    assert!(err(&d).to_string().contains("loops"));
    // Invalid JSON / wrong shape.
    for (i, bad) in ["[", "{}", r#"[{"id":5}]"#, r#"[{"id":"x","names":"notalist"}]"#].iter().enumerate() {
        let (d, _) = fresh(&format!("json{i}"));
        std::fs::write(d.join("overlay-images/images.json"), bad).unwrap();
        let e = err(&d);
        assert!(e.to_string().contains("images.json"), "{e}");
    }
    // Config tampered.
    let (d, b) = fresh("cfg");
    std::fs::write(&b.config_path, b"{}").unwrap();
    assert!(err(&d).to_string().contains("sha256"));
}

#[test]
fn oci_and_archive_verify_blobs_and_leave_no_partial_cache() {
    let t = tempfile::tempdir().unwrap();
    let ims = [Image::new(&["app:1"], small("one"))];
    // Corrupt a gzip layer blob in an OCI layout: digest mismatch.
    let o = t.path().join("oci");
    let b = synth::write_oci(&o, &ims, |_| Comp::Gzip).remove(0);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(o.join("blobs/sha256").join(&b.manifest_digest[7..])).unwrap()).unwrap();
    let top = m["layers"][1]["digest"].as_str().unwrap().to_string();
    let blob = o.join("blobs/sha256").join(&top[7..]);
    // Same uncompressed content, different compression: a size other than declared.
    let gz = std::fs::read(&blob).unwrap();
    let raw = synth::layer_tar(&ims[0].layers[1]);
    std::fs::write(&blob, synth::compress(&raw, Comp::Zstd)).unwrap();
    let cache = t.path().join("cache1");
    let e = store::resolve(&q(&o, &cache, "app:1")).unwrap_err();
    assert!(e.to_string().contains("its descriptor says"), "{e}");
    // Same size and uncompressed content (the gzip header's mtime changed): diff_id fine,
    // blob digest wrong.
    let mut other = gz.clone();
    other[4] ^= 1;
    std::fs::write(&blob, &other).unwrap();
    let e = store::resolve(&q(&o, &cache, "app:1")).unwrap_err();
    assert!(e.to_string().contains("blob sha256"), "{e}");
    assert!(!cache.join("layers/sha256").join(&b.diff_ids[1][7..]).exists(), "not cached");
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0, "tmp cleaned");
    // Missing blob.
    std::fs::remove_file(&blob).unwrap();
    let e = store::resolve(&q(&o, &cache, "app:1")).unwrap_err();
    assert!(matches!(e, StoreError::LayerMissing { .. }), "{e}");
    // Archive with a layer whose content does not match its diff_id.
    let a = t.path().join("save.tar");
    let built = synth::write_save(&a, &ims).remove(0);
    let bytes = std::fs::read(&a).unwrap();
    let needle = b"one";
    let pos = bytes.windows(3).position(|w| w == needle).unwrap();
    let mut bad = bytes.clone();
    bad[pos] = b'X';
    std::fs::write(&a, bad).unwrap();
    let cache = t.path().join("cache2");
    let e = store::resolve(&q(&a, &cache, "app:1")).unwrap_err();
    assert!(e.to_string().contains("diff_id"), "{e}");
    assert!(!cache.join("layers/sha256").join(&built.diff_ids[1][7..]).exists());
    // Invalid manifest.json / index.json.
    let o2 = t.path().join("oci2");
    synth::write_oci(&o2, &ims, |_| Comp::None);
    std::fs::write(o2.join("index.json"), r#"{"manifests":[{"digest":"sha256:../../etc/passwd"}]}"#).unwrap();
    let e = store::resolve(&q(&o2, &cache, "app:1")).unwrap_err();
    assert!(e.to_string().contains("invalid digest"), "{e}");
    std::fs::write(o2.join("index.json"), "[1,2]").unwrap();
    assert!(store::resolve(&q(&o2, &cache, "app:1")).unwrap_err().to_string().contains("expected an OCI index"));
}

/// A layer tar built by hand, entry by entry (for hostile names the builder refuses).
fn raw_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link) in entries {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            g.name[..name.len()].copy_from_slice(name.as_bytes());
            g.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(if *kind == tar::EntryType::Regular { 4 } else { 0 });
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        if *kind == tar::EntryType::Regular {
            let mut block = [0u8; 512];
            block[..4].copy_from_slice(b"evil");
            out.extend_from_slice(&block);
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn hostile_layer_entries_never_escape() {
    use tar::EntryType as T;
    let t = tempfile::tempdir().unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let o = outside.display().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("dotdot", raw_tar(&[("../evil", T::Regular, "")]), "escapes"),
        ("nested dotdot", raw_tar(&[("a/../../evil", T::Regular, "")]), "escapes"),
        ("absolute", raw_tar(&[(&format!("{o}/evil"), T::Regular, "")]), "absolute"),
        ("symlink parent", raw_tar(&[("a", T::Symlink, &o), ("a/evil", T::Regular, "")]), "not a directory"),
        ("hardlink out", raw_tar(&[("h", T::Link, "../outside/x")]), "escapes"),
        ("hardlink absolute", raw_tar(&[("h", T::Link, &format!("{o}/x"))]), "absolute"),
        ("hardlink via symlink", raw_tar(&[("a", T::Symlink, &o), ("h", T::Link, "a/x")]), "not a directory"),
        ("whiteout dotdot", raw_tar(&[(".wh...", T::Regular, "")]), ""),
    ];
    std::fs::write(outside.join("x"), "victim").unwrap();
    for (name, tarb, why) in cases {
        let dest = t.path().join(format!("dest-{}", name.replace(' ', "-")));
        std::fs::create_dir(&dest).unwrap();
        let r = unionmount::store::unpack::unpack(
            &mut &tarb[..],
            &dest,
            unionmount::store::unpack::Options { privileged: false },
        );
        if name.starts_with("whiteout") {
            // Unprivileged, `.wh...` is just an odd file name inside the layer.
            assert!(r.is_ok() || r.is_err());
        } else {
            let e = r.expect_err(name).to_string();
            assert!(e.contains(why), "{name}: {e}");
        }
        assert!(!outside.join("evil").exists(), "{name}: escaped");
        assert!(!t.path().join("evil").exists(), "{name}: escaped");
        assert_eq!(std::fs::read_to_string(outside.join("x")).unwrap(), "victim");
    }
    // Through the whole path: an OCI layout with a hostile layer fails and caches nothing.
    let layout = t.path().join("oci");
    let ims = [Image::new(&["app:1"], vec![vec![file("ok", "ok")]])];
    let b = synth::write_oci(&layout, &ims, |_| Comp::None).remove(0);
    let evil = raw_tar(&[("a", T::Symlink, &o), ("a/evil", T::Regular, "")]);
    let _ = b;
    let evil_diff = synth::sha(&evil);
    // Rewrite the image around the evil layer (config + manifest + index).
    let put = |data: &[u8]| {
        let d = synth::sha(data);
        std::fs::write(layout.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    };
    let ld = put(&evil);
    let cfg = synth::config_json(std::slice::from_ref(&evil_diff), "2024-01-01T00:00:00Z");
    let cd = put(&cfg);
    let man = serde_json::to_vec(&serde_json::json!({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":cd,"size":cfg.len()},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":ld,"size":evil.len()}]})).unwrap();
    let md = put(&man);
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&serde_json::json!({"schemaVersion":2,"manifests":[
        {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":md,"size":man.len(),
         "annotations":{"org.opencontainers.image.ref.name":"evil"}}]})).unwrap()).unwrap();
    let cache = t.path().join("cache");
    let e = store::resolve(&q(&layout, &cache, "evil")).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    assert!(!outside.join("evil").exists());
    assert!(!cache.join("layers/sha256").join(&evil_diff[7..]).exists());
}

#[test]
fn unprivileged_unpack_keeps_oci_whiteouts_and_hard_links() {
    let l: Layer = vec![
        dir("d"),
        file("d/f", "content"),
        E::Hardlink("d/h".into(), "d/f".into()),
        E::Symlink("s".into(), "/etc/passwd".into()),
        E::Whiteout("d/gone".into()),
        E::Opaque("d".into()),
        E::Dir("ro".into(), 0o555),
        file("ro/inside", "x"),
    ];
    let tarb = synth::layer_tar(&l);
    let t = tempfile::tempdir().unwrap();
    for privileged in [false, true] {
        if privileged && !common::tree::is_root() {
            eprintln!("SKIP privileged unpack: not root");
            continue;
        }
        let dest = t.path().join(format!("p{privileged}"));
        std::fs::create_dir(&dest).unwrap();
        let st = unionmount::store::unpack::unpack(&mut &tarb[..], &dest, unionmount::store::unpack::Options { privileged })
            .unwrap();
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let f = std::fs::metadata(dest.join("d/f")).unwrap();
        assert_eq!(f.ino(), std::fs::metadata(dest.join("d/h")).unwrap().ino(), "hard link kept");
        assert_eq!(std::fs::read_link(dest.join("s")).unwrap(), Path::new("/etc/passwd"));
        assert_eq!(std::fs::metadata(dest.join("ro")).unwrap().permissions().mode() & 0o777, 0o555);
        assert_eq!(std::fs::read_to_string(dest.join("ro/inside")).unwrap(), "x");
        let opq = xattr::get(dest.join("d"), "trusted.overlay.opaque").unwrap_or(None);
        if privileged {
            assert_eq!(st.whiteouts, 2);
            assert!(std::fs::symlink_metadata(dest.join("d/gone")).unwrap().file_type().is_char_device());
            assert_eq!(opq.as_deref(), Some(&b"y"[..]));
            assert!(!dest.join("d/.wh.gone").exists());
        } else {
            assert!(dest.join("d/.wh.gone").is_file());
            assert!(dest.join("d/.wh..wh..opq").is_file());
            assert!(opq.is_none());
        }
        std::fs::set_permissions(dest.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn concurrent_resolves_share_one_cache_entry() {
    let t = tempfile::tempdir().unwrap();
    let o = t.path().join("oci");
    synth::write_oci(&o, &[Image::new(&["app:1"], small("one"))], |_| Comp::Gzip);
    let cache = t.path().join("cache");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (o, cache) = (o.clone(), cache.clone());
            std::thread::spawn(move || store::resolve(&q(&o, &cache, "app:1")).map(|i| i.layers[0].dir.clone()))
        })
        .collect();
    let dirs: Vec<PathBuf> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    assert!(dirs.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(std::fs::read_dir(cache.join("layers/sha256")).unwrap().count(), 2);
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_to_string(dirs[0].join("etc/app")).unwrap(), "one");
    // A broken entry (meta.json lost) is replaced, not fatal.
    let entry = dirs[0].parent().unwrap().to_path_buf();
    std::fs::remove_file(entry.join("meta.json")).unwrap();
    let again = store::resolve(&q(&o, &cache, "app:1")).unwrap();
    assert_eq!(again.layers[0].dir, dirs[0]);
    assert!(entry.join("meta.json").exists());
    use std::os::unix::fs::PermissionsExt;
    for d in ["layers", "tmp"] {
        let m = std::fs::metadata(cache.join(d)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o700, "{d} is private (setuid files and devices inside)");
    }
}

#[test]
fn bad_store_paths_and_default_search() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let e = store::resolve(&q(t.path(), &cache, "x")).unwrap_err();
    assert!(e.to_string().contains("not a Docker root"), "{e}");
    let e = store::resolve(&q(&t.path().join("nope"), &cache, "x")).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let e = store::resolve(&q(t.path(), &cache, "Bad Name")).unwrap_err();
    assert!(matches!(e, StoreError::InvalidReference(_)), "{e}");
    // Default search: a rootless containers-storage under $XDG_DATA_HOME (through the
    // binary so the environment change stays in the child).
    let data = t.path().join("data");
    synth::write_cstorage(&data.join("containers/storage"), &[Image::new(&["localhost/only-here:1"], small("z"))]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unionmount"))
        .args(["inspect", "--cache"])
        .arg(&cache)
        .arg("only-here:1")
        .env("XDG_DATA_HOME", &data)
        .output()
        .unwrap();
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{so} {}", String::from_utf8_lossy(&out.stderr));
    assert!(so.contains("containers-storage"), "{so}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unionmount"))
        .args(["images", "--json"])
        .env("XDG_DATA_HOME", &data)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().any(|i| i["names"][0] == "localhost/only-here:1"), "{v}");
}

#[test]
fn newer_docker_save_nested_index_and_digests() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let ims = [Image::new(&["app:1", "example.com/x/app:2"], small("one")), Image::new(&["other:1"], small("two"))];
    // Docker >= 25 archive: manifest.json into an OCI layout.
    let a = t.path().join("new.tar");
    let built = synth::write_save_oci(&a, &ims, true);
    for r in ["app:1", "example.com/x/app:2", &built[0].id[7..19]] {
        let img = store::resolve(&q(&a, &cache, r)).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(img.id, built[0].id);
        assert_eq!(img.layers.len(), 2);
        assert_eq!(std::fs::read_to_string(img.layers[0].dir.join("etc/app")).unwrap(), "one");
    }
    // A plain OCI layout tar (no manifest.json): names from ref annotations.
    let o = t.path().join("oci.tar");
    let built = synth::write_save_oci(&o, &ims, false);
    assert_eq!(store::resolve(&q(&o, &cache, "other:1")).unwrap().id, built[1].id);
    // name@digest in an OCI layout: the manifest digest.
    let dir = t.path().join("oci");
    let built = synth::write_oci(&dir, &ims, |_| Comp::Gzip);
    let r = format!("app@{}", built[0].manifest_digest);
    assert_eq!(store::resolve(&q(&dir, &cache, &r)).unwrap().id, built[0].id);
    let wrong = format!("app@sha256:{}", "1".repeat(64));
    assert!(store::resolve(&q(&dir, &cache, &wrong)).is_err());
    // Nested multi-platform index: the entry for this machine is chosen, the decoy ignored.
    synth::nest_index(&dir);
    assert_eq!(store::resolve(&q(&dir, &cache, "app:1")).unwrap().id, built[0].id);
    assert_eq!(store::resolve(&q(&dir, &cache, "other:1")).unwrap().id, built[1].id);
    // --platform chooses there too: the s390x decoy (its manifest is not in the layout) is
    // taken and fails; this machine's platform named explicitly is the image.
    let host = format!("linux/{}", unionmount::store::platform::host_arch());
    let on = |p: &str| StoreQuery { platform: Some(p.into()), ..q(&dir, &cache, "app:1") };
    assert!(store::resolve(&on("linux/s390x")).is_err());
    assert_eq!(store::resolve(&on(&host)).unwrap().id, built[0].id);
    assert!(store::resolve(&on("linux")).unwrap_err().to_string().contains("os/arch"));
    // Docker `repo@digest` entries in repositories.json.
    let d = t.path().join("docker");
    let built = synth::write_docker(&d, &ims);
    let dg = format!("sha256:{}", "ab".repeat(32));
    let rj = d.join("image/overlay2/repositories.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&rj).unwrap()).unwrap();
    v["Repositories"]["app"][format!("app@{dg}")] = serde_json::json!(built[0].id);
    std::fs::write(&rj, serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(store::resolve(&q(&d, &cache, &format!("app@{dg}"))).unwrap().id, built[0].id);
    assert_eq!(store::resolve(&q(&d, &cache, &format!("docker.io/library/app@{dg}"))).unwrap().id, built[0].id);
    assert!(store::resolve(&q(&d, &cache, &format!("other@{dg}"))).is_err());
}

#[test]
fn garbage_everywhere_is_an_error_not_a_panic() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let garbage: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00, 0x80],
        b"null".to_vec(),
        b"42".to_vec(),
        b"\"str\"".to_vec(),
        b"{\"manifests\":{}}".to_vec(),
        b"[{\"Config\":5}]".to_vec(),
        b"[{\"Config\":\"../../../../etc/passwd\",\"Layers\":[\"/etc/shadow\"]}]".to_vec(),
        b"{\"Repositories\":{\"a\":{\"a:1\":\"sha256:zz\"}}}".to_vec(),
        b"[{\"id\":\"../x\",\"layer\":\"../y\",\"names\":[\"a:1\"]}]".to_vec(),
        vec![b'['; 100_000],
    ];
    for (gi, g) in garbage.iter().enumerate() {
        let base = t.path().join(format!("g{gi}"));
        for (name, path, _) in all_formats_of(&base, &images()[1..]) {
            let targets: Vec<PathBuf> = match name {
                "docker" => vec![path.join("image/overlay2/repositories.json")],
                "containers-storage" => vec![path.join("overlay-images/images.json"), path.join("overlay-layers/layers.json")],
                "oci" => vec![path.join("index.json")],
                _ => vec![],
            };
            for f in &targets {
                let keep = std::fs::read(f).unwrap();
                std::fs::write(f, g).unwrap();
                let r = store::resolve(&q(&path, &cache, "app:1"));
                if let Err(e) = &r {
                    assert!(!e.to_string().contains('\n'), "{name}: {e}");
                }
                std::fs::write(f, keep).unwrap();
            }
            if name == "archive" {
                // Replace manifest.json inside a fresh archive by rewriting the whole tar.
                let a = base.join("bad.tar");
                let mut b = tar::Builder::new(std::fs::File::create(&a).unwrap());
                let mut h = tar::Header::new_ustar();
                h.set_size(g.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, "manifest.json", &g[..]).unwrap();
                b.finish().unwrap();
                drop(b);
                assert!(store::resolve(&q(&a, &cache, "app:1")).is_err());
                // A truncated archive.
                let full = std::fs::read(&path).unwrap();
                std::fs::write(&a, &full[..full.len() / 2]).unwrap();
                let _ = store::resolve(&q(&a, &cache, "app:1"));
            }
        }
    }
}
