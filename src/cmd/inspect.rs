//! `unionmount inspect IMAGE`: an image's layers, top first, and what made them;
//! `unionmount inspect MNT`: what a mountpoint is made of (image, layers, upper, pid).
//!
//! Invariant: only reads the store; never unpacks a layer (for OCI and archive images it
//! shows the cache directory a mount would use). An argument that is the mountpoint of
//! a unionmount is taken as one; anything else is an image reference.

use super::format::human_size;
use super::{Error, emit, parse};
use crate::record::{MountRecord, Mountpoint, RecordError};
use crate::store::StoreQuery;
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Show an image's layers, top first, or what a mountpoint is made of")]
struct InspectArgs {
    /// Image reference (name[:tag], name@sha256:…, id or unique id prefix), or a mountpoint
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
    /// Fetch a fully qualified name not found locally: never, missing, always
    #[arg(long, value_parser = |s: &str| crate::registry::PullPolicy::parse(s))]
    pull: Option<crate::registry::PullPolicy>,
    /// Verify the registry's TLS certificate (--tls-verify=false to skip)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    tls_verify: Option<bool>,
    /// Directory of *.crt CA files and *.cert/*.key client pairs for the registry
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `unionmount inspect IMAGE [--store PATH] [--cache DIR] [--json]`.
pub fn run(args: &[OsString]) -> Result<i32, Error> {
    let a: InspectArgs = parse("inspect", args)?;
    match crate::record::classify(std::path::Path::new(&a.image)) {
        Ok(Mountpoint::Live(m)) => return mount(&MountRecord::find(&m)?, a.json),
        Ok(Mountpoint::Dead(m)) => return Err(RecordError::Dead(m).into()),
        _ => {}
    }
    let q = StoreQuery {
        reference: a.image.clone(),
        store: a.store.clone(),
        cache: a.cache.clone(),
        namespace: a.namespace.clone(),
        platform: a.platform.clone(),
    };
    let flags = crate::registry::Flags { pull: a.pull, insecure: a.tls_verify == Some(false), cert_dir: a.cert_dir.clone() };
    crate::cancel::install();
    let img = crate::registry::resolve_image(&q, &flags, false)?;
    // The config as the store holds it (docker, containers-storage, OCI layouts).
    let cfg = crate::inspect::oci::base_config_from_store(&img.store, img.id.as_ref()).unwrap_or_default();
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
            "architecture": cfg.get("architecture"), "os": cfg.get("os"),
            "config": cfg.get("config"), "history": cfg.get("history"),
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
    config_lines(&mut out, &cfg);
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

/// `inspect MNT`: the mount's record.
fn mount(m: &MountRecord, json: bool) -> Result<i32, Error> {
    use std::fmt::Write as _;
    if json {
        emit(&format!("{:#}\n", super::mounts::json(m)))?;
        return Ok(0);
    }
    let mut out = String::new();
    let _ = writeln!(out, "Mountpoint: {}", m.mountpoint.display());
    if let Some(i) = &m.image {
        let _ = writeln!(out, "Image:      {i}");
    }
    if let Some(id) = &m.image_id {
        let _ = writeln!(out, "Image ID:   {id}");
    }
    if let Some(s) = &m.store {
        let _ = writeln!(out, "Store:      {}", s.display());
    }
    let upper = m.upper.as_ref().map_or_else(|| "(read-only)".to_string(), |u| u.display().to_string());
    let _ = writeln!(out, "Upper:      {upper}");
    if let Some(w) = &m.work {
        let _ = writeln!(out, "Work:       {}", w.display());
    }
    let _ = writeln!(out, "PID:        {}", m.pid);
    if let Some(s) = m.started {
        let _ = writeln!(out, "Started:    {}", crate::inspect::oci::rfc3339(s as i64));
    }
    let n = m.lowers.len();
    let _ = writeln!(out, "Layers:     {n} (top first)");
    for (i, l) in m.lowers.iter().enumerate() {
        let id = l.diff_id.as_deref().unwrap_or("-");
        let _ = writeln!(out, "  [{}] {id}  {}", n - i, l.dir.display());
    }
    emit(&out)?;
    Ok(0)
}

/// A config string as it may appear on a terminal (control characters blanked).
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The image config fields `docker image inspect` and `skopeo inspect` show, and the
/// history (oldest first).
fn config_lines(out: &mut String, cfg: &serde_json::Value) {
    use serde_json::Value;
    use std::fmt::Write as _;
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) if !s.is_empty() => Some(clean(s)),
            Value::Array(a) if !a.is_empty() => {
                Some(a.iter().map(|x| x.as_str().map(clean).unwrap_or_else(|| x.to_string())).collect::<Vec<_>>().join(" "))
            }
            Value::Object(m) if !m.is_empty() => Some(
                m.iter()
                    .map(|(k, v)| match v.as_str() {
                        Some(s) => format!("{}={}", clean(k), clean(s)),
                        None => clean(k),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        }
    };
    let arch = [cfg.get("os"), cfg.get("architecture"), cfg.get("variant")];
    let platform: Vec<&str> = arch.iter().filter_map(|v| v.and_then(Value::as_str)).collect();
    if !platform.is_empty() {
        let _ = writeln!(out, "Platform: {}", clean(&platform.join("/")));
    }
    let c = cfg.get("config").cloned().unwrap_or_default();
    for (label, key) in [
        ("Env", "Env"),
        ("Entrypoint", "Entrypoint"),
        ("Cmd", "Cmd"),
        ("WorkingDir", "WorkingDir"),
        ("User", "User"),
        ("Ports", "ExposedPorts"),
        ("Labels", "Labels"),
    ] {
        if key == "Env" {
            for e in c.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                let _ = writeln!(out, "Env:      {}", clean(e));
            }
        } else if let Some(t) = c.get(key).and_then(text) {
            let _ = writeln!(out, "{:<10}{t}", format!("{label}:"));
        }
    }
    let history = cfg.get("history").and_then(Value::as_array).filter(|h| !h.is_empty());
    if let Some(h) = history {
        let _ = writeln!(out, "History:  {} steps (oldest first)", h.len());
        for step in h {
            let when = step.get("created").and_then(Value::as_str).unwrap_or("-");
            let by = step.get("created_by").and_then(Value::as_str).map(clean).unwrap_or_default();
            let empty = if step.get("empty_layer").and_then(Value::as_bool) == Some(true) { " (no layer)" } else { "" };
            let _ = writeln!(out, "  {}  {by}{empty}", clean(when));
        }
    }
}
