//! Why an image could not be resolved.
//!
//! Invariant: `Display` is exactly one line: paths are shown through
//! [`shown::path`] (escaped, cut in the middle), names and ids from a store through
//! [`shown::name`], and a last pass escapes any control character a detail may still
//! hold. Details are written by the stores and carry input only as excerpts.

use super::shown;
use std::fmt;
use std::path::{Path, PathBuf};

/// Why an image could not be resolved; `Display` is the one line the user sees.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// The reference does not parse.
    InvalidReference(String),
    /// No store holds the image. `unreadable`: why entries without a readable name (which
    /// might have been the image) could not be read.
    ImageNotFound { reference: String, searched: Vec<PathBuf>, closest: Vec<String>, unreadable: Vec<String> },
    /// An id prefix (or name) selects more than one image.
    Ambiguous { reference: String, candidates: Vec<String> },
    /// A layer's directory or metadata file is missing.
    LayerMissing { image: String, layer: String, file: PathBuf },
    /// A store file exists but its content is wrong.
    Corrupt { file: PathBuf, detail: String },
    /// `--store PATH` is not a store, or an I/O error on a path.
    Store { path: PathBuf, detail: String },
    /// Anything else, already one line.
    Other(String),
    /// Ctrl-C or SIGTERM stopped the work; what was half written was removed.
    Interrupted(crate::cancel::Interrupted),
}

/// Most candidates or suggestions listed in one message.
const MAX_LISTED: usize = 8;

fn list(items: &[String]) -> String {
    let mut v: Vec<String> = items.iter().take(MAX_LISTED).map(|s| shown::name(s).to_string()).collect();
    if items.len() > MAX_LISTED {
        v.push(format!("and {} more", items.len() - MAX_LISTED));
    }
    v.join(", ")
}

impl StoreError {
    fn render(&self) -> String {
        match self {
            StoreError::InvalidReference(m) | StoreError::Other(m) => m.clone(),
            StoreError::ImageNotFound { reference, searched, closest, unreadable } => {
                let r = shown::name(reference);
                let mut s = if searched.is_empty() {
                    format!("image \"{r}\" not found: no image store found")
                } else {
                    let p: Vec<String> = searched.iter().map(|p| shown::path(p).to_string()).collect();
                    format!("image \"{r}\" not found in {}", p.join(", "))
                };
                if !closest.is_empty() {
                    s += &format!("; closest: {}", list(closest));
                }
                if let Some(first) = unreadable.first() {
                    let n = unreadable.len();
                    s += &format!("; {n} unreadable entr{} without a name, the first: {first}", if n == 1 { "y" } else { "ies" });
                }
                s
            }
            StoreError::Ambiguous { reference, candidates } => {
                format!("\"{}\" is ambiguous, it matches: {}", shown::name(reference), list(candidates))
            }
            StoreError::LayerMissing { image, layer, file } => format!(
                "image {}: layer {} is missing: {} does not exist",
                shown::name(image),
                shown::name(layer),
                shown::path(file)
            ),
            StoreError::Corrupt { file, detail } => format!("corrupt store file {}: {detail}", shown::path(file)),
            StoreError::Store { path, detail } => format!("{}: {detail}", shown::path(path)),
            StoreError::Interrupted(i) => format!("{i}: nothing was mounted"),
        }
    }

    pub(crate) fn io(path: &Path, e: std::io::Error) -> StoreError {
        StoreError::Store { path: path.to_path_buf(), detail: e.to_string() }
    }
    pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt { file: path.to_path_buf(), detail: detail.into() }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shown::one_line(&self.render()))
    }
}
impl std::error::Error for StoreError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line() {
        let e = StoreError::ImageNotFound {
            reference: "x".into(),
            searched: vec!["/a".into()],
            closest: vec!["y".into()],
            unreadable: vec![],
        };
        assert_eq!(e.to_string(), "image \"x\" not found in /a; closest: y");
        let deep = PathBuf::from("d/".repeat(10_000));
        let e = StoreError::Corrupt { file: deep.clone(), detail: "bad\nthing".into() };
        let s = e.to_string();
        assert!(!s.contains('\n') && s.len() < 300, "{}", s.len());
        let e = StoreError::LayerMissing { image: "i\nj".repeat(500), layer: "l".into(), file: deep };
        let s = e.to_string();
        assert!(!s.contains('\n') && s.len() < 500, "{}", s.len());
        let many: Vec<String> = (0..100).map(|i| format!("name{i}")).collect();
        let s = StoreError::Ambiguous { reference: "a".into(), candidates: many }.to_string();
        assert!(s.contains("and 92 more"), "{s}");
    }
}
