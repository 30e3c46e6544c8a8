//! Where this host keeps its images: ask a running Docker daemon (`GET /info`), then the
//! containerd roots that exist by default.
//!
//! ```text
//! $DOCKER_HOST=unix:///path  or  /var/run/docker.sock
//!   GET /info HTTP/1.0  →  {"DockerRootDir":"/data/docker","Driver":"overlayfs",
//!                           "DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]],
//!                           "Containerd":{"Address":"/run/containerd/containerd.sock",
//!                                         "Namespaces":{"Containers":"moby"}}}
//! containerd snapshotter in use → its containerd's root: DockerRootDir/containerd/daemon
//!   (dockerd runs its own) or /var/lib/containerd (the system one), by the Address;
//! otherwise → DockerRootDir is a legacy Docker root (overlay2).
//! ```
//! Invariants: the daemon is asked once per search, with a 2 s timeout on connect, write
//! and read; the answer is bounded ([`MAX_RESPONSE`]), parsed by hand (status line,
//! headers, Content-Length or chunked body) and then as JSON; a path from it is used only
//! if absolute, without NUL and at most 4096 bytes, and is then detected like any
//! `--store`. No daemon, no permission or a bad answer: the default list alone, logged.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest /info answer read.
pub const MAX_RESPONSE: usize = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(2);
const SNAPSHOTTER_TYPE: &str = "io.containerd.snapshotter.v1";

/// What Docker says about its storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerInfo {
    pub root_dir: PathBuf,
    pub driver: String,
    /// Images are in containerd's store (Docker 29+ default, or the feature flag).
    pub containerd_snapshotter: bool,
    /// The containerd socket Docker uses, when it says.
    pub containerd_address: Option<String>,
    /// The namespace Docker's images are in (default `moby`).
    pub namespace: Option<String>,
}

/// The Docker socket to ask: a `unix://` `$DOCKER_HOST`, else /var/run/docker.sock.
/// None when `$DOCKER_HOST` names another transport (tcp, ssh): we do not ask those.
pub fn docker_socket() -> Option<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h.strip_prefix("unix://").filter(|p| p.starts_with('/')).map(PathBuf::from),
        _ => Some(PathBuf::from("/var/run/docker.sock")),
    }
}

/// Why the daemon could not be asked; `Display` is one line.
#[derive(Debug)]
pub enum AskError {
    /// Connecting, writing or reading the socket failed.
    Io(std::io::Error),
    /// The answer is larger than [`MAX_RESPONSE`].
    TooLarge,
    /// The answer is not a usable `/info` (the parsers' leaf message, without its input).
    Answer(String),
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AskError::Io(e) => write!(f, "{e}"),
            AskError::TooLarge => write!(f, "answer larger than {MAX_RESPONSE} bytes"),
            AskError::Answer(m) => f.write_str(m),
        }
    }
}
impl std::error::Error for AskError {}

/// Ask the daemon at `sock`.
pub fn query(sock: &Path) -> Result<DockerInfo, AskError> {
    let mut s = std::os::unix::net::UnixStream::connect(sock).map_err(AskError::Io)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(AskError::Io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(AskError::Io)?;
    s.write_all(b"GET /info HTTP/1.0\r\nHost: docker\r\nUser-Agent: unionmount\r\nAccept: application/json\r\n\r\n")
        .map_err(AskError::Io)?;
    let mut buf = Vec::new();
    (&mut s).take(MAX_RESPONSE as u64 + 1).read_to_end(&mut buf).map_err(AskError::Io)?;
    if buf.len() > MAX_RESPONSE {
        return Err(AskError::TooLarge);
    }
    http_body(&buf).and_then(|b| parse_info(&b)).map_err(AskError::Answer)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The body of an HTTP/1.x response with status 200.
pub fn http_body(resp: &[u8]) -> Result<Vec<u8>, String> {
    let head_end = find(&resp[..resp.len().min(64 << 10)], b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&resp[..head_end]).map_err(|_| "headers are not text")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !proto.starts_with("HTTP/1.") {
        return Err("not an HTTP/1 answer".into());
    }
    if code != "200" {
        return Err(format!("HTTP status {}", code.chars().take(3).collect::<String>()));
    }
    let (mut length, mut chunked) = (None, false);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { return Err("malformed header line".into()) };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err("bad Content-Length".into());
            }
            length = v.parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.eq_ignore_ascii_case("chunked");
        }
    }
    let body = &resp[head_end + 4..];
    if chunked {
        return dechunk(body);
    }
    match length {
        Some(n) if n <= body.len() => Ok(body[..n].to_vec()),
        Some(_) => Err("answer shorter than its Content-Length".into()),
        None => Ok(body.to_vec()),
    }
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = find(&b[..b.len().min(128)], b"\r\n").ok_or("bad chunk header")?;
        let line = std::str::from_utf8(&b[..eol]).map_err(|_| "bad chunk header")?;
        let hex = line.split(';').next().unwrap_or("").trim();
        if hex.is_empty() || hex.len() > 8 {
            return Err("bad chunk size".into());
        }
        let n = usize::from_str_radix(hex, 16).map_err(|_| "bad chunk size")?;
        b = &b[eol + 2..];
        if n == 0 {
            return Ok(out);
        }
        if b.len() < n + 2 || &b[n..n + 2] != b"\r\n" {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n + 2..];
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawInfo {
    #[serde(default)]
    docker_root_dir: String,
    #[serde(default)]
    driver: String,
    #[serde(default)]
    driver_status: Option<Vec<Vec<String>>>,
    #[serde(default)]
    containerd: Option<RawContainerd>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContainerd {
    #[serde(default)]
    address: String,
    #[serde(default)]
    namespaces: Option<RawNamespaces>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNamespaces {
    #[serde(default)]
    containers: String,
}

fn good_path(p: &str) -> bool {
    p.starts_with('/') && p.len() <= 4096 && !p.contains('\0')
}

/// A containerd namespace name (containerd's rule: letters, digits, `_`, `-`, `.`).
pub fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 76
        && ns.as_bytes()[0].is_ascii_alphanumeric()
        && ns.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The parts of `/info` we use, checked.
pub fn parse_info(body: &[u8]) -> Result<DockerInfo, String> {
    let raw: RawInfo = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    if !good_path(&raw.docker_root_dir) {
        return Err("no usable DockerRootDir".into());
    }
    let containerd_snapshotter = raw
        .driver_status
        .iter()
        .flatten()
        .any(|kv| kv.len() == 2 && kv[0] == "driver-type" && kv[1] == SNAPSHOTTER_TYPE);
    let (addr, ns) = match raw.containerd {
        Some(c) => (
            Some(c.address).filter(|a| good_path(a)),
            c.namespaces.map(|n| n.containers).filter(|n| valid_namespace(n)),
        ),
        None => (None, None),
    };
    Ok(DockerInfo {
        root_dir: PathBuf::from(raw.docker_root_dir),
        driver: raw.driver.chars().take(64).collect(),
        containerd_snapshotter,
        containerd_address: addr,
        namespace: ns,
    })
}

impl DockerInfo {
    /// The stores this daemon uses, most likely first.
    pub fn stores(&self) -> Vec<PathBuf> {
        let own = self.root_dir.join("containerd/daemon");
        let system = PathBuf::from("/var/lib/containerd");
        if !self.containerd_snapshotter {
            return vec![self.root_dir.clone()];
        }
        // dockerd's own containerd listens under its exec root (…/docker/containerd/…).
        let runs_own = self.containerd_address.as_deref().is_none_or(|a| a.contains("/docker/containerd/"));
        if runs_own { vec![own, system] } else { vec![system, own] }
    }
}

/// Ask the Docker daemon (if any) where its images are; empty when none answers.
/// Asked once per process.
pub fn docker_stores() -> Vec<PathBuf> {
    static ASKED: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    ASKED
        .get_or_init(|| {
            let Some(sock) = docker_socket() else { return Vec::new() };
            if !sock.exists() {
                return Vec::new();
            }
            match query(&sock) {
                Ok(i) => {
                    log::debug!("docker at {}: root {}, driver {}", sock.display(), i.root_dir.display(), i.driver);
                    i.stores()
                }
                Err(e) => {
                    log::info!("could not ask Docker at {} where its images are: {e}", sock.display());
                    Vec::new()
                }
            }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies() {
        let r = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}xx";
        assert_eq!(http_body(r).unwrap(), b"{}");
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(http_body(r).unwrap(), b"{\"a\":1}");
        let r = b"HTTP/1.0 200 OK\r\n\r\n{\"x\":1}";
        assert_eq!(http_body(r).unwrap(), b"{\"x\":1}");
        for bad in [
            &b"HTTP/1.0 404 Not Found\r\n\r\n"[..],
            b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\n{}",
            b"HTTP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            b"SSH-2.0\r\n\r\n",
            b"HTTP/1.0 200 OK",
            b"",
        ] {
            assert!(http_body(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn info_fields() {
        let i = parse_info(br#"{"DockerRootDir":"/data/docker","Driver":"overlayfs",
            "DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]],
            "Containerd":{"Address":"/run/containerd/containerd.sock","Namespaces":{"Containers":"moby","Plugins":"plugins.moby"}}}"#)
        .unwrap();
        assert!(i.containerd_snapshotter);
        assert_eq!(i.namespace.as_deref(), Some("moby"));
        assert_eq!(i.stores(), vec![PathBuf::from("/var/lib/containerd"), PathBuf::from("/data/docker/containerd/daemon")]);
        let i = parse_info(br#"{"DockerRootDir":"/srv/d","Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"]]}"#).unwrap();
        assert!(!i.containerd_snapshotter);
        assert_eq!(i.stores(), vec![PathBuf::from("/srv/d")]);
        let i = parse_info(br#"{"DockerRootDir":"/d","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]],
            "Containerd":{"Address":"/var/run/docker/containerd/containerd.sock","Namespaces":{"Containers":"../x"}}}"#).unwrap();
        assert_eq!(i.stores()[0], PathBuf::from("/d/containerd/daemon"));
        assert_eq!(i.namespace, None, "an invalid namespace is dropped");
        for bad in [&br#"{"DockerRootDir":"relative"}"#[..], br#"{}"#, b"[", br#"{"DockerRootDir":"/a\u0000b"}"#] {
            assert!(parse_info(bad).is_err());
        }
    }
}
