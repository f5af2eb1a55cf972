//! Sender-constrained tokens end to end (issue 15): DPoP (RFC 9449) and mTLS-bound tokens
//! (RFC 8705) through the built `.wasm` in a real Envoy. Proofs are signed with the fixture keys
//! (ES256, RS256, EdDSA, and every other proof algorithm) by `wasm_test_harness::dpop`, and by an
//! independent client (`testdata/dpop-node.mjs`, Node's own crypto); every way a proof or a binding
//! can be wrong is refused with its reason, its challenge and nothing reaching the upstream; replays
//! are refused on the same worker and on the other one, and a full replay memory fails closed;
//! shadow rules report and forward; `htu` is compared in its RFC 3986 normal form, and
//! `dpop.external_base_url` replaces the request's own scheme and authority in it. The mTLS scenarios run Envoy with TLS
//! listeners (a PKI made with `openssl` at test time) and send their requests with `curl`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use wasm_test_harness::client::Response;
use wasm_test_harness::dpop::{self, Proof};
use wasm_test_harness::stack::Stack;
use wasm_test_harness::tls::{self, CertFiles, TestPki, TlsListener};
use wasm_test_harness::tokens::{self, mint, std_claims};
use wasm_test_harness::{envoy, KeyName, MockIdp, RecordedRequest};

/// The `algs` of every DPoP challenge: the proof algorithms the filter verifies.
const PROOF_ALGS: &str = "RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA";

/// envoy/demo.json (realm `demo`, provider `demo`, its rules) with binding rules in front:
/// `/dpop/` needs DPoP, `/mtls/` mTLS, `/any/` either, `/shadow/` DPoP in shadow mode; the demo's
/// catch-all `api` rule (`/`) asks for no binding. `top` adds top-level members (e.g. `dpop`).
fn config(top: Value) -> String {
    let path = envoy::repo_root().join("envoy/demo.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut cfg: Value = serde_json::from_str(&text).expect("envoy/demo.json is JSON");
    let rule = |name: &str, prefix: &str, binding: &str, mode: &str| {
        json!({"name": name, "match": {"prefix": prefix}, "mode": mode,
               "requires": {"provider_name": "demo", "binding": binding}})
    };
    let mut rules = vec![
        rule("dpop", "/dpop/", "dpop", "enforce"),
        rule("mtls", "/mtls/", "mtls", "enforce"),
        rule("any", "/any/", "any", "enforce"),
        rule("shadow", "/shadow/", "dpop", "shadow"),
    ];
    rules.extend(cfg["rules"].as_array().expect("demo rules").iter().cloned());
    cfg["rules"] = Value::Array(rules);
    for (k, v) in top.as_object().expect("object") {
        cfg[k] = v.clone();
    }
    cfg.to_string()
}

fn code(r: &Response) -> String {
    r.json()["code"].as_str().unwrap_or("<no code>").to_owned()
}

/// The URI a client of the plain listener sees for `path`: what `htu` must be.
fn htu(stack: &Stack, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", stack.envoy.listen_port())
}

/// How a request presents its access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Dpop,
    Bearer,
}

fn authorization(scheme: Scheme, token: &str) -> String {
    match scheme {
        Scheme::Dpop => format!("DPoP {token}"),
        Scheme::Bearer => format!("Bearer {token}"),
    }
}

/// Sends `method path` with the token and one `DPoP` header per proof; returns the answer and what
/// the upstream saw (`None`: nothing reached it).
fn send(
    stack: &Stack,
    method: &str,
    path: &str,
    token: Option<(Scheme, &str)>,
    proofs: &[String],
) -> (Response, Option<RecordedRequest>) {
    let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some((scheme, t)) = token {
        headers.push(("authorization", authorization(scheme, t).into_bytes()));
    }
    for p in proofs {
        headers.push(("dpop", p.clone().into_bytes()));
    }
    let before = stack.echo.count();
    let r = stack.request(method, path, &headers, b"");
    let seen = if stack.echo.count() > before {
        stack.echo.last()
    } else {
        None
    };
    (r, seen)
}

/// What a denial must look like.
#[derive(Clone, Copy, Debug)]
enum Challenge {
    /// `DPoP realm="demo", algs="…", error="<error>", error_description="…"`.
    Dpop(&'static str),
    /// `Bearer realm="demo", error="invalid_token", error_description="…"`.
    Bearer,
}

/// Asserts a 401 with `expected` as its code, the challenge, a description containing `why` (the
/// body's `message` is the challenge's `error_description`), and that the upstream saw nothing.
fn assert_denied(
    name: &str,
    r: &Response,
    seen: &Option<RecordedRequest>,
    expected: &str,
    challenge: Challenge,
    why: &str,
) {
    assert_eq!(r.status, 401, "{name}: status (body {})", r.body);
    assert_eq!(code(r), expected, "{name}: code (body {})", r.body);
    let c = r.header("www-authenticate").unwrap_or_default();
    let (prefix, error) = match challenge {
        Challenge::Dpop(error) => (
            format!("DPoP realm=\"demo\", algs=\"{PROOF_ALGS}\", error=\"{error}\""),
            error,
        ),
        Challenge::Bearer => (
            "Bearer realm=\"demo\", error=\"invalid_token\"".to_owned(),
            "invalid_token",
        ),
    };
    assert!(c.starts_with(&prefix), "{name}: challenge {c:?}");
    let body = r.json();
    assert_eq!(body["error"], error, "{name}: body {}", r.body);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        c.ends_with(&format!(", error_description=\"{message}\"")),
        "{name}: the challenge's description is the body's message: {c:?} / {message:?}"
    );
    assert!(
        message.contains(why),
        "{name}: description {message:?} should say {why:?}"
    );
    assert_eq!(
        r.header_all("www-authenticate").len(),
        1,
        "{name}: one challenge"
    );
    assert!(
        seen.is_none(),
        "{name}: the upstream must not see a denied request"
    );
}

/// Asserts a 200 that reached the upstream as `alice`.
fn assert_passed(name: &str, r: &Response, seen: &Option<RecordedRequest>) -> RecordedRequest {
    assert_eq!(r.status, 200, "{name}: {}", r.body);
    let seen = seen
        .clone()
        .unwrap_or_else(|| panic!("{name}: the upstream saw nothing"));
    assert_eq!(seen.header("x-user-sub"), Some("alice"), "{name}");
    seen
}

#[test]
fn valid_proofs_by_es256_rs256_eddsa_and_every_other_proof_alg_reach_the_upstream() {
    let stack = Stack::start(config(json!({})), 2);
    let mut sent: Vec<String> = Vec::new();
    // ES256, RS256 and EdDSA with each key's own algorithm; then every other proof algorithm the
    // challenge offers (RSA keys with RS384…PS512, the P-384 and P-521 keys).
    for (key, alg) in [
        (KeyName::Ec1, "ES256"),
        (KeyName::Rsa2, "RS256"),
        (KeyName::Ed1, "EdDSA"),
        (KeyName::Rsa2, "RS384"),
        (KeyName::Rsa2, "RS512"),
        (KeyName::Rsa1, "PS256"),
        (KeyName::Rsa1, "PS384"),
        (KeyName::Rsa1, "PS512"),
        (KeyName::Ec384, "ES384"),
        (KeyName::Ec521, "ES512"),
    ] {
        let token = dpop::dpop_bound_token(&dpop::jkt(key));
        let by = |method: &str, path: &str| {
            Proof::new(key, method, &htu(&stack, path), &token)
                .header("alg", json!(alg))
                .signed_with(key, alg)
        };
        // The route that needs DPoP, with a query (htu has none).
        let proof = by("GET", "/dpop/orders").sign();
        sent.push(proof.clone());
        let (r, seen) = send(
            &stack,
            "GET",
            "/dpop/orders?page=2",
            Some((Scheme::Dpop, &token)),
            &[proof],
        );
        let seen = assert_passed(alg, &r, &seen);
        assert_eq!(seen.path, "/dpop/orders?page=2", "{alg}");
        // Another method: htm follows it.
        let proof = by("POST", "/dpop/orders").sign();
        sent.push(proof.clone());
        let (r, seen) = send(
            &stack,
            "POST",
            "/dpop/orders",
            Some((Scheme::Dpop, &token)),
            &[proof],
        );
        assert_passed(&format!("{alg} POST"), &r, &seen);
        // A route that asks for no binding still takes (and checks) a DPoP-bound token; so does `any`.
        for path in ["/hello", "/any/thing"] {
            let proof = by("GET", path).sign();
            sent.push(proof.clone());
            let (r, seen) = send(&stack, "GET", path, Some((Scheme::Dpop, &token)), &[proof]);
            assert_passed(&format!("{alg} {path}"), &r, &seen);
        }
    }
    // RFC 3986 normalisation of htu: scheme and host case, percent-encoded unreserved characters.
    let token = dpop::dpop_bound_token(&dpop::jkt(KeyName::Ec1));
    let port = stack.envoy.listen_port();
    for spelled in [
        format!("HTTP://127.0.0.1:{port}/dpop/orders"),
        format!("http://127.0.0.1:{port}/dpop/%6Frders"),
        format!("http://127.0.0.1:{port}/dpop/orders?ignored=1#frag"),
    ] {
        let proof = Proof::new(KeyName::Ec1, "GET", &spelled, &token).sign();
        let (r, seen) = send(
            &stack,
            "GET",
            "/dpop/orders",
            Some((Scheme::Dpop, &token)),
            &[proof],
        );
        assert_passed(&spelled, &r, &seen);
    }
    // The audit records say what was proven, and never hold a proof.
    assert!(
        stack.logs_contain("\"binding\":\"dpop\""),
        "{}",
        stack.envoy.log_tail(20)
    );
    let log = stack.envoy.logs();
    for proof in &sent {
        let signature = proof.rsplit('.').next().unwrap_or_default();
        assert!(!log.contains(signature), "a proof reached the log");
    }
    assert!(!log.contains(&token), "the token reached the log");
}

#[test]
fn every_wrong_proof_or_binding_is_refused_with_its_reason() {
    let stack = Stack::start(config(json!({})), 2);
    let path = "/dpop/orders";
    let url = htu(&stack, path);
    let key = KeyName::Ec1;
    let token = dpop::dpop_bound_token(&dpop::jkt(key));
    let valid = || Proof::new(key, "GET", &url, &token);
    let now = tokens::now();
    let port = stack.envoy.listen_port();
    let unbound = mint("ES256", Some("ec-1"), &std_claims("alice"));
    let ed_token = dpop::dpop_bound_token(&dpop::jkt(KeyName::Ed1));
    let mut private_jwk = dpop::public_jwk(key);
    private_jwk["d"] = json!(tokens::b64url(&[7u8; 32]));
    let mtls_bound = dpop::mtls_bound_token(b"a certificate this client does not have");
    let unknown_cnf = mint(
        "ES256",
        Some("ec-1"),
        &dpop::bound_claims("alice", json!({"jwk": dpop::public_jwk(key)})),
    );

    use Challenge::{Bearer, Dpop};
    const PROOF: Challenge = Dpop("invalid_dpop_proof");
    const TOKEN: Challenge = Dpop("invalid_token");
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<(Scheme, &'a str)>,
        Vec<String>,
        &'a str,
        Challenge,
        &'a str,
    );
    let dpop_t = Some((Scheme::Dpop, token.as_str()));
    let cases: Vec<Case> = vec![
        (
            "no proof",
            path,
            dpop_t,
            vec![],
            "invalid_dpop_proof",
            PROOF,
            "no DPoP proof",
        ),
        (
            "two DPoP headers",
            path,
            dpop_t,
            vec![valid().sign(), valid().sign()],
            "invalid_dpop_proof",
            PROOF,
            "more than one DPoP proof",
        ),
        (
            "two proofs in one DPoP header",
            path,
            dpop_t,
            vec![format!("{}, {}", valid().sign(), valid().sign())],
            "invalid_dpop_proof",
            PROOF,
            "more than one DPoP proof",
        ),
        (
            "wrong htm",
            path,
            dpop_t,
            vec![valid().claim("htm", json!("POST")).sign()],
            "invalid_dpop_proof",
            PROOF,
            "htm is not the request method",
        ),
        (
            "wrong htu: another path",
            path,
            dpop_t,
            vec![valid()
                .claim("htu", json!(htu(&stack, "/dpop/other")))
                .sign()],
            "invalid_dpop_proof",
            PROOF,
            "htu is not the request URI",
        ),
        (
            "wrong htu: another host",
            path,
            dpop_t,
            vec![valid()
                .claim("htu", json!(format!("http://evil.example:{port}{path}")))
                .sign()],
            "invalid_dpop_proof",
            PROOF,
            "htu is not the request URI",
        ),
        (
            "wrong htu: https for the plain listener",
            path,
            dpop_t,
            vec![valid()
                .claim("htu", json!(format!("https://127.0.0.1:{port}{path}")))
                .sign()],
            "invalid_dpop_proof",
            PROOF,
            "htu is not the request URI",
        ),
        (
            "wrong htu: no port",
            path,
            dpop_t,
            vec![valid()
                .claim("htu", json!(format!("http://127.0.0.1{path}")))
                .sign()],
            "invalid_dpop_proof",
            PROOF,
            "htu is not the request URI",
        ),
        (
            "stale iat",
            path,
            dpop_t,
            vec![valid().claim("iat", json!(now - 200)).sign()],
            "invalid_dpop_proof",
            PROOF,
            "iat is outside the accepted window",
        ),
        (
            "future iat",
            path,
            dpop_t,
            vec![valid().claim("iat", json!(now + 200)).sign()],
            "invalid_dpop_proof",
            PROOF,
            "iat is outside the accepted window",
        ),
        (
            "no iat",
            path,
            dpop_t,
            vec![valid().claim("iat", Value::Null).sign()],
            "invalid_dpop_proof",
            PROOF,
            "no numeric iat",
        ),
        (
            "wrong ath",
            path,
            dpop_t,
            vec![valid().claim("ath", json!(dpop::ath(&unbound))).sign()],
            "invalid_dpop_proof",
            PROOF,
            "ath is not the hash of the access token",
        ),
        (
            "no ath",
            path,
            dpop_t,
            vec![valid().claim("ath", Value::Null).sign()],
            "invalid_dpop_proof",
            PROOF,
            "ath is not the hash of the access token",
        ),
        (
            "no jti",
            path,
            dpop_t,
            vec![valid().claim("jti", Value::Null).sign()],
            "invalid_dpop_proof",
            PROOF,
            "jti is missing, empty or longer than 256 characters",
        ),
        (
            "ES256 jwk, signed by the Ed25519 key",
            path,
            dpop_t,
            vec![valid().signed_with(KeyName::Ed1, "EdDSA").sign()],
            "invalid_dpop_proof",
            PROOF,
            "signature does not verify with its jwk",
        ),
        (
            "RS256 jwk of rsa-2, signed by another RSA key",
            path,
            Some((Scheme::Dpop, &token)),
            vec![Proof::new(KeyName::Rsa2, "GET", &url, &token)
                .signed_with(KeyName::RsaRogue, "RS256")
                .sign()],
            "invalid_dpop_proof",
            PROOF,
            "signature does not verify with its jwk",
        ),
        (
            "private key member in jwk",
            path,
            dpop_t,
            vec![valid().header("jwk", private_jwk.clone()).sign()],
            "invalid_dpop_proof",
            PROOF,
            "jwk holds a private key",
        ),
        (
            "alg none, no signature",
            path,
            dpop_t,
            vec![valid()
                .header("alg", json!("none"))
                .signed_with(key, "none")
                .sign()],
            "invalid_dpop_proof",
            PROOF,
            "alg is not an asymmetric algorithm",
        ),
        (
            "alg HS256 (the public key as the secret)",
            path,
            dpop_t,
            vec![valid()
                .header("alg", json!("HS256"))
                .signed_with(key, "HS256")
                .sign()],
            "invalid_dpop_proof",
            PROOF,
            "alg is not an asymmetric algorithm",
        ),
        (
            "typ JWT",
            path,
            dpop_t,
            vec![valid().header("typ", json!("JWT")).sign()],
            "invalid_dpop_proof",
            PROOF,
            "typ is not dpop+jwt",
        ),
        (
            "no jwk",
            path,
            dpop_t,
            vec![valid().header("jwk", Value::Null).sign()],
            "invalid_dpop_proof",
            PROOF,
            "has no jwk",
        ),
        (
            "crit",
            path,
            dpop_t,
            vec![valid().header("crit", json!(["exp"])).sign()],
            "invalid_dpop_proof",
            PROOF,
            "crit",
        ),
        (
            "alg RS256 over an EC jwk",
            path,
            dpop_t,
            vec![valid()
                .header("alg", json!("RS256"))
                .signed_with(KeyName::Rsa1, "RS256")
                .sign()],
            "invalid_dpop_proof",
            PROOF,
            "signature does not verify with its jwk",
        ),
        (
            "iat as a string",
            path,
            dpop_t,
            vec![valid().claim("iat", json!(now.to_string())).sign()],
            "invalid_dpop_proof",
            PROOF,
            "no numeric iat",
        ),
        (
            "jti longer than 256 bytes",
            path,
            dpop_t,
            vec![valid().claim("jti", json!("j".repeat(300))).sign()],
            "invalid_dpop_proof",
            PROOF,
            "longer than 256 characters",
        ),
        (
            "proof over 8 KiB",
            path,
            dpop_t,
            vec![valid().claim("pad", json!("x".repeat(9000))).sign()],
            "invalid_dpop_proof",
            PROOF,
            "too large",
        ),
        (
            "empty DPoP header",
            path,
            dpop_t,
            vec![String::new()],
            "invalid_dpop_proof",
            PROOF,
            "not a compact JWS",
        ),
        (
            "not a JWS",
            path,
            dpop_t,
            vec!["not.a.proof".to_owned()],
            "invalid_dpop_proof",
            PROOF,
            "not a compact JWS",
        ),
        (
            "the access token as its own proof",
            path,
            dpop_t,
            vec![token.clone()],
            "invalid_dpop_proof",
            PROOF,
            "typ is not dpop+jwt",
        ),
        (
            "wrong jkt: a valid proof by another key than cnf.jkt",
            path,
            Some((Scheme::Dpop, &ed_token)),
            vec![Proof::new(key, "GET", &url, &ed_token).sign()],
            "dpop_binding",
            TOKEN,
            "not the one the token is bound to",
        ),
        (
            "DPoP-bound token as Bearer, with a valid proof",
            path,
            Some((Scheme::Bearer, &token)),
            vec![valid().sign()],
            "dpop_binding",
            TOKEN,
            "must be presented with the DPoP scheme",
        ),
        (
            "DPoP-bound token as Bearer, no proof",
            path,
            Some((Scheme::Bearer, &token)),
            vec![],
            "dpop_binding",
            TOKEN,
            "must be presented with the DPoP scheme",
        ),
        (
            "DPoP-bound token as Bearer on a route asking no binding",
            "/hello",
            Some((Scheme::Bearer, &token)),
            vec![],
            "dpop_binding",
            TOKEN,
            "must be presented with the DPoP scheme",
        ),
        (
            "unbound token on the dpop route",
            path,
            Some((Scheme::Bearer, &unbound)),
            vec![],
            "dpop_binding",
            TOKEN,
            "this route needs a DPoP-bound token",
        ),
        (
            "unbound token with the DPoP scheme and a proof",
            "/hello",
            Some((Scheme::Dpop, &unbound)),
            vec![Proof::new(key, "GET", &htu(&stack, "/hello"), &unbound).sign()],
            "dpop_binding",
            TOKEN,
            "not DPoP-bound",
        ),
        (
            "cnf with a method the filter cannot check",
            "/hello",
            Some((Scheme::Bearer, &unknown_cnf)),
            vec![],
            "dpop_binding",
            TOKEN,
            "cannot check",
        ),
        (
            "unbound token on the `any` route",
            "/any/thing",
            Some((Scheme::Bearer, &unbound)),
            vec![],
            "binding_required",
            TOKEN,
            "a sender-constrained token is required",
        ),
        (
            "unbound token on the mtls route",
            "/mtls/thing",
            Some((Scheme::Bearer, &unbound)),
            vec![],
            "mtls_binding",
            Bearer,
            "this route needs an mTLS-bound token",
        ),
        (
            "mTLS-bound token over plain HTTP",
            "/hello",
            Some((Scheme::Bearer, &mtls_bound)),
            vec![],
            "mtls_binding",
            Bearer,
            "no client certificate on this connection",
        ),
    ];
    let before = stack.echo.count();
    // No token at all on the route that needs DPoP: `missing` (its challenge is the README's
    // `Bearer realm`, not asserted here).
    let (r, seen) = send(&stack, "GET", path, None, &[valid().sign()]);
    assert_eq!(
        (r.status, code(&r)),
        (401, "missing".to_owned()),
        "{}",
        r.body
    );
    assert!(seen.is_none(), "no token: nothing reaches the upstream");
    for (name, path, token, proofs, expected, challenge, why) in &cases {
        let (r, seen) = send(&stack, "GET", path, *token, proofs);
        assert_denied(name, &r, &seen, expected, *challenge, why);
    }
    assert_eq!(stack.echo.count(), before, "nothing reached the upstream");
    // After all that, the token with a valid proof still passes (no refusal poisoned it).
    let (r, seen) = send(&stack, "GET", path, dpop_t, &[valid().sign()]);
    assert_passed("valid after the refusals", &r, &seen);
}

#[test]
fn a_replayed_proof_is_refused_and_a_fresh_one_passes() {
    let stack = Stack::start(config(json!({})), 1);
    let path = "/dpop/orders";
    let token = dpop::dpop_bound_token(&dpop::jkt(KeyName::Ec1));
    let proof = Proof::new(KeyName::Ec1, "GET", &htu(&stack, path), &token);
    let sent = proof.sign();
    let (r, seen) = send(
        &stack,
        "GET",
        path,
        Some((Scheme::Dpop, &token)),
        std::slice::from_ref(&sent),
    );
    assert_passed("first use", &r, &seen);
    for i in 0..3 {
        let (r, seen) = send(
            &stack,
            "GET",
            path,
            Some((Scheme::Dpop, &token)),
            std::slice::from_ref(&sent),
        );
        assert_denied(
            &format!("replay {i}"),
            &r,
            &seen,
            "dpop_replay",
            Challenge::Dpop("invalid_dpop_proof"),
            "replayed",
        );
    }
    // A fresh proof of the same token passes; so does the same jti under another key (the memory
    // is per key).
    let (r, seen) = send(
        &stack,
        "GET",
        path,
        Some((Scheme::Dpop, &token)),
        &[Proof::new(KeyName::Ec1, "GET", &htu(&stack, path), &token).sign()],
    );
    assert_passed("fresh proof", &r, &seen);
    let ed_token = dpop::dpop_bound_token(&dpop::jkt(KeyName::Ed1));
    let same_jti = Proof::new(KeyName::Ed1, "GET", &htu(&stack, path), &ed_token)
        .claim("jti", json!(proof.jti()));
    let (r, seen) = send(
        &stack,
        "GET",
        path,
        Some((Scheme::Dpop, &ed_token)),
        &[same_jti.sign()],
    );
    assert_passed("same jti, another key", &r, &seen);
}

/// Connections each worker of the listener on `port` accepted so far (`worker_N` → count). The
/// listener's stats are named by its configured address, which is port 0 here (Envoy picks the
/// port): `listener.127.0.0.1_0.worker_N.downstream_cx_total`.
fn worker_connections(stack: &Stack, port: u16) -> Vec<(String, u64)> {
    let prefixes = [
        format!("listener.127.0.0.1_{port}.worker_"),
        "listener.127.0.0.1_0.worker_".to_owned(),
    ];
    let stats = stack
        .envoy
        .admin_text("/stats?filter=downstream_cx_total")
        .unwrap_or_else(|e| panic!("/stats: {e}"));
    let mut out: Vec<(String, u64)> = stats
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            let worker = prefixes
                .iter()
                .find_map(|p| name.strip_prefix(p.as_str()))?
                .strip_suffix(".downstream_cx_total")?;
            Some((worker.to_owned(), value.trim().parse().ok()?))
        })
        .collect();
    out.sort();
    assert!(
        !out.is_empty(),
        "no per-worker connection counters for the listener in /stats: {stats}"
    );
    out
}

/// Sends and says which worker took the connection (the one whose accepted count went up).
fn send_on_worker(
    stack: &Stack,
    path: &str,
    token: &str,
    proof: &str,
) -> (Response, Option<RecordedRequest>, String) {
    let port = stack.envoy.listen_port();
    let before = worker_connections(stack, port);
    let (r, seen) = send(
        stack,
        "GET",
        path,
        Some((Scheme::Dpop, token)),
        &[proof.to_owned()],
    );
    let after = worker_connections(stack, port);
    let moved: Vec<&String> = after
        .iter()
        .filter(|(w, n)| {
            let was = before.iter().find(|(b, _)| b == w).map_or(0, |(_, c)| *c);
            *n > was
        })
        .map(|(w, _)| w)
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "one worker took the connection: before {before:?}, after {after:?}"
    );
    (r, seen, moved[0].clone())
}

#[test]
fn a_replay_is_refused_on_the_other_worker_too() {
    let stack = Stack::start(config(json!({})), 2);
    let path = "/dpop/orders";
    let token = dpop::dpop_bound_token(&dpop::jkt(KeyName::Ec1));
    let mut workers = std::collections::BTreeSet::new();
    let (mut pairs, mut crossed) = (0, 0);
    // Each request is a new connection (the harness client closes it): the kernel spreads them
    // over both workers' sockets. Go on until enough replays landed on the other worker.
    while (crossed < 5 || workers.len() < 2) && pairs < 200 {
        pairs += 1;
        let proof = Proof::new(KeyName::Ec1, "GET", &htu(&stack, path), &token).sign();
        let (r, seen, first) = send_on_worker(&stack, path, &token, &proof);
        assert_passed(&format!("pair {pairs}: first use on {first}"), &r, &seen);
        let (r, seen, second) = send_on_worker(&stack, path, &token, &proof);
        assert_denied(
            &format!("pair {pairs}: replay on {second} (first use on {first})"),
            &r,
            &seen,
            "dpop_replay",
            Challenge::Dpop("invalid_dpop_proof"),
            "replayed",
        );
        if first != second {
            crossed += 1;
        }
        workers.insert(first);
        workers.insert(second);
    }
    assert_eq!(
        workers.len(),
        2,
        "both workers took connections in {pairs} pairs: {workers:?}"
    );
    assert!(
        crossed >= 5,
        "only {crossed} of {pairs} replays landed on the other worker"
    );
    eprintln!("{pairs} pairs, {crossed} replays on the other worker, workers {workers:?}");
    // Every replay was counted as one.
    let stats = stack.prometheus();
    let replays = stats
        .get("jwt_guard_decisions{route=\"dpop\",mode=\"enforce\",outcome=\"deny\",reason=\"dpop_replay\"}")
        .copied();
    assert_eq!(replays, Some(f64::from(pairs)), "{stats:?}");
}

/// `dpop.replay_capacity` bounds the proofs remembered per slot (`iat_window` + skew = 120 s):
/// wrong proofs never take room (the record is the last check), a full memory refuses new proofs
/// (fail closed) rather than forgetting, and what it holds stays replay-protected.
#[test]
fn a_full_replay_memory_refuses_new_proofs_and_forged_ones_take_no_room() {
    const CAPACITY: usize = 64;
    let stack = Stack::start(config(json!({"dpop": {"replay_capacity": CAPACITY}})), 2);
    let path = "/dpop/orders";
    let token = dpop::dpop_bound_token(&dpop::jkt(KeyName::Ec1));
    let proof = || Proof::new(KeyName::Ec1, "GET", &htu(&stack, path), &token);
    let dpop_t = Some((Scheme::Dpop, token.as_str()));
    // Twice the capacity of proofs that fail a check before the record: none is remembered.
    for i in 0..2 * CAPACITY {
        let bad = proof().signed_with(KeyName::Ed1, "EdDSA").sign();
        let (r, seen) = send(&stack, "GET", path, dpop_t, &[bad]);
        assert_denied(
            &format!("forged proof {i}"),
            &r,
            &seen,
            "invalid_dpop_proof",
            Challenge::Dpop("invalid_dpop_proof"),
            "signature does not verify",
        );
    }
    let first = proof().sign();
    let (r, seen) = send(&stack, "GET", path, dpop_t, std::slice::from_ref(&first));
    assert_passed("a valid proof after the forged ones", &r, &seen);
    // Fresh valid proofs until the memory is full.
    let slot = |t: u64| t / 120;
    let started = tokens::now();
    let (mut accepted, mut refused, mut first_refusal) = (1, 0, None);
    for i in 0..4 * CAPACITY {
        let (r, seen) = send(&stack, "GET", path, dpop_t, &[proof().sign()]);
        if r.status == 200 {
            assert!(
                seen.is_some(),
                "proof {i}: 200 but the upstream saw nothing"
            );
            accepted += 1;
        } else {
            assert_denied(
                &format!("proof {i} with the memory full"),
                &r,
                &seen,
                "invalid_dpop_proof",
                Challenge::Dpop("invalid_dpop_proof"),
                "too many DPoP proofs in this window",
            );
            refused += 1;
            first_refusal.get_or_insert(accepted);
        }
    }
    // The bound is per shared-data shard (replay_capacity / 64 each): the first refusal can come
    // well before the slot holds replay_capacity proofs.
    eprintln!(
        "replay_capacity {CAPACITY}: {accepted} proofs accepted, {refused} refused as the memory \
         was full, the first refusal after {first_refusal:?} accepted"
    );
    assert!(refused > 0, "the memory never filled: {accepted} accepted");
    if slot(started) == slot(tokens::now()) {
        assert!(
            accepted <= CAPACITY,
            "{accepted} proofs accepted in one slot, more than replay_capacity {CAPACITY}"
        );
    }
    // What the memory holds is still refused as a replay, full or not.
    let (r, seen) = send(&stack, "GET", path, dpop_t, &[first]);
    assert_denied(
        "replay with the memory full",
        &r,
        &seen,
        "dpop_replay",
        Challenge::Dpop("invalid_dpop_proof"),
        "replayed",
    );
}

#[test]
fn shadow_rules_report_binding_failures_and_forward() {
    let stack = Stack::start(config(json!({})), 2);
    let path = "/shadow/report";
    let token = dpop::dpop_bound_token(&dpop::jkt(KeyName::Ec1));
    let unbound = mint("ES256", Some("ec-1"), &std_claims("alice"));
    let valid = || Proof::new(KeyName::Ec1, "GET", &htu(&stack, path), &token);

    let (r, seen) = send(
        &stack,
        "GET",
        path,
        Some((Scheme::Dpop, &token)),
        &[valid().sign()],
    );
    let seen = assert_passed("valid", &r, &seen);
    assert_eq!(seen.header("x-auth-shadow"), Some("allow"));

    let replayed = valid().sign();
    let (r, _) = send(
        &stack,
        "GET",
        path,
        Some((Scheme::Dpop, &token)),
        std::slice::from_ref(&replayed),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    type Case<'a> = (&'a str, Option<(Scheme, &'a str)>, Vec<String>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "bound token as Bearer",
            Some((Scheme::Bearer, &token)),
            vec![],
            "dpop_binding",
        ),
        (
            "unbound token",
            Some((Scheme::Bearer, &unbound)),
            vec![],
            "dpop_binding",
        ),
        (
            "wrong htm",
            Some((Scheme::Dpop, &token)),
            vec![valid().claim("htm", json!("DELETE")).sign()],
            "invalid_dpop_proof",
        ),
        (
            "stale iat",
            Some((Scheme::Dpop, &token)),
            vec![valid().claim("iat", json!(tokens::now() - 200)).sign()],
            "invalid_dpop_proof",
        ),
        (
            "replay",
            Some((Scheme::Dpop, &token)),
            vec![replayed],
            "dpop_replay",
        ),
        (
            "proof by another key",
            Some((Scheme::Dpop, &token)),
            vec![Proof::new(KeyName::Ed1, "GET", &htu(&stack, path), &token).sign()],
            "dpop_binding",
        ),
    ];
    for (name, tok, proofs, reason) in cases {
        let (r, seen) = send(&stack, "GET", path, tok, &proofs);
        assert_eq!(r.status, 200, "{name}: shadow forwards ({})", r.body);
        let seen = seen.unwrap_or_else(|| panic!("{name}: the upstream saw nothing"));
        assert_eq!(
            seen.header("x-auth-shadow"),
            Some(format!("deny; reason={reason}").as_str()),
            "{name}"
        );
        assert_eq!(
            seen.header("x-user-sub"),
            None,
            "{name}: no identity on a would-deny"
        );
        assert!(
            stack.logs_contain(&format!(
                "shadow rule=shadow would deny: reason={reason} sub="
            )),
            "{name}: {}",
            stack.envoy.log_tail(20)
        );
    }
}

/// RFC 9449 §4.3 (step 9): servers SHOULD apply RFC 3986's syntax-based normalisation (§6.2.2,
/// which includes §6.2.2.3, removing dot segments) to `htu` before comparing. Envoy has already
/// removed the dot segments of `:path` (`normalize_path: true`), so a client that sends
/// `/dpop/x/../orders` and signs exactly that URI must pass, as must a proof spelling the request's
/// URI with `./` or `x/..`.
#[test]
fn htu_with_dot_segments_is_compared_after_removing_them() {
    let stack = Stack::start(config(json!({})), 1);
    let token = dpop::dpop_bound_token(&dpop::jkt(KeyName::Ec1));
    let mut refused = Vec::new();
    for (request, signed) in [
        ("/dpop/x/../orders", "/dpop/x/../orders"),
        ("/dpop/orders", "/dpop/./orders"),
        ("/dpop/orders", "/dpop/x/../orders"),
    ] {
        let proof = Proof::new(KeyName::Ec1, "GET", &htu(&stack, signed), &token).sign();
        let (r, seen) = send(
            &stack,
            "GET",
            request,
            Some((Scheme::Dpop, &token)),
            &[proof],
        );
        match seen {
            Some(seen) if r.status == 200 => {
                assert_eq!(seen.path, "/dpop/orders", "Envoy normalised the path")
            }
            _ => refused.push(format!(
                "GET {request} with htu …{signed}: {} {}",
                r.status, r.body
            )),
        }
    }
    assert!(
        refused.is_empty(),
        "proofs whose htu differs from the request URI only by dot segments were refused:\n{}",
        refused.join("\n")
    );
}

#[test]
fn with_an_external_base_url_htu_is_the_public_uri() {
    let stack = Stack::start(
        config(json!({"dpop": {"external_base_url": "https://api.example.com"}})),
        2,
    );
    let path = "/dpop/orders";
    let token = dpop::dpop_bound_token(&dpop::jkt(KeyName::Ec1));
    let proof = |htu: &str| Proof::new(KeyName::Ec1, "GET", htu, &token).sign();
    for public in [
        "https://api.example.com/dpop/orders",
        "https://API.Example.com:443/dpop/orders",
    ] {
        let (r, seen) = send(
            &stack,
            "GET",
            &format!("{path}?q=1"),
            Some((Scheme::Dpop, &token)),
            &[proof(public)],
        );
        assert_passed(public, &r, &seen);
    }
    let port = stack.envoy.listen_port();
    for wrong in [
        format!("http://127.0.0.1:{port}{path}"),
        "http://api.example.com/dpop/orders".to_owned(),
        "https://api.example.com:8443/dpop/orders".to_owned(),
        "https://api.example.com/orders".to_owned(),
    ] {
        let (r, seen) = send(
            &stack,
            "GET",
            path,
            Some((Scheme::Dpop, &token)),
            &[proof(&wrong)],
        );
        assert_denied(
            &wrong,
            &r,
            &seen,
            "invalid_dpop_proof",
            Challenge::Dpop("invalid_dpop_proof"),
            "htu is not the request URI",
        );
    }
}

/// `node testdata/dpop-node.mjs --key <key> args…`, its JSON answer.
fn node_dpop(key: &std::path::Path, args: &[&str]) -> Value {
    let script = envoy::repo_root().join("wasm-test-harness/testdata/dpop-node.mjs");
    let out = Command::new("node")
        .arg(&script)
        .arg("--key")
        .arg(key)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `node` ({e}): this test checks proofs made by Node.js's own crypto \
                 (testdata/dpop-node.mjs) and needs Node.js >= 16 on the PATH"
            )
        });
    assert!(
        out.status.success(),
        "node {} failed ({}): {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "node printed no JSON ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn proofs_made_by_node_crypto_are_accepted_once() {
    let dir = std::env::temp_dir().join(format!(
        "jwt-guard-dpop-node-{}-{}",
        std::process::id(),
        tokens::now()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let key = dir.join("key.jwk");
    let stack = Stack::start(config(json!({})), 2);
    let path = "/dpop/orders";
    let url = htu(&stack, path);
    // First run: the key pair is made; its thumbprint (node's own RFC 7638) binds the token.
    let first = node_dpop(&key, &["--method", "GET", "--htu", &url]);
    let jkt = first["jkt"].as_str().expect("jkt").to_owned();
    assert_eq!(
        dpop::thumbprint(&first["jwk"]).expect("thumbprint"),
        jkt,
        "node's and the harness's RFC 7638 thumbprints agree"
    );
    let token = dpop::dpop_bound_token(&jkt);
    // Node's first proof has no ath: refused for that.
    let (r, seen) = send(
        &stack,
        "GET",
        path,
        Some((Scheme::Dpop, &token)),
        &[first["proof"].as_str().expect("proof").to_owned()],
    );
    assert_denied(
        "node proof without ath",
        &r,
        &seen,
        "invalid_dpop_proof",
        Challenge::Dpop("invalid_dpop_proof"),
        "ath",
    );
    let ath = dpop::ath(&token);
    let now = tokens::now().to_string();
    let jti = format!("node-{}", dpop::random_jti());
    let answer = node_dpop(
        &key,
        &[
            "--method", "GET", "--htu", &url, "--ath", &ath, "--iat", &now, "--jti", &jti,
        ],
    );
    assert_eq!(answer["jkt"], json!(jkt), "the same key on the second run");
    let proof = answer["proof"].as_str().expect("proof").to_owned();
    let (r, seen) = send(
        &stack,
        "GET",
        path,
        Some((Scheme::Dpop, &token)),
        std::slice::from_ref(&proof),
    );
    assert_passed("node's proof", &r, &seen);
    let (r, seen) = send(&stack, "GET", path, Some((Scheme::Dpop, &token)), &[proof]);
    assert_denied(
        "node's proof replayed",
        &r,
        &seen,
        "dpop_replay",
        Challenge::Dpop("invalid_dpop_proof"),
        "replayed",
    );
    // Another proof by node for POST passes too.
    let answer = node_dpop(&key, &["--method", "POST", "--htu", &url, "--ath", &ath]);
    let (r, seen) = send(
        &stack,
        "POST",
        path,
        Some((Scheme::Dpop, &token)),
        &[answer["proof"].as_str().expect("proof").to_owned()],
    );
    assert_passed("node's POST proof", &r, &seen);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_harness_thumbprint_is_rfc_7638s() {
    // RFC 7638 §3.1.
    let jwk = json!({
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29"
    });
    assert_eq!(
        dpop::thumbprint(&jwk).expect("thumbprint"),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );
    // The filter's own implementation agrees on every fixture proof key.
    for key in [KeyName::Ec1, KeyName::Rsa2, KeyName::Ed1] {
        let jwk = dpop::public_jwk(key);
        assert_eq!(
            jwt_guard::binding::thumbprint(jwk.as_object().expect("object")).expect("filter"),
            dpop::jkt(key),
            "{key:?}"
        );
        assert!(jwk.get("kid").is_none() && jwk.get("use").is_none());
    }
}

/// The mTLS stack: Envoy with two TLS listeners, `main` (a client certificate is required) and
/// `optional` (asked for and verified, but a client may send none).
struct MtlsStack {
    stack: Stack,
    pki: TestPki,
    optional_port: u16,
}

impl MtlsStack {
    fn start() -> MtlsStack {
        let pki = TestPki::generate().unwrap_or_else(|e| panic!("test PKI: {e}"));
        let base = std::fs::read_to_string(envoy::default_template()).expect("envoy/envoy.yaml");
        let template = tls::tls_bootstrap(
            &base,
            &pki,
            &[
                TlsListener {
                    name: "main",
                    require_client_certificate: true,
                },
                TlsListener {
                    name: "optional",
                    require_client_certificate: false,
                },
            ],
        )
        .unwrap_or_else(|e| panic!("TLS template: {e}"));
        let path: PathBuf = pki.dir.join("envoy-tls.yaml");
        std::fs::write(&path, template).expect("write the TLS template");
        let stack = Stack::with_template(MockIdp::start(), config(json!({})), 2, path);
        let optional_port = stack
            .envoy
            .listener_port("optional")
            .unwrap_or_else(|e| panic!("{e}"));
        MtlsStack {
            stack,
            pki,
            optional_port,
        }
    }

    fn curl(
        &self,
        port: u16,
        path: &str,
        client: Option<&CertFiles>,
        headers: &[(&str, &str)],
    ) -> (tls::CurlResult, Option<RecordedRequest>) {
        let before = self.stack.echo.count();
        let r = tls::curl(port, "GET", path, &self.pki.ca, client, headers);
        let seen = if self.stack.echo.count() > before {
            self.stack.echo.last()
        } else {
            None
        };
        (r, seen)
    }
}

fn answered(name: &str, r: &tls::CurlResult) -> Response {
    r.response.clone().unwrap_or_else(|| {
        panic!(
            "{name}: curl got no answer (exit {}): {}",
            r.exit_code, r.stderr
        )
    })
}

/// The certificate's SHA-256 as `openssl x509 -fingerprint` prints it, base64url: an independent
/// check of the DER the test hashes.
fn openssl_x5t(cert: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("openssl x509 -fingerprint");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex: String = text
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex fingerprint"))
        .collect();
    assert_eq!(bytes.len(), 32, "fingerprint {text:?}");
    tokens::b64url(&bytes)
}

/// The sum of the TLS listeners' `ssl.<name>` counters (both are named `listener.127.0.0.1_0.…`).
fn ssl_stat(stack: &Stack, name: &str) -> u64 {
    let stats = stack
        .envoy
        .admin_text(&format!("/stats?filter=ssl.{name}$"))
        .unwrap_or_else(|e| panic!("/stats: {e}"));
    stats
        .lines()
        .filter(|l| l.starts_with("listener.") && !l.starts_with("listener.admin."))
        .filter_map(|l| l.split_once(": ")?.1.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn mtls_bound_tokens_need_the_client_certificate_they_name() {
    let m = MtlsStack::start();
    let port = m.stack.envoy.listen_port();
    let (good, other) = (&m.pki.good_client, &m.pki.other_client);
    let good_der = good.der();
    assert_eq!(
        dpop::x5t_s256(&good_der),
        openssl_x5t(&good.cert),
        "the DER hashed is the certificate's"
    );
    let token = dpop::mtls_bound_token(&good_der);
    let bearer = format!("Bearer {token}");
    let unbound = format!(
        "Bearer {}",
        mint("ES256", Some("ec-1"), &std_claims("alice"))
    );
    let auth = |v: &str| vec![("authorization", v.to_owned())];
    fn h<'a>(a: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        a.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    // The certificate the token names: on the mtls route, on `any`, and on a route asking no binding.
    for path in ["/mtls/orders", "/any/orders", "/hello"] {
        let (r, seen) = m.curl(port, path, Some(good), &h(&auth(&bearer)));
        let r = answered(path, &r);
        let seen = assert_passed(&format!("good certificate on {path}"), &r, &seen);
        assert_eq!(seen.header("x-auth-shadow"), None);
    }
    assert!(
        m.stack.logs_contain("\"binding\":\"mtls\""),
        "{}",
        m.stack.envoy.log_tail(20)
    );
    // Another certificate of the same CA: the handshake succeeds, the filter refuses.
    for path in ["/mtls/orders", "/hello"] {
        let (r, seen) = m.curl(port, path, Some(other), &h(&auth(&bearer)));
        assert_denied(
            &format!("other certificate on {path}"),
            &answered(path, &r),
            &seen,
            "mtls_binding",
            Challenge::Bearer,
            "not the one the token is bound to",
        );
    }
    // Unbound tokens where the route needs a binding, over a verified client certificate.
    let (r, seen) = m.curl(port, "/mtls/orders", Some(good), &h(&auth(&unbound)));
    assert_denied(
        "unbound token on the mtls route",
        &answered("mtls", &r),
        &seen,
        "mtls_binding",
        Challenge::Bearer,
        "this route needs an mTLS-bound token",
    );
    let (r, seen) = m.curl(port, "/any/orders", Some(good), &h(&auth(&unbound)));
    assert_denied(
        "unbound token on the any route",
        &answered("any", &r),
        &seen,
        "binding_required",
        Challenge::Dpop("invalid_token"),
        "a sender-constrained token is required",
    );
    // No client certificate: the `main` listener's TLS refuses the handshake.
    let (r, seen) = m.curl(port, "/mtls/orders", None, &h(&auth(&bearer)));
    assert!(
        r.response.is_none() && r.exit_code != 0,
        "no client certificate on a listener that requires one: curl must fail: {r:?}"
    );
    assert!(
        seen.is_none(),
        "nothing reached the upstream without a certificate"
    );
    assert_eq!(
        ssl_stat(&m.stack, "fail_verify_no_cert"),
        1,
        "Envoy's TLS refused the handshake for want of a certificate"
    );
    // A client certificate of another CA: refused by the TLS handshake on both listeners.
    let rogue = &m.pki.rogue_client;
    for (listener, p) in [("main", port), ("optional", m.optional_port)] {
        let (r, seen) = m.curl(p, "/mtls/orders", Some(rogue), &h(&auth(&bearer)));
        assert!(
            r.response.is_none() && r.exit_code != 0,
            "{listener}: a certificate of another CA: curl must fail: {r:?}"
        );
        assert!(seen.is_none(), "{listener}: nothing reached the upstream");
    }
    assert!(
        ssl_stat(&m.stack, "fail_verify_error") >= 2,
        "Envoy's TLS refused the unknown CA's certificate on both listeners"
    );
    // The `optional` listener lets the handshake through without one: the filter refuses the token.
    let opt = m.optional_port;
    for path in ["/mtls/orders", "/hello"] {
        let (r, seen) = m.curl(opt, path, None, &h(&auth(&bearer)));
        assert_denied(
            &format!("no certificate on {path} (optional listener)"),
            &answered(path, &r),
            &seen,
            "mtls_binding",
            Challenge::Bearer,
            "no client certificate on this connection",
        );
    }
    let (r, seen) = m.curl(opt, "/mtls/orders", Some(good), &h(&auth(&bearer)));
    assert_passed(
        "good certificate (optional listener)",
        &answered("optional", &r),
        &seen,
    );
    let (r, seen) = m.curl(opt, "/mtls/orders", Some(other), &h(&auth(&bearer)));
    assert_denied(
        "other certificate (optional listener)",
        &answered("optional", &r),
        &seen,
        "mtls_binding",
        Challenge::Bearer,
        "not the one the token is bound to",
    );
    // An unbound token on a route asking no binding needs no certificate.
    let (r, seen) = m.curl(opt, "/hello", None, &h(&auth(&unbound)));
    assert_passed(
        "unbound token, no certificate",
        &answered("hello", &r),
        &seen,
    );
}

#[test]
fn a_token_bound_to_both_needs_the_certificate_and_the_proof_over_tls() {
    let m = MtlsStack::start();
    let port = m.stack.envoy.listen_port();
    let (good, other) = (&m.pki.good_client, &m.pki.other_client);
    let path = "/dpop/orders";
    let token = mint(
        "ES256",
        Some("ec-1"),
        &dpop::bound_claims(
            "alice",
            json!({"jkt": dpop::jkt(KeyName::Ed1), "x5t#S256": dpop::x5t_s256(&good.der())}),
        ),
    );
    let auth = format!("DPoP {token}");
    // Over TLS the request URI is https://.
    let url = format!("https://127.0.0.1:{port}{path}");
    let proof = || Proof::new(KeyName::Ed1, "GET", &url, &token).sign();
    let p = proof();
    let (r, seen) = m.curl(
        port,
        path,
        Some(good),
        &[("authorization", &auth), ("dpop", &p)],
    );
    assert_passed("certificate and proof", &answered("both", &r), &seen);
    assert!(
        m.stack.logs_contain("\"binding\":\"dpop+mtls\""),
        "{}",
        m.stack.envoy.log_tail(20)
    );
    let p = proof();
    let (r, seen) = m.curl(
        port,
        path,
        Some(other),
        &[("authorization", &auth), ("dpop", &p)],
    );
    assert_denied(
        "proof, other certificate",
        &answered("other", &r),
        &seen,
        "mtls_binding",
        Challenge::Bearer,
        "not the one the token is bound to",
    );
    let (r, seen) = m.curl(port, path, Some(good), &[("authorization", &auth)]);
    assert_denied(
        "certificate, no proof",
        &answered("no proof", &r),
        &seen,
        "invalid_dpop_proof",
        Challenge::Dpop("invalid_dpop_proof"),
        "no DPoP proof",
    );
    let plain = Proof::new(
        KeyName::Ed1,
        "GET",
        &format!("http://127.0.0.1:{port}{path}"),
        &token,
    )
    .sign();
    let (r, seen) = m.curl(
        port,
        path,
        Some(good),
        &[("authorization", &auth), ("dpop", &plain)],
    );
    assert_denied(
        "htu with http:// over TLS",
        &answered("http htu", &r),
        &seen,
        "invalid_dpop_proof",
        Challenge::Dpop("invalid_dpop_proof"),
        "htu is not the request URI",
    );
}

#[test]
fn the_node_script_fails_loudly_on_bad_arguments() {
    // The interop test relies on the script refusing what it does not understand.
    let out = Command::new("node")
        .arg(envoy::repo_root().join("wasm-test-harness/testdata/dpop-node.mjs"))
        .args(["--method", "GET"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): Node.js >= 16 is needed"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
