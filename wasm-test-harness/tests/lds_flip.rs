//! Live plugin-config changes through file-based LDS (envoy/envoy-lds.yaml + a listener file):
//! `Envoy::start_lds` and `Envoy::update_plugin_config` against a real Envoy.
//!
//! Most tests use tests/lds-noop.yaml (no wasm filter; the plugin config is echoed in the x-plugin-config
//! response header), so they prove the harness and Envoy's listener swap independently of jwt-guard. One test
//! runs the real filter with envoy/lds.yaml. These tests FAIL (not skip) when Envoy is missing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use wasm_test_harness::client::try_http_request;
use wasm_test_harness::envoy::{
    self, default_lds_bootstrap_template, default_lds_template, validate_lds_options,
    validate_options,
};
use wasm_test_harness::{EchoUpstream, EdgeSettings, Envoy, EnvoyOptions, MockIdp};

fn noop_lds_template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lds-noop.yaml")
}

fn noop_options(upstream: &EchoUpstream, idp: &MockIdp, plugin_config: &str) -> EnvoyOptions {
    EnvoyOptions {
        template: default_lds_bootstrap_template(),
        wasm: PathBuf::from("/nonexistent/for-the-header.wasm"),
        plugin_config: plugin_config.to_string(),
        idp_port: idp.port(),
        upstream_port: upstream.port(),
        concurrency: 2,
        edge_settings: EdgeSettings::Shipped,
        mounts: Vec::new(),
    }
}

fn start_noop(upstream: &EchoUpstream, idp: &MockIdp, plugin_config: &str) -> Envoy {
    Envoy::start_lds(
        noop_options(upstream, idp, plugin_config),
        &noop_lds_template(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// GET `path`; (status, x-plugin-config).
fn get(envoy: &Envoy, path: &str) -> (u16, Option<String>) {
    let r = try_http_request(envoy.listen_port(), "GET", path, &[], &[])
        .unwrap_or_else(|e| panic!("GET {path}: {e}\nenvoy log:\n{}", envoy.log_tail(40)));
    (r.status, r.header("x-plugin-config").map(str::to_string))
}

fn tmp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lds-flip-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn lds_templates_validate_once_rendered() {
    // The real pair: bootstrap + listener with the real wasm and the demo config (validate mode loads the
    // module and runs its configure step for the listener moved into static_resources).
    let real = EnvoyOptions {
        template: default_lds_bootstrap_template(),
        idp_port: 9,
        upstream_port: 9,
        ..EnvoyOptions::default()
    };
    validate_lds_options(&real, &default_lds_template()).unwrap_or_else(|e| panic!("{e}"));
    // What e2e's "every Envoy config in the repo validates" does with envoy/envoy-lds.yaml.
    validate_options(&real).unwrap_or_else(|e| panic!("{e}"));
    // The no-wasm listener used by the other tests.
    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    validate_lds_options(
        &noop_options(&upstream, &idp, r#"{"a":"b \"q\""}"#),
        &noop_lds_template(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn validation_really_checks_the_listener_file() {
    // `envoy --mode validate` alone never reads LDS files; the harness validates the listener statically.
    let text = std::fs::read_to_string(noop_lds_template()).unwrap();
    let typo = tmp_file("typo.yaml", &text.replace("stat_prefix", "stat_prefx"));
    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    let err = validate_lds_options(&noop_options(&upstream, &idp, "{}"), &typo)
        .expect_err("a listener file with an unknown field must not validate");
    assert!(err.contains("stat_prefx"), "{err}");

    // A bad real plugin config is caught by the filter's configure step in validate mode.
    let bad = EnvoyOptions {
        template: default_lds_bootstrap_template(),
        plugin_config: r#"{"not":"a jwt-guard config"}"#.into(),
        idp_port: 9,
        upstream_port: 9,
        ..EnvoyOptions::default()
    };
    assert!(validate_lds_options(&bad, &default_lds_template()).is_err());
    let _ = std::fs::remove_dir_all(typo.parent().unwrap());
}

#[test]
fn listener_serves_and_a_new_plugin_config_is_served_after_update() {
    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    let a = r#"{"mode":"shadow","q":"\"quoted\" back\\slash"}"#;
    let envoy = start_noop(&upstream, &idp, a);
    let port = envoy.listen_port();
    assert_ne!(port, 0);
    assert_eq!(envoy.lds_version(), Some(1));
    assert!(envoy.lds_path().unwrap().is_file());

    let (status, cfg) = get(&envoy, "/one");
    assert_eq!(status, 200, "{}", envoy.log_tail(40));
    assert_eq!(cfg.as_deref(), Some(a));
    assert_eq!(upstream.last().unwrap().path, "/one");

    let b = r#"{"mode":"enforce"}"#;
    envoy
        .update_plugin_config(b)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(envoy.lds_version(), Some(2));
    assert_eq!(envoy.listen_port(), port, "the listener keeps its address");
    let (status, cfg) = get(&envoy, "/two");
    assert_eq!(status, 200);
    assert_eq!(cfg.as_deref(), Some(b));

    // Same config again: accepted (the listener is unchanged), still served.
    envoy
        .update_plugin_config(b)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&envoy, "/three"), (200, Some(b.to_string())));
    // Back again.
    envoy
        .update_plugin_config(a)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&envoy, "/four"), (200, Some(a.to_string())));
    assert_eq!(envoy.stat("listener_manager.lds.update_rejected"), Some(0));
    assert_eq!(
        envoy.stat("listener_manager.total_listeners_active"),
        Some(1)
    );
}

#[test]
fn requests_during_flips_all_succeed() {
    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    let configs: Vec<String> = (0..8)
        .map(|i| {
            format!(
                r#"{{"mode":"{}","n":{i}}}"#,
                if i % 2 == 0 { "shadow" } else { "enforce" }
            )
        })
        .collect();
    let envoy = start_noop(&upstream, &idp, &configs[0]);
    let port = envoy.listen_port();

    let stop = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (stop, failures, seen) = (stop.clone(), failures.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    match try_http_request(port, "GET", &format!("/t{t}/{n}"), &[], &[]) {
                        Ok(r) if (200..300).contains(&r.status) => seen
                            .lock()
                            .unwrap()
                            .push(r.header("x-plugin-config").unwrap_or("").to_string()),
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("status {} body {:?}", r.status, r.body)),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(200));
    for cfg in &configs[1..] {
        envoy
            .update_plugin_config(cfg)
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }

    let failures = failures.lock().unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the flips, e.g. {:?}\nenvoy log:\n{}",
        failures.len(),
        failures.len() + seen.len(),
        &failures[..failures.len().min(5)],
        envoy.log_tail(40)
    );
    assert!(!seen.is_empty(), "no requests were sent");
    for v in seen.iter() {
        assert!(configs.contains(v), "unexpected x-plugin-config {v:?}");
    }
    let distinct = configs.iter().filter(|c| seen.contains(c)).count();
    assert!(
        distinct >= configs.len() / 2,
        "requests saw only {distinct} of {} configs",
        configs.len()
    );
    eprintln!(
        "{} requests during {} flips, {distinct} configs seen, 0 failures",
        seen.len(),
        configs.len() - 1
    );
    assert_eq!(get(&envoy, "/after"), (200, configs.last().cloned()));
    assert_eq!(envoy.stat("listener_manager.lds.update_rejected"), Some(0));
    assert_eq!(upstream.count(), seen.len() + 1);
}

#[test]
fn a_rejected_update_is_an_error_and_the_old_listener_keeps_serving() {
    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    let envoy = start_noop(&upstream, &idp, "good");
    // A header value with a newline is refused by Envoy's config validation.
    let err = envoy
        .update_plugin_config("bad\nvalue")
        .expect_err("Envoy must reject this listener");
    assert!(err.contains("rejected listener file version 2"), "{err}");
    assert_eq!(envoy.stat("listener_manager.lds.update_rejected"), Some(1));
    assert_eq!(get(&envoy, "/still"), (200, Some("good".into())));
    // The next good update works.
    envoy
        .update_plugin_config("better")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(&envoy, "/next"), (200, Some("better".into())));
}

#[test]
fn a_listener_file_rejected_at_startup_is_an_error() {
    let text = std::fs::read_to_string(noop_lds_template()).unwrap();
    // Unknown fields in dynamic resources are only counted by default; the harness makes Envoy reject them.
    let typo = tmp_file(
        "typo-start.yaml",
        &text.replace("stat_prefix", "stat_prefx"),
    );
    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    let err = Envoy::start_lds(noop_options(&upstream, &idp, "{}"), &typo)
        .err()
        .expect("must not start");
    assert!(err.contains("rejected listener file version 1"), "{err}");
    assert!(err.contains("stat_prefx"), "log tail expected: {err}");
    let _ = std::fs::remove_dir_all(typo.parent().unwrap());
}

#[test]
fn update_plugin_config_needs_lds_mode() {
    let upstream = EchoUpstream::start();
    let idp = MockIdp::start();
    let envoy = Envoy::start(EnvoyOptions {
        template: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/noop-envoy.yaml"),
        ..noop_options(&upstream, &idp, "{}")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(envoy.update_plugin_config("{}").is_err());
    assert_eq!(envoy.lds_path(), None);
    assert_eq!(envoy.lds_version(), None);
}

/// The demo config with the catch-all "/" rule made public (its "requires" removed).
fn demo_config_with_public_root() -> String {
    let mut v: Value = serde_json::from_str(&envoy::demo_plugin_config()).unwrap();
    let rules = v["rules"].as_array_mut().expect("demo config has rules");
    let root = rules
        .iter_mut()
        .find(|r| r["match"]["prefix"] == "/")
        .expect("demo config has a \"/\" rule");
    root.as_object_mut().unwrap().remove("requires");
    serde_json::to_string_pretty(&v).unwrap()
}

#[test]
fn real_filter_flips_from_enforce_to_public_without_restart() {
    let idp = MockIdp::start();
    let upstream = EchoUpstream::start();
    let opts = EnvoyOptions {
        template: default_lds_bootstrap_template(),
        idp_port: idp.port(),
        upstream_port: upstream.port(),
        ..EnvoyOptions::default()
    };
    let envoy = Envoy::start_lds(opts, &default_lds_template()).unwrap_or_else(|e| panic!("{e}"));
    let pid = envoy.pid();
    let status = |path: &str| {
        try_http_request(envoy.listen_port(), "GET", path, &[], &[])
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", envoy.log_tail(40)))
            .status
    };
    assert_eq!(status("/healthz"), 200, "{}", envoy.log_tail(40));
    assert_eq!(status("/hello"), 401, "{}", envoy.log_tail(40));

    envoy
        .update_plugin_config(&demo_config_with_public_root())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status("/hello"), 200, "{}", envoy.log_tail(40));
    assert_eq!(upstream.last().unwrap().path, "/hello");

    // A config the filter refuses is rejected as a whole; the public listener keeps serving.
    let err = envoy
        .update_plugin_config(r#"{"not":"a jwt-guard config"}"#)
        .expect_err("a broken plugin config must be rejected");
    assert!(err.contains("rejected listener file"), "{err}");
    assert_eq!(status("/hello"), 200);

    // And back to enforcing.
    envoy
        .update_plugin_config(&envoy::demo_plugin_config())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status("/hello"), 401);
    assert_eq!(status("/healthz"), 200);
    assert_eq!(envoy.pid(), pid, "no restart");
}

/// Non-comment, non-blank lines, right-trimmed.
fn yaml_lines(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn lds_listener_is_the_static_listener_of_envoy_yaml() {
    // envoy/lds.yaml must carry exactly envoy/envoy.yaml's listener (as a resource: "@type" first, two
    // spaces less indentation). If this fails, copy the listener over again.
    let stat = std::fs::read_to_string(envoy::default_template()).unwrap();
    let stat: Vec<&str> = stat.lines().collect();
    let start = stat.iter().position(|l| *l == "  - name: main").unwrap();
    let end = stat.iter().position(|l| *l == "  clusters:").unwrap();
    let mut from_static: Vec<String> = stat[start..end]
        .iter()
        .map(|l| l.strip_prefix("  ").unwrap_or(l).to_string())
        .collect();
    from_static[0] = "  name: main".into();

    let lds = std::fs::read_to_string(default_lds_template()).unwrap();
    let lds: Vec<&str> = lds.lines().collect();
    let start = lds.iter().position(|l| *l == "  name: main").unwrap();
    let from_static: Vec<&str> = from_static.iter().map(String::as_str).collect();
    assert_eq!(
        yaml_lines(&lds[start..]),
        yaml_lines(&from_static),
        "envoy/lds.yaml's listener differs from envoy/envoy.yaml's"
    );
}
