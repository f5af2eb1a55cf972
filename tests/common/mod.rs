//! Helpers shared by the native integration tests: fixture paths, PEM/DER slicing, hex, HMAC, and
//! a key view serving the config's inline key sets.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jwt_guard::authenticator::{KeyState, Keys};
use jwt_guard::config::{Config, JwksSource};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Serves each provider's `local_jwks` set; remote providers have none.
pub struct LocalKeys<'a>(pub &'a Config);

impl Keys for LocalKeys<'_> {
    fn keys(&self, provider: usize) -> KeyState<'_> {
        match &self.0.providers[provider].jwks {
            JwksSource::Local(set) => KeyState::Ready(set),
            JwksSource::Remote(_) => KeyState::Unavailable,
        }
    }
}

pub fn manifest_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn read_text(rel: &str) -> String {
    let path = manifest_path(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn fixture_path(name: &str) -> String {
    format!("wasm-test-harness/fixtures/{name}")
}

/// The DER bytes inside a PEM file (first block).
pub fn pem_der(rel: &str) -> Vec<u8> {
    let text = read_text(rel);
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD
        .decode(body)
        .unwrap_or_else(|e| panic!("PEM body of {rel}: {e}"))
}

pub fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or_else(|e| panic!("hex {s:?}: {e}")))
        .collect()
}

pub fn b64u(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC-SHA256 (RFC 2104), enough for forging HS256 tokens in tests.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = if key.len() > 64 {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(64, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[test]
fn hmac_matches_rfc4231_case_2() {
    let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    assert_eq!(
        tag,
        hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
}

/// A fixture RSA key (`wasm-test-harness/fixtures/NAME.pem`).
pub fn rsa_private(name: &str) -> jwt_compact::alg::RsaPrivateKey {
    use rsa::pkcs8::DecodePrivateKey;
    jwt_compact::alg::RsaPrivateKey::from_pkcs8_pem(&read_text(&fixture_path(&format!(
        "{name}.pem"
    ))))
    .expect("RSA PKCS#8")
}

/// The public JWK of fixture RSA key `name`, with `kid` = `name`.
pub fn rsa_jwk(name: &str) -> serde_json::Value {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::traits::PublicKeyParts;
    let public = rsa::RsaPublicKey::from_public_key_pem(&read_text(&fixture_path(&format!(
        "{name}.pub.pem"
    ))))
    .expect("RSA SPKI");
    serde_json::json!({"kty": "RSA", "kid": name, "use": "sig", "n": b64u(&public.n().to_bytes_be()), "e": b64u(&public.e().to_bytes_be())})
}

/// An RS256 compact JWS of `claims` with header `{"alg":"RS256","kid":kid,"typ":"JWT"}`.
pub fn rs256_token(
    key: &jwt_compact::alg::RsaPrivateKey,
    kid: &str,
    claims: &serde_json::Value,
) -> String {
    use jwt_compact::{Algorithm, AlgorithmSignature};
    let header = serde_json::json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        b64u(header.to_string().as_bytes()),
        b64u(claims.to_string().as_bytes())
    );
    let sig = jwt_compact::alg::Rsa::rs256().sign(key, input.as_bytes());
    format!("{input}.{}", b64u(&sig.as_bytes()))
}

/// A fixture P-256 signing key.
pub type EcKey = <jwt_compact::alg::Es256 as jwt_compact::Algorithm>::SigningKey;
/// A fixture Ed25519 signing key.
pub type EdKey = <jwt_compact::alg::Ed25519 as jwt_compact::Algorithm>::SigningKey;

pub fn ec_private(name: &str) -> EcKey {
    // PKCS#8 wraps ECPrivateKey { version 1, privateKey OCTET STRING (32) ... }.
    let der = pem_der(&fixture_path(&format!("{name}.pem")));
    let marker = [0x02, 0x01, 0x01, 0x04, 0x20];
    let at = der
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("ECPrivateKey")
        + marker.len();
    <EcKey as jwt_compact::alg::SigningKey<jwt_compact::alg::Es256>>::from_slice(&der[at..at + 32])
        .expect("P-256 scalar")
}

pub fn ed_private(name: &str) -> EdKey {
    // PKCS#8 Ed25519: the seed is the last 32 bytes; ed25519-compact wants seed || public key.
    let der = pem_der(&fixture_path(&format!("{name}.pem")));
    let public = pem_der(&fixture_path(&format!("{name}.pub.pem")));
    let mut raw = der[der.len() - 32..].to_vec();
    raw.extend_from_slice(&public[public.len() - 32..]);
    <EdKey as jwt_compact::alg::SigningKey<jwt_compact::alg::Ed25519>>::from_slice(&raw)
        .expect("Ed25519 key")
}

pub fn ec_jwk(name: &str, crv: &str, coord: usize) -> serde_json::Value {
    let spki = pem_der(&fixture_path(&format!("{name}.pub.pem")));
    let point = &spki[spki.len() - (1 + 2 * coord)..];
    assert_eq!(point[0], 4, "uncompressed point");
    serde_json::json!({"kty": "EC", "kid": name, "crv": crv, "x": b64u(&point[1..1 + coord]), "y": b64u(&point[1 + coord..])})
}

pub fn ed_jwk(name: &str) -> serde_json::Value {
    let spki = pem_der(&fixture_path(&format!("{name}.pub.pem")));
    serde_json::json!({"kty": "OKP", "kid": name, "crv": "Ed25519", "x": b64u(&spki[spki.len() - 32..])})
}
