//! Per-route policy and the identity header contract, end to end through a real Envoy: shadow vs
//! enforce, scopes, claims, allow_missing, degraded vs fail-closed, CORS preflight, and the stripping
//! of client-sent identity headers on every path.

use serde_json::{json, Value};
use std::time::Duration;
use wasm_test_harness::client::{try_http_request, Response};
use wasm_test_harness::stack::Stack;
use wasm_test_harness::tokens::{self, encode_parts, mint, sign_raw, std_claims};
use wasm_test_harness::{
    Behavior, EchoUpstream, Envoy, EnvoyOptions, KeyName, MockIdp, RecordedRequest,
};

fn policy_config(top: Value) -> String {
    let mut cfg = json!({
        "realm": "demo",
        "providers": {
            "demo": {
                "issuer": tokens::ISSUER,
                "audiences": [tokens::AUDIENCE],
                "remote_jwks": {
                    "http_uri": {"uri": "http://idp.demo.local/jwks.json", "cluster": "idp", "timeout": "2s"},
                    "cache_duration": "300s"
                },
                "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
                "from_params": ["access_token"],
                "claim_to_headers": [
                    {"claim": "sub", "header": "x-user-sub"},
                    {"claim": "scope", "header": "x-user-scope"},
                    {"claim": "tenant", "header": "x-tenant-id"},
                    {"claim": "org.id", "header": "x-user-org"},
                    {"claim": "groups", "header": "x-user-groups"},
                    {"claim": "email_verified", "header": "x-user-email-verified"},
                    {"claim": "level", "header": "x-user-level"},
                    {"claim": "note", "header": "x-user-note"}
                ]
            }
        },
        "rules": [
            {"name": "public", "match": {"path": "/public"}},
            {"name": "off", "match": {"prefix": "/off/"}, "requires": {"provider_name": "demo"}, "mode": "off"},
            {"name": "items-read", "match": {"template": "/items/{id}", "methods": ["GET"]},
             "requires": {"provider_name": "demo", "scopes": ["read:items"]}},
            {"name": "admin", "match": {"route_name": "admin-route"},
             "requires": {"provider_name": "demo", "any_scopes": ["admin", "ops"]}},
            {"name": "tenant", "match": {"prefix": "/tenant/"},
             "requires": {"provider_name": "demo", "claims": [{"name": "tenant", "values": ["acme"]}]}},
            {"name": "optional", "match": {"prefix": "/optional/"},
             "requires": {"provider_name": "demo", "allow_missing": true}},
            {"name": "shadow", "match": {"prefix": "/shadow/"},
             "requires": {"provider_name": "demo", "scopes": ["read:items"]}, "mode": "shadow"},
            {"name": "degraded", "match": {"prefix": "/degraded/"},
             "requires": {"provider_name": "demo"}, "on_keys_unavailable": "degraded"},
            {"name": "partner-host", "match": {"hosts": ["partner.example.com"], "prefix": "/host/"}, "mode": "off"},
            {"name": "enforce", "match": {"prefix": "/"}, "requires": {"provider_name": "demo"}}
        ]
    });
    for (k, v) in top.as_object().expect("object") {
        cfg[k] = v.clone();
    }
    cfg.to_string()
}

fn claims(extra: Value) -> Value {
    let mut c = std_claims("alice");
    for (k, v) in extra.as_object().expect("object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn es(extra: Value) -> String {
    mint("ES256", Some("ec-1"), &claims(extra))
}

fn code(r: &Response) -> String {
    r.json()["code"].as_str().unwrap_or("<none>").to_owned()
}

/// Headers a client might send to impersonate someone.
const SPOOFED: &[(&str, &str)] = &[
    ("x-user-sub", "evil"),
    ("X-User-Role", "evil"),
    ("x-tenant-id", "evil"),
    ("x-user-org", "evil"),
    ("x-auth-shadow", "allow; evil"),
    ("x-auth-degraded", "evil"),
    ("X-Auth-Anything", "evil"),
];

fn assert_no_spoof(name: &str, seen: &RecordedRequest) {
    for (k, v) in &seen.headers {
        assert!(
            !v.contains("evil"),
            "{name}: client header {k}: {v} reached the upstream"
        );
    }
}

#[test]
fn shadow_records_every_would_deny_and_enforce_blocks_it() {
    let stack = Stack::new(MockIdp::start(), policy_config(json!({})), 2);
    let now = tokens::now() as i64;
    let scoped = json!({"scope": "read:items"});
    let with = |extra: Value| {
        let mut c = scoped.clone();
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        es(c)
    };
    let forged = sign_raw(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &claims(scoped.clone()),
        KeyName::RsaRogue,
    );
    let none = encode_parts(
        br#"{"alg":"none"}"#,
        claims(scoped.clone()).to_string().as_bytes(),
        b"",
    );
    let cases: Vec<(&str, Option<String>, &str, u16)> = vec![
        (
            "expired",
            Some(with(json!({"exp": now - 600}))),
            "expired",
            401,
        ),
        (
            "not yet valid",
            Some(with(json!({"nbf": now + 600}))),
            "not_yet_valid",
            401,
        ),
        (
            "wrong issuer",
            Some(with(json!({"iss": "https://evil.example"}))),
            "wrong_issuer",
            401,
        ),
        (
            "wrong audience",
            Some(with(json!({"aud": "other"}))),
            "wrong_audience",
            401,
        ),
        ("bad signature", Some(forged), "bad_signature", 401),
        ("alg none", Some(none), "alg_not_allowed", 401),
        (
            "unknown kid",
            Some(mint("ES256", Some("nope"), &claims(scoped.clone()))),
            "unknown_kid",
            401,
        ),
        ("malformed", Some("not.a.jwt".to_owned()), "malformed", 401),
        ("missing", None, "missing", 401),
        (
            "insufficient scope",
            Some(es(json!({"scope": "write"}))),
            "insufficient_scope",
            403,
        ),
    ];
    for (name, token, reason, status) in &cases {
        // Shadow: reaches the upstream, flagged with the would-be decision, without identity.
        let (r, seen) = stack.through("GET", "/shadow/x", token.as_deref(), SPOOFED);
        assert_eq!(r.status, 200, "shadow {name}: {}", r.body);
        let seen = seen.unwrap_or_else(|| panic!("shadow {name}: upstream saw nothing"));
        assert_eq!(
            seen.header("x-auth-shadow"),
            Some(format!("deny; reason={reason}").as_str()),
            "shadow {name}"
        );
        assert_eq!(
            seen.header("x-user-sub"),
            None,
            "shadow {name}: no identity for an invalid token"
        );
        assert_no_spoof(name, &seen);
        // Enforce: the same request under an enforce rule is denied and never reaches the upstream.
        let path = if *reason == "insufficient_scope" {
            "/items/1"
        } else {
            "/enforce/x"
        };
        let (r, seen) = stack.through("GET", path, token.as_deref(), SPOOFED);
        assert_eq!(
            (r.status, code(&r)),
            (*status, reason.to_string()),
            "enforce {name}: {}",
            r.body
        );
        assert!(
            seen.is_none(),
            "enforce {name}: the upstream must not see it"
        );
    }
    // Valid token in shadow: identity headers plus `allow`.
    let (r, seen) = stack.through("GET", "/shadow/x", Some(&es(scoped.clone())), SPOOFED);
    assert_eq!(r.status, 200);
    let seen = seen.expect("reached");
    assert_eq!(seen.header("x-auth-shadow"), Some("allow"));
    assert_eq!(seen.header("x-user-sub"), Some("alice"));
    assert_no_spoof("shadow valid", &seen);
    // One log line per would-deny, with the reason and without the token.
    assert!(stack.envoy.wait_for_log(
        "shadow rule=shadow would deny: reason=expired",
        Duration::from_secs(2)
    ));
    let logs = stack.envoy.logs();
    assert_eq!(
        logs.matches("shadow rule=shadow would deny").count(),
        cases.len()
    );
    for (name, token, _, _) in &cases {
        if let Some(t) = token.as_deref().filter(|t| t.len() > 20) {
            assert!(!logs.contains(t), "{name}: token in the log");
        }
    }
}

#[test]
fn client_identity_headers_never_reach_the_upstream() {
    let stack = Stack::new(MockIdp::start(), policy_config(json!({})), 2);
    let good_no_tenant = es(json!({"tenant": null}));
    let preflight: Vec<(&str, &str)> = SPOOFED
        .iter()
        .copied()
        .chain([
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ])
        .collect();
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Option<String>,
        &'a [(&'a str, &'a str)],
    );
    let cases: Vec<Case> = vec![
        ("public route, no token", "GET", "/public", None, SPOOFED),
        ("off route", "GET", "/off/x", None, SPOOFED),
        (
            "allow_missing, no token",
            "GET",
            "/optional/x",
            None,
            SPOOFED,
        ),
        (
            "shadow, bad token",
            "GET",
            "/shadow/x",
            Some("garbage".to_owned()),
            SPOOFED,
        ),
        (
            "good token lacking the tenant claim",
            "GET",
            "/x",
            Some(good_no_tenant),
            SPOOFED,
        ),
        ("CORS preflight", "OPTIONS", "/x", None, &preflight),
    ];
    for (name, method, path, token, headers) in cases {
        let (r, seen) = stack.through(method, path, token.as_deref(), headers);
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let seen = seen.unwrap_or_else(|| panic!("{name}: upstream saw nothing"));
        assert_no_spoof(name, &seen);
        assert_eq!(seen.header("x-tenant-id"), None, "{name}");
        assert_eq!(seen.header("x-user-role"), None, "{name}");
    }
    // With a valid token the headers are the filter's own.
    let (r, seen) = stack.through("GET", "/x", Some(&es(json!({"tenant": "acme"}))), SPOOFED);
    assert_eq!(r.status, 200);
    let seen = seen.expect("reached");
    assert_eq!(seen.header("x-user-sub"), Some("alice"));
    assert_eq!(seen.header("x-tenant-id"), Some("acme"));
    assert_no_spoof("valid", &seen);
    // A denied request is answered by the filter, so nothing reaches the upstream at all.
    let (r, seen) = stack.through("GET", "/x", Some("garbage"), SPOOFED);
    assert_eq!(r.status, 401);
    assert!(seen.is_none());
}

#[test]
fn claims_become_plain_headers_and_unsafe_values_are_dropped() {
    let stack = Stack::new(
        MockIdp::start(),
        policy_config(json!({"max_header_value_bytes": 64})),
        2,
    );
    let token = es(json!({
        "scp": ["read:items", "write:items"],
        "tenant": "acme",
        "org": {"id": "org-7", "name": "Acme"},
        "groups": ["eng", "ops"],
        "email_verified": true,
        "level": 42,
        "note": "hi\r\nx-user-admin: true"
    }));
    let (r, seen) = stack.through("GET", "/x", Some(&token), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = seen.expect("reached");
    assert_eq!(seen.header("x-user-sub"), Some("alice"));
    assert_eq!(seen.header("x-user-scope"), Some("read:items write:items"));
    assert_eq!(seen.header("x-tenant-id"), Some("acme"));
    assert_eq!(seen.header("x-user-org"), Some("org-7"));
    assert_eq!(seen.header("x-user-groups"), Some("eng,ops"));
    assert_eq!(seen.header("x-user-email-verified"), Some("true"));
    assert_eq!(seen.header("x-user-level"), Some("42"));
    assert_eq!(
        seen.header("x-user-note"),
        None,
        "a value with CR/LF is never written"
    );
    assert_eq!(seen.header("x-user-admin"), None, "no header injection");
    // Too long for the 64-byte bound: dropped.
    let long = es(json!({"tenant": "t".repeat(100)}));
    let (r, seen) = stack.through("GET", "/x", Some(&long), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(seen.expect("reached").header("x-tenant-id"), None);
    // Envoy (a container's log especially) writes lines with a delay: wait for each one.
    for line in [
        "claim for x-user-note not forwarded: control character in value",
        "claim for x-tenant-id not forwarded: value too long",
    ] {
        assert!(
            stack.envoy.wait_for_log(line, Duration::from_secs(5)),
            "{line}"
        );
    }
    let logs = stack.envoy.logs();
    assert!(
        !logs.contains("x-user-admin: true"),
        "the value itself is never logged"
    );
}

#[test]
fn scopes_claims_templates_methods_hosts_and_route_names() {
    let stack = Stack::new(MockIdp::start(), policy_config(json!({})), 2);
    let status = |method: &str, path: &str, token: Option<&str>, extra: &[(&str, &str)]| {
        stack.send(method, path, token, extra).status
    };
    // scope as a space-delimited string, scp as an array, scp as a string.
    for (name, c) in [
        ("scope string", json!({"scope": "write read:items"})),
        ("scp array", json!({"scp": ["read:items"]})),
        ("scp string", json!({"scp": "read:items other"})),
    ] {
        assert_eq!(status("GET", "/items/42", Some(&es(c)), &[]), 200, "{name}");
    }
    let r = stack.send(
        "GET",
        "/items/42",
        Some(&es(json!({"scope": "write"}))),
        &[],
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"demo\", error=\"insufficient_scope\", error_description=\"token lacks a required scope\", scope=\"read:items\"")
    );
    // The template matches one segment and GET only; other shapes fall through to the catch-all.
    let plain = es(json!({}));
    assert_eq!(status("POST", "/items/42", Some(&plain), &[]), 200);
    assert_eq!(status("GET", "/items/42/extra", Some(&plain), &[]), 200);
    assert_eq!(status("GET", "/items/42", Some(&plain), &[]), 403);
    // Envoy's route name: /admin/... is the `admin-route` route.
    assert_eq!(
        status("GET", "/admin/x", Some(&es(json!({"scope": "ops"}))), &[]),
        200
    );
    assert_eq!(
        status(
            "GET",
            "/admin/x",
            Some(&es(json!({"scope": "read:items"}))),
            &[]
        ),
        403
    );
    // Required claim values.
    assert_eq!(
        status(
            "GET",
            "/tenant/x",
            Some(&es(json!({"tenant": "acme"}))),
            &[]
        ),
        200
    );
    let r = stack.send(
        "GET",
        "/tenant/x",
        Some(&es(json!({"tenant": "other"}))),
        &[],
    );
    assert_eq!((r.status, code(&r)), (403, "claim_mismatch".to_owned()));
    assert_eq!(status("GET", "/tenant/x", Some(&plain), &[]), 403);
    // allow_missing: no token passes, an invalid one does not, a valid one brings identity.
    assert_eq!(status("GET", "/optional/x", None, &[]), 200);
    assert_eq!(status("GET", "/optional/x", Some("garbage"), &[]), 401);
    let (_, seen) = stack.through("GET", "/optional/x", Some(&plain), &[]);
    assert_eq!(seen.expect("reached").header("x-user-sub"), Some("alice"));
    // Host match (port ignored): only that host gets the public rule.
    assert_eq!(
        status(
            "GET",
            "/host/x",
            None,
            &[("host", "partner.example.com:443")]
        ),
        200
    );
    assert_eq!(
        status("GET", "/host/x", None, &[("host", "other.example.com")]),
        401
    );
    // CORS preflight needs all three parts.
    let pre = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "GET"),
    ];
    assert_eq!(status("OPTIONS", "/x", None, &pre), 200);
    assert_eq!(status("OPTIONS", "/x", None, &[]), 401);
    assert_eq!(status("GET", "/x", None, &pre), 401);
    // A query-parameter token works and is cut from the URL the upstream sees.
    let (r, seen) = stack.through(
        "GET",
        &format!("/q?a=1&access_token={plain}&b=2"),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(seen.expect("reached").path, "/q?a=1&b=2");
}

#[test]
fn forward_token_false_removes_the_token_before_the_upstream() {
    let mut cfg: Value = serde_json::from_str(&policy_config(json!({}))).expect("json");
    cfg["providers"]["demo"]["forward_token"] = json!(false);
    let stack = Stack::new(MockIdp::start(), cfg.to_string(), 2);
    let (r, seen) = stack.through("GET", "/x", Some(&es(json!({}))), &[]);
    assert_eq!(r.status, 200);
    let seen = seen.expect("reached");
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("x-user-sub"), Some("alice"));
}

#[test]
fn idp_down_degraded_rules_pass_flagged_and_the_rest_fail_closed() {
    let idp = MockIdp::start();
    idp.set_behavior(Behavior::Status(503));
    let stack = Stack::new(idp, policy_config(json!({"jwks_wait_timeout": "500ms"})), 2);
    let token = es(json!({"scope": "read:items"}));
    let (r, seen) = stack.through("GET", "/degraded/x", Some(&token), SPOOFED);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = seen.expect("reached");
    assert_eq!(seen.header("x-auth-degraded"), Some("keys_unavailable"));
    assert_eq!(
        seen.header("x-user-sub"),
        None,
        "degraded means no identity"
    );
    assert_no_spoof("degraded", &seen);
    let (r, seen) = stack.through("GET", "/x", Some(&token), &[]);
    assert_eq!((r.status, code(&r)), (503, "keys_unavailable".to_owned()));
    assert!(seen.is_none());
    let (r, seen) = stack.through("GET", "/shadow/x", Some(&token), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        seen.expect("reached").header("x-auth-shadow"),
        Some("deny; reason=keys_unavailable")
    );
    // A bad token on a degraded route is still rejected: degraded only covers missing keys.
    let (r, seen) = stack.through("GET", "/degraded/x", Some("garbage"), &[]);
    assert_eq!((r.status, code(&r)), (401, "malformed".to_owned()));
    assert!(seen.is_none());
    assert!(stack
        .envoy
        .wait_for_log("degraded rule=degraded", Duration::from_secs(5)));
}

/// Status and body, or the transport error.
type Outcome = Result<(u16, String), String>;

#[test]
fn a_live_flip_from_shadow_to_enforce_drops_nothing_and_misdecides_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use wasm_test_harness::envoy::{default_lds_bootstrap_template, default_lds_template};

    let idp = MockIdp::start();
    let echo = EchoUpstream::start();
    let shadow_cfg = policy_config(json!({}));
    let enforce_cfg = shadow_cfg.replace("\"mode\":\"shadow\"", "\"mode\":\"enforce\"");
    assert_ne!(shadow_cfg, enforce_cfg);
    let opts = EnvoyOptions {
        template: default_lds_bootstrap_template(),
        plugin_config: shadow_cfg,
        idp_port: idp.port(),
        upstream_port: echo.port(),
        concurrency: 2,
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_lds(opts, &default_lds_template()).unwrap_or_else(|e| panic!("{e}"));
    let port = envoy.listen_port();
    let good = es(json!({"scope": "read:items"}));
    let expired = es(json!({"scope": "read:items", "exp": tokens::now() as i64 - 600}));

    // Phase marks: 0 = before the flip was requested, 1 = flip in progress, 2 = flip applied.
    let phase = Arc::new(Mutex::new(0u8));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (phase, stop) = (phase.clone(), stop.clone());
            let token = if i % 2 == 0 {
                good.clone()
            } else {
                expired.clone()
            };
            std::thread::spawn(move || {
                let mut seen: Vec<(u8, Outcome)> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let before = *phase.lock().expect("lock");
                    let r = try_http_request(
                        port,
                        "GET",
                        "/shadow/x",
                        &[("authorization", format!("Bearer {token}").into_bytes())],
                        b"",
                    )
                    .map(|r| (r.status, r.body));
                    let after = *phase.lock().expect("lock");
                    // Attribute a request to a phase only when it did not straddle a change.
                    seen.push((if before == after { before } else { 1 }, r));
                }
                (i % 2 == 0, seen)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    *phase.lock().expect("lock") = 1;
    envoy
        .update_plugin_config(&enforce_cfg)
        .unwrap_or_else(|e| panic!("flip: {e}"));
    *phase.lock().expect("lock") = 2;
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::SeqCst);

    let mut counts = [[0usize; 3]; 2]; // [valid|expired][phase]
    for w in workers {
        let (is_good, seen) = w.join().expect("worker");
        for (phase, r) in seen {
            let (status, body) =
                r.unwrap_or_else(|e| panic!("a request failed during the flip: {e}"));
            counts[usize::from(!is_good)][usize::from(phase)] += 1;
            match (is_good, phase) {
                (true, _) => assert_eq!(
                    status, 200,
                    "a valid token was denied (phase {phase}): {body}"
                ),
                (false, 0) => {
                    assert_eq!(status, 200, "shadow must not block");
                    assert!(
                        body.contains("deny; reason=expired"),
                        "shadow verdict reaches the upstream: {body}"
                    );
                }
                (false, 1) => assert!(status == 200 || status == 401, "during the flip: {status}"),
                (false, _) => assert_eq!(
                    status, 401,
                    "after the flip the expired token is denied: {body}"
                ),
            }
        }
    }
    assert!(
        counts[0][0] > 0 && counts[0][2] > 0,
        "valid traffic on both sides: {counts:?}"
    );
    assert!(
        counts[1][0] > 0 && counts[1][2] > 0,
        "expired traffic on both sides: {counts:?}"
    );
    eprintln!(
        "requests per phase (before, during, after): valid {:?}, expired {:?}",
        counts[0], counts[1]
    );
}

/// Tokens never travel on where they must not, on every kind of path: a query-parameter token is cut
/// from the URL (in every spelling a backend decodes to the same name), and with
/// `forward_token: false` the header token is removed on public and `off` routes too. And one token
/// per request: more than one is `400 invalid_request`, whatever the order or which one is valid.
#[test]
fn tokens_are_cut_on_every_path_and_one_token_per_request() {
    let mut cfg: Value = serde_json::from_str(&policy_config(json!({}))).expect("json");
    cfg["providers"]["demo"]["forward_token"] = json!(false);
    let stack = Stack::new(MockIdp::start(), cfg.to_string(), 2);
    let valid = es(json!({"scope": "read:items"}));
    let forged = sign_raw(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &claims(json!({"scope": "read:items"})),
        KeyName::RsaRogue,
    );
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "GET"),
    ];
    /// (path kind, method, path, extra headers, expected status)
    type Kind<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)], u16);
    let kinds: Vec<Kind> = vec![
        ("public", "GET", "/public", &[], 200),
        ("off", "GET", "/off/x", &[], 200),
        ("preflight", "OPTIONS", "/x", &preflight, 200),
        ("allow_missing", "GET", "/optional/x", &[], 200),
        ("enforce", "GET", "/x", &[], 200),
        ("shadow", "GET", "/shadow/x", &[], 200),
    ];
    for (kind, method, path, extra, status) in &kinds {
        for spelling in [
            "access_token",
            "access%5Ftoken",
            "ACCESS_TOKEN",
            "access.token",
        ] {
            let target = format!("{path}?a=1&{spelling}={valid}&b=2");
            let (r, seen) = stack.through(method, &target, None, extra);
            assert_eq!(r.status, *status, "{kind} {spelling}: {}", r.body);
            let seen = seen.unwrap_or_else(|| panic!("{kind} {spelling}: upstream saw nothing"));
            assert_eq!(seen.path, format!("{path}?a=1&b=2"), "{kind} {spelling}");
        }
        let (r, seen) = stack.through(method, path, Some(&valid), extra);
        assert_eq!(r.status, *status, "{kind} header token: {}", r.body);
        let seen = seen.unwrap_or_else(|| panic!("{kind}: upstream saw nothing"));
        assert_eq!(
            seen.header("authorization"),
            None,
            "{kind}: forward_token false removes the header"
        );
        assert!(!format!("{:?}", seen.headers).contains(&valid), "{kind}");
    }
    // More than one token: 400 invalid_request in enforce, a would-deny in shadow; the order does
    // not matter and neither does which one is valid.
    let two_params = |a: &str, b: &str| format!("?access_token={a}&access_token={b}");
    type Headers<'a> = Vec<(&'a str, Vec<u8>)>;
    let requests: Vec<(String, Headers)> = vec![
        (two_params(&valid, &forged), vec![]),
        (two_params(&forged, &valid), vec![]),
        (two_params(&valid, &valid), vec![]),
        (
            format!("?access_token={forged}"),
            vec![("authorization", format!("Bearer {valid}").into_bytes())],
        ),
        (
            format!("?access_token={valid}"),
            vec![("authorization", format!("Bearer {forged}").into_bytes())],
        ),
        (
            String::new(),
            vec![
                ("authorization", format!("Bearer {valid}").into_bytes()),
                ("authorization", format!("Bearer {forged}").into_bytes()),
            ],
        ),
    ];
    for (i, (query, headers)) in requests.iter().enumerate() {
        let before = stack.echo.count();
        let r = stack.request("GET", &format!("/x{query}"), headers, b"");
        assert_eq!(
            (r.status, code(&r)),
            (400, "invalid_request".to_owned()),
            "case {i}: {}",
            r.body
        );
        assert!(
            r.header("www-authenticate")
                .is_some_and(|c| c.contains("error=\"invalid_request\"")),
            "case {i}"
        );
        assert_eq!(
            stack.echo.count(),
            before,
            "case {i}: nothing reaches the upstream"
        );
        let r = stack.request("GET", &format!("/shadow/x{query}"), headers, b"");
        assert_eq!(r.status, 200, "shadow case {i}");
        let seen = stack.echo.last().expect("shadow forwards");
        assert_eq!(
            seen.header("x-auth-shadow"),
            Some("deny; reason=invalid_request"),
            "shadow case {i}"
        );
        assert_eq!(seen.header("x-user-sub"), None, "shadow case {i}");
    }
}
