//! The command line: one front end for every command.
//!
//! [`run`] dispatches on the first argument: a subcommand name, or else the mount
//! command, whose fuse-overlayfs-compatible argv is parsed by hand ([`mount`], with the
//! `-o` strings in [`options`]); subcommands parse theirs with clap. Each command returns
//! `Result<i32, Error>` and this module alone renders an error, as one line:
//! `unionmount[ SUBCOMMAND]: what failed: what to do`.
//!
//! Exit codes: 0 success, 1 the command could not do what was asked, 2 usage (clap's own
//! errors included, folded onto one line). Output goes to stdout; a closed pipe there
//! (`| head`) is not an error.
//!
//! Invariant: the front end depends only downward (`mount`, `store`, `inspect`, `record`);
//! nothing below it prints an error or picks an exit code.

mod changes;
mod format;
mod images;
mod inspect;
mod mount;
mod options;
mod which;
#[cfg(test)]
mod tests;

pub use mount::{Parsed, parse_mount};
pub use options::split_lowerdir;

use std::ffi::OsString;
use std::fmt;
use std::io::Write;

/// A usage error (exit 2): the arguments cannot mean anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

impl Usage {
    pub(crate) fn new(msg: &str) -> Usage {
        Usage(msg.to_string())
    }
}

impl std::ops::Deref for Usage {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a command ends without success.
#[derive(Debug)]
pub(crate) enum Error {
    /// Wrong arguments: exit 2.
    Usage(Usage),
    /// The command could not do what was asked: exit 1.
    Failed(Box<dyn std::error::Error>),
    /// Nothing more to do (help or version was printed): exit 0.
    Done,
}

impl From<Usage> for Error {
    fn from(u: Usage) -> Error {
        Error::Usage(u)
    }
}

impl<E: std::error::Error + 'static> From<E> for Error {
    fn from(e: E) -> Error {
        Error::Failed(Box::new(e))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write to stdout: {0}")]
struct StdoutError(std::io::Error);

/// The subcommands: name, one-line description, entry point (args after the name).
type Run = fn(&[OsString]) -> Result<i32, Error>;
const SUBCOMMANDS: &[(&str, &str, Run)] = &[
    ("images", "list the images in a store (like `docker images`)", images::run),
    ("inspect", "show an image's layers, top first", inspect::run),
    ("diff", "list what a mount changed (A added, C changed, D deleted)", changes::run_diff),
    ("commit", "write a mount's upper layer as a layer tar or a new OCI image", changes::run_commit),
    ("which", "show which layer of a mount provides a path", which::run),
];

/// The whole command line (`std::env::args_os`): returns the process exit code.
pub fn run() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let sub = args.first().and_then(|a| a.to_str()).and_then(|a| SUBCOMMANDS.iter().find(|s| s.0 == a));
    let (name, result) = match sub {
        Some((name, _, run)) => (Some(*name), run(&args[1..])),
        None => (None, mount::run(&args)),
    };
    match result {
        Ok(code) => code,
        Err(Error::Done) => 0,
        Err(Error::Usage(u)) => {
            report(name, &u);
            2
        }
        Err(Error::Failed(e)) => {
            report(name, &e);
            1
        }
    }
}

/// Print the one error line: `unionmount[ SUBCOMMAND]: MESSAGE`.
fn report(sub: Option<&str>, msg: &dyn fmt::Display) {
    eprintln!("{}", error_line(sub, msg));
}

fn error_line(sub: Option<&str>, msg: &dyn fmt::Display) -> String {
    let prog = match sub {
        Some(s) => format!("unionmount {s}"),
        None => "unionmount".to_string(),
    };
    let text = msg.to_string();
    let one: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    format!("{prog}: {}", one.join("; "))
}

/// Parse `args` of subcommand `name` with clap. Help and version are printed here
/// (`Err(Error::Done)`); clap's errors become one usage line, as every other error.
fn parse<T: clap::Parser>(name: &str, args: &[OsString]) -> Result<T, Error> {
    let argv = std::iter::once(OsString::from(format!("unionmount {name}"))).chain(args.iter().cloned());
    match T::try_parse_from(argv) {
        Ok(t) => Ok(t),
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            Err(Error::Done)
        }
        Err(e) => Err(Error::Usage(fold_clap(&e.to_string()))),
    }
}

/// clap's message up to its usage block, on one line, with a pointer to --help.
fn fold_clap(text: &str) -> Usage {
    let msg: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let msg = msg.join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    Usage(format!("{msg}: see --help"))
}

/// Write `text` to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<(), Error> {
    emit_with(|out| out.write_all(text.as_bytes()))
}

/// Let `write` write to stdout, then flush; a closed pipe is not an error.
fn emit_with(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(StdoutError(e).into()),
    }
}
