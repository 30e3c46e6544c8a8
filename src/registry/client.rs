//! The distribution API client for one repository: scheme, retries, auth, redirects.
//!
//! ```text
//! first request: GET https://HOST/v2/ ─ok─> https
//!                     └ not TLS / refused, and HOST is loopback or --tls-verify=false ─> http
//! request: ─401─> auth.answer(challenge) ─> again (once)
//!          ─429/5xx, refused, reset, timeout─> back off 0.5 s, 1 s, 2 s ─> again (4 tries)
//!          ─3xx─> same host: follow; other host: only for blobs, without Authorization
//! ```
//! Invariants: the registry host comes from the user's reference, never from a server;
//! a redirect target is an absolute http(s) URL or a path, never a downgrade to plain HTTP
//! for a host that may not have it; credentials are sent only to the registry's own
//! origin (and the token realm, see auth.rs); every wait checks for Ctrl-C; a response
//! body is read through a size cap or into a caller that bounds it.

use super::auth::Auth;
use super::error::{RegistryError, excerpt};
use super::http::{NetError, TlsOptions, Transport, read_capped};
use super::manifest::ACCEPT;
use super::reference::{RemoteRef, host_of, is_loopback};
use crate::store::digest::Digest;
use crate::store::registry::MAX_MANIFEST;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;
use ureq::http::Response;

/// Attempts for one request (transient failures and 5xx).
pub const MAX_TRIES: u32 = 4;
const MAX_REDIRECTS: u32 = 5;

/// What a request is for: decides where redirects may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Manifest,
    Blob,
}

/// A manifest as fetched.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    /// Computed from the bytes.
    pub digest: Digest,
}

/// A blob download as answered.
pub enum BlobAnswer {
    /// The body, starting at byte `start` of the blob (0 when the server ignored Range).
    Body { start: u64, reader: Box<dyn Read + Send> },
    /// 416: the range asked for is not there.
    RangeNotSatisfiable,
}

/// A client for one repository of one registry. Shared by the download threads.
pub struct Client {
    t: Transport,
    /// `127.0.0.1:5000`, `registry-1.docker.io`.
    endpoint: String,
    /// For messages: the reference as the user named the image.
    name: String,
    repo: String,
    allow_http: bool,
    base: Mutex<Option<String>>,
    auth: Auth,
}

fn origin(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(j) => &url[..after + j],
        None => url,
    }
}

fn authority(url: &str) -> &str {
    let o = origin(url);
    o.split_once("://").map(|x| x.1).unwrap_or(o)
}

/// Resolve a `Location` header against the URL it answered (absolute, scheme-relative,
/// absolute-path and relative forms). None for anything that is not an http(s) URL.
pub fn resolve_location(cur: &str, loc: &str) -> Option<String> {
    if loc.is_empty() || loc.len() > 16 << 10 || loc.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return None;
    }
    let abs = if loc.starts_with("https://") || loc.starts_with("http://") {
        loc.to_string()
    } else if let Some(rest) = loc.strip_prefix("//") {
        format!("{}://{rest}", cur.split("://").next()?)
    } else if loc.starts_with('/') {
        format!("{}{loc}", origin(cur))
    } else if loc.split(['/', '?']).next().is_some_and(|first| first.contains(':')) {
        return None; // another scheme (`file:`, `javascript:`)
    } else {
        let path_end = cur.find('?').unwrap_or(cur.len());
        let dir = &cur[..cur[..path_end].rfind('/')? + 1];
        format!("{dir}{loc}")
    };
    let uri: ureq::http::Uri = abs.parse().ok()?;
    (uri.host().is_some_and(|h| !h.is_empty()) && matches!(uri.scheme_str(), Some("http" | "https"))).then_some(abs)
}

fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// Back-off before try number `tries` (1-based): 0.5 s, 1 s, 2 s, …, at most 8 s.
fn backoff(tries: u32, retry_after: Option<&str>) -> Duration {
    let asked = retry_after.and_then(|s| s.trim().parse::<u64>().ok()).map(|s| Duration::from_secs(s.min(10)));
    asked.unwrap_or_else(|| Duration::from_millis(500u64 << (tries.saturating_sub(1)).min(4)))
}

/// An error code from a distribution error body (`{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`).
fn error_code(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct E {
        code: String,
    }
    #[derive(serde::Deserialize)]
    struct B {
        errors: Vec<E>,
    }
    let b: B = serde_json::from_slice(body).ok()?;
    let c = b.errors.into_iter().next()?.code;
    (c.len() <= 40 && c.bytes().all(|x| x.is_ascii_uppercase() || x == b'_')).then_some(c)
}

impl Client {
    pub fn new(r: &RemoteRef, tls: &TlsOptions) -> Result<Client, RegistryError> {
        let t = Transport::new(tls, &r.registry)?;
        Ok(Client {
            allow_http: tls.insecure || is_loopback(r.host_only()),
            endpoint: r.endpoint().to_string(),
            name: format!("{}/{}", r.registry, r.repo),
            repo: r.repo.clone(),
            base: Mutex::new(None),
            auth: Auth::new(&r.registry, &r.repo),
            t,
        })
    }

    fn net(&self, e: NetError) -> RegistryError {
        e.into_error(&self.endpoint)
    }

    /// One GET of `/v2/` with `scheme`, retried while the failure is transient.
    fn ping(&self, scheme: &str) -> Result<(), NetError> {
        let url = format!("{scheme}://{}/v2/", self.endpoint);
        let mut tries = 0;
        loop {
            match self.t.get(&url, false, &[]) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tries += 1;
                    if !e.retriable() || tries >= MAX_TRIES {
                        return Err(e);
                    }
                    log::debug!("{url}: {e:?}, trying again");
                    if crate::cancel::sleep(backoff(tries, None)).is_err() {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// `https://HOST` or `http://HOST`, decided by the first contact.
    fn base(&self) -> Result<String, RegistryError> {
        if let Some(b) = self.base.lock().ok().and_then(|g| g.clone()) {
            return Ok(b);
        }
        crate::cancel::check()?;
        let chosen = match self.ping("https") {
            Ok(()) => "https",
            Err(e @ (NetError::Cert(_) | NetError::Tls(_))) => return Err(self.net(e)),
            Err(e) if !self.allow_http => {
                crate::cancel::check()?;
                return Err(self.net(e));
            }
            Err(https_err) => match self.ping("http") {
                Ok(()) => "http",
                Err(e) => {
                    crate::cancel::check()?;
                    return Err(self.net(if matches!(https_err, NetError::NotTls(_)) { e } else { https_err }));
                }
            },
        };
        log::debug!("registry {}: using {chosen}", self.endpoint);
        let b = format!("{chosen}://{}", self.endpoint);
        if let Ok(mut g) = self.base.lock() {
            *g = Some(b.clone());
        }
        Ok(b)
    }

    /// Send a GET for `path` (under the registry), answering auth challenges, retrying
    /// transient failures and following the redirects `kind` allows.
    fn send(&self, kind: Kind, path: &str, headers: &[(&str, String)]) -> Result<Response<ureq::Body>, RegistryError> {
        let base = self.base()?;
        let mut url = format!("{base}{path}");
        let (mut tries, mut answered, mut redirects) = (0u32, false, 0u32);
        loop {
            crate::cancel::check()?;
            let own = origin(&url) == base;
            let mut h: Vec<(&str, String)> = headers.to_vec();
            if own && let Some(a) = self.auth.header() {
                h.push(("Authorization", a));
            }
            let resp = match self.t.get(&url, false, &h) {
                Ok(r) => r,
                Err(e) => {
                    tries += 1;
                    if e.retriable() && tries < MAX_TRIES {
                        log::debug!("{}: {e:?}, trying again", authority(&url));
                        crate::cancel::sleep(backoff(tries, None))?;
                        continue;
                    }
                    return Err(e.into_error(authority(&url)));
                }
            };
            let status = resp.status().as_u16();
            match status {
                401 if own => {
                    if answered {
                        return Err(self.auth.unauthorized());
                    }
                    let wa = header(&resp, "www-authenticate");
                    self.auth.answer(wa.as_deref(), &self.t, self.t.insecure)?;
                    answered = true;
                }
                403 if own => return Err(self.auth.unauthorized()),
                429 | 500 | 502 | 503 | 504 => {
                    tries += 1;
                    if tries >= MAX_TRIES {
                        return Err(RegistryError::Server { host: authority(&url).into(), status, tries });
                    }
                    log::debug!("{}: HTTP {status}, trying again", authority(&url));
                    crate::cancel::sleep(backoff(tries, header(&resp, "retry-after").as_deref()))?;
                }
                301 | 302 | 303 | 307 | 308 => {
                    redirects += 1;
                    let loc = header(&resp, "location").unwrap_or_default();
                    let bad = |d: String| RegistryError::Protocol { host: authority(&url).into(), detail: d };
                    if redirects > MAX_REDIRECTS {
                        return Err(bad("too many redirects".into()));
                    }
                    let next = resolve_location(&url, &loc)
                        .ok_or_else(|| bad(format!("redirect to an invalid location {:?}", excerpt(&loc, 80))))?;
                    let same_host = authority(&next) == self.endpoint;
                    if !same_host && kind != Kind::Blob {
                        return Err(bad(format!("redirect of a manifest request to another host ({}) refused", excerpt(authority(&next), 80))));
                    }
                    let plain_ok = self.t.insecure || is_loopback(host_of(authority(&next)));
                    if next.starts_with("http://") && !plain_ok {
                        return Err(bad(format!("redirect to plain HTTP ({}) refused", excerpt(authority(&next), 80))));
                    }
                    url = next;
                }
                _ => return Ok(resp),
            }
        }
    }

    /// Fetch a manifest or index by tag or digest (capped at `MAX_MANIFEST`); a digest
    /// reference is checked against the content.
    pub fn manifest(&self, reference: &str) -> Result<Fetched, RegistryError> {
        let path = format!("/v2/{}/manifests/{reference}", self.repo);
        let resp = self.send(Kind::Manifest, &path, &[("Accept", ACCEPT.to_string())])?;
        let status = resp.status().as_u16();
        let sep = if reference.starts_with("sha256:") || reference.starts_with("sha512:") { '@' } else { ':' };
        let shown = format!("{}{sep}{reference}", self.name);
        if status == 404 {
            let code = read_capped(resp, 64 << 10).ok().and_then(|b| error_code(&b)).unwrap_or_else(|| "HTTP 404".into());
            return Err(RegistryError::NotFound { reference: shown, code });
        }
        if status != 200 {
            return Err(RegistryError::Protocol { host: self.endpoint.clone(), detail: format!("manifest request answered HTTP {status}") });
        }
        let content_type = header(&resp, "content-type");
        let bytes = read_capped(resp, MAX_MANIFEST).map_err(|e| self.net(e))?;
        crate::cancel::check()?;
        let digest = match Digest::parse(reference) {
            Ok(want) => {
                let mut v = want.verifier();
                v.update(&bytes);
                v.finish().map_err(|m| RegistryError::mismatch("manifest", m))?;
                want
            }
            Err(_) => Digest::sha256_of(&bytes),
        };
        Ok(Fetched { bytes, content_type, digest })
    }

    /// Fetch a small blob (a config) of exactly `size` bytes and check its digest.
    pub fn blob_bytes(&self, d: &Digest, size: u64, what: &str) -> Result<Vec<u8>, RegistryError> {
        let resp = self.send(Kind::Blob, &format!("/v2/{}/blobs/{d}", self.repo), &[])?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(RegistryError::BlobNotFound { reference: self.name.clone(), digest: d.clone() }),
            s => {
                return Err(RegistryError::Protocol { host: self.endpoint.clone(), detail: format!("{what} request answered HTTP {s}") });
            }
        }
        let b = read_capped(resp, size).map_err(|e| match e {
            NetError::Other(_) if crate::cancel::signal().is_none() => RegistryError::Protocol {
                host: self.endpoint.clone(),
                detail: format!("{what} {d} is larger than the {size} bytes its descriptor says"),
            },
            e => self.net(e),
        })?;
        crate::cancel::check()?;
        let mut v = d.verifier();
        v.update(&b);
        v.finish().map_err(|m| RegistryError::mismatch(what, m))?;
        Ok(b)
    }

    /// Start downloading blob `d` from byte `from` (a Range request when `from` > 0).
    pub fn blob(&self, d: &Digest, from: u64) -> Result<BlobAnswer, RegistryError> {
        let mut h = vec![];
        if from > 0 {
            h.push(("Range", format!("bytes={from}-")));
        }
        let resp = self.send(Kind::Blob, &format!("/v2/{}/blobs/{d}", self.repo), &h)?;
        let status = resp.status().as_u16();
        let start = match status {
            200 => 0,
            206 => {
                // "bytes START-END/TOTAL": the part must start where we asked.
                let cr = header(&resp, "content-range").unwrap_or_default();
                let start = cr.strip_prefix("bytes ").and_then(|r| r.split('-').next()).and_then(|s| s.trim().parse::<u64>().ok());
                if start != Some(from) {
                    return Err(RegistryError::Protocol {
                        host: self.endpoint.clone(),
                        detail: format!("asked for bytes from {from}, got Content-Range {:?}", excerpt(&cr, 60)),
                    });
                }
                from
            }
            416 => return Ok(BlobAnswer::RangeNotSatisfiable),
            404 => return Err(RegistryError::BlobNotFound { reference: self.name.clone(), digest: d.clone() }),
            s => {
                return Err(RegistryError::Protocol { host: self.endpoint.clone(), detail: format!("blob request answered HTTP {s}") });
            }
        };
        Ok(BlobAnswer::Body { start, reader: Box::new(resp.into_body().into_reader()) })
    }

    /// The registry host, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let cur = "https://r:5000/v2/tiny/blobs/sha256:ab?x=1";
        assert_eq!(resolve_location(cur, "/v2/x").unwrap(), "https://r:5000/v2/x");
        assert_eq!(resolve_location(cur, "https://s3.example.com/b?sig=1").unwrap(), "https://s3.example.com/b?sig=1");
        assert_eq!(resolve_location(cur, "//cdn.example.com/b").unwrap(), "https://cdn.example.com/b");
        assert_eq!(resolve_location(cur, "other").unwrap(), "https://r:5000/v2/tiny/blobs/other");
        for bad in ["", "file:///etc/passwd", "ftp://x/y", "https://", "/a b", "/a\r\nX: y", "javascript:alert(1)"] {
            assert!(resolve_location(cur, bad).is_none(), "{bad:?}");
        }
        assert_eq!(origin("http://h:1/a/b"), "http://h:1");
        assert_eq!(authority("http://h:1/a/b"), "h:1");
        assert_eq!(authority("http://h:1"), "h:1");
    }

    #[test]
    fn error_codes_and_backoff() {
        assert_eq!(error_code(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"x"}]}"#).unwrap(), "MANIFEST_UNKNOWN");
        assert!(error_code(br#"{"errors":[{"code":"<script>"}]}"#).is_none());
        assert!(error_code(b"nope").is_none());
        assert_eq!(backoff(1, None), Duration::from_millis(500));
        assert_eq!(backoff(3, None), Duration::from_secs(2));
        assert_eq!(backoff(3, Some("1")), Duration::from_secs(1));
        assert_eq!(backoff(3, Some("99999")), Duration::from_secs(10));
    }
}
