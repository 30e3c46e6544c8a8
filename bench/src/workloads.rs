//! The workloads, each a `prepare` (untimed) and a timed part, run on a fresh mount.
//!
//! Cold workloads drop the page cache, dentries and inodes after mounting; warm ones do
//! one untimed pass first. Each returns its measured value and a `check` number (entries
//! seen, bytes read…) that must agree across filesystems: a cheap differential test that
//! catches a target doing less work by being wrong.

use crate::layerset::Manifest;
use crate::rng::Rng;
use crate::sys;
use crate::targets::Mounted;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// Which layer stack a workload mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    Main,
    Deep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Secs,
    Bytes,
}

pub struct Workload {
    pub id: &'static str,
    pub title: &'static str,
    pub stack: Stack,
    pub cold: bool,
    pub unit: Unit,
    /// Only meaningful for FUSE daemons (kernel has no daemon).
    pub fuse_only: bool,
    /// Run in the first round only (expensive, and not a timing).
    pub once: bool,
}

const fn w(id: &'static str, title: &'static str, stack: Stack, cold: bool) -> Workload {
    Workload {
        id,
        title,
        stack,
        cold,
        unit: Unit::Secs,
        fuse_only: false,
        once: false,
    }
}

pub const ALL: &[Workload] = &[
    w(
        "walk-cold",
        "stat walk, whole tree, cold",
        Stack::Main,
        true,
    ),
    w(
        "walk-warm",
        "stat walk, whole tree, warm",
        Stack::Main,
        false,
    ),
    w(
        "readdir-wide",
        "readdir of the wide dir (2 layers), warm",
        Stack::Main,
        false,
    ),
    w(
        "small-read-cold",
        "read all small files, cold",
        Stack::Main,
        true,
    ),
    w(
        "small-read-warm",
        "read all small files, warm",
        Stack::Main,
        false,
    ),
    w(
        "seq-read-cold",
        "sequential read of the big file, cold",
        Stack::Main,
        true,
    ),
    w(
        "seq-read-warm",
        "sequential read of the big file, warm",
        Stack::Main,
        false,
    ),
    w(
        "rand-read",
        "random 4 KiB reads of the big file, warm",
        Stack::Main,
        false,
    ),
    w(
        "copy-up",
        "copy-up by appending to lower files",
        Stack::Main,
        false,
    ),
    w(
        "create",
        "create small files in a new dir",
        Stack::Main,
        false,
    ),
    w(
        "rm-rf",
        "rm -rf of a lower subtree (usr/share/doc)",
        Stack::Main,
        false,
    ),
    w(
        "deep-lookup-cold",
        "stat in a dir merged from the deep stack, cold",
        Stack::Deep,
        true,
    ),
    w(
        "deep-lookup-warm",
        "stat in a dir merged from the deep stack, warm",
        Stack::Deep,
        false,
    ),
    w(
        "mount-ready",
        "exec to mount ready, deep stack",
        Stack::Deep,
        false,
    ),
    Workload {
        id: "daemon-rss",
        title: "daemon peak RSS after walking >= N entries",
        stack: Stack::Main,
        cold: false,
        unit: Unit::Bytes,
        fuse_only: true,
        once: true,
    },
];

pub struct Ctx<'a> {
    pub m: &'a Manifest,
    pub drop_caches: bool,
}

impl Ctx<'_> {
    fn drop(&self) -> io::Result<()> {
        if self.drop_caches {
            sys::drop_caches()
        } else {
            Ok(())
        }
    }
}

/// One measurement: the value (seconds or bytes) and the cross-target check number.
pub struct Sample {
    pub value: f64,
    pub check: u64,
}

fn timed(f: impl FnOnce() -> io::Result<u64>) -> io::Result<Sample> {
    let t = Instant::now();
    let check = f()?;
    Ok(Sample {
        value: t.elapsed().as_secs_f64(),
        check,
    })
}

/// Run workload `w` on the fresh mount `mt`.
pub fn run(w: &Workload, cx: &Ctx, mt: &Mounted) -> io::Result<Sample> {
    let root = mt.mnt.as_path();
    let m = cx.m;
    if w.cold {
        cx.drop()?;
    }
    match w.id {
        "walk-cold" => timed(|| walk(root)),
        "walk-warm" => {
            walk(root)?;
            timed(|| walk(root))
        }
        "readdir-wide" => {
            let dir = root.join(&m.wide_dir);
            list(&dir)?;
            timed(|| {
                let mut n = 0;
                for _ in 0..m.scale.readdir_reps {
                    n = list(&dir)?;
                }
                Ok(n)
            })
        }
        "small-read-cold" => timed(|| read_tree(&root.join(&m.small_dir))),
        "small-read-warm" => {
            read_tree(&root.join(&m.small_dir))?;
            timed(|| read_tree(&root.join(&m.small_dir)))
        }
        "seq-read-cold" => timed(|| read_file(&root.join(&m.big_file))),
        "seq-read-warm" => {
            read_file(&root.join(&m.big_file))?;
            timed(|| read_file(&root.join(&m.big_file)))
        }
        "rand-read" => {
            let f = File::open(root.join(&m.big_file))?;
            let mut rng = Rng::derive(m.seed, "rand-read");
            let blocks = m.scale.big_bytes / 4096;
            let offs: Vec<u64> = (0..m.scale.rand_reads)
                .map(|_| rng.below(blocks) * 4096)
                .collect();
            pread_all(&f, &offs)?;
            timed(|| pread_all(&f, &offs))
        }
        "copy-up" => {
            for p in &m.copyup {
                read_file(&root.join(p))?;
            }
            timed(|| {
                for p in &m.copyup {
                    let path = root.join(p);
                    let mut f = OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .map_err(|e| at(e, &path))?;
                    f.write_all(b"# appended by unionmount-bench\n")
                        .map_err(|e| at(e, &path))?;
                }
                Ok(m.copyup.len() as u64)
            })
        }
        "create" => timed(|| {
            let dir = root.join("srv/new");
            fs::create_dir(&dir)?;
            let data = [b'x'; 100];
            for i in 0..m.scale.create_files {
                File::create(dir.join(format!("f{i}")))?.write_all(&data)?;
            }
            Ok(m.scale.create_files as u64)
        }),
        "rm-rf" => {
            let dir = root.join(&m.rm_dir);
            let n = walk(&dir)?;
            timed(|| {
                fs::remove_dir_all(&dir)?;
                Ok(n + u64::from(dir.symlink_metadata().is_err()))
            })
        }
        "deep-lookup-cold" => timed(|| deep_lookups(root, m)),
        "deep-lookup-warm" => {
            deep_lookups(root, m)?;
            timed(|| deep_lookups(root, m))
        }
        "mount-ready" => Ok(Sample {
            value: mt.mount_secs,
            check: list(root)?,
        }),
        "daemon-rss" => {
            let per_walk = walk(root)?;
            let mut total = per_walk;
            while total < m.scale.rss_min_entries {
                cx.drop()?;
                total += walk(root)?;
            }
            let hwm = mt
                .daemon_hwm()
                .ok_or_else(|| io::Error::other("daemon pid or VmHWM not found"))?;
            Ok(Sample {
                value: hwm as f64,
                check: per_walk,
            })
        }
        other => Err(io::Error::other(format!("unknown workload {other}"))),
    }
}

/// The error with the path it happened on.
fn at(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// `find DIR -exec stat`: lstat every entry below `dir` (via the directory fd, as
/// `DirEntry::metadata` does); returns the number of entries.
pub fn walk(dir: &Path) -> io::Result<u64> {
    let mut stack = vec![dir.to_path_buf()];
    let mut n = 0;
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| at(e, &d))? {
            let e = e.map_err(|e| at(e, &d))?;
            let md = e.metadata().map_err(|err| at(err, &e.path()))?;
            n += 1;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(n)
}

/// `ls -f DIR`: entries of one directory, no stat.
fn list(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        e?;
        n += 1;
    }
    Ok(n)
}

fn read_file(p: &Path) -> io::Result<u64> {
    let mut f = File::open(p).map_err(|e| at(e, p))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// Read every regular file below `dir` to its end; returns the bytes read.
fn read_tree(dir: &Path) -> io::Result<u64> {
    let mut stack = vec![dir.to_path_buf()];
    let mut total = 0;
    let mut buf = vec![0u8; 64 << 10];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(|e| at(e, &d))? {
            let e = e.map_err(|e| at(e, &d))?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let p = e.path();
                let mut f = File::open(&p).map_err(|err| at(err, &p))?;
                loop {
                    match f.read(&mut buf).map_err(|err| at(err, &p))? {
                        0 => break,
                        n => total += n as u64,
                    }
                }
            }
        }
    }
    Ok(total)
}

fn pread_all(f: &File, offs: &[u64]) -> io::Result<u64> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    for &o in offs {
        f.read_exact_at(&mut buf, o)?;
        total += buf.len() as u64;
    }
    Ok(total)
}

/// lstat every file name of the deep stack's merged dir, and as many missing names
/// (negative lookups that must go through every layer); returns names found.
fn deep_lookups(root: &Path, m: &Manifest) -> io::Result<u64> {
    let dir = root.join(&m.deep_dir);
    let mut found = 0;
    for n in &m.deep_names {
        let p = dir.join(n);
        fs::symlink_metadata(&p).map_err(|e| at(e, &p))?;
        found += 1;
    }
    for n in &m.deep_missing {
        match fs::symlink_metadata(dir.join(n)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Ok(_) => found += 1_000_000,
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}
