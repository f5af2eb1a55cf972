//! One place that turns a denial into an HTTP answer: 401 + `WWW-Authenticate: Bearer` (RFC 6750 §3)
//! for missing or invalid tokens (a token for another audience included: it is not valid for this
//! resource, and the answer must not tell a forger "genuine, but not here"), 400 `invalid_request` for
//! a request presenting more than one token, 403 only for a verified token lacking a scope or claim
//! (or a request no rule covers), 503 +
//! `Retry-After` when keys cannot be had (an IdP outage is not the client's fault, and on-call must be
//! able to tell the two apart). The body is a small JSON object with the stable reason code. Nothing
//! from the request is echoed.

use crate::config::Denials;
use crate::error::Denial;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyResponse {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl DenyResponse {
    /// The headers as the host's local-response call takes them.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

pub const RETRY_AFTER_SECS: u32 = 5;

/// The answer with the default shape (details shown, the built-in body).
pub fn deny_response(denial: &Denial, realm: &str) -> DenyResponse {
    deny_response_shaped(denial, realm, &Denials::default())
}

/// Replaces the placeholders in every string of `template`.
fn fill(template: &Value, vars: &[(&str, String)]) -> Value {
    match template {
        Value::String(s) => {
            let mut out = s.clone();
            for (name, value) in vars {
                out = out.replace(name, value);
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, vars)).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), fill(v, vars))).collect())
        }
        other => other.clone(),
    }
}

/// The answer in the shape `denials` asks for. The status, the `WWW-Authenticate` scheme and its
/// `error` never change; with `strip_details` the `error_description` and the body's reason go.
pub fn deny_response_shaped(denial: &Denial, realm: &str, denials: &Denials) -> DenyResponse {
    let (status, error) = match denial {
        Denial::Missing => (401, None),
        Denial::InvalidRequest(_) => (400, Some("invalid_request")),
        // Both follow a verified signature only (see `authenticator::authorize`).
        Denial::InsufficientScope(_) | Denial::ClaimMismatch => (403, Some("insufficient_scope")),
        Denial::NoRule => (403, None),
        Denial::KeysUnavailable => (503, None),
        Denial::Internal => (500, None),
        Denial::InvalidDpopProof(_) | Denial::DpopReplay => (401, Some("invalid_dpop_proof")),
        _ => (401, Some("invalid_token")),
    };
    // RFC 9449 §7.1: DPoP failures, and the 401s and 403s of a route that needs DPoP, are answered
    // with a DPoP challenge naming the proof algorithms.
    let dpop_route = denials.dpop_challenge && matches!(status, 401 | 403);
    let scheme = match denial {
        Denial::MtlsBinding(_) => format!("Bearer realm=\"{realm}\""),
        Denial::InvalidDpopProof(_)
        | Denial::DpopReplay
        | Denial::DpopBinding(_)
        | Denial::BindingRequired => {
            format!(
                "DPoP realm=\"{realm}\", algs=\"{}\"",
                crate::binding::PROOF_ALGS
            )
        }
        _ if dpop_route => format!(
            "DPoP realm=\"{realm}\", algs=\"{}\"",
            crate::binding::PROOF_ALGS
        ),
        _ => format!("Bearer realm=\"{realm}\""),
    };
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    match (status, error) {
        (503, _) => headers.push(("retry-after".to_owned(), RETRY_AFTER_SECS.to_string())),
        (_, None) if status == 401 => headers.push(("www-authenticate".to_owned(), scheme)),
        (_, Some(error)) => {
            // RFC 6750 §3: `scope` names what the resource needs; it comes from config, never from
            // the request, and config validation keeps it free of quotes and control characters.
            let scope = match denial {
                Denial::InsufficientScope(required) => format!(", scope=\"{required}\""),
                _ => String::new(),
            };
            let description = if denials.strip_details {
                String::new()
            } else {
                format!(", error_description=\"{}\"", denial.description())
            };
            headers.push((
                "www-authenticate".to_owned(),
                format!("{scheme}, error=\"{error}\"{description}{scope}"),
            ))
        }
        _ => {}
    }
    let error = error.unwrap_or(match status {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        500 => "internal_error",
        _ => "unavailable",
    });
    let (code, message) = if denials.strip_details {
        (error, "request denied")
    } else {
        (denial.code(), denial.description())
    };
    let body = match &denials.body_template {
        Some(template) => fill(
            template,
            &[
                ("{status}", status.to_string()),
                ("{error}", error.to_owned()),
                ("{code}", code.to_owned()),
                ("{message}", message.to_owned()),
            ],
        )
        .to_string(),
        None if denials.strip_details => serde_json::json!({ "error": error }).to_string(),
        None => serde_json::json!({
            "error": error,
            "code": code,
            "message": message,
        })
        .to_string(),
    };
    DenyResponse {
        status,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a DenyResponse, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn statuses_and_challenges() {
        let r = deny_response(&Denial::Missing, "demo");
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"demo\"")
        );
        let r = deny_response(&Denial::Expired, "demo");
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"demo\", error=\"invalid_token\", error_description=\"token expired\"")
        );
        let r = deny_response(&Denial::WrongAudience, "demo");
        assert_eq!(
            r.status, 401,
            "an audience that does not fit is an invalid token"
        );
        assert!(header(&r, "www-authenticate").is_some_and(|v| v.contains("invalid_token")));
        let r = deny_response(&Denial::ClaimMismatch, "demo");
        assert_eq!(r.status, 403);
        assert!(header(&r, "www-authenticate").is_some_and(|v| v.contains("insufficient_scope")));
        let r = deny_response(&Denial::InvalidRequest("two tokens"), "demo");
        assert_eq!(r.status, 400);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"demo\", error=\"invalid_request\", error_description=\"two tokens\"")
        );
        let r = deny_response(&Denial::Internal, "demo");
        assert_eq!(r.status, 500);
        assert!(header(&r, "www-authenticate").is_none());
        let r = deny_response(&Denial::KeysUnavailable, "demo");
        assert_eq!(r.status, 503);
        assert_eq!(header(&r, "retry-after"), Some("5"));
        assert!(header(&r, "www-authenticate").is_none());
    }

    #[test]
    fn body_is_json_with_stable_code() {
        let r = deny_response(&Denial::BadSignature, "demo");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["code"], "bad_signature");
        assert_eq!(v["error"], "invalid_token");
    }
}
