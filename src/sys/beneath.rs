//! Opening store files beneath a held directory fd, never following a symlink.
//!
//! A [`Beneath`] holds an `O_PATH` fd of a directory (a store root, an OCI layout, the
//! layer cache). Every path given to it is relative and resolved under that fd with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` where the
//! kernel has it (probed once), else by a walk of one `openat(O_NOFOLLOW)` per component.
//!
//! Invariants:
//! - nothing resolved through a `Beneath` lies outside its directory: absolute paths and
//!   `..` components are refused before any syscall, and no symlink is followed on the way
//!   or at the end (a symlink anywhere is `ELOOP`, reported as "is a symlink");
//! - [`Beneath::open_file`] returns only regular files: the object is first opened
//!   `O_PATH` (which never blocks, even on a fifo, and has no side effect on a device),
//!   checked with fstat, then reopened for reading through `/proc/self/fd`;
//! - [`Beneath::read_capped`] never reads more than `cap + 1` bytes, and [`SizedReader`]
//!   yields exactly the size declared, failing when the file holds more or less.

use super::fs::{self, Stat};
use super::{Errno, cvt};
use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::OnceLock;

/// How paths are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS.
    Openat2,
    /// One openat(O_NOFOLLOW) per component (kernels before 5.6, seccomp filters).
    Walk,
}

/// The mode this kernel supports (probed once).
pub fn mode() -> Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    *MODE.get_or_init(|| match openat2(None, c"/", libc::O_PATH, 0) {
        Ok(_) => Mode::Openat2,
        Err(_) => Mode::Walk,
    })
}

fn openat2(dir: Option<BorrowedFd<'_>>, path: &std::ffi::CStr, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    // The kernel's `struct open_how` (libc's is non-exhaustive, so it is spelled out here).
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u64, mode: 0, resolve };
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `path` is a valid C string and `how` a valid open_how of the size passed;
    // the kernel reads both during the call only; the returned fd is checked below.
    let r = unsafe {
        libc::syscall(libc::SYS_openat2, dirfd, path.as_ptr(), &how as *const OpenHow, size_of::<OpenHow>())
    };
    let fd = cvt(r as libc::c_int).map_err(errno_io)?;
    // SAFETY: openat2 succeeded, so `fd` is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.0)
}

/// Readable messages for the errors a beneath-only resolution produces.
fn explain(e: io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => io::Error::new(io::ErrorKind::InvalidData, "is a symlink or passes through one (not followed in a store)"),
        Some(libc::EXDEV) => io::Error::new(io::ErrorKind::InvalidData, "resolves outside the store"),
        _ => e,
    }
}

/// The components of a relative path, each checked; empty for the directory itself.
fn components(rel: &Path) -> io::Result<Vec<CString>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("path {why}"));
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => {
                out.push(CString::new(n.as_bytes()).map_err(|_| bad("holds NUL"))?);
            }
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(bad("is absolute")),
            Component::ParentDir => return Err(bad("holds ..")),
        }
    }
    Ok(out)
}

/// A directory fd under which every open stays; see the module invariants.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
    mode: Mode,
}

impl Beneath {
    /// Hold the directory at `path` (a path the user gave: symlinks to it are followed).
    pub fn open(path: &Path) -> io::Result<Beneath> {
        let fd = fs::open_path(path, libc::O_PATH | libc::O_DIRECTORY).map_err(errno_io)?;
        Ok(Beneath { fd, mode: mode() })
    }

    /// Like [`Beneath::open`] but resolving with `mode` (tests exercise both).
    pub fn open_with(path: &Path, mode: Mode) -> io::Result<Beneath> {
        let mut b = Beneath::open(path)?;
        b.mode = mode;
        Ok(b)
    }

    /// Open `rel` as `O_PATH` without following any symlink (the final one included:
    /// a final symlink is refused).
    fn resolve(&self, rel: &Path, dir: bool) -> io::Result<OwnedFd> {
        self.resolve_flags(rel, libc::O_PATH | if dir { libc::O_DIRECTORY } else { 0 })
    }

    fn resolve_flags(&self, rel: &Path, flags: i32) -> io::Result<OwnedFd> {
        let comps = components(rel)?;
        let flags = flags | libc::O_NOFOLLOW;
        let fd = if comps.is_empty() {
            fs::open_at(self.fd.as_fd(), c".", flags, 0).map_err(errno_io)?
        } else {
            match self.mode {
                Mode::Openat2 => {
                    let joined: Vec<&[u8]> = comps.iter().map(|c| c.as_bytes()).collect();
                    let p = CString::new(joined.join(&b'/')).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                    let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
                    openat2(Some(self.fd.as_fd()), &p, flags, resolve).map_err(explain)?
                }
                Mode::Walk => {
                    let (last, parents) = comps.split_last().expect("not empty");
                    let mut cur: Option<OwnedFd> = None;
                    for c in parents {
                        let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
                        let next = fs::open_at(at, c, libc::O_PATH | libc::O_NOFOLLOW, 0).map_err(errno_io)?;
                        // O_PATH|O_NOFOLLOW opens a symlink itself: refuse it here.
                        if !fs::fstat(next.as_fd()).map_err(errno_io)?.is_dir() {
                            return Err(explain(not_dir_or_loop(next.as_fd())));
                        }
                        cur = Some(next);
                    }
                    let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
                    fs::open_at(at, last, flags, 0).map_err(errno_io)?
                }
            }
        };
        let st = fs::fstat(fd.as_fd()).map_err(errno_io)?;
        if st.is_lnk() {
            return Err(explain(io::Error::from_raw_os_error(libc::ELOOP)));
        }
        Ok(fd)
    }

    /// The directory `rel` beneath this one, held the same way.
    pub fn dir(&self, rel: &Path) -> io::Result<Beneath> {
        Ok(Beneath { fd: self.resolve(rel, true)?, mode: self.mode })
    }

    /// lstat of `rel` (a final symlink is an error, like any symlink on the way).
    pub fn stat(&self, rel: &Path) -> io::Result<Stat> {
        let fd = self.resolve(rel, false)?;
        fs::fstat(fd.as_fd()).map_err(errno_io)
    }

    /// Does `rel` exist as a directory (not through a symlink)?
    pub fn is_dir(&self, rel: &Path) -> bool {
        self.stat(rel).is_ok_and(|s| s.is_dir())
    }

    /// Does `rel` exist as a regular file (not through a symlink)?
    pub fn is_file(&self, rel: &Path) -> bool {
        self.stat(rel).is_ok_and(|s| s.is_reg())
    }

    /// Open the regular file `rel` for reading; anything else is refused without blocking.
    pub fn open_file(&self, rel: &Path) -> io::Result<File> {
        let fd = self.resolve(rel, false)?;
        let st = fs::fstat(fd.as_fd()).map_err(errno_io)?;
        if !st.is_reg() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("is not a regular file ({})", kind_name(&st))));
        }
        let f = match fs::reopen(fd.as_fd(), libc::O_RDONLY | libc::O_NOCTTY) {
            Ok(f) => f,
            // No /proc: open again by name, without blocking, and check it is the same file.
            Err(Errno(libc::ENOENT)) => {
                let f = self.resolve_flags(rel, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)?;
                let again = fs::fstat(f.as_fd()).map_err(errno_io)?;
                if (again.dev(), again.ino()) != (st.dev(), st.ino()) || !again.is_reg() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "changed while being opened"));
                }
                f
            }
            Err(e) => return Err(errno_io(e)),
        };
        Ok(File::from(f))
    }

    /// Read all of the regular file `rel`; more than `cap` bytes is an error.
    pub fn read_capped(&self, rel: &Path, cap: u64) -> io::Result<Vec<u8>> {
        let f = self.open_file(rel)?;
        let len = f.metadata()?.len();
        if len > cap {
            return Err(too_large(len, cap));
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.take(cap + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > cap {
            return Err(too_large(buf.len() as u64, cap));
        }
        Ok(buf)
    }

    /// Open the regular file `rel`, which must hold exactly `size` bytes.
    pub fn open_sized(&self, rel: &Path, size: u64) -> io::Result<SizedReader<File>> {
        let f = self.open_file(rel)?;
        let len = f.metadata()?.len();
        if len != size {
            return Err(wrong_size(len, size));
        }
        Ok(SizedReader::new(f, size))
    }

    /// The names in directory `rel` (`.` and `..` excluded).
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<OsString>> {
        let d = self.resolve(rel, true)?;
        let ents = super::dir::read_all(d.as_fd()).map_err(errno_io)?;
        Ok(ents.into_iter().map(|e| e.name).collect())
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn not_dir_or_loop(fd: BorrowedFd<'_>) -> io::Error {
    match fs::fstat(fd) {
        Ok(s) if s.is_lnk() => io::Error::from_raw_os_error(libc::ELOOP),
        _ => io::Error::from_raw_os_error(libc::ENOTDIR),
    }
}

fn kind_name(st: &Stat) -> &'static str {
    match st.file_type() {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a fifo",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symlink",
        _ => "not a file",
    }
}

fn too_large(len: u64, cap: u64) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("larger than {cap} bytes ({len} or more)"))
}

fn wrong_size(len: u64, size: u64) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("holds {len} bytes, its descriptor says {size}"))
}

/// Yields exactly `size` bytes of `inner`: an early end or a byte beyond is an error.
#[derive(Debug)]
pub struct SizedReader<R> {
    inner: R,
    size: u64,
    left: u64,
}

impl<R: Read> SizedReader<R> {
    pub fn new(inner: R, size: u64) -> Self {
        SizedReader { inner, size, left: size }
    }
}

impl<R: Read> Read for SizedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Declared end: the source must end here too.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("holds more than the {} bytes declared", self.size))),
            };
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            let got = self.size - self.left;
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("holds {got} bytes, {} declared", self.size)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"hello").unwrap();
        std::fs::write(t.path().join("secret"), b"SECRET").unwrap();
        symlink(t.path().join("secret"), root.join("abs")).unwrap();
        symlink("../secret", root.join("rel")).unwrap();
        symlink("b", root.join("a/lnk")).unwrap();
        symlink("/", root.join("rootlink")).unwrap();
        crate::sys::store_ops::mknod(&root.join("fifo"), crate::sys::store_ops::NodeKind::Fifo, 0o644, 0, 0).unwrap();
        (t, root)
    }

    #[test]
    fn both_modes_stay_beneath_and_follow_nothing() {
        let (_t, root) = setup();
        let modes = if mode() == Mode::Openat2 { vec![Mode::Openat2, Mode::Walk] } else { vec![Mode::Walk] };
        for m in modes {
            let b = Beneath::open_with(&root, m).unwrap();
            assert_eq!(b.read_capped(Path::new("a/b/f"), 100).unwrap(), b"hello", "{m:?}");
            assert_eq!(b.read_capped(Path::new("./a/./b/f"), 100).unwrap(), b"hello");
            let e = b.read_capped(Path::new("a/b/f"), 4).unwrap_err();
            assert!(e.to_string().contains("larger than 4"), "{e}");
            for bad in ["abs", "rel", "a/lnk/f", "a/lnk", "rootlink/etc/passwd", "../secret", "/etc/passwd", "a/../../secret"] {
                let e = b.open_file(Path::new(bad)).unwrap_err();
                assert!(!e.to_string().is_empty(), "{m:?} {bad}");
                assert!(b.stat(Path::new(bad)).is_err(), "{m:?} {bad}");
            }
            let e = b.open_file(Path::new("abs")).unwrap_err().to_string();
            assert!(e.contains("symlink"), "{e}");
            // A fifo is refused at once, without blocking.
            let e = b.open_file(Path::new("fifo")).unwrap_err().to_string();
            assert!(e.contains("fifo"), "{e}");
            assert!(b.open_file(Path::new("a")).unwrap_err().to_string().contains("directory"));
            assert!(b.open_file(Path::new("missing")).unwrap_err().kind() == io::ErrorKind::NotFound);
            let sub = b.dir(Path::new("a")).unwrap();
            assert!(sub.is_file(Path::new("b/f")) && sub.is_dir(Path::new("b")) && !sub.is_dir(Path::new("lnk")));
            assert!(b.dir(Path::new("a/lnk")).is_err());
            let mut names = b.read_dir(Path::new("a")).unwrap();
            names.sort();
            assert_eq!(names, vec![OsString::from("b"), OsString::from("lnk")]);
            assert!(b.read_dir(Path::new("a/lnk")).is_err());
        }
    }

    #[test]
    fn sized_reads_refuse_other_sizes() {
        let (_t, root) = setup();
        let b = Beneath::open(&root).unwrap();
        let mut s = String::new();
        b.open_sized(Path::new("a/b/f"), 5).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        assert!(b.open_sized(Path::new("a/b/f"), 4).unwrap_err().to_string().contains("says 4"));
        assert!(b.open_sized(Path::new("a/b/f"), 1 << 40).is_err());
        // The stream itself is checked too (a file that changes after the open).
        let mut v = Vec::new();
        let e = SizedReader::new(&b"hello!"[..], 5).read_to_end(&mut v).unwrap_err();
        assert!(e.to_string().contains("more than the 5"), "{e}");
        let e = SizedReader::new(&b"hell"[..], 5).read_to_end(&mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("holds 4 bytes, 5 declared"), "{e}");
        let mut v = Vec::new();
        SizedReader::new(&b""[..], 0).read_to_end(&mut v).unwrap();
        assert!(v.is_empty());
    }
}
