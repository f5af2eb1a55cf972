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
    /// EC P-384, published as kid `ec-384` (ES384).
    Ec384,
    /// EC P-521, published as kid `ec-521` (ES512).
    Ec521,
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
            KeyName::Ec384 => "ec-384",
            KeyName::Ec521 => "ec-521",
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
            KeyName::Ec384 => EC384_PEM,
            KeyName::Ec521 => EC521_PEM,
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
            KeyName::Ec384 => EC384_PUB_PEM,
            KeyName::Ec521 => EC521_PUB_PEM,
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
pub const EC521_PEM: &str = include_str!("../fixtures/ec-521.pem");
pub const EC521_PUB_PEM: &str = include_str!("../fixtures/ec-521.pub.pem");

/// All fixture keys, parsed once per process.
pub struct Keys {
    pub rsa1: RsaPrivateKey,
    pub rsa2: RsaPrivateKey,
    pub rsa_rogue: RsaPrivateKey,
    pub ec1: p256::SecretKey,
    pub ed1: ed25519_compact::KeyPair,
    pub ec384: p384::SecretKey,
    pub ec521: p521::SecretKey,
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
        ec384: p384::SecretKey::from_pkcs8_pem(EC384_PEM)
            .unwrap_or_else(|e| panic!("fixtures/ec-384.pem: not a PKCS#8 P-384 key: {e}")),
        ec521: p521::SecretKey::from_pkcs8_pem(EC521_PEM)
            .unwrap_or_else(|e| panic!("fixtures/ec-521.pem: not a PKCS#8 P-521 key: {e}")),
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

/// Public EC JWK {"kty":"EC","kid","use":"sig","crv","x","y"} from fixed-size coordinates.
pub fn ec_jwk(kid: &str, crv: &str, x: &[u8], y: &[u8]) -> Value {
    json!({ "kty": "EC", "kid": kid, "use": "sig", "crv": crv, "x": b64url(x), "y": b64url(y) })
}

/// Public JWK for the P-256 key (kid ec-1).
pub fn ec1_jwk() -> Value {
    let point = keys().ec1.public_key().to_encoded_point(false);
    let x = point.x().map(|x| &x[..]).unwrap_or_default();
    let y = point.y().map(|y| &y[..]).unwrap_or_default();
    ec_jwk("ec-1", "P-256", x, y)
}

/// Public JWK for the P-384 key (kid ec-384, crv P-384, 48-byte x/y).
pub fn ec384_jwk() -> Value {
    let point = keys().ec384.public_key().to_encoded_point(false);
    let x = point.x().map(|x| &x[..]).unwrap_or_default();
    let y = point.y().map(|y| &y[..]).unwrap_or_default();
    ec_jwk("ec-384", "P-384", x, y)
}

/// Public JWK for the P-521 key (kid ec-521, crv P-521, 66-byte x/y).
pub fn ec521_jwk() -> Value {
    let point = keys().ec521.public_key().to_encoded_point(false);
    let x = point.x().map(|x| &x[..]).unwrap_or_default();
    let y = point.y().map(|y| &y[..]).unwrap_or_default();
    ec_jwk("ec-521", "P-521", x, y)
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

/// The kid of the secp256k1 JWK in the published set (a curve the filter does not support).
pub const K1_KID: &str = "ec-k1";

/// A secp256k1 JWK (kid `ec-k1`): a curve the filter does not support and must skip by `crv`.
/// Its point is secp256k1's generator G (a real point on that curve); there is no private key.
pub fn k1_jwk() -> Value {
    const GX: &str = "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    const GY: &str = "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8";
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect()
    };
    ec_jwk(K1_KID, "secp256k1", &hex(GX), &hex(GY))
}

/// The public JWK of a signing fixture key, under its usual kid.
pub fn jwk_of(key: KeyName) -> Value {
    let k = keys();
    match key {
        KeyName::Ec1 => ec1_jwk(),
        KeyName::Ec384 => ec384_jwk(),
        KeyName::Ec521 => ec521_jwk(),
        KeyName::Ed1 => ed1_jwk(),
        rsa => {
            let private = k.rsa(rsa).unwrap_or_else(|| unreachable!());
            rsa_jwk(rsa.kid(), &private.to_public_key())
        }
    }
}

/// The published JWKS: rsa-1, rsa-2, ec-1 (P-256), ec-384 (P-384), ec-521 (P-521), ed-1 (OKP
/// Ed25519), plus entries the filter must skip without failing the whole set: enc-1 (RSA, "use":"enc",
/// rsa-2's n/e), ec-k1 (secp256k1) and {"kty":"foo","kid":"weird"}. rsa-rogue is never published.
pub fn jwks() -> Value {
    let mut enc = jwk_of(KeyName::Rsa2);
    enc["kid"] = json!("enc-1");
    enc["use"] = json!("enc");
    json!({
        "keys": [
            jwk_of(KeyName::Rsa1),
            jwk_of(KeyName::Rsa2),
            ec1_jwk(),
            ec384_jwk(),
            ec521_jwk(),
            ed1_jwk(),
            enc,
            k1_jwk(),
            { "kty": "foo", "kid": "weird" },
        ]
    })
}

/// A JWKS holding exactly the given keys (e.g. for key-rotation tests).
pub fn jwks_of(keys: &[KeyName]) -> Value {
    json!({ "keys": keys.iter().map(|k| jwk_of(*k)).collect::<Vec<_>>() })
}
