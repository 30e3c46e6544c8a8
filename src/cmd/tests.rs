//! Table tests of the command-line parser: the `-o` options and the mount argv.

use super::options::split_options;
use super::*;
use crate::mount::{MountArgs, Passthrough, WhiteoutForm};
use std::ffi::OsStr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

fn args(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn mount(v: &[&str]) -> MountArgs {
    match parse_mount(&args(v)) {
        Ok(Parsed::Mount(m)) => *m,
        other => panic!("{v:?} gave {other:?}"),
    }
}

fn p(s: &str) -> PathBuf {
    PathBuf::from(s)
}

#[test]
fn option_splitting() {
    let cases: &[(&str, &[&str])] = &[
        ("a,b", &["a", "b"]),
        ("a,,b", &["a", "b"]),
        (",volatile,", &["volatile"]),
        (r#"context="x,y",z"#, &[r#"context="x,y""#, "z"]),
        ("", &[]),
    ];
    for (input, want) in cases {
        let got: Vec<String> = split_options(input.as_bytes()).iter().map(|o| String::from_utf8_lossy(o).into()).collect();
        assert_eq!(&got, want, "{input}");
    }
}

#[test]
fn lowerdir_splitting() {
    let cases: &[(&str, &[&str])] = &[
        ("/a:/b:/c", &["/a", "/b", "/c"]),
        (r"/a\:b:/c", &["/a:b", "/c"]),
        (r"/x\\:/y", &[r"/x\", "/y"]),
        ("/only", &["/only"]),
        ("/a::/b", &["/a", "/b"]),
    ];
    for (input, want) in cases {
        let got = split_lowerdir(input.as_bytes());
        let want: Vec<PathBuf> = want.iter().map(|s| p(s)).collect();
        assert_eq!(got, want, "{input}");
    }
}

#[test]
fn the_three_call_forms() {
    // 1. direct
    let m = mount(&["-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w", "/mnt"]);
    assert_eq!(m.opts.lowerdir, vec![p("/l1"), p("/l2")]);
    assert_eq!(m.opts.upperdir, Some(p("/u")));
    assert_eq!(m.mountpoint, p("/mnt"));
    assert!(m.image().is_none());
    // -o after positionals, -f first
    let m = mount(&["-f", "/mnt", "-o", "lowerdir=/l"]);
    assert!(m.foreground);
    assert_eq!(m.mountpoint, p("/mnt"));
    // 2. mount.fuse3: SOURCE MNT -o opts with generic flags
    let m = mount(&["src", "/mnt", "-o", "rw,dev,suid,lazytime,lowerdir=/l,upperdir=/u,workdir=/w"]);
    assert_eq!(m.source, Some("src".into()));
    assert_eq!(m.opts.kernel_flags, vec!["dev".to_string(), "suid".to_string()]);
    assert!(m.opts.ignored.contains(&"lazytime".to_string()));
    assert!(!m.opts.read_only);
    // 3. containers/storage mount_program
    let m = mount(&[
        "-o",
        r#"lowerdir=/a:/b,upperdir=/u,workdir=/w,,volatile,context="system_u:object_r:container_file_t:s0:c1,c2",uidmapping=0:1000:1,gidmapping=0:1000:1,squash_to_uid=0,xino=off,metacopy=on"#,
        "/merged",
    ]);
    assert!(m.opts.no_fsync);
    assert_eq!(m.opts.lowerdir.len(), 2);
    assert_eq!(m.opts.ignored.len(), 3, "{:?}", m.opts.ignored);
    assert!(m.opts.ignored[0].starts_with("context=\"system_u"));
    assert_eq!(m.opts.ids.uids.ranges().len(), 1);
    assert_eq!(m.opts.ids.squash_to_uid, Some(0));
}

#[test]
fn id_options() {
    use crate::union::idmap::IdRange;
    // What containers/storage passes for `podman run --userns=keep-id` as uid 1001.
    let keep_id = ":0:1:1001:1001:0:1:1002:1002:64535";
    let m = mount(&["-o", &format!("lowerdir=/l,uidmapping={keep_id},gidmapping=0:100:10"), "/m"]);
    let r = |ondisk, presented, len| IdRange { ondisk, presented, len };
    assert_eq!(m.opts.ids.uids.ranges(), [r(0, 1, 1001), r(1001, 0, 1), r(1002, 1002, 64535)]);
    assert_eq!(m.opts.ids.gids.ranges(), [r(0, 100, 10)]);
    assert!(!m.opts.ids.squashes() && m.opts.ignored.is_empty());
    let m = mount(&["-o", "lowerdir=/l,squash_to_root,squash_to_uid=7,squash_to_gid=8", "/m"]);
    assert!(m.opts.ids.squash_to_root);
    assert_eq!((m.opts.ids.squash_to_uid, m.opts.ids.squash_to_gid), (Some(7), Some(8)));
    assert!(m.opts.ids.writes_identity());
    // None given: the identity.
    assert!(mount(&["-o", "lowerdir=/l", "/m"]).opts.ids.is_identity());
    // Refused, in one line naming the option.
    for (opt, want) in [
        ("uidmapping=0:1000", "option uidmapping: expected ONDISK:PRESENTED:LEN"),
        ("gidmapping=0:100:10:5:200:10", "option gidmapping: ranges 0:100:10 and 5:200:10 overlap on disk"),
        ("uidmapping=0:x:1", "option uidmapping: \"x\" is not an id"),
        ("gidmapping=0:1:0", "option gidmapping: range 0:1:0 is empty"),
        ("squash_to_uid=-1", "option squash_to_uid: \"-1\" is not an id"),
        ("squash_to_gid=", "option squash_to_gid: \"\" is not an id"),
    ] {
        let e = parse_mount(&args(&["-o", &format!("lowerdir=/l,{opt}"), "/m"])).expect_err(opt);
        assert!(e.starts_with(want) && !e.contains('\n'), "{opt}: {e}");
    }
}

#[test]
fn image_form() {
    let m = mount(&["--store", "/s", "--upper", "/keep", "alpine:3.20", "/mnt"]);
    assert_eq!(m.image(), Some(OsStr::new("alpine:3.20")));
    assert_eq!(m.opts.store, Some(p("/s")));
    assert_eq!(m.upper, Some(p("/keep")));
    let m = mount(&["-o", "ro,store=/s", "img", "/mnt"]);
    assert!(m.opts.read_only);
    let m = mount(&["--read-only", "img", "/mnt"]);
    assert!(m.opts.read_only);
    let m = mount(&["--namespace", "k8s.io", "--platform=linux/arm64", "img", "/mnt"]);
    assert_eq!((m.namespace.as_deref(), m.platform.as_deref()), (Some("k8s.io"), Some("linux/arm64")));
}

#[test]
fn tunables() {
    let m = mount(&["-o", "lowerdir=/l,cache_entries=5,timeout=0.5,threads=3,passthrough=off,whiteout=whfile,fsync=0,fsname=x", "/m"]);
    assert_eq!(m.opts.cache_entries, Some(5));
    assert_eq!(m.opts.timeout, Some(0.5));
    assert_eq!(m.opts.threads, Some(3));
    assert_eq!(m.opts.passthrough, Some(Passthrough::Off));
    assert_eq!(m.opts.whiteout, Some(WhiteoutForm::WhFile));
    assert!(m.opts.no_fsync);
    assert_eq!(m.opts.fsname.as_deref(), Some("x"));
    assert_eq!(m.opts.redirect_dir, None);
    assert_eq!(mount(&["-o", "lowerdir=/l,redirect_dir=off", "/m"]).opts.redirect_dir, Some(false));
    assert_eq!(mount(&["-o", "lowerdir=/l,redirect_dir=on", "/m"]).opts.redirect_dir, Some(true));
}

#[test]
fn errors_are_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["/mnt"], "no lowerdir"),
        (&[], "no mountpoint"),
        (&["-o", "lowerdir=", "/m"], "lowerdir= is empty"),
        (&["-o", "lowerdir=/l,upperdir=/u", "/m"], "go together"),
        (&["-o", "lowerdir=/l,threads=0", "/m"], "threads"),
        (&["-o", "lowerdir=/l,cache_entries=x", "/m"], "not a valid number"),
        (&["-o", "lowerdir=/l,passthrough=maybe", "/m"], "passthrough"),
        (&["-o"], "needs a value"),
        (&["--bogus", "/m"], "unknown argument"),
        (&["a", "b", "c"], "too many"),
        (&["-o", "lowerdir=/l", ""], "empty argument"),
        (&["--upper", "/u", "--read-only", "img", "/m"], "exclude"),
    ];
    for (argv, want) in cases {
        let e = parse_mount(&args(argv)).expect_err(&format!("{argv:?} should fail"));
        assert!(e.contains(want), "{argv:?}: {e}");
        assert!(!e.contains('\n'), "{argv:?}: {e}");
    }
}

#[test]
fn non_utf8_paths_survive() {
    let raw = OsString::from_vec(b"lowerdir=/l\xff\xfe".to_vec());
    let parsed = parse_mount(&[OsString::from("-o"), raw, OsString::from("/m")]).unwrap();
    let Parsed::Mount(m) = parsed else { panic!() };
    assert_eq!(m.opts.lowerdir[0].as_os_str().as_bytes(), b"/l\xff\xfe");
}

#[test]
fn help_and_version() {
    assert_eq!(parse_mount(&args(&["--help"])), Ok(Parsed::Help));
    assert_eq!(parse_mount(&args(&["-V"])), Ok(Parsed::Version));
}
