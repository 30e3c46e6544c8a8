//! No leaks: the daemon's open fds and RSS return to (near) their baseline after 100k
//! files were looked up and forgotten, and after a burst of creates, writes and unlinks.
//!
//! The kernel forgets inodes (sending FUSE FORGET) when its dentry and inode caches are
//! dropped; the test asks for that with `echo 2 > /proc/sys/vm/drop_caches` (dentries and
//! inodes only, no page cache), which is system-wide: the price of a deterministic forget.

mod common;

use common::fsops as fs;
use common::layer_spec::{Format, LayerSet};
use common::overlay_harness::{Mounted, should_skip};
use std::path::Path;
use std::time::{Duration, Instant};

const DIRS: usize = 100;
const PER_DIR: usize = 1000;
/// Slack over the baseline: a few fds for caches and threads are fine, not one per file.
const FD_SLACK: usize = 32;
const RSS_SLACK_KB: u64 = 96 * 1024;

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn drop_kernel_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "2");
}

/// Drop caches and wait (bounded) for the daemon's fd count to settle at or under `limit`.
fn settle(pid: u32, limit: usize) -> usize {
    let start = Instant::now();
    loop {
        drop_kernel_caches();
        let n = fd_count(pid);
        if n <= limit || start.elapsed() > Duration::from_secs(30) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lookup_all(mnt: &Path) {
    for d in 0..DIRS {
        for f in 0..PER_DIR {
            fs::lstat(&mnt.join(format!("d{d}/f{f}"))).unwrap_or_else(|e| panic!("lookup d{d}/f{f}: {e}"));
        }
    }
}

#[test]
fn fds_and_rss_return_to_baseline_after_100k_lookups_and_churn() {
    if should_skip("leaks") {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("umleaks").tempdir().unwrap();
    let d = LayerSet::new(&[""], "").build(&tmp.path().join("x"), &[], Format::Overlay);
    for dir in 0..DIRS {
        let p = d.lowers[0].join(format!("d{dir}"));
        std::fs::create_dir(&p).unwrap();
        for f in 0..PER_DIR {
            std::fs::File::create(p.join(format!("f{f}"))).unwrap();
        }
    }
    let mut m = Mounted::fuse(&d, "").unwrap();
    let pid = *m.pids().first().expect("daemon pid");
    fs::list_names(&m.mnt).unwrap();
    drop_kernel_caches();
    let base_fds = fd_count(pid);
    let base_rss = rss_kb(pid);

    lookup_all(&m.mnt);
    let peak_fds = fd_count(pid);
    let fds = settle(pid, base_fds + FD_SLACK);
    let rss = rss_kb(pid);
    eprintln!("after 100k lookups: fds {base_fds} -> peak {peak_fds} -> {fds}; rss {base_rss} kB -> {rss} kB");
    assert!(fds <= base_fds + FD_SLACK, "daemon fds {fds} after forgetting 100k lookups, baseline {base_fds}");

    // Churn: creates, writes, renames, unlinks; open files all closed at the end.
    let churn = m.mnt.join("churn");
    fs::mkdir(&churn, 0o755).unwrap();
    for i in 0..2000 {
        let p = churn.join(format!("c{i}"));
        fs::write_file(&p, libc::O_CREAT, &vec![b'x'; 4096]).unwrap();
        fs::rename2(&p, &churn.join(format!("r{i}")), 0).unwrap();
        if i % 2 == 0 {
            fs::unlink(&churn.join(format!("r{i}"))).unwrap();
        }
    }
    for i in (0..2000).step_by(7) {
        fs::chmod(&m.mnt.join(format!("d{}/f{}", i % DIRS, i % PER_DIR)), 0o600).unwrap();
    }
    let fds2 = settle(pid, base_fds + FD_SLACK);
    let rss2 = rss_kb(pid);
    eprintln!("after churn: fds {fds2}; rss {rss2} kB");
    assert!(fds2 <= base_fds + FD_SLACK, "daemon fds {fds2} after churn, baseline {base_fds}");
    assert!(rss2 <= base_rss + RSS_SLACK_KB, "daemon RSS {rss2} kB after load, baseline {base_rss} kB");
    assert!(rss <= base_rss + RSS_SLACK_KB, "daemon RSS {rss} kB after 100k lookups, baseline {base_rss} kB");
    m.unmount().unwrap();
}
