//! `unionmount images`: the images of one store, or of every default store, as
//! `docker images` shows them.
//!
//! `[REPOSITORY[:TAG]]` narrows to one repository (and tag); `--filter
//! reference=PATTERN` (repeatable: any may match) matches `repo:tag` or `repo` with
//! shell-style globs (`*` stops at `/`); images without a name (`<none>`) are hidden
//! unless `-a`; `-q` prints IDs only; `--no-trunc` full IDs; `--format json` one JSON
//! object per line with docker's keys, `--json` one array with ours.
//!
//! Invariant: stores are only read; with no `--store`, a default store that cannot be
//! read is skipped with a warning line, the others are still listed. Rows are built in
//! one place ([`Row`]), so a store that lists more (another kind, a namespace) adds
//! rows, not code.

use super::format::{ago, human_size, now, table};
use super::{Error, Usage, emit, parse};
use crate::store::digest::Digest;
use crate::store::{ImageRecord, StoreError, default_stores, short_id, stores_for};
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "List the images in a store (like `docker images`)")]
struct ImagesArgs {
    /// Only this repository (and tag): `alpine`, `alpine:3.20`
    repository: Option<String>,
    /// Store to list (Docker root, containerd root, containers-storage root, OCI layout, docker-save archive)
    #[arg(long)]
    store: Option<PathBuf>,
    /// Only this containerd namespace (default: all, moby first)
    #[arg(long)]
    namespace: Option<String>,
    /// Layer cache whose registry images to list too (default: the usual cache)
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Show all images, also those without a name (hidden by default)
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Only image IDs
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
    /// Filter: `reference=PATTERN` (globs: `*`, `?`, `[...]`); repeat for any of several
    #[arg(short = 'f', long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
    /// Full image IDs
    #[arg(long)]
    no_trunc: bool,
    /// `table` (default) or `json` (one object per line, docker's keys)
    #[arg(long, value_name = "FORMAT", default_value = "table", value_parser = ["table", "json"])]
    format: String,
    /// Print one JSON array (store, kind, id, names, digests, created, layers, size)
    #[arg(long, conflicts_with_all = ["quiet", "format"])]
    json: bool,
}

/// One line of the table: an image under one of its names.
struct Row {
    repository: String,
    tag: String,
    id: Digest,
    created: Option<String>,
    layers: Option<usize>,
    size: Option<u64>,
    store: String,
    /// containerd namespace, for containerd stores.
    namespace: Option<String>,
}

/// `unionmount images [REPO[:TAG]] [--store PATH] [-a] [-q] [--filter reference=P] [--no-trunc] [--format F] [--json]`.
pub fn run(args: &[OsString]) -> Result<i32, Error> {
    let a: ImagesArgs = parse("images", args)?;
    let patterns = reference_patterns(&a.filter)?;
    let (records, json) = listed(&a)?;
    if a.json {
        emit(&format!("{:#}\n", serde_json::Value::from(json)))?;
        return Ok(0);
    }
    let mut rows: Vec<Row> = Vec::new();
    for (store, r) in &records {
        rows.extend(rows_of(store, r));
    }
    rows.retain(|row| {
        (a.all || row.repository != "<none>" || row.tag != "<none>")
            && a.repository.as_deref().is_none_or(|want| repo_matches(want, row))
            && (patterns.is_empty() || patterns.iter().any(|p| reference_matches(p, row)))
    });
    let id = |row: &Row| if a.no_trunc { row.id.to_string() } else { short_id(&row.id).to_string() };
    let text = if a.quiet {
        let mut seen = Vec::new();
        for row in &rows {
            let i = id(row);
            if !seen.contains(&i) {
                seen.push(i);
            }
        }
        seen.iter().map(|i| format!("{i}\n")).collect()
    } else if a.format == "json" {
        let t = now();
        rows.iter()
            .map(|row| {
                let v = serde_json::json!({
                    "Repository": row.repository, "Tag": row.tag, "ID": id(row),
                    "CreatedAt": row.created, "CreatedSince": ago(row.created.as_deref(), t),
                    "Size": human_size(row.size), "Layers": row.layers, "Store": row.store,
                    "Namespace": row.namespace,
                });
                format!("{v}\n")
            })
            .collect()
    } else {
        let t = now();
        // NAMESPACE only when a containerd store was listed.
        let namespaces = rows.iter().any(|r| r.namespace.is_some());
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|row| {
                let mut c = vec![
                    row.repository.clone(),
                    row.tag.clone(),
                    id(row),
                    ago(row.created.as_deref(), t),
                    row.layers.map(|n| n.to_string()).unwrap_or_else(|| "N/A".into()),
                    human_size(row.size),
                ];
                if namespaces {
                    c.push(row.namespace.clone().unwrap_or_default());
                }
                c
            })
            .collect();
        let head = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "LAYERS", "SIZE", "NAMESPACE"];
        table(&head[..if namespaces { 7 } else { 6 }], &cells)
    };
    emit(&text)?;
    Ok(0)
}

/// Every image of the stores asked for, with the JSON `--json` prints.
/// Each image with the store it is in, and the JSON `--json` prints.
type Listed = (Vec<(String, ImageRecord)>, Vec<serde_json::Value>);

fn listed(a: &ImagesArgs) -> Result<Listed, StoreError> {
    let (mut stores, _searched) = stores_for(a.store.as_deref())?;
    // Registry images already pulled into the cache (only when no --store names one store).
    let cache = a.cache.clone().unwrap_or_else(crate::store::default_cache_dir);
    let pulled = if a.store.is_none() { crate::registry::cached_images(&cache) } else { Vec::new() };
    if stores.is_empty() && pulled.is_empty() {
        let looked: Vec<String> = default_stores().iter().map(|p| p.display().to_string()).collect();
        return Err(StoreError::Other(format!("no image store found (looked in {}): name one with --store", looked.join(", "))));
    }
    for s in &mut stores {
        s.select(a.namespace.as_deref(), None)?;
    }
    let mut out = Vec::new();
    let mut json = Vec::new();
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
            json.push(serde_json::json!({
                "store": s.root(), "kind": s.kind(), "id": r.id, "names": r.names,
                "digests": r.digests, "created": r.created, "layers": r.layer_count, "size": r.size,
                "namespace": r.namespace,
            }));
            out.push((s.root().display().to_string(), r));
        }
    }
    let root = cache.join("registry");
    for r in pulled {
        json.push(serde_json::json!({
            "store": root, "kind": crate::store::StoreKind::Registry, "id": r.id, "names": r.names,
            "digests": r.digests, "created": r.created, "layers": r.layer_count, "size": r.size,
        }));
        out.push((root.display().to_string(), r));
    }
    Ok((out, json))
}

/// One row per name (`repo:tag`), or one `<none>` row.
fn rows_of(store: &str, r: &ImageRecord) -> Vec<Row> {
    let names = r.display_names();
    let split: Vec<(String, String)> = if names.is_empty() {
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
    split
        .into_iter()
        .map(|(repository, tag)| Row {
            repository,
            tag,
            id: r.id.clone(),
            created: r.created.clone(),
            layers: r.layer_count,
            size: r.size,
            store: store.to_string(),
            namespace: r.namespace.clone(),
        })
        .collect()
}

/// The `reference=` patterns of `--filter`; any other filter is a usage error.
fn reference_patterns(filters: &[String]) -> Result<Vec<String>, Usage> {
    filters
        .iter()
        .map(|f| match f.split_once('=') {
            Some(("reference", p)) if !p.is_empty() => Ok(p.to_string()),
            _ => Err(Usage(format!("unsupported filter {f:?}: use --filter reference=PATTERN"))),
        })
        .collect()
}

/// A repository without the default registry or namespace a short name implies
/// (`docker.io/library/`, `docker.io/`, `localhost/`), as `podman images NAME` and
/// mounting by a short name see it.
fn short_repo(repo: &str) -> &str {
    ["docker.io/library/", "docker.io/", "localhost/", "library/"].iter().find_map(|p| repo.strip_prefix(p)).unwrap_or(repo)
}

/// `REPO` or `REPO:TAG` as `docker images REPO` takes it (short names too).
fn repo_matches(want: &str, row: &Row) -> bool {
    let (repo, tag) = match want.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((repo, tag)) => (repo, Some(tag)),
        None => (want, None),
    };
    let same = row.repository == repo || short_repo(&row.repository) == short_repo(repo);
    same && tag.is_none_or(|t| row.tag == t)
}

/// `--filter reference=PATTERN`: the pattern against `repo:tag`, or against `repo`
/// when it names no tag; the repository as stored or as a short name.
fn reference_matches(pattern: &str, row: &Row) -> bool {
    [row.repository.as_str(), short_repo(&row.repository)].iter().any(|repo| {
        glob(pattern.as_bytes(), format!("{repo}:{}", row.tag).as_bytes())
            || (!pattern.contains(':') && glob(pattern.as_bytes(), repo.as_bytes()))
    })
}

/// Shell-style match as Go's `path.Match`: `*` is any run without `/`, `?` one
/// character but `/`, `[...]` a class (`[!...]` or `[^...]` negated, `a-z` ranges).
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).take_while(|&i| i == 0 || s[i - 1] != b'/').any(|i| glob(&p[1..], &s[i..])),
        Some(b'?') => s.first().is_some_and(|&c| c != b'/') && glob(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(&c) = s.first() else { return false };
            let Some(end) = p.iter().skip(2).position(|&b| b == b']').map(|i| i + 2) else { return false };
            let (neg, class) = match p[1] {
                b'!' | b'^' => (true, &p[2..end]),
                _ => (false, &p[1..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= (class[i]..=class[i + 2]).contains(&c);
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != neg && c != b'/' && glob(&p[end + 1..], &s[1..])
        }
        Some(&c) => s.first() == Some(&c) && glob(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(repo: &str, tag: &str) -> Row {
        Row {
            repository: repo.into(),
            tag: tag.into(),
            id: Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
            created: None,
            layers: None,
            size: None,
            store: String::new(),
            namespace: None,
        }
    }

    #[test]
    fn globs_as_docker() {
        assert!(glob(b"tiny*", b"tiny:app"));
        assert!(!glob(b"*/tiny:*", b"example.com/team/tiny:v1"), "* stops at /");
        assert!(glob(b"example.com/*/tiny:v?", b"example.com/team/tiny:v1"));
        assert!(glob(b"[a-t]iny:app", b"tiny:app") && !glob(b"[!t]iny:app", b"tiny:app"));
        assert!(reference_matches("tiny", &row("tiny", "app")));
        assert!(reference_matches("ti*:a*", &row("tiny", "app")));
        assert!(!reference_matches("tiny:v1", &row("tiny", "app")));
        assert!(repo_matches("tiny", &row("tiny", "app")) && repo_matches("tiny:app", &row("tiny", "app")));
        assert!(!repo_matches("tiny:v1", &row("tiny", "app")) && !repo_matches("tin", &row("tiny", "app")));
        assert!(reference_patterns(&["dangling=true".into()]).is_err());
        assert!(repo_matches("tiny:app", &row("localhost/tiny", "app")) && reference_matches("ti*", &row("localhost/tiny", "app")));
    }
}
