//! wrk runs (one at a time) and what they measured, with the configuration's CPU time over the run.

use std::path::Path;
use std::process::Command;

use super::units::Unit;
use crate::envoy::repo_root;

/// What one wrk run measured.
#[derive(Clone, Debug, Default)]
pub struct WrkResult {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: u64,
    /// CPU time of the configuration's Envoy(s) from right before to right after the wrk run, ns.
    pub cpu_ns: f64,
    /// Where `cpu_ns` came from: "schedstat" (per-thread ns) or "stat" (utime+stime ticks).
    pub cpu_source: &'static str,
    /// utime+stime over the same window, ns (a cross-check of `cpu_ns`; clock-tick resolution).
    pub cpu_ticks_ns: Option<f64>,
    /// `dpop` runs: the single-use proofs minted for this run (None for the other workloads).
    pub proofs: Option<u64>,
    /// `dpop` runs: proofs bench/dpop.lua handed out, and requests it had to send without one because
    /// every proof was used (those are refused: non-2xx, and the bench's checks fail on any).
    pub proofs_used: u64,
    pub proofs_short: u64,
    /// `dpop` runs: seconds the harness took to mint this run's proofs (before the run, not in it).
    pub proofs_mint_s: f64,
}

impl WrkResult {
    pub fn non_2xx_share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.non_2xx as f64 / self.requests as f64
        }
    }

    /// CPU µs per completed request (NaN if unknown).
    pub fn cpu_us_per_req(&self) -> f64 {
        if self.requests == 0 {
            f64::NAN
        } else {
            self.cpu_ns / 1000.0 / self.requests as f64
        }
    }
}

/// "123.45us" / "1.20ms" / "2.00s" / "1.00m" -> microseconds.
pub fn parse_duration_us(s: &str) -> Option<f64> {
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
        } else if let Some(v) = l.strip_prefix("dpop proofs: used ") {
            // bench/dpop.lua's done(): "dpop proofs: used N, requests without a proof M"
            let mut nums = v
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok());
            r.proofs_used = nums.next().unwrap_or(0);
            r.proofs_short = nums.next().unwrap_or(0);
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

/// What one wrk run sends: bench/tokens.lua round-robins `Bearer` tokens over a file (`hot`, `cold`,
/// `mix`); bench/dpop.lua sends each (token, proof) pair of a file once (`dpop`).
pub enum Load<'a> {
    Bearer(&'a Path),
    Dpop { file: &'a Path, proofs: u64 },
}

impl Load<'_> {
    fn script(&self) -> &'static str {
        match self {
            Load::Bearer(_) => "bench/tokens.lua",
            Load::Dpop { .. } => "bench/dpop.lua",
        }
    }

    fn path(&self) -> &'static str {
        match self {
            Load::Bearer(_) => "/bench",
            Load::Dpop { .. } => super::DPOP_PATH,
        }
    }

    fn env(&self) -> (&'static str, &Path) {
        match self {
            Load::Bearer(f) => ("BENCH_TOKENS", f),
            Load::Dpop { file, .. } => ("BENCH_PROOFS", file),
        }
    }
}

fn run_wrk(
    port: u16,
    load: &Load<'_>,
    duration_s: u64,
    connections: usize,
) -> Result<WrkResult, String> {
    let script = repo_root().join(load.script());
    let (var, file) = load.env();
    let out = Command::new("wrk")
        .args([
            "-t1".to_string(),
            format!("-c{connections}"),
            format!("-d{duration_s}s"),
            "--latency".to_string(),
            "-s".to_string(),
        ])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}{}", load.path()))
        .env(var, file)
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
    let mut r = parse_wrk(&stdout)?;
    if let Load::Dpop { proofs, .. } = load {
        if !stdout.contains("dpop proofs: used ") {
            return Err(format!("bench/dpop.lua printed no proof count:\n{stdout}"));
        }
        r.proofs = Some(*proofs);
    }
    Ok(r)
}

/// One wrk run against `unit`, with its Envoys' CPU time read right before and right after.
pub fn measure(
    unit: &Unit,
    load: &Load<'_>,
    duration_s: u64,
    connections: usize,
) -> Result<WrkResult, String> {
    let before = unit.cpu();
    let mut r = run_wrk(unit.port(), load, duration_s, connections)?;
    let after = unit.cpu();
    let (ns, source) = after.since(before);
    r.cpu_ns = ns;
    r.cpu_source = source;
    r.cpu_ticks_ns = after.ticks_ns_since(before);
    Ok(r)
}
