//! Real mounts with `uidmapping=` / `gidmapping=` and the squash options: the ids stat
//! shows, the ids that land in the upper layer when mapped users create and chown, POSIX
//! ACL entries (setfacl/getfacl, package `acl`), the kernel's permission checks on the
//! presented ids, and options refused in one line.
//!
//! The map used: on-disk uids 0..65536 are shown as 100000.., gids as 200000.. (different
//! offsets, so a uid/gid mix-up shows). Users act through forked children with
//! setresuid/setresgid (`fsops::as_user`) or commands run with `Command::uid`.

mod common;

use common::fsops::{self as fs, cpath};
use common::layer_spec::{Format, LayerDirs, LayerSet};
use common::overlay_harness::{Mounted, fuse_bin, is_mounted, run_bounded, should_skip};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MAP: &str = "uidmapping=0:100000:65536,gidmapping=0:200000:65536";
const U: u32 = 100000;
const G: u32 = 200000;

const LOWER: &str = "
    f f0 zero owner=0:0
    f f5 five owner=5:5 mode=644
    f out outside owner=70000:70001
    d pub owner=0:0 mode=777
    d home7 owner=7:7 mode=755
    f home7/mine m owner=7:7
    d sgid owner=0:9 mode=2777
";

/// The kernel's overflow ids, as the daemon reads them at mount.
fn overflow() -> (u32, u32) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap().trim().parse::<u32>().unwrap();
    (read("/proc/sys/kernel/overflowuid"), read("/proc/sys/kernel/overflowgid"))
}

fn setup(tag: &str) -> (tempfile::TempDir, LayerDirs) {
    let tmp = tempfile::Builder::new().prefix(&format!("umidmap-{tag}")).tempdir().unwrap();
    fs::chmod(tmp.path(), 0o755).unwrap();
    let d = LayerSet::new(&[LOWER], "").build(&tmp.path().join("x"), &[], Format::Overlay);
    (tmp, d)
}

fn ids(p: &Path) -> (u32, u32) {
    let st = fs::lstat(p).unwrap_or_else(|e| panic!("lstat {p:?}: {e:?}"));
    (st.st_uid, st.st_gid)
}

/// errno (0 = success) of `f`, run by uid/gid in a forked child.
fn as_user(uid: u32, gid: u32, f: impl Fn() -> i32) -> i32 {
    match fs::as_user(uid, gid, f) {
        Ok(()) => 0,
        Err(e) => e.0,
    }
}

fn errno_of(r: i32) -> i32 {
    if r >= 0 { 0 } else { unsafe { *libc::__errno_location() } }
}

fn create_file(p: &Path) -> impl Fn() -> i32 {
    let c = cpath(p);
    move || {
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644) };
        if fd < 0 { errno_of(fd) } else { unsafe { libc::close(fd) } }
    }
}

fn open_write(p: &Path) -> impl Fn() -> i32 {
    let c = cpath(p);
    move || {
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_APPEND) };
        if fd < 0 { errno_of(fd) } else { unsafe { libc::close(fd) } }
    }
}

#[test]
fn stat_shows_mapped_ids_and_overflow_outside_ranges() {
    if should_skip("idmap_stat") {
        return;
    }
    let (_tmp, d) = setup("stat");
    let mut m = Mounted::fuse(&d, MAP).unwrap();
    let p = |n: &str| d.mnt.join(n);
    assert_eq!(ids(&p("f0")), (U, G));
    assert_eq!(ids(&p("f5")), (U + 5, G + 5));
    assert_eq!(ids(&p("home7")), (U + 7, G + 7));
    assert_eq!(ids(&p("home7/mine")), (U + 7, G + 7));
    assert_eq!(ids(&p("sgid")), (U, G + 9));
    assert_eq!(ids(&p("out")), overflow(), "on-disk 70000:70001 is outside every range");
    assert_eq!(ids(&d.mnt), (U, G), "the root directory too");
    // A listing (readdirplus) primes the same attributes.
    assert!(fs::list_names(&d.mnt).unwrap().contains(&"f5".to_string()));
    assert_eq!(ids(&p("f5")), (U + 5, G + 5));
    m.unmount().unwrap();
}

#[test]
fn objects_created_by_mapped_users_land_with_on_disk_ids() {
    if should_skip("idmap_create") {
        return;
    }
    let (_tmp, d) = setup("create");
    let mut m = Mounted::fuse(&d, MAP).unwrap();
    let (mnt, up) = (d.mnt.clone(), d.upper.clone());
    let (u7, g7) = (U + 7, G + 7);

    assert_eq!(as_user(u7, g7, create_file(&mnt.join("home7/file"))), 0);
    let dir = cpath(&mnt.join("home7/dir"));
    assert_eq!(as_user(u7, g7, || errno_of(unsafe { libc::mkdir(dir.as_ptr(), 0o755) })), 0);
    let fifo = cpath(&mnt.join("home7/fifo"));
    assert_eq!(as_user(u7, g7, || errno_of(unsafe { libc::mknod(fifo.as_ptr(), libc::S_IFIFO | 0o644, 0) })), 0);
    let (target, link) = (cpath(Path::new("file")), cpath(&mnt.join("home7/link")));
    assert_eq!(as_user(u7, g7, || errno_of(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })), 0);
    for n in ["file", "dir", "fifo", "link"] {
        assert_eq!(ids(&mnt.join("home7").join(n)), (u7, g7), "{n} through the mount");
    }
    // Under a setgid directory the group is the directory's (on disk 9).
    assert_eq!(as_user(U + 3, G + 3, create_file(&mnt.join("sgid/f"))), 0);
    assert_eq!(ids(&mnt.join("sgid/f")), (U + 3, G + 9));
    // A caller no range covers cannot own anything here: EOVERFLOW, nothing created.
    assert_eq!(as_user(5, 5, create_file(&mnt.join("pub/by5"))), libc::EOVERFLOW);
    let nd = cpath(&mnt.join("pub/dir5"));
    assert_eq!(as_user(5, 5, || errno_of(unsafe { libc::mkdir(nd.as_ptr(), 0o755) })), libc::EOVERFLOW);
    assert_eq!(fs::lstat(&mnt.join("pub/by5")).map(|_| ()), Err(fs::Errno(libc::ENOENT)));
    m.unmount().unwrap();

    for n in ["file", "dir", "fifo", "link"] {
        assert_eq!(ids(&up.join("home7").join(n)), (7, 7), "{n} in the upper layer");
    }
    assert_eq!(ids(&up.join("sgid/f")), (3, 9));
    assert!(fs::lstat(&up.join("pub/by5")).is_err() && fs::lstat(&up.join("pub/dir5")).is_err());
}

#[test]
fn chown_both_ways_and_copy_up_keeps_on_disk_ids() {
    if should_skip("idmap_chown") {
        return;
    }
    let (_tmp, d) = setup("chown");
    let mut m = Mounted::fuse(&d, MAP).unwrap();
    let (mnt, up) = (d.mnt.clone(), d.upper.clone());

    fs::lchown(&mnt.join("f0"), U + 42, G + 43).unwrap();
    assert_eq!(ids(&mnt.join("f0")), (U + 42, G + 43));
    // Group only (uid -1 leaves the owner alone).
    fs::lchown(&mnt.join("home7/mine"), u32::MAX, G + 1).unwrap();
    assert_eq!(ids(&mnt.join("home7/mine")), (U + 7, G + 1));
    // To an id no range covers: EINVAL, and nothing was copied up.
    assert_eq!(fs::lchown(&mnt.join("f5"), 5, G + 5), Err(fs::Errno(libc::EINVAL)));
    assert_eq!(fs::lchown(&mnt.join("f5"), U + 5, 70), Err(fs::Errno(libc::EINVAL)));
    assert_eq!(ids(&mnt.join("f5")), (U + 5, G + 5));
    assert!(fs::lstat(&up.join("f5")).is_err(), "a refused chown copied f5 up");
    // The kernel checks permissions against the presented ids.
    assert_eq!(as_user(U + 5, G + 5, open_write(&mnt.join("f5"))), 0, "the owner may write");
    assert_eq!(as_user(U + 6, G + 6, open_write(&mnt.join("f5"))), libc::EACCES);
    assert_eq!(as_user(5, 5, open_write(&mnt.join("f5"))), libc::EACCES, "on-disk owner 5 is not the presented owner");
    // A copy-up (the owner appending) keeps the on-disk owner.
    fs::write_file(&mnt.join("out"), libc::O_APPEND, b"+").unwrap();
    assert_eq!(ids(&mnt.join("out")), overflow());
    m.unmount().unwrap();

    assert_eq!(ids(&up.join("f0")), (42, 43));
    assert_eq!(ids(&up.join("home7/mine")), (7, 1));
    assert_eq!(ids(&up.join("f5")), (5, 5), "copied up by the write, on-disk ids kept");
    assert_eq!(ids(&up.join("out")), (70000, 70001), "an unmapped owner survives copy-up");
}

/// getfacl -n output lines naming users and groups (`user:ID:perms`, `group:ID:perms`).
fn acl_entries(p: &Path, default: bool) -> Vec<String> {
    let mut c = Command::new("getfacl");
    c.args(["-n", "-c"]);
    if default {
        c.arg("-d");
    }
    let (code, out, err) = run_bounded(c.arg(p), Duration::from_secs(30));
    assert_eq!(code, Some(0), "getfacl {p:?}: {err}");
    let named = |l: &&str| {
        let mut f = l.split(':');
        matches!(f.next(), Some("user" | "group")) && l.split(':').nth(1).is_some_and(|x| !x.is_empty())
    };
    out.lines().filter(named).map(String::from).collect()
}

fn setfacl(args: &[&str], p: &Path, uid: u32, gid: u32) -> (Option<i32>, String) {
    let mut c = Command::new("setfacl");
    c.args(args).arg(p).uid(uid).gid(gid);
    let (code, _, err) = run_bounded(&mut c, Duration::from_secs(30));
    (code, err)
}

#[test]
fn acl_entries_translated_both_ways() {
    if should_skip("idmap_acl") {
        return;
    }
    if Command::new("setfacl").arg("--version").output().is_err() {
        panic!("setfacl is not installed: apt-get install -y acl (.ci/run does)");
    }
    let (_tmp, d) = setup("acl");
    let (mnt, up, low) = (d.mnt.clone(), d.upper.clone(), d.lowers[0].clone());
    // An ACL in the lower layer, with on-disk ids, and one that names an unmapped id.
    assert_eq!(setfacl(&["-m", "u:1001:rw,g:2002:r"], &low.join("f0"), 0, 0).0, Some(0));
    assert_eq!(setfacl(&["-m", "u:70000:r"], &low.join("out"), 0, 0).0, Some(0));
    let mut m = Mounted::fuse(&d, MAP).unwrap();

    assert_eq!(acl_entries(&mnt.join("f0"), false), [format!("user:{}:rw-", U + 1001), format!("group:{}:r--", G + 2002)]);
    let (ou, _) = overflow();
    assert_eq!(acl_entries(&mnt.join("out"), false), [format!("user:{ou}:r--")]);

    // Written through the mount (by the file's presented owner): stored with on-disk ids.
    let spec = format!("u:{}:r,g:{}:rw", U + 3, G + 4);
    let (code, err) = setfacl(&["-m", &spec], &mnt.join("home7/mine"), U + 7, G + 7);
    assert_eq!(code, Some(0), "setfacl as the owner: {err}");
    assert_eq!(acl_entries(&mnt.join("home7/mine"), false), [format!("user:{}:r--", U + 3), format!("group:{}:rw-", G + 4)]);
    let dspec = format!("u:{}:rwx", U + 8);
    assert_eq!(setfacl(&["-d", "-m", &dspec], &mnt.join("pub"), 0, 0).0, Some(0));
    // An entry no range covers cannot be stored.
    let (code, err) = setfacl(&["-m", "u:5:r"], &mnt.join("f5"), 0, 0);
    assert_ne!(code, Some(0), "setfacl u:5 through the mount should fail");
    assert!(err.contains("Invalid argument"), "{err}");
    m.unmount().unwrap();

    assert_eq!(acl_entries(&up.join("home7/mine"), false), ["user:3:r--", "group:4:rw-"]);
    assert_eq!(acl_entries(&up.join("pub"), true), ["user:8:rwx"]);
    assert!(fs::lstat(&up.join("f5")).is_err() || acl_entries(&up.join("f5"), false).is_empty());
}

#[test]
fn squash_options_show_one_owner_and_write_ids_unchanged() {
    if should_skip("idmap_squash") {
        return;
    }
    let (_tmp, d) = setup("squash");
    let mnt = d.mnt.clone();
    for (opts, want) in [
        ("squash_to_root", (0, 0)),
        ("squash_to_uid=77,squash_to_gid=88", (77, 88)),
        ("squash_to_root,squash_to_uid=77", (77, 0)),
        ("squash_to_root,squash_to_gid=88", (0, 88)),
    ] {
        let mut m = Mounted::fuse(&d, opts).unwrap();
        for n in ["", "f0", "f5", "out", "home7/mine", "sgid"] {
            assert_eq!(ids(&mnt.join(n)), want, "{opts}: {n}");
        }
        m.unmount().unwrap();
    }
    // Writes are not squashed: a chown reaches the upper layer as given.
    let mut m = Mounted::fuse(&d, "squash_to_root").unwrap();
    fs::lchown(&mnt.join("f5"), 1234, 1235).unwrap();
    assert_eq!(ids(&mnt.join("f5")), (0, 0));
    assert_eq!(as_user(1234, 1235, create_file(&mnt.join("pub/new"))), 0);
    m.unmount().unwrap();
    assert_eq!(ids(&d.upper.join("f5")), (1234, 1235));
    assert_eq!(ids(&d.upper.join("pub/new")), (1234, 1235));
    // With a map as well, writes go through the map and reads are squashed.
    let mut m = Mounted::fuse(&d, &format!("{MAP},squash_to_uid=9")).unwrap();
    assert_eq!(ids(&mnt.join("f0")), (9, G));
    fs::lchown(&mnt.join("f0"), U + 1, G + 2).unwrap();
    m.unmount().unwrap();
    assert_eq!(ids(&d.upper.join("f0")), (1, 2));
}

#[test]
fn malformed_id_options_are_refused_in_one_line() {
    if should_skip("idmap_options") {
        return;
    }
    let (_tmp, d) = setup("opts");
    for (opt, want) in [
        ("uidmapping=0:1000", "uidmapping"),
        ("gidmapping=0:100:10:5:200:10", "gidmapping: ranges 0:100:10 and 5:200:10 overlap on disk"),
        ("uidmapping=0:1:0", "uidmapping: range 0:1:0 is empty"),
        ("squash_to_uid=x", "squash_to_uid"),
    ] {
        let mut cmd = Command::new(fuse_bin());
        cmd.args(["-o", &format!("{},{opt}", d.overlay_options())]).arg(&d.mnt);
        let (code, out, err) = run_bounded(&mut cmd, Duration::from_secs(30));
        assert!(code.is_some_and(|c| c != 0), "{opt}: exit {code:?}");
        assert!(!is_mounted(&d.mnt), "{opt}: mounted anyway");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{opt}: stderr {err:?} stdout {out:?}");
        assert!(lines[0].contains(want), "{opt}: {}", lines[0]);
    }
}
