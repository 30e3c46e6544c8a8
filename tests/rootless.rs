//! Rootless: the daemon run by an unprivileged user (uid/gid 4242)
//! mounts through fusermount3 in overlay mode. mknod and trusted.* are not allowed there,
//! so whiteouts must be written as `.wh.` files (or user.overlay xattrs), and they must
//! work: hidden in the merged view, also after a remount. Without `allow_other`, other
//! users (root included) are kept out of the mount.
//!
//! The test thread enters its own mount namespace (the host is not touched, and everything
//! the test starts inherits the thread's namespace) and there bind-mounts copies of
//! /etc/passwd and /etc/group naming the test user (fusermount3 wants a user name), and,
//! where /dev/fuse is root-only (some containers, this CI), a 0666 node of the same
//! device over /dev/fuse, as every distribution ships it.

mod common;

use common::fsops::{self as fs, cpath};
use common::layer_spec::{Format, LayerDirs, LayerSet};
use common::overlay_harness::{Mounted, bind, daemon_pids, enter_private_mount_namespace, fuse_bin, mountinfo_line, run_bounded, should_skip};
use common::tree::{self, Kind};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const UID: u32 = 4242;

fn chown_tree(p: &Path) {
    fs::lchown(p, UID, UID).unwrap();
    if fs::is_dir(&fs::lstat(p).unwrap()) {
        for n in fs::list_names(p).unwrap() {
            chown_tree(&p.join(n));
        }
    }
}

/// Private mount namespace for this thread with the test user known and /dev/fuse usable.
/// `dev_fuse_mode`: the permission bits /dev/fuse must have in the namespace (a node of
/// the same device is bound over it when the real one differs).
fn private_user_environment(scratch: &Path, dev_fuse_mode: u32) {
    enter_private_mount_namespace();
    for (file, line) in [
        ("passwd", format!("umrootless:x:{UID}:{UID}:unionmount rootless test:/nonexistent:/usr/sbin/nologin\n")),
        ("group", format!("umrootless:x:{UID}:\n")),
    ] {
        let etc = Path::new("/etc").join(file);
        let mut text = std::fs::read_to_string(&etc).unwrap_or_default();
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&line);
        let copy = scratch.join(file);
        std::fs::write(&copy, text).unwrap();
        fs::chmod(&copy, 0o644).unwrap();
        bind(&copy, &etc);
    }
    let st = fs::lstat(Path::new("/dev/fuse")).expect("/dev/fuse");
    if st.st_mode & 0o777 != dev_fuse_mode {
        let node = scratch.join("fuse-node");
        fs::mknod(&node, libc::S_IFCHR | dev_fuse_mode, st.st_rdev).unwrap();
        fs::chmod(&node, dev_fuse_mode).unwrap();
        bind(&node, Path::new("/dev/fuse"));
        eprintln!("/dev/fuse has mode {:o} here: using a {dev_fuse_mode:o} node in a private mount namespace", st.st_mode & 0o777);
    }
}

fn mount_as_user(d: &LayerDirs) -> Result<Mounted, String> {
    let mut cmd = Command::new(fuse_bin());
    cmd.uid(UID).gid(UID).env_remove("XDG_RUNTIME_DIR").args(["-o", &d.overlay_options()]).arg(&d.mnt);
    let (code, _, err) = run_bounded(&mut cmd, Duration::from_secs(30));
    if code != Some(0) || mountinfo_line(&d.mnt).is_none() {
        return Err(format!("rootless mount failed: exit {code:?}: {}", err.trim()));
    }
    Ok(Mounted::adopt(&d.mnt))
}

/// errno (0 = success) of a syscall made by the test user.
fn user_call(f: impl Fn() -> i32) -> i32 {
    match fs::as_user(UID, UID, f) {
        Ok(()) => 0,
        Err(e) => e.0,
    }
}

fn errno_of(r: i32) -> i32 {
    if r == 0 { 0 } else { unsafe { *libc::__errno_location() } }
}

#[test]
fn rootless_mount_writes_usable_whiteouts() {
    if should_skip("rootless") {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("umrootless").tempdir().unwrap();
    fs::chmod(tmp.path(), 0o755).unwrap();
    private_user_environment(tmp.path(), 0o666);
    let set = LayerSet::new(&["f gone lower\nf kept k\nd emptyd\nd full\nf full/x x\n"], "");
    let d = set.build(&tmp.path().join("x"), &[], Format::Overlay);
    chown_tree(&d.base);
    let mut m = mount_as_user(&d).unwrap();
    let line = mountinfo_line(&d.mnt).unwrap();
    assert!(line.contains(&format!("user_id={UID}")), "mount not owned by the user: {line}");

    let c = |p: &str| cpath(&d.mnt.join(p));
    let (gone, emptyd, full_x, full, new) = (c("gone"), c("emptyd"), c("full/x"), c("full"), c("new"));
    assert_eq!(user_call(|| errno_of(unsafe { libc::unlink(gone.as_ptr()) })), 0, "unlink lower file");
    assert_eq!(user_call(|| errno_of(unsafe { libc::access(gone.as_ptr(), libc::F_OK) })), libc::ENOENT, "whited-out file visible");
    assert_eq!(user_call(|| errno_of(unsafe { libc::rmdir(emptyd.as_ptr()) })), 0, "rmdir lower dir");
    assert_eq!(user_call(|| errno_of(unsafe { libc::mkdir(emptyd.as_ptr(), 0o755) })), 0, "mkdir over whiteout");
    assert_eq!(user_call(|| errno_of(unsafe { libc::unlink(full_x.as_ptr()) })), 0, "unlink full/x");
    assert_eq!(user_call(|| errno_of(unsafe { libc::rmdir(full.as_ptr()) })), 0, "rmdir emptied lower dir");
    assert_eq!(user_call(|| errno_of(unsafe { libc::mkdir(full.as_ptr(), 0o700) })), 0, "mkdir over dir whiteout");
    let fd_ok = || {
        let fd = unsafe { libc::open(new.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) };
        if fd < 0 { errno_of(-1) } else { unsafe { libc::close(fd) } }
    };
    assert_eq!(user_call(fd_ok), 0, "create");

    // allow_other was not asked for: root is kept out.
    assert_eq!(fs::lstat(&d.mnt.join("kept")).map(|_| ()), Err(fs::Errno(libc::EACCES)), "root can enter a mount without allow_other");

    let pids = daemon_pids(&d.mnt);
    let mut um = Command::new("fusermount3");
    um.uid(UID).gid(UID).arg("-u").arg(&d.mnt);
    let (code, out, err) = run_bounded(&mut um, Duration::from_secs(30));
    assert_eq!(code, Some(0), "fusermount3 -u as the user: {out}{err}");
    assert!(common::overlay_harness::wait_gone(&pids, &d.mnt, Duration::from_secs(20)), "daemon still running");
    let _ = m.unmount();

    let upper = tree::snapshot_upper(&d.upper);
    let kind = |p: &str| upper.get(p.as_bytes()).map(|n| n.kind.clone());
    assert_eq!(kind("gone"), Some(Kind::Whiteout), "upper: {}", tree::render(&upper));
    assert!(upper.get(b"emptyd".as_slice()).is_some_and(|n| n.kind == Kind::Dir && n.opaque), "emptyd must be an opaque dir: {}", tree::render(&upper));
    assert!(upper.get(b"full".as_slice()).is_some_and(|n| n.kind == Kind::Dir && n.opaque), "full must be an opaque dir: {}", tree::render(&upper));
    assert_eq!(kind("new"), Some(Kind::File));

    // A fresh rootless mount honours what the first one wrote.
    let mut m2 = mount_as_user(&d).unwrap();
    let (kept, full_x) = (c("kept"), c("full/x"));
    assert_eq!(user_call(|| errno_of(unsafe { libc::access(gone.as_ptr(), libc::F_OK) })), libc::ENOENT, "after remount: whiteout ignored");
    assert_eq!(user_call(|| errno_of(unsafe { libc::access(full_x.as_ptr(), libc::F_OK) })), libc::ENOENT, "after remount: opaque dir ignored");
    assert_eq!(user_call(|| errno_of(unsafe { libc::access(kept.as_ptr(), libc::F_OK) })), 0, "after remount: kept file missing");
    m2.unmount().unwrap();
}

/// When the user cannot use /dev/fuse (root-only here, in a private namespace), the mount
/// fails with exit != 0 and exactly one line on stderr, and nothing is mounted.
#[test]
fn rootless_without_fuse_access_fails_with_one_line() {
    if should_skip("rootless_no_access") {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("umrootless").tempdir().unwrap();
    fs::chmod(tmp.path(), 0o755).unwrap();
    private_user_environment(tmp.path(), 0o600);
    let d = LayerSet::new(&["f a a\n"], "").build(&tmp.path().join("x"), &[], Format::Overlay);
    chown_tree(&d.base);
    let mut cmd = Command::new(fuse_bin());
    cmd.uid(UID).gid(UID).args(["-o", &d.overlay_options()]).arg(&d.mnt);
    let (code, _, err) = run_bounded(&mut cmd, Duration::from_secs(30));
    let _guard = mountinfo_line(&d.mnt).map(|_| Mounted::adopt(&d.mnt));
    assert!(_guard.is_none(), "mounted although the user cannot open /dev/fuse");
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 1, "want one line on stderr, got {lines:?}");
}
