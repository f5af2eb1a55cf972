//! Fixture keys, the published JWKS, and token minting (signatures verified with the same crypto crates).

use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::signature::Verifier;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{json, Value};
use sha2::{Sha256, Sha384, Sha512};
use wasm_test_harness::keys::{self, KeyName};
use wasm_test_harness::tokens::{
    self, decode_parts, encode_parts, mint, sign_raw, sign_raw_as, std_claims,
};

fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(s)
        .unwrap_or_else(|e| panic!("bad b64url {s:?}: {e}"))
}

fn jwk(kid: &str) -> Value {
    keys::jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .cloned()
        .unwrap_or_else(|| panic!("kid {kid} not in JWKS"))
}

/// RSA public key rebuilt from the published JWK (so the JWKS itself is checked too).
fn rsa_from_jwk(kid: &str) -> RsaPublicKey {
    let k = jwk(kid);
    let n = BigUint::from_bytes_be(&b64d(k["n"].as_str().unwrap()));
    let e = BigUint::from_bytes_be(&b64d(k["e"].as_str().unwrap()));
    RsaPublicKey::new(n, e).unwrap()
}

fn split(token: &str) -> (String, Vec<u8>) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "token must have 3 segments: {token}");
    (format!("{}.{}", parts[0], parts[1]), b64d(parts[2]))
}

/// Verify `token` with the key published under `kid`, using the algorithm `alg`.
fn verify(token: &str, alg: &str, kid: &str) -> bool {
    let (input, sig) = split(token);
    let msg = input.as_bytes();
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
            let key = rsa_from_jwk(kid);
            macro_rules! v {
                ($m:ident, $h:ty) => {{
                    let Ok(s) = rsa::$m::Signature::try_from(sig.as_slice()) else {
                        return false;
                    };
                    rsa::$m::VerifyingKey::<$h>::new(key)
                        .verify(msg, &s)
                        .is_ok()
                }};
            }
            match alg {
                "RS256" => v!(pkcs1v15, Sha256),
                "RS384" => v!(pkcs1v15, Sha384),
                "RS512" => v!(pkcs1v15, Sha512),
                "PS256" => v!(pss, Sha256),
                "PS384" => v!(pss, Sha384),
                _ => v!(pss, Sha512),
            }
        }
        "ES256" | "ES384" | "ES512" => {
            let k = jwk(kid);
            let mut sec1 = vec![4u8];
            sec1.extend(b64d(k["x"].as_str().unwrap()));
            sec1.extend(b64d(k["y"].as_str().unwrap()));
            // Each verifier hashes with its curve's JWS hash (SHA-256 / SHA-384 / SHA-512).
            macro_rules! v {
                ($c:ident, $len:expr) => {{
                    assert_eq!(
                        sig.len(),
                        $len,
                        "{alg} signature must be JWS r||s ({} bytes)",
                        $len
                    );
                    let Ok(vk) = $c::ecdsa::VerifyingKey::from_sec1_bytes(&sec1) else {
                        return false; // the published key is not on this curve
                    };
                    let s = $c::ecdsa::Signature::from_slice(&sig).unwrap();
                    vk.verify(msg, &s).is_ok()
                }};
            }
            match alg {
                "ES256" => v!(p256, 64),
                "ES384" => v!(p384, 96),
                _ => v!(p521, 132),
            }
        }
        "EdDSA" => {
            let k = jwk(kid);
            let pk =
                ed25519_compact::PublicKey::from_slice(&b64d(k["x"].as_str().unwrap())).unwrap();
            let Ok(s) = ed25519_compact::Signature::from_slice(&sig) else {
                return false;
            };
            pk.verify(msg, &s).is_ok()
        }
        other => panic!("verify: {other}"),
    }
}

#[test]
fn keys_load_fast() {
    let t = Instant::now();
    let k = keys::keys();
    let _ = keys::jwks();
    assert!(
        t.elapsed().as_secs() < 5,
        "loading fixture keys took {:?}",
        t.elapsed()
    );
    use rsa::traits::PublicKeyParts;
    for key in [&k.rsa1, &k.rsa2, &k.rsa_rogue] {
        assert_eq!(key.size(), 256, "RSA fixtures are 2048-bit");
    }
    assert_ne!(k.rsa1.n(), k.rsa2.n());
    assert_ne!(k.rsa1.n(), k.rsa_rogue.n());
}

#[test]
fn jwks_has_the_published_and_the_unusable_keys() {
    let set = keys::jwks();
    let kids: Vec<&str> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        ["rsa-1", "rsa-2", "ec-1", "ec-384", "ec-521", "ed-1", "enc-1", "ec-k1", "weird"]
    );
    assert!(!set.to_string().contains("rsa-rogue"));

    let rsa1 = jwk("rsa-1");
    assert_eq!(rsa1["kty"], "RSA");
    assert_eq!(rsa1["use"], "sig");
    assert!(rsa1.get("alg").is_none(), "rsa-1 must not carry alg");
    assert_eq!(rsa1["e"], "AQAB");
    assert_eq!(b64d(rsa1["n"].as_str().unwrap()).len(), 256);

    let ec = jwk("ec-1");
    assert_eq!(
        (ec["kty"].as_str(), ec["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert_eq!(b64d(ec["x"].as_str().unwrap()).len(), 32);
    assert_eq!(b64d(ec["y"].as_str().unwrap()).len(), 32);

    let ed = jwk("ed-1");
    assert_eq!(
        (ed["kty"].as_str(), ed["crv"].as_str()),
        (Some("OKP"), Some("Ed25519"))
    );
    assert_eq!(b64d(ed["x"].as_str().unwrap()).len(), 32);

    let enc = jwk("enc-1");
    assert_eq!(enc["use"], "enc");
    assert_eq!(enc["n"], jwk("rsa-2")["n"]);

    for (kid, crv, len) in [
        ("ec-384", "P-384", 48),
        ("ec-521", "P-521", 66),
        ("ec-k1", "secp256k1", 32),
    ] {
        let k = jwk(kid);
        assert_eq!(
            (k["kty"].as_str(), k["crv"].as_str(), k["use"].as_str()),
            (Some("EC"), Some(crv), Some("sig")),
            "{kid}"
        );
        assert_eq!(b64d(k["x"].as_str().unwrap()).len(), len, "{kid} x");
        assert_eq!(b64d(k["y"].as_str().unwrap()).len(), len, "{kid} y");
    }
    // The published P-384 / P-521 points are the fixture PEMs' public keys.
    for (kid, pem) in [
        ("ec-384", keys::EC384_PUB_PEM),
        ("ec-521", keys::EC521_PUB_PEM),
    ] {
        let k = jwk(kid);
        let mut point = vec![4u8];
        point.extend(b64d(k["x"].as_str().unwrap()));
        point.extend(b64d(k["y"].as_str().unwrap()));
        assert!(
            keys::pem_to_der(pem).ends_with(&point),
            "{kid}: JWK x/y are not the point of fixtures/{kid}.pub.pem"
        );
    }

    assert_eq!(jwk("weird"), json!({"kty": "foo", "kid": "weird"}));
}

#[test]
fn mint_all_algorithms_verify_with_published_keys() {
    let claims = std_claims("alice");
    for alg in tokens::ALGS {
        let kid = tokens::default_kid(alg).unwrap();
        let t = mint(alg, Some(kid), &claims);
        let (h, p, _) = decode_parts(&t).unwrap();
        let header: Value = serde_json::from_slice(&h).unwrap();
        assert_eq!(header["alg"], *alg);
        assert_eq!(header["kid"], kid);
        assert_eq!(serde_json::from_slice::<Value>(&p).unwrap(), claims);
        assert!(
            verify(&t, alg, kid),
            "{alg} token does not verify with {kid}"
        );
        // ...and not with another published key of the same type.
        if alg.starts_with('R') || alg.starts_with('P') {
            assert!(!verify(&t, alg, "rsa-2"), "{alg} token verifies with rsa-2");
        }
        if alg.starts_with("ES") {
            for other in ["ec-1", "ec-384", "ec-521"]
                .into_iter()
                .filter(|o| *o != kid)
            {
                assert!(!verify(&t, alg, other), "{alg} token verifies with {other}");
            }
        }
    }
}

#[test]
fn mint_without_kid_omits_it() {
    let t = mint("ES256", None, &std_claims("bob"));
    let (h, _, _) = decode_parts(&t).unwrap();
    let header: Value = serde_json::from_slice(&h).unwrap();
    assert!(header.get("kid").is_none());
    assert!(verify(&t, "ES256", "ec-1"));
}

#[test]
fn std_claims_shape() {
    let c = std_claims("carol");
    assert_eq!(c["iss"], "https://idp.demo.local");
    assert_eq!(c["aud"], "demo-api");
    assert_eq!(c["sub"], "carol");
    let (iat, exp) = (c["iat"].as_u64().unwrap(), c["exp"].as_u64().unwrap());
    assert_eq!(exp, iat + 3600);
    assert!(iat.abs_diff(tokens::now()) < 5);
}

#[test]
fn sign_raw_crafted_headers() {
    let p = std_claims("mallory");

    // alg none: empty signature segment.
    let t = sign_raw(&json!({"alg": "none"}), &p, KeyName::Rsa1);
    assert!(t.ends_with('.'), "{t}");
    assert_eq!(t.split('.').count(), 3);

    // Arbitrary extra header fields are carried as-is and the signature is still valid.
    let h = json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "jku": "https://evil.example/jwks"});
    let t = sign_raw(&h, &p, KeyName::Rsa1);
    assert_eq!(
        serde_json::from_slice::<Value>(&decode_parts(&t).unwrap().0).unwrap(),
        h
    );
    assert!(verify(&t, "RS256", "rsa-1"));

    // Rogue key with kid rsa-1: a forgery that must not verify.
    let t = sign_raw(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &p,
        KeyName::RsaRogue,
    );
    assert!(!verify(&t, "RS256", "rsa-1"));

    // rsa-2 signature verifies with rsa-2.
    let t = sign_raw(&json!({"alg": "PS256", "kid": "rsa-2"}), &p, KeyName::Rsa2);
    assert!(verify(&t, "PS256", "rsa-2"));

    // Header says RS256 but it is signed with PS256.
    let t = sign_raw_as(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &p,
        KeyName::Rsa1,
        "PS256",
    );
    assert!(!verify(&t, "RS256", "rsa-1"));
    assert!(verify(&t, "PS256", "rsa-1"));
}

#[test]
fn hs256_key_confusion_uses_rsa1_public_pem() {
    let t = sign_raw(
        &json!({"alg": "HS256", "kid": "rsa-1"}),
        &std_claims("mallory"),
        KeyName::Rsa1,
    );
    let (input, sig) = split(&t);
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/rsa-1.pub.pem"
    ))
    .unwrap();
    assert_eq!(pem, KeyName::Rsa1.public_pem().as_bytes());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&pem).unwrap();
    mac.update(input.as_bytes());
    mac.verify_slice(&sig)
        .expect("HS256 with rsa-1's public PEM as secret");

    let t2 = tokens::sign_hmac(&json!({"alg": "HS512"}), &json!({}), b"secret");
    assert_eq!(split(&t2).1.len(), 64);
}

#[test]
fn encode_parts_for_malformed_tokens() {
    let t = encode_parts(b"{not json", &[0xff, 0xfe], b"");
    assert_eq!(
        t,
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode("{not json"),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe])
        )
    );
    let (h, p, s) = decode_parts(&t).unwrap();
    assert_eq!(
        (h.as_slice(), p.as_slice(), s.as_slice()),
        (&b"{not json"[..], &[0xff, 0xfe][..], &b""[..])
    );
}

#[test]
fn signatures_have_jws_lengths() {
    let p = std_claims("x");
    let sig_len = |alg: &str| split(&mint(alg, None, &p)).1.len();
    assert_eq!(sig_len("RS256"), 256);
    assert_eq!(sig_len("PS512"), 256);
    assert_eq!(sig_len("ES256"), 64);
    assert_eq!(sig_len("EdDSA"), 64);
}

#[test]
fn ecdsa_signatures_are_fixed_size_and_bound_to_the_signing_input() {
    for (alg, len) in [("ES256", 64), ("ES384", 96), ("ES512", 132)] {
        let t = tokens::mint_std(alg, "alice");
        let (input, sig) = split(&t);
        assert_eq!(sig.len(), len, "{alg}: JWS r||s is {len} bytes");
        let kid = tokens::default_kid(alg).unwrap();
        assert!(verify(&t, alg, kid), "{alg}");
        // Another payload under the same signature must not verify.
        let (h, _) = input.split_once('.').unwrap();
        let forged = format!(
            "{h}.{}.{}",
            keys::b64url(br#"{"sub":"mallory"}"#),
            keys::b64url(&sig)
        );
        assert!(
            !verify(&forged, alg, kid),
            "{alg}: signature moved to another payload"
        );
    }
}
