//! Fixture keys (pre-generated PEMs compiled into the crate) and the mock IdP's published JWKS.

use std::sync::OnceLock;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};

/// A fixture key usable for signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyName {
    /// RSA-2048, published as kid `rsa-1` (the IdP's main key).
    Rsa1,
    /// RSA-2048, published as kid `rsa-2`.
    Rsa2,
    /// RSA-2048, NOT published: for forged signatures.
    RsaRogue,
    /// EC P-256, published as kid `ec-1`.
    Ec1,
    /// Ed25519, published as kid `ed-1`.
    Ed1,
}

impl KeyName {
    /// The kid this key is published under (for `RsaRogue`: "rsa-rogue", which is not in the JWKS).
    pub fn kid(self) -> &'static str {
        match self {
            KeyName::Rsa1 => "rsa-1",
            KeyName::Rsa2 => "rsa-2",
            KeyName::RsaRogue => "rsa-rogue",
            KeyName::Ec1 => "ec-1",
            KeyName::Ed1 => "ed-1",
        }
    }

    /// Private key PEM (PKCS#8).
    pub fn private_pem(self) -> &'static str {
        match self {
            KeyName::Rsa1 => RSA1_PEM,
            KeyName::Rsa2 => RSA2_PEM,
            KeyName::RsaRogue => RSA_ROGUE_PEM,
            KeyName::Ec1 => EC1_PEM,
            KeyName::Ed1 => ED1_PEM,
        }
    }

    /// Public key PEM (SubjectPublicKeyInfo), exactly the bytes of `fixtures/<kid>.pub.pem`.
    /// `public_pem(KeyName::Rsa1).as_bytes()` is the HMAC secret of the HS256 key-confusion attack.
    pub fn public_pem(self) -> &'static str {
        match self {
            KeyName::Rsa1 => RSA1_PUB_PEM,
            KeyName::Rsa2 => RSA2_PUB_PEM,
            KeyName::RsaRogue => RSA_ROGUE_PUB_PEM,
            KeyName::Ec1 => EC1_PUB_PEM,
            KeyName::Ed1 => ED1_PUB_PEM,
        }
    }
}

pub const RSA1_PEM: &str = include_str!("../fixtures/rsa-1.pem");
pub const RSA1_PUB_PEM: &str = include_str!("../fixtures/rsa-1.pub.pem");
pub const RSA2_PEM: &str = include_str!("../fixtures/rsa-2.pem");
pub const RSA2_PUB_PEM: &str = include_str!("../fixtures/rsa-2.pub.pem");
pub const RSA_ROGUE_PEM: &str = include_str!("../fixtures/rsa-rogue.pem");
pub const RSA_ROGUE_PUB_PEM: &str = include_str!("../fixtures/rsa-rogue.pub.pem");
pub const EC1_PEM: &str = include_str!("../fixtures/ec-1.pem");
pub const EC1_PUB_PEM: &str = include_str!("../fixtures/ec-1.pub.pem");
pub const ED1_PEM: &str = include_str!("../fixtures/ed-1.pem");
pub const ED1_PUB_PEM: &str = include_str!("../fixtures/ed-1.pub.pem");
pub const EC384_PEM: &str = include_str!("../fixtures/ec-384.pem");
pub const EC384_PUB_PEM: &str = include_str!("../fixtures/ec-384.pub.pem");

/// All fixture keys, parsed once per process.
pub struct Keys {
    pub rsa1: RsaPrivateKey,
    pub rsa2: RsaPrivateKey,
    pub rsa_rogue: RsaPrivateKey,
    pub ec1: p256::SecretKey,
    pub ed1: ed25519_compact::KeyPair,
    /// P-384 public point coordinates (x, y), 48 bytes each. Only published, never used to sign.
    pub ec384_xy: (Vec<u8>, Vec<u8>),
}

impl Keys {
    pub fn rsa(&self, key: KeyName) -> Option<&RsaPrivateKey> {
        match key {
            KeyName::Rsa1 => Some(&self.rsa1),
            KeyName::Rsa2 => Some(&self.rsa2),
            KeyName::RsaRogue => Some(&self.rsa_rogue),
            _ => None,
        }
    }
}

/// The parsed fixture keys (parsed on first use, then cached).
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa1: load_rsa("rsa-1", RSA1_PEM),
        rsa2: load_rsa("rsa-2", RSA2_PEM),
        rsa_rogue: load_rsa("rsa-rogue", RSA_ROGUE_PEM),
        ec1: p256::SecretKey::from_pkcs8_pem(EC1_PEM)
            .unwrap_or_else(|e| panic!("fixtures/ec-1.pem: not a PKCS#8 P-256 key: {e}")),
        ed1: ed25519_compact::KeyPair::from_pem(ED1_PEM)
            .unwrap_or_else(|e| panic!("fixtures/ed-1.pem: not a PKCS#8 Ed25519 key: {e}")),
        ec384_xy: ec384_point(),
    })
}

fn load_rsa(name: &str, pem: &str) -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs8_pem(pem)
        .unwrap_or_else(|e| panic!("fixtures/{name}.pem: not a PKCS#8 RSA key: {e}"))
}

/// Decode a PEM body (any label) to DER.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("bad PEM base64: {e}"))
}

/// The SPKI of a P-384 key ends with the uncompressed point 0x04 || x(48) || y(48).
fn ec384_point() -> (Vec<u8>, Vec<u8>) {
    let der = pem_to_der(EC384_PUB_PEM);
    assert!(der.len() > 97, "fixtures/ec-384.pub.pem too short");
    let point = &der[der.len() - 97..];
    assert_eq!(
        point[0], 0x04,
        "fixtures/ec-384.pub.pem: expected an uncompressed point"
    );
    (point[1..49].to_vec(), point[49..].to_vec())
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Public JWK for an RSA key: {"kty":"RSA","kid","use":"sig","n","e"} (no "alg").
pub fn rsa_jwk(kid: &str, key: &RsaPublicKey) -> Value {
    json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "n": b64url(&key.n().to_bytes_be()),
        "e": b64url(&key.e().to_bytes_be()),
    })
}

/// Public JWK for the P-256 key (kid ec-1).
pub fn ec1_jwk() -> Value {
    let point = keys().ec1.public_key().to_encoded_point(false);
    json!({
        "kty": "EC",
        "kid": "ec-1",
        "use": "sig",
        "crv": "P-256",
        "x": b64url(point.x().map(|x| &x[..]).unwrap_or_default()),
        "y": b64url(point.y().map(|y| &y[..]).unwrap_or_default()),
    })
}

/// Public JWK for the Ed25519 key (kid ed-1).
pub fn ed1_jwk() -> Value {
    json!({
        "kty": "OKP",
        "kid": "ed-1",
        "use": "sig",
        "crv": "Ed25519",
        "x": b64url(keys().ed1.pk.as_ref()),
    })
}

/// Public JWK for the P-384 key (kid ec-384): a curve the filter does not support and must skip.
pub fn ec384_jwk() -> Value {
    let (x, y) = &keys().ec384_xy;
    json!({ "kty": "EC", "kid": "ec-384", "use": "sig", "crv": "P-384", "x": b64url(x), "y": b64url(y) })
}

/// The public JWK of a signing fixture key, under its usual kid.
pub fn jwk_of(key: KeyName) -> Value {
    let k = keys();
    match key {
        KeyName::Ec1 => ec1_jwk(),
        KeyName::Ed1 => ed1_jwk(),
        rsa => {
            let private = k.rsa(rsa).unwrap_or_else(|| unreachable!());
            rsa_jwk(rsa.kid(), &private.to_public_key())
        }
    }
}

/// The published JWKS: rsa-1, rsa-2, ec-1 (P-256), ed-1 (OKP Ed25519), plus entries the filter must skip
/// without failing the whole set: enc-1 (RSA, "use":"enc", rsa-2's n/e), ec-384 (P-384) and
/// {"kty":"foo","kid":"weird"}. rsa-rogue is never published.
pub fn jwks() -> Value {
    let mut enc = jwk_of(KeyName::Rsa2);
    enc["kid"] = json!("enc-1");
    enc["use"] = json!("enc");
    json!({
        "keys": [
            jwk_of(KeyName::Rsa1),
            jwk_of(KeyName::Rsa2),
            ec1_jwk(),
            ed1_jwk(),
            enc,
            ec384_jwk(),
            { "kty": "foo", "kid": "weird" },
        ]
    })
}

/// A JWKS holding exactly the given keys (e.g. for key-rotation tests).
pub fn jwks_of(keys: &[KeyName]) -> Value {
    json!({ "keys": keys.iter().map(|k| jwk_of(*k)).collect::<Vec<_>>() })
}
