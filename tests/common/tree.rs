//! Tree snapshots and comparison: a mounted directory against a tar (e.g. `docker export`).
//!
//! Reusable by any mount test: snapshot the mount point with [`snapshot_dir`], the ground
//! truth with [`snapshot_tar`], and [`compare`] them (types, permission bits, owners,
//! sizes, content hashes, symlink targets, device numbers; not times), ignoring the
//! entries Docker's init layer adds ([`DOCKER_INIT`]).
//!
//! [`KernelOverlay`] mounts layer directories with kernel overlayfs (root only), the
//! reference the union filesystem is checked against.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Char,
    Block,
    Socket,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Size for regular files, 0 otherwise.
    pub size: u64,
    /// sha256 of a regular file's content.
    pub content: Option<String>,
    /// Symlink target (bytes, lossily shown).
    pub target: Option<Vec<u8>>,
    /// (major, minor) for devices.
    pub rdev: Option<(u64, u64)>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hash_reader(mut r: impl Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = r.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

/// Snapshot every entry under `root` (paths relative, `/`-separated, no leading `./`).
pub fn snapshot_dir(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let rel = String::from_utf8_lossy(p.strip_prefix(root).unwrap().as_os_str().as_bytes()).into_owned();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            Kind::File
        };
        let node = Node {
            mode: m.mode() & 0o7777,
            uid: m.uid() as u64,
            gid: m.gid() as u64,
            size: if kind == Kind::File { m.len() } else { 0 },
            content: (kind == Kind::File).then(|| hash_reader(std::fs::File::open(&p).unwrap())),
            target: (kind == Kind::Symlink).then(|| std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()),
            rdev: matches!(kind, Kind::Char | Kind::Block)
                .then(|| (libc_major(m.rdev()), libc_minor(m.rdev()))),
            kind: kind.clone(),
        };
        out.insert(rel, node);
        if kind == Kind::Dir {
            walk(root, &p, out);
        }
    }
}

fn libc_major(d: u64) -> u64 {
    ((d >> 32) & 0xffff_f000) | ((d >> 8) & 0xfff)
}
fn libc_minor(d: u64) -> u64 {
    ((d >> 12) & 0xffff_ff00) | (d & 0xff)
}

/// Snapshot a tar file (hard links take their target's node).
pub fn snapshot_tar(path: &Path) -> BTreeMap<String, Node> {
    let mut ar = tar::Archive::new(std::fs::File::open(path).expect("open tar"));
    let mut out: BTreeMap<String, Node> = BTreeMap::new();
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("tar entry");
        let raw = e.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).trim_start_matches("./").trim_end_matches('/').to_string();
        if name.is_empty() || name == "." {
            continue;
        }
        let h = e.header().clone();
        use tar::EntryType as T;
        let kind = match h.entry_type() {
            T::Directory => Kind::Dir,
            T::Symlink => Kind::Symlink,
            T::Fifo => Kind::Fifo,
            T::Char => Kind::Char,
            T::Block => Kind::Block,
            T::Link => {
                let t = String::from_utf8_lossy(&e.link_name_bytes().unwrap()).trim_start_matches("./").to_string();
                let n = out.get(&t).cloned().unwrap_or_else(|| panic!("hard link to unknown {t}"));
                out.insert(name, n);
                continue;
            }
            _ => Kind::File,
        };
        let node = Node {
            mode: h.mode().unwrap() & 0o7777,
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            size: if kind == Kind::File { h.size().unwrap() } else { 0 },
            content: (kind == Kind::File).then(|| hash_reader(&mut e)),
            target: (kind == Kind::Symlink).then(|| e.link_name_bytes().unwrap().into_owned()),
            rdev: matches!(kind, Kind::Char | Kind::Block).then(|| {
                (h.device_major().unwrap().unwrap_or(0) as u64, h.device_minor().unwrap().unwrap_or(0) as u64)
            }),
            kind,
        };
        out.insert(name, node);
    }
    out
}

fn ignored(path: &str, ignore: &[&str]) -> bool {
    ignore.iter().any(|i| match i.strip_suffix('/') {
        Some(d) => path == d || path.starts_with(i),
        None => path == *i,
    })
}

/// Differences between `want` and `got` (empty = same tree), one line each.
pub fn compare(want: &BTreeMap<String, Node>, got: &BTreeMap<String, Node>, ignore: &[&str]) -> Vec<String> {
    let mut d = Vec::new();
    for (p, w) in want {
        if ignored(p, ignore) {
            continue;
        }
        match got.get(p) {
            None => d.push(format!("missing: {p} ({:?})", w.kind)),
            Some(g) if g != w => d.push(format!("differs: {p}: want {w:?}, got {g:?}")),
            _ => {}
        }
    }
    for p in got.keys() {
        if !ignored(p, ignore) && !want.contains_key(p) {
            d.push(format!("unexpected: {p} ({:?})", got[p].kind));
        }
    }
    d
}

/// Like [`compare`], but owners are not compared (a tree unpacked without root is owned
/// by whoever unpacked it).
pub fn compare_ignoring_owners(want: &BTreeMap<String, Node>, got: &BTreeMap<String, Node>, ignore: &[&str]) -> Vec<String> {
    let strip = |m: &BTreeMap<String, Node>| -> BTreeMap<String, Node> {
        m.iter().map(|(k, v)| (k.clone(), Node { uid: 0, gid: 0, ..v.clone() })).collect()
    };
    compare(&strip(want), &strip(got), ignore)
}

/// Kernel overlayfs mount of layer dirs (top first), unmounted on drop.
pub struct KernelOverlay {
    pub mnt: PathBuf,
}

impl KernelOverlay {
    /// Mount read-only; Err with the reason when the kernel refuses.
    pub fn mount(layers: &[PathBuf], mnt: &Path) -> Result<KernelOverlay, String> {
        let mut lower: Vec<String> = layers.iter().map(|p| p.display().to_string()).collect();
        if lower.len() == 1 {
            // overlayfs needs two lower layers when there is no upper: add an empty one.
            let empty = mnt.with_extension("empty");
            std::fs::create_dir_all(&empty).unwrap();
            lower.push(empty.display().to_string());
        }
        std::fs::create_dir_all(mnt).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!("ro,lowerdir={}", lower.join(":")))
            .arg(mnt)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t overlay failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(KernelOverlay { mnt: mnt.to_path_buf() })
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
    }
}

/// True when running as root (kernel overlay mounts, mknod, trusted xattrs).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}
