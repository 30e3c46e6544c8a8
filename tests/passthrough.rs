//! Lower files passed through to the kernel (one page cache for every mount of a layer),
//! and what that must never cost: no write reaches a lower layer, no open fails with
//! ETXTBSY or EBUSY whatever the order of opens, and every open after a copy-up sees
//! the upper file.
//!
//! Each scenario works on its own lower file, so orders do not mix. At the end every
//! lower file must hold exactly its original bytes.
//!
//! The one documented difference (README, "Known differences"): a file descriptor opened
//! read-only on a lower file before that file is copied up keeps reading the lower
//! version, as overlayfs did before Linux 4.19; its name now leads to the upper copy,
//! which has its own inode number. [`old_fds_keep_lower_content`] pins that down.

mod common;

use common::fsops::{self as fs, Errno};
use common::layer_spec::{LayerDirs, LayerSet};
use common::overlay_harness::{Mounted, should_skip};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const NAMES: &[&str] = &[
    "ro-rw", "rw-ro", "mmap", "trunc-path", "otrunc", "rename-over", "rename-self", "chmod", "closed-first",
    "two-ro", "mmap-write", "link", "threads", "reopen", "append",
];

fn content(name: &str) -> Vec<u8> {
    let mut v = format!("LOWER {name}\n").into_bytes();
    v.extend((0..(256 << 10)).map(|i: usize| b'a' + ((i * 31 + name.len()) % 26) as u8));
    v
}

fn build(tmp: &Path, with_upper: bool) -> LayerDirs {
    let base = tmp.join(if with_upper { "rw" } else { "ro" });
    let d = LayerSet::new(&["d files\nf files/other OTHER-upper-side"], "").build(&base, &[], common::layer_spec::Format::Overlay);
    for n in NAMES {
        fs::write_file(&d.lowers[0].join("files").join(n), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, &content(n)).unwrap();
    }
    d
}

fn mount(d: &LayerDirs, with_upper: bool) -> Mounted {
    if with_upper {
        return Mounted::fuse(d, "").unwrap_or_else(|e| panic!("FUSE mount failed: {e}"));
    }
    let opts = format!("lowerdir={}", d.lowers.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":"));
    Mounted::fuse_args(&["-o", &opts], &d.mnt).unwrap_or_else(|e| panic!("FUSE mount failed: {e}"))
}

/// Collects every unexpected result; ETXTBSY and EBUSY are always unexpected.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn ok<T>(&mut self, what: &str, r: Result<T, Errno>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(format!("{what}: {e}"));
                None
            }
        }
    }
    fn check(&mut self, what: &str, cond: bool) {
        if !cond {
            self.0.push(format!("{what}: not as expected"));
        }
    }
}

fn open(p: &Path, flags: i32) -> Result<OwnedFd, Errno> {
    fs::open(p, flags, 0o644)
}

fn pread_all(fd: &OwnedFd) -> Vec<u8> {
    fs::pread_all(fd).unwrap()
}

/// Pages of `fd`'s file (as mapped through `fd`) resident in the page cache.
fn resident(fd: &OwnedFd) -> usize {
    let len = fs::fstat(fd).unwrap().st_size as usize;
    let page = 4096;
    // SAFETY: a fresh read-only shared mapping of `len` bytes, unmapped below.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd.as_raw_fd(), 0);
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", Errno::last());
        let mut vec = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0, "mincore: {}", Errno::last());
        libc::munmap(p, len);
        vec.iter().filter(|b| *b & 1 == 1).count()
    }
}

/// Read `name` through the mount, drop the lower file's pages, and tell whether the
/// mount's view of the file lost its pages too: it did iff the mount shares the lower
/// file's page cache (passthrough) instead of keeping a copy of its own.
fn shares_page_cache(mnt: &Path, lower: &Path) -> bool {
    let fd = open(mnt, libc::O_RDONLY).unwrap();
    let _ = pread_all(&fd);
    let l = open(lower, libc::O_RDONLY).unwrap();
    // Dirty pages are not dropped: write them back first.
    fs::fsync(&l).unwrap();
    // SAFETY: plain syscall on an owned fd.
    assert_eq!(unsafe { libc::posix_fadvise(l.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
    resident(&fd) == 0
}

fn mmap_read(fd: &OwnedFd, len: usize) -> Vec<u8> {
    // SAFETY: read-only private copy of a fresh mapping, unmapped before returning.
    unsafe {
        let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd.as_raw_fd(), 0);
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", Errno::last());
        let v = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        libc::munmap(p, len);
        v
    }
}

fn lower_unchanged(d: &LayerDirs) -> Vec<String> {
    NAMES
        .iter()
        .filter(|n| fs::read_file(&d.lowers[0].join("files").join(n)).ok() != Some(content(n)))
        .map(|n| format!("lower file {n} changed"))
        .collect()
}

/// Every order of opens on lower files: none fails, new opens see the upper file,
/// nothing reaches the lower layer.
#[test]
fn every_order_of_opens() {
    if should_skip("every_order_of_opens") {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("umpt").tempdir().unwrap();
    let d = build(tmp.path(), true);
    let mut m = mount(&d, true);
    let f = |n: &str| m.mnt.join("files").join(n);
    let mut r = Report::default();

    // read-only, then read-write while the first is open
    let ro = open(&f("ro-rw"), libc::O_RDONLY).unwrap();
    let _ = pread_all(&ro);
    if let Some(rw) = r.ok("ro-rw: rw open", open(&f("ro-rw"), libc::O_RDWR)) {
        r.ok("ro-rw: write", fs::pwrite(&rw, b"NEW", 0));
    }
    r.check("ro-rw: new open sees the write", fs::read_file(&f("ro-rw")).unwrap().starts_with(b"NEW"));
    drop(ro);

    // read-write, then read-only
    let rw = open(&f("rw-ro"), libc::O_RDWR).unwrap();
    r.ok("rw-ro: write", fs::pwrite(&rw, b"NEW", 0));
    if let Some(ro) = r.ok("rw-ro: ro open", open(&f("rw-ro"), libc::O_RDONLY)) {
        r.check("rw-ro: ro sees the write", pread_all(&ro).starts_with(b"NEW"));
    }
    drop(rw);

    // a read-only mapping, then an append
    let ro = open(&f("mmap"), libc::O_RDONLY).unwrap();
    let before = mmap_read(&ro, 16);
    if let Some(a) = r.ok("mmap: append open", open(&f("mmap"), libc::O_WRONLY | libc::O_APPEND)) {
        r.ok("mmap: append", fs::write_all(&a, b"+tail"));
    }
    r.check("mmap: mapping still readable", mmap_read(&ro, 16) == before);
    r.check("mmap: new open sees the append", fs::read_file(&f("mmap")).unwrap().ends_with(b"+tail"));
    drop(ro);

    // truncate(2) by path while a read-only fd is open, then a new open
    let ro = open(&f("trunc-path"), libc::O_RDONLY).unwrap();
    r.ok("trunc-path: truncate", fs::truncate(&f("trunc-path"), 5));
    let len = r.ok("trunc-path: read", fs::read_file(&f("trunc-path"))).map(|v| v.len());
    r.check("trunc-path: new open sees 5 bytes", len == Some(5));
    drop(ro);

    // O_TRUNC while a read-only fd is open
    let ro = open(&f("otrunc"), libc::O_RDONLY).unwrap();
    if let Some(t) = r.ok("otrunc: open", open(&f("otrunc"), libc::O_WRONLY | libc::O_TRUNC)) {
        r.ok("otrunc: write", fs::write_all(&t, b"T"));
    }
    r.check("otrunc: new open sees T", fs::read_file(&f("otrunc")).ok().as_deref() == Some(&b"T"[..]));
    drop(ro);

    // another file renamed over it while a read-only fd is open
    let ro = open(&f("rename-over"), libc::O_RDONLY).unwrap();
    r.ok("rename-over: write other", fs::write_file(&f("other"), libc::O_WRONLY | libc::O_TRUNC, b"OTHER"));
    r.ok("rename-over: rename", fs::rename2(&f("other"), &f("rename-over"), 0));
    r.check("rename-over: name shows the new file", fs::read_file(&f("rename-over")).ok().as_deref() == Some(&b"OTHER"[..]));
    r.check("rename-over: old fd still reads", pread_all(&ro).starts_with(b"LOWER rename-over"));
    if let Some(rw) = r.ok("rename-over: rw open", open(&f("rename-over"), libc::O_RDWR)) {
        r.ok("rename-over: write", fs::pwrite(&rw, b"o", 0));
    }
    drop(ro);

    // the file itself renamed (a copy-up) while a read-only fd is open, then written
    let ro = open(&f("rename-self"), libc::O_RDONLY).unwrap();
    r.ok("rename-self: rename", fs::rename2(&f("rename-self"), &f("renamed"), 0));
    if let Some(rw) = r.ok("rename-self: rw open", open(&f("renamed"), libc::O_RDWR)) {
        r.ok("rename-self: write", fs::pwrite(&rw, b"NEW", 0));
    }
    r.check("rename-self: new open sees the write", fs::read_file(&f("renamed")).unwrap().starts_with(b"NEW"));
    drop(ro);

    // metadata copy-up while a read-only fd is open, then a write open
    let ro = open(&f("chmod"), libc::O_RDONLY).unwrap();
    r.ok("chmod: chmod", fs::chmod(&f("chmod"), 0o600));
    if let Some(rw) = r.ok("chmod: rw open", open(&f("chmod"), libc::O_RDWR)) {
        r.ok("chmod: write", fs::pwrite(&rw, b"NEW", 0));
    }
    r.check("chmod: new open sees the write", fs::read_file(&f("chmod")).unwrap().starts_with(b"NEW"));
    drop(ro);

    // read-only fd closed before the write open
    drop(open(&f("closed-first"), libc::O_RDONLY).unwrap());
    if let Some(rw) = r.ok("closed-first: rw open", open(&f("closed-first"), libc::O_RDWR)) {
        r.ok("closed-first: write", fs::pwrite(&rw, b"NEW", 0));
    }

    // two read-only fds, a writer, then more opens of every kind
    let (a, b) = (open(&f("two-ro"), libc::O_RDONLY).unwrap(), open(&f("two-ro"), libc::O_RDONLY).unwrap());
    let w = r.ok("two-ro: rw open", open(&f("two-ro"), libc::O_RDWR));
    let w2 = r.ok("two-ro: second rw open", open(&f("two-ro"), libc::O_WRONLY));
    if let Some(w) = &w {
        r.ok("two-ro: write", fs::pwrite(w, b"NEW", 0));
    }
    let c = r.ok("two-ro: ro open after", open(&f("two-ro"), libc::O_RDONLY));
    r.check("two-ro: it sees the write", c.as_ref().is_some_and(|c| pread_all(c).starts_with(b"NEW")));
    drop((a, b, w, w2, c));

    // a shared writable mapping through a write open, while a read-only fd is open
    let ro = open(&f("mmap-write"), libc::O_RDONLY).unwrap();
    r.ok("mmap-write: mmap write", fs::mmap_write(&f("mmap-write"), 0, b"MAPPED"));
    r.check("mmap-write: new open sees it", fs::read_file(&f("mmap-write")).unwrap().starts_with(b"MAPPED"));
    drop(ro);

    // a hard link (a copy-up) while a read-only fd is open, then a write through the link
    let ro = open(&f("link"), libc::O_RDONLY).unwrap();
    r.ok("link: link", fs::link(&f("link"), &f("link2")));
    if let Some(rw) = r.ok("link: rw open of the link", open(&f("link2"), libc::O_RDWR)) {
        r.ok("link: write", fs::pwrite(&rw, b"NEW", 0));
    }
    r.check("link: first name sees it", fs::read_file(&f("link")).unwrap().starts_with(b"NEW"));
    drop(ro);

    // reopen of an old fd through /proc: a read-only one works
    let ro = open(&f("reopen"), libc::O_RDONLY).unwrap();
    let again = PathBuf::from(format!("/proc/self/fd/{}", ro.as_raw_fd()));
    r.ok("reopen: ro reopen before copy-up", open(&again, libc::O_RDONLY));
    drop(ro);

    // many threads mixing opens of one file
    let p = f("threads");
    let errs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..6)
            .map(|t| {
                let p = p.clone();
                s.spawn(move || {
                    let mut errs = Vec::new();
                    for i in 0..60 {
                        let flags = if (i + t) % 3 == 0 { libc::O_RDWR } else { libc::O_RDONLY };
                        match open(&p, flags) {
                            Ok(fd) => {
                                if flags == libc::O_RDWR {
                                    let _ = fs::pwrite(&fd, b"T", 0);
                                }
                                let _ = fs::pread_all(&fd);
                            }
                            Err(e) => errs.push(format!("threads: open {flags:#x}: {e}")),
                        }
                    }
                    errs
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    r.0.extend(errs);

    // appends from two fds, one opened before the other copied the file up
    let a1 = open(&f("append"), libc::O_WRONLY | libc::O_APPEND).unwrap();
    let ro = open(&f("append"), libc::O_RDONLY).unwrap();
    let a2 = r.ok("append: second writer", open(&f("append"), libc::O_WRONLY | libc::O_APPEND));
    r.ok("append: write 1", fs::write_all(&a1, b"1"));
    if let Some(a2) = &a2 {
        r.ok("append: write 2", fs::write_all(a2, b"2"));
    }
    r.check("append: both appends landed", fs::read_file(&f("append")).unwrap().ends_with(b"12"));
    drop((a1, a2, ro));

    m.unmount().unwrap();
    r.0.extend(lower_unchanged(&d));
    assert!(r.0.is_empty(), "{}", r.0.join("\n"));
}

/// The documented difference: a read-only fd opened on the lower file before a copy-up
/// keeps reading the lower bytes when the lower file is passed through; the name now
/// leads to the copy (its own inode number), and every new open sees it.
#[test]
fn old_fds_keep_lower_content() {
    if should_skip("old_fds_keep_lower_content") {
        return;
    }
    let tmp = tempfile::Builder::new().prefix("umpt").tempdir().unwrap();
    let d = build(tmp.path(), true);
    let mut m = mount(&d, true);
    let p = m.mnt.join("files/ro-rw");
    let passthrough = shares_page_cache(&p, &d.lowers[0].join("files/ro-rw"));
    let ro = open(&p, libc::O_RDONLY).unwrap();
    let ino_before = fs::fstat(&ro).unwrap().st_ino;
    let rw = open(&p, libc::O_RDWR).unwrap();
    fs::pwrite(&rw, b"NEW", 0).unwrap();
    let old_view = pread_all(&ro);
    assert!(fs::read_file(&p).unwrap().starts_with(b"NEW"), "a new open must see the upper file");
    if passthrough {
        assert!(old_view.starts_with(b"LOWER"), "old fd: expected the lower bytes (passed through)");
        assert_ne!(fs::stat(&p).unwrap().st_ino, ino_before, "the copy is a new inode");
        assert_eq!(fs::fstat(&rw).unwrap().st_ino, fs::stat(&p).unwrap().st_ino);
    } else {
        eprintln!("old_fds_keep_lower_content: the kernel offers no FUSE passthrough; old fds follow the copy-up");
        assert!(old_view.starts_with(b"NEW"), "old fd (page cache): expected to follow the copy-up");
    }
    drop((ro, rw));
    m.unmount().unwrap();
    assert!(lower_unchanged(&d).is_empty());
}

/// Lower files are passed through by default: the mount holds no page cache of its own
/// for them, in a writable mount and in one without an upper layer.
#[test]
fn lower_files_share_the_page_cache() {
    if should_skip("lower_files_share_the_page_cache") {
        return;
    }
    if !kernel_has_passthrough() {
        eprintln!("SKIPPED lower_files_share_the_page_cache: kernel older than 6.9 (no FUSE passthrough)");
        return;
    }
    let tmp = tempfile::Builder::new().prefix("umpt").tempdir().unwrap();
    for with_upper in [true, false] {
        let d = build(tmp.path(), with_upper);
        let mut m = mount(&d, with_upper);
        for n in ["two-ro", "mmap"] {
            assert!(
                shares_page_cache(&m.mnt.join("files").join(n), &d.lowers[0].join("files").join(n)),
                "{n} (upper layer: {with_upper}): the mount keeps its own copy of the lower file's pages"
            );
        }
        m.unmount().unwrap();
    }
}

fn kernel_has_passthrough() -> bool {
    let rel = fs::read_file(Path::new("/proc/sys/kernel/osrelease")).unwrap();
    let s = String::from_utf8_lossy(&rel);
    let mut it = s.trim().split(['.', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
    let (maj, min) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (maj, min) >= (6, 9)
}
