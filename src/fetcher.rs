//! The pure parts of a key-set refresh: the steps (OIDC discovery document, then JWKS), the checks on
//! each answer, and the errors: a `cause` for the fetch metric and a message for the log.

use crate::config::split_uri;
use crate::jwks::{JwksError, KeySet, MAX_JWKS_BYTES};
use serde_json::Value;

/// Bigger discovery documents are refused (real ones are a few KB).
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

/// A failed refresh step: `cause` is the metric label (one of `metrics::FETCH_RESULTS`), `message`
/// the log text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub cause: &'static str,
    pub message: String,
}

impl FetchError {
    pub fn new(cause: &'static str, message: impl Into<String>) -> Self {
        FetchError {
            cause,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Discovery,
    Jwks,
}

impl Stage {
    fn what(self) -> &'static str {
        match self {
            Stage::Discovery => "discovery document",
            Stage::Jwks => "JWKS",
        }
    }

    fn limit(self) -> usize {
        match self {
            Stage::Discovery => MAX_DISCOVERY_BYTES,
            Stage::Jwks => MAX_JWKS_BYTES,
        }
    }
}

/// Checks the status line and size of an answer before its body is read.
pub fn check_answer(
    stage: Stage,
    status: Option<&str>,
    body_size: usize,
) -> Result<(), FetchError> {
    let what = stage.what();
    match status {
        None => Err(FetchError::new(
            "timeout",
            format!("no answer for the {what} (timeout or connection failure)"),
        )),
        Some("200") if body_size > stage.limit() => Err(FetchError::new(
            "too_large",
            format!("{what} is {body_size} bytes, limit is {}", stage.limit()),
        )),
        Some("200") if body_size == 0 => Err(FetchError::new("invalid", format!("empty {what}"))),
        Some("200") => Ok(()),
        Some(other) => Err(FetchError::new(
            "http_error",
            format!("{what} endpoint answered HTTP {other}"),
        )),
    }
}

/// Reads `jwks_uri` from an OIDC discovery document after checking that it speaks for `issuer`
/// (OpenID Connect Discovery §4.3: the `issuer` value must be identical to the one configured).
/// Returns the JWKS `(authority, path)`. An `https` discovery never points to a plain-`http` JWKS.
pub fn jwks_location(
    body: &[u8],
    issuer: &str,
    discovery_was_https: bool,
) -> Result<(String, String), FetchError> {
    let invalid = |m: &str| FetchError::new("invalid", m);
    let doc: Value =
        serde_json::from_slice(body).map_err(|_| invalid("discovery document is not JSON"))?;
    let found = doc
        .get("issuer")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("discovery document has no issuer"))?;
    if found != issuer {
        let shown: String = found.chars().take(120).collect();
        return Err(FetchError::new(
            "issuer_mismatch",
            format!("discovery issuer {shown:?} does not match the configured issuer {issuer:?}"),
        ));
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("discovery document has no jwks_uri"))?;
    if discovery_was_https && !uri.starts_with("https://") {
        return Err(invalid("jwks_uri is not https although discovery was"));
    }
    split_uri(uri).ok_or_else(|| invalid("jwks_uri is not an http(s) URL"))
}

/// Parses a fetched JWKS; a set without a usable key is a failed fetch, never published.
pub fn parse_jwks(body: &[u8]) -> Result<KeySet, FetchError> {
    KeySet::parse(body).map_err(|e| {
        let cause = match e {
            JwksError::TooLarge(_) => "too_large",
            JwksError::NoUsableKey { .. } => "no_usable_key",
            JwksError::NotJson | JwksError::NoKeysArray => "invalid",
        };
        FetchError::new(cause, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(r: Result<(), FetchError>) -> &'static str {
        r.err().map_or("ok", |e| e.cause)
    }

    #[test]
    fn answers_are_checked_before_reading() {
        assert_eq!(cause(check_answer(Stage::Jwks, Some("200"), 10)), "ok");
        assert_eq!(cause(check_answer(Stage::Jwks, None, 0)), "timeout");
        assert_eq!(
            cause(check_answer(Stage::Jwks, Some("503"), 10)),
            "http_error"
        );
        assert_eq!(
            cause(check_answer(Stage::Jwks, Some("200"), MAX_JWKS_BYTES + 1)),
            "too_large"
        );
        assert_eq!(
            cause(check_answer(
                Stage::Discovery,
                Some("200"),
                MAX_DISCOVERY_BYTES + 1
            )),
            "too_large"
        );
        assert_eq!(cause(check_answer(Stage::Jwks, Some("200"), 0)), "invalid");
        let e = check_answer(Stage::Jwks, Some("503"), 10).unwrap_err();
        assert_eq!(e.message, "JWKS endpoint answered HTTP 503");
    }

    #[test]
    fn discovery_must_name_our_issuer() {
        let doc = br#"{"issuer":"https://idp.example","jwks_uri":"https://keys.idp.example/jwks"}"#;
        assert_eq!(
            jwks_location(doc, "https://idp.example", true),
            Ok(("keys.idp.example".to_owned(), "/jwks".to_owned()))
        );
        let e = jwks_location(doc, "https://idp.example/", true).unwrap_err();
        assert_eq!(e.cause, "issuer_mismatch");
        assert!(e.message.contains("does not match"));
        let plain = br#"{"issuer":"https://idp.example","jwks_uri":"http://idp.example/jwks"}"#;
        assert!(jwks_location(plain, "https://idp.example", true).is_err());
        assert!(jwks_location(plain, "https://idp.example", false).is_ok());
        assert_eq!(
            jwks_location(b"[]", "x", true).unwrap_err().cause,
            "invalid"
        );
        assert!(jwks_location(br#"{"issuer":"x"}"#, "x", true)
            .unwrap_err()
            .message
            .contains("jwks_uri"));
    }

    #[test]
    fn jwks_failures_have_causes() {
        assert_eq!(parse_jwks(b"nope").unwrap_err().cause, "invalid");
        assert_eq!(
            parse_jwks(br#"{"keys":[{"kty":"oct","k":"AA"}]}"#)
                .unwrap_err()
                .cause,
            "no_usable_key"
        );
    }
}
