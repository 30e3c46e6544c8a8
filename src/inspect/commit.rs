//! Writing a layer directory as an OCI layer tar (the `commit` job).
//!
//! The layer is read through `union::view` with its declared whiteout forms (see
//! `layer`), so what is written is what a mount of it serves. Entry by entry:
//! - directories, regular files, symlinks, char/block devices and fifos keep their
//!   numeric owner, permission bits (incl. setuid/setgid/sticky), mtime (seconds;
//!   negative ones become 0) and content xattrs, the latter as PAX
//!   `SCHILY.xattr.NAME` records in an `x` header before the entry;
//!   overlay-private xattrs (`trusted.overlay.*`, `user.overlay.*`) are dropped;
//! - a whiteout (char 0/0, or `.wh.NAME` already) becomes an empty regular file
//!   `.wh.NAME` (mode 0600 for a char-dev whiteout, owner and mtime kept); a `.wh.`
//!   name that means nothing in its layer is left out, as the mount leaves it out;
//! - an opaque directory (the layer root included) gets `DIR/.wh..wh..opq` right
//!   after the directory;
//! - a renamed directory (redirect xattr, `overlay` rule 8: a layer tar cannot say
//!   "renamed") is written whole under its new name, as the mount shows it through
//!   the lower layers given with the upper, and opaque; its old name's whiteout is
//!   in the upper already. Without the lower layers it fails the commit;
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

use super::InspectError;
use super::layer::{Dir, Kind, LayerEntry, StackView, What, open_view};
use crate::overlay::{OPAQUE_MARKER, WH_PREFIX};
use crate::record::LayerRecord;
use crate::store::digest::{Algorithm, Digest, Hasher};
use crate::sys::fs::Stat;
use crate::union::inode::DirLayer;
use crate::union::resolve::Resolved;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
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
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// Digest of the file written (equal to diff_id when uncompressed).
    pub digest: Digest,
    /// Size of the file written.
    pub blob_size: u64,
    pub compression: Compression,
}

/// A writer that hashes (sha256) and counts what passes through it.
pub struct HashWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter { inner, hasher: Algorithm::Sha256.hasher(), count: 0 }
    }

    /// The digest and byte count of what was written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (self.hasher.finish(), self.count, self.inner)
    }
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

/// Write the upper directory `upper` of a mount as a (possibly compressed) tar file
/// at `dest`. An upper directory may hold either whiteout form (`overlay` rule 3).
/// `lowers` (top first) are the layers below it, which a renamed (redirected)
/// directory's contents come from; with none given, such a directory fails the commit.
pub fn write_upper(upper: &Path, lowers: &[LayerRecord], dest: &Path, comp: Compression) -> Result<LayerBlob, InspectError> {
    let layer = LayerRecord { dir: upper.to_path_buf(), diff_id: None, layer_id: None, whiteouts: Default::default() };
    write_stack(&layer, lowers, dest, comp, "upper")
}

/// Write layer `layer` (its directory, read with its declared whiteout forms) as a
/// (possibly compressed) tar file at `dest`. `what` names the layer in the progress bar.
/// A redirected directory in it (a kernel-written upper used as a layer) fails.
pub fn write_layer(layer: &LayerRecord, dest: &Path, comp: Compression, what: &str) -> Result<LayerBlob, InspectError> {
    write_stack(layer, &[], dest, comp, what)
}

fn write_stack(layer: &LayerRecord, lowers: &[LayerRecord], dest: &Path, comp: Compression, what: &str) -> Result<LayerBlob, InspectError> {
    let tmp = tmp_beside(dest);
    let res = write_layer_to(layer, lowers, &tmp, comp, what).and_then(|b| {
        std::fs::rename(&tmp, dest).map_err(InspectError::io(dest))?;
        Ok(b)
    });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// A temporary name in the same directory as `dest`.
pub fn tmp_beside(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
    let mut t = b".".to_vec();
    t.extend_from_slice(&name);
    t.extend_from_slice(format!(".tmp-{}", std::process::id()).as_bytes());
    dest.with_file_name(OsStr::from_bytes(&t))
}

fn write_layer_to(layer: &LayerRecord, lowers: &[LayerRecord], tmp: &Path, comp: Compression, what: &str) -> Result<LayerBlob, InspectError> {
    let file = File::create(tmp).map_err(InspectError::io(tmp))?;
    let blob = HashWriter::new(io::BufWriter::with_capacity(1 << 20, file));
    let tarw = HashWriter::new(Sink::new(blob, comp).map_err(InspectError::io(tmp))?);
    let mut layers = vec![layer.clone()];
    layers.extend(lowers.iter().cloned());
    let view = open_view(None, &layers)?;
    let bar = progress_for(&view, what)?;
    let tarw = write_tar(&view, tarw, bar.as_ref(), tmp)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let (diff_id, size, sink) = tarw.finish();
    let finish = || -> io::Result<(Digest, u64, File)> {
        let (digest, blob_size, buf) = sink.finish()?.finish();
        let file = buf.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((digest, blob_size, file))
    };
    let (digest, blob_size, _) = finish().map_err(InspectError::io(tmp))?;
    Ok(LayerBlob { diff_id, size, digest, blob_size, compression: comp })
}

/// A progress bar for a large layer when stderr is a terminal.
fn progress_for(view: &StackView, what: &str) -> Result<Option<ProgressBar>, InspectError> {
    if !io::stderr().is_terminal() {
        return Ok(None);
    }
    fn total(view: &StackView, dir: &Dir) -> Result<u64, InspectError> {
        let mut sum = 0;
        for e in dir.entries(view)? {
            match e.what {
                What::Dir { .. } => sum += total(view, &dir.open_dir(view, &e.name)?)?,
                What::NonDir if e.st.is_reg() => sum += e.st.size(),
                _ => {}
            }
        }
        Ok(sum)
    }
    let n = total(view, &Dir::root(view, 0)?)?;
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

/// Write the tar of the one layer of `view` into `w` (finishing the archive) and
/// hand `w` back; write errors are reported on `dest`.
fn write_tar<W: Write>(view: &StackView, w: W, bar: Option<&ProgressBar>, dest: &Path) -> Result<W, InspectError> {
    let root = Dir::root(view, 0)?;
    let st = root.stat()?;
    let mut t = TarWalk { view, b: tar::Builder::new(w), dest, links: HashMap::new(), bar, sockets: 0 };
    t.dir(&root, b"", root.is_opaque(view), &st)?;
    if t.sockets > 0 {
        log::warn!("{}: {} socket(s) skipped (a tar cannot hold sockets)", root.shown().display(), t.sockets);
    }
    t.b.into_inner().map_err(InspectError::io(dest))
}

struct TarWalk<'a, W: Write> {
    view: &'a StackView,
    b: tar::Builder<W>,
    /// Where the tar goes (named in write errors).
    dest: &'a Path,
    /// (dev, ino) of multiply-linked entries -> tar path first written.
    links: HashMap<(u64, u64), Vec<u8>>,
    bar: Option<&'a ProgressBar>,
    sockets: u64,
}

fn header(st: &Stat, ty: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(ty);
    h.set_mode(st.mode() & 0o7777);
    h.set_uid(st.uid() as u64);
    h.set_gid(st.gid() as u64);
    h.set_mtime(st.mtime().0.max(0) as u64);
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
    /// Append a header and its data, naming the output in an error.
    fn append(&mut self, h: &mut Header, path: &[u8], data: impl Read) -> Result<(), InspectError> {
        self.b.append_data(h, as_path(path), data).map_err(InspectError::io(self.dest))
    }

    fn append_link(&mut self, h: &mut Header, path: &[u8], target: &Path) -> Result<(), InspectError> {
        self.b.append_link(h, as_path(path), target).map_err(InspectError::io(self.dest))
    }

    fn pax_xattrs(&mut self, xattrs: &[(OsString, Vec<u8>)]) -> Result<(), InspectError> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let mut data = Vec::new();
        for (k, v) in xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k.as_bytes());
            pax_record(&mut data, &key, v);
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_path("PaxHeader").map_err(InspectError::io(self.dest))?;
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data.as_slice()).map_err(InspectError::io(self.dest))
    }

    fn empty_file(&mut self, st: &Stat, mode: u32, path: &[u8]) -> Result<(), InspectError> {
        let mut h = header(st, EntryType::Regular);
        h.set_mode(mode);
        self.append(&mut h, path, io::empty())
    }

    /// A renamed directory at `prefix`: its opaque marker, then all it shows.
    fn dir_merged(&mut self, dirs: &[DirLayer], prefix: &[u8], st: &Stat) -> Result<(), InspectError> {
        let mut p = prefix.to_vec();
        p.extend_from_slice(OPAQUE_MARKER.to_bytes());
        self.empty_file(st, st.mode() & 0o777, &p)?;
        self.merged(dirs, prefix)
    }

    fn dir(&mut self, dir: &Dir, prefix: &[u8], opaque: bool, st: &Stat) -> Result<(), InspectError> {
        if opaque {
            let mut p = prefix.to_vec();
            p.extend_from_slice(OPAQUE_MARKER.to_bytes());
            self.empty_file(st, st.mode() & 0o777, &p)?;
        }
        for e in dir.entries(self.view)? {
            self.entry(dir, prefix, &e, None)?;
        }
        Ok(())
    }

    /// The merged directory `dirs` (at `prefix`, ending in `/`) with everything it
    /// shows, wherever it comes from: the contents of a renamed (redirected) directory.
    fn merged(&mut self, dirs: &[DirLayer], prefix: &[u8]) -> Result<(), InspectError> {
        let shown = |name: &OsStr| {
            let mut p = prefix.to_vec();
            p.extend_from_slice(name.as_bytes());
            PathBuf::from(OsStr::from_bytes(&p))
        };
        let sys = |path: PathBuf| move |errno| InspectError::Sys { path, errno };
        for l in self.view.list(dirs).map_err(sys(shown(OsStr::new(""))))? {
            let Resolved::Found(f) = self.view.lookup(dirs, &l.name).map_err(sys(shown(&l.name)))? else { continue };
            let parent = Dir::at(f.layer, f.dir.clone(), self.view.path(f.layer).join(shown(OsStr::new(""))));
            let what = if f.st.is_dir() { What::Dir { opaque: false } } else { What::NonDir };
            let e = LayerEntry { name: l.name, st: f.st, what };
            self.entry(&parent, prefix, &e, Some(&f.dirs))?;
        }
        Ok(())
    }

    /// The merged directories the mount shows at `path` (components `/`-separated).
    fn merged_at(&self, path: &[u8]) -> Result<Vec<DirLayer>, InspectError> {
        let err = |errno| InspectError::Sys { path: PathBuf::from(OsStr::from_bytes(path)), errno };
        let mut dirs = self.view.merged_root(0).map_err(err)?;
        for c in path.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            match self.view.lookup(&dirs, OsStr::from_bytes(c)).map_err(err)? {
                Resolved::Found(f) if f.st.is_dir() => dirs = f.dirs,
                _ => return Err(err(crate::sys::Errno::ENOENT)),
            }
        }
        Ok(dirs)
    }

    /// Entry `e` of `dir`; `merged`: it was found by a merged lookup, and (if a
    /// directory) these are the directories merged there.
    fn entry(&mut self, dir: &Dir, prefix: &[u8], e: &LayerEntry, merged: Option<&[DirLayer]>) -> Result<(), InspectError> {
        let mut path = prefix.to_vec();
        path.extend_from_slice(e.name.as_bytes());
        let kind = Kind::of(&e.st);
        if e.what == What::Whiteout {
            let mut p = prefix.to_vec();
            p.extend_from_slice(WH_PREFIX);
            p.extend_from_slice(e.name.as_bytes());
            let mode = if kind == Kind::CharDev { 0o600 } else { e.st.mode() & 0o7777 };
            return self.empty_file(&e.st, mode, &p);
        }
        if kind == Kind::Socket {
            self.sockets += 1;
            return Ok(());
        }
        let xattrs = dir.xattrs(&e.name)?;
        if kind != Kind::Dir && e.st.nlink() > 1 {
            let key = (e.st.dev(), e.st.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                let mut h = header(&e.st, EntryType::Link);
                self.pax_xattrs(&xattrs)?;
                return self.append_link(&mut h, &path, as_path(&first));
            }
            self.links.insert(key, path.clone());
        }
        self.pax_xattrs(&xattrs)?;
        match kind {
            Kind::Dir => {
                let mut h = header(&e.st, EntryType::Directory);
                self.append(&mut h, &path, io::empty())?;
                if let Some(dirs) = merged {
                    path.push(b'/');
                    return self.merged(dirs, &path);
                }
                let child = dir.open_dir(self.view, &e.name)?;
                if child.is_redirected(self.view) {
                    // A layer cannot say "renamed": the whole tree under its new name,
                    // opaque so nothing below of that name shows.
                    if self.view.len() == 1 {
                        return Err(InspectError::NeedsLowers { path: child.shown().to_path_buf() });
                    }
                    let dirs = self.merged_at(&path)?;
                    path.push(b'/');
                    return self.dir_merged(&dirs, &path, &e.st);
                }
                path.push(b'/');
                self.dir(&child, &path, e.what == What::Dir { opaque: true }, &e.st)?;
            }
            Kind::File => {
                let mut h = header(&e.st, EntryType::Regular);
                h.set_size(e.st.size());
                let file = dir.open_file(&e.name)?;
                let shown = dir.shown().join(&e.name);
                let r = Exact { file, left: e.st.size(), bar: self.bar, shown };
                self.append(&mut h, &path, io::BufReader::with_capacity(256 << 10, r))?;
            }
            Kind::Symlink => {
                let target = dir.read_link(&e.name)?;
                let mut h = header(&e.st, EntryType::Symlink);
                self.append_link(&mut h, &path, Path::new(&target))?;
            }
            Kind::CharDev | Kind::BlockDev => {
                let ty = if kind == Kind::CharDev { EntryType::Char } else { EntryType::Block };
                let mut h = header(&e.st, ty);
                let rdev = e.st.rdev() as libc::dev_t;
                let dev = |r: io::Result<()>| r.map_err(|_| dir.err(&e.name, crate::sys::Errno::ERANGE));
                dev(h.set_device_major(libc::major(rdev)))?;
                dev(h.set_device_minor(libc::minor(rdev)))?;
                self.append(&mut h, &path, io::empty())?;
            }
            Kind::Fifo => {
                let mut h = header(&e.st, EntryType::Fifo);
                self.append(&mut h, &path, io::empty())?;
            }
            Kind::Socket => {}
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
