//! The pure parts of a key-set refresh: the steps (OIDC discovery document, then JWKS), the checks on
//! each answer, and the errors: a `cause` for the fetch metric and a message for the log.

use crate::codes::codes;
use crate::jwks::{log_text, JwksError, KeySet, MAX_JWKS_BYTES};
use crate::units::split_uri;
use serde_json::Value;

/// Bigger discovery documents are refused (real ones are a few KB).
pub const MAX_DISCOVERY_BYTES: usize = 64 * 1024;

codes! {
    /// The result of a JWKS or discovery fetch: the `result` label of the fetch counter.
    pub enum FetchResult {
        Success => "success",
        Timeout => "timeout",
        ConnectError => "connect_error",
        HttpError => "http_error",
        TooLarge => "too_large",
        Invalid => "invalid",
        NoUsableKey => "no_usable_key",
        IssuerMismatch => "issuer_mismatch",
        /// The host refused to dispatch the call.
        DispatchError => "dispatch_error",
    }
}

/// A failed refresh step: `cause` is the metric label, `message` the log text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub cause: FetchResult,
    pub message: String,
}

impl FetchError {
    pub fn new(cause: FetchResult, message: impl Into<String>) -> Self {
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

/// Envoy's own answer when it could not reach the cluster at all (connect failure, reset before the
/// response headers, no endpoint): these texts are its local replies, not an IdP's.
const ENVOY_CONNECT_FAILURES: &[&[u8]] = &[
    b"upstream connect error or disconnect/reset before headers",
    b"no healthy upstream",
];

/// The two clocks (wall time read by the filter, Envoy's timer) may disagree by a few milliseconds.
const TIMER_SLACK_MS: u64 = 10;

/// An answer to a refresh step, as `dispatch_http_call` delivered it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// `:status`, `None` when the call failed without a response (e.g. a reset after the headers).
    pub status: Option<&'a str>,
    pub body_size: usize,
    /// The first bytes of the body of a non-200 answer (empty for a 200): Envoy's local replies are
    /// told apart from the IdP's by their text.
    pub body_start: &'a [u8],
    /// Time from dispatch to this answer, and the timeout the call was dispatched with.
    pub elapsed_ms: u64,
    pub timeout_ms: u64,
}

/// How much of a non-200 body `Answer::body_start` needs.
pub const BODY_START_BYTES: usize = 160;

/// Checks the status line and size of an answer before its body is read. A failed call is one of:
/// `timeout` (no answer, or Envoy's 504, once the timeout has run out), `connect_error` (Envoy could
/// not reach the IdP: its 503 local reply, or no answer before the timeout) or `http_error` (the IdP
/// answered with another status).
pub fn check_answer(stage: Stage, answer: &Answer<'_>) -> Result<(), FetchError> {
    let what = stage.what();
    let timed_out = answer.elapsed_ms.saturating_add(TIMER_SLACK_MS) >= answer.timeout_ms;
    let envoy_connect_failure = answer.status == Some("503")
        && ENVOY_CONNECT_FAILURES
            .iter()
            .any(|text| answer.body_start.starts_with(text));
    match answer.status {
        None | Some("504") if timed_out => Err(FetchError::new(
            FetchResult::Timeout,
            format!(
                "no answer for the {what} within the {} ms timeout",
                answer.timeout_ms
            ),
        )),
        None => Err(FetchError::new(
            FetchResult::ConnectError,
            format!("the connection for the {what} failed before an answer"),
        )),
        Some(_) if envoy_connect_failure => Err(FetchError::new(
            FetchResult::ConnectError,
            format!(
                "cannot reach the {what} endpoint: {}",
                log_text(
                    &String::from_utf8_lossy(answer.body_start),
                    BODY_START_BYTES
                )
            ),
        )),
        Some("200") if answer.body_size > stage.limit() => Err(FetchError::new(
            FetchResult::TooLarge,
            format!(
                "{what} is {} bytes, limit is {}",
                answer.body_size,
                stage.limit()
            ),
        )),
        Some("200") if answer.body_size == 0 => Err(FetchError::new(
            FetchResult::Invalid,
            format!("empty {what}"),
        )),
        Some("200") => Ok(()),
        Some(other) => Err(FetchError::new(
            FetchResult::HttpError,
            format!("{what} endpoint answered HTTP {}", log_text(other, 8)),
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
    jwks_location_for(body, issuer, &|found| found == issuer, discovery_was_https)
}

/// `jwks_location` where `fits` says whether the document's issuer speaks for the provider (an
/// issuer template accepts its own form); `issuer` is what messages name.
pub fn jwks_location_for(
    body: &[u8],
    issuer: &str,
    fits: &dyn Fn(&str) -> bool,
    discovery_was_https: bool,
) -> Result<(String, String), FetchError> {
    let invalid = |m: &str| FetchError::new(FetchResult::Invalid, m);
    let doc: Value = crate::json::parse(body).map_err(|e| match e {
        // Two `issuer` or `jwks_uri` members: one parser's reading could pass the issuer check
        // while another follows the other URI.
        crate::json::StrictError::DuplicateMember => {
            invalid("discovery document names a JSON member twice")
        }
        crate::json::StrictError::Syntax => invalid("discovery document is not JSON"),
    })?;
    let found = doc
        .get("issuer")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("discovery document has no issuer"))?;
    if !fits(found) {
        let shown: String = found.chars().take(120).collect();
        return Err(FetchError::new(
            FetchResult::IssuerMismatch,
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
            JwksError::TooLarge { .. } => FetchResult::TooLarge,
            JwksError::NoUsableKey { .. } => FetchResult::NoUsableKey,
            JwksError::NotJson | JwksError::DuplicateMember | JwksError::NoKeysArray => {
                FetchResult::Invalid
            }
        };
        FetchError::new(cause, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(r: Result<(), FetchError>) -> &'static str {
        r.err().map_or("ok", |e| e.cause.code())
    }

    fn answer(status: Option<&'static str>, body_size: usize) -> Answer<'static> {
        Answer {
            status,
            body_size,
            body_start: b"",
            elapsed_ms: 30,
            timeout_ms: 500,
        }
    }

    #[test]
    fn answers_are_checked_before_reading() {
        let check = |a: Answer<'_>| cause(check_answer(Stage::Jwks, &a));
        assert_eq!(check(answer(Some("200"), 10)), "ok");
        assert_eq!(check(answer(Some("503"), 10)), "http_error");
        assert_eq!(check(answer(Some("200"), MAX_JWKS_BYTES + 1)), "too_large");
        assert_eq!(
            cause(check_answer(
                Stage::Discovery,
                &answer(Some("200"), MAX_DISCOVERY_BYTES + 1)
            )),
            FetchResult::TooLarge.code()
        );
        assert_eq!(check(answer(Some("200"), 0)), "invalid");
        let e = check_answer(Stage::Jwks, &answer(Some("503"), 10)).unwrap_err();
        assert_eq!(e.message, "JWKS endpoint answered HTTP 503");
    }

    #[test]
    fn timeouts_connect_failures_and_http_errors_are_told_apart() {
        let check = |a: Answer<'_>| cause(check_answer(Stage::Jwks, &a));
        // Envoy's 504 local reply once the timeout ran out; or no answer at all by then.
        let late = |status, body: &'static [u8]| Answer {
            status,
            body_size: body.len(),
            body_start: body,
            elapsed_ms: 500,
            timeout_ms: 500,
        };
        assert_eq!(
            check(late(Some("504"), b"upstream request timeout")),
            FetchResult::Timeout.code()
        );
        assert_eq!(check(late(None, b"")), "timeout");
        // An IdP's (or its proxy's) own 504 that came before our timeout is its answer.
        assert_eq!(
            check(Answer {
                elapsed_ms: 120,
                ..late(Some("504"), b"gateway timeout")
            }),
            FetchResult::HttpError.code()
        );
        // Envoy could not reach the IdP: connection refused, reset before headers, no endpoint.
        let refused: &[u8] = b"upstream connect error or disconnect/reset before headers. \
            retried and the latest reset reason: remote connection failure, transport failure \
            reason: delayed connect error: Connection refused";
        let quick = |status, body: &'static [u8]| Answer {
            elapsed_ms: 3,
            ..late(status, body)
        };
        assert_eq!(check(quick(Some("503"), refused)), "connect_error");
        assert_eq!(
            check(quick(Some("503"), b"no healthy upstream")),
            FetchResult::ConnectError.code()
        );
        // A reset after the response began: no status, well before the timeout.
        assert_eq!(check(quick(None, b"")), "connect_error");
        // The IdP's own 503 with any other text.
        assert_eq!(
            check(quick(Some("503"), b"mock idp: status 503\n")),
            FetchResult::HttpError.code()
        );
        assert_eq!(
            check(quick(Some("500"), b"no healthy upstream")),
            FetchResult::HttpError.code()
        );
        let e = check_answer(Stage::Discovery, &late(Some("504"), b"")).unwrap_err();
        assert_eq!(
            e.message,
            "no answer for the discovery document within the 500 ms timeout"
        );
        let e = check_answer(
            Stage::Jwks,
            &quick(Some("503"), b"no healthy upstream\x1b[2J"),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "cannot reach the JWKS endpoint: no healthy upstream\\u{1b}[2J"
        );
    }

    #[test]
    fn every_cause_is_a_metric_label_and_every_label_a_cause() {
        // One input per way a refresh step fails, run through the real checks; the labels are then
        // the fetcher's own causes, not a second list.
        let slow = Answer {
            elapsed_ms: 500,
            ..answer(None, 0)
        };
        let refused = Answer {
            body_start: b"no healthy upstream",
            ..answer(Some("503"), 10)
        };
        let issuer = br#"{"issuer":"https://other","jwks_uri":"https://x/j"}"#;
        let errors = [
            check_answer(Stage::Jwks, &slow).err(),
            check_answer(Stage::Jwks, &refused).err(),
            check_answer(Stage::Jwks, &answer(Some("500"), 10)).err(),
            check_answer(Stage::Jwks, &answer(Some("200"), MAX_JWKS_BYTES + 1)).err(),
            parse_jwks(b"nope").err(),
            parse_jwks(br#"{"keys":[{"kty":"oct","k":"AA"}]}"#).err(),
            jwks_location(issuer, "https://idp", true).err(),
        ];
        let mut causes: Vec<&str> = errors.iter().flatten().map(|e| e.cause.code()).collect();
        causes.sort_unstable();
        causes.dedup();
        // `success` and `dispatch_error` (the host refused the call) are counted by the filter.
        let mut labels: Vec<&str> = FetchResult::ALL
            .iter()
            .filter(|l| ![FetchResult::Success, FetchResult::DispatchError].contains(l))
            .map(|l| l.code())
            .collect();
        labels.sort_unstable();
        assert_eq!(causes, labels);
    }

    #[test]
    fn discovery_must_name_our_issuer() {
        let doc = br#"{"issuer":"https://idp.example","jwks_uri":"https://keys.idp.example/jwks"}"#;
        assert_eq!(
            jwks_location(doc, "https://idp.example", true),
            Ok(("keys.idp.example".to_owned(), "/jwks".to_owned()))
        );
        let e = jwks_location(doc, "https://idp.example/", true).unwrap_err();
        assert_eq!(e.cause, FetchResult::IssuerMismatch);
        assert!(e.message.contains("does not match"));
        let plain = br#"{"issuer":"https://idp.example","jwks_uri":"http://idp.example/jwks"}"#;
        assert!(jwks_location(plain, "https://idp.example", true).is_err());
        assert!(jwks_location(plain, "https://idp.example", false).is_ok());
        assert_eq!(
            jwks_location(b"[]", "x", true).unwrap_err().cause,
            FetchResult::Invalid
        );
        assert!(jwks_location(br#"{"issuer":"x"}"#, "x", true)
            .unwrap_err()
            .message
            .contains("jwks_uri"));
    }

    #[test]
    fn duplicate_members_are_refused_in_discovery_and_jwks() {
        let doc = br#"{"issuer":"https://evil.example","issuer":"https://idp.example","jwks_uri":"https://idp.example/jwks"}"#;
        let e = jwks_location(doc, "https://idp.example", true).unwrap_err();
        assert_eq!(e.cause, FetchResult::Invalid);
        assert!(e.message.contains("twice"), "{}", e.message);
        let doc = br#"{"issuer":"https://idp.example","jwks_uri":"http://evil/jwks","jwks_uri":"https://idp.example/jwks"}"#;
        assert!(jwks_location(doc, "https://idp.example", true).is_err());
        let e = parse_jwks(br#"{"keys":[],"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#).unwrap_err();
        assert_eq!(e.cause, FetchResult::Invalid);
        assert!(e.message.contains("twice"), "{}", e.message);
    }

    #[test]
    fn jwks_failures_have_causes() {
        assert_eq!(parse_jwks(b"nope").unwrap_err().cause, FetchResult::Invalid);
        assert_eq!(
            parse_jwks(br#"{"keys":[{"kty":"oct","k":"AA"}]}"#)
                .unwrap_err()
                .cause,
            FetchResult::NoUsableKey
        );
    }
}
