//! Parsing store JSON documents, with errors that name the file and what was expected.
//!
//! Invariants:
//! - every document parsed here was read with a size cap (the caller's [`super::MAX_JSON`],
//!   [`MAX_MANIFEST`], [`MAX_CONFIG`] or smaller);
//! - an error says which file, what it should have held and where parsing stopped; the
//!   parser's own message is kept only after [`sanitize`] cut every quoted run of input in
//!   it to a short escaped excerpt, so no file content reaches a message.

use super::StoreError;
use std::fmt::Write;
use std::path::Path;

/// Largest manifest or index blob read (the distribution spec's registries use 4 MiB).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config blob read.
pub const MAX_CONFIG: u64 = 16 << 20;

/// Characters of each quoted run a sanitized message keeps.
const RUN_CHARS: usize = 24;
/// Longest sanitized message.
const MESSAGE_CHARS: usize = 200;

/// A parser message made safe to show: quoted (`"…"`, `` `…` ``) runs are cut to
/// [`RUN_CHARS`], control characters escaped, the whole cut to [`MESSAGE_CHARS`].
pub fn sanitize(msg: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut run = 0usize;
    let mut escaped = false;
    let mut total = 0usize;
    for c in msg.chars() {
        if total >= MESSAGE_CHARS {
            out.push('…');
            break;
        }
        match quote {
            Some(q) => {
                let closes = c == q && !escaped;
                escaped = !escaped && c == '\\';
                if closes {
                    quote = None;
                    out.push(c);
                    total += 1;
                    continue;
                }
                run += 1;
                if run == RUN_CHARS + 1 {
                    out.push('…');
                    total += 1;
                }
                if run > RUN_CHARS {
                    continue;
                }
            }
            None if c == '"' || c == '`' => {
                quote = Some(c);
                run = 0;
                escaped = false;
                out.push(c);
                total += 1;
                continue;
            }
            None => {}
        }
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
        total += 1;
    }
    out
}

fn corrupt(file: &Path, what: &str, e: &serde_json::Error) -> StoreError {
    StoreError::corrupt(file, format!("expected {what}: {}", sanitize(&e.to_string())))
}

/// Parse `bytes` as `T`; on error the message names `file` and `what` it should hold.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], file: &Path, what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(file, what, &e))
}

/// Like [`parse`], but the document must be a JSON object (serde alone would accept `[]`
/// for a struct whose fields all have defaults).
pub(crate) fn parse_object<T: serde::de::DeserializeOwned>(bytes: &[u8], file: &Path, what: &str) -> Result<T, StoreError> {
    let v: serde_json::Value = parse(bytes, file, what)?;
    if !v.is_object() {
        return Err(StoreError::corrupt(file, format!("expected {what}: not a JSON object")));
    }
    serde_json::from_value(v).map_err(|e| corrupt(file, what, &e))
}

/// Convert one already parsed value (an entry of a list) to `T`.
pub(crate) fn from_value<T: serde::de::DeserializeOwned>(v: serde_json::Value, file: &Path, what: &str) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| corrupt(file, what, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_only_short_runs_of_input() {
        let secret = "root:$6$abcdefghijklmnopqrstuvwxyz0123456789:20228:0:99999:7:::";
        let e = serde_json::from_str::<u64>(&format!("\"{secret}\"")).unwrap_err().to_string();
        let s = sanitize(&e);
        assert!(!s.contains("0123456789"), "{s}");
        assert!(s.contains("invalid type") && s.contains("line 1"), "{s}");
        let e = serde_json::from_str::<std::collections::BTreeMap<String, u8>>(&format!("{{\"a\":\"{}\"}}", "x".repeat(5000)))
            .unwrap_err()
            .to_string();
        assert!(sanitize(&e).chars().count() < 120, "{}", sanitize(&e));
        assert_eq!(sanitize("a\nb `q` \"r\\\"s\""), "a\\nb `q` \"r\\\"s\"");
        assert!(sanitize(&"y".repeat(1000)).chars().count() <= MESSAGE_CHARS + 1);
    }

    #[test]
    fn errors_name_the_file_and_expectation() {
        #[derive(serde::Deserialize, Debug)]
        struct S {
            #[allow(dead_code)]
            a: Option<u8>,
        }
        let e = parse_object::<S>(b"[1]", Path::new("/s/index.json"), "an OCI index").unwrap_err().to_string();
        assert_eq!(e, "corrupt store file /s/index.json: expected an OCI index: not a JSON object");
        let e = parse::<S>(b"{\"a\":\"/etc/shadow\"}", Path::new("f"), "x").unwrap_err().to_string();
        assert!(e.starts_with("corrupt store file f: expected x: invalid type"), "{e}");
    }
}
