//! Why a registry operation failed; `Display` is the one line the user sees, saying
//! what to do. Never a secret, never more than a short excerpt of what a server sent.

use crate::cancel::Interrupted;
use crate::store::StoreError;
use crate::store::digest::Digest;
use std::fmt;
use std::path::PathBuf;

/// A failed registry operation.
#[derive(Debug)]
pub enum RegistryError {
    /// The reference or a flag does not parse.
    Invalid(String),
    /// 401/403: the registry (or its token service) refused us.
    Unauthorized {
        registry: String,
        repo: String,
        /// Credential files read, with what they held for this registry ("no entry", …).
        sources: Vec<String>,
        /// Credentials were sent (and refused), as opposed to none found.
        sent: bool,
    },
    /// The manifest is unknown: repository or tag does not exist.
    NotFound { reference: String, code: String },
    /// A blob named by a manifest is missing on the registry.
    BlobNotFound { reference: String, digest: Digest },
    /// TLS handshake or certificate failure.
    Tls { host: String, detail: String },
    /// No connection (DNS, refused, unreachable, timeout).
    Unreachable { host: String, detail: String },
    /// 5xx (or 429) after retries.
    Server { host: String, status: u16, tries: u32 },
    /// Content does not hash to its digest; nothing was kept.
    DigestMismatch { what: String, expected: Digest, got: Digest },
    /// The server sent something that breaks the protocol or a limit.
    Protocol { host: String, detail: String },
    /// A multi-platform image has no entry for the platform wanted.
    NoPlatform { reference: String, want: String, available: Vec<String> },
    /// `--pull=never` and the image is not in the cache.
    NotCached { reference: String },
    /// A layer download broke off after retries; its partial file is kept.
    Download { host: String, digest: Digest, detail: String },
    /// Ctrl-C or SIGTERM.
    Interrupted(Interrupted),
    /// Unpacking into the layer cache failed.
    Store(StoreError),
    /// An I/O error on a cache or credential path.
    Io { path: PathBuf, detail: String },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use RegistryError as E;
        match self {
            E::Invalid(m) => f.write_str(m),
            E::Unauthorized { registry, repo, sources, sent } => {
                if *sent {
                    write!(f, "registry {registry} refused the credentials for {repo} (401)")?;
                } else {
                    write!(f, "registry {registry} requires credentials for {repo} (401) and none were found")?;
                }
                if sources.is_empty() {
                    write!(f, "; no credential file was found")?;
                } else {
                    write!(f, "; read {}", sources.join(", "))?;
                }
                write!(f, ": log in with `podman login {registry}` or `docker login {registry}`, or set REGISTRY_AUTH_FILE")
            }
            E::NotFound { reference, code } => {
                write!(f, "image {reference} not found in the registry ({code}): check the repository name and tag")
            }
            E::BlobNotFound { reference, digest } => write!(
                f,
                "registry has no blob {digest} that the manifest of {reference} names: the image is broken on the registry; push it again"
            ),
            E::Tls { host, detail } => write!(
                f,
                "TLS connection to {host} failed: {detail}: if the registry uses a private CA, pass --cert-dir DIR (its *.crt files), or --tls-verify=false to skip verification"
            ),
            E::Unreachable { host, detail } => {
                write!(f, "cannot reach registry {host}: {detail}: check the name, the port and the network")
            }
            E::Server { host, status, tries } => {
                write!(f, "registry {host} answered HTTP {status} ({tries} tries): try again later")
            }
            E::DigestMismatch { what, expected, got } => write!(
                f,
                "{what} {expected} does not match its digest (got {got}): discarded, nothing was cached; the registry's copy is corrupt"
            ),
            E::Protocol { host, detail } => write!(f, "registry {host}: {detail}"),
            E::NoPlatform { reference, want, available } => write!(
                f,
                "{reference} has no image for {want}; available: {}: choose one with --platform",
                if available.is_empty() { "none".to_string() } else { available.join(", ") }
            ),
            E::NotCached { reference } => {
                write!(f, "{reference} is not in the cache and --pull=never: use --pull=missing to fetch it")
            }
            E::Download { host, digest, detail } => write!(
                f,
                "download of {digest} from {host} failed: {detail}: the partial download is kept; run the command again to resume"
            ),
            E::Interrupted(i) => write!(f, "{i}: nothing was mounted; partial downloads are kept to resume"),
            E::Store(e) => write!(f, "{e}"),
            E::Io { path, detail } => write!(f, "{}: {detail}", path.display()),
        }
    }
}

impl std::error::Error for RegistryError {}

impl From<Interrupted> for RegistryError {
    fn from(i: Interrupted) -> Self {
        RegistryError::Interrupted(i)
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        match crate::cancel::signal() {
            Some(i) => RegistryError::Interrupted(i),
            None => RegistryError::Store(e),
        }
    }
}

impl RegistryError {
    pub(crate) fn io(path: &std::path::Path, e: std::io::Error) -> RegistryError {
        if crate::cancel::is_interrupted(&e)
            && let Some(i) = crate::cancel::signal()
        {
            return RegistryError::Interrupted(i);
        }
        RegistryError::Io { path: path.to_path_buf(), detail: e.to_string() }
    }
    pub(crate) fn mismatch(what: &str, m: crate::store::digest::Mismatch) -> RegistryError {
        RegistryError::DigestMismatch { what: what.into(), expected: m.expected, got: m.actual }
    }
    /// The exit status a front end should use: 128 + signal when interrupted, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            RegistryError::Interrupted(i) => i.exit_code(),
            _ => 1,
        }
    }
}

/// A short, printable excerpt of untrusted text (for error lines): at most `n` chars,
/// control characters escaped.
pub fn excerpt(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).flat_map(|c| c.escape_debug()).collect();
    if s.chars().count() > n {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_single_and_say_what_to_do() {
        let d = Digest::sha256_of(b"a");
        let errs = [
            RegistryError::Unauthorized {
                registry: "r:5000".into(),
                repo: "tiny".into(),
                sources: vec!["/a/auth.json (entry for r:5000)".into()],
                sent: true,
            },
            RegistryError::Tls { host: "r".into(), detail: "invalid peer certificate: UnknownIssuer".into() },
            RegistryError::DigestMismatch { what: "layer".into(), expected: d.clone(), got: d.clone() },
            RegistryError::NoPlatform { reference: "x".into(), want: "linux/s390x".into(), available: vec!["linux/amd64".into()] },
        ];
        for e in errs {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{s}");
            assert!(s.contains(':'), "{s}");
        }
        assert_eq!(excerpt("a\nb", 10), "a\\nb");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}
