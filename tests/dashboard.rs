//! The Grafana dashboard only queries metrics the filter defines (so a rename cannot silently blank a
//! panel), and every metric family the filter defines is known here.

use jwt_guard::config::Config;
use jwt_guard::metrics::Registry;
use serde_json::Value;

/// Prometheus family of a stat name once Envoy's `stats_tags` (envoy/envoy.yaml) took the
/// `.label.value` pairs out, e.g. `jwt_guard.jwks.provider.demo.fetch.result.success` → `jwt_guard_jwks_fetch`.
fn family(stat: &str) -> String {
    let labels = [
        "route", "mode", "outcome", "reason", "provider", "result", "backend",
    ];
    let parts: Vec<&str> = stat.split('.').collect();
    let mut kept = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        if labels.contains(&parts[i]) && i + 1 < parts.len() {
            i += 2;
        } else {
            kept.push(parts[i]);
            i += 1;
        }
    }
    kept.join("_")
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "expr" || k == "query" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_owned());
                    }
                }
                exprs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

#[test]
fn dashboard_queries_only_defined_metrics() {
    let root = env!("CARGO_MANIFEST_DIR");
    let config = std::fs::read(format!("{root}/envoy/plugin-config.json")).expect("demo config");
    let registry = Registry::build(&Config::parse(&config).expect("config"));
    let mut families: Vec<String> = registry.defs.iter().map(|d| family(&d.name)).collect();
    families.sort();
    families.dedup();
    assert_eq!(
        families,
        [
            "jwt_guard_claims_dropped",
            "jwt_guard_cors_preflights",
            "jwt_guard_decision_latency_us",
            "jwt_guard_decisions",
            "jwt_guard_forged_cache_hits",
            "jwt_guard_jwks_age_seconds",
            "jwt_guard_jwks_fetch",
            "jwt_guard_jwks_keys",
            "jwt_guard_jwks_stale",
            "jwt_guard_signature_backend",
            "jwt_guard_token_cache_hits",
            "jwt_guard_token_cache_misses",
            "jwt_guard_vm_memory_bytes",
        ]
    );
    let text = std::fs::read_to_string(format!("{root}/examples/grafana/jwt-guard-dashboard.json"))
        .expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 14, "{} queries", queries.len());
    let mut used = 0;
    for q in &queries {
        for (i, _) in q.match_indices("jwt_guard_") {
            let name: String = q[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum");
            assert!(
                families.iter().any(|f| f == base),
                "{name} in {q:?} is not a metric the filter defines"
            );
            used += 1;
        }
    }
    assert!(used >= 14);
}
