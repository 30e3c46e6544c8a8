//! The typed options of a mount, as the front end (`cmd`) parses them from argv and
//! `-o` strings. Plain data: every check that needs the file system is in `mount`.

use super::{Passthrough, WhiteoutForm};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// Options given with `-o`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MountOpts {
    pub lowerdir: Vec<PathBuf>,
    pub upperdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    /// `volatile` or `fsync=0`: skip fsync.
    pub no_fsync: bool,
    pub fsname: Option<String>,
    pub allow_other: bool,
    pub read_only: bool,
    pub cache_entries: Option<usize>,
    /// Kernel entry/attribute cache time in seconds.
    pub timeout: Option<f64>,
    pub threads: Option<usize>,
    pub passthrough: Option<Passthrough>,
    pub whiteout: Option<WhiteoutForm>,
    /// `redirect_dir=on|off`: rename lower directories with a redirect (default) or
    /// by copying them up.
    pub redirect_dir: Option<bool>,
    pub store: Option<PathBuf>,
    /// `uidmapping=`, `gidmapping=`, `squash_to_*` (the overflow ids are read at mount).
    pub ids: crate::union::idmap::IdMapping,
    /// Generic mount flags passed on to the kernel (nodev, nosuid, noexec, …).
    pub kernel_flags: Vec<String>,
    /// Accepted but unused (logged at debug level).
    pub ignored: Vec<String>,
}

/// A mount command.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MountArgs {
    pub foreground: bool,
    pub debug: bool,
    pub opts: MountOpts,
    /// IMAGE in image mode, SOURCE (informational) in overlay mode.
    pub source: Option<OsString>,
    pub mountpoint: PathBuf,
    pub cache: Option<PathBuf>,
    /// `--upper DIR`: persistent writable layer for image mounts.
    pub upper: Option<PathBuf>,
    /// `--namespace NS`: containerd namespace to take the image from.
    pub namespace: Option<String>,
    /// `--platform os/arch[/variant]`: which image of a multi-platform index.
    pub platform: Option<String>,
    /// `--pull`, `--tls-verify`, `--cert-dir` (registry images).
    pub remote: crate::registry::Flags,
}

impl MountArgs {
    /// Image mode: no lowerdir, so the source names an image.
    pub fn image(&self) -> Option<&OsStr> {
        if self.opts.lowerdir.is_empty() { self.source.as_deref() } else { None }
    }
}
