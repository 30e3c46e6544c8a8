//! `docker://` references (skopeo's transport syntax) and where they are served from.
//!
//! ```text
//! docker://HOST[:PORT]/REPO[:TAG|@sha256:…]     docker://127.0.0.1:5000/team/tiny:app
//! docker://alpine  ->  docker.io/library/alpine:latest   (served by registry-1.docker.io)
//! ```
//! Names normalise as Docker does (store::reference). Invariants: the registry is a host
//! name, an IPv4 address or a bracketed IPv6 address, with an optional port 1..65535
//! (no `..`, no `/`, no user info), so it can be used in a URL and, as one component, in
//! a file name; the repository is lowercase path components; a digest, when given,
//! decides and the tag is only kept for display.

use crate::store::digest::Digest;
use crate::store::reference::parse_name;
use std::fmt;

/// The prefix that always means a registry.
pub const PREFIX: &str = "docker://";

/// A reference to an image in a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// As Docker names it: `docker.io`, `127.0.0.1:5000`, `example.com`.
    pub registry: String,
    /// Repository path inside the registry (`library/alpine`, `team/tiny`).
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// Check `host[:port]` (what a registry is called in a reference).
pub fn valid_registry(r: &str) -> bool {
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else { return false };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => (h, None),
            p => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return false,
            },
        }
    } else {
        match r.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    if let Some(p) = port
        && !(p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok_and(|n| n > 0))
    {
        return false;
    }
    r.starts_with('[') || (host.len() <= 253 && host.split('.').all(valid_label))
}

impl RemoteRef {
    /// Parse what follows `docker://` (the prefix itself is optional here).
    pub fn parse(s: &str) -> Result<RemoteRef, String> {
        let body = s.strip_prefix(PREFIX).unwrap_or(s);
        let n = parse_name(body)?;
        if !valid_registry(&n.domain) {
            return Err(format!("invalid registry {:?} in {s:?}: expected HOST[:PORT]", n.domain));
        }
        Ok(RemoteRef { registry: n.domain, repo: n.path, tag: n.tag, digest: n.digest })
    }

    /// The host (and port) requests go to: Docker Hub's API lives on registry-1.docker.io.
    pub fn endpoint(&self) -> &str {
        if self.registry == "docker.io" { "registry-1.docker.io" } else { &self.registry }
    }

    /// The host part without a port (IPv6 without brackets).
    pub fn host_only(&self) -> &str {
        host_of(self.endpoint())
    }

    /// What the manifest is asked for by: the digest if given, else the tag.
    pub fn manifest_ref(&self) -> String {
        match &self.digest {
            Some(d) => d.to_string(),
            None => self.tag_or_latest().to_string(),
        }
    }

    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// `registry/repo`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry, self.repo)
    }

    /// The name a tag lookup is cached under: `registry/repo:tag` (None with a digest).
    pub fn tag_key(&self) -> Option<String> {
        self.digest.is_none().then(|| format!("{}:{}", self.repository(), self.tag_or_latest()))
    }
}

/// The host of `host[:port]` (brackets of an IPv6 address removed).
pub fn host_of(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    hostport.rsplit_once(':').map(|(h, _)| h).unwrap_or(hostport)
}

/// May this host be spoken to over plain HTTP without `--tls-verify=false`? Only the
/// machine itself (`localhost`, 127.0.0.0/8, ::1), as Docker allows.
pub fn is_loopback(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

impl fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repository())?;
        match (&self.digest, &self.tag) {
            (Some(d), _) => write!(f, "@{d}"),
            (None, t) => write!(f, ":{}", t.as_deref().unwrap_or("latest")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:dadb3b6384b75c6e5f9e75745e2bb2d4b38b6d8c01dcfa56536d8081605b571a";

    #[test]
    fn parse_table() {
        let r = RemoteRef::parse("docker://alpine").unwrap();
        assert_eq!((r.registry.as_str(), r.repo.as_str(), r.tag_or_latest()), ("docker.io", "library/alpine", "latest"));
        assert_eq!(r.endpoint(), "registry-1.docker.io");
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        let r = RemoteRef::parse("docker://127.0.0.1:5000/team/tiny:app").unwrap();
        assert_eq!(r.endpoint(), "127.0.0.1:5000");
        assert_eq!(r.host_only(), "127.0.0.1");
        assert_eq!(r.manifest_ref(), "app");
        assert_eq!(r.tag_key().unwrap(), "127.0.0.1:5000/team/tiny:app");
        let r = RemoteRef::parse(&format!("docker://localhost:5000/tiny:app@{D}")).unwrap();
        assert_eq!(r.manifest_ref(), D);
        assert!(r.tag_key().is_none());
        assert_eq!(r.to_string(), format!("localhost:5000/tiny@{D}"));
        let r = RemoteRef::parse("docker://[::1]:5000/tiny").unwrap();
        assert_eq!(r.host_only(), "::1");
        assert!(is_loopback(r.host_only()));
    }

    #[test]
    fn rejects() {
        for bad in [
            "docker://",
            "docker://../x",
            "docker://a..b/x",
            "docker://exa_mple.com/x",
            "docker://example.com:0/x",
            "docker://example.com:99999/x",
            "docker://example.com:5x/x",
            "docker://[zz]/x",
            "docker://-a.com/x",
            "docker://Alpine",
            "docker://a b",
            "docker://x@sha256:00",
        ] {
            assert!(RemoteRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback() {
        for (h, want) in [
            ("localhost", true),
            ("127.0.0.1", true),
            ("127.9.9.9", true),
            ("::1", true),
            ("128.0.0.1", false),
            ("example.com", false),
            ("localhost.example.com", false),
            ("10.0.0.1", false),
        ] {
            assert_eq!(is_loopback(h), want, "{h}");
        }
    }
}
