//! Helpers for the inspect integration tests: building layers, applying layer tars, the
//! scripted changes and what `diff` must print for them. Kernel overlay mounts and tree
//! snapshots are the shared ones of `tests/common` (re-exported here under the names
//! these tests use).
#![allow(dead_code)]

#[allow(unused_imports)] // inspect_overlay does not use Mounted
pub use crate::common::overlay_harness::{Mounted, kernel_overlay as overlay};
pub use crate::common::tree::{assert_same_tree, is_root, snapshot_image as snapshot};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_unionmount")
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn sh(script: &str) {
    run(Command::new("sh").arg("-euc").arg(script));
}

pub fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Apply one uncompressed layer tar onto `dest` the way an image unpacker does
/// (`.wh.NAME` deletes, `.wh..wh..opq` empties the directory's earlier content).
/// With `overlay_form`, whiteouts are instead materialised as overlay whiteouts
/// (char 0/0, `trusted.overlay.opaque=y`) so `dest` can serve as an overlay layer.
pub fn apply_tar(tar: impl Read, dest: &Path, overlay_form: bool) {
    let mut ar = tar::Archive::new(tar);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(true);
    ar.set_preserve_mtime(true);
    let mut dir_times = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path_bytes().into_owned();
        let (parent, name) = match path.iter().rposition(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => (&b""[..], &path[..]),
        };
        let pdir = dest.join(OsStr::from_bytes(parent));
        if name == b".wh..wh..opq" {
            if overlay_form {
                xattr::set(&pdir, "trusted.overlay.opaque", b"y").unwrap();
            } else {
                for c in std::fs::read_dir(&pdir).unwrap() {
                    remove_any(&c.unwrap().path());
                }
            }
            continue;
        }
        if let Some(target) = name.strip_prefix(b".wh.") {
            let victim = pdir.join(OsStr::from_bytes(target));
            remove_any(&victim);
            if overlay_form {
                run(Command::new("mknod").arg(&victim).args(["c", "0", "0"]));
            }
            continue;
        }
        let full = dest.join(OsStr::from_bytes(&path));
        // A layer entry replaces what earlier layers had, except dir over dir.
        let dir_over_dir = |m: &std::fs::Metadata| m.is_dir() && e.header().entry_type().is_dir();
        if std::fs::symlink_metadata(&full).is_ok_and(|m| !dir_over_dir(&m)) {
            remove_any(&full);
        }
        if e.header().entry_type().is_dir() {
            dir_times.push((full.clone(), e.header().mtime().unwrap()));
        }
        let h = e.header().clone();
        let ty = h.entry_type();
        if ty.is_character_special() || ty.is_block_special() || ty.is_fifo() {
            // The tar crate does not create special files; do it as an unpacker would.
            let mut c = Command::new("mknod");
            c.arg(&full);
            if ty.is_fifo() {
                c.arg("p");
            } else {
                let maj = h.device_major().unwrap().unwrap().to_string();
                let min = h.device_minor().unwrap().unwrap().to_string();
                c.args([if ty.is_character_special() { "c" } else { "b" }, &maj, &min]);
            }
            run(&mut c);
            let (uid, gid) = (h.uid().unwrap() as u32, h.gid().unwrap() as u32);
            std::os::unix::fs::chown(&full, Some(uid), Some(gid)).unwrap();
            chmod(&full, h.mode().unwrap());
            run(Command::new("touch").arg("-h").arg("-d").arg(format!("@{}", h.mtime().unwrap())).arg(&full));
            continue;
        }
        assert!(e.unpack_in(dest).unwrap(), "entry escapes: {}", String::from_utf8_lossy(&path));
    }
    for (d, t) in dir_times.into_iter().rev() {
        let ft = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
        let _ = std::fs::File::open(&d).and_then(|f| f.set_modified(ft));
    }
}

fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).unwrap(),
        Ok(_) => std::fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

/// A base image of two layers in overlay form (bottom, top).
pub fn base_layers(root: &Path) -> (PathBuf, PathBuf) {
    let (bot, top) = (root.join("l1"), root.join("l2"));
    write(&bot, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    write(&bot, "etc/group", "root:x:0:\n");
    write(&bot, "etc/shadow", "root:*::0:::::\n");
    chmod(&bot.join("etc/shadow"), 0o640);
    write(&bot, "etc/hosts", "127.0.0.1 localhost\n");
    write(&bot, "usr/bin/tool", "#!/bin/sh\necho tool\n");
    chmod(&bot.join("usr/bin/tool"), 0o755);
    write(&bot, "usr/lib/libx.so.1", "ELF");
    std::os::unix::fs::symlink("libx.so.1", bot.join("usr/lib/libx.so")).unwrap();
    write(&bot, "var/cache/a/b/c", "cached");
    write(&bot, "var/log/old.log", "old");
    write(&bot, "opt/app/conf", "v1");
    write(&bot, "opt/app/data/d1", "d1");
    write(&bot, "home/user/.profile", "export A=1\n");
    std::os::unix::fs::chown(bot.join("home/user"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(bot.join("home/user/.profile"), Some(1000), Some(1000)).unwrap();
    write(&bot, "hl/one", "shared");
    std::fs::hard_link(bot.join("hl/one"), bot.join("hl/two")).unwrap();
    // Top layer: changes hosts, deletes old.log, replaces opt/app (opaque).
    write(&top, "etc/hosts", "127.0.0.1 localhost top\n");
    std::fs::create_dir_all(top.join("var/log")).unwrap();
    run(Command::new("mknod").arg(top.join("var/log/old.log")).args(["c", "0", "0"]));
    write(&top, "opt/app/conf2", "v2");
    xattr::set(top.join("opt/app"), "trusted.overlay.opaque", b"y").unwrap();
    (bot, top)
}

/// The scripted changes made through a mount at `m`. `link_lower`: also
/// hard-link a file of a lower layer (copy-up, then link).
pub fn scripted_changes(m: &Path, link_lower: bool) {
    let q = |s: &str| m.join(s);
    std::fs::write(q("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    sh(&format!("echo 'wheel:x:10:' >> {}", q("etc/group").display()));
    chmod(&q("etc/shadow"), 0o600);
    std::os::unix::fs::chown(q("home/user/.profile"), Some(2000), Some(2000)).unwrap();
    std::fs::remove_file(q("etc/hosts")).unwrap();
    std::fs::remove_dir_all(q("var/cache/a")).unwrap();
    std::fs::remove_dir_all(q("opt/app")).unwrap();
    write(m, "opt/app/new", "fresh");
    write(m, "srv/www/html/index.html", "<h1>hi</h1>\n");
    std::os::unix::fs::symlink("www", q("srv/current")).unwrap();
    write(m, "new/file1", "one inode");
    std::fs::hard_link(q("new/file1"), q("new/file2")).unwrap();
    if link_lower {
        std::fs::hard_link(q("hl/one"), q("hl/three")).unwrap();
    }
    std::fs::create_dir_all(q("run")).unwrap();
    run(Command::new("mkfifo").arg(q("run/fifo")));
    std::fs::create_dir_all(q("dev")).unwrap();
    run(Command::new("mknod").arg(q("dev/null2")).args(["c", "1", "3"]));
    xattr::set(q("etc/passwd"), "user.test", b"hello").unwrap();
    std::fs::rename(q("usr/bin/tool"), q("usr/bin/tool2")).unwrap();
    run(Command::new("mv").arg(q("opt/app")).arg(q("opt/moved")));
    // A merged lower dir: rename(2) gives EXDEV (redirect_dir=off), mv copies.
    run(Command::new("mv").arg(q("home/user")).arg(q("home/user2")));
    let long = format!("deep/{}/{}", "x".repeat(120), "y".repeat(100));
    write(m, &long, "long path");
    std::fs::write(m.join(OsStr::from_bytes(b"bad\xffname")), "bytes").unwrap();
    chmod(&q("usr/lib"), 0o700);
    sh(&format!("touch -d @1000000000 {}", q("srv/www/html/index.html").display()));
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(std::fs::read(p).unwrap());
    let mut s = String::from("sha256:");
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `key value` lines printed by `commit`.
pub fn field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .to_string()
}

/// What `diff` must print after `scripted_changes(_, link_lower)`.
pub fn expected_diff(link_lower: bool) -> Vec<u8> {
    let long = format!("/deep/{}/{}", "x".repeat(120), "y".repeat(100));
    let mut lines: Vec<Vec<u8>> = vec![b"A /bad\xffname".to_vec()];
    let hl: &[&str] = if link_lower { &["C /hl", "C /hl/one", "A /hl/three"] } else { &[] };
    let text = [
        "A /deep".to_string(),
        format!("A /deep/{}", "x".repeat(120)),
        format!("A {long}"),
        "A /dev".into(),
        "A /dev/null2".into(),
        "C /etc".into(),
        "C /etc/group".into(),
        "D /etc/hosts".into(),
        "C /etc/passwd".into(),
        "C /etc/shadow".into(),
    ]
    .into_iter()
    .chain(hl.iter().map(|s| s.to_string()))
    .chain(
        [
            "C /home",
            "D /home/user",
            "A /home/user2",
            "A /home/user2/.profile",
            "A /new",
            "A /new/file1",
            "A /new/file2",
            "C /opt",
            "D /opt/app",
            "A /opt/moved",
            "A /opt/moved/new",
            "A /run",
            "A /run/fifo",
            "A /srv",
            "A /srv/current",
            "A /srv/www",
            "A /srv/www/html",
            "A /srv/www/html/index.html",
            "C /usr",
            "C /usr/bin",
            "D /usr/bin/tool",
            "A /usr/bin/tool2",
            "C /usr/lib",
            "C /var",
            "C /var/cache",
            "D /var/cache/a",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    lines.extend(text.map(String::into_bytes));
    let mut out = Vec::new();
    for l in lines {
        out.extend_from_slice(&l);
        out.push(b'\n');
    }
    out
}
