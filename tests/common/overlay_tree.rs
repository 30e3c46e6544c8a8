//! Snapshots of directory trees and readable diffs between them.
//!
//! A merged snapshot records, per path: type, permission bits, owner, size and content
//! (files), symlink target, user./trusted./security. xattrs minus overlay-private ones,
//! st_nlink (regular files) and rdev (devices). An upper snapshot additionally normalises
//! the two whiteout formats (char 0/0 device or `.wh.NAME` → `whiteout`) and the two
//! opaque markers (`*.overlay.opaque=y` xattr or `.wh..wh..opq` → `opaque`).
//! Timestamps, directory sizes and inode numbers are not compared.

use super::fsops;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
    Whiteout,
}

#[derive(Clone, Debug, PartialEq, Eq)]
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
        if self.opaque {
            write!(f, " opaque")?;
        }
        if !self.xattrs.is_empty() {
            let xs: Vec<String> = self.xattrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, " xattrs{{{}}}", xs.join(", "))?;
        }
        Ok(())
    }
}

/// Relative path (bytes; "" is the root) → node.
pub type Snapshot = BTreeMap<Vec<u8>, Node>;

/// Is this xattr an overlay implementation detail that a merged view must hide and an
/// upper comparison must ignore?
pub fn is_private_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
        || name.contains(".fuseoverlayfs.")
        || name.contains(".unionmount.")
}

fn show_value(v: &[u8]) -> String {
    if v.len() <= 48 && v.iter().all(|b| (0x20..0x7f).contains(b)) {
        format!("{:?}", String::from_utf8_lossy(v))
    } else {
        let h = Sha256::digest(v);
        let hex: String = h.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}(len {})", v.len())
    }
}

fn node_of(path: &Path, st: &libc::stat) -> Node {
    let fmt = st.st_mode & libc::S_IFMT;
    let kind = match fmt {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFSOCK => Kind::Socket,
        libc::S_IFCHR => Kind::CharDev,
        libc::S_IFBLK => Kind::BlockDev,
        _ => panic!("unknown file type {fmt:o} at {path:?}"),
    };
    let mut xattrs = Vec::new();
    for name in fsops::llistxattr(path).unwrap_or_else(|e| panic!("listxattr {path:?}: {e}")) {
        let wanted = ["user.", "trusted.", "security."].iter().any(|p| name.starts_with(p));
        if wanted && !is_private_xattr(&name) {
            let v = fsops::lgetxattr(path, &name).map(|v| show_value(&v)).unwrap_or_else(|e| format!("<{e}>"));
            xattrs.push((name, v));
        }
    }
    let mut node = Node {
        mode: if kind == Kind::Symlink { 0 } else { st.st_mode & 0o7777 },
        uid: st.st_uid,
        gid: st.st_gid,
        size: None,
        content: None,
        target: None,
        xattrs,
        nlink: None,
        rdev: None,
        opaque: false,
        kind,
    };
    match node.kind {
        Kind::File => {
            node.size = Some(st.st_size as u64);
            node.nlink = Some(st.st_nlink);
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
    if rel.is_empty() {
        name.to_vec()
    } else {
        [rel, b"/", name].concat()
    }
}

fn walk(root: &Path, rel: &[u8], upper: bool, out: &mut Snapshot) {
    let path = if rel.is_empty() { root.to_path_buf() } else { root.join(std::ffi::OsStr::from_bytes(rel)) };
    let st = fsops::lstat(&path).unwrap_or_else(|e| panic!("lstat {path:?}: {e}"));
    let mut node = node_of(&path, &st);
    if upper && node.kind == Kind::CharDev && st.st_rdev == 0 {
        node = whiteout();
    }
    if node.kind != Kind::Dir {
        out.insert(rel.to_vec(), node);
        return;
    }
    if upper {
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
        if upper && name == b".wh..wh..opq" {
            node.opaque = true;
        } else if upper && name.starts_with(b".wh.") {
            out.insert(join_rel(rel, &name[4..]), whiteout());
        } else {
            walk(root, &join_rel(rel, &name), upper, out);
        }
    }
    out.insert(rel.to_vec(), node);
}

fn whiteout() -> Node {
    Node {
        kind: Kind::Whiteout,
        mode: 0,
        uid: 0,
        gid: 0,
        size: None,
        content: None,
        target: None,
        xattrs: vec![],
        nlink: None,
        rdev: None,
        opaque: false,
    }
}

/// Drop st_nlink from every node (for comparisons where hard links may legitimately have
/// been broken by a copy-based fallback).
pub fn forget_nlink(s: &mut Snapshot) {
    for n in s.values_mut() {
        n.nlink = None;
    }
}

/// Snapshot of a merged view (or any plain tree).
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    walk(root, b"", false, &mut out);
    out
}

/// Snapshot of an upper directory with whiteout and opaque formats normalised.
pub fn snapshot_upper(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    walk(root, b"", true, &mut out);
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
