//! `wasm-test-harness bench` (`make bench`): jwt-guard against Envoy's native `jwt_authn`, the ext_authz
//! "hop" design and a trivial proxy-wasm floor, in real Envoys driven by wrk on loopback (bench/README.md).
//!
//! One Envoy (one worker) per configuration, started once and kept running: `none` (no auth filter),
//! `wasm-floor` (bench/wasm-floor: reads `authorization`, sets `x-floor`), `native` (`jwt_authn`, inline
//! JWKS), `native-cache` (same + a 1000-entry jwt cache), `ext_authz` (a front Envoy whose ext_authz filter
//! asks a second, central Envoy running `native`'s jwt_authn), `ours` (jwt-guard, enforce, host crypto),
//! `ours-wasm` (the same with `"signature_backend": "wasm"`) and `ours-shadow` (jwt-guard, shadow). Every
//! route is a direct response. Workloads, per algorithm (RS256 rsa-1, ES256 ec-1, ES384 ec-384 once the
//! harness can mint it): `hot` (one valid token), `cold` (N distinct valid tokens) and `mix` (N distinct
//! tokens: half valid, a quarter expired, a quarter with a bad signature); see [`measured`] for which
//! configuration runs which workload. Rounds are interleaved (round > (alg, workload) > config, config
//! order rotated per round), one wrk at a time; each cell reports the median over rounds of req/s, latency
//! and CPU µs per request (the configuration's Envoy processes' CPU time over the wrk run ÷ requests).
//!
//! Modules: `options` (command line), `tokens` (minting), `config` (bootstraps), `units` (each
//! configuration's Envoys, started through the harness's one runner, [`crate::envoy::Envoy::spawn`]; the
//! smoke test), `cpu` (CPU time from /proc), `wrk`, `report` (medians, ratios, checks, tables) and
//! `machine` (machine and memory facts).

mod config;
mod cpu;
mod machine;
mod options;
mod report;
mod tokens;
mod units;
mod wrk;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use report::{Cell, Cells, Runs};
use units::{smoke, start_units};

pub use config::{
    bench_jwks, plugin_config, plugin_config_wasm_backend, render_bootstrap, render_bootstrap_with,
    EXT_AUTHZ_CENTRAL,
};
pub use options::{parse_args, BenchOptions, USAGE};
pub use wrk::{parse_wrk, WrkResult};

/// Configurations, in report order.
pub const CONFIGS: &[&str] = &[
    "none",
    "wasm-floor",
    "native",
    "native-cache",
    "ext_authz",
    "ours",
    "ours-wasm",
    "ours-shadow",
];
/// Configurations that reject bad tokens (must answer ~50% 401 on `mix`).
const ENFORCING: &[&str] = &["native", "native-cache", "ext_authz", "ours", "ours-wasm"];
/// Every algorithm the bench knows; [`algs`] is the subset the harness can mint.
pub const ALGS: &[&str] = &["RS256", "ES256", "ES384"];
pub const WORKLOADS: &[&str] = &["hot", "cold", "mix"];

/// The algorithms of this run: those of [`ALGS`] the harness has a signing key for (ES384 needs the P-384
/// fixture key, `KeyName::Ec384`; without it the ES384 rows are left out and the run says so).
pub fn algs() -> Vec<&'static str> {
    ALGS.iter()
        .copied()
        .filter(|a| crate::tokens::key_for_alg(a).is_some())
        .collect()
}

/// Whether `config` is measured on `workload`. `none` and `wasm-floor` never look at the token, so only
/// `hot` (per algorithm: the header length differs); `ours-shadow` verifies like `ours` and only differs when
/// tokens are bad, so `hot` and `mix`. Everything else runs everything.
pub fn measured(config: &str, workload: &str) -> bool {
    match config {
        "none" | "wasm-floor" => workload == "hot",
        "ours-shadow" => workload != "cold",
        _ => true,
    }
}

/// Entry point of the `bench` subcommand.
pub fn main(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    match run(&opts) {
        Ok(true) => Ok(()),
        Ok(false) => {
            eprintln!(
                "\nBENCH FAILED: configurations are not equivalent (see the errors above); results in {}",
                opts.out.display()
            );
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("BENCH FAILED: {e}");
            std::process::exit(1);
        }
    }
}

/// Run the benchmark. Ok(false): measured, but the equivalence checks failed.
pub fn run(opts: &BenchOptions) -> Result<bool, String> {
    let started = Instant::now();
    for (what, p) in [("jwt-guard", &opts.wasm), ("wasm-floor", &opts.floor_wasm)] {
        if !p.is_file() {
            return Err(format!(
                "{what} module not found at {} (make build; cargo build --release --target wasm32-wasip1 -p wasm-floor)",
                p.display()
            ));
        }
    }
    let algs = algs();
    let missing_algs: Vec<&str> = ALGS.iter().copied().filter(|a| !algs.contains(a)).collect();
    if !missing_algs.is_empty() {
        eprintln!(
            "[bench] NOTE: no {} rows: the harness cannot mint {} yet (no fixture key for it in wasm-test-harness/src/keys.rs)",
            missing_algs.join("/"),
            missing_algs.join("/")
        );
    }
    let out_dir = opts
        .out
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let work = out_dir.join("run");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;

    let plan: Vec<(&str, &str, &str)> = algs
        .iter()
        .flat_map(|a| {
            opts.workloads.iter().flat_map(move |w| {
                CONFIGS
                    .iter()
                    .filter(move |c| measured(c, w))
                    .map(move |c| (*a, *w, *c))
            })
        })
        .collect();
    let warmup_runs = (CONFIGS.len() * algs.len()) as u64;
    eprintln!(
        "[bench] {} rounds x {} cells x {}s (+{}s warmup per config and alg), -c{}; ~{}s of wrk",
        opts.rounds,
        plan.len(),
        opts.duration_s,
        opts.warmup_s,
        opts.connections,
        opts.rounds as u64 * plan.len() as u64 * opts.duration_s + opts.warmup_s * warmup_runs
    );

    // Start the Envoys first (they load in the background while tokens are minted).
    let t = Instant::now();
    let (mut units, skipped, (files, minted)) = start_units(opts, &work, || {
        tokens::mint_all(&out_dir.join("tokens"), &algs, opts.tokens)
    })?;
    let mint_s = t.elapsed().as_secs_f64();
    eprintln!(
        "[bench] tokens: {} ({:.1}s including Envoy startup)",
        if minted.is_empty() {
            "all reused (target/bench/tokens, < 12 h old)".to_string()
        } else {
            format!("minted {}", minted.join(", "))
        },
        mint_s
    );
    eprintln!(
        "[bench] envoys ready: {}",
        units
            .iter()
            .map(|u| format!("{}=:{}", u.config, u.port()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let configs: Vec<String> = units.iter().map(|u| u.config.clone()).collect();
    smoke(&units, &files, &algs)?;

    if opts.warmup_s > 0 {
        for u in &units {
            for alg in &algs {
                let f = &files[&(alg.to_string(), "cold".to_string())];
                wrk::measure(u, f, opts.warmup_s, opts.connections)
                    .map_err(|err| format!("warmup {alg} {}: {err}", u.config))?;
            }
        }
    }

    let mut runs: Runs = BTreeMap::new();
    let bench_started = Instant::now();
    for round in 0..opts.rounds {
        for alg in &algs {
            for w in &opts.workloads {
                let f = &files[&(alg.to_string(), w.to_string())];
                // Rotate the configuration order each round so no configuration always runs first.
                for k in 0..units.len() {
                    let u = &units[(k + round) % units.len()];
                    if !measured(&u.config, w) {
                        continue;
                    }
                    let r = wrk::measure(u, f, opts.duration_s, opts.connections)
                        .map_err(|err| format!("{alg} {w} {}: {err}", u.config))?;
                    eprintln!(
                        "[bench] round {}/{} {alg} {w:<4} {:<12} {:>9.0} req/s  cpu {:>7} us/req  p50 {:>8}  p99 {:>8}  non-2xx {:>5.1}%",
                        round + 1,
                        opts.rounds,
                        u.config,
                        r.rps,
                        report::fmt_cpu(r.cpu_us_per_req()),
                        report::fmt_us(r.p50_us),
                        report::fmt_us(r.p99_us),
                        r.non_2xx_share() * 100.0
                    );
                    runs.entry((alg.to_string(), w.to_string(), u.config.clone()))
                        .or_default()
                        .push(r);
                }
            }
        }
    }
    let bench_s = bench_started.elapsed().as_secs_f64();

    for u in &mut units {
        u.check_alive()?;
    }
    let memory: serde_json::Map<String, Value> = units
        .iter()
        .map(|u| (u.config.clone(), machine::memory_of(u)))
        .collect();
    let envoy_log_lines: serde_json::Map<String, Value> = units
        .iter()
        .flat_map(|u| u.envoys.iter())
        .map(|e| (e.name().to_string(), json!(e.logs().lines().count())))
        .collect();
    drop(units);

    let cells: Cells = runs.iter().map(|(k, v)| (k.clone(), Cell::of(v))).collect();
    let errors = report::check_cells(&cells);

    let mut table = report::markdown(&cells, &runs, &algs, &configs);
    for (c, why) in &skipped {
        table.push_str(&format!("\n_{c}: not measured — {why}._\n"));
    }
    if !missing_algs.is_empty() {
        table.push_str(&format!(
            "\n_No {} rows: the harness cannot mint {} yet._\n",
            missing_algs.join("/"),
            missing_algs.join("/")
        ));
    }
    println!("{table}");

    let mut results = serde_json::Map::new();
    for ((alg, w, c), cell) in &cells {
        let entry = results
            .entry(format!("{alg}/{w}"))
            .or_insert_with(|| json!({}));
        entry[c.as_str()] = cell.json();
    }
    let report = json!({
        "machine": machine::machine_info(opts),
        "params": {
            "rounds": opts.rounds,
            "duration_s": opts.duration_s,
            "connections": opts.connections,
            "wrk_threads": 1,
            "envoy_concurrency": 1,
            "tokens_per_workload": opts.tokens,
            "warmup_s": opts.warmup_s,
            "configs": configs,
            "configs_skipped": skipped,
            "algs": algs,
            "algs_missing": missing_algs,
            "workloads": opts.workloads,
            "cells": plan.iter().map(|(a, w, c)| format!("{a}/{w}/{c}")).collect::<Vec<_>>(),
            "cpu_note": "cpu_us_per_req = CPU time of the configuration's Envoy process(es) (sum over threads of /proc/<pid>/task/*/schedstat, ns; ext_authz: front + central) read right before and after each wrk run, divided by the requests wrk completed",
            "jwt_guard_config": plugin_config("enforce"),
            "jwt_guard_wasm_backend_config": plugin_config_wasm_backend(),
        },
        "timing": {
            "mint_and_startup_s": report::round2(mint_s),
            "measure_s": report::round2(bench_s),
            "total_s": report::round2(started.elapsed().as_secs_f64()),
        },
        "results": results,
        "summary": report::summary_json(&runs, &algs, &configs),
        "memory": memory,
        "envoy_log_lines": envoy_log_lines,
        "ok": errors.is_empty(),
        "errors": errors,
        "markdown": table,
    });
    fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    fs::write(&opts.out, text + "\n")
        .map_err(|e| format!("cannot write {}: {e}", opts.out.display()))?;
    eprintln!(
        "[bench] wrote {} (total {:.0}s)",
        opts.out.display(),
        started.elapsed().as_secs_f64()
    );
    for e in &errors {
        eprintln!("[bench] ERROR: {e}");
    }
    Ok(errors.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_report() {
        let out = "Running 1s test @ http://127.0.0.1:1/bench
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   500.00us  100.00us   2.00ms   90.00%
    Req/Sec    30.00k     1.00k   32.00k    80.00%
  Latency Distribution
     50%  480.00us
     75%  520.00us
     90%  600.00us
     99%    1.50ms
  30000 requests in 1.00s, 2.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 15000
Requests/sec:  29950.12
Transfer/sec:      2.00MB
";
        let r = wrk::parse_wrk(out).unwrap();
        assert_eq!(r.requests, 30000);
        assert_eq!(r.non_2xx, 15000);
        assert_eq!(r.socket_errors, 3);
        assert!((r.rps - 29950.12).abs() < 1e-6);
        assert!((r.p50_us - 480.0).abs() < 1e-6);
        assert!((r.p99_us - 1500.0).abs() < 1e-6);
        assert_eq!(wrk::parse_duration_us("2.00s"), Some(2e6));
    }

    #[test]
    fn corrupted_signature_differs_and_stays_well_formed() {
        let t = crate::tokens::mint_std("ES256", "x");
        let c = tokens::corrupt_signature(&t);
        assert_ne!(t, c);
        assert_eq!(c.split('.').count(), 3);
        assert_eq!(t.rsplit_once('.').unwrap().0, c.rsplit_once('.').unwrap().0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(report::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(report::median(&[4.0, 1.0]), 2.5);
    }
}
