//! The layered test set: built once per (seed, scale) under the work dir and reused.
//!
//! ```text
//! WORK/set-SEED-full/          (or -quick)
//!   manifest.json              written last: its presence means "complete"
//!   b/                         base: generated Debian-like rootfs (rootfs.rs), 100k+ files
//!   g/srv/big.img              one large file (1 GiB)
//!   wb/srv/wide/e00000..       wide directory, lower half ...
//!   wa/srv/wide/...            ... upper half, overlapping wb by a fifth
//!   s/usr/lib/node_modules/    many small files
//!   s/opt/app/                 the tree the rename workload renames (10,000 files)
//!   g/srv/shared.img           the file every mount of the page-cache workloads reads
//!   o/                         whiteouts (char 0/0), opaque dirs, overridden files
//!   d/0 .. d/N-1               deep stack: every layer holds x/y/z/p/q/r/s/t/
//! ```
//! Main stack, top first: `o:s:wa:wb:g:b`. Deep stack: `d/0:…:d/N-1`. Layer names are
//! short and lowerdir strings relative to the set dir, so 100 layers fit the kernel's
//! one-page mount-option limit whatever the work dir.

use crate::rng::Rng;
use crate::rootfs::{self, Entry};
use crate::sys;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bumped whenever the generator changes, so an old set is not reused.
const VERSION: u32 = 4;

/// Sizes of the test set and of the workloads.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Scale {
    pub name: String,
    pub base_files: usize,
    pub small_files: usize,
    pub wide_entries: usize,
    pub big_bytes: u64,
    pub deep_layers: usize,
    pub deep_files_per_layer: usize,
    pub deep_missing: usize,
    pub copyup_files: usize,
    pub create_files: usize,
    pub rand_reads: usize,
    pub readdir_reps: usize,
    pub rss_min_entries: u64,
    /// Size of the file read through every mount of the page-cache workloads.
    pub shared_bytes: u64,
    /// Mounts of the page-cache workloads: writable ones, and read-only ones (no upper).
    pub pagecache_rw_mounts: usize,
    pub pagecache_ro_mounts: usize,
    /// Files in the lower directory the rename workload renames.
    pub rename_files: usize,
}

impl Scale {
    pub fn full() -> Self {
        Scale {
            name: "full".into(),
            base_files: 100_000,
            small_files: 20_000,
            wide_entries: 20_000,
            big_bytes: 1 << 30,
            deep_layers: 100,
            deep_files_per_layer: 50,
            deep_missing: 1000,
            copyup_files: 2000,
            create_files: 5000,
            rand_reads: 20_000,
            readdir_reps: 10,
            rss_min_entries: 1_000_000,
            shared_bytes: 128 << 20,
            pagecache_rw_mounts: 8,
            pagecache_ro_mounts: 4,
            rename_files: 10_000,
        }
    }

    pub fn quick() -> Self {
        Scale {
            name: "quick".into(),
            base_files: 2000,
            small_files: 500,
            wide_entries: 1000,
            big_bytes: 16 << 20,
            deep_layers: 8,
            deep_files_per_layer: 10,
            deep_missing: 50,
            copyup_files: 100,
            create_files: 200,
            rand_reads: 500,
            readdir_reps: 2,
            rss_min_entries: 5000,
            shared_bytes: 8 << 20,
            pagecache_rw_mounts: 8,
            pagecache_ro_mounts: 4,
            rename_files: 300,
        }
    }
}

/// What the workloads need to know about a built set (paths relative to a mount root).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub seed: u64,
    pub scale: Scale,
    /// Layer dirs relative to the set dir, top first.
    pub main_layers: Vec<String>,
    pub deep_layers: Vec<String>,
    pub base_files: usize,
    pub small_dir: String,
    pub wide_dir: String,
    pub big_file: String,
    /// The lower trees `rm -rf` removes.
    pub rm_dirs: Vec<String>,
    /// The tree `tar cf -` archives (spans the base, small-file and top layers).
    pub tar_dir: String,
    /// The lower directory the rename workload renames, and how many entries it holds.
    pub rename_dir: String,
    pub rename_entries: u64,
    /// The file the page-cache workloads read through every mount, and its lower path
    /// (relative to the set dir).
    pub shared_file: String,
    pub shared_lower: String,
    /// The lower directory `xargs touch` creates files in.
    pub create_dir: String,
    pub copyup: Vec<String>,
    pub deep_dir: String,
    pub deep_names: Vec<String>,
    pub deep_missing: Vec<String>,
    pub build_secs: f64,
}

pub const DEEP_DIR: &str = "x/y/z/p/q/r/s/t";

/// Writes file contents as slices of one pseudo-random pool: fast and deterministic.
struct Writer {
    pool: Vec<u8>,
    rng: Rng,
    dirs: HashSet<PathBuf>,
}

impl Writer {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::derive(seed, "pool");
        let mut pool = vec![0u8; 8 << 20];
        rng.fill(&mut pool);
        Writer {
            pool,
            rng,
            dirs: HashSet::new(),
        }
    }

    fn parent(&mut self, p: &Path) -> io::Result<()> {
        if let Some(d) = p.parent()
            && !self.dirs.contains(d)
        {
            fs::create_dir_all(d)?;
            self.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn file(&mut self, p: &Path, mut size: u64) -> io::Result<()> {
        self.parent(p)?;
        let mut f = fs::File::create(p)?;
        while size > 0 {
            let n = size.min(self.pool.len() as u64 / 2) as usize;
            let off = self.rng.below((self.pool.len() - n) as u64 + 1) as usize;
            f.write_all(&self.pool[off..off + n])?;
            size -= n as u64;
        }
        Ok(())
    }

    fn symlink(&mut self, p: &Path, target: &str) -> io::Result<()> {
        self.parent(p)?;
        match std::os::unix::fs::symlink(target, p) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    }

    fn whiteout(&mut self, p: &Path) -> io::Result<()> {
        self.parent(p)?;
        sys::mknod_whiteout(p)
    }
}

/// The set dir for a seed and scale.
pub fn set_dir(work: &Path, seed: u64, scale: &Scale) -> PathBuf {
    work.join(format!("set-{seed}-{}", scale.name))
}

/// Load the set if it is complete and current, else (re)build it.
pub fn ensure(work: &Path, seed: u64, scale: &Scale, rebuild: bool) -> io::Result<Manifest> {
    let dir = set_dir(work, seed, scale);
    let mf = dir.join("manifest.json");
    // One builder at a time per work dir; a concurrent run waits, then reuses the set.
    let lock = fs::File::create(work.join(".lock"))?;
    sys::flock_exclusive(&lock)?;
    if !rebuild
        && let Ok(text) = fs::read_to_string(&mf)
        && let Ok(m) = serde_json::from_str::<Manifest>(&text)
        && m.version == VERSION
        && m.scale == *scale
    {
        return Ok(m);
    }
    if dir.exists() {
        eprintln!("removing old or incomplete test set {}", dir.display());
        fs::remove_dir_all(&dir)?;
    }
    eprintln!(
        "building test set in {} (once; reused afterwards)",
        dir.display()
    );
    let t = Instant::now();
    let mut m = build(&dir, seed, scale)?;
    m.build_secs = t.elapsed().as_secs_f64();
    fs::write(&mf, serde_json::to_vec_pretty(&m)?)?;
    eprintln!("test set built in {:.1} s", m.build_secs);
    Ok(m)
}

fn build(dir: &Path, seed: u64, scale: &Scale) -> io::Result<Manifest> {
    let mut w = Writer::new(seed);
    let mut rng = Rng::derive(seed, "layers");

    // b: the base rootfs.
    let root = rootfs::generate(seed, scale.base_files);
    let b = dir.join("b");
    let mut files = Vec::new();
    for e in &root.entries {
        match e {
            Entry::File { path, size } => {
                w.file(&b.join(path), *size)?;
                files.push(path.clone());
            }
            Entry::Symlink { path, target } => w.symlink(&b.join(path), target)?,
        }
    }
    files.sort();
    files.dedup();
    eprintln!(
        "  base: {} files, {} entries",
        root.files,
        root.entries.len()
    );

    // o: whiteouts for ~2% of base files, opaque python packages, overridden configs.
    let o = dir.join("o");
    fs::create_dir_all(&o)?;
    let rm_dirs = vec!["usr/share/doc".to_string(), "usr/share/man".to_string()];
    let opaque: Vec<&String> = root.python_dirs.iter().step_by(10).collect();
    for d in &opaque {
        let od = o.join(d);
        fs::create_dir_all(&od)?;
        sys::lsetxattr(&od, "trusted.overlay.opaque", b"y")?;
        w.file(&od.join("__init__.py"), 120)?;
        w.file(&od.join("replaced.py"), 2000)?;
    }
    // Whiteouts only where something below is hidden: one inside an opaque dir would be
    // a directory of a single layer, whose readdir (kernel) lists the whiteout itself.
    let opaque_prefixes: Vec<String> = opaque.iter().map(|d| format!("{d}/")).collect();
    let mut hidden: HashSet<&str> = HashSet::new();
    for f in &files {
        if rng.chance(0.02) && !opaque_prefixes.iter().any(|p| f.starts_with(p.as_str())) {
            w.whiteout(&o.join(f))?;
            hidden.insert(f);
        }
    }
    for f in files
        .iter()
        .filter(|f| f.starts_with("etc/") && !hidden.contains(f.as_str()))
        .step_by(5)
    {
        w.file(&o.join(f), 700)?;
    }

    // s: many small files.
    let s = dir.join("s");
    let small_dir = "usr/lib/node_modules".to_string();
    let per_mod = 100.min(scale.small_files);
    for i in 0..scale.small_files {
        let (m, f) = (i / per_mod, i % per_mod);
        let sub = if f % 4 == 0 { "lib/" } else { "" };
        let size = rng.lognormal(900.0, 1.0, 16, 16 << 10);
        w.file(&s.join(format!("{small_dir}/m{m}/{sub}f{f}.js")), size)?;
    }

    // wb, wa: one wide directory, split across two layers that overlap.
    let wide_dir = "srv/wide".to_string();
    let n = scale.wide_entries;
    let (lo_end, hi_start) = (n * 3 / 5, n * 2 / 5);
    for i in 0..lo_end {
        w.file(&dir.join(format!("wb/{wide_dir}/e{i:05}")), i as u64 % 64)?;
    }
    for i in hi_start..n {
        w.file(&dir.join(format!("wa/{wide_dir}/e{i:05}")), i as u64 % 32)?;
    }

    // s: a vendored application tree for the rename workload, 100 files a directory.
    let rename_dir = "opt/app".to_string();
    let mut rename_dirs = HashSet::new();
    for i in 0..scale.rename_files {
        let sub = format!("{rename_dir}/pkg{:03}", i / 100);
        rename_dirs.insert(sub.clone());
        let size = rng.lognormal(600.0, 1.0, 0, 8 << 10);
        w.file(&s.join(format!("{sub}/mod{}.py", i % 100)), size)?;
    }
    let rename_entries = (scale.rename_files + rename_dirs.len()) as u64;

    // g: the big file, and the file the page-cache workloads share.
    let big_file = "srv/big.img".to_string();
    w.file(&dir.join("g").join(&big_file), scale.big_bytes)?;
    let shared_file = "srv/shared.img".to_string();
    w.file(&dir.join("g").join(&shared_file), scale.shared_bytes)?;

    // d/*: the deep stack.
    let mut deep_names = Vec::new();
    let mut deep_layers = Vec::new();
    for l in 0..scale.deep_layers {
        let ld = dir.join(format!("d/{l}")).join(DEEP_DIR);
        for j in 0..scale.deep_files_per_layer {
            let name = format!("l{l}_{j}");
            w.file(&ld.join(&name), 64)?;
            deep_names.push(name);
        }
        for j in 0..20 {
            w.file(&ld.join(format!("c{j}")), 32)?;
        }
        deep_layers.push(format!("d/{l}"));
    }
    deep_names.extend((0..20).map(|j| format!("c{j}")));
    let deep_missing = (0..scale.deep_missing)
        .map(|k| format!("missing{k}"))
        .collect();

    // Copy-up candidates: visible base files outside rm_dirs, etc/ and the opaque dirs.
    let visible: Vec<&String> = files
        .iter()
        .filter(|f| !rm_dirs.iter().any(|d| f.starts_with(&format!("{d}/"))))
        .filter(|f| !f.starts_with("etc/"))
        .filter(|f| !hidden.contains(f.as_str()))
        .filter(|f| !opaque_prefixes.iter().any(|p| f.starts_with(p.as_str())))
        .collect();
    let mut copyup = Vec::new();
    let mut taken = HashSet::new();
    while copyup.len() < scale.copyup_files.min(visible.len()) {
        let f = *rng.pick(&visible);
        if taken.insert(f) {
            copyup.push(f.clone());
        }
    }

    Ok(Manifest {
        version: VERSION,
        seed,
        scale: scale.clone(),
        main_layers: ["o", "s", "wa", "wb", "g", "b"].map(String::from).to_vec(),
        deep_layers,
        base_files: files.len(),
        small_dir,
        wide_dir,
        big_file,
        rm_dirs,
        tar_dir: "usr/lib".into(),
        rename_dir,
        rename_entries,
        shared_lower: format!("g/{shared_file}"),
        shared_file,
        create_dir: "usr/bin".into(),
        copyup,
        deep_dir: DEEP_DIR.into(),
        deep_names,
        deep_missing,
        build_secs: 0.0,
    })
}
