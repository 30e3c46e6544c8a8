//! Reading layer directories for `which`, `diff` and `commit`.
//!
//! The overlay meaning of a layer (which names are whiteouts, which directories are
//! opaque, what a merged directory shows) comes from `union::view`, the lookup and
//! listing the mount itself uses, with each layer's declared whiteout forms; the
//! rules are spelled in `overlay` only. What is here is what only `inspect` needs:
//! the content of one layer's entries (xattrs, file data, link targets) and the
//! paths to name in messages.
//!
//! ```text
//! layer/
//!   etc/              dir; opaque if xattr trusted.overlay.opaque=y or
//!                     user.overlay.opaque=y, or it contains .wh..wh..opq, or a
//!                     .wh.etc sits beside it (the last two where the layer reads markers)
//!   etc/gone          char device 0/0: a whiteout ("gone" deleted below)
//!   etc/.wh.old       a whiteout in OCI/AUFS form ("old" deleted below)
//!   etc/.wh..wh..opq  marker: etc is opaque
//! ```
//!
//! Invariants:
//! - Every access below a layer root goes through a [`Dir`], an `O_PATH` fd opened one
//!   component at a time without following symlinks; regular files are opened with
//!   `O_NOFOLLOW|O_NONBLOCK` and refused unless they are regular files, so nothing a
//!   layer holds (symlinks, fifos, renames racing the walk) leads a walk outside it.
//! - Listings are sorted by name bytes, so every walk (and every tar) is
//!   deterministic. Names stay bytes (`OsString`) throughout.
//! - Overlay-private xattrs are never reported as content; an entry carrying
//!   `metacopy` is refused. A redirect (a renamed directory) is followed through
//!   `union::view` lookups by `diff` and `commit`, never by a one-layer walk.

use super::InspectError;
use crate::layers::LayerIdx;
use crate::overlay::{self, WhiteoutFormat};
use crate::record::LayerRecord;
use crate::sys::fs::{self, Stat};
use crate::sys::{Errno, xattr};
use crate::union::inode::Held;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::union::view::{LayerEntry, StackView, What};

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

impl Kind {
    /// The kind of `S_IFMT` bits `mode`.
    pub fn of_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::File,
        }
    }

    pub fn of(st: &Stat) -> Kind {
        Kind::of_mode(st.mode())
    }
}

/// A view of the upper directory `upper` (if any) over `lowers` (top first): index 0
/// is the upper one when given. An upper directory may hold either whiteout form
/// whatever its mount writes (`overlay` rule 3).
pub fn open_view(upper: Option<&Path>, lowers: &[LayerRecord]) -> Result<StackView, InspectError> {
    let mut layers: Vec<(PathBuf, WhiteoutFormat)> = upper.iter().map(|u| (u.to_path_buf(), WhiteoutFormat::Either)).collect();
    layers.extend(lowers.iter().map(|l| (l.dir.clone(), l.whiteouts)));
    StackView::open(&layers).map_err(InspectError::Stack)
}

/// A directory of one layer, with the path the user knows it by (messages only).
pub struct Dir {
    pub layer: LayerIdx,
    pub held: Arc<Held>,
    shown: PathBuf,
}

impl Dir {
    /// The root of layer `layer` of `view`.
    pub fn root(view: &StackView, layer: LayerIdx) -> Result<Dir, InspectError> {
        let shown = view.path(layer).to_path_buf();
        let held = view.root(layer).map_err(|errno| InspectError::Sys { path: shown.clone(), errno })?;
        Ok(Dir { layer, held, shown })
    }

    /// Directory `held` of layer `layer`, named `shown` in messages (a directory a
    /// merged lookup found).
    pub fn at(layer: LayerIdx, held: Arc<Held>, shown: PathBuf) -> Dir {
        Dir { layer, held, shown }
    }

    /// Does this directory carry a redirect (`overlay` rule 8)?
    pub fn is_redirected(&self, view: &StackView) -> bool {
        view.redirect_of(self.layer, &self.held).is_some()
    }

    /// The directory as the user knows it (for messages).
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// `errno` on child `name`, for a message.
    pub fn err(&self, name: &OsStr, errno: Errno) -> InspectError {
        InspectError::Sys { path: self.shown.join(name), errno }
    }

    fn err_here(&self, errno: Errno) -> InspectError {
        InspectError::Sys { path: self.shown.clone(), errno }
    }

    /// stat of this directory.
    pub fn stat(&self) -> Result<Stat, InspectError> {
        fs::fstat(self.held.as_fd()).map_err(|e| self.err_here(e))
    }

    /// This directory's entries as its layer means them, sorted by name bytes.
    pub fn entries(&self, view: &StackView) -> Result<Vec<LayerEntry>, InspectError> {
        view.layer_entries(self.layer, &self.held).map_err(|e| self.err_here(e))
    }

    /// Is this directory opaque (the way a layer root can be)?
    pub fn is_opaque(&self, view: &StackView) -> bool {
        view.is_opaque(self.layer, &self.held)
    }

    /// Child directory `name` (never through a symlink).
    pub fn open_dir(&self, view: &StackView, name: &OsStr) -> Result<Dir, InspectError> {
        let held = view.open_dir(&self.held, name).map_err(|e| self.err(name, e))?;
        Ok(Dir { layer: self.layer, held, shown: self.shown.join(name) })
    }

    fn cname(&self, name: &OsStr) -> Result<std::ffi::CString, InspectError> {
        crate::sys::component(name).map_err(|e| self.err(name, e))
    }

    /// Open child regular file `name` for reading (never through a symlink, never
    /// blocking on a fifo swapped in); fails unless it is a regular file.
    pub fn open_file(&self, name: &OsStr) -> Result<File, InspectError> {
        let c = self.cname(name)?;
        let fd = fs::open_at(self.held.as_fd(), &c, libc::O_RDONLY | libc::O_NONBLOCK, 0).map_err(|e| self.err(name, e))?;
        if !fs::fstat(fd.as_fd()).map_err(|e| self.err(name, e))?.is_reg() {
            return Err(self.err(name, Errno::EINVAL));
        }
        Ok(File::from(fd))
    }

    /// The target of child symlink `name`, as bytes.
    pub fn read_link(&self, name: &OsStr) -> Result<OsString, InspectError> {
        let c = self.cname(name)?;
        let fd = fs::open_at(self.held.as_fd(), &c, libc::O_PATH, 0).map_err(|e| self.err(name, e))?;
        fs::readlink_fd(fd.as_fd()).map_err(|e| self.err(name, e))
    }

    /// The content xattrs of child `name` (overlay-private ones left out), sorted by
    /// name; an error when it carries one that changes its meaning.
    pub fn xattrs(&self, name: &OsStr) -> Result<Vec<(OsString, Vec<u8>)>, InspectError> {
        let c = self.cname(name)?;
        let fd = fs::open_at(self.held.as_fd(), &c, libc::O_PATH, 0).map_err(|e| self.err(name, e))?;
        let target = xattr::Target::Fd(fd.as_fd());
        let names = match xattr::list(target) {
            Ok(n) => n,
            Err(Errno::ENOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(name, e)),
        };
        let mut out = Vec::new();
        for n in names {
            if overlay::changes_meaning(&n) {
                return Err(InspectError::Unsupported {
                    path: self.shown.join(name),
                    xattr: String::from_utf8_lossy(&n).into_owned(),
                });
            }
            if overlay::is_private_xattr(&n) {
                continue;
            }
            let k = OsStr::from_bytes(&n);
            match xattr::get(target, k) {
                Ok(v) => out.push((k.to_os_string(), v)),
                Err(Errno::ENODATA) => {}
                Err(e) => return Err(self.err(name, e)),
            }
        }
        out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Building synthetic layers in tests.
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    pub fn is_root() -> bool {
        crate::sys::euid() == 0
    }

    pub fn write(root: &Path, rel: &str, data: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    pub fn mkdir(root: &Path, rel: &str) {
        std::fs::create_dir_all(root.join(rel)).unwrap();
    }

    pub fn chmod(root: &Path, rel: &str, mode: u32) {
        std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A char 0/0 whiteout (root only; callers check `is_root`).
    pub fn whiteout_dev(root: &Path, rel: &str) {
        let st = Command::new("mknod").arg(root.join(rel)).args(["c", "0", "0"]).status().unwrap();
        assert!(st.success());
    }

    /// Lower `lo` holds `a/{x,y,sub/z}`; upper `up` shows `a` renamed to `b` as the kernel
    /// writes it with redirect_dir=on (whiteout at `a`, `b` redirected to `a`), with
    /// `b/new` added and `b/y` removed. Root only (char 0/0 whiteouts, trusted.* xattrs).
    pub fn renamed_a_to_b(up: &Path, lo: &Path) {
        write(lo, "a/x", "x");
        write(lo, "a/y", "y");
        write(lo, "a/sub/z", "z");
        write(up, "b/new", "n");
        whiteout_dev(up, "a");
        whiteout_dev(up, "b/y");
        ::xattr::set(up.join("b"), "trusted.overlay.redirect", b"a").unwrap();
    }

    /// Layer records for plain directories (either whiteout form).
    pub fn records(dirs: &[PathBuf]) -> Vec<LayerRecord> {
        dirs.iter().map(|d| LayerRecord { dir: d.clone(), diff_id: None, layer_id: None, whiteouts: Default::default() }).collect()
    }

    /// A view of plain directories, top first (either whiteout form).
    pub fn view(dirs: &[PathBuf]) -> StackView {
        open_view(None, &records(dirs)).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::union::resolve::Resolved;

    fn names(e: &[LayerEntry]) -> Vec<(&str, bool)> {
        e.iter().map(|e| (e.name.to_str().unwrap(), e.what == What::Whiteout)).collect()
    }

    #[test]
    fn listing_interprets_both_whiteout_forms() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        write(r, "a", "1");
        write(r, ".wh.gone", "");
        write(r, ".wh.a", ""); // real entry wins
        mkdir(r, "d");
        write(r, "d/.wh..wh..opq", "");
        write(r, ".wh..wh.plnk", "");
        std::os::unix::fs::symlink("/etc/passwd", r.join("ln")).unwrap();
        let v = view(&[r.to_path_buf()]);
        let root = Dir::root(&v, 0).unwrap();
        let l = root.entries(&v).unwrap();
        assert_eq!(names(&l), vec![("a", false), ("d", false), ("gone", true), ("ln", false)]);
        assert!(!root.is_opaque(&v));
        assert_eq!(l[1].what, What::Dir { opaque: true });
        // Symlinks are never followed when opening.
        assert!(root.open_dir(&v, OsStr::new("ln")).is_err());
        assert!(root.open_file(OsStr::new("ln")).is_err());
        // A layer declared to hold no markers: `.wh.` names mean nothing there.
        let rec = [LayerRecord { dir: r.to_path_buf(), diff_id: None, layer_id: None, whiteouts: WhiteoutFormat::CharDevice }];
        let v = open_view(None, &rec).unwrap();
        let l = Dir::root(&v, 0).unwrap().entries(&v).unwrap();
        assert_eq!(names(&l), vec![("a", false), ("d", false), ("ln", false)]);
        assert_eq!(l[1].what, What::Dir { opaque: false });
    }

    fn found(r: Resolved) -> Option<(LayerIdx, Vec<LayerIdx>)> {
        match r {
            Resolved::Found(f) => Some((f.layer, f.dirs.iter().map(|d| d.0).collect())),
            _ => None,
        }
    }

    #[test]
    fn lookup_follows_overlay_rules() {
        let t = tempfile::tempdir().unwrap();
        let (top, mid, bot) = (t.path().join("top"), t.path().join("mid"), t.path().join("bot"));
        write(&bot, "d/x", "bx");
        write(&bot, "d/y", "by");
        write(&bot, "f", "bf");
        write(&mid, "d/z", "mz");
        write(&mid, ".wh.f", "");
        write(&top, "d/.wh.y", "");
        let v = view(&[top, mid, bot]);
        let root = v.merged_root(0).unwrap();
        assert!(matches!(v.lookup(&root, OsStr::new("f")).unwrap(), Resolved::Deleted(1)));
        let Resolved::Found(d) = v.lookup(&root, OsStr::new("d")).unwrap() else { panic!("d is there") };
        assert_eq!(d.layer, 0);
        assert_eq!(d.dirs.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2]);
        let names: Vec<OsString> = v.list(&d.dirs).unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, vec![OsString::from("x"), OsString::from("z")]);
    }

    #[test]
    fn longest_names_have_no_marker_to_probe() {
        let t = tempfile::tempdir().unwrap();
        let (top, bot) = (t.path().join("top"), t.path().join("bot"));
        let long = "n".repeat(255);
        write(&bot, &long, "x");
        write(&top, &long, "y");
        let v = view(&[top, bot]);
        let root = v.merged_root(0).unwrap();
        assert_eq!(found(v.lookup(&root, OsStr::new(&long)).unwrap()).unwrap().0, 0);
    }

    #[test]
    fn opaque_xattr_and_chardev_whiteout() {
        if !is_root() {
            eprintln!("skipped: needs root for mknod and trusted.* xattrs");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (top, bot) = (t.path().join("top"), t.path().join("bot"));
        write(&bot, "d/x", "1");
        write(&bot, "g", "1");
        mkdir(&top, "d");
        ::xattr::set(top.join("d"), "trusted.overlay.opaque", b"y").unwrap();
        ::xattr::set(top.join("d"), "user.keep", b"v").unwrap();
        whiteout_dev(&top, "g");
        let v = view(&[top.clone(), bot]);
        let root = v.merged_root(0).unwrap();
        assert_eq!(found(v.lookup(&root, OsStr::new("d")).unwrap()).unwrap().1.len(), 1);
        assert!(matches!(v.lookup(&root, OsStr::new("g")).unwrap(), Resolved::Deleted(0)));
        let top_dir = Dir::root(&v, 0).unwrap();
        let l = top_dir.entries(&v).unwrap();
        assert_eq!(l[0].what, What::Dir { opaque: true });
        assert_eq!(top_dir.xattrs(OsStr::new("d")).unwrap(), vec![(OsString::from("user.keep"), b"v".to_vec())]);
        assert_eq!(l[1].what, What::Whiteout);
    }
}
