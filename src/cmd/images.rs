//! `unionmount images`: the images of one store, or of every default store.
//!
//! Invariant: stores are only read; with no `--store`, a default store that cannot be
//! read is skipped with a warning line, the others are still listed.

use super::format::{ago, human_size, now};
use super::{Error, emit, parse};
use crate::store::{StoreError, default_stores, short_id, stores_for};
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "unionmount images", about = "List the images in a store (like `docker images`)")]
struct ImagesArgs {
    /// Store to list (Docker root, containers-storage root, OCI layout, docker-save archive)
    #[arg(long)]
    store: Option<PathBuf>,
    /// Only this containerd namespace (default: all, moby first)
    #[arg(long)]
    namespace: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

/// `unionmount images [--store PATH] [--json]`; `args` follow the subcommand name.
pub fn run(args: &[OsString]) -> Result<i32, Error> {
    let a: ImagesArgs = parse("images", args)?;
    let text = images(&a)?;
    emit(&text)?;
    Ok(0)
}

fn images(a: &ImagesArgs) -> Result<String, StoreError> {
    let mut out = String::new();
    let (mut stores, searched) = stores_for(a.store.as_deref())?;
    if stores.is_empty() {
        let looked: Vec<String> = default_stores().iter().map(|p| p.display().to_string()).collect();
        return Err(StoreError::Other(format!(
            "no image store found (looked in {}): name one with --store",
            looked.join(", ")
        )));
    }
    let _ = searched;
    for s in &mut stores {
        s.select(a.namespace.as_deref(), None)?;
    }
    let mut rows: Vec<[String; 7]> = Vec::new();
    let mut json = Vec::new();
    let t = now();
    for s in &stores {
        let recs = match s.listing_detailed() {
            Ok(l) => {
                for b in &l.broken {
                    log::warn!("{}: unreadable entry {}: {}", s.root().display(), b.display_names().join(" "), b.error);
                }
                l.images
            }
            Err(e) if a.store.is_none() => {
                eprintln!("unionmount images: skipping {}: {e}", s.root().display());
                continue;
            }
            Err(e) => return Err(e),
        };
        for r in recs {
            let names = r.display_names();
            json.push(serde_json::json!({
                "store": s.root(), "kind": s.kind(), "id": r.id, "names": r.names,
                "digests": r.digests, "created": r.created, "layers": r.layer_count, "size": r.size,
                "namespace": r.namespace,
            }));
            let shown: Vec<(String, String)> = if names.is_empty() {
                vec![("<none>".into(), "<none>".into())]
            } else {
                names
                    .iter()
                    .map(|n| match n.rsplit_once(':').filter(|(r, _)| !r.is_empty() && !n[r.len()..].contains('/')) {
                        Some((r, t)) => (r.to_string(), t.to_string()),
                        None => ("<none>".to_string(), n.clone()),
                    })
                    .collect()
            };
            for (repo, tag) in shown {
                rows.push([
                    repo,
                    tag,
                    short_id(&r.id).to_string(),
                    ago(r.created.as_deref(), t),
                    r.layer_count.map(|n| n.to_string()).unwrap_or_else(|| "N/A".into()),
                    human_size(r.size),
                    r.namespace.clone().unwrap_or_default(),
                ]);
            }
        }
    }
    if a.json {
        out.push_str(&serde_json::to_string_pretty(&json).unwrap_or_default());
        out.push('\n');
        return Ok(out);
    }
    // NAMESPACE only when a containerd store was listed.
    let cols = if rows.iter().any(|r| !r[6].is_empty()) { 7 } else { 6 };
    let head = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "LAYERS", "SIZE", "NAMESPACE"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut line = |cells: [&str; 7]| {
        let mut s = String::new();
        for (i, c) in cells.iter().take(cols).enumerate() {
            if i + 1 == cols {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = w[i]));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(head);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5], &r[6]]);
    }
    Ok(out)
}
