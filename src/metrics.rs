//! The one registry of metric names. Every metric is defined at start-up from the compiled config, so
//! cardinality is bounded by config (rules × reasons, providers × causes), never by request data, and
//! dashboards see zeros instead of missing series.
//!
//! Names follow one scheme: `jwt_guard.<family>` followed by `.<label>.<value>` pairs. Envoy prefixes
//! custom wasm stats with `wasmcustom.`; the `stats_config.stats_tags` rules in `envoy/*.yaml` (see
//! `STATS_TAGS_YAML` in the README) turn the pairs into Prometheus labels, e.g.
//! `jwt_guard_decisions{route="api",mode="enforce",outcome="deny",reason="expired"}`.

use crate::codes::{AllowReason, Decision};
use crate::config::{Config, Mode, Rule};
use crate::error::Reason;
use crate::fetcher::FetchResult;
use crate::headers::DropReason;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDef {
    pub name: String,
    pub kind: Kind,
}

/// Route label for requests no rule matched.
pub use crate::config::NO_RULE_ROUTE;

pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
        Mode::Off => "off",
    }
}

/// Per-provider metric indexes.
#[derive(Debug, Default)]
pub struct ProviderMetrics {
    pub fetch: HashMap<FetchResult, usize>,
    pub keys: usize,
    pub age_seconds: usize,
    pub stale: usize,
}

/// All metric definitions, and where to find each one by its labels.
#[derive(Debug, Default)]
pub struct Registry {
    pub defs: Vec<MetricDef>,
    /// route → (outcome, reason) → index; looked up on every request, so no scan.
    decisions: HashMap<String, HashMap<(Decision, &'static str), usize>>,
    latency: HashMap<&'static str, usize>,
    pub providers: Vec<ProviderMetrics>,
    dropped: HashMap<DropReason, usize>,
    pub cors_preflights: usize,
    pub token_cache_hits: usize,
    pub token_cache_misses: usize,
    /// Forged tokens answered `bad_signature` from the forged-token memory, without a signature check.
    pub forged_cache_hits: usize,
    /// Linear memory of the wasm VM that reported last (every worker VM reports on its tick).
    pub vm_memory_bytes: usize,
    /// `jwt_guard.signature_backend.backend.<host|wasm>`: 1 for the backend in use, 0 for the other.
    pub signature_backend: Vec<(crate::crypto::Backend, usize)>,
}

impl Registry {
    fn add(&mut self, name: String, kind: Kind) -> usize {
        self.defs.push(MetricDef { name, kind });
        self.defs.len() - 1
    }

    fn add_decisions(&mut self, route: &str, mode: Mode, has_requirement: bool) {
        let m = mode_name(mode);
        use AllowReason::{Anonymous, Degraded, Ok, Public};
        let (allow, allow_reasons, deny): (Decision, &[AllowReason], Option<Decision>) =
            match (mode, has_requirement) {
                (Mode::Off, _) | (_, false) => (Decision::Allow, &[Public], None),
                (Mode::Enforce, true) => (
                    Decision::Allow,
                    &[Ok, Anonymous, Degraded],
                    Some(Decision::Deny),
                ),
                (Mode::Shadow, true) => (
                    Decision::WouldAllow,
                    &[Ok, Anonymous],
                    Some(Decision::WouldDeny),
                ),
            };
        let denials = deny
            .into_iter()
            .flat_map(|d| Reason::under_a_rule().map(move |r| (d, r.code())));
        let pairs = allow_reasons
            .iter()
            .map(|r| (allow, r.code()))
            .chain(denials);
        for (outcome, reason) in pairs {
            let name = format!(
                "jwt_guard.decisions.route.{route}.mode.{m}.outcome.{}.reason.{reason}",
                outcome.code()
            );
            let idx = self.add(name, Kind::Counter);
            self.decisions
                .entry(route.to_owned())
                .or_default()
                .insert((outcome, reason), idx);
        }
    }

    pub fn build(config: &Config) -> Registry {
        let mut r = Registry::default();
        let rules: Vec<&Rule> = config
            .rules
            .iter()
            .chain(config.default_rule.as_ref())
            .collect();
        for rule in rules {
            r.add_decisions(&rule.name, rule.mode, rule.requires.is_some());
        }
        // Denials before a rule is known: none matched, the host failed us, or the request's `Host`
        // cannot be matched against host rules.
        for reason in Reason::WITHOUT_A_RULE.map(Reason::code) {
            let idx = r.add(
                format!("jwt_guard.decisions.route.{NO_RULE_ROUTE}.mode.enforce.outcome.deny.reason.{reason}"),
                Kind::Counter,
            );
            r.decisions
                .entry(NO_RULE_ROUTE.to_owned())
                .or_default()
                .insert((Decision::Deny, reason), idx);
        }
        for mode in ["enforce", "shadow", "off"] {
            let idx = r.add(
                format!("jwt_guard.decision_latency_us.mode.{mode}"),
                Kind::Histogram,
            );
            r.latency.insert(mode, idx);
        }
        for p in &config.providers {
            let mut pm = ProviderMetrics::default();
            if matches!(p.jwks, crate::config::JwksSource::Remote(_)) {
                for &result in FetchResult::ALL {
                    let name = format!("jwt_guard.jwks.provider.{}.fetch.result.{result}", p.name);
                    pm.fetch.insert(result, r.add(name, Kind::Counter));
                }
            }
            pm.keys = r.add(
                format!("jwt_guard.jwks.provider.{}.keys", p.name),
                Kind::Gauge,
            );
            pm.age_seconds = r.add(
                format!("jwt_guard.jwks.provider.{}.age_seconds", p.name),
                Kind::Gauge,
            );
            pm.stale = r.add(
                format!("jwt_guard.jwks.provider.{}.stale", p.name),
                Kind::Gauge,
            );
            r.providers.push(pm);
        }
        for &reason in DropReason::ALL {
            let idx = r.add(
                format!("jwt_guard.claims_dropped.reason.{reason}"),
                Kind::Counter,
            );
            r.dropped.insert(reason, idx);
        }
        r.cors_preflights = r.add("jwt_guard.cors_preflights".to_owned(), Kind::Counter);
        r.token_cache_hits = r.add("jwt_guard.token_cache_hits".to_owned(), Kind::Counter);
        r.token_cache_misses = r.add("jwt_guard.token_cache_misses".to_owned(), Kind::Counter);
        r.forged_cache_hits = r.add("jwt_guard.forged_cache_hits".to_owned(), Kind::Counter);
        r.vm_memory_bytes = r.add("jwt_guard.vm_memory_bytes".to_owned(), Kind::Gauge);
        for b in crate::crypto::Backend::ALL {
            let idx = r.add(
                format!("jwt_guard.signature_backend.backend.{}", b.name()),
                Kind::Gauge,
            );
            r.signature_backend.push((b, idx));
        }
        r
    }

    pub fn decision(&self, route: &str, outcome: Decision, reason: &'static str) -> Option<usize> {
        self.decisions.get(route)?.get(&(outcome, reason)).copied()
    }

    pub fn latency(&self, mode: Mode) -> Option<usize> {
        self.latency.get(mode_name(mode)).copied()
    }

    pub fn dropped(&self, reason: DropReason) -> Option<usize> {
        self.dropped.get(&reason).copied()
    }

    pub fn fetch(&self, provider: usize, result: FetchResult) -> Option<usize> {
        self.providers
            .get(provider)
            .and_then(|p| p.fetch.get(&result).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rules: &str) -> Config {
        let doc = format!(
            r#"{{"providers":{{"p":{{"issuer":"i","local_jwks":{{"inline":{}}}}}}},"rules":{rules}}}"#,
            crate::keycache::tests::JWKS
        );
        Config::parse(doc.as_bytes()).unwrap()
    }

    #[test]
    fn every_deny_code_has_a_counter() {
        let c = cfg(r#"[{"name":"api","match":{"prefix":"/"},"requires":{"provider_name":"p"}}]"#);
        let r = Registry::build(&c);
        for reason in Reason::under_a_rule() {
            assert!(
                r.decision("api", Decision::Deny, reason.code()).is_some(),
                "{reason}"
            );
        }
        for reason in Reason::WITHOUT_A_RULE {
            assert!(
                r.decision(NO_RULE_ROUTE, Decision::Deny, reason.code())
                    .is_some(),
                "{reason}"
            );
        }
    }

    #[test]
    fn cardinality_follows_config_not_traffic() {
        let c = cfg(r#"[{"name":"pub","match":{"prefix":"/p"}},
                        {"name":"api","match":{"prefix":"/a"},"requires":{"provider_name":"p"}},
                        {"name":"sh","match":{"prefix":"/"},"requires":{"provider_name":"p"},"mode":"shadow"}]"#);
        let r = Registry::build(&c);
        assert!(r.decision("pub", Decision::Allow, "public").is_some());
        assert!(r.decision("api", Decision::Deny, "expired").is_some());
        assert!(r.decision("api", Decision::WouldDeny, "expired").is_none());
        assert!(r.decision("sh", Decision::WouldDeny, "expired").is_some());
        assert!(r
            .decision(NO_RULE_ROUTE, Decision::Deny, "no_rule")
            .is_some());
        let decisions = r
            .defs
            .iter()
            .filter(|d| d.name.starts_with("jwt_guard.decisions."))
            .count();
        assert_eq!(
            decisions,
            1 + (3 + Reason::under_a_rule().count())
                + (2 + Reason::under_a_rule().count())
                + Reason::WITHOUT_A_RULE.len()
        );
        let mut names: Vec<&str> = r.defs.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), r.defs.len(), "no name defined twice");
        assert!(r
            .defs
            .iter()
            .all(|d| d.name.split('.').all(|s| !s.is_empty())));
    }
}
