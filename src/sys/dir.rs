//! Reading directories with getdents64, names as raw bytes.

use super::{SysResult, cvt_size, fs};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;

/// One raw directory entry.
#[derive(Debug, Clone)]
pub struct DirEnt {
    pub name: OsString,
    pub ino: u64,
    /// `DT_*` type, `DT_UNKNOWN` when the file system does not fill it.
    pub dtype: u8,
}

/// All entries of the directory `dir` (an `O_PATH` fd is fine), `.` and `..` excluded.
pub fn read_all(dir: BorrowedFd<'_>) -> SysResult<Vec<DirEnt>> {
    let fd = fs::open_at(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is writable for its length; getdents64 writes at most that much.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.as_fd().as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
        let n = cvt_size(n as libc::ssize_t)?;
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 <= n {
            // linux_dirent64: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type, char d_name[]
            let ino = u64::from_ne_bytes(buf[off..off + 8].try_into().expect("8 bytes"));
            let reclen = u16::from_ne_bytes(buf[off + 16..off + 18].try_into().expect("2 bytes")) as usize;
            let dtype = buf[off + 18];
            if reclen == 0 || off + reclen > n {
                break;
            }
            let name_bytes = &buf[off + 19..off + reclen];
            let len = name_bytes.iter().position(|&b| b == 0).unwrap_or(name_bytes.len());
            let name = &name_bytes[..len];
            if name != b"." && name != b".." {
                out.push(DirEnt { name: OsString::from_vec(name.to_vec()), ino, dtype });
            }
            off += reclen;
        }
    }
    Ok(out)
}
