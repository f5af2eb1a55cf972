//! JWT/JWS minting with the fixture keys: well-formed tokens (`mint`), any header (`sign_raw`),
//! and malformed ones (`encode_parts`).

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use p256::ecdsa::signature::{RandomizedSigner, Signer};
use serde_json::{json, Value};
use sha2::{Sha256, Sha384, Sha512};

use crate::keys::keys;
pub use crate::keys::{b64url, KeyName};

pub const ISSUER: &str = "https://idp.demo.local";
pub const AUDIENCE: &str = "demo-api";

/// Every algorithm `mint` supports.
pub const ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
];

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `base` (claims, a header) with `changes` applied member by member: a `null` removes the member.
/// Panics unless both are JSON objects.
pub fn with_changes(mut base: Value, changes: Value) -> Value {
    let (Some(b), Some(c)) = (base.as_object_mut(), changes.as_object()) else {
        panic!("with_changes: both must be JSON objects");
    };
    for (k, v) in c {
        if v.is_null() {
            b.remove(k);
        } else {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// {iss: "https://idp.demo.local", aud: "demo-api", sub, iat: now, exp: now+3600}
pub fn std_claims(sub: &str) -> Value {
    let now = now();
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 3600 })
}

/// The fixture key `mint` signs with for `alg`: RS*/PS* -> rsa-1, ES256 -> ec-1, ES384 -> ec-384,
/// ES512 -> ec-521, EdDSA -> ed-1.
pub fn key_for_alg(alg: &str) -> Option<KeyName> {
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => Some(KeyName::Rsa1),
        "ES256" => Some(KeyName::Ec1),
        "ES384" => Some(KeyName::Ec384),
        "ES512" => Some(KeyName::Ec521),
        "EdDSA" => Some(KeyName::Ed1),
        _ => None,
    }
}

/// The kid under which the key `mint` uses for `alg` is published ("rsa-1", "ec-1", "ec-384", "ec-521",
/// "ed-1").
pub fn default_kid(alg: &str) -> Option<&'static str> {
    key_for_alg(alg).map(KeyName::kid)
}

/// Mint a valid token: header {"alg", "typ":"JWT", "kid" (only if Some)}, signed with the key for `alg`
/// (see `key_for_alg`). Panics on an unsupported alg.
pub fn mint(alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let key = key_for_alg(alg)
        .unwrap_or_else(|| panic!("mint: unsupported alg {alg:?} (supported: {ALGS:?})"));
    let mut header = json!({ "alg": alg, "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    sign_raw(&header, claims, key)
}

/// `mint(alg, Some(default_kid(alg)), &std_claims(sub))`.
pub fn mint_std(alg: &str, sub: &str) -> String {
    mint(alg, default_kid(alg), &std_claims(sub))
}

/// Sign an arbitrary header/payload with a fixture key. The algorithm is taken from `header["alg"]`:
/// RS*/PS* (key must be RSA), ES256/ES384/ES512 (key must be Ec1/Ec384/Ec521), EdDSA (key must be Ed1),
/// HS256/HS384/HS512 (HMAC whose secret is the key's public PEM bytes - the key-confusion attack),
/// "none" (empty signature, token ends with '.'). Panics on anything else; use `sign_raw_as`
/// to sign with an algorithm different from the one the header claims.
pub fn sign_raw(header: &Value, payload: &Value, key: KeyName) -> String {
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or_else(|| {
            panic!("sign_raw: header has no string \"alg\"; use sign_raw_as: {header}")
        })
        .to_string();
    sign_raw_as(header, payload, key, &alg)
}

/// Like `sign_raw`, but signs with `sign_alg` whatever the header says.
pub fn sign_raw_as(header: &Value, payload: &Value, key: KeyName, sign_alg: &str) -> String {
    let h = json_bytes(header);
    let p = json_bytes(payload);
    let input = signing_input(&h, &p);
    let sig = sign_bytes(sign_alg, key, input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// HMAC-sign (alg from header: HS256/HS384/HS512) with an arbitrary secret.
pub fn sign_hmac(header: &Value, payload: &Value, secret: &[u8]) -> String {
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("HS256");
    let input = signing_input(&json_bytes(header), &json_bytes(payload));
    let sig = hmac_sign(alg, secret, input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// Join already-chosen bytes into a compact JWS: b64url(header).b64url(payload).b64url(sig).
/// The bytes need not be JSON (or UTF-8) - for malformed-token tests.
pub fn encode_parts(header: &[u8], payload: &[u8], sig: &[u8]) -> String {
    format!("{}.{}.{}", b64url(header), b64url(payload), b64url(sig))
}

/// A JWS over exactly these header and payload bytes (e.g. JSON with a duplicate member, which a
/// `Value` cannot hold), signed with `key` for `alg`.
pub fn sign_bytes_jws(header: &[u8], payload: &[u8], key: KeyName, alg: &str) -> String {
    let input = signing_input(header, payload);
    let sig = sign_bytes(alg, key, input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}

/// b64url(header).b64url(payload)
pub fn signing_input(header: &[u8], payload: &[u8]) -> String {
    format!("{}.{}", b64url(header), b64url(payload))
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|e| panic!("serialize {v}: {e}"))
}

/// Raw signature bytes of `input` with `alg` and `key`, in JWS form: ECDSA is fixed-size r||s
/// (ES256 64 bytes, ES384 96, ES512 132: each half is the curve's field size, 66 bytes for P-521).
pub fn sign_bytes(alg: &str, key: KeyName, input: &[u8]) -> Vec<u8> {
    let k = keys();
    let rsa_key = || {
        k.rsa(key)
            .unwrap_or_else(|| panic!("alg {alg} needs an RSA key, got {key:?}"))
            .clone()
    };
    let mut rng = rand::thread_rng();
    match alg {
        "none" => Vec::new(),
        "RS256" => rsa::pkcs1v15::SigningKey::<Sha256>::new(rsa_key())
            .sign(input)
            .to_vec_(),
        "RS384" => rsa::pkcs1v15::SigningKey::<Sha384>::new(rsa_key())
            .sign(input)
            .to_vec_(),
        "RS512" => rsa::pkcs1v15::SigningKey::<Sha512>::new(rsa_key())
            .sign(input)
            .to_vec_(),
        // RFC 7518: PSS salt length = hash length (the rsa crate's default).
        "PS256" => rsa::pss::SigningKey::<Sha256>::new(rsa_key())
            .sign_with_rng(&mut rng, input)
            .to_vec_(),
        "PS384" => rsa::pss::SigningKey::<Sha384>::new(rsa_key())
            .sign_with_rng(&mut rng, input)
            .to_vec_(),
        "PS512" => rsa::pss::SigningKey::<Sha512>::new(rsa_key())
            .sign_with_rng(&mut rng, input)
            .to_vec_(),
        "ES256" => {
            assert_eq!(key, KeyName::Ec1, "ES256 needs KeyName::Ec1");
            let sk = p256::ecdsa::SigningKey::from(&k.ec1);
            let sig: p256::ecdsa::Signature = sk.sign(input);
            sig.to_bytes().to_vec()
        }
        // p384's Signer hashes with SHA-384, p521's with SHA-512 (RFC 7518 §3.4).
        "ES384" => {
            assert_eq!(key, KeyName::Ec384, "ES384 needs KeyName::Ec384");
            let sk = p384::ecdsa::SigningKey::from(&k.ec384);
            let sig: p384::ecdsa::Signature = sk.sign(input);
            sig.to_bytes().to_vec()
        }
        "ES512" => {
            assert_eq!(key, KeyName::Ec521, "ES512 needs KeyName::Ec521");
            let sk = p521::ecdsa::SigningKey::from_bytes(&k.ec521.to_bytes())
                .unwrap_or_else(|e| panic!("fixtures/ec-521.pem: not a P-521 signing key: {e}"));
            let sig: p521::ecdsa::Signature = sk.sign(input);
            sig.to_bytes().to_vec()
        }
        "EdDSA" => {
            assert_eq!(key, KeyName::Ed1, "EdDSA needs KeyName::Ed1");
            k.ed1.sk.sign(input, None).to_vec()
        }
        "HS256" | "HS384" | "HS512" => hmac_sign(alg, key.public_pem().as_bytes(), input),
        other => panic!("sign_bytes: unsupported alg {other:?}"),
    }
}

fn hmac_sign(alg: &str, secret: &[u8], input: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(secret: &[u8], input: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret)
            .unwrap_or_else(|e| panic!("hmac key: {e}"));
        mac.update(input);
        mac.finalize().into_bytes().to_vec()
    }
    match alg {
        "HS256" => run::<Hmac<Sha256>>(secret, input),
        "HS384" => run::<Hmac<Sha384>>(secret, input),
        "HS512" => run::<Hmac<Sha512>>(secret, input),
        other => panic!("hmac: unsupported alg {other:?}"),
    }
}

trait ToVec {
    fn to_vec_(&self) -> Vec<u8>;
}
impl<T: rsa::signature::SignatureEncoding> ToVec for T {
    fn to_vec_(&self) -> Vec<u8> {
        self.to_vec()
    }
}

/// (header, payload, signature) bytes of a compact token.
pub type Parts = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Split a compact token into its three base64url-decoded parts (header, payload, signature).
pub fn decode_parts(token: &str) -> Result<Parts, String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(format!("expected 3 segments, got {}", parts.len()));
    }
    let d = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|e| format!("bad base64url {s:?}: {e}"))
    };
    Ok((d(parts[0])?, d(parts[1])?, d(parts[2])?))
}

/// The parameters `/mint` and `wasm-test-harness mint` take (one list for both, and for their help).
pub const MINT_PARAMS: &[(&str, &str)] = &[
    (
        "alg",
        "signing algorithm (default ES256): RS256..RS512, PS256..PS512, ES256, ES384, ES512, EdDSA",
    ),
    (
        "kid",
        "header kid (default: the kid the demo JWKS publishes for the alg)",
    ),
    ("sub", "subject (default alice)"),
    ("iss", "issuer (default https://idp.demo.local)"),
    ("aud", "audience (default demo-api); repeat it for an array"),
    (
        "scope",
        "the space-delimited scope claim, e.g. scope=read:items%20admin",
    ),
    (
        "scp",
        "the scp claim as an array, comma-separated: scp=read,write",
    ),
    (
        "exp_in",
        "exp as seconds from now (default 3600; negative for an expired token)",
    ),
    ("ttl", "the same as exp_in"),
    ("exp", "exp as a Unix time, or `none` to leave it out"),
    (
        "nbf_in",
        "nbf as seconds from now (a positive value: not yet valid)",
    ),
    ("nbf", "nbf as a Unix time"),
    ("iat", "iat as a Unix time (default now), or `none`"),
    (
        "claim.NAME",
        "any other claim: the value as JSON if it parses (7, true, [\"a\",\"b\"]), else a string",
    ),
];

/// Builds `(alg, kid, claims)` from mint parameters (later repeats win, except `aud`, which
/// collects). Unknown parameters and bad values are errors that name the parameter.
pub fn mint_request(
    params: &[(String, String)],
) -> Result<(String, Option<String>, Value), String> {
    let now = now() as i64;
    let num = |name: &str, v: &str| -> Result<i64, String> {
        v.trim()
            .parse()
            .map_err(|_| format!("{name} must be an integer, not {v:?}"))
    };
    let mut alg = "ES256".to_owned();
    let mut kid = None;
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), json!(ISSUER));
    claims.insert("sub".into(), json!("alice"));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + 3600));
    let mut auds: Vec<String> = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "alg" => alg = value.clone(),
            "kid" => kid = Some(value.clone()),
            "sub" | "iss" | "scope" => {
                claims.insert(name.clone(), json!(value));
            }
            "aud" => auds.push(value.clone()),
            "scp" => {
                let items: Vec<&str> = value.split(',').filter(|s| !s.is_empty()).collect();
                claims.insert("scp".into(), json!(items));
            }
            "exp_in" | "ttl" => {
                claims.insert("exp".into(), json!(now + num(name, value)?));
            }
            "exp" | "iat" if value == "none" => {
                claims.remove(name.as_str());
            }
            "exp" | "iat" | "nbf" => {
                claims.insert(name.clone(), json!(num(name, value)?));
            }
            "nbf_in" => {
                claims.insert("nbf".into(), json!(now + num(name, value)?));
            }
            other => match other.strip_prefix("claim.").filter(|n| !n.is_empty()) {
                Some(claim) => {
                    let v = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
                    claims.insert(claim.to_owned(), v);
                }
                None => {
                    let known: Vec<&str> = MINT_PARAMS.iter().map(|(n, _)| *n).collect();
                    return Err(format!(
                        "unknown parameter {other:?}; known: {}",
                        known.join(", ")
                    ));
                }
            },
        }
    }
    if key_for_alg(&alg).is_none() {
        return Err(format!("unsupported alg {alg:?}; use one of {ALGS:?}"));
    }
    claims.insert(
        "aud".into(),
        match auds.len() {
            0 => json!(AUDIENCE),
            1 => json!(auds[0]),
            _ => json!(auds),
        },
    );
    let kid = kid.or_else(|| default_kid(&alg).map(String::from));
    Ok((alg, kid, Value::Object(claims)))
}

/// The help text for the mint parameters, one per line.
pub fn mint_help() -> String {
    MINT_PARAMS
        .iter()
        .map(|(n, d)| format!("  {n:<11} {d}\n"))
        .collect()
}
