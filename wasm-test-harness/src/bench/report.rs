//! Cells (medians over rounds), ratios within a run, the equivalence checks and the Markdown tables
//! (the machine and memory facts of bench.json are in `machine.rs`).

use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::wrk::WrkResult;
use super::{measured, rows, CONFIGS, DPOP_ALG, ENFORCING};

pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// (alg, workload, config) -> one wrk result per round, in round order.
pub type Runs = BTreeMap<(String, String, String), Vec<WrkResult>>;

/// Per-cell medians.
#[derive(Clone, Debug)]
pub struct Cell {
    pub rps: f64,
    pub cpu_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub non_2xx_share: f64,
    pub runs: Vec<WrkResult>,
}

impl Cell {
    pub fn of(runs: &[WrkResult]) -> Cell {
        let col = |f: fn(&WrkResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let requests: u64 = runs.iter().map(|r| r.requests).sum();
        let non_2xx: u64 = runs.iter().map(|r| r.non_2xx).sum();
        Cell {
            rps: col(|r| r.rps),
            cpu_us: col(|r| r.cpu_us_per_req()),
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

    pub fn json(&self) -> Value {
        json!({
            "rps": round2(self.rps),
            "cpu_us_per_req": num(self.cpu_us, 2),
            "p50_us": round2(self.p50_us),
            "p99_us": round2(self.p99_us),
            "non_2xx_share": round4(self.non_2xx_share),
            "rounds": self.runs.iter().map(|r| json!({
                "rps": r.rps, "p50_us": r.p50_us, "p99_us": r.p99_us, "requests": r.requests,
                "non_2xx": r.non_2xx, "non_2xx_share": round4(r.non_2xx_share()),
                "socket_errors": r.socket_errors,
                "cpu_us_per_req": num(r.cpu_us_per_req(), 3),
                "cpu_ms": num(r.cpu_ns / 1e6, 3),
                "cpu_source": r.cpu_source,
                "cpu_ms_utime_stime": r.cpu_ticks_ns.map(|n| round2(n / 1e6)),
                "dpop_proofs": r.proofs.map(|n| json!({
                    "minted": n, "mint_s": round2(r.proofs_mint_s), "handed_out": r.proofs_used,
                    "requests_without_proof": r.proofs_short,
                })),
            })).collect::<Vec<_>>(),
        })
    }
}

pub type Cells = BTreeMap<(String, String, String), Cell>;

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// A finite number rounded to `digits`, else null.
fn num(v: f64, digits: i32) -> Value {
    if v.is_finite() {
        let m = 10f64.powi(digits);
        json!((v * m).round() / m)
    } else {
        Value::Null
    }
}

pub fn fmt_us(us: f64) -> String {
    if !us.is_finite() {
        "-".into()
    } else if us >= 10_000.0 {
        format!("{:.1}ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.0}us")
    }
}

/// CPU µs/req with 3 significant-ish digits.
pub fn fmt_cpu(us: f64) -> String {
    if !us.is_finite() {
        "-".into()
    } else if us >= 100.0 {
        format!("{us:.0}")
    } else if us >= 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.2}")
    }
}

fn fmt_ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "-".into()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Ratios and estimates, round by round

/// Ratio columns: (label, a, b) = a ÷ b.
pub const RATIOS: &[(&str, &str, &str)] = &[
    ("ours/native", "ours", "native"),
    ("ours/native-cache", "ours", "native-cache"),
    ("ours/ext_authz", "ours", "ext_authz"),
    ("ours/wasm-floor", "ours", "wasm-floor"),
    ("ours-wasm/native", "ours-wasm", "native"),
    ("ours-wasm/ours", "ours-wasm", "ours"),
    ("ours-shadow/ours", "ours-shadow", "ours"),
    ("ours-noclear/ours", "ours-noclear", "ours"),
];

/// Median over rounds of f(a, b) on the same round's results of two cells (each round's cells ran within
/// seconds of each other, so a slow phase of the machine hits both).
fn per_round(
    runs: &Runs,
    a: (&str, &str, &str),
    b: (&str, &str, &str),
    f: impl Fn(&WrkResult, &WrkResult) -> f64,
) -> f64 {
    let key = |k: (&str, &str, &str)| (k.0.to_string(), k.1.to_string(), k.2.to_string());
    match (runs.get(&key(a)), runs.get(&key(b))) {
        (Some(ra), Some(rb)) => median(
            &ra.iter()
                .zip(rb.iter())
                .map(|(x, y)| f(x, y))
                .collect::<Vec<_>>(),
        ),
        _ => f64::NAN,
    }
}

/// (req/s a÷b, CPU µs/req a÷b), medians of per-round ratios.
pub fn ratio(runs: &Runs, alg: &str, w: &str, a: &str, b: &str) -> (f64, f64) {
    (
        per_round(runs, (alg, w, a), (alg, w, b), |x, y| x.rps / y.rps),
        per_round(runs, (alg, w, a), (alg, w, b), |x, y| {
            x.cpu_us_per_req() / y.cpu_us_per_req()
        }),
    )
}

/// Signature-verification cost estimates per request: (label, config with verification on `cold`, the
/// configuration whose `hot` cell verifies nothing). Native jwt_authn without a cache verifies on `hot` too,
/// so its baseline is native-cache on `hot` (every request a cache hit).
pub const VERIFY_ESTIMATES: &[(&str, &str, &str)] = &[
    ("ours (host crypto)", "ours", "ours"),
    ("ours-wasm (in-wasm crypto)", "ours-wasm", "ours"),
    ("native", "native", "native-cache"),
];

/// CPU µs/req on `cold` minus CPU µs/req on `hot` (of `base`), median over rounds.
pub fn verify_estimate(runs: &Runs, alg: &str, cfg: &str, base: &str) -> f64 {
    per_round(runs, (alg, "cold", cfg), (alg, "hot", base), |x, y| {
        x.cpu_us_per_req() - y.cpu_us_per_req()
    })
}

/// The configurations measured on `dpop` (ours, ours-wasm), in report order.
fn dpop_configs() -> impl Iterator<Item = &'static str> {
    CONFIGS.iter().copied().filter(|c| measured(c, "dpop"))
}

/// `config`'s `dpop` against its `cold` and `hot` under [`DPOP_ALG`], round by round: (req/s dpop÷cold,
/// CPU µs/req dpop÷cold, CPU µs/req dpop − hot: the estimated cost of the proof over a cached token).
pub fn dpop_ratio(runs: &Runs, config: &str) -> (f64, f64, f64) {
    let (r, c) = (
        per_round(
            runs,
            (DPOP_ALG, "dpop", config),
            (DPOP_ALG, "cold", config),
            |x, y| x.rps / y.rps,
        ),
        per_round(
            runs,
            (DPOP_ALG, "dpop", config),
            (DPOP_ALG, "cold", config),
            |x, y| x.cpu_us_per_req() / y.cpu_us_per_req(),
        ),
    );
    let proof = per_round(
        runs,
        (DPOP_ALG, "dpop", config),
        (DPOP_ALG, "hot", config),
        |x, y| x.cpu_us_per_req() - y.cpu_us_per_req(),
    );
    (r, c, proof)
}

// ---------------------------------------------------------------------------------------------------------
// Markdown

pub fn markdown(cells: &Cells, runs: &Runs, algs: &[&str], configs: &[String]) -> String {
    let get = |alg: &str, w: &str, c: &str| cells.get(&(alg.into(), w.into(), c.into()));
    let header = |out: &mut String, extra: &[&str]| {
        out.push_str("| alg | workload |");
        for c in configs {
            out.push_str(&format!(" {c} |"));
        }
        for e in extra {
            out.push_str(&format!(" {e} |"));
        }
        out.push_str("\n|---|---|");
        out.push_str(&"---:|".repeat(configs.len() + extra.len()));
        out.push('\n');
    };
    let mut out = String::new();
    out.push_str("### Throughput and CPU (req/s · CPU µs per request, medians over rounds; · = not measured)\n\n");
    header(&mut out, &[]);
    for (alg, w) in rows(algs) {
        out.push_str(&format!("| {alg} | {w} |"));
        for c in configs {
            match get(alg, w, c) {
                Some(cell) => {
                    out.push_str(&format!(" {:.0} · {} |", cell.rps, fmt_cpu(cell.cpu_us)))
                }
                None => out.push_str(" · |"),
            }
        }
        out.push('\n');
    }
    let present = |c: &str| configs.iter().any(|x| x == c);
    let ratio_cols: Vec<&(&str, &str, &str)> = RATIOS
        .iter()
        .filter(|(_, a, b)| present(a) && present(b))
        .collect();
    out.push_str(
        "\n### Ratios (a÷b, median of per-round ratios: req/s — > 1 = a faster / CPU µs per request — < 1 = a cheaper)\n\n| alg | workload |",
    );
    for (label, _, _) in &ratio_cols {
        out.push_str(&format!(" {label} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(ratio_cols.len()));
    out.push('\n');
    for (alg, w) in rows(algs) {
        out.push_str(&format!("| {alg} | {w} |"));
        for (_, a, b) in &ratio_cols {
            let (r, c) = ratio(runs, alg, w, a, b);
            if r.is_finite() || c.is_finite() {
                out.push_str(&format!(" {} / {} |", fmt_ratio(r), fmt_ratio(c)));
            } else {
                out.push_str(" · |");
            }
        }
        out.push('\n');
    }
    let estimates: Vec<&(&str, &str, &str)> = VERIFY_ESTIMATES
        .iter()
        .filter(|(_, a, b)| present(a) && present(b))
        .collect();
    out.push_str("\n### Signature verification, estimated CPU µs per request (CPU µs/req on `cold` − on `hot`; native: − native-cache on `hot`)\n\n| alg |");
    for (label, _, _) in &estimates {
        out.push_str(&format!(" {label} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(estimates.len()));
    out.push('\n');
    for alg in algs {
        out.push_str(&format!("| {alg} |"));
        for (_, a, b) in &estimates {
            out.push_str(&format!(" {} |", fmt_cpu(verify_estimate(runs, alg, a, b))));
        }
        out.push('\n');
    }
    let dpop_lines: Vec<String> = dpop_configs()
        .filter(|c| present(c) && get(DPOP_ALG, "dpop", c).is_some())
        .map(|c| {
            let (r, cpu, proof) = dpop_ratio(runs, c);
            let cell = |w: &str| {
                get(DPOP_ALG, w, c)
                    .map(|x| format!("{w} {:.0} req/s · {} µs", x.rps, fmt_cpu(x.cpu_us)))
                    .unwrap_or_else(|| format!("{w} not measured"))
            };
            let proof = if proof.is_finite() {
                format!("; proof ≈ dpop − hot = {} µs", fmt_cpu(proof))
            } else {
                String::new()
            };
            format!(
                "- {c} dpop ÷ {c} cold: req/s {} · CPU µs per request {} ({}, {}{proof})\n",
                fmt_ratio(r),
                fmt_ratio(cpu),
                cell("dpop"),
                cell("cold"),
            )
        })
        .collect();
    if !dpop_lines.is_empty() {
        out.push_str(&format!(
            "\n### DPoP ({DPOP_ALG} `dpop` ÷ {DPOP_ALG} `cold` of the same configuration, median of per-round ratios)\n\n\
             `dpop`: one DPoP-bound {DPOP_ALG} token (a verified-token cache hit) and a fresh {DPOP_ALG} proof per request \
             (one signature check, one replay record); `cold`: a new {DPOP_ALG} token per request (one signature check).\n\n"
        ));
        for l in &dpop_lines {
            out.push_str(l);
        }
    }
    out.push_str("\n### Latency (p50 / p99 per configuration, median over rounds)\n\n");
    header(&mut out, &["p99 added (ours − none)"]);
    for (alg, w) in rows(algs) {
        out.push_str(&format!("| {alg} | {w} |"));
        for c in configs {
            match get(alg, w, c) {
                Some(cell) => out.push_str(&format!(
                    " {} / {} |",
                    fmt_us(cell.p50_us),
                    fmt_us(cell.p99_us)
                )),
                None => out.push_str(" · |"),
            }
        }
        match (get(alg, w, "ours"), get(alg, w, "none")) {
            (Some(o), Some(n)) => {
                let d = o.p99_us - n.p99_us;
                let sign = if d < 0.0 { "−" } else { "+" };
                out.push_str(&format!(" {sign}{} |\n", fmt_us(d.abs())));
            }
            _ => out.push_str(" · |\n"),
        }
    }
    out.push_str("\n### Non-2xx share (all rounds)\n\n");
    header(&mut out, &[]);
    for (alg, w) in rows(algs) {
        out.push_str(&format!("| {alg} | {w} |"));
        for c in configs {
            match get(alg, w, c) {
                Some(cell) => out.push_str(&format!(" {:.1}% |", cell.non_2xx_share * 100.0)),
                None => out.push_str(" · |"),
            }
        }
        out.push('\n');
    }
    out
}

/// Ratios and estimates for bench.json.
pub fn summary_json(runs: &Runs, algs: &[&str], configs: &[String]) -> Value {
    let present = |c: &str| configs.iter().any(|x| x == c);
    let mut ratios = serde_json::Map::new();
    for (alg, w) in rows(algs) {
        let mut m = serde_json::Map::new();
        for (label, a, b) in RATIOS {
            if present(a) && present(b) {
                let (r, c) = ratio(runs, alg, w, a, b);
                if r.is_finite() || c.is_finite() {
                    m.insert(
                        label.to_string(),
                        json!({ "rps": num(r, 3), "cpu_us_per_req": num(c, 3) }),
                    );
                }
            }
        }
        ratios.insert(format!("{alg}/{w}"), Value::Object(m));
    }
    let mut est = serde_json::Map::new();
    for alg in algs {
        let mut m = serde_json::Map::new();
        for (_, a, b) in VERIFY_ESTIMATES {
            if present(a) && present(b) {
                m.insert(a.to_string(), num(verify_estimate(runs, alg, a, b), 2));
            }
        }
        est.insert(alg.to_string(), Value::Object(m));
    }
    let mut dpop = serde_json::Map::new();
    for c in dpop_configs().filter(|c| present(c)) {
        let (r, cpu, proof) = dpop_ratio(runs, c);
        if runs.contains_key(&(DPOP_ALG.to_string(), "dpop".to_string(), c.to_string())) {
            dpop.insert(
                c.to_string(),
                json!({
                    "dpop_over_cold": { "rps": num(r, 3), "cpu_us_per_req": num(cpu, 3) },
                    "proof_us_estimate": num(proof, 2),
                }),
            );
        }
    }
    json!({
        "dpop": dpop,
        "dpop_note": format!("{DPOP_ALG}/dpop ÷ {DPOP_ALG}/cold of the same configuration per round, median over rounds (null: cold not measured); proof_us_estimate = CPU µs/req on dpop − on hot of the same configuration: the proof's cost (signature, parsing, thumbprint, replay record) over a cached token"),
        "ratios": ratios,
        "ratios_note": "a÷b per round, median over rounds; rps > 1 = a faster, cpu_us_per_req < 1 = a cheaper",
        "verify_us_estimate": est,
        "verify_us_estimate_note": "CPU µs/req on cold − on hot of the same configuration (native: − native-cache on hot), median over rounds: an estimate of the signature-verification cost per request",
    })
}

// ---------------------------------------------------------------------------------------------------------
// Checks

/// Equivalence checks: valid-token workloads (`dpop` too: every proof fresh) must be all 2xx everywhere; on
/// `mix` the enforcing configurations must reject about half and the others none; no wrk socket errors; no
/// `dpop` run short of proofs. Returns the violations.
pub fn check_cells(cells: &Cells) -> Vec<String> {
    let mut errors = Vec::new();
    for ((alg, w, c), cell) in cells {
        let share = cell.non_2xx_share;
        let socket_errors: u64 = cell.runs.iter().map(|r| r.socket_errors).sum();
        if socket_errors > 0 {
            errors.push(format!("{alg} {w} {c}: {socket_errors} wrk socket errors"));
        }
        if cell.runs.iter().any(|r| r.requests == 0) {
            errors.push(format!("{alg} {w} {c}: a round completed no request"));
        }
        for r in cell.runs.iter().filter(|r| r.proofs.is_some()) {
            let minted = r.proofs.unwrap_or(0);
            if r.proofs_short > 0 || r.requests > minted {
                errors.push(format!(
                    "{alg} {w} {c}: ran out of DPoP proofs ({minted} minted, {} requests completed, {} sent without a proof): the proof estimate was too low",
                    r.requests, r.proofs_short
                ));
            }
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
