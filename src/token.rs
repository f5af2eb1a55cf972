//! Compact JWS parsing into an `UntrustedToken`: nothing in it is trusted until `authenticator` has
//! checked claims and signature. Rejects, with a reason and without panicking: oversized input,
//! non-ASCII bytes, a segment count other than 3 (so JWE too), bad base64url, non-object JSON,
//! `alg: none` in any spelling, HMAC and unknown algorithms, embedded or remote key headers
//! (`jwk`, `jku`, `x5u`, `x5c`), any `crit` (this filter understands no extensions), a nested JWT
//! (`cty: JWT`, which this filter does not unwrap), and duplicate JSON member names at any level of
//! the header or the claims (see `json`).

use crate::b64;
use crate::crypto::Alg;
use crate::error::Denial;
use crate::json::{self, StrictError};
use serde_json::{Map, Value};

pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The JWS layer (RFC 7515 compact serialization): header checked, payload still raw bytes.
#[derive(Debug)]
pub struct Jws {
    pub alg: Alg,
    pub kid: Option<String>,
    /// The header's `typ` (RFC 7515 §4.1.9), as written.
    pub typ: Option<String>,
    pub payload: Vec<u8>,
    /// `base64url(header) "." base64url(payload)`: the bytes the signature covers.
    pub signing_input: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The JWT layer: a JWS whose payload is a JSON object of claims. Nothing in it is trusted yet.
#[derive(Debug)]
pub struct UntrustedToken {
    pub alg: Alg,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub claims: Map<String, Value>,
    pub signing_input: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A JSON object of the header or payload; `what` names the part for the denial.
fn object_of(raw: &[u8], what: Part) -> Result<Map<String, Value>, Denial> {
    json::parse_object(raw).map_err(|e| {
        Denial::Malformed(match (e, what) {
            (StrictError::DuplicateMember, Part::Header) => "token header repeats a member name",
            (StrictError::DuplicateMember, Part::Payload) => "token payload repeats a member name",
            (StrictError::Syntax, Part::Header) => "token header is not base64url JSON object",
            (StrictError::Syntax, Part::Payload) => "token payload is not a JSON object",
        })
    })
}

#[derive(Clone, Copy)]
enum Part {
    Header,
    Payload,
}

/// `cty` values that announce a nested JWT (RFC 7519 §5.2: "JWT", media types compare without
/// case, with or without the `application/` prefix).
fn is_nested_jwt(cty: &str) -> bool {
    let bare = match cty.get(..12) {
        Some(p) if p.eq_ignore_ascii_case("application/") => &cty[12..],
        _ => cty,
    };
    bare.eq_ignore_ascii_case("jwt")
}

impl Jws {
    pub fn parse(token: &[u8], max_bytes: usize) -> Result<Jws, Denial> {
        if token.len() > max_bytes {
            return Err(Denial::Oversized);
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(Denial::Malformed("token has bytes outside base64url"));
        }
        let parts: Vec<&[u8]> = token.split(|b| *b == b'.').collect();
        let [header_b64, payload_b64, signature_b64] = parts.as_slice() else {
            return Err(Denial::Malformed(
                "token is not three dot-separated segments",
            ));
        };
        let header_raw = b64::decode(header_b64).ok_or(Denial::Malformed(
            "token header is not base64url JSON object",
        ))?;
        let header = object_of(&header_raw, Part::Header)?;
        let alg = match header.get("alg") {
            Some(Value::String(name)) => Alg::from_name(name).ok_or(Denial::AlgNotAllowed)?,
            _ => return Err(Denial::Malformed("token header has no alg")),
        };
        for (name, reason) in [
            ("jku", "jku header is not accepted"),
            ("jwk", "jwk header is not accepted"),
            ("x5u", "x5u header is not accepted"),
            ("x5c", "x5c header is not accepted"),
            ("crit", "crit header names an unsupported extension"),
        ] {
            if header.contains_key(name) {
                return Err(Denial::ForbiddenHeader(reason));
            }
        }
        match header.get("cty") {
            None => {}
            Some(Value::String(cty)) if is_nested_jwt(cty) => {
                return Err(Denial::ForbiddenHeader(
                    "nested JWTs (cty JWT) are not supported",
                ))
            }
            Some(Value::String(_)) => {}
            Some(_) => return Err(Denial::Malformed("token cty is not a string")),
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(Denial::Malformed("token kid is not a string")),
        };
        let typ = match header.get("typ") {
            None => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(Denial::Malformed("token typ is not a string")),
        };
        let payload =
            b64::decode(payload_b64).ok_or(Denial::Malformed("token payload is not base64url"))?;
        if signature_b64.is_empty() {
            return Err(Denial::Malformed("token has no signature"));
        }
        let signature = b64::decode(signature_b64)
            .ok_or(Denial::Malformed("token signature is not base64url"))?;
        let signing_input = token[..header_b64.len() + 1 + payload_b64.len()].to_vec();
        Ok(Jws {
            alg,
            kid,
            typ,
            payload,
            signing_input,
            signature,
        })
    }
}

impl UntrustedToken {
    pub fn parse(token: &[u8], max_bytes: usize) -> Result<UntrustedToken, Denial> {
        let jws = Jws::parse(token, max_bytes)?;
        let claims = object_of(&jws.payload, Part::Payload)?;
        Ok(UntrustedToken {
            alg: jws.alg,
            kid: jws.kid,
            typ: jws.typ,
            claims,
            signing_input: jws.signing_input,
            signature: jws.signature,
        })
    }
}
