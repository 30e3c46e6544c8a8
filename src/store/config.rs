//! The parts of an image config the stores use (OCI, Docker and containers-storage share
//! the format).
//!
//! Invariant: a parsed [`ImageConfig`] has only valid diff_ids ([`Digest`]s, bottom first):
//! one bad entry makes the whole config an error naming the file.

use super::StoreError;
use super::digest::Digest;
use super::json;
use std::path::Path;

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
    #[serde(default)]
    pub history: Option<Vec<History>>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct History {
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub empty_layer: Option<bool>,
}

impl ImageConfig {
    /// Parse a config read from `path` (a JSON object with valid diff_ids).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<ImageConfig, StoreError> {
        json::parse_object(bytes, path, "an image config")
    }
    /// The layers' diff_ids, bottom first.
    pub fn diff_ids(&self) -> &[Digest] {
        self.rootfs.as_ref().map(|r| r.diff_ids.as_slice()).unwrap_or(&[])
    }
    /// The history line of each layer, bottom first (`empty_layer` entries skipped).
    pub fn layer_history(&self) -> Vec<Option<String>> {
        let n = self.diff_ids().len();
        let mut v: Vec<Option<String>> = self
            .history
            .iter()
            .flatten()
            .filter(|h| !h.empty_layer.unwrap_or(false))
            .map(|h| h.created_by.clone())
            .collect();
        v.resize(n, None);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_skips_empty_layers() {
        let c = ImageConfig::parse(
            br#"{"rootfs":{"diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "sha256:1111111111111111111111111111111111111111111111111111111111111111"]},
            "history":[{"created_by":"ADD"},{"created_by":"ENV","empty_layer":true},{"created_by":"RUN"}]}"#,
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(c.layer_history(), vec![Some("ADD".into()), Some("RUN".into())]);
        assert!(ImageConfig::parse(br#"{"rootfs":{"diff_ids":[1]}}"#, Path::new("c")).is_err());
        let e = ImageConfig::parse(br#"{"rootfs":{"diff_ids":["../../x"]}}"#, Path::new("c")).unwrap_err();
        assert!(e.to_string().contains("invalid digest"), "{e}");
        assert!(ImageConfig::parse(b"[", Path::new("c")).is_err());
        assert!(ImageConfig::parse(b"[]", Path::new("c")).is_err());
    }
}
