//! The `bench` command line: [`BenchOptions`], their defaults (the default run's time budget) and parsing.

use std::path::PathBuf;

use super::proofs::MAX_DURATION_S;
use super::WORKLOADS;
use crate::args::Args;
use crate::envoy::{repo_root, wasm_path};

pub const USAGE: &str = "\
  wasm-test-harness bench [--rounds N] [--duration SECS] [--connections N] [--tokens N] [--warmup SECS] [--out PATH]
                          [--workloads hot,cold,mix,dpop]
      Benchmark none / wasm-floor / native / native-cache / ext_authz / ours / ours-wasm / ours-shadow with wrk
      (see bench/README.md). Defaults: --rounds 2 (env BENCH_ROUNDS), --duration 2 (env BENCH_DURATION),
                --connections 16, --tokens 5000 per (alg, cold|mix), --warmup 1, --out target/bench/bench.json,
                every workload (dpop: ES256 only, ours and ours-wasm only, at most 200 s per run).
      Modules: $WASM (jwt-guard) and $WASM_FLOOR (default target/wasm32-wasip1/release/wasm_floor.wasm).
";

/// Parameters of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub rounds: usize,
    pub duration_s: u64,
    pub connections: usize,
    /// Distinct tokens per (alg, cold) and per (alg, mix).
    pub tokens: usize,
    /// Seconds of wrk against each configuration and algorithm before round 1 (V8 tier-up, caches,
    /// connection setup).
    pub warmup_s: u64,
    pub out: PathBuf,
    pub wasm: PathBuf,
    pub floor_wasm: PathBuf,
    /// The workloads to measure (`--workloads hot,cold`; default all of [`WORKLOADS`]), for a quicker run
    /// while working on one path. The tables show the others as not measured.
    pub workloads: Vec<&'static str>,
}

// Default time budget (must stay under ~6 minutes). Per algorithm 19 cells (hot: all 8 configurations; cold:
// native, native-cache, ext_authz, ours, ours-wasm; mix: those + ours-shadow); 3 algorithms = 57 cells, + 2
// dpop cells (ES256 only: ours, ours-wasm) = 59 cells x 2 rounds x 2 s = 236 s of wrk, + (8 configurations x
// 3 algs + 2 dpop) x 1 s warmup = 26 s, + ~25 s minting on the first run (3 algs x (1 + 2 x 5000) tokens on 2
// cores, RSA-2048 signing dominates; reused for 12 h), + the dpop proofs minted before each of their 6 runs
// (3 x the expected requests at ~12k proofs/s on 2 cores: ~4 s before an `ours` run, < 0.5 s before an
// `ours-wasm` one, ~12 s in all), and ~5 s startup => ~5 min (first run), ~4.7 min after. Two algorithms
// (no ES384 key): ~3.7 min.
const DEFAULT_ROUNDS: usize = 2;
const DEFAULT_DURATION_S: u64 = 2;
const DEFAULT_CONNECTIONS: usize = 16;
const DEFAULT_TOKENS: usize = 5000;
const DEFAULT_WARMUP_S: u64 = 1;

/// Parse `bench` arguments (`--name value` / `--name=value`), with BENCH_ROUNDS / BENCH_DURATION fallbacks.
pub fn parse_args(args: &[String]) -> Result<BenchOptions, String> {
    let args = Args::parse(args)?;
    args.check_known(&[
        "rounds",
        "duration",
        "connections",
        "tokens",
        "warmup",
        "out",
        "wasm",
        "floor-wasm",
        "workloads",
    ])?;
    let workloads = match args.get("workloads", None) {
        None => WORKLOADS.to_vec(),
        Some(list) => list
            .split(',')
            .map(|w| {
                WORKLOADS
                    .iter()
                    .copied()
                    .find(|k| *k == w.trim())
                    .ok_or_else(|| {
                        format!(
                            "--workloads: unknown workload {w:?} (known: {})",
                            WORKLOADS.join(", ")
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let resolve = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            repo_root().join(p)
        }
    };
    let opts = BenchOptions {
        rounds: args.num("rounds", Some("BENCH_ROUNDS"), DEFAULT_ROUNDS)?,
        duration_s: args.num("duration", Some("BENCH_DURATION"), DEFAULT_DURATION_S)?,
        connections: args.num("connections", None, DEFAULT_CONNECTIONS)?,
        tokens: args.num("tokens", None, DEFAULT_TOKENS)?,
        warmup_s: args.num("warmup", None, DEFAULT_WARMUP_S)?,
        out: resolve(
            args.get("out", None)
                .unwrap_or_else(|| "target/bench/bench.json".into()),
        ),
        wasm: args
            .get("wasm", Some("WASM"))
            .map(resolve)
            .unwrap_or_else(wasm_path),
        floor_wasm: resolve(
            args.get("floor-wasm", Some("WASM_FLOOR"))
                .unwrap_or_else(|| "target/wasm32-wasip1/release/wasm_floor.wasm".into()),
        ),
        workloads,
    };
    if opts.rounds == 0 || opts.duration_s == 0 || opts.connections == 0 || opts.tokens < 4 {
        return Err("--rounds, --duration, --connections must be > 0 and --tokens >= 4".into());
    }
    if opts.workloads.contains(&"dpop") && opts.duration_s.max(opts.warmup_s) > MAX_DURATION_S {
        return Err(format!(
            "--duration/--warmup above {MAX_DURATION_S} s: the dpop workload's proofs would leave the filter's iat window \
             (60 s + 60 s skew) during the run; leave it out (--workloads hot,cold,mix) or run shorter"
        ));
    }
    Ok(opts)
}
