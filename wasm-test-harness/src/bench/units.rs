//! The bench's units: each configuration's Envoy(s), started through the harness's Envoy runner
//! ([`Envoy::spawn`] on the configuration's bootstrap, `--concurrency 1`, on ephemeral ports read back
//! from Envoy), probed for equivalence before measuring, and their CPU time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::cpu::CpuSample;
use super::tokens::{self, TokenFiles};
use super::{measured, proofs, DPOP_ALG, DPOP_PATH, EXT_AUTHZ_CENTRAL};
use super::{render_bootstrap, render_bootstrap_with, BenchOptions, CONFIGS, ENFORCING};
use crate::client::try_http_request;
use crate::envoy::{envoy_bin, Envoy, Launch, Runner};

/// How long each Envoy may take to get ready (counted from when the bench starts waiting for it).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// What wrk drives for one configuration: one Envoy, or for `ext_authz` the front (first) and the central
/// Envoy it asks. CPU is the sum over all of them.
pub struct Unit {
    pub config: String,
    pub envoys: Vec<Envoy>,
}

impl Unit {
    pub fn port(&self) -> u16 {
        self.envoys[0].listen_port()
    }

    pub fn cpu(&self) -> CpuSample {
        self.envoys
            .iter()
            .map(|e| CpuSample::of(e.pid()))
            .reduce(CpuSample::plus)
            .unwrap_or_default()
    }

    /// Status of one request with `Authorization: Bearer <token>` (None: no header).
    pub fn probe(&self, token: Option<&str>) -> Result<u16, String> {
        let headers: Vec<(&str, Vec<u8>)> = token
            .map(|t| vec![("authorization", format!("Bearer {t}").into_bytes())])
            .unwrap_or_default();
        self.probe_with("/bench", &headers)
    }

    /// Status of one GET of `path` with these headers.
    pub fn probe_with(&self, path: &str, headers: &[(&str, Vec<u8>)]) -> Result<u16, String> {
        try_http_request(self.port(), "GET", path, headers, &[]).map(|r| r.status)
    }

    /// An error if any of its Envoys has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        for e in &mut self.envoys {
            if let Some(code) = e.exited() {
                return Err(format!(
                    "envoy {} exited (code {code}) during the run; log tail:\n{}",
                    e.name(),
                    e.log_tail(30)
                ));
            }
        }
        Ok(())
    }
}

/// Start the Envoy of bench configuration `name` on `yaml` (files `dir/envoy-<name>.yaml`, `.log`), one
/// worker, log level `warning`. Returns once the process runs; see [`Envoy::wait_ready`].
fn spawn(
    runner: &Runner,
    name: &str,
    yaml: String,
    dir: &Path,
    opts: &BenchOptions,
) -> Result<Envoy, String> {
    let launch = Launch {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        config: yaml,
        listener: "bench".to_string(),
        wasm: vec![opts.wasm.clone(), opts.floor_wasm.clone()],
        concurrency: 1,
        log_level: "warning".to_string(),
    };
    Envoy::spawn(runner, &launch)
}

/// `ours-wasm` before the filter knows `signature_backend`: the Envoy exits at startup because jwt-guard
/// refuses the unknown field. Then the column is left out (with a warning and a note in bench.json) instead
/// of failing the run; any other startup failure fails it.
fn refuses_signature_backend(e: &Envoy) -> bool {
    e.name() == "ours-wasm" && e.logs().contains("signature_backend")
}

/// Ready units, configurations left out (-> why), and what ran meanwhile.
pub type Started<T> = (Vec<Unit>, BTreeMap<String, String>, T);

/// Start every configuration's Envoy(s) on ephemeral ports (ext_authz: the central first, then the front
/// pointed at its bound port). `meanwhile` runs after the first spawns (token minting overlaps startup).
/// Returns the ready units and the configurations left out (with why).
///
/// Always the local binary, even with `ENVOY_CONTAINER` set: the CPU per request is read from the Envoy
/// process's /proc entries, and in container mode the pid would be the CLI client's.
pub fn start_units<T>(
    opts: &BenchOptions,
    dir: &Path,
    meanwhile: impl FnOnce() -> Result<T, String>,
) -> Result<Started<T>, String> {
    let runner = Runner::Local(envoy_bin()?);
    let mut pending: Vec<(String, Envoy)> = Vec::new();
    for c in CONFIGS {
        let name = if *c == "ext_authz" {
            EXT_AUTHZ_CENTRAL
        } else {
            c
        };
        let yaml = render_bootstrap(name, opts, 0, 0)?;
        pending.push((c.to_string(), spawn(&runner, name, yaml, dir, opts)?));
    }
    let extra = meanwhile()?;
    let mut units = Vec::new();
    let mut skipped = BTreeMap::new();
    for (config, mut e) in pending {
        if let Err(err) = e.wait_ready(STARTUP_TIMEOUT) {
            if refuses_signature_backend(&e) {
                let why = "jwt-guard refused \"signature_backend\" (this build of the filter predates the option)";
                eprintln!(
                    "[bench] WARNING: {config} left out: {why}; log: {}",
                    e.log_path().display()
                );
                skipped.insert(config, why.to_string());
                continue;
            }
            return Err(err);
        }
        let mut envoys = vec![e];
        if config == "ext_authz" {
            let central_port = envoys[0].listen_port();
            let yaml = render_bootstrap_with("ext_authz", opts, 0, 0, central_port)?;
            let mut front = spawn(&runner, "ext_authz", yaml, dir, opts)?;
            front.wait_ready(STARTUP_TIMEOUT)?;
            envoys.insert(0, front);
        }
        units.push(Unit { config, envoys });
    }
    Ok((units, skipped, extra))
}

/// Request headers of a probe.
type Headers<'a> = Vec<(&'a str, Vec<u8>)>;

/// Probe each configuration before measuring: valid token -> 200 everywhere; expired / bad signature / no
/// token -> 401 where enforcing, 200 elsewhere. With `dpop`, each configuration that runs it also: the
/// bound token with a fresh proof -> 200 on [`DPOP_PATH`]; that proof again (a replay), the token without a
/// proof (what bench/dpop.lua sends once its proofs are used up), an unbound token there, and the bound
/// token as `Bearer` on `/bench` -> 401.
pub fn smoke(units: &[Unit], files: &TokenFiles, algs: &[&str], dpop: bool) -> Result<(), String> {
    let mut problems = Vec::new();
    if dpop {
        let token = tokens::token_at(files, DPOP_ALG, "dpop", 0);
        let unbound = tokens::token_at(files, DPOP_ALG, "hot", 0);
        for u in units.iter().filter(|u| measured(&u.config, "dpop")) {
            let proof = proofs::mint_proofs(&token, 1, crate::tokens::now()).remove(0);
            let auth =
                |scheme: &str, t: &str| ("authorization", format!("{scheme} {t}").into_bytes());
            let with_proof = vec![auth("DPoP", &token), ("dpop", proof.into_bytes())];
            let cases: [(&str, &str, Headers, u16); 5] = [
                ("fresh proof", DPOP_PATH, with_proof.clone(), 200),
                ("replayed proof", DPOP_PATH, with_proof, 401),
                ("no proof", DPOP_PATH, vec![auth("DPoP", &token)], 401),
                (
                    "unbound token",
                    DPOP_PATH,
                    vec![auth("Bearer", &unbound)],
                    401,
                ),
                (
                    "bound token as Bearer",
                    "/bench",
                    vec![auth("Bearer", &token)],
                    401,
                ),
            ];
            for (what, path, headers, want) in cases {
                let got = u.probe_with(path, &headers)?;
                if got != want {
                    problems.push(format!(
                        "{} dpop {what} ({path}): HTTP {got}, expected {want}",
                        u.config
                    ));
                }
            }
        }
    }
    for u in units {
        let enforcing = ENFORCING.contains(&u.config.as_str());
        let reject = if enforcing { 401 } else { 200 };
        for alg in algs {
            let cases = [
                ("valid", tokens::token_at(files, alg, "hot", 0), 200),
                ("expired", tokens::token_at(files, alg, "mix", 1), reject),
                (
                    "bad signature",
                    tokens::token_at(files, alg, "mix", 3),
                    reject,
                ),
            ];
            for (what, token, want) in cases {
                if token.is_empty() {
                    problems.push(format!("{alg}: no {what} token in the token files"));
                    continue;
                }
                let got = u.probe(Some(&token))?;
                if got != want {
                    problems.push(format!(
                        "{} {alg} {what} token: HTTP {got}, expected {want}",
                        u.config
                    ));
                }
            }
        }
        let got = u.probe(None)?;
        if got != reject {
            problems.push(format!(
                "{} no token: HTTP {got}, expected {reject}",
                u.config
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
