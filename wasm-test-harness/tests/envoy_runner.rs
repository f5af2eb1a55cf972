//! The Envoy runner against a real Envoy, using tests/noop-envoy.yaml (no wasm filter).
//! These tests FAIL (not skip) when Envoy is missing: run `make envoy` or set ENVOY_BIN.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasm_test_harness::envoy::{self, validate_options};
use wasm_test_harness::{
    http_get, render, validate, EchoUpstream, EdgeSettings, Envoy, EnvoyOptions, MockIdp,
};

fn noop_template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/noop-envoy.yaml")
}

fn noop_options(upstream: &EchoUpstream, idp: &MockIdp, plugin_config: &str) -> EnvoyOptions {
    EnvoyOptions {
        template: noop_template(),
        wasm: PathBuf::from("/nonexistent/for-the-header.wasm"),
        plugin_config: plugin_config.to_string(),
        idp_port: idp.port(),
        upstream_port: upstream.port(),
        concurrency: 2,
        edge_settings: EdgeSettings::Shipped,
        mounts: Vec::new(),
    }
}

fn start(opts: EnvoyOptions) -> Envoy {
    Envoy::start(opts).unwrap_or_else(|e| panic!("{e}"))
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn envoy_binary_is_installed() {
    let bin = envoy::envoy_bin().unwrap_or_else(|e| panic!("{e}"));
    assert!(bin.is_file());
}

#[test]
fn proxies_to_echo_upstream_and_is_killed_on_drop() {
    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    // Quotes and backslashes must survive the JSON-string-literal rendering.
    let config = r#"{"k":"v \"quoted\" back\\slash","n":1}"#;
    let envoy = start(noop_options(&upstream, &idp, config));
    assert_ne!(envoy.listen_port(), 0);
    assert_ne!(envoy.admin_port(), 0);
    assert_ne!(envoy.listen_port(), envoy.admin_port());
    let pid = envoy.pid();
    assert!(process_exists(pid));

    let r = http_get(
        envoy.listen_port(),
        "/hello?q=1",
        &[("X-Test", b"yes".to_vec())],
    );
    assert_eq!(
        r.status,
        200,
        "body {} | envoy log:\n{}",
        r.body,
        envoy.log_tail(40)
    );
    let v = r.json();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/hello?q=1");
    assert_eq!(v["headers"]["x-test"], "yes");
    assert_eq!(r.header("server"), Some("envoy"));

    assert_eq!(upstream.count(), 1);
    let rec = upstream.last().unwrap();
    assert_eq!(rec.header("x-plugin-config"), Some(config));
    assert_eq!(
        rec.header("x-wasm-path"),
        Some("/nonexistent/for-the-header.wasm")
    );
    assert!(rec.header("x-request-id").is_some());

    assert_eq!(envoy.admin_get("/ready").unwrap().body.trim(), "LIVE");
    assert_eq!(envoy.stat("http.ingress.downstream_rq_2xx"), Some(1));
    let logs = envoy.logs();
    assert!(logs.contains("starting main dispatch loop"), "{logs}");
    assert!(envoy.wait_for_log("all clusters initialized", Duration::from_secs(5)));

    let (listen, admin) = (envoy.listen_port(), envoy.admin_port());
    drop(envoy);
    assert!(
        !process_exists(pid),
        "envoy pid {pid} still alive after drop"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", listen)).is_err());
    assert!(std::net::TcpStream::connect(("127.0.0.1", admin)).is_err());
}

#[test]
fn two_envoys_run_side_by_side() {
    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    let a = start(EnvoyOptions {
        concurrency: 1,
        ..noop_options(&upstream, &idp, "{}")
    });
    let b = start(noop_options(&upstream, &idp, "{}"));
    assert_ne!(a.listen_port(), b.listen_port());
    assert_eq!(http_get(a.listen_port(), "/a", &[]).status, 200);
    assert_eq!(http_get(b.listen_port(), "/b", &[]).status, 200);
    assert_eq!(upstream.count(), 2);
}

#[test]
fn killed_on_drop_even_when_the_test_panics() {
    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    let opts = noop_options(&upstream, &idp, "{}");
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let envoy = start(opts);
        tx.send((envoy.pid(), envoy.temp_dir().to_path_buf()))
            .unwrap();
        panic!("deliberate panic while Envoy runs");
    })
    .join();
    assert!(result.is_err());
    let (pid, dir) = rx.recv().unwrap();
    assert!(!process_exists(pid), "envoy pid {pid} leaked after a panic");
    assert!(
        dir.join("envoy.log").is_file(),
        "log kept for debugging after a panic"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn start_reports_bad_config_with_log_tail() {
    let dir = std::env::temp_dir().join(format!("harness-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "admin: { address: { socket_address: { address: 127.0.0.1, port_value: {{ADMIN_PORT}} } } }\nstatic_resources: { clusters: [ { name: x, type: BOGUS_TYPE } ] }\n").unwrap();
    let opts = EnvoyOptions {
        template: bad.clone(),
        ..EnvoyOptions::default()
    };
    let err = Envoy::start(opts.clone())
        .err()
        .expect("bad config must not start");
    assert!(err.contains("exited during startup"), "{err}");
    assert!(
        err.contains("BOGUS_TYPE"),
        "error should include the log tail: {err}"
    );

    let (code, logs) = Envoy::start_expect_exit(opts);
    assert_ne!(code, 0);
    assert!(logs.contains("BOGUS_TYPE"), "{logs}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_placeholder_is_an_error() {
    let dir = std::env::temp_dir().join(format!("harness-ph-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = dir.join("t.yaml");
    std::fs::write(
        &t,
        "# {{...}} in prose is fine\nadmin: {{NOT_A_PLACEHOLDER}}\n",
    )
    .unwrap();
    let err = Envoy::start(EnvoyOptions {
        template: t,
        ..EnvoyOptions::default()
    })
    .err()
    .unwrap();
    assert!(err.contains("{{NOT_A_PLACEHOLDER}}"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_accepts_valid_and_rejects_broken_config() {
    let dir = std::env::temp_dir().join(format!("harness-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let template = std::fs::read_to_string(noop_template()).unwrap();
    let vars = [
        ("ADMIN_PORT", "0"),
        ("LISTEN_PORT", "0"),
        ("UPSTREAM_PORT", "8080"),
        ("IDP_PORT", "8081"),
        ("WASM_PATH", "/x.wasm"),
        ("PLUGIN_CONFIG", "\"{}\""),
    ];
    let good = dir.join("good.yaml");
    std::fs::write(&good, render(&template, &vars)).unwrap();
    validate(&good).unwrap_or_else(|e| panic!("{e}"));

    let broken = dir.join("broken.yaml");
    std::fs::write(
        &broken,
        render(&template, &vars).replace("type: STATIC", "type: NOT_A_TYPE"),
    )
    .unwrap();
    let err = validate(&broken).expect_err("broken config must not validate");
    assert!(err.contains("NOT_A_TYPE"), "{err}");

    let not_yaml = dir.join("not-yaml.yaml");
    std::fs::write(&not_yaml, "{{{ nope").unwrap();
    assert!(validate(&not_yaml).is_err());

    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    validate_options(&noop_options(&upstream, &idp, "{\"a\":1}")).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn render_replaces_placeholders() {
    let out = render(
        "a={{A}} b={{B}} a={{A}} keep={{C}}",
        &[("A", "1"), ("{{B}}", "two")],
    );
    assert_eq!(out, "a=1 b=two a=1 keep={{C}}");
    let owned: Vec<(String, String)> = vec![("A".into(), "x".into())];
    assert_eq!(render("{{A}}", &owned), "x");
}

#[test]
fn paths_and_defaults() {
    let root = wasm_test_harness::repo_root();
    assert!(root.join("Cargo.toml").is_file());
    assert!(root.join("wasm-test-harness/Cargo.toml").is_file());
    if std::env::var_os("WASM").is_none() {
        assert_eq!(
            wasm_test_harness::wasm_path(),
            root.join("target/wasm32-wasip1/release/jwt_guard.wasm")
        );
    }
    let d = EnvoyOptions::default();
    assert_eq!(d.template, root.join("envoy/envoy.yaml"));
    assert_eq!(d.concurrency, 2);
    assert!(d.plugin_config.contains("idp.demo.local"));
    // The demo template renders completely, and its PLUGIN_CONFIG is a YAML block that carries the
    // config text exactly (less the final newline), readable and sed-able line by line.
    let rendered = d.render_config(0, 0).unwrap();
    assert!(rendered.contains("value: |-\n"), "{rendered}");
    let config_value = |text: &str| {
        let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        let filters = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"];
        filters[0]["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .map(str::to_owned)
    };
    assert_eq!(
        config_value(&rendered).as_deref(),
        Some(d.plugin_config.trim_end_matches('\n'))
    );
    // A config a block cannot carry verbatim stays a JSON string literal, with the same value.
    for odd in ["{\"realm\":\"caf\u{e9}\"}", "  {\"a\": 1}", "{\"a\":\t1}"] {
        let o = EnvoyOptions {
            plugin_config: odd.to_owned(),
            ..EnvoyOptions::default()
        };
        let rendered = o.render_config(0, 0).unwrap();
        assert!(
            rendered.contains(&serde_json::to_string(odd).unwrap()),
            "{odd}"
        );
        assert_eq!(config_value(&rendered).as_deref(), Some(odd));
    }
}
