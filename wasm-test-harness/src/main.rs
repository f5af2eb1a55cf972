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
      Defaults: --wasm $WASM or target/wasm32-wasip1/release/jwt_guard.wasm, --config envoy/plugin-config.json,
                --template envoy/envoy.yaml, --port 10000, --admin-port 9901, --idp-port 10001, --concurrency 2.
      Env equivalents: WASM, CONFIG, TEMPLATE, PORT, ADMIN_PORT, CONCURRENCY. Envoy: ENVOY_BIN or .envoy/.
  wasm-test-harness check --wasm PATH --config PATH [--scenarios PATH] [--template PATH]
      Run the module with that plugin config in a real Envoy (ENVOY_CONTAINER=podman|docker for a container)
      next to the mock IdP and echo upstream; play the scenarios (see examples/ci/scenarios.json); exit 1 if
      Envoy refuses the config or any scenario fails.
  wasm-test-harness mint [--alg ES256] [--sub alice] [--aud demo-api] [--ttl 3600] [--iss URL] [--kid KID]
      Print a token signed with the fixture keys (RS256..RS512, PS256..PS512 with rsa-1, ES256 with ec-1, EdDSA with ed-1).
  wasm-test-harness bench [--rounds N] [--duration SECS] [--connections N] [--tokens N] [--warmup SECS] [--out PATH]
      Throughput/latency of jwt-guard vs Envoy's jwt_authn and a wasm floor with wrk (`make bench`, bench/README.md).
";

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first().map(String::as_str) {
        Some("demo") => Args::parse(&argv[1..]).and_then(|a| demo(&a)),
        Some("mint") => Args::parse(&argv[1..]).and_then(|a| mint(&a)),
        Some("check") => Args::parse(&argv[1..]).and_then(|a| check(&a)),
        Some("bench") => wasm_test_harness::bench::main(&argv[1..]),
        Some("-h" | "--help" | "help") | None => Err(String::new()),
        Some(other) => Err(format!("unknown subcommand {other:?}")),
    };
    if let Err(e) = result {
        if !e.is_empty() {
            eprintln!("error: {e}\n");
        }
        eprint!("{USAGE}");
        std::process::exit(if e.is_empty() { 0 } else { 2 });
    }
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
    args.check_known(&[
        "wasm",
        "config",
        "template",
        "port",
        "admin-port",
        "idp-port",
        "concurrency",
    ])?;
    let wasm = args
        .get("wasm", Some("WASM"))
        .map(resolve)
        .unwrap_or_else(envoy::wasm_path);
    let config = resolve(
        args.get("config", Some("CONFIG"))
            .unwrap_or_else(|| "envoy/plugin-config.json".into()),
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
        },
        port,
        admin_port,
    )?;

    let token = tokens::mint("ES256", Some("ec-1"), &tokens::std_claims("alice"));
    println!("curl -sS -H 'Authorization: Bearer {token}' http://127.0.0.1:{port}/hello");
    println!(
        "# That token (ES256, sub=alice) is valid for 1 hour. Mint others from the mock IdP, e.g.:"
    );
    println!(
        "#   curl 'http://127.0.0.1:{}/mint?sub=bob&alg=RS256'",
        idp.port()
    );
    println!(
        "#   (params: sub, alg (RS256..RS512, PS256..PS512, ES256, EdDSA), aud, ttl, iss, kid)"
    );
    println!("# A request without a token gets 401: curl -i http://127.0.0.1:{port}/hello");
    println!("# /healthz is public: curl -i http://127.0.0.1:{port}/healthz");
    println!(
        "# Envoy admin: http://127.0.0.1:{} | log: {} | JWKS: {}/jwks.json",
        envoy.admin_port(),
        envoy.log_path().display(),
        idp.base_url()
    );
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
    args.check_known(&["alg", "sub", "aud", "ttl", "iss", "kid"])?;
    let alg = args.get("alg", None).unwrap_or_else(|| "ES256".into());
    if tokens::key_for_alg(&alg).is_none() {
        return Err(format!(
            "unsupported --alg {alg:?}; use one of {:?}",
            tokens::ALGS
        ));
    }
    let ttl: i64 = args.num("ttl", None, 3600)?;
    let now = tokens::now() as i64;
    let claims = json!({
        "iss": args.get("iss", None).unwrap_or_else(|| tokens::ISSUER.into()),
        "aud": args.get("aud", None).unwrap_or_else(|| tokens::AUDIENCE.into()),
        "sub": args.get("sub", None).unwrap_or_else(|| "alice".into()),
        "iat": now,
        "exp": now + ttl,
    });
    let kid = args
        .get("kid", None)
        .or_else(|| tokens::default_kid(&alg).map(String::from));
    println!("{}", tokens::mint(&alg, kid.as_deref(), &claims));
    Ok(())
}

fn check(args: &Args) -> Result<(), String> {
    args.check_known(&["wasm", "config", "scenarios", "template"])?;
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
