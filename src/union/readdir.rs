//! Merged directory listings.
//!
//! A listing is built once per open directory handle (and again on rewind) from all
//! directories merged at that node, top first: each name appears once, from the
//! topmost layer that has it; whiteouts (char 0/0, `.wh.NAME`) hide the name in the
//! layers below and are never shown; `.wh.*` markers are never shown; `.` and `..`
//! come first. Offsets are indexes into this snapshot, so they stay valid across
//! calls whatever happens to the directory meanwhile. d_ino is computed exactly as
//! lookup computes st_ino.

use super::UnionFs;
use super::held::DirLayer;
use super::inode::ROOT_INO;
use crate::layers::{LayerIdx, LayerStack};
use crate::overlay::{self, Marker};
use crate::sys::dir::DirEnt;
use crate::sys::{SysResult, dir, fs};
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: OsString,
    pub ino: u64,
    /// `S_IFMT` bits of the entry's type.
    pub kind: u32,
}

fn dtype_to_kind(d: u8) -> Option<u32> {
    Some(match d {
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_REG => libc::S_IFREG,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_CHR => libc::S_IFCHR,
        libc::DT_BLK => libc::S_IFBLK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        _ => return None,
    })
}

impl UnionFs {
    /// The merged listing of directory `ino`, including `.` and `..`.
    pub fn list_dir(&self, ino: u64) -> SysResult<Vec<DirEntry>> {
        let node = self.node(ino)?;
        if !node.is_dir() {
            return Err(crate::sys::Errno::ENOTDIR);
        }
        let (dirs, parent) = node.listing_source();
        let mut out = vec![
            DirEntry { name: ".".into(), ino, kind: libc::S_IFDIR },
            DirEntry { name: "..".into(), ino: if parent == 0 { ROOT_INO } else { parent }, kind: libc::S_IFDIR },
        ];
        merge(&self.stack, &dirs, |layer, e, kind| {
            let dev = self.stack.layers[layer as usize].dev;
            let ino = self.nodes.ino_for_raw(layer, dev, e.ino, self.stack.is_upper(layer));
            out.push(DirEntry { name: e.name.clone(), ino, kind });
        })?;
        Ok(out)
    }

    /// Is the merged directory `ino` empty (whiteouts don't count)?
    pub(crate) fn dir_is_empty(&self, ino: u64) -> SysResult<bool> {
        Ok(self.list_dir(ino)?.len() <= 2)
    }
}

/// Merge the directories `dirs` (top first, as `resolve` found them) into what a
/// listing shows: `visit(layer, entry, kind)` is called once for each name shown, from
/// the topmost layer holding it, in layer order and then directory order. Whiteouts
/// hide the name in the layers below (a marker only there: `overlay` rule 2) and,
/// like every reserved name, are never visited. Lower directories learn their listing
/// on the way (name filter, marker knowledge), which spares later lookups probes.
pub(crate) fn merge(stack: &LayerStack, dirs: &[DirLayer], mut visit: impl FnMut(LayerIdx, &DirEnt, u32)) -> SysResult<()> {
    let mut seen: HashSet<OsString> = HashSet::new();
    let last = dirs.len().saturating_sub(1);
    for (i, (layer, dfd)) in dirs.iter().enumerate() {
        let entries = dir::read_all(dfd.as_fd())?;
        if !stack.is_upper(*layer) && !dfd.listed() {
            dfd.learn_listing(entries.iter().map(|e| e.name.as_bytes()), true);
        }
        let format = stack.layers[*layer as usize].format;
        // Whiteouts found in this layer apply to the layers below only.
        let mut hidden_here: Vec<OsString> = Vec::new();
        let mut markers = false;
        for e in entries {
            if let Some(m) = overlay::marker(e.name.as_bytes(), format) {
                markers = true;
                if let Marker::Whiteout(target) = m
                    && i != last
                {
                    hidden_here.push(OsStr::from_bytes(target).to_os_string());
                }
                continue;
            }
            if seen.contains(&e.name) {
                continue;
            }
            let mut kind = dtype_to_kind(e.dtype);
            if kind.is_none() || kind == Some(libc::S_IFCHR) {
                let Ok(c) = crate::sys::component(&e.name) else { continue };
                let Ok(st) = fs::stat_at(dfd.as_fd(), &c) else { continue };
                if overlay::is_whiteout(&st) {
                    seen.insert(e.name);
                    continue;
                }
                kind = Some(st.file_type());
            }
            visit(*layer, &e, kind.unwrap_or(libc::S_IFREG));
            seen.insert(e.name);
        }
        seen.extend(hidden_here);
        dfd.learn_markers(markers);
    }
    Ok(())
}
