//! The `check` runner users put in their CI: scenarios that hold pass, one that does not is reported
//! as failed (a check that cannot fail would be worthless), and a config Envoy refuses is an error.

use serde_json::json;
use wasm_test_harness::check;
use wasm_test_harness::envoy::{self, EnvoyOptions};

#[test]
fn example_scenarios_pass_and_a_wrong_expectation_fails() {
    let text = std::fs::read_to_string(envoy::repo_root().join("examples/ci/scenarios.json"))
        .expect("scenarios");
    let mut scenarios: serde_json::Value = serde_json::from_str(&text).expect("json");
    let count = scenarios["scenarios"].as_array().expect("list").len();
    scenarios["scenarios"]
        .as_array_mut()
        .expect("list")
        .push(json!({
            "name": "deliberately wrong: no token expected to pass",
            "request": {"path": "/hello"},
            "expect": {"status": 200}
        }));
    let outcomes = check::run(EnvoyOptions::default(), &scenarios).expect("envoy starts");
    assert_eq!(outcomes.len(), count + 1);
    for o in &outcomes[..count] {
        assert!(o.passed, "{}: {}", o.name, o.detail);
    }
    let last = outcomes.last().expect("one");
    assert!(!last.passed);
    assert!(
        last.detail.contains("status 401 (want 200)"),
        "{}",
        last.detail
    );
}

#[test]
fn a_config_envoy_refuses_is_an_error() {
    let opts = EnvoyOptions {
        plugin_config: r#"{"providers":{}}"#.to_owned(),
        ..EnvoyOptions::default()
    };
    assert!(check::run(opts, &json!({"scenarios": []})).is_err());
}
