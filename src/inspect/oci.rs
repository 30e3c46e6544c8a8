//! Writing an OCI image layout (`commit --image NAME --oci DIR`).
//!
//! ```text
//! DIR/
//!   oci-layout          {"imageLayoutVersion":"1.0.0"}
//!   index.json          manifests[], each tagged by annotation
//!                       org.opencontainers.image.ref.name = NAME
//!   blobs/sha256/<hex>  layer tars, the config, the manifest
//! ```
//!
//! Invariants:
//! - every blob is named by the sha256 of exactly its bytes, and is written to a
//!   temporary name and renamed into place (an existing blob is kept as is);
//! - the config's `rootfs.diff_ids` are the diff_ids of the tars actually written
//!   (bottom first), which may differ from a store's own diff_ids for the same
//!   layers, since base layers are re-serialised from their directories;
//! - `index.json` is rewritten atomically; an entry with the same ref name is
//!   replaced, other entries are kept;
//! - JSON is written with sorted keys; `created` comes from `SOURCE_DATE_EPOCH`
//!   when set (then identical inputs give identical digests), else the clock.

use super::commit::LayerBlob;
use crate::store::Digest;
use serde_json::{Value, json};
use std::io;
use std::path::{Path, PathBuf};

const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// A layer placed in the layout, with the history line describing it.
pub struct ImageLayer {
    pub blob: LayerBlob,
    pub created_by: String,
}

/// Check `name` is usable as a ref name (OCI: `[A-Za-z0-9._:@/+-]`, non-empty).
pub fn check_ref_name(name: &str) -> Result<(), super::InspectError> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:@/+-".contains(&b));
    if ok { Ok(()) } else { Err(super::InspectError::InvalidName(name.to_string())) }
}

fn ctx(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Create the layout skeleton if needed; returns `DIR/blobs/sha256`.
pub fn prepare(dir: &Path) -> io::Result<PathBuf> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| ctx(e, &blobs))?;
    let layout = dir.join("oci-layout");
    match std::fs::read(&layout) {
        Ok(data) => {
            let v: Value = serde_json::from_slice(&data).map_err(|e| ctx(io::Error::other(e), &layout))?;
            if v.get("imageLayoutVersion").and_then(Value::as_str).is_none() {
                return Err(ctx(io::Error::other("not an OCI layout file"), &layout));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Err(e) => return Err(ctx(e, &layout)),
    }
    Ok(blobs)
}

/// A fresh temporary blob path in `blobs` (hand it to a writer, then `adopt`).
pub fn temp_blob(blobs: &Path, n: usize) -> PathBuf {
    blobs.join(format!("incoming-{}-{n}", std::process::id()))
}

/// Move a finished temporary blob to its digest name.
pub fn adopt(blobs: &Path, tmp: &Path, digest: &Digest) -> io::Result<()> {
    let dest = blobs.join(digest.hex());
    if dest.exists() {
        std::fs::remove_file(tmp).map_err(|e| ctx(e, tmp))
    } else {
        std::fs::rename(tmp, &dest).map_err(|e| ctx(e, &dest))
    }
}

/// Store `data` as a blob; returns its descriptor digest and size.
fn put_blob(blobs: &Path, data: &[u8]) -> io::Result<(Digest, u64)> {
    let digest = Digest::sha256_of(data);
    let dest = blobs.join(digest.hex());
    if !dest.exists() {
        write_atomic(&dest, data)?;
    }
    Ok((digest, data.len() as u64))
}

fn write_atomic(dest: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = super::commit::tmp_beside(dest);
    let res = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, dest));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(|e| ctx(e, dest))
}

/// RFC 3339 UTC time for `secs` since the epoch (clamped to the years -9999..=9999).
pub fn rfc3339(secs: i64) -> String {
    let secs = secs.clamp(jiff::Timestamp::MIN.as_second(), jiff::Timestamp::MAX.as_second());
    jiff::Timestamp::from_second(secs).map(|t| t.to_string()).unwrap_or_default()
}

fn created_now() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    rfc3339(secs)
}

/// The base image's config JSON, asked of the store the mount's image came from
/// (`store::image_config`: it knows where each format keeps configs, and checks that
/// the bytes hash to the image id). `None`, logged, when it cannot be had.
pub fn base_config_from_store(store: &Path, image_id: &str) -> Option<Value> {
    let id = Digest::parse(image_id).ok()?;
    let bytes = match crate::store::image_config(store, &id) {
        Ok(b) => b?,
        Err(e) => {
            log::debug!("base image config: {e}");
            return None;
        }
    };
    serde_json::from_slice::<Value>(&bytes).ok().filter(|v| v.get("rootfs").is_some())
}

/// Write config, manifest and index entry for `layers` (bottom first, blobs
/// already in place). Returns the manifest digest.
///
/// With a `base` config (the image the lower layers came from, whose layers are
/// all but the last of `layers`), its runtime `config`, platform fields and
/// history are carried over and one history entry is added for the new layer.
pub fn write_image(dir: &Path, blobs: &Path, name: &str, layers: &[ImageLayer], base: Option<&Value>) -> io::Result<Digest> {
    let created = created_now();
    let ours = |l: &ImageLayer| json!({"created": created, "created_by": l.created_by});
    let mut history: Vec<Value> = layers.iter().map(ours).collect();
    let mut config = json!({
        "architecture": crate::store::platform::host_arch(),
        "os": "linux",
        "config": {},
    });
    if let Some(b) = base {
        let base_layers = b.pointer("/rootfs/diff_ids").and_then(Value::as_array).map_or(0, Vec::len);
        if base_layers + 1 != layers.len() {
            return Err(io::Error::other(format!(
                "the base image config describes {base_layers} layers but the mount has {}",
                layers.len().saturating_sub(1)
            )));
        }
        for k in ["architecture", "os", "variant", "os.version", "os.features", "config"] {
            if let Some(v) = b.get(k) {
                config[k] = v.clone();
            }
        }
        if let Some(h) = b.get("history").and_then(Value::as_array) {
            let non_empty = h.iter().filter(|e| e.get("empty_layer").and_then(Value::as_bool) != Some(true)).count();
            if non_empty == base_layers {
                history = h.clone();
                history.extend(layers.last().map(ours));
            }
        }
    }
    config["created"] = json!(created);
    config["rootfs"] = json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|l| l.blob.diff_id.clone()).collect::<Vec<_>>(),
    });
    config["history"] = Value::Array(history);
    let (cdigest, csize) = put_blob(blobs, &serde_json::to_vec(&config).map_err(io::Error::other)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": cdigest, "size": csize},
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.blob.compression.media_type(),
            "digest": l.blob.digest,
            "size": l.blob.blob_size,
        })).collect::<Vec<_>>(),
    });
    let (mdigest, msize) = put_blob(blobs, &serde_json::to_vec(&manifest).map_err(io::Error::other)?)?;

    let index_path = dir.join("index.json");
    let mut index = match std::fs::read(&index_path) {
        Ok(data) => serde_json::from_slice::<Value>(&data).map_err(|e| ctx(io::Error::other(e), &index_path))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": []}),
        Err(e) => return Err(ctx(e, &index_path)),
    };
    let Some(obj) = index.as_object_mut() else {
        return Err(ctx(io::Error::other("not a JSON object"), &index_path));
    };
    let mut manifests: Vec<Value> = match obj.remove("manifests") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    manifests.retain(|m| m.pointer(&format!("/annotations/{}", REF_ANNOTATION.replace('/', "~1"))).and_then(Value::as_str) != Some(name));
    manifests.push(json!({
        "mediaType": MANIFEST_TYPE,
        "digest": mdigest,
        "size": msize,
        "annotations": {REF_ANNOTATION: name},
    }));
    obj.insert("manifests".into(), Value::Array(manifests));
    obj.entry("schemaVersion").or_insert(json!(2));
    let body = serde_json::to_vec_pretty(&index).map_err(io::Error::other)?;
    write_atomic(&index_path, &body)?;
    Ok(mdigest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid digest standing for `label`.
    fn digest(label: &str) -> Digest {
        Digest::sha256_of(label.as_bytes())
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_780_000_000), "2026-05-28T20:26:40Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert!(rfc3339(i64::MAX).starts_with("9999-12-"), "{}", rfc3339(i64::MAX));
    }

    #[test]
    fn store_config_lookup() {
        let t = tempfile::tempdir().unwrap();
        let cfg = br#"{"config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let id = Digest::sha256_of(cfg);
        let d = t.path().join("image/overlay2/imagedb/content/sha256");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(t.path().join("image/overlay2/layerdb")).unwrap();
        std::fs::write(d.join(id.hex()), cfg).unwrap();
        assert_eq!(base_config_from_store(t.path(), id.as_str()).unwrap()["config"]["Cmd"][0], "/bin/sh");
        // Wrong bytes under the right name are ignored.
        std::fs::write(d.join(id.hex()), b"{}").unwrap();
        assert!(base_config_from_store(t.path(), id.as_str()).is_none());
        assert!(base_config_from_store(t.path(), "../../etc/passwd").is_none());
    }

    #[test]
    fn base_config_is_carried_over() {
        let t = tempfile::tempdir().unwrap();
        let blobs = prepare(t.path()).unwrap();
        let layer = |d: &str| ImageLayer {
            blob: LayerBlob {
                diff_id: digest(d),
                size: 1,
                digest: digest(d),
                blob_size: 1,
                compression: super::super::commit::Compression::None,
            },
            created_by: format!("made {d}"),
        };
        let base = json!({
            "architecture": "arm64", "variant": "v8", "os": "linux",
            "config": {"Env": ["A=1"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:old"]},
            "history": [{"created_by": "ENV A=1", "empty_layer": true}, {"created_by": "ADD rootfs"}],
        });
        let m = write_image(t.path(), &blobs, "x", &[layer("sha256:a"), layer("sha256:b")], Some(&base)).unwrap();
        let man: Value = serde_json::from_slice(&std::fs::read(blobs.join(m.hex())).unwrap()).unwrap();
        let c = man["config"]["digest"].as_str().unwrap();
        let cfg: Value = serde_json::from_slice(&std::fs::read(blobs.join(&c[7..])).unwrap()).unwrap();
        assert_eq!(cfg["config"]["Env"][0], "A=1");
        assert_eq!((cfg["architecture"].as_str(), cfg["variant"].as_str()), (Some("arm64"), Some("v8")));
        assert_eq!(cfg["rootfs"]["diff_ids"], json!([digest("sha256:a"), digest("sha256:b")]));
        let h: Vec<_> = cfg["history"].as_array().unwrap().iter().map(|e| e["created_by"].as_str().unwrap()).collect();
        assert_eq!(h, vec!["ENV A=1", "ADD rootfs", "made sha256:b"]);
        // A base config for a different number of layers is refused.
        assert!(write_image(t.path(), &blobs, "x", &[layer("sha256:a")], Some(&base)).is_err());
    }

    #[test]
    fn ref_names() {
        assert!(check_ref_name("example.com/app:v1").is_ok());
        assert!(check_ref_name("").is_err());
        assert!(check_ref_name("a b").is_err());
    }

    #[test]
    fn index_entries_replace_same_name() {
        let t = tempfile::tempdir().unwrap();
        let blobs = prepare(t.path()).unwrap();
        let l = ImageLayer {
            blob: LayerBlob {
                diff_id: digest("00"),
                size: 1,
                digest: digest("00"),
                blob_size: 1,
                compression: super::super::commit::Compression::None,
            },
            created_by: "x".into(),
        };
        write_image(t.path(), &blobs, "a", std::slice::from_ref(&l), None).unwrap();
        write_image(t.path(), &blobs, "b", std::slice::from_ref(&l), None).unwrap();
        write_image(t.path(), &blobs, "a", &[], None).unwrap();
        let idx: Value = serde_json::from_slice(&std::fs::read(t.path().join("index.json")).unwrap()).unwrap();
        let names: Vec<_> =
            idx["manifests"].as_array().unwrap().iter().map(|m| m["annotations"][REF_ANNOTATION].as_str().unwrap()).collect();
        assert_eq!(names, vec!["b", "a"]);
    }
}
