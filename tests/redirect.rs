//! Directory renames with redirects (`redirect_dir=on`, unionmount's default), against
//! kernel overlayfs mounted with `redirect_dir=on`: the same operations give the same
//! results, trees and redirect xattrs on both; an upper unionmount wrote, mounted by
//! the kernel, shows the same tree (and the same again under a later unionmount), and
//! an upper the kernel wrote shows the same tree under unionmount.
//! Needs root and /dev/fuse (skips, saying so, where they are absent).

mod common;

use common::fsops::{self as fs, Transcript};
use common::layer_spec::{Format, LayerDirs, LayerSet};
use common::overlay_harness::{Mounted, kernel_overlay_opts, should_skip};
use common::tree::{self, Snapshot};
use std::path::Path;

const KERNEL_REDIRECT: &str = "redirect_dir=on,index=off,metacopy=off";

const BOTTOM: &str = r#"
d a
d a/b
f a/b/f eff
f a/b/g gee
f a/c see
d big
f big/f1 1
f big/f2 2
f big/f3 3
f big/h1 linked
h big/h2 big/h1
d big/sub
f big/sub/deep deep
d m
f m/x x
d keep
f keep/k k
d gone
d gone/sub
f gone/sub/s s
d land
f land/old old
"#;

const TOP: &str = r#"
d m
f m/y y
f m/.hidden h
d land
f land/mid mid
"#;

fn set() -> LayerSet {
    LayerSet::new(&[TOP, BOTTOM], "")
}

/// The operations, on a mount root; every result is recorded.
fn ops(r: &Path, t: &mut Transcript) {
    let j = |p: &str| r.join(p);
    let mv = |a: &str, b: &str, flags: u32| fs::rename2(&j(a), &j(b), flags);
    t.rec("rename lower dir within its dir", mv("a", "a2", 0));
    t.rec("move its child across dirs", mv("a2/b", "m/b2", 0));
    t.rec("rename the moved dir again", mv("m/b2", "m/b3", 0));
    t.rec("write into merged dir", fs::write_file(&j("m/new"), libc::O_CREAT | libc::O_WRONLY, b"new"));
    t.rec("mkdir n", fs::mkdir(&j("n"), 0o755));
    t.rec("move merged dir with upper children", mv("m", "n/m", 0));
    t.rec("rename there and back", mv("big", "big2", 0).and(mv("big2", "big", 0)));
    t.rec("noreplace onto a dir", mv("big", "keep", libc::RENAME_NOREPLACE));
    t.rec("exchange two lower dirs", mv("keep", "a2", libc::RENAME_EXCHANGE));
    t.rec("exchange redirected with lower", mv("n/m", "land", libc::RENAME_EXCHANGE));
    t.rec("move onto an empty lower name", mv("gone/sub", "sub2", 0));
    t.rec("unlink in redirected", fs::unlink(&j("sub2/s")));
    t.rec("rmdir redirected", fs::rmdir(&j("sub2")));
    t.rec("rmdir old place is gone", fs::rmdir(&j("gone/sub")));
    t.rec("hard link out of a renamed dir", fs::link(&j("big/h1"), &j("h3")));
    t.rec("write through the link", fs::write_file(&j("h3"), libc::O_WRONLY | libc::O_TRUNC, b"LINKED"));
    t.rec("delete in moved tree", fs::unlink(&j("land/b3/g")));
    for p in ["a2", "keep", "land", "n/m", "land/b3", "big", "big/sub", "h3", "big/h2", "a", "m", "sub2"] {
        t.rec(&format!("describe {p}"), fs::describe(&j(p)));
    }
}

/// The redirect xattrs of the directories the operations redirect.
fn redirects(upper: &Path) -> Vec<(String, Option<String>)> {
    ["a2", "keep", "land", "n/m", "land/b3", "big"]
        .iter()
        .map(|p| {
            let v = fs::lgetxattr(&upper.join(p), "trusted.overlay.redirect").ok();
            (p.to_string(), v.map(|v| String::from_utf8_lossy(&v).into_owned()))
        })
        .collect()
}

fn fuse(d: &LayerDirs) -> Mounted {
    Mounted::fuse(d, "").unwrap_or_else(|e| panic!("FUSE mount failed: {e}"))
}

fn kernel(d: &LayerDirs) -> Mounted {
    let lowers: Vec<&Path> = d.lowers.iter().map(|p| p.as_path()).collect();
    let work = d.work.with_extension(format!("k{}", std::process::id()));
    kernel_overlay_opts(&lowers, Some((&d.upper, &work)), &d.mnt, KERNEL_REDIRECT).unwrap_or_else(|e| panic!("{e}"))
}

fn snap(m: &Mounted) -> Snapshot {
    tree::snapshot(&m.mnt)
}

#[test]
fn redirects_agree_with_kernel_overlayfs() {
    if should_skip("redirects_agree_with_kernel_overlayfs") {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("umredir").tempdir().unwrap();
    let fd = set().build(&tmp.path().join("f"), &[], Format::Overlay);
    let kd = set().build(&tmp.path().join("k"), &[], Format::Overlay);

    let (mut fl, mut kl) = (Transcript::default(), Transcript::default());
    let mut f = fuse(&fd);
    ops(&f.mnt, &mut fl);
    let f_tree = snap(&f);
    f.unmount().unwrap();
    let mut k = kernel(&kd);
    ops(&k.mnt, &mut kl);
    let k_tree = snap(&k);
    k.unmount().unwrap();

    // The kernel itself did what the scenario means (so agreeing with it means something).
    let failed: Vec<&String> = kl.0.iter().filter(|l| l.contains(": Err(")).collect();
    let expected = ["noreplace onto a dir", "rmdir old place is gone", "describe a:", "describe m:", "describe sub2:"];
    assert!(failed.iter().all(|l| expected.iter().any(|e| l.starts_with(e))), "unexpected failures: {failed:?}");
    assert_eq!(failed.len(), expected.len(), "{failed:?}");
    if let Some(d) = fs::diff_transcripts("kernel", &kl, "unionmount", &fl) {
        panic!("operation results differ:\n{d}");
    }
    tree::assert_same("after the operations", "kernel", &k_tree, "unionmount", &f_tree);
    assert_eq!(redirects(&fd.upper), redirects(&kd.upper), "redirect xattrs (unionmount vs kernel)");
    assert!(redirects(&fd.upper).iter().all(|(_, v)| v.is_some()), "{:?}", redirects(&fd.upper));
    // Constant time: nothing of the renamed lower trees was copied.
    for p in ["big/f1", "big/sub/deep", "a2/c", "land/b3/f"] {
        assert!(fs::lstat(&fd.upper.join(p)).is_err(), "{p} was copied up");
    }

    // The kernel over the upper unionmount wrote, and unionmount again.
    let k2 = kernel(&fd);
    tree::assert_same("kernel over unionmount's upper", "unionmount", &f_tree, "kernel", &snap(&k2));
    drop(k2);
    let mut f2 = fuse(&fd);
    tree::assert_same("a later unionmount", "first mount", &f_tree, "later mount", &snap(&f2));
    // `which` follows the redirect as the mount does: a file of a moved tree comes
    // from the bottom layer, under its old path.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unionmount"))
        .args(["which", "--json"])
        .arg(f2.mnt.join("land/b3/f"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "which: {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&*fd.lowers[1].to_string_lossy()), "which names the bottom layer: {text}");
    f2.unmount().unwrap();
    // unionmount over the upper the kernel wrote.
    let mut f3 = fuse(&kd);
    tree::assert_same("unionmount over the kernel's upper", "kernel", &k_tree, "unionmount", &snap(&f3));
    f3.unmount().unwrap();
}

/// `redirect_dir=off` copies the tree up (the escape hatch) and shows the same tree.
#[test]
fn redirect_dir_off_copies() {
    if should_skip("redirect_dir_off_copies") {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("umredir").tempdir().unwrap();
    let fd = set().build(&tmp.path().join("f"), &[], Format::Overlay);
    let mut f = Mounted::fuse(&fd, "redirect_dir=off").unwrap();
    let before = tree::snapshot(&f.mnt.join("big"));
    fs::rename2(&f.mnt.join("big"), &f.mnt.join("big2"), 0).unwrap();
    tree::assert_same("renamed", "before", &before, "after", &tree::snapshot(&f.mnt.join("big2")));
    f.unmount().unwrap();
    assert!(fs::lstat(&fd.upper.join("big2/sub/deep")).is_ok(), "copied up");
    assert!(fs::lgetxattr(&fd.upper.join("big2"), "trusted.overlay.redirect").is_err());
}
