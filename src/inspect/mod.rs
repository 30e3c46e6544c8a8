//! `diff`, `commit` and `which`: look at what a mount changed and where files come from.
//!
//! One file per job: `layer` (the shared, safe reader of layer directories),
//! `diff` (A/C/D changes), `commit` (layer tar writing), `oci` (OCI image layout),
//! `which` (which layer provides a path). This file holds the command lines.
//!
//! A TARGET is either a live unionmount mountpoint, whose mount record gives the
//! upper and lower directories, or an upper directory, whose lowers are given with
//! `--lower DIR` (repeated, top first) or `-o lowerdir=TOP:…:BOTTOM` (parsed as
//! the mount command parses it: `\:` escapes a colon).
//!
//! Invariants: errors are one line on stderr with a non-zero exit (2 for usage,
//! 1 otherwise); nothing here panics on bad input.

pub mod commit;
pub mod diff;
pub mod layer;
pub mod oci;
pub mod which;

use crate::record::{LayerRecord, MountRecord};
use clap::Parser;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Parse `args` for subcommand `name`; `Err(exit code)` after printing help or
/// a one-line usage error.
fn parse<T: Parser>(name: &str, args: &[OsString]) -> Result<T, i32> {
    let argv = std::iter::once(OsString::from(format!("unionmount {name}"))).chain(args.iter().cloned());
    match T::try_parse_from(argv) {
        Ok(t) => Ok(t),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(0)
        }
        Err(e) => {
            // clap's message up to its usage block, folded onto one line.
            let text = e.to_string();
            let msg: Vec<&str> =
                text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let msg = msg.join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            eprintln!("unionmount {name}: {msg} (see --help)");
            Err(2)
        }
    }
}

fn fail(name: &str, msg: impl std::fmt::Display) -> i32 {
    eprintln!("unionmount {name}: {msg}");
    1
}

/// Write `text` to stdout (a closed pipe is not an error); returns `code`.
fn emit(name: &str, text: &str, code: i32) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => fail(name, e),
    }
}

/// Where the changes are and what they are changes to.
#[derive(clap::Args, Debug)]
struct TargetArgs {
    /// A unionmount mountpoint, or an upper directory
    target: PathBuf,
    /// A lower layer directory, top first; repeat for more (upper-dir TARGET only)
    #[arg(long = "lower", value_name = "DIR")]
    lower: Vec<PathBuf>,
    /// fuse-overlayfs style options; `lowerdir=TOP:…:BOTTOM` is used (upper-dir TARGET only)
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<OsString>,
}

/// A resolved TARGET.
struct Target {
    upper: PathBuf,
    /// The mount's record, when TARGET was a mountpoint.
    record: Option<MountRecord>,
    /// Top first.
    lowers: Vec<LayerRecord>,
    /// False when TARGET was an upper dir and no lowers were given.
    lowers_known: bool,
}

/// The `lowerdir=` layers in `-o` option strings (top first; the last one wins),
/// parsed exactly as the mount command parses them.
fn lowerdirs_from_options(options: &[OsString]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for o in options {
        for part in crate::cli::split_options(o.as_bytes()) {
            if let Some(v) = part.strip_prefix(b"lowerdir=") {
                out = crate::cli::split_lowerdir(v);
            }
        }
    }
    out
}

fn resolve_target(a: &TargetArgs) -> Result<Target, String> {
    let canon = std::fs::canonicalize(&a.target).map_err(|e| format!("{}: {e}", a.target.display()))?;
    let mut given = a.lower.clone();
    given.extend(lowerdirs_from_options(&a.options));
    match crate::record::mount_fstype(&canon).as_deref() {
        Some("fuse.unionmount") => {
            if !given.is_empty() {
                return Err(format!("{} is a mountpoint; --lower/-o lowerdir are for an upper directory", canon.display()));
            }
            let rec = MountRecord::find(&canon).map_err(|e| e.to_string())?;
            let upper = rec.upper.clone().ok_or_else(|| format!("{} is mounted read-only (no upper layer)", canon.display()))?;
            Ok(Target { upper, lowers: rec.lowers.clone(), lowers_known: true, record: Some(rec) })
        }
        Some(t @ ("overlay" | "fuse.fuse-overlayfs")) => Err(format!(
            "{} is an {t} mountpoint; give its upper directory and --lower DIR (top first) instead",
            canon.display()
        )),
        _ => {
            if !canon.is_dir() {
                return Err(format!("{} is neither a unionmount mountpoint nor a directory", canon.display()));
            }
            let lowers_known = !given.is_empty();
            let lowers = given.into_iter().map(|dir| LayerRecord { dir, diff_id: None, layer_id: None }).collect();
            Ok(Target { upper: canon, lowers, lowers_known, record: None })
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "List what a mount changed, like docker diff: A added, C changed, D deleted")]
struct DiffArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Print a JSON array of {"kind","path"} (plus "path_bytes" for non-UTF-8 paths)
    #[arg(long)]
    json: bool,
}

/// `unionmount diff TARGET [--json]`; `args` follow the subcommand name.
pub fn cli_diff(args: &[OsString]) -> i32 {
    let a: DiffArgs = match parse("diff", args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let t = match resolve_target(&a.target) {
        Ok(t) => t,
        Err(e) => return fail("diff", e),
    };
    let lowers: Vec<PathBuf> = t.lowers.iter().map(|l| l.dir.clone()).collect();
    let changes = match diff::changes(&t.upper, &lowers, t.lowers_known) {
        Ok(c) => c,
        Err(e) => return fail("diff", e),
    };
    let mut out = std::io::stdout().lock();
    let res = if a.json { diff::write_json(&mut out, &changes) } else { diff::write_text(&mut out, &changes) };
    match res.and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => fail("diff", e),
    }
}

#[derive(Parser, Debug)]
#[command(about = "Write a mount's upper layer as an OCI layer tar (and optionally a new image)")]
struct CommitArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The layer file to write
    #[arg(long, value_name = "FILE", required_unless_present = "oci")]
    output: Option<PathBuf>,
    /// Compress the layer with gzip
    #[arg(long, conflicts_with = "zstd")]
    gzip: bool,
    /// Compress the layer with zstd
    #[arg(long)]
    zstd: bool,
    /// Name (ref) of the new image in the OCI layout
    #[arg(long, value_name = "NAME", requires = "oci")]
    image: Option<String>,
    /// OCI image layout directory to add the image (base layers + this one) to
    #[arg(long, value_name = "DIR", requires = "image")]
    oci: Option<PathBuf>,
    /// Image config JSON of the base image (its Env, Cmd, … and history are kept);
    /// default: found in the mount's image store when it came from one
    #[arg(long, value_name = "FILE", requires = "oci")]
    base_config: Option<PathBuf>,
}

/// `unionmount commit TARGET --output FILE [--gzip|--zstd] [--image NAME --oci DIR]`.
pub fn cli_commit(args: &[OsString]) -> i32 {
    let a: CommitArgs = match parse("commit", args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match run_commit(&a) {
        Ok(text) => emit("commit", &text, 0),
        Err(e) => fail("commit", e),
    }
}

fn blob_lines(b: &commit::LayerBlob) -> String {
    let mut s = format!("diff_id {}\nsize {}\n", b.diff_id, b.size);
    if b.compression != commit::Compression::None {
        s += &format!("digest {}\ncompressed_size {}\n", b.digest, b.blob_size);
    }
    s
}

fn run_commit(a: &CommitArgs) -> Result<String, String> {
    let comp = if a.gzip {
        commit::Compression::Gzip
    } else if a.zstd {
        commit::Compression::Zstd
    } else {
        commit::Compression::None
    };
    if let Some(name) = &a.image {
        oci::check_ref_name(name)?;
    }
    let t = resolve_target(&a.target)?;
    let s = |e: std::io::Error| e.to_string();
    let mut text = String::new();
    let (Some(dir), Some(name)) = (&a.oci, &a.image) else {
        let out = a.output.as_deref().ok_or("--output FILE is required")?;
        let b = commit::write_layer(&t.upper, out, comp, "upper").map_err(s)?;
        return Ok(blob_lines(&b));
    };
    if !t.lowers_known && t.lowers.is_empty() {
        log::warn!("no lower layers given: the image holds the upper layer alone");
    }
    let base = match (&a.base_config, t.record.as_ref()) {
        (Some(f), _) => {
            let data = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            Some(serde_json::from_slice::<serde_json::Value>(&data).map_err(|e| format!("{}: {e}", f.display()))?)
        }
        (None, Some(rec)) => match (&rec.store, &rec.image_id) {
            (Some(store), Some(id)) => {
                let c = oci::base_config_from_store(store, id);
                if c.is_none() {
                    log::warn!("base image config {id} not found in {}: the image gets an empty config", store.display());
                }
                c
            }
            _ => None,
        },
        (None, None) => None,
    };
    let blobs = oci::prepare(dir).map_err(s)?;
    let mut layers = Vec::new();
    let n = t.lowers.len();
    for (i, l) in t.lowers.iter().rev().enumerate() {
        let tmp = oci::temp_blob(&blobs, i);
        let what = format!("layer {}/{}", i + 1, n);
        let blob = commit::write_layer(&l.dir, &tmp, comp, &what).map_err(s)?;
        oci::adopt(&blobs, &tmp, &blob.digest).map_err(s)?;
        if let Some(orig) = l.diff_id.as_ref().filter(|d| **d != blob.diff_id) {
            log::info!("layer {} re-serialised: diff_id {} (store had {orig})", i + 1, blob.diff_id);
        }
        let created_by = match &l.diff_id {
            Some(d) => format!("unionmount: base layer {d}"),
            None => format!("unionmount: base layer from {}", l.dir.display()),
        };
        layers.push(oci::ImageLayer { blob, created_by });
    }
    let tmp = oci::temp_blob(&blobs, n);
    let blob = commit::write_layer(&t.upper, &tmp, comp, "upper").map_err(s)?;
    if let Some(out) = &a.output {
        std::fs::copy(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    oci::adopt(&blobs, &tmp, &blob.digest).map_err(s)?;
    text += &blob_lines(&blob);
    layers.push(oci::ImageLayer { blob, created_by: "unionmount commit".into() });
    let manifest = oci::write_image(dir, &blobs, name, &layers, base.as_ref()).map_err(s)?;
    text += &format!("image {name}\nmanifest {manifest}\nlayout {}\n", dir.display());
    Ok(text)
}

#[derive(Parser, Debug)]
#[command(about = "Show which layer of a mount provides PATH and which layers it hides \
                   (layer 1 is the base layer; upper is the writable layer)")]
struct WhichArgs {
    /// A path inside a mounted unionmount (its last component is not followed)
    path: PathBuf,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `unionmount which PATH`.
pub fn cli_which(args: &[OsString]) -> i32 {
    let a: WhichArgs = match parse("which", args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match which::which(&a.path, a.json) {
        Ok((text, found)) => emit("which", &text, if found { 0 } else { 1 }),
        Err(e) => fail("which", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowerdir_option_parsing() {
        let o = vec![OsString::from(r"rw,lowerdir=/a\:b:/c,upperdir=/u"), OsString::from("xino=off")];
        assert_eq!(lowerdirs_from_options(&o), vec![PathBuf::from("/a:b"), PathBuf::from("/c")]);
        let o = vec![OsString::from(r#"lowerdir=/x\\y,context="a,b""#)];
        assert_eq!(lowerdirs_from_options(&o), vec![PathBuf::from(r"/x\y")]);
        assert!(lowerdirs_from_options(&[OsString::from("ro")]).is_empty());
    }

    #[test]
    fn usage_errors_are_exit_2() {
        assert_eq!(cli_diff(&[]), 2);
        assert_eq!(cli_commit(&[OsString::from("/tmp")]), 2);
        assert_eq!(cli_commit(&[OsString::from("/tmp"), OsString::from("--output=x"), OsString::from("--image=a")]), 2);
        assert_eq!(cli_which(&[OsString::from("--bogus")]), 2);
    }

    #[test]
    fn target_errors_are_exit_1() {
        assert_eq!(cli_diff(&[OsString::from("/nonexistent/dir")]), 1);
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("file");
        std::fs::write(&f, "x").unwrap();
        assert_eq!(cli_diff(&[f.into_os_string()]), 1);
    }
}
