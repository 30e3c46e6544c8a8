//! The directories merged below a directory a lookup found: by its name in the
//! parent's directories of the lower layers, or where a redirect points (`overlay`
//! rule 8, kernel overlayfs's `redirect_dir=on`).
//!
//! ```text
//! upper/b        xattr redirect "a"      lower layers: the parent's "a", not "b"
//! upper/n/c      xattr redirect "/x/c"   lower layers: walk /x/c from each root
//! ```
//!
//! Invariants:
//! - Every redirect value went through `overlay::parse_redirect`: components are plain
//!   names, so a walk is a series of `probe`s, one component at a time, each an
//!   `O_PATH|O_NOFOLLOW` open beneath a layer directory fd: a redirect can only name
//!   directories inside the layers below the one that holds it, never leave a layer.
//! - A redirect only changes where the layers *below* the one holding it look: the
//!   layer index only grows, so a walk ends after at most one pass over the layers,
//!   and a rewritten path stays within `overlay::REDIRECT_MAX` bytes (else the walk
//!   ends there), so a hostile stack costs at most layers x components probes.
//! - Stops as the kernel does: a whiteout or non-directory on the way ends the
//!   search; an opaque directory (or one beside its own `.wh.` marker) ends it after
//!   its own layer; a layer without the path is skipped.

use super::held::{DirLayer, Held};
use super::resolve::{self, InLayer, Key};
use crate::layers::{LayerIdx, LayerStack};
use crate::overlay::{self, Redirect};
use crate::sys::fs;
use crate::sys::{Errno, SysResult};
use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

/// What to do after a directory was found in a layer.
enum Next {
    /// Nothing below shows (opaque, or its `.wh.` marker beside it).
    Stop,
    /// Look for the same thing in the layers below.
    Same,
    /// Look where this redirect says.
    Follow(Redirect),
}

/// Directory `dir` was found as `key` in `parent` of `layer`: what the layers below do.
fn next(stack: &LayerStack, layer: LayerIdx, parent: &Held, dir: &Held, key: &Key<'_>) -> Next {
    if layer as usize + 1 >= stack.layers.len() {
        return Next::Stop; // nothing below: spare the xattr reads
    }
    if resolve::has_wh_file(stack, layer, parent, key) {
        return Next::Stop;
    }
    let m = resolve::dir_marks(stack, layer, dir.as_fd());
    match (m.opaque, m.redirect) {
        (true, _) => Next::Stop,
        (false, None) => Next::Same,
        (false, Some(r)) => Next::Follow(r),
    }
}

/// `out` holds the directory found as `key` in `parent` (its first entry); append
/// the directories merged below it, top first. `below`: the parent's directories in
/// the layers below the one where it was found.
pub(super) fn collect_below(
    stack: &LayerStack,
    below: &[DirLayer],
    parent: &Held,
    key: &Key<'_>,
    out: &mut Vec<DirLayer>,
) -> SysResult<()> {
    let Some((layer, top)) = out.first().cloned() else { return Ok(()) };
    let mut step = match next(stack, layer, parent, &top, key) {
        Next::Stop => return Ok(()),
        Next::Same => by_name(stack, below, layer, key, out)?,
        Next::Follow(r) => Some((layer, r)),
    };
    // Each round moves to a lower layer: at most one pass over the layers.
    while let Some((layer, r)) = step.take() {
        step = match r {
            Redirect::Name(n) => {
                let c = CString::new(n.clone()).map_err(|_| Errno::EINVAL)?;
                by_name(stack, below, layer, &Key::new(&c, OsStr::from_bytes(&n)), out)?
            }
            Redirect::Path(p) => {
                from_root(stack, layer, p, out)?;
                None
            }
        };
    }
    Ok(())
}

/// Look `key` up in the parent's directories `below` of the layers under `after`;
/// returns the layer and redirect to follow when a directory found has one.
fn by_name(
    stack: &LayerStack,
    below: &[DirLayer],
    after: LayerIdx,
    key: &Key<'_>,
    out: &mut Vec<DirLayer>,
) -> SysResult<Option<(LayerIdx, Redirect)>> {
    for (layer, dfd) in below.iter().filter(|(l, _)| *l > after) {
        match resolve::probe(stack, *layer, dfd, key)? {
            InLayer::Absent => continue,
            InLayer::Whiteout | InLayer::Entry(_, None) => return Ok(None),
            InLayer::Entry(_, Some(fd)) => {
                let fd = Held::new(fd);
                out.push((*layer, fd.clone()));
                match next(stack, *layer, dfd, &fd, key) {
                    Next::Stop => return Ok(None),
                    Next::Same => continue,
                    Next::Follow(r) => return Ok(Some((*layer, r))),
                }
            }
        }
    }
    Ok(None)
}

/// Bytes of `path` written as `/a/b`.
fn path_len(path: &[Vec<u8>]) -> usize {
    path.iter().map(|c| c.len() + 1).sum()
}

/// Walk `path` from the root of every layer under `after`, appending the directory
/// found at its end in each; redirects met on the way rewrite the path for the
/// layers below (as the kernel does: the rest of the walk in that layer goes on).
fn from_root(stack: &LayerStack, after: LayerIdx, mut path: Vec<Vec<u8>>, out: &mut Vec<DirLayer>) -> SysResult<()> {
    for l in (after as usize + 1)..stack.layers.len() {
        let layer = l as LayerIdx;
        let mut dir: Arc<Held> = Held::new(fs::open_at(stack.layers[l].root.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)?);
        let mut pending = path.clone();
        let mut stop = false;
        let mut found = None;
        for (k, comp) in path.iter().enumerate() {
            let c = CString::new(comp.clone()).map_err(|_| Errno::EINVAL)?;
            let key = Key::new(&c, OsStr::from_bytes(comp));
            let fd = match resolve::probe(stack, layer, &dir, &key)? {
                InLayer::Absent => break,
                InLayer::Whiteout | InLayer::Entry(_, None) => return Ok(()),
                InLayer::Entry(_, Some(fd)) => Held::new(fd),
            };
            match next(stack, layer, &dir, &fd, &key) {
                Next::Stop => stop = true,
                Next::Same => {}
                Next::Follow(r) => {
                    // The component's place in the (maybe already rewritten) path.
                    let at = pending.len() - (path.len() - k);
                    let rest = pending.split_off(at + 1);
                    pending = match r {
                        Redirect::Name(n) => {
                            pending[at] = n;
                            pending
                        }
                        Redirect::Path(p) => p,
                    };
                    pending.extend(rest);
                    if path_len(&pending) > overlay::REDIRECT_MAX {
                        stop = true;
                    }
                }
            }
            if k + 1 == path.len() {
                found = Some(fd);
            } else {
                dir = fd;
            }
        }
        if let Some(fd) = found {
            out.push((layer, fd));
        }
        if stop {
            return Ok(());
        }
        path = pending;
    }
    Ok(())
}
