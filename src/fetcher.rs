//! The pure parts of a key-set refresh: the steps (OIDC discovery document, then JWKS), the checks on
//! each answer, and the error texts that end up in the log. `filter` does the HTTP calls.

use crate::config::split_uri;
use crate::jwks::{KeySet, MAX_JWKS_BYTES};
use serde_json::Value;

/// Bigger discovery documents are refused (real ones are a few KB).
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

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
pub fn check_answer(stage: Stage, status: Option<&str>, body_size: usize) -> Result<(), String> {
    match status {
        None => Err(format!(
            "no answer for the {} (timeout or connection failure)",
            stage.what()
        )),
        Some("200") if body_size > stage.limit() => Err(format!(
            "{} is {body_size} bytes, limit is {}",
            stage.what(),
            stage.limit()
        )),
        Some("200") if body_size == 0 => Err(format!("empty {}", stage.what())),
        Some("200") => Ok(()),
        Some(other) => Err(format!("{} endpoint answered HTTP {other}", stage.what())),
    }
}

/// Reads `jwks_uri` from an OIDC discovery document after checking that it speaks for `issuer`
/// (OpenID Connect Discovery §4.3: the `issuer` value must be identical to the one configured).
/// Returns the JWKS `(authority, path)`. An `https` discovery never points to a plain-`http` JWKS.
pub fn jwks_location(
    body: &[u8],
    issuer: &str,
    discovery_was_https: bool,
) -> Result<(String, String), String> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|_| "discovery document is not JSON".to_owned())?;
    let found = doc
        .get("issuer")
        .and_then(Value::as_str)
        .ok_or("discovery document has no issuer")?;
    if found != issuer {
        // Both values come from config or the IdP, not from a client; still keep the line short.
        let shown: String = found.chars().take(120).collect();
        return Err(format!(
            "discovery issuer {shown:?} does not match the configured issuer {issuer:?}"
        ));
    }
    let uri = doc
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or("discovery document has no jwks_uri")?;
    if discovery_was_https && !uri.starts_with("https://") {
        return Err("jwks_uri is not https although discovery was".to_owned());
    }
    split_uri(uri).ok_or_else(|| "jwks_uri is not an http(s) URL".to_owned())
}

/// Parses a fetched JWKS; a set without a usable key is a failed fetch, never published.
pub fn parse_jwks(body: &[u8]) -> Result<KeySet, String> {
    KeySet::parse(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_checked_before_reading() {
        assert!(check_answer(Stage::Jwks, Some("200"), 10).is_ok());
        assert!(check_answer(Stage::Jwks, None, 0)
            .unwrap_err()
            .contains("timeout"));
        assert!(check_answer(Stage::Jwks, Some("503"), 10)
            .unwrap_err()
            .contains("HTTP 503"));
        assert!(check_answer(Stage::Jwks, Some("200"), MAX_JWKS_BYTES + 1)
            .unwrap_err()
            .contains("limit"));
        assert!(check_answer(Stage::Discovery, Some("200"), MAX_DISCOVERY_BYTES + 1).is_err());
        assert!(check_answer(Stage::Jwks, Some("200"), 0).is_err());
    }

    #[test]
    fn discovery_must_name_our_issuer() {
        let doc = br#"{"issuer":"https://idp.example","jwks_uri":"https://keys.idp.example/jwks"}"#;
        assert_eq!(
            jwks_location(doc, "https://idp.example", true),
            Ok(("keys.idp.example".to_owned(), "/jwks".to_owned()))
        );
        assert!(jwks_location(doc, "https://idp.example/", true)
            .unwrap_err()
            .contains("does not match"));
        let plain = br#"{"issuer":"https://idp.example","jwks_uri":"http://idp.example/jwks"}"#;
        assert!(jwks_location(plain, "https://idp.example", true).is_err());
        assert!(jwks_location(plain, "https://idp.example", false).is_ok());
        assert!(jwks_location(b"[]", "x", true).is_err());
        assert!(jwks_location(br#"{"issuer":"x"}"#, "x", true)
            .unwrap_err()
            .contains("jwks_uri"));
    }
}
