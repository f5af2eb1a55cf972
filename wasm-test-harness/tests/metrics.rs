//! Decision metrics and audit records through a real Envoy: drive known traffic, then read Envoy's
//! `/stats/prometheus` and the audit JSON lines, and assert exact counts, labels and fields.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use wasm_test_harness::stack::Stack;
use wasm_test_harness::tokens::{self, mint, sign_raw, std_claims};
use wasm_test_harness::{Behavior, KeyName};

fn config(audit: Value) -> String {
    json!({
        "realm": "demo",
        "audit": audit,
        "providers": {
            "demo": {
                "issuer": tokens::ISSUER,
                "audiences": [tokens::AUDIENCE],
                "remote_jwks": {
                    "http_uri": {"uri": "http://idp.demo.local/jwks.json", "cluster": "idp", "timeout": "2s"},
                    "cache_duration": "300s"
                },
                "claim_to_headers": [
                    {"claim": "sub", "header": "x-user-sub"},
                    {"claim": "note", "header": "x-user-note"}
                ]
            }
        },
        "rules": [
            {"name": "health", "match": {"path": "/healthz"}},
            {"name": "api", "match": {"prefix": "/api/"}, "requires": {"provider_name": "demo"}},
            {"name": "reports", "match": {"prefix": "/reports/"}, "mode": "shadow",
             "requires": {"provider_name": "demo", "scopes": ["reports:read"]}}
        ]
    })
    .to_string()
}

fn audit_records(stack: &Stack) -> Vec<Value> {
    stack
        .envoy
        .logs()
        .lines()
        .filter_map(|l| {
            let json = l
                .strip_prefix('{')
                .map(|_| l)
                .or_else(|| l.split_once("audit ").map(|(_, r)| r))?;
            serde_json::from_str::<Value>(json)
                .ok()
                .filter(|v| v.get("decision").is_some())
        })
        .collect()
}

fn es(extra: Value) -> String {
    let mut c = std_claims("alice");
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    mint("ES256", Some("ec-1"), &c)
}

fn decisions(route: &str, mode: &str, outcome: &str, reason: &str) -> String {
    format!("jwt_guard_decisions{{route=\"{route}\",mode=\"{mode}\",outcome=\"{outcome}\",reason=\"{reason}\"}}")
}

#[test]
fn counters_histogram_gauges_and_audit_records_match_the_traffic() {
    let stack = Stack::start(config(json!({})), 2);
    let now = tokens::now() as i64;
    let valid = es(json!({}));
    let scoped = es(json!({"scope": "reports:read", "tenant": "acme"}));
    let expired = es(json!({"exp": now - 600}));
    let forged = sign_raw(
        &json!({"alg": "RS256", "kid": "rsa-1"}),
        &std_claims("mallory"),
        KeyName::RsaRogue,
    );
    let injected = es(json!({"note": "a\r\nx-user-admin: 1"}));
    let mut sent: Vec<String> = Vec::new();
    let mut go =
        |method: &str, path: &str, token: Option<&String>, extra: &[(&str, &str)], want: u16| {
            if let Some(t) = token {
                sent.push(t.clone());
            }
            assert_eq!(
                stack
                    .send(method, path, token.map(String::as_str), extra)
                    .status,
                want,
                "{method} {path}"
            );
        };
    for _ in 0..3 {
        go("GET", "/api/items?page=2", Some(&valid), &[], 200);
    }
    go("GET", "/api/items", Some(&injected), &[], 200);
    for _ in 0..2 {
        go("GET", "/api/items", Some(&expired), &[], 401);
    }
    go("GET", "/api/items", None, &[], 401);
    go("POST", "/api/items", Some(&forged), &[], 401);
    for _ in 0..2 {
        go("GET", "/reports/q3", Some(&scoped), &[], 200);
    }
    for _ in 0..2 {
        go("GET", "/reports/q3", Some(&valid), &[], 200);
    }
    go("GET", "/reports/q3", Some(&expired), &[], 200);
    go("GET", "/healthz", None, &[], 200);
    go("GET", "/healthz", None, &[], 200);
    go("GET", "/nowhere", None, &[], 403);
    go(
        "OPTIONS",
        "/api/items",
        None,
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "GET"),
        ],
        200,
    );

    // Histograms reach /stats/prometheus at the next stats flush (1 s in envoy/envoy.yaml).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stats = stack.prometheus();
    while stats.get("jwt_guard_decision_latency_us_count{mode=\"shadow\"}") != Some(&5.0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        stats = stack.prometheus();
    }
    let expected: Vec<(String, f64)> = vec![
        (decisions("api", "enforce", "allow", "ok"), 4.0),
        (decisions("api", "enforce", "deny", "expired"), 2.0),
        (decisions("api", "enforce", "deny", "missing"), 1.0),
        (decisions("api", "enforce", "deny", "bad_signature"), 1.0),
        (decisions("reports", "shadow", "would_allow", "ok"), 2.0),
        (
            decisions("reports", "shadow", "would_deny", "insufficient_scope"),
            2.0,
        ),
        (decisions("reports", "shadow", "would_deny", "expired"), 1.0),
        (decisions("health", "enforce", "allow", "public"), 2.0),
        (decisions("no_rule", "enforce", "deny", "no_rule"), 1.0),
        ("jwt_guard_cors_preflights{}".to_owned(), 1.0),
        (
            "jwt_guard_claims_dropped{reason=\"control_character\"}".to_owned(),
            1.0,
        ),
        (
            "jwt_guard_jwks_fetch{provider=\"demo\",result=\"success\"}".to_owned(),
            1.0,
        ),
        ("jwt_guard_jwks_keys{provider=\"demo\"}".to_owned(), 6.0),
        ("jwt_guard_jwks_stale{provider=\"demo\"}".to_owned(), 0.0),
        (
            "jwt_guard_decision_latency_us_count{mode=\"enforce\"}".to_owned(),
            11.0,
        ),
        (
            "jwt_guard_decision_latency_us_count{mode=\"shadow\"}".to_owned(),
            5.0,
        ),
    ];
    let mut problems = Vec::new();
    for (series, want) in &expected {
        match stats.get(series) {
            Some(got) if got == want => {}
            other => problems.push(format!("{series}: want {want}, got {other:?}")),
        }
    }
    // Every other decision series exists (defined at start-up) and is zero.
    let decision_series: Vec<&String> = stats
        .keys()
        .filter(|k| k.starts_with("jwt_guard_decisions{"))
        .collect();
    assert!(
        decision_series.len() > 40,
        "all combinations defined up front: {}",
        decision_series.len()
    );
    for k in decision_series {
        if !expected.iter().any(|(e, _)| e == k) && stats[k] != 0.0 {
            problems.push(format!("unexpected {k} = {}", stats[k]));
        }
    }
    assert!(stats
        .keys()
        .any(|k| k.starts_with("jwt_guard_jwks_age_seconds{provider=\"demo\"}")));
    assert!(
        stats
            .keys()
            .any(|k| k.starts_with("jwt_guard_decision_latency_us_bucket{mode=\"enforce\",le=")),
        "the histogram has buckets"
    );
    // Every presented token is looked up in the per-worker verified-token cache: 12 token checks
    // (7 on /api, 5 on /reports); repeated valid tokens hit (which worker serves what varies).
    let hits = stats
        .get("jwt_guard_token_cache_hits{}")
        .copied()
        .unwrap_or(-1.0);
    let misses = stats
        .get("jwt_guard_token_cache_misses{}")
        .copied()
        .unwrap_or(-1.0);
    if hits + misses != 12.0 || hits < 1.0 {
        problems.push(format!(
            "token cache: {hits} hits + {misses} misses, want 12 with at least 1 hit"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Audit records: one per decision (preflights are not decisions), stable fields, never a token.
    // Envoy writes access logs in batches; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut records = audit_records(&stack);
    while records.len() < 16 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        records = audit_records(&stack);
    }
    assert_eq!(records.len(), 16, "one record per decision");
    let fields = [
        "time",
        "request_id",
        "route",
        "mode",
        "decision",
        "reason",
        "provider",
        "issuer",
        "subject",
        "tenant",
        "token_hash",
        "binding",
        "method",
        "path",
        "latency_us",
    ];
    for r in &records {
        let obj = r.as_object().expect("object");
        assert_eq!(obj.len(), fields.len(), "{r}");
        for f in fields {
            assert!(obj.contains_key(f), "{f} missing in {r}");
        }
        assert!(
            r["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{r}"
        );
        assert!(
            r["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
            "{r}"
        );
        assert!(r["latency_us"].is_u64());
        assert!(
            !r["path"].as_str().unwrap_or_default().contains('?'),
            "no query string: {r}"
        );
    }
    let count = |decision: &str, reason: &str| {
        records
            .iter()
            .filter(|r| r["decision"] == decision && r["reason"] == reason)
            .count()
    };
    assert_eq!(count("allow", "ok"), 4);
    assert_eq!(count("deny", "expired"), 2);
    assert_eq!(count("would_deny", "insufficient_scope"), 2);
    assert_eq!(count("deny", "no_rule"), 1);
    let allowed = records
        .iter()
        .find(|r| r["route"] == "reports" && r["decision"] == "would_allow")
        .expect("record");
    assert_eq!(allowed["subject"], "alice");
    assert_eq!(allowed["tenant"], "acme");
    assert_eq!(allowed["issuer"], tokens::ISSUER);
    assert_eq!(allowed["provider"], "demo");
    assert_eq!(allowed["mode"], "shadow");
    // A valid token refused for its scope keeps its identity in the record and in the shadow line:
    // the operator sees who would be denied.
    for r in records
        .iter()
        .filter(|r| r["decision"] == "would_deny" && r["reason"] == "insufficient_scope")
    {
        assert_eq!(r["subject"], "alice", "{r}");
        assert_eq!(r["issuer"], tokens::ISSUER, "{r}");
        assert_eq!(r["provider"], "demo", "{r}");
    }
    assert!(
        stack.envoy.wait_for_log(
            "wasm log jwt_guard: shadow rule=reports would deny: reason=insufficient_scope sub=alice",
            Duration::from_secs(5)
        ),
        "the shadow line names the subject, after a single plugin-name prefix"
    );
    let denied = records
        .iter()
        .find(|r| r["reason"] == "bad_signature")
        .expect("record");
    assert_eq!(
        denied["subject"],
        Value::Null,
        "identity only from verified tokens"
    );
    assert_eq!(denied["method"], "POST");
    assert_eq!(denied["path"], "/api/items");
    let hash = denied["token_hash"].as_str().expect("hash");
    assert!(hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
    let logs = stack.envoy.logs();
    for t in &sent {
        assert!(
            !logs.contains(t.as_str()),
            "a token appears in Envoy's output"
        );
        let sig = t.rsplit('.').next().unwrap_or_default();
        assert!(
            !logs.contains(sig),
            "a token signature appears in Envoy's output"
        );
    }
}

#[test]
fn allow_records_are_sampled_and_denials_always_written() {
    let stack = Stack::start(
        config(json!({"allow_sample_rate": 0.0, "log": true, "filter_state": false})),
        2,
    );
    let valid = es(json!({"scope": "reports:read"}));
    for _ in 0..5 {
        assert_eq!(stack.send("GET", "/api/x", Some(&valid), &[]).status, 200);
    }
    assert_eq!(stack.send("GET", "/api/x", None, &[]).status, 401);
    assert_eq!(
        stack
            .send("GET", "/reports/x", Some(&es(json!({}))), &[])
            .status,
        200
    );
    assert!(stack
        .envoy
        .wait_for_log("\"reason\":\"insufficient_scope\"", Duration::from_secs(3)));
    std::thread::sleep(Duration::from_millis(1500)); // access logs come in batches, had there been any
    let records = audit_records(&stack);
    let decisions: Vec<&str> = records
        .iter()
        .filter_map(|r| r["decision"].as_str())
        .collect();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert!(decisions.contains(&"deny") && decisions.contains(&"would_deny"));
    // With filter_state off, the access log only prints "-" (no record).
    assert!(stack
        .envoy
        .logs()
        .lines()
        .all(|l| !l.starts_with("{\"decision\"")));
}

/// The demo provider's fetch counter for `result`.
fn fetches(stack: &Stack, result: &str) -> f64 {
    stack
        .prometheus()
        .get(&format!(
            "jwt_guard_jwks_fetch{{provider=\"demo\",result=\"{result}\"}}"
        ))
        .copied()
        .unwrap_or(-1.0)
}

/// Waits (up to 20 s) until the `result` counter exceeds `before`; then returns every failure
/// counter, so a phase can check that only its own cause moved.
fn after(stack: &Stack, result: &str, before: f64) -> [f64; 3] {
    let deadline = Instant::now() + Duration::from_secs(20);
    while fetches(stack, result) <= before {
        assert!(
            Instant::now() < deadline,
            "no {result} fetch counted\n{}",
            stack.envoy.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ["timeout", "connect_error", "http_error"].map(|r| fetches(stack, r))
}

#[test]
fn fetch_failures_are_counted_as_timeout_connect_error_or_http_error() {
    let mut cfg: Value = serde_json::from_str(&config(json!({}))).expect("config");
    let remote = &mut cfg["providers"]["demo"]["remote_jwks"];
    remote["http_uri"]["timeout"] = json!("500ms");
    remote["cache_duration"] = json!("1s");
    remote["max_stale"] = json!("300s");
    let stack = Stack::start(cfg.to_string(), 2);
    let mut success = after(&stack, "success", 0.0);
    assert_eq!(success, [0.0; 3], "no failures while the IdP is healthy");
    let mut succeeded = |stack: &Stack| {
        let before = fetches(stack, "success");
        after(stack, "success", before);
        success = ["timeout", "connect_error", "http_error"].map(|r| fetches(stack, r));
        success
    };

    // Slower than the timeout: Envoy answers 504 itself after 500 ms.
    stack
        .idp
        .set_behavior(Behavior::Delay(Duration::from_millis(1500)));
    let [timeout, connect, http] = after(&stack, "timeout", 0.0);
    assert_eq!((connect, http), (0.0, 0.0), "a slow IdP is a timeout only");
    assert!(timeout >= 1.0);
    assert!(stack.logs_contain("no answer for the JWKS within the 500 ms timeout"));
    stack.idp.set_behavior(Behavior::Normal);
    let base = succeeded(&stack);

    // The IdP's own 503.
    stack.idp.set_behavior(Behavior::Status(503));
    let [timeout, connect, http] = after(&stack, "http_error", base[2]);
    assert_eq!(
        (timeout, connect),
        (base[0], 0.0),
        "a 503 from the IdP is an http_error"
    );
    assert!(http > base[2]);
    stack.idp.set_behavior(Behavior::Normal);
    let base = succeeded(&stack);

    // Nobody listening: Envoy's 503 "upstream connect error …" local reply.
    stack.idp.close();
    let [timeout, connect, http] = after(&stack, "connect_error", 0.0);
    assert_eq!(
        (timeout, http),
        (base[0], base[2]),
        "a closed port is a connect_error"
    );
    assert!(connect >= 1.0);
    assert!(stack.logs_contain("cannot reach the JWKS endpoint: upstream connect error"));
    stack.idp.reopen().expect("reopen the IdP port");
    succeeded(&stack);
    // Throughout, the cached keys kept serving.
    assert_eq!(
        stack
            .send("GET", "/api/x", Some(&es(json!({}))), &[])
            .status,
        200
    );
}
