//! Manifests and indexes as registries serve them (OCI and Docker v2 schema 2), and the
//! choice of a platform in an index.
//!
//! ```text
//! index / manifest list ──platform──> image manifest ──> config (diff_ids, history)
//!   {"manifests":[{digest,size,platform}]}      {"config":{…},"layers":[{digest,size,mediaType}]}
//! ```
//! Invariants: every descriptor has a parsed [`Digest`] and a size, which bounds what is
//! later downloaded for it; a config is at most `MAX_CONFIG`; an image has at most
//! [`MAX_LAYERS`] layers; schema 1, encrypted layers and artifacts that are not container
//! images are refused with a line saying so.

use super::error::excerpt;
use crate::store::digest::Digest;
use crate::store::platform::Platform;
use crate::store::registry::MAX_CONFIG;
use std::collections::BTreeMap;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The `Accept` header for manifests.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Most layers an image may have.
pub const MAX_LAYERS: usize = 1000;
/// Largest layer blob accepted (1 TiB).
pub const MAX_LAYER: u64 = 1 << 40;

/// An index entry's platform: the store's one type for it.
pub use crate::store::platform::IndexPlatform as PlatformJson;

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<PlatformJson>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A parsed manifest or index.
#[derive(Debug)]
pub enum Parsed {
    Index(Vec<Descriptor>),
    Image { config: Descriptor, layers: Vec<Descriptor> },
}

fn is_index_type(t: &str) -> bool {
    t == OCI_INDEX || t == DOCKER_LIST
}

/// Parse a manifest or index (`content_type` is the server's header, used only when the
/// document does not say what it is).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Parsed, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid JSON (line {})", e.line()))?;
    if !v.is_object() {
        return Err("manifest is not a JSON object".into());
    }
    let raw: Raw = serde_json::from_value(v).map_err(|e| format!("invalid manifest: {}", excerpt(&e.to_string(), 120)))?;
    if raw.schema_version == Some(1) || content_type.is_some_and(|t| t.starts_with("application/vnd.docker.distribution.manifest.v1")) {
        return Err("schema 1 manifest (Docker before 1.10) is not supported: push the image again with a current tool".into());
    }
    let mt = raw.media_type.as_deref().or(content_type.map(|c| c.split(';').next().unwrap_or(c).trim())).unwrap_or("");
    if is_index_type(mt) || (raw.manifests.is_some() && raw.config.is_none()) {
        let m = raw.manifests.unwrap_or_default();
        if m.is_empty() {
            return Err("index lists no manifests".into());
        }
        return Ok(Parsed::Index(m));
    }
    let config = raw.config.ok_or("manifest has no config")?;
    let ct = config.media_type.as_str();
    if !(ct.is_empty() || ct == "application/vnd.oci.image.config.v1+json" || ct == "application/vnd.docker.container.image.v1+json") {
        return Err(format!("not a container image (config type {})", excerpt(ct, 80)));
    }
    if config.size > MAX_CONFIG {
        return Err(format!("config of {} bytes is larger than the {MAX_CONFIG} accepted", config.size));
    }
    let layers = raw.layers.unwrap_or_default();
    if layers.len() > MAX_LAYERS {
        return Err(format!("{} layers: more than the {MAX_LAYERS} accepted", layers.len()));
    }
    for l in &layers {
        if l.media_type.contains("encrypted") {
            return Err(format!("layer {} is encrypted ({}): not supported", l.digest, excerpt(&l.media_type, 80)));
        }
        if l.size > MAX_LAYER {
            return Err(format!("layer {} claims {} bytes: larger than accepted", l.digest, l.size));
        }
    }
    Ok(Parsed::Image { config, layers })
}

fn is_attestation(d: &Descriptor) -> bool {
    d.annotations.as_ref().is_some_and(|a| a.get("vnd.docker.reference.type").is_some_and(|v| v == "attestation-manifest"))
        || d.platform.as_ref().is_some_and(|p| p.os == "unknown")
}

/// Pick the entry of an index for `want`: the best match, or the only entry when there is
/// one without a platform. Err: the platforms available, for the error line.
pub fn choose<'a>(entries: &'a [Descriptor], want: &Platform) -> Result<&'a Descriptor, Vec<String>> {
    let usable: Vec<&Descriptor> = entries.iter().filter(|d| !is_attestation(d)).collect();
    if let Some(d) = want.best(&usable, |d| d.platform.as_ref()) {
        return Ok(d);
    }
    if usable.len() == 1 && usable[0].platform.is_none() {
        return Ok(usable[0]);
    }
    Err(usable.iter().filter_map(|d| d.platform.as_ref().map(|p| p.display())).collect())
}

/// The layer digests and sizes of an image manifest (None for an index or junk).
pub fn layer_blobs(bytes: &[u8]) -> Option<Vec<(Digest, u64)>> {
    match parse(bytes, None).ok()? {
        Parsed::Image { layers, .. } => Some(layers.into_iter().map(|l| (l.digest, l.size)).collect()),
        Parsed::Index(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn parses_both_formats() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{}","size":10}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{}","size":5}}]}}"#,
            d('a'),
            d('b')
        );
        match parse(m.as_bytes(), None).unwrap() {
            Parsed::Image { config, layers } => {
                assert_eq!(config.size, 10);
                assert_eq!(layers[0].digest.to_string(), d('b'));
            }
            _ => panic!(),
        }
        assert_eq!(layer_blobs(m.as_bytes()).unwrap().len(), 1);
        let i = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{}","size":3,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#, d('c'));
        assert!(matches!(parse(i.as_bytes(), Some(OCI_INDEX)).unwrap(), Parsed::Index(v) if v.len() == 1));
    }

    #[test]
    fn refuses() {
        let bad_digest = r#"{"config":{"digest":"../../etc/passwd","size":1},"layers":[]}"#;
        assert!(parse(bad_digest.as_bytes(), None).is_err());
        let no_size = format!(r#"{{"config":{{"digest":"{}"}},"layers":[]}}"#, d('a'));
        assert!(parse(no_size.as_bytes(), None).is_err());
        assert!(parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None).unwrap_err().contains("schema 1"));
        assert!(parse(b"[]", None).is_err());
        assert!(parse(b"\xff", None).is_err());
        let helm = format!(r#"{{"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{}","size":1}},"layers":[]}}"#, d('a'));
        assert!(parse(helm.as_bytes(), None).unwrap_err().contains("not a container image"));
        let huge = format!(r#"{{"config":{{"digest":"{}","size":99999999999}},"layers":[]}}"#, d('a'));
        assert!(parse(huge.as_bytes(), None).is_err());
        let enc = format!(
            r#"{{"config":{{"digest":"{}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip+encrypted","digest":"{}","size":1}}]}}"#,
            d('a'),
            d('b')
        );
        assert!(parse(enc.as_bytes(), None).unwrap_err().contains("encrypted"));
    }

    #[test]
    fn platform_choice() {
        let e = |c: char, os: &str, arch: &str, v: Option<&str>| Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::parse(&d(c)).unwrap(),
            size: 1,
            platform: Some(PlatformJson { os: os.into(), architecture: arch.into(), variant: v.map(Into::into) }),
            annotations: None,
        };
        let idx = vec![
            e('a', "linux", "amd64", None),
            e('b', "linux", "arm", Some("v6")),
            e('c', "linux", "arm", Some("v7")),
            e('d', "unknown", "unknown", None),
        ];
        let p = |s: &str| Platform::parse(s).unwrap();
        assert_eq!(choose(&idx, &p("linux/amd64")).unwrap().digest.to_string(), d('a'));
        assert_eq!(choose(&idx, &p("linux/arm")).unwrap().digest.to_string(), d('c'));
        assert_eq!(choose(&idx, &p("linux/arm/v6")).unwrap().digest.to_string(), d('b'));
        let avail = choose(&idx, &p("linux/s390x")).unwrap_err();
        assert_eq!(avail, vec!["linux/amd64", "linux/arm/v6", "linux/arm/v7"]);
        let mut lone = e('e', "", "", None);
        lone.platform = None;
        assert_eq!(choose(&[lone], &p("linux/s390x")).unwrap().digest.to_string(), d('e'));
    }
}
