//! From the opened layers on: daemonize, mount, serve, unmount.
//!
//! Without `-f` the process forks before any thread exists. The parent waits on a
//! pipe for "OK" or the daemon's one error line and returns that outcome to the front
//! end; the daemon (the child) sends its outcome there, serves, and ends the process
//! itself: it never returns to the front end, so nothing is printed twice.

use super::{MountArgs, MountCallError, MountError, Passthrough, Plan};
use crate::fuse::FuseFs;
use crate::layers::LayerStack;
use crate::record::{LayerRecord, MountRecord};
use crate::sys::process::{self, Fork};
use crate::union::{Config, UnionFs};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Open the layers, daemonize unless `-f`, mount and serve until unmounted.
pub(super) fn run(args: &MountArgs, mut plan: Plan) -> Result<(), MountError> {
    crate::sys::fs::raise_nofile_limit();
    let stack = LayerStack::open(&plan.spec)?;
    let whiteout = stack.upper.as_ref().map(|u| u.whiteout.as_str()).unwrap_or("none").to_string();
    let cfg = Config {
        cache_entries: args.opts.cache_entries.unwrap_or(Config::default().cache_entries),
        fsync: !args.opts.no_fsync,
        ids: mount_ids(&args.opts.ids),
        redirect_dir: args.opts.redirect_dir.unwrap_or(Config::default().redirect_dir),
    };
    let ufs = Arc::new(UnionFs::new(stack, cfg).map_err(MountError::Open)?);
    if args.foreground {
        return serve(args, &plan, ufs, &whiteout, None);
    }
    // Daemonize before any thread exists.
    let sys = |what| move |errno| MountError::Sys { what, errno };
    let (r, w) = process::pipe().map_err(sys("pipe"))?;
    match process::fork().map_err(sys("fork"))? {
        Fork::Parent(pid) => {
            drop(w);
            // The daemon owns the file system now. Tearing down this copy (the lookup
            // cache, one fd per layer) would only touch copy-on-write pages the daemon
            // shares, and delay this process's exit, which is when the mount is ready.
            std::mem::forget(ufs);
            if let Some(e) = plan.ephemeral.take() {
                e.hand_over();
            }
            wait_ready(r, pid)
        }
        Fork::Child => {
            drop(r);
            process::setsid();
            // An error before readiness went to the parent; after it, stderr is /dev/null.
            let result = serve(args, &plan, ufs, &whiteout, Some(w));
            drop(plan);
            std::process::exit(if result.is_ok() { 0 } else { 1 });
        }
    }
}

/// Mount, report readiness (or the error) on `ready`, and serve until unmounted.
fn serve(args: &MountArgs, plan: &Plan, ufs: Arc<UnionFs>, whiteout: &str, mut ready: Option<OwnedFd>) -> Result<(), MountError> {
    process::clear_umask();
    process::block_term_signals();

    let ttl = Duration::from_secs_f64(args.opts.timeout.unwrap_or(60.0));
    let passthrough = args.opts.passthrough.unwrap_or(Passthrough::All);
    let fuse = FuseFs::new(ufs, ttl, passthrough);
    let invalidator = fuse.invalidator();
    let config = fuse_config(args);
    let privileged = crate::sys::euid() == 0;
    let session = match mount_fuse(fuse, args, plan, &config, privileged) {
        Ok(s) => s,
        Err(e) => {
            if let Some(w) = ready.take() {
                process::write_fd(w.as_fd(), e.to_string().as_bytes());
            }
            return Err(e);
        }
    };
    if let Err(e) = invalidator.attach(session.notifier()) {
        log::warn!("no thread for kernel cache invalidations: {e}");
    }
    let record = make_record(plan, whiteout);
    if let Err(e) = record.write() {
        log::warn!("could not write the mount record: {e}");
    }
    if let Some(w) = ready.take() {
        process::write_fd(w.as_fd(), b"OK");
        drop(w);
        process::stdio_to_devnull();
    }

    let done = Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let mnt = plan.mountpoint.clone();
    let conn = crate::sys::fusectl::connection_of(&mnt);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = process::wait_term_signal();
            if done2.load(Ordering::SeqCst) {
                return;
            }
            log::info!("signal {sig}: unmounting {}", mnt.display());
            if let Err(e) = super::unmount(&mnt, false) {
                log::warn!("unmount of {} failed: {e}", mnt.display());
            }
            end_connection(&done2, conn);
        })
        .map_err(MountError::Thread)?;
    let r = session.run();
    done.store(true, Ordering::SeqCst);
    MountRecord::remove(&plan.mountpoint, std::process::id());
    r.map_err(MountError::Session)
}

/// After our unmount: a copy of the mount in another mount namespace keeps the
/// connection, and so the session, alive. Abort the connection if the session has not
/// ended after a grace period; exit if even that does not end it.
fn end_connection(done: &AtomicBool, conn: Option<u64>) {
    let ended = |secs: u64| {
        let until = std::time::Instant::now() + Duration::from_secs(secs);
        while !done.load(Ordering::SeqCst) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        done.load(Ordering::SeqCst)
    };
    if ended(2) {
        return;
    }
    log::info!("the mount lives on elsewhere: aborting the FUSE connection");
    if let Some(n) = conn
        && let Err(e) = crate::sys::fusectl::abort(n)
    {
        log::warn!("cannot abort FUSE connection {n}: {e}");
    }
    if !ended(5) {
        log::warn!("the FUSE session did not end: exiting");
        std::process::exit(0);
    }
}

/// Parent side of daemonizing: wait for "OK" or the daemon's error line.
fn wait_ready(r: OwnedFd, pid: i32) -> Result<(), MountError> {
    let mut f = std::fs::File::from(r);
    let mut msg = String::new();
    let _ = f.read_to_string(&mut msg);
    match msg.as_str() {
        "OK" => Ok(()),
        "" => Err(MountError::DaemonDied(process::child_exited(pid))),
        _ => Err(MountError::Daemon(msg)),
    }
}

/// Mount (our own mount(2) as root, fusermount3 otherwise; type `fuse.unionmount`
/// either way) and wrap the /dev/fuse fd in a session.
fn mount_fuse(
    fuse: FuseFs,
    args: &MountArgs,
    plan: &Plan,
    config: &fuser::Config,
    privileged: bool,
) -> Result<fuser::Session<FuseFs>, MountError> {
    let mount_failed = |source| MountError::Mount { path: plan.mountpoint.clone(), source };
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
    // The source column of /proc/mounts (findmnt, df): fsname=, else the image reference.
    let image = plan.image.as_ref().map(|(r, _)| r.clone());
    let fsname = args.opts.fsname.clone().or(image).unwrap_or_else(|| "unionmount".into());
    let fd = if privileged {
        crate::sys::mount::fuse_mount(&plan.mountpoint, &fsname, "unionmount", flags, &extra)
            .map_err(|e| mount_failed(MountCallError::Sys(e)))?
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
        crate::sys::mount::fusermount(&plan.mountpoint, &opts).map_err(|e| mount_failed(e.into()))?
    };
    fuser::Session::from_fd(fuse, fd, config.acl, config.clone()).map_err(|source| {
        let _ = super::unmount(&plan.mountpoint, true);
        MountError::Handshake { path: plan.mountpoint.clone(), source }
    })
}

/// The id mapping of the mount, with the kernel's overflow ids read once, now, when
/// a mapping is given.
fn mount_ids(opts: &crate::union::idmap::IdMapping) -> crate::union::idmap::IdMapping {
    let mut ids = opts.clone();
    if !ids.is_identity() {
        ids.overflow = crate::union::idmap::Overflow::read();
        log::debug!("id mapping: {ids:?}");
    }
    ids
}

/// The session's settings. The mount itself is ours (`mount_fuse`), so fuser's mount
/// options are not used.
fn fuse_config(args: &MountArgs) -> fuser::Config {
    let mut c = fuser::Config::default();
    // Root serves containers whose processes run as other users; unprivileged
    // mounts allow other users only when asked (allow_other needs user_allow_other).
    c.acl = if args.opts.allow_other || crate::sys::euid() == 0 { fuser::SessionACL::All } else { fuser::SessionACL::Owner };
    c.n_threads = Some(args.opts.threads.unwrap_or_else(|| (process::cpu_count() * 2).clamp(2, 8)));
    // One /dev/fuse fd per thread (FUSE_DEV_IOC_CLONE) needs /dev/fuse to be openable.
    c.clone_fd = std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").is_ok();
    c
}

fn make_record(plan: &Plan, whiteout: &str) -> MountRecord {
    // Each lower's whiteout forms as the stack reads it (`StackSpec::lower_formats`).
    let whiteouts = |i: usize| plan.spec.lower_formats.get(i).copied().unwrap_or_default();
    let lowers = match &plan.image {
        Some((_, img)) => img
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| LayerRecord {
                dir: l.dir.clone(),
                diff_id: Some(l.diff_id.to_string()),
                layer_id: Some(l.layer_id.clone()),
                whiteouts: whiteouts(i),
            })
            .collect(),
        None => (plan.spec.lowers.iter().enumerate())
            .map(|(i, d)| LayerRecord { dir: d.clone(), diff_id: None, layer_id: None, whiteouts: whiteouts(i) })
            .collect(),
    };
    MountRecord {
        mountpoint: plan.mountpoint.clone(),
        lowers,
        upper: plan.spec.upper.clone(),
        work: plan.spec.work.clone(),
        image: plan.image.as_ref().map(|(r, _)| r.clone()),
        image_id: plan.image.as_ref().map(|(_, i)| i.id.to_string()),
        store: plan.image.as_ref().map(|(_, i)| i.store.clone()),
        whiteout_format: whiteout.to_string(),
        pid: std::process::id(),
        started: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs()),
    }
}
