//! The forged-token memory through a real Envoy (one worker, so every repeat lands in the same VM):
//! a forged token sent again is denied exactly as before without a signature check, counted in
//! `jwt_guard_forged_cache_hits`, and a key-set change makes the next request verify it again.

use serde_json::{json, Value};
use std::time::Duration;
use wasm_test_harness::keys::{jwk_of, jwks_of};
use wasm_test_harness::stack::Stack;
use wasm_test_harness::tokens::{self, sign_raw, std_claims};
use wasm_test_harness::{envoy, KeyName, MockIdp};

fn config() -> String {
    let mut cfg: Value = serde_json::from_str(&envoy::demo_plugin_config()).expect("demo config");
    cfg["providers"]["demo"]["remote_jwks"]["unknown_kid_refetch_interval"] = json!("1s");
    cfg.to_string()
}

fn stat(stack: &Stack, prefix: &str) -> f64 {
    stack
        .prometheus()
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| *v)
        .sum()
}

#[test]
fn a_forged_token_repeated_is_denied_from_memory_until_the_key_set_changes() {
    // The IdP publishes rsa-1's public key under kid "rsa-2" as well: a token signed with the real
    // rsa-2 key is then forged as far as the filter can tell, until the IdP publishes the real key.
    let mut wrong = jwk_of(KeyName::Rsa1);
    wrong["kid"] = json!("rsa-2");
    let mut served = jwks_of(&[KeyName::Rsa1, KeyName::Ec1]);
    served["keys"].as_array_mut().expect("keys").push(wrong);
    let idp = MockIdp::start();
    idp.set_jwks(served);
    let stack = Stack::new(idp, config(), 1);
    let token = sign_raw(
        &json!({"alg": "RS256", "kid": "rsa-2", "typ": "JWT"}),
        &std_claims("mallory"),
        KeyName::Rsa2,
    );
    const N: usize = 5;
    for i in 0..N {
        let r = stack.get_with_token("/x", &token);
        assert_eq!(r.status, 401, "request {i}: {}", r.body);
        assert_eq!(r.json()["code"], "bad_signature", "request {i}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "request {i}: {challenge}"
        );
    }
    assert_eq!(stack.echo.count(), 0);
    assert_eq!(
        stat(&stack, "jwt_guard_forged_cache_hits"),
        (N - 1) as f64,
        "every repeat after the first is answered from the memory"
    );
    let bad_signature: f64 = stack
        .prometheus()
        .iter()
        .filter(|(k, _)| {
            k.starts_with("jwt_guard_decisions{")
                && k.contains("outcome=\"deny\"")
                && k.contains("reason=\"bad_signature\"")
        })
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(
        bad_signature, N as f64,
        "each one is counted as a bad_signature denial, hit or not"
    );
    // The IdP rotates to the real rsa-2 key. A token with an unknown kid triggers the early refetch
    // (at most one per second), which publishes a new key-set generation.
    stack
        .idp
        .set_jwks(jwks_of(&[KeyName::Rsa1, KeyName::Rsa2, KeyName::Ec1]));
    std::thread::sleep(Duration::from_millis(1100));
    let unknown = sign_raw(
        &json!({"alg": "ES256", "kid": "ec-unknown"}),
        &std_claims("mallory"),
        KeyName::Ec1,
    );
    let r = stack.get_with_token("/x", &unknown);
    assert_eq!(r.json()["code"], "unknown_kid", "{}", r.body);
    assert!(
        stack.idp.wait_for_jwks_requests(2, Duration::from_secs(5)),
        "the refetch happened"
    );
    // The next request verifies the token again, against the new generation: now it is valid.
    let r = stack.get_with_token("/x", &token);
    assert_eq!(
        r.status, 200,
        "verified again after the key-set change: {}",
        r.body
    );
    assert_eq!(stat(&stack, "jwt_guard_forged_cache_hits"), (N - 1) as f64);
    // And a valid token is never answered from the memory.
    assert_eq!(
        stack
            .get_with_token("/x", &tokens::mint_std("ES256", "alice"))
            .status,
        200
    );
    assert_eq!(stat(&stack, "jwt_guard_forged_cache_hits"), (N - 1) as f64);
}
