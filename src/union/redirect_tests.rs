//! Unit tests of directory renames with redirects (`overlay` rule 8), driven without
//! a mount: what is written into the upper layer, and what a later mount over the
//! same upper (a fresh `UnionFs`) shows.

use super::inode::ROOT_INO;
use super::namespace::NewKind;
use super::*;
use crate::layers::StackSpec;
use crate::overlay::WhiteoutForm;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

const CTX: Ctx = Ctx { uid: 0, gid: 0 };

struct Dirs {
    _t: tempfile::TempDir,
    l1: PathBuf,
    l2: PathBuf,
    up: PathBuf,
    work: PathBuf,
}

/// Two lowers (top: l1) and an empty upper.
fn dirs(build: impl FnOnce(&Path, &Path)) -> Dirs {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    let d = Dirs { l1: p("l1"), l2: p("l2"), up: p("u"), work: p("w"), _t: t };
    for x in [&d.l1, &d.l2, &d.up, &d.work] {
        fs::create_dir(x).unwrap();
    }
    build(&d.l1, &d.l2);
    d
}

fn mount(d: &Dirs, redirect_dir: bool, wh: WhiteoutForm) -> UnionFs {
    UnionFs::new(stack(d, wh), Config { redirect_dir, ..Config::default() }).unwrap()
}

fn stack(d: &Dirs, wh: WhiteoutForm) -> LayerStack {
    let spec = StackSpec {
        lowers: vec![d.l1.clone(), d.l2.clone()],
        upper: Some(d.up.clone()),
        work: Some(d.work.clone()),
        whiteout: Some(wh),
        lower_formats: vec![],
    };
    LayerStack::open(&spec).unwrap()
}

fn root() -> bool {
    crate::sys::euid() == 0
}

/// Every path below `ino` with its content (files) or `/` (dirs), sorted.
fn tree(f: &UnionFs, ino: u64) -> Vec<String> {
    fn walk(f: &UnionFs, ino: u64, pre: &str, out: &mut Vec<String>) {
        for e in f.list_dir(ino).unwrap().into_iter().skip(2) {
            let name = e.name.to_string_lossy().into_owned();
            let a = f.lookup(ino, &e.name).unwrap();
            let p = format!("{pre}/{name}");
            if a.st.is_dir() {
                out.push(format!("{p}/"));
                walk(f, a.ino, &p, out);
            } else {
                let (fh, _) = f.open(a.ino, libc::O_RDONLY).unwrap();
                let data = f.read(fh, 0, 4096).unwrap();
                f.release(fh);
                out.push(format!("{p}={}", String::from_utf8_lossy(&data)));
            }
        }
    }
    let mut out = Vec::new();
    walk(f, ino, "", &mut out);
    out.sort();
    out
}

fn ino(f: &UnionFs, path: &str) -> SysResult<u64> {
    let mut cur = ROOT_INO;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        cur = f.lookup(cur, c.as_ref())?.ino;
    }
    Ok(cur)
}

fn mv(f: &UnionFs, a: &str, b: &str, flags: u32) -> SysResult<()> {
    let split = |p: &str| -> (u64, String) {
        let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
        (ino(f, dir).unwrap(), name.to_string())
    };
    let ((pa, na), (pb, nb)) = (split(a), split(b));
    f.rename(pa, na.as_ref(), pb, nb.as_ref(), flags)
}

fn redirect(up: &Path, rel: &str) -> Option<String> {
    ::xattr::get(up.join(rel), overlay::REDIRECT_XATTR_TRUSTED).unwrap().map(|v| String::from_utf8(v).unwrap())
}

fn is_whiteout(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
}

/// A lower tree worth not copying, a merged directory, and things to land on.
fn layers(l1: &Path, l2: &Path) {
    for i in 0..50 {
        fs::create_dir_all(l2.join("big/sub")).unwrap();
        fs::write(l2.join(format!("big/f{i}")), format!("{i}")).unwrap();
    }
    fs::write(l2.join("big/sub/deep"), "deep").unwrap();
    fs::write(l2.join("big/h1"), "linked").unwrap();
    fs::hard_link(l2.join("big/h1"), l2.join("big/h2")).unwrap();
    fs::create_dir_all(l2.join("m")).unwrap();
    fs::write(l2.join("m/x"), "x").unwrap();
    fs::create_dir_all(l1.join("m")).unwrap();
    fs::write(l1.join("m/y"), "y").unwrap();
    fs::create_dir_all(l1.join("empty")).unwrap();
    fs::create_dir_all(l1.join("other/inner")).unwrap();
    fs::write(l1.join("other/inner/i"), "i").unwrap();
}

#[test]
fn rename_writes_a_redirect_not_a_copy() {
    if !root() {
        eprintln!("skipped: trusted.* xattrs and char 0/0 whiteouts need root");
        return;
    }
    let d = dirs(layers);
    let f = mount(&d, true, WhiteoutForm::CharDev);
    let before = tree(&f, ino(&f, "big").unwrap());
    mv(&f, "big", "big2", 0).unwrap();
    assert_eq!(redirect(&d.up, "big2").as_deref(), Some("big"), "within one directory: the old name");
    assert!(is_whiteout(&d.up.join("big")));
    assert_eq!(fs::read_dir(d.up.join("big2")).unwrap().count(), 0, "nothing copied");
    assert_eq!(f.lookup(ROOT_INO, "big".as_ref()).err(), Some(Errno::ENOENT));
    assert_eq!(tree(&f, ino(&f, "big2").unwrap()), before);
    // Across directories: the absolute path of the origin, through the parent's redirect.
    f.create(&CTX, ROOT_INO, "n".as_ref(), NewKind::Dir { mode: 0o755 }).unwrap();
    mv(&f, "big2/sub", "n/s", 0).unwrap();
    assert_eq!(redirect(&d.up, "n/s").as_deref(), Some("/big/sub"));
    mv(&f, "big2", "n/c", 0).unwrap();
    assert_eq!(redirect(&d.up, "n/c").as_deref(), Some("/big"));
    // Renamed again within its directory, and back: the absolute redirect stays.
    mv(&f, "n/c", "n/c2", 0).unwrap();
    assert_eq!(redirect(&d.up, "n/c2").as_deref(), Some("/big"));
    mv(&f, "n/c2", "big", 0).unwrap();
    assert_eq!(redirect(&d.up, "big").as_deref(), Some("/big"));
    let mut want: Vec<String> = before.iter().filter(|p| !p.starts_with("/sub")).cloned().collect();
    want.sort();
    assert_eq!(tree(&f, ino(&f, "big").unwrap()), want);
    assert_eq!(tree(&f, ino(&f, "n/s").unwrap()), ["/deep=deep"]);
    let whole = tree(&f, ROOT_INO);
    drop(f);
    // A later mount over the same upper shows the same tree.
    let g = mount(&d, true, WhiteoutForm::CharDev);
    assert_eq!(tree(&g, ROOT_INO), whole);
}

#[test]
fn merged_dir_with_upper_children_exchange_noreplace_and_links() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = dirs(layers);
    let f = mount(&d, true, WhiteoutForm::CharDev);
    let m = ino(&f, "m").unwrap();
    f.create(&CTX, m, "u".as_ref(), NewKind::File { mode: 0o644, flags: libc::O_RDWR }).unwrap();
    mv(&f, "m", "m2", 0).unwrap();
    assert_eq!(tree(&f, ino(&f, "m2").unwrap()), ["/u=", "/x=x", "/y=y"]);
    assert_eq!(mv(&f, "m2", "other", libc::RENAME_NOREPLACE), Err(Errno::EEXIST));
    assert_eq!(mv(&f, "m2", "other", 0), Err(Errno::ENOTEMPTY));
    mv(&f, "m2", "other", libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(redirect(&d.up, "other").as_deref(), Some("m"), "kept: within one directory");
    assert_eq!(redirect(&d.up, "m2").as_deref(), Some("other"));
    assert_eq!(tree(&f, ino(&f, "other").unwrap()), ["/u=", "/x=x", "/y=y"]);
    assert_eq!(tree(&f, ino(&f, "m2").unwrap()), ["/inner/", "/inner/i=i"]);
    // A moved dir landing on a name a lower has (an empty dir) does not merge with it.
    mv(&f, "big", "empty", 0).unwrap();
    assert!(tree(&f, ino(&f, "empty").unwrap()).contains(&"/sub/deep=deep".to_string()));
    // Hard links inside a redirected directory stay one file.
    let h1 = ino(&f, "empty/h1").unwrap();
    f.create(&CTX, ROOT_INO, "h3".as_ref(), NewKind::Link { node: f.node(h1).unwrap() }).unwrap();
    let (fh, _) = f.open(ino(&f, "h3").unwrap(), libc::O_WRONLY).unwrap();
    f.write(fh, 0, b"LINKED").unwrap();
    f.release(fh);
    assert_eq!(fs::read(d.up.join("empty/h1")).unwrap(), b"LINKED");
    let whole = tree(&f, ROOT_INO);
    drop(f);
    assert_eq!(tree(&mount(&d, true, WhiteoutForm::CharDev), ROOT_INO), whole);
}

#[test]
fn rmdir_of_a_redirected_dir_leaves_whiteouts() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = dirs(layers);
    let f = mount(&d, true, WhiteoutForm::CharDev);
    mv(&f, "other/inner", "in2", 0).unwrap();
    assert_eq!(redirect(&d.up, "in2").as_deref(), Some("/other/inner"));
    assert_eq!(f.remove(ROOT_INO, "in2".as_ref(), true), Err(Errno::ENOTEMPTY));
    f.remove(ino(&f, "in2").unwrap(), "i".as_ref(), false).unwrap();
    f.remove(ROOT_INO, "in2".as_ref(), true).unwrap();
    assert!(!d.up.join("in2").exists() || is_whiteout(&d.up.join("in2")));
    // Onto a lower name, then removed: the lower one must stay hidden.
    mv(&f, "m", "empty", 0).unwrap();
    for n in ["x", "y"] {
        f.remove(ino(&f, "empty").unwrap(), n.as_ref(), false).unwrap();
    }
    f.remove(ROOT_INO, "empty".as_ref(), true).unwrap();
    assert!(is_whiteout(&d.up.join("empty")));
    let whole = tree(&f, ROOT_INO);
    assert!(!whole.iter().any(|p| p.starts_with("/empty") || p.starts_with("/in2") || p.starts_with("/m/")), "{whole:?}");
    drop(f);
    assert_eq!(tree(&mount(&d, true, WhiteoutForm::CharDev), ROOT_INO), whole);
}

#[test]
fn redirect_dir_off_copies_the_tree() {
    let d = dirs(layers);
    let f = mount(&d, false, WhiteoutForm::WhFile);
    let before = tree(&f, ino(&f, "big").unwrap());
    mv(&f, "big", "big2", 0).unwrap();
    assert!(d.up.join("big2/f7").is_file(), "copied up");
    assert_eq!(::xattr::list(d.up.join("big2")).unwrap().filter(|n| n.to_string_lossy().contains("redirect")).count(), 0);
    assert_eq!(tree(&f, ino(&f, "big2").unwrap()), before);
}

#[test]
fn rootless_form_writes_user_redirect() {
    // As an unprivileged mount writes: `.wh.` whiteouts and user.* xattrs (what
    // `LayerStack::open` picks where trusted.* cannot be set).
    let d = dirs(layers);
    let mut st = stack(&d, WhiteoutForm::WhFile);
    let up = st.upper.as_mut().unwrap();
    (up.opaque_xattr, up.redirect_xattr) = (overlay::OPAQUE_XATTR_USER, overlay::REDIRECT_XATTR_USER);
    let f = UnionFs::new(st, Config::default()).unwrap();
    let before = tree(&f, ino(&f, "big").unwrap());
    mv(&f, "big", "big2", 0).unwrap();
    assert!(d.up.join(".wh.big").is_file());
    assert_eq!(::xattr::get(d.up.join("big2"), overlay::REDIRECT_XATTR_USER).unwrap().as_deref(), Some(&b"big"[..]));
    assert_eq!(tree(&f, ino(&f, "big2").unwrap()), before);
    drop(f);
    let g = mount(&d, true, WhiteoutForm::WhFile);
    assert_eq!(tree(&g, ino(&g, "big2").unwrap()), before);
    assert_eq!(g.lookup(ROOT_INO, "big".as_ref()).err(), Some(Errno::ENOENT));
}

#[test]
fn redirects_in_layers_are_untrusted() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let build = |l1: &Path, l2: &Path| {
        fs::create_dir_all(l2.join("target")).unwrap();
        fs::write(l2.join("target/t"), "t").unwrap();
        fs::create_dir_all(l2.join("plain")).unwrap();
        fs::write(l2.join("plain/p"), "p").unwrap();
        fs::create_dir_all(l2.join("via")).unwrap();
        std::os::unix::fs::symlink("/etc", l2.join("via/link")).unwrap();
        for (n, v) in [("plain", &b"../../etc"[..]), ("abs", b"/target"), ("sym", b"/via/link"), ("nul", b"tar\0get")] {
            fs::create_dir_all(l1.join(n)).unwrap();
            ::xattr::set(l1.join(n), overlay::REDIRECT_XATTR_TRUSTED, v).unwrap();
        }
    };
    let d = dirs(build);
    let f = mount(&d, true, WhiteoutForm::CharDev);
    // A bad redirect is ignored: the dir merges by its own name.
    assert_eq!(tree(&f, ino(&f, "plain").unwrap()), ["/p=p"]);
    // A lower layer's absolute redirect (a kernel upper used as a lower) is followed.
    assert_eq!(tree(&f, ino(&f, "abs").unwrap()), ["/t=t"]);
    // A symlink on the way is never followed; NUL is refused.
    assert!(tree(&f, ino(&f, "sym").unwrap()).is_empty());
    assert!(tree(&f, ino(&f, "nul").unwrap()).is_empty());
}
