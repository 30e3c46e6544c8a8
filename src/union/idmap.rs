//! Id mapping between the ids stored in the layers ("on disk") and the ids the mount
//! shows the kernel ("presented"): the `uidmapping=`, `gidmapping=`, `squash_to_root`,
//! `squash_to_uid=` and `squash_to_gid=` options of fuse-overlayfs. Pure: no I/O but
//! [`Overflow::read`], which reads the kernel's overflow ids once at mount.
//!
//! A mapping is a list of `ONDISK:PRESENTED:LEN` triples, written one after another with
//! `:` between all numbers (`0:1:1001:1001:0:1`); one leading `:` is accepted because
//! containers/storage writes one. Triple `a:b:n` shows on-disk ids `a..a+n` as `b..b+n`.
//!
//! Invariants (checked by [`IdMap::parse`], so every `IdMap` holds them):
//! - at most [`MAX_RANGES`] ranges, none empty;
//! - no range reaches id 4294967295 (`(uid_t)-1`, "no change" to chown) on either side;
//! - ranges overlap neither on disk nor as presented, so the map is a bijection between
//!   its two domains and the two directions are exact inverses;
//! - an empty map is the identity (no option given, or an empty value).
//!
//! Reading (stat, ACL entries): `squash_to_uid`/`squash_to_gid` win over `squash_to_root`,
//! which wins over the map; an on-disk id outside every range shows as the overflow id
//! (`/proc/sys/kernel/overflowuid`, `overflowgid`), as the kernel shows an id its user
//! namespace cannot name. Squashing concerns owners only: ACL entries are mapped.
//!
//! Writing (owners of new objects, chown, ACL entries): the map applies backwards, squash
//! never does. A presented id outside every range has no on-disk id: the caller refuses
//! the write (fuse-overlayfs writes the overflow id instead; we do not invent an owner).

use crate::sys::fs::Stat;
use std::fmt;

/// The kernel's limit on the extents of a user namespace id map; we take the same bound.
pub const MAX_RANGES: usize = 340;

/// The id chown(2) reads as "leave unchanged": never a real owner.
const NO_ID: u32 = u32::MAX;

/// Overflow ids when /proc/sys/kernel cannot tell (the kernel's default).
const DEFAULT_OVERFLOW: u32 = 65534;

/// On-disk ids `ondisk..ondisk+len` are presented as `presented..presented+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub ondisk: u32,
    pub presented: u32,
    pub len: u32,
}

impl IdRange {
    fn shown(&self, id: u32) -> Option<u32> {
        id.checked_sub(self.ondisk).filter(|d| *d < self.len).map(|d| self.presented + d)
    }

    fn stored(&self, id: u32) -> Option<u32> {
        id.checked_sub(self.presented).filter(|d| *d < self.len).map(|d| self.ondisk + d)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.ondisk, self.presented, self.len)
    }
}

/// Why an id option was refused. Rendered with the option's name by [`IdOptionError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMapError {
    /// The numbers do not form whole triples.
    NotTriples { numbers: usize },
    /// A field is empty or not a decimal number below 4294967295.
    BadNumber { field: String },
    /// A range of length 0.
    Empty { range: IdRange },
    /// A range that reaches id 4294967295 or beyond.
    TooHigh { range: IdRange },
    /// Two ranges share ids on disk, or as presented.
    Overlap { a: IdRange, b: IdRange, side: &'static str },
    TooMany { ranges: usize },
}

/// An id option the parser refused: one line naming the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdOptionError {
    pub option: &'static str,
    pub error: IdMapError,
}

impl fmt::Display for IdOptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.option;
        match &self.error {
            IdMapError::NotTriples { numbers } => write!(
                f,
                "option {o}: expected ONDISK:PRESENTED:LEN triples separated by ':', got {numbers} number{}",
                if *numbers == 1 { "" } else { "s" }
            ),
            IdMapError::BadNumber { field } => {
                // Bounded: the value is the user's own option, but a typo may be long.
                let shown: String = field.chars().take(24).collect();
                let more = if shown.len() < field.len() { "…" } else { "" };
                write!(f, "option {o}: {shown:?}{more} is not an id (a decimal number below 4294967295)")
            }
            IdMapError::Empty { range } => write!(f, "option {o}: range {range} is empty (LEN must be at least 1)"),
            IdMapError::TooHigh { range } => write!(f, "option {o}: range {range} goes past the highest id 4294967294"),
            IdMapError::Overlap { a, b, side } => write!(f, "option {o}: ranges {a} and {b} overlap {side}"),
            IdMapError::TooMany { ranges } => write!(f, "option {o}: {ranges} ranges, at most {MAX_RANGES} are allowed"),
        }
    }
}

impl std::error::Error for IdOptionError {}

/// A decimal id: ASCII digits only (no sign, no spaces), below 4294967295.
pub fn parse_id(option: &'static str, field: &str) -> Result<u32, IdOptionError> {
    let bad = || IdOptionError { option, error: IdMapError::BadNumber { field: field.to_string() } };
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    field.parse::<u32>().ok().filter(|id| *id != NO_ID).ok_or_else(bad)
}

/// One direction-agnostic id map (uids or gids). Empty: the identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

impl IdMap {
    /// Parse the value of `option` (`uidmapping` or `gidmapping`).
    pub fn parse(option: &'static str, value: &str) -> Result<IdMap, IdOptionError> {
        let err = |error| IdOptionError { option, error };
        let body = value.strip_prefix(':').unwrap_or(value);
        if body.is_empty() {
            return Ok(IdMap::default());
        }
        let fields: Vec<&str> = body.split(':').collect();
        if !fields.len().is_multiple_of(3) {
            // A bad field is the more useful message when there is one.
            if let Some(f) = fields.iter().find(|f| parse_id(option, f).is_err()) {
                return Err(err(IdMapError::BadNumber { field: f.to_string() }));
            }
            return Err(err(IdMapError::NotTriples { numbers: fields.len() }));
        }
        if fields.len() / 3 > MAX_RANGES {
            return Err(err(IdMapError::TooMany { ranges: fields.len() / 3 }));
        }
        let mut ranges = Vec::with_capacity(fields.len() / 3);
        for t in fields.chunks_exact(3) {
            let range = IdRange { ondisk: parse_id(option, t[0])?, presented: parse_id(option, t[1])?, len: parse_id(option, t[2])? };
            if range.len == 0 {
                return Err(err(IdMapError::Empty { range }));
            }
            let end = |first: u32| u64::from(first) + u64::from(range.len);
            if end(range.ondisk) > u64::from(NO_ID) || end(range.presented) > u64::from(NO_ID) {
                return Err(err(IdMapError::TooHigh { range }));
            }
            ranges.push(range);
        }
        for (side, key) in [("on disk", (|r: &IdRange| r.ondisk) as fn(&IdRange) -> u32), ("as presented", |r: &IdRange| r.presented)] {
            let mut sorted = ranges.clone();
            sorted.sort_by_key(key);
            for w in sorted.windows(2) {
                if u64::from(key(&w[0])) + u64::from(w[0].len) > u64::from(key(&w[1])) {
                    return Err(err(IdMapError::Overlap { a: w[0], b: w[1], side }));
                }
            }
        }
        Ok(IdMap { ranges })
    }

    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &[IdRange] {
        &self.ranges
    }

    /// The presented id of an on-disk id; `None` outside every range. Identity when empty.
    pub fn shown(&self, ondisk: u32) -> Option<u32> {
        if self.ranges.is_empty() {
            return Some(ondisk);
        }
        self.ranges.iter().find_map(|r| r.shown(ondisk))
    }

    /// The on-disk id of a presented id; `None` outside every range. Identity when empty.
    pub fn stored(&self, presented: u32) -> Option<u32> {
        if self.ranges.is_empty() {
            return Some(presented);
        }
        self.ranges.iter().find_map(|r| r.stored(presented))
    }
}

/// The ids the kernel shows for ids a user namespace cannot name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow {
    pub uid: u32,
    pub gid: u32,
}

impl Default for Overflow {
    fn default() -> Self {
        Overflow { uid: DEFAULT_OVERFLOW, gid: DEFAULT_OVERFLOW }
    }
}

impl Overflow {
    /// Read /proc/sys/kernel/overflow{u,g}id (once, at mount). Where /proc cannot
    /// tell, the kernel's default 65534, with a warning.
    pub fn read() -> Overflow {
        let one = |path: &str| {
            let text = std::fs::read(path).map_err(|e| e.to_string())?;
            Overflow::parse(&text).ok_or_else(|| "not an id".to_string())
        };
        let d = Overflow::default();
        let pick = |path: &str, fallback: u32| {
            one(path).unwrap_or_else(|why| {
                log::warn!("{path}: {why}; using overflow id {fallback}");
                fallback
            })
        };
        Overflow { uid: pick("/proc/sys/kernel/overflowuid", d.uid), gid: pick("/proc/sys/kernel/overflowgid", d.gid) }
    }

    /// The contents of an overflow id file: a decimal id and a newline.
    pub fn parse(text: &[u8]) -> Option<u32> {
        let t = text.strip_suffix(b"\n").unwrap_or(text);
        if t.is_empty() || t.len() > 10 || !t.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(t).ok()?.parse::<u32>().ok().filter(|id| *id != NO_ID)
    }
}

/// Everything a mount knows about ids: both maps, the squash options, the overflow ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMapping {
    pub uids: IdMap,
    pub gids: IdMap,
    pub squash_to_root: bool,
    pub squash_to_uid: Option<u32>,
    pub squash_to_gid: Option<u32>,
    pub overflow: Overflow,
}

/// Why an ACL xattr value could not be translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclError {
    /// Not the kernel's POSIX ACL xattr format.
    Malformed,
    /// An entry names an id outside every range (writing only).
    Unmappable,
}

/// The two xattrs holding POSIX ACLs, whose USER and GROUP entries carry ids.
pub const ACL_XATTRS: [&[u8]; 2] = [b"system.posix_acl_access", b"system.posix_acl_default"];

pub fn is_acl_xattr(name: &[u8]) -> bool {
    ACL_XATTRS.contains(&name)
}

// The kernel's POSIX ACL xattr format (include/uapi/linux/posix_acl_xattr.h): a
// little-endian u32 version (2), then entries of (u16 tag, u16 perm, u32 id).
const ACL_VERSION: u32 = 2;
const ACL_HEADER: usize = 4;
const ACL_ENTRY: usize = 8;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

impl IdMapping {
    /// True when reading and writing both leave ids alone (no option given).
    pub fn is_identity(&self) -> bool {
        self.writes_identity() && !self.squash_to_root && self.squash_to_uid.is_none() && self.squash_to_gid.is_none()
    }

    /// True when ids written reach the disk unchanged (squash options do not count).
    pub fn writes_identity(&self) -> bool {
        self.uids.is_identity() && self.gids.is_identity()
    }

    /// True when any squash option is set: owners are not tracked in the view.
    pub fn squashes(&self) -> bool {
        self.squash_to_root || self.squash_to_uid.is_some() || self.squash_to_gid.is_some()
    }

    /// The owner uid shown for an on-disk uid.
    pub fn uid_shown(&self, ondisk: u32) -> u32 {
        match (self.squash_to_uid, self.squash_to_root) {
            (Some(id), _) => id,
            (None, true) => 0,
            (None, false) => self.uids.shown(ondisk).unwrap_or(self.overflow.uid),
        }
    }

    /// The owner gid shown for an on-disk gid.
    pub fn gid_shown(&self, ondisk: u32) -> u32 {
        match (self.squash_to_gid, self.squash_to_root) {
            (Some(id), _) => id,
            (None, true) => 0,
            (None, false) => self.gids.shown(ondisk).unwrap_or(self.overflow.gid),
        }
    }

    /// The on-disk uid for a presented uid; `None` when it has none.
    pub fn uid_stored(&self, presented: u32) -> Option<u32> {
        self.uids.stored(presented)
    }

    /// The on-disk gid for a presented gid; `None` when it has none.
    pub fn gid_stored(&self, presented: u32) -> Option<u32> {
        self.gids.stored(presented)
    }

    /// Rewrite a stat's owner as the mount shows it.
    pub fn present(&self, st: &mut Stat) {
        if !self.is_identity() {
            st.0.st_uid = self.uid_shown(st.0.st_uid);
            st.0.st_gid = self.gid_shown(st.0.st_gid);
        }
    }

    /// An ACL xattr value read from a layer, as the mount shows it: ids of USER and
    /// GROUP entries mapped (overflow id outside every range), the rest unchanged.
    pub fn acl_shown(&self, value: &[u8]) -> Result<Vec<u8>, AclError> {
        self.map_acl(value, |tag, id| {
            Ok(match tag {
                ACL_USER => self.uids.shown(id).unwrap_or(self.overflow.uid),
                _ => self.gids.shown(id).unwrap_or(self.overflow.gid),
            })
        })
    }

    /// An ACL xattr value being written, as it must be stored: ids of USER and GROUP
    /// entries mapped back; an id outside every range cannot be stored.
    pub fn acl_stored(&self, value: &[u8]) -> Result<Vec<u8>, AclError> {
        self.map_acl(value, |tag, id| {
            match tag {
                ACL_USER => self.uids.stored(id),
                _ => self.gids.stored(id),
            }
            .ok_or(AclError::Unmappable)
        })
    }

    fn map_acl(&self, value: &[u8], map: impl Fn(u16, u32) -> Result<u32, AclError>) -> Result<Vec<u8>, AclError> {
        if value.len() < ACL_HEADER || !(value.len() - ACL_HEADER).is_multiple_of(ACL_ENTRY) {
            return Err(AclError::Malformed);
        }
        let (head, entries) = value.split_at(ACL_HEADER);
        if u32::from_le_bytes(head.try_into().map_err(|_| AclError::Malformed)?) != ACL_VERSION {
            return Err(AclError::Malformed);
        }
        let mut out = Vec::with_capacity(value.len());
        out.extend_from_slice(head);
        for e in entries.chunks_exact(ACL_ENTRY) {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            let id = match tag {
                ACL_USER | ACL_GROUP => map(tag, id)?,
                ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => id,
                _ => return Err(AclError::Malformed),
            };
            out.extend_from_slice(&e[..4]);
            out.extend_from_slice(&id.to_le_bytes());
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "idmap_tests.rs"]
mod tests;
