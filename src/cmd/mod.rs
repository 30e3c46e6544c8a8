//! The command line: one front end for every command.
//!
//! [`run`] dispatches on the first argument: a subcommand name, or else the mount
//! command, whose fuse-overlayfs-compatible argv is parsed by hand ([`mount`], with the
//! `-o` strings in [`options`]); subcommands parse theirs with clap. Each command returns
//! `Result<i32, Error>` and this module alone renders an error, as one line:
//! `unionmount[ SUBCOMMAND]: what failed: what to do`.
//!
//! Exit codes: 0 success, 1 the command could not do what was asked, 2 usage (clap's own
//! errors included, folded onto one line), 130 / 143 stopped by SIGINT / SIGTERM. Output
//! goes to stdout; a closed pipe there (`| head`) is not an error.
//!
//! Invariant: the front end depends only downward (`mount`, `store`, `inspect`, `record`);
//! nothing below it prints an error or picks an exit code.

mod changes;
mod format;
mod images;
mod inspect;
mod mount;
mod mounts;
mod options;
mod remote;
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
    ("inspect", "show an image's config and layers, or what a mountpoint is made of", inspect::run),
    ("ps", "list the live mounts", mounts::run_ps),
    ("umount", "unmount a mountpoint (also one whose daemon has exited)", mounts::run_umount),
    ("diff", "list what a mount changed (A added, C changed, D deleted)", changes::run_diff),
    ("commit", "write a mount's upper layer as a layer tar or a new OCI image", changes::run_commit),
    ("which", "show which layer of a mount provides a path", which::run),
    ("help", "show help for a command", help),
];

/// The whole command line (`std::env::args_os`): returns the process exit code.
pub fn run() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let sub = args.first().and_then(|a| a.to_str()).and_then(|a| SUBCOMMANDS.iter().find(|s| s.0 == a));
    let (name, result) = match sub {
        Some((name, _, run)) => (Some(*name), run(&args[1..])),
        None => (None, misnamed_command(&args).map_or_else(|| mount::run(&args), Err)),
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
            // Stopped by Ctrl-C or SIGTERM: 130 / 143, as a shell expects.
            crate::cancel::signal().map_or(1, |i| i.exit_code())
        }
    }
}

/// The full usage: the mount forms, then every subcommand with one line each.
pub(crate) fn usage() -> String {
    let mut s = format!("{}\n\ncommands:\n", mount::USAGE);
    for (name, what, _) in SUBCOMMANDS {
        s.push_str(&format!("  {name:<9}{what}\n"));
    }
    s.push_str("run `unionmount help COMMAND` (or COMMAND --help) for its options");
    s
}

/// `unionmount help [COMMAND]`.
fn help(args: &[OsString]) -> Result<i32, Error> {
    let Some(name) = args.first() else {
        println!("{}", usage());
        return Ok(0);
    };
    if args.len() > 1 {
        return Err(Usage::new("help takes one COMMAND").into());
    }
    let name = name.to_string_lossy();
    if name == "mount" {
        println!("{}", usage());
        return Ok(0);
    }
    match SUBCOMMANDS.iter().find(|s| s.0 == name && s.0 != "help") {
        Some((_, _, run)) => run(&[OsString::from("--help")]),
        None => Err(Usage(format!("no command {name:?}{}", suggestion(&name))).into()),
    }
}

/// `; did you mean X?` for the subcommand closest to `word`, if one is close.
fn suggestion(word: &str) -> String {
    closest_command(word).map(|c| format!("; did you mean `{c}`?")).unwrap_or_default()
}

fn closest_command(word: &str) -> Option<&'static str> {
    if word == "unmount" {
        return Some("umount");
    }
    SUBCOMMANDS
        .iter()
        .map(|s| (strsim::levenshtein(word, s.0), s.0))
        .filter(|&(d, name)| d <= 2 && word.len() >= 3 && name.len() > d)
        .min()
        .map(|(_, name)| name)
}

/// A first word that is not a subcommand but looks like a mistyped one (`unmount`,
/// `image`) where the mount command would take it for an image: say so, rather than
/// search the stores for an image of that name.
fn misnamed_command(args: &[OsString]) -> Option<Error> {
    let word = args.first()?.to_str()?;
    if !word.bytes().all(|b| b.is_ascii_lowercase()) || args.len() > 3 {
        return None;
    }
    let has_lowerdir = args.iter().any(|a| a.as_encoded_bytes().windows(9).any(|w| w == b"lowerdir="));
    if has_lowerdir {
        return None;
    }
    let cmd = closest_command(word)?;
    let rest: Vec<String> = args[1..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
    Some(Usage(format!("unknown command {word}: did you mean `unionmount {cmd} {}`?", rest.join(" "))).into())
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
    format!("{prog}: {}", crate::store::shown::cut_long_words(&one.join("; ")))
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
