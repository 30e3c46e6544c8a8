//! Digests and store ids: parsed, never trusted, the only way either becomes a path.
//!
//! Invariants:
//! - a [`Digest`] is always `sha256:` + 64 lowercase hex or `sha512:` + 128 lowercase hex
//!   (the algorithms the OCI image spec registers); nothing else can be built: the field
//!   is private, [`Digest::parse`] and hashing are the only constructors, and
//!   deserialising goes through `parse`;
//! - a digest becomes a path only through [`Digest::blob_path`] (`blobs/<algo>/<hex>`) or
//!   [`Digest::content_path`] (`<algo>/<hex>`, under imagedb, layerdb, the layer cache):
//!   two plain components, never `..`, never absolute;
//! - a [`StoreId`] (Docker cache-id, containers-storage layer and image id) is 1..=128
//!   bytes of `[A-Za-z0-9_.-]` not starting with `.` or `-`: always one safe component;
//! - [`chain_ids`] follows Docker: `ChainID(L0) = DiffID(L0)`,
//!   `ChainID(Ln) = sha256("<ChainID(n-1)> <DiffID(n)>")`, bottom layer first;
//! - error messages echo input only as a short escaped excerpt ([`super::shown::excerpt`]).
//!
//! No I/O except [`VerifyingReader`], which hashes what it passes on.

use super::shown::excerpt;
use sha2::Digest as _;
use std::fmt;
use std::io::Read;
use std::path::PathBuf;

/// A hash algorithm a digest may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// `sha256` / `sha512`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    /// Length of the hex part.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
    /// A fresh incremental hasher.
    pub fn hasher(self) -> Hasher {
        Hasher(match self {
            Algorithm::Sha256 => HashState::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => HashState::Sha512(sha2::Sha512::new()),
        })
    }
}

/// A validated content digest; see the module invariants.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

/// Why a string is not a [`Digest`]; `Display` is one line with a short excerpt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestError {
    excerpt: String,
    why: &'static str,
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid digest {}: {}", self.excerpt, self.why)
    }
}
impl std::error::Error for DigestError {}

const EXPECTED: &str = "expected sha256:<64 lowercase hex> or sha512:<128 lowercase hex>";

fn is_lower_hex_byte(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// True when `s` is non-empty and only lowercase hex.
pub fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_lower_hex_byte)
}

/// True when `s` is exactly 64 lowercase hex characters.
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

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

impl Digest {
    /// Parse `algo:hex`; anything but the two accepted forms is an error.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let err = |why| DigestError { excerpt: excerpt(s.as_bytes()), why };
        let (algo, h) = s.split_once(':').ok_or_else(|| err(EXPECTED))?;
        let algo = match algo {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(err("unsupported algorithm (expected sha256 or sha512)")),
        };
        if h.len() != algo.hex_len() || !h.bytes().all(is_lower_hex_byte) {
            return Err(err(match algo {
                Algorithm::Sha256 => "expected sha256: and 64 lowercase hex digits",
                Algorithm::Sha512 => "expected sha512: and 128 lowercase hex digits",
            }));
        }
        Ok(Digest(s.to_string()))
    }

    /// `sha256:<hex>` given just the 64 hex digits (containers-storage image ids).
    pub fn from_sha256_hex(h: &str) -> Result<Digest, DigestError> {
        if !is_hex64(h) {
            return Err(DigestError { excerpt: excerpt(h.as_bytes()), why: "expected 64 lowercase hex digits" });
        }
        Ok(Digest(format!("sha256:{h}")))
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        let mut h = Algorithm::Sha256.hasher();
        h.update(data);
        h.finish()
    }

    /// The digest of `data` under this digest's algorithm.
    pub fn same_algorithm_of(&self, data: &[u8]) -> Digest {
        let mut h = self.algorithm().hasher();
        h.update(data);
        h.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        if self.0.starts_with("sha512:") { Algorithm::Sha512 } else { Algorithm::Sha256 }
    }

    /// The hex part (lowercase).
    pub fn hex(&self) -> &str {
        &self.0[self.algorithm().name().len() + 1..]
    }

    /// `algo:hex`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits (Docker's short id).
    pub fn short(&self) -> &str {
        &self.hex()[..12]
    }

    /// `blobs/<algo>/<hex>`: where an OCI layout keeps this blob.
    pub fn blob_path(&self) -> PathBuf {
        PathBuf::from("blobs").join(self.content_path())
    }

    /// `<algo>/<hex>`: the name of this digest in a content-addressed directory (Docker's
    /// imagedb and layerdb, the layer cache).
    pub fn content_path(&self) -> PathBuf {
        PathBuf::from(self.algorithm().name()).join(self.hex())
    }

    /// A verifier that hashes streamed bytes and compares with `self` at the end.
    pub fn verifier(&self) -> Verifier {
        Verifier { want: self.clone(), hasher: self.algorithm().hasher() }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.0)
    }
}
impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
impl std::str::FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        Digest::parse(s)
    }
}
impl PartialEq<str> for Digest {
    fn eq(&self, o: &str) -> bool {
        self.0 == o
    }
}
impl PartialEq<&str> for Digest {
    fn eq(&self, o: &&str) -> bool {
        self.0 == *o
    }
}
impl PartialEq<String> for Digest {
    fn eq(&self, o: &String) -> bool {
        &self.0 == o
    }
}

impl PartialEq<Digest> for String {
    fn eq(&self, o: &Digest) -> bool {
        *self == o.0
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}
impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a digest string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                Digest::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

enum HashState {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// An incremental hash under one [`Algorithm`].
pub struct Hasher(HashState);

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            HashState::Sha256(h) => h.update(data),
            HashState::Sha512(h) => h.update(data),
        }
    }
    pub fn finish(self) -> Digest {
        match self.0 {
            HashState::Sha256(h) => Digest(format!("sha256:{}", hex(&h.finalize()))),
            HashState::Sha512(h) => Digest(format!("sha512:{}", hex(&h.finalize()))),
        }
    }
}

/// The digest a stream was expected to have and the one it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub expected: Digest,
    pub actual: Digest,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "content has digest {}, expected {}", self.actual, self.expected)
    }
}
impl std::error::Error for Mismatch {}

/// Hashes bytes as they stream by; [`Verifier::finish`] compares with the expected digest.
pub struct Verifier {
    want: Digest,
    hasher: Hasher,
}

impl Verifier {
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data)
    }
    pub fn finish(self) -> Result<(), Mismatch> {
        let actual = self.hasher.finish();
        if actual == self.want { Ok(()) } else { Err(Mismatch { expected: self.want, actual }) }
    }
}

/// A reader that hashes every byte it yields and counts them.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> VerifyingReader<R> {
    /// Hash with `algo` (use the algorithm of the digest you will compare with).
    pub fn new(inner: R, algo: Algorithm) -> Self {
        VerifyingReader { inner, hasher: algo.hasher(), count: 0 }
    }
    /// Read to EOF (so trailing padding is hashed too); returns (digest, bytes, inner).
    pub fn finish(mut self) -> std::io::Result<(Digest, u64, R)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok((self.hasher.finish(), self.count, self.inner))
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Chain IDs for `diff_ids` (bottom first); result bottom first.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::sha256_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// An id that names a directory in a store (Docker cache-id, containers-storage ids).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreId(String);

/// Why a string is not a [`StoreId`]; `Display` is one line with a short excerpt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    excerpt: String,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid id {}: expected 1 to 128 of [A-Za-z0-9_.-], not starting with . or -", self.excerpt)
    }
}
impl std::error::Error for IdError {}

impl StoreId {
    /// Longest id accepted.
    pub const MAX: usize = 128;

    pub fn parse(s: &str) -> Result<StoreId, IdError> {
        let ok_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
        let ok = !s.is_empty()
            && s.len() <= Self::MAX
            && !s.starts_with(['.', '-'])
            && s.bytes().all(ok_byte);
        if ok { Ok(StoreId(s.to_string())) } else { Err(IdError { excerpt: excerpt(s.as_bytes()) }) }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The id as one path component.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.0)
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreId({})", self.0)
    }
}
impl<'de> serde::Deserialize<'de> for StoreId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StoreId, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = StoreId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StoreId, E> {
                StoreId::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}
impl serde::Serialize for StoreId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn sha256_of_empty() {
        assert_eq!(Digest::sha256_of(b"").as_str(), EMPTY);
        assert_eq!(Digest::parse(EMPTY).unwrap(), Digest::sha256_of(b""));
    }

    #[test]
    fn parse_accepts_only_the_two_forms() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex(), &EMPTY[7..]);
        assert_eq!(d.short(), &EMPTY[7..19]);
        assert_eq!(d.blob_path(), PathBuf::from(format!("blobs/sha256/{}", &EMPTY[7..])));
        assert_eq!(d.content_path(), PathBuf::from(format!("sha256/{}", &EMPTY[7..])));
        let s512 = format!("sha512:{}", "ab".repeat(64));
        let d5 = Digest::parse(&s512).unwrap();
        assert_eq!((d5.algorithm(), d5.hex().len()), (Algorithm::Sha512, 128));
        assert_eq!(d5.blob_path(), PathBuf::from(format!("blobs/sha512/{}", "ab".repeat(64))));
        let h = &EMPTY[7..];
        let bad = [
            "",
            "sha256:",
            h,
            "sha256:../../etc/passwd",
            "/etc/shadow",
            &format!("sha256:{}", h.to_uppercase()),
            &format!("SHA256:{h}"),
            &format!("sha256:{h}0"),
            &format!("sha256:{}", &h[1..]),
            &format!("sha256:{h}\n"),
            &format!("sha384:{}", "a".repeat(96)),
            &format!("sha512:{h}"),
            &format!(" sha256:{h}"),
            &format!("sha256:{}/", &h[1..]),
        ];
        for b in bad {
            let e = Digest::parse(b).unwrap_err().to_string();
            assert!(!e.contains('\n') && e.len() < 200, "{e}");
        }
    }

    #[test]
    fn errors_echo_only_an_excerpt() {
        let long = format!("root:*:20228:0:99999:7:::\n{}", "x".repeat(10_000));
        let e = Digest::parse(&long).unwrap_err().to_string();
        assert!(e.len() < 200 && !e.contains('\n') && !e.contains("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), "{e}");
        let e = StoreId::parse(&long).unwrap_err().to_string();
        assert!(e.len() < 200 && !e.contains('\n'), "{e}");
    }

    #[test]
    fn serde_validates() {
        let d: Digest = serde_json::from_str(&format!("\"{EMPTY}\"")).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{EMPTY}\""));
        let e = serde_json::from_str::<Digest>("\"/etc/shadow\"").unwrap_err().to_string();
        assert!(e.contains("invalid digest"), "{e}");
        assert!(serde_json::from_str::<Digest>("5").is_err());
        assert!(serde_json::from_str::<StoreId>("\"..\"").is_err());
        assert_eq!(serde_json::from_str::<StoreId>("\"abc\"").unwrap().as_str(), "abc");
    }

    #[test]
    fn chain_ids_follow_docker() {
        // Values from the tiny-image fixture: diff_ids of tiny:app and its layerdb dirs.
        let d: Vec<Digest> = [
            "45ba1fe9b143e7abf2bbc145f2b4751879cf4f2fcf089e9cdec7e6d658d38cbc",
            "6fef35898e7ac5012a4d4b565365ac59d8bb2f33bb4f6d9655371e0b973b3674",
        ]
        .iter()
        .map(|h| Digest::from_sha256_hex(h).unwrap())
        .collect();
        let c = chain_ids(&d);
        assert_eq!(c[0], d[0]);
        assert_eq!(c[1], Digest::sha256_of(format!("{} {}", d[0], d[1]).as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn verifier_and_reader() {
        let d = Digest::sha256_of(b"abc");
        let mut v = d.verifier();
        v.update(b"a");
        v.update(b"bc");
        assert!(v.finish().is_ok());
        let mut v = d.verifier();
        v.update(b"abd");
        let m = v.finish().unwrap_err();
        assert_eq!(m.expected, d);
        let r = VerifyingReader::new(&b"abc"[..], Algorithm::Sha256);
        let (got, n, _) = r.finish().unwrap();
        assert_eq!((got, n), (d, 3));
        let d5 = Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap();
        assert_eq!(d5.same_algorithm_of(b"").algorithm(), Algorithm::Sha512);
    }

    #[test]
    fn store_ids() {
        let long = "a".repeat(129);
        for (s, ok) in [
            ("abc", true),
            ("2f3e0c21e91d5127", true),
            ("a.b-c_d", true),
            ("", false),
            (".", false),
            ("..", false),
            ("../x", false),
            ("a/b", false),
            ("/abs", false),
            ("a\0b", false),
            ("a\nb", false),
            ("-rf", false),
            (".hidden", false),
            ("é", false),
            (long.as_str(), false),
        ] {
            assert_eq!(StoreId::parse(s).is_ok(), ok, "{s:?}");
        }
        assert_eq!(StoreId::parse("x1").unwrap().path(), PathBuf::from("x1"));
    }
}
