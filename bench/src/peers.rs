//! The peers run beside unionmount that Debian does not package: fuse-overlayfs 2.0, the
//! Rust rewrite, published on crates.io. The bench installs it once with
//! `cargo install --locked` into a directory of its own (`--tools-dir`) and runs the
//! binary like any other FUSE launcher: never linked, never committed, reused by every
//! later run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const FUSE_OVERLAYFS_2: &str = "2.0.0";

/// The fuse-overlayfs 2.0 binary below `tools`, installed first if it is not there.
/// The error is one line that says what failed and what to do.
pub fn fuse_overlayfs_2(tools: &Path) -> Result<PathBuf, String> {
    let root = tools.join(format!("fuse-overlayfs-{FUSE_OVERLAYFS_2}"));
    let bin = root.join("bin/fuse-overlayfs");
    if reports_version(&bin, FUSE_OVERLAYFS_2) {
        return Ok(bin);
    }
    let what = format!("`cargo install fuse-overlayfs --version {FUSE_OVERLAYFS_2}`");
    let advice =
        "pass --fuse-overlayfs-2 PATH to use a built one, or --skip-unavailable to run without it";
    fs::create_dir_all(&root).map_err(|e| format!("mkdir {}: {e}; {advice}", root.display()))?;
    let log_path = root.join("install.log");
    let log = fs::File::create(&log_path)
        .map_err(|e| format!("{}: {e}; {advice}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("{}: {e}; {advice}", log_path.display()))?;
    // `cargo run` tells us which cargo it is; otherwise the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "installing fuse-overlayfs {FUSE_OVERLAYFS_2} from crates.io into {} (once, a few minutes; log: {})",
        root.display(),
        log_path.display()
    );
    let status = Command::new(&cargo)
        .args([
            "install",
            "fuse-overlayfs",
            "--locked",
            "--version",
            FUSE_OVERLAYFS_2,
        ])
        .arg("--root")
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .status()
        .map_err(|e| {
            format!(
                "{what}: cannot run {}: {e}; {advice}",
                cargo.to_string_lossy()
            )
        })?;
    if !status.success() {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let last = text
            .lines()
            .rev()
            .find(|l| l.contains("error"))
            .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or("")
            .trim()
            .to_string();
        let last = if last.is_empty() {
            String::new()
        } else {
            format!(": {last}")
        };
        return Err(format!(
            "{what} failed ({status}{last}; log {}); {advice}",
            log_path.display()
        ));
    }
    if !reports_version(&bin, FUSE_OVERLAYFS_2) {
        return Err(format!(
            "{what} left no working {} (log {}); {advice}",
            bin.display(),
            log_path.display()
        ));
    }
    Ok(bin)
}

/// Whether `bin --version` names `version`.
fn reports_version(bin: &Path, version: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text).contains(&format!("version {version}"))
        })
}
