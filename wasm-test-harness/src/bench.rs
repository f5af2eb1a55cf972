//! `wasm-test-harness bench` (`make bench`): jwt-guard against Envoy's native `jwt_authn` and a trivial
//! proxy-wasm floor, in real Envoys driven by wrk on loopback.
//!
//! Six Envoys (one worker each) are started once and kept running, one per configuration:
//! `none` (no auth filter), `wasm-floor` (bench/wasm-floor: reads `authorization`, sets `x-floor`),
//! `native` (`envoy.filters.http.jwt_authn`, inline JWKS), `native-cache` (same + a 1000-entry jwt cache),
//! `ours` (jwt-guard, enforce) and `ours-shadow` (jwt-guard, shadow). Every route is a direct response.
//! Workloads, each with RS256 (rsa-1) and ES256 (ec-1) tokens: `hot` (one valid token), `cold` (N distinct
//! valid tokens) and `mix` (N distinct tokens: half valid, a quarter expired, a quarter with a bad signature).
//! Rounds are interleaved (round > (alg, workload) > config, config order rotated per round) and one wrk runs
//! at a time; each cell reports the median over rounds. Output: Markdown tables on stdout and a JSON file.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::args::Args;
use crate::client::try_http_request;
use crate::envoy::{envoy_bin, pick_free_port, render, repo_root, tail, wasm_path};
use crate::keys::{jwks_of, KeyName};
use crate::tokens::{self, AUDIENCE, ISSUER};

pub const USAGE: &str = "\
  wasm-test-harness bench [--rounds N] [--duration SECS] [--connections N] [--tokens N] [--warmup SECS] [--out PATH]
      Benchmark none / wasm-floor / native / native-cache / ours / ours-shadow with wrk (see bench/README.md).
      Defaults: --rounds 2 (env BENCH_ROUNDS), --duration 3 (env BENCH_DURATION), --connections 16,
                --tokens 5000 per (alg, cold|mix), --warmup 1, --out target/bench/bench.json.
      Modules: $WASM (jwt-guard) and $WASM_FLOOR (default target/wasm32-wasip1/release/wasm_floor.wasm).
";

/// Configurations, in report order.
pub const CONFIGS: &[&str] = &[
    "none",
    "wasm-floor",
    "native",
    "native-cache",
    "ours",
    "ours-shadow",
];
/// Configurations that reject bad tokens (must answer ~50% 401 on `mix`).
const ENFORCING: &[&str] = &["native", "native-cache", "ours"];
pub const ALGS: &[&str] = &["RS256", "ES256"];
pub const WORKLOADS: &[&str] = &["hot", "cold", "mix"];

/// Parameters of one benchmark run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub rounds: usize,
    pub duration_s: u64,
    pub connections: usize,
    /// Distinct tokens per (alg, cold) and per (alg, mix).
    pub tokens: usize,
    /// Seconds of wrk against each Envoy before round 1 (V8 tier-up, caches, connection setup).
    pub warmup_s: u64,
    pub out: PathBuf,
    pub wasm: PathBuf,
    pub floor_wasm: PathBuf,
}

// Default time budget (must stay under 5 minutes): 2 algs x 3 workloads x 6 configs = 36 cells;
// 36 cells x 2 rounds x 3 s = 216 s of wrk, + 6 configs x 2 algs x 1 s warmup = 12 s, + ~20 s minting
// 2 algs x (1 + 2 x 5000) tokens on 2 cores (RSA-2048 signing dominates; reused for 12 h, see mint_all)
// and ~3 s Envoy startup (overlapping the minting) => ~250 s, ~4.2 min.
const DEFAULT_ROUNDS: usize = 2;
const DEFAULT_DURATION_S: u64 = 3;
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
    ])?;
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
    };
    if opts.rounds == 0 || opts.duration_s == 0 || opts.connections == 0 || opts.tokens < 4 {
        return Err("--rounds, --duration, --connections must be > 0 and --tokens >= 4".into());
    }
    Ok(opts)
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

// ---------------------------------------------------------------------------------------------------------
// Tokens

/// Claims valid for a day (a long run must not see its "valid" tokens expire).
fn claims(sub: &str, jti: &str, now: u64, expired: bool) -> Value {
    let (iat, exp) = if expired {
        (now - 7200, now - 3600)
    } else {
        (now, now + 86_400)
    };
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "jti": jti, "iat": iat, "exp": exp })
}

/// Flip one byte in the middle of the signature: still well-formed, no longer verifies.
fn corrupt_signature(token: &str) -> String {
    let (signing_input, sig) = token.rsplit_once('.').unwrap_or((token, ""));
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap_or_default();
    if bytes.is_empty() {
        return format!("{signing_input}.AAAA");
    }
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Token `i` of a workload. `mix`: even = valid, i % 4 == 1 = expired but well signed, i % 4 == 3 = bad signature.
fn workload_token(alg: &str, workload: &str, i: usize, now: u64) -> String {
    let kid = tokens::default_kid(alg);
    let sub = format!("bench-{workload}-{i}");
    let jti = format!("{alg}-{workload}-{i}");
    match (workload, i % 4) {
        ("mix", 1) => tokens::mint(alg, kid, &claims(&sub, &jti, now, true)),
        ("mix", 3) => corrupt_signature(&tokens::mint(alg, kid, &claims(&sub, &jti, now, false))),
        _ => tokens::mint(alg, kid, &claims(&sub, &jti, now, false)),
    }
}

/// How long minted token files are reused: valid tokens expire 24 h after minting, so a run that starts
/// within 12 h of minting still has 12 h of validity left.
const TOKEN_REUSE_S: u64 = 12 * 3600;

/// (alg, workload) -> token file.
type TokenFiles = BTreeMap<(String, String), PathBuf>;

fn token_file(dir: &Path, alg: &str, workload: &str) -> PathBuf {
    dir.join(format!("tokens-{alg}-{workload}.txt"))
}

/// Mint every workload's tokens (in parallel) into one file per (alg, workload) under `dir`, or reuse the
/// files of an earlier run if they hold the same number of tokens and are fresh (minting 2 x 2 x 5000 tokens
/// costs ~20 s on 2 cores, RSA-2048 signing dominates). Returns the files and whether they were minted now.
fn mint_all(dir: &Path, n: usize) -> Result<(TokenFiles, bool), String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let now = tokens::now();
    let stamp = dir.join("stamp.json");
    let mut files = BTreeMap::new();
    for alg in ALGS {
        for workload in WORKLOADS {
            files.insert(
                (alg.to_string(), workload.to_string()),
                token_file(dir, alg, workload),
            );
        }
    }
    let reusable = fs::read_to_string(&stamp)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .is_some_and(|v| {
            v["tokens"].as_u64() == Some(n as u64)
                && v["issuer"].as_str() == Some(ISSUER)
                && v["audience"].as_str() == Some(AUDIENCE)
                && v["minted_at"]
                    .as_u64()
                    .is_some_and(|t| t <= now && now - t < TOKEN_REUSE_S)
        })
        && files.values().all(|p| p.is_file());
    if reusable {
        return Ok((files, false));
    }
    let _ = fs::remove_file(&stamp);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for ((alg, workload), path) in &files {
        let (alg, workload) = (alg.as_str(), workload.as_str());
        let count = if workload == "hot" { 1 } else { n };
        let chunk = count.div_ceil(threads);
        let toks: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    s.spawn(move || {
                        (t * chunk..((t + 1) * chunk).min(count))
                            .map(|i| workload_token(alg, workload, i, now))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        if toks.len() != count {
            return Err(format!(
                "minted {} of {count} {alg} {workload} tokens",
                toks.len()
            ));
        }
        fs::write(path, toks.join("\n") + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let meta = json!({ "tokens": n, "minted_at": now, "issuer": ISSUER, "audience": AUDIENCE });
    fs::write(&stamp, meta.to_string())
        .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok((files, true))
}

// ---------------------------------------------------------------------------------------------------------
// Envoy configurations

/// The JWKS both jwt-guard and jwt_authn verify against.
fn bench_jwks() -> Value {
    jwks_of(&[KeyName::Rsa1, KeyName::Ec1])
}

/// jwt-guard's plugin config for the bench (mode "enforce" or "shadow").
pub fn plugin_config(mode: &str) -> Value {
    json!({
        "providers": { "bench": {
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "local_jwks": { "inline": bench_jwks() },
        }},
        "rules": [{
            "name": "bench",
            "match": { "prefix": "/" },
            "requires": { "provider_name": "bench" },
            "mode": mode,
        }],
    })
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
fn filters_for(config: &str, opts: &BenchOptions) -> Result<String, String> {
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
        "native" => native(false),
        "native-cache" => native(true),
        "ours" => wasm(
            "jwt_guard",
            &opts.wasm,
            &plugin_config("enforce").to_string(),
        ),
        "ours-shadow" => wasm(
            "jwt_guard",
            &opts.wasm,
            &plugin_config("shadow").to_string(),
        ),
        other => Err(format!("unknown configuration {other:?}")),
    }
}

/// The bootstrap `bench` runs for `config` (one of [`CONFIGS`]): bench/envoy-bench.yaml with that
/// configuration's filters, on the given ports.
pub fn render_bootstrap(
    config: &str,
    opts: &BenchOptions,
    listen_port: u16,
    admin_port: u16,
) -> Result<String, String> {
    Ok(render(
        &read_template("envoy-bench.yaml")?,
        &[
            ("ADMIN_PORT", admin_port.to_string()),
            ("LISTEN_PORT", listen_port.to_string()),
            ("FILTERS", filters_for(config, opts)?),
        ],
    ))
}

/// One Envoy for one configuration; killed on drop.
struct BenchEnvoy {
    config: String,
    child: Child,
    port: u16,
    admin_port: u16,
    log: PathBuf,
}

impl BenchEnvoy {
    fn spawn(config: &str, opts: &BenchOptions, dir: &Path) -> Result<BenchEnvoy, String> {
        let port = pick_free_port()?;
        let mut admin_port = pick_free_port()?;
        while admin_port == port {
            admin_port = pick_free_port()?;
        }
        let yaml = render_bootstrap(config, opts, port, admin_port)?;
        let cfg = dir.join(format!("envoy-{config}.yaml"));
        fs::write(&cfg, yaml).map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
        let log = dir.join(format!("envoy-{config}.log"));
        let log_file =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let log_file2 = log_file.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(envoy_bin()?)
            .arg("-c")
            .arg(&cfg)
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "-l",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_file2)
            .spawn()
            .map_err(|e| format!("cannot start envoy: {e}"))?;
        Ok(BenchEnvoy {
            config: config.to_string(),
            child,
            port,
            admin_port,
            log,
        })
    }

    fn log_tail(&self) -> String {
        tail(&fs::read_to_string(&self.log).unwrap_or_default(), 30)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "envoy for {} exited ({status}) during startup; log tail:\n{}",
                    self.config,
                    self.log_tail()
                ));
            }
            if let Ok(r) = try_http_request(self.admin_port, "GET", "/ready", &[], &[]) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "envoy for {} not ready after {timeout:?}; log tail:\n{}",
                    self.config,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn admin(&self, path: &str) -> Result<String, String> {
        let r = try_http_request(self.admin_port, "GET", path, &[], &[])?;
        if r.status != 200 {
            return Err(format!("admin {path}: HTTP {}", r.status));
        }
        Ok(r.body)
    }

    /// Status of one request with `Authorization: Bearer <token>` (None: no header).
    fn probe(&self, token: Option<&str>) -> Result<u16, String> {
        let headers: Vec<(&str, Vec<u8>)> = token
            .map(|t| vec![("authorization", format!("Bearer {t}").into_bytes())])
            .unwrap_or_default();
        try_http_request(self.port, "GET", "/bench", &headers, &[]).map(|r| r.status)
    }
}

impl Drop for BenchEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------
// wrk

/// What one wrk run measured.
#[derive(Clone, Debug, Default)]
pub struct WrkResult {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

impl WrkResult {
    fn non_2xx_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.non_2xx as f64 / self.requests as f64
        }
    }
}

/// "123.45us" / "1.20ms" / "2.00s" / "1.00m" -> microseconds.
fn parse_duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else {
        (s, 1.0)
    };
    num.trim().parse::<f64>().ok().map(|v| v * mult)
}

/// Parse wrk's `--latency` report.
pub fn parse_wrk(out: &str) -> Result<WrkResult, String> {
    let mut r = WrkResult::default();
    let (mut rps, mut p50, mut p99, mut reqs) = (None, None, None, None);
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = l.strip_prefix("50%") {
            p50 = parse_duration_us(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            p99 = parse_duration_us(v);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            r.socket_errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if l.contains(" requests in ") {
            reqs = l.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    match (rps, p50, p99, reqs) {
        (Some(a), Some(b), Some(c), Some(d)) => {
            r.rps = a;
            r.p50_us = b;
            r.p99_us = c;
            r.requests = d;
            Ok(r)
        }
        _ => Err(format!("cannot parse wrk output:\n{out}")),
    }
}

fn run_wrk(
    port: u16,
    tokens_file: &Path,
    duration_s: u64,
    connections: usize,
) -> Result<WrkResult, String> {
    let script = repo_root().join("bench/tokens.lua");
    let out = Command::new("wrk")
        .args([
            "-t1".to_string(),
            format!("-c{connections}"),
            format!("-d{duration_s}s"),
            "--latency".to_string(),
            "-s".to_string(),
        ])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/bench"))
        .env("BENCH_TOKENS", tokens_file)
        .output()
        .map_err(|e| format!("cannot run wrk (install it: apt-get install wrk): {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_wrk(&stdout)
}

// ---------------------------------------------------------------------------------------------------------
// Report

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Per-cell medians.
#[derive(Clone, Debug)]
struct Cell {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    non_2xx_share: f64,
    runs: Vec<WrkResult>,
}

impl Cell {
    fn of(runs: &[WrkResult]) -> Cell {
        let col = |f: fn(&WrkResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let requests: u64 = runs.iter().map(|r| r.requests).sum();
        let non_2xx: u64 = runs.iter().map(|r| r.non_2xx).sum();
        Cell {
            rps: col(|r| r.rps),
            p50_us: col(|r| r.p50_us),
            p99_us: col(|r| r.p99_us),
            non_2xx_share: if requests == 0 {
                0.0
            } else {
                non_2xx as f64 / requests as f64
            },
            runs: runs.to_vec(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "rps": round2(self.rps),
            "p50_us": round2(self.p50_us),
            "p99_us": round2(self.p99_us),
            "non_2xx_share": round4(self.non_2xx_share),
            "rounds": self.runs.iter().map(|r| json!({
                "rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us, "requests": r.requests,
                "non_2xx": r.non_2xx, "non_2xx_share": round4(r.non_2xx_share()),
                "socket_errors": r.socket_errors,
            })).collect::<Vec<_>>(),
        })
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}us")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

type Cells = BTreeMap<(String, String, String), Cell>;

fn markdown(cells: &Cells) -> String {
    let get = |alg: &str, w: &str, c: &str| cells.get(&(alg.into(), w.into(), c.into()));
    let mut out = String::new();
    out.push_str("### Throughput (req/s, median over rounds; ratios are req/s ours ÷ other: > 1 = ours faster)\n\n");
    out.push_str("| alg | workload |");
    for c in CONFIGS {
        out.push_str(&format!(" {c} |"));
    }
    out.push_str(
        " ours/native | ours/native-cache | ours/wasm-floor | ours-shadow/ours |\n|---|---|",
    );
    out.push_str(&"---:|".repeat(CONFIGS.len() + 4));
    out.push('\n');
    for alg in ALGS {
        for w in WORKLOADS {
            out.push_str(&format!("| {alg} | {w} |"));
            for c in CONFIGS {
                match get(alg, w, c) {
                    Some(cell) => out.push_str(&format!(" {:.0} |", cell.rps)),
                    None => out.push_str(" - |"),
                }
            }
            let rps = |c: &str| get(alg, w, c).map_or(f64::NAN, |x| x.rps);
            out.push_str(&format!(
                " {} | {} | {} | {} |\n",
                ratio(rps("ours"), rps("native")),
                ratio(rps("ours"), rps("native-cache")),
                ratio(rps("ours"), rps("wasm-floor")),
                ratio(rps("ours-shadow"), rps("ours")),
            ));
        }
    }
    out.push_str(
        "\n### Latency (p50 / p99 per configuration, median over rounds)\n\n| alg | workload |",
    );
    for c in CONFIGS {
        out.push_str(&format!(" {c} |"));
    }
    out.push_str(" p99 added (ours − none) |\n|---|---|");
    out.push_str(&"---:|".repeat(CONFIGS.len() + 1));
    out.push('\n');
    for alg in ALGS {
        for w in WORKLOADS {
            out.push_str(&format!("| {alg} | {w} |"));
            for c in CONFIGS {
                match get(alg, w, c) {
                    Some(cell) => out.push_str(&format!(
                        " {} / {} |",
                        fmt_us(cell.p50_us),
                        fmt_us(cell.p99_us)
                    )),
                    None => out.push_str(" - |"),
                }
            }
            match (get(alg, w, "ours"), get(alg, w, "none")) {
                (Some(o), Some(n)) => {
                    let d = o.p99_us - n.p99_us;
                    let sign = if d < 0.0 { "−" } else { "+" };
                    out.push_str(&format!(" {sign}{} |\n", fmt_us(d.abs())));
                }
                _ => out.push_str(" - |\n"),
            }
        }
    }
    out.push_str("\n### Non-2xx share (all rounds)\n\n| alg | workload |");
    for c in CONFIGS {
        out.push_str(&format!(" {c} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(CONFIGS.len()));
    out.push('\n');
    for alg in ALGS {
        for w in WORKLOADS {
            out.push_str(&format!("| {alg} | {w} |"));
            for c in CONFIGS {
                match get(alg, w, c) {
                    Some(cell) => out.push_str(&format!(" {:.1}% |", cell.non_2xx_share * 100.0)),
                    None => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
    }
    out
}

/// Equivalence checks: valid-token workloads must be all 2xx everywhere; on `mix` the enforcing
/// configurations must reject about half and the others none. Returns the violations.
fn check_cells(cells: &Cells) -> Vec<String> {
    let mut errors = Vec::new();
    for ((alg, w, c), cell) in cells {
        let share = cell.non_2xx_share;
        let socket_errors: u64 = cell.runs.iter().map(|r| r.socket_errors).sum();
        if socket_errors > 0 {
            errors.push(format!("{alg} {w} {c}: {socket_errors} wrk socket errors"));
        }
        if w == "mix" {
            if ENFORCING.contains(&c.as_str()) {
                if !(0.45..=0.55).contains(&share) {
                    errors.push(format!(
                        "{alg} mix {c}: non-2xx share {:.1}%, expected ~50% (half the tokens are invalid)",
                        share * 100.0
                    ));
                }
            } else if share > 0.0 {
                errors.push(format!(
                    "{alg} mix {c}: non-2xx share {:.1}%, expected 0 (this configuration never rejects)",
                    share * 100.0
                ));
            }
        } else if share > 0.0 {
            errors.push(format!(
                "{alg} {w} {c}: {:.2}% non-2xx on a valid-token workload - the configurations are not equivalent",
                share * 100.0
            ));
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------------------------
// Machine info and memory

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

fn machine_info(opts: &BenchOptions) -> Value {
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

fn memory_of(envoy: &BenchEnvoy) -> Value {
    let memory = envoy
        .admin("/memory")
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
    if matches!(envoy.config.as_str(), "wasm-floor" | "ours" | "ours-shadow") {
        let stats = envoy
            .admin("/stats?filter=wasm")
            .map(|t| parse_stats(&t))
            .unwrap_or(Value::Null);
        let gauge = envoy
            .admin("/stats?filter=vm_memory_bytes")
            .map(|t| parse_stats(&t))
            .ok()
            .and_then(|s| s.get("wasmcustom.jwt_guard.vm_memory_bytes").cloned());
        v["wasm_stats"] = stats;
        v["jwt_guard_vm_memory_bytes"] = gauge.unwrap_or(Value::Null);
    }
    v
}

// ---------------------------------------------------------------------------------------------------------
// The run

/// Probe each Envoy before measuring: valid token -> 200 everywhere; bad/no token -> 401 where enforcing.
fn smoke(envoys: &[BenchEnvoy], files: &TokenFiles) -> Result<(), String> {
    let first_line = |alg: &str, w: &str| -> String {
        files
            .get(&(alg.to_string(), w.to_string()))
            .and_then(|p| fs::read_to_string(p).ok())
            .map(|t| t.lines().next().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    for e in envoys {
        let enforcing = ENFORCING.contains(&e.config.as_str());
        for alg in ALGS {
            let mix = files
                .get(&(alg.to_string(), "mix".to_string()))
                .and_then(|p| fs::read_to_string(p).ok())
                .unwrap_or_default();
            let mix: Vec<&str> = mix.lines().collect();
            let cases = [
                ("valid", Some(first_line(alg, "hot")), 200),
                (
                    "expired",
                    mix.get(1).map(|s| s.to_string()),
                    if enforcing { 401 } else { 200 },
                ),
                (
                    "bad signature",
                    mix.get(3).map(|s| s.to_string()),
                    if enforcing { 401 } else { 200 },
                ),
            ];
            for (what, token, want) in cases {
                let got = e.probe(token.as_deref())?;
                if got != want {
                    problems.push(format!(
                        "{} {alg} {what} token: HTTP {got}, expected {want}",
                        e.config
                    ));
                }
            }
        }
        let want = if enforcing { 401 } else { 200 };
        let got = e.probe(None)?;
        if got != want {
            problems.push(format!(
                "{} no token: HTTP {got}, expected {want}",
                e.config
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "smoke test failed, the configurations are not equivalent:\n  {}",
            problems.join("\n  ")
        ))
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
    let out_dir = opts
        .out
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let work = out_dir.join("run");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;

    let per_round = ALGS.len() * WORKLOADS.len() * CONFIGS.len();
    eprintln!(
        "[bench] {} rounds x {per_round} cells x {}s (+{}s warmup per config and alg), -c{}; ~{}s of wrk",
        opts.rounds,
        opts.duration_s,
        opts.warmup_s,
        opts.connections,
        opts.rounds as u64 * per_round as u64 * opts.duration_s
            + opts.warmup_s * (CONFIGS.len() * ALGS.len()) as u64
    );

    // Start the Envoys first (they load in the background while tokens are minted).
    let mut envoys = Vec::new();
    for c in CONFIGS {
        envoys.push(BenchEnvoy::spawn(c, opts, &work)?);
    }
    let t = Instant::now();
    let (files, minted) = mint_all(&out_dir.join("tokens"), opts.tokens)?;
    let mint_s = t.elapsed().as_secs_f64();
    eprintln!(
        "[bench] {} {} tokens in {mint_s:.1}s",
        if minted {
            "minted"
        } else {
            "reused (target/bench/tokens, < 12 h old)"
        },
        ALGS.len() * (1 + 2 * opts.tokens)
    );
    for e in &mut envoys {
        e.wait_ready(Duration::from_secs(30))?;
    }
    eprintln!(
        "[bench] envoys ready: {}",
        envoys
            .iter()
            .map(|e| format!("{}=:{}", e.config, e.port))
            .collect::<Vec<_>>()
            .join(" ")
    );
    smoke(&envoys, &files)?;

    if opts.warmup_s > 0 {
        for e in &envoys {
            for alg in ALGS {
                let f = &files[&(alg.to_string(), "cold".to_string())];
                run_wrk(
                    e.port,
                    f,
                    opts.warmup_s.div_ceil(2).max(1),
                    opts.connections,
                )?;
            }
        }
    }

    let mut runs: BTreeMap<(String, String, String), Vec<WrkResult>> = BTreeMap::new();
    let bench_started = Instant::now();
    for round in 0..opts.rounds {
        for alg in ALGS {
            for w in WORKLOADS {
                let f = &files[&(alg.to_string(), w.to_string())];
                // Rotate the configuration order each round so no configuration always runs first.
                for k in 0..envoys.len() {
                    let e = &envoys[(k + round) % envoys.len()];
                    let r = run_wrk(e.port, f, opts.duration_s, opts.connections)
                        .map_err(|err| format!("{alg} {w} {}: {err}", e.config))?;
                    eprintln!(
                        "[bench] round {}/{} {alg} {w:<4} {:<12} {:>9.0} req/s  p50 {:>8}  p99 {:>8}  non-2xx {:>5.1}%",
                        round + 1,
                        opts.rounds,
                        e.config,
                        r.rps,
                        fmt_us(r.p50_us),
                        fmt_us(r.p99_us),
                        r.non_2xx_share() * 100.0
                    );
                    runs.entry((alg.to_string(), w.to_string(), e.config.clone()))
                        .or_default()
                        .push(r);
                }
            }
        }
    }
    let bench_s = bench_started.elapsed().as_secs_f64();

    for e in &mut envoys {
        if let Ok(Some(status)) = e.child.try_wait() {
            return Err(format!(
                "envoy for {} exited ({status}) during the run; log tail:\n{}",
                e.config,
                e.log_tail()
            ));
        }
    }
    let memory: serde_json::Map<String, Value> = envoys
        .iter()
        .map(|e| (e.config.clone(), memory_of(e)))
        .collect();
    let envoy_warnings: serde_json::Map<String, Value> = envoys
        .iter()
        .map(|e| {
            let log = fs::read_to_string(&e.log).unwrap_or_default();
            (e.config.clone(), json!(log.lines().count()))
        })
        .collect();
    drop(envoys);

    let cells: Cells = runs.iter().map(|(k, v)| (k.clone(), Cell::of(v))).collect();
    let errors = check_cells(&cells);

    let table = markdown(&cells);
    println!("{table}");

    let mut results = serde_json::Map::new();
    for ((alg, w, c), cell) in &cells {
        let entry = results
            .entry(format!("{alg}/{w}"))
            .or_insert_with(|| json!({}));
        entry[c.as_str()] = cell.json();
    }
    let report = json!({
        "machine": machine_info(opts),
        "params": {
            "rounds": opts.rounds,
            "duration_s": opts.duration_s,
            "connections": opts.connections,
            "wrk_threads": 1,
            "envoy_concurrency": 1,
            "tokens_per_workload": opts.tokens,
            "warmup_s": opts.warmup_s,
            "configs": CONFIGS,
            "algs": ALGS,
            "workloads": WORKLOADS,
            "jwt_guard_config": plugin_config("enforce"),
        },
        "timing": {
            "mint_s": round2(mint_s),
            "measure_s": round2(bench_s),
            "total_s": round2(started.elapsed().as_secs_f64()),
        },
        "results": results,
        "memory": memory,
        "envoy_log_lines": envoy_warnings,
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
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.requests, 30000);
        assert_eq!(r.non_2xx, 15000);
        assert_eq!(r.socket_errors, 3);
        assert!((r.rps - 29950.12).abs() < 1e-6);
        assert!((r.p50_us - 480.0).abs() < 1e-6);
        assert!((r.p99_us - 1500.0).abs() < 1e-6);
        assert_eq!(parse_duration_us("2.00s"), Some(2e6));
    }

    #[test]
    fn corrupted_signature_differs_and_stays_well_formed() {
        let t = tokens::mint_std("ES256", "x");
        let c = corrupt_signature(&t);
        assert_ne!(t, c);
        assert_eq!(c.split('.').count(), 3);
        assert_eq!(t.rsplit_once('.').unwrap().0, c.rsplit_once('.').unwrap().0);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
    }
}
