//! Command line: argv and `-o` option strings to typed options (pure, table-tested).
//!
//! Mount forms accepted:
//! - `unionmount [-f] [-d] -o lowerdir=TOP:…:BOTTOM[,upperdir=U,workdir=W][,OPT…] [SOURCE] MNT`
//!   (fuse-overlayfs style; also what mount.fuse3 and containers/storage run);
//! - `unionmount [--store P] [--cache D] [--upper D | --read-only] [-o OPTS] IMAGE MNT`.
//!
//! `-o` may appear anywhere and more than once; options are split on commas outside
//! double quotes (`context="a,b"`), empty ones are skipped, unknown ones are kept
//! in `ignored` (logged, never fatal). In lowerdir, `\:` is a literal colon.
//! Paths are bytes: nothing here requires UTF-8.

use crate::fuse::Passthrough;
use crate::layers::WhiteoutFormat;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// Options given with `-o`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MountOpts {
    pub lowerdir: Vec<PathBuf>,
    pub upperdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    /// `volatile` or `fsync=0`: skip fsync.
    pub no_fsync: bool,
    pub fsname: Option<String>,
    pub allow_other: bool,
    pub read_only: bool,
    pub cache_entries: Option<usize>,
    /// Kernel entry/attribute cache time in seconds.
    pub timeout: Option<f64>,
    pub threads: Option<usize>,
    pub passthrough: Option<Passthrough>,
    pub whiteout: Option<WhiteoutFormat>,
    pub store: Option<PathBuf>,
    /// Generic mount flags passed on to the kernel (nodev, nosuid, noexec, …).
    pub kernel_flags: Vec<String>,
    /// Accepted but unused (logged at debug level).
    pub ignored: Vec<String>,
}

/// A parsed mount command.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MountArgs {
    pub foreground: bool,
    pub debug: bool,
    pub opts: MountOpts,
    /// IMAGE in image mode, SOURCE (informational) in overlay mode.
    pub source: Option<OsString>,
    pub mountpoint: PathBuf,
    pub cache: Option<PathBuf>,
    /// `--upper DIR`: persistent writable layer for image mounts.
    pub upper: Option<PathBuf>,
}

impl MountArgs {
    /// Image mode: no lowerdir, so the source names an image.
    pub fn image(&self) -> Option<&OsStr> {
        if self.opts.lowerdir.is_empty() { self.source.as_deref() } else { None }
    }
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Mount(Box<MountArgs>),
    Help,
    Version,
}

pub const USAGE: &str = "\
usage: unionmount [-f] [-d] -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W][,OPT...] [SOURCE] MOUNTPOINT
       unionmount [--store PATH] [--cache DIR] [--upper DIR | --read-only] [-o OPTS] IMAGE MOUNTPOINT
       unionmount images [--store PATH] [--json]
       unionmount inspect IMAGE [--store PATH] [--json]
       unionmount diff TARGET [--json]
       unionmount commit TARGET --output FILE [--gzip|--zstd] [--image NAME --oci DIR]
       unionmount which PATH
options (-o): lowerdir= upperdir= workdir= ro volatile fsync=0 fsname= allow_other
  cache_entries=N timeout=SECS threads=N passthrough=auto|all|upper|off whiteout=chardev|whfile store=PATH
unmount with: umount MOUNTPOINT  or  fusermount3 -u MOUNTPOINT";

/// Split an option string on commas outside double quotes.
pub fn split_options(s: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    for &c in s {
        match c {
            b'"' => {
                quoted = !quoted;
                cur.push(c);
            }
            b',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|o| !o.is_empty()).collect()
}

/// Split a lowerdir value on `:`, honouring `\:` (and `\\`) escapes.
pub fn split_lowerdir(v: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'\\' if i + 1 < v.len() && (v[i + 1] == b':' || v[i + 1] == b'\\') => {
                cur.push(v[i + 1]);
                i += 1;
            }
            b':' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
        i += 1;
    }
    out.push(cur);
    out.into_iter().filter(|p| !p.is_empty()).map(|p| PathBuf::from(OsString::from_vec(p))).collect()
}

/// User input as it may appear in a one-line message (control characters escaped).
fn shown(v: &[u8]) -> String {
    String::from_utf8_lossy(v).escape_debug().to_string()
}

fn utf8(v: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(v.to_vec()).map_err(|_| format!("option {what} is not valid UTF-8"))
}

fn number<T: std::str::FromStr>(v: &[u8], what: &str) -> Result<T, String> {
    utf8(v, what)?.parse().map_err(|_| format!("option {what}={} is not a valid number", shown(v)))
}

const KERNEL_FLAGS: &[&str] =
    &["dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "sync", "async", "dirsync"];

/// Apply one `-o` option.
pub fn apply_option(o: &mut MountOpts, opt: &[u8]) -> Result<(), String> {
    let (key, val) = match opt.iter().position(|&c| c == b'=') {
        Some(i) => (&opt[..i], Some(&opt[i + 1..])),
        None => (opt, None),
    };
    let path = |v: Option<&[u8]>| -> Result<PathBuf, String> {
        match v {
            Some(v) if !v.is_empty() => Ok(PathBuf::from(OsStr::from_bytes(v))),
            _ => Err(format!("option {} needs a path", shown(key))),
        }
    };
    match (key, val) {
        (b"lowerdir", v) => {
            o.lowerdir = split_lowerdir(v.unwrap_or_default());
            if o.lowerdir.is_empty() {
                return Err("option lowerdir= is empty: give lowerdir=DIR[:DIR…]".into());
            }
        }
        (b"upperdir", v) => o.upperdir = Some(path(v)?),
        (b"workdir", v) => o.workdir = Some(path(v)?),
        (b"store", v) => o.store = Some(path(v)?),
        (b"volatile", None) => o.no_fsync = true,
        (b"fsync", Some(v)) => o.no_fsync = v == b"0",
        (b"fsname", Some(v)) => o.fsname = Some(utf8(v, "fsname")?),
        (b"allow_other", None) | (b"allow_root", None) => o.allow_other = true,
        (b"ro", None) => o.read_only = true,
        (b"rw", None) => o.read_only = false,
        (b"cache_entries", Some(v)) => o.cache_entries = Some(number(v, "cache_entries")?),
        (b"timeout", Some(v)) => {
            let t: f64 = number(v, "timeout")?;
            if !(0.0..=1e9).contains(&t) {
                return Err(format!("option timeout={t} is out of range"));
            }
            o.timeout = Some(t);
        }
        (b"threads", Some(v)) => {
            let n: usize = number(v, "threads")?;
            if n == 0 || n > 256 {
                return Err("option threads= must be between 1 and 256".into());
            }
            o.threads = Some(n);
        }
        (b"passthrough", Some(v)) => {
            o.passthrough = Some(match v {
                b"all" => Passthrough::All,
                b"auto" => Passthrough::Auto,
                b"upper" | b"on" | b"1" => Passthrough::Upper,
                b"off" | b"0" => Passthrough::Off,
                _ => return Err("option passthrough= takes auto, all, upper or off".into()),
            })
        }
        (b"whiteout", Some(v)) => {
            o.whiteout = Some(match v {
                b"chardev" => WhiteoutFormat::CharDev,
                b"whfile" => WhiteoutFormat::WhFile,
                _ => return Err("option whiteout= takes chardev or whfile".into()),
            })
        }
        (k, None) if KERNEL_FLAGS.iter().any(|f| f.as_bytes() == k) => {
            o.kernel_flags.push(utf8(k, "flag")?);
        }
        _ => o.ignored.push(String::from_utf8_lossy(opt).into_owned()),
    }
    Ok(())
}

/// Parse the mount command line (argv without the program name).
pub fn parse_mount(args: &[OsString]) -> Result<Parsed, String> {
    let mut m = MountArgs::default();
    let mut positional: Vec<OsString> = Vec::new();
    let mut read_only_flag = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        let mut value = |name: &str| -> Result<&OsString, String> { it.next().ok_or(format!("{name} needs a value")) };
        match b {
            b"-h" | b"--help" => return Ok(Parsed::Help),
            b"-V" | b"--version" => return Ok(Parsed::Version),
            b"-f" => m.foreground = true,
            b"-d" | b"--debug" => {
                m.debug = true;
                m.foreground = true;
            }
            b"-s" => {} // single-threaded: accepted for libfuse compatibility
            b"-o" => {
                let v = value("-o")?;
                for opt in split_options(v.as_bytes()) {
                    apply_option(&mut m.opts, &opt)?;
                }
            }
            b"--store" => m.opts.store = Some(value("--store")?.into()),
            b"--cache" => m.cache = Some(value("--cache")?.into()),
            b"--upper" => m.upper = Some(value("--upper")?.into()),
            b"--read-only" => read_only_flag = true,
            _ if b.starts_with(b"-o") && b.len() > 2 => {
                for opt in split_options(&b[2..]) {
                    apply_option(&mut m.opts, &opt)?;
                }
            }
            _ if b.starts_with(b"--store=") => m.opts.store = Some(OsStr::from_bytes(&b[8..]).into()),
            _ if b.starts_with(b"--cache=") => m.cache = Some(OsStr::from_bytes(&b[8..]).into()),
            _ if b.starts_with(b"--upper=") => m.upper = Some(OsStr::from_bytes(&b[8..]).into()),
            _ if b.starts_with(b"-") && b.len() > 1 => {
                return Err(format!("unknown argument {}: see unionmount --help", shown(b)));
            }
            _ if b.is_empty() => return Err("empty argument: expected [SOURCE|IMAGE] MOUNTPOINT".into()),
            _ => positional.push(a.clone()),
        }
    }
    m.opts.read_only |= read_only_flag;
    match positional.len() {
        0 => return Err("no mountpoint given: see unionmount --help".into()),
        1 => m.mountpoint = positional.pop().expect("one").into(),
        2 => {
            m.mountpoint = positional.pop().expect("two").into();
            m.source = positional.pop();
        }
        _ => return Err(format!("too many arguments ({}): expected [SOURCE|IMAGE] MOUNTPOINT", positional.len())),
    }
    if m.opts.lowerdir.is_empty() && m.source.is_none() {
        return Err("no lowerdir given: use -o lowerdir=DIR[:DIR…] or name an image: unionmount IMAGE MOUNTPOINT".into());
    }
    if m.opts.upperdir.is_some() != m.opts.workdir.is_some() {
        return Err("upperdir and workdir go together: give both or neither".into());
    }
    if m.upper.is_some() && m.opts.read_only {
        return Err("--upper and --read-only exclude each other".into());
    }
    Ok(Parsed::Mount(Box::new(m)))
}

/// Entry point called by main: returns the process exit code.
pub fn main_entry() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    let rest = &args[1.min(args.len())..];
    match rest.first().and_then(|a| a.to_str()) {
        Some("images") => return crate::store::cli_images(&rest[1..]),
        Some("inspect") => return crate::store::cli_inspect(&rest[1..]),
        Some("diff") => return crate::inspect::cli_diff(&rest[1..]),
        Some("commit") => return crate::inspect::cli_commit(&rest[1..]),
        Some("which") => return crate::inspect::cli_which(&rest[1..]),
        _ => {}
    }
    match parse_mount(rest) {
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            0
        }
        Ok(Parsed::Version) => {
            println!("unionmount {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Ok(Parsed::Mount(m)) => crate::mount::run(*m),
        Err(e) => {
            eprintln!("unionmount: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests;
