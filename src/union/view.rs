//! A read-only view of layer directories for `inspect`: the lookup (`resolve`) and
//! the merged listing (`readdir::merge`) the mount serves, without nodes, inode
//! numbers or anything to write. `which`, `diff` and `commit` read layers through it,
//! so they apply the overlay rules exactly as a mount of the same layers does and
//! cannot disagree with the mounted tree.
//!
//! Layers are given top first, each with the whiteout forms its store declared
//! (`overlay` rule 3); an index is a position in that list (inspecting a mount: its
//! upper directory first, then its lowers). The view holds one `O_PATH` fd per layer
//! root; everything else is opened one component at a time beneath those, never
//! following a symlink. Nothing is ever changed.

use super::held::{DirLayer, Held};
use super::readdir;
use super::resolve::{self, Key, Resolved};
use crate::layers::{LayerIdx, LayerStack, StackError, StackSpec};
use crate::overlay::{self, Marker, WhiteoutFormat};
use crate::sys::fs::{self, Stat};
use crate::sys::{Errno, SysResult, dir};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use super::resolve::Found;

/// A stack of layer directories read as a mount reads them.
pub struct StackView {
    stack: LayerStack,
}

/// What one entry of one layer directory is, that layer's markers applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// A whiteout: the name is deleted in the layers below.
    Whiteout,
    /// A directory; `opaque`: it hides its namesakes below (`overlay` rules 2, 7).
    Dir { opaque: bool },
    /// Anything else.
    NonDir,
}

/// One entry of one layer directory.
pub struct LayerEntry {
    /// The name in the merged tree (for a `.wh.NAME` marker: `NAME`).
    pub name: OsString,
    /// The entry's stat (for a `.wh.NAME` marker: the marker's).
    pub st: Stat,
    pub what: What,
}

/// One name a merged directory shows.
pub struct Listed {
    pub name: OsString,
    /// The layer providing it.
    pub layer: LayerIdx,
    /// `S_IFMT` bits of its type.
    pub kind: u32,
}

impl StackView {
    /// Open layer directories (top first) with their declared whiteout formats.
    pub fn open(layers: &[(PathBuf, WhiteoutFormat)]) -> Result<StackView, StackError> {
        let spec = StackSpec {
            lowers: layers.iter().map(|l| l.0.clone()).collect(),
            lower_formats: layers.iter().map(|l| l.1).collect(),
            ..Default::default()
        };
        Ok(StackView { stack: LayerStack::open(&spec)? })
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.stack.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stack.layers.is_empty()
    }

    /// The directory layer `layer` was opened from.
    pub fn path(&self, layer: LayerIdx) -> &Path {
        &self.stack.layers[layer as usize].path
    }

    /// The root directory of layer `layer`.
    pub fn root(&self, layer: LayerIdx) -> SysResult<Arc<Held>> {
        let root = self.stack.layers.get(layer as usize).ok_or(Errno::EINVAL)?;
        Ok(Held::new(fs::open_at(root.root.as_fd(), c".", libc::O_PATH | libc::O_DIRECTORY, 0)?))
    }

    /// The merged root of the layers from `from` down, as a mount of them merges it:
    /// top first, ending at the first opaque root. Empty when there are none.
    pub fn merged_root(&self, from: LayerIdx) -> SysResult<Vec<DirLayer>> {
        resolve::root_dirs(&self.stack, from)
    }

    /// Layer `layer`'s root alone (to ask what that one layer holds). A directory a
    /// lookup finds in it may come with the directories a redirect points to in the
    /// layers below (`Found::dirs`): its first one is that layer's alone.
    pub fn layer_root(&self, layer: LayerIdx) -> SysResult<Vec<DirLayer>> {
        Ok(vec![(layer, self.root(layer)?)])
    }

    /// Is directory `dir` of layer `layer` opaque (a layer root, say)?
    pub fn is_opaque(&self, layer: LayerIdx, dir: &Held) -> bool {
        resolve::is_opaque(&self.stack, layer, dir.as_fd())
    }

    /// The redirect directory `dir` of layer `layer` carries (`overlay` rule 8): its
    /// contents below are elsewhere, which only a lookup through the merged parent
    /// (`lookup`) finds.
    pub fn redirect_of(&self, layer: LayerIdx, dir: &Held) -> Option<overlay::Redirect> {
        resolve::redirect_of(&self.stack, layer, dir.as_fd())
    }

    /// Look `name` up in the merged directory made of `dirs`: the mount's lookup.
    pub fn lookup(&self, dirs: &[DirLayer], name: &OsStr) -> SysResult<Resolved> {
        let cname = crate::sys::component(name)?;
        resolve::resolve(&self.stack, dirs, &cname, name)
    }

    /// The names the merged directory made of `dirs` shows (the mount's listing,
    /// without `.` and `..`), sorted by bytes.
    pub fn list(&self, dirs: &[DirLayer]) -> SysResult<Vec<Listed>> {
        let mut out = Vec::new();
        readdir::merge(&self.stack, dirs, |layer, e, kind| out.push(Listed { name: e.name.clone(), layer, kind }))?;
        out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(out)
    }

    /// Open child directory `name` of `dir` (never through a symlink).
    pub fn open_dir(&self, dir: &Held, name: &OsStr) -> SysResult<Arc<Held>> {
        let cname = crate::sys::component(name)?;
        Ok(Held::new(fs::open_at(dir.as_fd(), &cname, libc::O_PATH | libc::O_DIRECTORY, 0)?))
    }

    /// The entries of directory `dir` of layer `layer` alone, with that layer's
    /// markers applied as the mount applies them, sorted by name bytes: a whiteout
    /// (char 0/0, or `.wh.NAME` where the layer reads markers) is an entry of its
    /// target's name, unless the layer also holds that name (which then stays:
    /// `overlay` rule 2); other reserved names are left out.
    pub fn layer_entries(&self, layer: LayerIdx, dir: &Held) -> SysResult<Vec<LayerEntry>> {
        let format = self.stack.layers.get(layer as usize).ok_or(Errno::EINVAL)?.format;
        let names: Vec<OsString> = dir::read_all(dir.as_fd())?.into_iter().map(|e| e.name).collect();
        let present: HashSet<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        let mut out = Vec::with_capacity(names.len());
        for name in &names {
            let cname = crate::sys::component(name)?;
            let target = match overlay::marker(name.as_bytes(), format) {
                None => None,
                Some(Marker::Whiteout(t)) if !present.contains(t) => Some(t),
                Some(_) => continue,
            };
            let st = match fs::stat_at(dir.as_fd(), &cname) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue, // removed meanwhile
                Err(e) => return Err(e),
            };
            if let Some(t) = target {
                out.push(LayerEntry { name: OsStr::from_bytes(t).to_os_string(), st, what: What::Whiteout });
                continue;
            }
            let what = if overlay::is_whiteout(&st) {
                What::Whiteout
            } else if st.is_dir() {
                let child = fs::open_at(dir.as_fd(), &cname, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                What::Dir { opaque: resolve::hides_below(&self.stack, layer, dir, child.as_fd(), &Key::new(&cname, name)) }
            } else {
                What::NonDir
            };
            out.push(LayerEntry { name: name.clone(), st, what });
        }
        out.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(out)
    }
}
