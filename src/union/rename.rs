//! rename(2) on the merged view: plain, RENAME_NOREPLACE and RENAME_EXCHANGE.
//!
//! Both parents and the moving objects are copied up first; a moving directory is
//! made self-contained and opaque (`detach_dir`) if lower layers contribute to it,
//! so it means the same thing at its new place. An upper-only directory landing on
//! a name lower layers have is made opaque. The source name gets a whiteout when a
//! lower layer still has it: atomically with RENAME_WHITEOUT (char 0/0 format), or
//! by writing `.wh.NAME` before the rename (`.wh.` format).

use super::UnionFs;
use super::inode::Node;
use super::resolve;
use crate::layers::{UPPER, clear_dir};
use crate::overlay::{self, WhiteoutForm};
use crate::sys::fs;
use crate::sys::{Errno, SysResult};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

impl UnionFs {
    pub fn rename(&self, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr, flags: u32) -> SysResult<()> {
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(Errno::EINVAL);
        }
        if flags & libc::RENAME_NOREPLACE != 0 && flags & libc::RENAME_EXCHANGE != 0 {
            return Err(Errno::EINVAL);
        }
        if overlay::is_reserved_name(newname.as_bytes()) {
            return Err(Errno::EINVAL);
        }
        self.require_upper()?;
        crate::sys::component(newname)?;
        let src = self.lookup_node(parent, name)?;
        let dst = match self.lookup_node(newparent, newname) {
            Ok(n) => Some(n),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(e),
        };
        self.rename_nodes(parent, name, newparent, newname, flags, &src, dst.as_deref())
    }

    #[allow(clippy::too_many_arguments)]
    fn rename_nodes(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        src: &Arc<Node>,
        dst: Option<&Arc<Node>>,
    ) -> SysResult<()> {
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if let Some(d) = dst {
            if d.ino == src.ino {
                return Ok(()); // two names of one object: nothing to do
            }
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(Errno::EEXIST);
            }
            if !exchange {
                if src.is_dir() && !d.is_dir() {
                    return Err(Errno::ENOTDIR);
                }
                if !src.is_dir() && d.is_dir() {
                    return Err(Errno::EISDIR);
                }
                if d.is_dir() && !self.dir_is_empty(d.ino)? {
                    return Err(Errno::ENOTEMPTY);
                }
            }
        } else if exchange {
            return Err(Errno::ENOENT);
        }
        let pnode = self.node(parent)?;
        let npnode = self.node(newparent)?;
        self.copy_up(&pnode)?;
        self.copy_up(&npnode)?;
        self.prepare_mover(src)?;
        if exchange {
            self.prepare_mover(dst.expect("checked"))?;
        }
        let pdir = self.upper_dir_of(&pnode)?;
        let npdir = self.upper_dir_of(&npnode)?;
        let cname = crate::sys::component(name)?;
        let cnew = crate::sys::component(newname)?;
        let upper = self.require_upper()?;

        if exchange {
            let d = dst.expect("checked");
            self.opaque_if_lower(src, &npnode, &cnew, newname)?;
            self.opaque_if_lower(d, &pnode, &cname, name)?;
            fs::rename_at(pdir.as_fd(), &cname, npdir.as_fd(), &cnew, libc::RENAME_EXCHANGE)?;
            self.invalidate(parent, name);
            self.invalidate(newparent, newname);
            self.nodes.relocate(src, newparent, newname.to_os_string(), UPPER, npdir.clone());
            self.nodes.relocate(d, parent, name.to_os_string(), UPPER, pdir.clone());
            return Ok(());
        }

        // The target slot in upper: an entry to replace, a whiteout, or nothing.
        let mut drop_wh_file = false;
        let mut replaced = None;
        match fs::stat_at(npdir.as_fd(), &cnew) {
            Ok(st) if overlay::is_whiteout(&st) => {
                if src.is_dir() {
                    fs::unlink_at(npdir.as_fd(), &cnew, false)?;
                }
            }
            Ok(st) => {
                if st.is_dir() {
                    // Merged-empty, so it holds only whiteouts: clear them.
                    let d = fs::open_at(npdir.as_fd(), &cnew, libc::O_PATH | libc::O_DIRECTORY, 0)?;
                    clear_dir(d.as_fd())?;
                }
                replaced = Some(st);
            }
            Err(Errno::ENOENT) => drop_wh_file = resolve::wh_marker_exists(npdir.as_fd(), newname),
            Err(e) => return Err(e),
        }
        self.opaque_if_lower(src, &npnode, &cnew, newname)?;
        let need_wh = resolve::lower_has(&self.stack, &pnode.dirs(), &cname, name)?;
        let mut rflags = 0;
        if need_wh {
            match upper.whiteout {
                WhiteoutForm::CharDev => rflags |= libc::RENAME_WHITEOUT,
                WhiteoutForm::WhFile => self.make_wh_file(&pdir, name)?,
            }
        }
        let pin = dst.filter(|d| !d.is_dir()).and_then(|d| d.top().ok()).map(|(_, fd)| fd);
        fs::rename_at(pdir.as_fd(), &cname, npdir.as_fd(), &cnew, rflags)?;
        if drop_wh_file {
            let _ = fs::unlink_at(npdir.as_fd(), &overlay::whiteout_marker(newname.as_bytes())?, false);
        }
        if let Some(st) = replaced
            && (st.is_dir() || st.nlink() <= 1) {
                self.nodes.drop_origin(st.ino());
            }
        self.invalidate(parent, name);
        self.invalidate(newparent, newname);
        if let Some(d) = dst
            && d.is_at(newparent, newname) {
                self.nodes.detach(d, pin);
            }
        self.nodes.relocate(src, newparent, newname.to_os_string(), UPPER, npdir.clone());
        Ok(())
    }

    /// Copy up what is about to move; a directory with lower parts is detached.
    fn prepare_mover(&self, node: &Arc<Node>) -> SysResult<()> {
        if node.is_dir() { self.detach_dir(node) } else { self.copy_up(node) }
    }

    /// A directory arriving at `newparent/newname` must not merge with lower
    /// directories of that name: make it opaque if any exist.
    fn opaque_if_lower(&self, node: &Arc<Node>, newparent: &Arc<Node>, cnew: &std::ffi::CStr, newname: &OsStr) -> SysResult<()> {
        if !node.is_dir() {
            return Ok(());
        }
        if resolve::lower_has(&self.stack, &newparent.dirs(), cnew, newname)? {
            let top = self.upper_dir_of(node)?;
            self.set_opaque(&top)?;
        }
        Ok(())
    }
}
