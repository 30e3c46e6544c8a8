//! `diff`, `commit` and `which` on a live unionmount, found through its mount
//! record: mount base layers with the unionmount binary, change files through
//! it, then inspect it by mountpoint alone and compare base + committed layer
//! (under kernel overlayfs) with the mounted tree.
//!
//! Needs root and /dev/fuse; skips, saying why, otherwise. It fails (rather than
//! skips) when the unionmount binary cannot mount: that is what it checks.

mod inspect_support;

use inspect_support::*;
use std::path::Path;
use std::process::Command;

const EXPECTED: &str = "\
C /etc
C /etc/passwd
D /etc/shadow
A /srv
A /srv/link
A /srv/new.txt
C /usr
C /usr/bin
D /usr/bin/tool
A /usr/bin/tool2
C /usr/lib
C /var
C /var/cache
D /var/cache/a
";

fn changes(m: &Path) {
    std::fs::write(m.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::remove_file(m.join("etc/shadow")).unwrap();
    std::fs::remove_dir_all(m.join("var/cache/a")).unwrap();
    write(m, "srv/new.txt", "new\n");
    std::os::unix::fs::symlink("new.txt", m.join("srv/link")).unwrap();
    chmod(&m.join("usr/lib"), 0o700);
    std::fs::rename(m.join("usr/bin/tool"), m.join("usr/bin/tool2")).unwrap();
}

#[test]
fn inspect_a_live_unionmount_by_its_mountpoint() {
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
    let out = Command::new(bin()).arg("-o").arg(&o).arg(&mnt).output().unwrap();
    assert!(
        out.status.success(),
        "unionmount could not mount (needed for this test): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let _m = Mounted(mnt.clone());
    changes(&mnt);

    // diff by mountpoint: the record supplies upper and lowers.
    let out = run(Command::new(bin()).arg("diff").arg(&mnt));
    assert_eq!(String::from_utf8_lossy(&out.stdout), EXPECTED);

    // which: upper, a lower hiding another, a deleted path.
    let which = |p: &str| Command::new(bin()).arg("which").arg(mnt.join(p)).output().unwrap();
    let o = which("etc/passwd");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("provider  upper"), "{text}");
    let o = which("etc/hosts");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("provider  layer 2 ") && text.contains("hides     layer 1 "), "{text}");
    let o = which("etc/shadow");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success() && text.contains("deleted   by a whiteout in upper"), "{text}");
    let o = which("etc");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("merges    layer 2 ") && text.contains("merges    layer 1 "), "{text}");

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
