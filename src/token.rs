//! Compact JWS parsing into an `UntrustedToken`: nothing in it is trusted until `authenticator` has
//! checked claims and signature. Rejects, with a reason and without panicking: oversized input,
//! non-ASCII bytes, a segment count other than 3 (so JWE too), bad base64url, non-object JSON,
//! `alg: none` in any spelling, HMAC and unknown algorithms, embedded or remote key headers
//! (`jwk`, `jku`, `x5u`, `x5c`) and any `crit` (this filter understands no extensions).

use crate::b64;
use crate::crypto::Alg;
use crate::error::Denial;
use serde_json::{Map, Value};

pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The JWS layer (RFC 7515 compact serialization): header checked, payload still raw bytes.
#[derive(Debug)]
pub struct Jws {
    pub alg: Alg,
    pub kid: Option<String>,
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
    pub claims: Map<String, Value>,
    pub signing_input: Vec<u8>,
    pub signature: Vec<u8>,
}

fn json_object(segment: &[u8], what: &'static str) -> Result<Map<String, Value>, Denial> {
    let raw = b64::decode(segment).ok_or(Denial::Malformed(what))?;
    match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Denial::Malformed(what)),
    }
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
        let header = json_object(header_b64, "token header is not base64url JSON object")?;
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
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(Denial::Malformed("token kid is not a string")),
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
            payload,
            signing_input,
            signature,
        })
    }
}

impl UntrustedToken {
    pub fn parse(token: &[u8], max_bytes: usize) -> Result<UntrustedToken, Denial> {
        let jws = Jws::parse(token, max_bytes)?;
        let claims = match serde_json::from_slice::<Value>(&jws.payload) {
            Ok(Value::Object(map)) => map,
            _ => return Err(Denial::Malformed("token payload is not a JSON object")),
        };
        Ok(UntrustedToken {
            alg: jws.alg,
            kid: jws.kid,
            claims,
            signing_input: jws.signing_input,
            signature: jws.signature,
        })
    }
}
