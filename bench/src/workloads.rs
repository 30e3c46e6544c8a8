//! The workloads, each a `prepare` (untimed) and a timed part, run on a fresh mount.
//!
//! Cold workloads drop the page cache, dentries and inodes after mounting; warm ones do
//! one untimed pass first. Each returns its measured value and a `check` number (entries
//! seen, bytes read…) that must agree across filesystems: a cheap differential test that
//! catches a target doing less work by being wrong.

use crate::fusetrace::Tracer;
use crate::layerset::Manifest;
use crate::memcg::Memcg;
use crate::rng::Rng;
use crate::sys;
use crate::targets::Mounted;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
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

/// How many mounts a sample makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mounts {
    /// One writable mount.
    One,
    /// The page-cache workloads: `Scale::pagecache_rw_mounts` writable mounts, or
    /// `pagecache_ro_mounts` read-only ones, all of the same layers, started in a
    /// memory cgroup of their own.
    PageCache { writable: bool },
}

pub struct Workload {
    pub id: &'static str,
    pub title: &'static str,
    pub stack: Stack,
    pub cold: bool,
    pub unit: Unit,
    /// Writes to the mount: run in both durability classes (see `targets::Durability`).
    pub writes: bool,
    pub mounts: Mounts,
    /// Extra options of the kernel overlay mount for this workload.
    pub kernel_opts: &'static str,
    /// Only meaningful for FUSE daemons (kernel has no daemon).
    pub fuse_only: bool,
    /// Run in the first round only (expensive, and not a timing).
    pub once: bool,
}

impl Workload {
    /// Mounts per sample and whether they are writable.
    pub fn mount_count(&self, m: &Manifest) -> (usize, bool) {
        match self.mounts {
            Mounts::One => (1, true),
            Mounts::PageCache { writable: true } => (m.scale.pagecache_rw_mounts, true),
            Mounts::PageCache { writable: false } => (m.scale.pagecache_ro_mounts, false),
        }
    }
}

const fn w(id: &'static str, title: &'static str, stack: Stack, cold: bool) -> Workload {
    Workload {
        id,
        title,
        stack,
        cold,
        unit: Unit::Secs,
        writes: false,
        mounts: Mounts::One,
        kernel_opts: "",
        fuse_only: false,
        once: false,
    }
}

const fn writes(mut wl: Workload) -> Workload {
    wl.writes = true;
    wl
}

const fn page_cache(id: &'static str, title: &'static str, writable: bool) -> Workload {
    // Not cold: the shared lower file is evicted alone (`sys::evict`), not every cache.
    let mut wl = w(id, title, Stack::Main, false);
    wl.unit = Unit::Bytes;
    wl.mounts = Mounts::PageCache { writable };
    wl
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
        "tar-cold",
        "`tar cf - usr/lib` read to the end, cold",
        Stack::Main,
        true,
    ),
    page_cache(
        "pagecache-rw",
        "page cache: one lower file read through N writable mounts",
        true,
    ),
    page_cache(
        "pagecache-ro",
        "page cache: one lower file read through N read-only mounts",
        false,
    ),
    writes(w(
        "copy-up",
        "copy-up by appending to lower files",
        Stack::Main,
        false,
    )),
    writes(w(
        "create",
        "`xargs touch` of new files in a lower dir",
        Stack::Main,
        false,
    )),
    writes(w(
        "create-newdir",
        "`xargs touch` of new files in a new dir",
        Stack::Main,
        false,
    )),
    writes(w(
        "create-write",
        "create + write 100 B in a new dir (in-process)",
        Stack::Main,
        false,
    )),
    writes(w(
        "rm-rf",
        "`rm -rf` of two lower trees",
        Stack::Main,
        false,
    )),
    Workload {
        kernel_opts: "redirect_dir=on",
        ..writes(w(
            "rename-dir",
            "rename(2) of a lower dir (kernel: redirect_dir=on)",
            Stack::Main,
            false,
        ))
    },
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
        unit: Unit::Bytes,
        fuse_only: true,
        once: true,
        ..w(
            "daemon-rss",
            "daemon peak RSS after walking >= N entries",
            Stack::Main,
            false,
        )
    },
];

pub struct Ctx<'a> {
    pub m: &'a Manifest,
    pub drop_caches: bool,
    /// The test set's directory (the lower layers live below it).
    pub set_dir: &'a Path,
    /// The memory cgroup of this sample's mounts (page-cache workloads).
    pub memcg: Option<&'a Memcg>,
    /// Count the FUSE requests of these mounts during the timed part (`--fuse-requests`).
    pub trace: Option<(&'a Tracer, Vec<&'a Path>)>,
}

impl Ctx<'_> {
    fn drop(&self) -> io::Result<()> {
        if self.drop_caches {
            sys::drop_caches()
        } else {
            Ok(())
        }
    }

    /// Time `f` (which returns the check number), counting FUSE requests if asked.
    fn timed(&self, f: impl FnOnce() -> io::Result<u64>) -> io::Result<Outcome> {
        if let Some((tracer, mounts)) = &self.trace {
            tracer.start(mounts)?;
        }
        let t = Instant::now();
        let check = f();
        let value = t.elapsed().as_secs_f64();
        let requests = match &self.trace {
            Some((tracer, _)) => Some(tracer.stop()?),
            None => None,
        };
        Ok(Outcome::Measured(Sample {
            value,
            check: check?,
            requests,
        }))
    }
}

/// One measurement: the value (seconds or bytes), the cross-target check number, and
/// the FUSE requests of the timed part by opcode, when counted.
pub struct Sample {
    pub value: f64,
    pub check: u64,
    pub requests: Option<BTreeMap<String, u64>>,
}

/// What a sample gave: a measurement, or the errno name of an operation the filesystem
/// refuses by design (fuse-overlayfs's EXDEV on renaming a lower directory). A refusal
/// is a result, not a failure: the report shows it in place of a number.
pub enum Outcome {
    Measured(Sample),
    Refused(&'static str),
}

fn measured(value: f64, check: u64) -> io::Result<Outcome> {
    Ok(Outcome::Measured(Sample {
        value,
        check,
        requests: None,
    }))
}

/// Run workload `w` on the fresh mounts `mts` (one, except for the page-cache workloads).
pub fn run(w: &Workload, cx: &Ctx, mts: &[Mounted]) -> io::Result<Outcome> {
    let mt = mts.first().ok_or_else(|| io::Error::other("no mount"))?;
    let root = mt.mnt.as_path();
    let m = cx.m;
    if w.cold {
        cx.drop()?;
    }
    match w.id {
        "walk-cold" => cx.timed(|| walk(root)),
        "walk-warm" => {
            walk(root)?;
            cx.timed(|| walk(root))
        }
        "readdir-wide" => {
            let dir = root.join(&m.wide_dir);
            list(&dir)?;
            cx.timed(|| {
                let mut n = 0;
                for _ in 0..m.scale.readdir_reps {
                    n = list(&dir)?;
                }
                Ok(n)
            })
        }
        "small-read-cold" => cx.timed(|| read_tree(&root.join(&m.small_dir))),
        "small-read-warm" => {
            read_tree(&root.join(&m.small_dir))?;
            cx.timed(|| read_tree(&root.join(&m.small_dir)))
        }
        "seq-read-cold" => cx.timed(|| read_file(&root.join(&m.big_file))),
        "seq-read-warm" => {
            read_file(&root.join(&m.big_file))?;
            cx.timed(|| read_file(&root.join(&m.big_file)))
        }
        "rand-read" => {
            let f = File::open(root.join(&m.big_file))?;
            let mut rng = Rng::derive(m.seed, "rand-read");
            let blocks = m.scale.big_bytes / 4096;
            let offs: Vec<u64> = (0..m.scale.rand_reads)
                .map(|_| rng.below(blocks) * 4096)
                .collect();
            pread_all(&f, &offs)?;
            cx.timed(|| pread_all(&f, &offs))
        }
        "tar-cold" => cx.timed(|| tar(root, &m.tar_dir)),
        "pagecache-rw" | "pagecache-ro" => page_cache_of(cx, mts),
        "copy-up" => {
            for p in &m.copyup {
                read_file(&root.join(p))?;
            }
            cx.timed(|| {
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
        "create" => {
            let dir = root.join(&m.create_dir);
            list(&dir)?;
            cx.timed(|| xargs_touch(&dir, m.scale.create_files))
        }
        "create-newdir" => cx.timed(|| {
            let dir = root.join("srv/new");
            fs::create_dir(&dir)?;
            xargs_touch(&dir, m.scale.create_files)
        }),
        "create-write" => cx.timed(|| {
            let dir = root.join("srv/new");
            fs::create_dir(&dir)?;
            let data = [b'x'; 100];
            for i in 0..m.scale.create_files {
                File::create(dir.join(format!("f{i}")))?.write_all(&data)?;
            }
            Ok(m.scale.create_files as u64)
        }),
        "rm-rf" => {
            let mut n = 0;
            for d in &m.rm_dirs {
                n += walk(&root.join(d))?;
            }
            cx.timed(|| {
                run_tool(
                    Command::new("rm")
                        .arg("-rf")
                        .args(&m.rm_dirs)
                        .current_dir(root),
                )?;
                let gone = m
                    .rm_dirs
                    .iter()
                    .filter(|d| root.join(d).symlink_metadata().is_err());
                Ok(n + gone.count() as u64)
            })
        }
        "rename-dir" => {
            let (from, to) = (
                root.join(&m.rename_dir),
                root.join(format!("{}-renamed", m.rename_dir)),
            );
            walk(&from)?;
            let mut refused = false;
            let out = cx.timed(|| match fs::rename(&from, &to) {
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    refused = true;
                    Ok(0)
                }
                Err(e) => Err(at(e, &from)),
                Ok(()) => Ok(0),
            })?;
            match out {
                _ if refused => Ok(Outcome::Refused("EXDEV")),
                Outcome::Measured(mut s) => {
                    // What the new name holds must be the whole tree, and the old name gone.
                    s.check = walk(&to)? + u64::from(from.symlink_metadata().is_ok()) * 1_000_000;
                    Ok(Outcome::Measured(s))
                }
                r => Ok(r),
            }
        }
        "deep-lookup-cold" => cx.timed(|| deep_lookups(root, m)),
        "deep-lookup-warm" => {
            deep_lookups(root, m)?;
            cx.timed(|| deep_lookups(root, m))
        }
        "mount-ready" => measured(mt.mount_secs, list(root)?),
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
            measured(hwm as f64, per_walk)
        }
        other => Err(io::Error::other(format!("unknown workload {other}"))),
    }
}

/// The page cache charged while one process reads the shared lower file through every
/// mount in `mts` (all started in `cx.memcg`): the lower file is evicted first, so its
/// pages, and every copy a mount keeps of them, are charged to the sample's cgroup.
fn page_cache_of(cx: &Ctx, mts: &[Mounted]) -> io::Result<Outcome> {
    let cg = cx
        .memcg
        .ok_or_else(|| io::Error::other("no memory cgroup for this sample"))?;
    sys::evict(&cx.set_dir.join(&cx.m.shared_lower))?;
    let files: Vec<_> = mts
        .iter()
        .map(|mt| mt.mnt.join(&cx.m.shared_file))
        .collect();
    let before = cg.page_cache()?;
    let me = std::env::current_exe()?;
    let out = Command::new(me)
        .arg(crate::memcg::READ_ARG)
        .arg(cg.dir())
        .args(&files)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "reader: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let read: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| io::Error::other("reader printed no byte count"))?;
    let after = cg.page_cache()?;
    measured(after.saturating_sub(before) as f64, read)
}

/// `cd DIR && seq N | xargs touch`, the way users create files: names `t0`… on stdin;
/// returns how many names `ls` then finds.
fn xargs_touch(dir: &Path, n: usize) -> io::Result<u64> {
    let mut names = String::new();
    for i in 0..n {
        names.push_str(&format!("t{i}\n"));
    }
    let mut child = Command::new("xargs")
        .arg("touch")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::other(format!("xargs: {e}")))?;
    child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("xargs: no stdin"))?
        .write_all(names.as_bytes())?;
    finish(child, "xargs touch")?;
    Ok(n as u64)
}

/// `tar cf - DIR` in `root`, its archive read to the end (not written to /dev/null,
/// where GNU tar would skip reading file contents); returns the archive's size.
fn tar(root: &Path, dir: &str) -> io::Result<u64> {
    let mut child = Command::new("tar")
        .args(["cf", "-", dir])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::other(format!("tar: {e}")))?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("tar: no stdout"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match out.read(&mut buf)? {
            0 => break,
            n => total += n as u64,
        }
    }
    finish(child, "tar")?;
    Ok(total)
}

/// Run a tool to completion; an error carries its stderr's last line.
fn run_tool(cmd: &mut Command) -> io::Result<()> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    finish(child, &format!("{:?}", cmd.get_program()))
}

fn finish(child: std::process::Child, what: &str) -> io::Result<()> {
    let out = child.wait_with_output()?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(io::Error::other(format!(
        "{what} {}: {}",
        out.status,
        err.lines().last().unwrap_or("").trim()
    )))
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
