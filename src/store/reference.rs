//! Image references: what the user typed, parsed and normalised the way Docker does.
//!
//! Accepted forms (pure parsing, no I/O):
//! ```text
//! sha256:<64 hex> | <64 hex>            full image id
//! [sha256:]<hex, 4..63 chars>           unique id prefix (Docker short id is 12)
//! name[:tag]                            tag defaults to `latest`
//! name@sha256:<64 hex>                  manifest digest (tag, if any, is ignored)
//! ```
//! Names normalise like Docker: `alpine` → `docker.io/library/alpine:latest`,
//! `user/app` → `docker.io/user/app:latest`; the first component is a registry when it
//! holds `.` or `:` or is `localhost` (`localhost/x`, `example.com:5000/a/b:t`).
//!
//! Invariants:
//! - a [`NamedRef`] always has a non-empty registry (`domain`) and path; its path
//!   components are lowercase `[a-z0-9]` runs joined by `.`, `_`, `__` or `-`;
//! - a `digest` is always a valid [`Digest`];
//! - error messages show the input through [`shown::name`] (escaped, cut short).
//! - a hex string of 4..63 characters is *both* an id prefix and a name; callers try
//!   the name first and the prefix second (Docker's order); a 64-hex string is only an id.
//! - [`NamedRef::matches`] is symmetric in spelling: `tiny:app` and
//!   `docker.io/library/tiny:app` are the same; a *short* query (no registry typed) also
//!   matches `localhost/<path>` (podman's behaviour for locally built images).

use super::digest::{Digest, is_lower_hex};
use super::shown;

/// The minimum length of an id prefix.
pub const MIN_PREFIX: usize = 4;

/// A parsed image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRef {
    /// Registry, e.g. `docker.io`, `localhost`, `example.com:5000`.
    pub domain: String,
    /// Repository path inside the registry (`library/alpine`).
    pub path: String,
    /// The path as typed when no registry was typed (`alpine`), else None.
    pub short_path: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// What the user asked for: a name, an id (or prefix), or a hex string that may be both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub raw: String,
    pub name: Option<NamedRef>,
    pub id: Option<IdQuery>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdQuery {
    /// A full image id.
    Full(Digest),
    /// Lowercase hex prefix, without `sha256:`.
    Prefix(String),
}

impl NamedRef {
    /// `domain/path`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
    /// The tag, `latest` when none was given.
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }
    /// The repository the way `docker images` prints it (`alpine`, `user/app`, `localhost/x`).
    pub fn familiar_repo(&self) -> String {
        if self.domain == "docker.io" {
            self.path.strip_prefix("library/").unwrap_or(&self.path).to_string()
        } else {
            self.repo()
        }
    }
    /// Fully qualified: `docker.io/library/alpine:latest` or `repo@sha256:…`.
    pub fn full(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{}", self.repo(), d),
            None => format!("{}:{}", self.repo(), self.tag_or_latest()),
        }
    }
    /// Familiar form with tag or digest (`alpine:latest`).
    pub fn familiar(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{}", self.familiar_repo(), d),
            None => format!("{}:{}", self.familiar_repo(), self.tag_or_latest()),
        }
    }

    /// Same repository (registry and path), tags and digests ignored.
    pub fn same_repo(&self, stored: &NamedRef) -> bool {
        if self.domain == stored.domain && self.path == stored.path {
            return true;
        }
        // podman: a short name also finds localhost/<name>.
        match (&self.short_path, stored.domain.as_str()) {
            (Some(p), "localhost") => *p == stored.path,
            _ => false,
        }
    }

    /// Does this query name `self` select the stored name `stored`?
    /// With a digest: same repository and same digest (tags ignored).
    /// Without: same repository and same tag (`latest` by default); stored digest-only
    /// names never match a tag query.
    pub fn matches(&self, stored: &NamedRef) -> bool {
        if !self.same_repo(stored) {
            return false;
        }
        match (&self.digest, &stored.digest) {
            (Some(q), Some(s)) => q == s,
            (Some(_), None) => false,
            (None, Some(_)) => false,
            (None, None) => self.tag_or_latest() == stored.tag_or_latest(),
        }
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut prev_sep = 0usize;
    for &ch in b {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            prev_sep = 0;
        } else if matches!(ch, b'.' | b'_' | b'-') {
            prev_sep += 1;
            // `__` is allowed, `-` may repeat, nothing else doubles.
            if prev_sep > 1 && ch != b'-' && ch != b'_' {
                return false;
            }
        } else {
            return false;
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 255
        && d.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']'))
}

/// Parse and normalise an image name (`name[:tag][@digest]`).
pub fn parse_name(s: &str) -> Result<NamedRef, String> {
    if s.is_empty() {
        return Err("empty image reference".into());
    }
    if s.len() > 4096 {
        return Err("image reference longer than 4096 bytes".into());
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid image reference \"{}\": contains whitespace", shown::name(s)));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            let d = Digest::parse(d).map_err(|e| format!("invalid reference \"{}\": {e}", shown::name(s)))?;
            (r, Some(d))
        }
        None => (s, None),
    };
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag
        && !valid_tag(t) {
            return Err(format!("invalid tag \"{}\" in \"{}\"", shown::name(t), shown::name(s)));
        }
    if name.is_empty() {
        return Err(format!("invalid image reference \"{}\": empty name", shown::name(s)));
    }
    let (domain, path, typed) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if !valid_domain(first) {
                return Err(format!("invalid registry \"{}\" in \"{}\"", shown::name(first), shown::name(s)));
            }
            let d = if first == "index.docker.io" { "docker.io" } else { first };
            (d.to_string(), rest.to_string(), false)
        }
        _ => ("docker.io".to_string(), name.to_string(), true),
    };
    for c in path.split('/') {
        if !valid_path_component(c) {
            if c.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(format!("invalid image name \"{}\": repository names must be lowercase", shown::name(s)));
            }
            return Err(format!("invalid image name \"{}\"", shown::name(s)));
        }
    }
    let full_path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.clone()
    };
    Ok(NamedRef {
        domain,
        path: full_path,
        short_path: typed.then_some(path),
        tag: tag.map(str::to_string),
        digest,
    })
}

/// Parse what the user typed.
pub fn parse_query(s: &str) -> Result<Query, String> {
    let raw = s.to_string();
    let hex = s.strip_prefix("sha256:");
    if let Some(h) = hex {
        if let Ok(d) = Digest::parse(s) {
            return Ok(Query { raw, name: None, id: Some(IdQuery::Full(d)) });
        }
        if h.len() >= MIN_PREFIX && is_lower_hex(h) {
            return Ok(Query { raw, name: None, id: Some(IdQuery::Prefix(h.to_string())) });
        }
        return Err(format!("invalid image id \"{}\": expected sha256:<hex>", shown::name(s)));
    }
    if let Ok(d) = Digest::from_sha256_hex(s) {
        return Ok(Query { raw, name: None, id: Some(IdQuery::Full(d)) });
    }
    let id = (s.len() >= MIN_PREFIX && is_lower_hex(s)).then(|| IdQuery::Prefix(s.to_string()));
    match parse_name(s) {
        Ok(n) => Ok(Query { raw, name: Some(n), id }),
        Err(e) if id.is_some() => {
            let _ = e;
            Ok(Query { raw, name: None, id })
        }
        Err(e) => Err(e),
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn distance(a: &str, b: &str) -> usize {
    strsim::levenshtein(a, b)
}

/// The last path segment with its tag (`example.com/team/tiny:v1` → `tiny:v1`).
fn tail(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Up to `n` candidates closest to `query`, nearest first, only reasonably close ones.
/// Both whole names and their last segments (`tiny:v1`) are compared, so a name from
/// another registry is still suggested.
pub fn closest<'a>(query: &str, candidates: impl IntoIterator<Item = &'a str>, n: usize) -> Vec<String> {
    let limit = |a: &str| (a.len() / 2).max(3);
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter_map(|c| {
            let whole = distance(query, c);
            let short = distance(tail(query), tail(c));
            if whole <= limit(query) {
                Some((whole, c))
            } else if short <= limit(tail(query)) {
                Some((short + 1, c))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(n).map(|(_, c)| c.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:dadb3b6384b75c6e5f9e75745e2bb2d4b38b6d8c01dcfa56536d8081605b571a";

    #[test]
    fn normalisation_table() {
        let table: &[(&str, &str)] = &[
            ("alpine", "docker.io/library/alpine:latest"),
            ("alpine:3.20", "docker.io/library/alpine:3.20"),
            ("user/app", "docker.io/user/app:latest"),
            ("docker.io/alpine", "docker.io/library/alpine:latest"),
            ("index.docker.io/library/alpine:1", "docker.io/library/alpine:1"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x:y", "localhost:5000/x:y"),
            ("example.com:5000/a/b:t", "example.com:5000/a/b:t"),
            ("example.com/team/tiny:v1", "example.com/team/tiny:v1"),
            ("a.b/c__d-e.f/g", "a.b/c__d-e.f/g:latest"),
            ("tiny:app", "docker.io/library/tiny:app"),
        ];
        for (input, want) in table {
            assert_eq!(parse_name(input).unwrap().full(), *want, "{input}");
        }
        let d = parse_name(&format!("alpine@{D}")).unwrap();
        assert_eq!(d.full(), format!("docker.io/library/alpine@{D}"));
        assert_eq!(d.familiar(), format!("alpine@{D}"));
        assert_eq!(parse_name("example.com/a:t").unwrap().familiar(), "example.com/a:t");
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "", "Alpine", "a b", "a//b", "/a", "a/", "a:", "a:-x", "a@sha256:abc", "a@md5:00",
            "-a", "a..b", "ex ample.com/a", ":tag", "a\nb",
        ] {
            assert!(parse_name(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_name("Alpine").unwrap_err().contains("lowercase"));
    }

    #[test]
    fn queries() {
        let q = parse_query(D).unwrap();
        assert_eq!(q.id, Some(IdQuery::Full(Digest::parse(D).unwrap())));
        assert!(q.name.is_none());
        let q = parse_query(&D[7..]).unwrap();
        assert_eq!(q.id, Some(IdQuery::Full(Digest::parse(D).unwrap())));
        let q = parse_query("dadb3b6384b7").unwrap();
        assert_eq!(q.id, Some(IdQuery::Prefix("dadb3b6384b7".into())));
        assert!(q.name.is_some(), "short hex is also a valid name");
        let q = parse_query("sha256:dadb").unwrap();
        assert_eq!(q.id, Some(IdQuery::Prefix("dadb".into())));
        assert!(parse_query("sha256:xyz").is_err());
        assert!(parse_query("sha256:abc").is_err(), "too short");
        let q = parse_query("abc").unwrap();
        assert!(q.id.is_none(), "3 hex is only a name");
        let q = parse_query("tiny:app").unwrap();
        assert!(q.id.is_none());
        assert!(parse_query("NOPE").is_err());
    }

    #[test]
    fn matching_table() {
        let m = |q: &str, s: &str| parse_name(q).unwrap().matches(&parse_name(s).unwrap());
        let digest = format!("tiny@{D}");
        let table: &[(&str, &str, bool)] = &[
            ("tiny:app", "tiny:app", true),
            ("tiny:app", "docker.io/library/tiny:app", true),
            ("docker.io/library/tiny:app", "tiny:app", true),
            ("tiny:app", "localhost/tiny:app", true),
            ("localhost/tiny:app", "localhost/tiny:app", true),
            ("localhost/tiny:app", "tiny:app", false),
            ("docker.io/library/tiny:app", "localhost/tiny:app", false),
            ("tiny", "tiny:latest", true),
            ("tiny", "tiny:app", false),
            ("tiny:app", "tiny:base", false),
            ("user/app", "localhost/user/app", true),
            ("example.com/team/tiny:v1", "example.com/team/tiny:v1", true),
            ("team/tiny:v1", "example.com/team/tiny:v1", false),
            (&digest, &digest, true),
            (&digest, "tiny:app", false),
            ("tiny:app", &digest, false),
        ];
        for (q, s, want) in table {
            assert_eq!(m(q, s), *want, "{q} vs {s}");
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        let long = "a/".repeat(3000);
        let weird = [
            "", ":", "@", "/", "//", "a@", "@sha256:", "é", "é:é", "tiny:é", "日本/語:x",
            "a:b:c", "a@sha256:é", "sha256:", "sha256:é", "\u{0}", "a\u{0}b", &long,
            "localhost", "localhost:", "localhost/", "a.b/", ".a/b", "a/.b", "0000", "sha256:0000é",
        ];
        for w in weird {
            let _ = parse_query(w);
            let _ = parse_name(w);
            let _ = closest(w, ["tiny:app", "é"], 3);
        }
    }

    #[test]
    fn suggestions() {
        let c = closest("tiny:ap", ["tiny:app", "tiny:base", "zzzzzzzzzzzz"], 3);
        assert_eq!(c[0], "tiny:app");
        assert!(!c.contains(&"zzzzzzzzzzzz".to_string()));
        let c = closest("example.com/team/tiny:v1", ["localhost/tiny:app"], 3);
        assert_eq!(c, vec!["localhost/tiny:app".to_string()]);
    }
}
