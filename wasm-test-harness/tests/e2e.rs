//! End-to-end scenarios: the built `.wasm` in a real Envoy, a mock IdP serving the JWKS over HTTP on
//! loopback (fetched by the filter through an Envoy cluster) and an echo upstream that records what
//! reached it. Each test starts its own stack, so tests run in parallel and tear down on drop.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wasm_test_harness::client::{try_http_request, Response};
use wasm_test_harness::stack::Stack;
use wasm_test_harness::tokens::{
    self, mint, sign_bytes_jws, sign_hmac, sign_raw, std_claims, with_changes as with, ALGS,
};
use wasm_test_harness::{envoy, Behavior, EchoUpstream, Envoy, EnvoyOptions, KeyName, MockIdp};

fn config(provider: Value, top: Value) -> String {
    envoy::demo_plugin_config_with(provider, top)
}

/// `jwt-guard explain` on the same config, keys and request does what the real Envoy did: forwards
/// it, or answers with the same status, challenge and body.
fn assert_explain_agrees(name: &str, token: Option<&str>, path: &str, r: &Response) {
    use jwt_guard_cli::explain::{explain, Options, Request};
    let opts = Options {
        config: envoy::demo_plugin_config().into_bytes(),
        request: Request {
            method: "GET".to_owned(),
            path: path.to_owned(),
            host: "localhost".to_owned(),
            token: token.map(str::to_owned),
            ..Request::default()
        },
        jwks: vec![(
            "demo".to_owned(),
            "the mock IdP's JWKS".to_owned(),
            wasm_test_harness::keys::jwks().to_string(),
        )],
        now_secs: tokens::now(),
    };
    let x = explain(&opts).unwrap_or_else(|e| panic!("{name}: explain failed: {e:?}"));
    if r.status == 200 {
        assert!(
            x.forwarded && x.response.is_none(),
            "{name}: explain answered {:?}",
            x.response
        );
        assert_eq!(x.decision, "allow", "{name}");
        return;
    }
    let answer = x
        .response
        .unwrap_or_else(|| panic!("{name}: explain forwards what Envoy answered {}", r.status));
    assert_eq!(
        answer.status,
        u32::from(r.status),
        "{name}: explain's status"
    );
    let challenge = |h: &[(String, String)]| {
        h.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        challenge(&answer.headers),
        challenge(&r.headers),
        "{name}: explain's challenge"
    );
    assert_eq!(answer.body, r.body, "{name}: explain's body");
    assert_eq!(x.reason, code(r), "{name}: explain's reason");
}

fn code(r: &Response) -> String {
    r.json()["code"].as_str().unwrap_or("<no code>").to_owned()
}

/// Asserts a denial: status, reason code, the RFC 6750 challenge, and that nothing reached upstream.
fn assert_denied(
    stack: &Stack,
    name: &str,
    r: &Response,
    status: u16,
    expected_code: &str,
    before: usize,
) {
    assert_eq!(r.status, status, "{name}: status (body {})", r.body);
    assert_eq!(code(r), expected_code, "{name}: reason code");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    match status {
        401 if expected_code == "missing" => {
            assert_eq!(challenge, "Bearer realm=\"demo\"", "{name}")
        }
        401 => assert!(
            challenge.starts_with("Bearer realm=\"demo\", error=\"invalid_token\""),
            "{name}: {challenge}"
        ),
        403 => assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{name}: {challenge}"
        ),
        400 => assert!(
            challenge.starts_with("Bearer realm=\"demo\", error=\"invalid_request\""),
            "{name}: {challenge}"
        ),
        _ => {}
    }
    assert_eq!(
        stack.echo.count(),
        before,
        "{name}: the upstream must not see a denied request"
    );
}

/// An ES256 token (real key) whose payload is the standard claims for alice plus `extra` members,
/// spliced in as raw JSON text so they can repeat a name.
fn dup_payload(extra: &str) -> String {
    let base = serde_json::to_string(&std_claims("alice")).expect("json");
    let payload = format!("{{{extra},{}", &base[1..]);
    sign_bytes_jws(
        br#"{"alg":"ES256","kid":"ec-1"}"#,
        payload.as_bytes(),
        KeyName::Ec1,
        "ES256",
    )
}

#[test]
fn every_algorithm_verifies_and_reaches_the_upstream() {
    let stack = Stack::start(envoy::demo_plugin_config(), 2);
    for alg in ALGS {
        let token = tokens::mint_std(alg, "alice");
        let before = stack.echo.count();
        let r = stack.get_with_token("/hello?x=1", &token);
        assert_eq!(r.status, 200, "{alg}: {}", r.body);
        assert_explain_agrees(alg, Some(&token), "/hello?x=1", &r);
        assert_eq!(stack.echo.count(), before + 1, "{alg}: upstream saw it");
        let seen = stack.echo.last().expect("recorded");
        assert_eq!(seen.path, "/hello?x=1");
        assert_eq!(seen.method, "GET");
        // Without a kid the key is chosen among keys that fit the algorithm.
        let r = stack.get_with_token("/hello", &mint(alg, None, &std_claims("bob")));
        assert_eq!(r.status, 200, "{alg} without kid: {}", r.body);
    }
    // A public route needs no token.
    assert_eq!(stack.request("GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn invalid_tokens_are_rejected_with_their_reason_and_never_reach_the_upstream() {
    let stack = Stack::start(envoy::demo_plugin_config(), 2);
    let now = tokens::now() as i64;
    let good = std_claims("alice");
    let es = |claims: &Value| mint("ES256", Some("ec-1"), claims);
    let hdr = |extra: Value| {
        let mut h = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"});
        for (k, v) in extra.as_object().expect("object") {
            h[k] = v.clone();
        }
        h
    };
    let rsa1_pub = KeyName::Rsa1.public_pem().as_bytes();
    let b64 = |s: &str| wasm_test_harness::keys::b64url(s.as_bytes());
    let unsigned = |alg: &str| {
        let header = json!({"alg": alg, "typ": "JWT"}).to_string();
        tokens::encode_parts(header.as_bytes(), good.to_string().as_bytes(), b"")
    };
    let oversized = mint(
        "ES256",
        Some("ec-1"),
        &with(good.clone(), json!({"pad": "x".repeat(9000)})),
    );

    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "expired",
            es(&with(good.clone(), json!({"exp": now - 120}))),
            401,
            "expired",
        ),
        (
            "not yet valid",
            es(&with(good.clone(), json!({"nbf": now + 600}))),
            401,
            "not_yet_valid",
        ),
        (
            "no exp",
            es(&with(good.clone(), json!({"exp": null}))),
            401,
            "missing_exp",
        ),
        (
            "wrong issuer",
            es(&with(good.clone(), json!({"iss": "https://evil.example"}))),
            401,
            "wrong_issuer",
        ),
        (
            "no issuer",
            es(&with(good.clone(), json!({"iss": null}))),
            401,
            "wrong_issuer",
        ),
        // A token for another audience is not valid here (RFC 6750 §3.1): 401, never a 403 that
        // would call it genuine before its signature was checked.
        (
            "wrong audience",
            es(&with(good.clone(), json!({"aud": "other-api"}))),
            401,
            "wrong_audience",
        ),
        (
            "wrong audience array",
            es(&with(good.clone(), json!({"aud": ["a", "b"]}))),
            401,
            "wrong_audience",
        ),
        (
            "forged signature and a foreign audience",
            sign_raw(
                &hdr(json!({})),
                &with(good.clone(), json!({"aud": "other-api"})),
                KeyName::RsaRogue,
            ),
            401,
            "wrong_audience",
        ),
        // A parser differential: two members of one name. Signed with the real key, so only the
        // duplicate can be the reason.
        (
            "duplicate exp (expired, then future)",
            dup_payload(&format!(
                r#""exp":{},"exp":{}"#,
                tokens::now() - 3600,
                tokens::now() + 3600
            )),
            401,
            "malformed",
        ),
        (
            "duplicate sub, second spelled with an escape",
            dup_payload(r#""sub":"alice","\u0073ub":"admin""#),
            401,
            "malformed",
        ),
        (
            "duplicate member in a nested claim",
            dup_payload(r#""org":{"id":"a","id":"b"}"#),
            401,
            "malformed",
        ),
        (
            "duplicate alg in the header",
            sign_bytes_jws(
                br#"{"alg":"ES256","kid":"ec-1","alg":"ES256"}"#,
                &serde_json::to_vec(&good).expect("json"),
                KeyName::Ec1,
                "ES256",
            ),
            401,
            "malformed",
        ),
        (
            "nested JWT (cty JWT)",
            sign_raw(&hdr(json!({"cty": "JWT"})), &good, KeyName::Rsa1),
            401,
            "forbidden_header",
        ),
        (
            "nested JWT (cty application/jwt)",
            sign_raw(
                &hdr(json!({"cty": "application/jwt"})),
                &good,
                KeyName::Rsa1,
            ),
            401,
            "forbidden_header",
        ),
        (
            "bad signature",
            sign_raw(&hdr(json!({})), &good, KeyName::RsaRogue),
            401,
            "bad_signature",
        ),
        (
            "alg none",
            sign_raw(&json!({"alg": "none", "typ": "JWT"}), &good, KeyName::Rsa1),
            401,
            "alg_not_allowed",
        ),
        ("alg None", unsigned("None"), 401, "alg_not_allowed"),
        ("alg NONE", unsigned("NONE"), 401, "alg_not_allowed"),
        (
            "alg nOnE with a signature",
            format!("{}sig", unsigned("nOnE")),
            401,
            "alg_not_allowed",
        ),
        (
            "HS256 keyed with the RSA public key",
            sign_hmac(&json!({"alg": "HS256", "kid": "rsa-1"}), &good, rsa1_pub),
            401,
            "alg_not_allowed",
        ),
        (
            "unknown kid",
            mint("RS256", Some("nope"), &good),
            401,
            "unknown_kid",
        ),
        (
            "kid of a use=enc key (skipped)",
            sign_raw(&hdr(json!({"kid": "enc-1"})), &good, KeyName::Rsa2),
            401,
            "unknown_kid",
        ),
        (
            "kid of the secp256k1 key (unsupported curve, skipped)",
            mint("ES256", Some(wasm_test_harness::keys::K1_KID), &good),
            401,
            "unknown_kid",
        ),
        (
            "ES256 naming the P-384 key",
            mint("ES256", Some("ec-384"), &good),
            401,
            "key_mismatch",
        ),
        (
            "ES512 naming the P-384 key",
            sign_raw(
                &json!({"alg": "ES512", "kid": "ec-384"}),
                &good,
                KeyName::Ec521,
            ),
            401,
            "key_mismatch",
        ),
        (
            "ES256 naming an RSA kid",
            mint("ES256", Some("rsa-1"), &good),
            401,
            "key_mismatch",
        ),
        (
            "jku header",
            sign_raw(
                &hdr(json!({"jku": "https://evil.example/jwks"})),
                &good,
                KeyName::Rsa1,
            ),
            401,
            "forbidden_header",
        ),
        (
            "jwk header",
            sign_raw(&hdr(json!({"jwk": {"kty": "RSA"}})), &good, KeyName::Rsa1),
            401,
            "forbidden_header",
        ),
        (
            "x5u header",
            sign_raw(
                &hdr(json!({"x5u": "https://evil.example/c"})),
                &good,
                KeyName::Rsa1,
            ),
            401,
            "forbidden_header",
        ),
        (
            "crit header",
            sign_raw(&hdr(json!({"crit": ["exp"]})), &good, KeyName::Rsa1),
            401,
            "forbidden_header",
        ),
        (
            "two segments",
            format!("{}.{}", b64("{\"alg\":\"RS256\"}"), b64("{}")),
            401,
            "malformed",
        ),
        (
            "four segments",
            format!("{}.x", es(&good)),
            401,
            "malformed",
        ),
        (
            "bad base64",
            format!("{}.@@@.{}", b64("{\"alg\":\"ES256\"}"), b64("sig")),
            401,
            "malformed",
        ),
        (
            "header not JSON",
            format!("{}.{}.{}", b64("nope"), b64("{}"), b64("sig")),
            401,
            "malformed",
        ),
        ("garbage", "abc".to_owned(), 401, "malformed"),
        ("oversized", oversized, 401, "oversized"),
    ];
    for (name, token, status, expected) in &cases {
        let before = stack.echo.count();
        let r = stack.get_with_token("/hello", token);
        assert_denied(&stack, name, &r, *status, expected, before);
        assert_explain_agrees(name, Some(token), "/hello", &r);
        assert!(
            !r.body.contains(token.as_str())
                && r.headers.iter().all(|(_, v)| !v.contains(token.as_str())),
            "{name}: token echoed"
        );
    }

    // Missing token: 401 with the bare challenge (RFC 6750 §3.1).
    let before = stack.echo.count();
    let r = stack.request("GET", "/hello", &[], b"");
    assert_denied(&stack, "missing", &r, 401, "missing", before);
    assert_explain_agrees("missing", None, "/hello", &r);
    let r = stack.request(
        "GET",
        "/hello",
        &[("authorization", b"Basic YWxpY2U6c2VjcmV0".to_vec())],
        b"",
    );
    assert_denied(&stack, "basic auth only", &r, 401, "missing", before);

    // A header value that is not UTF-8 is read as bytes and rejected cleanly.
    let r = stack.request(
        "GET",
        "/hello",
        &[("authorization", b"Bearer \xff\xfe\xfd.\x80.\x81".to_vec())],
        b"",
    );
    assert_denied(&stack, "non-UTF-8 header", &r, 401, "malformed", before);

    // Two Authorization headers (a valid token and another): more than one token is
    // `400 invalid_request` (RFC 6750 §3.1), whatever their order.
    let valid = tokens::mint_std("ES256", "alice");
    let r = stack.request(
        "GET",
        "/hello",
        &[
            ("authorization", format!("Bearer {valid}").into_bytes()),
            ("authorization", b"Bearer forged.token.here".to_vec()),
        ],
        b"",
    );
    assert_denied(
        &stack,
        "two authorization headers",
        &r,
        400,
        "invalid_request",
        before,
    );

    // A POST with a body and a bad token: the body must not carry the request past the filter.
    let bad = sign_raw(&hdr(json!({})), &good, KeyName::RsaRogue);
    let r = stack.request(
        "POST",
        "/hello",
        &[("authorization", format!("Bearer {bad}").into_bytes())],
        b"{\"x\":1}",
    );
    assert_denied(&stack, "POST with body", &r, 401, "bad_signature", before);

    // No token ever appears in Envoy's log.
    let logs = stack.envoy.logs();
    for (name, token, _, _) in &cases {
        if token.len() > 20 {
            assert!(
                !logs.contains(token.as_str()),
                "{name}: token found in Envoy's log"
            );
        }
    }
    assert!(stack.idp.jwks_requests() >= 1);
}

#[test]
fn first_request_after_start_waits_for_the_jwks_and_succeeds() {
    let idp = MockIdp::start();
    idp.set_behavior(Behavior::Delay(Duration::from_millis(700)));
    let stack = Stack::new(idp, envoy::demo_plugin_config(), 2);
    let started = Instant::now();
    let token = tokens::mint_std("RS256", "alice");
    let good = std::thread::spawn({
        let port = stack.envoy.listen_port();
        let token = token.clone();
        move || {
            try_http_request(
                port,
                "GET",
                "/first",
                &[("authorization", format!("Bearer {token}").into_bytes())],
                b"",
            )
        }
    });
    // Meanwhile a POST with a forged token, also parked: its body must not push it through.
    let forged = sign_raw(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &std_claims("mallory"),
        KeyName::RsaRogue,
    );
    let r = stack.request(
        "POST",
        "/first",
        &[("authorization", format!("Bearer {forged}").into_bytes())],
        b"body",
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(code(&r), "bad_signature");
    let r = good.join().expect("thread").expect("request");
    assert_eq!(r.status, 200, "first request after start: {}", r.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        stack.echo.count(),
        1,
        "only the valid request reached the upstream"
    );
    assert_eq!(stack.echo.last().expect("one").method, "GET");
}

#[test]
fn one_jwks_fetch_is_shared_by_all_workers() {
    let stack = Stack::start(envoy::demo_plugin_config(), 4);
    let port = stack.envoy.listen_port();
    let token = tokens::mint_std("ES256", "alice");
    // Many connections at once, so every worker VM handles some of them.
    let handles: Vec<_> = (0..48)
        .map(|_| {
            let token = token.clone();
            std::thread::spawn(move || {
                try_http_request(
                    port,
                    "GET",
                    "/w",
                    &[("authorization", format!("Bearer {token}").into_bytes())],
                    b"",
                )
                .map(|r| r.status)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), Ok(200));
    }
    assert_eq!(
        stack.idp.jwks_requests(),
        1,
        "one fetch for the whole Envoy, not one per worker"
    );
    let logs = stack.envoy.logs();
    assert_eq!(
        logs.matches("fetched JWKS generation").count(),
        1,
        "one fetch logged"
    );
    // Unusable keys (use=enc, the secp256k1 curve, an unknown kty) are skipped, not fatal; every
    // other published key (RSA, P-256, P-384, P-521, Ed25519) is usable.
    let unusable = ["enc-1", wasm_test_harness::keys::K1_KID, "weird"];
    let published = wasm_test_harness::keys::jwks()["keys"]
        .as_array()
        .map_or(0, Vec::len);
    let line = format!(
        "with {} usable keys; skipped {}: ",
        published - unusable.len(),
        unusable.len()
    );
    assert!(
        logs.contains(&line),
        "expected {line:?} in the logs:\n{logs}"
    );
    for kid in unusable {
        assert!(
            logs.contains(&format!("\"{kid}\" (")),
            "{kid} named as skipped"
        );
    }
}

#[test]
fn the_cache_expires_and_is_refreshed_with_the_new_key_set() {
    let cfg = config(
        json!({"remote_jwks": {
        "http_uri": {"uri": "http://idp.demo.local/jwks.json", "cluster": "idp", "timeout": "1s"},
        "cache_duration": "2s"}}),
        json!({}),
    );
    let stack = Stack::start(cfg, 2);
    let rs = tokens::mint_std("RS256", "alice");
    let es = tokens::mint_std("ES256", "alice");
    assert_eq!(stack.get_with_token("/a", &rs).status, 200);
    assert_eq!(stack.idp.jwks_requests(), 1);
    // The IdP rotates: rsa-1 is gone. After the cache duration the filter has the new set.
    stack
        .idp
        .set_jwks(wasm_test_harness::keys::jwks_of(&[KeyName::Ec1]));
    assert!(
        stack.idp.wait_for_jwks_requests(2, Duration::from_secs(6)),
        "refreshed in the background"
    );
    // Every worker picks the new generation up from shared data on its next tick (at most ~1 s).
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut r = stack.get_with_token("/a", &rs);
    while r.status == 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        r = stack.get_with_token("/a", &rs);
    }
    assert_eq!((r.status, code(&r)), (401, "unknown_kid".to_owned()));
    for _ in 0..8 {
        let r = stack.get_with_token("/a", &rs);
        assert_eq!(r.status, 401, "every worker has the new set");
    }
    assert_eq!(stack.get_with_token("/a", &es).status, 200);
    // Refreshes are periodic, not per request.
    let fetched = stack.idp.jwks_requests();
    for _ in 0..20 {
        stack.get_with_token("/a", &es);
    }
    assert!(stack.idp.jwks_requests() <= fetched + 1);
}

#[test]
fn idp_down_at_start_fails_closed_with_503_then_recovers() {
    let idp = MockIdp::start();
    idp.set_behavior(Behavior::Status(500));
    let cfg = config(json!({}), json!({"jwks_wait_timeout": "1s"}));
    let stack = Stack::new(idp, cfg, 2);
    let token = tokens::mint_std("EdDSA", "alice");
    let t = Instant::now();
    let r = stack.get_with_token("/down", &token);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(code(&r), "keys_unavailable");
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(
        t.elapsed() >= Duration::from_millis(900) || stack.idp.jwks_requests() >= 2,
        "waited for the keys before failing closed (or stopped once fetches kept failing): {:?}",
        t.elapsed()
    );
    assert_eq!(stack.echo.count(), 0);
    // Failures back off: a handful of fetches, not one per request or per tick.
    let attempts = stack.idp.jwks_requests();
    assert!((1..=4).contains(&attempts), "{attempts} fetches");
    for behavior in [Behavior::Garbage, Behavior::Normal] {
        stack.idp.set_behavior(behavior);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = stack.get_with_token("/down", &token);
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            Instant::now() < deadline,
            "did not recover once the IdP was back"
        );
    }
    let logs = stack.envoy.logs();
    assert!(
        logs.contains("JWKS endpoint answered HTTP 500"),
        "failure logged with its cause"
    );
}

#[test]
fn a_bad_plugin_config_is_refused_with_the_field_named() {
    let idp = MockIdp::start();
    let echo = EchoUpstream::start();
    let bad = config(json!({"audiance": ["x"]}), json!({}));
    let opts = EnvoyOptions {
        plugin_config: bad,
        idp_port: idp.port(),
        upstream_port: echo.port(),
        ..EnvoyOptions::default()
    };
    let (code, logs) = Envoy::start_expect_exit(opts);
    assert_ne!(code, 0, "Envoy must not serve with a broken filter config");
    assert!(
        logs.contains("invalid plugin configuration: providers.demo"),
        "{}",
        envoy::tail(&logs, 30)
    );
    assert!(logs.contains("audiance"), "the unknown field is named");
}

#[test]
fn every_envoy_config_in_the_repo_validates() {
    let root = envoy::repo_root();
    let mut checked = 0;
    for dir in ["envoy", "examples"] {
        for entry in walk(&root.join(dir)) {
            if entry.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&entry).expect("read");
            if text.contains("path_config_source") && !text.contains("{{") {
                // A file-LDS bootstrap: `--mode validate` does not read the listener file, so validate
                // the pair as one static bootstrap (the listener file sits next to it).
                let listener = entry.with_file_name("listener.yaml");
                let lds = std::fs::read_to_string(&listener)
                    .expect("listener.yaml next to the LDS bootstrap");
                let wasm = envoy::wasm_path().display().to_string();
                let combined = envoy::lds_as_static_bootstrap(&text, &lds)
                    .unwrap_or_else(|e| panic!("{}: {e}", entry.display()))
                    .replace("/etc/envoy/jwt_guard.wasm", &wasm);
                let dir = std::env::temp_dir()
                    .join(format!("jwt-guard-validate-lds-{}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let path = dir.join("envoy-lds-static.yaml");
                std::fs::write(&path, combined).expect("write");
                envoy::validate(&path)
                    .unwrap_or_else(|e| panic!("{} + listener.yaml: {e}", entry.display()));
                checked += 1;
                continue;
            }
            if !text.contains("static_resources") && !text.contains("admin:") {
                continue; // not an Envoy bootstrap (e.g. Kubernetes manifests)
            }
            if text.contains("{{") {
                // A template: render it the way the harness does.
                let opts = EnvoyOptions {
                    template: entry.clone(),
                    idp_port: 9,
                    upstream_port: 9,
                    ..EnvoyOptions::default()
                };
                envoy::validate_options(&opts)
                    .unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
            } else {
                // A deployable example: validate it as written, with the module path pointed at the
                // built .wasm (Envoy loads the module and runs its configure step in validate mode).
                let wasm = envoy::wasm_path().display().to_string();
                let rendered = text.replace("/etc/envoy/jwt_guard.wasm", &wasm);
                let dir =
                    std::env::temp_dir().join(format!("jwt-guard-validate-{}", std::process::id()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let path = dir.join(entry.file_name().expect("file name"));
                std::fs::write(&path, rendered).expect("write");
                envoy::validate(&path).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected envoy/envoy.yaml and examples/envoy/envoy.yaml, checked {checked}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
