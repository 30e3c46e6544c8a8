//! The filesystems under test, in the configurations the report compares, and how to
//! mount, find and unmount them.
//!
//! A target is a role (kernel overlayfs, fuse-overlayfs 1.x, fuse-overlayfs 2.0,
//! unionmount) in a durability class: `Durable` fsyncs copied-up data (kernel's and
//! unionmount's default), `Volatile` does not (`volatile`, and fuse-overlayfs, which
//! never fsyncs a copy-up). Ratios are only taken within a class.
//!
//! Every sample gets fresh mounts: `WORK/run-PID/N/{u,w,m}` (upper, work, mount point;
//! a read-only mount has only `m`) is created, the same lower layers are mounted with the
//! target, the workload runs, then the mount is unmounted, the daemon (for FUSE targets)
//! is waited for, and the directory is deleted. Lowerdir paths are relative to the set
//! dir, which is the process's working directory (kernel) or the launcher's (FUSE), as
//! containers/storage does with its `l/` links.

use crate::sys;
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a FUSE launcher may take to daemonize before the mount counts as failed.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Which filesystem a target runs; a role has at most one target per durability class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Role {
    Kernel,
    /// fuse-overlayfs 1.x in C (Debian's package).
    FuseOverlayfs1,
    /// fuse-overlayfs 2.0, the Rust rewrite (crates.io), installed by `peers`.
    FuseOverlayfs2,
    Unionmount,
    /// Another unionmount build (`--baseline`), to compare two builds in one run.
    Baseline,
}

/// Whether a target makes copied-up data durable (fsync) before the copy-up returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Durability {
    /// Copy-ups are fsynced: kernel overlayfs's and unionmount's default.
    Durable,
    /// Nothing is fsynced: `volatile`, and fuse-overlayfs (which never fsyncs a copy-up).
    Volatile,
}

/// The configurations the bench knows: (id, role, durability, also runs read-only workloads).
/// Read-only workloads are not run on the `-volatile` twins: no fsync is involved.
pub const CONFIGS: &[(&str, Role, Durability, bool)] = &[
    ("kernel", Role::Kernel, Durability::Durable, true),
    ("kernel-volatile", Role::Kernel, Durability::Volatile, false),
    (
        "fuse-overlayfs-1",
        Role::FuseOverlayfs1,
        Durability::Volatile,
        true,
    ),
    (
        "fuse-overlayfs-2",
        Role::FuseOverlayfs2,
        Durability::Volatile,
        true,
    ),
    ("unionmount", Role::Unionmount, Durability::Durable, true),
    (
        "unionmount-volatile",
        Role::Unionmount,
        Durability::Volatile,
        false,
    ),
    ("baseline", Role::Baseline, Durability::Durable, true),
    (
        "baseline-volatile",
        Role::Baseline,
        Durability::Volatile,
        false,
    ),
];

#[derive(Clone, Debug)]
pub struct Target {
    /// One of the `CONFIGS` ids; samples are recorded under it.
    pub id: &'static str,
    pub role: Role,
    pub durability: Durability,
    /// Also measured on the read-only workloads.
    pub reads: bool,
    /// Binary for FUSE targets.
    pub bin: Option<PathBuf>,
    /// Extra mount options appended after lowerdir/upperdir/workdir (e.g. `volatile`).
    pub extra_opts: String,
}

/// How one mount of a sample is made.
#[derive(Clone, Copy, Debug, Default)]
pub struct MountSpec<'a> {
    /// With a fresh upper and work dir; without, the mount is read-only (lowerdir only).
    pub writable: bool,
    /// Kernel-only options the workload needs (e.g. `redirect_dir=on`).
    pub kernel_opts: &'a str,
    /// Start the FUSE launcher (and so its daemon) in this memory cgroup.
    pub cgroup: Option<&'a Path>,
}

impl Target {
    /// The configuration `id` (see `CONFIGS`) with its binary and the user's extra options.
    pub fn new(id: &str, bin: Option<PathBuf>, extra: &[&str]) -> Option<Target> {
        let &(id, role, durability, reads) = CONFIGS.iter().find(|c| c.0 == id)?;
        let mut opts: Vec<&str> = extra.iter().copied().filter(|o| !o.is_empty()).collect();
        if durability == Durability::Volatile
            && !matches!(role, Role::FuseOverlayfs1 | Role::FuseOverlayfs2)
        {
            opts.push("volatile");
        }
        Some(Target {
            id,
            role,
            durability,
            reads,
            bin: if role == Role::Kernel { None } else { bin },
            extra_opts: opts.join(","),
        })
    }

    pub fn is_fuse(&self) -> bool {
        self.role != Role::Kernel
    }

    /// A short human name: "kernel", "fuse-overlayfs 2.0.0", "unionmount volatile".
    pub fn label(&self, version: &str) -> String {
        let base = match self.role {
            Role::Kernel => "kernel".to_string(),
            Role::FuseOverlayfs1 | Role::FuseOverlayfs2 => match version.split("version ").nth(1) {
                Some(v) => format!("fuse-overlayfs {}", v.trim()),
                None => self.id.to_string(),
            },
            Role::Unionmount => "unionmount".to_string(),
            Role::Baseline => "baseline".to_string(),
        };
        if self.durability == Durability::Volatile
            && !matches!(self.role, Role::FuseOverlayfs1 | Role::FuseOverlayfs2)
        {
            format!("{base} volatile")
        } else {
            base
        }
    }

    /// A one-line version string, for the record.
    pub fn version(&self) -> String {
        let Some(bin) = &self.bin else {
            return sys::uname();
        };
        match Command::new(bin).arg("--version").output() {
            Ok(o) => {
                // fuse-overlayfs prints fusermount3's version first: prefer our own line.
                let text = format!(
                    "{}\n{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                let me = bin
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
                let first = lines.clone().next().unwrap_or("").to_string();
                lines
                    .find(|l| l.starts_with(&me))
                    .map(str::to_string)
                    .unwrap_or(first)
            }
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Mount `layers` (relative to `set_dir`, top first) under `run_dir` (`u`, `w`, `m`);
    /// the time measured is exec-to-ready (FUSE) or the mount syscall.
    pub fn mount(
        &self,
        set_dir: &Path,
        layers: &[String],
        run_dir: &Path,
        spec: &MountSpec,
    ) -> Result<Mounted, String> {
        let (u, w, m) = (run_dir.join("u"), run_dir.join("w"), run_dir.join("m"));
        let dirs: &[&PathBuf] = if spec.writable { &[&u, &w, &m] } else { &[&m] };
        for d in dirs {
            fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        let mut opts = format!("lowerdir={}", layers.join(":"));
        if spec.writable {
            opts.push_str(&format!(
                ",upperdir={},workdir={}",
                u.display(),
                w.display()
            ));
        }
        let volatile_ro = !spec.writable && self.role == Role::Kernel;
        for extra in [
            self.extra_opts.as_str(),
            if self.is_fuse() { "" } else { spec.kernel_opts },
        ] {
            for o in extra.split(',').filter(|o| !o.is_empty()) {
                // The kernel refuses `volatile` without an upper: nothing to sync there.
                if volatile_ro && o == "volatile" {
                    continue;
                }
                opts.push(',');
                opts.push_str(o);
            }
        }
        let t = Instant::now();
        match &self.bin {
            None => sys::mount_overlay(&m, &opts).map_err(|e| format!("mount -t overlay: {e}"))?,
            Some(bin) => {
                // stderr goes to a file, not a pipe: a daemon that keeps an inherited pipe
                // open would make us wait for its exit rather than the launcher's.
                let log_path = run_dir.join("launcher.log");
                let log = fs::File::create(&log_path)
                    .map_err(|e| format!("{}: {e}", log_path.display()))?;
                let mut cmd = match spec.cgroup {
                    Some(cg) => {
                        let me = std::env::current_exe()
                            .map_err(|e| format!("the bench's own path: {e}"))?;
                        let mut c = Command::new(me);
                        c.arg(crate::memcg::EXEC_ARG).arg(cg).arg(bin);
                        c
                    }
                    None => Command::new(bin),
                };
                let mut child = cmd
                    .current_dir(set_dir)
                    .arg("-o")
                    .arg(&opts)
                    .arg(&m)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .map_err(|e| format!("exec {}: {e}", bin.display()))?;
                let status = loop {
                    match child.try_wait() {
                        Ok(Some(st)) => break Ok(st),
                        Ok(None) if t.elapsed() > LAUNCH_TIMEOUT => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break Err(format!("did not return within {LAUNCH_TIMEOUT:?}"));
                        }
                        Ok(None) => std::thread::sleep(Duration::from_micros(200)),
                        Err(e) => break Err(format!("wait: {e}")),
                    }
                };
                let failure = match status {
                    Ok(st) if st.success() => None,
                    Ok(st) => Some(format!("exited with {st}")),
                    Err(e) => Some(e),
                };
                if let Some(why) = failure {
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    let mut mounted = Mounted {
                        mnt: m,
                        run_dir: run_dir.to_path_buf(),
                        daemon: None,
                        mount_secs: 0.0,
                    };
                    mounted.daemon = find_daemon(&mounted.mnt);
                    let _ = mounted.unmount();
                    let last = log
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("");
                    return Err(format!("{} {why}: {}", self.id, last.trim()));
                }
            }
        }
        let mount_secs = t.elapsed().as_secs_f64();
        let mut mounted = Mounted {
            mnt: m,
            run_dir: run_dir.to_path_buf(),
            daemon: None,
            mount_secs,
        };
        if !is_mountpoint(&mounted.mnt) {
            let _ = mounted.unmount();
            return Err(format!(
                "{} reported success but nothing is mounted",
                self.id
            ));
        }
        if self.is_fuse() {
            mounted.daemon = find_daemon(&mounted.mnt);
        }
        Ok(mounted)
    }
}

/// A live mount of one sample.
#[derive(Debug)]
pub struct Mounted {
    pub mnt: PathBuf,
    run_dir: PathBuf,
    pub daemon: Option<u32>,
    pub mount_secs: f64,
}

impl Mounted {
    /// Unmount (retrying while busy, lazily as a last resort), wait for the daemon to
    /// exit so it does not compete with the next sample, and delete upper/work.
    pub fn unmount(&mut self) -> Result<(), String> {
        let mut res = Ok(());
        if is_mountpoint(&self.mnt) {
            let mut tries = 0;
            while let Err(e) = sys::umount(&self.mnt, false) {
                tries += 1;
                if tries == 40 {
                    res = Err(format!(
                        "umount {}: {e}; detached lazily",
                        self.mnt.display()
                    ));
                    let _ = sys::umount(&self.mnt, true);
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(pid) = self.daemon.take() {
            let t = Instant::now();
            while alive(pid) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // A daemon may still be clearing its work dir: retry once if something vanished.
        let mut rm = fs::remove_dir_all(&self.run_dir);
        if rm
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            && self.run_dir.exists()
        {
            std::thread::sleep(Duration::from_millis(100));
            rm = fs::remove_dir_all(&self.run_dir);
        }
        if let Err(e) = rm
            && res.is_ok()
        {
            res = Err(format!("rm -rf {}: {e}", self.run_dir.display()));
        }
        res
    }

    /// Peak resident set of the daemon (VmHWM), in bytes.
    pub fn daemon_hwm(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.daemon?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.run_dir.exists() {
            let _ = self.unmount();
        }
    }
}

/// Whether `p` is a mount point, from /proc/self/mountinfo (field 5).
pub fn is_mountpoint(p: &Path) -> bool {
    let want = p.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .map(|s| s.lines().any(|l| l.split(' ').nth(4) == Some(&*want)))
        .unwrap_or(false)
}

/// The daemon serving `mnt`: the process (not us) with `mnt` among its arguments.
pub fn find_daemon(mnt: &Path) -> Option<u32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || !alive(pid) {
            continue;
        }
        if let Ok(cmd) = fs::read(e.path().join("cmdline"))
            && cmd.split(|&b| b == 0).any(|a| a == want)
        {
            return Some(pid);
        }
    }
    None
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
                != Some('Z')
        }
        Err(_) => false,
    }
}

/// Kills the FUSE daemons of a sample that has not finished its workload in time, so a
/// hung daemon fails its sample (pending requests get ENOTCONN) instead of hanging the
/// whole run. Dropping the watchdog disarms it.
pub struct Watchdog {
    cancel: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl Watchdog {
    pub fn arm(daemons: Vec<u32>, limit: Duration) -> Watchdog {
        if daemons.is_empty() {
            return Watchdog {
                cancel: None,
                thread: None,
            };
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if rx.recv_timeout(limit) != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                return false;
            }
            let mut fired = false;
            for pid in daemons.into_iter().filter(|&p| alive(p)) {
                eprintln!("watchdog: daemon {pid} still busy after {limit:?}: killing it");
                fired |= sys::kill(pid).is_ok();
            }
            fired
        });
        Watchdog {
            cancel: Some(tx),
            thread: Some(thread),
        }
    }

    /// Disarm; true if the watchdog fired.
    pub fn disarm(mut self) -> bool {
        self.cancel.take();
        self.thread
            .take()
            .is_some_and(|t| t.join().unwrap_or(false))
    }
}
