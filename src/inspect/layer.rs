//! Reading layer directories (an upper dir or a lower layer) with overlay meaning.
//!
//! This is the walker `diff`, `commit` and `which` share. A layer directory is read
//! as overlayfs would read it:
//!
//! ```text
//! layer/
//!   etc/              dir; opaque if xattr trusted.overlay.opaque=y or
//!                     user.overlay.opaque=y, or it contains .wh..wh..opq
//!   etc/gone          char device 0/0: a whiteout ("gone" deleted below)
//!   etc/.wh.old       empty file: a whiteout in OCI/AUFS form ("old" deleted below)
//!   etc/.wh..wh..opq  marker: etc is opaque
//! ```
//!
//! Invariants:
//! - Every access below a layer root goes through a [`Dir`], an open directory fd.
//!   A child is reached as `/proc/self/fd/N/NAME` with its final component never
//!   followed (`O_NOFOLLOW`, lstat, `l*xattr`), and only entries that lstat as
//!   directories are descended into, so nothing a layer holds (symlinks, renames
//!   racing the walk) can make a walk read outside the layer.
//! - Listings are sorted by name bytes, so every walk (and every tar) is
//!   deterministic. Names stay bytes (`OsString`) throughout.
//! - Both whiteout forms are recognised in every layer. When a real entry and a
//!   `.wh.` marker of the same name coexist, the real entry wins (and, if it is a
//!   directory, is treated as opaque: the marker says the lower one was deleted).
//! - Overlay-private xattrs (`trusted.overlay.*`, `user.overlay.*`) are never
//!   reported as content; `redirect`/`metacopy` ones are surfaced so callers can
//!   refuse layers they cannot represent.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::overlay::{self, Marker, WhiteoutFormat};

/// An open directory of a layer; children are reached only through it.
pub struct Dir {
    file: File,
    /// The directory's path as the user would know it (messages only).
    shown: PathBuf,
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

impl Kind {
    pub fn of(meta: &Metadata) -> Kind {
        let t = meta.file_type();
        if t.is_dir() {
            Kind::Dir
        } else if t.is_symlink() {
            Kind::Symlink
        } else if t.is_char_device() {
            Kind::CharDev
        } else if t.is_block_device() {
            Kind::BlockDev
        } else if t.is_fifo() {
            Kind::Fifo
        } else if t.is_socket() {
            Kind::Socket
        } else {
            Kind::File
        }
    }
}

/// One entry of a layer directory, whiteout markers already interpreted.
pub struct Entry {
    /// The name in the merged tree (for a `.wh.NAME` whiteout: `NAME`).
    pub name: OsString,
    pub meta: Metadata,
    pub kind: Kind,
    /// This entry deletes `name` in the layers below.
    pub whiteout: bool,
    /// A directory that hides everything below it (xattr, or a whiteout of its name).
    pub opaque: bool,
    /// Content xattrs (overlay-private ones removed), sorted by name.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    /// Overlay-private xattr names this entry carries that change its meaning
    /// (`redirect`, `metacopy`): callers that cannot follow them must refuse.
    pub special: Vec<OsString>,
}

/// A directory's entries, sorted by name.
pub struct Listing {
    pub entries: Vec<Entry>,
    /// The directory holds `.wh..wh..opq`.
    pub opaque_marker: bool,
}

/// A char device 0/0: the overlay form of a whiteout.
pub fn is_whiteout_dev(meta: &Metadata) -> bool {
    overlay::is_whiteout_dev(meta.mode(), meta.rdev())
}

fn is_opaque_xattr(k: &OsStr, v: &[u8]) -> bool {
    overlay::is_opaque_xattr(k.as_bytes()) && overlay::is_opaque_value(v)
}

/// ENOENT and ENOTDIR mean "not there" for a lookup.
fn not_there(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

impl Dir {
    /// Open a layer root (the path the user gave; symlinks in it are followed).
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Dir { file, shown: path.to_path_buf() })
    }

    /// The directory as the user knows it (for messages).
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// `/proc/self/fd/N`: this directory, pinned by its fd.
    fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// The path through which child `name` is reached without following it.
    pub fn child(&self, name: &OsStr) -> PathBuf {
        self.fd_path().join(name)
    }

    fn err(&self, name: &OsStr, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.shown.join(name).display()))
    }

    /// lstat a child; `None` when it does not exist.
    pub fn lstat(&self, name: &OsStr) -> io::Result<Option<Metadata>> {
        match std::fs::symlink_metadata(self.child(name)) {
            Ok(m) => Ok(Some(m)),
            Err(e) if not_there(&e) => Ok(None),
            Err(e) => Err(self.err(name, e)),
        }
    }

    /// Open child directory `name` (never through a symlink).
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.child(name))
            .map_err(|e| self.err(name, e))?;
        Ok(Dir { file, shown: self.shown.join(name) })
    }

    /// Open child regular file `name` for reading (never through a symlink, never
    /// blocking on a fifo swapped in); fails unless it is a regular file.
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(self.child(name))
            .map_err(|e| self.err(name, e))?;
        if !file.metadata()?.file_type().is_file() {
            return Err(self.err(name, io::Error::other("changed type during the walk")));
        }
        Ok(file)
    }

    /// The target of child symlink `name`, as bytes.
    pub fn read_link(&self, name: &OsStr) -> io::Result<OsString> {
        std::fs::read_link(self.child(name)).map(|p| p.into_os_string()).map_err(|e| self.err(name, e))
    }

    /// All xattrs of child `name` (not followed), sorted by name.
    pub fn xattrs(&self, name: &OsStr) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        xattrs_of(&self.child(name)).map_err(|e| self.err(name, e))
    }

    /// Child names, sorted by bytes.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let mut names = Vec::new();
        let rd = std::fs::read_dir(self.fd_path())
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.shown.display())))?;
        for e in rd {
            let e = e.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.shown.display())))?;
            names.push(e.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(names)
    }

    /// Read and interpret this directory (see the module docs).
    pub fn list(&self) -> io::Result<Listing> {
        let names = self.names()?;
        let present: BTreeSet<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        let mut opaque_marker = false;
        let mut entries = Vec::with_capacity(names.len());
        for name in &names {
            let b = name.as_bytes();
            let target = match overlay::marker(b, WhiteoutFormat::Either) {
                None => None,
                Some(Marker::Opaque) => {
                    opaque_marker = true;
                    continue;
                }
                Some(Marker::Ignored) => continue,
                Some(Marker::Whiteout(t)) => Some(t),
            };
            let Some(meta) = self.lstat(name)? else { continue };
            if let Some(target) = target {
                if present.contains(target) {
                    continue; // the real entry wins; it sees the marker itself
                }
                entries.push(Entry {
                    name: OsStr::from_bytes(target).to_os_string(),
                    kind: Kind::of(&meta),
                    meta,
                    whiteout: true,
                    opaque: false,
                    xattrs: Vec::new(),
                    special: Vec::new(),
                });
                continue;
            }
            let kind = Kind::of(&meta);
            let whiteout = is_whiteout_dev(&meta);
            let all = if whiteout || kind == Kind::Socket { Vec::new() } else { self.xattrs(name)? };
            let mut opaque = false;
            let mut special = Vec::new();
            let mut xattrs = Vec::new();
            for (k, v) in all {
                if is_opaque_xattr(&k, &v) {
                    opaque = true;
                } else if overlay::changes_meaning(k.as_bytes()) {
                    special.push(k);
                } else if !overlay::is_private_xattr(k.as_bytes()) {
                    xattrs.push((k, v));
                }
            }
            if kind == Kind::Dir && !whiteout && let Ok(wh) = overlay::whiteout_marker(b) {
                opaque |= present.contains(wh.as_bytes());
            }
            entries.push(Entry { name: name.clone(), meta, kind, whiteout, opaque, xattrs, special });
        }
        entries.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(Listing { entries, opaque_marker })
    }
}

/// All xattrs of `path` (not followed), sorted by name; none where unsupported.
pub fn xattrs_of(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for n in names {
        match xattr::get(path, &n) {
            Ok(Some(v)) => out.push((n, v)),
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

/// Is the root of a layer opaque (`.wh..wh..opq` in it, or the opaque xattr)?
pub fn root_is_opaque(dir: &Dir, path: &Path) -> io::Result<bool> {
    Ok(dir.lstat(OsStr::from_bytes(overlay::OPAQUE_MARKER.to_bytes()))?.is_some()
        || xattrs_of(path)?.iter().any(|(k, v)| is_opaque_xattr(k, v)))
}

/// What one layer holds at a name.
pub enum Probe {
    Absent,
    Whiteout,
    Dir { meta: Metadata, opaque: bool },
    NonDir { meta: Metadata },
}

/// Look `name` up in one layer directory, both whiteout forms considered.
pub fn probe(dir: &Dir, name: &OsStr) -> io::Result<Probe> {
    // A name too long to carry the prefix cannot have a `.wh.` marker.
    let marker = match overlay::whiteout_marker(name.as_bytes()) {
        Ok(wh) => dir.lstat(OsStr::from_bytes(wh.as_bytes()))?.is_some(),
        Err(_) => false,
    };
    match dir.lstat(name)? {
        None if marker => Ok(Probe::Whiteout),
        None => Ok(Probe::Absent),
        Some(m) if is_whiteout_dev(&m) => Ok(Probe::Whiteout),
        Some(meta) if meta.is_dir() => {
            let opaque = marker
                || dir.xattrs(name)?.iter().any(|(k, v)| is_opaque_xattr(k, v))
                || dir.open_dir(name)?.lstat(OsStr::from_bytes(overlay::OPAQUE_MARKER.to_bytes()))?.is_some();
            Ok(Probe::Dir { meta, opaque })
        }
        Some(meta) => Ok(Probe::NonDir { meta }),
    }
}

/// One path of the merged tree seen through a stack of layers: the directories
/// merged at that path, top first, each with its layer index.
#[derive(Default)]
pub struct Stack {
    pub dirs: Vec<(usize, Dir)>,
}

/// The result of looking a name up through a [`Stack`], as overlayfs does.
pub struct Lookup {
    /// The layer providing the name and its metadata; `None` if absent or deleted.
    pub top: Option<(usize, Metadata)>,
    /// The layer whose whiteout ended the lookup with nothing found above it.
    pub whiteout: Option<usize>,
    /// For a directory: the layers merged at the name (top first).
    pub merged: Stack,
}

impl Stack {
    /// A stack of layer roots, top first, indices counted from `first_index`;
    /// layers below an opaque root are not merged.
    pub fn roots(dirs: &[PathBuf], first_index: usize) -> io::Result<Stack> {
        let mut out = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            let dir = Dir::open_root(d)?;
            let opaque = root_is_opaque(&dir, d)?;
            out.push((first_index + i, dir));
            if opaque {
                break;
            }
        }
        Ok(Stack { dirs: out })
    }

    /// Look `name` up: the first layer holding it provides it; a whiteout stops
    /// the search; directories merge downwards until an opaque one or a non-dir.
    pub fn lookup(&self, name: &OsStr) -> io::Result<Lookup> {
        let mut res = Lookup { top: None, whiteout: None, merged: Stack::default() };
        for (idx, dir) in &self.dirs {
            match probe(dir, name)? {
                Probe::Absent => continue,
                Probe::Whiteout => {
                    if res.top.is_none() {
                        res.whiteout = Some(*idx);
                    }
                    break;
                }
                Probe::NonDir { meta } => {
                    if res.top.is_none() {
                        res.top = Some((*idx, meta));
                    }
                    break;
                }
                Probe::Dir { meta, opaque } => {
                    if res.top.is_none() {
                        res.top = Some((*idx, meta));
                    }
                    res.merged.dirs.push((*idx, dir.open_dir(name)?));
                    if opaque {
                        break;
                    }
                }
            }
        }
        Ok(res)
    }

    /// The names visible in the merged directory this stack describes, sorted.
    pub fn merged_names(&self) -> io::Result<Vec<OsString>> {
        let mut visible = BTreeSet::new();
        let mut deleted = BTreeSet::new();
        for (_, dir) in &self.dirs {
            for e in dir.list()?.entries {
                let key = e.name.as_bytes().to_vec();
                if visible.contains(&key) || deleted.contains(&key) {
                    continue;
                }
                if e.whiteout {
                    deleted.insert(key);
                } else {
                    visible.insert(key);
                }
            }
        }
        Ok(visible.into_iter().map(|b| OsStr::from_bytes(&b).to_os_string()).collect())
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Building synthetic layers in tests.
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Command;

    pub fn is_root() -> bool {
        crate::sys::euid() == 0
    }

    pub fn write(root: &Path, rel: &str, data: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    pub fn mkdir(root: &Path, rel: &str) {
        std::fs::create_dir_all(root.join(rel)).unwrap();
    }

    pub fn chmod(root: &Path, rel: &str, mode: u32) {
        std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A char 0/0 whiteout (root only; callers check `is_root`).
    pub fn whiteout_dev(root: &Path, rel: &str) {
        let st = Command::new("mknod").arg(root.join(rel)).args(["c", "0", "0"]).status().unwrap();
        assert!(st.success());
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn listing_interprets_both_whiteout_forms() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "a", "1");
        write(r, ".wh.gone", "");
        write(r, ".wh.a", ""); // real entry wins
        mkdir(r, "d");
        write(r, "d/.wh..wh..opq", "");
        write(r, ".wh..wh.plnk", "");
        std::os::unix::fs::symlink("/etc/passwd", r.join("ln")).unwrap();
        let l = Dir::open_root(r).unwrap().list().unwrap();
        let names: Vec<_> = l.entries.iter().map(|e| (e.name.to_str().unwrap(), e.whiteout)).collect();
        assert_eq!(names, vec![("a", false), ("d", false), ("gone", true), ("ln", false)]);
        assert!(!l.opaque_marker);
        let d = Dir::open_root(r).unwrap().open_dir(OsStr::new("d")).unwrap();
        assert!(d.list().unwrap().opaque_marker);
        // Symlinks are never followed when opening.
        assert!(Dir::open_root(r).unwrap().open_dir(OsStr::new("ln")).is_err());
        assert!(Dir::open_root(r).unwrap().open_file(OsStr::new("ln")).is_err());
    }

    #[test]
    fn lookup_follows_overlay_rules() {
        let t = tempfile::tempdir().unwrap();
        let (top, mid, bot) = (t.path().join("top"), t.path().join("mid"), t.path().join("bot"));
        write(&bot, "d/x", "bx");
        write(&bot, "d/y", "by");
        write(&bot, "f", "bf");
        write(&mid, "d/z", "mz");
        write(&mid, ".wh.f", "");
        write(&top, "d/.wh.y", "");
        let s = Stack::roots(&[top, mid, bot], 1).unwrap();
        let f = s.lookup(OsStr::new("f")).unwrap();
        assert!(f.top.is_none());
        assert_eq!(f.whiteout, Some(2));
        let d = s.lookup(OsStr::new("d")).unwrap();
        assert_eq!(d.top.as_ref().unwrap().0, 1);
        assert_eq!(d.merged.dirs.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        let names = d.merged.merged_names().unwrap();
        assert_eq!(names, vec![OsString::from("x"), OsString::from("z")]);
    }

    #[test]
    fn longest_names_have_no_marker_to_probe() {
        let t = tempfile::tempdir().unwrap();
        let (top, bot) = (t.path().join("top"), t.path().join("bot"));
        let long = "n".repeat(255);
        write(&bot, &long, "x");
        write(&top, &long, "y");
        let s = Stack::roots(&[top, bot], 0).unwrap();
        assert_eq!(s.lookup(OsStr::new(&long)).unwrap().top.unwrap().0, 0);
    }

    #[test]
    fn opaque_xattr_and_chardev_whiteout() {
        if !is_root() {
            eprintln!("skipped: needs root for mknod and trusted.* xattrs");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (top, bot) = (t.path().join("top"), t.path().join("bot"));
        write(&bot, "d/x", "1");
        write(&bot, "g", "1");
        mkdir(&top, "d");
        xattr::set(top.join("d"), "trusted.overlay.opaque", b"y").unwrap();
        xattr::set(top.join("d"), "user.keep", b"v").unwrap();
        whiteout_dev(&top, "g");
        let s = Stack::roots(&[top.clone(), bot], 0).unwrap();
        let d = s.lookup(OsStr::new("d")).unwrap();
        assert_eq!(d.merged.dirs.len(), 1);
        assert_eq!(s.lookup(OsStr::new("g")).unwrap().whiteout, Some(0));
        let l = Dir::open_root(&top).unwrap().list().unwrap();
        assert!(l.entries[0].opaque);
        assert_eq!(l.entries[0].xattrs, vec![(OsString::from("user.keep"), b"v".to_vec())]);
        assert!(l.entries[1].whiteout);
    }
}
