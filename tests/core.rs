//! The whole decision pipeline (`authenticate`) with real signatures made here from the harness's fixture
//! keys, table-driven: one row per token shape, each with the expected outcome code.

// Tests panic on purpose; the crate-wide clippy denials are for the filter code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;
use common::{b64u, fixture_path, hmac_sha256, read_text, rsa_jwk, rsa_private, LocalKeys};
use jwt_compact::alg::{Ed25519, Es256, Rsa, RsaPrivateKey};
use jwt_compact::{Algorithm, AlgorithmSignature};
use jwt_guard::authenticator::{authenticate, claim, KeyState, Keys, Outcome};
use jwt_guard::config::{Config, JwksSource, Requirement};
use jwt_guard::crypto::Alg;
use jwt_guard::error::Denial;
use jwt_guard::jwks::KeySet;
use jwt_guard::response::deny_response;
use serde_json::{json, Value};

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://idp.test";

// ---------- keys ----------

use common::{ec_jwk, ec_private, ed_jwk, ed_private, EcKey, EdKey};

#[allow(clippy::large_enum_variant)]
enum Signer {
    Rsa(RsaPrivateKey),
    Ec(EcKey),
    Ed(EdKey),
    /// HMAC-SHA256 with these key bytes.
    Hmac(Vec<u8>),
    /// Empty signature.
    Unsigned,
}

fn secp256k1_jwk() -> Value {
    let mut k1 = ec_jwk("ec-1", "secp256k1", 32);
    k1["kid"] = json!("ec-k1");
    k1
}

fn jwks() -> Value {
    json!({"keys": [
        rsa_jwk("rsa-1"),
        rsa_jwk("rsa-2"),
        ec_jwk("ec-1", "P-256", 32),
        ed_jwk("ed-1"),
        ec_jwk("ec-384", "P-384", 48),
        // Unsupported curve: skipped without spoiling the set (the crv is read before the point).
        secp256k1_jwk(),
    ]})
}

// ---------- config and keys ----------

fn config_with(extra: Value) -> Config {
    let mut provider = json!({
        "issuer": ISS,
        "audiences": ["api"],
        "local_jwks": {"inline": jwks()},
    });
    for (k, v) in extra.as_object().expect("object") {
        provider[k] = v.clone();
    }
    let doc = json!({
        "realm": "test",
        "providers": {"idp": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}],
    });
    Config::parse(doc.to_string().as_bytes()).unwrap_or_else(|e| panic!("config: {e}"))
}

fn config() -> Config {
    config_with(json!({}))
}

struct PendingKeys;
impl Keys for PendingKeys {
    fn keys(&self, _: usize) -> KeyState<'_> {
        KeyState::Pending
    }
}

struct UnavailableKeys;
impl Keys for UnavailableKeys {
    fn keys(&self, _: usize) -> KeyState<'_> {
        KeyState::Unavailable
    }
}

fn requirement(config: &Config) -> &Requirement {
    config.rules[0]
        .requires
        .as_ref()
        .expect("rule requires a provider")
}

fn run(config: &Config, tokens: &[Vec<u8>]) -> Outcome {
    authenticate(config, requirement(config), tokens, &LocalKeys(config), NOW)
}

/// "allow" or the denial code.
fn code(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Allow(_) => "allow".to_owned(),
        Outcome::Deny(d) | Outcome::Forbidden(_, d) => d.code().to_owned(),
        Outcome::Wait(p) => format!("wait({p})"),
    }
}

// ---------- token construction ----------

fn claims() -> Value {
    json!({"iss": ISS, "aud": "api", "sub": "alice", "iat": NOW, "exp": NOW + 300})
}

fn with(mut base: Value, changes: Value) -> Value {
    for (k, v) in changes.as_object().expect("object") {
        if v.is_null() {
            base.as_object_mut().expect("object").remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn signature(signer: &Signer, alg: &str, input: &[u8]) -> Vec<u8> {
    match signer {
        Signer::Rsa(k) => {
            let rsa = match alg {
                "RS256" => Rsa::rs256(),
                "RS384" => Rsa::rs384(),
                "RS512" => Rsa::rs512(),
                "PS256" => Rsa::ps256(),
                "PS384" => Rsa::ps384(),
                "PS512" => Rsa::ps512(),
                // For confusion cases, sign RS256 whatever the header says.
                _ => Rsa::rs256(),
            };
            rsa.sign(k, input).as_bytes().to_vec()
        }
        Signer::Ec(k) => Es256.sign(k, input).as_bytes().to_vec(),
        Signer::Ed(k) => Ed25519.sign(k, input).as_bytes().to_vec(),
        Signer::Hmac(key) => hmac_sha256(key, input),
        Signer::Unsigned => Vec::new(),
    }
}

/// Compact JWS over raw header and payload bytes.
fn jws_raw(signer: &Signer, alg: &str, header: &[u8], payload: &[u8]) -> Vec<u8> {
    let input = format!("{}.{}", b64u(header), b64u(payload));
    let sig = signature(signer, alg, input.as_bytes());
    format!("{input}.{}", b64u(&sig)).into_bytes()
}

fn jws(signer: &Signer, header: Value, claims: Value) -> Vec<u8> {
    let alg = header["alg"].as_str().unwrap_or("RS256").to_owned();
    jws_raw(
        signer,
        &alg,
        header.to_string().as_bytes(),
        claims.to_string().as_bytes(),
    )
}

struct Fixtures {
    rsa1: Signer,
    rsa2: Signer,
    rogue: Signer,
    ec1: Signer,
    ed1: Signer,
}

fn fixtures() -> Fixtures {
    Fixtures {
        rsa1: Signer::Rsa(rsa_private("rsa-1")),
        rsa2: Signer::Rsa(rsa_private("rsa-2")),
        rogue: Signer::Rsa(rsa_private("rsa-rogue")),
        ec1: Signer::Ec(ec_private("ec-1")),
        ed1: Signer::Ed(ed_private("ed-1")),
    }
}

fn rs256(f: &Fixtures, claims: Value) -> Vec<u8> {
    jws(
        &f.rsa1,
        json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}),
        claims,
    )
}

// ---------- the table ----------

#[test]
fn pipeline_table() {
    let f = fixtures();
    let cfg = config();
    let valid = rs256(&f, claims());
    let expired = rs256(&f, with(claims(), json!({"exp": NOW - 61})));

    let seg = |s: &str| b64u(s.as_bytes());
    let header_rs = seg(r#"{"alg":"RS256","kid":"rsa-1"}"#);
    let payload = seg(&claims().to_string());
    let good_sig = {
        let s = String::from_utf8(valid.clone()).expect("ascii");
        s.rsplit('.').next().expect("sig").to_owned()
    };
    let valid_input = {
        let s = String::from_utf8(valid.clone()).expect("ascii");
        s[..s.rfind('.').expect("dot")].to_owned()
    };
    let sig_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&good_sig)
        .expect("sig");
    assert_eq!(sig_bytes.len(), 256);
    // A header whose padded base64url encoding ends in '=' (29 bytes of JSON).
    let padded_header = URL_SAFE.encode(br#"{"alg":"RS256","kid":"rsa-1"}"#);
    assert!(padded_header.ends_with('='));
    let mut non_ascii = valid.clone();
    non_ascii.splice(10..10, "é".bytes());

    let mut rows: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        // every supported algorithm, valid
        ("RS256", vec![rs256(&f, claims())], "allow"),
        (
            "RS384",
            vec![jws(
                &f.rsa1,
                json!({"alg": "RS384", "kid": "rsa-1"}),
                claims(),
            )],
            "allow",
        ),
        (
            "RS512",
            vec![jws(
                &f.rsa1,
                json!({"alg": "RS512", "kid": "rsa-1"}),
                claims(),
            )],
            "allow",
        ),
        (
            "PS256",
            vec![jws(
                &f.rsa1,
                json!({"alg": "PS256", "kid": "rsa-1"}),
                claims(),
            )],
            "allow",
        ),
        (
            "PS384",
            vec![jws(
                &f.rsa1,
                json!({"alg": "PS384", "kid": "rsa-1"}),
                claims(),
            )],
            "allow",
        ),
        (
            "PS512",
            vec![jws(
                &f.rsa1,
                json!({"alg": "PS512", "kid": "rsa-1"}),
                claims(),
            )],
            "allow",
        ),
        (
            "ES256",
            vec![jws(
                &f.ec1,
                json!({"alg": "ES256", "kid": "ec-1"}),
                claims(),
            )],
            "allow",
        ),
        (
            "EdDSA",
            vec![jws(
                &f.ed1,
                json!({"alg": "EdDSA", "kid": "ed-1"}),
                claims(),
            )],
            "allow",
        ),
        (
            "RS256 by rsa-2",
            vec![jws(
                &f.rsa2,
                json!({"alg": "RS256", "kid": "rsa-2"}),
                claims(),
            )],
            "allow",
        ),
        // time
        ("expired beyond skew", vec![expired.clone()], "expired"),
        (
            "expired at exactly exp+skew",
            vec![rs256(&f, with(claims(), json!({"exp": NOW - 60})))],
            "expired",
        ),
        (
            "expired within skew",
            vec![rs256(&f, with(claims(), json!({"exp": NOW - 59})))],
            "allow",
        ),
        (
            "nbf beyond skew",
            vec![rs256(&f, with(claims(), json!({"nbf": NOW + 61})))],
            "not_yet_valid",
        ),
        (
            "nbf within skew",
            vec![rs256(&f, with(claims(), json!({"nbf": NOW + 59})))],
            "allow",
        ),
        (
            "nbf past",
            vec![rs256(&f, with(claims(), json!({"nbf": NOW - 10})))],
            "allow",
        ),
        (
            "missing exp",
            vec![rs256(&f, with(claims(), json!({"exp": null})))],
            "missing_exp",
        ),
        (
            "exp is a string",
            vec![rs256(
                &f,
                with(claims(), json!({"exp": (NOW + 300).to_string()})),
            )],
            "malformed",
        ),
        (
            "exp fractional",
            vec![rs256(
                &f,
                with(claims(), json!({"exp": NOW as f64 + 0.5 + 300.0})),
            )],
            "allow",
        ),
        // issuer
        (
            "iss wrong",
            vec![rs256(
                &f,
                with(claims(), json!({"iss": "https://evil.test"})),
            )],
            "wrong_issuer",
        ),
        (
            "iss missing",
            vec![rs256(&f, with(claims(), json!({"iss": null})))],
            "wrong_issuer",
        ),
        (
            "iss trailing slash",
            vec![rs256(
                &f,
                with(claims(), json!({"iss": "https://idp.test/"})),
            )],
            "wrong_issuer",
        ),
        (
            "iss not a string",
            vec![rs256(&f, with(claims(), json!({"iss": 7})))],
            "malformed",
        ),
        // audience
        (
            "aud string",
            vec![rs256(&f, with(claims(), json!({"aud": "api"})))],
            "allow",
        ),
        (
            "aud array",
            vec![rs256(&f, with(claims(), json!({"aud": ["other", "api"]})))],
            "allow",
        ),
        (
            "aud mismatch",
            vec![rs256(&f, with(claims(), json!({"aud": "other"})))],
            "wrong_audience",
        ),
        (
            "aud array mismatch",
            vec![rs256(&f, with(claims(), json!({"aud": ["x", "y"]})))],
            "wrong_audience",
        ),
        (
            "aud empty array",
            vec![rs256(&f, with(claims(), json!({"aud": []})))],
            "wrong_audience",
        ),
        (
            "aud missing",
            vec![rs256(&f, with(claims(), json!({"aud": null})))],
            "wrong_audience",
        ),
        (
            "aud array with number",
            vec![rs256(&f, with(claims(), json!({"aud": ["api", 1]})))],
            "malformed",
        ),
        (
            "aud number",
            vec![rs256(&f, with(claims(), json!({"aud": 1})))],
            "malformed",
        ),
        // algorithm
        (
            "alg none",
            vec![jws(&Signer::Unsigned, json!({"alg": "none"}), claims())],
            "alg_not_allowed",
        ),
        (
            "alg None",
            vec![jws(&Signer::Unsigned, json!({"alg": "None"}), claims())],
            "alg_not_allowed",
        ),
        (
            "alg NONE",
            vec![jws(&Signer::Unsigned, json!({"alg": "NONE"}), claims())],
            "alg_not_allowed",
        ),
        (
            "alg nOnE kid",
            vec![jws(
                &Signer::Unsigned,
                json!({"alg": "nOnE", "kid": "rsa-1"}),
                claims(),
            )],
            "alg_not_allowed",
        ),
        (
            "HS256 keyed by rsa-1 public PEM",
            vec![jws(
                &Signer::Hmac(read_text(&fixture_path("rsa-1.pub.pem")).into_bytes()),
                json!({"alg": "HS256", "kid": "rsa-1"}),
                claims(),
            )],
            "alg_not_allowed",
        ),
        (
            "ES384 header naming the P-256 key",
            vec![jws(
                &f.ec1,
                json!({"alg": "ES384", "kid": "ec-1"}),
                claims(),
            )],
            "key_mismatch",
        ),
        (
            "ES512 header naming the P-384 key",
            vec![jws(
                &f.ec1,
                json!({"alg": "ES512", "kid": "ec-384"}),
                claims(),
            )],
            "key_mismatch",
        ),
        (
            "ES256K header",
            vec![jws(
                &f.ec1,
                json!({"alg": "ES256K", "kid": "ec-1"}),
                claims(),
            )],
            "alg_not_allowed",
        ),
        (
            "alg lowercase rs256",
            vec![jws(
                &f.rsa1,
                json!({"alg": "rs256", "kid": "rsa-1"}),
                claims(),
            )],
            "alg_not_allowed",
        ),
        (
            "alg missing",
            vec![jws(&f.rsa1, json!({"kid": "rsa-1"}), claims())],
            "malformed",
        ),
        (
            "alg not a string",
            vec![jws(
                &f.rsa1,
                json!({"alg": ["RS256"], "kid": "rsa-1"}),
                claims(),
            )],
            "malformed",
        ),
        // keys
        (
            "ES256 with kid of the RSA key",
            vec![jws(
                &f.ec1,
                json!({"alg": "ES256", "kid": "rsa-1"}),
                claims(),
            )],
            "key_mismatch",
        ),
        (
            "RS256 with kid of the EC key",
            vec![jws(
                &f.rsa1,
                json!({"alg": "RS256", "kid": "ec-1"}),
                claims(),
            )],
            "key_mismatch",
        ),
        (
            "kid of the skipped secp256k1 key",
            vec![jws(
                &f.ec1,
                json!({"alg": "ES256", "kid": "ec-k1"}),
                claims(),
            )],
            "unknown_kid",
        ),
        (
            "unknown kid",
            vec![jws(
                &f.rsa1,
                json!({"alg": "RS256", "kid": "nope"}),
                claims(),
            )],
            "unknown_kid",
        ),
        (
            "kid not a string",
            vec![jws(&f.rsa1, json!({"alg": "RS256", "kid": 1}), claims())],
            "malformed",
        ),
        (
            "no kid RS256",
            vec![jws(&f.rsa1, json!({"alg": "RS256"}), claims())],
            "allow",
        ),
        (
            "no kid RS256 by rsa-2",
            vec![jws(&f.rsa2, json!({"alg": "PS256"}), claims())],
            "allow",
        ),
        (
            "no kid ES256",
            vec![jws(&f.ec1, json!({"alg": "ES256"}), claims())],
            "allow",
        ),
        (
            "no kid EdDSA",
            vec![jws(&f.ed1, json!({"alg": "EdDSA"}), claims())],
            "allow",
        ),
        (
            "no kid, rogue RS256",
            vec![jws(&f.rogue, json!({"alg": "RS256"}), claims())],
            "bad_signature",
        ),
        (
            "rogue with kid rsa-1",
            vec![jws(
                &f.rogue,
                json!({"alg": "RS256", "kid": "rsa-1"}),
                claims(),
            )],
            "bad_signature",
        ),
        (
            "rsa-2 signature, kid rsa-1",
            vec![jws(
                &f.rsa2,
                json!({"alg": "RS256", "kid": "rsa-1"}),
                claims(),
            )],
            "bad_signature",
        ),
        (
            "RS256 header, PS256 signature",
            vec![{
                let input = format!("{}.{}", header_rs, payload);
                let sig = signature(&f.rsa1, "PS256", input.as_bytes());
                format!("{input}.{}", b64u(&sig)).into_bytes()
            }],
            "bad_signature",
        ),
        (
            "claims changed after signing",
            vec![format!(
                "{header_rs}.{}.{good_sig}",
                seg(&with(claims(), json!({"sub": "admin"})).to_string())
            )
            .into_bytes()],
            "bad_signature",
        ),
        (
            "signature one byte short",
            vec![format!("{valid_input}.{}", b64u(&sig_bytes[..sig_bytes.len() - 1])).into_bytes()],
            "bad_signature",
        ),
        (
            "signature with a leading zero byte",
            vec![
                format!("{valid_input}.{}", b64u(&[&[0u8][..], &sig_bytes].concat())).into_bytes(),
            ],
            "bad_signature",
        ),
        (
            "signature bit flipped",
            vec![{
                let mut s = sig_bytes.clone();
                s[100] ^= 1;
                format!("{valid_input}.{}", b64u(&s)).into_bytes()
            }],
            "bad_signature",
        ),
        (
            "non-canonical trailing bits",
            vec![valid[..valid.len() - 4].to_vec()],
            "malformed",
        ),
        // forbidden headers
        (
            "jku",
            vec![jws(
                &f.rsa1,
                json!({"alg": "RS256", "kid": "rsa-1", "jku": "https://evil.test/jwks"}),
                claims(),
            )],
            "forbidden_header",
        ),
        (
            "jwk",
            vec![jws(
                &f.rsa1,
                json!({"alg": "RS256", "kid": "rsa-1", "jwk": rsa_jwk("rsa-rogue")}),
                claims(),
            )],
            "forbidden_header",
        ),
        (
            "x5u",
            vec![jws(
                &f.rsa1,
                json!({"alg": "RS256", "kid": "rsa-1", "x5u": "https://evil.test/x"}),
                claims(),
            )],
            "forbidden_header",
        ),
        (
            "x5c",
            vec![jws(
                &f.rsa1,
                json!({"alg": "RS256", "kid": "rsa-1", "x5c": ["MIIB"]}),
                claims(),
            )],
            "forbidden_header",
        ),
        (
            "crit",
            vec![jws(
                &f.rsa1,
                json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}),
                claims(),
            )],
            "forbidden_header",
        ),
        (
            "crit empty",
            vec![jws(
                &f.rsa1,
                json!({"alg": "RS256", "kid": "rsa-1", "crit": []}),
                claims(),
            )],
            "forbidden_header",
        ),
        // structure
        (
            "two segments",
            vec![format!("{header_rs}.{payload}").into_bytes()],
            "malformed",
        ),
        (
            "four segments",
            vec![format!("{header_rs}.{payload}.{good_sig}.{good_sig}").into_bytes()],
            "malformed",
        ),
        (
            "empty fourth segment",
            vec![format!("{header_rs}.{payload}.{good_sig}.").into_bytes()],
            "malformed",
        ),
        (
            "five segments (JWE)",
            vec![format!(
                "{}.{}.{}.{}.{}",
                seg(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#),
                seg("key"),
                seg("iv"),
                seg("ct"),
                seg("tag")
            )
            .into_bytes()],
            "malformed",
        ),
        (
            "empty signature",
            vec![format!("{header_rs}.{payload}.").into_bytes()],
            "malformed",
        ),
        (
            "padded header",
            vec![format!("{padded_header}.{payload}.{good_sig}").into_bytes()],
            "malformed",
        ),
        (
            "padded signature",
            vec![format!("{header_rs}.{payload}.{good_sig}=").into_bytes()],
            "malformed",
        ),
        (
            "'+' in signature",
            vec![format!("{header_rs}.{payload}.+{}", &good_sig[1..]).into_bytes()],
            "malformed",
        ),
        (
            "'/' in signature",
            vec![format!("{header_rs}.{payload}./{}", &good_sig[1..]).into_bytes()],
            "malformed",
        ),
        (
            "'+' in payload",
            vec![format!("{header_rs}.+{}.{good_sig}", &payload[1..]).into_bytes()],
            "malformed",
        ),
        (
            "space in token",
            vec![format!("{header_rs}.{payload} .{good_sig}").into_bytes()],
            "malformed",
        ),
        (
            "header not JSON",
            vec![jws_raw(
                &f.rsa1,
                "RS256",
                b"not json",
                claims().to_string().as_bytes(),
            )],
            "malformed",
        ),
        (
            "header JSON array",
            vec![jws_raw(
                &f.rsa1,
                "RS256",
                br#"["RS256"]"#,
                claims().to_string().as_bytes(),
            )],
            "malformed",
        ),
        (
            "payload JSON array",
            vec![jws_raw(
                &f.rsa1,
                "RS256",
                br#"{"alg":"RS256","kid":"rsa-1"}"#,
                br#"[1,2]"#,
            )],
            "malformed",
        ),
        (
            "payload not JSON",
            vec![jws_raw(
                &f.rsa1,
                "RS256",
                br#"{"alg":"RS256","kid":"rsa-1"}"#,
                b"foo",
            )],
            "malformed",
        ),
        ("non-ASCII bytes", vec![non_ascii], "malformed"),
        (
            "NUL byte",
            vec![{
                let mut t = valid.clone();
                t.insert(5, 0);
                t
            }],
            "malformed",
        ),
        ("empty token", vec![Vec::new()], "malformed"),
        (
            "oversized",
            vec![rs256(&f, with(claims(), json!({"pad": "x".repeat(9000)})))],
            "oversized",
        ),
        // several tokens
        (
            "two valid tokens",
            vec![
                valid.clone(),
                jws(&f.ec1, json!({"alg": "ES256", "kid": "ec-1"}), claims()),
            ],
            "allow",
        ),
        (
            "valid then expired",
            vec![valid.clone(), expired.clone()],
            "expired",
        ),
        (
            "expired then valid",
            vec![expired.clone(), valid.clone()],
            "expired",
        ),
        (
            "valid then garbage",
            vec![valid.clone(), b"garbage".to_vec()],
            "malformed",
        ),
        ("no tokens", vec![], "missing"),
    ];
    // Just under the size limit still parses: find the largest pad that fits (signature length is
    // fixed at 342 base64url chars for RSA-2048), then sign once.
    let header = json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}).to_string();
    let fits = |pad: usize| {
        let body = with(claims(), json!({"pad": "x".repeat(pad)})).to_string();
        b64u(header.as_bytes()).len() + 1 + b64u(body.as_bytes()).len() + 1 + 342 <= 8192
    };
    let pad = (0..8192).rev().find(|&p| fits(p)).expect("some pad fits");
    let near_limit = rs256(&f, with(claims(), json!({"pad": "x".repeat(pad)})));
    assert!(near_limit.len() > 8188, "{}", near_limit.len());
    assert!(near_limit.len() <= 8192, "{}", near_limit.len());
    rows.push(("just under max_token_bytes", vec![near_limit], "allow"));

    let mut failures = Vec::new();
    for (name, tokens, want) in &rows {
        let got = code(&run(&cfg, tokens));
        if got != *want {
            failures.push(format!("{name}: want {want}, got {got}"));
        }
    }
    println!("pipeline table: {} rows", rows.len());
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn allow_carries_identity() {
    let f = fixtures();
    let cfg = config();
    match run(&cfg, &[rs256(&f, claims())]) {
        Outcome::Allow(Some(v)) => {
            assert_eq!(v.provider(), 0);
            assert_eq!(v.claims()["sub"], "alice");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn provider_options() {
    let f = fixtures();
    // require_expiration false: no exp is fine, an expired exp still is not.
    let cfg = config_with(json!({"require_expiration": false}));
    assert_eq!(
        code(&run(
            &cfg,
            &[rs256(&f, with(claims(), json!({"exp": null})))]
        )),
        "allow"
    );
    assert_eq!(
        code(&run(
            &cfg,
            &[rs256(&f, with(claims(), json!({"exp": NOW - 61})))]
        )),
        "expired"
    );

    // Allow-list: only ES256.
    let cfg = config_with(json!({"algorithms": ["ES256"]}));
    assert_eq!(code(&run(&cfg, &[rs256(&f, claims())])), "alg_not_allowed");
    assert_eq!(
        code(&run(
            &cfg,
            &[jws(
                &f.ed1,
                json!({"alg": "EdDSA", "kid": "ed-1"}),
                claims()
            )]
        )),
        "alg_not_allowed"
    );
    assert_eq!(
        code(&run(
            &cfg,
            &[jws(
                &f.ec1,
                json!({"alg": "ES256", "kid": "ec-1"}),
                claims()
            )]
        )),
        "allow"
    );

    // Skew 0: exp one second ago is expired, nbf one second ahead is not yet valid.
    let cfg = config_with(json!({"clock_skew_seconds": 0}));
    assert_eq!(
        code(&run(
            &cfg,
            &[rs256(&f, with(claims(), json!({"exp": NOW - 1})))]
        )),
        "expired"
    );
    assert_eq!(
        code(&run(
            &cfg,
            &[rs256(&f, with(claims(), json!({"exp": NOW})))]
        )),
        "expired"
    );
    assert_eq!(
        code(&run(
            &cfg,
            &[rs256(&f, with(claims(), json!({"exp": NOW + 1})))]
        )),
        "allow"
    );
    assert_eq!(
        code(&run(
            &cfg,
            &[rs256(&f, with(claims(), json!({"nbf": NOW + 1})))]
        )),
        "not_yet_valid"
    );
    assert_eq!(
        code(&run(
            &cfg,
            &[rs256(&f, with(claims(), json!({"nbf": NOW})))]
        )),
        "allow"
    );

    // No audiences configured: aud is not checked.
    let cfg = config_with(json!({"audiences": []}));
    assert_eq!(
        code(&run(
            &cfg,
            &[rs256(&f, with(claims(), json!({"aud": null})))]
        )),
        "allow"
    );
    assert_eq!(
        code(&run(
            &cfg,
            &[rs256(&f, with(claims(), json!({"aud": "other"})))]
        )),
        "allow"
    );

    // A smaller token limit.
    let cfg = config_with(json!({"max_token_bytes": 256}));
    assert_eq!(code(&run(&cfg, &[rs256(&f, claims())])), "oversized");
}

#[test]
fn key_states() {
    let f = fixtures();
    let cfg = config();
    let token = vec![rs256(&f, claims())];
    match authenticate(&cfg, requirement(&cfg), &token, &PendingKeys, NOW) {
        Outcome::Wait(0) => {}
        other => panic!("pending keys: {other:?}"),
    }
    let out = authenticate(&cfg, requirement(&cfg), &token, &UnavailableKeys, NOW);
    assert_eq!(code(&out), "keys_unavailable");
    // Cheap checks still come first: an expired token is denied without waiting for keys.
    let expired = vec![rs256(&f, with(claims(), json!({"exp": NOW - 61})))];
    assert_eq!(
        code(&authenticate(
            &cfg,
            requirement(&cfg),
            &expired,
            &PendingKeys,
            NOW
        )),
        "expired"
    );
    // No token at all never waits either.
    assert_eq!(
        code(&authenticate(
            &cfg,
            requirement(&cfg),
            &[],
            &PendingKeys,
            NOW
        )),
        "missing"
    );
}

#[test]
fn local_key_set_skips_unsupported_keys() {
    let set = KeySet::parse(jwks().to_string().as_bytes()).expect("key set");
    assert_eq!(set.keys.len(), 5);
    assert_eq!(set.skipped.len(), 1, "{:?}", set.skipped);
    assert_eq!(
        set.skipped[0].kid.as_deref(),
        Some("ec-k1"),
        "{:?}",
        set.skipped
    );
    // Every algorithm has a key here except ES512 (no P-521 key in this set).
    for alg in Alg::ALL {
        assert_eq!(
            set.keys.iter().any(|k| k.fits(alg)),
            alg != Alg::ES512,
            "{alg:?}"
        );
    }
}

#[test]
fn deny_responses() {
    let header = |r: &jwt_guard::response::DenyResponse, name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let all = [
        Denial::Missing,
        Denial::Malformed("x"),
        Denial::Oversized,
        Denial::AlgNotAllowed,
        Denial::ForbiddenHeader("jku header is not accepted"),
        Denial::UnknownKid,
        Denial::KeyMismatch,
        Denial::BadSignature,
        Denial::Expired,
        Denial::NotYetValid,
        Denial::MissingExp,
        Denial::WrongIssuer,
        Denial::WrongAudience,
        Denial::KeysUnavailable,
        Denial::NoRule,
    ];
    let mut codes = std::collections::HashSet::new();
    for d in &all {
        assert!(codes.insert(d.code()), "duplicate code {}", d.code());
        let r = deny_response(d, "test");
        let body: Value = serde_json::from_str(&r.body).expect("JSON body");
        assert_eq!(body["code"], d.code());
        assert_eq!(
            header(&r, "content-type").as_deref(),
            Some("application/json")
        );
        let www = header(&r, "www-authenticate");
        match d {
            Denial::Missing => {
                assert_eq!(r.status, 401);
                assert_eq!(www.as_deref(), Some("Bearer realm=\"test\""));
            }
            Denial::NoRule => {
                assert_eq!(r.status, 403);
                assert_eq!(www, None);
            }
            Denial::KeysUnavailable => {
                assert_eq!(r.status, 503);
                assert_eq!(www, None);
                assert_eq!(header(&r, "retry-after").as_deref(), Some("5"));
            }
            _ => {
                assert_eq!(r.status, 401, "{d:?}");
                assert_eq!(
                    www,
                    Some(format!(
                        "Bearer realm=\"test\", error=\"invalid_token\", error_description=\"{}\"",
                        d.description()
                    ))
                );
                assert_eq!(body["error"], "invalid_token");
            }
        }
        // Nothing that could break the header: no quotes or control bytes in descriptions.
        assert!(
            !d.description()
                .bytes()
                .any(|b| b == b'"' || b == b'\\' || b < 0x20),
            "{d:?}"
        );
    }
}

#[test]
fn realm_comes_from_config() {
    let cfg = config();
    assert_eq!(cfg.realm, "test");
    let r = deny_response(&Denial::Expired, &cfg.realm);
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k == "www-authenticate" && v.starts_with("Bearer realm=\"test\"")));
}

// ---------- rule requirements, modes and the header plan ----------

/// A config whose single rule carries `requires` extras and a mode.
fn rule_config(requires_extra: Value, mode: &str, provider_extra: Value) -> Config {
    let mut provider =
        json!({"issuer": ISS, "audiences": ["api"], "local_jwks": {"inline": jwks()}});
    for (k, v) in provider_extra.as_object().expect("object") {
        provider[k] = v.clone();
    }
    let mut requires = json!({"provider_name": "idp"});
    for (k, v) in requires_extra.as_object().expect("object") {
        requires[k] = v.clone();
    }
    let doc = json!({
        "realm": "test",
        "providers": {"idp": provider},
        "rules": [{"name": "r", "match": {"prefix": "/"}, "requires": requires, "mode": mode,
                   "on_keys_unavailable": "degraded"}],
    });
    Config::parse(doc.to_string().as_bytes()).unwrap_or_else(|e| panic!("config: {e}"))
}

#[test]
fn requirement_table() {
    let f = fixtures();
    let tok = |extra: Value| rs256(&f, with(claims(), extra));
    let cases: Vec<(&str, Value, Option<Vec<u8>>, &str)> = vec![
        (
            "scope string has all",
            json!({"scopes": ["a", "b"]}),
            Some(tok(json!({"scope": "b x a"}))),
            "allow",
        ),
        (
            "scope string lacks one",
            json!({"scopes": ["a", "b"]}),
            Some(tok(json!({"scope": "a"}))),
            "insufficient_scope",
        ),
        (
            "scp array",
            json!({"scopes": ["a"]}),
            Some(tok(json!({"scp": ["x", "a"]}))),
            "allow",
        ),
        (
            "scp string",
            json!({"scopes": ["a"]}),
            Some(tok(json!({"scp": "x a"}))),
            "allow",
        ),
        (
            "scope and scp merged",
            json!({"scopes": ["a", "b"]}),
            Some(tok(json!({"scope": "a", "scp": ["b"]}))),
            "allow",
        ),
        (
            "no scope claim",
            json!({"scopes": ["a"]}),
            Some(tok(json!({}))),
            "insufficient_scope",
        ),
        (
            "scope as a number",
            json!({"scopes": ["1"]}),
            Some(tok(json!({"scope": 1}))),
            "insufficient_scope",
        ),
        (
            "any_scopes one of",
            json!({"any_scopes": ["admin", "ops"]}),
            Some(tok(json!({"scope": "ops"}))),
            "allow",
        ),
        (
            "any_scopes none",
            json!({"any_scopes": ["admin", "ops"]}),
            Some(tok(json!({"scope": "read"}))),
            "insufficient_scope",
        ),
        (
            "scope prefix is not a scope",
            json!({"scopes": ["read"]}),
            Some(tok(json!({"scope": "read:items"}))),
            "insufficient_scope",
        ),
        (
            "claim present",
            json!({"claims": [{"name": "tenant"}]}),
            Some(tok(json!({"tenant": "acme"}))),
            "allow",
        ),
        (
            "claim absent",
            json!({"claims": [{"name": "tenant"}]}),
            Some(tok(json!({}))),
            "claim_mismatch",
        ),
        (
            "claim null",
            json!({"claims": [{"name": "tenant"}]}),
            Some(tok(json!({"tenant": null}))),
            "claim_mismatch",
        ),
        (
            "claim value allowed",
            json!({"claims": [{"name": "tenant", "values": ["a", "b"]}]}),
            Some(tok(json!({"tenant": "b"}))),
            "allow",
        ),
        (
            "claim value not allowed",
            json!({"claims": [{"name": "tenant", "values": ["a"]}]}),
            Some(tok(json!({"tenant": "c"}))),
            "claim_mismatch",
        ),
        (
            "claim array element",
            json!({"claims": [{"name": "roles", "values": ["admin"]}]}),
            Some(tok(json!({"roles": ["x", "admin"]}))),
            "allow",
        ),
        (
            "nested claim",
            json!({"claims": [{"name": "org.id", "values": ["7"]}]}),
            Some(tok(json!({"org": {"id": 7}}))),
            "allow",
        ),
        (
            "nested claim wrong",
            json!({"claims": [{"name": "org.id", "values": ["7"]}]}),
            Some(tok(json!({"org": {"id": 8}}))),
            "claim_mismatch",
        ),
        (
            "dotted top-level name",
            json!({"claims": [{"name": "https://x.example/t", "values": ["a"]}]}),
            Some(tok(json!({"https://x.example/t": "a"}))),
            "allow",
        ),
        (
            "audience override allows",
            json!({"audiences": ["other"]}),
            Some(tok(json!({"aud": "other"}))),
            "allow",
        ),
        (
            "audience override replaces the provider's",
            json!({"audiences": ["other"]}),
            Some(tok(json!({}))),
            "wrong_audience",
        ),
        (
            "allow_missing without token",
            json!({"allow_missing": true}),
            None,
            "allow",
        ),
        (
            "allow_missing with a bad token",
            json!({"allow_missing": true}),
            Some(b"x.y.z".to_vec()),
            "malformed",
        ),
        ("no token", json!({}), None, "missing"),
    ];
    let mut failures = Vec::new();
    for (name, extra, token, want) in cases {
        let cfg = rule_config(extra, "enforce", json!({}));
        let tokens: Vec<Vec<u8>> = token.into_iter().collect();
        let got = code(&run(&cfg, &tokens));
        if got != want {
            failures.push(format!("{name}: want {want}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn insufficient_scope_names_the_required_scopes() {
    let f = fixtures();
    let cfg = rule_config(json!({"scopes": ["read:items"]}), "enforce", json!({}));
    let outcome = run(&cfg, &[rs256(&f, claims())]);
    let Outcome::Forbidden(identity, d) = outcome else {
        panic!("{outcome:?}")
    };
    // The identity stays with the refusal, for the shadow line and the audit record.
    assert!(claim(identity.claims(), "sub").is_some());
    let r = deny_response(&d, "test");
    assert_eq!(r.status, 403);
    let challenge = &r
        .headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .expect("challenge")
        .1;
    assert!(challenge.ends_with("scope=\"read:items\""), "{challenge}");
}

#[test]
fn modes_decide_what_happens() {
    use jwt_guard::policy::plan;
    let f = fixtures();
    let good = rs256(&f, with(claims(), json!({"tenant": "acme"})));
    let expired = rs256(&f, with(claims(), json!({"exp": NOW - 3600})));
    let header = |p: &jwt_guard::policy::Plan, name: &str| {
        p.set_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };

    let enforce = rule_config(json!({}), "enforce", json!({}));
    let rule = &enforce.rules[0];
    let p = plan(&enforce, rule, run(&enforce, std::slice::from_ref(&good)));
    assert_eq!(p.respond, None);
    assert_eq!(header(&p, "x-user-sub").as_deref(), Some("alice"));
    assert_eq!(header(&p, "x-tenant-id").as_deref(), Some("acme"));
    assert_eq!(header(&p, "x-auth-shadow"), None);
    let p = plan(
        &enforce,
        rule,
        run(&enforce, std::slice::from_ref(&expired)),
    );
    assert_eq!(p.respond.as_ref().map(|d| d.code()), Some("expired"));
    // Degraded only covers keys being unavailable.
    let p = plan(
        &enforce,
        rule,
        authenticate(
            &enforce,
            requirement(&enforce),
            std::slice::from_ref(&good),
            &UnavailableKeys,
            NOW,
        ),
    );
    assert_eq!(p.respond, None);
    assert_eq!(
        header(&p, "x-auth-degraded").as_deref(),
        Some("keys_unavailable")
    );
    assert_eq!(header(&p, "x-user-sub"), None);

    let shadow = rule_config(json!({}), "shadow", json!({}));
    let rule = &shadow.rules[0];
    let p = plan(&shadow, rule, run(&shadow, &[expired]));
    assert_eq!(p.respond, None, "shadow never blocks");
    assert_eq!(
        header(&p, "x-auth-shadow").as_deref(),
        Some("deny; reason=expired")
    );
    assert_eq!(header(&p, "x-user-sub"), None);
    assert_eq!(
        p.log.as_deref(),
        Some("shadow rule=r would deny: reason=expired sub=-")
    );
    let p = plan(&shadow, rule, run(&shadow, std::slice::from_ref(&good)));
    assert_eq!(header(&p, "x-auth-shadow").as_deref(), Some("allow"));
    assert_eq!(header(&p, "x-user-sub").as_deref(), Some("alice"));

    // A valid token refused for its scope: who it was stays in the log line and the audit fields,
    // but no identity header is set for a would-deny.
    for mode in ["shadow", "enforce"] {
        let scoped = rule_config(json!({"scopes": ["reports:read"]}), mode, json!({}));
        let rule = &scoped.rules[0];
        let p = plan(&scoped, rule, run(&scoped, std::slice::from_ref(&good)));
        assert_eq!(p.reason, "insufficient_scope", "{mode}");
        assert_eq!(p.subject.as_deref(), Some("alice"), "{mode}");
        assert_eq!(p.tenant.as_deref(), Some("acme"), "{mode}");
        assert_eq!(p.provider, Some(0), "{mode}");
        assert_eq!(header(&p, "x-user-sub"), None, "{mode}");
        if mode == "shadow" {
            assert_eq!(p.outcome.code(), "would_deny");
            assert_eq!(
                p.log.as_deref(),
                Some("shadow rule=r would deny: reason=insufficient_scope sub=alice")
            );
        } else {
            assert_eq!(p.outcome.code(), "deny");
            assert_eq!(
                p.respond.as_ref().map(|d| d.code()),
                Some("insufficient_scope")
            );
        }
    }
}

#[test]
fn claim_headers_and_stripping() {
    use jwt_guard::headers::{identity_headers, to_strip};
    let cfg = rule_config(
        json!({}),
        "enforce",
        json!({"claim_to_headers": [
            {"claim": "sub", "header": "X-User-Sub"},
            {"claim": "groups", "header": "x-user-groups"},
            {"claim": "org.name", "header": "x-org"},
            {"claim": "scope", "header": "x-user-scope"},
            {"claim": "bad", "header": "x-user-bad"},
            {"claim": "obj", "header": "x-user-obj"}
        ], "from_headers": [{"name": "x-auth-token"}]}),
    );
    let claims = with(
        claims(),
        json!({"groups": ["a", 1, true], "org": {"name": "Acme"}, "scp": ["s1", "s2"],
               "bad": "x\u{0}y", "obj": {"k": 1}}),
    );
    let (set, dropped) =
        identity_headers(&cfg.providers[0], claims.as_object().expect("object"), 4096);
    assert_eq!(
        set,
        vec![
            ("x-user-sub".to_owned(), "alice".to_owned()),
            ("x-user-groups".to_owned(), "a,1,true".to_owned()),
            ("x-org".to_owned(), "Acme".to_owned()),
            ("x-user-scope".to_owned(), "s1 s2".to_owned()),
        ]
    );
    let reasons: Vec<(&str, &str, &str)> = dropped
        .iter()
        .map(|d| (d.header.as_str(), d.reason.code(), d.detail))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (
                "x-user-bad",
                "control_character",
                "control character in value"
            ),
            ("x-user-obj", "not_plain", "claim is an object")
        ]
    );
    // Stripped: managed headers (even without a prefix: x-org), every prefixed header, any case;
    // kept: the configured token header, though it has an x-auth- prefix.
    let names = [
        "X-User-Sub",
        "x-org",
        "x-tenant-id",
        "X-AUTH-SHADOW",
        "x-auth-token",
        "x-request-id",
        "authorization",
    ];
    assert_eq!(
        to_strip(&cfg, names),
        vec!["x-user-sub", "x-org", "x-tenant-id", "x-auth-shadow"]
    );
}

// ---------- the trust contract: one reading of a token and of a request ----------

/// An ES256 token over exactly these header and payload bytes, signed with the real key.
fn es256_raw(f: &Fixtures, header: &str, payload: &str) -> Vec<u8> {
    jws_raw(&f.ec1, "ES256", header.as_bytes(), payload.as_bytes())
}

#[test]
fn duplicate_members_and_nested_jwts_are_refused() {
    let f = fixtures();
    let cfg = config();
    let hdr = r#"{"alg":"ES256","kid":"ec-1"}"#;
    let rest = format!(r#""iss":"{ISS}","aud":"api","sub":"alice""#);
    let ok = format!(r#"{{{rest},"exp":{}}}"#, NOW + 300);
    assert_eq!(code(&run(&cfg, &[es256_raw(&f, hdr, &ok)])), "allow");
    let cases = [
        (
            "exp twice: expired, then future",
            hdr.to_owned(),
            format!(r#"{{{rest},"exp":{},"exp":{}}}"#, NOW - 600, NOW + 300),
            "malformed",
        ),
        (
            "exp twice: future, then expired",
            hdr.to_owned(),
            format!(r#"{{{rest},"exp":{},"exp":{}}}"#, NOW + 300, NOW - 600),
            "malformed",
        ),
        (
            "sub twice, one escaped",
            hdr.to_owned(),
            format!(r#"{{{rest},"\u0073ub":"admin","exp":{}}}"#, NOW + 300),
            "malformed",
        ),
        (
            "nested object repeats a member",
            hdr.to_owned(),
            format!(
                r#"{{{rest},"org":{{"id":"a","id":"b"}},"exp":{}}}"#,
                NOW + 300
            ),
            "malformed",
        ),
        (
            "object inside an array repeats a member",
            hdr.to_owned(),
            format!(r#"{{{rest},"x":[{{"k":1,"k":2}}],"exp":{}}}"#, NOW + 300),
            "malformed",
        ),
        (
            "header repeats alg",
            r#"{"alg":"ES256","kid":"ec-1","alg":"ES256"}"#.to_owned(),
            ok.clone(),
            "malformed",
        ),
        (
            "header repeats kid",
            r#"{"alg":"ES256","kid":"nope","kid":"ec-1"}"#.to_owned(),
            ok.clone(),
            "malformed",
        ),
    ];
    for (name, header, payload, want) in &cases {
        assert_eq!(
            code(&run(&cfg, &[es256_raw(&f, header, payload)])),
            *want,
            "{name}"
        );
    }
    for cty in ["JWT", "jwt", "application/jwt", "Application/JWT"] {
        let header = format!(r#"{{"alg":"ES256","kid":"ec-1","cty":"{cty}"}}"#);
        let outcome = run(&cfg, &[es256_raw(&f, &header, &ok)]);
        assert_eq!(code(&outcome), "forbidden_header", "cty {cty}");
        let Outcome::Deny(d) = outcome else {
            unreachable!()
        };
        assert!(d.description().contains("nested"), "{}", d.description());
    }
    let header = r#"{"alg":"ES256","kid":"ec-1","cty":7}"#;
    assert_eq!(code(&run(&cfg, &[es256_raw(&f, header, &ok)])), "malformed");
}

#[test]
fn a_403_only_ever_follows_a_verified_signature() {
    let f = fixtures();
    let cfg = rule_config(json!({"scopes": ["read"]}), "enforce", json!({}));
    let req = cfg.rules[0].requires.as_ref().expect("requires");
    let status = |token: Vec<u8>| match authenticate(&cfg, req, &[token], &LocalKeys(&cfg), NOW) {
        Outcome::Deny(d) => {
            let status = deny_response(&d, "t").status;
            assert_ne!(status, 403, "a 403 without a verified identity: {d:?}");
            status
        }
        // Only a verified token can be forbidden; so a 403 follows a verified signature.
        Outcome::Forbidden(_, d) => deny_response(&d, "t").status,
        Outcome::Allow(_) => 200,
        Outcome::Wait(_) => 0,
    };
    let foreign = with(claims(), json!({"aud": "other", "scope": "read"}));
    let forged = jws(
        &f.rogue,
        json!({"alg": "RS256", "kid": "rsa-1"}),
        foreign.clone(),
    );
    assert_eq!(status(forged), 401, "forged, foreign aud");
    assert_eq!(status(rs256(&f, foreign)), 401, "genuine, foreign aud");
    let forged_unscoped = jws(&f.rogue, json!({"alg": "RS256", "kid": "rsa-1"}), claims());
    assert_eq!(status(forged_unscoped), 401, "forged, lacking the scope");
    assert_eq!(
        status(rs256(&f, claims())),
        403,
        "genuine, lacking the scope"
    );
    assert_eq!(
        status(rs256(&f, with(claims(), json!({"scope": "read"})))),
        200
    );
}

mod request_path {
    use super::*;
    use jwt_guard::extractor::HeaderList;
    use jwt_guard::request::{prepare, Step};

    /// Every kind of rule, in order, and a public default.
    fn cfg(default: Value, provider: Value) -> Config {
        let mut p = json!({
            "issuer": ISS, "audiences": ["api"], "local_jwks": {"inline": jwks()},
            "from_params": ["access_token"],
            "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        });
        for (k, v) in provider.as_object().expect("object") {
            p[k] = v.clone();
        }
        let mut doc = json!({
            "providers": {"idp": p},
            "rules": [
                {"name": "public", "match": {"prefix": "/public"}},
                {"name": "off", "match": {"prefix": "/off"}, "mode": "off", "requires": {"provider_name": "idp"}},
                {"name": "admin", "match": {"hosts": ["admin.example.test"]}, "requires": {"provider_name": "idp"}},
                {"name": "corp", "match": {"hosts": ["*.corp.example.test"]}, "requires": {"provider_name": "idp"}},
                {"name": "optional", "match": {"prefix": "/optional"}, "requires": {"provider_name": "idp", "allow_missing": true}},
                {"name": "shadow", "match": {"prefix": "/shadow"}, "mode": "shadow", "requires": {"provider_name": "idp"}},
                {"name": "enforce", "match": {"prefix": "/enforce"}, "requires": {"provider_name": "idp"}}
            ],
        });
        if !default.is_null() {
            doc["default"] = default;
        }
        Config::parse(doc.to_string().as_bytes()).unwrap_or_else(|e| panic!("config: {e}"))
    }

    fn request(method: &str, path: &str, host: &str, extra: &[(&str, &str)]) -> HeaderList {
        let mut h = vec![
            (":method".to_owned(), method.as_bytes().to_vec()),
            (":path".to_owned(), path.as_bytes().to_vec()),
            (":authority".to_owned(), host.as_bytes().to_vec()),
        ];
        h.extend(
            extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())),
        );
        HeaderList(h)
    }

    /// "preflight", "refuse:<code>", "<rule>:decided:<code>" or "<rule>:authenticate:<n tokens>".
    fn step(config: &Config, req: &HeaderList, now: Option<u64>) -> String {
        match prepare(config, req, &req.names(), now, None).step {
            Step::Preflight => "preflight".to_owned(),
            Step::Refuse(d) => format!("refuse:{}", d.code()),
            Step::Decided(rule, o) => format!("{}:decided:{}", rule.name, code(&o)),
            Step::Authenticate { rule, tokens, .. } => {
                format!("{}:authenticate:{}", rule.name, tokens.len())
            }
        }
    }

    const PREFLIGHT: [(&str, &str); 2] = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "GET"),
    ];

    /// (kind, method, path, extra headers): one of every path kind.
    type Kind = (
        &'static str,
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
    );

    fn kinds() -> Vec<Kind> {
        vec![
            ("public", "GET", "/public/x", vec![]),
            ("off", "GET", "/off/x", vec![]),
            ("optional", "GET", "/optional/x", vec![]),
            ("shadow", "GET", "/shadow/x", vec![]),
            ("enforce", "GET", "/enforce/x", vec![]),
            ("preflight", "OPTIONS", "/enforce/x", PREFLIGHT.to_vec()),
            ("no rule", "GET", "/elsewhere", vec![]),
        ]
    }

    #[test]
    fn identity_headers_go_in_every_spelling_on_every_path() {
        for config in [
            cfg(Value::Null, json!({})),
            cfg(json!({"mode": "off"}), json!({})),
        ] {
            for (kind, method, path, mut extra) in kinds() {
                let spoofed = [
                    "x-user-sub",
                    "X-User-Sub",
                    "x_user_sub",
                    "X_USER_SUB",
                    "x-user_sub",
                    "x_tenant_id",
                    "X_Auth_Shadow",
                    "x-auth_degraded",
                    "x_user_anything",
                ];
                extra.extend(spoofed.iter().map(|n| (*n, "forged")));
                extra.push(("x-request-id", "r1"));
                let req = request(method, path, "h.example", &extra);
                let prepared = prepare(&config, &req, &req.names(), Some(NOW * 1000), None);
                let want: Vec<String> = spoofed.iter().map(|n| n.to_ascii_lowercase()).collect();
                assert_eq!(prepared.strip, want, "{kind}");
            }
        }
    }

    #[test]
    fn query_tokens_and_unforwarded_header_tokens_are_cut_on_every_path() {
        let config = cfg(json!({"mode": "off"}), json!({"forward_token": false}));
        for (kind, method, path, mut extra) in kinds() {
            extra.push(("authorization", "Bearer t"));
            extra.push(("Authorization_", "x"));
            let target = format!("{path}?a=1&access%5Ftoken=t&b=2");
            let req = request(method, &target, "h.example", &extra);
            let p = prepare(&config, &req, &req.names(), Some(NOW * 1000), None);
            assert_eq!(
                p.scrub.path,
                Some(format!("{path}?a=1&b=2").into_bytes()),
                "{kind}"
            );
            assert_eq!(
                p.scrub.remove_headers,
                vec!["authorization".to_owned()],
                "{kind}"
            );
        }
        // Forwarding providers keep their header token; the query token is cut all the same.
        let config = cfg(Value::Null, json!({}));
        let req = request(
            "GET",
            "/public?access_token=t",
            "h",
            &[("authorization", "Bearer t")],
        );
        let p = prepare(&config, &req, &req.names(), Some(NOW * 1000), None);
        assert!(p.scrub.remove_headers.is_empty());
        assert_eq!(p.scrub.path, Some(b"/public".to_vec()));
    }

    #[test]
    fn every_path_kind_takes_its_step() {
        let config = cfg(Value::Null, json!({}));
        let now = Some(NOW * 1000);
        let want = [
            "public:decided:allow",
            "off:decided:allow",
            "optional:authenticate:0",
            "shadow:authenticate:0",
            "enforce:authenticate:0",
            "preflight",
            "refuse:no_rule",
        ];
        for ((kind, method, path, extra), want) in kinds().into_iter().zip(want) {
            assert_eq!(
                step(&config, &request(method, path, "h", &extra), now),
                want,
                "{kind}"
            );
        }
        // One token per request, under the rule's mode.
        let two = [("authorization", "Bearer a")];
        let req = request("GET", "/shadow/x?access_token=b", "h", &two);
        assert_eq!(step(&config, &req, now), "shadow:decided:invalid_request");
        let req = request("GET", "/enforce/x?access_token=a", "h", &two);
        assert_eq!(step(&config, &req, now), "enforce:decided:invalid_request");
        let req = request("GET", "/enforce/x", "h", &two);
        assert_eq!(step(&config, &req, now), "enforce:authenticate:1");
    }

    #[test]
    fn without_a_clock_nothing_that_needs_a_token_passes() {
        let config = cfg(Value::Null, json!({}));
        let good = [("authorization", "Bearer t")];
        for path in ["/enforce/x", "/shadow/x", "/optional/x"] {
            assert_eq!(
                step(&config, &request("GET", path, "h", &good), None),
                "refuse:internal_error",
                "{path}"
            );
        }
        let r = deny_response(&Denial::Internal, "t");
        assert_eq!(r.status, 500);
        // Public routes do not depend on time.
        assert_eq!(
            step(&config, &request("GET", "/public", "h", &[]), None),
            "public:decided:allow"
        );
    }

    #[test]
    fn host_rules_see_one_normal_form_and_refuse_what_has_none() {
        let config = cfg(json!({"mode": "off"}), json!({}));
        let now = Some(NOW * 1000);
        for host in [
            "admin.example.test",
            "ADMIN.example.test",
            "admin.example.test.",
            "admin.example.test.:443",
            "Admin.Example.Test:8443",
        ] {
            assert_eq!(
                step(&config, &request("GET", "/x", host, &[]), now),
                "admin:authenticate:0",
                "{host}"
            );
        }
        for host in ["a.corp.example.test.", "A.B.CORP.example.test.:1"] {
            assert_eq!(
                step(&config, &request("GET", "/x", host, &[]), now),
                "corp:authenticate:0",
                "{host}"
            );
        }
        for host in [
            "admin.example.test..",
            ".admin.example.test",
            "admin..example.test",
            "admin.example.test:x",
            "",
        ] {
            assert_eq!(
                step(&config, &request("GET", "/x", host, &[]), now),
                "refuse:invalid_request",
                "{host:?}"
            );
        }
        // Rules before any host rule still decide for such a host: they do not look at it.
        assert_eq!(
            step(&config, &request("GET", "/public", "a..b", &[]), now),
            "public:decided:allow"
        );
        assert_eq!(
            step(
                &config,
                &request("GET", "/x", "other.example.test.", &[]),
                now
            ),
            "default:decided:allow"
        );
    }
}

// ---------- the verified-token cache ----------

mod cache {
    use super::*;
    use jwt_guard::tokencache::{CachedToken, ForgedCache, TokenCache};
    use std::cell::{Cell, RefCell};

    /// What the key cache says besides "ready": the set went past max_stale with refreshes failing
    /// (`Unavailable`) or with one under way (`Pending`).
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Outage {
        Unavailable,
        Pending,
    }

    /// Local keys plus a real cache; counts key-set reads, can swap in another key set (with or
    /// without a new generation) and can report the set unusable.
    struct CachingKeys<'a> {
        config: &'a Config,
        replacement: Option<jwt_guard::jwks::KeySet>,
        gen: Cell<u64>,
        key_reads: Cell<usize>,
        outage: Cell<Option<Outage>>,
        cache: RefCell<TokenCache>,
        forged: RefCell<ForgedCache>,
        /// Forged-memory answers, and failed signature checks remembered (one per verification that
        /// failed: every other failure path is cheaper and not remembered).
        forged_hits: Cell<usize>,
        forged_puts: Cell<usize>,
    }

    impl Keys for CachingKeys<'_> {
        fn keys(&self, provider: usize) -> KeyState<'_> {
            self.key_reads.set(self.key_reads.get() + 1);
            match self.outage.get() {
                Some(Outage::Unavailable) => return KeyState::Unavailable,
                Some(Outage::Pending) => return KeyState::Pending,
                None => {}
            }
            if let Some(set) = &self.replacement {
                return KeyState::Ready(set);
            }
            match &self.config.providers[provider].jwks {
                JwksSource::Local(set) => KeyState::Ready(set),
                JwksSource::Remote(_) => KeyState::Unavailable,
            }
        }
        fn generation(&self, _: usize) -> u64 {
            self.gen.get()
        }
        fn cache_get(&self, h: &[u8], now: u64) -> Option<CachedToken> {
            self.cache.borrow_mut().get(h, now)
        }
        fn cache_put(&self, h: &[u8], e: CachedToken) {
            self.cache.borrow_mut().insert(h, e)
        }
        fn cache_drop(&self, h: &[u8]) {
            self.cache.borrow_mut().remove(h)
        }
        fn cache_key_seen(&self, h: &[u8], gen: u64, until: Option<u64>) {
            self.cache.borrow_mut().refresh_gen(h, gen, until)
        }
        fn forged_seen(&self, provider: usize, gen: u64, token: &[u8]) -> bool {
            let hit = self.forged.borrow_mut().contains(provider, gen, token);
            self.forged_hits
                .set(self.forged_hits.get() + usize::from(hit));
            hit
        }
        fn forged_put(&self, provider: usize, gen: u64, token: &[u8]) {
            self.forged_puts.set(self.forged_puts.get() + 1);
            self.forged.borrow_mut().insert(provider, gen, token)
        }
    }

    fn keys(config: &Config) -> CachingKeys<'_> {
        CachingKeys {
            config,
            replacement: None,
            gen: Cell::new(1),
            key_reads: Cell::new(0),
            outage: Cell::new(None),
            cache: RefCell::new(TokenCache::new(16)),
            forged: RefCell::new(ForgedCache::default()),
            forged_hits: Cell::new(0),
            forged_puts: Cell::new(0),
        }
    }

    fn run(cfg: &Config, k: &CachingKeys<'_>, token: &[u8], now: u64) -> String {
        let outcome = authenticate(cfg, requirement(cfg), &[token.to_vec()], k, now);
        code(&outcome).to_owned()
    }

    #[test]
    fn a_forged_token_sent_again_is_denied_without_a_signature_check() {
        let f = fixtures();
        let cfg = config();
        let k = keys(&cfg);
        let forged = jws(
            &f.rogue,
            json!({"alg": "RS256", "kid": "rsa-1"}),
            with(claims(), json!({"exp": NOW + 100})),
        );
        assert_eq!(run(&cfg, &k, &forged, NOW), "bad_signature");
        assert_eq!((k.forged_hits.get(), k.forged_puts.get()), (0, 1));
        for i in 1..=3 {
            assert_eq!(run(&cfg, &k, &forged, NOW + 1), "bad_signature");
            assert_eq!((k.forged_hits.get(), k.forged_puts.get()), (i, 1));
        }
        assert!(
            k.cache.borrow().is_empty(),
            "nothing forged in the verified-token cache"
        );
        // Every cheaper check still runs first: past exp + skew it is expired, like any token.
        assert_eq!(run(&cfg, &k, &forged, NOW + 161), "expired");
        assert_eq!(k.forged_hits.get(), 3);
    }

    #[test]
    fn a_new_key_set_generation_verifies_a_remembered_token_again() {
        let f = fixtures();
        let cfg = config();
        let k = keys(&cfg);
        let forged = jws(&f.rogue, json!({"alg": "RS256", "kid": "rsa-1"}), claims());
        assert_eq!(run(&cfg, &k, &forged, NOW), "bad_signature");
        assert_eq!(run(&cfg, &k, &forged, NOW), "bad_signature");
        assert_eq!((k.forged_hits.get(), k.forged_puts.get()), (1, 1));
        k.gen.set(2);
        assert_eq!(run(&cfg, &k, &forged, NOW), "bad_signature");
        assert_eq!(
            (k.forged_hits.get(), k.forged_puts.get()),
            (1, 2),
            "verified again against generation 2"
        );
        assert_eq!(run(&cfg, &k, &forged, NOW), "bad_signature");
        assert_eq!(k.forged_hits.get(), 2);
    }

    #[test]
    fn one_changed_character_is_verified_again() {
        let f = fixtures();
        let cfg = config();
        let k = keys(&cfg);
        let forged = jws(&f.rogue, json!({"alg": "RS256", "kid": "rsa-1"}), claims());
        assert_eq!(run(&cfg, &k, &forged, NOW), "bad_signature");
        // Change one character of the signature (another valid base64url character).
        let mut other = forged.clone();
        let i = other.len() - 5;
        other[i] = if other[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(run(&cfg, &k, &other, NOW), "bad_signature");
        assert_eq!((k.forged_hits.get(), k.forged_puts.get()), (0, 2));
        assert_eq!(run(&cfg, &k, &other, NOW), "bad_signature");
        assert_eq!((k.forged_hits.get(), k.forged_puts.get()), (1, 2));
        // A valid token with one character of its signature changed fails and is remembered; the
        // valid token itself is still verified and allowed.
        let valid = rs256(&f, claims());
        let mut broken = valid.clone();
        let i = broken.len() - 5;
        broken[i] = if broken[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(run(&cfg, &k, &broken, NOW), "bad_signature");
        assert_eq!(run(&cfg, &k, &valid, NOW), "allow");
        assert_eq!((k.forged_hits.get(), k.forged_puts.get()), (1, 3));
    }

    #[test]
    fn a_valid_token_is_never_answered_from_the_forged_memory() {
        let f = fixtures();
        let cfg = config();
        let mut k = keys(&cfg);
        // No verified-token cache: every request verifies its signature.
        k.cache = RefCell::new(TokenCache::new(0));
        let valid = rs256(&f, claims());
        for _ in 0..3 {
            assert_eq!(run(&cfg, &k, &valid, NOW), "allow");
        }
        assert_eq!((k.forged_hits.get(), k.forged_puts.get()), (0, 0));
        assert!(k.forged.borrow().is_empty());
        // Other failures are not remembered either: unknown kid, key mismatch, expired.
        let unknown = jws(&f.rsa1, json!({"alg": "RS256", "kid": "nope"}), claims());
        assert_eq!(run(&cfg, &k, &unknown, NOW), "unknown_kid");
        let expired = rs256(&f, with(claims(), json!({"exp": NOW - 61})));
        assert_eq!(run(&cfg, &k, &expired, NOW), "expired");
        assert!(k.forged.borrow().is_empty());
    }

    #[test]
    fn a_repeated_token_skips_parse_and_signature_but_not_the_checks() {
        let f = fixtures();
        let cfg = config();
        let k = keys(&cfg);
        let token = rs256(&f, with(claims(), json!({"exp": NOW + 100})));
        let run_at = |now: u64| {
            authenticate(
                &cfg,
                requirement(&cfg),
                std::slice::from_ref(&token),
                &k,
                now,
            )
        };
        assert_eq!(code(&run_at(NOW)), "allow");
        assert_eq!(k.key_reads.get(), 1);
        assert_eq!(k.cache.borrow().len(), 1);
        // A hit: allowed again without a signature check; the key set is read only to see that the
        // verifying key is still usable.
        assert_eq!(code(&run_at(NOW + 1)), "allow");
        assert_eq!(k.key_reads.get(), 2);
        assert_eq!(k.cache.borrow().hits, 1);
        // Time still counts: past exp + skew the hit is denied (and the entry dropped at exp).
        assert_eq!(code(&run_at(NOW + 161)), "expired");
        // The route still counts: another audience on this rule denies a cached token.
        let strict = rule_config(json!({"audiences": ["other"]}), "enforce", json!({}));
        let t2 = rs256(&f, claims());
        let k2 = keys(&strict);
        assert_eq!(
            code(&authenticate(
                &cfg,
                requirement(&cfg),
                std::slice::from_ref(&t2),
                &k2,
                NOW
            )),
            "allow"
        );
        let outcome = authenticate(
            &strict,
            requirement(&strict),
            std::slice::from_ref(&t2),
            &k2,
            NOW,
        );
        assert_eq!(code(&outcome), "wrong_audience");
    }

    #[test]
    fn an_entry_is_dropped_when_its_key_leaves_the_key_set() {
        let f = fixtures();
        let cfg = config();
        let mut k = keys(&cfg);
        let token = rs256(&f, claims());
        assert_eq!(
            code(&authenticate(
                &cfg,
                requirement(&cfg),
                std::slice::from_ref(&token),
                &k,
                NOW
            )),
            "allow"
        );
        // New generation, still holding rsa-1: the hit re-checks presence once and stays.
        k.gen.set(2);
        assert_eq!(
            code(&authenticate(
                &cfg,
                requirement(&cfg),
                std::slice::from_ref(&token),
                &k,
                NOW
            )),
            "allow"
        );
        assert_eq!(k.cache.borrow().hits, 1);
        // Generation 3 without rsa-1: the entry goes, and the full path denies the token.
        k.replacement = Some(ec_only_set());
        k.gen.set(3);
        let outcome = authenticate(
            &cfg,
            requirement(&cfg),
            std::slice::from_ref(&token),
            &k,
            NOW,
        );
        assert_eq!(code(&outcome), "unknown_kid");
        assert!(k.cache.borrow().is_empty());
    }

    #[test]
    fn invalid_tokens_are_never_cached() {
        let f = fixtures();
        let cfg = config();
        let k = keys(&cfg);
        let forged = jws(&f.rogue, json!({"alg": "RS256", "kid": "rsa-1"}), claims());
        for _ in 0..3 {
            let outcome = authenticate(
                &cfg,
                requirement(&cfg),
                std::slice::from_ref(&forged),
                &k,
                NOW,
            );
            assert_eq!(code(&outcome), "bad_signature");
        }
        assert!(k.cache.borrow().is_empty());
        assert_eq!(k.key_reads.get(), 3, "every attempt is verified");
    }

    // ---------- a cached token is only as good as its key ----------

    /// A key set holding only ec-1: the RSA key the tests' tokens are signed with has left it.
    fn ec_only_set() -> KeySet {
        KeySet::parse(
            json!({"keys": [ec_jwk("ec-1", "P-256", 32)]})
                .to_string()
                .as_bytes(),
        )
        .expect("set")
    }

    fn run_cached(cfg: &Config, k: &CachingKeys<'_>, token: &[u8]) -> Outcome {
        authenticate(cfg, requirement(cfg), &[token.to_vec()], k, NOW + 1)
    }

    #[test]
    fn a_cached_token_is_not_allowed_once_its_key_set_is_unusable() {
        let f = fixtures();
        let cfg = config();
        let k = keys(&cfg);
        let token = rs256(&f, claims());
        assert_eq!(code(&run_cached(&cfg, &k, &token)), "allow");
        assert_eq!(code(&run_cached(&cfg, &k, &token)), "allow");
        assert_eq!(k.cache.borrow().hits, 1, "cached");
        // The key set went past max_stale: the hit fails closed like an uncached token.
        k.outage.set(Some(Outage::Unavailable));
        for _ in 0..3 {
            assert_eq!(code(&run_cached(&cfg, &k, &token)), "keys_unavailable");
        }
        // A refresh under way: the request waits for it instead of being allowed.
        k.outage.set(Some(Outage::Pending));
        assert!(matches!(run_cached(&cfg, &k, &token), Outcome::Wait(0)));
        // Keys back: the entry was kept (the key never left), so this is a hit again.
        k.outage.set(None);
        let hits = k.cache.borrow().hits;
        assert_eq!(code(&run_cached(&cfg, &k, &token)), "allow");
        assert_eq!(k.cache.borrow().hits, hits + 1);
    }

    #[test]
    fn a_cached_token_is_dropped_when_its_key_is_gone_in_the_same_generation() {
        let f = fixtures();
        let cfg = config();
        let mut k = keys(&cfg);
        let token = rs256(&f, claims());
        assert_eq!(code(&run_cached(&cfg, &k, &token)), "allow");
        // A set without the verifying key, generation unchanged: only the lookup can tell.
        k.replacement = Some(ec_only_set());
        assert_eq!(code(&run_cached(&cfg, &k, &token)), "unknown_kid");
        assert!(k.cache.borrow().is_empty());
    }

    #[test]
    fn a_retired_key_stops_at_its_grace_deadline_to_the_millisecond_cached_or_not() {
        let f = fixtures();
        let cfg = config();
        let mut k = keys(&cfg);
        let cached = rs256(&f, claims());
        let fresh = rs256(&f, with(claims(), json!({"jti": "another token"})));
        let at = |k: &CachingKeys<'_>, token: &[u8], ms: u64| {
            code(&jwt_guard::authenticator::authenticate_at_ms(
                &cfg,
                requirement(&cfg),
                &[token.to_vec()],
                k,
                ms,
            ))
            .to_owned()
        };
        assert_eq!(at(&k, &cached, NOW * 1000), "allow");
        // rsa-1 leaves the JWKS; it is retired with a deadline half-way through a second.
        let JwksSource::Local(previous) = &cfg.providers[0].jwks else {
            panic!("local keys")
        };
        let mut next = ec_only_set();
        let deadline = NOW * 1000 + 1500;
        next.retire_from(previous, NOW * 1000 + 1000, 500);
        k.replacement = Some(next);
        k.gen.set(2);
        assert_eq!(at(&k, &cached, deadline - 1), "allow", "cached, in grace");
        assert_eq!(at(&k, &fresh, deadline - 1), "allow", "uncached, in grace");
        // In the same second, at the deadline: neither the cached entry nor a full check uses it
        // (with whole seconds, every worker would keep the key up to a second longer, each its own).
        assert_eq!(at(&k, &cached, deadline), "unknown_kid");
        assert_eq!(at(&k, &fresh, deadline), "unknown_kid");
    }
}

/// Telemetry through the fake host: the decision counter, the latency histogram and the audit
/// record (in filter state and the log) of one decision; allows sampled out; host refusals.
#[test]
fn telemetry_counts_times_and_audits_each_decision() {
    use jwt_guard::config::{Mode, AUDIT_FILTER_STATE};
    use jwt_guard::engine::telemetry::{ReqCtx, Telemetry};
    use jwt_guard::host::{FakeHost, Level};
    use jwt_guard::metrics::Registry;
    use jwt_guard::policy::plan;
    let f = fixtures();
    let good = rs256(&f, with(claims(), json!({"tenant": "acme"})));
    let mut cfg = rule_config(json!({"scopes": ["reports:read"]}), "shadow", json!({}));
    cfg.audit.filter_state = true;
    cfg.audit.log = true;
    cfg.audit.allow_sample_rate = 0.0;
    let now: u128 = 1_800_000_000_000_000_000;
    let host = FakeHost::at(now);
    host.refuse_metrics
        .borrow_mut()
        .push("jwt_guard.cors_preflights".to_owned());
    let t = Telemetry::define(host.clone(), Registry::build(&cfg));
    let warned: Vec<String> = host
        .logs
        .borrow()
        .iter()
        .filter(|(l, _)| *l == Level::Warn)
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(
        warned,
        ["1 metrics could not be defined; they will not be reported"]
    );
    let rule = &cfg.rules[0];
    let ctx = |token: &[u8]| ReqCtx {
        start_ns: now - 5_000_000,
        request_id: Some(b"req-1".to_vec()),
        method: b"GET".to_vec(),
        path: b"/reports/q3?access_token=secret".to_vec(),
        token_hash: Some(std::rc::Rc::from(jwt_guard::audit::token_hash(token))),
    };
    let p = plan(&cfg, rule, run(&cfg, std::slice::from_ref(&good)));
    t.decision(&cfg, "r", Mode::Shadow, &p, &ctx(&good));
    assert_eq!(
        host.value(
            "jwt_guard.decisions.route.r.mode.shadow.outcome.would_deny.reason.insufficient_scope"
        ),
        1
    );
    assert_eq!(
        host.value("jwt_guard.decision_latency_us.mode.shadow"),
        5_000
    );
    let record: Value = serde_json::from_slice(
        host.properties
            .borrow()
            .get(AUDIT_FILTER_STATE)
            .expect("audit record in filter state"),
    )
    .expect("json");
    assert_eq!(record["decision"], "would_deny");
    assert_eq!(record["reason"], "insufficient_scope");
    assert_eq!(record["subject"], "alice");
    assert_eq!(record["tenant"], "acme");
    assert_eq!(record["path"], "/reports/q3", "no query string");
    assert_eq!(record["latency_us"], 5_000);
    let logged = host.logs.borrow().iter().any(|(l, m)| {
        *l == Level::Info && m.starts_with("audit {") && m.contains("\"subject\":\"alice\"")
    });
    assert!(logged, "{:?}", host.logs.borrow());
    assert!(!format!("{:?}", host.logs.borrow()).contains("secret"));

    // An allow at sample rate 0: counted, not audited.
    host.properties.borrow_mut().clear();
    let scoped = rs256(
        &f,
        with(claims(), json!({"tenant": "acme", "scope": "reports:read"})),
    );
    let p = plan(&cfg, rule, run(&cfg, std::slice::from_ref(&scoped)));
    t.decision(&cfg, "r", Mode::Shadow, &p, &ctx(&scoped));
    assert_eq!(
        host.value("jwt_guard.decisions.route.r.mode.shadow.outcome.would_allow.reason.ok"),
        1
    );
    assert!(host.properties.borrow().is_empty());

    // A host that refuses the filter-state write: the decision still counts, the failure is a
    // debug line.
    *host.refuse_properties.borrow_mut() = true;
    let p = plan(&cfg, rule, run(&cfg, std::slice::from_ref(&good)));
    t.decision(&cfg, "r", Mode::Shadow, &p, &ctx(&good));
    assert_eq!(
        host.value(
            "jwt_guard.decisions.route.r.mode.shadow.outcome.would_deny.reason.insufficient_scope"
        ),
        2
    );
    assert!(host
        .logs
        .borrow()
        .iter()
        .any(|(l, m)| *l == Level::Debug && m.contains("could not store the audit record")));
}

#[test]
fn jwt_authn_provider_options_subjects_lifetime_types_payload() {
    use jwt_guard::config::Mode;
    let f = fixtures();
    let with_header = |header: Value, claims: Value| jws(&f.rsa1, header, claims);
    let rs = json!({"alg": "RS256", "kid": "rsa-1"});

    // subjects: exact, prefix, suffix.
    let cfg = config_with(json!({"subjects": [
        {"exact": "alice"}, {"prefix": "spiffe://corp.example/"}, {"suffix": "@svc.example"}]}));
    for (sub, want) in [
        (json!("alice"), "allow"),
        (json!("spiffe://corp.example/ns/a/sa/b"), "allow"),
        (json!("batch@svc.example"), "allow"),
        (json!("alice2"), "wrong_subject"),
        (json!("spiffe://evil.example/x"), "wrong_subject"),
        (json!(42), "wrong_subject"),
        (Value::Null, "wrong_subject"),
    ] {
        let t = rs256(&f, with(claims(), json!({"sub": sub})));
        assert_eq!(code(&run(&cfg, &[t])), want, "sub {sub}");
    }

    // max_lifetime: exp - iat at most 1 h, iat required.
    let cfg = config_with(json!({"max_lifetime": "3600s"}));
    for (changes, want) in [
        (json!({"iat": NOW, "exp": NOW + 3600}), "allow"),
        (
            json!({"iat": NOW - 1, "exp": NOW + 3600}),
            "lifetime_too_long",
        ),
        (json!({"iat": null}), "missing_iat"),
    ] {
        let t = rs256(&f, with(claims(), changes.clone()));
        assert_eq!(code(&run(&cfg, &[t])), want, "{changes}");
    }
    let no_exp = config_with(json!({"max_lifetime": "3600s", "require_expiration": false}));
    let t = rs256(&f, with(claims(), json!({"exp": null})));
    assert_eq!(
        code(&run(&no_exp, &[t])),
        "lifetime_too_long",
        "no exp: unbounded"
    );

    // allowed_types: at+jwt only (compared without case and without application/).
    let cfg = config_with(json!({"allowed_types": ["at+jwt"]}));
    for (typ, want) in [
        (json!("at+jwt"), "allow"),
        (json!("application/AT+JWT"), "allow"),
        (json!("JWT"), "wrong_type"),
        (Value::Null, "wrong_type"),
    ] {
        let mut h = rs.clone();
        if !typ.is_null() {
            h["typ"] = typ.clone();
        }
        assert_eq!(
            code(&run(&cfg, &[with_header(h, claims())])),
            want,
            "typ {typ}"
        );
    }

    // forward_payload_header: the payload segment as presented, stripped like identity headers.
    let cfg = config_with(json!({"forward_payload_header": "x-jwt-payload"}));
    assert!(cfg.managed_headers.contains(&"x-jwt-payload".to_owned()));
    let t = rs256(&f, claims());
    let segment = std::str::from_utf8(t.split(|b| *b == b'.').nth(1).unwrap())
        .unwrap()
        .to_owned();
    let rule = &cfg.rules[0];
    assert_eq!(rule.mode, Mode::Enforce);
    let plan = jwt_guard::policy::plan(&cfg, rule, run(&cfg, std::slice::from_ref(&t)));
    assert!(
        plan.set_headers
            .contains(&("x-jwt-payload".to_owned(), segment)),
        "{:?}",
        plan.set_headers
    );
    let plain = jwt_guard::policy::plan(&config(), &config().rules[0], run(&config(), &[t]));
    assert!(plain.set_headers.iter().all(|(h, _)| h != "x-jwt-payload"));
}

#[test]
fn claims_with_dots_in_their_names_and_explicit_segments() {
    let f = fixtures();
    let t = rs256(
        &f,
        with(
            claims(),
            json!({
                "https://example.com/roles": ["reader", "writer"],
                "https://example.com/org": {"id": "acme"},
                "a.b": "flat",
                "a": {"b": "nested"},
                "groups": [{"id": 1}, {"id": 2}],
            }),
        ),
    );
    let cfg = config_with(json!({"claim_to_headers": [
        {"claim": "https://example.com/roles", "header": "x-roles"},
        {"claim": ["https://example.com/org", "id"], "header": "x-org"},
        {"claim": "a.b", "header": "x-name"},
        {"claim": ["a", "b"], "header": "x-path"},
        {"claim": "groups", "header": "x-groups"},
    ]}));
    let plan = jwt_guard::policy::plan(&cfg, &cfg.rules[0], run(&cfg, std::slice::from_ref(&t)));
    let header = |h: &str| {
        plan.set_headers
            .iter()
            .find(|(n, _)| n == h)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        header("x-roles"),
        Some("reader,writer"),
        "a URL-named claim, not split at its dots"
    );
    assert_eq!(header("x-org"), Some("acme"), "explicit segments");
    assert_eq!(
        header("x-name"),
        Some("flat"),
        "a name is the top-level claim of that name first"
    );
    assert_eq!(
        header("x-path"),
        Some("nested"),
        "segments are never the flat name"
    );
    assert_eq!(
        header("x-groups"),
        None,
        "an array of objects is not forwarded"
    );
    assert!(
        plan.dropped.iter().any(|d| d.header == "x-groups"),
        "{:?}",
        plan.dropped
    );

    // The same paths in a rule's claim requirements.
    let rule = |name: Value, value: &str| {
        let doc = json!({
            "providers": {"idp": {"issuer": ISS, "audiences": ["api"], "local_jwks": {"inline": jwks()}}},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp",
                "claims": [{"name": name, "values": [value]}]}}],
        });
        Config::parse(doc.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        code(&run(
            &rule(json!(["https://example.com/org", "id"]), "acme"),
            std::slice::from_ref(&t)
        )),
        "allow"
    );
    assert_eq!(
        code(&run(
            &rule(json!("https://example.com/roles"), "writer"),
            std::slice::from_ref(&t)
        )),
        "allow"
    );
    assert_eq!(
        code(&run(
            &rule(json!(["a", "b"]), "flat"),
            std::slice::from_ref(&t)
        )),
        "claim_mismatch"
    );
    // Empty segments are a config error naming the field.
    let bad = json!({
        "providers": {"idp": {"issuer": ISS, "local_jwks": {"inline": jwks()},
            "claim_to_headers": [{"claim": ["org", ""], "header": "x-org"}]}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}],
    });
    let e = Config::parse(bad.to_string().as_bytes())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("providers.idp.claim_to_headers[0].claim"), "{e}");
}

#[test]
fn multi_tenant_issuer_templates() {
    let f = fixtures();
    let template = "https://login.example.com/{tenant}/v2.0";
    let tenant_config = |tenants: Value| {
        config_with(
            json!({"issuer": template, "tenants": tenants, "tenant_header": "x-issuer-tenant"}),
        )
    };
    let token = |iss: &str| rs256(&f, with(claims(), json!({"iss": iss})));
    let listed = tenant_config(json!(["acme", "globex"]));
    for (iss, want) in [
        ("https://login.example.com/acme/v2.0", "allow"),
        ("https://login.example.com/globex/v2.0", "allow"),
        ("https://login.example.com/initech/v2.0", "wrong_issuer"),
        ("https://login.example.com//v2.0", "wrong_issuer"),
        ("https://login.example.com/acme/x/v2.0", "wrong_issuer"),
        ("https://login.example.com/{tenant}/v2.0", "wrong_issuer"),
        ("https://evil.example.com/acme/v2.0", "wrong_issuer"),
    ] {
        assert_eq!(code(&run(&listed, &[token(iss)])), want, "{iss}");
    }
    let any = tenant_config(json!("any"));
    assert_eq!(
        code(&run(
            &any,
            &[token("https://login.example.com/initech/v2.0")]
        )),
        "allow"
    );
    assert_eq!(
        code(&run(&any, &[token("https://login.example.com/a%2Fb/v2.0")])),
        "wrong_issuer"
    );
    // The tenant goes to the upstream in its header and to the audit record.
    let t = token("https://login.example.com/acme/v2.0");
    let plan = jwt_guard::policy::plan(
        &listed,
        &listed.rules[0],
        run(&listed, std::slice::from_ref(&t)),
    );
    assert!(
        plan.set_headers
            .contains(&("x-issuer-tenant".to_owned(), "acme".to_owned())),
        "{:?}",
        plan.set_headers
    );
    assert_eq!(plan.tenant.as_deref(), Some("acme"));
    assert!(
        listed
            .managed_headers
            .contains(&"x-issuer-tenant".to_owned()),
        "stripped from clients"
    );
    // A discovery document of a multi-tenant IdP names the template with its own placeholder.
    let p = &listed.providers[0];
    assert!(p.discovery_issuer_fits("https://login.example.com/{tenantid}/v2.0"));
    assert!(p.discovery_issuer_fits("https://login.example.com/acme/v2.0"));
    assert!(!p.discovery_issuer_fits("https://login.example.com/{a/b}/v2.0"));
    assert!(!p.discovery_issuer_fits("https://other.example.com/{tenantid}/v2.0"));
    // Config errors name the field.
    for (extra, field) in [
        (json!({"issuer": template}), "providers.idp.tenants"),
        (json!({"tenants": ["acme"]}), "providers.idp.tenants"),
        (
            json!({"issuer": template, "tenants": "all"}),
            "providers.idp.tenants",
        ),
        (
            json!({"issuer": template, "tenants": []}),
            "providers.idp.tenants",
        ),
        (
            json!({"issuer": template, "tenants": ["a/b"]}),
            "providers.idp.tenants[0]",
        ),
        (
            json!({"issuer": "https://x/{tenant}/{tenant}", "tenants": "any"}),
            "providers.idp.issuer",
        ),
        (
            json!({"tenant_header": "x-t"}),
            "providers.idp.tenant_header",
        ),
        (
            json!({"issuer": template, "tenants": "any", "tenant_header": "x-tenant-id"}),
            "providers.idp.tenant_header",
        ),
    ] {
        let mut provider =
            json!({"issuer": ISS, "audiences": ["api"], "local_jwks": {"inline": jwks()}});
        for (k, v) in extra.as_object().unwrap() {
            provider[k] = v.clone();
        }
        let doc = json!({"providers": {"idp": provider}, "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}]});
        let e = Config::parse(doc.to_string().as_bytes())
            .err()
            .unwrap_or_else(|| panic!("{extra} accepted"))
            .to_string();
        assert!(e.contains(&format!("{field}:")), "{extra}: {e}");
    }
}
