//! A real rootless podman (Debian's 4.3) with `mount_program` = unionmount: an ordinary
//! user with subordinate ids copies the fixture image into its own containers-storage with
//! skopeo and runs containers from it, plainly and with `--userns=keep-id`.
//!
//! Nothing on the host changes. The test thread enters its own mount namespace (every
//! process it starts, podman's pause process included, inherits it) and there bind-mounts
//! copies of /etc/passwd, /etc/group, /etc/subuid and /etc/subgid that name the test user,
//! and, where /dev/fuse is root-only (this CI), a 0666 node of the same device over
//! /dev/fuse, as distributions ship it. The user's home, runtime dir and storage live in a
//! temporary directory; at the end the containers are removed, podman's pause process is
//! stopped, and the directory is deleted, also when the test fails.
//!
//! Set `UNIONMOUNT_TEST_FUSE_BIN=/usr/bin/fuse-overlayfs` to run the same scenario through
//! fuse-overlayfs (what podman uses by default), to tell podman set-up problems from ours.

mod common;

use common::fsops as fs;
use common::overlay_harness::{bind, enter_private_mount_namespace, fuse_bin, run_bounded, should_skip};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Time allowed to one podman or skopeo command (the first run sets up the user namespace).
const LIMIT: Duration = Duration::from_secs(240);

/// How many subordinate ids the user gets (what useradd gives by default).
const SUBIDS: u32 = 65536;

/// The image as skopeo stores it in the user's containers-storage.
const IMAGE: &str = "localhost/tiny:app";

/// An ordinary user, known only inside this thread's mount namespace, with subordinate
/// ids, a home holding a rootless containers-storage, and podman configured to mount
/// through the binary under test.
struct RootlessUser {
    uid: u32,
    name: String,
    home: PathBuf,
    runtime: PathBuf,
    /// The mount program podman runs (the binary under test, or a readable copy of it).
    mount_program: PathBuf,
    /// First host id of the user's subordinate range.
    subid_start: u32,
    scratch: tempfile::TempDir,
}

fn need_tool(tool: &str) {
    if Command::new(tool).arg("--version").output().is_err() {
        panic!("{tool} is not installed: apt-get install -y podman skopeo uidmap runc (.ci/run does)");
    }
}

/// A uid that /etc/passwd does not use, different for concurrent test processes and for
/// the tests of one process (each thread has its own namespace and /etc/passwd copy, so
/// the host's file cannot tell them apart; podman keys its locks in /dev/shm by uid).
fn free_uid() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let taken: Vec<u32> = passwd.lines().filter_map(|l| l.split(':').nth(2)?.parse().ok()).collect();
    let nth = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4;
    let mut uid = 43000 + (std::process::id() % 1000) * 4 + nth;
    while taken.contains(&uid) {
        uid += 1;
    }
    uid
}

impl RootlessUser {
    /// Enter a private mount namespace and set the user up there.
    fn new() -> RootlessUser {
        for tool in ["podman", "skopeo", "newuidmap", "newgidmap"] {
            need_tool(tool);
        }
        let scratch = tempfile::Builder::new().prefix("umpodman").tempdir().unwrap();
        fs::chmod(scratch.path(), 0o755).unwrap();
        let uid = free_uid();
        let name = format!("umpod{uid}");
        let (home, runtime) = (scratch.path().join("home"), scratch.path().join("run"));

        enter_private_mount_namespace();
        // Shared again, but in peer groups of this namespace only: podman wants / shared
        // (it warns otherwise), and nothing propagates back to the host.
        // SAFETY: plain syscall with valid pointers.
        let r = unsafe {
            let root = fs::cpath(Path::new("/"));
            libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_SHARED, std::ptr::null())
        };
        assert_eq!(r, 0, "make / shared in the private namespace: {}", fs::Errno::last());
        // podman's shared-memory locks live in /dev/shm, named by uid: a private one keeps
        // a lock file left by an earlier, killed run from meeting this one.
        // SAFETY: plain syscall with valid NUL-terminated strings.
        let r = unsafe {
            let (src, dst, ty) = (fs::cpath(Path::new("tmpfs")), fs::cpath(Path::new("/dev/shm")), fs::cpath(Path::new("tmpfs")));
            libc::mount(src.as_ptr(), dst.as_ptr(), ty.as_ptr(), libc::MS_NOSUID | libc::MS_NODEV, std::ptr::null())
        };
        assert_eq!(r, 0, "a private /dev/shm in the private namespace: {}", fs::Errno::last());

        let subid_start = 1_000_000 + (uid - 43000) * SUBIDS;
        for (file, line) in [
            ("passwd", format!("{name}:x:{uid}:{uid}:unionmount podman test:{}:/bin/sh\n", home.display())),
            ("group", format!("{name}:x:{uid}:\n")),
            ("subuid", format!("{name}:{subid_start}:{SUBIDS}\n")),
            ("subgid", format!("{name}:{subid_start}:{SUBIDS}\n")),
        ] {
            let etc = Path::new("/etc").join(file);
            let mut text = std::fs::read_to_string(&etc).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&line);
            let copy = scratch.path().join(file);
            std::fs::write(&copy, text).unwrap();
            fs::chmod(&copy, 0o644).unwrap();
            if !etc.exists() {
                std::fs::write(&etc, "").unwrap();
            }
            bind(&copy, &etc);
        }
        let st = fs::stat(Path::new("/dev/fuse")).expect("/dev/fuse");
        if st.st_mode & 0o006 != 0o006 {
            let node = scratch.path().join("fuse-node");
            fs::mknod(&node, libc::S_IFCHR | 0o666, st.st_rdev).unwrap();
            fs::chmod(&node, 0o666).unwrap();
            bind(&node, Path::new("/dev/fuse"));
            eprintln!("/dev/fuse has mode {:o} here: using a 0666 node in a private mount namespace", st.st_mode & 0o777);
        }

        // The mount program must be executable by the user (target/ may not be).
        let bin = fuse_bin();
        let cbin = fs::cpath(&bin);
        // SAFETY: access(2) with a valid path, in the forked child.
        let usable = fs::as_user(uid, uid, || if unsafe { libc::access(cbin.as_ptr(), libc::X_OK) } == 0 { 0 } else { 1 }).is_ok();
        let mount_program = if usable {
            bin
        } else {
            let copy = scratch.path().join("bin").join(bin.file_name().unwrap());
            std::fs::create_dir(copy.parent().unwrap()).unwrap();
            std::fs::copy(&bin, &copy).unwrap();
            fs::chmod(copy.parent().unwrap(), 0o755).unwrap();
            fs::chmod(&copy, 0o755).unwrap();
            copy
        };

        let config = home.join(".config/containers");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(&runtime).unwrap();
        fs::chmod(&runtime, 0o700).unwrap();
        // contrib/storage.conf, as the README tells users to install it, pointing at the
        // binary under test.
        let contrib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/storage.conf")).unwrap();
        let storage: String = contrib
            .lines()
            .map(|l| if l.starts_with("mount_program") { format!("mount_program = \"{}\"\n", mount_program.display()) } else { format!("{l}\n") })
            .collect();
        assert!(storage.contains(&mount_program.display().to_string()), "contrib/storage.conf has no mount_program line");
        std::fs::write(config.join("storage.conf"), storage).unwrap();
        // No network (nothing to reach), cgroups v1 here (no systemd user session), no journald.
        std::fs::write(
            config.join("containers.conf"),
            "[containers]\nnetns = \"none\"\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .unwrap();
        for d in [&home, &runtime] {
            chown_tree(d, uid);
        }
        RootlessUser { uid, name, home, runtime, mount_program, subid_start, scratch }
    }

    /// A command run as the user, with a login-like environment and nothing else.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.uid(self.uid)
            .gid(self.uid)
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .current_dir(&self.home);
        c
    }

    /// Run as the user; the exit code, stdout and stderr.
    fn run(&self, program: &str, args: &[&str]) -> (Option<i32>, String, String) {
        let mut c = self.command(program);
        c.args(args);
        run_bounded(&mut c, LIMIT)
    }

    /// Run as the user, which must succeed; its stdout.
    fn ok(&self, program: &str, args: &[&str]) -> String {
        let (code, out, err) = self.run(program, args);
        assert_eq!(code, Some(0), "{program} {args:?} as {}: exit {code:?}\nstdout:\n{out}\nstderr:\n{err}", self.name);
        out
    }

    /// The fixture's OCI layout copied into the user's containers-storage as `IMAGE`.
    fn pull_fixture(&self) {
        let oci = self.scratch.path().join("oci");
        std::fs::create_dir(&oci).unwrap();
        let tar = common::fixture_dir().join("oci-layout.tar");
        let st = Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&oci).status().expect("tar");
        assert!(st.success(), "extract {tar:?}");
        chown_tree(&oci, self.uid);
        self.ok("skopeo", &["copy", "--quiet", &format!("oci:{}:app", oci.display()), &format!("containers-storage:{IMAGE}")]);
    }

    /// The user's rootless containers-storage.
    fn store(&self) -> PathBuf {
        self.home.join(".local/share/containers/storage")
    }
}

fn chown_tree(p: &Path, uid: u32) {
    fs::lchown(p, uid, uid).unwrap();
    if fs::is_dir(&fs::lstat(p).unwrap()) {
        for n in fs::list_names(p).unwrap() {
            chown_tree(&p.join(n), uid);
        }
    }
}

impl Drop for RootlessUser {
    fn drop(&mut self) {
        // Containers first (podman unmounts their root file systems), then podman's
        // pause process, which holds the user namespace.
        let (code, _, err) = self.run("podman", &["rm", "--all", "--force", "--time", "0"]);
        if code != Some(0) {
            eprintln!("cleanup: podman rm --all: exit {code:?}: {}", err.trim());
        }
        let pidfile = self.runtime.join("libpod/tmp/pause.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            // Only if it is still the user's process (the pid file may be stale).
            let owner = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1).map(String::from)))
                .flatten();
            if owner == Some(self.uid.to_string()) {
                // SAFETY: kill(2) on a pid we checked belongs to the test user.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let start = Instant::now();
                while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        // The temporary directory goes with `scratch`.
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect()
}

/// The container's `/` (its mountinfo line) is a FUSE mount made by the mount program
/// named in storage.conf (its name is the file system's source).
fn assert_mounted_by(user: &RootlessUser, mountinfo: &str) {
    let want = user.mount_program.file_name().unwrap().to_string_lossy().into_owned();
    let fields: Vec<&str> = mountinfo.split(" - ").nth(1).unwrap_or("").split(' ').collect();
    assert!(
        fields.first().is_some_and(|t| t.starts_with("fuse")) && fields.get(1) == Some(&want.as_str()),
        "the container's / was not mounted by {want}: {mountinfo}"
    );
}

#[test]
fn rootless_podman_runs_containers_through_the_mount_program() {
    if should_skip("rootless_podman") {
        return;
    }
    let user = RootlessUser::new();
    user.pull_fixture();

    // First start: read lower files, write, remove, rename a lower directory. Second
    // start of the same container (a new mount of the same upper): the changes are there.
    let script = "set -e
        if [ -e /etc/new ]; then
            echo second
            cat /etc/new
            busybox ls /opt
            busybox ls /usr/share
            test ! -e /usr/share/doc && echo doc-gone
            busybox stat -c %u:%g /etc/new /etc/motd
        else
            echo first
            busybox grep -m1 '^[0-9]* [0-9]* [0-9:]* / / ' /proc/self/mountinfo
            cat /etc/motd
            cat /opt/copied.txt
            echo written > /etc/new
            cat /etc/new
            rm /opt/copied.txt
            mv /usr/share/doc /usr/share/doc2
            busybox ls /usr/share/doc2/busybox-static
            busybox ls /opt
        fi";
    let out = user.ok("podman", &["run", "--name", "c1", IMAGE, "sh", "-c", script]);
    let l = lines(&out);
    assert_eq!(l[0], "first", "{out}");
    assert_mounted_by(&user, l[1]);
    assert_eq!(
        &l[2..],
        ["back", "copied", "written", "changelog.Debian.amd64.gz", "changelog.Debian.gz", "copyright", "examples", "fifo"],
        "{out}"
    );
    let out = user.ok("podman", &["start", "--attach", "c1"]);
    assert_eq!(
        lines(&out),
        ["second", "written", "fifo", "doc2", "initramfs-tools", "lintian", "man", "stuff", "doc-gone", "0:0", "0:0"],
        "{out}"
    );
    user.ok("podman", &["rm", "c1"]);

    // keep-id (toolbox, distrobox, dev containers): podman passes uidmapping=/gidmapping=
    // so that the image's root files stay root's while the user keeps its own uid.
    user.ok("podman", &["run", "--detach", "--userns=keep-id", "--name", "k1", IMAGE, "busybox", "sleep", "600"]);
    let as_root = "busybox id -u; busybox stat -c %u:%g /etc/motd /opt/copied.txt
        mkdir -m 1777 /shared; echo r > /etc/byroot; busybox stat -c %u:%g /etc/byroot /shared";
    let out = user.ok("podman", &["exec", "--user", "0", "k1", "sh", "-c", as_root]);
    assert_eq!(lines(&out), ["0", "0:0", "0:0", "0:0", "0:0"], "{out}");
    let as_user = "busybox id -u; busybox id -g; busybox stat -c %u:%g /etc/motd
        if echo x >> /etc/motd 2>/dev/null; then echo motd-writable; else echo motd-denied; fi
        echo u > /shared/mine; busybox stat -c %u:%g /shared/mine; busybox chown 0 /shared/mine 2>/dev/null || echo chown-denied";
    let out = user.ok("podman", &["exec", "k1", "sh", "-c", as_user]);
    let me = user.uid.to_string();
    assert_eq!(lines(&out), [me.as_str(), me.as_str(), "0:0", "motd-denied", &format!("{me}:{me}"), "chown-denied"], "{out}");
    let upper = user.ok("podman", &["inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", "k1"]);
    user.ok("podman", &["stop", "--time", "0", "k1"]);
    // On disk (host ids): the image's root is the user (rootless podman's namespace maps
    // 0 to it), the user's own file has on-disk id `uid`, which the host sees as the
    // subordinate id uid-1 of the range.
    let upper = PathBuf::from(upper.trim());
    let host = |p: &str| {
        let st = fs::lstat(&upper.join(p)).unwrap_or_else(|e| panic!("{p} in {upper:?}: {e:?}"));
        (st.st_uid, st.st_gid)
    };
    assert_eq!(host("etc/byroot"), (user.uid, user.uid));
    let sub = user.subid_start + user.uid - 1;
    assert_eq!(host("shared/mine"), (sub, sub));
    user.ok("podman", &["rm", "k1"]);

    // And a keep-id run of its own, as toolbox does it.
    let out = user.ok("podman", &["run", "--rm", "--userns=keep-id", IMAGE, "sh", "-c", "busybox id -u; busybox stat -c %u:%g /etc/motd"]);
    assert_eq!(lines(&out), [me.as_str(), "0:0"], "{out}");
}

/// Read the store's images.json (as root) for the top layer id of `name`.
fn top_layer(user: &RootlessUser, name: &str) -> String {
    let text = std::fs::read_to_string(user.store().join("overlay-images/images.json")).unwrap();
    let images: serde_json::Value = serde_json::from_str(&text).unwrap();
    let img = images.as_array().unwrap().iter().find(|i| i["names"].as_array().is_some_and(|n| n.iter().any(|v| v == name)));
    img.unwrap_or_else(|| panic!("{name} not in images.json")).get("layer").and_then(|l| l.as_str()).unwrap().to_string()
}

/// `unionmount IMAGE` run by the user on its rootless store, whose files belong to the
/// user and to its subordinate ids: it mounts (without passthrough, which needs
/// CAP_SYS_ADMIN), shows the ids as they are on disk, and when a layer cannot be read
/// it says which and why in one line.
#[test]
fn unionmount_image_on_the_users_rootless_store() {
    if should_skip("rootless_store_image") {
        return;
    }
    let user = RootlessUser::new();
    user.pull_fixture();
    // An image with files owned by other ids than root's, as `podman commit` stores them.
    let make = "mkdir -m 700 /secret; echo s > /secret/f; busybox chown -R 1:1 /secret; echo pub > /pub; busybox chown 5:6 /pub";
    user.ok("podman", &["run", "--name", "mk", IMAGE, "sh", "-c", make]);
    user.ok("podman", &["commit", "--quiet", "mk", "localhost/tiny:owned"]);
    user.ok("podman", &["rm", "mk"]);

    let um = user.mount_program.to_str().unwrap().to_string();
    let out = user.ok(&um, &["images"]);
    assert!(out.contains("localhost/tiny") && out.contains("owned"), "{out}");

    let mnt = user.scratch.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    chown_tree(&mnt, user.uid);
    let m = mnt.to_str().unwrap();
    let tmp = user.scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    chown_tree(&tmp, user.uid);
    let mount = |image: &str| {
        let mut c = user.command(&um);
        c.env("UNIONMOUNT_TMPDIR", &tmp).args([image, m]);
        run_bounded(&mut c, LIMIT)
    };
    let (code, _, err) = mount("localhost/tiny:owned");
    assert_eq!(code, Some(0), "unionmount as the user: {err}");
    let sub = user.subid_start;
    let script = "cat MNT/etc/motd; stat -c %u:%g MNT/etc/motd MNT/pub MNT/secret; cat MNT/pub; \
                  ls MNT/secret 2>/dev/null || echo secret-denied; echo new > MNT/etc/new && stat -c %u:%g MNT/etc/new";
    let out = user.ok("sh", &["-c", &script.replace("MNT", m)]);
    let me = format!("{0}:{0}", user.uid);
    assert_eq!(
        lines(&out),
        ["back", me.as_str(), &format!("{}:{}", sub + 4, sub + 5), &format!("{sub}:{sub}"), "pub", "secret-denied", me.as_str()],
        "{out}"
    );
    user.ok("fusermount3", &["-u", m]);

    // The top layer made unsearchable for the user: one line naming it and the reason.
    let top = top_layer(&user, "localhost/tiny:owned");
    let diff = user.store().join("overlay").join(&top).join("diff");
    fs::lchown(&diff, sub + 1, sub + 1).unwrap();
    fs::chmod(&diff, 0o700).unwrap();
    let (code, out, err) = mount("localhost/tiny:owned");
    assert!(code.is_some_and(|c| c != 0), "mounted an unreadable layer: {out}{err}");
    let l = lines(&err);
    eprintln!("unreadable layer: {err}");
    assert_eq!(l.len(), 1, "{err}");
    assert!(l[0].contains(&top) && l[0].contains("Permission denied") && l[0].contains(&format!("uid {}", sub + 1)), "{}", l[0]);
    // The layer's own directory unsearchable: the store says so, not "missing".
    fs::lchown(&diff, user.uid, user.uid).unwrap();
    fs::chmod(&diff, 0o755).unwrap();
    let layer_dir = diff.parent().unwrap();
    let st = fs::lstat(layer_dir).unwrap();
    fs::lchown(layer_dir, sub + 1, sub + 1).unwrap();
    fs::chmod(layer_dir, 0o700).unwrap();
    let (code, _, err) = mount("localhost/tiny:owned");
    assert!(code.is_some_and(|c| c != 0));
    let l = lines(&err);
    eprintln!("unreadable layer directory: {err}");
    assert!(l.len() == 1 && l[0].contains(&top) && l[0].contains("Permission denied") && !l[0].contains("missing"), "{err}");
    fs::lchown(layer_dir, st.st_uid, st.st_gid).unwrap();
    fs::chmod(layer_dir, st.st_mode & 0o7777).unwrap();
}
