//! The spoofing sweep (issue 11): no client-sent identity header, in any spelling, reaches the upstream,
//! and no spelling of a host escapes its host rule.
//!
//! Generated, not hand-listed:
//! - **Headers** come from the plugin config under test: every provider's `claim_to_headers` (the
//!   documented default mapping when a provider has none), plus `x-auth-shadow` and `x-auth-degraded`,
//!   plus `<prefix>spoofed-role` for every `strip_header_prefixes` entry (default `x-user-`, `x-tenant-`,
//!   `x-auth-`).
//! - **Variants** of each: lowercase, UPPERCASE, Mixed-Case, `_` for every `-`, `_` for the first or
//!   the last `-` only, Mixed_Case with `_`, two lines (same spelling, and `-` + `_` spellings), an
//!   empty value (also with `_`), and a value with spaces. One request carries one variant of every
//!   header at once.
//! - **Path kinds**: every way a request can get through the filter or be stopped by it (public, `off`,
//!   `allow_missing` with and without a token, shadow allow/deny, enforce allow/deny, CORS preflight,
//!   degraded pass and fail-closed 503 with the IdP down, no rule with a public `default` and without
//!   a default).
//!
//! The oracle: every header reaching the echo upstream whose name, compared case-insensitively with
//! `_` read as `-`, is a managed header or under a strip prefix must be exactly what the filter itself
//! sets for that request (`x-user-sub: alice` for a verified token, `x-auth-shadow: deny;
//! reason=malformed`, …), spelled canonically, once. Anything else, an empty value included, is a
//! failure. A denied request must not reach the upstream at all.
//!
//! Hosts: every host rule of the config under test, and every spelling of a host it matches (case,
//! trailing dot, trailing dot plus port, port, the absolute-form request target), must be decided by
//! that rule (401 without a token, counted under the rule's name), never by the public catch-all
//! (`default`). A host with a double trailing dot or an empty label must not be let through either.
//!
//! Each sweep runs twice: with the shipped Envoy settings (`headers_with_underscores_action:
//! DROP_HEADER`, `strip_trailing_host_dot: true`), and with both at Envoy's defaults
//! ([`EdgeSettings::EnvoyDefaults`]), which leaves only the filter's own layer, as a deployment without
//! those settings runs it. Every failing (path kind, variant, header) is listed at once.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use wasm_test_harness::client::{try_http_request, Response};
use wasm_test_harness::envoy::{validate_options, EDGE_SETTING_OVERRIDES};
use wasm_test_harness::stack::Stack;
use wasm_test_harness::tokens::{self, mint, std_claims};
use wasm_test_harness::{Behavior, EdgeSettings, EnvoyOptions, MockIdp, RecordedRequest};

const PARTNER_ISSUER: &str = "https://partner.demo.local";

/// The mapping a provider without `claim_to_headers` gets (README, "The identity header contract").
const DEFAULT_CLAIM_TO_HEADERS: &[(&str, &str)] = &[
    ("sub", "x-user-sub"),
    ("iss", "x-user-iss"),
    ("scope", "x-user-scope"),
    ("tenant", "x-tenant-id"),
];
/// `strip_header_prefixes` when the config has none (README, config reference).
const DEFAULT_STRIP_PREFIXES: &[&str] = &["x-user-", "x-tenant-", "x-auth-"];
/// The headers the filter sets besides claims.
const SHADOW_HEADER: &str = "x-auth-shadow";
const DEGRADED_HEADER: &str = "x-auth-degraded";

fn provider(issuer: &str, claim_to_headers: Option<Value>) -> Value {
    let mut p = json!({
        "issuer": issuer,
        "audiences": [tokens::AUDIENCE],
        "remote_jwks": {
            "http_uri": {"uri": "http://idp.demo.local/jwks.json", "cluster": "idp", "timeout": "2s"},
            "cache_duration": "300s"
        }
    });
    if let Some(c) = claim_to_headers {
        p["claim_to_headers"] = c;
    }
    p
}

fn demo_claim_to_headers() -> Value {
    json!([
        {"claim": "sub", "header": "x-user-sub"},
        {"claim": "scope", "header": "x-user-scope"},
        {"claim": "tenant", "header": "x-tenant-id"},
        {"claim": "org.id", "header": "x-user-org"},
        {"claim": "email", "header": "x-user-email"},
        {"claim": "roles", "header": "x-user-roles"},
        {"claim": "level", "header": "x-user-level"}
    ])
}

/// Config A (IdP up): host rules first, then one rule per path kind, and a public `default` as the
/// catch-all. `demo` maps claims explicitly, `partner` uses the default mapping.
fn config_a() -> Value {
    json!({
        "realm": "sweep",
        "providers": {
            "demo": provider(tokens::ISSUER, Some(demo_claim_to_headers())),
            "partner": provider(PARTNER_ISSUER, None)
        },
        "rules": [
            {"name": "host_admin", "match": {"hosts": ["admin.example.test"]},
             "requires": {"provider_name": "demo"}},
            {"name": "host_corp", "match": {"hosts": ["*.corp.example.test"]},
             "requires": {"provider_name": "demo"}},
            {"name": "public", "match": {"path": "/public"}},
            {"name": "off", "match": {"prefix": "/off/"}, "requires": {"provider_name": "demo"}, "mode": "off"},
            {"name": "optional", "match": {"prefix": "/optional/"},
             "requires": {"provider_name": "demo", "allow_missing": true}},
            {"name": "shadow", "match": {"prefix": "/shadow/"}, "mode": "shadow",
             "requires": {"provider_name": "demo", "scopes": ["read:items"]}},
            {"name": "partner", "match": {"prefix": "/partner/"}, "requires": {"provider_name": "partner"}},
            {"name": "api", "match": {"prefix": "/api/"}, "requires": {"provider_name": "demo"}}
        ],
        "default": {}
    })
}

/// Config B (IdP down): a degraded rule, a fail-closed rule, no default; an extra strip prefix.
fn config_b() -> Value {
    json!({
        "realm": "sweep",
        "jwks_wait_timeout": "300ms",
        "strip_header_prefixes": ["x-user-", "x-tenant-", "x-auth-", "x-remote-"],
        "providers": {
            "demo": provider(tokens::ISSUER, Some(demo_claim_to_headers())),
            "partner": provider(PARTNER_ISSUER, None)
        },
        "rules": [
            {"name": "degraded", "match": {"prefix": "/degraded/"},
             "requires": {"provider_name": "demo"}, "on_keys_unavailable": "degraded"},
            {"name": "api", "match": {"prefix": "/api/"}, "requires": {"provider_name": "demo"}}
        ]
    })
}

// ---------- the contract, read from the config under test ----------

struct Contract {
    /// Lowercase names of every header the filter may set.
    managed: Vec<String>,
    /// Lowercase strip prefixes.
    prefixes: Vec<String>,
}

fn claim_to_headers(provider: &Value) -> Vec<(String, String)> {
    match provider["claim_to_headers"].as_array() {
        Some(list) => list
            .iter()
            .map(|m| {
                (
                    m["claim"].as_str().expect("claim").to_owned(),
                    m["header"].as_str().expect("header").to_ascii_lowercase(),
                )
            })
            .collect(),
        None => DEFAULT_CLAIM_TO_HEADERS
            .iter()
            .map(|(c, h)| (c.to_string(), h.to_string()))
            .collect(),
    }
}

impl Contract {
    fn of(config: &Value) -> Contract {
        let mut managed = vec![SHADOW_HEADER.to_owned(), DEGRADED_HEADER.to_owned()];
        for p in config["providers"].as_object().expect("providers").values() {
            for (_, h) in claim_to_headers(p) {
                if !managed.contains(&h) {
                    managed.push(h);
                }
            }
        }
        let prefixes = match config["strip_header_prefixes"].as_array() {
            Some(list) => list
                .iter()
                .map(|p| p.as_str().expect("prefix").to_ascii_lowercase())
                .collect(),
            None => DEFAULT_STRIP_PREFIXES
                .iter()
                .map(|p| p.to_string())
                .collect(),
        };
        Contract { managed, prefixes }
    }

    /// The names a client spoofs: every managed header and one name under every prefix.
    fn spoofable(&self) -> Vec<String> {
        let mut names = self.managed.clone();
        names.extend(self.prefixes.iter().map(|p| format!("{p}spoofed-role")));
        names
    }

    /// True if `name` (as received) is the contract's, with `_` read as `-`, in any case.
    fn covers(&self, name: &str) -> bool {
        let n = canonical(name);
        self.managed.contains(&n) || self.prefixes.iter().any(|p| n.starts_with(p.as_str()))
    }
}

fn canonical(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// What the filter writes for a verified token of `provider`: its mapping applied to `claims` (the
/// sweep's tokens hold only strings, so the value is the string; `scope` from `scope`).
fn identity(provider: &Value, claims: &Value) -> Vec<(String, String)> {
    claim_to_headers(provider)
        .into_iter()
        .filter_map(|(claim, header)| {
            let v = claim
                .split('.')
                .try_fold(claims, |c, k| c.get(k))?
                .as_str()?;
            Some((header, v.to_owned()))
        })
        .collect()
}

// ---------- header spellings ----------

#[derive(Clone, Copy, Debug)]
enum Variant {
    Lowercase,
    Uppercase,
    MixedCase,
    UnderscoreAll,
    UnderscoreFirst,
    UnderscoreLast,
    MixedCaseUnderscore,
    Repeated,
    RepeatedDashAndUnderscore,
    EmptyValue,
    EmptyValueUnderscore,
    ValueWithSpaces,
}

const VARIANTS: &[Variant] = &[
    Variant::Lowercase,
    Variant::Uppercase,
    Variant::MixedCase,
    Variant::UnderscoreAll,
    Variant::UnderscoreFirst,
    Variant::UnderscoreLast,
    Variant::MixedCaseUnderscore,
    Variant::Repeated,
    Variant::RepeatedDashAndUnderscore,
    Variant::EmptyValue,
    Variant::EmptyValueUnderscore,
    Variant::ValueWithSpaces,
];

fn mixed_case(name: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in name.chars() {
        out.push(if start {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        start = c == '-' || c == '_';
    }
    out
}

fn replace_nth_dash(name: &str, last: bool) -> String {
    let i = if last {
        name.rfind('-')
    } else {
        name.find('-')
    };
    match i {
        Some(i) => format!("{}_{}", &name[..i], &name[i + 1..]),
        None => name.to_owned(),
    }
}

impl Variant {
    /// The header lines this variant sends for `name` (lowercase, with `-`).
    fn lines(self, name: &str) -> Vec<(String, String)> {
        let under = name.replace('-', "_");
        let one = |n: String, v: &str| vec![(n, v.to_owned())];
        match self {
            Variant::Lowercase => one(name.to_owned(), "forged"),
            Variant::Uppercase => one(name.to_ascii_uppercase(), "forged"),
            Variant::MixedCase => one(mixed_case(name), "forged"),
            Variant::UnderscoreAll => one(under, "forged"),
            Variant::UnderscoreFirst => one(replace_nth_dash(name, false), "forged"),
            Variant::UnderscoreLast => one(replace_nth_dash(name, true), "forged"),
            Variant::MixedCaseUnderscore => one(mixed_case(&under), "forged"),
            Variant::Repeated => vec![
                (name.to_owned(), "forged-1".to_owned()),
                (name.to_owned(), "forged-2".to_owned()),
            ],
            Variant::RepeatedDashAndUnderscore => vec![
                (name.to_owned(), "forged-1".to_owned()),
                (under, "forged-2".to_owned()),
            ],
            Variant::EmptyValue => one(name.to_owned(), ""),
            Variant::EmptyValueUnderscore => one(under, ""),
            Variant::ValueWithSpaces => one(name.to_owned(), "forged  with spaces "),
        }
    }
}

// ---------- path kinds ----------

struct PathKind {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    token: Option<String>,
    extra: Vec<(&'static str, &'static str)>,
    status: u16,
    /// `None`: must not reach the upstream. `Some(h)`: reaches it, and `h` are the only contract headers
    /// it may carry (name, exact value).
    upstream: Option<Vec<(String, String)>>,
}

fn claims() -> Value {
    let mut c = std_claims("alice");
    c["scope"] = json!("read:items");
    c["tenant"] = json!("acme");
    c["org"] = json!({"id": "org-7"});
    c["email"] = json!("alice@example.test");
    c
}

fn token_for(issuer: &str) -> (String, Value) {
    let mut c = claims();
    c["iss"] = json!(issuer);
    (mint("ES256", Some("ec-1"), &c), c)
}

fn path_kinds_a(config: &Value) -> Vec<PathKind> {
    let (demo, demo_claims) = token_for(tokens::ISSUER);
    let (partner, partner_claims) = token_for(PARTNER_ISSUER);
    let demo_identity = identity(&config["providers"]["demo"], &demo_claims);
    let partner_identity = identity(&config["providers"]["partner"], &partner_claims);
    assert!(
        demo_identity.len() >= 4 && partner_identity.len() == DEFAULT_CLAIM_TO_HEADERS.len(),
        "the sweep's tokens should fill most mapped headers: {demo_identity:?} {partner_identity:?}"
    );
    let with = |mut base: Vec<(String, String)>, flag: (&str, &str)| {
        base.push((flag.0.to_owned(), flag.1.to_owned()));
        base
    };
    let pass = |h: Vec<(String, String)>| Some(h);
    vec![
        PathKind {
            name: "public rule",
            method: "GET",
            path: "/public",
            token: None,
            extra: vec![],
            status: 200,
            upstream: pass(vec![]),
        },
        PathKind {
            name: "off rule",
            method: "GET",
            path: "/off/x",
            token: None,
            extra: vec![],
            status: 200,
            upstream: pass(vec![]),
        },
        PathKind {
            name: "allow_missing, no token",
            method: "GET",
            path: "/optional/x",
            token: None,
            extra: vec![],
            status: 200,
            upstream: pass(vec![]),
        },
        PathKind {
            name: "allow_missing, valid token",
            method: "GET",
            path: "/optional/x",
            token: Some(demo.clone()),
            extra: vec![],
            status: 200,
            upstream: pass(demo_identity.clone()),
        },
        PathKind {
            name: "shadow allow",
            method: "GET",
            path: "/shadow/x",
            token: Some(demo.clone()),
            extra: vec![],
            status: 200,
            upstream: pass(with(demo_identity.clone(), (SHADOW_HEADER, "allow"))),
        },
        PathKind {
            name: "shadow deny, bad token",
            method: "GET",
            path: "/shadow/x",
            token: Some("garbage".to_owned()),
            extra: vec![],
            status: 200,
            upstream: pass(vec![(
                SHADOW_HEADER.to_owned(),
                "deny; reason=malformed".to_owned(),
            )]),
        },
        PathKind {
            name: "shadow deny, no token",
            method: "GET",
            path: "/shadow/x",
            token: None,
            extra: vec![],
            status: 200,
            upstream: pass(vec![(
                SHADOW_HEADER.to_owned(),
                "deny; reason=missing".to_owned(),
            )]),
        },
        PathKind {
            name: "enforce allow",
            method: "GET",
            path: "/api/x",
            token: Some(demo.clone()),
            extra: vec![],
            status: 200,
            upstream: pass(demo_identity),
        },
        PathKind {
            name: "enforce allow, default claim_to_headers",
            method: "GET",
            path: "/partner/x",
            token: Some(partner),
            extra: vec![],
            status: 200,
            upstream: pass(partner_identity),
        },
        PathKind {
            name: "enforce deny, bad token",
            method: "GET",
            path: "/api/x",
            token: Some("garbage".to_owned()),
            extra: vec![],
            status: 401,
            upstream: None,
        },
        PathKind {
            name: "enforce deny, no token",
            method: "GET",
            path: "/api/x",
            token: None,
            extra: vec![],
            status: 401,
            upstream: None,
        },
        PathKind {
            name: "CORS preflight",
            method: "OPTIONS",
            path: "/api/x",
            token: None,
            extra: vec![
                ("origin", "https://app.example.test"),
                ("access-control-request-method", "POST"),
            ],
            status: 200,
            upstream: pass(vec![]),
        },
        PathKind {
            name: "no rule, public default",
            method: "GET",
            path: "/elsewhere",
            token: None,
            extra: vec![],
            status: 200,
            upstream: pass(vec![]),
        },
    ]
}

fn path_kinds_b() -> Vec<PathKind> {
    let (demo, _) = token_for(tokens::ISSUER);
    vec![
        PathKind {
            name: "degraded pass (IdP down)",
            method: "GET",
            path: "/degraded/x",
            token: Some(demo.clone()),
            extra: vec![],
            status: 200,
            upstream: Some(vec![(
                DEGRADED_HEADER.to_owned(),
                "keys_unavailable".to_owned(),
            )]),
        },
        PathKind {
            name: "fail-closed 503 (IdP down)",
            method: "GET",
            path: "/api/x",
            token: Some(demo),
            extra: vec![],
            status: 503,
            upstream: None,
        },
        PathKind {
            name: "no rule, no default",
            method: "GET",
            path: "/elsewhere",
            token: None,
            extra: vec![],
            status: 403,
            upstream: None,
        },
    ]
}

// ---------- the sweep ----------

/// Compares what reached the upstream with what the filter should have set; one line per bad header.
fn contract_violations(
    contract: &Contract,
    expected: &[(String, String)],
    seen: &RecordedRequest,
) -> Vec<String> {
    let mut names: BTreeSet<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    for (n, _) in &seen.headers {
        if contract.covers(n) {
            names.insert(canonical(n));
        }
    }
    let mut out = Vec::new();
    for name in names {
        let got: Vec<(String, String)> = seen
            .headers
            .iter()
            .filter(|(n, _)| canonical(n) == name)
            .cloned()
            .collect();
        let want: Vec<(String, String)> = expected
            .iter()
            .filter(|(n, _)| *n == name)
            .cloned()
            .collect();
        if got != want {
            out.push(format!("{name}: upstream got {got:?}, want {want:?}"));
        }
    }
    out
}

/// Sends every variant on every path kind; returns the failures and the number of header lines with
/// an underscore in the name that were sent.
fn sweep(label: &str, stack: &Stack, config: &Value, kinds: &[PathKind]) -> (Vec<String>, u64) {
    let contract = Contract::of(config);
    let names = contract.spoofable();
    let mut failures = Vec::new();
    let mut underscore_lines = 0;
    for kind in kinds {
        for variant in VARIANTS {
            let mut headers: Vec<(String, String)> =
                names.iter().flat_map(|n| variant.lines(n)).collect();
            underscore_lines += headers.iter().filter(|(n, _)| n.contains('_')).count() as u64;
            headers.extend(
                kind.extra
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            let refs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (r, seen) = stack.through(kind.method, kind.path, kind.token.as_deref(), &refs);
            let at = format!("[{label}] {} / {variant:?}", kind.name);
            if r.status != kind.status {
                failures.push(format!(
                    "{at}: status {} (want {}): {}",
                    r.status,
                    kind.status,
                    r.body.chars().take(160).collect::<String>()
                ));
            }
            match (&kind.upstream, seen) {
                (None, None) => {}
                (None, Some(_)) => failures.push(format!(
                    "{at}: reached the upstream, but the filter should have answered"
                )),
                (Some(_), None) => failures.push(format!("{at}: never reached the upstream")),
                (Some(expected), Some(seen)) => {
                    for v in contract_violations(&contract, expected, &seen) {
                        failures.push(format!("{at}: {v}"));
                    }
                }
            }
        }
    }
    (failures, underscore_lines)
}

// ---------- host spellings ----------

/// A concrete host a `match.hosts` entry matches (`*.corp.example.test` -> `app.corp.example.test`).
fn concrete(pattern: &str) -> String {
    match pattern.strip_prefix("*.") {
        Some(domain) => format!("app.{domain}"),
        None => pattern.to_owned(),
    }
}

/// (description, request target, Host header) for every spelling of `host` that must match.
fn host_spellings(host: &str) -> Vec<(String, String, String)> {
    let upper = host.to_ascii_uppercase();
    let mixed: String = host
        .split('.')
        .map(mixed_case)
        .collect::<Vec<_>>()
        .join(".");
    let by_header =
        |what: &str, h: String| (format!("Host: {h} ({what})"), "/hosted/x".to_owned(), h);
    let absolute = |what: &str, authority: String| {
        (
            format!("GET http://{authority}/hosted/x ({what})"),
            format!("http://{authority}/hosted/x"),
            // The absolute-form target's authority wins over the Host header (RFC 9112 3.2.2).
            "public.example.test".to_owned(),
        )
    };
    vec![
        by_header("as written", host.to_owned()),
        by_header("uppercase", upper.clone()),
        by_header("mixed case", mixed.clone()),
        by_header("trailing dot", format!("{host}.")),
        by_header("uppercase, trailing dot", format!("{upper}.")),
        by_header("trailing dot and port", format!("{host}.:443")),
        by_header(
            "mixed case, trailing dot and port",
            format!("{mixed}.:8443"),
        ),
        by_header("port", format!("{host}:8443")),
        absolute("absolute form", host.to_owned()),
        absolute("absolute form, trailing dot", format!("{host}.")),
        absolute(
            "absolute form, mixed case, trailing dot, port",
            format!("{mixed}.:80"),
        ),
    ]
}

/// Spellings that are not a valid host name: must not be let through by the public catch-all.
fn invalid_host_spellings(host: &str) -> Vec<String> {
    let (first, rest) = host.split_once('.').expect("a dotted host");
    vec![
        format!("{host}.."),
        format!("{host}..:443"),
        format!("{first}..{rest}"),
    ]
}

/// The host patterns of every host rule in `config`: (rule name, concrete host).
fn host_rules(config: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for rule in config["rules"].as_array().expect("rules") {
        for pattern in rule["match"]["hosts"].as_array().into_iter().flatten() {
            out.push((
                rule["name"].as_str().expect("rule name").to_owned(),
                concrete(pattern.as_str().expect("host")),
            ));
        }
    }
    assert!(out.len() >= 2, "config A should have host rules: {out:?}");
    out
}

fn decision_stat(rule: &str, reason: &str) -> String {
    format!("wasmcustom.jwt_guard.decisions.route.{rule}.mode.enforce.outcome.deny.reason.{reason}")
}

/// GET `target` with exactly this Host header; (response, whether the upstream saw it).
fn host_get(stack: &Stack, target: &str, host: &str) -> (Response, bool) {
    let before = stack.echo.count();
    let r = try_http_request(
        stack.envoy.listen_port(),
        "GET",
        target,
        &[("host", host.as_bytes().to_vec())],
        b"",
    )
    .unwrap_or_else(|e| panic!("GET {target} (Host: {host}): {e}"));
    (r, stack.echo.count() > before)
}

fn host_sweep(label: &str, stack: &Stack, config: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    let get = |target: &str, host: &str| host_get(stack, target, host);
    // The control: a host no rule names is decided by the public default.
    let (r, reached) = get("/hosted/x", "public.example.test");
    assert!(
        r.status == 200 && reached,
        "[{label}] control: a public host should pass: {} {}",
        r.status,
        r.body
    );
    for (name, host) in host_rules(config) {
        let stat = decision_stat(&name, "missing");
        for (what, target, host_header) in host_spellings(&host) {
            let before = stack.envoy.stat(&stat);
            let (r, reached) = get(&target, &host_header);
            let after = stack.envoy.stat(&stat);
            let at = format!("[{label}] host rule {name} / {what}");
            if r.status != 401 || reached {
                failures.push(format!(
                    "{at}: status {}, reached upstream: {reached} (want 401 from rule {name}, not the public default)",
                    r.status
                ));
            } else if after.unwrap_or(0) != before.unwrap_or(0) + 1 {
                failures.push(format!(
                    "{at}: 401, but {stat} went {before:?} -> {after:?} (decided by another rule?)"
                ));
            }
        }
    }
    failures
}

// ---------- the runs ----------

const UNDERSCORE_STAT: &str = "http1.dropped_headers_with_underscores";

fn run(edge: EdgeSettings) {
    let label = match edge {
        EdgeSettings::Shipped => "shipped Envoy settings",
        EdgeSettings::EnvoyDefaults => "filter only (Envoy defaults)",
    };
    let a = config_a();
    let b = config_b();
    let stack_a = Stack::with_edge_settings(MockIdp::start(), a.to_string(), 1, edge);
    let idp_down = MockIdp::start();
    idp_down.set_behavior(Behavior::Status(503));
    let stack_b = Stack::with_edge_settings(idp_down, b.to_string(), 1, edge);

    let mut failures = Vec::new();
    let (f, underscores_a) = sweep(label, &stack_a, &a, &path_kinds_a(&a));
    failures.extend(f);
    let (f, underscores_b) = sweep(label, &stack_b, &b, &path_kinds_b());
    failures.extend(f);
    failures.extend(host_sweep(label, &stack_a, &a));

    // An underscore header outside the contract: with the shipped settings it is dropped and the
    // request still passes (DROP_HEADER, not REJECT_REQUEST); at Envoy's defaults it reaches the
    // upstream (the filter only strips the contract's headers).
    let (r, seen) = stack_a.through("GET", "/public", None, &[("x_client_hint", "1")]);
    assert_eq!(
        r.status, 200,
        "[{label}] an unrelated underscore header: {}",
        r.body
    );
    let forwarded = seen.expect("reached").header("x_client_hint").is_some();
    assert_eq!(
        forwarded,
        edge == EdgeSettings::EnvoyDefaults,
        "[{label}] x_client_hint forwarded"
    );

    // Envoy's own count of dropped headers: every underscore line sent, or none.
    let sent = [underscores_a + 1, underscores_b];
    for (stack, sent, which) in [(&stack_a, sent[0], "A"), (&stack_b, sent[1], "B")] {
        let dropped = stack.envoy.stat(UNDERSCORE_STAT);
        let want = match edge {
            EdgeSettings::Shipped => sent,
            EdgeSettings::EnvoyDefaults => 0,
        };
        assert!(sent > 0);
        assert_eq!(
            dropped,
            Some(want),
            "[{label}] stack {which}: {UNDERSCORE_STAT} after {sent} underscore header lines"
        );
    }

    assert!(failures.is_empty(), "{}", report(&failures));
}

/// Every failure, preceded by one line per (path kind, variant) naming all its leaking headers.
fn report(failures: &[String]) -> String {
    let mut leaks: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for f in failures {
        let parts: Vec<&str> = f.splitn(3, ": ").collect();
        if let [at, header, rest] = parts[..] {
            if rest.starts_with("upstream got") {
                leaks.entry(at).or_default().push(header);
            }
        }
    }
    let summary: Vec<String> = leaks
        .iter()
        .map(|(at, headers)| format!("{at}: {}", headers.join(", ")))
        .collect();
    format!(
        "{} spoofing-sweep failures.\nLeaking headers by (path kind, variant):\n{}\nAll failures:\n{}",
        failures.len(),
        summary.join("\n"),
        failures.join("\n")
    )
}

#[test]
fn spoofing_sweep_with_the_shipped_envoy_settings() {
    run(EdgeSettings::Shipped);
}

#[test]
fn spoofing_sweep_with_the_filter_alone() {
    run(EdgeSettings::EnvoyDefaults);
}

/// Hosts that are not valid host names (a double trailing dot, an empty label) where host rules
/// exist: never let through by the public catch-all, with either Envoy setting. (The filter is to
/// answer them `400 invalid_request`; only "not passed, not forwarded" is asserted here.)
#[test]
fn malformed_hosts_never_reach_the_public_catch_all() {
    let a = config_a();
    let mut failures = Vec::new();
    for edge in [EdgeSettings::Shipped, EdgeSettings::EnvoyDefaults] {
        let stack = Stack::with_edge_settings(MockIdp::start(), a.to_string(), 1, edge);
        let (r, reached) = host_get(&stack, "/hosted/x", "public.example.test");
        assert!(
            r.status == 200 && reached,
            "{edge:?}: control: {}",
            r.status
        );
        for (name, host) in host_rules(&a) {
            for bad in invalid_host_spellings(&host) {
                let (r, reached) = host_get(&stack, "/hosted/x", &bad);
                if r.status == 200 || reached {
                    failures.push(format!(
                        "[{edge:?}] host rule {name} / Host: {bad}: status {}, reached upstream: {reached}",
                        r.status
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} malformed hosts fell through to the public default:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The oracle itself: it flags spoofs in any spelling, empty values, duplicates and missing values,
/// and accepts exactly the filter's own headers.
#[test]
fn the_oracle_catches_what_it_must() {
    let contract = Contract::of(&config_a());
    let req = |headers: &[(&str, &str)]| RecordedRequest {
        method: "GET".into(),
        path: "/".into(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        raw_headers: vec![],
        body: vec![],
    };
    let alice = vec![("x-user-sub".to_owned(), "alice".to_owned())];
    assert!(contract_violations(&contract, &alice, &req(&[("x-user-sub", "alice")])).is_empty());
    assert!(contract_violations(&contract, &[], &req(&[("x-request-id", "1")])).is_empty());
    for bad in [
        vec![("x_user_sub", "alice")],
        vec![("x-user-sub", "alice"), ("x_user_sub", "forged")],
        vec![("x-user-sub", "alice"), ("x-user-sub", "alice")],
        vec![("x-user-sub", "")],
        vec![],
    ] {
        assert_eq!(
            contract_violations(&contract, &alice, &req(&bad)).len(),
            1,
            "{bad:?}"
        );
    }
    for bad in [
        ("x_tenant_id", ""),
        ("x-auth-shadow", "allow"),
        ("x-user-spoofed-role", "x"),
        ("x_auth_anything", "x"),
        ("x-user-iss", "x"),
    ] {
        assert_eq!(
            contract_violations(&contract, &[], &req(&[bad])).len(),
            1,
            "{bad:?}"
        );
    }
    // The generated names cover both providers' mappings, the flags and every prefix.
    let names = contract.spoofable();
    for n in [
        "x-user-sub",
        "x-user-iss",
        "x-user-org",
        "x-auth-shadow",
        "x-auth-degraded",
        "x-tenant-spoofed-role",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} not swept: {names:?}");
    }
    assert!(Contract::of(&config_b())
        .spoofable()
        .contains(&"x-remote-spoofed-role".to_owned()));
    // Variants really differ in spelling where they should.
    assert_eq!(
        Variant::UnderscoreFirst.lines("x-user-sub")[0].0,
        "x_user-sub"
    );
    assert_eq!(
        Variant::UnderscoreLast.lines("x-user-sub")[0].0,
        "x-user_sub"
    );
    assert_eq!(
        Variant::MixedCaseUnderscore.lines("x-auth-shadow")[0].0,
        "X_Auth_Shadow"
    );
}

/// `EdgeSettings::EnvoyDefaults` really changes the rendered config, and refuses a template without
/// the settings rather than doing nothing.
#[test]
fn envoy_defaults_override_the_shipped_lines_or_refuse() {
    let opts = EnvoyOptions {
        edge_settings: EdgeSettings::EnvoyDefaults,
        ..EnvoyOptions::default()
    };
    let rendered = opts.render_config(0, 0).expect("renders");
    for (shipped, default) in EDGE_SETTING_OVERRIDES {
        assert!(
            rendered.contains(default) && !rendered.contains(shipped),
            "{shipped}"
        );
    }
    let shipped = EnvoyOptions::default()
        .render_config(0, 0)
        .expect("renders");
    for (line, _) in EDGE_SETTING_OVERRIDES {
        assert!(shipped.contains(line), "envoy/envoy.yaml sets `{line}`");
    }
    let noop = EnvoyOptions {
        template: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/noop-envoy.yaml"),
        edge_settings: EdgeSettings::EnvoyDefaults,
        ..EnvoyOptions::default()
    };
    let err = validate_options(&noop).expect_err("nothing to override");
    assert!(err.contains("nothing to"), "{err}");
}

// ---------- the shipped configs ----------

const HCM: &str = "envoy.filters.network.http_connection_manager";

/// Every HTTP connection manager's typed_config in a parsed config.
fn hcms(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            if m.get("name").and_then(Value::as_str) == Some(HCM) {
                out.push(m.get("typed_config").cloned().unwrap_or(Value::Null));
            }
            m.values().for_each(|x| hcms(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| hcms(x, out)),
        _ => {}
    }
}

fn parse_yaml(text: &str, what: &str) -> Value {
    let y: serde_yaml::Value =
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{what}: not YAML: {e}"));
    serde_json::to_value(y).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Problems with the edge settings of every HCM in `config` (empty when all are set as shipped).
fn edge_setting_problems(config: &Value, what: &str) -> (usize, Vec<String>) {
    let mut found = Vec::new();
    hcms(config, &mut found);
    let mut problems = Vec::new();
    for (i, hcm) in found.iter().enumerate() {
        let action = &hcm["common_http_protocol_options"]["headers_with_underscores_action"];
        if action != "DROP_HEADER" {
            problems.push(format!(
                "{what}: HCM {i}: headers_with_underscores_action is {action}, want DROP_HEADER"
            ));
        }
        if hcm["strip_trailing_host_dot"] != true {
            problems.push(format!(
                "{what}: HCM {i}: strip_trailing_host_dot is {}, want true",
                hcm["strip_trailing_host_dot"]
            ));
        }
    }
    (found.len(), problems)
}

/// Every HTTP connection manager in every Envoy config the project ships (envoy/, examples/envoy/,
/// and each bench configuration) drops underscore headers and strips a trailing host dot. The bench
/// bootstraps are also validated by Envoy, except `wasm-floor`, whose module only `make bench` builds
/// (its bootstrap is the same template, checked above; only its wasm filter differs).
#[test]
fn every_shipped_envoy_config_sets_the_edge_settings() {
    let root = wasm_test_harness::repo_root();
    let mut with_hcm = Vec::new();
    let mut problems = Vec::new();
    for dir in ["envoy", "examples/envoy"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("yaml"))
            .collect();
        files.sort();
        for path in files {
            let what = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let text = std::fs::read_to_string(&path).expect("read");
            // Placeholders are values; any scalar keeps the YAML parseable.
            let mut parsed_text = text.clone();
            while let Some(i) = parsed_text.find("{{") {
                let j = parsed_text[i..].find("}}").expect("closed placeholder") + i + 2;
                parsed_text.replace_range(i..j, "placeholder");
            }
            let (n, p) = edge_setting_problems(&parse_yaml(&parsed_text, &what), &what);
            problems.extend(p);
            if n > 0 {
                with_hcm.push(what);
            }
        }
    }
    let opts = wasm_test_harness::bench::parse_args(&[]).expect("bench defaults");
    for config in wasm_test_harness::bench::CONFIGS {
        let what = format!("bench/envoy-bench.yaml ({config})");
        let text = wasm_test_harness::bench::render_bootstrap(config, &opts, 0, 0)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (n, p) = edge_setting_problems(&parse_yaml(&text, &what), &what);
        problems.extend(p);
        assert_eq!(n, 1, "{what}: one HCM");
        with_hcm.push(what.clone());
        if *config != "wasm-floor" {
            let dir = std::env::temp_dir().join(format!("jwt-guard-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let path = dir.join(format!("envoy-{config}.yaml"));
            std::fs::write(&path, &text).expect("write");
            wasm_test_harness::validate(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
            let _ = std::fs::remove_file(&path);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for must in [
        "envoy/envoy.yaml",
        "envoy/lds.yaml",
        "examples/envoy/envoy.yaml",
        "examples/envoy/listener.yaml",
    ] {
        assert!(
            with_hcm.iter().any(|w| w == must),
            "{must} has no HCM? checked {with_hcm:?}"
        );
    }
    // The checker itself: a config without the settings, or with another action, is reported.
    let bare = json!({"filters": [{"name": HCM, "typed_config": {"stat_prefix": "x"}}]});
    assert_eq!(edge_setting_problems(&bare, "bare").1.len(), 2);
    let reject = json!({"filters": [{"name": HCM, "typed_config": {
        "common_http_protocol_options": {"headers_with_underscores_action": "REJECT_REQUEST"},
        "strip_trailing_host_dot": true}}]});
    assert_eq!(edge_setting_problems(&reject, "reject").1.len(), 1);
}
