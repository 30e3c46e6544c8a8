//! Snapshots of directory trees (and tars), and readable differences between them: the
//! one tree comparison every test uses.
//!
//! A snapshot maps each relative path (bytes, `/`-separated; `""` is the root) to a
//! [`Node`]: type, permission bits (0 for symlinks), owner, size and content (regular
//! files), symlink target, rdev (devices), and what [`Opts`] asks for besides: xattrs,
//! st_nlink, mtime, hard-link groups. An upper snapshot normalises the two whiteout
//! forms (char 0/0 device or `.wh.NAME` → `Whiteout`) and the two opaque markers
//! (`*.overlay.opaque=y` xattr or `.wh..wh..opq` → `opaque`). Timestamps (unless asked),
//! directory sizes and inode numbers are never compared.
//!
//! - [`snapshot`] / [`snapshot_upper`]: merged views and uppers (differential tests);
//! - [`snapshot_dir`] + [`snapshot_tar`] + [`compare`]: a mount against a tar such as
//!   `docker export`, ignoring Docker's init layer ([`DOCKER_INIT`]);
//! - [`snapshot_image`] + [`assert_same_tree`]: trees written by `commit` (mtimes, user
//!   xattrs and hard links matter).

use super::fsops;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Entries `docker export` shows that come from Docker's init layer, not the image.
/// A trailing `/` means the directory itself and everything under it.
pub const DOCKER_INIT: &[&str] = &[
    ".dockerenv",
    "dev/console",
    "dev/pts/",
    "dev/shm/",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/mtab",
    "proc/",
    "sys/",
    "dev/",
];

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Kind {
    Dir,
    #[default]
    File,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
    Whiteout,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: Option<u64>,
    pub content: Option<String>,
    pub target: Option<String>,
    pub xattrs: Vec<(String, String)>,
    pub nlink: Option<u64>,
    pub rdev: Option<(u32, u32)>,
    pub opaque: bool,
    /// mtime seconds of non-directories, non-symlinks ([`Opts::mtime`]).
    pub mtime: Option<i64>,
    /// Other paths of the tree sharing this entry's inode ([`Opts::links`]).
    pub links: Vec<Vec<u8>>,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == Kind::Whiteout {
            return f.write_str("whiteout");
        }
        write!(f, "{:?} {:04o} {}:{}", self.kind, self.mode, self.uid, self.gid)?;
        if let Some(s) = self.size {
            write!(f, " size={s}")?;
        }
        if let Some(c) = &self.content {
            write!(f, " content={c}")?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> {t:?}")?;
        }
        if let Some(n) = self.nlink {
            write!(f, " nlink={n}")?;
        }
        if let Some((a, b)) = self.rdev {
            write!(f, " rdev={a},{b}")?;
        }
        if let Some(t) = self.mtime {
            write!(f, " mtime={t}")?;
        }
        if self.opaque {
            write!(f, " opaque")?;
        }
        if !self.xattrs.is_empty() {
            let xs: Vec<String> = self.xattrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, " xattrs{{{}}}", xs.join(", "))?;
        }
        if !self.links.is_empty() {
            let ls: Vec<String> = self.links.iter().map(|l| show_path(l)).collect();
            write!(f, " links[{}]", ls.join(", "))?;
        }
        Ok(())
    }
}

/// Relative path (bytes; "" is the root) → node.
pub type Snapshot = BTreeMap<Vec<u8>, Node>;

/// Which xattrs a snapshot records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Xattrs {
    None,
    /// `user.*` of non-symlinks, all of them.
    User,
    /// `user.`, `trusted.` and `security.` ones that a merged view shows (not overlay-private).
    Visible,
}

/// What a snapshot records besides type, mode, owner, size, content, target and rdev.
#[derive(Clone, Copy, Debug)]
pub struct Opts {
    /// Normalise whiteouts and opaque markers (an upper directory).
    pub upper: bool,
    /// Record the root itself under `""`.
    pub root: bool,
    pub xattrs: Xattrs,
    /// st_nlink of regular files.
    pub nlink: bool,
    pub mtime: bool,
    /// Hard-link groups (non-directories with st_nlink > 1).
    pub links: bool,
}

impl Opts {
    /// A merged view as the differential tests compare it.
    pub const MERGED: Opts = Opts { upper: false, root: true, xattrs: Xattrs::Visible, nlink: true, mtime: false, links: false };
    /// What a tar records (compared against [`snapshot_tar`]).
    pub const TAR: Opts = Opts { upper: false, root: false, xattrs: Xattrs::None, nlink: false, mtime: false, links: false };
    /// A tree an image writer produced: mtimes, user xattrs and hard links matter.
    pub const IMAGE: Opts = Opts { upper: false, root: false, xattrs: Xattrs::User, nlink: false, mtime: true, links: true };
}

/// Is this xattr an overlay implementation detail that a merged view must hide and an
/// upper comparison must ignore?
pub fn is_private_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
        || name.contains(".fuseoverlayfs.")
        || name.contains(".unionmount.")
}

/// Content as shown and compared: short printable text as is, else a hash and length.
fn show_value(v: &[u8]) -> String {
    if v.len() <= 48 && v.iter().all(|b| (0x20..0x7f).contains(b)) {
        format!("{:?}", String::from_utf8_lossy(v))
    } else {
        let h = Sha256::digest(v);
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}(len {})", v.len())
    }
}

fn kind_of(fmt: u32, path: &Path) -> Kind {
    match fmt {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFSOCK => Kind::Socket,
        libc::S_IFCHR => Kind::CharDev,
        libc::S_IFBLK => Kind::BlockDev,
        _ => panic!("unknown file type {fmt:o} at {path:?}"),
    }
}

fn node_of(path: &Path, st: &libc::stat, o: &Opts) -> Node {
    let kind = kind_of(st.st_mode & libc::S_IFMT, path);
    let mut xattrs = Vec::new();
    let listed = match o.xattrs {
        Xattrs::None => false,
        Xattrs::User => kind != Kind::Symlink,
        Xattrs::Visible => true,
    };
    if listed {
        for name in fsops::llistxattr(path).unwrap_or_else(|e| panic!("listxattr {path:?}: {e}")) {
            let wanted = match o.xattrs {
                Xattrs::User => name.starts_with("user."),
                _ => ["user.", "trusted.", "security."].iter().any(|p| name.starts_with(p)) && !is_private_xattr(&name),
            };
            if wanted {
                let v = fsops::lgetxattr(path, &name).map(|v| show_value(&v)).unwrap_or_else(|e| format!("<{e}>"));
                xattrs.push((name, v));
            }
        }
        xattrs.sort();
    }
    let mut node = Node {
        mode: if kind == Kind::Symlink { 0 } else { st.st_mode & 0o7777 },
        uid: st.st_uid,
        gid: st.st_gid,
        xattrs,
        mtime: (o.mtime && !matches!(kind, Kind::Dir | Kind::Symlink)).then_some(st.st_mtime),
        kind,
        ..Node::default()
    };
    match node.kind {
        Kind::File => {
            node.size = Some(st.st_size as u64);
            node.nlink = o.nlink.then_some(st.st_nlink);
            let data = fsops::read_file(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"));
            node.content = Some(show_value(&data));
        }
        Kind::Symlink => {
            let t = fsops::readlink(path).unwrap_or_else(|e| panic!("readlink {path:?}: {e}"));
            node.target = Some(t.to_string_lossy().into_owned());
        }
        Kind::CharDev | Kind::BlockDev => {
            node.rdev = Some((libc::major(st.st_rdev), libc::minor(st.st_rdev)));
        }
        _ => {}
    }
    node
}

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    if rel.is_empty() { name.to_vec() } else { [rel, b"/", name].concat() }
}

struct Walk<'a> {
    root: &'a Path,
    o: Opts,
    out: Snapshot,
    /// inode → paths, for hard-link groups.
    inodes: BTreeMap<(u64, u64), Vec<Vec<u8>>>,
}

impl Walk<'_> {
    fn walk(&mut self, rel: &[u8]) {
        let path = if rel.is_empty() { self.root.to_path_buf() } else { self.root.join(std::ffi::OsStr::from_bytes(rel)) };
        let st = fsops::lstat(&path).unwrap_or_else(|e| panic!("lstat {path:?}: {e}"));
        let mut node = node_of(&path, &st, &self.o);
        if self.o.upper && node.kind == Kind::CharDev && st.st_rdev == 0 {
            node = whiteout();
        }
        if node.kind != Kind::Dir {
            if self.o.links && st.st_nlink > 1 {
                self.inodes.entry((st.st_dev, st.st_ino)).or_default().push(rel.to_vec());
            }
            self.out.insert(rel.to_vec(), node);
            return;
        }
        if self.o.upper {
            for key in ["trusted.overlay.opaque", "user.overlay.opaque"] {
                if fsops::lgetxattr(&path, key).is_ok_and(|v| v == b"y") {
                    node.opaque = true;
                }
            }
        }
        let mut names: Vec<Vec<u8>> = fsops::read_dir_raw(&path)
            .unwrap_or_else(|e| panic!("readdir {path:?}: {e}"))
            .into_iter()
            .map(|e| e.name)
            .filter(|n| n != b"." && n != b"..")
            .collect();
        names.sort();
        for name in names {
            if self.o.upper && name == b".wh..wh..opq" {
                node.opaque = true;
            } else if self.o.upper && name.starts_with(b".wh.") {
                self.out.insert(join_rel(rel, &name[4..]), whiteout());
            } else {
                self.walk(&join_rel(rel, &name));
            }
        }
        if !rel.is_empty() || self.o.root {
            self.out.insert(rel.to_vec(), node);
        }
    }
}

fn whiteout() -> Node {
    Node { kind: Kind::Whiteout, ..Node::default() }
}

/// Snapshot of `root` recording what `o` asks for.
pub fn snapshot_with(root: &Path, o: Opts) -> Snapshot {
    let mut w = Walk { root, o, out: Snapshot::new(), inodes: BTreeMap::new() };
    w.walk(b"");
    for paths in w.inodes.values().filter(|p| p.len() > 1) {
        for p in paths {
            if let Some(n) = w.out.get_mut(p) {
                n.links = paths.iter().filter(|q| *q != p).cloned().collect();
            }
        }
    }
    w.out
}

/// Drop st_nlink from every node (for comparisons where hard links may legitimately have
/// been broken by a copy-based fallback).
pub fn forget_nlink(s: &mut Snapshot) {
    for n in s.values_mut() {
        n.nlink = None;
    }
}

/// Snapshot of a merged view (or any plain tree), root included.
pub fn snapshot(root: &Path) -> Snapshot {
    snapshot_with(root, Opts::MERGED)
}

/// Snapshot of an upper directory with whiteout and opaque formats normalised.
pub fn snapshot_upper(root: &Path) -> Snapshot {
    snapshot_with(root, Opts { upper: true, ..Opts::MERGED })
}

/// Snapshot of a directory as [`snapshot_tar`] sees a tar of it.
pub fn snapshot_dir(root: &Path) -> Snapshot {
    snapshot_with(root, Opts::TAR)
}

/// Snapshot of a tree an image writer produced ([`Opts::IMAGE`]).
pub fn snapshot_image(root: &Path) -> Snapshot {
    snapshot_with(root, Opts::IMAGE)
}

/// Snapshot a tar file (hard links take their target's node).
pub fn snapshot_tar(path: &Path) -> Snapshot {
    let mut ar = tar::Archive::new(std::fs::File::open(path).expect("open tar"));
    let mut out = Snapshot::new();
    let trim = |raw: &[u8]| -> Vec<u8> {
        let s = raw.strip_prefix(b"./").unwrap_or(raw);
        s.strip_suffix(b"/").unwrap_or(s).to_vec()
    };
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("tar entry");
        let name = trim(&e.path_bytes());
        if name.is_empty() || name == b"." {
            continue;
        }
        let h = e.header().clone();
        use tar::EntryType as T;
        let kind = match h.entry_type() {
            T::Directory => Kind::Dir,
            T::Symlink => Kind::Symlink,
            T::Fifo => Kind::Fifo,
            T::Char => Kind::CharDev,
            T::Block => Kind::BlockDev,
            T::Link => {
                let t = trim(&e.link_name_bytes().unwrap());
                let n = out.get(&t).cloned().unwrap_or_else(|| panic!("hard link to unknown {}", show_path(&t)));
                out.insert(name, n);
                continue;
            }
            _ => Kind::File,
        };
        let mut node = Node {
            mode: if kind == Kind::Symlink { 0 } else { h.mode().unwrap() & 0o7777 },
            uid: h.uid().unwrap() as u32,
            gid: h.gid().unwrap() as u32,
            kind,
            ..Node::default()
        };
        match node.kind {
            Kind::File => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).expect("read tar entry");
                node.size = Some(data.len() as u64);
                node.content = Some(show_value(&data));
            }
            Kind::Symlink => {
                node.target = Some(String::from_utf8_lossy(&e.link_name_bytes().unwrap()).into_owned());
            }
            Kind::CharDev | Kind::BlockDev => {
                node.rdev = Some((h.device_major().unwrap().unwrap_or(0), h.device_minor().unwrap().unwrap_or(0)));
            }
            _ => {}
        }
        out.insert(name, node);
    }
    out
}

fn show_path(p: &[u8]) -> String {
    if p.is_empty() { "/".into() } else { format!("/{}", String::from_utf8_lossy(p)) }
}

/// Render a snapshot, one line per path.
pub fn render(s: &Snapshot) -> String {
    s.iter().map(|(p, n)| format!("  {}: {n}\n", show_path(p))).collect()
}

/// A readable diff of two snapshots, or None when they are equal.
pub fn diff(a_label: &str, a: &Snapshot, b_label: &str, b: &Snapshot) -> Option<String> {
    if a == b {
        return None;
    }
    let mut out = String::new();
    let mut keys: Vec<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut lines = 0;
    for k in keys {
        let line = match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(x), Some(y)) => {
                format!("  {}:\n    {a_label}: {x}\n    {b_label}: {y}\n", show_path(k))
            }
            (Some(x), None) => format!("  {}: only in {a_label}: {x}\n", show_path(k)),
            (None, Some(y)) => format!("  {}: only in {b_label}: {y}\n", show_path(k)),
            (None, None) => unreachable!(),
        };
        lines += 1;
        if lines > 60 {
            out.push_str("  ... (more differences)\n");
            break;
        }
        out.push_str(&line);
    }
    Some(out)
}

/// Panic with a readable report when two snapshots differ.
pub fn assert_same(what: &str, a_label: &str, a: &Snapshot, b_label: &str, b: &Snapshot) {
    if let Some(d) = diff(a_label, a, b_label, b) {
        panic!("{what}: trees differ ({a_label} vs {b_label}):\n{d}");
    }
}

/// Assert two snapshots are equal, listing the differences.
pub fn assert_same_tree(want: &Snapshot, got: &Snapshot) {
    assert_same("tree", "want", want, "got", got);
}

fn ignored(path: &[u8], ignore: &[&str]) -> bool {
    ignore.iter().any(|i| match i.strip_suffix('/') {
        Some(d) => path == d.as_bytes() || path.starts_with(i.as_bytes()),
        None => path == i.as_bytes(),
    })
}

/// Differences between `want` and `got` (empty = same tree), one line each, leaving
/// out the paths in `ignore` (a trailing `/`: the directory and all below it).
pub fn compare(want: &Snapshot, got: &Snapshot, ignore: &[&str]) -> Vec<String> {
    let keep = |s: &Snapshot| -> Snapshot { s.iter().filter(|(p, _)| !ignored(p, ignore)).map(|(p, n)| (p.clone(), n.clone())).collect() };
    match diff("want", &keep(want), "got", &keep(got)) {
        None => Vec::new(),
        Some(d) => d.lines().map(String::from).collect(),
    }
}

/// Like [`compare`], but owners are not compared (a tree unpacked without root is owned
/// by whoever unpacked it).
pub fn compare_ignoring_owners(want: &Snapshot, got: &Snapshot, ignore: &[&str]) -> Vec<String> {
    let strip = |m: &Snapshot| -> Snapshot { m.iter().map(|(k, v)| (k.clone(), Node { uid: 0, gid: 0, ..v.clone() })).collect() };
    compare(&strip(want), &strip(got), ignore)
}

/// True when running as root (kernel overlay mounts, mknod, trusted xattrs).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
