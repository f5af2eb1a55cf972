//! Issue 16 in a real Envoy: the provider options users of `jwt_authn` expect (`subjects`,
//! `max_lifetime`, `allowed_types`, `forward_payload_header`, a `user-agent` on key fetches),
//! routing on verified claims (`clear_route_cache`), multi-tenant issuer templates, configurable
//! denials, and claims whose names contain dots.

use serde_json::{json, Value};
use std::path::PathBuf;
use wasm_test_harness::client::Response;
use wasm_test_harness::stack::Stack;
use wasm_test_harness::tokens::{self, mint, sign_raw, std_claims, with_changes as with};
use wasm_test_harness::{envoy, KeyName, MockIdp};

fn config(provider: Value, top: Value) -> String {
    envoy::demo_plugin_config_with(provider, top)
}

fn es(claims: &Value) -> String {
    mint("ES256", Some("ec-1"), claims)
}

fn code(r: &Response) -> String {
    r.json()["code"].as_str().unwrap_or("<no code>").to_owned()
}

/// `GET path` with the token (and extra headers); the response and what the upstream saw, if it did.
fn get(
    stack: &Stack,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> (Response, Option<Value>) {
    let before = stack.echo.count();
    let mut headers: Vec<(&str, Vec<u8>)> = extra
        .iter()
        .map(|(n, v)| (*n, v.as_bytes().to_vec()))
        .collect();
    if let Some(t) = token {
        headers.push(("authorization", format!("Bearer {t}").into_bytes()));
    }
    let r = stack.request("GET", path, &headers, b"");
    let seen = (stack.echo.count() > before).then(|| {
        let last = stack.echo.last().expect("recorded");
        Value::Object(
            last.headers
                .iter()
                .map(|(n, v)| (n.clone(), json!(v)))
                .collect(),
        )
    });
    (r, seen)
}

#[test]
fn subjects_lifetime_types_and_the_payload_header() {
    let now = tokens::now() as i64;
    let stack = Stack::start(
        config(
            json!({
                "subjects": [{"prefix": "spiffe://corp.example/"}, {"exact": "alice"}],
                "max_lifetime": "7200s",
                "allowed_types": ["at+jwt", "JWT"],
                "forward_payload_header": "x-jwt-payload",
            }),
            json!({}),
        ),
        2,
    );
    let at_jwt = |claims: &Value| {
        sign_raw(
            &json!({"alg": "ES256", "kid": "ec-1", "typ": "application/at+jwt"}),
            claims,
            KeyName::Ec1,
        )
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("exact subject", es(&std_claims("alice")), 200, ""),
        (
            "SPIFFE subject",
            es(&std_claims("spiffe://corp.example/ns/a/sa/b")),
            200,
            "",
        ),
        (
            "other subject",
            es(&std_claims("bob")),
            401,
            "wrong_subject",
        ),
        (
            "other trust domain",
            es(&std_claims("spiffe://evil.example/x")),
            401,
            "wrong_subject",
        ),
        ("at+jwt typ", at_jwt(&std_claims("alice")), 200, ""),
        (
            "id token typ",
            sign_raw(
                &json!({"alg": "ES256", "kid": "ec-1", "typ": "id_token+jwt"}),
                &std_claims("alice"),
                KeyName::Ec1,
            ),
            401,
            "wrong_type",
        ),
        (
            "no typ",
            sign_raw(
                &json!({"alg": "ES256", "kid": "ec-1"}),
                &std_claims("alice"),
                KeyName::Ec1,
            ),
            401,
            "wrong_type",
        ),
        (
            "lifetime within",
            es(&with(
                std_claims("alice"),
                json!({"iat": now, "exp": now + 7200}),
            )),
            200,
            "",
        ),
        (
            "lifetime too long",
            es(&with(
                std_claims("alice"),
                json!({"iat": now, "exp": now + 7201}),
            )),
            401,
            "lifetime_too_long",
        ),
        (
            "no iat",
            es(&with(std_claims("alice"), json!({"iat": null}))),
            401,
            "missing_iat",
        ),
    ];
    for (name, token, status, reason) in &cases {
        let (r, seen) = get(
            &stack,
            "/hello",
            Some(token),
            &[("x-jwt-payload", "forged")],
        );
        assert_eq!(r.status, *status, "{name}: {}", r.body);
        if *status == 200 {
            let payload = token.split('.').nth(1).expect("payload segment");
            let seen = seen.unwrap_or_else(|| panic!("{name}: upstream saw nothing"));
            assert_eq!(
                seen["x-jwt-payload"],
                json!(payload),
                "{name}: the verified payload, as presented"
            );
        } else {
            assert_eq!(code(&r), *reason, "{name}");
            assert!(seen.is_none(), "{name}: reached the upstream");
        }
    }
    // The payload header is a header the filter owns: stripped on a public route too.
    let (r, seen) = get(
        &stack,
        "/healthz",
        None,
        &[("x-jwt-payload", "forged"), ("x_jwt_payload", "forged")],
    );
    assert_eq!(r.status, 200);
    let seen = seen.expect("forwarded");
    assert!(
        seen.get("x-jwt-payload").is_none() && seen.get("x_jwt_payload").is_none(),
        "{seen}"
    );
    // Key fetches carry the filter's user-agent (some IdP firewalls refuse requests without one).
    let agents = stack.idp.user_agents();
    assert!(!agents.is_empty());
    assert!(
        agents
            .iter()
            .all(|a| a.as_deref().is_some_and(|a| a.starts_with("jwt-guard/"))),
        "{agents:?}"
    );
}

#[test]
fn a_configured_user_agent_replaces_the_default() {
    let stack = Stack::start(
        config(
            json!({"remote_jwks": {
                "http_uri": {"uri": "http://idp.demo.local/jwks.json", "cluster": "idp", "timeout": "2s"},
                "cache_duration": "300s",
                "request_headers": [{"name": "user-agent", "value": "acme-gateway/2.1"}]
            }}),
            json!({}),
        ),
        1,
    );
    let (r, _) = get(
        &stack,
        "/hello",
        Some(&tokens::mint_std("ES256", "alice")),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let agents = stack.idp.user_agents();
    assert!(
        !agents.is_empty()
            && agents
                .iter()
                .all(|a| a.as_deref() == Some("acme-gateway/2.1")),
        "{agents:?}"
    );
}

/// `envoy/envoy.yaml` with a route for `x-tenant-id: acme` before the others (a direct answer that
/// names it), written next to the test's other files.
fn tenant_routing_template() -> PathBuf {
    let base =
        std::fs::read_to_string(envoy::repo_root().join("envoy/envoy.yaml")).expect("envoy.yaml");
    let anchor = "              routes:\n";
    assert!(base.contains(anchor), "envoy.yaml's routes moved");
    let route = "              - name: acme-route\n                match: { prefix: \"/\", headers: [{ name: x-tenant-id, string_match: { exact: acme } }] }\n                direct_response: { status: 200, body: { inline_string: \"acme route\" } }\n";
    let text = base.replacen(anchor, &format!("{anchor}{route}"), 1);
    let dir = std::env::temp_dir().join(format!("jwt-guard-tenant-routing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("envoy-tenant-routing.yaml");
    std::fs::write(&path, text).expect("write template");
    path
}

#[test]
fn routes_on_identity_headers_see_the_verified_value_never_a_forged_one() {
    let template = tenant_routing_template();
    let stack = Stack::with_template(
        MockIdp::start(),
        envoy::demo_plugin_config(),
        2,
        template.clone(),
    );
    let acme = es(&with(std_claims("alice"), json!({"tenant": "acme"})));
    let globex = es(&with(std_claims("bob"), json!({"tenant": "globex"})));
    // The verified tenant routes: the identity header set, Envoy matches the route again.
    let (r, seen) = get(&stack, "/hello", Some(&acme), &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "acme route"));
    assert!(seen.is_none());
    let (r, seen) = get(&stack, "/hello", Some(&globex), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        seen.expect("the default route")["x-tenant-id"],
        json!("globex")
    );
    // A forged tenant header steers nothing: not with another tenant's token…
    for forged in [
        &[("x-tenant-id", "acme")][..],
        &[("x_tenant_id", "acme"), ("X-Tenant-ID", "acme")],
    ] {
        let (r, seen) = get(&stack, "/hello", Some(&globex), forged);
        assert_ne!(r.body, "acme route", "{forged:?}");
        assert_eq!(
            seen.expect("the default route")["x-tenant-id"],
            json!("globex"),
            "{forged:?}"
        );
    }
    // …not on a public route, and not without a token.
    let (r, seen) = get(&stack, "/healthz", None, &[("x-tenant-id", "acme")]);
    assert_ne!(r.body, "acme route");
    assert!(seen.expect("forwarded").get("x-tenant-id").is_none());
    let (r, _) = get(&stack, "/hello", None, &[("x-tenant-id", "acme")]);
    assert_eq!((r.status, code(&r)), (401, "missing".to_owned()));
}

#[test]
fn a_multi_tenant_issuer_template_accepts_its_tenants_only() {
    let stack = Stack::start(
        config(
            json!({
                "issuer": "https://login.demo.local/{tenant}/v2.0",
                "tenants": ["acme", "globex"],
                "tenant_header": "x-issuer-tenant",
            }),
            json!({}),
        ),
        2,
    );
    let by = |tenant: &str| {
        es(&with(
            std_claims("alice"),
            json!({"iss": format!("https://login.demo.local/{tenant}/v2.0")}),
        ))
    };
    for tenant in ["acme", "globex"] {
        let (r, seen) = get(
            &stack,
            "/hello",
            Some(&by(tenant)),
            &[("x-issuer-tenant", "forged")],
        );
        assert_eq!(r.status, 200, "{tenant}: {}", r.body);
        assert_eq!(seen.expect("forwarded")["x-issuer-tenant"], json!(tenant));
    }
    for tenant in ["initech", "acme/x", "{tenant}"] {
        let (r, seen) = get(&stack, "/hello", Some(&by(tenant)), &[]);
        assert_eq!(
            (r.status, code(&r)),
            (401, "wrong_issuer".to_owned()),
            "{tenant}"
        );
        assert!(seen.is_none());
    }
}

#[test]
fn denials_can_hide_details_or_use_a_template_and_metrics_keep_the_reason() {
    let stack = Stack::start(
        config(json!({}), json!({"denials": {"strip_details": true}})),
        1,
    );
    let expired = es(&with(
        std_claims("alice"),
        json!({"exp": tokens::now() - 600}),
    ));
    let (r, _) = get(&stack, "/hello", Some(&expired), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.body, r#"{"error":"invalid_token"}"#);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"demo\", error=\"invalid_token\"")
    );
    let stats = stack
        .envoy
        .admin_text("/stats?filter=jwt_guard.decisions")
        .unwrap_or_default();
    assert!(
        stats
            .lines()
            .any(|l| l.contains("reason.expired") && l.ends_with(": 1")),
        "{stats}"
    );
    drop(stack);

    let template = json!({"errors": [{"status": "{status}", "title": "{error}", "detail": "{message}", "reason": "{code}"}]});
    let stack = Stack::start(
        config(json!({}), json!({"denials": {"body_template": template}})),
        1,
    );
    let (r, _) = get(&stack, "/hello", Some(&expired), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"errors": [{"status": "401", "title": "invalid_token", "detail": "token expired", "reason": "expired"}]})
    );
}

#[test]
fn claims_with_dots_in_their_names_reach_headers_and_requirements() {
    let stack = Stack::start(
        config(
            json!({"claim_to_headers": [
                {"claim": "sub", "header": "x-user-sub"},
                {"claim": "https://demo.local/roles", "header": "x-roles"},
                {"claim": ["https://demo.local/org", "id"], "header": "x-org"},
            ]}),
            json!({}),
        ),
        1,
    );
    let token = es(&with(
        std_claims("alice"),
        json!({"https://demo.local/roles": ["reader", "writer"], "https://demo.local/org": {"id": "acme"}}),
    ));
    let (r, seen) = get(&stack, "/hello", Some(&token), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = seen.expect("forwarded");
    assert_eq!(seen["x-roles"], json!("reader,writer"));
    assert_eq!(seen["x-org"], json!("acme"));
}
