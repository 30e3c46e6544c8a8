//! `unionmount inspect IMAGE`: an image's layers, top first, and what made them.
//!
//! Invariant: only reads the store; never unpacks a layer (for OCI and archive images it
//! shows the cache directory a mount would use).

use super::format::human_size;
use super::{Error, emit, parse};
use crate::store::{StoreQuery, resolve_with};
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "unionmount inspect", about = "Show an image's layers, top first")]
struct InspectArgs {
    /// Image reference: name[:tag], name@sha256:…, id or unique id prefix
    image: String,
    /// Store to search (default: /var/lib/docker, then containers-storage roots)
    #[arg(long)]
    store: Option<PathBuf>,
    /// Layer cache for OCI layouts and archives
    #[arg(long)]
    cache: Option<PathBuf>,
    /// containerd namespace (default: moby, then the others)
    #[arg(long)]
    namespace: Option<String>,
    /// Platform of a multi-platform image: os/arch[/variant] (default: this machine)
    #[arg(long)]
    platform: Option<String>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `unionmount inspect IMAGE [--store PATH] [--cache DIR] [--json]`.
pub fn run(args: &[OsString]) -> Result<i32, Error> {
    let a: InspectArgs = parse("inspect", args)?;
    let q = StoreQuery {
        reference: a.image.clone(),
        store: a.store.clone(),
        cache: a.cache.clone(),
        namespace: a.namespace.clone(),
        platform: a.platform.clone(),
    };
    let img = resolve_with(&q, false)?;
    let n = img.layers.len();
    let mut out = String::new();
    use std::fmt::Write as _;
    if a.json {
        let layers: Vec<_> = img
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                serde_json::json!({
                    "index": n - i, "diff_id": l.diff_id, "layer_id": l.layer_id, "dir": l.dir,
                    "size": l.size, "whiteouts": l.whiteouts, "created_by": l.created_by,
                    "present": l.dir.is_dir(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "id": img.id, "names": img.names, "store": img.store, "kind": img.kind,
            "created": img.created, "layers": layers,
        });
        out.push_str(&serde_json::to_string_pretty(&v).unwrap_or_default());
        out.push('\n');
        emit(&out)?;
        return Ok(0);
    }
    let _ = writeln!(out, "Image:    {}", img.id);
    if !img.names.is_empty() {
        let _ = writeln!(out, "Names:    {}", img.names.join(", "));
    }
    let _ = writeln!(out, "Store:    {} ({})", img.store.display(), img.kind.name());
    if let Some(c) = &img.created {
        let _ = writeln!(out, "Created:  {c}");
    }
    let _ = writeln!(out, "Layers:   {n} (top first)");
    for (i, l) in img.layers.iter().enumerate() {
        let _ = writeln!(out, "  [{}] diff_id  {}", n - i, l.diff_id);
        if l.layer_id != l.diff_id {
            let _ = writeln!(out, "      layer    {}", l.layer_id);
        }
        let note = if l.dir.is_dir() { "" } else { "  (not unpacked yet)" };
        let _ = writeln!(out, "      dir      {}{note}", l.dir.display());
        let _ = writeln!(out, "      size     {}", human_size(l.size));
        if let Some(c) = &l.created_by {
            let c: String = c.chars().map(|ch| if ch.is_control() { ' ' } else { ch }).collect();
            let _ = writeln!(out, "      by       {c}");
        }
    }
    emit(&out)?;
    Ok(0)
}
