//! The engine (`jwt_guard::engine`) driven natively through `host::FakeHost`: the paths that used to
//! be reachable only through a real Envoy — waiters and their deadlines, the JWKS fetch state
//! machine (discovery → JWKS, failures, backoff), host refusals, health-log deduplication across
//! VMs, a VM started after another published the key set, a missing clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{rs256_token, rsa_jwk, rsa_private};
use jwt_guard::engine::{Engine, Flow};
use jwt_guard::host::{FakeHost, FakeResponse, Level};
use serde_json::{json, Value};

const NOW_S: u64 = 1_800_000_000;
const ISS: &str = "https://idp.test";
const ROOT: u32 = 1;

fn config(remote: Value) -> Value {
    json!({
        "realm": "api",
        "jwks_wait_timeout": "2s",
        "providers": {"idp": {
            "issuer": ISS, "audiences": ["api"], "remote_jwks": remote,
            "claim_to_headers": [{"claim": "sub", "header": "x-user"}]
        }},
        "rules": [
            {"name": "open", "match": {"prefix": "/open"}},
            {"name": "api", "match": {"prefix": "/"}, "requires": {"provider_name": "idp"}}
        ],
    })
}

fn plain() -> Value {
    config(json!({
        "http_uri": {"uri": "https://idp.test/jwks", "cluster": "idp", "timeout": "1s"},
        "cache_duration": "300s"
    }))
}

fn discovery() -> Value {
    config(json!({
        "discovery": {"cluster": "idp", "timeout": "1s"},
        "cache_duration": "300s"
    }))
}

/// A host at `NOW_S` with `config`, and a configured engine on it.
fn vm(config: &Value) -> (FakeHost, Engine<FakeHost>) {
    let host = FakeHost::at(u128::from(NOW_S) * 1_000_000_000);
    host.root_id.set(ROOT);
    *host.plugin_config.borrow_mut() = Some(config.to_string().into_bytes());
    let engine = configured(&host);
    (host, engine)
}

fn configured(host: &FakeHost) -> Engine<FakeHost> {
    let mut engine = Engine::new(host.clone(), ROOT);
    assert!(engine.configure(), "{:?}", host.logged(Level::Warn));
    engine
}

fn jwks() -> String {
    json!({"keys": [rsa_jwk("rsa-1")]}).to_string()
}

fn token(sub: &str) -> String {
    let claims = json!({"iss": ISS, "aud": "api", "sub": sub, "iat": NOW_S, "exp": NOW_S + 600});
    rs256_token(&rsa_private("rsa-1"), "rsa-1", &claims)
}

/// Opens stream `id` for `path` with an optional bearer token, runs the filter, returns its flow.
fn request(
    host: &FakeHost,
    engine: &mut Engine<FakeHost>,
    id: u32,
    path: &str,
    token: Option<&str>,
) -> Flow {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        (":method", "GET"),
        (":path", path),
        (":authority", "api.test"),
        ("x-user", "forged"),
    ];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    host.open(id, &headers);
    engine.on_request_headers(id)
}

fn response(host: &FakeHost, id: u32) -> FakeResponse {
    host.stream(id)
        .response
        .unwrap_or_else(|| panic!("stream {id} was not answered: {:?}", host.stream(id)))
}

/// Answers the newest outbound call with `status` and `body`, as the host would deliver it.
fn answer(host: &FakeHost, engine: &mut Engine<FakeHost>, status: &str, body: &str) {
    let token = host
        .calls
        .borrow()
        .last()
        .expect("a call was dispatched")
        .token;
    *host.answer.borrow_mut() = Some((Some(status.to_owned()), body.as_bytes().to_vec()));
    host.current.set(ROOT);
    engine.on_http_call_response(token, body.len());
    *host.answer.borrow_mut() = None;
}

fn tick(host: &FakeHost, engine: &mut Engine<FakeHost>) {
    host.current.set(ROOT);
    engine.on_tick();
}

/// Configure, first tick (dispatch), JWKS answered: keys published.
fn ready(config: &Value) -> (FakeHost, Engine<FakeHost>) {
    let (host, mut engine) = vm(config);
    tick(&host, &mut engine);
    answer(&host, &mut engine, "200", &jwks());
    (host, engine)
}

const FETCH_SUCCESS: &str = "jwt_guard.jwks.provider.idp.fetch.result.success";

#[test]
fn the_first_fetch_starts_on_the_first_tick_and_a_valid_token_passes_with_its_identity() {
    let (host, mut engine) = vm(&plain());
    assert!(
        host.calls.borrow().is_empty(),
        "nothing is fetched at configure time"
    );
    tick(&host, &mut engine);
    let call = host.calls.borrow()[0].clone();
    assert_eq!(
        (call.cluster.as_str(), call.path(), call.timeout_ms),
        ("idp", "/jwks", 1_000)
    );
    let user_agent = call.headers.iter().find(|(n, _)| n == "user-agent");
    assert_eq!(
        user_agent.map(|(_, v)| v.as_str()),
        Some(jwt_guard::config::FETCH_USER_AGENT),
        "a user-agent on every key fetch"
    );
    answer(&host, &mut engine, "200", &jwks());
    assert_eq!(host.value(FETCH_SUCCESS), 1);

    assert_eq!(
        request(&host, &mut engine, 10, "/orders", Some(&token("alice"))),
        Flow::Continue
    );
    let s = host.stream(10);
    assert!(s.response.is_none());
    assert_eq!(
        s.header("x-user").as_deref(),
        Some("alice"),
        "forged value replaced: {:?}",
        s.headers
    );
    assert_eq!(s.headers.iter().filter(|(n, _)| n == "x-user").count(), 1);
    assert!(
        s.header("authorization").is_some(),
        "forward_token defaults to true"
    );

    assert_eq!(
        request(&host, &mut engine, 11, "/orders", None),
        Flow::Pause
    );
    let r = response(&host, 11);
    assert_eq!(r.status, 401);
    assert!(
        r.headers
            .iter()
            .any(|(n, v)| n == "www-authenticate" && v.starts_with("Bearer realm=\"api\"")),
        "{r:?}"
    );
    assert_eq!(
        host.value("jwt_guard.decisions.route.api.mode.enforce.outcome.deny.reason.missing"),
        1
    );
}

#[test]
fn a_parked_request_is_resumed_when_the_keys_arrive() {
    let (host, mut engine) = vm(&plain());
    assert_eq!(
        request(&host, &mut engine, 10, "/orders", Some(&token("alice"))),
        Flow::Pause
    );
    assert!(host.stream(10).response.is_none(), "parked, not answered");
    assert_eq!(
        engine.on_request_body(10),
        Flow::Pause,
        "its body waits too"
    );
    assert_eq!(host.tick_ms.get(), Some(20), "a fast tick while it waits");
    tick(&host, &mut engine);
    host.advance_ms(300);
    answer(&host, &mut engine, "200", &jwks());
    let s = host.stream(10);
    assert_eq!(s.resumed, 1);
    assert!(s.response.is_none());
    assert_eq!(s.header("x-user").as_deref(), Some("alice"));
    assert_eq!(engine.on_request_body(10), Flow::Continue);
    assert_eq!(
        host.current.get(),
        ROOT,
        "the root context is effective again"
    );
}

#[test]
fn a_parked_request_gets_503_at_its_deadline_and_never_waits_longer() {
    let (host, mut engine) = vm(&plain());
    assert_eq!(
        request(&host, &mut engine, 10, "/orders", Some(&token("alice"))),
        Flow::Pause
    );
    tick(&host, &mut engine); // dispatches; the answer never comes
    host.advance_ms(1_999);
    tick(&host, &mut engine);
    assert!(
        host.stream(10).response.is_none(),
        "still within jwks_wait_timeout"
    );
    host.advance_ms(1);
    tick(&host, &mut engine);
    let r = response(&host, 10);
    assert_eq!(r.status, 503);
    assert!(r.body.contains("keys_unavailable"), "{}", r.body);
    assert_eq!(host.stream(10).resumed, 0);
    assert_eq!(
        engine.on_request_body(10),
        Flow::Pause,
        "a denied request's body never goes on"
    );
    assert_eq!(
        host.value(
            "jwt_guard.decisions.route.api.mode.enforce.outcome.deny.reason.keys_unavailable"
        ),
        1
    );
}

#[test]
fn a_stream_that_ends_while_parked_is_forgotten() {
    let (host, mut engine) = vm(&plain());
    request(&host, &mut engine, 10, "/orders", Some(&token("alice")));
    host.streams.borrow_mut().remove(&10);
    engine.on_done(10);
    tick(&host, &mut engine);
    answer(&host, &mut engine, "200", &jwks());
    assert!(host
        .logged(Level::Warn)
        .iter()
        .all(|l| !l.contains("resume")));
    assert_eq!(
        host.value("jwt_guard.decisions.route.api.mode.enforce.outcome.allow.reason.ok"),
        0,
        "nothing was decided for the ended stream"
    );
}

#[test]
fn failed_fetches_back_off_and_then_fail_requests_fast_with_503() {
    let (host, mut engine) = vm(&plain());
    tick(&host, &mut engine);
    answer(&host, &mut engine, "500", "upstream broke");
    assert_eq!(
        host.value("jwt_guard.jwks.provider.idp.fetch.result.http_error"),
        1
    );
    let warned = host.logged(Level::Warn);
    assert!(
        warned
            .iter()
            .any(|l| l.starts_with("provider idp: key refresh failed:")
                && l.ends_with("no usable keys: requests fail closed; next attempt in 1 s")),
        "{warned:?}"
    );
    // Within the backoff nothing is fetched again.
    host.advance_ms(500);
    tick(&host, &mut engine);
    assert_eq!(host.calls.borrow().len(), 1);
    host.advance_ms(600);
    tick(&host, &mut engine);
    assert_eq!(host.calls.borrow().len(), 2, "retried after 1 s");
    answer(&host, &mut engine, "404", "no such path");
    assert!(host
        .logged(Level::Warn)
        .iter()
        .any(|l| l.ends_with("next attempt in 2 s")));
    // Two failures: the IdP is down, not slow, so a request is not held.
    assert_eq!(
        request(&host, &mut engine, 10, "/orders", Some(&token("alice"))),
        Flow::Pause
    );
    assert_eq!(response(&host, 10).status, 503);
    // Public routes still work.
    assert_eq!(
        request(&host, &mut engine, 11, "/open", None),
        Flow::Continue
    );
}

#[test]
fn a_host_that_refuses_the_call_counts_a_dispatch_error() {
    let (host, mut engine) = vm(&plain());
    host.refuse.borrow_mut().insert("http_call");
    tick(&host, &mut engine);
    assert_eq!(
        host.value("jwt_guard.jwks.provider.idp.fetch.result.dispatch_error"),
        1
    );
    assert!(host
        .logged(Level::Warn)
        .iter()
        .any(|l| l.contains("cannot call cluster \"idp\" (InternalFailure); is it defined?")));
}

#[test]
fn host_refusals_on_the_request_fail_closed_with_500() {
    let good = token("alice");
    for op in [
        "add_request_header",
        "remove_request_header",
        "request_headers",
    ] {
        let (host, mut engine) = ready(&plain());
        host.refuse.borrow_mut().insert(op);
        assert_eq!(
            request(&host, &mut engine, 10, "/orders", Some(&good)),
            Flow::Pause,
            "{op}"
        );
        let r = response(&host, 10);
        assert_eq!(r.status, 500, "{op}");
        assert!(r.body.contains("internal_error"), "{op}: {}", r.body);
        assert!(!r.body.contains(&good) && !format!("{:?}", host.logs.borrow()).contains(&good));
    }
    // A malformed header map from the host is a failure, not "no headers".
    let (host, mut engine) = ready(&plain());
    host.open(10, &[(":path", "/open")]);
    host.streams.borrow_mut().get_mut(&10).unwrap().raw_headers = Some(vec![9, 0, 0, 0, 1]);
    assert_eq!(engine.on_request_headers(10), Flow::Pause);
    assert_eq!(response(&host, 10).status, 500);
    assert_eq!(
        host.value(
            "jwt_guard.decisions.route.no_rule.mode.enforce.outcome.deny.reason.internal_error"
        ),
        1
    );
}

#[test]
fn a_host_that_cannot_send_the_response_is_logged() {
    let (host, mut engine) = ready(&plain());
    host.refuse.borrow_mut().insert("send_response");
    assert_eq!(
        request(&host, &mut engine, 10, "/orders", None),
        Flow::Pause
    );
    assert!(host
        .logged(Level::Error)
        .contains(&"could not send the 401 response: InternalFailure".to_owned()));
}

#[test]
fn discovery_reads_the_document_then_the_jwks_it_names() {
    let (host, mut engine) = vm(&discovery());
    tick(&host, &mut engine);
    assert_eq!(
        host.calls.borrow()[0].path(),
        "/.well-known/openid-configuration"
    );
    let doc = json!({"issuer": ISS, "jwks_uri": "https://idp.test/keys/v2"}).to_string();
    answer(&host, &mut engine, "200", &doc);
    assert_eq!(host.calls.borrow().len(), 2);
    let jwks_call = host.calls.borrow()[1].clone();
    assert_eq!(jwks_call.path(), "/keys/v2");
    assert!(jwks_call
        .headers
        .contains(&(":authority".to_owned(), "idp.test".to_owned())));
    answer(&host, &mut engine, "200", &jwks());
    assert_eq!(host.value(FETCH_SUCCESS), 1);
    assert_eq!(
        request(&host, &mut engine, 10, "/orders", Some(&token("bob"))),
        Flow::Continue
    );
}

#[test]
fn a_discovery_document_for_another_issuer_is_not_followed() {
    let (host, mut engine) = vm(&discovery());
    tick(&host, &mut engine);
    let doc =
        json!({"issuer": "https://evil.test", "jwks_uri": "https://evil.test/keys"}).to_string();
    answer(&host, &mut engine, "200", &doc);
    assert_eq!(host.calls.borrow().len(), 1, "jwks_uri never fetched");
    assert_eq!(
        host.value("jwt_guard.jwks.provider.idp.fetch.result.issuer_mismatch"),
        1
    );
}

#[test]
fn a_vm_started_after_another_published_uses_the_set_without_fetching() {
    let (host, mut first) = ready(&plain());
    assert_eq!(
        request(&host, &mut first, 10, "/orders", Some(&token("alice"))),
        Flow::Continue
    );
    // A second worker (or this one after a VM restart) shares the Envoy's shared data.
    let other = host.sibling();
    let mut second = configured(&other);
    assert_eq!(
        request(&other, &mut second, 10, "/orders", Some(&token("carol"))),
        Flow::Continue
    );
    assert_eq!(other.stream(10).header("x-user").as_deref(), Some("carol"));
    tick(&other, &mut second);
    assert!(
        other.calls.borrow().is_empty(),
        "the fresh shared set is not fetched again"
    );
    drop(first);
}

#[test]
fn key_set_health_is_logged_once_across_the_vms_of_an_envoy() {
    let (host, mut first) = ready(&plain());
    let other = host.sibling();
    let mut second = configured(&other);
    tick(&host, &mut first);
    tick(&other, &mut second);
    tick(&host, &mut first);
    let line = |h: &FakeHost| {
        h.logged(Level::Info)
            .into_iter()
            .filter(|l| l.starts_with("provider idp: key set fresh"))
            .count()
    };
    assert_eq!(
        line(&host) + line(&other),
        1,
        "{:?} {:?}",
        host.logged(Level::Info),
        other.logged(Level::Info)
    );
    assert_eq!(host.value("jwt_guard.jwks.provider.idp.keys"), 1);
}

#[test]
fn without_a_clock_parked_requests_get_500_and_nothing_is_fetched() {
    let (host, mut engine) = vm(&plain());
    request(&host, &mut engine, 10, "/orders", Some(&token("alice")));
    *host.clock_ns.borrow_mut() = None;
    tick(&host, &mut engine);
    assert_eq!(response(&host, 10).status, 500);
    assert!(host.calls.borrow().is_empty());
    assert!(host
        .logged(Level::Error)
        .contains(&"the host clock is unavailable; skipping this tick".to_owned()));
    // A request needing a token without a clock: 500 as well; a public route still passes.
    assert_eq!(
        request(&host, &mut engine, 11, "/orders", Some(&token("alice"))),
        Flow::Pause
    );
    assert_eq!(response(&host, 11).status, 500);
    assert_eq!(
        request(&host, &mut engine, 12, "/open", None),
        Flow::Continue
    );
}

#[test]
fn a_refused_configuration_names_the_field() {
    let host = FakeHost::at(u128::from(NOW_S) * 1_000_000_000);
    let mut bad = plain();
    bad["providers"]["idp"]["audiance"] = json!(["api"]);
    *host.plugin_config.borrow_mut() = Some(bad.to_string().into_bytes());
    let mut engine = Engine::new(host.clone(), ROOT);
    assert!(!engine.configure());
    let errors = host.logged(Level::Error);
    assert!(
        errors.iter().any(|l| l.contains("providers.idp.audiance")),
        "{errors:?}"
    );
    // Unconfigured, a request fails closed.
    host.open(10, &[(":path", "/open")]);
    assert_eq!(engine.on_request_headers(10), Flow::Pause);
    assert_eq!(response(&host, 10).status, 503);
    *host.plugin_config.borrow_mut() = None;
    assert!(!Engine::new(host.clone(), ROOT).configure());
    assert!(host
        .logged(Level::Error)
        .contains(&"invalid plugin configuration: it is empty".to_owned()));
}

#[test]
fn the_route_is_matched_again_when_the_filter_changed_a_header() {
    let (host, mut engine) = ready(&plain());
    // A verified identity was set (and a forged x-user stripped).
    assert_eq!(
        request(&host, &mut engine, 10, "/orders", Some(&token("alice"))),
        Flow::Continue
    );
    assert_eq!(host.stream(10).route_cleared, 1);
    // A public route: with a forged identity header (stripped) the route is matched again…
    assert_eq!(
        request(&host, &mut engine, 11, "/open", None),
        Flow::Continue
    );
    assert_eq!(
        host.stream(11).route_cleared,
        1,
        "x-user: forged was stripped"
    );
    // …without one nothing changed, so nothing is re-matched.
    host.open(
        12,
        &[
            (":method", "GET"),
            (":path", "/open"),
            (":authority", "api.test"),
        ],
    );
    assert_eq!(engine.on_request_headers(12), Flow::Continue);
    assert_eq!(host.stream(12).route_cleared, 0);
    // A host that cannot re-match: fail closed, never route on the client's headers.
    host.refuse.borrow_mut().insert("clear_route_cache");
    assert_eq!(
        request(&host, &mut engine, 13, "/orders", Some(&token("alice"))),
        Flow::Pause
    );
    assert_eq!(response(&host, 13).status, 500);
    // Turned off in the config: never.
    let mut off = plain();
    off["clear_route_cache"] = json!(false);
    let (host, mut engine) = ready(&off);
    assert_eq!(
        request(&host, &mut engine, 10, "/orders", Some(&token("alice"))),
        Flow::Continue
    );
    assert_eq!(host.stream(10).route_cleared, 0);
}

#[test]
fn a_parked_request_has_its_route_matched_again_when_resumed() {
    let (host, mut engine) = vm(&plain());
    assert_eq!(
        request(&host, &mut engine, 10, "/orders", Some(&token("alice"))),
        Flow::Pause
    );
    tick(&host, &mut engine);
    answer(&host, &mut engine, "200", &jwks());
    let s = host.stream(10);
    assert_eq!((s.resumed, s.route_cleared), (1, 1));
}

#[test]
fn denials_can_hide_their_detail_or_take_a_body_template_and_metrics_stay_exact() {
    let mut cfg = plain();
    cfg["denials"] = json!({"body_template": {"status": "{status}", "problem": {"type": "{error}", "why": "{code}: {message}"}}});
    cfg["rules"][1]["denials"] = json!({"strip_details": true});
    cfg["rules"]
        .as_array_mut()
        .unwrap()
        .insert(1, json!({"name": "templated", "match": {"prefix": "/t"}, "requires": {"provider_name": "idp"}}));
    let (host, mut engine) = ready(&cfg);
    let expired = {
        let claims =
            json!({"iss": ISS, "aud": "api", "sub": "a", "iat": NOW_S - 900, "exp": NOW_S - 600});
        rs256_token(&rsa_private("rsa-1"), "rsa-1", &claims)
    };
    // The stripped rule: generic body, challenge without its description, same status.
    assert_eq!(
        request(&host, &mut engine, 10, "/orders", Some(&expired)),
        Flow::Pause
    );
    let r = response(&host, 10);
    assert_eq!(r.status, 401);
    assert_eq!(r.body, r#"{"error":"invalid_token"}"#);
    let challenge = r
        .headers
        .iter()
        .find(|(n, _)| n == "www-authenticate")
        .unwrap()
        .1
        .clone();
    assert_eq!(challenge, "Bearer realm=\"api\", error=\"invalid_token\"");
    // The rule with the global template.
    assert_eq!(
        request(&host, &mut engine, 11, "/t", Some(&expired)),
        Flow::Pause
    );
    let body: serde_json::Value = serde_json::from_str(&response(&host, 11).body).unwrap();
    assert_eq!(
        body,
        json!({"status": "401", "problem": {"type": "invalid_token", "why": "expired: token expired"}})
    );
    // Metrics keep the exact reason in both.
    assert_eq!(
        host.value("jwt_guard.decisions.route.api.mode.enforce.outcome.deny.reason.expired"),
        1
    );
    assert_eq!(
        host.value("jwt_guard.decisions.route.templated.mode.enforce.outcome.deny.reason.expired"),
        1
    );
    // A placeholder the filter does not know is a config error naming the field.
    let mut bad = plain();
    bad["denials"] = json!({"body_template": {"x": "{token}"}});
    let host = FakeHost::at(u128::from(NOW_S) * 1_000_000_000);
    *host.plugin_config.borrow_mut() = Some(bad.to_string().into_bytes());
    assert!(!Engine::new(host.clone(), ROOT).configure());
    assert!(host
        .logged(Level::Error)
        .iter()
        .any(|l| l.contains("denials.body_template: unknown placeholder {token}")));
}

#[test]
fn a_parked_mtls_bound_request_is_decided_with_its_own_connection() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(b"client certificate DER");
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    let claims = json!({"iss": ISS, "aud": "api", "sub": "carol", "iat": NOW_S, "exp": NOW_S + 600,
                        "cnf": {"x5t#S256": x5t}});
    let bound = rs256_token(&rsa_private("rsa-1"), "rsa-1", &claims);
    let (host, mut engine) = vm(&plain());
    assert_eq!(
        request(&host, &mut engine, 10, "/orders", Some(&bound)),
        Flow::Pause
    );
    host.streams
        .borrow_mut()
        .get_mut(&10)
        .unwrap()
        .properties
        .insert(
            "connection.sha256_peer_certificate_digest".to_owned(),
            hex.into_bytes(),
        );
    tick(&host, &mut engine);
    answer(&host, &mut engine, "200", &jwks());
    let s = host.stream(10);
    assert!(s.response.is_none(), "{:?}", s.response);
    assert_eq!(
        (s.resumed, s.header("x-user").as_deref()),
        (1, Some("carol"))
    );
}
