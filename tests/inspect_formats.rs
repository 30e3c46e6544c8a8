//! The declared whiteout forms of a layer are the truth for the mount and for
//! `which`, `diff` and `commit` alike: a Docker overlay2 layer is declared to hold
//! char-device whiteouts only, so `.wh.` names found in it delete nothing and make
//! nothing opaque, in the mount and in every inspect command (and a commit of the
//! image does not turn them into whiteouts either).
//!
//! Needs root (char devices, mounting) and /dev/fuse; skips, saying why, otherwise.

mod common;

use common::synth::{self, E, Image, dir, file};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_unionmount")
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

/// Unmounts on drop (lazily if need be).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if !Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn mount_image(store: &Path, cache: &Path, image: &str, mnt: &Path) -> Mounted {
    std::fs::create_dir_all(mnt).unwrap();
    let out = run(&["--store".as_ref(), store.as_os_str(), "--cache".as_ref(), cache.as_os_str(), image.as_ref(), mnt.as_os_str()]);
    assert!(out.status.success(), "mount {image}: {}", String::from_utf8_lossy(&out.stderr));
    Mounted(mnt.to_path_buf())
}

/// Every path below `root` with its type and content (file data, link target).
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let path = format!("{prefix}{name}");
            let t = e.file_type().unwrap();
            if t.is_dir() {
                out.insert(path.clone(), "dir".into());
                walk(&e.path(), &format!("{path}/"), out);
            } else if t.is_symlink() {
                out.insert(path, format!("link {}", std::fs::read_link(e.path()).unwrap().display()));
            } else {
                out.insert(path, format!("file {}", String::from_utf8_lossy(&std::fs::read(e.path()).unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

fn which(p: &Path) -> (bool, serde_json::Value) {
    let out = run(&["which".as_ref(), "--json".as_ref(), p.as_os_str()]);
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or_default())
}

#[test]
fn markers_in_a_char_device_layer_mean_nothing_anywhere() {
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: needs root (char devices, mounting) and /dev/fuse");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (docker, cache) = (t.path().join("docker"), t.path().join("cache"));
    let bottom = vec![file("gone", "g"), dir("o"), file("o/old", "o"), file("keep", "k")];
    let top = vec![file("x", "x"), dir("o"), file("o/new", "n"), E::Whiteout("keep".into())];
    let built = synth::write_docker(&docker, &[Image::new(&["fmt:1"], vec![bottom, top])]);
    // Stray markers in the top layer's tree, which Docker declares char-device only.
    let top_dir = docker.join("overlay2").join(&built[0].cache_ids[1]).join("diff");
    std::fs::write(top_dir.join(".wh.gone"), "").unwrap();
    std::fs::write(top_dir.join("o/.wh..wh..opq"), "").unwrap();

    let mnt = t.path().join("m");
    let _m = mount_image(&docker, &cache, "fmt:1", &mnt);
    let want: BTreeMap<String, String> = [
        ("gone", "file g"),
        ("o", "dir"),
        ("o/new", "file n"),
        ("o/old", "file o"),
        ("x", "file x"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(tree(&mnt), want, "the mount reads no markers in a char-device layer");

    let (found, v) = which(&mnt.join("gone"));
    assert!(found, "{v}");
    assert_eq!(v["provider"]["layer"], "layer 1");
    let (found, v) = which(&mnt.join("o/old"));
    assert!(found, "{v}");
    assert_eq!(v["provider"]["layer"], "layer 1");
    let (found, v) = which(&mnt.join("o"));
    assert!(found && v["merged"].as_array().unwrap().len() == 1, "{v}");
    let (found, v) = which(&mnt.join("keep"));
    assert!(!found, "{v}");
    assert_eq!(v["deleted_by"]["layer"], "layer 2", "a char-device whiteout is read");

    let out = run(&["diff".as_ref(), mnt.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "nothing changed");

    // A change, then a commit of the whole image: mounted again, it shows the same tree.
    std::fs::write(mnt.join("added"), "a").unwrap();
    let oci = t.path().join("oci");
    let out = run(&["commit".as_ref(), mnt.as_os_str(), "--oci".as_ref(), oci.as_os_str(), "--image".as_ref(), "fmt:2".as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mnt2 = t.path().join("m2");
    let _m2 = mount_image(&oci, &cache, "fmt:2", &mnt2);
    assert_eq!(tree(&mnt2), tree(&mnt), "the committed image shows what the mount showed");
}
