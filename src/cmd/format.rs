//! How times and sizes are shown, as docker shows them.

/// A docker-style table: a header, columns padded to their widest cell and three
/// spaces apart, trailing blanks trimmed.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            s.push_str(c);
            if i + 1 < w.len() {
                s.push_str(&" ".repeat(w[i] - c.chars().count() + 3));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut head.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// Seconds since the epoch of an RFC 3339 time (`2026-11-26T20:04:52.0005Z`, offsets too).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// "3 hours ago" style.
pub fn ago(created: Option<&str>, now: i64) -> String {
    let Some(t) = created.and_then(parse_rfc3339) else { return "N/A".into() };
    let d = (now - t).max(0);
    let (n, unit) = match d {
        0..=59 => (d, "second"),
        60..=3599 => (d / 60, "minute"),
        3600..=86399 => (d / 3600, "hour"),
        86400..=1209599 => (d / 86400, "day"),
        1209600..=5183999 => (d / 604800, "week"),
        5184000..=63071999 => (d / 2592000, "month"),
        _ => (d / 31536000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Docker-style size (SI units: kB, MB, GB).
/// As docker prints sizes: SI units, three significant digits (`199MB`, `1.14MB`, `999B`).
pub fn human_size(n: Option<u64>) -> String {
    let Some(n) = n else { return "N/A".into() };
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    loop {
        let decimals = if v >= 100.0 { 0 } else if v >= 10.0 { 1 } else { 2 };
        let shown = format!("{v:.decimals$}");
        // 999.7 kB rounds to 1000: that is 1 MB.
        if shown.parse::<f64>().is_ok_and(|r| r >= 1000.0) && i + 1 < units.len() {
            v /= 1000.0;
            i += 1;
            continue;
        }
        let shown = if shown.contains('.') { shown.trim_end_matches('0').trim_end_matches('.').to_string() } else { shown };
        return format!("{shown}{}", units[i]);
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-26T20:04:52.000503871Z"), Some(1795723492));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("nope"), None);
        assert_eq!(parse_rfc3339("2026-11-26T20:04:5é0Z"), None);
        assert_eq!(parse_rfc3339("2026-11-26T20:04:52+0é:0"), None);
        assert_eq!(parse_rfc3339("2026-11-26T20:04:52"), None);
        assert_eq!(ago(Some("1970-01-01T00:00:00Z"), 7200), "2 hours ago");
        assert_eq!(ago(Some("1970-01-01T00:00:00Z"), 1), "1 second ago");
        assert_eq!(ago(None, 1), "N/A");
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(Some(999)), "999B");
        assert_eq!(human_size(Some(2_088_960)), "2.09MB");
        assert_eq!(human_size(Some(1_000_000)), "1MB");
        assert_eq!(human_size(Some(199_000_000)), "199MB");
        assert_eq!(human_size(Some(1_140_000)), "1.14MB");
        assert_eq!(human_size(Some(12_500)), "12.5kB");
        assert_eq!(human_size(Some(999_700)), "1MB");
        assert_eq!(human_size(None), "N/A");
    }
}
