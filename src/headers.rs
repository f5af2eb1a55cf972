//! The trusted identity header contract.
//!
//! - `to_strip`: which client headers go before anything else happens, on every path: every header
//!   the filter may set, and every header under a configured prefix (`x-user-`, `x-tenant-`,
//!   `x-auth-` by default). Whatever identity-like header reaches the upstream came from the filter.
//! - `identity_headers`: verified claims → headers. Strings as they are; numbers and booleans as text;
//!   arrays of those joined with `,` (scopes with a space, as in the `scope` claim); objects and
//!   nulls are not written. A value with a control character (CR, LF, NUL, …) or longer than the
//!   bound is never written: it is dropped and reported (without the value) so it can be logged and,
//!   later, counted. Dropping rather than escaping keeps the header's meaning unambiguous for the
//!   product behind.
//! - `token_scrub`: where the token must be removed before forwarding: the provider's header or
//!   cookie when `forward_token` is false, and a query-parameter token always (URLs end up in logs).

use crate::authenticator::{granted_scopes, scalar_text};
use crate::codes::codes;
use crate::config::{Config, Provider, Requirement, TokenSource};
use serde_json::{Map, Value};

pub use crate::spelling::header_key;

/// Whether header name `name` is `key` (a `header_key`) in some spelling; no allocation, since it
/// runs for every request header.
pub fn is_header(name: &str, key: &str) -> bool {
    name.len() == key.len() && starts_as(name, key)
}

/// Whether header name `name` begins with `prefix` (a `header_key`) in some spelling.
fn starts_as(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.bytes().zip(prefix.bytes()).all(|(n, k)| {
            let n = if n == b'_' {
                b'-'
            } else {
                n.to_ascii_lowercase()
            };
            n == k
        })
}

/// Percent-decodes (RFC 3986 §2.1); an invalid escape stays as it is.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match (
            raw[i],
            raw.get(i + 1).copied().and_then(hex),
            raw.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// A query-parameter or cookie name as the filter compares it, so that no spelling a backend reads
/// as the configured name escapes the filter: percent-decoded and `+` read as a space (form
/// encoding), then space, `.` and `[` read as `_` (PHP's `$_GET`/`$_COOKIE` mangling), ASCII case
/// folded (ASP.NET compares query keys without case).
pub fn param_key(raw: &[u8]) -> Vec<u8> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&plus_as_space)
        .into_iter()
        .map(|b| match b {
            b' ' | b'.' | b'[' => b'_',
            b => b.to_ascii_lowercase(),
        })
        .collect()
}

/// The client headers to remove before anything else, as they appear in the request: every
/// header the filter may set and every header under a strip prefix, in any spelling (`header_key`).
/// A token header (`from_headers`, in any spelling) is kept: it is read and verified, not trusted.
pub fn to_strip<'a>(config: &Config, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| {
            config.managed_headers.iter().any(|m| is_header(n, m))
                || (config.strip_header_prefixes.iter().any(|p| starts_as(n, p))
                    && !config.token_headers.iter().any(|t| is_header(n, t)))
        })
        .map(str::to_ascii_lowercase)
        .collect()
}

codes! {
    /// Why a claim was not written into its header: the `reason` label of `claims_dropped`.
    pub enum DropReason {
        ControlCharacter => "control_character",
        TooLong => "too_long",
        /// An object, or an array holding one: not plain text.
        NotPlain => "not_plain",
    }
}

/// Why a claim was not written into its header (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub header: String,
    pub reason: DropReason,
    /// For the log line: what was wrong with the value, without it.
    pub detail: &'static str,
}

fn text(v: &Value, sep: &str) -> Result<Option<String>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::Object(_) => Err("claim is an object"),
        Value::Array(items) => items
            .iter()
            .map(scalar_text)
            .collect::<Option<Vec<String>>>()
            .map(|parts| Some(parts.join(sep)))
            .ok_or("array holds objects or arrays"),
        scalar => Ok(scalar_text(scalar)),
    }
}

pub fn identity_headers(
    provider: &Provider,
    claims: &Map<String, Value>,
    max_bytes: usize,
) -> (Vec<(String, String)>, Vec<Dropped>) {
    let mut set = Vec::new();
    let mut dropped = Vec::new();
    for mapping in &provider.claim_to_headers {
        let value = if mapping.claim.is_name("scope") {
            let scopes = granted_scopes(claims);
            (!scopes.is_empty()).then(|| scopes.join(" "))
        } else {
            match mapping.claim.lookup(claims).map(|v| text(v, ",")) {
                None | Some(Ok(None)) => None,
                Some(Ok(Some(t))) => Some(t),
                Some(Err(detail)) => {
                    dropped.push(Dropped {
                        header: mapping.header.clone(),
                        reason: DropReason::NotPlain,
                        detail,
                    });
                    None
                }
            }
        };
        let Some(value) = value else { continue };
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            dropped.push(Dropped {
                header: mapping.header.clone(),
                reason: DropReason::ControlCharacter,
                detail: "control character in value",
            });
        } else if value.len() > max_bytes {
            dropped.push(Dropped {
                header: mapping.header.clone(),
                reason: DropReason::TooLong,
                detail: "value too long",
            });
        } else if !value.is_empty() {
            set.push((mapping.header.clone(), value));
        }
    }
    (set, dropped)
}

/// Token removal before forwarding.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scrub {
    pub remove_headers: Vec<String>,
    /// New `:path` without token query parameters, when it had any.
    pub path: Option<Vec<u8>>,
    /// New `cookie` header (`Some(None)`: remove it) when a token cookie must go.
    pub cookie: Option<Option<Vec<u8>>>,
}

/// `path` without the query parameters whose name (`param_key`) is one of `names`; `None` when
/// none was there.
fn without_query_params(path: &[u8], names: &[Vec<u8>]) -> Option<Vec<u8>> {
    let q = path.iter().position(|b| *b == b'?')?;
    let (base, query) = (&path[..q], &path[q + 1..]);
    let (query, fragment) = match query.iter().position(|b| *b == b'#') {
        Some(f) => (&query[..f], &query[f..]),
        None => (query, &b""[..]),
    };
    let pairs: Vec<&[u8]> = query.split(|b| *b == b'&').collect();
    let keep: Vec<&[u8]> = pairs
        .iter()
        .copied()
        .filter(|pair| {
            let key = pair.split(|b| *b == b'=').next().unwrap_or_default();
            !names.contains(&param_key(key))
        })
        .collect();
    if keep.len() == pairs.len() {
        return None;
    }
    let mut out = base.to_vec();
    if !keep.is_empty() {
        out.push(b'?');
        out.extend_from_slice(&keep.join(&b'&'));
    }
    out.extend_from_slice(fragment);
    Some(out)
}

fn without_cookies(header: &[u8], names: &[Vec<u8>]) -> Option<Option<Vec<u8>>> {
    let parts: Vec<&[u8]> = header.split(|b| *b == b';').collect();
    let keep: Vec<&[u8]> = parts
        .iter()
        .copied()
        .filter(|c| {
            let c = c.trim_ascii();
            let key = c.split(|b| *b == b'=').next().unwrap_or_default();
            !names.contains(&param_key(key.trim_ascii()))
        })
        .collect();
    if keep.len() == parts.len() {
        return None;
    }
    let joined: Vec<Vec<u8>> = keep.iter().map(|c| c.trim_ascii().to_vec()).collect();
    Some((!joined.is_empty()).then(|| joined.join(&b"; "[..])))
}

/// Where tokens must be removed before the request is forwarded, on every path:
/// - a query-parameter token of any provider, always (URLs end up in access logs);
/// - the header or cookie of a provider with `forward_token: false`, unless a provider of the rule
///   deciding this request (`requirement`) reads that same place and forwards its tokens.
///
/// Public, `off`, preflight and no-rule requests pass `None`: no provider then claims the token.
/// `header_names` are the request's header names; every spelling of a token header (`header_key`)
/// is removed.
pub fn token_scrub<'a>(
    config: &Config,
    requirement: Option<&Requirement>,
    header_names: impl IntoIterator<Item = &'a str>,
    path: &[u8],
    cookie: Option<&[u8]>,
) -> Scrub {
    let forwarded_here = |source: &TokenSource| {
        requirement.is_some_and(|r| {
            r.providers
                .iter()
                .filter_map(|&i| config.providers.get(i))
                .any(|p| p.forward_token && p.sources.contains(source))
        })
    };
    let mut params: Vec<Vec<u8>> = Vec::new();
    let mut cookies: Vec<Vec<u8>> = Vec::new();
    let mut headers: Vec<String> = Vec::new();
    for p in &config.providers {
        for source in &p.sources {
            match source {
                TokenSource::Param(name) => params.push(param_key(name.as_bytes())),
                _ if p.forward_token || forwarded_here(source) => {}
                TokenSource::Header { name, .. } => headers.push(header_key(name)),
                TokenSource::Cookie(name) => cookies.push(param_key(name.as_bytes())),
            }
        }
    }
    let mut remove_headers: Vec<String> = Vec::new();
    if !headers.is_empty() {
        for name in header_names {
            let lower = name.to_ascii_lowercase();
            if headers.iter().any(|h| is_header(name, h)) && !remove_headers.contains(&lower) {
                remove_headers.push(lower);
            }
        }
    }
    Scrub {
        remove_headers,
        path: without_query_params(path, &params),
        cookie: cookie.and_then(|c| without_cookies(c, &cookies)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<Vec<u8>> {
        names.iter().map(|n| param_key(n.as_bytes())).collect()
    }

    #[test]
    fn query_tokens_are_cut_from_the_path_in_every_spelling() {
        let at = keys(&["access_token"]);
        assert_eq!(
            without_query_params(b"/a?x=1&access_token=t&y=2#f", &at).as_deref(),
            Some(&b"/a?x=1&y=2#f"[..])
        );
        assert_eq!(
            without_query_params(b"/a?access_token=t", &at).as_deref(),
            Some(&b"/a"[..])
        );
        // Spellings a backend decodes to the same name: percent-encoding, case, PHP's mangling.
        for spelling in [
            "access%5Ftoken",
            "ACCESS_TOKEN",
            "access.token",
            "access+token",
            "access%20token",
            "access[token",
            "access_token",
        ] {
            let path = format!("/a?{spelling}=t&access_token=u&k=v");
            assert_eq!(
                without_query_params(path.as_bytes(), &at).as_deref(),
                Some(&b"/a?k=v"[..]),
                "{spelling}"
            );
        }
        assert_eq!(without_query_params(b"/a?x=1", &at), None);
        assert_eq!(without_query_params(b"/a?access_tokenx=1", &at), None);
        assert_eq!(without_query_params(b"/a", &at), None);
    }

    #[test]
    fn token_cookies_are_cut() {
        let s = keys(&["session"]);
        assert_eq!(
            without_cookies(b"a=1; session=t; b=2", &s),
            Some(Some(b"a=1; b=2".to_vec()))
        );
        assert_eq!(without_cookies(b"session=t", &s), Some(None));
        assert_eq!(without_cookies(b"Session=t; SESSION=u", &s), Some(None));
        assert_eq!(without_cookies(b"a=1", &s), None);
    }

    #[test]
    fn names_compare_as_backends_read_them() {
        assert_eq!(header_key("X_User_Sub"), "x-user-sub");
        assert_eq!(header_key("x-user-sub"), "x-user-sub");
        assert!(is_header("X_User-SUB", "x-user-sub"));
        assert!(!is_header("x-user-subx", "x-user-sub"));
        assert!(starts_as("X_USER_role", "x-user-"));
        assert!(!starts_as("x-use", "x-user-"));
        assert_eq!(percent_decode(b"a%2Eb%zz%4"), b"a.b%zz%4".to_vec());
        assert_eq!(param_key(b"Access%2Etoken"), b"access_token".to_vec());
    }

    #[test]
    fn values_render_as_plain_text() {
        let sep = ",";
        assert_eq!(text(&Value::from("x"), sep), Ok(Some("x".into())));
        assert_eq!(text(&Value::from(42), sep), Ok(Some("42".into())));
        assert_eq!(text(&Value::from(true), sep), Ok(Some("true".into())));
        assert_eq!(
            text(&serde_json::json!(["a", 1, false]), sep),
            Ok(Some("a,1,false".into()))
        );
        assert!(text(&serde_json::json!({"a": 1}), sep).is_err());
        assert!(text(&serde_json::json!([{"a": 1}]), sep).is_err());
        assert_eq!(text(&Value::Null, sep), Ok(None));
    }
}
