//! Envoy bootstraps of the bench configurations (bench/envoy-bench.yaml + bench/filters/*.yaml).

use std::fs;
use std::path::Path;

use serde_json::{json, Value};

use super::{algs, BenchOptions, DPOP_BASE_URL, DPOP_PATH};
use crate::envoy::{render, repo_root};
use crate::keys::{jwks_of, KeyName};
use crate::tokens::{self, AUDIENCE, ISSUER};

/// The central Envoy of `ext_authz` (not a column of its own: native jwt_authn, no cache, like `native`).
pub const EXT_AUTHZ_CENTRAL: &str = "ext_authz-central";

/// The keys of every benchmarked algorithm (rsa-1, ec-1 and, once the harness has it, the P-384 key).
fn bench_keys() -> Vec<KeyName> {
    let mut keys: Vec<KeyName> = Vec::new();
    for alg in algs() {
        if let Some(k) = tokens::key_for_alg(alg) {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

/// The JWKS every verifying configuration checks against.
pub fn bench_jwks() -> Value {
    jwks_of(&bench_keys())
}

/// The most DPoP proofs jwt-guard remembers per replay slot (`dpop.replay_capacity`'s maximum). The
/// default (65536 per 120 s slot, i.e. ~550 fresh proofs/s sustained) would fill within seconds at bench
/// rates and refuse proofs (fail closed). The capacity is only a bound: what a record costs depends on how
/// many proofs the slots hold, not on it.
pub const BENCH_REPLAY_CAPACITY: usize = 1_048_576;

/// jwt-guard's plugin config for the bench (mode "enforce" or "shadow"; signature backend: the default).
/// Rule `dpop` (exact path [`DPOP_PATH`], `binding: dpop`) is the `dpop` workload's and comes first (first
/// match wins); rule `bench` (prefix `/`) is every other workload's. Proofs' `htu` is
/// [`DPOP_BASE_URL`] + the path (`dpop.external_base_url`), whatever port each Envoy got.
pub fn plugin_config(mode: &str) -> Value {
    json!({
        "providers": { "bench": {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "local_jwks": { "inline": bench_jwks() },
        }},
        "dpop": {
            "external_base_url": DPOP_BASE_URL,
            "replay_capacity": BENCH_REPLAY_CAPACITY,
        },
        "rules": [
            {
                "name": "dpop",
                "match": { "path": DPOP_PATH },
                "requires": { "provider_name": "bench", "binding": "dpop" },
                "mode": mode,
            },
            {
                "name": "bench",
                "match": { "prefix": "/" },
                "requires": { "provider_name": "bench" },
                "mode": mode,
            },
        ],
    })
}

/// `ours-noclear`: enforce, without the explicit route re-match after the filter changed headers.
pub fn plugin_config_no_route_clear() -> Value {
    let mut v = plugin_config("enforce");
    v["clear_route_cache"] = json!(false);
    v
}

/// `ours-wasm`: enforce, with every signature verified inside the wasm VM (no host `verify_signature`).
pub fn plugin_config_wasm_backend() -> Value {
    let mut v = plugin_config("enforce");
    v["signature_backend"] = json!("wasm");
    v
}

fn read_template(name: &str) -> Result<String, String> {
    let p = repo_root().join("bench").join(name);
    let text = fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    // Drop the template's own comment lines (they would land mid-file when spliced).
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A JSON string literal, which is also a valid YAML double-quoted scalar.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The `http_filters` entries (before the router) of one configuration.
fn filters_for(config: &str, opts: &BenchOptions, authz_port: u16) -> Result<String, String> {
    let wasm = |name: &str, path: &Path, plugin: &str| -> Result<String, String> {
        Ok(render(
            &read_template("filters/wasm.yaml")?,
            &[
                ("NAME", name.to_string()),
                ("WASM_PATH", path.display().to_string()),
                ("PLUGIN_CONFIG", yaml_str(plugin)),
            ],
        ))
    };
    let native = |cache: bool| -> Result<String, String> {
        Ok(render(
            &read_template("filters/jwt_authn.yaml")?,
            &[
                ("ISSUER", ISSUER.to_string()),
                ("AUDIENCE", AUDIENCE.to_string()),
                ("JWKS", yaml_str(&bench_jwks().to_string())),
                (
                    "CACHE",
                    if cache {
                        "                  jwt_cache_config: { jwt_cache_size: 1000 }".to_string()
                    } else {
                        String::new()
                    },
                ),
            ],
        ))
    };
    match config {
        "none" => Ok(String::new()),
        "wasm-floor" => wasm("wasm_floor", &opts.floor_wasm, ""),
        "native" | EXT_AUTHZ_CENTRAL => native(false),
        "native-cache" => native(true),
        "ext_authz" => Ok(render(
            &read_template("filters/ext_authz.yaml")?,
            &[("AUTHZ_PORT", authz_port.to_string())],
        )),
        "ours" => wasm(
            "jwt_guard",
            &opts.wasm,
            &plugin_config("enforce").to_string(),
        ),
        "ours-wasm" => wasm(
            "jwt_guard",
            &opts.wasm,
            &plugin_config_wasm_backend().to_string(),
        ),
        "ours-shadow" => wasm(
            "jwt_guard",
            &opts.wasm,
            &plugin_config("shadow").to_string(),
        ),
        "ours-noclear" => wasm(
            "jwt_guard",
            &opts.wasm,
            &plugin_config_no_route_clear().to_string(),
        ),
        other => Err(format!("unknown configuration {other:?}")),
    }
}

/// The bootstrap `bench` runs for `config` (one of [`super::CONFIGS`], or [`EXT_AUTHZ_CENTRAL`]):
/// bench/envoy-bench.yaml with that configuration's filters, on the given ports (the bench itself passes 0:
/// ephemeral, read back). `ext_authz` is the front Envoy; rendered here its authorization cluster points at
/// port 1 (a placeholder: the bench renders it with [`render_bootstrap_with`] and the central's bound port).
pub fn render_bootstrap(
    config: &str,
    opts: &BenchOptions,
    listen_port: u16,
    admin_port: u16,
) -> Result<String, String> {
    render_bootstrap_with(config, opts, listen_port, admin_port, 1)
}

/// [`render_bootstrap`] with the central Envoy's port for `ext_authz` (ignored by the other configurations).
pub fn render_bootstrap_with(
    config: &str,
    opts: &BenchOptions,
    listen_port: u16,
    admin_port: u16,
    authz_port: u16,
) -> Result<String, String> {
    let clusters = if config == "ext_authz" {
        render(
            &read_template("filters/ext_authz-cluster.yaml")?,
            &[("AUTHZ_PORT", authz_port.to_string())],
        )
    } else {
        String::new()
    };
    Ok(render(
        &read_template("envoy-bench.yaml")?,
        &[
            ("ADMIN_PORT", admin_port.to_string()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("FILTERS", filters_for(config, opts, authz_port)?),
            ("CLUSTERS", clusters),
        ],
    ))
}
