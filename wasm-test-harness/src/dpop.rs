//! Sender-constrained tokens for the end-to-end tests: DPoP proofs (RFC 9449 §4.2) signed with the
//! fixture keys, every member overridable so wrong proofs can be made; the RFC 7638 JWK thumbprint
//! (written here on its own, not borrowed from the filter, so the two can disagree); and access
//! tokens bound to a proof key (`cnf.jkt`) or to a client certificate (`cnf["x5t#S256"]`, RFC 8705).

use rand::RngCore;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::keys::{b64url, jwk_of, pem_to_der, KeyName};
use crate::tokens::{self, mint, sign_bytes, std_claims};

/// The proof algorithm a fixture key signs with: RSA keys RS256, `Ec1` ES256, `Ec384` ES384,
/// `Ec521` ES512, `Ed1` EdDSA.
pub fn proof_alg(key: KeyName) -> &'static str {
    match key {
        KeyName::Rsa1 | KeyName::Rsa2 | KeyName::RsaRogue => "RS256",
        KeyName::Ec1 => "ES256",
        KeyName::Ec384 => "ES384",
        KeyName::Ec521 => "ES512",
        KeyName::Ed1 => "EdDSA",
    }
}

/// The public JWK of a fixture key as a proof carries it: the key members only (no `kid`, no `use`).
pub fn public_jwk(key: KeyName) -> Value {
    let mut jwk = jwk_of(key);
    if let Some(o) = jwk.as_object_mut() {
        o.remove("kid");
        o.remove("use");
    }
    jwk
}

/// The RFC 7638 thumbprint of a public JWK: SHA-256 over the required members of its `kty`, in
/// lexicographic order, without whitespace (§3.2), base64url. The JSON text is written out by hand
/// member by member (§3.3: the values are JSON strings), so it depends on no map ordering.
pub fn thumbprint(jwk: &Value) -> Result<String, String> {
    let kty = jwk
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("jwk has no string kty: {jwk}"))?;
    let members: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        other => return Err(format!("RFC 7638 thumbprint: unknown kty {other:?}")),
    };
    let mut text = String::from("{");
    for (i, name) in members.iter().enumerate() {
        let value = jwk
            .get(*name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{kty} jwk lacks the string member {name:?}: {jwk}"))?;
        if i > 0 {
            text.push(',');
        }
        text.push_str(&json_string(name));
        text.push(':');
        text.push_str(&json_string(value));
    }
    text.push('}');
    Ok(b64url(&Sha256::digest(text.as_bytes())))
}

fn json_string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// The thumbprint of a fixture key's public JWK (what `cnf.jkt` holds for proofs by that key).
pub fn jkt(key: KeyName) -> String {
    thumbprint(&public_jwk(key))
        .unwrap_or_else(|e| panic!("thumbprint of fixture key {key:?}: {e}"))
}

/// `ath`: base64url SHA-256 of the access token's ASCII bytes (RFC 9449 §4.2).
pub fn ath(access_token: &str) -> String {
    b64url(&Sha256::digest(access_token.as_bytes()))
}

/// A fresh random `jti` (16 random bytes, base64url).
pub fn random_jti() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    b64url(&bytes)
}

/// `x5t#S256` of a client certificate: base64url SHA-256 of its DER (RFC 8705 §3.1).
pub fn x5t_s256(cert_der: &[u8]) -> String {
    b64url(&Sha256::digest(cert_der))
}

/// `x5t#S256` of a PEM certificate (one `CERTIFICATE` block).
pub fn x5t_s256_of_pem(cert_pem: &str) -> String {
    x5t_s256(&pem_to_der(cert_pem))
}

/// A DPoP proof under construction. [`Proof::new`] gives the valid proof for a request; `header`,
/// `claim` and `signed_with` change it (a `Value::Null` removes the member).
#[derive(Clone, Debug)]
pub struct Proof {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// The key that signs and the algorithm it signs with (by default the proof key and its
    /// [`proof_alg`], whatever the header says); alg `none` gives an empty signature.
    pub signer: KeyName,
    pub sign_alg: String,
}

impl Proof {
    /// The valid proof by `key` for `method htu` presenting `access_token`: header
    /// `{"typ":"dpop+jwt","alg","jwk"}`, claims `{jti (random), htm, htu, iat (now), ath}`.
    pub fn new(key: KeyName, method: &str, htu: &str, access_token: &str) -> Proof {
        let alg = proof_alg(key);
        let header = json!({ "typ": "dpop+jwt", "alg": alg, "jwk": public_jwk(key) });
        let claims = json!({
            "jti": random_jti(),
            "htm": method,
            "htu": htu,
            "iat": tokens::now(),
            "ath": ath(access_token),
        });
        Proof {
            header: into_map(header),
            claims: into_map(claims),
            signer: key,
            sign_alg: alg.to_owned(),
        }
    }

    /// Sets (or, with `Value::Null`, removes) a header member.
    pub fn header(mut self, name: &str, value: Value) -> Proof {
        set(&mut self.header, name, value);
        self
    }

    /// Sets (or, with `Value::Null`, removes) a claim.
    pub fn claim(mut self, name: &str, value: Value) -> Proof {
        set(&mut self.claims, name, value);
        self
    }

    /// Signs with another key and algorithm than the proof key's (`"none"`: no signature).
    pub fn signed_with(mut self, key: KeyName, alg: &str) -> Proof {
        self.signer = key;
        self.sign_alg = alg.to_owned();
        self
    }

    /// The `jti` claim ("" when removed or not a string).
    pub fn jti(&self) -> &str {
        self.claims.get("jti").and_then(Value::as_str).unwrap_or("")
    }

    /// The compact JWS: b64url(header).b64url(claims).b64url(signature).
    pub fn sign(&self) -> String {
        let input = tokens::signing_input(
            Value::Object(self.header.clone()).to_string().as_bytes(),
            Value::Object(self.claims.clone()).to_string().as_bytes(),
        );
        let sig = sign_bytes(&self.sign_alg, self.signer, input.as_bytes());
        format!("{input}.{}", b64url(&sig))
    }
}

fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn set(map: &mut Map<String, Value>, name: &str, value: Value) {
    if value.is_null() {
        map.remove(name);
    } else {
        map.insert(name.to_owned(), value);
    }
}

/// The standard claims for `sub` plus `cnf`.
pub fn bound_claims(sub: &str, cnf: Value) -> Value {
    let mut claims = std_claims(sub);
    claims["cnf"] = cnf;
    claims
}

/// An access token (ES256, ec-1, the standard claims for alice) bound to the DPoP key whose
/// thumbprint is `jkt`: `cnf: {"jkt": jkt}`.
pub fn dpop_bound_token(jkt: &str) -> String {
    mint(
        "ES256",
        Some("ec-1"),
        &bound_claims("alice", json!({ "jkt": jkt })),
    )
}

/// An access token (ES256, ec-1, the standard claims for alice) bound to the client certificate
/// whose DER is `cert_der`: `cnf: {"x5t#S256": …}`.
pub fn mtls_bound_token(cert_der: &[u8]) -> String {
    mint(
        "ES256",
        Some("ec-1"),
        &bound_claims("alice", json!({ "x5t#S256": x5t_s256(cert_der) })),
    )
}
