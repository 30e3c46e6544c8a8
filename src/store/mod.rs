//! Image stores: resolve an image reference to its layer directories.
//!
//! CONTRACT used by the mount path (src/cli.rs, src/mount.rs):
//! `resolve(&StoreQuery) -> Result<ResolvedImage, StoreError>` where
//! `ResolvedImage.layers` are top first and each `dir` is a directory to serve
//! read-only. Implemented in issue 3.

use std::path::PathBuf;

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct StoreQuery {
    /// The image reference as typed (`alpine`, `sha256:…`, short id, `name@sha256:…`).
    pub reference: String,
    /// `--store PATH`; None = search the default stores.
    pub store: Option<PathBuf>,
    /// `--cache DIR` for unpacked OCI / docker-save layers; None = default.
    pub cache: Option<PathBuf>,
}

/// One layer of a resolved image.
#[derive(Debug, Clone)]
pub struct ResolvedLayer {
    /// Directory holding the layer's tree.
    pub dir: PathBuf,
    /// `sha256:…` of the uncompressed layer tar.
    pub diff_id: String,
    /// Chain id (Docker), layer id (containers-storage) or diff_id (OCI/archive).
    pub layer_id: String,
}

/// A resolved image: what to mount.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// `sha256:…` image id (config digest).
    pub id: String,
    /// The store it was found in.
    pub store: PathBuf,
    /// Layers, top first.
    pub layers: Vec<ResolvedLayer>,
}

/// Why an image could not be resolved; `Display` is the one line the user sees.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for StoreError {}

/// Resolve an image reference to its layers (not yet implemented: issue 3).
pub fn resolve(q: &StoreQuery) -> Result<ResolvedImage, StoreError> {
    Err(StoreError(format!("cannot resolve {}: image stores are not implemented yet", q.reference)))
}

/// `unionmount images [--store PATH] [--json]`; `args` follow the subcommand name.
pub fn cli_images(_args: &[std::ffi::OsString]) -> i32 {
    eprintln!("unionmount images: not implemented yet");
    2
}

/// `unionmount inspect IMAGE [--store PATH] [--json]`.
pub fn cli_inspect(_args: &[std::ffi::OsString]) -> i32 {
    eprintln!("unionmount inspect: not implemented yet");
    2
}
