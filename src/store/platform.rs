//! Image platforms (`os/arch[/variant]`): the `--platform` flag, the host's platform, and
//! which entry of a multi-platform index matches. The one home of these rules: registries,
//! containerd, OCI layouts and `docker save` archives all choose with [`Platform`] and
//! read index entries' platforms as [`IndexPlatform`].
//!
//! Names follow the OCI image index (`linux`, `amd64`, `arm64`, `arm` + `v7`).
//! Invariants: a parsed [`Platform`] holds only `[a-z0-9._-]` components, at most 32
//! bytes each (so it can be printed and compared safely); matching treats a missing
//! variant as the architecture's default (`arm64` = `v8`, `amd64` = `v1`, `arm` = `v7`),
//! and a wanted platform without a variant accepts any variant of its architecture.

use std::fmt;

/// An OCI platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

fn valid_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

/// Go's name for an architecture Rust spells differently.
fn normalize_arch(a: &str) -> &str {
    match a {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "x86" | "i386" | "i686" => "386",
        "powerpc64le" => "ppc64le",
        "loongarch64" => "loong64",
        a => a,
    }
}

/// GOARCH of this machine, as image configs and indexes spell it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        // Rust names both byte orders powerpc64; Go does not.
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        a => normalize_arch(a),
    }
}

/// The `platform` of an index entry (or the platform fields of an image config) as a
/// store or registry wrote it: untrusted text, compared only through [`Platform`] and
/// shown only through [`IndexPlatform::display`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct IndexPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl IndexPlatform {
    /// `os/arch[/variant]`, each part escaped and cut short, for a message.
    pub fn display(&self) -> String {
        let part = |s: &str| {
            let mut out: String = s.chars().take(20).flat_map(char::escape_debug).collect();
            if s.chars().count() > 20 {
                out.push('…');
            }
            out
        };
        let mut s = format!("{}/{}", part(&self.os), part(&self.architecture));
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            s.push('/');
            s.push_str(&part(v));
        }
        s
    }
}

/// The variant an architecture implies when none is named.
fn default_variant(arch: &str) -> Option<&'static str> {
    match arch {
        "arm64" => Some("v8"),
        "amd64" => Some("v1"),
        "arm" => Some("v7"),
        _ => None,
    }
}

impl Platform {
    /// Parse `os/arch[/variant]` as given to `--platform`.
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || format!("invalid platform {s:?}: expected os/arch[/variant], e.g. linux/arm64 or linux/arm/v7");
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid_part(p)) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: normalize_arch(parts[1]).to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// The platform of this machine (`linux/amd64`, `linux/arm64`, …).
    pub fn host() -> Platform {
        Platform { os: std::env::consts::OS.to_string(), architecture: host_arch().to_string(), variant: None }
    }

    /// [`Platform::matches`] for an index entry's platform.
    pub fn accepts(&self, p: &IndexPlatform) -> bool {
        self.matches(&p.os, &p.architecture, p.variant.as_deref())
    }

    /// The entry of `entries` that matches best (the first of equals), if any.
    pub fn best<'a, T>(&self, entries: &'a [T], platform: impl Fn(&T) -> Option<&IndexPlatform>) -> Option<&'a T> {
        let mut best: Option<(u8, &T)> = None;
        for e in entries {
            if let Some(p) = platform(e)
                && let Some(s) = self.score(&p.os, &p.architecture, p.variant.as_deref())
                && best.is_none_or(|(b, _)| s > b)
            {
                best = Some((s, e));
            }
        }
        best.map(|(_, e)| e)
    }

    /// Does an index entry for `os`/`arch`/`variant` (as the index spells them) match?
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        if os != self.os || normalize_arch(arch) != self.architecture {
            return false;
        }
        let Some(want) = self.variant.as_deref() else { return true };
        let d = default_variant(&self.architecture);
        let got = variant.filter(|v| !v.is_empty()).or(d);
        Some(want) == got
    }

    /// How well an entry matches (higher is better): an exact variant beats the default.
    pub fn score(&self, os: &str, arch: &str, variant: Option<&str>) -> Option<u8> {
        if !self.matches(os, arch, variant) {
            return None;
        }
        let v = variant.filter(|v| !v.is_empty());
        Some(match (self.variant.as_deref(), v) {
            (Some(a), Some(b)) if a == b => 3,
            (None, None) => 2,
            (None, Some(v)) if Some(v) == default_variant(&self.architecture) => 2,
            _ => 1,
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        for (s, want) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/arm/v7", "linux/arm/v7"),
            ("linux/aarch64", "linux/arm64"),
            ("windows/amd64", "windows/amd64"),
        ] {
            assert_eq!(Platform::parse(s).unwrap().to_string(), want);
        }
        for bad in ["", "linux", "linux/", "/amd64", "linux/amd64/v1/x", "Linux/amd64", "linux/am d64", "a/b/../c"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        let h = Platform::host();
        assert_eq!(h.os, "linux");
        assert!(!h.architecture.contains('_'), "{h}");
    }

    #[test]
    fn matching() {
        let p = |s: &str| Platform::parse(s).unwrap();
        assert!(p("linux/arm64").matches("linux", "arm64", Some("v8")));
        assert!(p("linux/arm64/v8").matches("linux", "arm64", None));
        assert!(p("linux/arm64/v8").matches("linux", "arm64", Some("")));
        assert!(!p("linux/arm/v6").matches("linux", "arm", None));
        assert!(p("linux/arm/v7").matches("linux", "arm", None));
        assert!(p("linux/arm").matches("linux", "arm", Some("v6")));
        assert!(!p("linux/amd64").matches("windows", "amd64", None));
        assert!(!p("linux/amd64").matches("linux", "arm64", None));
        assert!(p("linux/amd64").matches("linux", "x86_64", None));
        let arm = p("linux/arm");
        assert!(arm.score("linux", "arm", Some("v7")) > arm.score("linux", "arm", Some("v6")));
    }

    /// What containerd's own parser (now this one) asserted: arm64/v8 is arm64, arm is
    /// arm/v7, x86_64 is amd64, and index entries match as containerd matches them.
    #[test]
    fn containerd_platforms() {
        let p = |s: &str| Platform::parse(s).unwrap();
        let ip = |os: &str, a: &str, v: Option<&str>| IndexPlatform { os: os.into(), architecture: a.into(), variant: v.map(Into::into) };
        let arm64v8 = p("linux/arm64/v8");
        assert!(arm64v8.accepts(&ip("linux", "arm64", None)) && p("linux/arm64").accepts(&ip("linux", "arm64", Some("v8"))));
        let entries = [ip("linux", "arm", Some("v6")), ip("linux", "arm", Some("v7"))];
        assert_eq!(p("linux/arm").best(&entries, |e| Some(e)), Some(&entries[1]), "arm means arm/v7");
        assert!(p("linux/arm").accepts(&ip("linux", "arm", None)));
        assert_eq!(p("linux/x86_64").architecture, "amd64");
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", "linux/amd 64", ""] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        let amd = p("linux/amd64");
        assert!(amd.accepts(&ip("linux", "amd64", None)));
        assert!(!amd.accepts(&ip("unknown", "unknown", None)));
        let arm = p("linux/arm/v6");
        assert!(arm.accepts(&ip("linux", "arm", Some("v6"))) && !arm.accepts(&ip("linux", "arm", Some("v7"))));
        assert_eq!(p("linux/arm/v7").to_string(), "linux/arm/v7");
        assert_eq!(ip("linux", "arm\n", Some("v7")).display(), "linux/arm\\n/v7");
    }
}
