//! `jwt-guard lint`: the errors Envoy's `on_configure` gives (the same parser, the same text), and
//! the warnings a reviewer would raise about a config that loads.

use jwt_guard::config::{Config, JwksSource, Matcher, Mode, PathMatch, Rule, Segment};
use jwt_guard::jwks;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The config path it is about, as the config errors name fields (`rules[2]`, `providers.corp.audiences`).
    pub field: String,
    /// The rule's name, for a warning about a rule.
    pub rule: Option<String>,
    pub message: String,
}

pub struct Report {
    /// The line Envoy logs when it refuses the config.
    pub error: Option<String>,
    pub warnings: Vec<Warning>,
}

impl Report {
    /// 0 clean, 1 warnings only, 2 refused.
    pub fn exit_code(&self) -> i32 {
        match (&self.error, self.warnings.is_empty()) {
            (Some(_), _) => 2,
            (None, false) => 1,
            (None, true) => 0,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "valid": self.error.is_none(),
            "error": self.error,
            "warnings": self.warnings.iter().map(|w| json!({"field": w.field, "rule": w.rule, "message": w.message})).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut o = String::new();
        if let Some(e) = &self.error {
            o += &format!("error: {e}\n");
        }
        for w in &self.warnings {
            let rule = w
                .rule
                .as_ref()
                .map_or(String::new(), |r| format!(" ({r:?})"));
            o += &format!("warning: {}{rule}: {}\n", w.field, w.message);
        }
        if self.error.is_none() {
            o += &format!(
                "{} ({} warning{})\n",
                if self.warnings.is_empty() {
                    "ok"
                } else {
                    "loads"
                },
                self.warnings.len(),
                if self.warnings.len() == 1 { "" } else { "s" }
            );
        }
        o
    }
}

pub fn lint(bytes: &[u8]) -> Report {
    match Config::parse(bytes) {
        Err(e) => Report {
            error: Some(e.to_string()),
            warnings: Vec::new(),
        },
        Ok(config) => Report {
            error: None,
            warnings: warnings(&config),
        },
    }
}

/// `rules[i]`, and the rule's name when it has one, for a message.
fn rule_named(config: &Config, i: usize) -> String {
    match config.rules.get(i).map(|r| r.name.as_str()) {
        Some(name) if name != format!("rules[{i}]") => format!("rules[{i}] ({name:?})"),
        _ => format!("rules[{i}]"),
    }
}

pub fn warnings(config: &Config) -> Vec<Warning> {
    let mut out = Vec::new();
    let name = |i: usize| {
        config
            .rules
            .get(i)
            .map(|r| r.name.clone())
            .filter(|n| *n != format!("rules[{i}]"))
    };
    let mut warn = |field: String, rule: Option<String>, message: String| {
        out.push(Warning {
            field,
            rule,
            message,
        })
    };

    // Rules an earlier one covers can never match.
    for (j, later) in config.rules.iter().enumerate() {
        if let Some(i) = (0..j).find(|&i| covers(&config.rules[i].matcher, &later.matcher)) {
            warn(
                format!("rules[{j}]"),
                name(j),
                format!(
                    "can never match: {} comes first and matches every request it would",
                    rule_named(config, i)
                ),
            );
        }
    }
    for (i, rule) in config
        .rules
        .iter()
        .chain(config.default_rule.as_ref())
        .enumerate()
    {
        let (field, named) = if i < config.rules.len() {
            (format!("rules[{i}]"), name(i))
        } else {
            ("default".to_owned(), None)
        };
        if !broad(rule) {
            continue;
        }
        let scope = describe_scope(&rule.matcher);
        if rule.mode == Mode::Off && rule.requires.is_some() {
            warn(
                format!("{field}.mode"),
                named.clone(),
                format!("`off` on {scope}: no token is checked there"),
            );
        }
        if rule.requires.as_ref().is_some_and(|r| r.allow_missing) && rule.mode != Mode::Off {
            warn(
                format!("{field}.requires.allow_missing"),
                named,
                format!("on {scope}, requests without a token pass anonymously"),
            );
        }
    }
    for p in &config.providers {
        let field = format!("providers.{}", p.name);
        if p.audiences.is_empty() {
            let overridden = config
                .rules
                .iter()
                .chain(config.default_rule.as_ref())
                .filter_map(|r| r.requires.as_ref())
                .filter(|r| {
                    r.providers
                        .iter()
                        .any(|&i| config.providers.get(i).is_some_and(|q| q.name == p.name))
                })
                .all(|r| r.audiences.as_ref().is_some_and(|a| !a.is_empty()));
            if !overridden {
                warn(
                    format!("{field}.audiences"),
                    None,
                    "none set: a token of this issuer for any other service is accepted here (RFC 8725 §3.9)".to_owned(),
                );
            }
        }
        match &p.jwks {
            JwksSource::Remote(r) => {
                if r.discovery {
                    let issuer_authority = jwt_guard::units::split_uri(&p.issuer).map(|(a, _)| a);
                    if issuer_authority.as_deref() != Some(r.authority.as_str()) {
                        warn(
                            format!("{field}.remote_jwks.discovery.uri"),
                            None,
                            format!(
                                "on {} while the issuer is {}: the document's issuer must be {} or every refresh fails",
                                r.authority, p.issuer, p.issuer
                            ),
                        );
                    }
                }
                if r.timing.cache_duration_ms < r.timeout_ms {
                    warn(
                        format!("{field}.remote_jwks.cache_duration"),
                        None,
                        format!(
                            "{} ms is shorter than the fetch timeout ({} ms): the key set can expire before a refresh can finish",
                            r.timing.cache_duration_ms, r.timeout_ms
                        ),
                    );
                }
            }
            JwksSource::Local(set) => {
                if let Some(skipped) = jwks::skipped_summary(&set.skipped) {
                    warn(format!("{field}.local_jwks"), None, skipped);
                }
                if set.current_len() == 0 {
                    warn(
                        format!("{field}.local_jwks"),
                        None,
                        "no usable key: every token of this provider is refused".to_owned(),
                    );
                }
            }
        }
    }
    if let Some(i) = config
        .rules
        .iter()
        .position(|r| r.matcher.route_name.is_some())
    {
        warn(
            format!("rules[{i}].match.route_name"),
            name(i),
            "Envoy picks the route from the client's headers before the filter strips identity headers: no Envoy route these rules name may match on x-user-*, x-tenant-* or other identity headers".to_owned(),
        );
    }
    if config.rules.is_empty() && config.default_rule.is_none() {
        warn(
            "rules".to_owned(),
            None,
            "no rules: every request is refused with 403 no_rule".to_owned(),
        );
    }
    out
}

/// A rule on no host or route restriction whose path is `/`-wide or one segment deep.
fn broad(rule: &Rule) -> bool {
    let m = &rule.matcher;
    if !m.hosts.is_empty() || m.route_name.is_some() {
        return false;
    }
    match &m.path {
        None => true,
        Some(PathMatch::Prefix(p)) => {
            p.trim_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .count()
                <= 1
        }
        _ => false,
    }
}

fn describe_scope(m: &Matcher) -> String {
    match &m.path {
        Some(PathMatch::Prefix(p)) => format!("the broad prefix {p}"),
        _ => "every path".to_owned(),
    }
}

/// The literal start every path a template matches begins with.
fn template_prefix(segments: &[Segment]) -> (String, bool) {
    let mut prefix = String::from("/");
    for (i, s) in segments.iter().enumerate() {
        match s {
            Segment::Literal(l) => {
                prefix += l;
                if i + 1 < segments.len() {
                    prefix += "/";
                }
            }
            _ => return (prefix, false),
        }
    }
    (prefix, true)
}

/// True when every request `later` matches, `earlier` matches too (conservative: false when unsure).
pub fn covers(earlier: &Matcher, later: &Matcher) -> bool {
    let path = match (&earlier.path, &later.path) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(PathMatch::Prefix(p)), Some(PathMatch::Prefix(q) | PathMatch::Exact(q))) => {
            q.starts_with(p.as_str())
        }
        (Some(PathMatch::Prefix(p)), Some(PathMatch::Template(t))) => {
            template_prefix(t).0.starts_with(p.as_str())
        }
        (Some(PathMatch::Exact(e)), Some(PathMatch::Exact(q))) => e == q,
        (Some(PathMatch::Exact(e)), Some(PathMatch::Template(t))) => {
            let (prefix, literal) = template_prefix(t);
            literal && &prefix == e
        }
        (Some(PathMatch::Template(a)), Some(PathMatch::Template(b))) => a == b,
        _ => false,
    };
    let methods = earlier.methods.is_empty()
        || (!later.methods.is_empty() && later.methods.iter().all(|m| earlier.methods.contains(m)));
    let route = earlier.route_name.is_none() || earlier.route_name == later.route_name;
    let host_covered = |h: &String| {
        earlier.hosts.iter().any(|e| {
            e == h
                || e.strip_prefix("*.").is_some_and(|d| {
                    h.strip_prefix("*.")
                        .unwrap_or(h)
                        .ends_with(&format!(".{d}"))
                        || h.strip_prefix("*.") == Some(d)
                })
        })
    };
    let hosts = earlier.hosts.is_empty()
        || (!later.hosts.is_empty() && later.hosts.iter().all(host_covered));
    path && methods && route && hosts
}
