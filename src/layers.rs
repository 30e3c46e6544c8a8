//! The layer stack: one root fd per layer, the upper layer and its work directory.
//!
//! Index 0 of `LayerStack::layers` is the upper layer when there is one; the lower
//! layers follow, top first. Every access to layer content starts from one of these
//! root fds and goes one component at a time without following symlinks
//! (`sys::fs::open_at`), so nothing a layer holds can lead the daemon outside it.
//!
//! At open, `WORKDIR/work` is created if needed and emptied: anything there is a
//! leftover of an interrupted copy-up, create or delete and was never visible.

use crate::overlay::{self, WhiteoutForm, WhiteoutFormat};
use crate::sys::{self, Errno, fs, xattr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Index of a layer in `LayerStack::layers`: 0 is the upper layer when there is
/// one ([`LayerStack::is_upper`]), the lower layers follow, top first.
pub type LayerIdx = u16;

/// The index the upper layer has when there is one (test with `LayerStack::is_upper`).
pub const UPPER: LayerIdx = 0;

/// Why the layer stack could not be opened; `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("upperdir needs a workdir: add -o workdir=DIR")]
    NoWorkdir,
    /// `op` ("open", "stat", "create", "clean") failed on `what` ("lowerdir", "upperdir", …).
    #[error("cannot {op} {what} {}: {errno}", path.display())]
    Dir { op: &'static str, what: &'static str, path: PathBuf, errno: Errno },
    #[error("upperdir {} and workdir {} are on different file systems: put both on the same one", upper.display(), work.display())]
    CrossDevice { upper: PathBuf, work: PathBuf },
    #[error("no layers: give -o lowerdir=DIR[:DIR…]")]
    NoLayers,
    #[error("too many layers ({0}): at most 65534")]
    TooMany(usize),
    /// A lower layer this process may not search (a store owned by other ids, such as
    /// a rootless store's files owned by subordinate ids).
    #[error("cannot read layer {}: {errno} (owned by uid {uid}, mode {mode:o}){}", path.display(), if *uid != sys::euid() { UNREADABLE_HINT } else { "" })]
    Unreadable { path: PathBuf, errno: Errno, uid: u32, mode: u32 },
}

const UNREADABLE_HINT: &str = ": mount it as its owner, or inside `podman unshare` for a rootless podman store";

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct StackSpec {
    /// Lower layer directories, top first.
    pub lowers: Vec<PathBuf>,
    /// The whiteout forms each lower may hold, as its store declares (index-aligned;
    /// missing = `Either`, see `overlay` rule 3).
    pub lower_formats: Vec<WhiteoutFormat>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    /// Force the whiteout form written into upper instead of probing.
    pub whiteout: Option<WhiteoutForm>,
}

/// One layer directory.
#[derive(Debug)]
pub struct Layer {
    pub root: OwnedFd,
    pub path: PathBuf,
    pub dev: u64,
    /// The whiteout forms this layer may hold (`overlay` rule 3).
    pub format: WhiteoutFormat,
}

impl Layer {
    /// Does this layer read `.wh.` markers?
    pub fn reads_markers(&self) -> bool {
        self.format.reads_markers()
    }
}

/// The upper layer's extras.
#[derive(Debug)]
pub struct UpperExtra {
    /// `WORKDIR/work`, same file system as the upper layer.
    pub work: OwnedFd,
    pub work_path: PathBuf,
    pub whiteout: WhiteoutForm,
    /// Xattr used to mark opaque directories in CharDev form.
    pub opaque_xattr: &'static str,
    /// Xattr a renamed directory's redirect is written in (same namespace as
    /// `opaque_xattr`: `trusted.*` where it can be set, else `user.*`).
    pub redirect_xattr: &'static str,
}

#[derive(Debug)]
pub struct LayerStack {
    pub layers: Vec<Layer>,
    pub upper: Option<UpperExtra>,
}

fn open_dir(path: &Path, what: &'static str) -> Result<(OwnedFd, u64), StackError> {
    let err = |op| move |errno| StackError::Dir { op, what, path: path.to_path_buf(), errno };
    let fd = fs::open_path(path, libc::O_PATH | libc::O_DIRECTORY).map_err(err("open"))?;
    let st = fs::fstat(fd.as_fd()).map_err(err("stat"))?;
    Ok((fd, st.dev()))
}

impl LayerStack {
    /// Open every layer; create and clean the work directory; pick the whiteout format.
    pub fn open(spec: &StackSpec) -> Result<LayerStack, StackError> {
        let mut layers = Vec::new();
        let mut upper = None;
        if let Some(up) = &spec.upper {
            let work_base = spec.work.as_ref().ok_or(StackError::NoWorkdir)?;
            let (root, dev) = open_dir(up, "upperdir")?;
            let (wb, wdev) = open_dir(work_base, "workdir")?;
            if wdev != dev {
                return Err(StackError::CrossDevice { upper: up.clone(), work: work_base.clone() });
            }
            let work = prepare_work(wb.as_fd(), work_base)?;
            let whiteout = spec.whiteout.unwrap_or_else(|| probe_whiteout(work.as_fd()));
            let (opaque_xattr, redirect_xattr) = if probe_trusted_xattr(work.as_fd()) {
                (overlay::OPAQUE_XATTR_TRUSTED, overlay::REDIRECT_XATTR_TRUSTED)
            } else {
                (overlay::OPAQUE_XATTR_USER, overlay::REDIRECT_XATTR_USER)
            };
            // An existing upper may hold either form whatever this mount writes.
            layers.push(Layer { root, path: up.clone(), dev, format: WhiteoutFormat::Either });
            upper = Some(UpperExtra { work, work_path: work_base.join("work"), whiteout, opaque_xattr, redirect_xattr });
        }
        for (i, l) in spec.lowers.iter().enumerate() {
            let (root, dev) = open_dir(l, "lowerdir")?;
            // A layer this process may not search is said now, naming it, rather than
            // as EACCES from the first lookup. (Resolving "." checks search permission.)
            if let Err(errno) = fs::open_at(root.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0) {
                let st = fs::fstat(root.as_fd()).map_err(|errno| StackError::Dir { op: "stat", what: "lowerdir", path: l.clone(), errno })?;
                return Err(StackError::Unreadable { path: l.clone(), errno, uid: st.uid(), mode: st.mode() & 0o7777 });
            }
            let format = spec.lower_formats.get(i).copied().unwrap_or_default();
            layers.push(Layer { root, path: l.clone(), dev, format });
        }
        if layers.is_empty() {
            return Err(StackError::NoLayers);
        }
        if layers.len() > 0xfffe {
            return Err(StackError::TooMany(layers.len()));
        }
        Ok(LayerStack { layers, upper })
    }

    pub fn has_upper(&self) -> bool {
        self.upper.is_some()
    }

    /// Is layer `l` the writable upper layer? The one test for it.
    pub fn is_upper(&self, l: LayerIdx) -> bool {
        l == UPPER && self.upper.is_some()
    }

    /// Does layer `l` read `.wh.` markers?
    pub fn reads_markers(&self, l: LayerIdx) -> bool {
        self.layers.get(l as usize).is_some_and(Layer::reads_markers)
    }
}

/// Create `WORKDIR/work` (mode 0700) and remove whatever an earlier run left in it.
fn prepare_work(base: std::os::fd::BorrowedFd<'_>, base_path: &Path) -> Result<OwnedFd, StackError> {
    let err = |op| move |errno| StackError::Dir { op, what: "work dir", path: base_path.join("work"), errno };
    match fs::mkdir_at(base, c"work", 0o700) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(err("create")(e)),
    }
    let work = fs::open_at(base, c"work", libc::O_PATH | libc::O_DIRECTORY, 0).map_err(err("open"))?;
    clear_dir(work.as_fd()).map_err(err("clean"))?;
    Ok(work)
}

/// Remove everything below `dir` (never following symlinks).
pub fn clear_dir(dir: std::os::fd::BorrowedFd<'_>) -> Result<(), Errno> {
    for e in sys::dir::read_all(dir)? {
        let name = sys::component(&e.name)?;
        remove_tree_at(dir, &name)?;
    }
    Ok(())
}

/// Remove `name` below `dir`, recursively if it is a directory.
pub fn remove_tree_at(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::CStr) -> Result<(), Errno> {
    match fs::unlink_at(dir, name, false) {
        Ok(()) => Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {
            let sub = fs::open_at(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            clear_dir(sub.as_fd())?;
            fs::unlink_at(dir, name, true)
        }
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Char-device whiteouts need mknod permission; try one in the work dir.
fn probe_whiteout(work: std::os::fd::BorrowedFd<'_>) -> WhiteoutForm {
    let name = c"whiteout-probe";
    match fs::mknod_at(work, name, libc::S_IFCHR, 0) {
        Ok(()) => {
            let _ = fs::unlink_at(work, name, false);
            WhiteoutForm::CharDev
        }
        Err(_) => WhiteoutForm::WhFile,
    }
}

/// Whether `trusted.*` xattrs can be set here (root): try the opaque one on a
/// scratch directory.
fn probe_trusted_xattr(work: std::os::fd::BorrowedFd<'_>) -> bool {
    let name = c"xattr-probe";
    if fs::mkdir_at(work, name, 0o700).is_err() {
        return false;
    }
    let ok = match fs::open_at(work, name, libc::O_PATH | libc::O_DIRECTORY, 0) {
        Ok(fd) => xattr::set(xattr::Target::Fd(fd.as_fd()), overlay::OPAQUE_XATTR_TRUSTED.as_ref(), b"y", 0).is_ok(),
        Err(_) => false,
    };
    let _ = fs::unlink_at(work, name, true);
    ok
}
