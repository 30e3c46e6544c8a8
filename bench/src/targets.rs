//! The filesystems under test and how to mount, find and unmount them.
//!
//! Every sample gets a fresh mount: `WORK/run-PID/N/{u,w,m}` (upper, work, mount point) is created,
//! the same lower layers are mounted with the target, the workload runs, then the mount is
//! unmounted, the daemon (for FUSE targets) is waited for, and `WORK/run-PID/N` is deleted.
//! Lowerdir paths are relative to the set dir, which is the process's working directory
//! (kernel) or the launcher's (FUSE), as containers/storage does with its `l/` links.

use crate::sys;
use serde::Serialize;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a FUSE launcher may take to daemonize before the mount counts as failed.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Kind {
    Kernel,
    FuseOverlayfs,
    Unionmount,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub kind: Kind,
    /// Binary for FUSE targets.
    pub bin: Option<PathBuf>,
    /// Extra mount options appended after lowerdir/upperdir/workdir (e.g. `volatile`).
    pub extra_opts: String,
}

impl Target {
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Kernel => "kernel",
            Kind::FuseOverlayfs => "fuse-overlayfs",
            Kind::Unionmount => "unionmount",
        }
    }

    pub fn is_fuse(&self) -> bool {
        self.kind != Kind::Kernel
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
                    .find(|l| l.contains(&me))
                    .map(str::to_string)
                    .unwrap_or(first)
            }
            Err(e) => format!("unknown ({e})"),
        }
    }

    /// Mount `layers` (relative to `set_dir`, top first) with a fresh upper and work dir
    /// under `run_dir`; the time measured is exec-to-ready (FUSE) or the mount syscall.
    pub fn mount(
        &self,
        set_dir: &Path,
        layers: &[String],
        run_dir: &Path,
    ) -> Result<Mounted, String> {
        let (u, w, m) = (run_dir.join("u"), run_dir.join("w"), run_dir.join("m"));
        for d in [&u, &w, &m] {
            fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            layers.join(":"),
            u.display(),
            w.display()
        );
        if !self.extra_opts.is_empty() {
            opts.push(',');
            opts.push_str(&self.extra_opts);
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
                let mut child = Command::new(bin)
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
                    return Err(format!("{} {why}: {}", self.name(), log.trim()));
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
                self.name()
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

/// Kills a FUSE daemon that has not finished a workload in time, so a hung daemon fails
/// its sample (pending requests get ENOTCONN) instead of hanging the whole run.
/// Dropping the watchdog disarms it.
pub struct Watchdog {
    cancel: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<bool>>,
}

impl Watchdog {
    pub fn arm(daemon: Option<u32>, limit: Duration) -> Watchdog {
        let Some(pid) = daemon else {
            return Watchdog {
                cancel: None,
                thread: None,
            };
        };
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if rx.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                && alive(pid)
            {
                eprintln!("watchdog: daemon {pid} still busy after {limit:?}: killing it");
                // SAFETY: kill has no memory-safety preconditions; pid is the daemon we mounted.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                return true;
            }
            false
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
