//! One normal form for each name that a proxy or a backend treats as the same in several spellings:
//! header names and hosts. The config compiles its names into these forms and the request path
//! compares in them, so the two can never disagree. Pure functions, depending on nothing.

/// A header name as the filter compares it: ASCII case folded and `_` read as `-`. Envoy accepts
/// underscores in header names by default, and CGI/WSGI/Rack/PHP gateways turn `X-User-Sub` and
/// `x_user_sub` into the same variable (`HTTP_X_USER_SUB`), so for a header the filter owns or reads,
/// every such spelling is the same header.
pub fn header_key(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'_' => '-',
            b => char::from(b.to_ascii_lowercase()),
        })
        .collect()
}

fn host_without_port(authority: &[u8]) -> &[u8] {
    // IPv6 literals keep their brackets; only a trailing :port is dropped.
    match authority.iter().rposition(|b| *b == b':') {
        Some(i) if !authority[i..].contains(&b']') => &authority[..i],
        _ => authority,
    }
}

/// The host of an authority in the form rules compare (see the module note), or `None` when it is
/// not a host name: empty, an empty label, a port that is not digits, or bytes outside letters,
/// digits, `-`, `_` and `.` (a bracketed IPv6 literal keeps its hex digits, `:` and `.`).
pub fn normalize_host(authority: &[u8]) -> Option<Vec<u8>> {
    let host = host_without_port(authority);
    let port = &authority[host.len()..];
    if let Some(digits) = port.strip_prefix(b":") {
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
    }
    if let Some(inner) = host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        let ok = !inner.is_empty()
            && inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.');
        return ok.then(|| host.to_ascii_lowercase());
    }
    let host = host.strip_suffix(b".").unwrap_or(host);
    let ok = !host.is_empty()
        && host.split(|b| *b == b'.').all(|label| !label.is_empty())
        && host
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| host.to_ascii_lowercase())
}
