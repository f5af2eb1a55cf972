//! `signature_backend` in a real Envoy 1.40 (which has the host's `verify_signature`): `auto` and
//! `host` pick the host after its known-answer check, `wasm` stays in the VM; every algorithm
//! verifies and a forged signature of every algorithm is refused on each; the gauge and the log say
//! which backend is in use; an unknown backend name is refused at configure, naming the field.

// Tests panic on purpose; the crate-wide clippy denials are for the filter code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;
use wasm_test_harness::stack::Stack;
use wasm_test_harness::tokens::{self, mint_std, ALGS};

fn config(backend: Option<&str>) -> String {
    let mut c = json!({
        "realm": "demo",
        "providers": {
            "demo": {
                "issuer": tokens::ISSUER,
                "audiences": [tokens::AUDIENCE],
                "remote_jwks": {
                    "http_uri": {"uri": "http://idp.demo.local/jwks.json", "cluster": "idp", "timeout": "2s"},
                    "cache_duration": "300s"
                }
            }
        },
        "rules": [{"name": "api", "match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}]
    });
    if let Some(b) = backend {
        c["signature_backend"] = json!(b);
    }
    c.to_string()
}

/// The same token with the last signature character changed (still base64url, wrong signature).
fn forge(token: &str) -> String {
    let mut t = token.to_owned();
    let last = t.pop().unwrap();
    t.push(if last == 'A' { 'Q' } else { 'A' });
    t
}

fn run(backend: Option<&str>, want: &str) {
    let stack = Stack::start(config(backend), 2);
    for alg in ALGS {
        let token = mint_std(alg, "alice");
        for _ in 0..2 {
            let r = stack.get_with_token("/api", &token);
            assert_eq!(r.status, 200, "{backend:?} {alg}: valid token");
        }
        let r = stack.get_with_token("/api", &forge(&token));
        assert_eq!(r.status, 401, "{backend:?} {alg}: forged signature");
    }
    let stats = stack.prometheus();
    for b in ["host", "wasm"] {
        let name = format!("jwt_guard_signature_backend{{backend=\"{b}\"}}");
        assert_eq!(
            stats.get(&name).copied(),
            Some(if b == want { 1.0 } else { 0.0 }),
            "{backend:?}: {name}"
        );
    }
    assert!(
        stack.logs_contain(&format!("signature backend: {want}")),
        "{backend:?}: the log names the backend"
    );
}

#[test]
fn auto_uses_the_host_in_envoy_1_40() {
    run(None, "host");
}

#[test]
fn host_is_accepted_where_the_host_can_verify() {
    run(Some("host"), "host");
}

#[test]
fn wasm_never_asks_the_host() {
    run(Some("wasm"), "wasm");
}
