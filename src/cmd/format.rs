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
    let b = s.as_bytes();
    if !s.is_ascii() || b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let off = match rest {
        "Z" | "z" => 0,
        r if r.len() == 6 && (r.starts_with('+') || r.starts_with('-')) => {
            let v = r[1..3].parse::<i64>().ok()? * 3600 + r[4..6].parse::<i64>().ok()? * 60;
            if r.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // Days from civil (proleptic Gregorian).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + se - off)
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
