//! The layer walk: find the topmost object for a name in a merged directory.
//!
//! The walk applies `crate::overlay`'s rules 1 to 3: layers are searched top-down; the
//! first layer with an entry decides; a whiteout (char 0/0, or `.wh.NAME` in layers
//! that read markers) ends the search with "absent"; a non-directory hides everything
//! below; a directory merges with the directories of its name below it until one
//! hides the rest (a non-directory, a whiteout, or an opaque directory).
//! Every open is `O_PATH|O_NOFOLLOW` of one component below a held directory fd.

use super::held::{DirLayer, Held, name_hash};
use crate::layers::LayerIdx;
use crate::layers::LayerStack;
use crate::overlay;
use crate::sys::fs::{self, Stat};
use crate::sys::{Errno, SysResult, xattr};
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

pub struct Found {
    pub layer: LayerIdx,
    /// The directory of `layer` holding the object.
    pub dir: Arc<Held>,
    pub st: Stat,
    /// For directories: the merged directories, top first.
    pub dirs: Vec<DirLayer>,
}

pub enum Resolved {
    /// No layer holds the name.
    Missing,
    /// A whiteout in this layer ended the search (no layer above holds the name).
    Deleted(LayerIdx),
    Found(Found),
}

/// Directories up to this size are listed once to learn whether they hold `.wh.`
/// markers at all, instead of probing `.wh.NAME` on every miss.
const SCAN_MAX_DIR_BYTES: u64 = 16 * 1024;

/// A name being resolved, with what every layer probe needs computed once.
pub struct Key<'a> {
    pub cname: &'a CStr,
    pub name: &'a OsStr,
    hash: u64,
    wh_hash: u64,
}

impl<'a> Key<'a> {
    pub fn new(cname: &'a CStr, name: &'a OsStr) -> Key<'a> {
        let b = name.as_bytes();
        Key { cname, name, hash: name_hash(b"", b), wh_hash: name_hash(overlay::WH_PREFIX, b) }
    }
}

/// Does `dir` (in `layer`) hold a `.wh.NAME` whiteout for `key`?
pub(super) fn has_wh_file(stack: &LayerStack, layer: LayerIdx, dir: &Held, key: &Key<'_>) -> bool {
    if !stack.reads_markers(layer) {
        return false;
    }
    if dir.has_markers().is_none() {
        scan_small_dir(stack, layer, dir);
    }
    if dir.has_markers() == Some(false) || dir.may_contain(key.wh_hash) == Some(false) {
        return false;
    }
    wh_marker_exists(dir.as_fd(), key.name)
}

/// Is there a `.wh.NAME` entry in `dir`? A name too long to carry the prefix
/// cannot have one.
pub fn wh_marker_exists(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    match overlay::whiteout_marker(name.as_bytes()) {
        Ok(w) => fs::stat_at(dir, &w).is_ok(),
        Err(_) => false,
    }
}

/// List a small directory once to learn its markers (and, in a lower layer, its
/// name filter). Big directories are left to readdir, which learns the same.
fn scan_small_dir(stack: &LayerStack, layer: LayerIdx, dir: &Held) {
    let Ok(st) = fs::fstat(dir.as_fd()) else { return };
    if st.size() > SCAN_MAX_DIR_BYTES {
        return;
    }
    if let Ok(entries) = crate::sys::dir::read_all(dir.as_fd()) {
        dir.learn_listing(entries.iter().map(|e| e.name.as_bytes()), !stack.is_upper(layer));
    }
}

/// What a directory's xattrs (and, where the layer reads markers, its opaque
/// marker) say about the layers below it.
#[derive(Debug, Default)]
pub struct Marks {
    /// Nothing below shows (`overlay` rules 2, 7).
    pub opaque: bool,
    /// The layers below look for it elsewhere (`overlay` rule 8); only read when not
    /// opaque (an opaque directory has nothing below to redirect to).
    pub redirect: Option<overlay::Redirect>,
}

/// The marks of directory `dir` of `layer`: one listxattr, a getxattr per overlay
/// xattr present.
pub fn dir_marks(stack: &LayerStack, layer: LayerIdx, dir: BorrowedFd<'_>) -> Marks {
    let names = xattr::list(xattr::Target::Fd(dir)).unwrap_or_default();
    let get = |n: &[u8]| xattr::get(xattr::Target::Fd(dir), OsStr::from_bytes(n)).ok();
    let opaque = names.iter().any(|n| overlay::is_opaque_xattr(n) && get(n).is_some_and(|v| overlay::is_opaque_value(&v)))
        || (stack.reads_markers(layer) && fs::stat_at(dir, overlay::OPAQUE_MARKER).is_ok());
    let redirect = if opaque {
        None
    } else {
        overlay::REDIRECT_XATTRS
            .iter()
            .find(|x| names.iter().any(|n| n == x.as_bytes()))
            .and_then(|x| get(x.as_bytes()))
            .and_then(|v| overlay::parse_redirect(&v))
    };
    Marks { opaque, redirect }
}

/// Is directory `dir` of `layer` opaque?
pub fn is_opaque(stack: &LayerStack, layer: LayerIdx, dir: BorrowedFd<'_>) -> bool {
    dir_marks(stack, layer, dir).opaque
}

/// The redirect directory `dir` of `layer` carries, if any (`overlay` rule 8).
pub fn redirect_of(stack: &LayerStack, layer: LayerIdx, dir: BorrowedFd<'_>) -> Option<overlay::Redirect> {
    dir_marks(stack, layer, dir).redirect
}

/// Does directory `dir`, found as `key` in `parent` of `layer`, hide the directories
/// of its name below? When it is opaque, or when `parent` also holds its `.wh.` marker
/// (`overlay` rule 2: the marker deletes the namesakes below, the directory stays).
/// The marker check costs no system call where the parent is known to hold no
/// markers or, in a lower layer, not that one, and none in layers that read no markers.
pub(crate) fn hides_below(stack: &LayerStack, layer: LayerIdx, parent: &Held, dir: BorrowedFd<'_>, key: &Key<'_>) -> bool {
    has_wh_file(stack, layer, parent, key) || is_opaque(stack, layer, dir)
}

/// What one layer directory says about `name`.
pub enum InLayer {
    Absent,
    Whiteout,
    /// An entry; directories come with an `O_PATH` fd on them.
    Entry(Stat, Option<OwnedFd>),
}

pub fn probe(stack: &LayerStack, layer: LayerIdx, held: &Held, key: &Key<'_>) -> SysResult<InLayer> {
    let (dir, cname) = (held.as_fd(), key.cname);
    let lower = !stack.is_upper(layer);
    if lower && !held.listed() && held.has_markers().is_none() {
        scan_small_dir(stack, layer, held);
    }
    if held.may_contain(key.hash) == Some(false) {
        // No such entry here (lower directories never change): only a marker can matter.
        return Ok(if has_wh_file(stack, layer, held, key) { InLayer::Whiteout } else { InLayer::Absent });
    }
    match fs::stat_at(dir, cname) {
        Ok(st) if overlay::is_whiteout(&st) => Ok(InLayer::Whiteout),
        Ok(st) if st.is_dir() => {
            // O_DIRECTORY|O_NOFOLLOW: if it was swapped for a symlink meanwhile, fail.
            let fd = fs::open_at(dir, cname, libc::O_PATH | libc::O_DIRECTORY, 0)?;
            let st = fs::fstat(fd.as_fd())?;
            Ok(InLayer::Entry(st, Some(fd)))
        }
        Ok(st) => Ok(InLayer::Entry(st, None)),
        Err(Errno::ENOENT) => {
            if has_wh_file(stack, layer, held, key) { Ok(InLayer::Whiteout) } else { Ok(InLayer::Absent) }
        }
        Err(e) => Err(e),
    }
}

/// The merged root of the layers from `from` down: their roots, top first, ending at
/// the first opaque one. Empty when there are none.
pub fn root_dirs(stack: &LayerStack, from: LayerIdx) -> SysResult<Vec<DirLayer>> {
    let mut dirs = Vec::new();
    for (i, l) in stack.layers.iter().enumerate().skip(from as usize) {
        let fd = Held::new(fs::open_at(l.root.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)?);
        let opaque = is_opaque(stack, i as LayerIdx, fd.as_fd());
        dirs.push((i as LayerIdx, fd));
        if opaque {
            break;
        }
    }
    Ok(dirs)
}

/// Resolve `name` in the merged directory made of `dirs` (top first). A directory
/// found also collects the directories merged below it (`redirect::collect_below`:
/// by name, or where a redirect points).
pub fn resolve(stack: &LayerStack, dirs: &[DirLayer], cname: &CStr, name: &OsStr) -> SysResult<Resolved> {
    let key = Key::new(cname, name);
    for (i, (layer, dfd)) in dirs.iter().enumerate() {
        match probe(stack, *layer, dfd, &key)? {
            InLayer::Absent => continue,
            InLayer::Whiteout => return Ok(Resolved::Deleted(*layer)),
            InLayer::Entry(st, fd) => {
                let mut merged = Vec::new();
                if let Some(fd) = fd {
                    merged.push((*layer, Held::new(fd)));
                    super::redirect::collect_below(stack, &dirs[i + 1..], dfd, &key, &mut merged)?;
                }
                return Ok(Resolved::Found(Found { layer: *layer, dir: dfd.clone(), st, dirs: merged }));
            }
        }
    }
    Ok(Resolved::Missing)
}

/// Is there a visible entry `name` in the layers of `dirs` below the upper layer?
/// (Decides whether removing the upper entry needs a whiteout.)
pub fn lower_has(stack: &LayerStack, dirs: &[DirLayer], cname: &CStr, name: &OsStr) -> SysResult<bool> {
    let below: Vec<DirLayer> = dirs.iter().filter(|(l, _)| !stack.is_upper(*l)).cloned().collect();
    Ok(matches!(resolve(stack, &below, cname, name)?, Resolved::Found(_)))
}
