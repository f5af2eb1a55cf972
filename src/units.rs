//! Small parsers shared by the config and the fetcher: durations and http(s) URIs.

/// Parses `"5s"`, `"1.5s"` or `"250ms"` (protobuf JSON durations, plus `ms` for convenience).
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let (num, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let ms = value * scale;
    if !ms.is_finite() || !(0.0..=1e12).contains(&ms) {
        return None;
    }
    Some(ms.round() as u64)
}

/// Splits `http(s)://authority/path` into (authority, path).
pub fn split_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let bad = |s: &str| s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    if authority.is_empty() || bad(authority) || bad(path) || path.contains('#') {
        return None;
    }
    Some((authority.to_owned(), path.to_owned()))
}
