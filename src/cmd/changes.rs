//! `unionmount diff` and `unionmount commit`: what a mount changed, listed or written out.
//!
//! A TARGET is either a live unionmount mountpoint, whose mount record gives the
//! upper and lower directories, or an upper directory, whose lowers are given with
//! `--lower DIR` (repeated, top first) or `-o lowerdir=TOP:…:BOTTOM` (parsed as
//! the mount command parses it: `\\:` escapes a colon).

use super::options::{split_lowerdir, split_options};
use super::{Error, Usage, emit, emit_with, parse};
use crate::inspect::target::Target;
use crate::record::LayerRecord;
use crate::store::StoreQuery;
use crate::inspect::{InspectError, commit, diff, oci};
use clap::Parser;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Where the changes are and what they are changes to.
#[derive(clap::Args, Debug)]
struct TargetArgs {
    /// The mountpoint of a live unionmount
    #[arg(required_unless_present = "upper", conflicts_with = "upper")]
    target: Option<PathBuf>,
    /// An upper directory instead of a mountpoint (its layers: --lower, -o lowerdir= or --base)
    #[arg(long, value_name = "DIR")]
    upper: Option<PathBuf>,
    /// A lower layer directory of --upper, top first; repeat for more
    #[arg(long = "lower", value_name = "DIR", requires = "upper")]
    lower: Vec<PathBuf>,
    /// fuse-overlayfs style options for --upper; `lowerdir=TOP:…:BOTTOM` is used
    #[arg(short = 'o', value_name = "OPTIONS", requires = "upper")]
    options: Vec<OsString>,
    /// The image whose layers lie under --upper
    #[arg(long, value_name = "IMAGE", requires = "upper", conflicts_with_all = ["lower", "options"])]
    base: Option<String>,
    /// Store of the --base image (default: the default stores)
    #[arg(long, value_name = "PATH", requires = "base")]
    store: Option<PathBuf>,
    /// Layer cache for the --base image (OCI layouts and archives)
    #[arg(long, value_name = "DIR", requires = "base")]
    cache: Option<PathBuf>,
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
    let Some(upper) = &a.upper else {
        return Target::mountpoint(a.target.as_deref().expect("clap: TARGET or --upper"));
    };
    let lowers = match &a.base {
        Some(reference) => {
            let q = StoreQuery { reference: reference.clone(), store: a.store.clone(), cache: a.cache.clone(), ..Default::default() };
            let img = crate::store::resolve(&q)?;
            img.layers
                .into_iter()
                .map(|l| LayerRecord {
                    dir: l.dir,
                    diff_id: Some(l.diff_id.to_string()),
                    layer_id: Some(l.layer_id),
                    whiteouts: l.whiteouts,
                })
                .collect()
        }
        None => {
            let mut dirs = a.lower.clone();
            dirs.extend(lowerdirs_from_options(&a.options));
            // Directories no store vouches for: either whiteout form (`overlay` rule 3).
            dirs.into_iter().map(|dir| LayerRecord { dir, diff_id: None, layer_id: None, whiteouts: Default::default() }).collect()
        }
    };
    Target::upper_dir(upper, lowers)
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
    let changes = diff::changes(&t.upper, &t.lowers, t.lowers_known)?;
    emit_with(|out| if a.json { diff::write_json(out, &changes) } else { diff::write_text(out, &changes) })?;
    Ok(0)
}

#[derive(Parser, Debug)]
#[command(about = "Write a mount's upper layer as an OCI layer tar (and optionally a new image)")]
struct CommitArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// The layer file to write (`-`: standard output)
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
    /// OCI image layout directory (new, empty, or an existing layout) to add the image
    /// (base layers + this one) to
    #[arg(long, value_name = "DIR", requires = "image")]
    oci: Option<PathBuf>,
    /// Image config JSON of the base image (its Env, Cmd, … and history are kept);
    /// default: found in the mount's image store when it came from one
    #[arg(long, value_name = "FILE", requires = "oci")]
    base_config: Option<PathBuf>,
    /// Print what was written as JSON
    #[arg(long)]
    json: bool,
}

/// Where the layer tar goes.
enum Output {
    File(PathBuf),
    Stdout,
}

/// What a commit wrote.
struct Committed {
    blob: commit::LayerBlob,
    /// (name, manifest digest, layout) when an image was written.
    image: Option<(String, String, PathBuf)>,
}

/// `unionmount commit TARGET --output FILE [--gzip|--zstd] [--image NAME --oci DIR] [--json]`.
pub fn run_commit(args: &[OsString]) -> Result<i32, Error> {
    let a: CommitArgs = parse("commit", args)?;
    let output = output_of(&a)?;
    if let Some(dir) = &a.oci {
        check_layout_dir(dir)?;
    }
    let to_stdout = matches!(output, Some(Output::Stdout));
    if to_stdout && a.json {
        return Err(Usage::new("--json and --output - both write to standard output: give --output FILE").into());
    }
    let done = commit_target(&a, output.as_ref())?;
    let text = if a.json { format!("{:#}\n", committed_json(&done)) } else { committed_text(&done) };
    if to_stdout {
        eprint!("{text}");
    } else {
        emit(&text)?;
    }
    Ok(0)
}

/// `--output`: a file, or `-` for standard output (not a terminal); never a directory.
fn output_of(a: &CommitArgs) -> Result<Option<Output>, Error> {
    use std::io::IsTerminal;
    let Some(out) = &a.output else { return Ok(None) };
    if out.as_os_str() == "-" {
        if std::io::stdout().is_terminal() {
            return Err(Usage::new("refusing to write a layer tar to a terminal: redirect standard output or give --output FILE").into());
        }
        return Ok(Some(Output::Stdout));
    }
    if out.as_os_str().as_bytes().ends_with(b"/") || out.is_dir() {
        let shown = out.display().to_string();
        let dir = shown.trim_end_matches('/');
        return Err(Usage(format!("--output {shown} is a directory: give a file name, such as {dir}/layer.tar")).into());
    }
    Ok(Some(Output::File(out.clone())))
}

/// `--oci DIR` writes only into a new or empty directory or an existing OCI layout.
fn check_layout_dir(dir: &std::path::Path) -> Result<(), InspectError> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(InspectError::io(dir)(e)),
        Ok(mut entries) => {
            let layout = std::fs::symlink_metadata(dir.join("oci-layout")).is_ok_and(|m| m.is_file());
            if layout || entries.next().is_none() { Ok(()) } else { Err(InspectError::NotALayout(dir.to_path_buf())) }
        }
    }
}

fn committed_text(c: &Committed) -> String {
    let b = &c.blob;
    let mut s = format!("diff_id {}\nsize {}\n", b.diff_id, b.size);
    if b.compression != commit::Compression::None {
        s += &format!("digest {}\ncompressed_size {}\n", b.digest, b.blob_size);
    }
    if let Some((name, manifest, layout)) = &c.image {
        s += &format!("image {name}\nmanifest {manifest}\nlayout {}\n", layout.display());
    }
    s
}

fn committed_json(c: &Committed) -> serde_json::Value {
    let b = &c.blob;
    let compressed = b.compression != commit::Compression::None;
    let mut v = serde_json::json!({
        "diff_id": b.diff_id, "size": b.size,
        "digest": compressed.then_some(&b.digest), "compressed_size": compressed.then_some(b.blob_size),
        "media_type": b.compression.media_type(),
    });
    if let Some((name, manifest, layout)) = &c.image {
        v["image"] = name.as_str().into();
        v["manifest"] = manifest.as_str().into();
        v["layout"] = layout.to_string_lossy().into();
    }
    v
}

/// Copy a finished layer file to `out`.
fn deliver(tmp: &std::path::Path, out: &Output) -> Result<(), Error> {
    match out {
        Output::File(f) => {
            std::fs::copy(tmp, f).map_err(InspectError::io(f))?;
        }
        Output::Stdout => {
            let mut src = std::fs::File::open(tmp).map_err(InspectError::io(tmp))?;
            super::emit_with(|w| std::io::copy(&mut src, w).map(drop))?;
        }
    }
    Ok(())
}

/// A temporary file removed on drop (a layer on its way to standard output).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn commit_target(a: &CommitArgs, output: Option<&Output>) -> Result<Committed, Error> {
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
    let (Some(dir), Some(name)) = (&a.oci, &a.image) else {
        let blob = match output.ok_or_else(|| Usage::new("--output FILE is required"))? {
            Output::File(f) => commit::write_upper(&t.upper, &t.lowers, f, comp)?,
            out @ Output::Stdout => {
                let tmp = TempFile(std::env::temp_dir().join(format!("unionmount-commit-{}.tar", std::process::id())));
                let blob = commit::write_upper(&t.upper, &t.lowers, &tmp.0, comp)?;
                deliver(&tmp.0, out)?;
                blob
            }
        };
        return Ok(Committed { blob, image: None });
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
        let blob = commit::write_layer(l, &tmp, comp, &what)?;
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
    let blob = commit::write_upper(&t.upper, &t.lowers, &tmp, comp)?;
    if let Some(out) = output {
        deliver(&tmp, out)?;
    }
    oci::adopt(&blobs, &tmp, &blob.digest)?;
    layers.push(oci::ImageLayer { blob: blob.clone(), created_by: "unionmount commit".into() });
    let manifest = oci::write_image(dir, &blobs, name, &layers, base.as_ref())?;
    Ok(Committed { blob, image: Some((name.clone(), manifest.to_string(), dir.clone())) })
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
