//! Finds the tokens a request presents in the configured places (header with prefix, query parameter,
//! cookie). Works on raw bytes: a header that is not UTF-8 still yields a "token" that the parser then
//! rejects as malformed, rather than being mistaken for "no token".

use crate::config::TokenSource;

/// The request as the extractor sees it; implemented over proxy-wasm in `filter` and by maps in tests.
pub trait RequestView {
    fn header(&self, name: &str) -> Option<Vec<u8>>;
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

fn from_query(path: &[u8], param: &str) -> Option<Vec<u8>> {
    let q = path
        .iter()
        .position(|b| *b == b'?')
        .map(|i| &path[i + 1..])?;
    let q = q.split(|b| *b == b'#').next().unwrap_or(q);
    q.split(|b| *b == b'&').find_map(|pair| {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let k = kv.next()?;
        (k == param.as_bytes()).then(|| kv.next().unwrap_or_default().to_vec())
    })
}

fn from_cookie(header: &[u8], name: &str) -> Option<Vec<u8>> {
    header.split(|b| *b == b';').find_map(|c| {
        let c = trim(c);
        let mut kv = c.splitn(2, |b| *b == b'=');
        let k = kv.next()?;
        (k == name.as_bytes()).then(|| trim(kv.next().unwrap_or_default()).to_vec())
    })
}

/// Distinct tokens found in `sources`, in source order. An empty result means "no token presented".
pub fn extract<'a>(
    sources: impl IntoIterator<Item = &'a TokenSource>,
    req: &dyn RequestView,
) -> Vec<Vec<u8>> {
    let mut found: Vec<Vec<u8>> = Vec::new();
    let mut cookie: Option<Option<Vec<u8>>> = None;
    let mut path: Option<Option<Vec<u8>>> = None;
    for source in sources {
        let token = match source {
            TokenSource::Header { name, prefix } => req.header(name).and_then(|v| {
                let v = trim(&v);
                if prefix.is_empty() {
                    Some(v.to_vec())
                } else {
                    // Another scheme in the same header (e.g. Basic) is not a token of ours.
                    strip_prefix_ci(v, prefix).map(|t| trim(t).to_vec())
                }
            }),
            TokenSource::Param(p) => path
                .get_or_insert_with(|| req.header(":path"))
                .as_deref()
                .and_then(|path| from_query(path, p)),
            TokenSource::Cookie(c) => cookie
                .get_or_insert_with(|| req.header("cookie"))
                .as_deref()
                .and_then(|h| from_cookie(h, c)),
        };
        if let Some(t) = token {
            if !found.contains(&t) {
                found.push(t);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Req(HashMap<&'static str, Vec<u8>>);
    impl RequestView for Req {
        fn header(&self, name: &str) -> Option<Vec<u8>> {
            self.0.get(name).cloned()
        }
    }
    fn req(h: &[(&'static str, &[u8])]) -> Req {
        Req(h.iter().map(|(k, v)| (*k, v.to_vec())).collect())
    }
    fn bearer() -> TokenSource {
        TokenSource::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_trimmed() {
        for v in [&b"Bearer abc"[..], b"bearer abc", b"BEARER   abc  "] {
            assert_eq!(
                extract([&bearer()], &req(&[("authorization", v)])),
                vec![b"abc".to_vec()]
            );
        }
    }

    #[test]
    fn other_schemes_and_absent_headers_are_no_token() {
        assert!(extract(
            [&bearer()],
            &req(&[("authorization", b"Basic Zm9vOmJhcg==")])
        )
        .is_empty());
        assert!(extract([&bearer()], &req(&[])).is_empty());
    }

    #[test]
    fn bare_scheme_is_no_token_and_non_utf8_is_a_presented_token() {
        assert!(extract([&bearer()], &req(&[("authorization", b"Bearer ")])).is_empty());
        let raw = b"Bearer \xff\xfe.x.y";
        assert_eq!(
            extract([&bearer()], &req(&[("authorization", raw)])),
            vec![b"\xff\xfe.x.y".to_vec()]
        );
    }

    #[test]
    fn query_and_cookie_sources() {
        let p = TokenSource::Param("access_token".into());
        let c = TokenSource::Cookie("session".into());
        let r = req(&[
            (":path", b"/a?x=1&access_token=tok1#frag"),
            ("cookie", b"a=b; session=tok2"),
        ]);
        assert_eq!(
            extract([&p, &c], &r),
            vec![b"tok1".to_vec(), b"tok2".to_vec()]
        );
        let r = req(&[(":path", b"/a?access_tokenx=1"), ("cookie", b"sessionx=1")]);
        assert!(extract([&p, &c], &r).is_empty());
    }

    #[test]
    fn the_same_token_in_two_places_counts_once() {
        let h2 = TokenSource::Header {
            name: "x-token".into(),
            prefix: String::new(),
        };
        let r = req(&[("authorization", b"Bearer t"), ("x-token", b"t")]);
        assert_eq!(extract([&bearer(), &h2], &r), vec![b"t".to_vec()]);
    }
}
