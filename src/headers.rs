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

use crate::authenticator::{claim, granted_scopes, scalar_text};
use crate::config::{Config, Provider, Requirement, TokenSource};
use serde_json::{Map, Value};

pub fn to_strip<'a>(config: &Config, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names
        .into_iter()
        .map(str::to_ascii_lowercase)
        .filter(|n| {
            config.managed_headers.iter().any(|m| m == n)
                || (config
                    .strip_header_prefixes
                    .iter()
                    .any(|p| n.starts_with(p.as_str()))
                    && !config.token_headers.iter().any(|t| t == n))
        })
        .collect()
}

/// Why a claim was not written into its header (never the value itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub header: String,
    pub reason: &'static str,
}

impl Dropped {
    /// The `reason` label of the `claims_dropped` metric.
    pub fn metric_reason(&self) -> &'static str {
        match self.reason {
            "control character in value" => "control_character",
            "value too long" => "too_long",
            _ => "not_plain",
        }
    }
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
        let value = if mapping.claim == "scope" {
            let scopes = granted_scopes(claims);
            (!scopes.is_empty()).then(|| scopes.join(" "))
        } else {
            match claim(claims, &mapping.claim).map(|v| text(v, ",")) {
                None | Some(Ok(None)) => None,
                Some(Ok(Some(t))) => Some(t),
                Some(Err(reason)) => {
                    dropped.push(Dropped {
                        header: mapping.header.clone(),
                        reason,
                    });
                    None
                }
            }
        };
        let Some(value) = value else { continue };
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            dropped.push(Dropped {
                header: mapping.header.clone(),
                reason: "control character in value",
            });
        } else if value.len() > max_bytes {
            dropped.push(Dropped {
                header: mapping.header.clone(),
                reason: "value too long",
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

fn without_query_params(path: &[u8], names: &[&str]) -> Option<Vec<u8>> {
    let q = path.iter().position(|b| *b == b'?')?;
    let (base, query) = (&path[..q], &path[q + 1..]);
    let (query, fragment) = match query.iter().position(|b| *b == b'#') {
        Some(f) => (&query[..f], &query[f..]),
        None => (query, &b""[..]),
    };
    let keep: Vec<&[u8]> = query
        .split(|b| *b == b'&')
        .filter(|pair| {
            let key = pair.split(|b| *b == b'=').next().unwrap_or_default();
            !names.iter().any(|n| n.as_bytes() == key)
        })
        .collect();
    if keep.len() == query.split(|b| *b == b'&').count() {
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

fn without_cookies(header: &[u8], names: &[&str]) -> Option<Option<Vec<u8>>> {
    let parts: Vec<&[u8]> = header.split(|b| *b == b';').collect();
    let keep: Vec<&[u8]> = parts
        .iter()
        .copied()
        .filter(|c| {
            let c = c.trim_ascii();
            let key = c.split(|b| *b == b'=').next().unwrap_or_default();
            !names.iter().any(|n| n.as_bytes() == key)
        })
        .collect();
    if keep.len() == parts.len() {
        return None;
    }
    let joined: Vec<Vec<u8>> = keep.iter().map(|c| c.trim_ascii().to_vec()).collect();
    Some((!joined.is_empty()).then(|| joined.join(&b"; "[..])))
}

pub fn token_scrub(
    config: &Config,
    requirement: &Requirement,
    path: &[u8],
    cookie: Option<&[u8]>,
) -> Scrub {
    let providers: Vec<&Provider> = requirement
        .providers
        .iter()
        .filter_map(|&i| config.providers.get(i))
        .collect();
    let mut params = Vec::new();
    let mut cookies = Vec::new();
    let mut scrub = Scrub::default();
    for p in &providers {
        for source in &p.sources {
            match source {
                TokenSource::Param(name) => params.push(name.as_str()),
                TokenSource::Header { name, .. }
                    if !p.forward_token && !scrub.remove_headers.contains(name) =>
                {
                    scrub.remove_headers.push(name.clone());
                }
                TokenSource::Cookie(name) if !p.forward_token => cookies.push(name.as_str()),
                _ => {}
            }
        }
    }
    scrub.path = without_query_params(path, &params);
    scrub.cookie = cookie.and_then(|c| without_cookies(c, &cookies));
    scrub
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_tokens_are_cut_from_the_path() {
        assert_eq!(
            without_query_params(b"/a?x=1&access_token=t&y=2#f", &["access_token"]).as_deref(),
            Some(&b"/a?x=1&y=2#f"[..])
        );
        assert_eq!(
            without_query_params(b"/a?access_token=t", &["access_token"]).as_deref(),
            Some(&b"/a"[..])
        );
        assert_eq!(without_query_params(b"/a?x=1", &["access_token"]), None);
        assert_eq!(without_query_params(b"/a", &["access_token"]), None);
    }

    #[test]
    fn token_cookies_are_cut() {
        assert_eq!(
            without_cookies(b"a=1; session=t; b=2", &["session"]),
            Some(Some(b"a=1; b=2".to_vec()))
        );
        assert_eq!(without_cookies(b"session=t", &["session"]), Some(None));
        assert_eq!(without_cookies(b"a=1", &["session"]), None);
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
