//! Detection of the host backend at VM start: known-answer signatures (`kat.json`) verified through
//! the host, valid and tampered, before the filter trusts it with any token. Sits above `crypto` and
//! `jwks` (its keys go through the same JWK parser as an IdP's), so neither depends on the other.

use crate::crypto::{host_verify, Alg, PublicKey, SignatureHost};

/// Signatures made offline (Python `cryptography`) over one text, one per host-capable algorithm:
/// RSA-2048 with each hash and one key per curve. `src/kat.json`.
const KNOWN_ANSWERS: &str = include_str!("kat.json");

/// One known-answer case: algorithm, key (through the same JWK parser as an IdP's keys) and a
/// signature that verifies.
pub struct KnownAnswer {
    pub alg: Alg,
    pub key: PublicKey,
    pub text: Vec<u8>,
    pub signature: Vec<u8>,
}

pub fn known_answers() -> Result<Vec<KnownAnswer>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(KNOWN_ANSWERS).map_err(|e| format!("known answers: {e}"))?;
    let b64 = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|s| crate::b64::decode(s.as_bytes()))
            .ok_or_else(|| "known answers: not base64url".to_owned())
    };
    let text = b64(&doc["text"])?;
    let mut out = Vec::new();
    for case in doc["cases"].as_array().into_iter().flatten() {
        let alg = case["alg"]
            .as_str()
            .and_then(Alg::from_name)
            .ok_or("known answers: bad alg")?;
        let (_, key) = crate::jwks::parse_jwk_value(&case["jwk"])
            .map_err(|e| format!("known answers: {} key: {e}", alg.name()))?;
        out.push(KnownAnswer {
            alg,
            key,
            text: text.clone(),
            signature: b64(&case["sig"])?,
        });
    }
    Ok(out)
}

/// Whether the host verifies correctly: every known answer must verify, and the same signature
/// with one bit changed must not, each answered by the host itself (no fallback). The error names
/// the first case that failed.
pub fn detect(host: &dyn SignatureHost) -> Result<(), String> {
    let cases = known_answers()?;
    for alg in Alg::ALL.into_iter().filter(|a| a.host_capable()) {
        if !cases.iter().any(|c| c.alg == alg) {
            return Err(format!("no known answer for {}", alg.name()));
        }
    }
    for case in &cases {
        let name = case.alg.name();
        match host_verify(host, case.alg, &case.key, &case.text, &case.signature) {
            Ok(true) => {}
            Ok(false) => return Err(format!("the host rejected a valid {name} signature")),
            Err(e) => return Err(e.to_string()),
        }
        let mut tampered = case.signature.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        match host_verify(host, case.alg, &case.key, &case.text, &tampered) {
            Ok(false) => {}
            Ok(true) => return Err(format!("the host accepted a tampered {name} signature")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}
