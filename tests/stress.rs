//! Load: 8 threads doing random create, write, read, append, truncate, rename, link,
//! unlink, mkdir, rmdir and readdir on a multi-layer FUSE mount for a fixed time, each in
//! its own subtree and checked op by op against a model of that subtree; at the end the
//! merged tree must equal the models, also after a fresh mount of the same upper. A
//! watchdog reports a deadlock (the op each thread is stuck in) instead of hanging.
//! Also: readers of a file during its copy-up see the whole old content, never a mix.
//!
//! `UNIONMOUNT_STRESS_SECS` (default 8) sets the load time, `UNIONMOUNT_SEED` the seed.

mod common;

use common::fsops::{self as fs, Errno};
use common::layer_spec::{Format, LayerSet};
use common::overlay_harness::{Mounted, Single, mountinfo_line, should_skip};
use common::rng::{Rng, seed_from_env};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const THREADS: usize = 8;

#[derive(Clone, Debug, PartialEq)]
enum Ent {
    Dir,
    File(usize),
}

/// One thread's expected subtree: path (relative to the mount) → entry; file contents are
/// shared by hard links, so they live in `data` indexed by a model inode.
struct Model {
    entries: BTreeMap<String, Ent>,
    data: Vec<Vec<u8>>,
}

impl Model {
    fn load(mnt: &Path, root: &str) -> Model {
        let mut m = Model { entries: BTreeMap::new(), data: Vec::new() };
        m.scan(mnt, root);
        m
    }
    fn scan(&mut self, mnt: &Path, rel: &str) {
        let st = fs::lstat(&mnt.join(rel)).unwrap();
        if fs::is_dir(&st) {
            self.entries.insert(rel.to_string(), Ent::Dir);
            for n in fs::list_names(&mnt.join(rel)).unwrap() {
                self.scan(mnt, &format!("{rel}/{n}"));
            }
        } else {
            self.data.push(fs::read_file(&mnt.join(rel)).unwrap());
            self.entries.insert(rel.to_string(), Ent::File(self.data.len() - 1));
        }
    }
    fn pick(&self, rng: &mut Rng, dirs: bool) -> Option<String> {
        let v: Vec<&String> =
            self.entries.iter().filter(|(_, e)| (**e == Ent::Dir) == dirs).map(|(k, _)| k).collect();
        if v.is_empty() { None } else { Some(rng.pick(&v).to_string()) }
    }
    fn children(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.entries
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(String::from)
            .collect()
    }
    fn file(&self, p: &str) -> usize {
        match self.entries[p] {
            Ent::File(i) => i,
            Ent::Dir => unreachable!(),
        }
    }
    /// Rename `from` (and everything below it) to `to`.
    fn rename(&mut self, from: &str, to: &str) {
        let prefix = format!("{from}/");
        let moved: Vec<String> =
            self.entries.keys().filter(|k| *k == from || k.starts_with(&prefix)).cloned().collect();
        for k in moved {
            let e = self.entries.remove(&k).unwrap();
            self.entries.insert(format!("{to}{}", &k[from.len()..]), e);
        }
    }
    /// What the mount must show: path → None for a dir, Some(content) for a file.
    fn expected(&self) -> BTreeMap<String, Option<Vec<u8>>> {
        self.entries
            .iter()
            .map(|(k, e)| (k.clone(), if let Ent::File(i) = e { Some(self.data[*i].clone()) } else { None }))
            .collect()
    }
}

fn actual(mnt: &Path, root: &str) -> BTreeMap<String, Option<Vec<u8>>> {
    let m = Model::load(mnt, root);
    m.expected()
}

fn layers() -> LayerSet {
    let mut bottom = String::new();
    let mut top = String::new();
    for t in 0..THREADS {
        for i in 0..10 {
            bottom.push_str(&format!("f t{t}/f{i} bottom-{t}-{i}\n"));
        }
        for i in 0..5 {
            bottom.push_str(&format!("f t{t}/sub/g{i} g{i}\n"));
        }
        bottom.push_str(&format!("f t{t}/sub/deep/x x\nd t{t}/emptydir\n"));
        top.push_str(&format!("f t{t}/f0 top\nw t{t}/f1\nw t{t}/sub/g0\nf t{t}/sub/top-only t\n"));
    }
    for i in 0..50 {
        bottom.push_str(&format!("f shared/s{i} shared-{i}\n"));
    }
    LayerSet::new(&[&top, &bottom], "")
}

/// One worker: random ops in `t{t}` until `deadline`, each checked against the model.
fn worker(mnt: &Path, t: usize, seed: u64, deadline: Instant, current: &Mutex<String>) -> Result<Model, String> {
    let root = format!("t{t}");
    let mut m = Model::load(mnt, &root);
    let shared = fs::list_names(&mnt.join("shared")).unwrap();
    let mut rng = Rng(seed);
    let mut log: Vec<String> = Vec::new();
    let mut counter = 0;
    let j = |p: &str| mnt.join(p);
    while Instant::now() < deadline {
        counter += 1;
        let new_name = |m: &Model, rng: &mut Rng| format!("{}/n{counter}", m.pick(rng, true).unwrap());
        let content = format!("c{t}-{counter}-").repeat(1 + rng.below(200) as usize).into_bytes();
        let mut choice = rng.below(100);
        if m.entries.len() > 250 && choice < 30 {
            choice = 60; // shrink: unlink
        }
        let file = m.pick(&mut rng, false);
        if file.is_none() && (12..70).contains(&choice) {
            choice = 0;
        }
        let f = file.unwrap_or_default();
        let op: String;
        let r: Result<(), Errno> = match choice {
            0..12 => {
                let p = new_name(&m, &mut rng);
                op = format!("create {p}");
                *current.lock().unwrap() = op.clone();
                let r = fs::write_file(&j(&p), libc::O_CREAT | libc::O_EXCL, &content);
                m.data.push(content);
                m.entries.insert(p, Ent::File(m.data.len() - 1));
                r
            }
            12..22 => {
                op = format!("overwrite {f}");
                *current.lock().unwrap() = op.clone();
                let i = m.file(&f);
                m.data[i] = content.clone();
                fs::write_file(&j(&f), libc::O_TRUNC, &content)
            }
            22..30 => {
                op = format!("append {f}");
                *current.lock().unwrap() = op.clone();
                let i = m.file(&f);
                m.data[i].extend_from_slice(&content);
                fs::write_file(&j(&f), libc::O_APPEND, &content)
            }
            30..45 => {
                op = format!("read {f}");
                *current.lock().unwrap() = op.clone();
                let want = &m.data[m.file(&f)];
                match fs::read_file(&j(&f)) {
                    Ok(got) if &got == want => Ok(()),
                    Ok(got) => return Err(report(&log, &op, &format!("content {} bytes, model {} bytes", got.len(), want.len()))),
                    Err(e) => Err(e),
                }
            }
            45..50 => {
                let len = rng.below(300) as usize;
                op = format!("truncate {f} {len}");
                *current.lock().unwrap() = op.clone();
                let i = m.file(&f);
                m.data[i].resize(len, 0);
                fs::truncate(&j(&f), len as i64)
            }
            50..58 => {
                let to = new_name(&m, &mut rng);
                op = format!("rename {f} {to}");
                *current.lock().unwrap() = op.clone();
                m.rename(&f, &to);
                fs::rename2(&j(&f), &j(&to), 0)
            }
            58..63 => {
                let to = new_name(&m, &mut rng);
                op = format!("link {f} {to}");
                *current.lock().unwrap() = op.clone();
                m.entries.insert(to.clone(), Ent::File(m.file(&f)));
                fs::link(&j(&f), &j(&to))
            }
            63..71 => {
                op = format!("unlink {f}");
                *current.lock().unwrap() = op.clone();
                m.entries.remove(&f);
                fs::unlink(&j(&f))
            }
            71..77 => {
                let p = new_name(&m, &mut rng);
                op = format!("mkdir {p}");
                *current.lock().unwrap() = op.clone();
                m.entries.insert(p.clone(), Ent::Dir);
                fs::mkdir(&j(&p), 0o755)
            }
            77..82 => {
                let d = m.pick(&mut rng, true).unwrap();
                if d == root {
                    continue;
                }
                op = format!("rmdir {d}");
                *current.lock().unwrap() = op.clone();
                let r = fs::rmdir(&j(&d));
                let want = if m.children(&d).is_empty() { Ok(()) } else { Err(Errno(libc::ENOTEMPTY)) };
                if r != want {
                    return Err(report(&log, &op, &format!("got {r:?}, model says {want:?}")));
                }
                if r.is_ok() {
                    m.entries.remove(&d);
                }
                Ok(())
            }
            82..85 => {
                let d = m.pick(&mut rng, true).unwrap();
                let inside = format!("{d}/");
                let parent = m.pick(&mut rng, true).unwrap();
                if d == root || parent == d || parent.starts_with(&inside) {
                    continue;
                }
                let to = format!("{parent}/n{counter}");
                op = format!("rename dir {d} {to}");
                *current.lock().unwrap() = op.clone();
                m.rename(&d, &to);
                fs::rename2(&j(&d), &j(&to), 0)
            }
            85..95 => {
                let d = m.pick(&mut rng, true).unwrap();
                op = format!("readdir {d}");
                *current.lock().unwrap() = op.clone();
                match fs::list_names(&j(&d)) {
                    Ok(got) if got == m.children(&d) => Ok(()),
                    Ok(got) => return Err(report(&log, &op, &format!("got {got:?}, model {:?}", m.children(&d)))),
                    Err(e) => Err(e),
                }
            }
            _ => {
                let s = rng.pick(&shared).clone();
                op = format!("read shared/{s}");
                *current.lock().unwrap() = op.clone();
                let want = format!("shared-{}", &s[1..]).into_bytes();
                match fs::read_file(&j(&format!("shared/{s}"))) {
                    Ok(got) if got == want => fs::list_names(&j("shared")).map(|_| ()),
                    Ok(_) => return Err(report(&log, &op, "wrong content")),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = r {
            return Err(report(&log, &op, &format!("unexpected {e}")));
        }
        log.push(op);
    }
    *current.lock().unwrap() = "done".into();
    Ok(m)
}

fn report(log: &[String], op: &str, what: &str) -> String {
    let tail: Vec<&String> = log.iter().rev().take(15).rev().collect();
    format!("{op}: {what}\n  preceding ops: {tail:?}")
}

/// Abort the FUSE connection of `mnt` so that threads stuck in it return.
fn abort_connection(mnt: &Path) {
    let line = mountinfo_line(mnt).unwrap_or_default();
    if let Some(minor) = line.split(' ').nth(2).and_then(|d| d.split(':').nth(1)) {
        let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
    }
}

#[test]
fn eight_threads_of_random_ops_match_their_models() {
    if should_skip("stress") {
        return;
    }
    let secs = std::env::var("UNIONMOUNT_STRESS_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    let seed = seed_from_env("UNIONMOUNT_SEED");
    eprintln!("stress: UNIONMOUNT_SEED={seed}, {THREADS} threads for {secs}s");
    let mut s = Single::new(&layers(), &[Format::Overlay, Format::Oci], Format::Overlay, "");
    let mnt = s.mount.mnt.clone();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let current: Arc<Vec<Mutex<String>>> = Arc::new((0..THREADS).map(|_| Mutex::new(String::new())).collect());
    let (tx, rx) = mpsc::channel();
    for t in 0..THREADS {
        let (tx, mnt, current) = (tx.clone(), mnt.clone(), current.clone());
        std::thread::spawn(move || {
            let r = worker(&mnt, t, seed.wrapping_add(t as u64), deadline, &current[t]);
            let _ = tx.send((t, r));
        });
    }
    let mut models = BTreeMap::new();
    let mut failures = Vec::new();
    for _ in 0..THREADS {
        match rx.recv_timeout(Duration::from_secs(secs + 120)) {
            Ok((t, Ok(m))) => {
                models.insert(t, m);
            }
            Ok((t, Err(e))) => failures.push(format!("thread {t}: {e}")),
            Err(_) => {
                let stuck: Vec<String> =
                    current.iter().enumerate().map(|(t, c)| format!("t{t}: {}", c.lock().unwrap())).collect();
                abort_connection(&mnt);
                panic!("deadlock? threads still busy 120s after the deadline: {stuck:?} (seed {seed})");
            }
        }
    }
    assert!(failures.is_empty(), "seed {seed}: {} thread(s) failed:\n{}", failures.len(), failures.join("\n"));
    for (t, m) in &models {
        assert_eq!(actual(&mnt, &format!("t{t}")), m.expected(), "thread {t}: merged tree differs from model (seed {seed})");
    }
    s.mount.unmount().unwrap();
    let mut again = Mounted::fuse(&s.dirs, "").expect("remount");
    for (t, m) in &models {
        assert_eq!(actual(&mnt, &format!("t{t}")), m.expected(), "thread {t}: after remount, tree differs from model (seed {seed})");
    }
    again.unmount().unwrap();
}

/// Readers that open and read a large lower file while it is copied up see exactly the
/// old content every time (never a short file, zeros or a mix).
#[test]
fn readers_during_copy_up_see_whole_old_content() {
    if should_skip("readers_during_copy_up") {
        return;
    }
    const SIZE: usize = 48 << 20;
    let set = LayerSet::new(&[&format!("f big size={SIZE}\n")], "");
    let s = Single::new(&set, &[], Format::Overlay, "");
    let big = s.mount.mnt.join("big");
    let want: Arc<Vec<u8>> = Arc::new((0..SIZE).map(|i| b'a' + (i * 7 % 26) as u8).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (big, want, stop, reads) = (big.clone(), want.clone(), stop.clone(), reads.clone());
        readers.push(std::thread::spawn(move || {
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match fs::read_file(&big) {
                    Ok(got) if got == *want => {}
                    Ok(got) => {
                        let at = got.iter().zip(want.iter()).position(|(a, b)| a != b);
                        bad.push(format!("read {} bytes, first difference at {at:?}", got.len()))
                    }
                    Err(e) => bad.push(format!("read failed: {e}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
            bad
        }));
    }
    // Bounded waits: a reader stuck in the filesystem must fail the test, not hang it.
    let wait_reads = |n: usize, what: &str| {
        let start = Instant::now();
        while reads.load(Ordering::Relaxed) < n {
            assert!(start.elapsed() < Duration::from_secs(120), "readers stuck {what}");
            std::thread::yield_now();
        }
    };
    wait_reads(3, "before the copy-up");
    // Copy-up by chmod (content unchanged), while the readers keep reading.
    fs::chmod(&big, 0o600).unwrap();
    let after = reads.load(Ordering::Relaxed);
    wait_reads(after + 6, "after the copy-up");
    stop.store(true, Ordering::Relaxed);
    let bad: Vec<String> = readers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert!(bad.is_empty(), "readers saw wrong content during copy-up: {bad:?}");
    assert_eq!(fs::read_file(&s.dirs.upper.join("big")).unwrap().len(), SIZE, "upper copy incomplete");
}

/// readdir of a merged directory while another thread creates and removes entries in it:
/// every entry that exists throughout is returned exactly once, and no name twice, however
/// many getdents calls the listing takes.
#[test]
fn readdir_is_stable_under_concurrent_change() {
    if should_skip("readdir_concurrent") {
        return;
    }
    let mut bottom = String::new();
    let mut top = String::new();
    for i in 0..600 {
        bottom.push_str(&format!("f d/stable-{i:04} b\n"));
    }
    for i in (0..600).step_by(4) {
        top.push_str(&format!("f d/stable-{i:04} t\nf d/top-{i:04} t\n"));
    }
    let s = Single::new(&LayerSet::new(&[&top, &bottom], ""), &[], Format::Overlay, "");
    let dir = s.mount.mnt.join("d");
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = dir.join(format!("churn-{}", i % 50));
                let _ = fs::write_file(&p, libc::O_CREAT, b"c");
                if i.is_multiple_of(3) {
                    let _ = fs::unlink(&dir.join(format!("churn-{}", (i + 25) % 50)));
                }
                i += 1;
            }
        })
    };
    let mut problems = Vec::new();
    for round in 0..20 {
        let names = match fs::getdents_names(&dir, 512) {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!("round {round}: readdir failed: {e}"));
                continue;
            }
        };
        let mut seen = std::collections::BTreeMap::new();
        for n in &names {
            *seen.entry(String::from_utf8_lossy(n).into_owned()).or_insert(0) += 1;
        }
        let dups: Vec<&String> = seen.iter().filter(|(_, c)| **c > 1).map(|(k, _)| k).collect();
        let stable = seen.keys().filter(|k| k.starts_with("stable-") || k.starts_with("top-")).count();
        if !dups.is_empty() || stable != 750 {
            problems.push(format!("round {round}: {stable} of 750 stable names, duplicates {dups:?}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    assert!(problems.is_empty(), "readdir under concurrent change: {problems:#?}");
}
