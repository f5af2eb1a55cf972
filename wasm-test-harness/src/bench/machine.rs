//! Facts for bench.json: the machine (CPU, kernel, Envoy and wrk versions, module sizes) and each unit's
//! Envoy memory and wasm stats.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use super::units::Unit;
use super::BenchOptions;
use crate::envoy::{envoy_bin, Envoy};

fn cmd_output(cmd: &Path, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if s.is_empty() {
                s = String::from_utf8_lossy(&o.stderr).trim().to_string();
            }
            s
        })
        .unwrap_or_default()
}

pub fn machine_info(opts: &BenchOptions) -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let size = |p: &Path| fs::metadata(p).map(|m| m.len()).ok();
    let envoy_version = envoy_bin()
        .map(|b| cmd_output(&b, &["--version"]))
        .unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu_model,
        "clk_tck": cmd_output(Path::new("getconf"), &["CLK_TCK"]).parse::<u64>().ok(),
        "date": cmd_output(Path::new("date"), &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "kernel": cmd_output(Path::new("uname"), &["-sr"]),
        "envoy_version": envoy_version,
        "wrk_version": cmd_output(Path::new("wrk"), &["-v"]).lines().next().unwrap_or_default(),
        "wasm": {
            "jwt_guard": { "path": opts.wasm.display().to_string(), "bytes": size(&opts.wasm) },
            "wasm_floor": { "path": opts.floor_wasm.display().to_string(), "bytes": size(&opts.floor_wasm) },
        },
    })
}

/// Envoy `/stats` text ("name: value" lines) -> {name: number-or-string}.
fn parse_stats(text: &str) -> Value {
    let mut m = serde_json::Map::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(": ") {
            let v = v.trim();
            m.insert(
                k.trim().to_string(),
                v.parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| json!(v)),
            );
        }
    }
    Value::Object(m)
}

/// Admin `/memory` of each Envoy of the unit (keyed by Envoy name for `ext_authz`), plus the wasm stats.
pub fn memory_of(unit: &Unit) -> Value {
    let one = |e: &Envoy| -> Value {
        let memory = e
            .admin_text("/memory")
            .ok()
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .map(|m| match m {
                // Envoy prints the uint64s as strings.
                Value::Object(o) => Value::Object(
                    o.into_iter()
                        .map(|(k, v)| {
                            let n = v.as_str().and_then(|s| s.parse::<u64>().ok());
                            (k, n.map(Value::from).unwrap_or(v))
                        })
                        .collect(),
                ),
                other => other,
            })
            .unwrap_or(Value::Null);
        let mut v = json!({ "memory": memory });
        if matches!(
            e.name(),
            "wasm-floor" | "ours" | "ours-wasm" | "ours-shadow" | "ours-noclear"
        ) {
            let stats = e
                .admin_text("/stats?filter=wasm")
                .map(|t| parse_stats(&t))
                .unwrap_or(Value::Null);
            let gauge = e
                .admin_text("/stats?filter=vm_memory_bytes")
                .map(|t| parse_stats(&t))
                .ok()
                .and_then(|s| s.get("wasmcustom.jwt_guard.vm_memory_bytes").cloned());
            v["wasm_stats"] = stats;
            v["jwt_guard_vm_memory_bytes"] = gauge.unwrap_or(Value::Null);
        }
        v
    };
    if unit.envoys.len() == 1 {
        one(&unit.envoys[0])
    } else {
        Value::Object(
            unit.envoys
                .iter()
                .map(|e| (e.name().to_string(), one(e)))
                .collect(),
        )
    }
}
