//! The command line refuses what would do harm, with one line and a non-zero exit, and
//! shows what is mounted: diff/commit targets, `commit --oci` into a directory that is
//! not a layout, `--output` forms, misspelled read-only options, unknown options named
//! with the closest known one, a dead mountpoint, the throw-away upper of a killed
//! daemon, a record directory planted by another user, `ps`, `umount`, `help`, the
//! mount's source in /proc/self/mountinfo, forgotten arguments, 10,000-deep paths
//! (one short line).

mod common;

use common::overlay_harness::{Mounted, daemon_pids, mountinfo_line, should_skip, wait_gone};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_unionmount")
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

/// Exit `code` with exactly one line on stderr containing every one of `words`.
fn refused(out: &Output, code: i32, words: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    for w in words {
        assert!(err.contains(w), "{w:?} not in {err:?}");
    }
    err
}

/// The fixture OCI layout extracted under `t`, and a mount of `tiny:app` at `mnt`.
struct ImageMount {
    store: PathBuf,
    cache: PathBuf,
}

impl ImageMount {
    fn new(t: &Path) -> ImageMount {
        ImageMount { store: common::extract_fixture("oci-layout", t), cache: t.join("cache") }
    }

    /// Mount `tiny:app` at `mnt` (created) with `extra` arguments before the image.
    fn mount(&self, mnt: &Path, extra: &[&str]) -> Mounted {
        std::fs::create_dir_all(mnt).unwrap();
        let out = Command::new(bin())
            .arg("--store")
            .arg(&self.store)
            .arg("--cache")
            .arg(&self.cache)
            .args(extra)
            .arg("tiny:app")
            .arg(mnt)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
        Mounted::adopt(mnt)
    }
}

fn ps_json() -> Vec<serde_json::Value> {
    let out = run(&[os("ps"), os("--json")]);
    assert!(out.status.success(), "ps: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

fn ps_entry(mnt: &Path) -> Option<serde_json::Value> {
    ps_json().into_iter().find(|m| m["mountpoint"].as_str() == Some(&*mnt.to_string_lossy()))
}

#[test]
fn diff_and_commit_refuse_what_is_not_a_live_mountpoint() {
    if should_skip("diff_and_commit_refuse_what_is_not_a_live_mountpoint") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = ImageMount::new(t.path());
    let mnt = t.path().join("mnt");
    let mut m = img.mount(&mnt, &[]);
    std::fs::write(mnt.join("added"), "new").unwrap();

    let etc = mnt.join("etc");
    refused(&run(&[os("diff"), etc.as_os_str()]), 1, &["inside the unionmount at", "give"]);
    refused(&run(&[os("diff"), os("/")]), 1, &["not a unionmount mountpoint", "--upper DIR"]);
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    refused(&run(&[os("diff"), empty.as_os_str()]), 1, &["not a unionmount mountpoint"]);
    let out_file = t.path().join("etc.tar");
    refused(&run(&[os("commit"), etc.as_os_str(), os("--output"), out_file.as_os_str()]), 1, &["inside the unionmount"]);
    assert!(!out_file.exists(), "a refused commit writes nothing");
    // --upper refuses a mountpoint and a directory inside a mount.
    refused(&run(&[os("diff"), os("--upper"), mnt.as_os_str()]), 1, &["unionmount mountpoint", "without --upper"]);
    refused(&run(&[os("diff"), os("--upper"), os("/proc")]), 1, &["is a mountpoint"]);

    // --oci only into a new or empty directory or an existing layout.
    let full = t.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep"), "x").unwrap();
    let err = refused(&run(&[os("commit"), mnt.as_os_str(), os("--image"), os("x:1"), os("--oci"), full.as_os_str()]), 1, &[]);
    assert!(err.contains("neither empty nor an OCI image layout"), "{err}");
    let names: Vec<_> = std::fs::read_dir(&full).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("keep")], "nothing written into a non-layout directory");
    let layout = t.path().join("layout");
    let out = run(&[os("commit"), mnt.as_os_str(), os("--image"), os("x:1"), os("--oci"), layout.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&[os("commit"), mnt.as_os_str(), os("--image"), os("x:2"), os("--oci"), layout.as_os_str()]);
    assert!(out.status.success(), "an existing layout is fine: {}", String::from_utf8_lossy(&out.stderr));

    // --output DIR/ is refused; --output - writes the tar to stdout; --json.
    let slash = format!("{}/", t.path().display());
    refused(&run(&[os("commit"), mnt.as_os_str(), os("--output"), os(&slash)]), 2, &["is a directory", "layer.tar"]);
    let out = run(&[os("commit"), mnt.as_os_str(), os("--output"), os("-")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ar = tar::Archive::new(&out.stdout[..]);
    let names: Vec<String> = ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert!(names.iter().any(|n| n.trim_end_matches('/') == "added"), "{names:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("diff_id sha256:"), "summary goes to stderr");
    let file = t.path().join("layer.tar");
    let out = run(&[os("commit"), mnt.as_os_str(), os("--output"), file.as_os_str(), os("--json")]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["size"].as_u64(), Some(std::fs::metadata(&file).unwrap().len()));
    assert!(v["diff_id"].as_str().unwrap().starts_with("sha256:"));

    // which --json: the layer index as a number and its diff_id.
    let out = run(&[os("which"), os("--json"), mnt.join("etc").as_os_str()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["provider"]["index"].is_u64() || v["provider"]["layer"] == "upper", "{v}");
    m.unmount().unwrap();
}

#[test]
fn dead_mountpoints_and_the_upper_of_a_killed_daemon() {
    if should_skip("dead_mountpoints_and_the_upper_of_a_killed_daemon") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = ImageMount::new(t.path());
    let tmp = t.path().join("uppers");
    std::fs::create_dir(&tmp).unwrap();
    let mnt = t.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = Command::new(bin())
        .env("UNIONMOUNT_TMPDIR", &tmp)
        .args([os("--store"), img.store.as_os_str(), os("--cache"), img.cache.as_os_str(), os("tiny:app"), mnt.as_os_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut m = Mounted::adopt(&mnt);
    let upper = PathBuf::from(ps_entry(&mnt).expect("listed")["upper"].as_str().unwrap());
    assert!(upper.starts_with(&tmp), "{upper:?}");
    let pids = daemon_pids(&mnt);
    for p in &pids {
        unsafe { libc::kill(*p as i32, libc::SIGKILL) };
    }
    assert!(wait_gone(&pids, &mnt, Duration::from_secs(20)));
    assert!(mountinfo_line(&mnt).is_some(), "the dead mount stays until unmounted");

    let words = ["is a unionmount whose daemon has exited", "umount"];
    refused(&run(&[os("diff"), mnt.as_os_str()]), 1, &words);
    refused(&run(&[os("which"), mnt.join("etc").as_os_str()]), 1, &words);
    refused(&run(&[os("--store"), img.store.as_os_str(), os("tiny:app"), mnt.as_os_str()]), 1, &words);
    assert!(ps_entry(&mnt).is_none(), "ps lists live mounts only");

    // The next mount removes the killed daemon's throw-away upper.
    let mnt2 = t.path().join("mnt2");
    std::fs::create_dir_all(&mnt2).unwrap();
    let out = Command::new(bin())
        .env("UNIONMOUNT_TMPDIR", &tmp)
        .args([os("--store"), img.store.as_os_str(), os("--cache"), img.cache.as_os_str(), os("tiny:app"), mnt2.as_os_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut m2 = Mounted::adopt(&mnt2);
    assert!(!upper.parent().unwrap().exists(), "stale throw-away layer {upper:?} removed");

    // umount works on the dead one and the live one.
    let out = run(&[os("umount"), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(mountinfo_line(&mnt).is_none());
    m.kill_daemon(); // nothing left to do; keeps the guard from unmounting twice
    let pids2 = daemon_pids(&mnt2);
    let out = run(&[os("umount"), mnt2.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(wait_gone(&pids2, &mnt2, Duration::from_secs(20)) && mountinfo_line(&mnt2).is_none());
    m2.kill_daemon();
    refused(&run(&[os("umount"), t.path().as_os_str()]), 1, &["not a unionmount mountpoint"]);
}

#[test]
fn ps_lists_two_live_mounts_and_the_source_is_the_image() {
    if should_skip("ps_lists_two_live_mounts_and_the_source_is_the_image") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = ImageMount::new(t.path());
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let mut ma = img.mount(&a, &[]);
    let mut mb = img.mount(&b, &["-o", "fsname=mine"]);
    for (mnt, source) in [(&a, "tiny:app"), (&b, "mine")] {
        let e = ps_entry(mnt).unwrap_or_else(|| panic!("{mnt:?} not in ps"));
        assert_eq!(e["image"], "tiny:app");
        assert!(e["upper"].is_string() && e["pid"].is_u64() && e["started"].is_string(), "{e}");
        assert_eq!(e["layers"].as_array().unwrap().len(), 5);
        let line = mountinfo_line(mnt).unwrap();
        let src = line.split(" - ").nth(1).unwrap().split(' ').nth(1).unwrap().to_string();
        assert_eq!(src, source, "mount source in mountinfo");
    }
    // inspect MNT: what the mountpoint is made of.
    let out = run(&[os("inspect"), a.as_os_str(), os("--json")]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["image"].as_str(), v["layers"].as_array().map(Vec::len)), (Some("tiny:app"), Some(5)), "{v}");
    assert!(v["upper"].is_string() && v["pid"].is_u64());
    let text = String::from_utf8_lossy(&run(&[os("inspect"), a.as_os_str()]).stdout).into_owned();
    assert!(text.contains("Mountpoint:") && text.contains("Upper:") && text.contains("PID:"), "{text}");
    let out = run(&[os("ps")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("IMAGE") && text.contains(&*a.to_string_lossy()) && text.contains(&*b.to_string_lossy()), "{text}");
    ma.unmount().unwrap();
    assert!(ps_entry(&a).is_none() && ps_entry(&b).is_some());
    mb.unmount().unwrap();
}

#[test]
fn options_read_only_misspelled_and_unknown() {
    if should_skip("options_read_only_misspelled_and_unknown") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    let mnt = t.path().join("mnt");
    std::fs::create_dir_all(&lower).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let (u, w) = (t.path().join("u"), t.path().join("w"));
    std::fs::create_dir_all(&u).unwrap();
    std::fs::create_dir_all(&w).unwrap();
    let base = format!("lowerdir={},upperdir={},workdir={}", lower.display(), u.display(), w.display());
    for typo in ["readonly", "rdonly", "read-only", "ro=1"] {
        let out = run(&[os("-o"), os(&format!("{base},{typo}")), mnt.as_os_str()]);
        refused(&out, 2, &["-o ro"]);
        assert!(mountinfo_line(&mnt).is_none(), "{typo}: nothing mounted");
    }
    let out = run(&[os("-o"), os(&format!("{base},lazytme,x-systemd.automount,context=\"a,b\",rw,dev")), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut m = Mounted::adopt(&mnt);
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "only the unknown option is named: {lines:?}");
    assert!(lines[0].contains("lazytme") && lines[0].contains("lazytime"), "{}", lines[0]);
    m.unmount().unwrap();
}

#[test]
fn a_record_directory_of_another_user_is_refused() {
    if should_skip("a_record_directory_of_another_user_is_refused") {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED a_record_directory_of_another_user_is_refused: setpriv is missing");
        return;
    }
    // uid 65533 has no XDG_RUNTIME_DIR: its records would live in /tmp/unionmount-65533.
    let dir = PathBuf::from("/tmp/unionmount-65533");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap(); // owned by root: planted by "another user"
    let as_user = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65533", "--regid=65533", "--clear-groups", bin()])
            .args(args)
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .unwrap()
    };
    refused(&as_user(&["ps"]), 1, &["/tmp/unionmount-65533", "belongs to uid 0", "not to you"]);
    // Its own directory, left open by an older version, is closed and used.
    std::os::unix::fs::chown(&dir, Some(65533), Some(65533)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = as_user(&["ps"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_and_forgotten_arguments() {
    let out = run(&[os("--help")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for c in ["images", "inspect", "ps", "umount", "diff", "commit", "which", "help"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(c)), "--help lists {c}: {text}");
    }
    let out = run(&[os("help"), os("diff")]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--upper"));
    refused(&run(&[os("help"), os("nosuch")]), 2, &["nosuch"]);
    refused(&run(&[os("--store"), os("/nonexistent"), os("deb:app")]), 2, &["no mountpoint given", "deb:app"]);
    refused(&run(&[os("unmount"), os("/mnt/x")]), 2, &["unionmount umount /mnt/x"]);
    refused(&run(&[os("images"), os("--bogus")]), 2, &["--bogus"]);
    refused(&run(&[os("diff")]), 2, &["TARGET"]);
}

/// The fixture stores: (name, path) after extracting those that are tars of directories.
fn fixture_stores(t: &Path) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    for name in ["docker-root", "containers-storage", "oci-layout"] {
        v.push((name.to_string(), common::extract_fixture(name, t)));
    }
    v.push(("docker-save".into(), common::fixture_dir().join("docker-save.tar")));
    v
}

#[test]
fn images_flags_and_inspect_against_the_fixture_stores() {
    if !common::fixture_dir().join("docker-save.tar").exists() {
        eprintln!("SKIPPED images_flags_and_inspect_against_the_fixture_stores: fixture not found");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let size = |s: &str| s == "N/A" || {
        let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
        ["B", "kB", "MB", "GB", "TB"].contains(&unit) && num.parse::<f64>().is_ok() && num.replace('.', "").len() <= 3
    };
    for (name, store) in fixture_stores(t.path()) {
        let images = |extra: &[&str]| {
            let out = Command::new(bin()).arg("images").arg("--store").arg(&store).args(extra).output().unwrap();
            assert!(out.status.success(), "{name} {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let table = images(&[]);
        let rows: Vec<&str> = table.lines().skip(1).collect();
        assert!(table.starts_with("REPOSITORY") && !rows.is_empty(), "{name}: {table}");
        for r in &rows {
            let cells: Vec<&str> = r.split_whitespace().collect();
            assert!(size(cells.last().unwrap()), "{name}: docker-style size in {r:?}");
        }
        let q = images(&["-q"]);
        assert!(!q.is_empty() && q.lines().all(|l| l.len() == 12 && l.bytes().all(|b| b.is_ascii_hexdigit())), "{name}: {q}");
        let full = images(&["-q", "--no-trunc"]);
        assert!(full.lines().all(|l| l.starts_with("sha256:") && l.len() == 71), "{name}: {full}");
        assert_eq!(q.lines().count(), full.lines().count());
        assert!(images(&["-a"]).lines().count() >= table.lines().count());
        // REPOSITORY argument and reference filters (an OCI layout names tags only).
        let tiny_row = |l: &str| l.starts_with("tiny ") || l.starts_with("localhost/tiny ");
        if name == "oci-layout" {
            assert!(rows.iter().all(|r| r.starts_with("<none> ")), "{table}");
        } else {
            let tiny = images(&["tiny"]);
            assert!(tiny.lines().skip(1).all(tiny_row) && tiny.lines().count() > 1, "{name}: {tiny}");
            assert_eq!(images(&["tiny:nosuchtag"]).lines().count(), 1, "header only");
            let f = images(&["--filter", "reference=ti*"]);
            assert!(f.lines().count() > 1 && f.lines().skip(1).all(tiny_row), "{name}: {f}");
        }
        assert_eq!(images(&["--filter", "reference=nomatch*"]).lines().count(), 1);
        for line in images(&["--format", "json"]).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["Repository"].is_string() && v["Tag"].is_string() && v["ID"].is_string(), "{v}");
            assert!(size(v["Size"].as_str().unwrap()), "{v}");
        }
        // inspect IMAGE: config fields and history where the store holds the config.
        let out = Command::new(bin()).arg("inspect").arg("--store").arg(&store).args(["tiny:app", "--json"]).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["layers"].as_array().unwrap().len(), 5);
        // Every store holds the config, a `docker save` archive too.
        assert!(v["os"].is_string() && v["history"].as_array().is_some_and(|h| !h.is_empty()), "{name}: {v}");
        let out = Command::new(bin()).arg("inspect").arg("--store").arg(&store).arg("tiny:app").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Platform: linux/") && text.contains("History:"), "{name}: {text}");
    }
    let out = Command::new(bin()).args(["images", "--filter", "dangling=true"]).output().unwrap();
    refused(&out, 2, &["reference=PATTERN"]);
}

#[test]
fn permission_problems_are_reported_as_such() {
    if should_skip("permission_problems_are_reported_as_such") {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIPPED permission_problems_are_reported_as_such: setpriv is missing");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let stores = fixture_stores(t.path());
    let docker = &stores.iter().find(|(n, _)| n == "docker-root").unwrap().1;
    // Docker keeps image/ 0700 (root only): another user learns that, not "not a Docker root".
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin(), "images", "--store"])
        .arg(docker)
        .output()
        .unwrap();
    refused(&out, 1, &["Permission denied", &*docker.join("image").to_string_lossy()]);
}

#[test]
fn a_ten_thousand_deep_path_gives_a_short_line() {
    // No mount is made: every one of these fails before FUSE is touched.
    let t = tempfile::tempdir().unwrap();
    let deep = "d/".repeat(10_000);
    let lower = t.path().join("l");
    std::fs::create_dir(&lower).unwrap();
    let lowerdir = format!("lowerdir={}", lower.display());
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("mountpoint", vec!["-o".into(), lowerdir.clone(), format!("/{deep}")]),
        ("lowerdir", vec!["-o".into(), format!("lowerdir=/{deep}"), t.path().display().to_string()]),
        ("which", vec!["which".into(), format!("/{deep}x")]),
        ("diff", vec!["diff".into(), format!("/{deep}")]),
        ("store", vec!["--store".into(), format!("/{deep}"), "tiny:app".into(), t.path().display().to_string()]),
        ("image name", vec!["inspect".into(), format!("tiny:{}", "x".repeat(20_000))]),
    ];
    for (what, args) in cases {
        let out = Command::new(bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_ne!(out.status.code(), Some(0), "{what}: exit 0");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {} bytes", err.len());
        assert!(err.len() < 600, "{what}: {} byte line: {err}", err.len());
    }
}
