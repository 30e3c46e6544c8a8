//! Safe extraction of one layer tar into an empty private directory.
//!
//! The `tar` crate only parses; every file system change is made here, by path, inside
//! `dest`, which the caller created fresh with mode 0700 (so nobody else can race us).
//!
//! Invariants:
//! - no entry lands outside `dest`: absolute names and `..` components are rejected, and
//!   every parent component is checked with `lstat` to be a real directory (a symlink in
//!   the layer can never redirect a later entry); hard link sources obey the same rules;
//! - symlink targets are stored verbatim and never followed;
//! - privileged (root): owners, modes (setuid included), mtimes and all xattrs are kept,
//!   device nodes are created, OCI whiteouts become overlay whiteouts:
//!   `.wh.NAME` → char device 0/0 `NAME`, `.wh..wh..opq` → `trusted.overlay.opaque=y`
//!   on the directory; unprivileged: owners are not changed, devices are skipped,
//!   only `user.*` xattrs are kept and whiteouts stay as `.wh.` files;
//! - directory modes and times are applied last, deepest first, so a read-only
//!   directory in the layer does not block its own children.
//!
//! ```text
//! layer.tar entry            privileged result            unprivileged result
//! etc/.wh.motd          ->   etc/motd (char 0/0)          etc/.wh.motd (empty file)
//! var/.wh..wh..opq      ->   var  + trusted.overlay.opaque=y   var/.wh..wh..opq
//! ```

use super::StoreError;
use super::shown::{self, cause};
use crate::cancel::Interrupted;
use crate::overlay::{AUFS_META_PREFIX, OPAQUE_MARKER, OPAQUE_XATTR_TRUSTED, WH_PREFIX};
use crate::sys::store_ops::{self, NodeKind};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How to unpack.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Running as root: chown, mknod, trusted xattrs, overlay whiteouts.
    pub privileged: bool,
}

/// What was unpacked.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub entries: u64,
    /// Bytes of regular file content.
    pub bytes: u64,
    /// Whiteouts converted to overlay form.
    pub whiteouts: u64,
    /// Entries skipped (devices without privilege, AUFS metadata).
    pub skipped: u64,
}

struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: (i64, u32),
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why a layer could not be unpacked. `Display` is one line: paths are inside the layer,
/// escaped and cut (`shown::path`); a parser's message is kept without the input it quotes
/// (`shown::cause`); no file content ever.
#[derive(Debug)]
pub enum UnpackError {
    /// A file system call on `path` (relative to the layer root) failed.
    Io { path: PathBuf, op: Op, source: io::Error },
    /// The layer holds an entry it may not hold; `path` is the entry's name.
    Entry { path: PathBuf, why: BadEntry },
    /// The tar stream is not valid: `what` was being read, `cause` the parser's reason.
    Tar { what: &'static str, cause: String },
    /// Ctrl-C or SIGTERM stopped the unpacking.
    Interrupted(Interrupted),
}

/// What an [`UnpackError::Io`] was doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Creating, removing or changing the entry itself.
    Entry,
    /// Setting the extended attribute with this name.
    Xattr(Vec<u8>),
    /// Marking the directory opaque (an OCI `.wh..wh..opq`).
    Opaque,
}

/// Entries a layer may not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadEntry {
    Absolute,
    Escapes,
    /// A parent component is a symlink or a file.
    NotADirectory,
    SymlinkWithoutTarget,
    HardLinkWithoutTarget,
    HardLinkToRoot,
    HardLinkToDirectory,
    /// A hard link to this name, which the layer does not hold (yet).
    HardLinkToMissing(PathBuf),
    /// `.wh.` with an empty name, `.` or `..`.
    InvalidWhiteout,
}

impl Op {
    /// `source`, preceded by what was being done unless it was the entry itself.
    fn with<'a>(&'a self, source: &'a io::Error) -> impl fmt::Display + 'a {
        struct D<'a>(&'a Op, &'a io::Error);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    Op::Entry => write!(f, "{}", self.1),
                    Op::Xattr(k) => write!(f, "xattr {}: {}", shown::path(&bytes_path(k)), self.1),
                    Op::Opaque => write!(f, "opaque xattr: {}", self.1),
                }
            }
        }
        D(self, source)
    }
}

fn bytes_path(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

impl UnpackError {
    fn io(dest: &Path, p: &Path, source: io::Error) -> UnpackError {
        UnpackError::Io { path: inside(dest, p), op: Op::Entry, source }
    }
    fn entry(raw: &[u8], why: BadEntry) -> UnpackError {
        UnpackError::Entry { path: bytes_path(raw), why }
    }
    fn tar(what: &'static str, e: &io::Error) -> UnpackError {
        UnpackError::Tar { what, cause: cause(&e.to_string()) }
    }

    /// As a [`StoreError`]: a failed call on the cache directory `dest` is an I/O error
    /// there; bad tar data or a forbidden entry makes the layer's `blob` corrupt.
    pub(crate) fn to_store(&self, blob: &Path, dest: &Path) -> StoreError {
        match self {
            UnpackError::Io { path, op, source } => {
                StoreError::Store { path: dest.join(path), detail: op.with(source).to_string() }
            }
            UnpackError::Interrupted(i) => StoreError::Interrupted(*i),
            _ => StoreError::corrupt(blob, self.to_string()),
        }
    }
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnpackError::Io { path, op, source } => write!(f, "{}: {}", shown::path(path), op.with(source)),
            UnpackError::Entry { path, why } => {
                let p = shown::path(path);
                match why {
                    BadEntry::Absolute => write!(f, "absolute path \"{p}\" in layer"),
                    BadEntry::Escapes => write!(f, "path \"{p}\" escapes the layer"),
                    BadEntry::NotADirectory => write!(f, "{p} is not a directory (symlink or file in the path)"),
                    BadEntry::SymlinkWithoutTarget => write!(f, "symlink \"{p}\" without target"),
                    BadEntry::HardLinkWithoutTarget => write!(f, "hard link \"{p}\" without target"),
                    BadEntry::HardLinkToRoot => write!(f, "hard link \"{p}\" to the layer root"),
                    BadEntry::HardLinkToDirectory => write!(f, "hard link \"{p}\" to a directory"),
                    BadEntry::HardLinkToMissing(to) => write!(f, "hard link \"{p}\" to missing \"{}\"", shown::path(to)),
                    BadEntry::InvalidWhiteout => write!(f, "invalid whiteout name {p}"),
                }
            }
            UnpackError::Tar { what, cause } => write!(f, "{what}: {cause}"),
            UnpackError::Interrupted(i) => write!(f, "{i}"),
        }
    }
}

impl std::error::Error for UnpackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UnpackError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Split an entry name into safe components (empty for the root itself).
fn clean_path(raw: &[u8]) -> Result<Vec<OsString>, UnpackError> {
    if raw.first() == Some(&b'/') {
        return Err(UnpackError::entry(raw, BadEntry::Absolute));
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => continue,
            b".." => return Err(UnpackError::entry(raw, BadEntry::Escapes)),
            _ => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

/// Walk `comps` under `dest`; each must be a real directory. Missing ones are created
/// (mode 0755) when `create`.
fn walk_dirs(dest: &Path, comps: &[OsString], create: bool) -> Result<PathBuf, UnpackError> {
    let mut p = dest.to_path_buf();
    for c in comps {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(UnpackError::Entry { path: inside(dest, &p), why: BadEntry::NotADirectory }),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::DirBuilder::new().mode(0o755).create(&p).map_err(|e| UnpackError::io(dest, &p, e))?;
            }
            Err(e) => return Err(UnpackError::io(dest, &p, e)),
        }
    }
    Ok(p)
}

/// `p` as a path inside the layer rooted at `dest` (`.` for the root itself).
fn inside(dest: &Path, p: &Path) -> PathBuf {
    match p.strip_prefix(dest) {
        Ok(r) if r.as_os_str().is_empty() => PathBuf::from("."),
        Ok(r) => r.to_path_buf(),
        Err(_) => p.to_path_buf(),
    }
}

/// Remove whatever is at `p` (a tree too), making directories writable first.
pub fn remove_tree(p: &Path) -> io::Result<()> {
    let m = match fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !m.is_dir() {
        return fs::remove_file(p);
    }
    let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
    for e in fs::read_dir(p)? {
        remove_tree(&e?.path())?;
    }
    fs::remove_dir(p)
}

/// Make room for a new entry at `p`; returns true when an existing directory is kept.
fn clear(dest: &Path, p: &Path, new_is_dir: bool) -> Result<bool, UnpackError> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(UnpackError::io(dest, p, e)),
        Ok(m) if m.is_dir() && new_is_dir => Ok(true),
        Ok(_) => remove_tree(p).map(|_| false).map_err(|e| UnpackError::io(dest, p, e)),
    }
}

fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    let mut ns = 0u32;
    for (i, d) in frac.bytes().take(9).enumerate() {
        if !d.is_ascii_digit() {
            return None;
        }
        ns += (d - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    Some((sec, ns))
}

fn entry_meta<R: Read>(e: &mut tar::Entry<R>) -> Result<Meta, UnpackError> {
    let h = e.header();
    let mut m = Meta {
        mode: h.mode().map_err(|x| UnpackError::tar("bad tar header (mode)", &x))? & 0o7777,
        // Empty numeric fields occur in the wild; read them as 0 (PAX may override).
        uid: h.uid().unwrap_or(0),
        gid: h.gid().unwrap_or(0),
        mtime: (h.mtime().unwrap_or(0).min(i64::MAX as u64) as i64, 0),
        xattrs: Vec::new(),
    };
    let pax = |x: io::Error| UnpackError::tar("bad tar header (pax)", &x);
    if let Some(exts) = e.pax_extensions().map_err(pax)? {
        for ext in exts {
            let ext = ext.map_err(pax)?;
            let Ok(key) = ext.key() else { continue };
            let v = ext.value_bytes();
            let num = || std::str::from_utf8(v).ok().and_then(|s| s.parse::<u64>().ok());
            match key {
                "uid" => m.uid = num().unwrap_or(m.uid),
                "gid" => m.gid = num().unwrap_or(m.gid),
                "mtime" => m.mtime = parse_pax_time(v).unwrap_or(m.mtime),
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        m.xattrs.push((name.as_bytes().to_vec(), v.to_vec()));
                    }
                }
            }
        }
    }
    Ok(m)
}

/// A tar uid/gid as a Linux id; out-of-range ids become the overflow id 65534 (nobody),
/// never -1 (which chown reads as "leave unchanged").
fn id32(v: u64) -> u32 {
    u32::try_from(v).ok().filter(|&x| x != u32::MAX).unwrap_or(65534)
}

struct Ctx<'a> {
    dest: &'a Path,
    opts: Options,
    dirs: BTreeMap<PathBuf, Meta>,
    stats: Stats,
}

impl Ctx<'_> {
    fn owner(&self, p: &Path, m: &Meta) -> Result<(), UnpackError> {
        if self.opts.privileged {
            std::os::unix::fs::lchown(p, Some(id32(m.uid)), Some(id32(m.gid))).map_err(|e| UnpackError::io(self.dest, p, e))?;
        }
        Ok(())
    }
    fn xattrs(&self, p: &Path, m: &Meta) -> Result<(), UnpackError> {
        for (k, v) in &m.xattrs {
            if self.opts.privileged {
                store_ops::lsetxattr(p, k, v).map_err(|source| UnpackError::Io {
                    path: inside(self.dest, p),
                    op: Op::Xattr(k.clone()),
                    source,
                })?;
            } else if k.starts_with(b"user.") {
                let _ = store_ops::lsetxattr(p, k, v);
            }
        }
        Ok(())
    }
    /// Best effort, like the file case: an absurd mtime must not fail the layer.
    fn times(&self, p: &Path, m: &Meta) {
        if let Err(e) = store_ops::lutimes(p, m.mtime.0, m.mtime.1) {
            log::debug!("{}: cannot set times: {e}", shown::path(&inside(self.dest, p)));
        }
    }
    fn chmod(&self, p: &Path, m: &Meta) -> Result<(), UnpackError> {
        fs::set_permissions(p, fs::Permissions::from_mode(m.mode)).map_err(|e| UnpackError::io(self.dest, p, e))
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<R>) -> Result<(), UnpackError> {
        use tar::EntryType as T;
        let kind = e.header().entry_type();
        if matches!(kind, T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink) {
            return Ok(());
        }
        self.stats.entries += 1;
        let raw = e.path_bytes().into_owned();
        let comps = clean_path(&raw)?;
        let meta = entry_meta(&mut e)?;
        if comps.iter().any(|c| c.as_bytes().starts_with(AUFS_META_PREFIX) && c.as_bytes() != OPAQUE_MARKER.to_bytes()) {
            self.stats.skipped += 1; // AUFS bookkeeping (.wh..wh.plnk, .wh..wh.aufs)
            return Ok(());
        }
        let Some((name, parents)) = comps.split_last() else {
            // The layer root itself: only its metadata.
            if kind == T::Directory {
                self.xattrs(self.dest, &meta)?;
                self.dirs.insert(self.dest.to_path_buf(), meta);
            }
            return Ok(());
        };
        let parent = walk_dirs(self.dest, parents, true)?;
        let nb = name.as_bytes();
        if self.opts.privileged
            && let Some(rest) = nb.strip_prefix(WH_PREFIX)
        {
            return self.whiteout(&parent, rest, &meta);
        }
        let target = parent.join(name);
        let is_dir = kind == T::Directory;
        let kept_dir = clear(self.dest, &target, is_dir)?;
        let d = self.dest;
        let err = |x: io::Error| UnpackError::io(d, &target, x);
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(err)?;
                let n = io::copy(&mut e, &mut f).map_err(|x| UnpackError::tar("reading layer", &x))?;
                self.stats.bytes += n;
                if self.opts.privileged {
                    std::os::unix::fs::fchown(&f, Some(id32(meta.uid)), Some(id32(meta.gid)))
                        .map_err(err)?;
                }
                f.set_permissions(fs::Permissions::from_mode(meta.mode)).map_err(err)?;
                self.xattrs(&target, &meta)?;
                // Times are best effort: an absurd mtime must not fail the layer.
                if let Some(t) = SystemTime::UNIX_EPOCH
                    .checked_add(Duration::new(meta.mtime.0.max(0) as u64, meta.mtime.1.min(999_999_999)))
                {
                    let _ = f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t));
                }
            }
            T::Directory => {
                if !kept_dir {
                    fs::DirBuilder::new().mode(0o700).create(&target).map_err(err)?;
                }
                self.xattrs(&target, &meta)?;
                self.dirs.insert(target, meta);
            }
            T::Symlink => {
                let to = e.link_name_bytes().ok_or_else(|| UnpackError::entry(&raw, BadEntry::SymlinkWithoutTarget))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&to), &target).map_err(err)?;
                self.owner(&target, &meta)?;
                self.xattrs(&target, &meta)?;
                self.times(&target, &meta);
            }
            T::Link => {
                let to = e.link_name_bytes().ok_or_else(|| UnpackError::entry(&raw, BadEntry::HardLinkWithoutTarget))?;
                let tc = clean_path(&to)?;
                let Some((tn, tp)) = tc.split_last() else {
                    return Err(UnpackError::entry(&raw, BadEntry::HardLinkToRoot));
                };
                let missing = || UnpackError::entry(&raw, BadEntry::HardLinkToMissing(bytes_path(&to)));
                let src = match walk_dirs(d, tp, false) {
                    Ok(dir) => dir.join(tn),
                    Err(UnpackError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Err(missing()),
                    Err(x) => return Err(x),
                };
                match fs::symlink_metadata(&src) {
                    Ok(m) if !m.is_dir() => {}
                    Ok(_) => return Err(UnpackError::entry(&raw, BadEntry::HardLinkToDirectory)),
                    Err(_) => return Err(missing()),
                }
                fs::hard_link(&src, &target).map_err(err)?;
            }
            T::Char | T::Block | T::Fifo => {
                let nk = match kind {
                    T::Char => NodeKind::Char,
                    T::Block => NodeKind::Block,
                    _ => NodeKind::Fifo,
                };
                if nk != NodeKind::Fifo && !self.opts.privileged {
                    log::warn!("skipping device node {} (needs root)", shown::path(&bytes_path(&raw)));
                    self.stats.skipped += 1;
                    return Ok(());
                }
                let h = e.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                store_ops::mknod(&target, nk, meta.mode, major, minor).map_err(err)?;
                self.owner(&target, &meta)?;
                self.chmod(&target, &meta)?;
                self.xattrs(&target, &meta)?;
                self.times(&target, &meta);
            }
            other => {
                log::warn!("skipping tar entry {} of type {other:?}", shown::path(&bytes_path(&raw)));
                self.stats.skipped += 1;
            }
        }
        Ok(())
    }

    /// Privileged only: turn an OCI whiteout into its overlay form.
    fn whiteout(&mut self, parent: &Path, rest: &[u8], meta: &Meta) -> Result<(), UnpackError> {
        let d = self.dest;
        if Some(rest) == OPAQUE_MARKER.to_bytes().strip_prefix(WH_PREFIX) {
            store_ops::lsetxattr(parent, OPAQUE_XATTR_TRUSTED.as_bytes(), b"y").map_err(|source| UnpackError::Io {
                path: inside(d, parent),
                op: Op::Opaque,
                source,
            })?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if rest.is_empty() || rest == b"." || rest == b".." {
            let name = inside(d, &parent.join(OsStr::from_bytes(&[WH_PREFIX, rest].concat())));
            return Err(UnpackError::Entry { path: name, why: BadEntry::InvalidWhiteout });
        }
        let target = parent.join(OsStr::from_bytes(rest));
        if fs::symlink_metadata(&target).is_ok() {
            // The same layer also holds the entry: it wins (the whiteout only hides lower layers).
            self.stats.skipped += 1;
            return Ok(());
        }
        store_ops::mknod(&target, NodeKind::Char, 0, 0, 0).map_err(|x| UnpackError::io(d, &target, x))?;
        let _ = meta;
        self.stats.whiteouts += 1;
        Ok(())
    }
}

/// Unpack the tar stream `src` into the empty directory `dest`.
pub fn unpack(src: &mut dyn Read, dest: &Path, opts: Options) -> Result<Stats, UnpackError> {
    let mut ar = tar::Archive::new(src);
    let mut ctx = Ctx { dest, opts, dirs: BTreeMap::new(), stats: Stats::default() };
    for e in ar.entries().map_err(|e| UnpackError::tar("bad tar", &e))? {
        crate::cancel::check().map_err(UnpackError::Interrupted)?;
        let e = e.map_err(|e| UnpackError::tar("bad tar", &e))?;
        ctx.entry(e)?;
    }
    // Directories last, deepest first (reverse byte order puts children before parents).
    let dirs = std::mem::take(&mut ctx.dirs);
    for (p, m) in dirs.iter().rev() {
        if !fs::symlink_metadata(p).is_ok_and(|x| x.is_dir()) {
            continue; // replaced by a non-directory later in the same layer
        }
        ctx.owner(p, m)?;
        ctx.chmod(p, m)?;
        ctx.times(p, m);
    }
    Ok(ctx.stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path(b"./a//b/").unwrap(), vec![OsString::from("a"), OsString::from("b")]);
        assert!(clean_path(b"./").unwrap().is_empty());
        assert!(clean_path(b"/etc/passwd").is_err());
        assert!(clean_path(b"a/../../b").is_err());
        assert!(clean_path(b"..").is_err());
    }

    #[test]
    fn absurd_pax_values_do_not_fail_or_panic() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("mtime", &b"9223372036854775807.999999999"[..]), ("uid", &b"99999999999"[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        let st = unpack(&mut &data[..], d.path(), Options { privileged: false }).unwrap();
        assert_eq!(st.bytes, 1);
        assert_eq!(id32(99999999999), 65534);
        assert_eq!(id32(u32::MAX as u64), 65534);
        assert_eq!(id32(1000), 1000);
    }

    #[test]
    fn errors_say_what_and_where_and_map_to_store_errors() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_mode(0o644);
        b.append_link(&mut h, "d/h", "gone/x").unwrap();
        let data = b.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        let e = unpack(&mut &data[..], d.path(), Options { privileged: false }).unwrap_err();
        assert!(matches!(&e, UnpackError::Entry { why: BadEntry::HardLinkToMissing(to), .. } if to == Path::new("gone/x")), "{e:?}");
        assert_eq!(e.to_string(), "hard link \"d/h\" to missing \"gone/x\"");
        let blob = Path::new("/store/blobs/sha256/ab");
        assert!(matches!(e.to_store(blob, d.path()), StoreError::Corrupt { file, .. } if file == blob));
        // A failed call in the cache is an I/O error there, not a corrupt layer.
        let io = UnpackError::Io {
            path: "etc/x".into(),
            op: Op::Xattr(b"trusted.a\nb".to_vec()),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(io.to_string().starts_with("etc/x: xattr trusted.a\\nb: "), "{io}");
        let s = io.to_store(blob, Path::new("/cache/diff"));
        assert!(matches!(&s, StoreError::Store { path, .. } if path == Path::new("/cache/diff/etc/x")), "{s:?}");
        assert!(!s.to_string().contains('\n'), "{s}");
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time(b"12"), Some((12, 0)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
