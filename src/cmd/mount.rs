//! The mount command's argv (pure, table-tested in `cmd/tests.rs`).
//!
//! Forms accepted:
//! - `unionmount [-f] [-d] -o lowerdir=TOP:…:BOTTOM[,upperdir=U,workdir=W][,OPT…] [SOURCE] MNT`
//!   (fuse-overlayfs style; also what mount.fuse3 and containers/storage run);
//! - `unionmount [--store P] [--cache D] [--upper D | --read-only] [-o OPTS] [--namespace NS]
//!   [--platform OS/ARCH[/VARIANT]] IMAGE MNT`.
//!
//! `-o` may appear anywhere and more than once. Flags taking a value are listed once in
//! [`VALUE_FLAGS`] (`--flag VALUE` and `--flag=VALUE`); add new ones there.

use super::options::{apply_option, shown, split_options, unknown_option_warning};
use super::{Error, Usage};
use crate::mount::MountArgs;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Mount(Box<MountArgs>),
    Help,
    Version,
}

pub const USAGE: &str = "\
usage: unionmount [-f] [-d] -o lowerdir=TOP:...:BOTTOM[,upperdir=U,workdir=W][,OPT...] [SOURCE] MOUNTPOINT
       unionmount [--store PATH] [--cache DIR] [--upper DIR | --read-only] [-o OPTS]
                  [--namespace NS] [--platform OS/ARCH[/VARIANT]] IMAGE MOUNTPOINT
       unionmount images [--store PATH] [--namespace NS] [--cache DIR] [--json]
       unionmount inspect IMAGE [--store PATH] [--namespace NS] [--platform P] [--json]
       unionmount diff TARGET [--json]
       unionmount commit TARGET --output FILE [--gzip|--zstd] [--image NAME --oci DIR]
       unionmount which PATH
options (-o): lowerdir= upperdir= workdir= ro volatile fsync=0 fsname= allow_other
  cache_entries=N timeout=SECS threads=N passthrough=auto|all|upper|off whiteout=chardev|whfile store=PATH
  redirect_dir=on|off
  uidmapping=ONDISK:SHOWN:LEN[:...] gidmapping=... squash_to_root squash_to_uid=N squash_to_gid=N
registry (docker://HOST[:PORT]/REPO[:TAG|@DIGEST] as IMAGE, or a fully qualified name with --pull):
  --pull=never|missing|always (default: missing for docker://, never otherwise)
  --tls-verify=false  --cert-dir DIR (*.crt CAs, *.cert + *.key client pairs)  --platform OS/ARCH[/VARIANT]
unmount with: umount MOUNTPOINT  or  fusermount3 -u MOUNTPOINT";

/// Stores the value of one flag (or says why it cannot).
type SetFlag = fn(&mut MountArgs, &OsStr) -> Result<(), Usage>;

/// Long flags of the mount command that take a value, and where the value goes.
const VALUE_FLAGS: &[(&str, SetFlag)] = &[
    ("--store", |m, v| {
        m.opts.store = Some(v.into());
        Ok(())
    }),
    ("--cache", |m, v| {
        m.cache = Some(v.into());
        Ok(())
    }),
    ("--upper", |m, v| {
        m.upper = Some(v.into());
        Ok(())
    }),
    ("--namespace", |m, v| {
        m.namespace = Some(v.to_string_lossy().into_owned());
        Ok(())
    }),
    ("--platform", |m, v| {
        m.platform = Some(v.to_string_lossy().into_owned());
        Ok(())
    }),
    ("--pull", |m, v| {
        m.remote.pull = Some(super::remote::pull(v)?);
        Ok(())
    }),
    ("--cert-dir", |m, v| {
        m.remote.cert_dir = Some(v.into());
        Ok(())
    }),
];

/// Parse the mount command line (argv without the program name).
pub fn parse_mount(args: &[OsString]) -> Result<Parsed, Usage> {
    let mut m = MountArgs::default();
    let mut positional: Vec<OsString> = Vec::new();
    let mut read_only_flag = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        let flag = VALUE_FLAGS.iter().find(|(name, _)| {
            b == name.as_bytes() || (b.starts_with(name.as_bytes()) && b.get(name.len()) == Some(&b'='))
        });
        if let Some((name, set)) = flag {
            let value = match b.get(name.len()) {
                Some(_) => OsStr::from_bytes(&b[name.len() + 1..]),
                None => it.next().ok_or_else(|| Usage(format!("{name} needs a value")))?.as_os_str(),
            };
            set(&mut m, value)?;
            continue;
        }
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
                let v = it.next().ok_or_else(|| Usage::new("-o needs a value"))?;
                for opt in split_options(v.as_bytes()) {
                    apply_option(&mut m.opts, &opt)?;
                }
            }
            b"--read-only" => read_only_flag = true,
            _ if b.starts_with(b"--tls-verify") => m.remote.insecure = !super::remote::tls_verify(b)?,
            _ if b.starts_with(b"-o") && b.len() > 2 => {
                for opt in split_options(&b[2..]) {
                    apply_option(&mut m.opts, &opt)?;
                }
            }
            _ if b.starts_with(b"-") && b.len() > 1 => {
                return Err(Usage(format!("unknown argument {}: see unionmount --help", shown(b))));
            }
            _ if b.is_empty() => return Err(Usage::new("empty argument: expected [SOURCE|IMAGE] MOUNTPOINT")),
            _ => positional.push(a.clone()),
        }
    }
    m.opts.read_only |= read_only_flag;
    match positional.len() {
        0 => return Err(Usage::new("no mountpoint given: see unionmount --help")),
        1 => m.mountpoint = positional.pop().expect("one").into(),
        2 => {
            m.mountpoint = positional.pop().expect("two").into();
            m.source = positional.pop();
        }
        _ => {
            return Err(Usage(format!(
                "too many arguments ({}): expected [SOURCE|IMAGE] MOUNTPOINT",
                positional.len()
            )));
        }
    }
    if m.opts.lowerdir.is_empty() && m.source.is_none() {
        // One argument: an image whose mountpoint was forgotten, or a mountpoint whose
        // layers were.
        let only = m.mountpoint.as_os_str().as_bytes();
        let image_flags = m.opts.store.is_some() || m.cache.is_some() || m.upper.is_some();
        let looks_like_image = !only.starts_with(b"/") && !only.starts_with(b".") && only.iter().any(|&c| c == b':' || c == b'@');
        if image_flags || looks_like_image {
            return Err(Usage(format!(
                "no mountpoint given for image {}: unionmount [--store PATH] IMAGE MOUNTPOINT",
                shown(only)
            )));
        }
        return Err(Usage::new(
            "no lowerdir given: use -o lowerdir=DIR[:DIR…] or name an image: unionmount IMAGE MOUNTPOINT",
        ));
    }
    if m.opts.upperdir.is_some() != m.opts.workdir.is_some() {
        return Err(Usage::new("upperdir and workdir go together: give both or neither"));
    }
    if m.upper.is_some() && m.opts.read_only {
        return Err(Usage::new("--upper and --read-only exclude each other"));
    }
    Ok(Parsed::Mount(Box::new(m)))
}

/// The mount command: parse, then mount (or print help / version).
pub fn run(args: &[OsString]) -> Result<i32, Error> {
    match parse_mount(args)? {
        Parsed::Help => {
            println!("{}", super::usage());
            Ok(0)
        }
        Parsed::Version => {
            println!("unionmount {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        Parsed::Mount(m) => {
            for o in &m.opts.ignored {
                if let Some(warning) = unknown_option_warning(o) {
                    eprintln!("unionmount: {warning}");
                }
            }
            init_logging(m.debug);
            crate::mount::run(*m)?;
            Ok(0)
        }
    }
}

/// Log to stderr: warnings, or every request with `-d`; `RUST_LOG` overrides.
fn init_logging(debug: bool) {
    let env = env_logger::Env::default().default_filter_or(if debug { "debug" } else { "warn" });
    let _ = env_logger::Builder::from_env(env).format_timestamp_millis().try_init();
}
