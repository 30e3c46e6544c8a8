//! A real registry for the tests: Debian's `docker-registry` (distribution 2.8) on
//! 127.0.0.1 on a free port with its own storage dir and config, filled with skopeo;
//! plus the pieces around it the tests need: a byte-relaying proxy that can slow the
//! answers down and records the requests (to see Range headers), a token server for the
//! bearer flow (JWTs signed with openssl), a self-signed CA for TLS.
//!
//! Everything listens on 127.0.0.1 only and is stopped when its guard drops.
#![allow(dead_code)]

use base64::Engine as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the registry tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    for bin in ["docker-registry", "skopeo", "openssl", "htpasswd"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("{bin} is not installed (.ci/run installs it)"));
        }
    }
    if !fixture().join("oci-layout.tar").exists() {
        return Some("fixture ../shared/fixtures/tiny-image not found".into());
    }
    None
}

/// True (after saying why) where a registry test cannot run: a tool or the fixture
/// missing, not root (the fixture holds device whiteouts and setuid files), or, for a
/// test that mounts (`needs_fuse`), no /dev/fuse.
pub fn skip(needs_fuse: bool) -> bool {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: {why}");
        return true;
    }
    if !crate::common::tree::is_root() || (needs_fuse && !Path::new("/dev/fuse").exists()) {
        let what = if needs_fuse { "root and /dev/fuse" } else { "root" };
        eprintln!("SKIP: needs {what} (the fixture holds device whiteouts and setuid files)");
        return true;
    }
    false
}

/// The binary with a clean credential environment (HOME in `home`).
pub fn um(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_unionmount"));
    c.env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DOCKER_CONFIG")
        .env_remove("XDG_CONFIG_HOME");
    c
}

pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/tiny-image")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, what: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start listening on 127.0.0.1:{port}");
}

/// How the registry authenticates.
#[derive(Clone)]
pub enum RegAuth {
    None,
    /// htpasswd file with one user.
    Basic { user: String, pass: String },
    /// Bearer tokens from `realm`, signed by the key whose certificate is `cert`.
    Token { realm: String, cert: PathBuf },
}

/// A running docker-registry.
pub struct Registry {
    pub dir: PathBuf,
    pub port: u16,
    config: PathBuf,
    child: Option<Child>,
    pub tls: bool,
}

impl Registry {
    /// Start a registry storing under `dir` (created).
    pub fn start(dir: &Path, auth: RegAuth, tls: Option<(&Path, &Path)>) -> Registry {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: unionmount-test\n",
            dir.join("data").display()
        );
        if let Some((cert, key)) = tls {
            cfg.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
        }
        match &auth {
            RegAuth::None => {}
            RegAuth::Basic { user, pass } => {
                let pw = dir.join("htpasswd");
                let st = Command::new("htpasswd").args(["-Bbc"]).arg(&pw).args([user, pass]).stderr(Stdio::null()).status().unwrap();
                assert!(st.success(), "htpasswd");
                cfg.push_str(&format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", pw.display()));
            }
            RegAuth::Token { realm, cert } => cfg.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
                cert.display()
            )),
        }
        let config = dir.join("config.yml");
        std::fs::write(&config, cfg).unwrap();
        let mut r = Registry { dir: dir.to_path_buf(), port, config, child: None, tls: tls.is_some() };
        r.restart();
        r
    }

    /// (Re)start the process on the same port and storage.
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        self.child = Some(child);
        wait_port(self.port, "docker-registry");
    }

    /// SIGKILL the registry (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file holding blob `digest` (`sha256:…`) in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `skopeo copy SRC docker://DEST` with `extra` flags; panics with skopeo's output on failure.
pub fn skopeo_copy(src: &str, dest: &str, extra: &[&str]) {
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .arg(src)
        .arg(dest)
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo copy {src} {dest}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The fixture's OCI layout extracted under `dir` (returns the layout dir).
pub fn oci_layout(dir: &Path) -> PathBuf {
    let d = dir.join("oci-layout");
    if !d.join("index.json").exists() {
        std::fs::create_dir_all(&d).unwrap();
        let st = Command::new("tar").arg("-xf").arg(fixture().join("oci-layout.tar")).arg("-C").arg(&d).status().unwrap();
        assert!(st.success());
    }
    d
}

/// Requests seen by a [`Proxy`] (request line and Range header of each).
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub requests: Vec<String>,
    pub ranges: Vec<String>,
}

/// A TCP relay in front of a server: answers can be slowed to `rate` bytes/s, and the
/// request heads are recorded.
pub struct Proxy {
    pub port: u16,
    pub seen: Arc<Mutex<Seen>>,
    /// Bytes per second of answers (0 = unthrottled).
    pub rate: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16, rate: u64) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let rate = Arc::new(AtomicU64::new(rate));
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, r2, st2) = (seen.clone(), rate.clone(), stop.clone());
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !st2.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let (s3, r3) = (s2.clone(), r2.clone());
                        std::thread::spawn(move || relay(c, target, s3, r3));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { port, seen, rate, stop }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn relay(client: TcpStream, target: u16, seen: Arc<Mutex<Seen>>, rate: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { return };
    let (mut c_r, mut s_w) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    // Client to server: record request heads, pass everything on.
    let up = std::thread::spawn(move || {
        let mut r = BufReader::new(&mut c_r);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            {
                let mut s = seen.lock().unwrap();
                if text.to_ascii_lowercase().starts_with("range:") {
                    s.ranges.push(text.clone());
                } else if text.starts_with("GET ") || text.starts_with("HEAD ") {
                    s.requests.push(text.clone());
                }
            }
            if s_w.write_all(&line).is_err() {
                break;
            }
        }
        let _ = s_w.shutdown(std::net::Shutdown::Write);
    });
    // Server to client, throttled.
    let (mut s_r, mut c_w) = (server, client);
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match s_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let r = rate.load(Ordering::SeqCst);
        if r > 0 {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / r as f64));
        }
        if c_w.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = c_w.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}

/// A self-signed CA and a server certificate for 127.0.0.1 made with openssl.
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn make_certs(dir: &Path) -> Certs {
    std::fs::create_dir_all(dir).unwrap();
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=unionmount test CA"], dir);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"], dir);
    openssl(&["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf"], dir);
    Certs { ca: dir.join("ca.crt"), cert: dir.join("server.crt"), key: dir.join("server.key") }
}

/// A token server for the bearer flow: Basic credentials in, a JWT (RS256, x5c header)
/// out, signed with openssl by a key whose self-signed certificate the registry trusts.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    /// Every scope asked for, in order.
    pub scopes: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl TokenServer {
    pub fn start(dir: &Path, user: &str, pass: &str) -> TokenServer {
        std::fs::create_dir_all(dir).unwrap();
        openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "tok.key", "-out", "tok.crt", "-days", "2", "-subj", "/CN=token signer"], dir);
        let der = Command::new("openssl").args(["x509", "-in", "tok.crt", "-outform", "DER"]).current_dir(dir).output().unwrap().stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")));
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sc, st, key) = (scopes.clone(), stop.clone(), dir.join("tok.key"));
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                let _ = serve_token(c, &want, &x5c, &key, &sc);
            }
        });
        TokenServer { port, cert: dir.join("tok.crt"), scopes, stop }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn unpct(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve_token(c: TcpStream, want: &str, x5c: &str, key: &Path, scopes: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut r = BufReader::new(c.try_clone()?);
    let mut first = String::new();
    r.read_line(&mut first)?;
    let mut auth = None;
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 || l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            auth = Some(v.trim().to_string());
        }
    }
    let target = first.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map(|x| x.1).unwrap_or("");
    let mut service = String::new();
    let mut access = Vec::new();
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = unpct(v);
        match k {
            "service" => service = v,
            "scope" => {
                scopes.lock().unwrap().push(v.clone());
                // repository:NAME:ACTIONS
                let parts: Vec<&str> = v.splitn(3, ':').collect();
                if parts.len() == 3 {
                    let actions: Vec<&str> = parts[2].split(',').collect();
                    access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": actions}));
                }
            }
            _ => {}
        }
    }
    let mut w = c;
    if auth.as_deref() != Some(want) {
        let body = r#"{"details":"invalid credentials"}"#;
        write!(w, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
        return Ok(());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "test-issuer", "sub": "alice", "aud": service, "exp": now + 600, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", scopes.lock().unwrap().len()), "access": access,
    });
    let signing = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(signing.as_bytes())?;
    let sig = child.wait_with_output()?.stdout;
    let token = format!("{signing}.{}", b64url(&sig));
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 600}).to_string();
    write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    Ok(())
}

/// An auth.json holding `user:pass` for `registry`.
pub fn auth_file(path: &Path, registry: &str, user: &str, pass: &str) {
    let a = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    std::fs::write(path, format!(r#"{{"auths":{{"{registry}":{{"auth":"{a}"}}}}}}"#)).unwrap();
}
