//! Helpers for the tests of untrusted stores: a canary directory outside every store
//! whose opens are watched with inotify, and hand-built OCI layouts and `docker save`
//! archives whose descriptors say whatever a test wants.
#![allow(dead_code)]

use inotify::{Inotify, WatchMask};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use unionmount::store::{self, StoreError, StoreQuery};

/// `sha256:<hex>` of `b`.
pub fn sha(b: &[u8]) -> String {
    store::Digest::sha256_of(b).to_string()
}

/// Host data the stores must never reach: `outside/secret` (looks like /etc/shadow),
/// `outside/evil.tar` (a valid layer) and `outside/sub/`; every open of them is seen.
pub struct Canary {
    pub dir: PathBuf,
    pub secret: PathBuf,
    pub evil_tar: PathBuf,
    pub evil_bytes: Vec<u8>,
    inotify: Inotify,
}

pub const SECRET: &str = "root:$6$SECRETSALT$SECRETHASHSECRETHASH:20228:0:99999:7:::\nbin:*:20228:0:99999:7:::\n";

/// A layer tar holding `pwned` (what an attacker would like mounted).
pub fn evil_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_mtime(0);
    b.append_data(&mut h, "pwned", &b"pwned"[..]).unwrap();
    b.into_inner().unwrap()
}

impl Canary {
    pub fn new(parent: &Path) -> Canary {
        let dir = parent.join("outside");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        let evil_bytes = evil_layer();
        let evil_tar = dir.join("evil.tar");
        std::fs::write(&evil_tar, &evil_bytes).unwrap();
        std::fs::write(dir.join("sub/x"), "x").unwrap();
        let inotify = Inotify::init().unwrap();
        let mask = WatchMask::OPEN | WatchMask::ACCESS | WatchMask::MODIFY | WatchMask::ATTRIB | WatchMask::CREATE | WatchMask::DELETE;
        inotify.watches().add(&dir, mask).unwrap();
        inotify.watches().add(dir.join("sub"), mask).unwrap();
        let mut c = Canary { dir, secret, evil_tar, evil_bytes, inotify };
        c.events(); // nothing before this point counts
        c
    }

    /// Events seen since the last call.
    pub fn events(&mut self) -> Vec<String> {
        let mut buf = [0u8; 8192];
        let mut out = Vec::new();
        while let Ok(evs) = self.inotify.read_events(&mut buf) {
            let mut any = false;
            for e in evs {
                any = true;
                out.push(format!("{:?} {:?}", e.mask, e.name));
            }
            if !any {
                break;
            }
        }
        out
    }

    /// Panic when anything outside the stores was opened, read or changed.
    pub fn assert_untouched(&mut self, what: &str) {
        let ev = self.events();
        assert!(ev.is_empty(), "{what}: files outside the store were touched: {ev:?}");
        assert_eq!(std::fs::read_to_string(&self.secret).unwrap(), SECRET);
        self.events(); // our own read
    }

    /// `../` enough times to climb from `from` to `/`, then the absolute `target`.
    pub fn climb(from: &Path, target: &Path) -> String {
        let up = "../".repeat(from.components().count() + 2);
        format!("{up}{}", target.display().to_string().trim_start_matches('/'))
    }
}

/// Check an error line: one line, short, and none of the secret's content or digest.
pub fn assert_clean_error(e: &StoreError, what: &str) -> String {
    let m = e.to_string();
    assert!(!m.contains('\n'), "{what}: multi-line error: {m}");
    assert!(m.len() < 1200, "{what}: {} byte error: {m}", m.len());
    assert!(!m.contains("SECRET") && !m.contains("root:") && !m.contains(&sha(SECRET.as_bytes())[7..]), "{what}: leaks the secret: {m}");
    m
}

pub fn query(store: &Path, cache: &Path, r: &str) -> StoreQuery {
    StoreQuery { reference: r.into(), store: Some(store.into()), cache: Some(cache.into()), ..Default::default() }
}

pub fn resolve(store: &Path, cache: &Path, r: &str) -> Result<store::ResolvedImage, StoreError> {
    store::resolve(&query(store, cache, r))
}

/// Is a layer with `diff_id` in the cache?
pub fn cached(cache: &Path, diff_id: &str) -> bool {
    cache.join("layers/sha256").join(&diff_id[7..]).exists()
}

/// A minimal image config with these diff_ids.
pub fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": diff_ids}})).unwrap()
}

/// A descriptor value.
pub fn desc(media: &str, digest: &str, size: u64) -> Value {
    json!({"mediaType": media, "digest": digest, "size": size})
}

pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An OCI layout directory written by hand.
pub struct Layout {
    pub dir: PathBuf,
    pub entries: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout { dir: dir.to_path_buf(), entries: Vec::new() }
    }
    /// Store a blob under its digest; returns the digest.
    pub fn put(&self, data: &[u8]) -> String {
        let d = sha(data);
        std::fs::write(self.blob(&d), data).unwrap();
        d
    }
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(&digest[7..])
    }
    /// A manifest over `config` and `layers` (descriptors); returns its descriptor.
    pub fn manifest(&self, config: Value, layers: Vec<Value>) -> Value {
        let m = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers})).unwrap();
        desc(MANIFEST, &self.put(&m), m.len() as u64)
    }
    /// A valid one-layer image; returns the manifest descriptor and the layer's diff_id.
    pub fn valid_image(&self, content: &str) -> (Value, String) {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, "file", content.as_bytes()).unwrap();
        let layer = b.into_inner().unwrap();
        let ld = self.put(&layer);
        let cfg = config(std::slice::from_ref(&ld));
        let cd = self.put(&cfg);
        (self.manifest(desc(CONFIG, &cd, cfg.len() as u64), vec![desc(LAYER_TAR, &ld, layer.len() as u64)]), ld)
    }
    /// Add an index entry `d` named `name` (no name when empty).
    pub fn add(&mut self, mut d: Value, name: &str) {
        if !name.is_empty() {
            d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        }
        self.entries.push(d);
    }
    /// Write index.json.
    pub fn write(&self) {
        let idx = json!({"schemaVersion": 2, "manifests": self.entries});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    }
    /// The layout as one tar file (symlinks kept as symlinks).
    pub fn tar_to(&self, file: &Path) {
        let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
        b.follow_symlinks(false);
        b.append_dir_all(".", &self.dir).unwrap();
        b.finish().unwrap();
    }
}

/// A legacy `docker save` archive: `members` (name, data) plus manifest.json.
pub fn write_save(file: &Path, manifest: &Value, members: &[(&str, &[u8])]) {
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, data).unwrap();
    };
    for (n, d) in members {
        add(n, d);
    }
    add("manifest.json", &serde_json::to_vec(manifest).unwrap());
    b.finish().unwrap();
}
