//! A read-only reader for bbolt files (containerd's `meta.db` and the overlayfs
//! snapshotter's `metadata.db`). No well-kept Rust crate reads bbolt files without
//! trusting them, so this is written here, small and defensive.
//!
//! ```text
//! page 0, page 1   meta: header | magic u32 = 0xED0CDAED | version u32 = 2 | page_size u32 |
//!                        flags u32 | root bucket {pgid u64, sequence u64} | freelist u64 |
//!                        high-water mark (pages in use) u64 | txid u64 | checksum u64
//!                        (FNV-1a 64 of the 56 meta bytes before the checksum)
//! page header      id u64 | flags u16 (0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist) |
//!                  count u16 | overflow u32 (the page spans 1 + overflow pages)  = 16 bytes
//! branch element   pos u32 | ksize u32 | child pgid u64                            = 16 bytes
//! leaf element     flags u32 (0x01: value is a bucket) | pos u32 | ksize u32 | vsize u32
//!                  key at element + pos, value right after the key
//! bucket value     {root pgid u64, sequence u64}; root 0 = an inline leaf page follows
//! ```
//! All integers little-endian (bbolt writes native order; every platform containerd
//! ships on but s390x is little-endian, and a big-endian file fails the magic check).
//!
//! Invariants:
//! - read only: the file is opened read-only and read with positioned reads; no lock is
//!   taken (containerd holds bbolt's exclusive lock while it runs);
//! - both meta pages are checked (magic, version, checksum, page size, bounds) and the
//!   valid one with the highest txid is used, as bbolt does;
//! - every page id is checked against the high-water mark and the file size, every element
//!   offset against its page, every page's own id and type against what was asked for;
//! - a tree is at most [`MAX_TREE_DEPTH`] pages deep, a full scan visits a page at most once,
//!   and a transaction reads at most a budget of pages: no input loops, panics or reads
//!   out of bounds;
//! - a consistent snapshot: [`view`] runs the reading closure, then reads the meta pages
//!   again; if another transaction committed meanwhile (pages we read may have been
//!   reused), it runs the closure once more, and fails with [`BoltError::Changing`] if the
//!   file changed again;
//! - errors name page ids and offsets, never keys or values from the file.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::rc::Rc;

/// bbolt's magic number.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The only file format version bbolt writes.
pub const VERSION: u32 = 2;
/// Deepest B+tree (pages from a bucket's root to a leaf) accepted.
pub const MAX_TREE_DEPTH: usize = 32;
/// Largest page (with its overflow) accepted.
pub const MAX_PAGE_BYTES: u64 = 64 << 20;

const HEADER: usize = 16;
const ELEM: usize = 16;
const META_LEN: usize = 64;
const FLAG_BRANCH: u16 = 0x01;
const FLAG_LEAF: u16 = 0x02;
const FLAG_META: u16 = 0x04;
const BUCKET_LEAF: u32 = 0x01;
const MIN_PAGE: u64 = 1024;
const MAX_PAGE: u64 = 16 << 20;

/// Why a bbolt file could not be read; `Display` is one line.
#[derive(Debug)]
pub enum BoltError {
    Io(std::io::Error),
    /// The file is not a valid bbolt file (detail names pages and offsets only).
    Corrupt(String),
    /// The file changed under two consecutive reads (a busy writer).
    Changing,
}

impl fmt::Display for BoltError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoltError::Io(e) => write!(f, "{e}"),
            BoltError::Corrupt(d) => write!(f, "not a valid bbolt file: {d}"),
            BoltError::Changing => f.write_str("the file changed while it was read, twice; try again"),
        }
    }
}
impl std::error::Error for BoltError {}

impl From<std::io::Error> for BoltError {
    fn from(e: std::io::Error) -> Self {
        BoltError::Io(e)
    }
}

fn corrupt<T>(d: impl Into<String>) -> Result<T, BoltError> {
    Err(BoltError::Corrupt(d.into()))
}

/// Where the file's bytes come from (a file, or memory in tests).
pub trait Source {
    fn size(&self) -> std::io::Result<u64>;
    /// Fill `buf` from `off`; reading past the end is an error.
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()>;
}

impl Source for std::fs::File {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, off)
    }
}

impl Source for &[u8] {
    fn size(&self) -> std::io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let s = usize::try_from(off).ok().and_then(|o| self.get(o..o.checked_add(buf.len())?));
        match s {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]))
}

/// FNV-1a, 64 bit (bbolt's meta checksum).
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The fields of a valid meta page that reading needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u64,
    pub root: u64,
    /// Pages in use: every valid page id is below this.
    pub high_water: u64,
    pub txid: u64,
}

/// Parse the meta page whose bytes start at `page[0]`; None when it does not validate.
fn parse_meta(page: &[u8]) -> Option<Meta> {
    let m = page.get(HEADER..HEADER + META_LEN)?;
    if u16_at(page, 8) != FLAG_META || u32_at(m, 0) != MAGIC || u32_at(m, 4) != VERSION {
        return None;
    }
    if u64_at(m, 56) != fnv1a64(&m[..56]) {
        return None;
    }
    let page_size = u64::from(u32_at(m, 8));
    if !page_size.is_power_of_two() || !(MIN_PAGE..=MAX_PAGE).contains(&page_size) {
        return None;
    }
    Some(Meta { page_size, root: u64_at(m, 16), high_water: u64_at(m, 40), txid: u64_at(m, 48) })
}

/// Read up to 4 KiB at `off` (less at the end of the file).
fn read_head(src: &dyn Source, off: u64, size: u64) -> Result<Vec<u8>, BoltError> {
    let n = size.saturating_sub(off).min(4096) as usize;
    let mut b = vec![0u8; n];
    src.read_at(&mut b, off)?;
    Ok(b)
}

/// Both meta pages, checked; the valid one with the highest txid.
pub fn read_meta(src: &dyn Source) -> Result<Meta, BoltError> {
    let size = src.size()?;
    if size < 2 * MIN_PAGE {
        return corrupt(format!("{size} bytes is too small"));
    }
    let m0 = parse_meta(&read_head(src, 0, size)?).filter(|m| 2 * m.page_size <= size);
    // The second meta page is at one page size; without a valid first page its size is
    // unknown, so try every size bbolt allows (as bbolt itself does).
    let sizes: Vec<u64> = match m0 {
        Some(m) => vec![m.page_size],
        None => (0..=14).map(|i| MIN_PAGE << i).take_while(|&p| p + MIN_PAGE <= size).collect(),
    };
    let mut m1 = None;
    for ps in sizes {
        if let Some(m) = parse_meta(&read_head(src, ps, size)?).filter(|m| m.page_size == ps && 2 * ps <= size) {
            m1 = Some(m);
            break;
        }
    }
    let best = match (m0, m1) {
        (Some(a), Some(b)) => {
            if b.txid > a.txid {
                b
            } else {
                a
            }
        }
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return corrupt("no valid meta page (magic, version or checksum wrong on both)"),
    };
    let Some(end) = best.high_water.checked_mul(best.page_size) else {
        return corrupt(format!("high-water mark {} out of range", best.high_water));
    };
    if end > size {
        return corrupt(format!("truncated: {} pages in use, the file holds {}", best.high_water, size / best.page_size));
    }
    if best.root < 2 || best.root >= best.high_water {
        return corrupt(format!("root page {} out of range", best.root));
    }
    Ok(best)
}

/// Read a consistent snapshot of the file: run `f` on a transaction, then check that no
/// other transaction committed meanwhile; if one did, run `f` once more.
pub fn view<T>(
    src: &dyn Source,
    mut f: impl FnMut(&Tx<'_>) -> Result<T, BoltError>,
) -> Result<T, BoltError> {
    for _ in 0..2 {
        let meta = read_meta(src)?;
        let size = src.size()?;
        let tx = Tx::new(src, meta, size);
        let r = f(&tx);
        match read_meta(src) {
            Ok(now) if now == meta => return r,
            _ => log::debug!("bbolt file changed during a read (txid {}), reading again", meta.txid),
        }
    }
    Err(BoltError::Changing)
}

/// A read transaction over one meta page's tree. Pages are read once and kept.
pub struct Tx<'s> {
    src: &'s dyn Source,
    meta: Meta,
    size: u64,
    cache: RefCell<HashMap<u64, Rc<[u8]>>>,
    visits: Cell<u64>,
    budget: u64,
}

impl<'s> Tx<'s> {
    fn new(src: &'s dyn Source, meta: Meta, size: u64) -> Tx<'s> {
        // Generous for every real access pattern, finite for every file.
        let budget = 200_000 + 8 * meta.high_water;
        Tx { src, meta, size, cache: RefCell::new(HashMap::new()), visits: Cell::new(0), budget }
    }

    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// The root bucket (holding the top-level buckets).
    pub fn root(&self) -> Bucket<'_> {
        Bucket { tx: self, root: Root::Page(self.meta.root) }
    }

    /// The bucket at `path` from the root; None if any part is missing or not a bucket.
    pub fn bucket(&self, path: &[&[u8]]) -> Result<Option<Bucket<'_>>, BoltError> {
        let mut b = self.root();
        for k in path {
            match b.bucket(k)? {
                Some(n) => b = n,
                None => return Ok(None),
            }
        }
        Ok(Some(b))
    }

    /// Page `id` (with its overflow), checked.
    fn page(&self, id: u64) -> Result<Rc<[u8]>, BoltError> {
        let v = self.visits.get() + 1;
        self.visits.set(v);
        if v > self.budget {
            return corrupt(format!("more than {} page reads in one transaction (pages shared or cyclic)", self.budget));
        }
        if id < 2 || id >= self.meta.high_water {
            return corrupt(format!("page id {id} out of range (pages 2..{})", self.meta.high_water));
        }
        if let Some(p) = self.cache.borrow().get(&id) {
            return Ok(p.clone());
        }
        let ps = self.meta.page_size;
        let off = id * ps; // id < high_water and high_water * ps <= size: no overflow
        let mut head = [0u8; HEADER];
        self.src.read_at(&mut head, off)?;
        let overflow = u64::from(u32_at(&head, 12));
        let bytes = (overflow + 1) * ps;
        if id + overflow >= self.meta.high_water || bytes > MAX_PAGE_BYTES || off + bytes > self.size {
            return corrupt(format!("page {id} overflows by {overflow} pages, out of range"));
        }
        if u64_at(&head, 0) != id {
            return corrupt(format!("page {id} says it is page {}", u64_at(&head, 0)));
        }
        let flags = u16_at(&head, 8);
        if flags != FLAG_BRANCH && flags != FLAG_LEAF {
            return corrupt(format!("page {id} has flags {flags:#x}, expected a branch or leaf page"));
        }
        let mut buf = vec![0u8; bytes as usize];
        self.src.read_at(&mut buf, off)?;
        let p: Rc<[u8]> = buf.into();
        self.cache.borrow_mut().insert(id, p.clone());
        Ok(p)
    }
}

#[derive(Clone)]
enum Root {
    Page(u64),
    /// A bucket value holding its own leaf page at offset 16.
    Inline(Rc<[u8]>),
}

/// A bucket: look keys up, or list them all.
#[derive(Clone)]
pub struct Bucket<'t> {
    tx: &'t Tx<'t>,
    root: Root,
}

/// What a key holds.
#[derive(Clone)]
pub enum Value<'t> {
    Bucket(Bucket<'t>),
    Data(Vec<u8>),
}

/// A page's bytes: `buf[off..]`.
struct PageRef {
    buf: Rc<[u8]>,
    off: usize,
    id: u64,
}

impl PageRef {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.off..]
    }
    fn flags(&self) -> u16 {
        u16_at(self.bytes(), 8)
    }
    /// Number of elements, checked to fit in the page.
    fn count(&self) -> Result<usize, BoltError> {
        let n = u16_at(self.bytes(), 10) as usize;
        if HEADER + n * ELEM > self.bytes().len() {
            return corrupt(format!("page {}: {n} elements do not fit", self.id));
        }
        Ok(n)
    }
    /// `len` bytes at element `i` + `pos`, bounds-checked.
    fn slice(&self, i: usize, pos: u32, len: u64) -> Result<&[u8], BoltError> {
        let b = self.bytes();
        let start = (HEADER + i * ELEM) as u64 + u64::from(pos);
        match start.checked_add(len) {
            Some(end) if end <= b.len() as u64 => Ok(&b[start as usize..end as usize]),
            _ => corrupt(format!("page {}: element {i} points outside the page", self.id)),
        }
    }
    fn branch(&self, i: usize) -> Result<(&[u8], u64), BoltError> {
        let e = HEADER + i * ELEM;
        let b = self.bytes();
        let key = self.slice(i, u32_at(b, e), u64::from(u32_at(b, e + 4)))?;
        Ok((key, u64_at(b, e + 8)))
    }
    /// (flags, key, value) of leaf element `i`.
    fn leaf(&self, i: usize) -> Result<(u32, &[u8], &[u8]), BoltError> {
        let e = HEADER + i * ELEM;
        let b = self.bytes();
        let (pos, ksize, vsize) = (u32_at(b, e + 4), u64::from(u32_at(b, e + 8)), u64::from(u32_at(b, e + 12)));
        let kv = self.slice(i, pos, ksize + vsize)?;
        let (k, v) = kv.split_at(ksize as usize);
        Ok((u32_at(b, e), k, v))
    }
    /// Keys must be strictly ascending (what every lookup relies on).
    fn check_order<'a>(&self, prev: &mut Option<&'a [u8]>, key: &'a [u8], i: usize) -> Result<(), BoltError> {
        if prev.is_some_and(|p| p >= key) {
            return corrupt(format!("page {}: keys out of order at element {i}", self.id));
        }
        *prev = Some(key);
        Ok(())
    }
}

impl<'t> Bucket<'t> {
    fn root_page(&self) -> Result<PageRef, BoltError> {
        match &self.root {
            Root::Page(id) => Ok(PageRef { buf: self.tx.page(*id)?, off: 0, id: *id }),
            Root::Inline(v) => Ok(PageRef { buf: v.clone(), off: 16, id: 0 }),
        }
    }

    fn child(&self, id: u64) -> Result<PageRef, BoltError> {
        if matches!(self.root, Root::Inline(_)) {
            return corrupt("an inline bucket holds a branch page");
        }
        Ok(PageRef { buf: self.tx.page(id)?, off: 0, id })
    }

    fn value(&self, flags: u32, v: &[u8]) -> Result<Value<'t>, BoltError> {
        if flags & BUCKET_LEAF == 0 {
            return Ok(Value::Data(v.to_vec()));
        }
        if v.len() < 16 {
            return corrupt(format!("a bucket value of {} bytes (at least 16)", v.len()));
        }
        let root = u64_at(v, 0);
        let root = if root == 0 {
            let inline = &v[16..];
            if inline.len() < HEADER || u16_at(inline, 8) != FLAG_LEAF {
                return corrupt("an inline bucket without a leaf page");
            }
            Root::Inline(Rc::from(v))
        } else {
            if v.len() != 16 {
                return corrupt(format!("a bucket value of {} bytes (16 expected)", v.len()));
            }
            Root::Page(root)
        };
        Ok(Value::Bucket(Bucket { tx: self.tx, root }))
    }

    /// The value at `key`, or None.
    pub fn get(&self, key: &[u8]) -> Result<Option<Value<'t>>, BoltError> {
        let mut page = self.root_page()?;
        for _ in 0..MAX_TREE_DEPTH {
            let n = page.count()?;
            let mut prev = None;
            match page.flags() {
                FLAG_LEAF => {
                    for i in 0..n {
                        let (flags, k, v) = page.leaf(i)?;
                        page.check_order(&mut prev, k, i)?;
                        if k == key {
                            return self.value(flags, v).map(Some);
                        }
                    }
                    return Ok(None);
                }
                FLAG_BRANCH => {
                    if n == 0 {
                        return corrupt(format!("page {}: empty branch page", page.id));
                    }
                    // The last child whose first key is <= key (the first child otherwise).
                    let mut next = None;
                    for i in 0..n {
                        let (k, id) = page.branch(i)?;
                        page.check_order(&mut prev, k, i)?;
                        if i == 0 || k <= key {
                            next = Some(id);
                        }
                    }
                    let Some(id) = next else { return Ok(None) };
                    page = self.child(id)?;
                }
                f => return corrupt(format!("page {}: flags {f:#x}", page.id)),
            }
        }
        corrupt(format!("tree deeper than {MAX_TREE_DEPTH} pages"))
    }

    /// The sub-bucket at `key`; None if missing or a plain value (as bbolt).
    pub fn bucket(&self, key: &[u8]) -> Result<Option<Bucket<'t>>, BoltError> {
        Ok(match self.get(key)? {
            Some(Value::Bucket(b)) => Some(b),
            _ => None,
        })
    }

    /// The plain value at `key`; None if missing or a bucket (as bbolt).
    pub fn data(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BoltError> {
        Ok(match self.get(key)? {
            Some(Value::Data(d)) => Some(d),
            _ => None,
        })
    }

    /// Every key and value, in key order.
    pub fn entries(&self) -> Result<Vec<(Vec<u8>, Value<'t>)>, BoltError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        // Depth-first, left to right: a stack of (page, depth), children pushed reversed.
        let mut stack = vec![(self.root_page()?, 1usize)];
        while let Some((page, depth)) = stack.pop() {
            if page.off == 0 && !seen.insert(page.id) {
                return corrupt(format!("page {} is reached twice (a cycle)", page.id));
            }
            let n = page.count()?;
            let mut prev = None;
            match page.flags() {
                FLAG_LEAF => {
                    for i in 0..n {
                        let (flags, k, v) = page.leaf(i)?;
                        page.check_order(&mut prev, k, i)?;
                        if out.last().is_some_and(|(l, _): &(Vec<u8>, Value)| l.as_slice() >= k) {
                            return corrupt(format!("page {}: keys out of order with the page before", page.id));
                        }
                        out.push((k.to_vec(), self.value(flags, v)?));
                    }
                }
                FLAG_BRANCH => {
                    if depth >= MAX_TREE_DEPTH {
                        return corrupt(format!("tree deeper than {MAX_TREE_DEPTH} pages"));
                    }
                    if n == 0 {
                        return corrupt(format!("page {}: empty branch page", page.id));
                    }
                    let mut kids = Vec::with_capacity(n);
                    for i in 0..n {
                        let (k, id) = page.branch(i)?;
                        page.check_order(&mut prev, k, i)?;
                        kids.push(id);
                    }
                    for id in kids.into_iter().rev() {
                        stack.push((self.child(id)?, depth + 1));
                    }
                }
                f => return corrupt(format!("page {}: flags {f:#x}", page.id)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        // FNV-1a 64 reference values.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    /// A minimal file as bbolt's own init writes it: two metas, a freelist, an empty root leaf.
    fn empty_db(ps: usize) -> Vec<u8> {
        let mut b = vec![0u8; ps * 4];
        for i in 0..2usize {
            let p = &mut b[i * ps..];
            p[0..8].copy_from_slice(&(i as u64).to_le_bytes());
            p[8..10].copy_from_slice(&FLAG_META.to_le_bytes());
            let m = &mut p[HEADER..HEADER + META_LEN];
            m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            m[4..8].copy_from_slice(&VERSION.to_le_bytes());
            m[8..12].copy_from_slice(&(ps as u32).to_le_bytes());
            m[16..24].copy_from_slice(&3u64.to_le_bytes());
            m[32..40].copy_from_slice(&2u64.to_le_bytes());
            m[40..48].copy_from_slice(&4u64.to_le_bytes());
            m[48..56].copy_from_slice(&(i as u64).to_le_bytes());
            let sum = fnv1a64(&m[..56]);
            m[56..64].copy_from_slice(&sum.to_le_bytes());
        }
        b[2 * ps..2 * ps + 8].copy_from_slice(&2u64.to_le_bytes());
        b[2 * ps + 8..2 * ps + 10].copy_from_slice(&0x10u16.to_le_bytes());
        b[3 * ps..3 * ps + 8].copy_from_slice(&3u64.to_le_bytes());
        b[3 * ps + 8..3 * ps + 10].copy_from_slice(&FLAG_LEAF.to_le_bytes());
        b
    }

    #[test]
    fn empty_file_reads_and_metas_choose() {
        let b = empty_db(4096);
        let m = read_meta(&&b[..]).unwrap();
        assert_eq!((m.page_size, m.root, m.high_water, m.txid), (4096, 3, 4, 1));
        let n = view(&&b[..], |tx| tx.root().entries().map(|e| e.len())).unwrap();
        assert_eq!(n, 0);
        // A bad checksum on meta 1 falls back to meta 0; on both, an error.
        let mut c = b.clone();
        c[4096 + HEADER + 60] ^= 1;
        assert_eq!(read_meta(&&c[..]).unwrap().txid, 0);
        // Meta 0 broken: meta 1 is found by trying page sizes.
        let mut d = b.clone();
        d[HEADER] ^= 1;
        assert_eq!(read_meta(&&d[..]).unwrap().txid, 1);
        c[HEADER] ^= 1;
        assert!(matches!(read_meta(&&c[..]), Err(BoltError::Corrupt(_))));
        // Truncated below the high-water mark, or to nothing.
        assert!(read_meta(&&b[..3 * 4096]).unwrap_err().to_string().contains("truncated"));
        assert!(read_meta(&&b[..100]).is_err());
        assert!(read_meta(&&[][..]).is_err());
    }

    #[test]
    fn bad_pages_are_errors() {
        let mut b = empty_db(1024);
        // Root leaf claims 60000 elements: they do not fit.
        b[3 * 1024 + 10..3 * 1024 + 12].copy_from_slice(&60000u16.to_le_bytes());
        let e = view(&&b[..], |tx| tx.root().entries().map(|_| ())).unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
        // Root page turned into a freelist page.
        let mut b = empty_db(1024);
        b[3 * 1024 + 8] = 0x10;
        assert!(view(&&b[..], |tx| tx.root().get(b"x").map(|_| ())).is_err());
        // Root page's own id wrong.
        let mut b = empty_db(1024);
        b[3 * 1024] = 9;
        assert!(view(&&b[..], |tx| tx.root().get(b"x").map(|_| ())).unwrap_err().to_string().contains("says it is"));
    }
}
