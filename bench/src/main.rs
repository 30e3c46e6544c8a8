//! unionmount-bench: the side-by-side benchmark of unionmount, fuse-overlayfs and
//! kernel overlayfs (the reference) on the same layers.
//!
//! One command builds (once) a deterministic layered test set under the work dir
//! (`layerset`, `rootfs`), then for every round, every workload and every filesystem —
//! round-robin over filesystems within a round, starting with a different one each round
//! — mounts the layers fresh (`targets`), runs the workload (`workloads`) and unmounts.
//! It prints the medians and ratios and writes `results.md`, `results.json` (raw samples)
//! and `ratios.png` (`report`, `chart`) to the output dir. Needs root (mount,
//! drop_caches, trusted.* xattrs). See bench/README.md.

mod chart;
mod layerset;
mod machine;
mod micro;
mod report;
mod rng;
mod rootfs;
mod sys;
mod targets;
mod workloads;

use clap::Parser;
use layerset::Scale;
use report::{Record, SampleRec, TargetInfo};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use targets::{Kind, Target};
use workloads::{Ctx, Stack};

#[derive(Parser, Debug)]
#[command(
    name = "unionmount-bench",
    about = "Benchmark unionmount against kernel overlayfs and fuse-overlayfs"
)]
struct Args {
    /// Where the test set is built (and reused) and the mounts are made.
    #[arg(long, default_value = "/var/tmp/unionmount-bench")]
    work_dir: PathBuf,
    /// Where results.md, results.json and ratios.png go.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// The unionmount binary.
    #[arg(long, default_value = "target/release/unionmount")]
    unionmount: PathBuf,
    /// The fuse-overlayfs binary.
    #[arg(long, default_value = "/usr/bin/fuse-overlayfs")]
    fuse_overlayfs: PathBuf,
    /// Filesystems to measure (comma-separated): kernel, fuse-overlayfs, unionmount.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kernel,fuse-overlayfs,unionmount"
    )]
    targets: Vec<String>,
    /// Workloads to run (comma-separated ids; default all). See --list.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Rounds (samples per workload and filesystem); default 5, or 2 with --quick.
    #[arg(long)]
    rounds: Option<usize>,
    /// Small sizes: a test set of ~2k files built in seconds, for development and CI.
    #[arg(long)]
    quick: bool,
    /// Extra options for the kernel overlay mount, e.g. `volatile` (no fsync on copy-up).
    #[arg(long, default_value = "")]
    kernel_opts: String,
    /// Extra -o options for both FUSE targets.
    #[arg(long, default_value = "")]
    fuse_opts: String,
    /// Extra -o options for unionmount only (after --fuse-opts), e.g. `passthrough=all`.
    #[arg(long, default_value = "")]
    unionmount_opts: String,
    /// Seed of the generated test set.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Do not drop the page cache before cold runs (they are then not cold).
    #[arg(long)]
    no_drop_caches: bool,
    /// Rebuild the test set even if a complete one exists.
    #[arg(long)]
    rebuild: bool,
    /// TTF font for the chart (default: DejaVu Sans from the usual places).
    #[arg(long)]
    font: Option<PathBuf>,
    /// Run the micro-benchmarks of the union core (no mount) instead; writes micro.md.
    #[arg(long)]
    micro: bool,
    /// Kill a FUSE daemon that has not finished one sample's workload after this many
    /// seconds (the sample fails; the run goes on).
    #[arg(long, default_value_t = 900)]
    sample_timeout: u64,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
}

fn main() {
    let args = Args::parse();
    if args.list {
        for w in workloads::ALL {
            println!("{:18} {}", w.id, w.title);
        }
        return;
    }
    if let Err(e) = run(args) {
        eprintln!("unionmount-bench: {e}");
        std::process::exit(1);
    }
}

fn abs(p: &Path) -> Result<PathBuf, String> {
    std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn run(args: Args) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("must run as root (mount, drop_caches, trusted.* xattrs)".into());
    }
    let started = Instant::now();
    // Resolve every path now: the working directory becomes the set dir below.
    let work = abs(&args.work_dir)?;
    let out = abs(&args.out)?;
    let fo_bin = abs(&args.fuse_overlayfs)?;
    let um_bin = abs(&args.unionmount)?;
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let scale = if args.quick {
        Scale::quick()
    } else {
        Scale::full()
    };
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 5 }).max(1);
    let selected: Vec<&workloads::Workload> = workloads::ALL
        .iter()
        .filter(|w| args.workloads.is_empty() || args.workloads.iter().any(|x| x == w.id))
        .collect();
    if selected.is_empty() {
        return Err("no such workload (see --list)".into());
    }
    let mut machine = machine::Machine::probe(&work);
    // Mounts live under run-PID, so concurrent runs sharing a work dir never touch each
    // other's mounts; what dead runs left behind is cleaned up.
    let run_root = work.join(format!("run-{}", std::process::id()));
    cleanup_stale_runs(&work);

    let manifest = layerset::ensure(&work, args.seed, &scale, args.rebuild)
        .map_err(|e| format!("building the test set: {e}"))?;
    let set_dir = layerset::set_dir(&work, args.seed, &scale);
    std::env::set_current_dir(&set_dir).map_err(|e| format!("cd {}: {e}", set_dir.display()))?;

    if args.micro {
        eprintln!(
            "micro-benchmarks of unionmount's union core over {}",
            set_dir.display()
        );
        let res = micro::run(&set_dir, &manifest, rounds.max(3))?;
        machine.loadavg_end = machine::loadavg();
        let md = format!(
            "# unionmount micro-benchmarks\n\n{} scale, median of {} repetitions, {}.\n\n{}",
            scale.name,
            rounds.max(3),
            machine.one_line(),
            micro::markdown(&res)
        );
        fs::write(out.join("micro.md"), &md).map_err(|e| format!("writing micro.md: {e}"))?;
        println!("{md}");
        return Ok(());
    }

    // Which filesystems can we measure? Probe each with one mount of the main stack.
    let mut tgts = Vec::new();
    let mut skipped = Vec::new();
    for name in &args.targets {
        let t = match name.as_str() {
            "kernel" => Target {
                kind: Kind::Kernel,
                bin: None,
                extra_opts: args.kernel_opts.clone(),
            },
            "fuse-overlayfs" => Target {
                kind: Kind::FuseOverlayfs,
                bin: Some(fo_bin.clone()),
                extra_opts: args.fuse_opts.clone(),
            },
            "unionmount" => Target {
                kind: Kind::Unionmount,
                bin: Some(um_bin.clone()),
                extra_opts: [args.fuse_opts.as_str(), args.unionmount_opts.as_str()]
                    .iter()
                    .filter(|o| !o.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(","),
            },
            other => return Err(format!("unknown target {other}")),
        };
        if let Some(b) = &t.bin
            && !b.exists()
        {
            eprintln!("skipping {name}: {} not found", b.display());
            skipped.push((name.clone(), format!("{} not found", b.display())));
            continue;
        }
        match t.mount(&set_dir, &manifest.main_layers, &run_root.join("probe")) {
            Ok(mut m) => {
                let r = m.unmount();
                if let Err(e) = r {
                    eprintln!("warning: {e}");
                }
                tgts.push(t);
            }
            Err(e) => {
                eprintln!("skipping {name}: probe mount failed: {e}");
                skipped.push((name.clone(), format!("probe mount failed: {e}")));
            }
        }
    }
    if tgts.is_empty() {
        return Err("no filesystem could be mounted".into());
    }
    let infos: Vec<TargetInfo> = tgts
        .iter()
        .map(|t| TargetInfo {
            name: t.name().into(),
            version: t.version(),
            binary: t.bin.as_ref().map(|b| b.display().to_string()),
            extra_opts: t.extra_opts.clone(),
        })
        .collect();

    let cx = Ctx {
        m: &manifest,
        drop_caches: !args.no_drop_caches,
    };
    let mut samples = Vec::new();
    let mut seq = 0usize;
    for round in 0..rounds {
        for w in &selected {
            if w.once && round > 0 {
                continue;
            }
            for k in 0..tgts.len() {
                let t = &tgts[(k + round) % tgts.len()];
                if w.fuse_only && !t.is_fuse() {
                    continue;
                }
                seq += 1;
                let layers = match w.stack {
                    Stack::Main => &manifest.main_layers,
                    Stack::Deep => &manifest.deep_layers,
                };
                let res = t
                    .mount(&set_dir, layers, &run_root.join(seq.to_string()))
                    .and_then(|mut mt| {
                        let dog = targets::Watchdog::arm(
                            mt.daemon,
                            Duration::from_secs(args.sample_timeout),
                        );
                        let r = workloads::run(w, &cx, &mt).map_err(|e| e.to_string());
                        let r = if dog.disarm() {
                            Err(format!(
                                "daemon killed after {} s: {}",
                                args.sample_timeout,
                                r.err().unwrap_or_default()
                            ))
                        } else {
                            r
                        };
                        if let Err(e) = mt.unmount() {
                            eprintln!("warning: {e}");
                        }
                        r
                    });
                let rec = SampleRec {
                    workload: w.id.into(),
                    target: t.name().into(),
                    round,
                    value: res.as_ref().ok().map(|s| s.value),
                    check: res.as_ref().ok().map(|s| s.check),
                    error: res.as_ref().err().cloned(),
                };
                match &res {
                    Ok(s) => eprintln!(
                        "[{}/{rounds}] {:18} {:15} {:>12}  (check {})",
                        round + 1,
                        w.id,
                        t.name(),
                        report::fmt_value(s.value, w.unit),
                        s.check
                    ),
                    Err(e) => eprintln!(
                        "[{}/{rounds}] {:18} {:15} FAILED: {e}",
                        round + 1,
                        w.id,
                        t.name()
                    ),
                }
                samples.push(rec);
            }
        }
    }

    machine.loadavg_end = machine::loadavg();
    let rec = Record {
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        scale,
        rounds,
        seed: args.seed,
        base_files: manifest.base_files,
        drop_caches: !args.no_drop_caches,
        targets: infos,
        skipped_targets: skipped,
        samples,
        total_secs: started.elapsed().as_secs_f64(),
    };
    let md = rec.markdown();
    let write = |name: &str, data: &[u8]| {
        fs::write(out.join(name), data).map_err(|e| format!("writing {name}: {e}"))
    };
    write("results.md", md.as_bytes())?;
    write(
        "results.json",
        &serde_json::to_vec_pretty(&rec).map_err(|e| e.to_string())?,
    )?;
    let png = out.join("ratios.png");
    match chart::draw(&rec, &png, args.font.as_deref()) {
        Ok(()) => eprintln!("wrote {}", png.display()),
        Err(e) => {
            let _ = fs::remove_file(&png);
            eprintln!("no chart: {e}");
        }
    }
    println!("{md}");
    eprintln!(
        "wrote {} and results.json",
        out.join("results.md").display()
    );
    let _ = fs::remove_dir(&run_root);
    Ok(())
}

/// Unmount and delete what interrupted earlier runs left: `WORK/run-PID` dirs whose
/// process is gone.
fn cleanup_stale_runs(work: &Path) {
    let Ok(entries) = fs::read_dir(work) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("run-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let running = exe
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("unionmount-bench"));
        if !running {
            cleanup_run(&e.path());
        }
    }
}

fn cleanup_run(run_root: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", run_root.display());
    let mut stale: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    stale.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in stale {
        eprintln!("unmounting stale {m}");
        let _ = sys::umount(Path::new(m), true);
    }
    let _ = fs::remove_dir_all(run_root);
}
