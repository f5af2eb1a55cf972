//! Sender-constrained tokens through the engine on `FakeHost`: DPoP (RFC 9449) proofs made here
//! with the fixture keys (ES256, RS256, EdDSA), every way a proof or a binding can be wrong, replay
//! across two VMs of one Envoy (shared data), the token cache never skipping a proof, mTLS-bound
//! tokens against the connection's certificate digest, and shadow mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{ec_jwk, ec_private, ed_jwk, ed_private, rs256_token, rsa_jwk, rsa_private};
use jwt_compact::alg::{Ed25519, Es256, Rsa};
use jwt_compact::{Algorithm, AlgorithmSignature};
use jwt_guard::binding::thumbprint;
use jwt_guard::engine::{Engine, Flow};
use jwt_guard::host::{FakeHost, FakeResponse, Level};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const NOW_S: u64 = 1_800_000_000;
const ISS: &str = "https://idp.test";
const HTU: &str = "https://api.test/orders";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A proof key: how it signs, and its public JWK.
enum ProofKey {
    Ec,
    Rsa,
    Ed,
}

impl ProofKey {
    fn alg(&self) -> &'static str {
        match self {
            ProofKey::Ec => "ES256",
            ProofKey::Rsa => "RS256",
            ProofKey::Ed => "EdDSA",
        }
    }

    fn jwk(&self) -> Value {
        let mut k = match self {
            ProofKey::Ec => ec_jwk("ec-1", "P-256", 32),
            ProofKey::Rsa => rsa_jwk("rsa-2"),
            ProofKey::Ed => ed_jwk("ed-1"),
        };
        let o = k.as_object_mut().unwrap();
        o.remove("kid");
        o.remove("use");
        k
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            ProofKey::Ec => Es256.sign(&ec_private("ec-1"), input).as_bytes().to_vec(),
            ProofKey::Rsa => Rsa::rs256()
                .sign(&rsa_private("rsa-2"), input)
                .as_bytes()
                .to_vec(),
            ProofKey::Ed => Ed25519.sign(&ed_private("ed-1"), input).as_bytes().to_vec(),
        }
    }

    fn jkt(&self) -> String {
        thumbprint(self.jwk().as_object().unwrap()).unwrap()
    }
}

fn ath(token: &str) -> String {
    b64(&Sha256::digest(token.as_bytes()))
}

/// A proof signed by `signer` whose header carries `header` (typ, alg, jwk by default) and whose
/// claims are the valid ones for a GET of `HTU` with `token`, changed by `claims`.
fn proof_with(signer: &ProofKey, header: Value, claims: Value, token: &str, jti: &str) -> String {
    let mut h = json!({"typ": "dpop+jwt", "alg": signer.alg(), "jwk": signer.jwk()});
    for (k, v) in header.as_object().unwrap() {
        if v.is_null() {
            h.as_object_mut().unwrap().remove(k);
        } else {
            h[k] = v.clone();
        }
    }
    let mut c = json!({"jti": jti, "htm": "GET", "htu": HTU, "iat": NOW_S, "ath": ath(token)});
    for (k, v) in claims.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    let input = format!(
        "{}.{}",
        b64(h.to_string().as_bytes()),
        b64(c.to_string().as_bytes())
    );
    let sig = signer.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn proof(signer: &ProofKey, token: &str, jti: &str) -> String {
    proof_with(signer, json!({}), json!({}), token, jti)
}

/// An access token (RS256, rsa-1) with `cnf`.
fn token(cnf: Option<Value>) -> String {
    let mut claims =
        json!({"iss": ISS, "aud": "api", "sub": "alice", "iat": NOW_S, "exp": NOW_S + 600});
    if let Some(c) = cnf {
        claims["cnf"] = c;
    }
    rs256_token(&rsa_private("rsa-1"), "rsa-1", &claims)
}

fn config() -> Value {
    let route = |name: &str, prefix: &str, binding: &str, mode: &str| {
        json!({"name": name, "match": {"prefix": prefix}, "mode": mode,
               "requires": {"provider_name": "idp", "binding": binding}})
    };
    json!({
        "realm": "api",
        "providers": {"idp": {"issuer": ISS, "audiences": ["api"],
                              "local_jwks": {"inline": {"keys": [rsa_jwk("rsa-1")]}}}},
        "rules": [
            route("dpop", "/orders", "dpop", "enforce"),
            route("mtls", "/mtls", "mtls", "enforce"),
            route("any", "/any", "any", "enforce"),
            route("shadow", "/shadow", "dpop", "shadow"),
            route("open", "/", "none", "enforce"),
        ],
    })
}

fn vm() -> (FakeHost, Engine<FakeHost>) {
    let host = FakeHost::at(u128::from(NOW_S) * 1_000_000_000);
    host.root_id.set(1);
    *host.plugin_config.borrow_mut() = Some(config().to_string().into_bytes());
    let mut engine = Engine::new(host.clone(), 1);
    assert!(engine.configure(), "{:?}", host.logged(Level::Warn));
    (host, engine)
}

struct Req<'a> {
    method: &'a str,
    path: &'a str,
    auth: Option<String>,
    proofs: Vec<String>,
}

fn get<'a>(path: &'a str, auth: Option<String>, proofs: Vec<String>) -> Req<'a> {
    Req {
        method: "GET",
        path,
        auth,
        proofs,
    }
}

/// Runs one request; `None` when it was forwarded, else the answer.
fn send(host: &FakeHost, engine: &mut Engine<FakeHost>, id: u32, r: &Req) -> Option<FakeResponse> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", r.method),
        (":path", r.path),
        (":authority", "api.test"),
        (":scheme", "https"),
    ];
    if let Some(a) = &r.auth {
        headers.push(("authorization", a));
    }
    for p in &r.proofs {
        headers.push(("dpop", p));
    }
    host.open(id, &headers);
    let flow = engine.on_request_headers(id);
    let answer = host.stream(id).response;
    assert_eq!(flow == Flow::Continue, answer.is_none(), "{answer:?}");
    answer
}

fn dpop(t: &str) -> Option<String> {
    Some(format!("DPoP {t}"))
}

fn bearer(t: &str) -> Option<String> {
    Some(format!("Bearer {t}"))
}

fn code(r: &FakeResponse) -> String {
    serde_json::from_str::<Value>(&r.body).unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn challenge(r: &FakeResponse) -> String {
    r.headers
        .iter()
        .find(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[test]
fn a_valid_proof_passes_for_every_key_type_and_the_audit_says_dpop() {
    let (host, mut engine) = vm();
    for (i, key) in [ProofKey::Ec, ProofKey::Rsa, ProofKey::Ed]
        .iter()
        .enumerate()
    {
        let t = token(Some(json!({"jkt": key.jkt()})));
        let p = proof(key, &t, &format!("jti-{i}"));
        let r = send(
            &host,
            &mut engine,
            10 + i as u32,
            &get("/orders", dpop(&t), vec![p]),
        );
        assert!(r.is_none(), "{}: {r:?}", key.alg());
    }
    assert_eq!(
        host.value("jwt_guard.decisions.route.dpop.mode.enforce.outcome.allow.reason.ok"),
        3
    );
}

#[test]
fn every_wrong_proof_is_401_with_its_reason_and_a_dpop_challenge() {
    let (host, mut engine) = vm();
    let key = ProofKey::Ec;
    let t = token(Some(json!({"jkt": key.jkt()})));
    let other = token(Some(json!({"jkt": ProofKey::Ed.jkt()})));
    let stale = NOW_S - 121; // window 60 s + skew 60 s
    let future = NOW_S + 121;
    // The header names ec-1's key, the signature is ed-1's.
    let signed_by_other = proof_with(
        &ProofKey::Ed,
        json!({"alg": "ES256", "jwk": key.jwk()}),
        json!({}),
        &t,
        "x",
    );
    let mut private = key.jwk();
    private["d"] = json!("AAAA");
    let cases: Vec<(&str, Option<String>, Vec<String>, &str)> = vec![
        ("no proof", dpop(&t), vec![], "invalid_dpop_proof"),
        (
            "two proofs",
            dpop(&t),
            vec![proof(&key, &t, "a"), proof(&key, &t, "b")],
            "invalid_dpop_proof",
        ),
        (
            "wrong htm",
            dpop(&t),
            vec![proof_with(&key, json!({}), json!({"htm": "POST"}), &t, "c")],
            "invalid_dpop_proof",
        ),
        (
            "wrong htu",
            dpop(&t),
            vec![proof_with(
                &key,
                json!({}),
                json!({"htu": "https://api.test/other"}),
                &t,
                "d",
            )],
            "invalid_dpop_proof",
        ),
        (
            "another host in htu",
            dpop(&t),
            vec![proof_with(
                &key,
                json!({}),
                json!({"htu": "https://evil.test/orders"}),
                &t,
                "d2",
            )],
            "invalid_dpop_proof",
        ),
        (
            "stale iat",
            dpop(&t),
            vec![proof_with(&key, json!({}), json!({"iat": stale}), &t, "e")],
            "invalid_dpop_proof",
        ),
        (
            "future iat",
            dpop(&t),
            vec![proof_with(&key, json!({}), json!({"iat": future}), &t, "f")],
            "invalid_dpop_proof",
        ),
        (
            "wrong ath",
            dpop(&t),
            vec![proof_with(
                &key,
                json!({}),
                json!({"ath": ath("other")}),
                &t,
                "g",
            )],
            "invalid_dpop_proof",
        ),
        (
            "no ath",
            dpop(&t),
            vec![proof_with(&key, json!({}), json!({"ath": null}), &t, "g2")],
            "invalid_dpop_proof",
        ),
        (
            "no jti",
            dpop(&t),
            vec![proof_with(&key, json!({}), json!({"jti": null}), &t, "")],
            "invalid_dpop_proof",
        ),
        (
            "signed by another key than its jwk",
            dpop(&t),
            vec![signed_by_other],
            "invalid_dpop_proof",
        ),
        (
            "private key in jwk",
            dpop(&t),
            vec![proof_with(
                &key,
                json!({"jwk": private}),
                json!({}),
                &t,
                "h",
            )],
            "invalid_dpop_proof",
        ),
        (
            "alg none",
            dpop(&t),
            vec![proof_with(&key, json!({"alg": "none"}), json!({}), &t, "i")],
            "invalid_dpop_proof",
        ),
        (
            "alg HS256",
            dpop(&t),
            vec![proof_with(
                &key,
                json!({"alg": "HS256"}),
                json!({}),
                &t,
                "i2",
            )],
            "invalid_dpop_proof",
        ),
        (
            "typ JWT",
            dpop(&t),
            vec![proof_with(&key, json!({"typ": "JWT"}), json!({}), &t, "j")],
            "invalid_dpop_proof",
        ),
        (
            "no jwk",
            dpop(&t),
            vec![proof_with(&key, json!({"jwk": null}), json!({}), &t, "k")],
            "invalid_dpop_proof",
        ),
        (
            "garbage",
            dpop(&t),
            vec!["not.a.proof".to_owned()],
            "invalid_dpop_proof",
        ),
        (
            "proof for another key than cnf.jkt",
            dpop(&other),
            vec![proof(&key, &other, "l")],
            "dpop_binding",
        ),
        (
            "bound token as Bearer",
            bearer(&t),
            vec![proof(&key, &t, "m")],
            "dpop_binding",
        ),
        (
            "bound token as Bearer, no proof",
            bearer(&t),
            vec![],
            "dpop_binding",
        ),
        (
            "unbound token with the DPoP scheme",
            dpop(&token(None)),
            vec![proof(&key, &token(None), "n")],
            "dpop_binding",
        ),
        (
            "unbound token on a dpop route",
            bearer(&token(None)),
            vec![],
            "dpop_binding",
        ),
        (
            "cnf with an unknown method",
            bearer(&token(Some(json!({"jwk": key.jwk()})))),
            vec![],
            "dpop_binding",
        ),
    ];
    for (i, (name, auth, proofs, expected)) in cases.into_iter().enumerate() {
        let r = send(
            &host,
            &mut engine,
            100 + i as u32,
            &get("/orders", auth, proofs),
        )
        .unwrap_or_else(|| panic!("{name}: forwarded"));
        assert_eq!(r.status, 401, "{name}");
        assert_eq!(code(&r), expected, "{name}: {}", r.body);
        let c = challenge(&r);
        let error = if expected == "invalid_dpop_proof" {
            "invalid_dpop_proof"
        } else {
            "invalid_token"
        };
        assert!(
            c.starts_with("DPoP realm=\"api\", algs=\"RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA\"")
                && c.contains(&format!("error=\"{error}\"")),
            "{name}: {c}"
        );
        assert!(
            !format!("{:?}", host.logs.borrow()).contains(&t),
            "{name}: token logged"
        );
    }
}

#[test]
fn a_replayed_proof_is_refused_on_this_vm_and_on_another_vm_of_the_envoy() {
    let (host, mut engine) = vm();
    let key = ProofKey::Ec;
    let t = token(Some(json!({"jkt": key.jkt()})));
    let p = proof(&key, &t, "once");
    assert!(send(
        &host,
        &mut engine,
        10,
        &get("/orders", dpop(&t), vec![p.clone()])
    )
    .is_none());
    let r = send(
        &host,
        &mut engine,
        11,
        &get("/orders", dpop(&t), vec![p.clone()]),
    )
    .unwrap();
    assert_eq!((r.status, code(&r)), (401, "dpop_replay".to_owned()));
    // Another worker: same shared data, its own VM.
    let other = host.sibling();
    other.root_id.set(1);
    let mut second = Engine::new(other.clone(), 1);
    assert!(second.configure());
    let r = send(&other, &mut second, 10, &get("/orders", dpop(&t), vec![p])).unwrap();
    assert_eq!(code(&r), "dpop_replay");
    // A fresh proof of the same token passes.
    assert!(send(
        &other,
        &mut second,
        11,
        &get("/orders", dpop(&t), vec![proof(&key, &t, "twice")])
    )
    .is_none());
}

#[test]
fn the_token_cache_never_skips_the_proof() {
    let (host, mut engine) = vm();
    let key = ProofKey::Ed;
    let t = token(Some(json!({"jkt": key.jkt()})));
    assert!(send(
        &host,
        &mut engine,
        10,
        &get("/orders", dpop(&t), vec![proof(&key, &t, "1")])
    )
    .is_none());
    assert_eq!(
        host.value("jwt_guard.token_cache_misses"),
        1,
        "{:?}",
        host.values.borrow()
    );
    // Cached now: a second request with no proof, or a replayed one, is still refused.
    let r = send(&host, &mut engine, 11, &get("/orders", dpop(&t), vec![])).unwrap();
    assert_eq!(code(&r), "invalid_dpop_proof");
    let r = send(
        &host,
        &mut engine,
        12,
        &get("/orders", dpop(&t), vec![proof(&key, &t, "1")]),
    )
    .unwrap();
    assert_eq!(code(&r), "dpop_replay");
    assert!(send(
        &host,
        &mut engine,
        13,
        &get("/orders", dpop(&t), vec![proof(&key, &t, "2")])
    )
    .is_none());
    assert!(host.value("jwt_guard.token_cache_hits") >= 2);
}

#[test]
fn mtls_bound_tokens_need_the_certificate_they_name() {
    let (host, mut engine) = vm();
    let cert_sha = Sha256::digest(b"the client certificate DER");
    let hex: String = cert_sha.iter().map(|b| format!("{b:02x}")).collect();
    let t = token(Some(json!({"x5t#S256": b64(&cert_sha)})));
    let digest = "connection.sha256_peer_certificate_digest".to_owned();
    // No client certificate.
    let r = send(&host, &mut engine, 10, &get("/mtls", bearer(&t), vec![])).unwrap();
    assert_eq!((r.status, code(&r)), (401, "mtls_binding".to_owned()));
    assert!(
        challenge(&r).starts_with("Bearer realm=\"api\", error=\"invalid_token\""),
        "{}",
        challenge(&r)
    );
    // Another certificate.
    host.readable
        .borrow_mut()
        .insert(digest.clone(), b"00".repeat(32));
    let r = send(&host, &mut engine, 11, &get("/mtls", bearer(&t), vec![])).unwrap();
    assert_eq!(code(&r), "mtls_binding");
    // The one it names: on the mtls route, and on a route that asks for no binding too.
    host.readable
        .borrow_mut()
        .insert(digest.clone(), hex.into_bytes());
    assert!(send(&host, &mut engine, 12, &get("/mtls", bearer(&t), vec![])).is_none());
    assert!(send(&host, &mut engine, 13, &get("/", bearer(&t), vec![])).is_none());
    // An unbound token on the mtls route, and on the `any` route.
    let r = send(
        &host,
        &mut engine,
        14,
        &get("/mtls", bearer(&token(None)), vec![]),
    )
    .unwrap();
    assert_eq!(code(&r), "mtls_binding");
    let r = send(
        &host,
        &mut engine,
        15,
        &get("/any", bearer(&token(None)), vec![]),
    )
    .unwrap();
    assert_eq!(code(&r), "binding_required");
    assert!(send(&host, &mut engine, 16, &get("/any", bearer(&t), vec![])).is_none());
    // A bound token's binding is checked on a route that asks for none.
    host.readable.borrow_mut().remove(&digest);
    let r = send(&host, &mut engine, 17, &get("/", bearer(&t), vec![])).unwrap();
    assert_eq!(code(&r), "mtls_binding");
}

#[test]
fn shadow_reports_the_binding_reason_and_forwards() {
    let (host, mut engine) = vm();
    let t = token(Some(json!({"jkt": ProofKey::Ec.jkt()})));
    assert!(send(&host, &mut engine, 10, &get("/shadow", bearer(&t), vec![])).is_none());
    let s = host.stream(10);
    assert_eq!(
        s.header("x-auth-shadow").as_deref(),
        Some("deny; reason=dpop_binding")
    );
    assert_eq!(
        host.value(
            "jwt_guard.decisions.route.shadow.mode.shadow.outcome.would_deny.reason.dpop_binding"
        ),
        1
    );
    assert!(host
        .logged(Level::Info)
        .iter()
        .any(|l| l.starts_with("shadow rule=shadow would deny: reason=dpop_binding")));
}

#[test]
fn the_thumbprint_is_rfc_7638s() {
    // RFC 7638 §3.1's example key and thumbprint.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    assert_eq!(
        thumbprint(jwk.as_object().unwrap()).unwrap(),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
}

#[test]
fn a_route_that_needs_dpop_challenges_with_dpop() {
    let (host, mut engine) = vm();
    let algs = "algs=\"RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA\"";
    let r = send(&host, &mut engine, 10, &get("/orders", None, vec![])).unwrap();
    assert_eq!((r.status, code(&r)), (401, "missing".to_owned()));
    assert_eq!(challenge(&r), format!("DPoP realm=\"api\", {algs}"));
    // A proven token without the route's scope: 403 with the DPoP challenge too.
    let mut cfg = config();
    cfg["rules"][0]["requires"]["scopes"] = json!(["orders:read"]);
    let host2 = FakeHost::at(u128::from(NOW_S) * 1_000_000_000);
    host2.root_id.set(1);
    *host2.plugin_config.borrow_mut() = Some(cfg.to_string().into_bytes());
    let mut engine2 = Engine::new(host2.clone(), 1);
    assert!(engine2.configure());
    let t = token(Some(json!({"jkt": ProofKey::Ec.jkt()})));
    let p = proof(&ProofKey::Ec, &t, "scope");
    let r = send(&host2, &mut engine2, 20, &get("/orders", dpop(&t), vec![p])).unwrap();
    assert_eq!((r.status, code(&r)), (403, "insufficient_scope".to_owned()));
    assert!(
        challenge(&r).starts_with(&format!(
            "DPoP realm=\"api\", {algs}, error=\"insufficient_scope\""
        )),
        "{}",
        challenge(&r)
    );
    // A route that needs no binding keeps the Bearer challenge; an mtls one too.
    let r = send(&host, &mut engine, 11, &get("/", None, vec![])).unwrap();
    assert_eq!(challenge(&r), "Bearer realm=\"api\"");
    let r = send(&host, &mut engine, 12, &get("/mtls", None, vec![])).unwrap();
    assert_eq!(challenge(&r), "Bearer realm=\"api\"");
}
