//! Writing a layer directory as an OCI layer tar (the `commit` job).
//!
//! Entry by entry (see `layer` for how a directory is read):
//! - directories, regular files, symlinks, char/block devices and fifos keep their
//!   numeric owner, permission bits (incl. setuid/setgid/sticky), mtime (seconds;
//!   negative ones become 0) and content xattrs, the latter as PAX
//!   `SCHILY.xattr.NAME` records in an `x` header before the entry;
//!   overlay-private xattrs (`trusted.overlay.*`, `user.overlay.*`) are dropped;
//! - a whiteout (char 0/0, or `.wh.NAME` already) becomes an empty regular file
//!   `.wh.NAME` (mode 0600 for a char-dev whiteout, owner and mtime kept);
//! - an opaque directory gets `DIR/.wh..wh..opq` right after the directory;
//! - a non-directory with more than one link is written in full the first time
//!   (in walk order) and as a tar hard link to that path afterwards;
//! - sockets cannot be represented in a tar and are skipped with a warning;
//! - the layer root itself is not an entry.
//!
//! Invariants: entries are written in the component-wise sorted walk order and
//! headers carry nothing that depends on the machine or time of the commit (no
//! user/group names, no atime/ctime, gzip mtime 0), so the same tree always gives
//! the same tar and diff_id. The diff_id is the sha256 of exactly the bytes of the
//! uncompressed tar, and the blob digest that of exactly the bytes written to the
//! file. A regular file that shrinks while being read fails the commit (the tar
//! would be corrupt); one that grows is cut at the size first seen. Output goes to
//! a temporary file renamed into place, so a failed commit leaves no partial file.

use super::layer::{Dir, Entry, Kind};
use crate::overlay::{self, OPAQUE_MARKER, WH_PREFIX};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// Layers at least this large (regular file bytes) get a progress bar on a terminal.
const PROGRESS_THRESHOLD: u64 = 32 << 20;

/// How the layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// What was written: the uncompressed tar's identity and the blob's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// `sha256:` of the file written (equal to diff_id when uncompressed).
    pub digest: String,
    /// Size of the file written.
    pub blob_size: u64,
    pub compression: Compression,
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hasher: Sha256::new(), count: 0 }
    }

    /// `("sha256:<hex>", byte count)` and the inner writer.
    pub fn finish(self) -> (String, u64, W) {
        (sha256_string(&self.hasher.finalize()), self.count, self.inner)
    }
}

pub fn sha256_string(d: &[u8]) -> String {
    let mut s = String::from("sha256:");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compressor between the tar and the file.
enum Sink<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Sink<W> {
    fn new(w: W, c: Compression) -> io::Result<Self> {
        Ok(match c {
            Compression::None => Sink::Plain(w),
            // GzEncoder writes mtime 0 and no name: deterministic.
            Compression::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(w, flate2::Compression::default())),
            Compression::Zstd => Sink::Zstd(zstd::stream::write::Encoder::new(w, 3)?),
        })
    }
    fn finish(self) -> io::Result<W> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Gzip(g) => g.finish(),
            Sink::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
        }
    }
}

/// Write layer directory `root` as a (possibly compressed) tar file at `dest`.
/// `what` names the layer in the progress bar.
pub fn write_layer(root: &Path, dest: &Path, comp: Compression, what: &str) -> io::Result<LayerBlob> {
    let tmp = tmp_beside(dest);
    let res = write_layer_to(root, &tmp, comp, what);
    match res {
        Ok(b) => match std::fs::rename(&tmp, dest) {
            Ok(()) => Ok(b),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(io::Error::new(e.kind(), format!("{}: {e}", dest.display())))
            }
        },
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// A temporary name in the same directory as `dest`.
pub fn tmp_beside(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
    let mut t = b".".to_vec();
    t.extend_from_slice(&name);
    t.extend_from_slice(format!(".tmp-{}", std::process::id()).as_bytes());
    dest.with_file_name(OsStr::from_bytes(&t))
}

fn write_layer_to(root: &Path, tmp: &Path, comp: Compression, what: &str) -> io::Result<LayerBlob> {
    let file = File::create(tmp).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", tmp.display())))?;
    let blob = HashWriter::new(io::BufWriter::with_capacity(1 << 20, file));
    let tarw = HashWriter::new(Sink::new(blob, comp)?);
    let bar = progress_for(root, what)?;
    let tarw = write_tar(root, tarw, bar.as_ref())?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (diff_id, size, sink) = tarw.finish();
    let (digest, blob_size, buf) = sink.finish()?.finish();
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(LayerBlob { diff_id, size, digest, blob_size, compression: comp })
}

/// A progress bar for a large layer when stderr is a terminal.
fn progress_for(root: &Path, what: &str) -> io::Result<Option<ProgressBar>> {
    if !io::stderr().is_terminal() {
        return Ok(None);
    }
    fn total(dir: &Dir) -> io::Result<u64> {
        let mut sum = 0;
        for e in dir.list()?.entries {
            match e.kind {
                Kind::Dir if !e.whiteout => sum += total(&dir.open_dir(&e.name)?)?,
                Kind::File => sum += e.meta.len(),
                _ => {}
            }
        }
        Ok(sum)
    }
    let n = total(&Dir::open_root(root)?)?;
    if n < PROGRESS_THRESHOLD {
        return Ok(None);
    }
    let bar = ProgressBar::new(n);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    Ok(Some(bar))
}

/// Write the tar of layer directory `root` into `w` (finishing the archive) and
/// hand `w` back.
pub fn write_tar<W: Write>(root: &Path, w: W, bar: Option<&ProgressBar>) -> io::Result<W> {
    let dir = Dir::open_root(root)?;
    let meta = std::fs::metadata(root)?;
    let root_opaque = super::layer::xattrs_of(root)?
        .iter()
        .any(|(k, v)| overlay::is_opaque_xattr(k.as_bytes()) && overlay::is_opaque_value(v));
    let mut t = TarWalk { b: tar::Builder::new(w), links: HashMap::new(), bar, sockets: 0 };
    t.dir(&dir, b"", root_opaque, &meta)?;
    if t.sockets > 0 {
        log::warn!("{}: {} socket(s) skipped (a tar cannot hold sockets)", root.display(), t.sockets);
    }
    t.b.into_inner()
}

struct TarWalk<'a, W: Write> {
    b: tar::Builder<W>,
    /// (dev, ino) of multiply-linked entries -> tar path first written.
    links: HashMap<(u64, u64), Vec<u8>>,
    bar: Option<&'a ProgressBar>,
    sockets: u64,
}

fn header(meta: &Metadata, ty: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(ty);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    // Zero device numbers (not empty fields) on every entry, as GNU tar does.
    let _ = h.set_device_major(0);
    let _ = h.set_device_minor(0);
    h
}

fn as_path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// One PAX record: `"<len> <key>=<value>\n"`, len counting the whole record.
pub fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    while base + len.to_string().len() != len {
        len = base + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

impl<W: Write> TarWalk<'_, W> {
    fn pax_xattrs(&mut self, e: &Entry) -> io::Result<()> {
        if e.xattrs.is_empty() {
            return Ok(());
        }
        let mut data = Vec::new();
        for (k, v) in &e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k.as_bytes());
            pax_record(&mut data, &key, v);
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_path("PaxHeader")?;
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data.as_slice())
    }

    fn empty_file(&mut self, meta: &Metadata, mode: u32, path: &[u8]) -> io::Result<()> {
        let mut h = header(meta, EntryType::Regular);
        h.set_mode(mode);
        self.b.append_data(&mut h, as_path(path), io::empty())
    }

    fn dir(&mut self, dir: &Dir, prefix: &[u8], opaque: bool, meta: &Metadata) -> io::Result<()> {
        let listing = dir.list()?;
        if opaque || listing.opaque_marker {
            let mut p = prefix.to_vec();
            p.extend_from_slice(OPAQUE_MARKER.to_bytes());
            self.empty_file(meta, meta.mode() & 0o777, &p)?;
        }
        for e in &listing.entries {
            if let Some(k) = e.special.first() {
                return Err(super::diff::unsupported(dir, &e.name, k));
            }
            let mut path = prefix.to_vec();
            path.extend_from_slice(e.name.as_bytes());
            if e.whiteout {
                let mut p = prefix.to_vec();
                p.extend_from_slice(WH_PREFIX);
                p.extend_from_slice(e.name.as_bytes());
                let mode = if e.kind == Kind::CharDev { 0o600 } else { e.meta.mode() & 0o7777 };
                self.empty_file(&e.meta, mode, &p)?;
                continue;
            }
            if e.kind == Kind::Socket {
                self.sockets += 1;
                continue;
            }
            if e.kind != Kind::Dir && e.meta.nlink() > 1 {
                let key = (e.meta.dev(), e.meta.ino());
                if let Some(first) = self.links.get(&key) {
                    let first = first.clone();
                    let mut h = header(&e.meta, EntryType::Link);
                    self.pax_xattrs(e)?;
                    self.b.append_link(&mut h, as_path(&path), as_path(&first))?;
                    continue;
                }
                self.links.insert(key, path.clone());
            }
            self.pax_xattrs(e)?;
            match e.kind {
                Kind::Dir => {
                    let mut h = header(&e.meta, EntryType::Directory);
                    self.b.append_data(&mut h, as_path(&path), io::empty())?;
                    let child = dir.open_dir(&e.name)?;
                    path.push(b'/');
                    self.dir(&child, &path, e.opaque, &e.meta)?;
                }
                Kind::File => {
                    let mut h = header(&e.meta, EntryType::Regular);
                    h.set_size(e.meta.len());
                    let file = dir.open_file(&e.name)?;
                    let shown = dir.shown().join(&e.name);
                    let r = Exact { file, left: e.meta.len(), bar: self.bar, shown };
                    let r = io::BufReader::with_capacity(256 << 10, r);
                    self.b.append_data(&mut h, as_path(&path), r)?;
                }
                Kind::Symlink => {
                    let target = dir.read_link(&e.name)?;
                    let mut h = header(&e.meta, EntryType::Symlink);
                    self.b.append_link(&mut h, as_path(&path), Path::new(&target))?;
                }
                Kind::CharDev | Kind::BlockDev => {
                    let ty = if e.kind == Kind::CharDev { EntryType::Char } else { EntryType::Block };
                    let mut h = header(&e.meta, ty);
                    let rdev = e.meta.rdev() as libc::dev_t;
                    h.set_device_major(libc::major(rdev))?;
                    h.set_device_minor(libc::minor(rdev))?;
                    self.b.append_data(&mut h, as_path(&path), io::empty())?;
                }
                Kind::Fifo => {
                    let mut h = header(&e.meta, EntryType::Fifo);
                    self.b.append_data(&mut h, as_path(&path), io::empty())?;
                }
                Kind::Socket => {}
            }
        }
        Ok(())
    }
}

/// Reads exactly `left` bytes of a file, failing if it ends early.
struct Exact<'a> {
    file: File,
    left: u64,
    bar: Option<&'a ProgressBar>,
    shown: PathBuf,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: file shrank while being read", self.shown.display()),
            ));
        }
        self.left -= n as u64;
        if let Some(b) = self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
