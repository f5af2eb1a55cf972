//! Bounded fuzzing of the untrusted inputs (issue 11): the token, the JWKS document, the OIDC discovery
//! document and the plugin config. Each target replays its corpus (`tests/fuzz/corpus/<target>/`, seeds
//! made by `make fuzz-corpus` from the fixture keys and the shipped configs, plus `regressions/`), then
//! runs inputs made by mutating corpus entries and by structured generation for a time budget:
//! `JWT_GUARD_FUZZ_MS` per target (default 1500 ms; `make fuzz FUZZ_SECONDS=300` for long runs).
//!
//! Properties: nothing panics; every rejection is one of the documented codes (README.md's responses
//! table) or failed fetch results (`fetcher::FetchResult`); only the corpus's own valid tokens are ever
//! allowed (a mutated token that still verifies is a malleability bug); a parsed key set survives its
//! stored form; discovery never leads from https to http and names our issuer; a parsed config keeps
//! its invariants.
//!
//! A failure prints the input (hex and base64) and the file to copy into `regressions/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "fuzz/engine.rs"]
mod engine;
#[path = "fuzz/mutate.rs"]
mod mutate;

use arbtest::arbitrary::{Result as ArbResult, Unstructured};
use common::LocalKeys;
use engine::{documented_codes, Corpus};
use jwt_guard::authenticator::{authenticate, Outcome};
use jwt_guard::config::{Config, JwksSource, Requirement, TokenSource};
use jwt_guard::crypto::Alg;
use jwt_guard::fetcher::FetchResult;
use jwt_guard::fetcher::{jwks_location, parse_jwks};
use jwt_guard::jwks::{KeyLookup, KeySet, MAX_KEYS};
use jwt_guard::token::UntrustedToken;
use mutate::*;
use serde_json::{json, Value};
use std::collections::HashSet;

/// The corpus tokens are issued at 1_700_000_000 and valid for an hour.
const NOW: u64 = 1_700_000_060;
const ISSUER: &str = "https://idp.demo.local";
const AUDIENCE: &str = "demo-api";

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn no_control(text: &str) -> bool {
    !text.chars().any(char::is_control)
}

#[test]
fn readme_documents_every_denial_code_with_its_status() {
    use jwt_guard::error::{Denial, Reason};
    let documented = engine::documented_statuses();
    assert!(
        !documented.is_empty(),
        "no codes in README.md's responses table"
    );
    for &reason in Reason::ALL {
        // One denial per reason (the match is exhaustive: a new reason must be listed here).
        let denial = match reason {
            Reason::Missing => Denial::Missing,
            Reason::InvalidRequest => Denial::InvalidRequest("x"),
            Reason::Malformed => Denial::Malformed("x"),
            Reason::Oversized => Denial::Oversized,
            Reason::AlgNotAllowed => Denial::AlgNotAllowed,
            Reason::ForbiddenHeader => Denial::ForbiddenHeader("x"),
            Reason::UnknownKid => Denial::UnknownKid,
            Reason::KeyMismatch => Denial::KeyMismatch,
            Reason::BadSignature => Denial::BadSignature,
            Reason::Expired => Denial::Expired,
            Reason::NotYetValid => Denial::NotYetValid,
            Reason::MissingExp => Denial::MissingExp,
            Reason::WrongIssuer => Denial::WrongIssuer,
            Reason::WrongAudience => Denial::WrongAudience,
            Reason::WrongSubject => Denial::WrongSubject,
            Reason::WrongType => Denial::WrongType,
            Reason::MissingIat => Denial::MissingIat,
            Reason::LifetimeTooLong => Denial::LifetimeTooLong,
            Reason::InsufficientScope => Denial::InsufficientScope("s".into()),
            Reason::ClaimMismatch => Denial::ClaimMismatch,
            Reason::InvalidDpopProof => Denial::InvalidDpopProof("x"),
            Reason::DpopReplay => Denial::DpopReplay,
            Reason::DpopBinding => Denial::DpopBinding("x"),
            Reason::MtlsBinding => Denial::MtlsBinding("x"),
            Reason::BindingRequired => Denial::BindingRequired,
            Reason::KeysUnavailable => Denial::KeysUnavailable,
            Reason::NoRule => Denial::NoRule,
            Reason::Internal => Denial::Internal,
        };
        assert_eq!(denial.reason(), reason);
        let status = jwt_guard::response::deny_response(&denial, "r").status;
        let row = documented.iter().find(|(c, _)| c == reason.code());
        assert_eq!(
            row.map(|(_, s)| *s),
            Some(status),
            "README responses table: `{}` should be documented with status {status}",
            reason.code()
        );
    }
    // And nothing documented that the filter does not have.
    for (code, _) in &documented {
        assert!(
            Reason::ALL.iter().any(|r| r.code() == code),
            "README documents `{code}`, which is no denial code"
        );
    }
}

// ---------- token ----------

/// One provider with the mock IdP's JWKS inline; rule 0 needs a token, rule 1 also scopes and a claim.
fn token_config() -> Config {
    let jwks: Value = serde_json::from_slice(
        &std::fs::read(engine::root().join("tests/fuzz/corpus/jwks/idp.json")).unwrap(),
    )
    .unwrap();
    let doc = json!({
        "providers": {"idp": {"issuer": ISSUER, "audiences": [AUDIENCE], "local_jwks": {"inline": jwks}}},
        "rules": [
            {"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}},
            {"match": {"prefix": "/"}, "requires": {"provider_name": "idp", "scopes": ["read:items"],
                                                     "claims": [{"name": "tenant", "values": ["acme"]}]}},
        ],
    });
    Config::parse(doc.to_string().as_bytes()).unwrap()
}

/// Signature malleations that must never verify: ECDSA (r, n − s), Ed25519 S + L, RSA s + n.
struct Moduli {
    rsa: Vec<Vec<u8>>,
}

const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// The Ed25519 group order L, little-endian.
const ED25519_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

impl Moduli {
    fn load() -> Moduli {
        let jwks: Value = serde_json::from_slice(
            &std::fs::read(engine::root().join("tests/fuzz/corpus/jwks/idp.json")).unwrap(),
        )
        .unwrap();
        let rsa = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["kty"] == "RSA")
            .filter_map(|k| lenient_decode(k["n"].as_str()?.as_bytes()))
            .collect();
        Moduli { rsa }
    }

    fn malleate(&self, u: &mut Unstructured<'_>, sig: &[u8]) -> ArbResult<Vec<u8>> {
        Ok(match sig.len() {
            64 if u.arbitrary()? => {
                // ECDSA: (r, n - s).
                let mut out = sig[..32].to_vec();
                out.extend(sub_be(&P256_N, &sig[32..]));
                out
            }
            64 => {
                // Ed25519: S + L (same point equation, non-canonical scalar).
                let mut out = sig[..32].to_vec();
                out.extend(add_le(&sig[32..], &ED25519_L).unwrap_or_else(|| sig[32..].to_vec()));
                out
            }
            _ => {
                let n = u.choose(&self.rsa)?;
                add_be(sig, n).unwrap_or_else(|| sig.to_vec())
            }
        })
    }
}

/// The ECDSA twin of an ES256 token: the same token with signature (r, n − s). It verifies too: ECDSA
/// signatures are malleable, RFC 7518 §3.4 does not ask for low-S, and IdPs sign with either half
/// (Envoy's jwt_authn accepts both as well). So the twins of the corpus's valid ES256 tokens are the
/// only other tokens the oracle lets through; `signature_malleations` pins this down.
fn ecdsa_twin(token: &[u8]) -> Option<Vec<u8>> {
    let mut segs = split_segments(token);
    let header: Value = serde_json::from_slice(&lenient_decode(segs.first()?)?).ok()?;
    let sig = lenient_decode(segs.get(2)?)?;
    if header["alg"] != "ES256" || sig.len() != 64 {
        return None;
    }
    let mut twin = sig[..32].to_vec();
    twin.extend(sub_be(&P256_N, &sig[32..]));
    segs[2] = b64u(&twin);
    Some(join_segments(&segs))
}

fn gen_token(u: &mut Unstructured<'_>, corpus: &Corpus, moduli: &Moduli) -> ArbResult<Vec<u8>> {
    let base = corpus.pick(u)?.to_vec();
    let donor = corpus.pick(u)?.to_vec();
    Ok(match u.int_in_range(0..=11)? {
        // Segment-aware mutations of a corpus token.
        0..=5 => {
            let mut segs = split_segments(&base);
            let other = split_segments(&donor);
            let i = u.choose_index(segs.len())?;
            match u.int_in_range(0..=7)? {
                0 | 1 => {
                    // Decode, change the JSON, re-encode.
                    if let Some(mut t) = lenient_decode(&segs[i]).and_then(|raw| tree(&raw)) {
                        let d = other
                            .get(i)
                            .and_then(|s| lenient_decode(s))
                            .and_then(|r| tree(&r));
                        for _ in 0..u.int_in_range(1..=3)? {
                            json_mutation(u, &mut t, d.as_ref())?;
                        }
                        segs[i] = b64u(&t.to_bytes(u.ratio(1, 8)?));
                    }
                }
                2 => segs[i] = respell(u, &segs[i])?,
                3 => {
                    if let Some(s) = other.get(i) {
                        segs[i] = s.clone();
                    }
                }
                4 => {
                    if let Some(sig) = segs.get(2).and_then(|s| lenient_decode(s)) {
                        segs[2] = b64u(&moduli.malleate(u, &sig)?);
                    }
                }
                5 => {
                    let s = segs[i].clone();
                    segs.insert(i, s);
                }
                6 => {
                    segs.remove(i);
                }
                _ => {
                    let mut raw = lenient_decode(&segs[i]).unwrap_or_default();
                    byte_mutation(u, &mut raw, &[])?;
                    segs[i] = b64u(&raw);
                }
            }
            join_segments(&segs)
        }
        // Byte mutations, stacked.
        6..=8 => {
            let mut d = base;
            for _ in 0..u.int_in_range(1..=6)? {
                byte_mutation(u, &mut d, &donor)?;
            }
            d
        }
        // Built from parts: a header and claims of our choosing, a signature of any length.
        9 | 10 => {
            let alg = *u.choose(&[
                "RS256", "PS512", "ES256", "EdDSA", "none", "HS256", "ES384", "RS1",
            ])?;
            let mut header = vec![("alg".to_owned(), J::Str(alg.into()))];
            if u.arbitrary()? {
                let kid = *u.choose(&[
                    "rsa-1", "rsa-2", "ec-1", "ed-1", "enc-1", "ec-384", "weird", "",
                ])?;
                header.push(("kid".into(), J::Str(kid.into())));
            }
            for _ in 0..u.int_in_range(0..=2)? {
                header.push(((*u.choose(WORDS)?).into(), random_json(u, 2)?));
            }
            let mut claims = vec![
                ("iss".to_owned(), J::Str(ISSUER.into())),
                ("aud".into(), J::Str(AUDIENCE.into())),
                ("exp".into(), J::Num((NOW + 600).to_string())),
            ];
            for _ in 0..u.int_in_range(0..=4)? {
                let at = u.int_in_range(0..=claims.len())?;
                claims.insert(at, ((*u.choose(WORDS)?).into(), random_json(u, 3)?));
            }
            if u.ratio(1, 3)? {
                let i = u.choose_index(claims.len())?;
                claims[i].1 = random_json(u, 2)?;
            }
            let sig_len = *u.choose(&[0usize, 1, 32, 63, 64, 65, 255, 256, 257, 512])?;
            let sig: Vec<u8> = if u.arbitrary()? {
                let mut s = vec![0; sig_len];
                u.fill_buffer(&mut s)?;
                s
            } else {
                split_segments(&donor)
                    .get(2)
                    .and_then(|s| lenient_decode(s))
                    .unwrap_or_default()
            };
            let mut segs = vec![
                b64u(&J::Obj(header).to_bytes(false)),
                b64u(&J::Obj(claims).to_bytes(false)),
                b64u(&sig),
            ];
            if u.ratio(1, 4)? {
                let i = u.choose_index(3)?;
                segs[i] = respell(u, &segs[i])?;
            }
            join_segments(&segs)
        }
        _ => {
            let n = u.int_in_range(0..=200)?;
            u.bytes(n)?.to_vec()
        }
    })
}

#[test]
fn token() {
    let corpus = Corpus::load("token");
    let codes = documented_codes();
    assert!(codes.iter().any(|c| c == "malformed") && codes.iter().any(|c| c == "bad_signature"));
    let config = token_config();
    let keys = LocalKeys(&config);
    let requirements: Vec<&Requirement> = config
        .rules
        .iter()
        .filter_map(|r| r.requires.as_ref())
        .collect();
    let max_bytes = config.providers[0].max_token_bytes;
    let mut valid: HashSet<Vec<u8>> = corpus
        .seeds
        .iter()
        .filter(|e| e.name.starts_with("valid-"))
        .map(|e| e.bytes.clone())
        .collect();
    assert!(
        valid.len() >= 8,
        "the corpus needs a valid token per algorithm"
    );
    let twins: Vec<Vec<u8>> = valid.iter().filter_map(|t| ecdsa_twin(t)).collect();
    valid.extend(twins);
    let companion = corpus
        .seeds
        .iter()
        .find(|e| e.name == "valid-EdDSA.jwt")
        .expect("valid-EdDSA.jwt")
        .bytes
        .clone();
    let moduli = Moduli::load();

    let documented = |what: &str, code: &str| -> Result<(), String> {
        if codes.iter().any(|c| c == code) {
            Ok(())
        } else {
            Err(format!(
                "{what}: code {code:?} is not in README.md's responses table {codes:?}"
            ))
        }
    };
    let check = |input: &[u8]| -> Result<(), String> {
        let is_valid = valid.contains(input);
        if let Err(d) = UntrustedToken::parse(input, 1 << 20) {
            documented("UntrustedToken::parse", d.code())?;
        }
        let parsed = UntrustedToken::parse(input, max_bytes);
        if let Err(d) = &parsed {
            documented("UntrustedToken::parse", d.code())?;
        }
        let mut presentations = vec![vec![input.to_vec()]];
        if fnv(input).is_multiple_of(8) {
            // Now and then, alongside a valid token: every presented token must be valid.
            presentations.push(vec![companion.clone(), input.to_vec()]);
            presentations.push(vec![input.to_vec(), companion.clone()]);
        }
        for (r, req) in requirements.iter().enumerate() {
            for tokens in &presentations {
                match authenticate(&config, req, tokens, &keys, NOW) {
                    Outcome::Allow(Some(_)) | Outcome::Forbidden(..) if is_valid => {}
                    Outcome::Allow(_) | Outcome::Forbidden(..) => {
                        return Err(format!(
                            "rule {r}, {} token(s): ALLOWED although it is not one of the corpus's valid \
                             tokens (token malleability?)",
                            tokens.len()
                        ))
                    }
                    Outcome::Deny(d) => {
                        documented("authenticate", d.code())?;
                        if is_valid && r == 0 && tokens.len() == 1 {
                            return Err(format!("a corpus valid token was denied: {d}"));
                        }
                        if let (Err(p), 1) = (&parsed, tokens.len()) {
                            if p.code() != d.code() {
                                return Err(format!(
                                    "parse says {} but the pipeline says {}",
                                    p.code(),
                                    d.code()
                                ));
                            }
                        }
                    }
                    Outcome::Wait(p) => return Err(format!("Wait({p}) with a local key set")),
                }
            }
        }
        Ok(())
    };
    engine::run("token", &corpus, |u, c| gen_token(u, c, &moduli), check);
}

/// Every way to respell or re-sign a valid corpus token without the key is denied, except the ECDSA
/// twin (see `ecdsa_twin`), which is allowed.
#[test]
fn signature_malleations() {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    use base64::Engine as _;
    let corpus = Corpus::load("token");
    let config = token_config();
    let keys = LocalKeys(&config);
    let req = config.rules[0].requires.as_ref().unwrap();
    let allowed = |t: &[u8]| {
        matches!(
            authenticate(&config, req, &[t.to_vec()], &keys, NOW),
            Outcome::Allow(_)
        )
    };
    let moduli = Moduli::load();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut tried = 0;
    for e in corpus.seeds.iter().filter(|e| e.name.starts_with("valid-")) {
        let token = &e.bytes;
        assert!(allowed(token), "{} is not allowed", e.name);
        let segs = split_segments(token);
        let mut variants: Vec<Vec<u8>> = Vec::new();
        for i in 0..3 {
            let raw = lenient_decode(&segs[i]).unwrap();
            let mut respelled = vec![
                URL_SAFE.encode(&raw).into_bytes(),
                STANDARD.encode(&raw).into_bytes(),
                STANDARD_NO_PAD.encode(&raw).into_bytes(),
                [&segs[i][..], b"="].concat(),
                [b" ", &segs[i][..]].concat(),
            ];
            // Every non-canonical last character (unused low bits set).
            let unused = [0, 4, 2][raw.len() % 3];
            if unused > 0 {
                let last = *segs[i].last().unwrap();
                let v = alphabet.iter().position(|c| *c == last).unwrap();
                for extra in 1..(1 << unused) {
                    let mut s = segs[i].clone();
                    *s.last_mut().unwrap() = alphabet[v | extra];
                    respelled.push(s);
                }
            }
            for r in respelled {
                let mut v = segs.clone();
                v[i] = r;
                variants.push(join_segments(&v));
            }
        }
        let sig = lenient_decode(&segs[2]).unwrap();
        if sig.len() == 64 && e.name.contains("EdDSA") {
            let mut s = sig[..32].to_vec();
            s.extend(add_le(&sig[32..], &ED25519_L).unwrap());
            variants.push(join_segments(&[segs[0].clone(), segs[1].clone(), b64u(&s)]));
        }
        for n in &moduli.rsa {
            if let Some(s) = add_be(&sig, n) {
                variants.push(join_segments(&[segs[0].clone(), segs[1].clone(), b64u(&s)]));
            }
        }
        for v in variants.into_iter().filter(|v| v != token) {
            tried += 1;
            assert!(
                !allowed(&v),
                "{}: a respelled or re-signed form is allowed: {}",
                e.name,
                String::from_utf8_lossy(&v)
            );
        }
        if let Some(twin) = ecdsa_twin(token) {
            assert_ne!(&twin, token);
            assert!(
                allowed(&twin),
                "{}: the ECDSA twin is denied (low-S enforced? update ecdsa_twin)",
                e.name
            );
            assert_eq!(ecdsa_twin(&twin).as_ref(), Some(token));
        }
    }
    assert!(tried > 100, "only {tried} variants");
}

// ---------- JWKS ----------

fn same_keys(a: &KeySet, b: &KeySet) -> Result<(), String> {
    if a.keys.len() != b.keys.len() {
        return Err(format!("{} keys became {}", a.keys.len(), b.keys.len()));
    }
    for (x, y) in a.keys.iter().zip(&b.keys) {
        if x.kid != y.kid
            || x.alg != y.alg
            || x.raw != y.raw
            || x.until_ms != y.until_ms
            || x.key.family() != y.key.family()
        {
            return Err(format!("key {:?} changed in the stored form", x.kid));
        }
    }
    Ok(())
}

/// Stored form round trip, through the writer's own bound (`to_stored_within`): what is written
/// parses (`parse_stored`) to the same keys, and writes the same bytes again.
fn round_trip(set: &KeySet) -> Result<(), String> {
    let mut written = set.clone();
    let (stored, _) = written
        .to_stored_within(jwt_guard::jwks::MAX_STORED_BYTES)
        .map_err(|e| format!("a parsed set does not fit the stored bound: {e}"))?;
    let back =
        KeySet::parse_stored(&stored).map_err(|e| format!("stored form does not parse: {e}"))?;
    same_keys(&written, &back)?;
    let mut again = back.clone();
    let (restored, _) = again
        .to_stored_within(jwt_guard::jwks::MAX_STORED_BYTES)
        .map_err(|e| format!("the stored form does not fit again: {e}"))?;
    if restored != stored {
        return Err("stored form is not stable".into());
    }
    Ok(())
}

fn gen_json_doc(u: &mut Unstructured<'_>, corpus: &Corpus) -> ArbResult<Vec<u8>> {
    let base = corpus.pick(u)?.to_vec();
    let donor = corpus.pick(u)?.to_vec();
    Ok(match u.int_in_range(0..=9)? {
        0..=5 => mutate_json_doc(u, &base, &donor)?,
        6..=8 => {
            let mut d = base;
            for _ in 0..u.int_in_range(1..=6)? {
                byte_mutation(u, &mut d, &donor)?;
            }
            d
        }
        _ => random_json(u, 5)?.to_bytes(false),
    })
}

fn gen_jwks(
    u: &mut Unstructured<'_>,
    corpus: &Corpus,
    params: &[(String, String)],
) -> ArbResult<Vec<u8>> {
    if u.ratio(3, 4)? {
        return gen_json_doc(u, corpus);
    }
    // A key set built from parts: real parameters mixed with odd ones.
    let mut keys = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let kty = *u.choose(&["RSA", "EC", "OKP", "oct", "rsa", "EC "])?;
        let mut jwk = vec![("kty".to_owned(), J::Str(kty.into()))];
        for name in ["kid", "crv", "alg", "use", "n", "e", "x", "y"] {
            if u.ratio(1, 3)? {
                continue;
            }
            let value = match name {
                "crv" => J::Str(
                    (*u.choose(&["P-256", "P-384", "Ed25519", "X25519", "secp256k1"])?).into(),
                ),
                "alg" => J::Str(
                    (*u.choose(&["RS256", "PS384", "ES256", "EdDSA", "HS256", "none"])?).into(),
                ),
                "use" => J::Str((*u.choose(&["sig", "enc", "SIG"])?).into()),
                _ if u.arbitrary()? => {
                    let same: Vec<&(String, String)> =
                        params.iter().filter(|(n, _)| n == name).collect();
                    match same.is_empty() {
                        true => random_leaf_str(u)?,
                        false => J::Str(u.choose(&same)?.1.clone()),
                    }
                }
                _ => {
                    let len = *u.choose(&[
                        0usize, 1, 3, 31, 32, 33, 48, 64, 255, 256, 257, 384, 512, 513,
                    ])?;
                    let mut raw = vec![0u8; len];
                    u.fill_buffer(&mut raw)?;
                    J::Str(String::from_utf8(b64u(&raw)).unwrap())
                }
            };
            jwk.push((name.to_owned(), value));
        }
        keys.push(J::Obj(jwk));
    }
    let mut doc = vec![("keys".to_owned(), J::Arr(keys.clone()))];
    if u.arbitrary()? {
        let retired = keys
            .into_iter()
            .map(|k| {
                J::Obj(vec![
                    ("until_ms".into(), J::Num("1700000600000".into())),
                    ("jwk".into(), k),
                ])
            })
            .collect();
        doc.push(("retired".into(), J::Arr(retired)));
    }
    Ok(J::Obj(doc).to_bytes(false))
}

fn random_leaf_str(u: &mut Unstructured<'_>) -> ArbResult<J> {
    Ok(J::Str((*u.choose(WORDS)?).to_owned()))
}

#[test]
fn jwks() {
    let corpus = Corpus::load("jwks");
    let previous = KeySet::parse(
        &corpus
            .seeds
            .iter()
            .find(|e| e.name == "idp.json")
            .unwrap()
            .bytes,
    )
    .unwrap();
    let mut params = Vec::new();
    for e in &corpus.seeds {
        if let Ok(v) = serde_json::from_slice::<Value>(&e.bytes) {
            for k in v["keys"].as_array().into_iter().flatten() {
                for name in ["n", "e", "x", "y", "kid"] {
                    if let Some(s) = k[name].as_str() {
                        params.push((name.to_owned(), s.to_owned()));
                    }
                }
            }
        }
    }
    let check = |input: &[u8]| -> Result<(), String> {
        let parsed = KeySet::parse(input);
        let fetched = parse_jwks(input);
        match (&parsed, &fetched) {
            (Ok(set), Ok(_)) => {
                if set.keys.is_empty()
                    || set.keys.len() > MAX_KEYS
                    || set.current_len() != set.keys.len()
                {
                    return Err(format!("parsed set has {} keys", set.keys.len()));
                }
                round_trip(set)?;
                let mut next = set.clone();
                next.retire_from(&previous, NOW * 1000, 600_000);
                round_trip(&next)?;
                let kids: Vec<Option<&str>> = set
                    .keys
                    .iter()
                    .map(|k| k.kid.as_deref())
                    .chain([None, Some("?")])
                    .collect();
                for kid in kids {
                    for alg in Alg::ALL {
                        if let KeyLookup::Found(found) = set.lookup(kid, alg, NOW * 1000) {
                            if found.is_empty()
                                || found.iter().any(|k| {
                                    !k.fits(alg) || (kid.is_some() && k.kid.as_deref() != kid)
                                })
                            {
                                return Err(format!(
                                    "lookup({kid:?}, {alg:?}) found a key that does not fit"
                                ));
                            }
                        }
                    }
                }
            }
            (Err(_), Err(e)) => {
                if e.cause == FetchResult::Success {
                    return Err("parse_jwks failed with cause `success`".to_owned());
                }
                if e.message.is_empty() || !no_control(&e.message) {
                    return Err(format!("bad log message {:?}", e.message));
                }
            }
            _ => return Err("KeySet::parse and fetcher::parse_jwks disagree".into()),
        }
        // Shared data is ours, but read it as if it were not.
        if let Ok(stored) = KeySet::parse_stored(input) {
            round_trip(&stored)?;
        }
        Ok(())
    };
    engine::run("jwks", &corpus, |u, c| gen_jwks(u, c, &params), check);
}

// ---------- discovery ----------

fn gen_discovery(u: &mut Unstructured<'_>, corpus: &Corpus) -> ArbResult<Vec<u8>> {
    if u.ratio(2, 3)? {
        return gen_json_doc(u, corpus);
    }
    let issuer = *u.choose(&[
        ISSUER,
        "https://login.example.com/",
        "https://login.example.com",
        "",
        "x",
    ])?;
    let scheme = *u.choose(&[
        "https://", "http://", "HTTPS://", "ftp://", "https:/", "", "//",
    ])?;
    let host = *u.choose(&[
        "idp.demo.local",
        "",
        "a b",
        "h\r\nx: y",
        "[::1]:8443",
        "user@host",
        "ü.example",
    ])?;
    let path = *u.choose(&[
        "/jwks.json",
        "",
        "/",
        "/a#frag",
        "/a?b=c",
        "/\0",
        "/ x",
        "/%2e%2e/",
    ])?;
    let mut doc = vec![
        ("issuer".to_owned(), J::Str(issuer.into())),
        ("jwks_uri".into(), J::Str(format!("{scheme}{host}{path}"))),
    ];
    for _ in 0..u.int_in_range(0..=3)? {
        let at = u.int_in_range(0..=doc.len())?;
        let name = *u.choose(&[
            "issuer",
            "jwks_uri",
            "token_endpoint",
            "id_token_signing_alg_values_supported",
        ])?;
        doc.insert(at, (name.into(), random_json(u, 2)?));
    }
    Ok(J::Obj(doc).to_bytes(u.ratio(1, 8)?))
}

#[test]
fn discovery() {
    let corpus = Corpus::load("discovery");
    let check = |input: &[u8]| -> Result<(), String> {
        let doc: Option<Value> = serde_json::from_slice(input).ok();
        let own = doc
            .as_ref()
            .and_then(|d| d.get("issuer"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut issuers = vec![ISSUER.to_owned(), "https://login.example.com/".to_owned()];
        issuers.extend(own);
        for issuer in &issuers {
            for https in [true, false] {
                match jwks_location(input, issuer, https) {
                    Ok((authority, path)) => {
                        let doc = doc.as_ref().ok_or("accepted a document that is not JSON")?;
                        if doc.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
                            return Err(format!(
                                "accepted for issuer {issuer:?} a document naming {:?}",
                                doc.get("issuer")
                            ));
                        }
                        let uri = doc
                            .get("jwks_uri")
                            .and_then(Value::as_str)
                            .ok_or("accepted without a jwks_uri")?;
                        if https && !uri.starts_with("https://") {
                            return Err(format!("https discovery led to {uri:?}"));
                        }
                        let plain = |s: &str| !s.bytes().any(|b| b.is_ascii_control() || b == b' ');
                        if authority.is_empty()
                            || !plain(&authority)
                            || !path.starts_with('/')
                            || !plain(&path)
                        {
                            return Err(format!("bad JWKS location {authority:?} {path:?}"));
                        }
                        let rest = uri
                            .strip_prefix("https://")
                            .or_else(|| uri.strip_prefix("http://"));
                        let expected = rest.map(|r| match r.find('/') {
                            Some(i) => (&r[..i], &r[i..]),
                            None => (r, "/"),
                        });
                        if expected != Some((authority.as_str(), path.as_str())) {
                            return Err(format!(
                                "JWKS location {authority:?} {path:?} is not {uri:?}"
                            ));
                        }
                    }
                    Err(e) => {
                        if e.cause == FetchResult::Success {
                            return Err("a failed step with cause `success`".to_owned());
                        }
                        if e.message.is_empty() || !no_control(&e.message) || e.message.len() > 1024
                        {
                            return Err(format!("bad log message {:?}", e.message));
                        }
                    }
                }
            }
        }
        Ok(())
    };
    engine::run("discovery", &corpus, gen_discovery, check);
}

// ---------- config ----------

fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn config_invariants(c: &Config) -> Result<(), String> {
    let fail = |m: &str| Err(m.to_owned());
    if c.providers.is_empty() {
        return fail("no provider");
    }
    if c.rules.is_empty() {
        return fail("no rule");
    }
    let mut names = HashSet::new();
    for p in &c.providers {
        if !safe_name(&p.name) || !names.insert(p.name.clone()) {
            return Err(format!("provider name {:?}", p.name));
        }
        if p.issuer.is_empty() || p.audiences.iter().any(String::is_empty) {
            return Err(format!("provider {}: empty issuer or audience", p.name));
        }
        let distinct: HashSet<_> = p.algorithms.iter().collect();
        if p.algorithms.is_empty() || distinct.len() != p.algorithms.len() {
            return Err(format!(
                "provider {}: algorithms {:?}",
                p.name, p.algorithms
            ));
        }
        if p.clock_skew_secs > 600
            || !(256..=65_536).contains(&p.max_token_bytes)
            || p.sources.is_empty()
        {
            return Err(format!(
                "provider {}: skew, token size or sources out of bounds",
                p.name
            ));
        }
        for s in &p.sources {
            let ok = match s {
                TokenSource::Header { name, .. } => {
                    safe_name(name) && *name == name.to_ascii_lowercase()
                }
                TokenSource::Param(n) => !n.is_empty(),
                TokenSource::Cookie(n) => !n.is_empty() && !n.contains(['=', ';', ' ']),
            };
            if !ok {
                return Err(format!("provider {}: token source {s:?}", p.name));
            }
        }
        let mut headers = HashSet::new();
        for ch in &p.claim_to_headers {
            let empty_claim = match &ch.claim {
                jwt_guard::config::ClaimPath::Name(n) => n.is_empty(),
                jwt_guard::config::ClaimPath::Segments(s) => {
                    s.is_empty() || s.iter().any(String::is_empty)
                }
            };
            if empty_claim
                || !headers.insert(&ch.header)
                || ch.header != ch.header.to_ascii_lowercase()
                || !safe_name(&ch.header)
                || !c.managed_headers.contains(&ch.header)
            {
                return Err(format!("provider {}: claim header {ch:?}", p.name));
            }
        }
        match &p.jwks {
            JwksSource::Local(set) if set.keys.is_empty() => {
                return Err(format!("provider {}: no local key", p.name))
            }
            JwksSource::Local(_) => {}
            JwksSource::Remote(r) => {
                if r.cluster.is_empty()
                    || r.authority.is_empty()
                    || !r.path.starts_with('/')
                    || r.timeout_ms == 0
                {
                    return Err(format!("provider {}: remote {r:?}", p.name));
                }
            }
        }
    }
    let mut rule_names = HashSet::new();
    for r in c.rules.iter().chain(&c.default_rule) {
        if r.name.len() > 64 || !safe_name(&r.name) || !rule_names.insert(r.name.clone()) {
            return Err(format!("rule name {:?}", r.name));
        }
        if let Some(req) = &r.requires {
            let distinct: HashSet<_> = req.providers.iter().collect();
            if req.providers.is_empty()
                || distinct.len() != req.providers.len()
                || req.providers.iter().any(|i| *i >= c.providers.len())
            {
                return Err(format!("rule {}: providers {:?}", r.name, req.providers));
            }
            if req.audiences.as_ref().is_some_and(Vec::is_empty) {
                return Err(format!("rule {}: empty audiences", r.name));
            }
        }
    }
    if c.realm.is_empty()
        || c.realm
            .bytes()
            .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
    {
        return Err(format!("realm {:?}", c.realm));
    }
    if !(16..=16_384).contains(&c.max_header_value_bytes)
        || c.token_cache_size > 100_000
        || c.jwks_wait_timeout_ms > 60_000
        || !(0.0..=1.0).contains(&c.audit.allow_sample_rate)
        || c.audit.tenant_claim.is_empty()
    {
        return fail("a bound is out of range");
    }
    if c.strip_header_prefixes
        .iter()
        .any(|p| p.len() < 3 || *p != p.to_ascii_lowercase())
    {
        return Err(format!("strip prefixes {:?}", c.strip_header_prefixes));
    }
    if c.token_headers
        .iter()
        .any(|h| c.managed_headers.contains(h))
    {
        return fail("a token header is also a managed identity header");
    }
    Ok(())
}

#[test]
fn config() {
    let corpus = Corpus::load("config");
    let accepted = corpus
        .seeds
        .iter()
        .filter(|e| Config::parse(&e.bytes).is_ok())
        .count();
    assert!(
        accepted >= 5,
        "most config seeds should parse ({accepted} do)"
    );
    let check = |input: &[u8]| -> Result<(), String> {
        match Config::parse(input) {
            Ok(c) => config_invariants(&c),
            Err(e) if e.problem.trim().is_empty() || e.to_string().trim().is_empty() => {
                Err(format!("error without a problem text: {e:?}"))
            }
            Err(_) => Ok(()),
        }
    };
    engine::run("config", &corpus, gen_json_doc, check);
}
