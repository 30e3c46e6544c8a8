//! The ways the world calls unionmount: directly, through `mount -t fuse.unionmount`, and
//! as containers/storage's mount_program; what /proc/self/mountinfo shows; the one-line
//! error for each refused setup; clean exit on SIGTERM/SIGINT and on unmount.

mod common;

use common::fsops as fs;
use common::layer_spec::{Format, LayerDirs, LayerSet};
use common::overlay_harness::{Mounted, daemon_pids, fuse_bin, fuse_label, mountinfo_line, run_bounded, should_skip, wait_gone};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const LOWER: &str = "f hello world\nd dir\nf dir/inner inner\n";
const TOP: &str = "f top top\n";

fn setup() -> (tempfile::TempDir, LayerDirs) {
    let tmp = tempfile::Builder::new().prefix("umcli").tempdir().unwrap();
    let set = LayerSet::new(&[TOP, LOWER], "");
    let dirs = set.build(&tmp.path().join("x"), &[], Format::Overlay);
    (tmp, dirs)
}

/// The merged view works: lower content readable, a write lands in upper (if any).
fn check_works(mnt: &Path, upper: Option<&Path>) {
    assert_eq!(fs::cat(&mnt.join("hello")).unwrap(), "world");
    assert_eq!(fs::cat(&mnt.join("top")).unwrap(), "top");
    assert_eq!(fs::list_names(&mnt.join("dir")).unwrap(), vec!["inner"]);
    match upper {
        Some(u) => {
            fs::write_file(&mnt.join("new"), libc::O_CREAT, b"n").unwrap();
            assert_eq!(fs::cat(&u.join("new")).unwrap(), "n");
        }
        None => {
            let r = fs::write_file(&mnt.join("new"), libc::O_CREAT, b"n");
            assert_eq!(r, Err(fs::Errno(libc::EROFS)), "read-only mount (no upperdir) must refuse writes");
        }
    }
}

/// (fs type, source) fields of the mountinfo line of `mnt`.
fn type_and_source(mnt: &Path) -> (String, String) {
    let line = mountinfo_line(mnt).unwrap_or_else(|| panic!("{mnt:?} not in mountinfo"));
    let after = line.split(" - ").nth(1).expect("mountinfo separator");
    let mut f = after.split(' ');
    (f.next().unwrap().to_string(), f.next().unwrap().to_string())
}

fn assert_type(mnt: &Path, fsname: &str) {
    let (ty, src) = type_and_source(mnt);
    assert_eq!(ty, format!("fuse.{}", fuse_label()), "fs type in mountinfo");
    assert_eq!(src, fsname, "fsname (source) in mountinfo");
}

#[test]
fn direct_form() {
    if should_skip("direct_form") {
        return;
    }
    let (_tmp, d) = setup();
    let mut m = Mounted::fuse(&d, "").unwrap();
    assert_type(&d.mnt, &fuse_label());
    check_works(&d.mnt, Some(&d.upper));
    m.unmount().unwrap();
}

#[test]
fn direct_form_options_after_positional_and_fsname() {
    if should_skip("options_after_positional") {
        return;
    }
    let (_tmp, d) = setup();
    let opts = format!("{},fsname=myimage,some_unknown_option=1,noatime", d.overlay_options());
    let mut cmd = Command::new(fuse_bin());
    cmd.arg(&d.mnt).arg("-o").arg(&opts);
    let (code, _, err) = run_bounded(&mut cmd, Duration::from_secs(30));
    assert_eq!(code, Some(0), "stderr: {err}");
    let mut m = Mounted::adopt(&d.mnt);
    assert_type(&d.mnt, "myimage");
    check_works(&d.mnt, Some(&d.upper));
    m.unmount().unwrap();
}

#[test]
fn read_only_without_upper_and_escaped_colon() {
    if should_skip("read_only") {
        return;
    }
    let (tmp, d) = setup();
    // A lower directory whose name holds a colon, written `\:` in lowerdir.
    let odd = tmp.path().join("odd:name");
    std::fs::rename(&d.lowers[1], &odd).unwrap();
    let esc = odd.to_string_lossy().replace(':', "\\:");
    let opts = format!("lowerdir={}:{esc}", d.lowers[0].display());
    let mut m = Mounted::fuse_args(&["-o", &opts], &d.mnt).unwrap();
    check_works(&d.mnt, None);
    m.unmount().unwrap();
}

#[test]
fn source_positional_form() {
    if should_skip("source_positional") {
        return;
    }
    let (_tmp, d) = setup();
    let opts = d.overlay_options();
    let mut m = Mounted::fuse_args(&["some-source", "-o", &opts], &d.mnt).unwrap();
    check_works(&d.mnt, Some(&d.upper));
    m.unmount().unwrap();
}

/// mount(8) → mount.fuse3 → `/bin/sh -c "unionmount SRC MNT -o opts"`. mount(8) drops
/// PATH before running helpers, so the program is found only through the shell's default
/// PATH: the test runs in a private mount namespace (nothing leaks to the host) where a
/// tmpfs over /usr/local/sbin holds a `unionmount` symlink to the binary under test.
#[test]
fn mount_t_fuse_form() {
    if should_skip("mount_t_fuse_form") {
        return;
    }
    let (_tmp, d) = setup();
    let script = r#"
set -e
mount -t tmpfs umtest /usr/local/sbin
ln -s "$BIN" "/usr/local/sbin/$NAME"
mount -t "fuse.$NAME" imagesrc "$MNT" -o "$OPTS"
grep " $MNT " /proc/self/mountinfo | sed 's/^/MOUNTINFO /'
echo "HELLO $(cat "$MNT/hello")"
echo written > "$MNT/new"
umount "$MNT"
echo UNMOUNTED
"#;
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("BIN", fuse_bin())
        .env("NAME", fuse_label())
        .env("MNT", &d.mnt)
        .env("OPTS", d.overlay_options());
    let (code, out, err) = run_bounded(&mut cmd, Duration::from_secs(60));
    assert_eq!(code, Some(0), "mount -t fuse.{} in a private namespace failed:\n{out}{err}", fuse_label());
    let info = out.lines().find_map(|l| l.strip_prefix("MOUNTINFO ")).expect("mountinfo line");
    let mut fields = info.split(" - ").nth(1).unwrap().split(' ');
    assert_eq!(fields.next(), Some(format!("fuse.{}", fuse_label()).as_str()), "type in mountinfo: {info}");
    assert!(out.contains("HELLO world"), "merged view through mount -t: {out}");
    assert!(out.contains("UNMOUNTED"), "{out}{err}");
    // umount(8) must end the daemon, which then has written through to the upper layer.
    assert!(wait_gone(&daemon_pids(&d.mnt), &d.mnt, Duration::from_secs(20)), "daemon still running after umount");
    assert_eq!(fs::cat(&d.upper.join("new")).as_deref(), Ok("written\n"));
}

/// containers/storage: run from the driver's home with relative lower paths, an empty
/// option, `volatile`, id mappings and a quoted SELinux context holding commas.
#[test]
fn mount_program_form() {
    if should_skip("mount_program_form") {
        return;
    }
    let (_tmp, d) = setup();
    let home = d.base.clone();
    for extra in [
        ",volatile".to_string(),
        ",volatile,uidmapping=0:1000:1,gidmapping=0:1000:1".to_string(),
        ",volatile,context=\"system_u:object_r:container_file_t:s0:c1,c2\",xino=off,metacopy=on".to_string(),
    ] {
        let opts = format!("lowerdir=lower0:lower1,upperdir=upper,workdir=work,{extra}");
        let mut cmd = Command::new(fuse_bin());
        cmd.current_dir(&home).args(["-o", &opts]).arg("mnt");
        let (code, _, err) = run_bounded(&mut cmd, Duration::from_secs(30));
        assert_eq!(code, Some(0), "options {opts:?}: stderr {err}");
        let mut m = Mounted::adopt(&d.mnt);
        assert!(mountinfo_line(&d.mnt).is_some(), "options {opts:?}: not mounted");
        assert_eq!(fs::cat(&d.mnt.join("hello")).unwrap(), "world", "options {opts:?}");
        assert_eq!(fs::list_names(&d.mnt.join("dir")).unwrap(), vec!["inner"]);
        m.unmount().unwrap();
    }
}

/// Run the binary with `args`; it must fail with exactly one line on stderr, naming the
/// problem (one of `keywords`, case-insensitive), and mount nothing.
fn expect_refusal(what: &str, args: &[String], cwd: &Path, mnt: &Path, keywords: &[&str]) {
    let mut cmd = Command::new(fuse_bin());
    cmd.current_dir(cwd).args(args);
    let (code, _out, err) = run_bounded(&mut cmd, Duration::from_secs(30));
    let mounted = mountinfo_line(mnt).is_some();
    let _guard = mounted.then(|| Mounted::adopt(mnt));
    assert!(!mounted, "{what}: mounted anyway");
    assert!(code.is_some_and(|c| c != 0), "{what}: exit code {code:?}, want non-zero");
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 1, "{what}: want one line on stderr, got {lines:?}");
    let l = lines[0].to_lowercase();
    assert!(
        keywords.iter().any(|k| l.contains(&k.to_lowercase())),
        "{what}: the message {:?} names none of {keywords:?}",
        lines[0]
    );
    eprintln!("{what}: {}", lines[0]);
}

/// Set up layers and run `case` (which returns the arguments and the path that must not
/// get mounted), then expect a one-line refusal.
fn refusal(what: &str, keywords: &[&str], case: impl FnOnce(&Path, &LayerDirs) -> (Vec<String>, std::path::PathBuf)) {
    if should_skip(what) {
        return;
    }
    let (tmp, d) = setup();
    let (args, mnt) = case(tmp.path(), &d);
    expect_refusal(what, &args, tmp.path(), &mnt, keywords);
}

fn args(opts: String, mnt: &Path) -> Vec<String> {
    vec!["-o".to_string(), opts, mnt.display().to_string()]
}

#[test]
fn refuses_missing_lowerdir() {
    refusal("missing lowerdir", &["lowerdir"], |_, d| {
        (args(format!("upperdir={},workdir={}", d.upper.display(), d.work.display()), &d.mnt), d.mnt.clone())
    });
}

#[test]
fn refuses_nonexistent_lowerdir() {
    refusal("lowerdir does not exist", &["nope"], |tmp, d| {
        let opts = format!("lowerdir={},upperdir={},workdir={}", tmp.join("nope").display(), d.upper.display(), d.work.display());
        (args(opts, &d.mnt), d.mnt.clone())
    });
}

#[test]
fn refuses_mountpoint_not_a_directory() {
    refusal("mountpoint not a directory", &["not a directory", "plainfile"], |tmp, d| {
        let file = tmp.join("plainfile");
        std::fs::write(&file, "x").unwrap();
        (args(d.overlay_options(), &file), file)
    });
}

#[test]
fn refuses_missing_mountpoint() {
    refusal("mountpoint does not exist", &["does-not-exist"], |tmp, d| {
        let missing = tmp.join("does-not-exist");
        (args(d.overlay_options(), &missing), missing)
    });
}

#[test]
fn refuses_layer_inside_mountpoint() {
    refusal("layer inside the mountpoint", &["mountpoint", "mount point"], |_, d| {
        let inside = d.mnt.join("sub");
        std::fs::create_dir(&inside).unwrap();
        let opts = format!("lowerdir={},upperdir={},workdir={}", inside.display(), d.upper.display(), d.work.display());
        (args(opts, &d.mnt), d.mnt.clone())
    });
}

#[test]
fn refuses_layer_that_is_the_mountpoint() {
    refusal("layer is the mountpoint", &["mountpoint", "mount point"], |_, d| {
        let opts = format!("lowerdir={},upperdir={},workdir={}", d.mnt.display(), d.upper.display(), d.work.display());
        (args(opts, &d.mnt), d.mnt.clone())
    });
}

#[test]
fn refuses_workdir_inside_upperdir() {
    refusal("workdir inside upperdir", &["workdir"], |_, d| {
        let w = d.upper.join("w");
        std::fs::create_dir(&w).unwrap();
        let opts = format!("lowerdir={},upperdir={},workdir={}", d.lowers[1].display(), d.upper.display(), w.display());
        (args(opts, &d.mnt), d.mnt.clone())
    });
}

#[test]
fn refuses_upper_and_work_on_different_filesystems() {
    if should_skip("different filesystems") {
        return;
    }
    let (tmp, d) = setup();
    let tmpfs = tmp.path().join("tmpfs");
    std::fs::create_dir(&tmpfs).unwrap();
    let mut mount = Command::new("mount");
    mount.args(["-t", "tmpfs", "tmpfs"]).arg(&tmpfs);
    let (code, out, err) = run_bounded(&mut mount, Duration::from_secs(30));
    assert_eq!(code, Some(0), "mount tmpfs: {out}{err}");
    let _tmpfs_guard = Mounted::adopt(&tmpfs);
    let other_work = tmpfs.join("work");
    std::fs::create_dir(&other_work).unwrap();
    let opts = format!("lowerdir={},upperdir={},workdir={}", d.lowers[1].display(), d.upper.display(), other_work.display());
    let kw = ["filesystem", "file system", "device"];
    expect_refusal("upper and work on different filesystems", &args(opts, &d.mnt), tmp.path(), &d.mnt, &kw);
}

/// Wait (bounded) for `mnt` to appear in mountinfo: the only readiness signal of `-f`.
fn wait_mounted(mnt: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    while mountinfo_line(mnt).is_none() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("foreground daemon exited before mounting: {st}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not mounted after 30s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_exit(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn foreground_daemon_ends_cleanly_on_sigterm_and_sigint() {
    if should_skip("signals") {
        return;
    }
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (_tmp, d) = setup();
        let mut child = Command::new(fuse_bin())
            .args(["-f", "-o", &d.overlay_options()])
            .arg(&d.mnt)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_mounted(&d.mnt, &mut child);
        let _guard = Mounted::adopt(&d.mnt);
        check_works(&d.mnt, Some(&d.upper));
        unsafe { libc::kill(child.id() as i32, sig) };
        let st = wait_exit(&mut child).expect("daemon did not exit within 30s of the signal");
        assert!(mountinfo_line(&d.mnt).is_none(), "signal {sig}: still mounted after exit");
        assert_eq!(st.code(), Some(0), "signal {sig}: exit status {st}");
    }
}

#[test]
fn daemon_exits_on_fusermount_unmount() {
    if should_skip("fusermount_unmount") {
        return;
    }
    let (_tmp, d) = setup();
    let m = Mounted::fuse(&d, "").unwrap();
    let pids = daemon_pids(&d.mnt);
    assert!(!pids.is_empty(), "no daemon process found for the mount");
    let (code, out, err) = run_bounded(Command::new("fusermount3").arg("-u").arg(&d.mnt), Duration::from_secs(30));
    assert_eq!(code, Some(0), "fusermount3 -u: {out}{err}");
    assert!(wait_gone(&pids, &d.mnt, Duration::from_secs(20)), "daemon still running after fusermount3 -u");
    assert!(mountinfo_line(&d.mnt).is_none());
    drop(m);
}

#[test]
fn refuses_mountpoint_already_mounted() {
    if should_skip("already mounted") {
        return;
    }
    let (tmp, d) = setup();
    let mut first = Mounted::fuse(&d, "").unwrap();
    let pids = daemon_pids(&d.mnt);
    let mut cmd = Command::new(fuse_bin());
    cmd.args(["-o", &d.overlay_options()]).arg(&d.mnt);
    let (code, _out, err) = run_bounded(&mut cmd, Duration::from_secs(30));
    let stacked = daemon_pids(&d.mnt).into_iter().any(|p| !pids.contains(&p));
    let lines: Vec<&str> = err.trim().lines().collect();
    if stacked {
        // Undo a second mount stacked on the first before failing.
        let _second = Mounted::adopt(&d.mnt);
    }
    assert!(code.is_some_and(|c| c != 0) && !stacked, "mounting twice at one mountpoint: exit {code:?}, stacked {stacked}");
    assert_eq!(lines.len(), 1, "want one line on stderr, got {lines:?}");
    let l = lines[0].to_lowercase();
    assert!(["mounted", "busy", "mountpoint", "mount point"].iter().any(|k| l.contains(k)), "message {:?}", lines[0]);
    first.unmount().unwrap();
    drop(tmp);
}

/// Random and malformed option strings and arguments: the binary may refuse them, but
/// must never panic (exit 101 / "panicked" on stderr). The mountpoint never exists, so
/// nothing gets mounted.
#[test]
fn malformed_options_never_panic() {
    let seed = common::rng::seed_from_env("UNIONMOUNT_SEED");
    let mut rng = common::rng::Rng(seed);
    let pieces = [
        "lowerdir=", "upperdir=", "workdir=", "/tmp", ":", "::", ",", ",,", "\\", "\\:", "\"", "=", "==",
        "context=\"a,b\"", "context=\"", "uidmapping=0:1000:1", "uidmapping=x:y", "gidmapping=0:1000:65536:",
        "squash_to_uid=", "squash_to_uid=-1", "fsname=", "volatile", "fsync=0", "cache_entries=", "cache_entries=99999999999999999999",
        "ro", "rw", "xino=off", "metacopy=on", "\u{e9}", "\n", " ", "lowerdir=/nonexistent", "-", "--",
    ];
    let missing_mnt = "/nonexistent-unionmount-fuzz-mountpoint";
    for i in 0..150 {
        let n = 1 + rng.below(6);
        let opts: String = (0..n).map(|_| *rng.pick(&pieces)).collect();
        let mut args: Vec<std::ffi::OsString> = vec![];
        match i % 4 {
            0 => args.extend(["-o".into(), opts.clone().into(), missing_mnt.into()]),
            1 => args.extend([missing_mnt.into(), "-o".into(), opts.clone().into()]),
            2 => args.extend(["-o".into(), opts.clone().into()]),
            _ => {
                use std::os::unix::ffi::OsStringExt;
                let raw = std::ffi::OsString::from_vec(vec![b'l', 0xff, b'=', 0xfe, b':']);
                args.extend(["-o".into(), raw, "-f".into(), "-d".into(), missing_mnt.into(), "extra".into()]);
            }
        }
        let mut cmd = Command::new(fuse_bin());
        cmd.args(&args);
        let (code, _out, err) = run_bounded(&mut cmd, Duration::from_secs(30));
        assert!(code != Some(101) && !err.contains("panicked"), "seed {seed}, args {args:?}: panic (exit {code:?}): {err}");
        assert!(code.is_some(), "seed {seed}, args {args:?}: killed or timed out: {err}");
    }
}

/// `-d` logs each request (here: the lookup of a file) to stderr.
#[test]
fn debug_flag_logs_requests() {
    if should_skip("debug_flag") {
        return;
    }
    let (tmp, d) = setup();
    let log = tmp.path().join("daemon.log");
    let mut child = Command::new(fuse_bin())
        .args(["-f", "-d", "-o", &d.overlay_options()])
        .arg(&d.mnt)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_mounted(&d.mnt, &mut child);
    let _guard = Mounted::adopt(&d.mnt);
    assert_eq!(fs::cat(&d.mnt.join("hello")).unwrap(), "world");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_exit(&mut child).expect("daemon did not exit within 30s of SIGTERM");
    let text = std::fs::read_to_string(&log).unwrap().to_lowercase();
    assert!(text.contains("lookup"), "no lookup request logged with -d; log was:\n{}", text.chars().take(2000).collect::<String>());
}

/// Without /dev/fuse (hidden in a private mount namespace by a tmpfs over /dev that holds
/// only /dev/null) the binary refuses with one line naming it.
#[test]
fn refuses_when_dev_fuse_is_absent() {
    if should_skip("dev_fuse_absent") {
        return;
    }
    let (tmp, d) = setup();
    common::overlay_harness::enter_private_mount_namespace();
    let mut mount = Command::new("mount");
    mount.args(["-t", "tmpfs", "umnodev", "/dev"]);
    let (code, out, err) = run_bounded(&mut mount, Duration::from_secs(30));
    assert_eq!(code, Some(0), "tmpfs over /dev: {out}{err}");
    fs::mknod(Path::new("/dev/null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3)).unwrap();
    fs::chmod(Path::new("/dev/null"), 0o666).unwrap();
    assert!(fs::lstat(Path::new("/dev/fuse")).is_err());
    let args = vec!["-o".to_string(), d.overlay_options(), d.mnt.display().to_string()];
    expect_refusal("/dev/fuse absent", &args, tmp.path(), &d.mnt, &["/dev/fuse", "fuse device"]);
}
