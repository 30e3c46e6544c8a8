//! Authentication: anonymous, Basic, and the Bearer token flow of the distribution spec.
//!
//! ```text
//! GET /v2/REPO/manifests/TAG ──401 WWW-Authenticate: Bearer realm="R",service="S",scope="SC"
//! GET R?service=S&scope=SC  (Basic credentials if any)  ──200 {"token": T}
//!   (an identity token instead: POST R grant_type=refresh_token&refresh_token=…)
//! GET /v2/REPO/manifests/TAG  Authorization: Bearer T  ──200
//! ```
//! Tokens are kept per scope for the life of the process (never written to disk).
//! Invariants: credentials are looked up once, only when a registry asks; a secret never
//! reaches a log line or an error; credentials go only to the registry itself and to the
//! realm it names, and never over plain HTTP to a host that is not this machine (unless
//! `--tls-verify=false`); a token is visible ASCII (it becomes a header), capped in size.

use super::credentials::{self, Lookup, Secret};
use super::error::{RegistryError, excerpt};
use super::http::{NetError, Transport, pct, read_capped};
use super::reference::is_loopback;
use base64::Engine as _;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Largest token answer read.
const MAX_TOKEN_ANSWER: u64 = 1 << 20;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parse `Bearer realm="…",service="…"` or `Basic realm="…"` (auth-params, quoted strings
/// with backslash escapes). Unknown schemes give None.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params: HashMap<String, String> = HashMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b' ' || b[i] == b',') {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = rest[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let c = rest[i..].chars().next()?;
                val.push(c);
                i += c.len_utf8();
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = rest[vs..i].trim().to_string();
        }
        params.insert(key, val);
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        }),
        _ => None,
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

fn valid_token(t: &str) -> bool {
    !t.is_empty() && t.len() <= 64 << 10 && t.bytes().all(|c| (0x21..=0x7e).contains(&c))
}

#[derive(Default)]
struct State {
    challenge: Option<Challenge>,
    /// Authorization header values by scope (`""` for Basic).
    headers: HashMap<String, String>,
}

/// The authentication state for one registry and repository.
pub struct Auth {
    registry: String,
    repo: String,
    lookup: OnceLock<Lookup>,
    state: Mutex<State>,
}

impl Auth {
    pub fn new(registry: &str, repo: &str) -> Auth {
        Auth { registry: registry.into(), repo: repo.into(), lookup: OnceLock::new(), state: Mutex::new(State::default()) }
    }

    /// The scope a pull needs.
    pub fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.repo)
    }

    fn creds(&self) -> &Lookup {
        self.lookup.get_or_init(|| credentials::lookup(&self.registry, &self.repo))
    }

    /// The `Authorization` value to send now, if any.
    pub fn header(&self) -> Option<String> {
        let st = self.state.lock().ok()?;
        match &st.challenge {
            Some(Challenge::Basic) => st.headers.get("").cloned(),
            Some(Challenge::Bearer { .. }) => st.headers.get(&self.pull_scope()).cloned(),
            None => None,
        }
    }

    /// The error for a refusal (after we tried what we had).
    pub fn unauthorized(&self) -> RegistryError {
        let l = self.creds();
        RegistryError::Unauthorized {
            registry: self.registry.clone(),
            repo: self.repo.clone(),
            sources: l.sources.clone(),
            sent: l.secret.is_some(),
        }
    }

    /// Answer a 401 carrying `www_authenticate`: get what the next try should send.
    /// `plain_ok`: may secrets go over plain HTTP to a non-loopback host (`--tls-verify=false`).
    pub fn answer(&self, www_authenticate: Option<&str>, t: &Transport, plain_ok: bool) -> Result<(), RegistryError> {
        let Some(ch) = www_authenticate.and_then(parse_challenge) else {
            return Err(self.unauthorized());
        };
        let scope = self.pull_scope();
        let header = match &ch {
            Challenge::Basic => match &self.creds().secret {
                Some(Secret::Password { username, password }) => {
                    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}")))
                }
                _ => return Err(self.unauthorized()),
            },
            Challenge::Bearer { realm, service, scope: wanted } => {
                let scope = wanted.clone().unwrap_or_else(|| scope.clone());
                let tok = self.fetch_token(t, realm, service.as_deref(), &scope, plain_ok)?;
                format!("Bearer {tok}")
            }
        };
        let mut st = self.state.lock().map_err(|_| self.unauthorized())?;
        let key = if matches!(ch, Challenge::Basic) { String::new() } else { scope };
        st.headers.insert(key, header);
        st.challenge = Some(ch);
        Ok(())
    }

    fn fetch_token(&self, t: &Transport, realm: &str, service: Option<&str>, scope: &str, plain_ok: bool) -> Result<String, RegistryError> {
        let uri: ureq::http::Uri = realm.parse().map_err(|_| RegistryError::Protocol {
            host: self.registry.clone(),
            detail: format!("token realm {:?} is not a URL", excerpt(realm, 80)),
        })?;
        let host = uri.host().unwrap_or("").to_string();
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if plain_ok || is_loopback(&host) => {}
            _ => {
                return Err(RegistryError::Protocol {
                    host: self.registry.clone(),
                    detail: format!(
                        "token realm {:?} is not an https URL: refusing to send credentials there (--tls-verify=false allows plain HTTP)",
                        excerpt(realm, 80)
                    ),
                });
            }
        }
        let realm_host = uri.authority().map(|a| a.as_str().to_string()).unwrap_or(host);
        let mut q = vec![];
        if let Some(s) = service {
            q.push(format!("service={}", pct(s)));
        }
        q.push(format!("scope={}", pct(scope)));
        let secret = self.creds().secret.clone();
        let net = |e: NetError| e.into_error(&realm_host);
        let resp = match &secret {
            Some(Secret::IdentityToken(rt)) => {
                let mut form = format!("grant_type=refresh_token&client_id=unionmount&refresh_token={}", pct(rt));
                for p in &q {
                    form.push('&');
                    form.push_str(p);
                }
                t.post_form(realm, &[], &form).map_err(net)?
            }
            other => {
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{sep}{}", q.join("&"));
                let mut h = vec![];
                if let Some(Secret::Password { username, password }) = other {
                    let v = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                    h.push(("Authorization", format!("Basic {v}")));
                }
                t.get(&url, false, &h).map_err(net)?
            }
        };
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.unauthorized());
        }
        if status != 200 {
            return Err(RegistryError::Protocol { host: realm_host, detail: format!("token service answered HTTP {status}") });
        }
        let body = read_capped(resp, MAX_TOKEN_ANSWER).map_err(net)?;
        let a: TokenAnswer = serde_json::from_slice(&body).map_err(|_| RegistryError::Protocol {
            host: realm_host.clone(),
            detail: "token service sent invalid JSON".into(),
        })?;
        let tok = a.token.filter(|t| !t.is_empty()).or(a.access_token).unwrap_or_default();
        if !valid_token(&tok) {
            return Err(RegistryError::Protocol { host: realm_host, detail: "token service sent no usable token".into() });
        }
        Ok(tok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into())
            })
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(r#"bearer realm=http://h/t, service = "a\"b""#),
            Some(Challenge::Bearer { realm: "http://h/t".into(), service: Some("a\"b".into()), scope: None })
        );
        for junk in ["", "Bearer", "Bearer service=x", "Negotiate abc", "Bearer realm=\"unterminated", "Bearer ==,,=\"", "é é=\"é"] {
            let _ = parse_challenge(junk);
        }
        assert_eq!(parse_challenge("Bearer service=x"), None, "realm is required");
        assert!(valid_token("eyJhbGciOi.x_y-z"));
        assert!(!valid_token("a b") && !valid_token("a\r\nX: y") && !valid_token(""));
    }
}
