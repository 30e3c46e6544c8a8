//! `diff`, `commit` and `which` on a live unionmount, found through its mount
//! record: mount base layers with the unionmount binary, change files through
//! it, then inspect it by mountpoint alone and compare base + committed layer
//! (under kernel overlayfs) with the mounted tree.
//!
//! The changes are the kernel-overlay test's script, except hard-linking a lower
//! file: unionmount gives every lower hard link of a file one inode, so after the
//! copy-up the other lower names serve the upper copy until remount, unlike
//! kernel overlayfs (index=off); that is the union core's to fix, not inspect's.
//!
//! Needs root and /dev/fuse; skips, saying why, otherwise. It fails (rather than
//! skips) when the unionmount binary cannot mount: that is what it checks.

mod common;
mod inspect_support;

use inspect_support::*;
use std::path::Path;
use std::process::Command;

#[test]
fn inspect_a_live_unionmount_by_its_mountpoint() {
    inspect_live_mount(None);
}

/// The same with `.wh.NAME` whiteouts and `.wh..wh..opq` markers in upper, as a
/// rootless mount writes them.
#[test]
fn inspect_a_live_unionmount_writing_whfile_whiteouts() {
    inspect_live_mount(Some("whfile"));
}

fn inspect_live_mount(whiteout: Option<&str>) {
    if !is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: needs root and /dev/fuse");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let (bot, top) = base_layers(r);
    let (upper, work, mnt) = (r.join("upper"), r.join("work"), r.join("mnt"));
    for d in [&upper, &work, &mnt] {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut o = std::ffi::OsString::from("lowerdir=");
    o.push(top.as_os_str());
    o.push(":");
    o.push(bot.as_os_str());
    o.push(",upperdir=");
    o.push(upper.as_os_str());
    o.push(",workdir=");
    o.push(work.as_os_str());
    if let Some(w) = whiteout {
        o.push(format!(",whiteout={w}"));
    }
    let out = Command::new(bin()).arg("-o").arg(&o).arg(&mnt).output().unwrap();
    assert!(
        out.status.success(),
        "unionmount could not mount (needed for this test): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let _m = Mounted::adopt(&mnt);
    scripted_changes(&mnt, false);
    if whiteout == Some("whfile") {
        assert!(upper.join("etc/.wh.hosts").exists(), "the mount wrote whfile whiteouts");
    }

    // diff by mountpoint: the record supplies upper and lowers.
    let out = run(Command::new(bin()).arg("diff").arg(&mnt));
    assert_eq!(String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&expected_diff(false)));

    // which: upper, lowers, whiteouts in upper and in a lower, a merged dir,
    // a symlink (not followed), the mountpoint itself.
    let which = |p: &str| {
        let o = Command::new(bin()).arg("which").arg(mnt.join(p)).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let check = |p: &str, ok: bool, want: &[&str], not: &[&str]| {
        let (s, text) = which(p);
        assert_eq!(s, ok, "{p}: {text}");
        for w in want {
            assert!(text.contains(w), "{p}: want {w:?} in\n{text}");
        }
        for n in not {
            assert!(!text.contains(n), "{p}: unwanted {n:?} in\n{text}");
        }
    };
    check("etc/passwd", true, &["type      file", "provider  upper", "hides     layer 1 "], &["layer 2"]);
    check("usr/lib/libx.so.1", true, &["provider  layer 1 "], &["hides"]);
    check("etc/hosts", false, &["deleted   by a whiteout in upper", "hides     layer 2 ", "hides     layer 1 "], &[]);
    check("var/log/old.log", false, &["deleted   by a whiteout in layer 2 ", "hides     layer 1 "], &[]);
    check("etc", true, &["type      directory", "provider  upper", "merges    layer 2 ", "merges    layer 1 "], &[]);
    check("opt/moved/new", true, &["provider  upper"], &["hides"]);
    check("srv/current", true, &["type      symlink", "provider  upper"], &[]);
    check("", true, &["provider  upper", "merges    layer 1 "], &[]);
    let o = Command::new(bin()).arg("which").arg("--json").arg(mnt.join("etc/hosts")).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["deleted_by"]["layer"], "upper");
    assert_eq!(v["hides"].as_array().unwrap().len(), 2);
    let o = Command::new(bin()).arg("which").arg(r.join("l1/etc")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not inside a unionmount"));

    // commit by mountpoint; base + layer under kernel overlay equals the mount.
    let layer = r.join("layer.tar");
    let out = run(Command::new(bin()).arg("commit").arg(&mnt).arg("--output").arg(&layer));
    assert_eq!(field(&String::from_utf8_lossy(&out.stdout), "diff_id"), sha256_file(&layer));
    let x = r.join("x");
    std::fs::create_dir_all(&x).unwrap();
    apply_tar(std::fs::File::open(&layer).unwrap(), &x, true);
    let m2 = r.join("m2");
    let _m2 = overlay(&[&x, &top, &bot], None, &m2).expect("kernel overlay for the comparison");
    assert_same_tree(&snapshot(&mnt), &snapshot(&m2));
}
