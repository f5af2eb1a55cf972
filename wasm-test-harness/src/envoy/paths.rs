//! Where things are: the repository, the filter's `.wasm`, the shipped Envoy templates and plugin config.

use std::fs;
use std::path::{Path, PathBuf};

/// Repository root (the directory holding the workspace Cargo.toml).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The filter's wasm: `$WASM` if set, else `<repo>/target/wasm32-wasip1/release/jwt_guard.wasm`.
pub fn wasm_path() -> PathBuf {
    match std::env::var_os("WASM") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join("target/wasm32-wasip1/release/jwt_guard.wasm"),
    }
}

/// The vector probe (`wasm-test-harness/vector-probe`, built by `make build`):
/// `<repo>/target/wasm32-wasip1/release/vector_probe.wasm`.
pub fn vector_probe_path() -> PathBuf {
    repo_root().join("target/wasm32-wasip1/release/vector_probe.wasm")
}

/// `<repo>/envoy/envoy.yaml`
pub fn default_template() -> PathBuf {
    repo_root().join("envoy/envoy.yaml")
}

/// `<repo>/envoy/envoy-lds.yaml`: the bootstrap whose listener comes from a file (LDS), see
/// [`Envoy::start_lds`](super::Envoy::start_lds).
pub fn default_lds_bootstrap_template() -> PathBuf {
    repo_root().join("envoy/envoy-lds.yaml")
}

/// `<repo>/envoy/lds.yaml`: the listener resource file for [`default_lds_bootstrap_template`].
pub fn default_lds_template() -> PathBuf {
    repo_root().join("envoy/lds.yaml")
}

/// `<repo>/envoy/plugin-config.json`
pub fn demo_config_path() -> PathBuf {
    repo_root().join("envoy/plugin-config.json")
}

/// Contents of `envoy/plugin-config.json` (panics if unreadable).
pub fn demo_plugin_config() -> String {
    let p = demo_config_path();
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// [`demo_plugin_config`] with `provider`'s members set on its `demo` provider and `top`'s at the
/// top level (panics unless all are JSON objects).
pub fn demo_plugin_config_with(provider: serde_json::Value, top: serde_json::Value) -> String {
    let mut cfg: serde_json::Value = serde_json::from_str(&demo_plugin_config())
        .unwrap_or_else(|e| panic!("envoy/plugin-config.json is not JSON: {e}"));
    let (Some(provider), Some(top)) = (provider.as_object(), top.as_object()) else {
        panic!("demo_plugin_config_with: provider and top must be JSON objects");
    };
    for (k, v) in provider {
        cfg["providers"]["demo"][k] = v.clone();
    }
    for (k, v) in top {
        cfg[k] = v.clone();
    }
    cfg.to_string()
}
