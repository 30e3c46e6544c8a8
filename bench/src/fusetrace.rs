//! FUSE requests by opcode while a workload's timed part runs (`--fuse-requests`): a
//! profile that load does not change. Round trips are what a FUSE filesystem pays and
//! the in-kernel overlay does not, so these counts say where a FUSE target's time goes.
//!
//! Uses the kernel's `fuse:fuse_request_send` tracepoint in a tracefs instance of its
//! own (`instances/unionmount-bench-PID`, removed on drop and by the next run if this one
//! is killed), so nobody else's tracing is disturbed, filtered on the connections
//! (superblock devices) of the sample's mounts.
//! Events are counted from the instance's ring buffer after the timed part; a buffer
//! overrun is reported as an error, not as a smaller count.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const PREFIX: &str = "unionmount-bench-";
const TRACEFS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const EVENT: &str = "events/fuse/fuse_request_send";
/// Per-CPU ring buffer: about 40 bytes an event, so a million requests fit.
const BUFFER_KB: u32 = 65536;

pub struct Tracer {
    dir: PathBuf,
}

impl Tracer {
    /// A private tracefs instance with the FUSE request event, or why there is none.
    pub fn new() -> Result<Tracer, String> {
        let root = TRACEFS
            .iter()
            .map(Path::new)
            .find(|p| p.join("instances").is_dir())
            .ok_or("no tracefs mounted (mount -t tracefs none /sys/kernel/tracing)")?;
        if !root.join(EVENT).is_dir() {
            return Err(format!("this kernel has no {EVENT} tracepoint"));
        }
        remove_stale(&root.join("instances"));
        let dir = root
            .join("instances")
            .join(format!("{PREFIX}{}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("mkdir {}: {e}", dir.display())),
        }
        let t = Tracer { dir };
        fs::write(t.dir.join("buffer_size_kb"), BUFFER_KB.to_string())
            .map_err(|e| format!("{}: {e}", t.dir.join("buffer_size_kb").display()))?;
        Ok(t)
    }

    /// Start counting the requests of the FUSE mounts at `mounts`.
    pub fn start(&self, mounts: &[&Path]) -> io::Result<()> {
        let mut filter = Vec::new();
        for m in mounts {
            let dev = fs::metadata(m)?.dev();
            // The event records the kernel's dev_t: MAJOR << 20 | MINOR.
            let kdev = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
            filter.push(format!("connection == {kdev}"));
        }
        if filter.is_empty() {
            return Err(io::Error::other("no FUSE mount to trace"));
        }
        let ev = self.dir.join(EVENT);
        fs::write(ev.join("enable"), "0")?;
        fs::write(ev.join("filter"), filter.join(" || "))?;
        fs::write(self.dir.join("trace"), "")?;
        fs::write(ev.join("enable"), "1")
    }

    /// Stop and count: requests by opcode name (`LOOKUP`, `CREATE`, …).
    pub fn stop(&self) -> io::Result<BTreeMap<String, u64>> {
        fs::write(self.dir.join(EVENT).join("enable"), "0")?;
        let mut lost = 0u64;
        if let Ok(cpus) = fs::read_dir(self.dir.join("per_cpu")) {
            for c in cpus.flatten() {
                let stats = fs::read_to_string(c.path().join("stats")).unwrap_or_default();
                for l in stats.lines() {
                    if let Some(v) = l.strip_prefix("overrun:") {
                        lost += v.trim().parse::<u64>().unwrap_or(0);
                    }
                }
            }
        }
        if lost > 0 {
            return Err(io::Error::other(format!(
                "{lost} FUSE request events lost (trace buffer overrun)"
            )));
        }
        let text = fs::read_to_string(self.dir.join("trace"))?;
        let mut counts = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            // "... opcode 1 (FUSE_LOOKUP) len 45"
            if let Some(rest) = line.split("(FUSE_").nth(1)
                && let Some(op) = rest.split(')').next()
            {
                *counts.entry(op.to_string()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join(EVENT).join("enable"), "0");
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Remove the instances of earlier runs that were interrupted (their pid is gone): each
/// holds a large ring buffer.
fn remove_stale(instances: &Path) {
    let Ok(entries) = fs::read_dir(instances) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir(e.path());
        }
    }
}
