//! Alone in its own test binary because it sets ENVOY_BIN for the whole process.

use wasm_test_harness::{Envoy, EnvoyOptions};

#[test]
fn missing_envoy_is_a_clear_error() {
    std::env::set_var("ENVOY_BIN", "/nonexistent/envoy");
    let err = Envoy::start(EnvoyOptions::default())
        .err()
        .expect("must fail without Envoy");
    assert!(
        err.contains("/nonexistent/envoy") && err.contains("make envoy"),
        "{err}"
    );
    let err = wasm_test_harness::validate(std::path::Path::new("/tmp/x.yaml")).unwrap_err();
    assert!(err.contains("make envoy"), "{err}");
}
