//! How store input appears in messages: short, escaped, one line.
//!
//! Invariants: [`excerpt`] shows at most [`EXCERPT_CHARS`] characters of its input, quoted,
//! with every control character, quote, backslash and invalid UTF-8 byte escaped, so it
//! never spans lines and never carries more than a glimpse of a file; [`path`] shows a path
//! escaped the same way and cut in the middle to at most [`PATH_CHARS`] characters (a
//! 10,000-deep path stays a short line); [`name`] shows a name or id from a store the same
//! way, cut to [`NAME_CHARS`]; [`one_line`] escapes what is left of control characters in a
//! finished message.

use std::fmt::{self, Write};
use std::path::Path;

/// Characters of input an excerpt shows.
pub const EXCERPT_CHARS: usize = 32;
/// Characters a displayed path keeps (head and tail around `…`).
pub const PATH_CHARS: usize = 160;
/// Characters a displayed name keeps.
pub const NAME_CHARS: usize = 100;

fn escape_into(out: &mut String, bytes: &[u8], quote: bool, limit: usize) -> bool {
    let mut shown = 0usize;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if shown >= limit {
                return true;
            }
            match c {
                '"' if quote => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                    let _ = write!(out, "{}", c.escape_default());
                }
                c => out.push(c),
            }
            shown += 1;
        }
        for b in chunk.invalid() {
            if shown >= limit {
                return true;
            }
            let _ = write!(out, "\\x{b:02x}");
            shown += 1;
        }
    }
    false
}

/// `"…"`: a quoted, escaped excerpt of at most [`EXCERPT_CHARS`] characters of `bytes`.
pub fn excerpt(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    let cut = escape_into(&mut s, bytes, true, EXCERPT_CHARS);
    s.push('"');
    if cut {
        s.push('…');
    }
    s
}

/// A name or id from a store for a message: escaped, at most [`NAME_CHARS`] characters.
pub fn name(s: &str) -> String {
    let mut out = String::new();
    if escape_into(&mut out, s.as_bytes(), false, NAME_CHARS) {
        out.push('…');
    }
    out
}

/// The description of a parser's error message without the input it may quote: the
/// text before the first `:` (the tar crate writes "what: input… when getting field for
/// path"), escaped, at most [`EXCERPT_CHARS`] * 2 characters.
pub fn cause(msg: &str) -> String {
    let head = msg.split(':').next().unwrap_or("");
    let mut out = String::new();
    if escape_into(&mut out, head.trim().as_bytes(), false, EXCERPT_CHARS * 2) {
        out.push('…');
    }
    out
}

/// `msg` with every word (space-separated run, such as a path) longer than
/// [`PATH_CHARS`] cut in the middle: a finished message stays short whatever paths it names.
pub fn cut_long_words(msg: &str) -> String {
    msg.split(' ')
        .map(|w| {
            let n = w.chars().count();
            if n <= PATH_CHARS {
                return w.to_string();
            }
            let head = PATH_CHARS / 3;
            let tail = PATH_CHARS - head - 1;
            let h: String = w.chars().take(head).collect();
            let t: String = w.chars().skip(n - tail).collect();
            format!("{h}…{t}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `msg` with every control character escaped (a message that is surely one line).
pub fn one_line(msg: &str) -> String {
    if !msg.chars().any(char::is_control) {
        return msg.to_string();
    }
    msg.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// A path for a message: escaped, at most [`PATH_CHARS`] characters (`head…tail`).
pub fn path(p: &Path) -> ShownPath<'_> {
    ShownPath(p)
}

/// See [`path`].
pub struct ShownPath<'a>(&'a Path);

impl fmt::Display for ShownPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::ffi::OsStrExt;
        let mut s = String::new();
        escape_into(&mut s, self.0.as_os_str().as_bytes(), false, usize::MAX);
        let n = s.chars().count();
        if n <= PATH_CHARS {
            return f.write_str(&s);
        }
        let head = PATH_CHARS / 3;
        let tail = PATH_CHARS - head - 1;
        let h: String = s.chars().take(head).collect();
        let t: String = s.chars().skip(n - tail).collect();
        write!(f, "{h}…{t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn excerpts_are_short_escaped_and_quoted() {
        assert_eq!(excerpt(b"abc"), "\"abc\"");
        assert_eq!(excerpt(b"a\"b\\c\nd\x00\xff"), "\"a\\\"b\\\\c\\nd\\u{0}\\xff\"");
        let e = excerpt("root:*:20228:0:99999:7:::\nbin:*:1:1::/bin:/usr/sbin/nologin".as_bytes());
        assert!(e.ends_with('…') && !e.contains('\n') && e.chars().count() < 60, "{e}");
        assert_eq!(excerpt(b""), "\"\"");
    }

    #[test]
    fn deep_paths_are_cut() {
        let deep = "d/".repeat(10_000);
        let shown = path(Path::new(&deep)).to_string();
        assert!(shown.chars().count() <= PATH_CHARS, "{}", shown.len());
        assert!(shown.contains('…'));
        let odd = Path::new(OsStr::from_bytes(b"/a\nb/\xff"));
        assert_eq!(path(odd).to_string(), "/a\\nb/\\xff");
        assert_eq!(path(Path::new("/var/lib/docker")).to_string(), "/var/lib/docker");
    }

    #[test]
    fn names_and_lines() {
        assert_eq!(name("tiny:app"), "tiny:app");
        assert!(name(&"n\n".repeat(200)).ends_with('…'));
        assert_eq!(one_line("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(one_line("plain"), "plain");
        let deep = format!("mountpoint {}: File name too long", "d/".repeat(10_000));
        let cut = cut_long_words(&deep);
        assert!(cut.len() < 300 && cut.starts_with("mountpoint d/d/") && cut.ends_with(": File name too long"), "{cut}");
        assert_eq!(cut_long_words("a b  c"), "a b  c");
        assert_eq!(cause("numeric field was not a number: root:*:1 when getting cksum for x"), "numeric field was not a number");
    }
}
