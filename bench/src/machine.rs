//! What the numbers were measured on: CPU, cores, memory, kernel, the work dir's
//! filesystem, and the load average before and after (how busy the machine was).

use crate::sys;
use serde::Serialize;
use std::fs;
use std::path::Path;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub date_utc: String,
    pub cpu: String,
    pub cores: usize,
    pub mem_gib: f64,
    pub kernel: String,
    pub work_dir: String,
    pub work_fs: String,
    pub loadavg_start: String,
    pub loadavg_end: String,
    /// How page cache is accounted (the page-cache workloads), when they ran.
    pub memcg: String,
}

impl Machine {
    pub fn probe(work: &Path) -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mem_kib: f64 = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0.0);
        Machine {
            date_utc: now_utc(),
            cpu,
            cores,
            mem_gib: (mem_kib / 1048576.0 * 10.0).round() / 10.0,
            kernel: sys::uname(),
            work_dir: work.display().to_string(),
            work_fs: fs_of(work),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            memcg: String::new(),
        }
    }

    pub fn one_line(&self) -> String {
        format!(
            "{}, {} cores, {} GiB RAM, Linux {}, work dir on {}; load average {} at start, {} at end",
            self.cpu,
            self.cores,
            self.mem_gib,
            self.kernel,
            self.work_fs,
            self.loadavg_start,
            self.loadavg_end
        )
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// "ext4 (/dev/vda)": the mount with the longest mount point that contains `p`.
fn fs_of(p: &Path) -> String {
    let p = fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut best: Option<(usize, String)> = None;
    for line in fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
    {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|&x| x == "-") else {
            continue;
        };
        let (mp, fstype, src) = (
            f[4],
            f.get(sep + 1).unwrap_or(&"?"),
            f.get(sep + 2).unwrap_or(&"?"),
        );
        if p.starts_with(mp) && best.as_ref().is_none_or(|(n, _)| mp.len() >= *n) {
            best = Some((mp.len(), format!("{fstype} ({src})")));
        }
    }
    match (best, sys::statfs_type(&p)) {
        (Some((_, s)), _) => s,
        (None, Ok(t)) => format!("fs magic {t:#x}"),
        (None, Err(_)) => "unknown".into(),
    }
}

/// Current time as ISO 8601 UTC, from the system clock.
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    unionmount::rfc3339(secs)
}
