//! Image platforms (`os/arch[/variant]`): the `--platform` flag, the host's platform, and
//! which entry of a multi-platform index matches (registries, containerd).
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
        "powerpc64le" | "powerpc64" => "ppc64le",
        a => a,
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
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: normalize_arch(std::env::consts::ARCH).to_string(),
            variant: None,
        }
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
}
