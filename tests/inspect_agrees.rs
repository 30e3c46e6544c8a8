//! Property: `which` and `diff` agree with what a mount serves.
//!
//! Random layer stacks (an upper and one to three lowers over a small universe of
//! paths) are written with both whiteout forms mixed, as root writes them (char 0/0
//! devices, the opaque xattr) and as OCI/rootless tools do (`.wh.NAME` files,
//! `.wh..wh..opq`), including a directory beside its own `.wh.` marker in the same
//! layer. The stack is mounted for real with unionmount, and so are its lowers alone;
//! both mounts must show the tree the overlay rules give (a model written out in this
//! test, independent of the code under test); then, for every path of the universe:
//! - `unionmount which PATH` finds it exactly when the mount shows it, with the type
//!   the mount shows and the layer the mount serves it from (every layer writes its
//!   own file contents, link targets and directory modes, so the mount tells);
//! - a merged directory lists exactly the names a lookup finds;
//! - `unionmount diff MNT` lists `A` exactly for what the mount shows and the lowers
//!   do not, `D` exactly for what the lowers show and the mount does not (where its
//!   parent is a directory in both: below that, the parent's own change says it), and
//!   `C` only for what both show, and at least wherever they show it differently.
//!
//! Needs root (char devices, `trusted.*` xattrs, mounting) and /dev/fuse; skips,
//! saying why, otherwise. Cases: `UNIONMOUNT_AGREE_CASES` (default 24).

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use unionmount::sys::store_ops::{NodeKind, lsetxattr, mknod};

const NAMES: [&str; 3] = ["a", "b", "c"];
/// Directory modes by layer (0 = upper): the mode a mount shows names the provider.
const DIR_MODES: [u32; 4] = [0o755, 0o751, 0o711, 0o705];

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_unionmount")
}

/// Every path of the universe (depth 1 to 3), as component lists.
fn universe() -> Vec<Vec<&'static str>> {
    let mut out: Vec<Vec<&str>> = NAMES.iter().map(|n| vec![*n]).collect();
    for depth in 1..3 {
        let prev: Vec<Vec<&str>> = out.iter().filter(|p| p.len() == depth).cloned().collect();
        for p in prev {
            for n in NAMES {
                let mut q = p.clone();
                q.push(n);
                out.push(q);
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Op {
    File,
    Dir,
    Symlink,
    Whiteout,
    Opaque,
    /// A directory with a `.wh.` marker of its own name beside it, in the same layer.
    DirBesideMarker,
}

/// One change to a layer: which path, what, and the form (`true`: char device /
/// opaque xattr; `false`: `.wh.` files).
type LayerOps = Vec<(usize, Op, bool)>;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::File),
        3 => Just(Op::Dir),
        1 => Just(Op::Symlink),
        3 => Just(Op::Whiteout),
        2 => Just(Op::Opaque),
        1 => Just(Op::DirBesideMarker),
    ]
}

fn stack() -> impl Strategy<Value = Vec<LayerOps>> {
    let n = universe().len();
    prop::collection::vec(prop::collection::vec((0..n, op(), any::<bool>()), 0..12), 2..=4)
}

fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Make the directories `comps` below `root` (mode `mode`); false when a non-directory
/// is in the way.
fn ensure_dirs(root: &Path, comps: &[&str], mode: u32) -> bool {
    let mut p = root.to_path_buf();
    for c in comps {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return false,
            Err(_) => {
                std::fs::create_dir(&p).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
        }
    }
    true
}

/// Write layer `i` (0 = upper) into `root`; an operation that conflicts with an
/// earlier one of the same layer is skipped.
fn build_layer(root: &Path, i: usize, ops: &LayerOps) {
    let mode = DIR_MODES[i];
    std::fs::create_dir(root).unwrap();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode)).unwrap();
    let u = universe();
    for &(pi, op, overlay_form) in ops {
        let comps = &u[pi];
        let (name, parents) = comps.split_last().unwrap();
        if !ensure_dirs(root, parents, mode) {
            continue;
        }
        let parent: PathBuf = parents.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let path = parent.join(name);
        let marker = parent.join(format!(".wh.{name}"));
        match op {
            Op::File | Op::Symlink | Op::Whiteout if exists(&path) || exists(&marker) => {}
            Op::File => std::fs::write(&path, format!("L{i}")).unwrap(),
            Op::Symlink => std::os::unix::fs::symlink(format!("/nonexistent/T{i}"), &path).unwrap(),
            Op::Whiteout if overlay_form => mknod(&path, NodeKind::Char, 0, 0, 0).unwrap(),
            Op::Whiteout => std::fs::write(&marker, "").unwrap(),
            Op::Dir | Op::Opaque | Op::DirBesideMarker => {
                if !ensure_dirs(root, comps, mode) {
                    continue;
                }
                match op {
                    Op::Opaque if overlay_form => lsetxattr(&path, b"trusted.overlay.opaque", b"y").unwrap(),
                    Op::Opaque => std::fs::write(path.join(".wh..wh..opq"), "").unwrap(),
                    Op::DirBesideMarker => std::fs::write(&marker, "").unwrap(),
                    _ => {}
                }
            }
        }
    }
}

/// What the mount shows at a path, and which layer (0 = upper) it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Dir(usize, u32),
    File(usize, String),
    Link(usize, String),
}

impl Seen {
    fn layer(&self) -> usize {
        match self {
            Seen::Dir(l, _) | Seen::File(l, _) | Seen::Link(l, _) => *l,
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Seen::Dir(..) => "directory",
            Seen::File(..) => "file",
            Seen::Link(..) => "symlink",
        }
    }
}

fn join(comps: &[&str]) -> String {
    comps.join("/")
}

/// Everything a mount shows over the universe, keyed by path ("" = the root); checks
/// on the way that each directory lists exactly the names lookups find.
fn observe(mnt: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut paths: Vec<Vec<&str>> = vec![vec![]];
    paths.extend(universe());
    for comps in paths {
        let p = comps.iter().fold(mnt.to_path_buf(), |p, c| p.join(c));
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        let seen = if m.is_dir() {
            let mode = m.mode() & 0o7777;
            let layer = DIR_MODES.iter().position(|&d| d == mode).unwrap_or_else(|| panic!("{p:?}: mode {mode:o}"));
            if comps.len() < 3 {
                let listed: BTreeSet<String> =
                    std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
                let looked: BTreeSet<String> =
                    NAMES.iter().filter(|n| exists(&p.join(n))).map(|n| n.to_string()).collect();
                assert_eq!(listed, looked, "{p:?}: the listing and the lookups disagree");
            }
            Seen::Dir(layer, mode)
        } else if m.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap().into_os_string().into_string().unwrap();
            Seen::Link(t.strip_prefix("/nonexistent/T").unwrap().parse().unwrap(), t)
        } else {
            let c = std::fs::read_to_string(&p).unwrap();
            Seen::File(c.strip_prefix('L').unwrap().parse().unwrap(), c)
        };
        out.insert(join(&comps), seen);
    }
    out
}

/// What one layer alone holds at `dir/name`, read back from disk with the rules
/// written out here independently of the code under test (the model's oracle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Here {
    Absent,
    Whiteout,
    Dir { opaque: bool },
    NonDir,
}

fn here(dir: &Path, name: &str) -> Here {
    let p = dir.join(name);
    let marker = exists(&dir.join(format!(".wh.{name}")));
    match std::fs::symlink_metadata(&p) {
        Err(_) if marker => Here::Whiteout,
        Err(_) => Here::Absent,
        Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => Here::Whiteout,
        Ok(m) if m.is_dir() => {
            // Opaque: the xattr, the marker inside, or its own marker beside it (OCI:
            // the marker deletes what is below; the directory of this layer stays).
            let xattr = xattr::get(&p, "trusted.overlay.opaque").ok().flatten().is_some_and(|v| v == b"y");
            Here::Dir { opaque: xattr || marker || exists(&p.join(".wh..wh..opq")) }
        }
        Ok(_) => Here::NonDir,
    }
}

/// The tree a union of `layers` (top first: layer index and directory) shows, as
/// (providing layer, is a directory) per path: the first layer holding a name
/// decides, a whiteout hides it, a non-directory hides what is below, directories
/// merge down to the first opaque one.
fn model(layers: &[(usize, PathBuf)], prefix: &str, out: &mut BTreeMap<String, (usize, bool)>) {
    if prefix.matches('/').count() >= 2 {
        return;
    }
    for name in NAMES {
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        let mut found: Option<(usize, bool)> = None;
        let mut merged = Vec::new();
        for (i, dir) in layers {
            match (found, here(dir, name)) {
                (_, Here::Absent) => continue,
                (None, Here::Whiteout) => break,
                (None, Here::NonDir) => {
                    found = Some((*i, false));
                    break;
                }
                (_, Here::Dir { opaque }) => {
                    found.get_or_insert((*i, true));
                    merged.push((*i, dir.join(name)));
                    if opaque {
                        break;
                    }
                }
                (Some(_), _) => break,
            }
        }
        if let Some(f) = found {
            out.insert(path.clone(), f);
            if f.1 {
                model(&merged, &path, out);
            }
        }
    }
}

fn expect(layers: &[(usize, PathBuf)]) -> BTreeMap<String, (usize, bool)> {
    let mut out = BTreeMap::new();
    out.insert(String::new(), (layers[0].0, true));
    model(layers, "", &mut out);
    out
}

fn summary(seen: &BTreeMap<String, Seen>) -> BTreeMap<String, (usize, bool)> {
    seen.iter().map(|(p, s)| (p.clone(), (s.layer(), matches!(s, Seen::Dir(..))))).collect()
}

/// A unionmount mount, unmounted (lazily if need be) on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(opts: &std::ffi::OsStr, mnt: &Path) -> Mount {
        std::fs::create_dir_all(mnt).unwrap();
        let out = Command::new(bin()).arg("-o").arg(opts).arg(mnt).output().unwrap();
        assert!(out.status.success(), "unionmount could not mount: {}", String::from_utf8_lossy(&out.stderr));
        Mount(mnt.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn lowerdir(lowers: &[PathBuf]) -> std::ffi::OsString {
    let mut o = std::ffi::OsString::from("lowerdir=");
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            o.push(":");
        }
        o.push(l.as_os_str());
    }
    o
}

/// `which`'s label of layer `i` (0 = upper) in a stack with `lowers` lower layers.
fn label(i: usize, lowers: usize) -> String {
    if i == 0 { "upper".into() } else { format!("layer {}", lowers - i + 1) }
}

fn check(layers: &[LayerOps]) -> Result<(), TestCaseError> {
    let t = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (0..layers.len()).map(|i| t.path().join(format!("l{i}"))).collect();
    for (i, ops) in layers.iter().enumerate() {
        build_layer(&dirs[i], i, ops);
    }
    let (upper, lowers) = dirs.split_first().unwrap();
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut o = lowerdir(lowers);
    o.push(",upperdir=");
    o.push(upper);
    o.push(",workdir=");
    o.push(&work);
    let mnt = t.path().join("m");
    let _m = Mount::new(&o, &mnt);
    let lmnt = t.path().join("lowers");
    let _l = Mount::new(&lowerdir(lowers), &lmnt);
    let merged = observe(&mnt);
    let below = observe(&lmnt);
    // The mounts serve what the overlay rules say (an oracle independent of the code).
    let indexed: Vec<(usize, PathBuf)> = dirs.iter().cloned().enumerate().collect();
    prop_assert_eq!(summary(&merged), expect(&indexed), "the mount");
    prop_assert_eq!(summary(&below), expect(&indexed[1..]), "the mount of the lowers");

    // which, for the root and every path of the universe.
    let mut paths = vec![String::new()];
    paths.extend(universe().iter().map(|c| join(c)));
    for p in &paths {
        let out = Command::new(bin()).arg("which").arg("--json").arg(mnt.join(p)).output().unwrap();
        match merged.get(p) {
            None => prop_assert!(!out.status.success(), "/{p}: which finds what the mount does not show"),
            Some(seen) => {
                prop_assert!(out.status.success(), "/{p}: which misses {seen:?}: {}", String::from_utf8_lossy(&out.stderr));
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                prop_assert_eq!(v["type"].as_str(), Some(seen.type_name()), "/{}", p);
                let want = label(seen.layer(), lowers.len());
                prop_assert_eq!(v["provider"]["layer"].as_str(), Some(want.as_str()), "/{}: {}", p, v);
            }
        }
    }

    // diff of the mount against what its lowers alone show.
    let out = Command::new(bin()).arg("diff").arg("--json").arg(&mnt).output().unwrap();
    prop_assert!(out.status.success(), "diff failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut got: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for c in v.as_array().unwrap() {
        let path = c["path"].as_str().unwrap().trim_start_matches('/').to_string();
        got.entry(c["kind"].as_str().unwrap()).or_default().insert(path);
    }
    let is_dir = |m: &BTreeMap<String, Seen>, p: &str| matches!(m.get(p), Some(Seen::Dir(..)));
    let parent = |p: &str| p.rsplit_once('/').map_or(String::new(), |(d, _)| d.to_string());
    let added: BTreeSet<String> = merged.keys().filter(|p| !p.is_empty() && !below.contains_key(*p)).cloned().collect();
    let deleted: BTreeSet<String> = (below.keys())
        .filter(|p| !p.is_empty() && !merged.contains_key(*p))
        .filter(|p| is_dir(&merged, &parent(p)) && is_dir(&below, &parent(p)))
        .cloned()
        .collect();
    let empty = BTreeSet::new();
    prop_assert_eq!(got.get("A").unwrap_or(&empty), &added, "A: {}", v);
    prop_assert_eq!(got.get("D").unwrap_or(&empty), &deleted, "D: {}", v);
    let changed = got.get("C").unwrap_or(&empty);
    for p in changed {
        prop_assert!(merged.contains_key(p) && below.contains_key(p), "C /{} is not in both trees: {}", p, v);
    }
    for (p, m) in &merged {
        let differs = match (m, below.get(p)) {
            (Seen::Dir(_, a), Some(Seen::Dir(_, b))) => a != b,
            (m, Some(b)) => std::mem::discriminant(m) != std::mem::discriminant(b) || m != b,
            (_, None) => false,
        };
        if differs && !p.is_empty() {
            prop_assert!(changed.contains(p), "/{} differs ({:?} over {:?}) but is not C: {}", p, m, below.get(p), v);
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("UNIONMOUNT_AGREE_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24)
}

#[test]
fn which_and_diff_agree_with_the_mount() {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: needs root (char devices, trusted.* xattrs, mounting) and /dev/fuse");
        return;
    }
    let cfg = ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() };
    proptest!(cfg, |(layers in stack())| { check(&layers)?; });
}
