//! rename(2) on the merged view: plain, RENAME_NOREPLACE and RENAME_EXCHANGE.
//!
//! Both parents and the moving objects are copied up first. A moving directory
//! that lower layers contribute to must mean the same thing at its new place: its
//! upper copy gets a redirect xattr naming where the lower layers hold it
//! (`overlay` rule 8, as kernel overlayfs with `redirect_dir=on`: its old name when
//! it stays in its directory, else the absolute path of its origin in the layers
//! below the upper; an existing redirect is kept when it still holds), in constant
//! time. With `redirect_dir=off`, or where the xattr cannot be written, it is made
//! self-contained and opaque instead (`detach_dir`, a copy of the tree). A
//! directory without lower parts landing on a name lower layers have is made
//! opaque (a redirected one needs nothing: its lower layers are looked up at the
//! redirect, never at its new name). The source name gets a whiteout when a
//! lower layer still has it: atomically with RENAME_WHITEOUT (char 0/0 format), or
//! by writing `.wh.NAME` before the rename (`.wh.` format).

use super::UnionFs;
use super::inode::{Held, Node, ROOT_INO};
use super::resolve;
use crate::layers::{UPPER, clear_dir};
use crate::overlay::{self, Redirect, WhiteoutForm};
use crate::sys::fs;
use crate::sys::{Errno, SysResult, xattr};
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
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
        let same_dir = parent == newparent;
        let src_redirected = self.prepare_mover(src, same_dir)?;
        let dst_redirected = match (exchange, dst) {
            (true, Some(d)) => self.prepare_mover(d, same_dir)?,
            _ => false,
        };
        let pdir = self.upper_dir_of(&pnode)?;
        let npdir = self.upper_dir_of(&npnode)?;
        let cname = crate::sys::component(name)?;
        let cnew = crate::sys::component(newname)?;
        let upper = self.require_upper()?;

        if exchange {
            let d = dst.expect("checked");
            if !src_redirected {
                self.opaque_if_lower(src, &npnode, &cnew, newname)?;
            }
            if !dst_redirected {
                self.opaque_if_lower(d, &pnode, &cname, name)?;
            }
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
        if !src_redirected {
            self.opaque_if_lower(src, &npnode, &cnew, newname)?;
        }
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

    /// Copy up what is about to move (`same_dir`: within its directory). A directory
    /// with lower parts gets a redirect (returns true) or, failing that, is detached.
    fn prepare_mover(&self, node: &Arc<Node>, same_dir: bool) -> SysResult<bool> {
        self.copy_up(node)?;
        if !node.is_dir() {
            return Ok(false);
        }
        let top = self.upper_dir_of(node)?;
        let own = resolve::redirect_of(&self.stack, UPPER, top.as_fd());
        if !node.dirs().iter().any(|(l, _)| !self.stack.is_upper(*l)) {
            // Nothing below: a redirect it carries (pointing at nothing) must not
            // start meaning something at the new place.
            if own.is_some() {
                self.clear_redirect(&top)?;
            }
            return Ok(false);
        }
        if self.cfg.redirect_dir
            && let Some(r) = self.redirect_for(node, own, same_dir)?
            && let Some(value) = r.value()
        {
            let upper = self.require_upper()?;
            match xattr::set(xattr::Target::Fd(top.as_fd()), OsStr::new(upper.redirect_xattr), &value, 0) {
                Ok(()) => return Ok(true),
                Err(e) => log::debug!("rename: cannot write {} ({e}): copying the directory up", upper.redirect_xattr),
            }
        }
        self.detach_dir(node)?;
        Ok(false)
    }

    /// Where the layers below the upper hold directory `node` (copied up; `own`: the
    /// redirect its upper copy carries), as the redirect to write for a move
    /// (`same_dir`: within its directory). Kernel overlayfs's choice: an existing
    /// redirect is kept when it stays true (any, within the directory; an absolute
    /// one, anywhere); else its name within the directory, or the absolute path made
    /// of the upper redirects and names of it and its ancestors up to the root or an
    /// absolute redirect. `None` when no path can be made (a removed ancestor).
    fn redirect_for(&self, node: &Arc<Node>, own: Option<Redirect>, same_dir: bool) -> SysResult<Option<Redirect>> {
        match (&own, same_dir) {
            (Some(_), true) | (Some(Redirect::Path(_)), false) => return Ok(own),
            (None, true) => return Ok(Some(Redirect::Name(node.location().1.into_vec()))),
            _ => {}
        }
        let mut rev: Vec<Vec<u8>> = Vec::new();
        let mut cur = node.clone();
        let mut redirect = own;
        while cur.ino != ROOT_INO {
            let (parent, name) = cur.location();
            if parent == 0 {
                return Ok(None);
            }
            match redirect {
                Some(Redirect::Path(p)) => {
                    rev.extend(p.into_iter().rev());
                    break;
                }
                Some(Redirect::Name(n)) => rev.push(n),
                None => rev.push(name.into_vec()),
            }
            cur = self.node(parent)?;
            redirect = match cur.top_dir() {
                Some((l, d)) if self.stack.is_upper(l) && cur.ino != ROOT_INO => resolve::redirect_of(&self.stack, l, d.as_fd()),
                _ => None,
            };
        }
        rev.reverse();
        Ok(Some(Redirect::Path(rev)))
    }

    /// Remove the redirect xattrs of upper directory `dir` (those this mount can).
    fn clear_redirect(&self, dir: &Held) -> SysResult<()> {
        for x in overlay::REDIRECT_XATTRS {
            match xattr::remove(xattr::Target::Fd(dir.as_fd()), OsStr::new(x)) {
                Ok(()) | Err(Errno::ENODATA) => {}
                Err(Errno::EPERM | Errno::ENOTSUP) if x == overlay::REDIRECT_XATTR_TRUSTED => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
