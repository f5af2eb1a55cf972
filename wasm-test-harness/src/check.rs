//! `wasm-test-harness check`: run any jwt-guard module with any plugin config in a real Envoy (local
//! binary or container, see `envoy::runner`) next to the mock IdP and echo upstream, and play a list of
//! scenarios against it. Made for users' CI: a pipeline builds its `.wasm`, writes the plugin config it
//! will deploy (pointing its provider at the mock IdP: issuer `https://idp.demo.local`, cluster `idp`),
//! lists the requests that must pass or fail, and fails the job when one does not.
//!
//! Scenario file (JSON):
//! ```json
//! {"scenarios": [
//!   {"name": "valid token", "request": {"method": "GET", "path": "/api/x",
//!      "token": {"alg": "ES256", "claims": {"scope": "read"}, "exp_in": 3600}},
//!    "expect": {"status": 200, "upstream_headers": {"x-user-sub": "alice", "x-tenant-id": null}}},
//!   {"name": "no token", "request": {"path": "/api/x"}, "expect": {"status": 401, "code": "missing"}}
//! ]}
//! ```
//! `token.claims` are merged over the standard claims (iss, aud `demo-api`, sub `alice`, iat, exp in 1 h);
//! `exp_in`/`nbf_in` set `exp`/`nbf` relative to now; `kid` overrides the key id; `raw` sends a literal
//! token. `upstream_headers` values of `null` mean "must not reach the upstream".

use crate::client::try_http_request;
use crate::envoy::{Envoy, EnvoyOptions};
use crate::{tokens, EchoUpstream, MockIdp};
use serde_json::{json, Value};

pub struct Outcome {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

fn token_for(spec: &Value) -> Result<String, String> {
    if let Some(raw) = spec.get("raw").and_then(Value::as_str) {
        return Ok(raw.to_owned());
    }
    let alg = spec.get("alg").and_then(Value::as_str).unwrap_or("ES256");
    let mut claims = tokens::std_claims("alice");
    if let Some(extra) = spec.get("claims").and_then(Value::as_object) {
        for (k, v) in extra {
            claims[k] = v.clone();
        }
    }
    let now = tokens::now() as i64;
    for (field, claim) in [("exp_in", "exp"), ("nbf_in", "nbf")] {
        if let Some(d) = spec.get(field).and_then(Value::as_i64) {
            claims[claim] = json!(now + d);
        }
    }
    let kid = spec
        .get("kid")
        .and_then(Value::as_str)
        .or(tokens::default_kid(alg));
    if tokens::key_for_alg(alg).is_none() {
        return Err(format!("unsupported alg {alg:?} in scenario"));
    }
    Ok(tokens::mint(alg, kid, &claims))
}

fn play(envoy: &Envoy, echo: &EchoUpstream, scenario: &Value) -> Outcome {
    let name = scenario["name"].as_str().unwrap_or("<unnamed>").to_owned();
    let fail = |detail: String| Outcome {
        name: name.clone(),
        passed: false,
        detail,
    };
    let req = &scenario["request"];
    let method = req["method"].as_str().unwrap_or("GET");
    let path = req["path"].as_str().unwrap_or("/");
    let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some(h) = req["headers"].as_object() {
        for (k, v) in h {
            headers.push((
                k.as_str(),
                v.as_str().unwrap_or_default().as_bytes().to_vec(),
            ));
        }
    }
    if let Some(spec) = req.get("token").filter(|t| !t.is_null()) {
        match token_for(spec) {
            Ok(t) => headers.push(("authorization", format!("Bearer {t}").into_bytes())),
            Err(e) => return fail(e),
        }
    }
    let before = echo.count();
    let r = match try_http_request(envoy.listen_port(), method, path, &headers, b"") {
        Ok(r) => r,
        Err(e) => return fail(format!("request failed: {e}")),
    };
    let expect = &scenario["expect"];
    let mut problems = Vec::new();
    if let Some(status) = expect["status"].as_u64() {
        if u64::from(r.status) != status {
            problems.push(format!("status {} (want {status})", r.status));
        }
    }
    if let Some(code) = expect["code"].as_str() {
        let got = r.json()["code"].as_str().unwrap_or_default().to_owned();
        if got != code {
            problems.push(format!("code {got:?} (want {code:?})"));
        }
    }
    if let Some(want) = expect["upstream_headers"].as_object() {
        let seen = if echo.count() > before {
            echo.last()
        } else {
            None
        };
        match seen {
            None => problems.push("the request did not reach the upstream".to_owned()),
            Some(seen) => {
                for (k, v) in want {
                    let got = seen.header(k);
                    if got != v.as_str() {
                        problems.push(format!("upstream header {k}: {got:?} (want {v})"));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Outcome {
            name,
            passed: true,
            detail: format!("{} {method} {path}", r.status),
        }
    } else {
        fail(problems.join("; "))
    }
}

/// Starts the stack with `plugin_config` and plays `scenarios`. Err when Envoy does not accept the
/// module or config at all.
pub fn run(opts: EnvoyOptions, scenarios: &Value) -> Result<Vec<Outcome>, String> {
    let idp = MockIdp::start();
    let echo = EchoUpstream::start();
    let opts = EnvoyOptions {
        idp_port: idp.port(),
        upstream_port: echo.port(),
        ..opts
    };
    let envoy = Envoy::start(opts)?;
    let list = scenarios["scenarios"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(list.iter().map(|s| play(&envoy, &echo, s)).collect())
}
