//! Mounting: checks, the writable layer, daemonizing, the FUSE session, shutdown.
//!
//! Order of a mount: validate (one clear line per problem, before anything is
//! created) → open the layer stack (cleans workdir) → fork unless `-f` (the parent
//! waits on a pipe and exits 0 only once the child reports the mount ready, or
//! prints the child's error) → mount and FUSE handshake → write the mount record →
//! serve. SIGINT/SIGTERM/SIGHUP unmount; an external umount ends the session; both
//! remove the record and an ephemeral upper layer.

pub use crate::fuse::Passthrough;
pub use crate::layers::WhiteoutFormat;

use crate::fuse::FuseFs;
use crate::layers::{LayerStack, StackSpec};
use crate::record::{LayerRecord, MountRecord};
use crate::store::{ResolvedImage, StoreQuery};
use crate::sys::process::{self, Fork};
use crate::union::{Config, UnionFs};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Options given with `-o` (parsed by the front end, `cmd`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MountOpts {
    pub lowerdir: Vec<PathBuf>,
    pub upperdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    /// `volatile` or `fsync=0`: skip fsync.
    pub no_fsync: bool,
    pub fsname: Option<String>,
    pub allow_other: bool,
    pub read_only: bool,
    pub cache_entries: Option<usize>,
    /// Kernel entry/attribute cache time in seconds.
    pub timeout: Option<f64>,
    pub threads: Option<usize>,
    pub passthrough: Option<Passthrough>,
    pub whiteout: Option<WhiteoutFormat>,
    pub store: Option<PathBuf>,
    /// Generic mount flags passed on to the kernel (nodev, nosuid, noexec, …).
    pub kernel_flags: Vec<String>,
    /// Accepted but unused (logged at debug level).
    pub ignored: Vec<String>,
}

/// A mount command, as the front end parsed it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MountArgs {
    pub foreground: bool,
    pub debug: bool,
    pub opts: MountOpts,
    /// IMAGE in image mode, SOURCE (informational) in overlay mode.
    pub source: Option<std::ffi::OsString>,
    pub mountpoint: PathBuf,
    pub cache: Option<PathBuf>,
    /// `--upper DIR`: persistent writable layer for image mounts.
    pub upper: Option<PathBuf>,
}

impl MountArgs {
    /// Image mode: no lowerdir, so the source names an image.
    pub fn image(&self) -> Option<&OsStr> {
        if self.opts.lowerdir.is_empty() { self.source.as_deref() } else { None }
    }
}

/// What the mount will be made of, once the command line and store are resolved.
struct Plan {
    spec: StackSpec,
    mountpoint: PathBuf,
    image: Option<(String, ResolvedImage)>,
    /// A private temporary directory holding an ephemeral upper + work, removed at the end.
    ephemeral: Option<PathBuf>,
}

/// Set in the forked daemon: its errors go to the waiting parent, not to stderr.
static DAEMON_CHILD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("unionmount: {msg}");
    1
}

/// Run a mount command; returns the exit code.
pub fn run(args: MountArgs) -> i32 {
    init_logging(args.debug);
    for o in &args.opts.ignored {
        log::debug!("option {o} accepted and ignored");
    }
    let plan = match plan(&args) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let result = serve(&args, &plan);
    if let Some(dir) = &plan.ephemeral {
        remove_ephemeral(dir);
    }
    match result {
        Ok(()) => 0,
        // A daemonized child reported its error through the pipe; the parent prints it.
        Err(_) if DAEMON_CHILD.load(std::sync::atomic::Ordering::Relaxed) => 1,
        Err(e) => fail(e),
    }
}

fn init_logging(debug: bool) {
    let env = env_logger::Env::default().default_filter_or(if debug { "debug" } else { "warn" });
    let _ = env_logger::Builder::from_env(env).format_timestamp_millis().try_init();
}

fn canonical(p: &Path, what: &str) -> Result<PathBuf, String> {
    std::fs::canonicalize(p).map_err(|e| format!("{what} {}: {e}", p.display()))
}

/// Resolve the image (if any), decide the writable layer, check everything.
fn plan(args: &MountArgs) -> Result<Plan, String> {
    let mnt = canonical(&args.mountpoint, "mountpoint")?;
    if !mnt.is_dir() {
        return Err(format!("mountpoint {} is not a directory", mnt.display()));
    }
    if let Some(t) = crate::record::mount_fstype(&mnt) {
        return Err(format!("{} is already a mount point ({t}): unmount it first or pick another directory", mnt.display()));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available".into());
    }
    let mut spec = StackSpec { whiteout: args.opts.whiteout, ..Default::default() };
    let mut image = None;
    let mut ephemeral = None;
    if let Some(reference) = args.image() {
        let q = StoreQuery {
            reference: reference.to_string_lossy().into_owned(),
            store: args.opts.store.clone(),
            cache: args.cache.clone(),
        };
        let img = crate::store::resolve(&q).map_err(|e| e.to_string())?;
        spec.lowers = img.layers.iter().map(|l| l.dir.clone()).collect();
        spec.lower_wh_files = img.lower_wh_files();
        if !args.opts.read_only {
            if let Some(up) = &args.upper {
                std::fs::create_dir_all(up).map_err(|e| format!("cannot create upper dir {}: {e}", up.display()))?;
                let up = canonical(up, "upper dir")?;
                let name = up.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "upper".into());
                let work = up.with_file_name(format!(".{name}.work"));
                std::fs::create_dir_all(&work).map_err(|e| format!("cannot create work dir {}: {e}", work.display()))?;
                spec.upper = Some(up);
                spec.work = Some(work);
            } else {
                let dir = make_ephemeral()?;
                spec.upper = Some(dir.join("upper"));
                spec.work = Some(dir.join("work"));
                ephemeral = Some(dir);
            }
        }
        image = Some((q.reference, img));
    } else {
        spec.lowers = args.opts.lowerdir.clone();
        if !args.opts.read_only {
            spec.upper = args.opts.upperdir.clone();
            spec.work = args.opts.workdir.clone();
        }
    }
    let checked = check_layers(&mut spec, &mnt);
    if checked.is_err()
        && let Some(d) = &ephemeral {
            remove_ephemeral(d);
        }
    checked?;
    Ok(Plan { spec, mountpoint: mnt, image, ephemeral })
}

/// Canonicalize every layer and refuse layouts that cannot work.
fn check_layers(spec: &mut StackSpec, mnt: &Path) -> Result<(), String> {
    let inside = |p: &Path, what: &str| -> Result<(), String> {
        if p.starts_with(mnt) {
            return Err(format!("{what} {} is inside the mountpoint {}: use a directory outside it", p.display(), mnt.display()));
        }
        if mnt.starts_with(p) {
            return Err(format!("mountpoint {} is inside {what} {}: use a directory outside it", mnt.display(), p.display()));
        }
        Ok(())
    };
    for l in spec.lowers.iter_mut() {
        *l = canonical(l, "lowerdir")?;
        if !l.is_dir() {
            return Err(format!("lowerdir {} is not a directory", l.display()));
        }
        inside(l, "lowerdir")?;
    }
    if let (Some(u), Some(w)) = (&mut spec.upper, &mut spec.work) {
        *u = canonical(u, "upperdir")?;
        *w = canonical(w, "workdir")?;
        inside(u, "upperdir")?;
        inside(w, "workdir")?;
        if w.starts_with(&*u) {
            return Err(format!("workdir {} is inside upperdir {}: put it beside, on the same file system", w.display(), u.display()));
        }
        if u.starts_with(&*w) {
            return Err(format!("upperdir {} is inside workdir {}: put it beside, on the same file system", u.display(), w.display()));
        }
        if spec.lowers.iter().any(|l| l == u) {
            return Err(format!("upperdir {} is also a lowerdir", u.display()));
        }
    }
    Ok(())
}

/// A private (0700) directory with `upper/` and `work/` for a throw-away layer.
fn make_ephemeral() -> Result<PathBuf, String> {
    let base = std::env::var_os("UNIONMOUNT_TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
    for i in 0..100u32 {
        let dir = base.join(format!("unionmount-{}-{i}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
                for sub in ["upper", "work"] {
                    std::fs::create_dir(dir.join(sub)).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create a writable layer under {}: {e}", base.display())),
        }
    }
    Err(format!("cannot create a writable layer under {}", base.display()))
}

fn remove_ephemeral(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        log::warn!("could not remove the temporary writable layer {}: {e}", dir.display());
    }
}

/// Open the layers, daemonize, mount and serve until unmounted.
fn serve(args: &MountArgs, plan: &Plan) -> Result<(), String> {
    crate::sys::fs::raise_nofile_limit();
    let stack = LayerStack::open(&plan.spec)?;
    let whiteout = stack.upper.as_ref().map(|u| u.whiteout.as_str()).unwrap_or("none").to_string();
    let cfg = Config {
        cache_entries: args.opts.cache_entries.unwrap_or(Config::default().cache_entries),
        fsync: !args.opts.no_fsync,
    };
    let ufs = Arc::new(UnionFs::new(stack, cfg).map_err(|e| format!("cannot open the layers: {e}"))?);

    // Daemonize before any thread exists; the parent reports the child's outcome.
    let ready_pipe = if args.foreground {
        None
    } else {
        let (r, w) = process::pipe().map_err(|e| format!("pipe: {e}"))?;
        match process::fork().map_err(|e| format!("fork: {e}"))? {
            Fork::Parent(pid) => {
                drop(w);
                std::process::exit(wait_ready(r, pid));
            }
            Fork::Child => {
                drop(r);
                DAEMON_CHILD.store(true, std::sync::atomic::Ordering::Relaxed);
                process::setsid();
                Some(w)
            }
        }
    };
    let report = |msg: &str| {
        if let Some(w) = &ready_pipe {
            process::write_fd(std::os::fd::AsFd::as_fd(w), msg.as_bytes());
        }
    };
    process::clear_umask();
    process::block_term_signals();

    let ttl = Duration::from_secs_f64(args.opts.timeout.unwrap_or(60.0));
    let passthrough = args.opts.passthrough.unwrap_or(Passthrough::Upper);
    let fuse = FuseFs::new(ufs.clone(), ttl, passthrough);
    let config = fuse_config(args, plan);
    let privileged = crate::sys::euid() == 0;
    let session = mount_fuse(fuse, args, plan, &config, privileged);
    let session = match session {
        Ok(s) => s,
        Err(msg) => {
            report(&msg);
            return Err(msg);
        }
    };
    let record = make_record(plan, &whiteout);
    if let Err(e) = record.write() {
        log::warn!("could not write the mount record: {e}");
    }
    report("OK");
    drop(ready_pipe);
    if !args.foreground {
        process::stdio_to_devnull();
    }

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done2 = done.clone();
    let mnt = plan.mountpoint.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = process::wait_term_signal();
            if done2.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            log::info!("signal {sig}: unmounting {}", mnt.display());
            let r = if privileged {
                crate::sys::mount::umount(&mnt, false)
                    .or_else(|_| crate::sys::mount::umount(&mnt, true))
                    .map_err(|e| e.to_string())
            } else {
                crate::sys::mount::fuserumount(&mnt)
            };
            if let Err(e) = r {
                log::warn!("unmount of {} failed: {e}", mnt.display());
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    let r = session.run();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    MountRecord::remove(&plan.mountpoint, std::process::id());
    r.map_err(|e| format!("FUSE session ended with an error: {e}"))
}

/// Parent side of daemonizing: wait for "OK" or an error from the child.
fn wait_ready(r: std::os::fd::OwnedFd, pid: i32) -> i32 {
    let mut f = std::fs::File::from(r);
    let mut msg = String::new();
    let _ = f.read_to_string(&mut msg);
    if msg == "OK" {
        return 0;
    }
    if msg.is_empty() {
        let status = process::child_exited(pid);
        eprintln!("unionmount: the mount daemon exited before the mount was ready (status {status:?})");
    } else {
        eprintln!("unionmount: {msg}");
    }
    1
}

/// Mount (our own mount(2) as root, fusermount3 otherwise; type `fuse.unionmount`
/// either way) and wrap the /dev/fuse fd in a session.
fn mount_fuse(
    fuse: FuseFs,
    args: &MountArgs,
    plan: &Plan,
    config: &fuser::Config,
    privileged: bool,
) -> Result<fuser::Session<FuseFs>, String> {
    let has = |f: &str| args.opts.kernel_flags.iter().any(|k| k == f);
    let flags = crate::sys::mount::Flags {
        ro: plan.spec.upper.is_none(),
        nodev: has("nodev"),
        nosuid: has("nosuid"),
        noexec: has("noexec"),
        noatime: has("noatime"),
        sync: has("sync"),
        dirsync: has("dirsync"),
    };
    let mut extra = String::from("default_permissions");
    if config.acl == fuser::SessionACL::All {
        extra.push_str(",allow_other");
    }
    let fsname = args.opts.fsname.clone().unwrap_or_else(|| "unionmount".into());
    let fd = if privileged {
        crate::sys::mount::fuse_mount(&plan.mountpoint, &fsname, "unionmount", flags, &extra)
            .map_err(|e| format!("cannot mount on {}: {e}", plan.mountpoint.display()))?
    } else {
        let mut opts = format!("fsname={fsname},subtype=unionmount,{extra}");
        for (on, name) in [
            (flags.ro, "ro"),
            (flags.nodev, "nodev"),
            (flags.nosuid, "nosuid"),
            (flags.noexec, "noexec"),
            (flags.noatime, "noatime"),
        ] {
            if on {
                opts.push(',');
                opts.push_str(name);
            }
        }
        crate::sys::mount::fusermount(&plan.mountpoint, &opts)
            .map_err(|e| format!("cannot mount on {}: {e}", plan.mountpoint.display()))?
    };
    fuser::Session::from_fd(fuse, fd, config.acl, config.clone()).map_err(|e| {
        let _ = if privileged {
            crate::sys::mount::umount(&plan.mountpoint, true).map_err(|e| e.to_string())
        } else {
            crate::sys::mount::fuserumount(&plan.mountpoint)
        };
        format!("FUSE handshake on {} failed: {e}", plan.mountpoint.display())
    })
}

fn fuse_config(args: &MountArgs, plan: &Plan) -> fuser::Config {
    use fuser::MountOption as M;
    let mut opts = vec![
        M::FSName(args.opts.fsname.clone().unwrap_or_else(|| "unionmount".into())),
        M::Subtype("unionmount".into()),
        M::DefaultPermissions,
    ];
    if plan.spec.upper.is_none() {
        opts.push(M::RO);
    }
    for f in &args.opts.kernel_flags {
        opts.push(match f.as_str() {
            "dev" => M::Dev,
            "nodev" => M::NoDev,
            "suid" => M::Suid,
            "nosuid" => M::NoSuid,
            "exec" => M::Exec,
            "noexec" => M::NoExec,
            "atime" => M::Atime,
            "noatime" => M::NoAtime,
            "sync" => M::Sync,
            "async" => M::Async,
            _ => M::DirSync,
        });
    }
    let mut c = fuser::Config::default();
    c.mount_options = opts;
    // Root serves containers whose processes run as other users; unprivileged
    // mounts allow other users only when asked (allow_other needs user_allow_other).
    c.acl = if args.opts.allow_other || crate::sys::euid() == 0 { fuser::SessionACL::All } else { fuser::SessionACL::Owner };
    c.n_threads = Some(args.opts.threads.unwrap_or_else(|| (process::cpu_count() * 2).clamp(2, 8)));
    // One /dev/fuse fd per thread (FUSE_DEV_IOC_CLONE) needs /dev/fuse to be openable.
    c.clone_fd = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok();
    c
}

fn make_record(plan: &Plan, whiteout: &str) -> MountRecord {
    let lowers = match &plan.image {
        Some((_, img)) => img
            .layers
            .iter()
            .map(|l| LayerRecord { dir: l.dir.clone(), diff_id: Some(l.diff_id.clone()), layer_id: Some(l.layer_id.clone()) })
            .collect(),
        None => plan.spec.lowers.iter().map(|d| LayerRecord { dir: d.clone(), diff_id: None, layer_id: None }).collect(),
    };
    MountRecord {
        mountpoint: plan.mountpoint.clone(),
        lowers,
        upper: plan.spec.upper.clone(),
        work: plan.spec.work.clone(),
        image: plan.image.as_ref().map(|(r, _)| r.clone()),
        image_id: plan.image.as_ref().map(|(_, i)| i.id.clone()),
        store: plan.image.as_ref().map(|(_, i)| i.store.clone()),
        whiteout_format: whiteout.to_string(),
        pid: std::process::id(),
    }
}
