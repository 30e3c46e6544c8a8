//! `unionmount images` and `unionmount inspect`: listing and inspecting store images.
//!
//! Invariants: both commands only read stores (inspect never unpacks a layer: for OCI
//! and archive images it shows the cache directory a mount would use); output goes to
//! stdout, one error line to stderr; exit 0 on success, 1 on a store error, 2 on usage.

use super::{StoreError, StoreQuery, short_id, stores_for};
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "unionmount images", about = "List the images in a store (like `docker images`)")]
struct ImagesArgs {
    /// Store to list (Docker root, containers-storage root, OCI layout, docker-save archive)
    #[arg(long)]
    store: Option<PathBuf>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

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
    /// Print JSON
    #[arg(long)]
    json: bool,
}

fn parse<T: Parser>(name: &str, args: &[OsString]) -> Result<T, i32> {
    T::try_parse_from(std::iter::once(OsString::from(name)).chain(args.iter().cloned())).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() { 2 } else { 0 }
    })
}

/// Seconds since the epoch of an RFC 3339 time (`2026-11-26T20:04:52.0005Z`, offsets too).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if !s.is_ascii() || b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let off = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let v = r[1..3].parse::<i64>().ok()? * 3600 + r[4..6].parse::<i64>().ok()? * 60;
            if r.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // Days from civil (proleptic Gregorian).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + se - off)
}

/// "3 hours ago" style.
pub fn ago(created: Option<&str>, now: i64) -> String {
    let Some(t) = created.and_then(parse_rfc3339) else { return "N/A".into() };
    let d = (now - t).max(0);
    let (n, unit) = match d {
        0..=59 => (d, "second"),
        60..=3599 => (d / 60, "minute"),
        3600..=86399 => (d / 3600, "hour"),
        86400..=1209599 => (d / 86400, "day"),
        1209600..=5183999 => (d / 604800, "week"),
        5184000..=63071999 => (d / 2592000, "month"),
        _ => (d / 31536000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Docker-style size (SI units: kB, MB, GB).
pub fn human_size(n: Option<u64>) -> String {
    let Some(n) = n else { return "N/A".into() };
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 { format!("{n}B") } else { format!("{:.3}{}", v, units[i]).replace(".000", "") }
}

/// Write to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes()).and_then(|_| o.flush());
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `unionmount images [--store PATH] [--json]`; `args` follow the subcommand name.
pub fn cli_images(args: &[OsString]) -> i32 {
    let a: ImagesArgs = match parse("unionmount images", args) {
        Ok(a) => a,
        Err(c) => return c,
    };
    match images(&a) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("unionmount images: {e}");
            1
        }
    }
}

fn images(a: &ImagesArgs) -> Result<(), StoreError> {
    let mut out = String::new();
    let (stores, searched) = stores_for(a.store.as_deref())?;
    if stores.is_empty() && !a.json {
        let looked: Vec<String> = super::default_stores().iter().map(|p| p.display().to_string()).collect();
        eprintln!("unionmount images: no image store found (looked in {})", looked.join(", "));
    }
    let _ = searched;
    let mut rows: Vec<[String; 6]> = Vec::new();
    let mut json = Vec::new();
    let t = now();
    for s in &stores {
        let recs = match s.images() {
            Ok(r) => r,
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
                ]);
            }
        }
    }
    if a.json {
        out.push_str(&serde_json::to_string_pretty(&json).unwrap_or_default());
        out.push('\n');
        emit(&out);
        return Ok(());
    }
    let head = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "LAYERS", "SIZE"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut line = |cells: [&str; 6]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == 5 {
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
        line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
    }
    emit(&out);
    Ok(())
}

/// `unionmount inspect IMAGE [--store PATH] [--cache DIR] [--json]`.
pub fn cli_inspect(args: &[OsString]) -> i32 {
    let a: InspectArgs = match parse("unionmount inspect", args) {
        Ok(a) => a,
        Err(c) => return c,
    };
    let q = StoreQuery { reference: a.image.clone(), store: a.store.clone(), cache: a.cache.clone() };
    let img = match super::resolve_with(&q, false) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("unionmount inspect: {e}");
            return 1;
        }
    };
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
        emit(&out);
        return 0;
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
    emit(&out);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-26T20:04:52.000503871Z"), Some(1795723492));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("nope"), None);
        assert_eq!(parse_rfc3339("2026-11-26T20:04:5é0Z"), None);
        assert_eq!(parse_rfc3339("2026-11-26T20:04:52+0é:0"), None);
        assert_eq!(parse_rfc3339("2026-11-26T20:04:52"), None);
        assert_eq!(ago(Some("1970-01-01T00:00:00Z"), 7200), "2 hours ago");
        assert_eq!(ago(Some("1970-01-01T00:00:00Z"), 1), "1 second ago");
        assert_eq!(ago(None, 1), "N/A");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(Some(999)), "999B");
        assert_eq!(human_size(Some(2_088_960)), "2.089MB");
        assert_eq!(human_size(Some(1_000_000)), "1MB");
        assert_eq!(human_size(None), "N/A");
    }
}
