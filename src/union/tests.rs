//! Unit tests of the union logic, driven without a mount.

use super::namespace::NewKind;
use super::inode::ROOT_INO;
use super::*;
use crate::layers::StackSpec;
use crate::overlay::{WhiteoutForm, WhiteoutFormat};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

struct Fixture {
    _dir: tempfile::TempDir,
    fs: UnionFs,
    upper: std::path::PathBuf,
}

const CTX: Ctx = Ctx { uid: 0, gid: 0 };

/// Two lowers (top: l1) and an upper, in the given whiteout format.
fn fixture(build: impl FnOnce(&Path, &Path), wh: WhiteoutForm) -> Fixture {
    fixture_declared(build, wh, vec![])
}

/// `fixture`, with the lowers' declared whiteout formats (top first).
fn fixture_declared(build: impl FnOnce(&Path, &Path), wh: WhiteoutForm, lower_formats: Vec<WhiteoutFormat>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (l1, l2, up, work) = (dir.path().join("l1"), dir.path().join("l2"), dir.path().join("u"), dir.path().join("w"));
    for d in [&l1, &l2, &up, &work] {
        fs::create_dir(d).unwrap();
    }
    build(&l1, &l2);
    let spec = StackSpec {
        lowers: vec![l1, l2],
        upper: Some(up.clone()),
        work: Some(work),
        whiteout: Some(wh),
        lower_formats,
    };
    let stack = LayerStack::open(&spec).unwrap();
    Fixture { fs: UnionFs::new(stack, Config::default()).unwrap(), _dir: dir, upper: up }
}

fn names(f: &Fixture, ino: u64) -> Vec<String> {
    let mut v: Vec<String> =
        f.fs.list_dir(ino).unwrap().into_iter().map(|e| e.name.to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn basic(l1: &Path, l2: &Path) {
    fs::write(l2.join("a"), "low").unwrap();
    fs::write(l2.join("b"), "bee").unwrap();
    fs::write(l1.join("a"), "top").unwrap();
    fs::create_dir(l2.join("d")).unwrap();
    fs::write(l2.join("d/x"), "x").unwrap();
    fs::create_dir(l1.join("d")).unwrap();
    fs::write(l1.join("d/y"), "y").unwrap();
    // .wh. format whiteout and opaque dir in the top lower layer
    fs::write(l2.join("gone"), "hidden").unwrap();
    fs::write(l1.join(".wh.gone"), "").unwrap();
    fs::create_dir(l2.join("o")).unwrap();
    fs::write(l2.join("o/old"), "").unwrap();
    fs::create_dir(l1.join("o")).unwrap();
    fs::write(l1.join("o/.wh..wh..opq"), "").unwrap();
    fs::write(l1.join("o/new"), "").unwrap();
}

#[test]
fn lookup_and_merge_follow_overlay_rules() {
    let f = fixture(basic, WhiteoutForm::CharDev);
    assert_eq!(names(&f, ROOT_INO), [".", "..", "a", "b", "d", "o"]);
    assert_eq!(f.fs.lookup(ROOT_INO, "gone".as_ref()).err(), Some(Errno::ENOENT));
    assert_eq!(f.fs.lookup(ROOT_INO, ".wh.gone".as_ref()).err(), Some(Errno::ENOENT));
    let d = f.fs.lookup(ROOT_INO, "d".as_ref()).unwrap();
    assert_eq!(names(&f, d.ino), [".", "..", "x", "y"]);
    assert_eq!(d.st.nlink(), 1, "merged dirs report nlink 1");
    let o = f.fs.lookup(ROOT_INO, "o".as_ref()).unwrap();
    assert_eq!(names(&f, o.ino), [".", "..", "new"]);
    // d_ino equals st_ino
    let a = f.fs.lookup(ROOT_INO, "a".as_ref()).unwrap();
    let listed = f.fs.list_dir(ROOT_INO).unwrap().into_iter().find(|e| e.name == "a").unwrap();
    assert_eq!(listed.ino, a.ino);
}

#[test]
fn copy_up_keeps_inode_and_content() {
    let f = fixture(basic, WhiteoutForm::CharDev);
    let b = f.fs.lookup(ROOT_INO, "b".as_ref()).unwrap();
    let (fh, _) = f.fs.open(b.ino, libc::O_WRONLY | libc::O_APPEND).unwrap();
    f.fs.write(fh, 3, b"!").unwrap();
    f.fs.release(fh);
    assert_eq!(fs::read_to_string(f.upper.join("b")).unwrap(), "bee!");
    assert_eq!(f.fs.getattr(b.ino, None).unwrap().ino, b.ino);
    let again = f.fs.lookup(ROOT_INO, "b".as_ref()).unwrap();
    assert_eq!(again.ino, b.ino, "st_ino survives copy-up");
}

#[test]
fn unlink_leaves_whiteout_in_each_format() {
    for wh in [WhiteoutForm::CharDev, WhiteoutForm::WhFile] {
        let f = fixture(basic, wh);
        f.fs.remove(ROOT_INO, "b".as_ref(), false).unwrap();
        assert_eq!(f.fs.lookup(ROOT_INO, "b".as_ref()).err(), Some(Errno::ENOENT));
        match wh {
            WhiteoutForm::CharDev => {
                let m = fs::symlink_metadata(f.upper.join("b")).unwrap();
                assert!(m.file_type().is_char_device() && m.rdev() == 0);
            }
            WhiteoutForm::WhFile => assert!(f.upper.join(".wh.b").exists()),
        }
        // Re-creating replaces the whiteout; a directory made there is opaque.
        let (a, _) = f.fs.create(&CTX, ROOT_INO, "b".as_ref(), NewKind::Dir { mode: 0o755 }).unwrap();
        assert_eq!(names(&f, a.attr.ino), [".", ".."]);
        assert!(!f.upper.join(".wh.b").exists());
    }
}

#[test]
fn rmdir_counts_whiteouts_as_empty() {
    let f = fixture(basic, WhiteoutForm::CharDev);
    let d = f.fs.lookup(ROOT_INO, "d".as_ref()).unwrap();
    assert_eq!(f.fs.remove(ROOT_INO, "d".as_ref(), true).err(), Some(Errno::ENOTEMPTY));
    f.fs.remove(d.ino, "x".as_ref(), false).unwrap();
    f.fs.remove(d.ino, "y".as_ref(), false).unwrap();
    f.fs.remove(ROOT_INO, "d".as_ref(), true).unwrap();
    assert_eq!(f.fs.lookup(ROOT_INO, "d".as_ref()).err(), Some(Errno::ENOENT));
}

#[test]
fn rename_of_lower_directory_works() {
    let f = fixture(basic, WhiteoutForm::CharDev);
    f.fs.rename(ROOT_INO, "d".as_ref(), ROOT_INO, "moved".as_ref(), 0).unwrap();
    assert_eq!(f.fs.lookup(ROOT_INO, "d".as_ref()).err(), Some(Errno::ENOENT));
    let m = f.fs.lookup(ROOT_INO, "moved".as_ref()).unwrap();
    assert_eq!(names(&f, m.ino), [".", "..", "x", "y"]);
    // A redirect, not a copy (see redirect_tests.rs).
    assert!(!f.upper.join("moved/x").exists());
}

#[test]
fn rename_flags() {
    let f = fixture(basic, WhiteoutForm::CharDev);
    let noreplace = libc::RENAME_NOREPLACE;
    assert_eq!(f.fs.rename(ROOT_INO, "a".as_ref(), ROOT_INO, "b".as_ref(), noreplace).err(), Some(Errno::EEXIST));
    f.fs.rename(ROOT_INO, "a".as_ref(), ROOT_INO, "b".as_ref(), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read_to_string(f.upper.join("a")).unwrap(), "bee");
    assert_eq!(fs::read_to_string(f.upper.join("b")).unwrap(), "top");
    assert_eq!(f.fs.rename(ROOT_INO, "a".as_ref(), ROOT_INO, "nope".as_ref(), libc::RENAME_EXCHANGE).err(), Some(Errno::ENOENT));
}

#[test]
fn wh_names_are_refused_and_private_xattrs_hidden() {
    let f = fixture(basic, WhiteoutForm::CharDev);
    let r = f.fs.create(&CTX, ROOT_INO, ".wh.x".as_ref(), NewKind::File { mode: 0o644, flags: libc::O_RDWR });
    assert_eq!(r.err(), Some(Errno::EINVAL));
    assert_eq!(f.fs.setxattr(ROOT_INO, "trusted.overlay.opaque".as_ref(), b"y", 0).err(), Some(Errno::EPERM));
    let d = f.fs.lookup(ROOT_INO, "d".as_ref()).unwrap();
    f.fs.rename(ROOT_INO, "d".as_ref(), ROOT_INO, "d2".as_ref(), 0).unwrap();
    // The moved directory is opaque in upper, but the xattr is invisible.
    let list = f.fs.listxattr(d.ino).unwrap();
    assert!(!String::from_utf8_lossy(&list).contains("overlay"), "{list:?}");
    assert_eq!(f.fs.getxattr(d.ino, "trusted.overlay.opaque".as_ref()).err(), Some(Errno::ENODATA));
}

#[test]
fn forget_drops_nodes_but_keeps_parents_of_live_children() {
    let f = fixture(basic, WhiteoutForm::CharDev);
    let base = f.fs.node_count();
    let d = f.fs.lookup(ROOT_INO, "d".as_ref()).unwrap();
    let x = f.fs.lookup(d.ino, "x".as_ref()).unwrap();
    assert_eq!(f.fs.node_count(), base + 2);
    f.fs.forget(d.ino, 1);
    assert_eq!(f.fs.node_count(), base + 2, "child pins its parent");
    f.fs.forget(x.ino, 1);
    assert_eq!(f.fs.node_count(), base);
}

/// OCI: a whiteout applies to the layers below only, so a directory beside its own
/// `.wh.` marker stays while its namesakes below are deleted: it is opaque.
#[test]
fn directory_beside_its_own_marker_is_opaque() {
    let build = |l1: &Path, l2: &Path| {
        fs::create_dir_all(l2.join("d/sub")).unwrap();
        fs::write(l2.join("d/x"), "lower").unwrap();
        fs::create_dir(l1.join("d")).unwrap();
        fs::write(l1.join("d/y"), "top").unwrap();
        fs::write(l1.join(".wh.d"), "").unwrap();
        // The same beside a file: the file simply stays.
        fs::write(l2.join("f"), "lower").unwrap();
        fs::write(l1.join("f"), "top").unwrap();
        fs::write(l1.join(".wh.f"), "").unwrap();
    };
    let f = fixture(build, WhiteoutForm::CharDev);
    assert_eq!(names(&f, ROOT_INO), [".", "..", "d", "f"]);
    let d = f.fs.lookup(ROOT_INO, "d".as_ref()).unwrap();
    assert_eq!(names(&f, d.ino), [".", "..", "y"]);
    assert_eq!(f.fs.lookup(d.ino, "x".as_ref()).err(), Some(Errno::ENOENT));
    assert_eq!(d.st.nlink(), 2, "not a merged directory");
    let fl = f.fs.lookup(ROOT_INO, "f".as_ref()).unwrap();
    assert_eq!(fl.st.size(), 3);
}

/// A layer declared to hold char-device whiteouts only reads no `.wh.` markers:
/// they delete nothing there, and are still never shown.
#[test]
fn markers_mean_nothing_in_layers_declared_char_device() {
    let f = fixture_declared(basic, WhiteoutForm::CharDev, vec![WhiteoutFormat::CharDevice, WhiteoutFormat::Either]);
    assert_eq!(names(&f, ROOT_INO), [".", "..", "a", "b", "d", "gone", "o"]);
    assert!(f.fs.lookup(ROOT_INO, "gone".as_ref()).is_ok());
    assert_eq!(f.fs.lookup(ROOT_INO, ".wh.gone".as_ref()).err(), Some(Errno::ENOENT));
    let o = f.fs.lookup(ROOT_INO, "o".as_ref()).unwrap();
    assert_eq!(names(&f, o.ino), [".", "..", "new", "old"]);
}
