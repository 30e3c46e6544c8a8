//! The `-o` option strings of the mount command (pure, table-tested in `cmd/tests.rs`).
//!
//! Options are split on commas outside double quotes (`context="a,b"`), empty ones are
//! skipped, unknown ones are kept in `ignored` (logged, never fatal). In lowerdir, `\:`
//! is a literal colon and `\\` a backslash. Values are bytes: nothing here requires
//! UTF-8 except the few options that are text (fsname, numbers).

use super::Usage;
use crate::mount::{MountOpts, Passthrough, WhiteoutForm};
use crate::union::idmap::{IdMap, IdOptionError, parse_id};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

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
pub(super) fn shown(v: &[u8]) -> String {
    String::from_utf8_lossy(v).escape_debug().to_string()
}

fn utf8(v: &[u8], what: &str) -> Result<String, Usage> {
    String::from_utf8(v.to_vec()).map_err(|_| Usage(format!("option {what} is not valid UTF-8")))
}

fn number<T: std::str::FromStr>(v: &[u8], what: &str) -> Result<T, Usage> {
    utf8(v, what)?.parse().map_err(|_| Usage(format!("option {what}={} is not a valid number", shown(v))))
}

fn usage(e: IdOptionError) -> Usage {
    Usage(e.to_string())
}

const KERNEL_FLAGS: &[&str] =
    &["dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "sync", "async", "dirsync"];

/// Options this parser applies (besides [`KERNEL_FLAGS`]).
const OURS: &[&str] = &[
    "lowerdir", "upperdir", "workdir", "store", "volatile", "fsync", "fsname", "allow_other", "allow_root", "ro",
    "rw", "cache_entries", "timeout", "threads", "passthrough", "whiteout", "redirect_dir",
];

/// Options that mount(8), mount.fuse3, containers/storage and fuse-overlayfs users pass,
/// which we accept and ignore without a word.
const PASSED: &[&str] = &[
    // mount(8)
    "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "nofail", "_netdev", "relatime",
    "norelatime", "strictatime", "nostrictatime", "lazytime", "nolazytime", "diratime", "nodiratime", "iversion",
    "noiversion", "mand", "nomand", "silent", "loud", "context", "fscontext", "defcontext", "rootcontext", "comment",
    "helper",
    // mount.fuse3 / libfuse
    "default_permissions", "auto_unmount", "subtype", "blkdev", "blksize", "max_read", "nonempty", "setuid",
    "drop_privileges", "fd", "rootmode", "user_id", "group_id", "auto_cache", "kernel_cache", "direct_io",
    "noforget", "clone_fd", "debug",
    // containers/storage and fuse-overlayfs
    "uidmapping", "gidmapping", "squash_to_uid", "squash_to_gid", "squash_to_root", "xino", "metacopy",
    "index", "userxattr", "noacl", "static_nlink", "plugins", "threaded", "noxattrs", "fast_ino",
    "writeback", "nfs_export",
];

/// Spellings of "read-only" that are not `ro`: refused, so that none of them ever
/// gives a writable mount.
const READ_ONLY_TYPOS: &[&[u8]] = &[b"readonly", b"read-only", b"read_only", b"rdonly", b"r/o", b"o_rdonly"];

/// The stderr line for an option kept in `ignored`, unless it is one that callers
/// routinely pass: names it and the closest known option.
pub fn unknown_option_warning(opt: &str) -> Option<String> {
    let key = opt.split_once('=').map_or(opt, |(k, _)| k);
    let known = || OURS.iter().chain(PASSED).chain(KERNEL_FLAGS);
    if key.starts_with("x-") || known().any(|k| *k == key) {
        return None;
    }
    let closest = known().map(|k| (strsim::levenshtein(key, k), *k)).filter(|&(d, _)| d <= 3).min();
    let hint = closest.map(|(_, k)| format!("; did you mean {k}?")).unwrap_or_default();
    Some(format!("warning: option {} is not known and is ignored{hint}", opt.escape_debug()))
}

/// Apply one `-o` option.
pub fn apply_option(o: &mut MountOpts, opt: &[u8]) -> Result<(), Usage> {
    let (key, val) = match opt.iter().position(|&c| c == b'=') {
        Some(i) => (&opt[..i], Some(&opt[i + 1..])),
        None => (opt, None),
    };
    let path = |v: Option<&[u8]>| -> Result<PathBuf, Usage> {
        match v {
            Some(v) if !v.is_empty() => Ok(PathBuf::from(OsStr::from_bytes(v))),
            _ => Err(Usage(format!("option {} needs a path", shown(key)))),
        }
    };
    match (key, val) {
        (b"lowerdir", v) => {
            o.lowerdir = split_lowerdir(v.unwrap_or_default());
            if o.lowerdir.is_empty() {
                return Err(Usage::new("option lowerdir= is empty: give lowerdir=DIR[:DIR…]"));
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
        (b"ro", Some(_)) => return Err(Usage::new("option ro takes no value: write -o ro")),
        (k, _) if READ_ONLY_TYPOS.iter().any(|t| t.eq_ignore_ascii_case(k)) => {
            return Err(Usage(format!("option {} is not known: for a read-only mount write -o ro", shown(k))));
        }
        (b"rw", None) => o.read_only = false,
        (b"cache_entries", Some(v)) => o.cache_entries = Some(number(v, "cache_entries")?),
        (b"timeout", Some(v)) => {
            let t: f64 = number(v, "timeout")?;
            if !(0.0..=1e9).contains(&t) {
                return Err(Usage(format!("option timeout={t} is out of range")));
            }
            o.timeout = Some(t);
        }
        (b"threads", Some(v)) => {
            let n: usize = number(v, "threads")?;
            if n == 0 || n > 256 {
                return Err(Usage::new("option threads= must be between 1 and 256"));
            }
            o.threads = Some(n);
        }
        (b"passthrough", Some(v)) => {
            o.passthrough = Some(match v {
                b"all" => Passthrough::All,
                b"auto" => Passthrough::Auto,
                b"upper" | b"on" | b"1" => Passthrough::Upper,
                b"off" | b"0" => Passthrough::Off,
                _ => return Err(Usage::new("option passthrough= takes auto, all, upper or off")),
            })
        }
        (b"redirect_dir", Some(v)) => {
            o.redirect_dir = Some(match v {
                b"on" => true,
                // Redirects in layers are always followed; these only stop writing them.
                b"off" | b"follow" | b"nofollow" => false,
                _ => return Err(Usage::new("option redirect_dir= takes on or off")),
            })
        }
        (b"whiteout", Some(v)) => {
            o.whiteout = Some(WhiteoutForm::parse(v).ok_or_else(|| Usage::new("option whiteout= takes chardev or whfile"))?)
        }
        // fuse-overlayfs's id options; the last of a repeated one wins, as for the others.
        (b"uidmapping", Some(v)) => o.ids.uids = IdMap::parse("uidmapping", &utf8(v, "uidmapping")?).map_err(usage)?,
        (b"gidmapping", Some(v)) => o.ids.gids = IdMap::parse("gidmapping", &utf8(v, "gidmapping")?).map_err(usage)?,
        (b"squash_to_root", None) => o.ids.squash_to_root = true,
        (b"squash_to_uid", Some(v)) => o.ids.squash_to_uid = Some(parse_id("squash_to_uid", &utf8(v, "squash_to_uid")?).map_err(usage)?),
        (b"squash_to_gid", Some(v)) => o.ids.squash_to_gid = Some(parse_id("squash_to_gid", &utf8(v, "squash_to_gid")?).map_err(usage)?),
        (k, None) if KERNEL_FLAGS.iter().any(|f| f.as_bytes() == k) => {
            o.kernel_flags.push(utf8(k, "flag")?);
        }
        _ => o.ignored.push(String::from_utf8_lossy(opt).into_owned()),
    }
    Ok(())
}
