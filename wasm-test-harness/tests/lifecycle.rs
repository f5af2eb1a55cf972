//! JWKS lifecycle under rotation and IdP failure, through a real Envoy: the mock IdP is made slow,
//! down, broken or rotating, and each scenario asserts what clients got and what the IdP saw.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wasm_test_harness::client::{try_http_request, Response};
use wasm_test_harness::keys::jwks_of;
use wasm_test_harness::stack::Stack;
use wasm_test_harness::tokens::{self, mint, sign_raw, std_claims};
use wasm_test_harness::{envoy, Behavior, KeyName, MockIdp};

/// The demo config with `remote_jwks` fields and top-level fields replaced.
fn config(remote: Value, top: Value) -> String {
    let mut cfg: Value = serde_json::from_str(&envoy::demo_plugin_config()).expect("demo config");
    for (k, v) in remote.as_object().expect("object") {
        if v.is_null() {
            cfg["providers"]["demo"]["remote_jwks"]
                .as_object_mut()
                .expect("object")
                .remove(k);
        } else {
            cfg["providers"]["demo"]["remote_jwks"][k] = v.clone();
        }
    }
    for (k, v) in top.as_object().expect("object") {
        cfg[k] = v.clone();
    }
    cfg.to_string()
}

fn two_workers(idp: MockIdp, plugin_config: String) -> Stack {
    Stack::new(idp, plugin_config, 2)
}

fn code(r: &Response) -> String {
    r.json()["code"].as_str().unwrap_or("<none>").to_owned()
}

fn good() -> String {
    tokens::mint_std("ES256", "alice")
}

#[test]
fn idp_down_at_start_waits_then_fails_closed_and_recovers_by_itself() {
    let idp = MockIdp::start();
    idp.set_behavior(Behavior::Status(503));
    let stack = two_workers(
        idp,
        config(json!({}), json!({"jwks_wait_timeout": "1500ms"})),
    );
    let t = Instant::now();
    let r = stack.get_with_token("/x", &good());
    assert_eq!((r.status, code(&r)), (503, "keys_unavailable".to_owned()));
    assert_eq!(r.header("retry-after"), Some("5"));
    // It waited for keys: either the full bound, or until the second failed fetch made waiting
    // pointless (with Envoy in a container, start-up can take long enough for that to come first).
    assert!(
        t.elapsed() >= Duration::from_millis(1000) || stack.idp.jwks_requests() >= 2,
        "the first request neither waited nor saw failing fetches ({:?})",
        t.elapsed()
    );
    // Once fetches keep failing, requests stop waiting: the 503 comes at once.
    let t = Instant::now();
    let r = stack.get_with_token("/x", &good());
    assert_eq!(r.status, 503);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "fast fail while the IdP is down: {:?}",
        t.elapsed()
    );
    let during = stack.idp.jwks_requests();
    assert!(
        (2..=4).contains(&during),
        "backoff bounds the fetches: {during}"
    );
    assert_eq!(stack.echo.count(), 0);
    stack.idp.set_behavior(Behavior::Normal);
    let deadline = Instant::now() + Duration::from_secs(15);
    while stack.get_with_token("/x", &good()).status != 200 {
        assert!(
            Instant::now() < deadline,
            "did not recover once the IdP was back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(stack.logs_contain("key refresh failed: JWKS endpoint answered HTTP 503"));
}

#[test]
fn idp_down_after_start_cached_keys_work_until_max_stale_then_503() {
    let cfg = config(
        json!({"cache_duration": "2s", "max_stale": "3s"}),
        json!({"jwks_wait_timeout": "500ms"}),
    );
    let stack = two_workers(MockIdp::start(), cfg);
    assert_eq!(stack.get_with_token("/x", &good()).status, 200);
    let up_since = Instant::now();
    stack.idp.set_behavior(Behavior::Status(500));
    // The set was fetched at most a moment before `up_since`: it expires within 2 s and, with max_stale
    // 3 s, stays usable until ~5 s after the fetch. Up to 3.2 s (well past expiry) it must keep working.
    while up_since.elapsed() < Duration::from_millis(3200) {
        let r = stack.get_with_token("/x", &good());
        assert_eq!(r.status, 200, "at {:?}: {}", up_since.elapsed(), r.body);
        std::thread::sleep(Duration::from_millis(250));
    }
    // Past max_stale (≤ 5 s after the fetch) it fails closed.
    let deadline = up_since + Duration::from_secs(8);
    let r = loop {
        let r = stack.get_with_token("/x", &good());
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        up_since.elapsed() >= Duration::from_millis(3200),
        "not before the stale window is over"
    );
    assert_eq!(
        (r.status, code(&r)),
        (503, "keys_unavailable".to_owned()),
        "past max_stale"
    );
    assert!(stack.logs_contain("key set stale"));
    assert!(stack.logs_contain("key set unavailable"));
    let fetches = stack.idp.jwks_requests();
    assert!(fetches <= 7, "retries back off: {fetches} fetches in ~6 s");
    // Each failure is logged once per attempt, not per request.
    let failures = stack.envoy.logs().matches("key refresh failed").count();
    assert!(
        failures <= fetches,
        "{failures} failure lines for {fetches} fetches"
    );
}

#[test]
fn broken_answers_never_replace_a_good_key_set() {
    let cfg = config(
        json!({"cache_duration": "1s", "max_stale": "60s"}),
        json!({}),
    );
    let stack = two_workers(MockIdp::start(), cfg);
    assert_eq!(stack.get_with_token("/x", &good()).status, 200);
    let enc_only = json!({"keys": [{"kty": "RSA", "use": "enc", "kid": "enc-x",
        "n": jwks_of(&[KeyName::Rsa2])["keys"][0]["n"], "e": "AQAB"}]});
    type Fault<'a> = (&'a str, Box<dyn Fn(&MockIdp)>, &'a str);
    let faults: Vec<Fault> = vec![
        (
            "garbage",
            Box::new(|i: &MockIdp| i.set_behavior(Behavior::Garbage)),
            "JWKS is not a JSON object",
        ),
        (
            "oversized",
            Box::new(|i: &MockIdp| i.set_behavior(Behavior::Oversized)),
            "limit is 262144",
        ),
        (
            "encryption keys only",
            Box::new(move |i: &MockIdp| {
                i.set_behavior(Behavior::Normal);
                i.set_jwks(enc_only.clone());
            }),
            "no usable signing key",
        ),
        (
            "slower than the timeout",
            Box::new(|i: &MockIdp| i.set_behavior(Behavior::Delay(Duration::from_millis(2500)))),
            "timeout",
        ),
    ];
    for (name, apply, logged) in faults {
        apply(&stack.idp);
        let before = stack.idp.jwks_requests();
        assert!(
            stack
                .idp
                .wait_for_jwks_requests(before + 1, Duration::from_secs(40)),
            "{name}: a refresh was tried"
        );
        assert!(
            stack.logs_contain(logged),
            "{name}: failure logged with {logged:?}"
        );
        let r = stack.get_with_token("/x", &good());
        assert_eq!(
            r.status, 200,
            "{name}: the last good key set is still used: {}",
            r.body
        );
    }
}

#[test]
fn rotation_new_kid_is_fetched_on_demand_and_old_tokens_live_out_their_grace() {
    let cfg = config(
        json!({"cache_duration": "60s", "rotation_grace": "3s", "unknown_kid_refetch_interval": "1s"}),
        json!({}),
    );
    let idp = MockIdp::start();
    idp.set_jwks(jwks_of(&[KeyName::Rsa1, KeyName::Ec1]));
    let stack = two_workers(idp, cfg);
    let old = mint("RS256", Some("rsa-1"), &std_claims("alice"));
    let new = sign_raw(
        &json!({"alg": "RS256", "kid": "rsa-2"}),
        &std_claims("alice"),
        KeyName::Rsa2,
    );
    assert_eq!(stack.get_with_token("/x", &old).status, 200);
    assert_eq!(stack.idp.jwks_requests(), 1);
    // The IdP rotates: rsa-2 signs, rsa-1 is withdrawn. The first token naming rsa-2 triggers one
    // early refetch and waits for it, so it succeeds at once (no 401 window until the cache expires).
    stack.idp.set_jwks(jwks_of(&[KeyName::Rsa2, KeyName::Ec1]));
    let r = stack.get_with_token("/x", &new);
    assert_eq!(r.status, 200, "new kid: {}", r.body);
    assert_eq!(stack.idp.jwks_requests(), 2, "exactly one early refetch");
    let rotated = Instant::now();
    // Tokens signed with the withdrawn key keep working for the grace period...
    assert_eq!(
        stack.get_with_token("/x", &old).status,
        200,
        "old token within the grace period"
    );
    // ...and fail after it (token times have one-second resolution, hence the extra second).
    std::thread::sleep(Duration::from_millis(4300).saturating_sub(rotated.elapsed()));
    let r = stack.get_with_token("/x", &old);
    assert_eq!(
        (r.status, code(&r)),
        (401, "unknown_kid".to_owned()),
        "after the grace period"
    );
    assert_eq!(stack.get_with_token("/x", &new).status, 200);
}

#[test]
fn a_random_kid_flood_costs_at_most_the_rate_limited_fetches() {
    let stack = two_workers(MockIdp::start(), config(json!({}), json!({})));
    assert_eq!(stack.get_with_token("/x", &good()).status, 200);
    let port = stack.envoy.listen_port();
    let handles: Vec<_> = (0..60)
        .map(|i| {
            std::thread::spawn(move || {
                let token = mint(
                    "ES256",
                    Some(&format!("random-{i}-{}", i * 7919)),
                    &std_claims("mallory"),
                );
                // The kid is unknown; the signature is ec-1's (the kid just does not name it).
                try_http_request(
                    port,
                    "GET",
                    "/x",
                    &[("authorization", format!("Bearer {token}").into_bytes())],
                    b"",
                )
                .map(|r| {
                    (
                        r.status,
                        r.json()["code"].as_str().unwrap_or_default().to_owned(),
                    )
                })
            })
        })
        .collect();
    for h in handles {
        assert_eq!(
            h.join().expect("thread"),
            Ok((401, "unknown_kid".to_owned()))
        );
    }
    let fetches = stack.idp.jwks_requests();
    assert_eq!(
        fetches, 2,
        "the initial fetch plus one rate-limited refetch (default 30 s interval)"
    );
    assert_eq!(stack.echo.count(), 1);
}

#[test]
fn oidc_discovery_is_followed_and_a_mismatched_issuer_is_rejected() {
    let discovery = json!({"http_uri": null, "discovery": {"cluster": "idp", "timeout": "1s"}});
    let stack = two_workers(MockIdp::start(), config(discovery.clone(), json!({})));
    assert_eq!(
        stack.get_with_token("/x", &good()).status,
        200,
        "keys found through discovery"
    );
    assert_eq!(stack.idp.discovery_requests(), 1);
    assert_eq!(stack.idp.jwks_requests(), 1);

    let idp = MockIdp::start();
    idp.set_discovery_issuer("https://evil.example");
    let stack = two_workers(idp, config(discovery, json!({"jwks_wait_timeout": "1s"})));
    let r = stack.get_with_token("/x", &good());
    assert_eq!((r.status, code(&r)), (503, "keys_unavailable".to_owned()));
    assert!(stack.idp.discovery_requests() >= 1);
    assert_eq!(
        stack.idp.jwks_requests(),
        0,
        "a mismatched discovery document is never followed"
    );
    assert!(stack.logs_contain("does not match the configured issuer"));
}

#[test]
fn a_cached_token_fails_closed_on_every_worker_once_the_key_set_is_past_max_stale() {
    let cfg = config(
        json!({"cache_duration": "2s", "max_stale": "2s"}),
        json!({"jwks_wait_timeout": "500ms"}),
    );
    let stack = two_workers(MockIdp::start(), cfg);
    let token = good();
    // One connection per request: with two workers, both see (and cache) the token.
    for _ in 0..12 {
        assert_eq!(stack.get_with_token("/x", &token).status, 200);
    }
    let hits = stack
        .prometheus()
        .get("jwt_guard_token_cache_hits{}")
        .copied()
        .unwrap_or(0.0);
    assert!(
        hits >= 2.0,
        "the token is served from the cache: {hits} hits"
    );
    stack.idp.set_behavior(Behavior::Status(503));
    let down = Instant::now();
    // The set was fetched at most ~2 s before `down` (refreshes keep it fresh): it expires within 2 s
    // and is unusable 2 s (max_stale) after that.
    let deadline = down + Duration::from_secs(8);
    while stack.get_with_token("/x", &token).status == 200 {
        assert!(
            Instant::now() < deadline,
            "a cached token was still allowed {:?} after the IdP went down (max_stale 2 s)",
            down.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(stack.logs_contain("key set unavailable"));
    let port = stack.envoy.listen_port();
    let header = [("authorization", format!("Bearer {token}").into_bytes())];
    let reached = stack.echo.count();
    let answers: Vec<(u16, String)> = (0..24)
        .map(|_| {
            let r = try_http_request(port, "GET", "/x", &header, b"").expect("request");
            (r.status, code(&r))
        })
        .collect();
    assert!(
        answers
            .iter()
            .all(|a| *a == (503, "keys_unavailable".to_owned())),
        "{answers:?}"
    );
    assert_eq!(
        stack.echo.count(),
        reached,
        "nothing reached the upstream after max_stale"
    );
}

#[test]
fn a_one_second_cache_stays_fresh_with_a_healthy_idp() {
    let cfg = config(json!({"cache_duration": "1s"}), json!({}));
    let stack = two_workers(MockIdp::start(), cfg);
    assert_eq!(stack.get_with_token("/x", &good()).status, 200);
    let start = Instant::now();
    let fetches_before = stack.idp.jwks_requests();
    let mut stale_samples = Vec::new();
    while start.elapsed() < Duration::from_secs(5) {
        let r = stack.get_with_token("/x", &good());
        assert_eq!(r.status, 200, "at {:?}: {}", start.elapsed(), r.body);
        let stale = stack
            .prometheus()
            .get("jwt_guard_jwks_stale{provider=\"demo\"}")
            .copied();
        if stale != Some(0.0) {
            stale_samples.push((start.elapsed(), stale));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let fetches = stack.idp.jwks_requests() - fetches_before;
    let logs = stack.envoy.logs();
    assert!(
        !logs.contains("key set stale"),
        "{}",
        logs.lines()
            .filter(|l| l.contains("key set"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stale_samples.is_empty(), "stale gauge: {stale_samples:?}");
    // Refreshed early enough, but not much more often than the cache duration asks for.
    assert!((4..=12).contains(&fetches), "{fetches} fetches in 5 s");
    eprintln!("1 s cache: {fetches} JWKS fetches in 5 s");
}

#[test]
fn skipped_kids_are_logged_escaped_and_bounded_for_remote_and_inline_key_sets() {
    let hostile = "evil\r\nprovider demo: key set fresh \u{1b}[2J\"";
    let mut served = jwks_of(&[KeyName::Ec1]);
    let keys = served["keys"].as_array_mut().expect("keys");
    keys.push(json!({"kty": "oct", "kid": hostile, "k": "AAAA"}));
    for i in 0..30 {
        keys.push(json!({"kty": "oct", "kid": format!("filler-{i}"), "k": "AAAA"}));
    }
    let idp = MockIdp::start();
    idp.set_jwks(served.clone());
    let mut cfg: Value = serde_json::from_str(&config(json!({}), json!({}))).expect("config");
    let mut inline = cfg["providers"]["demo"].clone();
    inline
        .as_object_mut()
        .expect("object")
        .remove("remote_jwks");
    inline["local_jwks"] = json!({"inline": served});
    cfg["providers"]["inline"] = inline;
    let stack = two_workers(idp, cfg.to_string());
    assert_eq!(stack.get_with_token("/x", &good()).status, 200);
    let escaped = r#"skipped 31: "evil\u{d}\u{a}provider demo: key set fresh \u{1b}[2J\"" (symmetric keys are never used), "filler-0" (symmetric keys are never used)"#;
    assert!(stack.logs_contain(&format!(
        "provider demo: fetched JWKS generation 1 with 1 usable keys; {escaped}"
    )));
    assert!(stack.logs_contain(&format!(
        "provider inline: local JWKS has 1 usable keys; {escaped}"
    )));
    assert!(stack.logs_contain(", and 26 more"));
    let logs = stack.envoy.logs();
    assert!(
        !logs.contains('\u{1b}'),
        "no raw escape sequence in the log"
    );
    assert!(
        logs.lines().all(|l| !l.starts_with("provider demo")),
        "no line forged by a kid"
    );
}
