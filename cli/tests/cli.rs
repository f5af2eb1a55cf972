//! The `jwt-guard` binary: exit codes, the JSON shape, the check at which each kind of token stops,
//! keys fetched once over HTTP (with discovery), and lint's errors and warnings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jwt_guard::authenticator::Check;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use wasm_test_harness::keys::{jwks, KeyName};
use wasm_test_harness::tokens::{mint, now, sign_raw, std_claims, with_changes as with};

fn root(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .display()
        .to_string()
}

fn tmp(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("jwt-guard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Runs `jwt-guard ARGS`: exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jwt-guard"))
        .args(args)
        .output()
        .expect("run jwt-guard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn demo_jwks() -> String {
    tmp("demo-jwks.json", &jwks().to_string())
}

/// `explain --json` on the demo config (keys from the harness's JWKS).
fn explain(token: Option<&str>, path: &str, extra: &[&str]) -> (i32, Value) {
    let config = root("envoy/demo.json");
    let jwks = format!("demo={}", demo_jwks());
    let mut args = vec![
        "explain", "--config", &config, "--jwks", &jwks, "--path", path, "--json",
    ];
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    args.extend(extra);
    let (code, out, err) = run(&args);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out} {err}"));
    (code, v)
}

#[test]
fn an_allowed_request_is_forwarded_with_its_identity_and_exit_0() {
    let token = mint(
        "ES256",
        Some("ec-1"),
        &with(std_claims("alice"), json!({"scope": "read:items"})),
    );
    let (code, v) = explain(
        Some(&token),
        "/items/7",
        &["--header", "x-user-sub: mallory"],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["reason"], "ok");
    assert_eq!(v["forwarded"], true);
    assert_eq!(v["response"], Value::Null);
    assert_eq!(v["rule"], json!({"name": "read", "mode": "enforce"}));
    assert_eq!(
        v["rules"][0],
        json!({"at": "rules[0]", "name": "health", "matched": false, "why": "path /items/7 is not /healthz"})
    );
    assert_eq!(v["rules"][1]["matched"], true);
    let checks: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    let all: Vec<&str> = Check::ALL.iter().map(|c| c.code()).collect();
    assert_eq!(checks, all, "every check, in pipeline order");
    assert!(v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["verdict"] == "pass"));
    assert_eq!(
        v["shadow_would_report"],
        json!({"decision": "would_allow", "reason": "ok"})
    );
    assert!(v["headers_removed"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "x-user-sub", "value": "mallory"})));
    assert!(v["headers_set"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "x-user-sub", "value": "alice"})));
    assert!(
        !v.to_string().contains(&token),
        "the token is never printed"
    );
}

#[test]
fn each_kind_of_token_stops_at_its_check_with_envoys_answer() {
    let now = now() as i64;
    let good = || with(std_claims("alice"), json!({"scope": "read:items"}));
    let es = |claims: Value| mint("ES256", Some("ec-1"), &claims);
    let rs_header = json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"});
    // (case, token, path, status, reason, the check that stops it)
    type Case<'a> = (&'a str, Option<String>, &'a str, u64, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        ("no token", None, "/items/1", 401, "missing", "token"),
        (
            "expired",
            Some(es(with(good(), json!({"exp": now - 120})))),
            "/items/1",
            401,
            "expired",
            "lifetime",
        ),
        (
            "not yet valid",
            Some(es(with(good(), json!({"nbf": now + 600})))),
            "/items/1",
            401,
            "not_yet_valid",
            "lifetime",
        ),
        (
            "wrong issuer",
            Some(es(with(good(), json!({"iss": "https://evil.example"})))),
            "/items/1",
            401,
            "wrong_issuer",
            "issuer",
        ),
        (
            "wrong audience",
            Some(es(with(good(), json!({"aud": "other"})))),
            "/items/1",
            401,
            "wrong_audience",
            "audience",
        ),
        (
            "unknown kid",
            Some(mint("ES256", Some("nope"), &good())),
            "/items/1",
            401,
            "unknown_kid",
            "key",
        ),
        (
            "forged",
            Some(sign_raw(&rs_header, &good(), KeyName::RsaRogue)),
            "/items/1",
            401,
            "bad_signature",
            "signature",
        ),
        (
            "not a JWT",
            Some("abc.def".to_owned()),
            "/items/1",
            401,
            "malformed",
            "format",
        ),
        (
            "scope missing",
            Some(es(std_claims("alice"))),
            "/items/1",
            403,
            "insufficient_scope",
            "scopes",
        ),
    ];
    for (name, token, path, status, reason, stopped) in cases {
        let (code, v) = explain(token.as_deref(), path, &[]);
        assert_eq!(code, 1, "{name}: {v}");
        assert_eq!(v["forwarded"], false, "{name}");
        assert_eq!(v["response"]["status"], status, "{name}: {v}");
        assert_eq!(v["reason"], reason, "{name}: {v}");
        assert!(
            v["response"]["body"].as_str().unwrap().contains(reason),
            "{name}"
        );
        let failed: Vec<&str> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["verdict"] == "fail")
            .map(|c| c["check"].as_str().unwrap())
            .collect();
        assert_eq!(failed, [stopped], "{name}: {v}");
        let at = Check::ALL.iter().position(|c| c.code() == stopped).unwrap();
        for (i, c) in v["checks"].as_array().unwrap().iter().enumerate() {
            let want = match i.cmp(&at) {
                std::cmp::Ordering::Less => "pass",
                std::cmp::Ordering::Equal => "fail",
                std::cmp::Ordering::Greater => "not_reached",
            };
            assert_eq!(c["verdict"], want, "{name}: {c}");
        }
    }
}

#[test]
fn a_shadow_rule_forwards_and_reports_what_it_would_have_done() {
    let token = mint("ES256", Some("ec-1"), &std_claims("bob"));
    let (code, v) = explain(Some(&token), "/reports/q3", &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["decision"], "would_deny");
    assert_eq!(v["reason"], "insufficient_scope");
    assert!(v["headers_set"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "x-auth-shadow", "value": "deny; reason=insufficient_scope"})));
    assert!(v["log"].as_array().unwrap().iter().any(|l| l
        .as_str()
        .unwrap()
        .starts_with("shadow rule=reports would deny: reason=insufficient_scope sub=bob")));
    // A rule that decides by host says so when the host differs.
    let (_, v) = explain(Some(&token), "/admin/x", &[]);
    assert_eq!(
        v["rules"][2]["why"],
        "host localhost is not one of portal.example.com"
    );
    assert_eq!(v["rule"]["name"], "api");
    let (_, public) = explain(None, "/healthz", &[]);
    assert_eq!(
        (public["decision"].as_str(), public["reason"].as_str()),
        (Some("allow"), Some("public"))
    );
    assert_eq!(public["checks"], json!([]));
}

#[test]
fn text_output_names_the_rule_the_checks_and_the_answer() {
    let config = root("envoy/demo.json");
    let jwks = format!("demo={}", demo_jwks());
    let token = mint(
        "ES256",
        Some("ec-1"),
        &with(std_claims("alice"), json!({"exp": now() - 120})),
    );
    let file = tmp("token.txt", &format!("{token}\n"));
    let at = format!("@{file}");
    let (code, out, _) = run(&[
        "explain", "--config", &config, "--jwks", &jwks, "--token", &at, "--path", "/items/1",
    ]);
    assert_eq!(code, 1);
    for line in [
        "  rules[0] \"health\": path /items/1 is not /healthz",
        "  rules[1] \"read\": matches",
        "rule       \"read\", mode enforce",
        "  lifetime   FAIL  expired (token expired)",
        "  audience   -",
        "decision   deny (expired)",
        "in shadow  would report would_deny (expired)",
        "response   401 from the filter",
        "  www-authenticate: Bearer realm=\"demo\", error=\"invalid_token\", error_description=\"token expired\"",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
}

#[test]
fn config_keys_and_usage_failures_have_their_exit_codes() {
    let bad = tmp(
        "bad.json",
        r#"{"providers": {"demo": {"issuer": "https://i", "audiance": ["a"]}}, "rules": []}"#,
    );
    let (code, _, err) = run(&["explain", "--config", &bad]);
    assert_eq!(code, 2);
    let (lint_code, lint_out, _) = run(&["lint", "--config", &bad]);
    assert_eq!(lint_code, 2);
    let expected = jwt_guard::config::Config::parse(std::fs::read(&bad).unwrap().as_slice())
        .err()
        .unwrap()
        .to_string();
    assert!(expected.contains("providers.demo.audiance"), "{expected}");
    assert_eq!(err.trim(), format!("jwt-guard: {expected}"));
    assert_eq!(lint_out.trim(), format!("error: {expected}"));

    // A remote provider with nowhere to fetch from and no --jwks: 3, naming the provider.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = tmp(
        "closed.json",
        &remote_config(&format!("http://127.0.0.1:{port}/jwks"), false).to_string(),
    );
    let (code, out, _) = run(&["explain", "--config", &cfg, "--json"]);
    assert_eq!(code, 3, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["error"], "keys");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("pass --jwks corp=FILE"),
        "{v}"
    );

    let (code, _, err) = run(&["explain", "--config", &cfg, "--bogus", "1"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown argument \"--bogus\"") && err.contains("usage:"),
        "{err}"
    );
    let (code, _, err) = run(&["explain", "--config", &cfg, "--jwks", "nobody=/dev/null"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no provider is named \"nobody\""), "{err}");
}

fn remote_config(uri: &str, discovery: bool) -> Value {
    let remote = if discovery {
        json!({"discovery": {"uri": uri, "cluster": "idp", "timeout": "2s"}, "cache_duration": "300s"})
    } else {
        json!({"http_uri": {"uri": uri, "cluster": "idp", "timeout": "2s"}, "cache_duration": "300s"})
    };
    json!({
        "providers": {"corp": {"issuer": "https://idp.demo.local", "audiences": ["demo-api"], "remote_jwks": remote}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "corp"}}]
    })
}

/// Serves `answers(port)` (path → body) over HTTP on loopback, one connection each, in a thread.
fn serve(answers: impl FnOnce(u16) -> Vec<(&'static str, String)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answers = answers(port);
    std::thread::spawn(move || {
        for _ in 0..answers.len() {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = req.split_whitespace().nth(1).unwrap_or("").to_owned();
            let reply = match answers.iter().find(|(p, _)| *p == path) {
                Some((_, b)) => format!(
                    "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}",
                    b.len()
                ),
                None => "HTTP/1.0 404 Not Found\r\n\r\n".to_owned(),
            };
            s.write_all(reply.as_bytes()).unwrap();
        }
    });
    port
}

#[test]
fn keys_are_fetched_once_when_not_given_and_discovery_is_followed() {
    let token = mint("RS256", Some("rsa-1"), &std_claims("carol"));
    let port = serve(|_| vec![("/jwks", jwks().to_string())]);
    let uri = format!("http://127.0.0.1:{port}/jwks");
    let cfg = tmp("fetch.json", &remote_config(&uri, false).to_string());
    let (code, out, err) = run(&["explain", "--config", &cfg, "--token", &token, "--json"]);
    assert_eq!(code, 0, "{out} {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["keys"],
        json!([{"provider": "corp", "from": format!("fetched {uri}")}])
    );

    // Discovery: the document names the issuer and where the keys are.
    let port = serve(|port| {
        let doc = json!({"issuer": "https://idp.demo.local", "jwks_uri": format!("http://127.0.0.1:{port}/keys")});
        vec![
            ("/.well-known/openid-configuration", doc.to_string()),
            ("/keys", jwks().to_string()),
        ]
    });
    let cfg = tmp(
        "discovery.json",
        &remote_config(
            &format!("http://127.0.0.1:{port}/.well-known/openid-configuration"),
            true,
        )
        .to_string(),
    );
    let (code, out, err) = run(&["explain", "--config", &cfg, "--token", &token, "--json"]);
    assert_eq!(code, 0, "{out} {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["keys"][0]["from"],
        format!("fetched http://127.0.0.1:{port}/keys")
    );

    // A document for another issuer is not followed, as in the filter.
    let port = serve(|_| {
        vec![(
            "/.well-known/openid-configuration",
            json!({"issuer": "https://evil.example", "jwks_uri": "http://127.0.0.1:1/keys"})
                .to_string(),
        )]
    });
    let cfg = tmp(
        "evil.json",
        &remote_config(
            &format!("http://127.0.0.1:{port}/.well-known/openid-configuration"),
            true,
        )
        .to_string(),
    );
    let (code, _, err) = run(&["explain", "--config", &cfg, "--token", &token]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("discovery document") && err.contains("issuer"),
        "{err}"
    );
}

#[test]
fn lint_names_each_kind_of_warning_and_exits_1() {
    let ec = |kid: &str| {
        let mut k = wasm_test_harness::keys::jwk_of(KeyName::Ec1);
        k["kid"] = json!(kid);
        k
    };
    let mut k1 = ec("k1");
    k1["crv"] = json!("secp256k1");
    let cfg = json!({
        "providers": {
            "corp": {"issuer": "https://login.corp.example", "remote_jwks": {
                "discovery": {"uri": "https://other.example/.well-known/openid-configuration", "cluster": "idp", "timeout": "5s"},
                "cache_duration": "2s"}},
            "local": {"issuer": "https://l", "audiences": ["x"], "local_jwks": {"inline": {"keys": [ec("ok"), k1]}}}
        },
        "rules": [
            {"name": "api", "match": {"prefix": "/api"}, "requires": {"provider_name": "corp", "allow_missing": true}},
            {"name": "orders", "match": {"prefix": "/api/orders", "methods": ["GET"]}, "requires": {"provider_name": "corp"}},
            {"name": "items", "match": {"template": "/api/items/{id}"}, "requires": {"provider_name": "local"}},
            {"name": "other-host", "match": {"prefix": "/api/x", "hosts": ["a.example"]}, "requires": {"provider_name": "local"}},
            {"name": "legacy", "match": {"prefix": "/"}, "mode": "off", "requires": {"provider_name": "local"}}
        ]
    });
    let path = tmp("lint.json", &cfg.to_string());
    let (code, out, _) = run(&["lint", "--config", &path, "--json"]);
    assert_eq!(code, 1, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true);
    let fields: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "rules[1]",
            "rules[2]",
            "rules[3]",
            "rules[0].requires.allow_missing",
            "rules[4].mode",
            "providers.corp.audiences",
            "providers.corp.remote_jwks.discovery.uri",
            "providers.corp.remote_jwks.cache_duration",
            "providers.local.local_jwks",
        ],
        "{v}"
    );
    assert_eq!(v["warnings"][0]["rule"], "orders");
    assert!(v["warnings"][0]["message"]
        .as_str()
        .unwrap()
        .contains("rules[0] (\"api\") comes first"));

    // The demo config is clean; the same command in text form says so.
    let (code, out, _) = run(&["lint", "--config", &root("envoy/demo.json")]);
    assert_eq!((code, out.trim()), (0, "ok (0 warnings)"));
}

/// The README's console blocks for `explain` and `lint`: each command line there, run here, prints
/// the lines shown (the `keys` line names the reader's file, so it is left out).
#[test]
fn the_readme_shows_what_the_commands_print() {
    let readme = std::fs::read_to_string(root("README.md")).unwrap();
    let section = readme
        .split("## Why was this request denied?")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the explain section");
    let blocks: Vec<&str> = section
        .split("```console\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 3, "explain (expired), explain (shadow), lint");
    let shown = |block: &str, after: &str| -> Vec<String> {
        block
            .lines()
            .skip_while(|l| !l.contains(after))
            .skip(1)
            .take_while(|l| !l.starts_with("$ "))
            .filter(|l| !l.starts_with("keys "))
            .map(str::to_owned)
            .collect()
    };
    let config = root("envoy/demo.json");
    let jwks = format!("demo={}", demo_jwks());
    let expired = mint(
        "ES256",
        Some("ec-1"),
        &with(
            std_claims("alice"),
            json!({"scope": "read:items", "exp": now() - 120}),
        ),
    );
    let (code, out, _) = run(&[
        "explain",
        "--config",
        &config,
        "--jwks",
        &jwks,
        "--token",
        &expired,
        "--path",
        "/items/42",
    ]);
    assert_eq!(code, 1);
    let printed: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with("keys "))
        .map(str::to_owned)
        .collect();
    assert_eq!(printed, shown(blocks[0], "jwt-guard explain"));

    let bob = mint(
        "RS256",
        Some("rsa-1"),
        &with(std_claims("bob"), json!({"tenant": "initech"})),
    );
    let (_, out, _) = run(&[
        "explain",
        "--config",
        &config,
        "--jwks",
        &jwks,
        "--token",
        &bob,
        "--path",
        "/reports/q3",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    let tail: Vec<String> = lines[lines.len() - 6..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    assert_eq!(tail, shown(blocks[1], "jwt-guard explain"));

    let example = root("cli/examples/needs-review.json");
    let (code, out, _) = run(&["lint", "--config", &example]);
    assert_eq!(code, 1);
    let lint_block = blocks[2];
    let first: Vec<String> = lint_block
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("$ "))
        .map(str::to_owned)
        .collect();
    assert_eq!(out.lines().map(str::to_owned).collect::<Vec<_>>(), first);
}
