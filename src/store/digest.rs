//! Digests, chain IDs and the validation of store identifiers.
//!
//! Invariants:
//! - a *digest* handed out by this module is always `sha256:` + 64 lowercase hex;
//! - [`chain_ids`] follows Docker: `ChainID(L0) = DiffID(L0)`,
//!   `ChainID(Ln) = sha256("<ChainID(n-1)> <DiffID(n)>")`, both with their `sha256:`
//!   prefix and exactly one space between, bottom layer first;
//! - [`safe_component`] is the gate every store-provided name (cache-id, layer id,
//!   blob hex) passes before it becomes part of a path: one component, never `.`/`..`,
//!   no `/`, no NUL, at most 255 bytes.
//!
//! Pure functions, no I/O except [`HashingReader`], which hashes what it passes on.

use sha2::{Digest as _, Sha256};
use std::io::Read;

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// True when `s` is exactly 64 lowercase hex characters.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

/// True when `s` is non-empty and only lowercase hex.
pub fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Validate `sha256:<64 hex>` and return the hex part.
pub fn parse_sha256(d: &str) -> Option<&str> {
    d.strip_prefix("sha256:").filter(|h| is_hex64(h))
}

/// Normalise an id given as `sha256:<hex>` or bare `<hex>` to `sha256:<hex>`.
pub fn normalize_id(s: &str) -> Option<String> {
    let h = s.strip_prefix("sha256:").unwrap_or(s);
    is_hex64(h).then(|| format!("sha256:{h}"))
}

/// Chain IDs for `diff_ids` (bottom first, each `sha256:<hex>`); result bottom first.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256_digest(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Why a store-provided name cannot be used as a path component.
pub fn check_component(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s == "." || s == ".." {
        return Err("is . or ..");
    }
    if s.len() > 255 {
        return Err("longer than 255 bytes");
    }
    if s.contains('/') {
        return Err("contains '/'");
    }
    if s.contains('\0') {
        return Err("contains NUL");
    }
    if s.chars().any(|c| c.is_control()) {
        return Err("contains a control character");
    }
    Ok(())
}

/// True when `s` is a single safe path component (see [`check_component`]).
pub fn safe_component(s: &str) -> bool {
    check_component(s).is_ok()
}

/// A reader that hashes every byte it yields and counts them.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), count: 0 }
    }
    /// Read to EOF (so trailing padding is hashed too); returns (digest, bytes).
    pub fn finish(mut self) -> std::io::Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((format!("sha256:{}", hex(&self.hasher.finalize())), self.count))
    }
}

impl<R: Read> HashingReader<R> {
    /// Like [`HashingReader::finish`], but hands the inner reader back.
    pub fn finish_keep(mut self) -> std::io::Result<(String, u64, R)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((format!("sha256:{}", hex(&self.hasher.finalize())), self.count, self.inner))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_empty() {
        assert_eq!(sha256_digest(b""), EMPTY);
    }

    #[test]
    fn chain_ids_follow_docker() {
        // Values from the tiny-image fixture: diff_ids of tiny:app and its layerdb dirs.
        let d: Vec<String> = [
            "45ba1fe9b143e7abf2bbc145f2b4751879cf4f2fcf089e9cdec7e6d658d38cbc",
            "6fef35898e7ac5012a4d4b565365ac59d8bb2f33bb4f6d9655371e0b973b3674",
        ]
        .iter()
        .map(|h| format!("sha256:{h}"))
        .collect();
        let c = chain_ids(&d);
        assert_eq!(c[0], d[0]);
        assert_eq!(c[1], sha256_digest(format!("{} {}", d[0], d[1]).as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn hex_checks() {
        let h = &EMPTY[7..];
        for (s, ok) in [(h, true), ("ABCD", false), ("", false), (&EMPTY[8..], false)] {
            assert_eq!(is_hex64(s), ok && s.len() == 64, "{s}");
        }
        assert_eq!(parse_sha256(EMPTY), Some(h));
        assert_eq!(parse_sha256("sha512:00"), None);
        assert_eq!(normalize_id(h).as_deref(), Some(EMPTY));
        assert_eq!(normalize_id(EMPTY).as_deref(), Some(EMPTY));
        assert_eq!(normalize_id("sha256:abc"), None);
    }

    #[test]
    fn components() {
        let long = "a".repeat(256);
        let table: &[(&str, bool)] = &[
            ("abc", true),
            ("2f3e0c21e91d5127", true),
            ("", false),
            (".", false),
            ("..", false),
            ("../x", false),
            ("a/b", false),
            ("/abs", false),
            ("a\0b", false),
            ("a\nb", false),
            (&long, false),
            ("..a", true),
        ];
        for (s, ok) in table {
            assert_eq!(safe_component(s), *ok, "{s:?}");
        }
    }

    #[test]
    fn hashing_reader_counts_all() {
        let r = HashingReader::new(&b"abc"[..]);
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 3);
        assert_eq!(d, sha256_digest(b"abc"));
    }
}
