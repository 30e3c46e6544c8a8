//! Seeded random operation sequences over small random layered trees, run on kernel
//! overlayfs and on the FUSE union filesystem; the result of every operation (Ok or errno,
//! plus data read back) and the final merged trees must match, and so must the normalised
//! upper directories when no directory was renamed (kernel gives EXDEV there and the runner
//! falls back to copy + delete like mv(1), which leaves a different but equivalent upper).
//!
//! Besides path operations, ops hold up to three O_RDWR fds across later ops (write and
//! read through them after renames, unlinks and copy-ups of their paths).
//!
//! Environment: `UNIONMOUNT_SEED` (default: time), `UNIONMOUNT_RANDOM_SEQS` (default 30),
//! `UNIONMOUNT_RANDOM_OPS` (default 40). Sequence i uses seed SEED+i, so a failing sequence
//! is replayed alone with `UNIONMOUNT_SEED=<its seed> UNIONMOUNT_RANDOM_SEQS=1`.

mod common;

use common::fsops::{self as fs, SysResult};
use common::layer_spec::{Format, LayerSet};
use common::overlay_harness::{Pair, fuse_label, should_skip};
use common::rng::Rng;
use std::fmt::Write as _;
use std::path::Path;

const NAMES: &[&str] = &["a", "b", "c", "d"];
const MODES: &[u32] = &[0o644, 0o600, 0o755, 0o700, 0o640];

/// Entries visible in the merged view of the layers built so far: path → is a directory.
/// Whiteouts are generated only where they hide something in that view: kernel overlayfs
/// lists whiteouts found in a directory that merges with nothing below (a state overlayfs
/// never writes itself), which would make the kernel an unfit reference.
type Below = std::collections::BTreeMap<String, bool>;

/// One layer's spec: up to depth 2 below the root, every name from NAMES with some chance.
fn gen_layer(rng: &mut Rng, layer: &str, below: &mut Below, paths: &mut Vec<String>) -> String {
    let mut spec = String::new();
    let mut entries = Vec::new();
    gen_dir(rng, layer, "", 0, below, false, &mut spec, &mut entries);
    // Fold this layer into the merged view, parents before children.
    for (p, kind) in entries {
        paths.push(p.clone());
        let prefix = format!("{p}/");
        let replace = kind != 'd' || below.get(&p) != Some(&true) || kind == 'o';
        if replace {
            below.retain(|k, _| k != &p && !k.starts_with(&prefix));
        }
        if kind != 'w' {
            below.insert(p, kind == 'd' || kind == 'o');
        }
    }
    spec
}

#[allow(clippy::too_many_arguments)]
fn gen_dir(
    rng: &mut Rng,
    layer: &str,
    dir: &str,
    depth: u32,
    below: &Below,
    in_opaque: bool,
    spec: &mut String,
    entries: &mut Vec<(String, char)>,
) {
    for name in NAMES {
        if !rng.chance(45) {
            continue;
        }
        let p = format!("{dir}{name}");
        let kind = match rng.below(100) {
            0..35 => {
                let mode = rng.pick(MODES);
                let _ = write!(spec, "f {p} {layer}-{p}-{} mode={mode:o}", rng.below(100));
                if rng.chance(20) {
                    let _ = write!(spec, " x:user.k={}", rng.below(10));
                }
                spec.push('\n');
                'f'
            }
            35..62 if depth < 2 => {
                let opaque = !below.is_empty() && rng.chance(20);
                let _ = writeln!(
                    spec,
                    "d {p} mode={:o}{}",
                    rng.pick(&[0o755, 0o700, 0o750]),
                    if opaque { " opaque" } else { "" }
                );
                entries.push((p.clone(), if opaque { 'o' } else { 'd' }));
                gen_dir(rng, layer, &format!("{p}/"), depth + 1, below, in_opaque || opaque, spec, entries);
                continue;
            }
            62..72 => {
                let _ = writeln!(spec, "l {p} {}", rng.pick(NAMES));
                'l'
            }
            72..92 if !in_opaque && below.contains_key(&p) => {
                let _ = writeln!(spec, "w {p}");
                'w'
            }
            92..96 => {
                let _ = writeln!(spec, "p {p}");
                'p'
            }
            _ => {
                let _ = writeln!(spec, "f {p} {layer}-{p}");
                'f'
            }
        };
        entries.push((p, kind));
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write { p: String, flags: &'static str, data: String },
    Read(String),
    Stat(String),
    List(String),
    Truncate(String, i64),
    Chmod(String, u32),
    Chown(String, u32, u32),
    Utimes(String, i64),
    SetXattr(String, String, String),
    RemoveXattr(String, String),
    ListXattr(String),
    Unlink(String),
    Rmdir(String),
    Mkdir(String, u32),
    Symlink(String, String),
    Readlink(String),
    Link(String, String),
    Rename(String, String, &'static str),
    Mkfifo(String),
    /// open(O_RDWR) kept in a slot across later ops (copy-up happens at open)
    HoldOpen(usize, String),
    HeldWrite(usize, String),
    HeldRead(usize),
    HeldClose(usize),
}

const SLOTS: usize = 3;

/// One mount's state across a sequence.
#[derive(Default)]
struct Side {
    dir_renamed: bool,
    /// The last op made the kernel side copy instead of rename (see `fs::mv`).
    copied: bool,
    /// That copy broke a hard link reaching outside the copied tree: from here on a
    /// write through one name shows through the other on one side only.
    links_broken: bool,
    fds: [Option<std::os::fd::OwnedFd>; SLOTS],
}

fn gen_path(rng: &mut Rng, known: &[String]) -> String {
    if !known.is_empty() && rng.chance(75) {
        return rng.pick(known).clone();
    }
    let depth = 1 + rng.below(3);
    let parts: Vec<&str> = (0..depth).map(|_| *rng.pick(NAMES)).collect();
    if rng.chance(30) {
        format!("{}/n{}", parts[..parts.len() - 1].join("/"), rng.below(3)).trim_start_matches('/').to_string()
    } else {
        parts.join("/")
    }
}

fn gen_op(rng: &mut Rng, known: &[String]) -> Op {
    let p = gen_path(rng, known);
    match rng.below(110) {
        0..14 => {
            let flags = *rng.pick(&["CREAT", "CREAT|TRUNC", "CREAT|EXCL", "APPEND", "TRUNC", "none"]);
            Op::Write { p, flags, data: format!("w{}", rng.below(1000)) }
        }
        14..22 => Op::Read(p),
        22..28 => Op::Stat(p),
        28..34 => Op::List(p),
        34..38 => Op::Truncate(p, rng.below(20) as i64),
        38..42 => Op::Chmod(p, *rng.pick(MODES)),
        42..45 => Op::Chown(p, rng.below(3) as u32 * 1000, rng.below(3) as u32 * 1000),
        45..47 => Op::Utimes(p, 1_000_000 + rng.below(1000) as i64),
        47..51 => Op::SetXattr(p, format!("user.k{}", rng.below(2)), format!("v{}", rng.below(9))),
        51..53 => Op::RemoveXattr(p, format!("user.k{}", rng.below(2))),
        53..55 => Op::ListXattr(p),
        55..63 => Op::Unlink(p),
        63..69 => Op::Rmdir(p),
        69..76 => Op::Mkdir(p, *rng.pick(&[0o755, 0o700])),
        76..79 => Op::Symlink(rng.pick(NAMES).to_string(), p),
        79..81 => Op::Readlink(p),
        81..85 => Op::Link(p, gen_path(rng, known)),
        85..98 => {
            let flags = *rng.pick(&["", "", "NOREPLACE", "EXCHANGE"]);
            Op::Rename(p, gen_path(rng, known), flags)
        }
        98..100 => Op::Mkfifo(p),
        100..104 => Op::HoldOpen(rng.below(SLOTS as u64) as usize, p),
        104..107 => Op::HeldWrite(rng.below(SLOTS as u64) as usize, format!("h{}", rng.below(100))),
        107..109 => Op::HeldRead(rng.below(SLOTS as u64) as usize),
        _ => Op::HeldClose(rng.below(SLOTS as u64) as usize),
    }
}

fn show<T: std::fmt::Debug>(r: SysResult<T>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({e})"),
    }
}

/// Execute one op under `root`. On the kernel side, renames fall back like mv(1) on EXDEV
/// and `dir_renamed` is set when a directory took part in a rename.
fn exec(root: &Path, op: &Op, kernel: bool, side: &mut Side) -> String {
    let j = |p: &str| root.join(p);
    let nb = libc::O_NONBLOCK; // never block on a fifo
    match op {
        Op::Write { p, flags, data } => {
            let mut f = nb;
            for part in flags.split('|') {
                f |= match part {
                    "CREAT" => libc::O_CREAT,
                    "TRUNC" => libc::O_TRUNC,
                    "EXCL" => libc::O_EXCL,
                    "APPEND" => libc::O_APPEND,
                    _ => 0,
                };
            }
            show(fs::write_file(&j(p), f, data.as_bytes()))
        }
        Op::Read(p) => show(fs::open(&j(p), libc::O_RDONLY | nb, 0).and_then(|fd| fs::read_fd(&fd))
            .map(|v| String::from_utf8_lossy(&v).into_owned())),
        Op::Stat(p) => show(fs::describe(&j(p))),
        Op::List(p) => show(fs::list_names(&j(p))),
        Op::Truncate(p, n) => show(fs::truncate(&j(p), *n)),
        Op::Chmod(p, m) => show(fs::chmod(&j(p), *m)),
        Op::Chown(p, u, g) => show(fs::lchown(&j(p), *u, *g)),
        Op::Utimes(p, t) => show(fs::utimens(&j(p), (*t, 0), (*t, 0))),
        Op::SetXattr(p, n, v) => show(fs::lsetxattr(&j(p), n, v.as_bytes(), 0)),
        Op::RemoveXattr(p, n) => show(fs::lremovexattr(&j(p), n)),
        Op::ListXattr(p) => show(fs::llistxattr(&j(p))),
        Op::Unlink(p) => show(fs::unlink(&j(p))),
        Op::Rmdir(p) => show(fs::rmdir(&j(p))),
        Op::Mkdir(p, m) => show(fs::mkdir(&j(p), *m)),
        Op::Symlink(t, p) => show(fs::symlink(Path::new(t), &j(p))),
        Op::Readlink(p) => show(fs::readlink(&j(p))),
        Op::Link(a, b) => show(fs::link(&j(a), &j(b))),
        Op::Mkfifo(p) => show(fs::mknod(&j(p), libc::S_IFIFO | 0o644, 0)),
        Op::HoldOpen(slot, p) => {
            side.fds[*slot] = None;
            let r = fs::open(&j(p), libc::O_RDWR | nb, 0);
            let shown = show(r.as_ref().map(|_| "fd").map_err(|e| *e));
            side.fds[*slot] = r.ok();
            shown
        }
        Op::HeldWrite(slot, data) => match &side.fds[*slot] {
            Some(fd) => show(fs::pwrite(fd, data.as_bytes(), 0)),
            None => "no fd".into(),
        },
        Op::HeldRead(slot) => match &side.fds[*slot] {
            Some(fd) => show(fs::pread_all(fd).map(|v| String::from_utf8_lossy(&v).into_owned())),
            None => "no fd".into(),
        },
        Op::HeldClose(slot) => match side.fds[*slot].take() {
            Some(fd) => show(fs::close(fd)),
            None => "no fd".into(),
        },
        Op::Rename(a, b, flags) => {
            let fl = match *flags {
                "NOREPLACE" => libc::RENAME_NOREPLACE,
                "EXCHANGE" => libc::RENAME_EXCHANGE,
                _ => 0,
            };
            let is_dir = |p: &str| fs::lstat(&j(p)).is_ok_and(|s| fs::is_dir(&s));
            let dirs = is_dir(a) || (fl == libc::RENAME_EXCHANGE && is_dir(b));
            let r = if kernel {
                // mv's copy fallback makes new files: fds held on the old ones no longer
                // correspond to anything on the other side, nor do hard links of them.
                let linked = has_multi_linked(&j(a)) || (fl == libc::RENAME_EXCHANGE && has_multi_linked(&j(b)));
                fs::mv(&j(a), &j(b), fl).map(|copied| {
                    side.copied |= copied;
                    side.links_broken |= copied && linked;
                })
            } else {
                fs::rename2(&j(a), &j(b), fl)
            };
            // Even a failed directory rename may leave a harmless trace in the kernel's
            // upper (it marks the source opaque before trying), so any attempt counts.
            if dirs && a != b {
                side.dir_renamed = true;
            }
            show(r)
        }
    }
}

/// Does the tree at `p` hold a non-directory with more than one name?
fn has_multi_linked(p: &Path) -> bool {
    let Ok(st) = fs::lstat(p) else { return false };
    if !fs::is_dir(&st) {
        return st.st_nlink > 1;
    }
    fs::list_names(p).is_ok_and(|names| names.iter().any(|n| has_multi_linked(&p.join(n))))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// Run one sequence; Err(report) on the first difference.
fn run_sequence(seed: u64, n_ops: usize) -> Result<(), String> {
    let mut rng = Rng(seed);
    let mut known = Vec::new();
    let mut below = Below::new();
    let bottom = gen_layer(&mut rng, "bot", &mut below, &mut known);
    let top = gen_layer(&mut rng, "top", &mut below, &mut known);
    let upper = gen_layer(&mut rng, "up", &mut below, &mut known);
    known.sort();
    known.dedup();
    let formats = [*rng.pick(&[Format::Overlay, Format::Oci]), *rng.pick(&[Format::Overlay, Format::Oci])];
    let upper_format = *rng.pick(&[Format::Overlay, Format::Oci]);
    let set = LayerSet::new(&[&top, &bottom], &upper);
    let ops: Vec<Op> = (0..n_ops).map(|_| gen_op(&mut rng, &known)).collect();

    let describe = |upto: usize| {
        let mut s = format!(
            "seed {seed} (replay: UNIONMOUNT_SEED={seed} UNIONMOUNT_RANDOM_SEQS=1)\n\
             FUSE-side whiteout formats: lowers {formats:?}, upper {upper_format:?}\n\
             top layer:\n{top}bottom layer:\n{bottom}upper layer:\n{upper}ops:\n"
        );
        for (i, op) in ops.iter().enumerate().take(upto + 1) {
            let _ = writeln!(s, "  {i:2}: {op:?}");
        }
        s
    };

    let pair = Pair::with_formats(&set, &formats, upper_format, "");
    let (mut ks, mut fs_) = (Side::default(), Side::default());
    let mut last = ops.len().saturating_sub(1);
    for (i, op) in ops.iter().enumerate() {
        let k = exec(&pair.kernel.mnt, op, true, &mut ks);
        let f = exec(&pair.fuse.mnt, op, false, &mut fs_);
        if std::mem::take(&mut ks.copied) {
            ks.fds = Default::default();
            fs_.fds = Default::default();
        }
        if k != f {
            return Err(format!("{}op {i} differs:\n  kernel: {k}\n  {}: {f}\n", describe(i), fuse_label()));
        }
        if ks.links_broken {
            // The reference cannot follow past a copy that split hard links (unionmount
            // renamed; mv(1) on the kernel side copied): compare the trees as they are now.
            last = i;
            break;
        }
    }
    let compare_upper = !(ks.dir_renamed || fs_.dir_renamed);
    drop((ks, fs_)); // close held fds: a mount with open files cannot be unmounted
    match pair.compare(compare_upper) {
        None => Ok(()),
        Some(r) => Err(format!("{}after op {last}:\n{r}", describe(last))),
    }
}

#[test]
fn random_operation_sequences_match_kernel() {
    if should_skip("random_operation_sequences_match_kernel") {
        return;
    }
    let seed = common::rng::seed_from_env("UNIONMOUNT_SEED");
    let seqs = env_u64("UNIONMOUNT_RANDOM_SEQS", 30);
    let n_ops = env_u64("UNIONMOUNT_RANDOM_OPS", 40) as usize;
    eprintln!("random_ops: UNIONMOUNT_SEED={seed}, {seqs} sequences of {n_ops} ops");
    let mut failures = Vec::new();
    for i in 0..seqs {
        let s = seed.wrapping_add(i);
        if let Err(report) = run_sequence(s, n_ops) {
            failures.push((s, report));
        }
    }
    if !failures.is_empty() {
        let seeds: Vec<u64> = failures.iter().map(|f| f.0).collect();
        let mut msg = format!(
            "{} of {seqs} random sequences differ (UNIONMOUNT_SEED={seed}); failing sequence seeds: {seeds:?}\n",
            failures.len()
        );
        for (_, report) in failures.iter().take(3) {
            let _ = write!(msg, "\n==========\n{report}");
        }
        panic!("{msg}");
    }
}
