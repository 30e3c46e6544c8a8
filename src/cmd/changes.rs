//! `unionmount diff` and `unionmount commit`: what a mount changed, listed or written out.
//!
//! A TARGET is either a live unionmount mountpoint, whose mount record gives the
//! upper and lower directories, or an upper directory, whose lowers are given with
//! `--lower DIR` (repeated, top first) or `-o lowerdir=TOP:…:BOTTOM` (parsed as
//! the mount command parses it: `\\:` escapes a colon).

use super::options::{split_lowerdir, split_options};
use super::{Error, Usage, emit, emit_with, parse};
use crate::inspect::target::Target;
use crate::inspect::{InspectError, commit, diff, oci};
use clap::Parser;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

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

/// The `lowerdir=` layers in `-o` option strings (top first; the last one wins),
/// parsed exactly as the mount command parses them.
fn lowerdirs_from_options(options: &[OsString]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for o in options {
        for part in split_options(o.as_bytes()) {
            if let Some(v) = part.strip_prefix(b"lowerdir=") {
                out = split_lowerdir(v);
            }
        }
    }
    out
}

fn resolve_target(a: &TargetArgs) -> Result<Target, InspectError> {
    let mut given = a.lower.clone();
    given.extend(lowerdirs_from_options(&a.options));
    Target::resolve(&a.target, given)
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
pub fn run_diff(args: &[OsString]) -> Result<i32, Error> {
    let a: DiffArgs = parse("diff", args)?;
    let t = resolve_target(&a.target)?;
    let changes = diff::changes(&t.upper, &t.lower_dirs(), t.lowers_known)?;
    emit_with(|out| if a.json { diff::write_json(out, &changes) } else { diff::write_text(out, &changes) })?;
    Ok(0)
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
pub fn run_commit(args: &[OsString]) -> Result<i32, Error> {
    let a: CommitArgs = parse("commit", args)?;
    let text = commit_target(&a)?;
    emit(&text)?;
    Ok(0)
}

fn blob_lines(b: &commit::LayerBlob) -> String {
    let mut s = format!("diff_id {}\nsize {}\n", b.diff_id, b.size);
    if b.compression != commit::Compression::None {
        s += &format!("digest {}\ncompressed_size {}\n", b.digest, b.blob_size);
    }
    s
}

fn commit_target(a: &CommitArgs) -> Result<String, Error> {
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
        let mut text = String::new();
    let (Some(dir), Some(name)) = (&a.oci, &a.image) else {
        let out = a.output.as_deref().ok_or_else(|| Usage::new("--output FILE is required"))?;
        let b = commit::write_layer(&t.upper, out, comp, "upper")?;
        return Ok(blob_lines(&b));
    };
    if !t.lowers_known && t.lowers.is_empty() {
        log::warn!("no lower layers given: the image holds the upper layer alone");
    }
    let base = match (&a.base_config, t.record.as_ref()) {
        (Some(f), _) => {
            let data = std::fs::read(f).map_err(InspectError::io(f))?;
            let json = serde_json::from_slice::<serde_json::Value>(&data);
            Some(json.map_err(|source| InspectError::Json { path: f.clone(), source })?)
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
    let blobs = oci::prepare(dir)?;
    let mut layers = Vec::new();
    let n = t.lowers.len();
    for (i, l) in t.lowers.iter().rev().enumerate() {
        let tmp = oci::temp_blob(&blobs, i);
        let what = format!("layer {}/{}", i + 1, n);
        let blob = commit::write_layer(&l.dir, &tmp, comp, &what)?;
        oci::adopt(&blobs, &tmp, &blob.digest)?;
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
    let blob = commit::write_layer(&t.upper, &tmp, comp, "upper")?;
    if let Some(out) = &a.output {
        std::fs::copy(&tmp, out).map_err(InspectError::io(out))?;
    }
    oci::adopt(&blobs, &tmp, &blob.digest)?;
    text += &blob_lines(&blob);
    layers.push(oci::ImageLayer { blob, created_by: "unionmount commit".into() });
    let manifest = oci::write_image(dir, &blobs, name, &layers, base.as_ref())?;
    text += &format!("image {name}\nmanifest {manifest}\nlayout {}\n", dir.display());
    Ok(text)
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

    fn usage(r: Result<i32, Error>) -> bool {
        matches!(r, Err(Error::Usage(_)))
    }
    fn failure(r: Result<i32, Error>) -> bool {
        matches!(r, Err(Error::Failed(_)))
    }

    #[test]
    fn usage_errors_are_exit_2() {
        assert!(usage(run_diff(&[])));
        assert!(usage(run_commit(&[OsString::from("/tmp")])));
        assert!(usage(run_commit(&[OsString::from("/tmp"), OsString::from("--output=x"), OsString::from("--image=a")])));
        assert!(usage(super::super::which::run(&[OsString::from("--bogus")])));
    }

    #[test]
    fn target_errors_are_exit_1() {
        assert!(failure(run_diff(&[OsString::from("/nonexistent/dir")])));
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("file");
        std::fs::write(&f, "x").unwrap();
        assert!(failure(run_diff(&[f.into_os_string()])));
    }
}
