//! Hostile or odd layer content: symlinks that point out of the layers (absolute, and
//! `../..` chains that escape a layer physically but not through the mount), a lower
//! directory swapped for such a symlink while mounted, 255-byte and non-UTF-8 names, and
//! `.wh.`-looking names created by a user. The daemon must never read or write outside the
//! layers, and names must survive a remount with their meaning.

mod common;

use common::fsops::{self as fs, Transcript};
use common::layer_spec::{Format, LayerDirs, LayerSet};
use common::overlay_harness::{Mounted, Pair, Single, should_skip};
use common::tree;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Layout: TMP/outside (the host data to protect), TMP/f/lower0 (the layer) and the mount
/// at TMP/m/a/b/mnt, deeper than the layer, so `../../outside` seen from the layer
/// reaches TMP/outside but seen from the mount goes nowhere.
struct Escape {
    tmp: tempfile::TempDir,
    outside: PathBuf,
    dirs: LayerDirs,
}

fn escape_setup(layer: &str) -> Escape {
    let tmp = tempfile::Builder::new().prefix("umhostile").tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("secret"), "SECRET").unwrap();
    fs::chmod(&outside.join("secret"), 0o644).unwrap();
    let mut dirs = LayerSet::new(&[layer], "").build(&tmp.path().join("f"), &[], Format::Overlay);
    dirs.mnt = tmp.path().join("m/a/b/mnt");
    std::fs::create_dir_all(&dirs.mnt).unwrap();
    Escape { tmp, outside, dirs }
}

/// The protected tree's snapshot plus the (mtime, ctime) of its three original entries.
type OutsideState = (tree::Snapshot, Vec<(i64, i64, i64, i64)>);

fn outside_state(outside: &Path) -> OutsideState {
    let snap = tree::snapshot(outside);
    let times = ["", "secret", "sub"]
        .iter()
        .map(|p| fs::lstat(&outside.join(p)).map(|s| (s.st_mtime, s.st_mtime_nsec, s.st_ctime, s.st_ctime_nsec)).unwrap())
        .collect();
    (snap, times)
}

fn assert_outside_unchanged(outside: &Path, before: &OutsideState, transcript: &str) {
    let after = outside_state(outside);
    if let Some(d) = tree::diff("before", &before.0, "after", &after.0) {
        panic!("the daemon changed files outside the layers:\n{d}\noperations:\n{transcript}");
    }
    assert_eq!(before.1, after.1, "times of files outside the layers changed; operations:\n{transcript}");
}

#[test]
fn layer_symlinks_pointing_outside_are_never_followed_by_the_daemon() {
    if should_skip("hostile_symlinks") {
        return;
    }
    let e = escape_setup("d d\nf d/file inside\nl esc ../../outside\nl escdir ../../outside/sub\n");
    // Absolute symlinks into the protected tree, added now that its path is known.
    let lower = &e.dirs.lowers[0];
    fs::symlink(&e.outside.join("secret"), &lower.join("abs")).unwrap();
    fs::symlink(&e.outside, &lower.join("absdir")).unwrap();
    let before = outside_state(&e.outside);
    let mut m = Mounted::fuse(&e.dirs, "").unwrap();
    let r = &m.mnt;
    let mut t = Transcript::default();
    // Through the mount the caller resolves `../../outside` from the mount: nowhere.
    t.rec("cat esc/secret", fs::cat(&r.join("esc/secret")));
    t.rec("list escdir", fs::list_names(&r.join("escdir")));
    t.rec("readlink esc", fs::readlink(&r.join("esc")));
    // Operations the daemon performs on the symlink itself (copy-up, whiteout, link).
    for p in ["abs", "esc", "absdir"] {
        t.rec(&format!("lchown {p}"), fs::lchown(&r.join(p), 7, 7));
        t.rec(&format!("utimens {p}"), fs::utimens(&r.join(p), (5, 0), (5, 0)));
        t.rec(&format!("set trusted xattr {p}"), fs::lsetxattr(&r.join(p), "trusted.x", b"x", 0));
    }
    t.rec("link abs", fs::link(&r.join("abs"), &r.join("abs-link")));
    t.rec("rename esc", fs::rename2(&r.join("esc"), &r.join("esc2"), 0));
    t.rec("unlink absdir", fs::unlink(&r.join("absdir")));
    t.rec("readlink abs", fs::readlink(&r.join("abs")));
    let text = t.0.join("\n");
    assert!(!text.contains("SECRET"), "the daemon read outside the layers:\n{text}");
    assert_outside_unchanged(&e.outside, &before, &text);
    m.unmount().unwrap();
    drop(e.tmp);
}

#[test]
fn lower_dir_swapped_for_escaping_symlink_while_mounted() {
    if should_skip("swapped_dir") {
        return;
    }
    let e = escape_setup("d d\nf d/file inside\nf d/secret not-secret\n");
    let before = outside_state(&e.outside);
    let mut m = Mounted::fuse(&e.dirs, "").unwrap();
    let r = m.mnt.clone();
    // Make the daemon know d as a directory, and keep it referenced.
    assert_eq!(fs::cat(&r.join("d/file")).unwrap(), "inside");
    let held = fs::open(&r.join("d"), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    let lower = &e.dirs.lowers[0];
    std::fs::rename(lower.join("d"), lower.join("d.orig")).unwrap();
    fs::symlink(Path::new("../../outside"), &lower.join("d")).unwrap();
    let mut t = Transcript::default();
    t.rec("cat d/secret", fs::cat(&r.join("d/secret")));
    t.rec("list d", fs::list_names(&r.join("d")));
    t.rec("create d/new", fs::write_file(&r.join("d/new"), libc::O_CREAT, b"planted"));
    t.rec("mkdir d/newdir", fs::mkdir(&r.join("d/newdir"), 0o755));
    t.rec("chmod d/secret", fs::chmod(&r.join("d/secret"), 0o777));
    t.rec("truncate d/secret", fs::truncate(&r.join("d/secret"), 0));
    t.rec("append d/secret", fs::write_file(&r.join("d/secret"), libc::O_APPEND, b"x"));
    t.rec("unlink d/secret", fs::unlink(&r.join("d/secret")));
    t.rec("rename d/file", fs::rename2(&r.join("d/file"), &r.join("d/file2"), 0));
    t.rec("cat d/sub/../secret", fs::cat(&r.join("d/sub/../secret")));
    drop(held);
    let text = t.0.join("\n");
    assert!(!text.contains("SECRET"), "the daemon read outside the layers:\n{text}");
    assert_outside_unchanged(&e.outside, &before, &text);
    m.unmount().unwrap();
}

fn name(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// 255-byte and non-UTF-8 names behave as on kernel overlayfs (whiteouts for 255-byte
/// names cannot be `.wh.` files: they would exceed NAME_MAX).
#[test]
fn long_and_non_utf8_names_match_kernel() {
    if should_skip("odd_names") {
        return;
    }
    let long_a = "a".repeat(255);
    let long_b = "b".repeat(255);
    let spec = format!("f {long_a} lower-long\nd dir\nf dir/{long_b} deep-long\n");
    let mut p = Pair::new(&LayerSet::new(&[&spec], ""));
    let (la, lb) = (long_a.clone(), long_b.clone());
    p.run(move |r, _, t| {
        let c = "c".repeat(255);
        t.rec("cat long", fs::cat(&r.join(&la)));
        t.rec("unlink long lower", fs::unlink(&r.join(&la)));
        t.rec("create long", fs::write_file(&r.join(&c), libc::O_CREAT, b"c"));
        t.rec("create 256 bytes", fs::write_file(&r.join("d".repeat(256)), libc::O_CREAT, b"d"));
        t.rec("rename long over long lower", fs::rename2(&r.join(&c), &r.join("dir").join(&lb), 0));
        t.rec("list dir", fs::list_names(&r.join("dir")).map(|v| v.iter().map(|n| n.len()).collect::<Vec<_>>()));
        let odd = r.join(name(b"caf\xe9-\xff\xfe"));
        t.rec("create non-UTF-8", fs::write_file(&odd, libc::O_CREAT, b"latin1"));
        t.rec("cat non-UTF-8", fs::cat(&odd));
        t.rec("rename non-UTF-8", fs::rename2(&odd, &r.join("dir").join(name(b"\x80\x81")), 0));
        t.rec("mkdir non-UTF-8", fs::mkdir(&r.join(name(b"d\xc3(")), 0o755));
        let raw = fs::read_dir_raw(r).map(|v| {
            let mut names: Vec<Vec<u8>> = v.into_iter().map(|e| e.name).collect();
            names.sort();
            names
        });
        t.rec("raw root names", raw);
    });
    p.finish(true);
}

/// A user may create names starting with `.wh.`; a later mount must not take them for
/// whiteouts or opaque markers (overlayfs stores them as plain files; escaping or refusing
/// them is also acceptable).
#[test]
fn user_created_wh_names_are_not_whiteouts_after_remount() {
    if should_skip("wh_names") {
        return;
    }
    let set = LayerSet::new(&["f foo lower-foo\nd dir\nf dir/x x\n"], "");
    let mut s = Single::new(&set, &[], Format::Overlay, "");
    let r = s.mount.mnt.clone();
    let made_wh = fs::write_file(&r.join(".wh.foo"), libc::O_CREAT, b"user data");
    let made_opq = fs::write_file(&r.join("dir/.wh..wh..opq"), libc::O_CREAT, b"");
    eprintln!("create .wh.foo: {made_wh:?}; create dir/.wh..wh..opq: {made_opq:?}");
    s.mount.unmount().unwrap();
    let mut m = Mounted::fuse(&s.dirs, "").unwrap();
    assert_eq!(fs::cat(&m.mnt.join("foo")).as_deref(), Ok("lower-foo"), "foo hidden by a user's .wh.foo");
    assert!(fs::list_names(&m.mnt.join("dir")).unwrap().contains(&"x".to_string()), "dir made opaque by a user's file");
    if made_wh.is_ok() {
        assert_eq!(fs::cat(&m.mnt.join(".wh.foo")).as_deref(), Ok("user data"), "the user's .wh.foo was lost");
    }
    m.unmount().unwrap();
}
