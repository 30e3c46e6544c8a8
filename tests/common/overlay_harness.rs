//! Mount kernel overlayfs and the FUSE union filesystem over identical copies of a layer
//! set, run the same operations on both, and compare results, merged trees and uppers.
//!
//! The FUSE binary is unionmount (`CARGO_BIN_EXE_unionmount`); set
//! `UNIONMOUNT_TEST_FUSE_BIN=/usr/bin/fuse-overlayfs` to prove the harness against another
//! implementation. Mounts are undone by a Drop guard (lazy unmount as a last resort), so a
//! failing test does not leave mounts behind.

use super::fsops::{self, Transcript};
use super::layer_spec::{Format, LayerDirs, LayerSet};
use super::tree::{self, Snapshot};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Options pinned on the kernel side so its behaviour does not depend on module defaults:
/// no redirects (a lower directory rename gives EXDEV), no index, no metacopy.
pub const KERNEL_OPTS: &str = "redirect_dir=off,index=off,metacopy=off";

/// Why tests that mount must be skipped here, if they must.
pub fn skip_reason() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (mounting needs root)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is absent".into());
    }
    None
}

/// Print the reason and return true when the calling test must be skipped.
pub fn should_skip(test: &str) -> bool {
    match skip_reason() {
        Some(r) => {
            eprintln!("SKIPPED {test}: {r}");
            true
        }
        None => false,
    }
}

/// The FUSE union filesystem under test.
pub fn fuse_bin() -> PathBuf {
    match std::env::var_os("UNIONMOUNT_TEST_FUSE_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_unionmount")),
    }
}

pub fn fuse_label() -> String {
    fuse_bin().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Run a command to completion with a time limit; returns (exit ok, stdout, stderr).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    // Readers in threads: a daemonizing child may leave the pipes open in its daemon.
    let to = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let code = status.and_then(|s| s.code());
    // Give the pipes a bounded time to close (a daemon may hold them open).
    let collect = |h: std::thread::JoinHandle<Vec<u8>>| {
        let t = Instant::now();
        while !h.is_finished() && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if h.is_finished() { String::from_utf8_lossy(&h.join().unwrap()).into_owned() } else { String::new() }
    };
    let stdout = collect(to);
    let stderr = collect(te);
    if status.is_none() {
        return (None, stdout, format!("{stderr}\n<timed out after {limit:?}>"));
    }
    (code, stdout, stderr)
}

/// Is `p` a mountpoint right now (in this thread's mount namespace)?
pub fn is_mounted(p: &Path) -> bool {
    mountinfo_line(p).is_some()
}

/// The mountinfo line whose mount point is `p`, if any (last one wins). Read from
/// /proc/thread-self: a test thread may have its own mount namespace.
pub fn mountinfo_line(p: &Path) -> Option<String> {
    let want = p.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/thread-self/mountinfo").ok()?;
    info.lines().rfind(|l| l.split(' ').nth(4) == Some(want.as_str())).map(String::from)
}

/// Pids of processes whose command line has `mnt` as one argument.
pub fn daemon_pids(mnt: &Path) -> Vec<u32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read(e.path().join("cmdline")).is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|a| a == want)) {
            pids.push(pid);
        }
    }
    pids
}

/// Wait (bounded) until none of `pids` runs with `mnt` on its command line any more.
pub fn wait_gone(pids: &[u32], mnt: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let alive: Vec<u32> = daemon_pids(mnt).into_iter().filter(|p| pids.contains(p)).collect();
        if alive.is_empty() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A mounted filesystem, unmounted on drop.
pub struct Mounted {
    pub mnt: PathBuf,
    pids: Vec<u32>,
    active: bool,
}

impl Mounted {
    /// Kernel overlayfs over `d` (panics when the kernel refuses).
    pub fn kernel(d: &LayerDirs) -> Mounted {
        let lowers: Vec<&Path> = d.lowers.iter().map(PathBuf::as_path).collect();
        kernel_overlay(&lowers, Some((&d.upper, &d.work)), &d.mnt).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The FUSE filesystem over `d` with `extra` options appended (may be empty).
    pub fn fuse(d: &LayerDirs, extra: &str) -> Result<Mounted, String> {
        let mut opts = d.overlay_options();
        if !extra.is_empty() {
            opts = format!("{opts},{extra}");
        }
        Mounted::fuse_args(&["-o", &opts], &d.mnt)
    }

    /// Run the FUSE binary with `args` followed by `mnt`; it must return once mounted.
    pub fn fuse_args(args: &[&str], mnt: &Path) -> Result<Mounted, String> {
        let mut cmd = Command::new(fuse_bin());
        cmd.args(args).arg(mnt);
        let (code, _out, err) = run_bounded(&mut cmd, Duration::from_secs(30));
        if code != Some(0) {
            return Err(format!("{cmd:?} exited with {code:?}: {}", err.trim()));
        }
        if !is_mounted(mnt) {
            return Err(format!("{cmd:?} exited 0 but {mnt:?} is not mounted (stderr: {})", err.trim()));
        }
        Ok(Mounted { mnt: mnt.to_path_buf(), pids: daemon_pids(mnt), active: true })
    }

    /// Adopt a mount made by other means (e.g. mount(8)).
    pub fn adopt(mnt: &Path) -> Mounted {
        Mounted { mnt: mnt.to_path_buf(), pids: daemon_pids(mnt), active: true }
    }

    /// Unmount, and for FUSE wait (bounded) for the daemon to exit so that everything it
    /// wrote is in the upper directory.
    pub fn unmount(&mut self) -> Result<(), String> {
        if !self.active {
            return Ok(());
        }
        let m = fsops::cpath(&self.mnt);
        // A parallel test that clones the mount namespace (unshare) can make the
        // mount briefly busy: retry before calling it a failure.
        let mut tries = 0;
        while unsafe { libc::umount2(m.as_ptr(), 0) } != 0 {
            let e = fsops::Errno::last();
            tries += 1;
            if e.0 != libc::EBUSY || tries > 50 {
                return Err(format!("umount {:?}: {}", self.mnt, e));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.active = false;
        if !wait_gone(&self.pids, &self.mnt, Duration::from_secs(20)) {
            return Err(format!("daemon for {:?} still running 20s after umount", self.mnt));
        }
        Ok(())
    }
}

impl Mounted {
    /// The daemon processes serving this mount (found by its mountpoint argument).
    pub fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// SIGKILL the daemon (a crash), then detach the dead mount and wait for the processes
    /// to be gone.
    pub fn kill_daemon(&mut self) {
        for p in &self.pids {
            unsafe { libc::kill(*p as i32, libc::SIGKILL) };
        }
        let _ = wait_gone(&self.pids, &self.mnt, Duration::from_secs(20));
        let m = fsops::cpath(&self.mnt);
        if unsafe { libc::umount2(m.as_ptr(), 0) } != 0 {
            unsafe { libc::umount2(m.as_ptr(), libc::MNT_DETACH) };
        }
        self.active = false;
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.active {
            let m = fsops::cpath(&self.mnt);
            if unsafe { libc::umount2(m.as_ptr(), 0) } != 0 {
                unsafe { libc::umount2(m.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = wait_gone(&self.pids, &self.mnt, Duration::from_secs(5));
        }
    }
}

/// Kernel overlayfs over `lowers` (top first) at `mnt` (created if missing), with plain
/// copy-up semantics ([`KERNEL_OPTS`]): writable with `upper` = (upper dir, work dir),
/// both created if missing; read-only without, where a single lower gets an empty
/// second one beside `mnt` (older kernels want two). Err(reason) when the kernel refuses.
/// Paths are bytes: non-UTF-8 names pass through.
pub fn kernel_overlay(lowers: &[&Path], upper: Option<(&Path, &Path)>, mnt: &Path) -> Result<Mounted, String> {
    kernel_overlay_opts(lowers, upper, mnt, KERNEL_OPTS)
}

/// [`kernel_overlay`] with `opts` instead of [`KERNEL_OPTS`] (e.g. `redirect_dir=on`).
pub fn kernel_overlay_opts(lowers: &[&Path], upper: Option<(&Path, &Path)>, mnt: &Path, opts_extra: &str) -> Result<Mounted, String> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(mnt).unwrap();
    let mut dirs: Vec<PathBuf> = lowers.iter().map(|p| p.to_path_buf()).collect();
    if dirs.len() == 1 && upper.is_none() {
        let empty = mnt.with_extension("empty");
        std::fs::create_dir_all(&empty).unwrap();
        dirs.push(empty);
    }
    let mut opts = b"lowerdir=".to_vec();
    for (i, d) in dirs.iter().enumerate() {
        if i > 0 {
            opts.push(b':');
        }
        opts.extend_from_slice(d.as_os_str().as_bytes());
    }
    if let Some((u, w)) = upper {
        std::fs::create_dir_all(u).unwrap();
        std::fs::create_dir_all(w).unwrap();
        for (key, p) in [(",upperdir=", u), (",workdir=", w)] {
            opts.extend_from_slice(key.as_bytes());
            opts.extend_from_slice(p.as_os_str().as_bytes());
        }
    }
    opts.extend_from_slice(format!(",{opts_extra}").as_bytes());
    let flags = if upper.is_none() { libc::MS_RDONLY } else { 0 };
    let c = |s: &[u8]| std::ffi::CString::new(s).unwrap();
    let (src, ty, o) = (c(b"overlay"), c(b"overlay"), c(&opts));
    let m = fsops::cpath(mnt);
    let r = unsafe { libc::mount(src.as_ptr(), m.as_ptr(), ty.as_ptr(), flags, o.as_ptr().cast()) };
    if r != 0 {
        let e = fsops::Errno::last();
        return Err(format!("kernel overlay mount failed: {e} (options {})", String::from_utf8_lossy(&opts)));
    }
    Ok(Mounted { mnt: mnt.to_path_buf(), pids: vec![], active: true })
}

/// Kernel overlayfs and the FUSE fs over identical copies of one layer set.
pub struct Pair {
    pub kdirs: LayerDirs,
    pub fdirs: LayerDirs,
    pub kernel: Mounted,
    pub fuse: Mounted,
    pub klog: Transcript,
    pub flog: Transcript,
    // Last, so the mounts are dropped before the directories are removed.
    _tmp: tempfile::TempDir,
}

impl Pair {
    /// Both copies in overlay whiteout format.
    pub fn new(set: &LayerSet) -> Pair {
        Pair::with_formats(set, &[], Format::Overlay, "")
    }

    /// The FUSE copy's lowers use `formats` (top first; missing = Overlay) and its upper
    /// `upper_format`; the kernel copy always uses the overlay format it understands.
    /// `extra` is appended to the FUSE mount options.
    pub fn with_formats(set: &LayerSet, formats: &[Format], upper_format: Format, extra: &str) -> Pair {
        let tmp = tempfile::Builder::new().prefix("umdiff").tempdir().unwrap();
        let kdirs = set.build(&tmp.path().join("k"), &[], Format::Overlay);
        let fdirs = set.build(&tmp.path().join("f"), formats, upper_format);
        let kernel = Mounted::kernel(&kdirs);
        let fuse = Mounted::fuse(&fdirs, extra).unwrap_or_else(|e| panic!("FUSE mount failed: {e}"));
        Pair { kdirs, fdirs, kernel, fuse, klog: Transcript::default(), flog: Transcript::default(), _tmp: tmp }
    }

    /// Run `f` on the kernel mount root, then on the FUSE mount root, appending to the
    /// transcripts. `f` receives the mount root and whether it is the kernel side.
    /// A panic inside `f` (e.g. an unwrap on an unexpected errno) ends that side's run with
    /// a `scenario aborted` line, so the report still compares everything else.
    pub fn run(&mut self, f: impl Fn(&Path, bool, &mut Transcript)) {
        for (mnt, kernel, log) in [(&self.kernel.mnt, true, &mut self.klog), (&self.fuse.mnt, false, &mut self.flog)] {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(mnt, kernel, log)));
            if let Err(p) = r {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                log.note(format!("scenario aborted: {msg}"));
            }
        }
    }

    /// Compare transcripts and merged trees, unmount both, compare uppers (when
    /// `compare_upper`); panics with one report listing every difference.
    /// With `UNIONMOUNT_TEST_VERBOSE` set, the kernel transcript is printed even on success.
    pub fn finish(self, compare_upper: bool) {
        let klog = self.klog.clone();
        if std::env::var_os("UNIONMOUNT_TEST_VERBOSE").is_some() {
            eprintln!("kernel transcript:\n  {}", klog.0.join("\n  "));
        }
        if let Some(report) = self.compare(compare_upper) {
            panic!("kernel overlayfs vs {}:\n{report}\nkernel transcript:\n  {}", fuse_label(), klog.0.join("\n  "));
        }
    }

    /// Like `finish`, but returns the report of differences instead of panicking.
    /// `compare_upper == false` means the kernel side may have used mv(1)'s copy + delete
    /// fallback for a directory rename; that also breaks hard links, so st_nlink is then
    /// not compared in the merged trees either.
    pub fn compare(mut self, compare_upper: bool) -> Option<String> {
        let fl = fuse_label();
        let mut report = String::new();
        if let Some(d) = fsops::diff_transcripts("kernel", &self.klog, &fl, &self.flog) {
            report.push_str(&format!("operation results differ:\n{d}"));
        }
        let mut km = tree::snapshot(&self.kernel.mnt);
        match try_snapshot(&self.fuse.mnt, false) {
            Ok(mut fm) => {
                if !compare_upper {
                    tree::forget_nlink(&mut km);
                    tree::forget_nlink(&mut fm);
                }
                if let Some(d) = tree::diff("kernel", &km, &fl, &fm) {
                    report.push_str(&format!("merged trees differ:\n{d}"));
                }
            }
            Err(e) => report.push_str(&format!("cannot snapshot the FUSE mount: {e}\n")),
        }
        if let Err(e) = self.kernel.unmount() {
            report.push_str(&format!("kernel unmount: {e}\n"));
        }
        if let Err(e) = self.fuse.unmount() {
            report.push_str(&format!("FUSE unmount: {e}\n"));
        }
        if compare_upper {
            let ku = tree::snapshot_upper(&self.kdirs.upper);
            let fu = tree::snapshot_upper(&self.fdirs.upper);
            if let Some(d) = tree::diff("kernel", &ku, &fl, &fu) {
                report.push_str(&format!("upper dirs differ:\n{d}"));
            }
        }
        if report.is_empty() { None } else { Some(report) }
    }
}

/// A snapshot that reports failure (e.g. ENOTCONN from a dead daemon) instead of panicking.
pub fn try_snapshot(root: &Path, upper: bool) -> Result<Snapshot, String> {
    if let Err(e) = fsops::lstat(root) {
        return Err(format!("lstat {root:?}: {e}"));
    }
    std::panic::catch_unwind(|| if upper { tree::snapshot_upper(root) } else { tree::snapshot(root) }).map_err(|p| {
        p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
    })
}

/// The FUSE fs alone over one layer set (for layer formats the kernel cannot read).
pub struct Single {
    pub dirs: LayerDirs,
    pub mount: Mounted,
    _tmp: tempfile::TempDir,
}

impl Single {
    pub fn new(set: &LayerSet, formats: &[Format], upper_format: Format, extra: &str) -> Single {
        let tmp = tempfile::Builder::new().prefix("umsingle").tempdir().unwrap();
        let dirs = set.build(&tmp.path().join("f"), formats, upper_format);
        let mount = Mounted::fuse(&dirs, extra).unwrap_or_else(|e| panic!("FUSE mount failed: {e}"));
        Single { dirs, mount, _tmp: tmp }
    }
}

/// Snapshot of a tree built from one layer spec: the expected merged view.
pub fn expected_tree(spec: &str) -> Snapshot {
    let tmp = tempfile::Builder::new().prefix("umexpect").tempdir().unwrap();
    let root = tmp.path().join("root");
    fsops::mkdir(&root, 0o755).unwrap();
    fsops::chmod(&root, 0o755).unwrap();
    super::layer_spec::build_layer(&root, spec, Format::Overlay);
    tree::snapshot(&root)
}

/// Give the calling thread its own mount namespace with private propagation: mounts made
/// afterwards by this thread, and by processes it starts, are invisible to the host and
/// vanish with them. (unshare(CLONE_NEWNS) affects only the calling thread, which suits
/// the one-thread-per-test harness; read mountinfo from /proc/thread-self.)
pub fn enter_private_mount_namespace() {
    let none = std::ptr::null::<libc::c_char>();
    // SAFETY: plain syscalls with valid pointers.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare(CLONE_NEWNS): {}", fsops::Errno::last());
        let root = fsops::cpath(Path::new("/"));
        let r = libc::mount(none, root.as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null());
        assert_eq!(r, 0, "make / private: {}", fsops::Errno::last());
    }
}

/// Bind-mount `src` over `dst` (in a private mount namespace).
pub fn bind(src: &Path, dst: &Path) {
    let none = std::ptr::null::<libc::c_char>();
    let (s, d) = (fsops::cpath(src), fsops::cpath(dst));
    // SAFETY: plain syscall with valid pointers.
    let r = unsafe { libc::mount(s.as_ptr(), d.as_ptr(), none, libc::MS_BIND, std::ptr::null()) };
    assert_eq!(r, 0, "bind {src:?} over {dst:?}: {}", fsops::Errno::last());
}
