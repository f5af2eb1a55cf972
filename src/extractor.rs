//! Finds the token a request presents in the configured places (header with prefix, query parameter,
//! cookie). Works on raw bytes: a header that is not UTF-8 still yields a "token" that the parser then
//! rejects as malformed, rather than being mistaken for "no token".
//!
//! Names are compared the way backends read them (`headers::header_key`, `headers::param_key`), so a
//! token in another spelling (`x_api_token`, `access%5Ftoken`, `ACCESS_TOKEN`) is still a token the
//! filter sees. **One token per request** (RFC 6750 §2: a client uses one method): a request that
//! presents more than one — two `Authorization` headers, a header and a query parameter, a parameter
//! or cookie repeated — is `invalid_request` (RFC 6750 §3.1), whatever the values. Any other rule
//! (first wins, last wins, header over query) can be gamed by ordering, because the product behind
//! may read another one than the filter checked.

use crate::config::TokenSource;
use crate::error::Denial;
use crate::headers::{header_key, is_header, param_key, percent_decode};

/// The request as the extractor sees it: the header list the engine reads once, or maps in tests.
pub trait RequestView {
    /// The header `name` (lowercase, exact), repeated values joined (`; ` for cookies, `, ` else).
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    /// Every occurrence, each on its own, of the headers whose `header_key` is `key`.
    fn header_values(&self, key: &str) -> Vec<Vec<u8>>;
}

/// A request's headers as a list of (lowercase name, value) in arrival order, repeats kept: how the
/// filter reads them from Envoy (one host call per request) and how tests build requests.
#[derive(Debug, Clone, Default)]
pub struct HeaderList(pub Vec<(String, Vec<u8>)>);

impl HeaderList {
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
}

impl RequestView for HeaderList {
    /// A repeated header's values are joined (`; ` for cookies, `, ` otherwise), as RFC 9110 §5.3
    /// reads them.
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        let mut values = self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
        let first = values.next()?.clone();
        let sep: &[u8] = if name == "cookie" { b"; " } else { b", " };
        Some(values.fold(first, |mut acc, v| {
            acc.extend_from_slice(sep);
            acc.extend_from_slice(v);
            acc
        }))
    }

    fn header_values(&self, key: &str) -> Vec<Vec<u8>> {
        self.0
            .iter()
            .filter(|(n, _)| is_header(n, key))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn strip_prefix_ci<'a>(value: &'a [u8], prefix: &str) -> Option<&'a [u8]> {
    let p = prefix.as_bytes();
    if value.len() >= p.len() && value[..p.len()].eq_ignore_ascii_case(p) {
        Some(&value[p.len()..])
    } else {
        None
    }
}

/// Values of the query parameters whose `param_key` is in `keys`, percent-decoded.
fn from_query(path: &[u8], keys: &[Vec<u8>], found: &mut Vec<Vec<u8>>) {
    let Some(q) = path.iter().position(|b| *b == b'?').map(|i| &path[i + 1..]) else {
        return;
    };
    let q = q.split(|b| *b == b'#').next().unwrap_or(q);
    for pair in q.split(|b| *b == b'&') {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let key = kv.next().unwrap_or_default();
        if keys.contains(&param_key(key)) {
            found.push(percent_decode(kv.next().unwrap_or_default()));
        }
    }
}

fn from_cookies(header: &[u8], keys: &[Vec<u8>], found: &mut Vec<Vec<u8>>) {
    for c in header.split(|b| *b == b';') {
        let mut kv = trim(c).splitn(2, |b| *b == b'=');
        let key = trim(kv.next().unwrap_or_default());
        if keys.contains(&param_key(key)) {
            found.push(percent_decode(trim(kv.next().unwrap_or_default())));
        }
    }
}

/// The tokens a request presented (at most one reaches the authenticator). `Debug` shows how many,
/// never the bytes, so a token cannot reach a log through a `{:?}`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens(Vec<Vec<u8>>);

impl Tokens {
    pub fn new(tokens: Vec<Vec<u8>>) -> Self {
        Tokens(tokens)
    }
}

impl std::ops::Deref for Tokens {
    type Target = [Vec<u8>];
    fn deref(&self) -> &[Vec<u8>] {
        &self.0
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

/// The token presented in `sources`: `Ok(None)` when there is none, `invalid_request` when there is
/// more than one (see the module note).
pub fn extract<'a>(
    sources: impl IntoIterator<Item = &'a TokenSource>,
    req: &dyn RequestView,
) -> Result<Option<Vec<u8>>, Denial> {
    Ok(extract_presented(sources, req)?.map(|(token, _)| token))
}

/// `extract`, and whether the token came as `Authorization: DPoP <token>` (RFC 9449 §7.1): where a
/// source reads `authorization` with the `Bearer ` prefix, the `DPoP ` scheme is read too, and one
/// credential of each is two tokens.
pub fn extract_presented<'a>(
    sources: impl IntoIterator<Item = &'a TokenSource>,
    req: &dyn RequestView,
) -> Result<Option<(Vec<u8>, bool)>, Denial> {
    let mut headers: Vec<(String, Vec<&str>)> = Vec::new();
    let mut params: Vec<Vec<u8>> = Vec::new();
    let mut cookies: Vec<Vec<u8>> = Vec::new();
    for source in sources {
        match source {
            TokenSource::Header { name, prefix } => {
                let key = header_key(name);
                match headers.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, prefixes)) => prefixes.push(prefix),
                    None => headers.push((key, vec![prefix])),
                }
            }
            TokenSource::Param(p) => params.push(param_key(p.as_bytes())),
            TokenSource::Cookie(c) => cookies.push(param_key(c.as_bytes())),
        }
    }
    let mut found: Vec<(Vec<u8>, bool)> = Vec::new();
    for (key, prefixes) in &headers {
        let dpop_too =
            key == "authorization" && prefixes.iter().any(|p| p.eq_ignore_ascii_case("bearer "));
        // Envoy joins repeated headers with `,` (and an intermediary may have done so before it);
        // no token has a comma, so each element is a credential of its own.
        let values = req.header_values(key);
        for value in values.iter().flat_map(|v| v.split(|b| *b == b',')) {
            let value = trim(value);
            // The first source whose prefix fits reads this occurrence; another scheme in the same
            // header (e.g. Basic) and a bare scheme are no token of ours.
            // A raw header (no prefix) presents whatever it holds, even nothing (then malformed).
            let token = prefixes.iter().find_map(|prefix| {
                if prefix.is_empty() {
                    Some(value)
                } else {
                    strip_prefix_ci(value, prefix)
                        .map(trim)
                        .filter(|t| !t.is_empty())
                }
            });
            let dpop = || {
                strip_prefix_ci(value, "DPoP ")
                    .map(trim)
                    .filter(|t| !t.is_empty())
            };
            match token {
                Some(t) => found.push((t.to_vec(), false)),
                None if dpop_too => found.extend(dpop().map(|t| (t.to_vec(), true))),
                None => {}
            }
        }
    }
    let mut elsewhere: Vec<Vec<u8>> = Vec::new();
    if !params.is_empty() {
        if let Some(path) = req.header(":path") {
            from_query(&path, &params, &mut elsewhere);
        }
    }
    if !cookies.is_empty() {
        if let Some(cookie) = req.header("cookie") {
            from_cookies(&cookie, &cookies, &mut elsewhere);
        }
    }
    found.extend(elsewhere.into_iter().map(|t| (t, false)));
    if found.len() > 1 {
        return Err(Denial::InvalidRequest(
            "more than one token in the request (use exactly one place, once)",
        ));
    }
    Ok(found.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_show_in_debug() {
        let t = Tokens::new(vec![b"eyJhbGciOiJFUzI1NiJ9.e30.c2ln".to_vec()]);
        let shown = format!("{t:?} {:?}", Some(&t));
        assert!(!shown.contains("eyJ") && !shown.contains("101"), "{shown}");
        assert_eq!(shown, "Tokens(1 redacted) Some(Tokens(1 redacted))");
        assert_eq!(t.len(), 1);
    }

    fn req(h: &[(&'static str, &[u8])]) -> HeaderList {
        HeaderList(h.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect())
    }
    fn bearer() -> TokenSource {
        TokenSource::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }
    }
    fn one(t: &[u8]) -> Result<Option<Vec<u8>>, Denial> {
        Ok(Some(t.to_vec()))
    }
    fn several(r: Result<Option<Vec<u8>>, Denial>) -> bool {
        matches!(r, Err(Denial::InvalidRequest(_)))
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_trimmed() {
        for v in [&b"Bearer abc"[..], b"bearer abc", b"BEARER   abc  "] {
            assert_eq!(
                extract([&bearer()], &req(&[("authorization", v)])),
                one(b"abc")
            );
        }
    }

    #[test]
    fn other_schemes_and_absent_headers_are_no_token() {
        let basic = req(&[("authorization", b"Basic Zm9vOmJhcg==")]);
        assert_eq!(extract([&bearer()], &basic), Ok(None));
        assert_eq!(extract([&bearer()], &req(&[])), Ok(None));
    }

    #[test]
    fn bare_scheme_is_no_token_and_non_utf8_is_a_presented_token() {
        assert_eq!(
            extract([&bearer()], &req(&[("authorization", b"Bearer ")])),
            Ok(None)
        );
        let raw = b"Bearer \xff\xfe.x.y";
        assert_eq!(
            extract([&bearer()], &req(&[("authorization", raw)])),
            one(b"\xff\xfe.x.y")
        );
    }

    #[test]
    fn query_and_cookie_sources_in_every_spelling() {
        let p = TokenSource::Param("access_token".into());
        let c = TokenSource::Cookie("session".into());
        let r = req(&[(":path", b"/a?x=1&access_token=tok1#frag")]);
        assert_eq!(extract([&p, &c], &r), one(b"tok1"));
        let r = req(&[("cookie", b"a=b; session=tok2")]);
        assert_eq!(extract([&p, &c], &r), one(b"tok2"));
        for path in [
            &b"/a?access%5Ftoken=t%2Ek"[..],
            b"/a?ACCESS_TOKEN=t.k",
            b"/a?access.token=t.k",
        ] {
            assert_eq!(extract([&p], &req(&[(":path", path)])), one(b"t.k"));
        }
        let r = req(&[(":path", b"/a?access_tokenx=1"), ("cookie", b"sessionx=1")]);
        assert_eq!(extract([&p, &c], &r), Ok(None));
    }

    #[test]
    fn a_header_token_in_another_spelling_is_still_a_token() {
        let x = TokenSource::Header {
            name: "x-api-token".into(),
            prefix: String::new(),
        };
        assert_eq!(extract([&x], &req(&[("x_api_token", b"t")])), one(b"t"));
        assert!(several(extract(
            [&x],
            &req(&[("x-api-token", b"t"), ("x_api_token", b"u")])
        )));
    }

    #[test]
    fn more_than_one_token_is_invalid_request_whatever_the_order_or_values() {
        let p = TokenSource::Param("access_token".into());
        let c = TokenSource::Cookie("session".into());
        let sources = [&bearer(), &p, &c];
        let cases: Vec<HeaderList> = vec![
            req(&[
                ("authorization", b"Bearer a"),
                ("authorization", b"Bearer b"),
            ]),
            req(&[
                ("authorization", b"Bearer a"),
                ("authorization", b"Bearer a"),
            ]),
            req(&[(":path", b"/?access_token=a&access_token=b")]),
            req(&[(":path", b"/?access_token=b&access_token=a")]),
            req(&[(":path", b"/?access_token=a&Access_Token=a")]),
            req(&[
                ("authorization", b"Bearer a"),
                (":path", b"/?access_token=a"),
            ]),
            req(&[("authorization", b"Bearer a"), ("cookie", b"session=b")]),
            req(&[("cookie", b"session=a; session=b")]),
            req(&[("cookie", b"session=a"), ("cookie", b"session=b")]),
        ];
        for r in &cases {
            assert!(several(extract(sources, r)), "{:?}", r.0);
        }
        // Two credentials folded into one line (as Envoy joins repeated headers) are two.
        let folded = req(&[("authorization", b"Bearer a, Bearer b")]);
        assert!(several(extract(sources, &folded)));
        let folded = req(&[("authorization", b"Basic x, Bearer b")]);
        assert_eq!(extract(sources, &folded), one(b"b"));
        // A Basic credential next to a Bearer token is not a second token of ours.
        let r = req(&[
            ("authorization", b"Basic x"),
            ("authorization", b"Bearer a"),
        ]);
        assert_eq!(extract(sources, &r), one(b"a"));
    }

    #[test]
    fn two_sources_reading_one_place_count_it_once() {
        assert_eq!(
            extract(
                [&bearer(), &bearer()],
                &req(&[("authorization", b"Bearer t")])
            ),
            one(b"t")
        );
    }
}
