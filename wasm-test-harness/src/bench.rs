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
//! tokens: half valid, a quarter expired, a quarter with a bad signature); and once, under [`DPOP_ALG`]
//! only, `dpop` (one DPoP-bound ES256 token, so the verified-token cache serves it, and a fresh ES256 proof
//! per request, minted right before each wrk run: each request costs one proof signature check and one
//! replay-memory record); see [`measured`] and [`runs_on`] for which configuration runs which workload.
//! Rounds are interleaved (round > (alg, workload) > config, config order rotated per round), one wrk at a
//! time; each cell reports the median over rounds of req/s, latency and CPU µs per request (the
//! configuration's Envoy processes' CPU time over the wrk run ÷ requests).
//!
//! Modules: `options` (command line), `tokens` (minting), `proofs` (the `dpop` token and its per-run
//! proofs), `config` (bootstraps), `units` (each configuration's Envoys, started through the harness's one
//! runner, [`crate::envoy::Envoy::spawn`]; the smoke test), `cpu` (CPU time from /proc), `wrk`, `report`
//! (medians, ratios, checks, tables) and `machine` (machine and memory facts).

mod config;
mod cpu;
mod machine;
mod options;
mod proofs;
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
    "ours-noclear",
];
/// Configurations that reject bad tokens (must answer ~50% 401 on `mix`).
const ENFORCING: &[&str] = &[
    "native",
    "native-cache",
    "ext_authz",
    "ours",
    "ours-wasm",
    "ours-noclear",
];
/// Every algorithm the bench knows; [`algs`] is the subset the harness can mint.
pub const ALGS: &[&str] = &["RS256", "ES256", "ES384"];
pub const WORKLOADS: &[&str] = &["hot", "cold", "mix", "dpop"];
/// The one algorithm the `dpop` workload runs under (its token and its proofs are ES256, key ec-1): it
/// measures the proof, which does not change with the token's algorithm, so it is not repeated per alg.
pub const DPOP_ALG: &str = "ES256";
/// The `dpop` workload's path (jwt-guard rule `dpop`, `binding: dpop`; the route answers 200 like `/bench`).
pub const DPOP_PATH: &str = "/dpop";
/// `dpop.external_base_url` of the bench's jwt-guard: the proofs' `htu` base, whatever port an Envoy has.
pub const DPOP_BASE_URL: &str = "http://bench.local";

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
/// tokens are bad, so `hot` and `mix`; `ours-noclear` (`ours` with `clear_route_cache: false`) measures
/// what the explicit route re-match costs, which `hot` shows best. `dpop` only `ours` and `ours-wasm`: Envoy's jwt_authn (and so
/// `native`, `native-cache`, `ext_authz`) cannot check a DPoP proof, and `ours-shadow` would check every
/// (valid) proof just as `ours` does. Everything else runs everything.
pub fn measured(config: &str, workload: &str) -> bool {
    match (config, workload) {
        (_, "dpop") => matches!(config, "ours" | "ours-wasm"),
        ("none" | "wasm-floor" | "ours-noclear", _) => workload == "hot",
        ("ours-shadow", _) => workload != "cold",
        _ => true,
    }
}

/// Whether `workload` has a row under `alg`: `dpop` only under [`DPOP_ALG`], the others under every alg.
pub fn runs_on(alg: &str, workload: &str) -> bool {
    workload != "dpop" || alg == DPOP_ALG
}

/// The (alg, workload) rows of a run over `algs`, in report order.
pub fn rows<'a>(algs: &'a [&'a str]) -> impl Iterator<Item = (&'a str, &'static str)> + 'a {
    algs.iter().flat_map(|a| {
        WORKLOADS
            .iter()
            .filter(move |w| runs_on(a, w))
            .map(move |w| (*a, *w))
    })
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

/// The req/s each configuration last did, to size the next `dpop` run's proofs: its last `dpop` run,
/// else its last `cold` run under [`DPOP_ALG`].
#[derive(Default)]
struct DpopEstimates {
    dpop: BTreeMap<String, f64>,
    cold: BTreeMap<String, f64>,
}

impl DpopEstimates {
    fn saw(&mut self, alg: &str, workload: &str, config: &str, r: &WrkResult) {
        let into = match (alg, workload) {
            (_, "dpop") => &mut self.dpop,
            (DPOP_ALG, "cold") => &mut self.cold,
            _ => return,
        };
        if r.rps.is_finite() && r.rps > 0.0 {
            into.insert(config.to_string(), r.rps);
        }
    }

    /// NaN when nothing is known yet (then [`proofs::proof_count`] assumes [`proofs::FALLBACK_RPS`]).
    fn rps(&self, config: &str) -> f64 {
        self.dpop
            .get(config)
            .or_else(|| self.cold.get(config))
            .copied()
            .unwrap_or(f64::NAN)
    }
}

/// One `dpop` run of `duration_s` against `u`: mint the proofs it needs (their `iat` mid-run), write them
/// with the token to `work/proofs-<config>.txt`, run bench/dpop.lua.
fn dpop_run(
    u: &units::Unit,
    token: &str,
    est: &DpopEstimates,
    duration_s: u64,
    opts: &BenchOptions,
    work: &Path,
) -> Result<WrkResult, String> {
    let n = proofs::proof_count(est.rps(&u.config), duration_s);
    let t = Instant::now();
    let proof_list = proofs::mint_proofs(token, n, crate::tokens::now() + duration_s / 2);
    let mint_s = t.elapsed().as_secs_f64();
    let file = work.join(format!("proofs-{}.txt", u.config));
    proofs::write_proof_file(&file, token, &proof_list)?;
    drop(proof_list);
    let load = wrk::Load::Dpop {
        file: &file,
        proofs: n as u64,
    };
    let r = wrk::measure(u, &load, duration_s, opts.connections);
    let _ = fs::remove_file(&file);
    r.map(|r| WrkResult {
        proofs_mint_s: mint_s,
        ..r
    })
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
    if opts.workloads.contains(&"dpop") && !algs.contains(&DPOP_ALG) {
        return Err(format!(
            "the dpop workload needs {DPOP_ALG}, which this harness cannot mint"
        ));
    }
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
            opts.workloads
                .iter()
                .filter(move |w| runs_on(a, w))
                .flat_map(move |w| {
                    CONFIGS
                        .iter()
                        .filter(move |c| measured(c, w))
                        .map(move |c| (*a, *w, *c))
                })
        })
        .collect();
    let dpop = opts.workloads.contains(&"dpop");
    let dpop_configs = CONFIGS.iter().filter(|c| measured(c, "dpop")).count();
    let warmup_runs = (CONFIGS.len() * algs.len() + if dpop { dpop_configs } else { 0 }) as u64;
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
    smoke(&units, &files, &algs, dpop)?;

    // The dpop workload's proofs are minted right before each of its runs, as many as the run should
    // need (proofs::proof_count) from the configuration's last req/s: its last dpop run, else its cold
    // run under DPOP_ALG (warmup or measured), else proofs::FALLBACK_RPS.
    let mut dpop_est = DpopEstimates::default();
    let dpop_token = if dpop {
        tokens::token_at(&files, DPOP_ALG, "dpop", 0)
    } else {
        String::new()
    };
    if opts.warmup_s > 0 {
        for u in &units {
            for alg in &algs {
                let f = &files[&(alg.to_string(), "cold".to_string())];
                let r = wrk::measure(u, &wrk::Load::Bearer(f), opts.warmup_s, opts.connections)
                    .map_err(|err| format!("warmup {alg} {}: {err}", u.config))?;
                dpop_est.saw(alg, "cold", &u.config, &r);
            }
            if dpop && measured(&u.config, "dpop") {
                let r = dpop_run(u, &dpop_token, &dpop_est, opts.warmup_s, opts, &work)
                    .map_err(|err| format!("warmup dpop {}: {err}", u.config))?;
                dpop_est.saw(DPOP_ALG, "dpop", &u.config, &r);
            }
        }
    }

    let mut runs: Runs = BTreeMap::new();
    let bench_started = Instant::now();
    for round in 0..opts.rounds {
        for alg in &algs {
            for w in opts.workloads.iter().filter(|w| runs_on(alg, w)) {
                let f = &files[&(alg.to_string(), w.to_string())];
                // Rotate the configuration order each round so no configuration always runs first.
                for k in 0..units.len() {
                    let u = &units[(k + round) % units.len()];
                    if !measured(&u.config, w) {
                        continue;
                    }
                    let r = if *w == "dpop" {
                        dpop_run(u, &dpop_token, &dpop_est, opts.duration_s, opts, &work)
                    } else {
                        wrk::measure(u, &wrk::Load::Bearer(f), opts.duration_s, opts.connections)
                    }
                    .map_err(|err| format!("{alg} {w} {}: {err}", u.config))?;
                    dpop_est.saw(alg, w, &u.config, &r);
                    eprintln!(
                        "[bench] round {}/{} {alg} {w:<4} {:<12} {:>9.0} req/s  cpu {:>7} us/req  p50 {:>8}  p99 {:>8}  non-2xx {:>5.1}%{}",
                        round + 1,
                        opts.rounds,
                        u.config,
                        r.rps,
                        report::fmt_cpu(r.cpu_us_per_req()),
                        report::fmt_us(r.p50_us),
                        report::fmt_us(r.p99_us),
                        r.non_2xx_share() * 100.0,
                        r.proofs
                            .map(|n| format!(
                                "  proofs {} of {n} (minted in {:.1}s)",
                                r.proofs_used, r.proofs_mint_s
                            ))
                            .unwrap_or_default()
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
            "dpop": {
                "alg": DPOP_ALG,
                "configs": CONFIGS.iter().filter(|c| measured(c, "dpop")).collect::<Vec<_>>(),
                "htu": proofs::htu(),
                "proof_key": "ec-1 (ES256)",
                "proofs_per_run": format!(
                    "{} x (the configuration's last dpop req/s, else its {DPOP_ALG} cold req/s, else {}) x duration, within [{}, {}]",
                    proofs::SAFETY, proofs::FALLBACK_RPS, proofs::MIN_PROOFS, proofs::MAX_PROOFS
                ),
                "replay_capacity": config::BENCH_REPLAY_CAPACITY,
            },
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
    fn dpop_runs_once_under_es256_on_jwt_guard_only() {
        let dpop: Vec<&str> = CONFIGS
            .iter()
            .copied()
            .filter(|c| measured(c, "dpop"))
            .collect();
        assert_eq!(dpop, ["ours", "ours-wasm"]);
        let r: Vec<(&str, &str)> = rows(&["RS256", "ES256", "ES384"]).collect();
        assert_eq!(r.iter().filter(|(_, w)| *w == "dpop").count(), 1);
        assert!(r.contains(&("ES256", "dpop")));
        assert_eq!(r.len(), 3 * 3 + 1);
        // The other workloads are measured as before.
        assert!(measured("native", "cold") && !measured("ours-shadow", "cold"));
        assert!(measured("none", "hot") && !measured("none", "mix"));
    }

    #[test]
    fn workloads_flag_takes_dpop_alone_or_with_others() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_args(&args(&["--workloads", "dpop"]))
                .unwrap()
                .workloads,
            ["dpop"]
        );
        assert_eq!(
            parse_args(&args(&["--workloads=cold,dpop"]))
                .unwrap()
                .workloads,
            ["cold", "dpop"]
        );
        assert_eq!(parse_args(&[]).unwrap().workloads, WORKLOADS);
        assert!(parse_args(&args(&["--duration", "300"])).is_err());
        assert!(parse_args(&args(&["--duration", "300", "--workloads", "hot,cold,mix"])).is_ok());
    }

    #[test]
    fn plugin_config_adds_the_dpop_rule_first_and_keeps_the_bench_rule() {
        let c = plugin_config("enforce");
        assert_eq!(c["dpop"]["external_base_url"], json!(DPOP_BASE_URL));
        let rules = c["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["match"], json!({ "path": DPOP_PATH }));
        assert_eq!(
            rules[0]["requires"],
            json!({ "provider_name": "bench", "binding": "dpop" })
        );
        assert_eq!(
            rules[1],
            json!({
                "name": "bench",
                "match": { "prefix": "/" },
                "requires": { "provider_name": "bench" },
                "mode": "enforce",
            })
        );
        // jwt-guard itself accepts all three configurations.
        for c in [
            plugin_config("enforce"),
            plugin_config("shadow"),
            plugin_config_wasm_backend(),
        ] {
            jwt_guard::config::Config::parse(&serde_json::to_vec(&c).unwrap())
                .unwrap_or_else(|e| panic!("bench plugin config refused: {e:?}"));
        }
    }

    #[test]
    fn parses_the_dpop_script_summary() {
        let out = "Running 1s test @ http://127.0.0.1:1/dpop
  1 threads and 16 connections
  Latency Distribution
     50%  480.00us
     99%    1.50ms
  9000 requests in 1.00s, 2.00MB read
  Non-2xx or 3xx responses: 12
Requests/sec:   8990.00
Transfer/sec:      2.00MB
dpop proofs: used 9017, requests without a proof 12
";
        let r = wrk::parse_wrk(out).unwrap();
        assert_eq!((r.proofs_used, r.proofs_short), (9017, 12));
        assert_eq!(r.requests, 9000);
    }

    fn result(rps: f64, cpu_us: f64, non_2xx: u64) -> WrkResult {
        WrkResult {
            rps,
            requests: 10_000,
            non_2xx,
            cpu_ns: cpu_us * 1000.0 * 10_000.0,
            ..WrkResult::default()
        }
    }

    #[test]
    fn dpop_cells_are_checked_and_reported_against_cold() {
        let mut runs: Runs = BTreeMap::new();
        let put = |runs: &mut Runs, w: &str, c: &str, r: WrkResult| {
            runs.insert(("ES256".into(), w.into(), c.into()), vec![r]);
        };
        put(&mut runs, "hot", "ours", result(30_000.0, 30.0, 0));
        put(&mut runs, "cold", "ours", result(12_000.0, 80.0, 0));
        put(&mut runs, "cold", "ours-wasm", result(9_000.0, 100.0, 0));
        let dpop = |rps, cpu, short| WrkResult {
            proofs: Some(60_000),
            proofs_used: 10_001 + short,
            proofs_short: short,
            ..result(rps, cpu, short)
        };
        put(&mut runs, "dpop", "ours", dpop(10_000.0, 96.0, 0));
        put(&mut runs, "dpop", "ours-wasm", dpop(4_500.0, 200.0, 0));
        let cells: Cells = runs.iter().map(|(k, v)| (k.clone(), Cell::of(v))).collect();
        assert!(report::check_cells(&cells).is_empty());
        let configs: Vec<String> = CONFIGS.iter().map(|c| c.to_string()).collect();
        let md = report::markdown(&cells, &runs, &["ES256"], &configs);
        assert!(
            md.contains("- ours dpop ÷ ours cold: req/s 0.83 · CPU µs per request 1.20"),
            "{md}"
        );
        assert!(md.contains("proof ≈ dpop − hot = 66.0 µs"), "{md}");
        assert!(
            md.contains("- ours-wasm dpop ÷ ours-wasm cold: req/s 0.50 · CPU µs per request 2.00"),
            "{md}"
        );
        assert!(md.contains("| ES256 | dpop |"), "{md}");
        let summary = report::summary_json(&runs, &["ES256"], &configs);
        assert_eq!(
            summary["dpop"]["ours"]["dpop_over_cold"]["cpu_us_per_req"],
            json!(1.2)
        );
        assert_eq!(summary["dpop"]["ours"]["proof_us_estimate"], json!(66.0));

        // Out of proofs: the requests without one are refused (non-2xx) and the run fails.
        put(&mut runs, "dpop", "ours", dpop(10_000.0, 96.0, 40));
        let cells: Cells = runs.iter().map(|(k, v)| (k.clone(), Cell::of(v))).collect();
        let errors = report::check_cells(&cells);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("ran out of DPoP proofs")));
        assert!(errors
            .iter()
            .any(|e| e.contains("non-2xx on a valid-token workload")));
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(report::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(report::median(&[4.0, 1.0]), 2.5);
    }
}
