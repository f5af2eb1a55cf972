//! Alone in its own test binary because it changes the process environment (ENVOY_BIN, PATH,
//! ENVOY_CONTAINER): a missing Envoy or container runtime is a clear error, never a skip.

use wasm_test_harness::{Envoy, EnvoyOptions};

#[test]
fn missing_envoy_or_container_runtime_is_a_clear_error() {
    std::env::remove_var("ENVOY_CONTAINER");
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

    // Container mode asked for, but the CLI cannot be found: fail, do not fall back to the binary.
    std::env::set_var("ENVOY_CONTAINER", "podman");
    std::env::set_var("PATH", "/nonexistent");
    let err = Envoy::start(EnvoyOptions::default())
        .err()
        .expect("must fail without the container runtime");
    assert!(err.contains("ENVOY_CONTAINER=podman"), "{err}");
    std::env::set_var("ENVOY_CONTAINER", "rkt");
    let err = Envoy::start(EnvoyOptions::default())
        .err()
        .expect("unknown CLI");
    assert!(err.contains("use docker or podman"), "{err}");
}
