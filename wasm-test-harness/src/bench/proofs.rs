//! The `dpop` workload's inputs: one DPoP-bound access token (`cnf.jkt` = the RFC 7638 thumbprint of
//! the ES256 fixture key ec-1, so it is verified once and then served from the verified-token cache)
//! and, right before each wrk run, a fresh batch of single-use proofs by that key for `GET
//! http://bench.local/dpop` (the bench's `dpop.external_base_url` + [`DPOP_PATH`]), so every request
//! costs one proof signature check and one replay-memory record. The proofs are those of
//! [`crate::dpop::Proof::new`] (header, `htm`, `htu`, `ath`), with their own `jti` and an `iat` in
//! the middle of the run; only the signing loop is this module's, with the key prepared once.

use std::fs;
use std::path::Path;

use p256::ecdsa::signature::Signer;
use serde_json::{json, Map, Value};

use super::tokens::{day_claims, in_parallel};
use super::{DPOP_ALG, DPOP_BASE_URL, DPOP_PATH};
use crate::dpop::{self, Proof};
use crate::keys::{b64url, keys, KeyName};
use crate::tokens;

/// The proof key (ES256, ec-1: [`DPOP_ALG`]).
pub const PROOF_KEY: KeyName = KeyName::Ec1;

/// Proofs per run: the expected requests (estimated req/s × seconds) times this, so a run up to this
/// much faster than the estimate still has a proof for every request.
pub const SAFETY: f64 = 3.0;
/// At least this many proofs per run (a short or slow run), ...
pub const MIN_PROOFS: usize = 2_000;
/// ... and at most this many (~1 KB each in wrk's memory; the harness mints ~6k a second per core). A run
/// that would need more fails the bench's checks (non-2xx, "ran out of proofs") instead of reusing one.
pub const MAX_PROOFS: usize = 400_000;
/// The req/s assumed when nothing has been measured yet for a configuration (no warmup, no earlier
/// run): above any single-worker signature-checking cell measured so far.
pub const FALLBACK_RPS: f64 = 25_000.0;
/// The longest `--duration` (and `--warmup`) the `dpop` workload allows: proofs carry `iat` = minting
/// time + half the run, and the filter accepts `iat` within `iat_window` + skew (60 s + 60 s) either way,
/// so half a run plus the minting must stay under 120 s.
pub const MAX_DURATION_S: u64 = 200;

/// The `htu` every bench proof carries.
pub fn htu() -> String {
    format!("{DPOP_BASE_URL}{DPOP_PATH}")
}

/// The access token of the `dpop` workload: ES256 by ec-1, the bench's day-long claims, `cnf.jkt` of
/// [`PROOF_KEY`].
pub fn bound_token(now: u64) -> String {
    let mut claims = day_claims("bench-dpop", "ES256-dpop-0", now);
    claims["cnf"] = json!({ "jkt": dpop::jkt(PROOF_KEY) });
    tokens::mint(DPOP_ALG, tokens::default_kid(DPOP_ALG), &claims)
}

/// How many proofs a run of `duration_s` needs when the configuration is expected to do `est_rps`.
pub fn proof_count(est_rps: f64, duration_s: u64) -> usize {
    let rps = if est_rps.is_finite() && est_rps > 0.0 {
        est_rps
    } else {
        FALLBACK_RPS
    };
    let n = (rps * duration_s as f64 * SAFETY).ceil();
    (n.min(MAX_PROOFS as f64) as usize).max(MIN_PROOFS)
}

/// The template every proof of a batch is made from: [`Proof::new`] for the bench request.
fn template(token: &str) -> Proof {
    Proof::new(PROOF_KEY, "GET", &htu(), token)
}

/// The signing input of one proof: the template's header and claims with this `jti` and `iat`.
fn signing_input(header_b64: &str, claims: &mut Map<String, Value>, jti: &str, iat: u64) -> String {
    claims.insert("jti".into(), json!(jti));
    claims.insert("iat".into(), json!(iat));
    format!(
        "{header_b64}.{}",
        b64url(Value::Object(claims.clone()).to_string().as_bytes())
    )
}

/// `n` proofs for `token`, each with a fresh random `jti` and the given `iat` (in parallel).
pub fn mint_proofs(token: &str, n: usize, iat: u64) -> Vec<String> {
    let proof = template(token);
    let header_b64 = b64url(Value::Object(proof.header.clone()).to_string().as_bytes());
    in_parallel(n, |range| {
        let sk = p256::ecdsa::SigningKey::from(&keys().ec1);
        let mut claims = proof.claims.clone();
        range
            .map(|_| {
                let input = signing_input(&header_b64, &mut claims, &dpop::random_jti(), iat);
                let sig: p256::ecdsa::Signature = sk.sign(input.as_bytes());
                format!("{input}.{}", b64url(&sig.to_bytes()))
            })
            .collect()
    })
}

/// Write what bench/dpop.lua reads: the token on the first line, then one proof per line.
pub fn write_proof_file(path: &Path, token: &str, proofs: &[String]) -> Result<(), String> {
    let mut text = String::with_capacity(token.len() + 1 + proofs.len() * (proofs[0].len() + 1));
    text.push_str(token);
    text.push('\n');
    for p in proofs {
        text.push_str(p);
        text.push('\n');
    }
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (header, claims) of a compact JWS.
    fn decoded(jws: &str) -> (Value, Value) {
        let (h, p, _) = tokens::decode_parts(jws).expect("a compact JWS");
        let json = |b: &[u8]| serde_json::from_slice::<Value>(b).expect("JSON");
        (json(&h), json(&p))
    }

    #[test]
    fn bench_proofs_are_the_harness_proofs_with_their_own_jti_and_iat() {
        let token = bound_token(tokens::now());
        let proofs = mint_proofs(&token, 5, 1_700_000_000);
        assert_eq!(proofs.len(), 5);
        let mut jtis = std::collections::BTreeSet::new();
        for p in &proofs {
            let (header, payload) = decoded(p);
            let jti = payload["jti"].as_str().expect("jti").to_string();
            // ECDSA here is deterministic (RFC 6979): the harness's own Proof::sign of the same
            // members gives the very same proof.
            let same = template(&token)
                .claim("jti", json!(jti))
                .claim("iat", json!(1_700_000_000u64))
                .sign();
            assert_eq!(p, &same);
            assert_eq!(payload["htu"], json!("http://bench.local/dpop"));
            assert_eq!(payload["htm"], json!("GET"));
            assert_eq!(payload["ath"], json!(dpop::ath(&token)));
            assert_eq!(header["typ"], json!("dpop+jwt"));
            jtis.insert(jti);
        }
        assert_eq!(jtis.len(), 5, "every proof has its own jti");
        let claims = decoded(&token).1;
        assert_eq!(claims["cnf"]["jkt"], json!(dpop::jkt(PROOF_KEY)));
        assert!(claims["exp"].as_u64().unwrap() > tokens::now() + 20 * 3600);
    }

    #[test]
    fn proof_counts_have_a_margin_a_floor_and_a_ceiling() {
        assert_eq!(proof_count(10_000.0, 2), 60_000);
        assert_eq!(proof_count(100.0, 1), MIN_PROOFS);
        assert_eq!(proof_count(1e9, 5), MAX_PROOFS);
        assert_eq!(
            proof_count(f64::NAN, 2),
            (FALLBACK_RPS * 2.0 * SAFETY) as usize
        );
        assert_eq!(proof_count(0.0, 1), (FALLBACK_RPS * SAFETY) as usize);
    }
}
