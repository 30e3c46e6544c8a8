//! The registry flags shared by the commands that resolve images (mount, inspect):
//! `--pull=never|missing|always`, `--tls-verify[=BOOL]`, `--cert-dir DIR` (`--platform` is
//! the stores' flag, shared with containerd). Pure parsing; the meaning lives in
//! `crate::registry`.

use super::Usage;
use crate::registry::PullPolicy;
use std::ffi::OsStr;

fn text<'a>(v: &'a OsStr, flag: &str) -> Result<&'a str, Usage> {
    v.to_str().ok_or_else(|| Usage(format!("{flag}: the value is not valid UTF-8")))
}

/// `--pull VALUE`.
pub fn pull(v: &OsStr) -> Result<PullPolicy, Usage> {
    PullPolicy::parse(text(v, "--pull")?).map_err(Usage)
}

/// `--tls-verify` or `--tls-verify=true|false` (skopeo's form; no separate value).
pub fn tls_verify(arg: &[u8]) -> Result<bool, Usage> {
    match arg {
        b"--tls-verify" | b"--tls-verify=true" => Ok(true),
        b"--tls-verify=false" => Ok(false),
        _ => Err(Usage::new("--tls-verify takes =true or =false (e.g. --tls-verify=false)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert_eq!(pull(OsStr::new("always")).unwrap(), PullPolicy::Always);
        assert!(pull(OsStr::new("later")).is_err());
        assert!(tls_verify(b"--tls-verify").unwrap());
        assert!(!tls_verify(b"--tls-verify=false").unwrap());
        assert!(tls_verify(b"--tls-verify=no").is_err());
        assert!(tls_verify(b"--tls-verifyx").is_err());
    }
}
