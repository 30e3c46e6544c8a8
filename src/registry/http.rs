//! The HTTP transport: one `ureq` agent with rustls, the system's roots plus the registry's
//! cert dir, and the translation of transport failures into what the user can act on.
//!
//! ```text
//! roots   = system (rustls-native-certs) + DIR/*.crt
//! client  = DIR/NAME.cert + DIR/NAME.key (optional)
//! DIR     = --cert-dir, else /etc/containers/certs.d/HOST[:PORT] and /etc/docker/certs.d/HOST[:PORT]
//! ```
//! Why ureq: a small, well-kept blocking client; rustls without OpenSSL; connection
//! pooling, per-read timeouts and proxies from the environment; no async runtime to
//! start in a process that forks into a FUSE daemon afterwards (reqwest's blocking client
//! runs a tokio runtime on a thread).
//!
//! Invariants: the agent never follows redirects (the client decides, per request kind,
//! where it may be sent) and never turns an HTTP status into an error (the client reads
//! every status); every request has connect and per-read timeouts, so a silent peer cannot
//! hang a download forever; certificates and keys are checked here, so a bad `*.key`
//! is an error line, never a panic inside the TLS stack.

use super::error::{RegistryError, excerpt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ureq::http::Response;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// How to verify the registry's TLS certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `--tls-verify=false` (also allows plain HTTP to any host).
    pub insecure: bool,
    /// `--cert-dir DIR`.
    pub cert_dir: Option<PathBuf>,
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone)]
pub enum NetError {
    /// The peer does not speak TLS (a plain HTTP server): another scheme may work.
    NotTls(String),
    /// The certificate is not trusted, expired, or for another name.
    Cert(String),
    /// Another TLS failure.
    Tls(String),
    /// DNS failed: no point in retrying.
    NoHost(String),
    /// Refused, reset, timed out, cut off: worth a retry.
    Transient(String),
    /// Anything else (bad URL, protocol violation).
    Other(String),
}

impl NetError {
    pub fn retriable(&self) -> bool {
        matches!(self, NetError::Transient(_))
    }
    /// The error line for a request to `host`.
    pub fn into_error(self, host: &str) -> RegistryError {
        let host = host.to_string();
        match self {
            NetError::Cert(d) | NetError::Tls(d) | NetError::NotTls(d) => RegistryError::Tls { host, detail: d },
            NetError::NoHost(d) | NetError::Transient(d) => RegistryError::Unreachable { host, detail: d },
            NetError::Other(d) => RegistryError::Protocol { host, detail: d },
        }
    }
}

fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(r) = x.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = x.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(r) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(r);
        }
        cur = x.source();
    }
    None
}

fn classify_rustls(r: &rustls::Error) -> NetError {
    match r {
        rustls::Error::InvalidCertificate(c) => NetError::Cert(format!("certificate not accepted: {}", cert_reason(c))),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            NetError::NotTls("the server does not speak TLS".into())
        }
        other => NetError::Tls(excerpt(&other.to_string(), 160)),
    }
}

fn cert_reason(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match c {
        C::UnknownIssuer => "issued by an unknown CA".into(),
        C::Expired | C::ExpiredContext { .. } => "expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => "issued for another name".into(),
        C::BadSignature => "bad signature".into(),
        C::Revoked => "revoked".into(),
        other => excerpt(&format!("{other:?}"), 80),
    }
}

/// Translate a ureq failure (no HTTP answer) into a [`NetError`].
pub fn classify(e: &ureq::Error) -> NetError {
    use std::io::ErrorKind as K;
    // ureq's error has no source(): look inside an I/O error for what rustls said.
    let tls = match e {
        ureq::Error::Io(io) => io.get_ref().and_then(|i| find_rustls(i)),
        _ => None,
    };
    if let Some(r) = tls {
        return classify_rustls(r);
    }
    match e {
        ureq::Error::Rustls(r) => classify_rustls(r),
        ureq::Error::HostNotFound => NetError::NoHost("host not found (DNS)".into()),
        ureq::Error::ConnectionFailed => NetError::Transient("connection failed".into()),
        ureq::Error::Timeout(t) => NetError::Transient(format!("timed out ({t})")),
        ureq::Error::Tls(m) => NetError::Tls((*m).to_string()),
        ureq::Error::Io(io) => match io.kind() {
            K::ConnectionRefused => NetError::Transient("connection refused".into()),
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                NetError::Transient("connection lost".into())
            }
            K::TimedOut | K::WouldBlock => NetError::Transient("timed out".into()),
            K::NetworkUnreachable | K::HostUnreachable | K::AddrNotAvailable | K::NetworkDown => {
                NetError::Transient(format!("network unreachable ({})", io.kind()))
            }
            k => NetError::Transient(format!("I/O error ({k})")),
        },
        ureq::Error::Protocol(_) | ureq::Error::BodyStalled => NetError::Transient(excerpt(&e.to_string(), 120)),
        other => NetError::Other(excerpt(&other.to_string(), 160)),
    }
}

/// The cert dirs for `registry`: `--cert-dir`, else the conventional per-registry dirs
/// that exist.
pub fn cert_dirs(opts: &TlsOptions, registry: &str) -> Vec<PathBuf> {
    if let Some(d) = &opts.cert_dir {
        return vec![d.clone()];
    }
    // `registry` passed reference::valid_registry: one safe component.
    ["/etc/containers/certs.d", "/etc/docker/certs.d"]
        .iter()
        .map(|b| Path::new(b).join(registry))
        .filter(|p| p.is_dir())
        .collect()
}

fn read_small(p: &Path) -> Result<Vec<u8>, RegistryError> {
    let data = std::fs::read(p).map_err(|e| RegistryError::io(p, e))?;
    if data.len() > 1 << 20 {
        return Err(RegistryError::Io { path: p.into(), detail: "larger than 1 MiB: not a certificate or key".into() });
    }
    Ok(data)
}

/// CA certificates and client pairs from `dir` (skopeo's --cert-dir layout).
fn load_cert_dir(dir: &Path, roots: &mut Vec<Certificate<'static>>) -> Result<Option<ClientCert>, RegistryError> {
    let rd = std::fs::read_dir(dir).map_err(|e| RegistryError::io(dir, e))?;
    let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    names.sort();
    let mut client = None;
    for p in names {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        let bad = |what: &str| RegistryError::Io { path: p.clone(), detail: format!("not a valid {what}") };
        match ext {
            "crt" => {
                let data = read_small(&p)?;
                let before = roots.len();
                for item in ureq::tls::parse_pem(&data) {
                    if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                        roots.push(c.to_owned());
                    }
                }
                if roots.len() == before {
                    return Err(bad("PEM certificate file (no certificate in it)"));
                }
            }
            "cert" => {
                let key_path = p.with_extension("key");
                if !key_path.is_file() {
                    return Err(RegistryError::Io { path: p.clone(), detail: format!("client certificate without its key {}", key_path.display()) });
                }
                let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&read_small(&p)?)
                    .filter_map(|i| match i {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                        _ => None,
                    })
                    .collect();
                if chain.is_empty() {
                    return Err(bad("PEM client certificate"));
                }
                let kd = read_small(&key_path)?;
                let key = PrivateKey::from_pem(&kd).map_err(|_| RegistryError::Io {
                    path: key_path.clone(),
                    detail: "not a valid PEM private key".into(),
                })?;
                check_client_pair(&chain, &kd).map_err(|d| RegistryError::Io { path: p.clone(), detail: d })?;
                client = Some(ClientCert::new_with_certs(&chain, key));
            }
            _ => {}
        }
    }
    Ok(client)
}

/// rustls would panic inside ureq on a key it cannot use: check the pair first.
fn check_client_pair(chain: &[Certificate<'static>], key_pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = chain.iter().map(|c| CertificateDer::from(c.der().to_vec())).collect();
    let key_der = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| "not a usable PEM private key".to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(certs, key_der)
        .map(|_| ())
        .map_err(|e| format!("client certificate and key do not go together: {}", excerpt(&e.to_string(), 100)))
}

/// The system's trusted roots, loaded once per process.
fn system_roots() -> &'static Vec<Certificate<'static>> {
    static ROOTS: std::sync::OnceLock<Vec<Certificate<'static>>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let r = rustls_native_certs::load_native_certs();
        if !r.errors.is_empty() {
            log::debug!("{} errors loading the system's CA certificates", r.errors.len());
        }
        r.certs.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect()
    })
}

/// One agent for one registry.
pub struct Transport {
    agent: ureq::Agent,
    pub insecure: bool,
}

impl Transport {
    pub fn new(opts: &TlsOptions, registry: &str) -> Result<Transport, RegistryError> {
        let mut roots = system_roots().clone();
        let mut client = None;
        for d in cert_dirs(opts, registry) {
            if let Some(c) = load_cert_dir(&d, &mut roots)? {
                client = Some(c);
            }
        }
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .client_cert(client)
            .disable_verification(opts.insecure)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("unionmount/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .max_response_header_size(256 << 10)
            .tls_config(tls)
            .build()
            .new_agent();
        Ok(Transport { agent, insecure: opts.insecure })
    }

    /// GET (or HEAD) `url` with `headers`; any HTTP status is an `Ok`.
    pub fn get(&self, url: &str, head: bool, headers: &[(&str, String)]) -> Result<Response<ureq::Body>, NetError> {
        let r = if head {
            let mut b = self.agent.head(url);
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            b.call()
        } else {
            let mut b = self.agent.get(url);
            for (k, v) in headers {
                b = b.header(*k, v);
            }
            b.call()
        };
        r.map_err(|e| classify(&e))
    }

    /// POST a form (`application/x-www-form-urlencoded`).
    pub fn post_form(&self, url: &str, headers: &[(&str, String)], form: &str) -> Result<Response<ureq::Body>, NetError> {
        let mut b = self.agent.post(url).header("Content-Type", "application/x-www-form-urlencoded");
        for (k, v) in headers {
            b = b.header(*k, v);
        }
        b.send(form).map_err(|e| classify(&e))
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters pass).
pub fn pct(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// Read a response body of at most `cap` bytes (more is an error).
pub fn read_capped(resp: Response<ureq::Body>, cap: u64) -> Result<Vec<u8>, NetError> {
    use std::io::Read;
    let mut b = Vec::new();
    let r = resp.into_body().into_reader();
    crate::cancel::Reader(r).take(cap + 1).read_to_end(&mut b).map_err(|e| {
        if crate::cancel::is_interrupted(&e) {
            NetError::Other("interrupted".into())
        } else {
            NetError::Transient(format!("reading the answer: {}", e.kind()))
        }
    })?;
    if b.len() as u64 > cap {
        return Err(NetError::Other(format!("answer larger than {cap} bytes")));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent() {
        assert_eq!(pct("repository:team/tiny:pull"), "repository%3Ateam%2Ftiny%3Apull");
        assert_eq!(pct("a b&c=d"), "a%20b%26c%3Dd");
    }

    #[test]
    fn cert_dir_errors_are_lines_not_panics() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("ca.crt"), "not a cert").unwrap();
        let opts = TlsOptions { insecure: false, cert_dir: Some(t.path().into()) };
        let e = Transport::new(&opts, "r:1").err().unwrap().to_string();
        assert!(e.contains("ca.crt") && e.contains("no certificate"), "{e}");
        std::fs::remove_file(t.path().join("ca.crt")).unwrap();
        std::fs::write(t.path().join("me.cert"), "x").unwrap();
        let e = Transport::new(&opts, "r:1").err().unwrap().to_string();
        assert!(e.contains("without its key"), "{e}");
        let missing = TlsOptions { insecure: false, cert_dir: Some(t.path().join("nope")) };
        assert!(Transport::new(&missing, "r:1").is_err());
        assert!(Transport::new(&TlsOptions::default(), "r:1").is_ok());
    }
}
