//! The overlay rules: how a layer directory spells deletions and opacity, and which
//! names and xattrs belong to the machinery rather than to the content.
//!
//! This is the one home of these rules. `union` (what the mount serves), `inspect`
//! (`which`, `diff`, `commit`) and `store::unpack` apply them through this module and
//! spell none of them themselves. It is a leaf: it uses nothing of the crate but the
//! `sys` types `Stat` and `Errno`.
//!
//! ```text
//! layer/                          meaning                              read in
//!   etc/gone        char dev 0/0  whiteout: "gone" is deleted below    every layer
//!   etc/.wh.old     any entry     whiteout: "old" is deleted below     layers that read markers
//!   var/            xattr trusted.overlay.opaque=y (or user.…=y):
//!                                 opaque: nothing below var shows      every layer
//!   var/.wh..wh..opq              opaque marker: same                  layers that read markers
//!   .wh..wh.plnk    (AUFS)        bookkeeping: ignored                 -
//! ```
//!
//! Rules:
//! 1. A name is looked up top-down; the first layer holding an entry decides. A
//!    whiteout ends the search with "absent"; a non-directory hides everything below
//!    it; a directory merges with the directories of that name below it until a layer
//!    holds a non-directory or a whiteout there, or a directory is opaque.
//! 2. Whiteouts and opaque markers apply to the layers below only (OCI image-spec,
//!    layer.md, "Whiteouts": files present in the same layer as a whiteout are hidden
//!    only by whiteouts of later layers). So a directory `NAME` beside a `.wh.NAME` in
//!    the same layer stays and its namesakes below are deleted: it is opaque. (Kernel
//!    overlayfs knows no `.wh.` files, so the OCI rule decides.) A non-directory beside
//!    its own marker simply stays.
//! 3. Which layers read `.wh.` markers is what the layer's store declares
//!    ([`WhiteoutFormat`]): a layer declared `CharDevice` (Docker's overlay2, the layer
//!    cache unpacked as root) holds none, and a `.wh.` name there deletes nothing. A
//!    layer nobody vouches for (a `lowerdir=` or `--lower` directory, any upper layer)
//!    is `Either`. Char 0/0 whiteouts and opaque xattrs are read in every layer.
//! 4. Names starting with `.wh.` are never content, in any layer: never listed, never
//!    found by a lookup, never created by a user.
//! 5. A marker is the name plus 4 bytes, and a name has at most [`NAME_MAX`] bytes: a
//!    name longer than [`MARKABLE_NAME_MAX`] cannot have a marker (none is looked for,
//!    and a mount that writes markers reports that limit as its name length).
//! 6. Overlay-private xattrs (`trusted.overlay.*`, `user.overlay.*`: `opaque`,
//!    `redirect`, `metacopy`, `origin`, `impure`, `nlink`, `upper`, `uuid`, `protattr`,
//!    `whiteout`, `whiteouts`) are machinery: never shown, never copied up, never
//!    committed. `redirect` and `metacopy` change what an entry means; neither the mount
//!    nor `inspect` follows them, and `inspect` refuses layers holding them.
//! 7. Only the value `y` makes a directory opaque (kernel ≥ 6.7 writes `x` on
//!    directories holding xattr whiteouts, which are not opaque; xattr whiteouts
//!    themselves are not supported).

use crate::sys::Errno;
use crate::sys::fs::Stat;
use std::ffi::{CStr, CString};

/// Prefix of an OCI/AUFS whiteout marker: `.wh.NAME` deletes `NAME` below.
pub const WH_PREFIX: &[u8] = b".wh.";
/// The OCI/AUFS opaque-directory marker, inside the directory.
pub const OPAQUE_MARKER: &CStr = c".wh..wh..opq";
/// Prefix of AUFS bookkeeping names (`.wh..wh.plnk`, `.wh..wh.aufs`, …), the opaque
/// marker aside: they mean nothing to an overlay.
pub const AUFS_META_PREFIX: &[u8] = b".wh..wh.";
/// Longest file name Linux file systems accept.
pub const NAME_MAX: usize = 255;
/// Longest name that can have a `.wh.` marker.
pub const MARKABLE_NAME_MAX: usize = NAME_MAX - WH_PREFIX.len();

/// The opaque xattr written as root (kernel overlayfs' own).
pub const OPAQUE_XATTR_TRUSTED: &str = "trusted.overlay.opaque";
/// The opaque xattr written without privileges (overlayfs with `userxattr`).
pub const OPAQUE_XATTR_USER: &str = "user.overlay.opaque";
const PRIVATE_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// One way of spelling a whiteout and an opaque directory: what a mount writes into
/// its upper layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutForm {
    /// Character device 0/0; opaque = the opaque xattr (root, as kernel overlayfs).
    CharDev,
    /// Empty `.wh.NAME` files; opaque = `.wh..wh..opq` (rootless, as containers-storage).
    WhFile,
}

impl WhiteoutForm {
    /// The name used in `-o whiteout=` and in mount records.
    pub fn as_str(self) -> &'static str {
        match self {
            WhiteoutForm::CharDev => "chardev",
            WhiteoutForm::WhFile => "whfile",
        }
    }

    pub fn parse(s: &[u8]) -> Option<WhiteoutForm> {
        match s {
            b"chardev" => Some(WhiteoutForm::CharDev),
            b"whfile" => Some(WhiteoutForm::WhFile),
            _ => None,
        }
    }
}

/// The whiteout forms a layer directory may hold, as its store declares (rule 3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhiteoutFormat {
    /// Char 0/0 and opaque xattrs only (Docker overlay2, the layer cache as root).
    CharDevice,
    /// `.wh.NAME` and `.wh..wh..opq` (the layer cache unpacked without privileges).
    WhFiles,
    /// Either form (containers-storage, whose writer decides; any directory no store
    /// vouches for: `lowerdir=` layers, upper layers).
    #[default]
    Either,
}

impl WhiteoutFormat {
    /// Does this layer read `.wh.` markers?
    pub fn reads_markers(self) -> bool {
        self != WhiteoutFormat::CharDevice
    }
}

impl From<WhiteoutForm> for WhiteoutFormat {
    fn from(f: WhiteoutForm) -> WhiteoutFormat {
        match f {
            WhiteoutForm::CharDev => WhiteoutFormat::CharDevice,
            WhiteoutForm::WhFile => WhiteoutFormat::WhFiles,
        }
    }
}

/// Names reserved for markers (rule 4): never content.
pub fn is_reserved_name(name: &[u8]) -> bool {
    name.starts_with(WH_PREFIX)
}

/// What a reserved name means in a layer of a given format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker<'a> {
    /// `.wh.NAME`: `NAME` is deleted in the layers below.
    Whiteout(&'a [u8]),
    /// `.wh..wh..opq`: the directory holding it is opaque.
    Opaque,
    /// Means nothing here (AUFS bookkeeping, a malformed marker, or a layer that
    /// holds no markers); still never shown.
    Ignored,
}

/// The meaning of directory entry `name` in a layer of `format`; `None` for an
/// ordinary name (content).
pub fn marker(name: &[u8], format: WhiteoutFormat) -> Option<Marker<'_>> {
    let target = name.strip_prefix(WH_PREFIX)?;
    if !format.reads_markers() {
        return Some(Marker::Ignored);
    }
    if name == OPAQUE_MARKER.to_bytes() {
        return Some(Marker::Opaque);
    }
    if name.starts_with(AUFS_META_PREFIX) || matches!(target, b"" | b"." | b"..") || target.contains(&b'/') {
        return Some(Marker::Ignored);
    }
    Some(Marker::Whiteout(target))
}

/// `.wh.NAME` as a C string; `ENAMETOOLONG` when `name` cannot have a marker (rule 5).
pub fn whiteout_marker(name: &[u8]) -> Result<CString, Errno> {
    if name.len() > MARKABLE_NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    let mut b = Vec::with_capacity(WH_PREFIX.len() + name.len());
    b.extend_from_slice(WH_PREFIX);
    b.extend_from_slice(name);
    CString::new(b).map_err(|_| Errno::EINVAL)
}

/// The overlay form of a whiteout: a character device with device number 0/0.
pub fn is_whiteout_dev(mode: u32, rdev: u64) -> bool {
    mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0
}

/// [`is_whiteout_dev`] of a stat.
pub fn is_whiteout(st: &Stat) -> bool {
    is_whiteout_dev(st.mode(), st.rdev())
}

/// The xattr names that can make a directory opaque (rule 7 for the value).
pub const OPAQUE_XATTRS: [&str; 2] = [OPAQUE_XATTR_TRUSTED, OPAQUE_XATTR_USER];

/// Is `name` an opaque xattr?
pub fn is_opaque_xattr(name: &[u8]) -> bool {
    OPAQUE_XATTRS.iter().any(|x| x.as_bytes() == name)
}

/// Does an opaque xattr with this value make its directory opaque?
pub fn is_opaque_value(value: &[u8]) -> bool {
    value == b"y"
}

/// The part after `trusted.overlay.` / `user.overlay.`, for overlay-private xattrs.
fn private_suffix(name: &[u8]) -> Option<&[u8]> {
    PRIVATE_XATTR_PREFIXES.iter().find_map(|p| name.strip_prefix(*p))
}

/// True for xattrs that belong to the overlay machinery, not to content (rule 6).
pub fn is_private_xattr(name: &[u8]) -> bool {
    private_suffix(name).is_some()
}

/// True for the overlay-private xattrs that change what an entry means (`redirect`,
/// `metacopy`), which neither the mount nor `inspect` follows.
pub fn changes_meaning(name: &[u8]) -> bool {
    matches!(private_suffix(name), Some(b"redirect" | b"metacopy"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use WhiteoutFormat::*;

    #[test]
    fn markers_by_format() {
        assert_eq!(marker(b"etc", Either), None);
        assert_eq!(marker(b".whx", Either), None);
        assert_eq!(marker(b".wh.old", Either), Some(Marker::Whiteout(b"old")));
        assert_eq!(marker(b".wh.old", WhFiles), Some(Marker::Whiteout(b"old")));
        assert_eq!(marker(b".wh..wh..opq", WhFiles), Some(Marker::Opaque));
        assert_eq!(marker(b".wh..wh.plnk", Either), Some(Marker::Ignored));
        assert_eq!(marker(b".wh.", Either), Some(Marker::Ignored));
        assert_eq!(marker(b".wh..", Either), Some(Marker::Ignored));
        // A layer declared to hold none: the name means nothing, yet is reserved.
        assert_eq!(marker(b".wh.old", CharDevice), Some(Marker::Ignored));
        assert_eq!(marker(b".wh..wh..opq", CharDevice), Some(Marker::Ignored));
        assert!(is_reserved_name(b".wh.x") && !is_reserved_name(b"x.wh."));
    }

    #[test]
    fn marker_names_respect_name_max() {
        assert_eq!(whiteout_marker(b"a").unwrap().as_bytes(), b".wh.a");
        assert_eq!(whiteout_marker(&[b'n'; MARKABLE_NAME_MAX]).unwrap().as_bytes().len(), NAME_MAX);
        assert_eq!(whiteout_marker(&[b'n'; MARKABLE_NAME_MAX + 1]), Err(Errno::ENAMETOOLONG));
    }

    #[test]
    fn xattrs() {
        assert!(is_private_xattr(b"trusted.overlay.opaque") && is_private_xattr(b"user.overlay.origin"));
        assert!(!is_private_xattr(b"trusted.overlayx") && !is_private_xattr(b"user.mime"));
        assert!(changes_meaning(b"trusted.overlay.redirect") && changes_meaning(b"user.overlay.metacopy"));
        assert!(!changes_meaning(b"trusted.overlay.opaque"));
        assert!(is_opaque_xattr(b"user.overlay.opaque") && !is_opaque_xattr(b"user.overlay.origin"));
        assert!(is_opaque_value(b"y") && !is_opaque_value(b"x"));
        assert!(is_whiteout_dev(libc::S_IFCHR | 0o600, 0) && !is_whiteout_dev(libc::S_IFCHR, 0x103));
    }

    #[test]
    fn formats() {
        assert_eq!(WhiteoutFormat::default(), Either);
        assert!(!CharDevice.reads_markers() && WhFiles.reads_markers() && Either.reads_markers());
        assert_eq!(WhiteoutFormat::from(WhiteoutForm::WhFile), WhFiles);
        assert_eq!(serde_json::to_string(&CharDevice).unwrap(), "\"char-device\"");
        for f in [WhiteoutForm::CharDev, WhiteoutForm::WhFile] {
            assert_eq!(WhiteoutForm::parse(f.as_str().as_bytes()), Some(f));
        }
    }
}
