//! Page cache charged to a memory cgroup: what N mounts of one image cost in memory.
//!
//! The page-cache workloads start every FUSE launcher (so its daemon) and the reader in
//! a fresh memory cgroup created below the bench's own, so every page their reads bring
//! in is charged there: the lower file's pages (read by a daemon, or by the reader
//! through kernel overlayfs or FUSE passthrough) and the copy a FUSE mount keeps for
//! its own inode when it does not pass the file through. The measure is the growth of
//! the cgroup's page cache (`memory.stat`: `cache` under cgroup v1, `file` under v2)
//! while the reader runs; the mounts are made, and their daemons' code paged in, before.
//!
//! Invariants: the cgroup is always a child of the bench's own memory cgroup (never
//! outside it, so the session's limits still hold); it is removed when dropped; a
//! process enters it only by writing its own pid (`join`), in the two internal modes
//! of the bench binary (`EXEC_ARG`, `READ_ARG`) that `main` dispatches before parsing.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `unionmount-bench EXEC_ARG CGROUP PROGRAM ARGS…`: join CGROUP, then exec PROGRAM.
pub const EXEC_ARG: &str = "--internal-exec-in-cgroup";
/// `unionmount-bench READ_ARG CGROUP FILE…`: join CGROUP, read every FILE to its end,
/// print the bytes read.
pub const READ_ARG: &str = "--internal-read-in-cgroup";

const PREFIX: &str = "unionmount-bench-";

/// A memory cgroup of our own, removed on drop.
#[derive(Debug)]
pub struct Memcg {
    dir: PathBuf,
    v2: bool,
}

impl Memcg {
    /// Create `unionmount-bench-PID-TAG` below the bench's own memory cgroup.
    pub fn create(tag: &str) -> Result<Memcg, String> {
        let (parent, v2) = own()?;
        remove_stale(&parent);
        let dir = parent.join(format!("{PREFIX}{}-{tag}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("mkdir {}: {e}", dir.display())),
        }
        let cg = Memcg { dir, v2 };
        if v2 {
            let has_memory = |d: &Path| {
                fs::read_to_string(d.join("cgroup.controllers"))
                    .is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"))
            };
            if !has_memory(&cg.dir) {
                let _ = fs::write(parent.join("cgroup.subtree_control"), "+memory");
                if !has_memory(&cg.dir) {
                    return Err(format!(
                        "cgroup v2: the memory controller is not enabled below {} (enable it in its cgroup.subtree_control)",
                        parent.display()
                    ));
                }
            }
        }
        cg.page_cache()
            .map_err(|e| format!("{}: {e}", cg.dir.join("memory.stat").display()))?;
        Ok(cg)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of page cache charged to the cgroup now.
    pub fn page_cache(&self) -> io::Result<u64> {
        let key = if self.v2 { "file" } else { "cache" };
        let stat = fs::read_to_string(self.dir.join("memory.stat"))?;
        stat.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| io::Error::other(format!("no `{key}` in memory.stat")))
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        // Daemons leave it as they exit after the unmount: give them a moment.
        for _ in 0..100 {
            match fs::remove_dir(&self.dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => return,
            }
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// "cgroup v1 memory" or "cgroup v2 memory", or why neither is usable.
pub fn describe() -> String {
    match own() {
        Ok((_, true)) => "cgroup v2 memory controller".into(),
        Ok((_, false)) => "cgroup v1 memory controller".into(),
        Err(e) => e,
    }
}

/// Move the calling process into `dir`.
pub fn join(dir: &Path) -> io::Result<()> {
    fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
}

/// The internal mode `READ_ARG`: join `cg`, read `files` to their ends; bytes read.
pub fn read_in(cg: &Path, files: &[PathBuf]) -> io::Result<u64> {
    join(cg)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    for p in files {
        let mut f = fs::File::open(p)?;
        loop {
            match f.read(&mut buf)? {
                0 => break,
                n => total += n as u64,
            }
        }
    }
    Ok(total)
}

/// The directory of our own memory cgroup and whether it is cgroup v2. Prefers the
/// v1 `memory` hierarchy where one is mounted (hybrid systems).
fn own() -> Result<(PathBuf, bool), String> {
    let cgroups =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    // (mount point, mount root, fstype, super options) of every cgroup mount.
    let mounts: Vec<(&str, &str, &str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|&x| x == "-")?;
            let fstype = *f.get(sep + 1)?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| Some((f[4], f[3], fstype, *f.get(sep + 3)?)))?
        })
        .collect();
    let resolve = |mnt: &str, root: &str, path: &str| {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .trim_start_matches('/');
        Path::new(mnt).join(rel)
    };
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrl, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        if ctrl.split(',').any(|c| c == "memory")
            && let Some((mnt, root, _, _)) = mounts
                .iter()
                .find(|m| m.2 == "cgroup" && m.3.split(',').any(|o| o == "memory"))
        {
            return Ok((resolve(mnt, root, path), false));
        }
    }
    for line in cgroups.lines() {
        if let Some(path) = line.strip_prefix("0::")
            && let Some((mnt, root, _, _)) = mounts.iter().find(|m| m.2 == "cgroup2")
        {
            let dir = resolve(mnt, root, path);
            let ctl = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            if ctl.split_whitespace().any(|c| c == "memory") {
                return Ok((dir, true));
            }
        }
    }
    Err("no memory cgroup controller (neither a cgroup v1 `memory` hierarchy nor cgroup v2 with `memory`)".into())
}

/// Remove cgroups that earlier, interrupted runs left (their pid is gone).
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir(e.path());
        }
    }
}
