//! No leaks: the daemon's open fds return to (near) their baseline after 120k files were
//! looked up and forgotten, and after a burst of creates, writes, renames and unlinks.
//! RSS may grow once (allocator, a bounded lookup cache, set small here with
//! `cache_entries=10000`), but a second round over 60k *other* files must not grow it
//! again: growth proportional to files seen is a leak. The layers live on a tmpfs so that
//! making and removing 120k files is quick.
//!
//! The kernel forgets inodes (sending FUSE FORGET) when its dentry and inode caches are
//! dropped; the test asks for that with `echo 2 > /proc/sys/vm/drop_caches` (dentries and
//! inodes only, no page cache), which is system-wide: the price of a deterministic forget.

mod common;

use common::fsops as fs;
use common::layer_spec::{Format, LayerSet};
use common::overlay_harness::{Mounted, run_bounded, should_skip};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const DIRS: usize = 120;
const PER_DIR: usize = 1000;
/// Slack over the baseline: a few fds for caches and threads are fine, not one per file.
const FD_SLACK: usize = 32;
/// Growth allowed in a round after the first (memory the first round warmed up is reused).
const RSS_SLACK_KB: u64 = 16 * 1024;

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

fn lookup_dirs(mnt: &Path, dirs: std::ops::Range<usize>) {
    for d in dirs {
        for f in 0..PER_DIR {
            fs::lstat(&mnt.join(format!("d{d}/f{f}"))).unwrap_or_else(|e| panic!("lookup d{d}/f{f}: {e}"));
        }
    }
}

#[test]
fn fds_and_rss_return_to_baseline_after_120k_lookups_and_churn() {
    if should_skip("leaks") {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("umleaks").tempdir().unwrap();
    let (code, out, err) =
        run_bounded(Command::new("mount").args(["-t", "tmpfs", "umleaks"]).arg(tmp.path()), Duration::from_secs(30));
    assert_eq!(code, Some(0), "mount tmpfs: {out}{err}");
    let _tmpfs = Mounted::adopt(tmp.path());
    let d = LayerSet::new(&[""], "").build(&tmp.path().join("x"), &[], Format::Overlay);
    for dir in 0..DIRS {
        let p = d.lowers[0].join(format!("d{dir}"));
        std::fs::create_dir(&p).unwrap();
        for f in 0..PER_DIR {
            std::fs::File::create(p.join(format!("f{f}"))).unwrap();
        }
    }
    let mut m = Mounted::fuse(&d, "cache_entries=10000").unwrap();
    let pid = *m.pids().first().expect("daemon pid");
    fs::list_names(&m.mnt).unwrap();
    drop_kernel_caches();
    let base_fds = fd_count(pid);
    let base_rss = rss_kb(pid);

    let mut rss_after = Vec::new();
    for (round, dirs) in [0..DIRS / 2, DIRS / 2..DIRS].into_iter().enumerate() {
        lookup_dirs(&m.mnt, dirs);
        let peak_fds = fd_count(pid);
        let fds = settle(pid, base_fds + FD_SLACK);
        let rss = rss_kb(pid);
        eprintln!("lookup round {round} (60k files): fds {base_fds} -> peak {peak_fds} -> {fds}; rss {base_rss} kB -> {rss} kB");
        assert!(fds <= base_fds + FD_SLACK, "daemon holds {fds} fds after 60k lookups were forgotten, baseline {base_fds}");
        rss_after.push(rss);
    }
    assert!(
        rss_after[1] <= rss_after[0] + RSS_SLACK_KB,
        "daemon RSS grew again in a second lookup round over other files: {} kB -> {} kB (baseline {base_rss} kB)",
        rss_after[0],
        rss_after[1]
    );

    // Churn: creates, writes, renames, unlinks, copy-ups; all files closed at the end.
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
    let fds = settle(pid, base_fds + FD_SLACK);
    let rss = rss_kb(pid);
    eprintln!("after churn: fds {fds}; rss {rss} kB");
    assert!(fds <= base_fds + FD_SLACK, "daemon holds {fds} fds after churn, baseline {base_fds}");
    assert!(rss <= rss_after[1] + RSS_SLACK_KB, "daemon RSS {rss} kB after churn, {} kB before", rss_after[1]);
    m.unmount().unwrap();
}
