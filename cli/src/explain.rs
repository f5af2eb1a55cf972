//! `jwt-guard explain`: one request decided offline by the filter's own engine (`jwt_guard::engine`
//! over `host::FakeHost`), with the reasoning the engine does not print: which rule matched and why
//! the earlier ones did not, and each check of the pipeline in order with its verdict.
//!
//! Two runs of the same code, cross-checked: the pure path (`request::prepare`, `rules`,
//! `authenticator::authenticate_traced`, `policy::plan`) gives the trace; the engine gives what Envoy
//! would do (status, headers, body, headers removed and set, log lines). They must agree on the
//! decision and reason, or the command fails.

use crate::keys::{self, KeySource};
use jwt_guard::authenticator::{
    authenticate_traced, claim, granted_scopes, Check, KeyState, Keys, Outcome,
};
use jwt_guard::config::{Config, JwksSource, Mode, PathMatch, Requirement, Rule, Segment};
use jwt_guard::engine::{Engine, Flow};
use jwt_guard::extractor::{HeaderList, RequestView};
use jwt_guard::host::{FakeHost, FakeResponse, Level};
use jwt_guard::metrics::mode_name;
use jwt_guard::policy;
use jwt_guard::request::{self, Step};
use jwt_guard::rules::{normalize_host, path_without_query, Miss, RequestInfo};
use jwt_guard::token::UntrustedToken;
use serde_json::{json, Value};

/// The request to explain.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub host: String,
    /// Sent as `authorization: Bearer <token>` unless `headers` carries the token elsewhere.
    pub token: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Envoy's route name (`xds.route_name`), for rules that match on it.
    pub route: Option<String>,
}

pub struct Options {
    pub config: Vec<u8>,
    pub request: Request,
    /// `--jwks NAME=FILE`: provider name, file path, file text.
    pub jwks: Vec<(String, String, String)>,
    pub now_secs: u64,
}

#[derive(Debug)]
pub enum Failure {
    /// The config is refused, with the line Envoy's `on_configure` logs.
    Config(String),
    /// A remote provider's keys could not be had.
    Keys(String),
    /// The trace and the engine disagree (a bug in this command or the filter).
    Internal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    NotReached,
}

impl Verdict {
    fn code(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NotReached => "not_reached",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RuleLine {
    /// `rules[i]`, or `default`.
    pub at: String,
    pub name: String,
    pub matched: bool,
    pub why: String,
}

#[derive(Debug, Clone)]
pub struct CheckLine {
    pub check: Check,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Explanation {
    pub request: Request,
    pub keys: Vec<KeySource>,
    pub rules: Vec<RuleLine>,
    /// The deciding rule's name and mode; `None` when refused before any rule.
    pub rule: Option<(String, Mode)>,
    /// What decided: `preflight`, `refused`, `no_check` or `authenticate`.
    pub step: &'static str,
    pub step_detail: String,
    pub checks: Vec<CheckLine>,
    /// The metric and audit outcome (`allow`, `deny`, `would_allow`, `would_deny`) and reason.
    pub decision: String,
    pub reason: String,
    /// For an `enforce` rule, what `shadow` mode would report instead.
    pub shadow_would_report: Option<(String, String)>,
    /// True when Envoy forwards the request; else `response` is the answer it sends.
    pub forwarded: bool,
    pub response: Option<FakeResponse>,
    pub removed: Vec<(String, String)>,
    pub set: Vec<(String, String)>,
    /// What the filter logs for this request (info and above).
    pub log: Vec<String>,
}

/// Serves the config's inline key sets (remote providers were inlined before).
struct Inline<'a>(&'a Config);

impl Keys for Inline<'_> {
    fn keys(&self, provider: usize) -> KeyState<'_> {
        match self.0.providers.get(provider).map(|p| &p.jwks) {
            Some(JwksSource::Local(set)) => KeyState::Ready(set),
            _ => KeyState::Unavailable,
        }
    }
}

pub fn explain(opts: &Options) -> Result<Explanation, Failure> {
    let original = Config::parse(&opts.config).map_err(|e| Failure::Config(e.to_string()))?;
    let raw: Value = serde_json::from_slice(&opts.config)
        .map_err(|e| Failure::Config(format!("invalid plugin configuration: {e}")))?;
    let resolved = keys::resolve(&original, &opts.jwks).map_err(Failure::Keys)?;
    let mut sources: Vec<KeySource> = original
        .providers
        .iter()
        .filter(|p| matches!(p.jwks, JwksSource::Local(_)))
        .map(|p| KeySource {
            provider: p.name.clone(),
            from: "inline".to_owned(),
        })
        .collect();
    sources.extend(resolved.iter().map(|(_, _, s)| s.clone()));
    let inlined = keys::inline(&raw, &original, &resolved).to_string();
    let config = Config::parse(inlined.as_bytes())
        .map_err(|e| Failure::Keys(format!("the key sets given do not load: {e}")))?;

    let req = &opts.request;
    let headers = request_headers(req);
    let now_ms = opts.now_secs.saturating_mul(1000);
    let trace = trace(&config, req, &headers, now_ms);

    // The engine, as Envoy runs it.
    let host = FakeHost::at(u128::from(opts.now_secs) * 1_000_000_000);
    host.root_id.set(1);
    *host.plugin_config.borrow_mut() = Some(inlined.into_bytes());
    if let Some(route) = &req.route {
        host.readable
            .borrow_mut()
            .insert("xds.route_name".to_owned(), route.as_bytes().to_vec());
    }
    let mut engine = Engine::new(host.clone(), 1);
    if !engine.configure() {
        return Err(Failure::Keys(host.logged(Level::Error).join("; ")));
    }
    let logged_before = host.logs.borrow().len();
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    host.open(2, &pairs);
    let flow = engine.on_request_headers(2);
    let stream = host.stream(2);
    let log: Vec<String> = host.logs.borrow()[logged_before..]
        .iter()
        .filter(|(l, _)| *l >= Level::Info)
        .map(|(_, m)| m.clone())
        .collect();
    let (decision, reason) = engine_decision(&host).unwrap_or_else(|| {
        // A CORS preflight is forwarded without a decision.
        (String::new(), String::new())
    });
    if trace.step != "preflight" && (decision != trace.decision || reason != trace.reason) {
        return Err(Failure::Internal(format!(
            "the engine decided {decision}/{reason}, the trace {}/{}",
            trace.decision, trace.reason
        )));
    }
    let before: Vec<(String, String)> = headers;
    let after: Vec<(String, String)> = stream
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    let redact = |(n, v): &(String, String)| (n.clone(), redacted(v, req.token.as_deref()));
    Ok(Explanation {
        request: req.clone(),
        keys: sources,
        rules: trace.rules,
        rule: trace.rule,
        step: trace.step,
        step_detail: trace.step_detail,
        checks: trace.checks,
        decision: trace.decision,
        reason: trace.reason,
        shadow_would_report: trace.shadow,
        forwarded: flow == Flow::Continue && stream.response.is_none(),
        response: stream.response,
        removed: before
            .iter()
            .filter(|h| !after.contains(h))
            .map(redact)
            .collect(),
        set: after
            .iter()
            .filter(|h| !before.contains(h))
            .map(redact)
            .collect(),
        log,
    })
}

fn redacted(value: &str, token: Option<&str>) -> String {
    match token {
        Some(t) if !t.is_empty() => value.replace(t, "<token>"),
        _ => value.to_owned(),
    }
}

fn request_headers(req: &Request) -> Vec<(String, String)> {
    let mut h = vec![
        (":method".to_owned(), req.method.clone()),
        (":path".to_owned(), req.path.clone()),
        (":authority".to_owned(), req.host.clone()),
        (":scheme".to_owned(), "https".to_owned()),
    ];
    if let Some(t) = &req.token {
        h.push(("authorization".to_owned(), format!("Bearer {t}")));
    }
    h.extend(
        req.headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone())),
    );
    h
}

/// The decision counter the engine incremented: (outcome, reason).
fn engine_decision(host: &FakeHost) -> Option<(String, String)> {
    host.values
        .borrow()
        .iter()
        .filter(|(name, v)| name.starts_with("jwt_guard.decisions.") && **v > 0)
        .find_map(|(name, _)| {
            let (rest, reason) = name.rsplit_once(".reason.")?;
            let (_, outcome) = rest.rsplit_once(".outcome.")?;
            Some((outcome.to_owned(), reason.to_owned()))
        })
}

struct Trace {
    rules: Vec<RuleLine>,
    rule: Option<(String, Mode)>,
    step: &'static str,
    step_detail: String,
    checks: Vec<CheckLine>,
    decision: String,
    reason: String,
    shadow: Option<(String, String)>,
}

fn trace(config: &Config, req: &Request, headers: &[(String, String)], now_ms: u64) -> Trace {
    let list = HeaderList(
        headers
            .iter()
            .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
            .collect(),
    );
    let names = list.names();
    let route = req.route.as_ref().map(|r| r.as_bytes().to_vec());
    let prepared = request::prepare(config, &list, &names, Some(now_ms), route.clone());
    let info = RequestInfo {
        path: list.header(":path").unwrap_or_default(),
        method: list.header(":method").unwrap_or_default(),
        authority: list.header(":authority").unwrap_or_default(),
        route_name: route,
    };
    let mut t = Trace {
        rules: rule_lines(config, &info),
        rule: None,
        step: "",
        step_detail: String::new(),
        checks: Vec::new(),
        decision: String::new(),
        reason: String::new(),
        shadow: None,
    };
    match prepared.step {
        Step::Preflight => {
            t.rules.clear();
            t.step = "preflight";
            t.step_detail =
                "a CORS preflight: forwarded without a token (allow_cors_preflight)".to_owned();
        }
        Step::Refuse(denial) => {
            t.step = "refused";
            t.step_detail = format!("refused before any rule: {denial}");
            t.decision = "deny".to_owned();
            t.reason = denial.code().to_owned();
        }
        Step::Decided(rule, outcome) => {
            t.step = "no_check";
            t.step_detail = match (&outcome, rule.mode, &rule.requires) {
                (Outcome::Deny(d), _, _) => format!("refused under the rule: {d}"),
                (_, Mode::Off, _) => "mode off: no token is checked".to_owned(),
                _ => "the rule requires no token".to_owned(),
            };
            t.rule = Some((rule.name.clone(), rule.mode));
            let shadow = shadow_of(config, rule, |_| {
                // The same decision without a token check: `Decided` outcomes carry no identity.
                match &outcome {
                    Outcome::Deny(d) => Outcome::Deny(d.clone()),
                    _ => Outcome::Allow(None),
                }
            });
            let plan = policy::plan(config, rule, outcome);
            t.decision = plan.outcome.code().to_owned();
            t.reason = plan.reason.to_owned();
            t.shadow = shadow;
        }
        Step::Authenticate {
            rule,
            requirement,
            tokens,
            presentation,
            now_ms,
        } => {
            t.step = "authenticate";
            t.rule = Some((rule.name.clone(), rule.mode));
            let traced = || {
                authenticate_traced(
                    config,
                    requirement,
                    &tokens,
                    &presentation,
                    &Inline(config),
                    now_ms,
                )
            };
            let (outcome, stop) = traced();
            t.checks = check_lines(config, requirement, &tokens, &outcome, stop, now_ms / 1000);
            t.shadow = shadow_of(config, rule, |_| traced().0);
            let plan = policy::plan(config, rule, outcome);
            t.decision = plan.outcome.code().to_owned();
            t.reason = plan.reason.to_owned();
        }
    }
    t
}

/// What `shadow` mode would report for an `enforce` rule.
fn shadow_of(
    config: &Config,
    rule: &Rule,
    outcome: impl Fn(&Rule) -> Outcome,
) -> Option<(String, String)> {
    if rule.mode != Mode::Enforce || rule.requires.is_none() {
        return None;
    }
    let mut shadow = rule.clone();
    shadow.mode = Mode::Shadow;
    let plan = policy::plan(config, &shadow, outcome(&shadow));
    Some((plan.outcome.code().to_owned(), plan.reason.to_owned()))
}

fn template_text(segments: &[Segment]) -> String {
    let parts: Vec<&str> = segments
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => l.as_str(),
            Segment::One => "*",
            Segment::Rest => "**",
        })
        .collect();
    format!("/{}", parts.join("/"))
}

/// Every rule up to the one that matched, each with why it did or did not.
fn rule_lines(config: &Config, info: &RequestInfo) -> Vec<RuleLine> {
    let host = if config.uses_hosts {
        normalize_host(&info.authority)
    } else {
        None
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let path = text(path_without_query(&info.path));
    let mut out = Vec::new();
    for (i, rule) in config.rules.iter().enumerate() {
        let m = &rule.matcher;
        let (matched, why) = match m.first_miss(info, host.as_deref()) {
            None => (true, "matches".to_owned()),
            Some(Miss::Path) => (
                false,
                match &m.path {
                    Some(PathMatch::Prefix(p)) => format!("path {path} is not under prefix {p}"),
                    Some(PathMatch::Exact(p)) => format!("path {path} is not {p}"),
                    Some(PathMatch::Template(s)) => {
                        format!("path {path} does not fit template {}", template_text(s))
                    }
                    None => "path".to_owned(),
                },
            ),
            Some(Miss::Method) => (
                false,
                format!(
                    "method {} is not one of {}",
                    text(&info.method),
                    m.methods.join(", ")
                ),
            ),
            Some(Miss::RouteName) => (
                false,
                format!(
                    "route name {} is not {}",
                    info.route_name
                        .as_deref()
                        .map_or("(none; see --route)".to_owned(), text),
                    m.route_name.as_deref().unwrap_or_default()
                ),
            ),
            Some(Miss::Host) => (
                false,
                format!(
                    "host {} is not one of {}",
                    host.as_deref().map(text).unwrap_or_default(),
                    m.hosts.join(", ")
                ),
            ),
            Some(Miss::NotAHostName) => (
                false,
                format!(
                    "Host {:?} is not a host name, and this rule decides by host: invalid_request",
                    text(&info.authority)
                ),
            ),
        };
        let stop = matched || why.ends_with("invalid_request");
        out.push(RuleLine {
            at: format!("rules[{i}]"),
            name: rule.name.clone(),
            matched,
            why,
        });
        if stop {
            return out;
        }
    }
    out.push(match &config.default_rule {
        Some(rule) => RuleLine {
            at: "default".to_owned(),
            name: rule.name.clone(),
            matched: true,
            why: "no rule matched; the default rule applies".to_owned(),
        },
        None => RuleLine {
            at: "default".to_owned(),
            name: String::new(),
            matched: false,
            why: "no rule matched and there is no default rule: no_rule".to_owned(),
        },
    });
    out
}

/// Each check in pipeline order: those before the one that stopped the token passed, that one
/// failed, those after it did not run.
fn check_lines(
    config: &Config,
    requirement: &Requirement,
    tokens: &[Vec<u8>],
    outcome: &Outcome,
    stop: Option<Check>,
    now: u64,
) -> Vec<CheckLine> {
    if tokens.is_empty() && stop.is_none() {
        return vec![CheckLine {
            check: Check::Token,
            verdict: Verdict::Pass,
            detail: "none presented, and the rule allows that (allow_missing)".to_owned(),
        }];
    }
    let denial = match outcome {
        Outcome::Deny(d) | Outcome::Forbidden(_, d) => Some(d.to_string()),
        _ => None,
    };
    let token = tokens
        .first()
        .and_then(|t| UntrustedToken::parse(t, usize::MAX).ok());
    let claims = token.as_ref().map(|t| &t.claims);
    let text = |name: &str| {
        claims
            .and_then(|c| claim(c, name))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };
    let providers: Vec<&str> = requirement
        .providers
        .iter()
        .filter_map(|&i| config.providers.get(i))
        .filter(|p| text("iss").is_some_and(|iss| p.issuer_fits(&iss).is_some()))
        .map(|p| p.name.as_str())
        .collect();
    let pass_detail = |check: Check| -> String {
        match check {
            Check::Token => "one token presented".to_owned(),
            Check::Format => token.as_ref().map_or(String::new(), |t| {
                format!(
                    "alg {}, kid {}",
                    t.alg.name(),
                    t.kid.as_deref().unwrap_or("(none)")
                )
            }),
            Check::Issuer => format!(
                "{} (provider {})",
                text("iss").unwrap_or_default(),
                providers.join(", ")
            ),
            Check::Lifetime => match claims.and_then(|c| c.get("exp")).and_then(Value::as_f64) {
                Some(exp) => format!("expires in {} s", exp as i64 - now as i64),
                None => "no exp, and none is required".to_owned(),
            },
            Check::Audience => {
                text("aud").map_or("no audience required".to_owned(), |a| format!("aud {a}"))
            }
            Check::Key => token.as_ref().map_or(String::new(), |t| {
                format!(
                    "kid {}",
                    t.kid.as_deref().unwrap_or("(none: chosen by alg)")
                )
            }),
            Check::Scopes if requirement.scopes.is_empty() && requirement.any_scopes.is_empty() => {
                "none required".to_owned()
            }
            Check::Scopes => format!(
                "granted {}",
                claims.map(granted_scopes).unwrap_or_default().join(" ")
            ),
            Check::Claims if requirement.claims.is_empty() => "none required".to_owned(),
            Check::Binding => match outcome {
                Outcome::Allow(Some(v)) | Outcome::Forbidden(v, _) => match v.proven() {
                    jwt_guard::binding::Proven::Bearer => {
                        "unbound bearer token; the route needs no binding".to_owned()
                    }
                    proven => format!("proven: {}", proven.name()),
                },
                _ => String::new(),
            },
            _ => String::new(),
        }
    };
    let stop_at = stop.and_then(|s| Check::ALL.iter().position(|c| *c == s));
    Check::ALL
        .iter()
        .enumerate()
        .map(|(i, &check)| {
            let verdict = match stop_at {
                Some(at) if i == at => Verdict::Fail,
                Some(at) if i > at => Verdict::NotReached,
                _ => Verdict::Pass,
            };
            let detail = match verdict {
                Verdict::Pass => pass_detail(check),
                Verdict::Fail if check == Check::Scopes => format!(
                    "{}; required: {}; granted: {}",
                    denial.clone().unwrap_or_default(),
                    required_scopes(requirement),
                    Some(claims.map(granted_scopes).unwrap_or_default().join(" "))
                        .filter(|g| !g.is_empty())
                        .unwrap_or_else(|| "(none)".to_owned())
                ),
                Verdict::Fail => denial.clone().unwrap_or_else(|| "keys pending".to_owned()),
                Verdict::NotReached => String::new(),
            };
            CheckLine {
                check,
                verdict,
                detail,
            }
        })
        .collect()
}

fn required_scopes(r: &Requirement) -> String {
    let mut parts = Vec::new();
    if !r.scopes.is_empty() {
        parts.push(format!("all of {}", r.scopes.join(" ")));
    }
    if !r.any_scopes.is_empty() {
        parts.push(format!("one of {}", r.any_scopes.join(" ")));
    }
    parts.join(", ")
}

impl Explanation {
    pub fn to_json(&self) -> Value {
        let pairs = |h: &[(String, String)]| -> Vec<Value> {
            h.iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect()
        };
        json!({
            "request": {
                "method": self.request.method,
                "path": self.request.path,
                "host": self.request.host,
                "route": self.request.route,
            },
            "keys": self.keys.iter().map(|k| json!({"provider": k.provider, "from": k.from})).collect::<Vec<_>>(),
            "rules": self.rules.iter().map(|r| json!({"at": r.at, "name": r.name, "matched": r.matched, "why": r.why})).collect::<Vec<_>>(),
            "rule": self.rule.as_ref().map(|(n, m)| json!({"name": n, "mode": mode_name(*m)})),
            "step": self.step,
            "step_detail": self.step_detail,
            "checks": self.checks.iter().map(|c| json!({"check": c.check.code(), "verdict": c.verdict.code(), "detail": c.detail})).collect::<Vec<_>>(),
            "decision": self.decision,
            "reason": self.reason,
            "shadow_would_report": self.shadow_would_report.as_ref().map(|(d, r)| json!({"decision": d, "reason": r})),
            "forwarded": self.forwarded,
            "response": self.response.as_ref().map(|r| json!({
                "status": r.status,
                "headers": pairs(&r.headers),
                "body": r.body,
            })),
            "headers_removed": pairs(&self.removed),
            "headers_set": pairs(&self.set),
            "log": self.log,
        })
    }

    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let r = &self.request;
        o += &format!("request    {} {}  host {}\n", r.method, r.path, r.host);
        for k in &self.keys {
            o += &format!("keys       provider {}: {}\n", k.provider, k.from);
        }
        if !self.rules.is_empty() {
            o += "rules\n";
            for l in &self.rules {
                let name = if l.name.is_empty() {
                    String::new()
                } else {
                    format!(" {:?}", l.name)
                };
                o += &format!("  {}{}: {}\n", l.at, name, l.why);
            }
        }
        if let Some((name, mode)) = &self.rule {
            o += &format!("rule       {name:?}, mode {}\n", mode_name(*mode));
        }
        if !self.step_detail.is_empty() {
            o += &format!("step       {}\n", self.step_detail);
        }
        if !self.checks.is_empty() {
            o += "checks\n";
            for c in &self.checks {
                let verdict = match c.verdict {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "FAIL",
                    Verdict::NotReached => "-",
                };
                let line = format!("  {:<10} {:<5} {}", c.check.code(), verdict, c.detail);
                o += line.trim_end();
                o += "\n";
            }
        }
        if !self.decision.is_empty() {
            o += &format!("decision   {} ({})\n", self.decision, self.reason);
        }
        if let Some((d, reason)) = &self.shadow_would_report {
            o += &format!("in shadow  would report {d} ({reason})\n");
        }
        match &self.response {
            Some(resp) => {
                o += &format!("response   {} from the filter\n", resp.status);
                for (n, v) in &resp.headers {
                    o += &format!("  {n}: {v}\n");
                }
                o += &format!("  body: {}\n", resp.body);
            }
            None if self.forwarded => o += "response   forwarded to the upstream\n",
            None => o += "response   paused (no answer)\n",
        }
        for (n, v) in &self.removed {
            o += &format!("removed    {n}: {v}\n");
        }
        for (n, v) in &self.set {
            o += &format!("set        {n}: {v}\n");
        }
        for l in &self.log {
            o += &format!("log        {l}\n");
        }
        o
    }
}
