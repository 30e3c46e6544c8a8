//! Mounting: checks, the writable layer, daemonizing, the FUSE session, shutdown.
//!
//! Order of a mount: validate (one clear line per problem, before anything is
//! created) → open the layer stack (cleans workdir) → fork unless `-f` (the parent
//! waits on a pipe and returns success only once the child reports the mount ready,
//! or the child's error line) → mount and FUSE handshake → write the mount record →
//! serve. SIGINT/SIGTERM/SIGHUP unmount; an external umount ends the session; both
//! remove the record and an ephemeral upper layer.
//!
//! `options` holds the typed options the front end fills in, `error` the one error
//! type, `session` everything from the fork on. Nothing here prints an error: the
//! front end does; a daemonized child sends its error line to the waiting parent.

mod ephemeral;
mod error;
mod options;
mod session;

pub use crate::fuse::Passthrough;
pub use crate::overlay::WhiteoutForm;
pub use error::{MountCallError, MountError};
pub use options::{MountArgs, MountOpts};

use crate::layers::StackSpec;
use crate::record::{Mountpoint, RecordError};
use crate::store::{ResolvedImage, StoreQuery};
use std::path::{Path, PathBuf};

/// What the mount will be made of, once the command line and store are resolved.
struct Plan {
    spec: StackSpec,
    mountpoint: PathBuf,
    image: Option<(String, ResolvedImage)>,
    /// The throw-away upper + work, removed at the end.
    ephemeral: Option<ephemeral::Ephemeral>,
}

/// Mount and serve until unmounted. Without `-f` this returns in the caller once the
/// daemon reports the mount ready (or its error); the daemon itself never returns.
pub fn run(args: MountArgs) -> Result<(), MountError> {
    for o in &args.opts.ignored {
        log::debug!("option {o} accepted and ignored");
    }
    let plan = plan(&args)?;
    session::run(&args, plan)
}

/// Unmount a unionmount: umount2 as root (detached at once with `lazy`, else lazily
/// only if busy), `fusermount3 -u -z` otherwise.
pub fn unmount(mnt: &Path, lazy: bool) -> Result<(), MountCallError> {
    use crate::sys::mount::umount;
    if crate::sys::euid() == 0 {
        let r = if lazy { umount(mnt, true) } else { umount(mnt, false).or_else(|_| umount(mnt, true)) };
        r.map_err(MountCallError::Sys)
    } else {
        Ok(crate::sys::mount::fuserumount(mnt)?)
    }
}

fn canonical(p: &Path, what: &'static str) -> Result<PathBuf, MountError> {
    std::fs::canonicalize(p).map_err(|source| MountError::Path { what, path: p.to_path_buf(), source })
}

/// Resolve the image (if any), decide the writable layer, check everything.
fn plan(args: &MountArgs) -> Result<Plan, MountError> {
    let mnt = match crate::record::classify(&args.mountpoint) {
        Ok(Mountpoint::Dead(m)) => return Err(RecordError::Dead(m).into()),
        Ok(Mountpoint::Live(m) | Mountpoint::Other(m, _)) => m,
        Err(source) => return Err(MountError::Path { what: "mountpoint", path: args.mountpoint.clone(), source }),
    };
    if !mnt.is_dir() {
        return Err(MountError::NotADirectory { what: "mountpoint", path: mnt });
    }
    if let Some(t) = crate::record::mount_fstype(&mnt) {
        return Err(MountError::AlreadyMounted { path: mnt, fstype: t });
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::NoFuse);
    }
    let mut spec = StackSpec { whiteout: args.opts.whiteout, ..Default::default() };
    let mut image = None;
    let mut ephemeral = None;
    if let Some(reference) = args.image() {
        let q = StoreQuery {
            reference: reference.to_string_lossy().into_owned(),
            store: args.opts.store.clone(),
            cache: args.cache.clone(),
            namespace: args.namespace.clone(),
            platform: args.platform.clone(),
        };
        // Pulling and unpacking can take long: Ctrl-C / SIGTERM stop it, and nothing is mounted.
        crate::cancel::install();
        let img = crate::registry::resolve_image(&q, &args.remote, true)?;
        spec.lowers = img.layers.iter().map(|l| l.dir.clone()).collect();
        spec.lower_formats = img.lower_formats();
        if !args.opts.read_only {
            if let Some(up) = &args.upper {
                create_dir(up, "upper dir")?;
                let up = canonical(up, "upper dir")?;
                let name = up.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "upper".into());
                let work = up.with_file_name(format!(".{name}.work"));
                create_dir(&work, "work dir")?;
                spec.upper = Some(up);
                spec.work = Some(work);
            } else {
                let e = ephemeral::make()?;
                spec.upper = Some(e.upper());
                spec.work = Some(e.work());
                ephemeral = Some(e);
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
    // On error the throw-away layer is dropped, which removes it.
    check_layers(&mut spec, &mnt)?;
    Ok(Plan { spec, mountpoint: mnt, image, ephemeral })
}

/// Canonicalize every layer and refuse layouts that cannot work.
fn check_layers(spec: &mut StackSpec, mnt: &Path) -> Result<(), MountError> {
    let nested = |what, path: &Path, outer_what, outer: &Path, hint| MountError::Nested {
        what,
        path: path.to_path_buf(),
        outer_what,
        outer: outer.to_path_buf(),
        hint,
    };
    let outside = "use a directory outside it";
    let inside = |p: &Path, what: &'static str| -> Result<(), MountError> {
        if p.starts_with(mnt) {
            return Err(nested(what, p, "the mountpoint", mnt, outside));
        }
        if mnt.starts_with(p) {
            return Err(nested("mountpoint", mnt, what, p, outside));
        }
        Ok(())
    };
    for l in spec.lowers.iter_mut() {
        *l = canonical(l, "lowerdir")?;
        if !l.is_dir() {
            return Err(MountError::NotADirectory { what: "lowerdir", path: l.clone() });
        }
        inside(l, "lowerdir")?;
    }
    if let (Some(u), Some(w)) = (&mut spec.upper, &mut spec.work) {
        *u = canonical(u, "upperdir")?;
        *w = canonical(w, "workdir")?;
        inside(u, "upperdir")?;
        inside(w, "workdir")?;
        let beside = "put it beside, on the same file system";
        if w.starts_with(&*u) {
            return Err(nested("workdir", w, "upperdir", u, beside));
        }
        if u.starts_with(&*w) {
            return Err(nested("upperdir", u, "workdir", w, beside));
        }
        if spec.lowers.iter().any(|l| l == u) {
            return Err(MountError::UpperIsLower(u.clone()));
        }
    }
    Ok(())
}

fn create_dir(path: &Path, what: &'static str) -> Result<(), MountError> {
    std::fs::create_dir_all(path).map_err(|source| MountError::Create { what, path: path.to_path_buf(), source })
}
