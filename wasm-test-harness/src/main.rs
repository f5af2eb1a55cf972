//! `wasm-test-harness demo` - run jwt-guard in a real Envoy with a mock IdP and an echo upstream.
//! `wasm-test-harness mint` - print a token signed with the fixture keys.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use wasm_test_harness::args::Args;
use wasm_test_harness::envoy::{self, EdgeSettings, Envoy, EnvoyOptions};
use wasm_test_harness::{tokens, EchoUpstream, MockIdp};

const USAGE: &str = "\
usage:
  wasm-test-harness demo [--wasm PATH] [--config PATH] [--template PATH] [--port N] [--admin-port N] [--idp-port N] [--concurrency N]
      Start the mock IdP, an echo upstream and Envoy with jwt-guard; print a curl command; run until Ctrl-C.
      Defaults: --wasm $WASM or target/wasm32-wasip1/release/jwt_guard.wasm, --config envoy/demo.json (the README's worked example),
                --template envoy/envoy.yaml (envoy/envoy-lds.yaml: listener from a file), --port 10000, --admin-port 9901, --idp-port 10001, --concurrency 2.
      Env equivalents: WASM, CONFIG, TEMPLATE, PORT, ADMIN_PORT, CONCURRENCY. Envoy: ENVOY_BIN or .envoy/.
  wasm-test-harness check --wasm PATH --config PATH [--scenarios PATH] [--template PATH]
      Run the module with that plugin config in a real Envoy (ENVOY_CONTAINER=podman|docker for a container)
      next to the mock IdP and echo upstream; play the scenarios (see examples/ci/scenarios.json); exit 1 if
      Envoy refuses the config or any scenario fails.
  wasm-test-harness mint [--alg ES256] [--sub alice] [--scope 'read:items admin'] [--claim.tenant acme] [--exp_in 3600] ...
      Print a token signed with the fixture keys; the options are /mint's parameters (`mint --help` lists them).
  wasm-test-harness bench [--rounds N] [--duration SECS] [--connections N] [--tokens N] [--warmup SECS] [--out PATH]
      Throughput/latency of jwt-guard vs Envoy's jwt_authn and a wasm floor with wrk (`make bench`, bench/README.md).
";

/// The options each subcommand takes (`mint` takes `tokens::MINT_PARAMS`, checked by it).
const DEMO_OPTIONS: &[&str] = &[
    "wasm",
    "config",
    "template",
    "port",
    "admin-port",
    "idp-port",
    "concurrency",
];
const CHECK_OPTIONS: &[&str] = &["wasm", "config", "scenarios", "template"];

/// Argument mistakes print the usage; a failure of the run itself (Envoy refusing the config, a
/// port in use) prints only its own message.
fn usage_error(e: String) -> ! {
    if !e.is_empty() {
        eprintln!("error: {e}\n");
    }
    eprint!("{USAGE}");
    std::process::exit(if e.is_empty() { 0 } else { 2 });
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let rest = argv.get(1..).unwrap_or_default();
    let args = |known: Option<&[&str]>| {
        Args::parse(rest)
            .and_then(|a| match known {
                Some(k) => a.check_known(k).map(|()| a),
                None => Ok(a),
            })
            .unwrap_or_else(|e| usage_error(e))
    };
    let result = match argv.first().map(String::as_str) {
        Some("demo") => demo(&args(Some(DEMO_OPTIONS))),
        Some("check") => check(&args(Some(CHECK_OPTIONS))),
        Some("mint") => match Args::parse(rest) {
            Ok(a) => mint(&a),
            Err(e) if e.is_empty() => {
                print!(
                    "usage: wasm-test-harness mint [--NAME VALUE]...\n{}",
                    tokens::mint_help()
                );
                return;
            }
            Err(e) => Err(e),
        },
        Some("bench") => wasm_test_harness::bench::main(rest),
        Some("-h" | "--help" | "help") | None => usage_error(String::new()),
        Some(other) => usage_error(format!("unknown subcommand {other:?}")),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// An Envoy that refused to start: its `[error]` and `[critical]` lines (the config error names the
/// field), not the whole log tail of `info` lines.
fn startup_errors(e: &str) -> String {
    let Some((head, tail)) = e.split_once("Log tail:") else {
        return e.to_owned();
    };
    let lines: Vec<&str> = tail
        .lines()
        .filter(|l| l.contains("][error][") || l.contains("][critical]["))
        .collect();
    if lines.is_empty() {
        return e.to_owned();
    }
    format!("{}\n{}", head.trim_end(), lines.join("\n"))
}

fn resolve(p: String) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() || p.exists() {
        p
    } else {
        // Relative defaults/arguments are taken from the repo root when not found from the cwd.
        envoy::repo_root().join(p)
    }
}

fn demo(args: &Args) -> Result<(), String> {
    let wasm = args
        .get("wasm", Some("WASM"))
        .map(resolve)
        .unwrap_or_else(envoy::wasm_path);
    let config = resolve(
        args.get("config", Some("CONFIG"))
            .unwrap_or_else(|| "envoy/demo.json".into()),
    );
    let template = resolve(
        args.get("template", Some("TEMPLATE"))
            .unwrap_or_else(|| "envoy/envoy.yaml".into()),
    );
    let port: u16 = args.num("port", Some("PORT"), 10000)?;
    let admin_port: u16 = args.num("admin-port", Some("ADMIN_PORT"), 9901)?;
    let idp_port: u16 = args.num("idp-port", Some("IDP_PORT"), 10001)?;
    let concurrency: usize = args.num("concurrency", Some("CONCURRENCY"), 2)?;

    if !wasm.is_file() {
        return Err(format!(
            "wasm not found at {} - build it with `cargo build --release --target wasm32-wasip1 -p jwt-guard` or pass --wasm",
            wasm.display()
        ));
    }
    let plugin_config = std::fs::read_to_string(&config)
        .map_err(|e| format!("cannot read plugin config {}: {e}", config.display()))?;

    // Install the handler before starting anything so an early Ctrl-C still tears down cleanly.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot install signal handler: {e}"))?;

    let idp = MockIdp::start_on(idp_port).map_err(|e| {
        format!("cannot listen on 127.0.0.1:{idp_port} for the mock IdP ({e}); pass --idp-port")
    })?;
    let upstream = EchoUpstream::start();
    let mut envoy = Envoy::start_with_ports(
        EnvoyOptions {
            template,
            wasm,
            plugin_config,
            idp_port: idp.port(),
            upstream_port: upstream.port(),
            concurrency,
            edge_settings: EdgeSettings::Shipped,
            mounts: Vec::new(),
        },
        port,
        admin_port,
    )
    .map_err(|e| startup_errors(&e))?;

    let token = tokens::mint("ES256", Some("ec-1"), &tokens::std_claims("alice"));
    let idp_url = idp.base_url();
    println!("curl -sS -H 'Authorization: Bearer {token}' http://127.0.0.1:{port}/hello");
    println!(
        "# That token (ES256, sub=alice) is valid for 1 hour. Mint others from the mock IdP, e.g.:"
    );
    println!("#   curl '{idp_url}/mint?sub=bob&alg=RS256&scope=read:items&claim.tenant=acme'");
    println!("#   (every parameter: curl '{idp_url}/mint?help=1')");
    println!("# A request without a token gets 401: curl -i http://127.0.0.1:{port}/hello");
    println!("# /healthz is public: curl -i http://127.0.0.1:{port}/healthz");
    println!(
        "# Config: {} | Envoy admin: http://127.0.0.1:{} | log: {} | JWKS: {idp_url}/jwks.json",
        config.display(),
        envoy.admin_port(),
        envoy.log_path().display(),
    );
    if let Some(lds) = envoy.lds_path() {
        let dir = lds.parent().unwrap_or(lds).display();
        let file = lds.display();
        println!("# The listener (with the plugin config) comes from {file}.");
        println!("# Flip the `reports` rule from shadow to enforce, live (Envoy watches renames into {dir}):");
        println!(
            "#   sed 's/\"mode\": \"shadow\"/\"mode\": \"enforce\"/' {file} > {dir}/next.yaml && mv {dir}/next.yaml {file}"
        );
        println!(
            "#   curl -s http://127.0.0.1:{}/stats | grep listener_manager.lds.update_success",
            envoy.admin_port()
        );
    }
    println!("# Press Ctrl-C to stop.");

    while !stop.load(Ordering::SeqCst) {
        if !envoy.is_running() {
            eprintln!(
                "Envoy exited unexpectedly. Log tail:\n{}",
                envoy.log_tail(40)
            );
            drop(envoy);
            return Err("envoy exited".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("stopping...");
    drop(envoy);
    drop(upstream);
    drop(idp);
    Ok(())
}

fn mint(args: &Args) -> Result<(), String> {
    let (alg, kid, claims) = tokens::mint_request(args.pairs())?;
    println!("{}", tokens::mint(&alg, kid.as_deref(), &claims));
    Ok(())
}

fn check(args: &Args) -> Result<(), String> {
    let wasm = args
        .get("wasm", Some("WASM"))
        .map(resolve)
        .unwrap_or_else(envoy::wasm_path);
    let config = resolve(
        args.get("config", Some("CONFIG"))
            .ok_or("--config is required")?,
    );
    let template = resolve(
        args.get("template", Some("TEMPLATE"))
            .unwrap_or_else(|| "envoy/envoy.yaml".into()),
    );
    let plugin_config = std::fs::read_to_string(&config)
        .map_err(|e| format!("cannot read plugin config {}: {e}", config.display()))?;
    let scenarios = match args.get("scenarios", Some("SCENARIOS")) {
        Some(p) => {
            let p = resolve(p);
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => json!({"scenarios": []}),
    };
    let opts = EnvoyOptions {
        template,
        wasm,
        plugin_config,
        ..EnvoyOptions::default()
    };
    let outcomes = match wasm_test_harness::check::run(opts, &scenarios) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("FAIL  Envoy did not accept the module and config:\n{e}");
            std::process::exit(1);
        }
    };
    println!("ok    Envoy accepted the module and config");
    let mut failed = 0;
    for o in &outcomes {
        println!(
            "{}  {}: {}",
            if o.passed { "ok  " } else { "FAIL" },
            o.name,
            o.detail
        );
        failed += usize::from(!o.passed);
    }
    println!("{} scenarios, {failed} failed", outcomes.len());
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
