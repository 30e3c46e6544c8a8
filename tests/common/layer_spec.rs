//! Build layer directories from a compact text spec.
//!
//! One entry per line (`#` starts a comment line); tokens are separated by blanks and may
//! be double-quoted (`\n`, `\"`, `\\` escapes inside quotes). Missing parent directories
//! are created with mode 0755.
//!
//! ```text
//! d PATH [mode=755] [owner=U:G] [x:NAME=VALUE]... [opaque]
//! f PATH [CONTENT] [mode=644] [owner=U:G] [x:NAME=VALUE]... [size=N] [sparse=N]
//! l PATH TARGET            symlink
//! h PATH EXISTING          hard link to an entry made earlier in the same layer
//! p PATH                   fifo            s PATH   socket
//! c PATH MAJOR MINOR       char device     b PATH MAJOR MINOR   block device
//! w PATH                   whiteout (in the layer's whiteout format)
//! o PATH                   mark existing dir PATH opaque (in the layer's format)
//! ```
//!
//! The whiteout format is chosen when building: `Format::Overlay` writes char 0/0 devices
//! and `trusted.overlay.opaque=y` (what kernel overlayfs reads), `Format::Oci` writes empty
//! `.wh.NAME` files and `.wh..wh..opq` (what container tools unpack). Every entry gets the
//! same fixed timestamps, so two builds of one spec are identical in all compared respects.

use super::fsops::{self, Errno};
use std::path::{Path, PathBuf};

/// The fixed atime/mtime (seconds) of every built entry.
pub const FIXED_TIME: i64 = 1_600_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// char device 0/0 whiteouts, `trusted.overlay.opaque=y`
    Overlay,
    /// `.wh.NAME` whiteouts, `.wh..wh..opq` opaque markers
    Oci,
}

fn tokenize(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { return out };
        let mut tok = String::new();
        if c == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => tok.push('\n'),
                        Some(o) => tok.push(o),
                        None => {}
                    },
                    o => tok.push(o),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                tok.push(c);
                chars.next();
            }
        }
        out.push(tok);
    }
}

fn fail(line: &str, what: impl std::fmt::Display) -> ! {
    panic!("layer spec line {line:?}: {what}")
}

fn ok<T>(line: &str, r: Result<T, Errno>) -> T {
    r.unwrap_or_else(|e| fail(line, e))
}

fn ensure_parents(root: &Path, rel: &Path) {
    if let Some(parent) = rel.parent() {
        let mut cur = root.to_path_buf();
        for comp in parent.components() {
            cur.push(comp);
            if fsops::lstat(&cur).is_err() {
                fsops::mkdir(&cur, 0o755).unwrap_or_else(|e| panic!("mkdir {cur:?}: {e}"));
                fsops::chmod(&cur, 0o755).unwrap();
            }
        }
    }
}

fn whiteout_path(root: &Path, rel: &Path) -> PathBuf {
    let name = rel.file_name().expect("whiteout needs a name").to_string_lossy();
    let parent = rel.parent().unwrap_or(Path::new(""));
    root.join(parent).join(format!(".wh.{name}"))
}

/// Build one layer from `spec` into the existing, empty directory `root`.
pub fn build_layer(root: &Path, spec: &str, format: Format) {
    for line in spec.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let toks = tokenize(line);
        if toks.len() < 2 {
            fail(line, "need a kind and a path");
        }
        let (kind, rel) = (toks[0].as_str(), Path::new(&toks[1]));
        let path = root.join(rel);
        ensure_parents(root, rel);
        let mut rest: Vec<&str> = toks[2..].iter().map(String::as_str).collect();
        match kind {
            "d" => ok(line, fsops::mkdir(&path, 0o755)),
            "f" => {
                let content = if rest.first().is_some_and(|t| !is_attr(t)) {
                    rest.remove(0).as_bytes().to_vec()
                } else {
                    Vec::new()
                };
                ok(line, fsops::write_file(&path, libc::O_CREAT | libc::O_EXCL, &content));
            }
            "l" => {
                let target = rest.first().unwrap_or_else(|| fail(line, "symlink needs a target"));
                ok(line, fsops::symlink(Path::new(target), &path));
                rest.remove(0);
            }
            "h" => {
                let target = rest.first().unwrap_or_else(|| fail(line, "link needs a target"));
                ok(line, fsops::link(&root.join(target), &path));
                rest.remove(0);
            }
            "p" => ok(line, fsops::mknod(&path, libc::S_IFIFO | 0o644, 0)),
            "s" => ok(line, fsops::mknod(&path, libc::S_IFSOCK | 0o755, 0)),
            "c" | "b" => {
                if rest.len() < 2 {
                    fail(line, "device needs MAJOR MINOR");
                }
                let maj: u32 = rest[0].parse().unwrap_or_else(|_| fail(line, "bad major"));
                let min: u32 = rest[1].parse().unwrap_or_else(|_| fail(line, "bad minor"));
                let t = if kind == "c" { libc::S_IFCHR } else { libc::S_IFBLK };
                ok(line, fsops::mknod(&path, t | 0o600, libc::makedev(maj, min)));
                rest.drain(..2);
            }
            "w" => match format {
                Format::Overlay => ok(line, fsops::mknod(&path, libc::S_IFCHR | 0o600, 0)),
                Format::Oci => {
                    ok(line, fsops::write_file(&whiteout_path(root, rel), libc::O_CREAT | libc::O_EXCL, b""))
                }
            },
            "o" => make_opaque(&path, format, line),
            _ => fail(line, "unknown kind"),
        }
        apply_attrs(&path, kind, &rest, format, line);
    }
    fix_times(root);
}

fn is_attr(t: &str) -> bool {
    t == "opaque"
        || t.starts_with("x:")
        || ["mode=", "owner=", "size=", "sparse="].iter().any(|p| t.starts_with(p))
}

fn make_opaque(dir: &Path, format: Format, line: &str) {
    match format {
        Format::Overlay => ok(line, fsops::lsetxattr(dir, "trusted.overlay.opaque", b"y", 0)),
        Format::Oci => ok(
            line,
            fsops::write_file(&dir.join(".wh..wh..opq"), libc::O_CREAT | libc::O_EXCL, b""),
        ),
    }
}

fn apply_attrs(path: &Path, kind: &str, attrs: &[&str], format: Format, line: &str) {
    for a in attrs {
        if *a == "opaque" {
            make_opaque(path, format, line);
        } else if let Some(m) = a.strip_prefix("mode=") {
            let m = u32::from_str_radix(m, 8).unwrap_or_else(|_| fail(line, "bad mode"));
            ok(line, fsops::chmod(path, m));
        } else if let Some(o) = a.strip_prefix("owner=") {
            let (u, g) = o.split_once(':').unwrap_or_else(|| fail(line, "owner=U:G"));
            let (u, g) = (u.parse().unwrap(), g.parse().unwrap());
            ok(line, fsops::lchown(path, u, g));
        } else if let Some(x) = a.strip_prefix("x:") {
            let (n, v) = x.split_once('=').unwrap_or_else(|| fail(line, "x:NAME=VALUE"));
            ok(line, fsops::lsetxattr(path, n, v.as_bytes(), 0));
        } else if let Some(n) = a.strip_prefix("size=") {
            let n: usize = n.parse().unwrap_or_else(|_| fail(line, "bad size"));
            let data: Vec<u8> = (0..n).map(|i| b'a' + (i * 7 % 26) as u8).collect();
            ok(line, fsops::write_file(path, libc::O_TRUNC, &data));
        } else if let Some(n) = a.strip_prefix("sparse=") {
            let n: i64 = n.parse().unwrap_or_else(|_| fail(line, "bad sparse size"));
            ok(line, fsops::truncate(path, n));
        } else {
            fail(line, format!("unknown attribute {a:?} for kind {kind}"));
        }
    }
}

/// Give every entry under `root` (and root) the fixed timestamps, children first.
fn fix_times(root: &Path) {
    let st = fsops::lstat(root).unwrap();
    if fsops::is_dir(&st) {
        for name in fsops::list_names(root).unwrap() {
            fix_times(&root.join(name));
        }
    }
    fsops::utimens(root, (FIXED_TIME, 0), (FIXED_TIME, 0)).unwrap();
}

/// A stack of layers: lower specs top first, and the upper's initial content.
#[derive(Clone, Debug, Default)]
pub struct LayerSet {
    pub lowers: Vec<String>,
    pub upper: String,
}

/// Where one built copy of a layer set lives.
#[derive(Clone, Debug)]
pub struct LayerDirs {
    pub base: PathBuf,
    /// top first
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub mnt: PathBuf,
}

impl LayerDirs {
    /// `lowerdir=TOP:...:BOTTOM,upperdir=U,workdir=W`
    pub fn overlay_options(&self) -> String {
        let lowers: Vec<String> = self.lowers.iter().map(|p| p.display().to_string()).collect();
        format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }
}

impl LayerSet {
    pub fn new(lowers: &[&str], upper: &str) -> LayerSet {
        LayerSet { lowers: lowers.iter().map(|s| s.to_string()).collect(), upper: upper.to_string() }
    }

    /// Build a copy under `base` (created): lower0.. (top first), upper, work, mnt.
    /// `formats[i]` is the whiteout format of lower i (missing: Overlay); `upper_format`
    /// that of the upper layer.
    pub fn build(&self, base: &Path, formats: &[Format], upper_format: Format) -> LayerDirs {
        std::fs::create_dir_all(base).unwrap();
        let mut lowers = Vec::new();
        for (i, spec) in self.lowers.iter().enumerate() {
            let dir = base.join(format!("lower{i}"));
            fsops::mkdir(&dir, 0o755).unwrap();
            fsops::chmod(&dir, 0o755).unwrap();
            build_layer(&dir, spec, formats.get(i).copied().unwrap_or(Format::Overlay));
            lowers.push(dir);
        }
        let upper = base.join("upper");
        fsops::mkdir(&upper, 0o755).unwrap();
        fsops::chmod(&upper, 0o755).unwrap();
        build_layer(&upper, &self.upper, upper_format);
        let work = base.join("work");
        let mnt = base.join("mnt");
        fsops::mkdir(&work, 0o755).unwrap();
        fsops::mkdir(&mnt, 0o755).unwrap();
        LayerDirs { base: base.to_path_buf(), lowers, upper, work, mnt }
    }
}
