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
//!    committed. `metacopy` changes what an entry means; neither the mount nor
//!    `inspect` follows it, and `inspect` refuses layers holding it. `redirect` is
//!    followed (rule 8).
//! 7. Only the value `y` makes a directory opaque (kernel ≥ 6.7 writes `x` on
//!    directories holding xattr whiteouts, which are not opaque; xattr whiteouts
//!    themselves are not supported).
//! 8. A directory carrying a redirect xattr (`trusted.overlay.redirect`, or
//!    `user.overlay.redirect` where the mount uses `user.*`; kernel overlayfs's
//!    `redirect_dir=on`) is looked up in the layers below it at the redirect's path
//!    instead of its own name: a bare name ([`Redirect::Name`], written by a rename
//!    within one directory) replaces the last component, an absolute path
//!    ([`Redirect::Path`], `/a/b`, written by a move across directories) is walked
//!    from each lower layer's root. A redirect met in a lower layer changes the path
//!    for the layers below that one. A value is untrusted: [`parse_redirect`] refuses
//!    anything but non-empty components that are names (no `.`, `..`, `/` in a name,
//!    NUL, reserved `.wh.` names, empty components) within [`REDIRECT_MAX`] bytes; a
//!    refused redirect is ignored (the directory merges by its own name).

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
/// The redirect xattr written as root (kernel overlayfs's `redirect_dir=on`).
pub const REDIRECT_XATTR_TRUSTED: &str = "trusted.overlay.redirect";
/// The redirect xattr written without privileges (overlayfs with `userxattr`).
pub const REDIRECT_XATTR_USER: &str = "user.overlay.redirect";
/// The redirect xattr names, in the order they are read (the first present wins).
pub const REDIRECT_XATTRS: [&str; 2] = [REDIRECT_XATTR_TRUSTED, REDIRECT_XATTR_USER];
/// Longest redirect value read or written (PATH_MAX, as the kernel's buffer).
pub const REDIRECT_MAX: usize = 4096;
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

/// True for the overlay-private xattrs that change what an entry means and that
/// neither the mount nor `inspect` follows (`metacopy`).
pub fn changes_meaning(name: &[u8]) -> bool {
    matches!(private_suffix(name), Some(b"metacopy"))
}

/// Where the layers below a redirected directory look for it (rule 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// A name in the same parent directory (a rename within one directory).
    Name(Vec<u8>),
    /// A path from the layer root, one name per component (a move elsewhere).
    Path(Vec<Vec<u8>>),
}

/// Is `c` a name a redirect may hold: non-empty, at most [`NAME_MAX`] bytes, no `/`
/// or NUL, not `.`/`..`, not a reserved `.wh.` name?
fn redirect_component_ok(c: &[u8]) -> bool {
    !c.is_empty()
        && c.len() <= NAME_MAX
        && c != b"."
        && c != b".."
        && !c.contains(&b'/')
        && !c.contains(&0)
        && !is_reserved_name(c)
}

/// Parse a redirect xattr value read from a layer (untrusted); `None` when it is not
/// a sane redirect (rule 8), which is then ignored.
pub fn parse_redirect(v: &[u8]) -> Option<Redirect> {
    if v.is_empty() || v.len() > REDIRECT_MAX || v.contains(&0) {
        return None;
    }
    match v.strip_prefix(b"/") {
        None => redirect_component_ok(v).then(|| Redirect::Name(v.to_vec())),
        Some(rest) => {
            let parts: Vec<Vec<u8>> = rest.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
            parts.iter().all(|c| redirect_component_ok(c)).then_some(Redirect::Path(parts))
        }
    }
}

impl Redirect {
    /// The xattr value, as kernel overlayfs writes it (no trailing NUL); `None` when
    /// it would not parse back (too long, a bad component).
    pub fn value(&self) -> Option<Vec<u8>> {
        let v = match self {
            Redirect::Name(n) => n.clone(),
            Redirect::Path(p) => {
                let mut v = Vec::new();
                for c in p {
                    v.push(b'/');
                    v.extend_from_slice(c);
                }
                v
            }
        };
        (parse_redirect(&v).as_ref() == Some(self)).then_some(v)
    }
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
        assert!(!changes_meaning(b"trusted.overlay.redirect") && changes_meaning(b"user.overlay.metacopy"));
        assert!(!changes_meaning(b"trusted.overlay.opaque"));
        assert!(is_opaque_xattr(b"user.overlay.opaque") && !is_opaque_xattr(b"user.overlay.origin"));
        assert!(is_opaque_value(b"y") && !is_opaque_value(b"x"));
        assert!(is_whiteout_dev(libc::S_IFCHR | 0o600, 0) && !is_whiteout_dev(libc::S_IFCHR, 0x103));
    }

    #[test]
    fn redirects() {
        assert_eq!(parse_redirect(b"a"), Some(Redirect::Name(b"a".to_vec())));
        assert_eq!(parse_redirect(b"/a/b"), Some(Redirect::Path(vec![b"a".to_vec(), b"b".to_vec()])));
        for bad in [&b""[..], b"/", b"//a", b"/a/", b"/a//b", b"..", b".", b"/a/../b", b"/./a", b"a/b", b"a\0b", b".wh.x", b"/.wh..wh..opq"] {
            assert_eq!(parse_redirect(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_redirect(b"a\0"), None);
        assert_eq!(parse_redirect(&[b'n'; NAME_MAX + 1]), None);
        let long: Vec<u8> = std::iter::repeat_n(&b"/abcdefg"[..], REDIRECT_MAX / 8 + 1).flatten().copied().collect();
        assert_eq!(parse_redirect(&long), None);
        for r in [&b"x"[..], b"/a", b"/a/b/c"] {
            assert_eq!(parse_redirect(r).unwrap().value().unwrap(), r);
        }
        assert_eq!(Redirect::Path(vec![b"..".to_vec()]).value(), None);
        assert_eq!(Redirect::Path(vec![]).value(), None);
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
