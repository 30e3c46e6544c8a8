//! Synthetic stores: write a Docker root, a containers-storage root, an OCI layout or a
//! `docker save` archive holding given images, each built from a list of layer trees.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One entry of a layer.
#[derive(Debug, Clone)]
pub enum E {
    File(String, Vec<u8>, u32),
    Dir(String, u32),
    Symlink(String, String),
    Hardlink(String, String),
    /// Deletes the named path from lower layers.
    Whiteout(String),
    /// Makes the named directory opaque (it must also be listed as a Dir).
    Opaque(String),
}

pub fn file(p: &str, c: &str) -> E {
    E::File(p.into(), c.as_bytes().to_vec(), 0o644)
}
pub fn dir(p: &str) -> E {
    E::Dir(p.into(), 0o755)
}

pub type Layer = Vec<E>;

/// An image to write.
#[derive(Debug, Clone)]
pub struct Image {
    pub tags: Vec<String>,
    pub layers: Vec<Layer>,
    /// Goes into the config; vary it to vary the id.
    pub created: String,
}

impl Image {
    pub fn new(tags: &[&str], layers: Vec<Layer>) -> Image {
        Image { tags: tags.iter().map(|s| s.to_string()).collect(), layers, created: "2024-01-02T03:04:05Z".into() }
    }
}

/// What was written for one image.
#[derive(Debug, Clone)]
pub struct Built {
    pub id: String,
    pub diff_ids: Vec<String>,
    /// Docker chain ids / containers-storage layer ids / diff_ids, bottom first.
    pub layer_ids: Vec<String>,
    pub config_path: PathBuf,
    /// Docker cache-ids (Docker root only), bottom first.
    pub cache_ids: Vec<String>,
    pub manifest_digest: String,
}

pub fn sha(b: &[u8]) -> String {
    format!("sha256:{}", Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect::<String>())
}
fn hexof(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

/// The layer as an OCI tar (whiteouts as `.wh.` entries).
pub fn layer_tar(l: &Layer) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let hdr = |t: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(t);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h
    };
    for e in l {
        match e {
            E::File(p, c, m) => {
                let mut h = hdr(tar::EntryType::Regular, *m, c.len() as u64);
                b.append_data(&mut h, p, &c[..]).unwrap();
            }
            E::Dir(p, m) => {
                let mut h = hdr(tar::EntryType::Directory, *m, 0);
                b.append_data(&mut h, format!("{p}/"), &[][..]).unwrap();
            }
            E::Symlink(p, t) => {
                let mut h = hdr(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Hardlink(p, t) => {
                let mut h = hdr(tar::EntryType::Link, 0o644, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Whiteout(p) => {
                let (d, n) = p.rsplit_once('/').map(|(d, n)| (format!("{d}/"), n)).unwrap_or((String::new(), p));
                let mut h = hdr(tar::EntryType::Regular, 0o644, 0);
                b.append_data(&mut h, format!("{d}.wh.{n}"), &[][..]).unwrap();
            }
            E::Opaque(p) => {
                let mut h = hdr(tar::EntryType::Regular, 0o644, 0);
                b.append_data(&mut h, format!("{p}/.wh..wh..opq"), &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Write the layer's tree into `dir` the way an overlay store holds it: whiteouts as
/// char devices 0/0 and opaque xattrs when root, `.wh.` files otherwise.
pub fn materialize(l: &Layer, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let root = super::tree::is_root();
    for e in l {
        match e {
            E::File(p, c, m) => {
                let t = dir.join(p);
                std::fs::create_dir_all(t.parent().unwrap()).unwrap();
                std::fs::write(&t, c).unwrap();
                std::fs::set_permissions(&t, std::fs::Permissions::from_mode(*m)).unwrap();
            }
            E::Dir(p, m) => {
                let t = dir.join(p);
                std::fs::create_dir_all(&t).unwrap();
                std::fs::set_permissions(&t, std::fs::Permissions::from_mode(*m)).unwrap();
            }
            E::Symlink(p, t) => std::os::unix::fs::symlink(t, dir.join(p)).unwrap(),
            E::Hardlink(p, t) => std::fs::hard_link(dir.join(t), dir.join(p)).unwrap(),
            E::Whiteout(p) => {
                let t = dir.join(p);
                std::fs::create_dir_all(t.parent().unwrap()).unwrap();
                if root {
                    unionmount::sys::store_ops::mknod(&t, unionmount::sys::store_ops::NodeKind::Char, 0, 0, 0).unwrap();
                } else {
                    let n = t.file_name().unwrap().to_str().unwrap().to_string();
                    std::fs::write(t.with_file_name(format!(".wh.{n}")), "").unwrap();
                }
            }
            E::Opaque(p) => {
                let t = dir.join(p);
                std::fs::create_dir_all(&t).unwrap();
                if root {
                    unionmount::sys::store_ops::lsetxattr(&t, b"trusted.overlay.opaque", b"y").unwrap();
                } else {
                    std::fs::write(t.join(".wh..wh..opq"), "").unwrap();
                }
            }
        }
    }
}

/// An image config for these diff_ids.
pub fn config_json(diff_ids: &[String], created: &str) -> Vec<u8> {
    let mut history: Vec<serde_json::Value> = Vec::new();
    for (i, _) in diff_ids.iter().enumerate() {
        history.push(serde_json::json!({"created": created, "created_by": format!("step {i}")}));
        history.push(serde_json::json!({"created": created, "created_by": "ENV x=y", "empty_layer": true}));
    }
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }))
    .unwrap()
}

fn chain(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let n = match out.last() {
            None => d.clone(),
            Some(p) => sha(format!("{p} {d}").as_bytes()),
        };
        out.push(n);
    }
    out
}

fn diff_ids(img: &Image) -> (Vec<Vec<u8>>, Vec<String>) {
    let tars: Vec<Vec<u8>> = img.layers.iter().map(layer_tar).collect();
    let ids = tars.iter().map(|t| sha(t)).collect();
    (tars, ids)
}

/// Two `created` strings whose configs (for `layers`) give ids sharing `n` hex chars.
pub fn colliding_created(layers: &[Layer], n: usize) -> (String, String) {
    let tmp = Image::new(&[], layers.to_vec());
    let (_, ids) = diff_ids(&tmp);
    let mut seen = std::collections::HashMap::new();
    for i in 0u64.. {
        let c = format!("2024-01-01T00:00:00.{i:09}Z");
        let id = sha(&config_json(&ids, &c));
        let p = hexof(&id)[..n].to_string();
        if let Some(prev) = seen.insert(p, c.clone()) {
            return (prev, c);
        }
    }
    unreachable!()
}

/// A Docker data root (overlay2).
pub fn write_docker(root: &Path, images: &[Image]) -> Vec<Built> {
    let img = root.join("image/overlay2");
    std::fs::create_dir_all(img.join("imagedb/content/sha256")).unwrap();
    std::fs::create_dir_all(img.join("layerdb/sha256")).unwrap();
    let mut repos: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    let mut out = Vec::new();
    for im in images {
        let (tars, ids) = diff_ids(im);
        let chains = chain(&ids);
        let mut cache_ids = Vec::new();
        for (i, c) in chains.iter().enumerate() {
            let cache_id = hexof(&sha(c.as_bytes())).to_string();
            let db = img.join("layerdb/sha256").join(hexof(c));
            if !db.exists() {
                std::fs::create_dir_all(&db).unwrap();
                std::fs::write(db.join("diff"), &ids[i]).unwrap();
                std::fs::write(db.join("cache-id"), &cache_id).unwrap();
                std::fs::write(db.join("size"), tars[i].len().to_string()).unwrap();
                if i > 0 {
                    std::fs::write(db.join("parent"), &chains[i - 1]).unwrap();
                }
                materialize(&im.layers[i], &root.join("overlay2").join(&cache_id).join("diff"));
            }
            cache_ids.push(cache_id);
        }
        let cfg = config_json(&ids, &im.created);
        let id = sha(&cfg);
        let cp = img.join("imagedb/content/sha256").join(hexof(&id));
        std::fs::write(&cp, &cfg).unwrap();
        for t in &im.tags {
            let repo = t.rsplit_once(':').map(|x| x.0).unwrap_or(t).to_string();
            let e = repos.entry(repo).or_insert_with(|| serde_json::json!({}));
            e[t] = serde_json::json!(id);
        }
        out.push(Built { id, diff_ids: ids, layer_ids: chains, config_path: cp, cache_ids, manifest_digest: String::new() });
    }
    std::fs::write(img.join("repositories.json"), serde_json::to_vec(&serde_json::json!({"Repositories": repos})).unwrap()).unwrap();
    out
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            s.push(if i <= c.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    s
}

/// A containers-storage root (overlay driver). Tags are written as given.
pub fn write_cstorage(root: &Path, images: &[Image]) -> Vec<Built> {
    std::fs::create_dir_all(root.join("overlay-images")).unwrap();
    std::fs::create_dir_all(root.join("overlay-layers")).unwrap();
    let mut layers: Vec<serde_json::Value> = Vec::new();
    let mut imgs: Vec<serde_json::Value> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for im in images {
        let (tars, ids) = diff_ids(im);
        let lids: Vec<String> = chain(&ids).iter().map(|c| hexof(c).to_string()).collect();
        for (i, l) in lids.iter().enumerate() {
            if seen.insert(l.clone()) {
                let mut v = serde_json::json!({"id": l, "diff-digest": ids[i], "diff-size": tars[i].len()});
                if i > 0 {
                    v["parent"] = serde_json::json!(lids[i - 1]);
                }
                layers.push(v);
                materialize(&im.layers[i], &root.join("overlay").join(l).join("diff"));
            }
        }
        let cfg = config_json(&ids, &im.created);
        let id = sha(&cfg);
        let d = root.join("overlay-images").join(hexof(&id));
        std::fs::create_dir_all(&d).unwrap();
        let cp = d.join(format!("={}", b64(id.as_bytes())));
        std::fs::write(&cp, &cfg).unwrap();
        let manifest = sha(format!("manifest of {id}").as_bytes());
        imgs.push(serde_json::json!({
            "id": hexof(&id), "names": im.tags, "layer": lids.last(), "digest": manifest,
            "created": im.created,
        }));
        out.push(Built { id, diff_ids: ids, layer_ids: lids, config_path: cp, cache_ids: vec![], manifest_digest: manifest });
    }
    std::fs::write(root.join("overlay-layers/layers.json"), serde_json::to_vec(&layers).unwrap()).unwrap();
    std::fs::write(root.join("overlay-images/images.json"), serde_json::to_vec(&imgs).unwrap()).unwrap();
    out
}

/// How to store a layer blob.
#[derive(Debug, Clone, Copy)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub fn compress(data: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::None => data.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(data, 1).unwrap(),
    }
}

/// An OCI layout; ref names are the tags as given; layer `i` compressed with `comp(i)`.
pub fn write_oci(dir: &Path, images: &[Image], comp: impl Fn(usize) -> Comp) -> Vec<Built> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |b: &[u8]| {
        let d = sha(b);
        std::fs::write(blobs.join(hexof(&d)), b).unwrap();
        d
    };
    let mut manifests = Vec::new();
    let mut out = Vec::new();
    for im in images {
        let (tars, ids) = diff_ids(im);
        let mut ldescs = Vec::new();
        for (i, t) in tars.iter().enumerate() {
            let c = comp(i);
            let blob = compress(t, c);
            let mt = match c {
                Comp::None => "application/vnd.oci.image.layer.v1.tar",
                Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            ldescs.push(serde_json::json!({"mediaType": mt, "digest": put(&blob), "size": blob.len()}));
        }
        let cfg = config_json(&ids, &im.created);
        let id = put(&cfg);
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": id, "size": cfg.len()},
            "layers": ldescs,
        }))
        .unwrap();
        let md = put(&m);
        if im.tags.is_empty() {
            manifests.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": m.len()}));
        }
        for t in &im.tags {
            manifests.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": m.len(),
                "annotations": {"org.opencontainers.image.ref.name": t},
            }));
        }
        out.push(Built {
            id,
            diff_ids: ids.clone(),
            layer_ids: ids,
            config_path: blobs.join(hexof(&sha(&cfg))),
            cache_ids: vec![],
            manifest_digest: md,
        });
    }
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests})).unwrap()).unwrap();
    out
}

/// A legacy `docker save` archive (manifest.json, <id>.json, <n>/layer.tar).
pub fn write_save(file: &Path, images: &[Image]) -> Vec<Built> {
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut manifest = Vec::new();
    let mut out = Vec::new();
    let mut written = std::collections::HashSet::new();
    for im in images {
        let (tars, ids) = diff_ids(im);
        let mut paths = Vec::new();
        for (t, d) in tars.iter().zip(&ids) {
            let p = format!("{}/layer.tar", hexof(d));
            if written.insert(p.clone()) {
                add(&p, t);
            }
            paths.push(p);
        }
        let cfg = config_json(&ids, &im.created);
        let id = sha(&cfg);
        let cname = format!("{}.json", hexof(&id));
        add(&cname, &cfg);
        manifest.push(serde_json::json!({"Config": cname, "RepoTags": im.tags, "Layers": paths}));
        out.push(Built { id, diff_ids: ids.clone(), layer_ids: ids, config_path: PathBuf::from(cname), cache_ids: vec![], manifest_digest: String::new() });
    }
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap().flush().unwrap();
    out
}

/// A Docker ≥ 25 style `docker save`: an OCI layout plus manifest.json pointing into
/// `blobs/`, as one tar. Without `with_manifest`, a plain OCI layout tar.
pub fn write_save_oci(file: &Path, images: &[Image], with_manifest: bool) -> Vec<Built> {
    let tmp = tempfile::tempdir().unwrap();
    let built = write_oci(tmp.path(), images, |_| Comp::None);
    if with_manifest {
        let mut m = Vec::new();
        for (im, b) in images.iter().zip(&built) {
            let man: serde_json::Value =
                serde_json::from_slice(&std::fs::read(tmp.path().join("blobs/sha256").join(hexof(&b.manifest_digest))).unwrap())
                    .unwrap();
            let layers: Vec<String> = man["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| format!("blobs/sha256/{}", hexof(l["digest"].as_str().unwrap())))
                .collect();
            m.push(serde_json::json!({"Config": format!("blobs/sha256/{}", hexof(&b.id)), "RepoTags": im.tags, "Layers": layers}));
        }
        std::fs::write(tmp.path().join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    }
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    b.append_dir_all(".", tmp.path()).unwrap();
    b.into_inner().unwrap().flush().unwrap();
    built
}

/// Wrap `dir`'s index.json manifests in a nested multi-platform index: the real image
/// for this machine's arch plus a decoy for another arch (pointing at a missing blob).
pub fn nest_index(dir: &Path) {
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let arch = if cfg!(target_arch = "x86_64") { "amd64" } else if cfg!(target_arch = "aarch64") { "arm64" } else { std::env::consts::ARCH };
    let mut outer = Vec::new();
    for m in idx["manifests"].as_array().unwrap() {
        let mut inner_m = m.clone();
        let ann = inner_m.as_object_mut().unwrap().remove("annotations");
        inner_m["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        let decoy = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", "0".repeat(64)), "size": 1,
            "platform": {"os": "linux", "architecture": "s390x"}});
        let inner = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [decoy, inner_m]})).unwrap();
        let d = sha(&inner);
        std::fs::write(dir.join("blobs/sha256").join(hexof(&d)), &inner).unwrap();
        let mut o = serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": inner.len()});
        if let Some(a) = ann {
            o["annotations"] = a;
        }
        outer.push(o);
    }
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": outer})).unwrap()).unwrap();
}
