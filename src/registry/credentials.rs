//! Registry credentials, found where podman and docker keep them.
//!
//! ```text
//! $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json     (podman login)
//! $XDG_CONFIG_HOME/containers/auth.json (~/.config/containers/auth.json)
//! $DOCKER_CONFIG/config.json, else ~/.docker/config.json             (docker login)
//!   {"auths": {"127.0.0.1:5000": {"auth": base64("user:pass")}},
//!    "credHelpers": {"example.com": "pass"}, "credsStore": "secretservice"}
//! ```
//! The first file with something for the registry wins. In a file: `credHelpers` for the
//! registry, then the most specific `auths` key (`reg/ns/repo`, `reg/ns`, `reg`; URL
//! forms like `https://reg/v1/` too), then `credsStore`. A helper is run as
//! `docker-credential-NAME get` with the server on stdin.
//!
//! Invariants: a secret is never printed, logged or put in an error, whatever the log
//! level (`Debug` of [`Secret`] is redacted); what the user sees is which files were read
//! and what each held for this registry; files are read with a size cap; a helper name is
//! `[A-Za-z0-9._-]` only (never a path), its output is capped and it is killed after
//! [`HELPER_TIMEOUT`] or on Ctrl-C.

use base64::Engine as _;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Largest credential file read.
const MAX_FILE: u64 = 4 << 20;
/// How long a credential helper may take.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// What to authenticate with. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Password { username: String, password: String },
    /// An OAuth2 refresh token (`identitytoken`, or a helper's `<token>` user).
    IdentityToken(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password { username, .. } => write!(f, "Password {{ username: {username:?}, password: <redacted> }}"),
            Secret::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// The outcome of a lookup: the credential (if any) and what was read, for messages.
#[derive(Debug, Default, Clone)]
pub struct Lookup {
    pub secret: Option<Secret>,
    /// One entry per file or helper consulted: `PATH (entry for KEY)`, `PATH (no entry)`.
    pub sources: Vec<String>,
}

#[derive(Default, serde::Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, serde::Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The files consulted, in order.
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = env("HOME");
    let mut v = Vec::new();
    match env("REGISTRY_AUTH_FILE") {
        Some(p) => v.push(p),
        None => {
            if let Some(r) = env("XDG_RUNTIME_DIR") {
                v.push(r.join("containers/auth.json"));
            }
        }
    }
    if let Some(c) = env("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config"))) {
        v.push(c.join("containers/auth.json"));
    }
    match env("DOCKER_CONFIG") {
        Some(d) => v.push(d.join("config.json")),
        None => {
            if let Some(h) = &home {
                v.push(h.join(".docker/config.json"));
            }
        }
    }
    v.dedup();
    v
}

/// Normalise an `auths` key: no scheme, Docker Hub's aliases are `docker.io`, a URL path
/// (`/v1/`, `/v2/`) dropped.
fn normalize_key(k: &str) -> String {
    let (stripped, had_scheme) = match k.strip_prefix("https://").or_else(|| k.strip_prefix("http://")) {
        Some(s) => (s, true),
        None => (k, false),
    };
    let mut s = stripped.trim_end_matches('/').to_string();
    if had_scheme && let Some((host, _)) = s.split_once('/') {
        s = host.to_string(); // URL form: only the host names the registry
    }
    for alias in ["index.docker.io", "registry-1.docker.io"] {
        if let Some(rest) = s.strip_prefix(alias)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            s = format!("docker.io{rest}");
        }
    }
    s
}

/// The keys that may hold credentials for `registry/repo`, most specific first.
fn candidate_keys(registry: &str, repo: &str) -> Vec<String> {
    let mut v = Vec::new();
    let parts: Vec<&str> = repo.split('/').collect();
    for n in (1..=parts.len()).rev() {
        v.push(format!("{registry}/{}", parts[..n].join("/")));
    }
    v.push(registry.to_string());
    v
}

fn decode_entry(e: &AuthEntry) -> Option<Secret> {
    if let Some(t) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Some(Secret::IdentityToken(t.to_string()));
    }
    if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD.decode(a.trim()).ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        return Some(Secret::Password { username: u.to_string(), password: p.to_string() });
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Some(Secret::Password { username: u.clone(), password: p.clone() }),
        _ => None,
    }
}

/// Find credentials for `registry` (as Docker names it, `docker.io` for Docker Hub) and
/// `repo`, in [`auth_files`].
pub fn lookup(registry: &str, repo: &str) -> Lookup {
    lookup_in(&auth_files(), registry, repo)
}

/// [`lookup`] over an explicit list of files.
pub fn lookup_in(files: &[PathBuf], registry: &str, repo: &str) -> Lookup {
    let mut out = Lookup::default();
    let keys = candidate_keys(registry, repo);
    for path in files {
        let bytes = match read_file(path) {
            Ok(Some(b)) => b,
            Ok(None) => continue, // absent: not worth naming
            Err(why) => {
                out.sources.push(format!("{} ({why})", path.display()));
                continue;
            }
        };
        let file: AuthFile = match serde_json::from_slice(&bytes) {
            Ok(f) => f,
            Err(_) => {
                out.sources.push(format!("{} (invalid JSON, skipped)", path.display()));
                continue;
            }
        };
        if let Some(helper) = file.cred_helpers.iter().find(|(k, _)| normalize_key(k) == registry).map(|(_, h)| h) {
            let r = run_helper(helper, registry);
            out.sources.push(format!("{} (credHelpers: docker-credential-{}: {})", path.display(), safe_name(helper), r.1));
            if r.0.is_some() {
                out.secret = r.0;
                return out;
            }
            continue;
        }
        let mut entries: Vec<(usize, &String, &AuthEntry)> = file
            .auths
            .iter()
            .filter_map(|(k, e)| keys.iter().position(|c| *c == normalize_key(k)).map(|i| (i, k, e)))
            .collect();
        entries.sort_by_key(|x| x.0);
        if let Some((_, key, e)) = entries.first() {
            if let Some(s) = decode_entry(e) {
                out.sources.push(format!("{} (entry for {})", path.display(), normalize_key(key)));
                out.secret = Some(s);
                return out;
            }
            if file.creds_store.is_none() {
                out.sources.push(format!("{} (entry for {} without usable credentials)", path.display(), normalize_key(key)));
                continue;
            }
        }
        if let Some(store) = &file.creds_store {
            let r = run_helper(store, registry);
            out.sources.push(format!("{} (credsStore: docker-credential-{}: {})", path.display(), safe_name(store), r.1));
            if r.0.is_some() {
                out.secret = r.0;
                return out;
            }
            continue;
        }
        out.sources.push(format!("{} (no entry for {registry})", path.display()));
    }
    out
}

/// Ok(None) when the file does not exist; Err(short reason) when it cannot be read.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("unreadable: {}", e.kind())),
    };
    let mut b = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut b).map_err(|e| format!("unreadable: {}", e.kind()))?;
    if b.len() as u64 > MAX_FILE {
        return Err("too large, skipped".into());
    }
    Ok(Some(b))
}

fn safe_name(name: &str) -> String {
    if valid_helper(name) { name.to_string() } else { "<invalid name>".to_string() }
}

fn valid_helper(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(serde::Deserialize)]
struct HelperOut {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Run `docker-credential-NAME get`; returns the secret and a short word for messages.
fn run_helper(name: &str, registry: &str) -> (Option<Secret>, String) {
    if !valid_helper(name) {
        return (None, "invalid helper name, not run".into());
    }
    // Docker Hub's helpers store it under its legacy URL.
    let server = if registry == "docker.io" { "https://index.docker.io/v1/" } else { registry };
    let child = Command::new(format!("docker-credential-{name}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (None, "not installed".into()),
        Err(e) => return (None, format!("cannot run: {}", e.kind())),
    };
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(server.as_bytes());
    }
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.take(1 << 20).read_to_end(&mut b);
        }
        b
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() < HELPER_TIMEOUT && crate::cancel::check().is_ok() => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    match status {
        None => (None, "timed out or interrupted".into()),
        Some(s) if !s.success() => (None, "no credentials".into()),
        Some(_) => match serde_json::from_slice::<HelperOut>(&out) {
            Ok(h) if h.username == "<token>" && !h.secret.is_empty() => (Some(Secret::IdentityToken(h.secret)), "found".into()),
            Ok(h) if !h.username.is_empty() => {
                (Some(Secret::Password { username: h.username, password: h.secret }), "found".into())
            }
            _ => (None, "unusable answer".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn keys_normalise() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize_key("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(normalize_key("quay.io/team"), "quay.io/team");
        assert_eq!(candidate_keys("r:1", "a/b"), vec!["r:1/a/b", "r:1/a", "r:1"]);
    }

    #[test]
    fn lookup_order_and_sources() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("auth.json");
        let d = t.path().join("config.json");
        std::fs::write(
            &a,
            format!(r#"{{"auths":{{"r:1/team":{{"auth":"{}"}},"other:2":{{"auth":"{}"}}}}}}"#, b64("u1:p1"), b64("x:y")),
        )
        .unwrap();
        std::fs::write(&d, format!(r#"{{"auths":{{"https://r:1/v1/":{{"auth":"{}"}}}}}}"#, b64("u2:p:2"))).unwrap();
        let files = vec![t.path().join("absent.json"), a.clone(), d.clone()];
        let l = lookup_in(&files, "r:1", "team/app");
        assert_eq!(l.secret, Some(Secret::Password { username: "u1".into(), password: "p1".into() }));
        assert_eq!(l.sources, vec![format!("{} (entry for r:1/team)", a.display())]);
        let l = lookup_in(&files, "r:1", "solo");
        assert_eq!(l.secret, Some(Secret::Password { username: "u2".into(), password: "p:2".into() }));
        assert_eq!(l.sources.len(), 2, "{:?}", l.sources);
        assert!(l.sources[0].contains("no entry"));
        let l = lookup_in(&files, "nowhere:3", "x");
        assert!(l.secret.is_none());
        let dbg = format!("{:?}", lookup_in(&files, "r:1", "solo"));
        assert!(!dbg.contains("p:2") && dbg.contains("redacted"), "{dbg}");
    }

    #[test]
    fn bad_files_and_helpers() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("auth.json");
        std::fs::write(&a, "{ not json SECRET").unwrap();
        let l = lookup_in(std::slice::from_ref(&a), "r:1", "x");
        assert!(l.secret.is_none());
        assert!(l.sources[0].contains("invalid JSON") && !l.sources[0].contains("SECRET"));
        std::fs::write(&a, r#"{"credHelpers":{"r:1":"../../bin/sh"}}"#).unwrap();
        let l = lookup_in(std::slice::from_ref(&a), "r:1", "x");
        assert!(l.sources[0].contains("invalid helper name"), "{:?}", l.sources);
        std::fs::write(&a, r#"{"credsStore":"unionmount-test-no-such-helper"}"#).unwrap();
        let l = lookup_in(std::slice::from_ref(&a), "r:1", "x");
        assert!(l.sources[0].contains("not installed"), "{:?}", l.sources);
    }
}
