//! A real containerd (Debian's `containerd` 1.6+), started by a test with its own root,
//! state, socket and config under a temp dir (no systemd, CRI and unused snapshotters
//! disabled), driven with `ctr`. Stopped (SIGTERM to the pid we started, then SIGKILL)
//! when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const META_DB: &str = "io.containerd.metadata.v1.bolt/meta.db";
pub const SNAP_DB: &str = "io.containerd.snapshotter.v1.overlayfs/metadata.db";

pub struct Containerd {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub sock: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

fn have(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// The tiny-image fixture's `docker save` archive.
pub fn fixture_save() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/tiny-image/docker-save.tar")
}

pub fn fixture_export() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/tiny-image/tiny-app-export.tar")
}

impl Containerd {
    /// Start one; None (with a SKIP line) only when containerd or ctr is not installed or
    /// we are not root (containerd's overlayfs snapshotter needs root).
    pub fn start() -> Option<Containerd> {
        Containerd::start_in(None)
    }

    /// Like [`Containerd::start`], with the containerd root at `root` (made if missing; the
    /// caller owns and removes it).
    pub fn start_at(root: &Path) -> Option<Containerd> {
        Containerd::start_in(Some(root))
    }

    fn start_in(root: Option<&Path>) -> Option<Containerd> {
        if !have("containerd") || !have("ctr") {
            eprintln!("SKIP: containerd/ctr not installed (Debian package `containerd`)");
            return None;
        }
        if !std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false) {
            eprintln!("SKIP: running containerd needs root");
            return None;
        }
        if !fixture_save().exists() {
            eprintln!("SKIP: fixture {} not found", fixture_save().display());
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut c = Containerd {
            root: root.map(Path::to_path_buf).unwrap_or_else(|| dir.join("root")),
            sock: dir.join("c.sock"),
            dir,
            child: None,
            _tmp: Some(tmp),
        };
        c.spawn();
        Some(c)
    }

    fn spawn(&mut self) {
        let d = &self.dir;
        let cfg = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
"#,
            root = self.root.display(),
            state = d.join("state").display(),
            sock = self.sock.display()
        );
        std::fs::write(d.join("config.toml"), cfg).unwrap();
        let _ = std::fs::remove_file(&self.sock);
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        self.child = Some(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if self.sock.exists() && self.ctr(&["version"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("containerd did not come up: {}", std::fs::read_to_string(d.join("containerd.log")).unwrap_or_default());
    }

    /// Run `ctr -a SOCK ARGS…`; Err(stderr) on failure.
    pub fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ctr").arg("-a").arg(&self.sock).args(args).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `ctr -n NS images import TAR`.
    pub fn import(&self, ns: &str, tar: &Path) {
        let t = tar.to_str().unwrap();
        self.ctr(&["-n", ns, "images", "import", t]).unwrap_or_else(|e| panic!("import into {ns}: {e}"));
    }

    /// Stop (SIGTERM, then SIGKILL after 10 s) and wait.
    pub fn stop(&mut self) {
        if let Some(mut ch) = self.child.take() {
            // SIGTERM to the one process we started, by its pid: containerd shuts down cleanly.
            let _ = Command::new("kill").arg("-TERM").arg(ch.id().to_string()).status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = ch.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    /// Start again on the same root (after [`stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn meta_db(&self) -> PathBuf {
        self.root.join(META_DB)
    }
    pub fn snap_db(&self) -> PathBuf {
        self.root.join(SNAP_DB)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        // Snapshots of a stopped containerd are plain directories: the temp dir removes them.
    }
}
