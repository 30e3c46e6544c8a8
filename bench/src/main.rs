//! unionmount-bench: the side-by-side benchmark of unionmount, fuse-overlayfs 1.x and
//! 2.0 and kernel overlayfs (the reference) on the same layers.
//!
//! One command builds (once) a deterministic layered test set under the work dir
//! (`layerset`, `rootfs`), installs the peers Debian lacks (`peers`), then for every
//! round, every workload and every target — round-robin over targets within a round,
//! starting with a different one each round — mounts the layers fresh (`targets`), runs
//! the workload (`workloads`; the page-cache ones in a memory cgroup, `memcg`) and
//! unmounts. It prints the medians, the ratios within each durability class and the
//! issue's targets (`report`, `goals`), and writes `results.md`, `results.json` (raw
//! samples) and `ratios.png` (`chart`) to the output dir. Needs root (mount,
//! drop_caches, trusted.* xattrs, cgroups). See bench/README.md.

mod chart;
mod fusetrace;
mod goals;
mod layerset;
mod machine;
mod memcg;
mod micro;
mod peers;
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
use targets::{MountSpec, Role, Target};
use workloads::{Ctx, Outcome, Stack};

#[derive(Parser, Debug)]
#[command(
    name = "unionmount-bench",
    about = "Benchmark unionmount against kernel overlayfs and fuse-overlayfs 1.x and 2.0"
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
    /// Another unionmount build to compare with (same options): adds the `baseline`
    /// and `baseline-volatile` targets beside `unionmount` and `unionmount-volatile`.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// The fuse-overlayfs 1.x binary (Debian's package).
    #[arg(long, default_value = "/usr/bin/fuse-overlayfs")]
    fuse_overlayfs: PathBuf,
    /// The fuse-overlayfs 2.0 binary; default: installed once with cargo into --tools-dir.
    #[arg(long)]
    fuse_overlayfs_2: Option<PathBuf>,
    /// Where peers are installed and kept between runs (default: WORK_DIR/tools).
    #[arg(long)]
    tools_dir: Option<PathBuf>,
    /// Targets to measure (comma-separated): kernel, kernel-volatile, fuse-overlayfs-1,
    /// fuse-overlayfs-2, unionmount, unionmount-volatile.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kernel,kernel-volatile,fuse-overlayfs-1,fuse-overlayfs-2,unionmount,unionmount-volatile"
    )]
    targets: Vec<String>,
    /// Run without a target that cannot be installed or mounted (default: fail).
    #[arg(long)]
    skip_unavailable: bool,
    /// Workloads to run (comma-separated ids; default all). See --list.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Rounds (samples per workload and filesystem); default 5, or 2 with --quick.
    #[arg(long)]
    rounds: Option<usize>,
    /// Small sizes: a test set of ~2k files built in seconds, for development and CI.
    #[arg(long)]
    quick: bool,
    /// Extra options for the kernel overlay mounts.
    #[arg(long, default_value = "")]
    kernel_opts: String,
    /// Extra -o options for every FUSE target.
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
    /// Count the FUSE requests of every timed part by opcode (kernel tracepoint
    /// fuse:fuse_request_send in a tracefs instance of our own) and report them.
    #[arg(long)]
    fuse_requests: bool,
    /// List the workloads and exit.
    #[arg(long)]
    list: bool,
}

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.len() > 2 && (argv[1] == memcg::EXEC_ARG || argv[1] == memcg::READ_ARG) {
        std::process::exit(internal(&argv));
    }
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
    if !sys::is_root() {
        return Err("must run as root (mount, drop_caches, trusted.* xattrs)".into());
    }
    let started = Instant::now();
    // Resolve every path now: the working directory becomes the set dir below.
    let work = abs(&args.work_dir)?;
    let out = abs(&args.out)?;
    let fo_bin = abs(&args.fuse_overlayfs)?;
    let um_bin = abs(&args.unionmount)?;
    let fo2_bin = args.fuse_overlayfs_2.as_deref().map(abs).transpose()?;
    let base_bin = args.baseline.as_deref().map(abs).transpose()?;
    let tools = match &args.tools_dir {
        Some(d) => abs(d)?,
        None => work.join("tools"),
    };
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

    // Which targets can we measure? Find (or install) each binary and probe it with one
    // mount of the main stack; one that fails stops the run unless --skip-unavailable.
    let mut names = args.targets.clone();
    if args.baseline.is_some() {
        for (um, base) in [
            ("unionmount", "baseline"),
            ("unionmount-volatile", "baseline-volatile"),
        ] {
            if names.iter().any(|n| n == um) && !names.iter().any(|n| n == base) {
                names.push(base.into());
            }
        }
    }
    let mut tgts = Vec::new();
    let mut skipped = Vec::new();
    for name in &names {
        let role = targets::CONFIGS
            .iter()
            .find(|c| c.0 == name)
            .map(|c| c.1)
            .ok_or_else(|| {
                let ids: Vec<&str> = targets::CONFIGS.iter().map(|c| c.0).collect();
                format!("unknown target {name} (known: {})", ids.join(", "))
            })?;
        let found: Result<Option<PathBuf>, String> = match role {
            Role::Kernel => Ok(None),
            Role::FuseOverlayfs1 => Ok(Some(fo_bin.clone())),
            Role::FuseOverlayfs2 => match &fo2_bin {
                Some(p) => Ok(Some(p.clone())),
                None => peers::fuse_overlayfs_2(&tools).map(Some),
            },
            Role::Unionmount => Ok(Some(um_bin.clone())),
            Role::Baseline => match &base_bin {
                Some(p) => Ok(Some(p.clone())),
                None => Err("no --baseline PATH given".into()),
            },
        };
        let extra: Vec<&str> = match role {
            Role::Kernel => vec![&args.kernel_opts],
            Role::FuseOverlayfs1 | Role::FuseOverlayfs2 => vec![&args.fuse_opts],
            Role::Unionmount | Role::Baseline => vec![&args.fuse_opts, &args.unionmount_opts],
        };
        let probe = found.and_then(|bin| {
            if let Some(b) = &bin
                && !b.exists()
            {
                let fix = match role {
                    Role::FuseOverlayfs1 => {
                        "apt-get install fuse-overlayfs, or pass --fuse-overlayfs PATH"
                    }
                    Role::Unionmount => "cargo build --release, or pass --unionmount PATH",
                    Role::Baseline => "pass --baseline PATH",
                    _ => "pass its path",
                };
                return Err(format!(
                    "{} not found ({fix}; or --skip-unavailable to run without it)",
                    b.display()
                ));
            }
            let t = Target::new(name, bin, &extra).ok_or("unknown target")?;
            let spec = MountSpec {
                writable: true,
                ..Default::default()
            };
            let mut m = t
                .mount(
                    &set_dir,
                    &manifest.main_layers,
                    &run_root.join("probe"),
                    &spec,
                )
                .map_err(|e| format!("probe mount failed: {e}"))?;
            if let Err(e) = m.unmount() {
                eprintln!("warning: {e}");
            }
            Ok(t)
        });
        match probe {
            Ok(t) => tgts.push(t),
            Err(why) if args.skip_unavailable => {
                eprintln!("skipping {name}: {why}");
                skipped.push((name.clone(), why));
            }
            Err(why) => return Err(format!("{name}: {why}")),
        }
    }
    if tgts.is_empty() {
        return Err("no target could be mounted".into());
    }
    let infos: Vec<TargetInfo> = tgts
        .iter()
        .map(|t| {
            let version = t.version();
            TargetInfo {
                id: t.id.into(),
                label: t.label(&version),
                role: t.role,
                durability: t.durability,
                reads: t.reads,
                version,
                binary: t.bin.as_ref().map(|b| b.display().to_string()),
                extra_opts: t.extra_opts.clone(),
            }
        })
        .collect();
    if selected.iter().any(|w| w.mounts != workloads::Mounts::One) {
        machine.memcg = memcg::describe();
    }

    let tracer = if args.fuse_requests {
        Some(fusetrace::Tracer::new().map_err(|e| format!("--fuse-requests: {e}"))?)
    } else {
        None
    };
    let mut samples = Vec::new();
    let mut seq = 0usize;
    for round in 0..rounds {
        for w in &selected {
            if w.once && round > 0 {
                continue;
            }
            let eligible: Vec<&Target> = tgts
                .iter()
                .filter(|t| (w.writes || t.reads) && (t.is_fuse() || !w.fuse_only))
                .collect();
            for k in 0..eligible.len() {
                let t = eligible[(k + round) % eligible.len()];
                seq += 1;
                let sample = Sample {
                    t,
                    w,
                    seq,
                    set_dir: &set_dir,
                    run_dir: run_root.join(seq.to_string()),
                    m: &manifest,
                    drop_caches: !args.no_drop_caches,
                    timeout: Duration::from_secs(args.sample_timeout),
                    tracer: tracer.as_ref(),
                };
                let res = sample.run();
                let rec = SampleRec {
                    workload: w.id.into(),
                    target: t.id.into(),
                    round,
                    value: match &res {
                        Ok(Outcome::Measured(s)) => Some(s.value),
                        _ => None,
                    },
                    check: match &res {
                        Ok(Outcome::Measured(s)) => Some(s.check),
                        _ => None,
                    },
                    requests: match &res {
                        Ok(Outcome::Measured(s)) => s.requests.clone(),
                        _ => None,
                    },
                    refused: match &res {
                        Ok(Outcome::Refused(e)) => Some((*e).into()),
                        _ => None,
                    },
                    error: res.as_ref().err().cloned(),
                };
                let shown = match &res {
                    Ok(Outcome::Measured(s)) => format!(
                        "{:>12}  (check {})",
                        report::fmt_value(s.value, w.unit),
                        s.check
                    ),
                    Ok(Outcome::Refused(e)) => format!("{e:>12}  (refused)"),
                    Err(e) => format!("FAILED: {e}"),
                };
                eprintln!("[{}/{rounds}] {:18} {:20} {shown}", round + 1, w.id, t.id);
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

/// One sample: fresh mounts of `t`, workload `w`, unmount.
struct Sample<'a> {
    t: &'a Target,
    w: &'a workloads::Workload,
    seq: usize,
    set_dir: &'a Path,
    run_dir: PathBuf,
    m: &'a layerset::Manifest,
    drop_caches: bool,
    timeout: Duration,
    tracer: Option<&'a fusetrace::Tracer>,
}

impl Sample<'_> {
    fn run(&self) -> Result<Outcome, String> {
        let (n, writable) = self.w.mount_count(self.m);
        // Declared before the mounts, so dropped after them (their daemons leave it).
        let memcg = match self.w.mounts {
            workloads::Mounts::One => None,
            workloads::Mounts::PageCache { .. } => {
                Some(memcg::Memcg::create(&self.seq.to_string())?)
            }
        };
        let spec = MountSpec {
            writable,
            kernel_opts: self.w.kernel_opts,
            cgroup: memcg.as_ref().map(|c| c.dir()),
        };
        let layers = match self.w.stack {
            Stack::Main => &self.m.main_layers,
            Stack::Deep => &self.m.deep_layers,
        };
        let mut mts = Vec::with_capacity(n);
        for k in 0..n {
            let dir = if n == 1 {
                self.run_dir.clone()
            } else {
                self.run_dir.join(k.to_string())
            };
            mts.push(self.t.mount(self.set_dir, layers, &dir, &spec)?);
        }
        let dog =
            targets::Watchdog::arm(mts.iter().filter_map(|m| m.daemon).collect(), self.timeout);
        let cx = Ctx {
            m: self.m,
            drop_caches: self.drop_caches,
            set_dir: self.set_dir,
            memcg: memcg.as_ref(),
            trace: self
                .tracer
                .filter(|_| self.t.is_fuse())
                .map(|t| (t, mts.iter().map(|m| m.mnt.as_path()).collect())),
        };
        let r = workloads::run(self.w, &cx, &mts).map_err(|e| e.to_string());
        let r = if dog.disarm() {
            Err(format!(
                "daemon killed after {} s: {}",
                self.timeout.as_secs(),
                r.err().unwrap_or_default()
            ))
        } else {
            r
        };
        for mut mt in mts {
            if let Err(e) = mt.unmount() {
                eprintln!("warning: {e}");
            }
        }
        let _ = fs::remove_dir(&self.run_dir);
        // Write back what this sample and its clean-up left (created files, whiteouts,
        // deleted uppers) now, untimed, rather than during the next sample.
        if let Err(e) = sys::syncfs(self.set_dir) {
            eprintln!("warning: syncfs: {e}");
        }
        r
    }
}

/// The internal modes the page-cache workloads start this binary in (see `memcg`):
/// exec a FUSE launcher, or read files, inside a memory cgroup. Returns the exit code.
fn internal(argv: &[std::ffi::OsString]) -> i32 {
    let cg = Path::new(&argv[2]);
    if argv[1] == memcg::EXEC_ARG {
        use std::os::unix::process::CommandExt;
        let Some(prog) = argv.get(3) else {
            eprintln!("{}: no program", memcg::EXEC_ARG);
            return 2;
        };
        if let Err(e) = memcg::join(cg) {
            eprintln!("joining {}: {e}", cg.display());
            return 126;
        }
        let e = std::process::Command::new(prog).args(&argv[4..]).exec();
        eprintln!("exec {}: {e}", Path::new(prog).display());
        return 127;
    }
    let files: Vec<PathBuf> = argv[3..].iter().map(PathBuf::from).collect();
    match memcg::read_in(cg, &files) {
        Ok(n) => {
            println!("{n}");
            0
        }
        Err(e) => {
            eprintln!("reading in {}: {e}", cg.display());
            1
        }
    }
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
