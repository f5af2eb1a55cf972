//! Plugin configuration: strict serde structs (`deny_unknown_fields`, so a typo is an error, never a
//! silently disabled check) compiled into a validated `Config`. Every error names the field it is
//! about, e.g. `providers.corp.remote_jwks.http_uri.uri: must start with http:// or https://`.
//!
//! The vocabulary follows Envoy's `jwt_authn` (providers, issuer, audiences, remote_jwks.http_uri,
//! cache_duration, local_jwks, from_headers/from_params/from_cookies, clock_skew_seconds, rules with
//! match + requires/provider_name/requires_any) so it reads familiar to whoever runs Envoy.

use crate::crypto::Alg;
use crate::jwks::KeySet;
use crate::token::DEFAULT_MAX_TOKEN_BYTES;

/// The route label (and reserved rule name) for requests no rule matched.
pub const NO_RULE_ROUTE: &str = "no_rule";
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "invalid plugin configuration: {}", self.problem)
        } else {
            write!(
                f,
                "invalid plugin configuration: {}: {}",
                self.field, self.problem
            )
        }
    }
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

// ---------- raw (as written) ----------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    providers: BTreeMap<String, RawProvider>,
    rules: Vec<RawRule>,
    default: Option<RawDefault>,
    realm: Option<String>,
    jwks_wait_timeout: Option<String>,
    allow_cors_preflight: Option<bool>,
    strip_header_prefixes: Option<Vec<String>>,
    max_header_value_bytes: Option<usize>,
    audit: Option<RawAudit>,
    token_cache_size: Option<usize>,
    signature_backend: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    filter_state: Option<bool>,
    log: Option<bool>,
    allow_sample_rate: Option<f64>,
    tenant_claim: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    issuer: String,
    audiences: Option<Vec<String>>,
    remote_jwks: Option<RawRemoteJwks>,
    local_jwks: Option<RawLocalJwks>,
    algorithms: Option<Vec<String>>,
    clock_skew_seconds: Option<u64>,
    require_expiration: Option<bool>,
    from_headers: Option<Vec<RawHeaderSource>>,
    from_params: Option<Vec<String>>,
    from_cookies: Option<Vec<String>>,
    max_token_bytes: Option<usize>,
    claim_to_headers: Option<Vec<RawClaimHeader>>,
    forward_token: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimHeader {
    claim: String,
    header: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteJwks {
    http_uri: Option<RawHttpUri>,
    discovery: Option<RawDiscovery>,
    cache_duration: Option<String>,
    max_stale: Option<String>,
    rotation_grace: Option<String>,
    unknown_kid_refetch_interval: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscovery {
    /// Defaults to `<issuer>/.well-known/openid-configuration`.
    uri: Option<String>,
    cluster: String,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpUri {
    uri: String,
    cluster: String,
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalJwks {
    inline_string: Option<String>,
    inline: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderSource {
    name: String,
    value_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    #[serde(rename = "match")]
    matcher: RawMatch,
    requires: Option<RawRequirement>,
    mode: Option<Mode>,
    on_keys_unavailable: Option<OnKeysUnavailable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefault {
    requires: Option<RawRequirement>,
    mode: Option<Mode>,
    on_keys_unavailable: Option<OnKeysUnavailable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    prefix: Option<String>,
    path: Option<String>,
    template: Option<String>,
    methods: Option<Vec<String>>,
    hosts: Option<Vec<String>>,
    route_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    provider_name: Option<String>,
    requires_any: Option<RawRequiresAny>,
    audiences: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
    any_scopes: Option<Vec<String>>,
    claims: Option<Vec<RawClaimRequirement>>,
    allow_missing: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimRequirement {
    name: String,
    values: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequiresAny {
    requirements: Vec<RawProviderRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProviderRef {
    provider_name: String,
}

// ---------- compiled ----------

#[derive(Debug)]
pub struct Config {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    /// Applies when no rule matches; `None` means deny (`no_rule`).
    pub default_rule: Option<Rule>,
    /// Whether any rule matches on Envoy's route name (the filter then reads `xds.route_name`).
    pub uses_route_names: bool,
    pub allow_cors_preflight: bool,
    /// Client headers with these prefixes (in `headers::header_key` form) are removed before
    /// anything else.
    pub strip_header_prefixes: Vec<String>,
    /// Every header the filter itself may set (in `header_key` form); also removed from every client
    /// request, in any spelling.
    pub managed_headers: Vec<String>,
    /// Headers that carry tokens (`from_headers`): never stripped as identity headers, since the
    /// filter must still read (and verify) what the client presents there. In `header_key` form.
    pub token_headers: Vec<String>,
    /// Whether any rule matches on hosts (a `Host` that is not a host name is then refused).
    pub uses_hosts: bool,
    /// Claim values longer than this are not written into headers.
    pub max_header_value_bytes: usize,
    pub audit: Audit,
    /// Verified tokens kept per worker VM (0 disables the cache).
    pub token_cache_size: usize,
    pub realm: String,
    /// How long a request may wait for the first key set of a provider before failing closed.
    pub jwks_wait_timeout_ms: u64,
    /// Which implementation checks RS*/ES* signatures (see `crypto`).
    pub signature_backend: BackendChoice,
}

/// `signature_backend`: `auto` uses Envoy's host crypto when its known-answer check passes at VM
/// start and the in-wasm code otherwise; `host` refuses the configuration where the host cannot do
/// it; `wasm` never asks the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Host,
    Wasm,
}

impl BackendChoice {
    pub const ALL: [BackendChoice; 3] = [
        BackendChoice::Auto,
        BackendChoice::Host,
        BackendChoice::Wasm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Host => "host",
            BackendChoice::Wasm => "wasm",
        }
    }
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    /// Empty means the provider does not check `aud` (as in Envoy's `jwt_authn`).
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    pub algorithms: Vec<Alg>,
    pub clock_skew_secs: u64,
    pub require_expiration: bool,
    pub sources: Vec<TokenSource>,
    pub max_token_bytes: usize,
    pub claim_to_headers: Vec<ClaimHeader>,
    /// False: the token is removed from the request before it is forwarded.
    pub forward_token: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    /// Claim name or dotted path (`org.id`); `scope` means the union of `scope` and `scp`.
    pub claim: String,
    pub header: String,
}

/// Where the per-decision audit record goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    /// Into Envoy filter state `wasm.jwt_guard.audit`, for `%FILTER_STATE(wasm.jwt_guard.audit:PLAIN)%`.
    pub filter_state: bool,
    /// As an info line in Envoy's log.
    pub log: bool,
    /// Share of allow records written (0.0 to 1.0); denials are always written.
    pub allow_sample_rate: f64,
    /// The claim reported as `tenant`.
    pub tenant_claim: String,
}

pub const AUDIT_FILTER_STATE: &str = "jwt_guard.audit";

pub const SHADOW_HEADER: &str = "x-auth-shadow";
pub const DEGRADED_HEADER: &str = "x-auth-degraded";

#[derive(Debug)]
pub enum JwksSource {
    Remote(RemoteJwks),
    Local(KeySet),
}

#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub cluster: String,
    /// Where the first request goes: the JWKS itself, or the OIDC discovery document whose
    /// `jwks_uri` (through the same cluster) gives the JWKS.
    pub authority: String,
    pub path: String,
    pub discovery: bool,
    /// Whether the configured URI is https (a discovery over https never leads to a plain-http JWKS).
    pub https: bool,
    /// For each of the (one or two) requests of a refresh.
    pub timeout_ms: u64,
    pub timing: crate::keycache::Timing,
    /// Identifies this provider's JWKS source in shared data: a config change that points a provider
    /// elsewhere never reads the old source's keys.
    pub cache_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Header name (lowercase) and a prefix to strip; a prefix ending in a space is matched
    /// case-insensitively (auth schemes are case-insensitive, RFC 7235 §2.1).
    Header {
        name: String,
        prefix: String,
    },
    Param(String),
    Cookie(String),
}

#[derive(Debug)]
pub struct Rule {
    /// For logs (and metric labels later): the configured name, or `rules[i]` / `default`.
    pub name: String,
    pub matcher: Matcher,
    /// `None`: the route needs no token.
    pub requires: Option<Requirement>,
    pub mode: Mode,
    pub on_keys_unavailable: OnKeysUnavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Deny with 401/403/503.
    Enforce,
    /// Decide fully, never block; tell the upstream and the log what would have happened.
    Shadow,
    /// No authentication (identity headers are still stripped).
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnKeysUnavailable {
    /// 503 with Retry-After.
    FailClosed,
    /// Let the request through without identity, flagged with `x-auth-degraded` and logged.
    Degraded,
}

#[derive(Debug, Default)]
pub struct Matcher {
    pub path: Option<PathMatch>,
    /// Uppercase methods; empty matches any.
    pub methods: Vec<String>,
    /// Lowercase hosts without port; `*.example.com` matches subdomains. Empty matches any.
    pub hosts: Vec<String>,
    pub route_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Segments of a template: a literal, `*`/`{name}` for one segment, `**` (last) for the rest.
    Template(Vec<Segment>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    One,
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Indexes into `Config::providers`; a token from any one of them satisfies the rule.
    pub providers: Vec<usize>,
    /// Replaces the providers' audiences for this rule.
    pub audiences: Option<Vec<String>>,
    /// All of these scopes are required.
    pub scopes: Vec<String>,
    /// At least one of these scopes is required (when not empty).
    pub any_scopes: Vec<String>,
    pub claims: Vec<ClaimRequirement>,
    /// A request without any token passes (without identity); a presented token must still be valid.
    pub allow_missing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequirement {
    pub name: String,
    /// `None`: the claim must be present (and not null). Otherwise its value (or one of its array
    /// elements) must equal one of these.
    pub values: Option<Vec<String>>,
}

const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_CACHE_MS: u64 = 600_000;
const DEFAULT_WAIT_MS: u64 = 5_000;
const DEFAULT_MAX_STALE_MS: u64 = 900_000;
const DEFAULT_REFETCH_INTERVAL_MS: u64 = 30_000;
const DEFAULT_SKEW_SECS: u64 = 60;
const MAX_SKEW_SECS: u64 = 600;

/// Parses `"5s"`, `"1.5s"` or `"250ms"` (protobuf JSON durations, plus `ms` for convenience).
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let (num, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let ms = value * scale;
    if !ms.is_finite() || !(0.0..=1e12).contains(&ms) {
        return None;
    }
    Some(ms.round() as u64)
}

fn duration(
    field: &str,
    text: Option<&String>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(text) = text else { return Ok(default) };
    let ms = parse_duration_ms(text).ok_or_else(|| {
        err(
            field,
            format!("{text:?} is not a duration like \"5s\" or \"250ms\""),
        )
    })?;
    if ms < min || ms > max {
        return Err(err(field, format!("must be between {min}ms and {max}ms")));
    }
    Ok(ms)
}

/// Splits `http(s)://authority/path` into (authority, path).
pub fn split_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let bad = |s: &str| s.bytes().any(|b| b.is_ascii_control() || b == b' ');
    if authority.is_empty() || bad(authority) || bad(path) || path.contains('#') {
        return None;
    }
    Some((authority.to_owned(), path.to_owned()))
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Config {
    pub fn parse(bytes: &[u8]) -> Result<Config, ConfigError> {
        // serde keeps the last of two members with one name inside maps (two providers called
        // "corp"): a config that says two things is refused rather than read one way.
        if crate::json::parse(bytes) == Err(crate::json::StrictError::DuplicateMember) {
            return Err(err(
                "",
                "a JSON object names the same member twice (e.g. two providers of one name)",
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
            let field = e.path().to_string();
            // serde_json appends " at line L column C"; keep it, it helps find the spot.
            err(field, e.into_inner().to_string())
        })?;
        // One JSON document and nothing after it: trailing bytes are a mistake, not something to drop.
        de.end()
            .map_err(|e| err("", format!("unexpected data after the configuration: {e}")))?;
        compile(raw)
    }
}

fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.providers.is_empty() {
        return Err(err("providers", "at least one provider is required"));
    }
    let mut providers = Vec::new();
    for (name, p) in &raw.providers {
        providers.push(compile_provider(name, p)?);
    }
    let index_of = |field: &str, name: &str| -> Result<usize, ConfigError> {
        providers
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| err(field, format!("no provider named {name:?}")))
    };
    if raw.rules.is_empty() {
        return Err(err(
            "rules",
            "at least one rule is required (requests matching no rule are denied unless a default is set)",
        ));
    }
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let f = format!("rules[{i}]");
        // Rule names become metric labels and stat-name segments: keep them to a safe alphabet.
        let name = match &r.name {
            Some(n)
                if n.is_empty()
                    || n.len() > 64
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                return Err(err(
                    format!("{f}.name"),
                    "use 1 to 64 letters, digits, '-' or '_'",
                ))
            }
            Some(n) if n == "default" || n == NO_RULE_ROUTE => {
                return Err(err(format!("{f}.name"), format!("{n:?} is reserved")))
            }
            Some(n) => n.clone(),
            None => format!("rule_{i}"),
        };
        if rules.iter().any(|x: &Rule| x.name == name) {
            return Err(err(
                format!("{f}.name"),
                format!("{name:?} is used by another rule"),
            ));
        }
        let matcher = compile_match(&format!("{f}.match"), &r.matcher)?;
        let requires =
            compile_requirement(&format!("{f}.requires"), r.requires.as_ref(), &index_of)?;
        rules.push(Rule {
            name,
            matcher,
            requires,
            mode: r.mode.unwrap_or(Mode::Enforce),
            on_keys_unavailable: r
                .on_keys_unavailable
                .unwrap_or(OnKeysUnavailable::FailClosed),
        });
    }
    let default_rule = match &raw.default {
        None => None,
        Some(d) => Some(Rule {
            name: "default".to_owned(),
            matcher: Matcher::default(),
            requires: compile_requirement("default.requires", d.requires.as_ref(), &index_of)?,
            mode: d.mode.unwrap_or(Mode::Enforce),
            on_keys_unavailable: d
                .on_keys_unavailable
                .unwrap_or(OnKeysUnavailable::FailClosed),
        }),
    };
    let uses_route_names = rules.iter().any(|r| r.matcher.route_name.is_some());
    let uses_hosts = rules.iter().any(|r| !r.matcher.hosts.is_empty());
    let strip_header_prefixes = match &raw.strip_header_prefixes {
        None => vec![
            "x-user-".to_owned(),
            "x-tenant-".to_owned(),
            "x-auth-".to_owned(),
        ],
        Some(list) => {
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let p = crate::headers::header_key(p);
                if p.len() < 3 || !is_header_name(&p) {
                    return Err(err(
                        format!("strip_header_prefixes[{i}]"),
                        "must be a header-name prefix of at least 3 characters",
                    ));
                }
                out.push(p);
            }
            out
        }
    };
    // Compared in `header_key` form: every spelling a backend reads as the same header.
    let mut managed_headers = vec![SHADOW_HEADER.to_owned(), DEGRADED_HEADER.to_owned()];
    for p in &providers {
        for ch in &p.claim_to_headers {
            let key = crate::headers::header_key(&ch.header);
            if !managed_headers.contains(&key) {
                managed_headers.push(key);
            }
        }
    }
    let mut token_headers: Vec<String> = Vec::new();
    for p in &providers {
        for source in &p.sources {
            if let TokenSource::Header { name, .. } = source {
                let name = &crate::headers::header_key(name);
                if managed_headers.contains(name) {
                    return Err(err(
                        format!("providers.{}.from_headers", p.name),
                        format!("{name:?} is also an identity header the filter sets"),
                    ));
                }
                if !token_headers.contains(name) {
                    token_headers.push(name.clone());
                }
            }
        }
    }
    let audit = match &raw.audit {
        None => Audit {
            filter_state: true,
            log: false,
            allow_sample_rate: 1.0,
            tenant_claim: "tenant".to_owned(),
        },
        Some(a) => {
            let rate = a.allow_sample_rate.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&rate) {
                return Err(err(
                    "audit.allow_sample_rate",
                    "must be between 0.0 and 1.0",
                ));
            }
            let tenant_claim = a
                .tenant_claim
                .clone()
                .unwrap_or_else(|| "tenant".to_owned());
            if tenant_claim.is_empty() {
                return Err(err("audit.tenant_claim", "must not be empty"));
            }
            Audit {
                filter_state: a.filter_state.unwrap_or(true),
                log: a.log.unwrap_or(false),
                allow_sample_rate: rate,
                tenant_claim,
            }
        }
    };
    let token_cache_size = raw.token_cache_size.unwrap_or(1024);
    if token_cache_size > 100_000 {
        return Err(err("token_cache_size", "must be at most 100000"));
    }
    let max_header_value_bytes = raw.max_header_value_bytes.unwrap_or(4096);
    if !(16..=16_384).contains(&max_header_value_bytes) {
        return Err(err(
            "max_header_value_bytes",
            "must be between 16 and 16384",
        ));
    }
    let realm = raw.realm.unwrap_or_else(|| "envoy".to_owned());
    if realm.is_empty()
        || realm
            .bytes()
            .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
    {
        return Err(err(
            "realm",
            "must be non-empty printable ASCII without quotes or backslashes",
        ));
    }
    let jwks_wait_timeout_ms = duration(
        "jwks_wait_timeout",
        raw.jwks_wait_timeout.as_ref(),
        DEFAULT_WAIT_MS,
        0,
        60_000,
    )?;
    let signature_backend = match raw.signature_backend.as_deref() {
        None => BackendChoice::Auto,
        Some(name) => BackendChoice::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                err(
                    "signature_backend",
                    format!("unknown backend {name:?}; use auto, host or wasm"),
                )
            })?,
    };
    Ok(Config {
        providers,
        rules,
        default_rule,
        uses_route_names,
        allow_cors_preflight: raw.allow_cors_preflight.unwrap_or(true),
        strip_header_prefixes,
        managed_headers,
        token_headers,
        uses_hosts,
        max_header_value_bytes,
        audit,
        token_cache_size,
        realm,
        jwks_wait_timeout_ms,
        signature_backend,
    })
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn compile_match(f: &str, m: &RawMatch) -> Result<Matcher, ConfigError> {
    let path = match (&m.prefix, &m.path, &m.template) {
        (None, None, None) => None,
        (Some(p), None, None) => Some(PathMatch::Prefix(p.clone())),
        (None, Some(p), None) => Some(PathMatch::Exact(p.clone())),
        (None, None, Some(t)) => Some(PathMatch::Template(compile_template(
            &format!("{f}.template"),
            t,
        )?)),
        _ => return Err(err(f, "at most one of prefix, path or template")),
    };
    for (which, p) in [
        ("prefix", &m.prefix),
        ("path", &m.path),
        ("template", &m.template),
    ] {
        if let Some(p) = p {
            if !p.starts_with('/') || p.contains(['?', '#']) {
                return Err(err(
                    format!("{f}.{which}"),
                    "must start with / and hold no query or fragment",
                ));
            }
        }
    }
    let mut methods = Vec::new();
    for (i, method) in m.methods.iter().flatten().enumerate() {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(err(
                format!("{f}.methods[{i}]"),
                "must be an HTTP method name",
            ));
        }
        methods.push(method.to_ascii_uppercase());
    }
    let mut hosts = Vec::new();
    for (i, host) in m.hosts.iter().flatten().enumerate() {
        let (wildcard, bare) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host.as_str()),
        };
        // The same normal form as request hosts (`rules::normalize_host`): lowercase, one trailing
        // dot dropped, no empty label.
        let normal = (!bare.contains([':', '[', '*']))
            .then(|| crate::rules::normalize_host(bare.as_bytes()))
            .flatten()
            .and_then(|h| String::from_utf8(h).ok());
        let Some(normal) = normal else {
            return Err(err(
                format!("{f}.hosts[{i}]"),
                "must be a host name, optionally starting with *. (no port)",
            ));
        };
        hosts.push(if wildcard {
            format!("*.{normal}")
        } else {
            normal
        });
    }
    if let Some(name) = &m.route_name {
        if name.is_empty() {
            return Err(err(format!("{f}.route_name"), "must not be empty"));
        }
    }
    Ok(Matcher {
        path,
        methods,
        hosts,
        route_name: m.route_name.clone(),
    })
}

fn compile_template(f: &str, t: &str) -> Result<Vec<Segment>, ConfigError> {
    let parts: Vec<&str> = t.trim_start_matches('/').split('/').collect();
    let mut segments = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let seg = match *part {
            "**" if i + 1 == parts.len() => Segment::Rest,
            "**" => return Err(err(f, "** may only be the last segment")),
            "*" => Segment::One,
            p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => Segment::One,
            p if p.contains(['*', '{', '}']) => {
                return Err(err(
                    f,
                    format!("segment {p:?}: use *, {{name}} or ** as whole segments"),
                ))
            }
            p => Segment::Literal(p.to_owned()),
        };
        segments.push(seg);
    }
    Ok(segments)
}

fn compile_requirement(
    f: &str,
    req: Option<&RawRequirement>,
    index_of: &dyn Fn(&str, &str) -> Result<usize, ConfigError>,
) -> Result<Option<Requirement>, ConfigError> {
    let Some(req) = req else { return Ok(None) };
    let providers = match (&req.provider_name, &req.requires_any) {
        (Some(name), None) => vec![index_of(&format!("{f}.provider_name"), name)?],
        (None, Some(any)) => {
            if any.requirements.is_empty() {
                return Err(err(format!("{f}.requires_any.requirements"), "must not be empty"));
            }
            let mut idx = Vec::new();
            for (j, pr) in any.requirements.iter().enumerate() {
                let field = format!("{f}.requires_any.requirements[{j}].provider_name");
                let k = index_of(&field, &pr.provider_name)?;
                if !idx.contains(&k) {
                    idx.push(k);
                }
            }
            idx
        }
        _ => {
            return Err(err(
                f,
                "exactly one of provider_name or requires_any is required (omit requires for a public route)",
            ))
        }
    };
    let list = |field: &str, v: &Option<Vec<String>>| -> Result<Vec<String>, ConfigError> {
        let v = v.clone().unwrap_or_default();
        if v.iter().any(|x| {
            x.is_empty()
                || x.bytes().any(|b| {
                    b.is_ascii_whitespace() || b.is_ascii_control() || b == b'"' || b == b'\\'
                })
        }) {
            return Err(err(
                format!("{f}.{field}"),
                "entries must be non-empty, without spaces, quotes or backslashes",
            ));
        }
        Ok(v)
    };
    let audiences = match &req.audiences {
        None => None,
        Some(a) if a.is_empty() => {
            return Err(err(format!("{f}.audiences"), "must not be empty when set"))
        }
        Some(_) => Some(list("audiences", &req.audiences)?),
    };
    let mut claims = Vec::new();
    for (i, c) in req.claims.iter().flatten().enumerate() {
        if c.name.is_empty() {
            return Err(err(format!("{f}.claims[{i}].name"), "must not be empty"));
        }
        if c.values.as_ref().is_some_and(Vec::is_empty) {
            return Err(err(
                format!("{f}.claims[{i}].values"),
                "must not be empty when set (omit it to require presence)",
            ));
        }
        claims.push(ClaimRequirement {
            name: c.name.clone(),
            values: c.values.clone(),
        });
    }
    Ok(Some(Requirement {
        providers,
        audiences,
        scopes: list("scopes", &req.scopes)?,
        any_scopes: list("any_scopes", &req.any_scopes)?,
        claims,
        allow_missing: req.allow_missing.unwrap_or(false),
    }))
}

fn compile_provider(name: &str, p: &RawProvider) -> Result<Provider, ConfigError> {
    let f = format!("providers.{name}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(err(
            &f,
            "provider names use only letters, digits, '-' and '_'",
        ));
    }
    if p.issuer.is_empty() {
        return Err(err(format!("{f}.issuer"), "must not be empty"));
    }
    let audiences = p.audiences.clone().unwrap_or_default();
    if audiences.iter().any(String::is_empty) {
        return Err(err(
            format!("{f}.audiences"),
            "must not contain an empty audience",
        ));
    }
    let jwks = match (&p.remote_jwks, &p.local_jwks) {
        (Some(r), None) => {
            let rf = format!("{f}.remote_jwks");
            let (uf, uri, cluster, timeout, discovery) = match (&r.http_uri, &r.discovery) {
                (Some(h), None) => (
                    format!("{rf}.http_uri"),
                    h.uri.clone(),
                    &h.cluster,
                    &h.timeout,
                    false,
                ),
                (None, Some(d)) => {
                    let uri = match &d.uri {
                        Some(u) => u.clone(),
                        None if p.issuer.starts_with("https://")
                            || p.issuer.starts_with("http://") =>
                        {
                            format!(
                                "{}/.well-known/openid-configuration",
                                p.issuer.trim_end_matches('/')
                            )
                        }
                        None => {
                            return Err(err(
                                format!("{rf}.discovery.uri"),
                                "required when the issuer is not an http(s) URL",
                            ))
                        }
                    };
                    (format!("{rf}.discovery"), uri, &d.cluster, &d.timeout, true)
                }
                _ => return Err(err(&rf, "exactly one of http_uri or discovery is required")),
            };
            let (authority, path) = split_uri(&uri).ok_or_else(|| {
                err(
                    format!("{uf}.uri"),
                    "must be http:// or https:// followed by a host and a path",
                )
            })?;
            if cluster.is_empty() {
                return Err(err(format!("{uf}.cluster"), "must name an Envoy cluster"));
            }
            let timeout_ms = duration(
                &format!("{uf}.timeout"),
                timeout.as_ref(),
                DEFAULT_TIMEOUT_MS,
                1,
                60_000,
            )?;
            let cache_duration_ms = duration(
                &format!("{rf}.cache_duration"),
                r.cache_duration.as_ref(),
                DEFAULT_CACHE_MS,
                1_000,
                86_400_000,
            )?;
            let max_stale_ms = duration(
                &format!("{rf}.max_stale"),
                r.max_stale.as_ref(),
                DEFAULT_MAX_STALE_MS,
                0,
                7 * 86_400_000,
            )?;
            let rotation_grace_ms = duration(
                &format!("{rf}.rotation_grace"),
                r.rotation_grace.as_ref(),
                cache_duration_ms,
                0,
                7 * 86_400_000,
            )?;
            let refetch_interval_ms = duration(
                &format!("{rf}.unknown_kid_refetch_interval"),
                r.unknown_kid_refetch_interval.as_ref(),
                DEFAULT_REFETCH_INTERVAL_MS,
                1_000,
                86_400_000,
            )?;
            let source = format!("{cluster}|{authority}|{path}|{discovery}");
            let cache_key = format!("jwt_guard.jwks.{name}.{:016x}", fnv1a(&source));
            let fetch_budget_ms = if discovery {
                2 * timeout_ms
            } else {
                timeout_ms
            };
            JwksSource::Remote(RemoteJwks {
                cluster: cluster.clone(),
                authority,
                path,
                discovery,
                https: uri.starts_with("https://"),
                timeout_ms,
                timing: crate::keycache::Timing {
                    cache_duration_ms,
                    fetch_budget_ms,
                    max_stale_ms,
                    rotation_grace_ms,
                    refetch_interval_ms,
                },
                cache_key,
            })
        }
        (None, Some(l)) => {
            let lf = format!("{f}.local_jwks");
            let text = match (&l.inline_string, &l.inline) {
                (Some(s), None) => s.clone(),
                (None, Some(v)) => v.to_string(),
                _ => {
                    return Err(err(
                        lf,
                        "exactly one of inline_string or inline is required",
                    ))
                }
            };
            let set = KeySet::parse(text.as_bytes()).map_err(|e| err(&lf, e.to_string()))?;
            JwksSource::Local(set)
        }
        _ => {
            return Err(err(
                &f,
                "exactly one of remote_jwks or local_jwks is required",
            ))
        }
    };
    let algorithms = match &p.algorithms {
        None => Alg::ALL.to_vec(),
        Some(list) => {
            if list.is_empty() {
                return Err(err(format!("{f}.algorithms"), "must not be empty"));
            }
            let mut algs = Vec::new();
            for (i, a) in list.iter().enumerate() {
                let alg = Alg::from_name(a).ok_or_else(|| {
                    let why = if a.eq_ignore_ascii_case("none") {
                        "unsigned tokens are never accepted".to_owned()
                    } else if a.starts_with("HS") {
                        "HMAC is never accepted: it would be keyed with public key material"
                            .to_owned()
                    } else {
                        format!("supported: {}", Alg::ALL.map(Alg::name).join(", "))
                    };
                    err(
                        format!("{f}.algorithms[{i}]"),
                        format!("{a:?} is not supported ({why})"),
                    )
                })?;
                if !algs.contains(&alg) {
                    algs.push(alg);
                }
            }
            algs
        }
    };
    let clock_skew_secs = p.clock_skew_seconds.unwrap_or(DEFAULT_SKEW_SECS);
    if clock_skew_secs > MAX_SKEW_SECS {
        return Err(err(
            format!("{f}.clock_skew_seconds"),
            format!("must be at most {MAX_SKEW_SECS}"),
        ));
    }
    let max_token_bytes = p.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
    if !(256..=65_536).contains(&max_token_bytes) {
        return Err(err(
            format!("{f}.max_token_bytes"),
            "must be between 256 and 65536",
        ));
    }
    let mut sources = Vec::new();
    for (i, h) in p.from_headers.iter().flatten().enumerate() {
        let name = h.name.to_ascii_lowercase();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(err(
                format!("{f}.from_headers[{i}].name"),
                "must be a header name",
            ));
        }
        sources.push(TokenSource::Header {
            name,
            prefix: h.value_prefix.clone().unwrap_or_default(),
        });
    }
    for (i, q) in p.from_params.iter().flatten().enumerate() {
        if q.is_empty() {
            return Err(err(format!("{f}.from_params[{i}]"), "must not be empty"));
        }
        sources.push(TokenSource::Param(q.clone()));
    }
    for (i, c) in p.from_cookies.iter().flatten().enumerate() {
        if c.is_empty() || c.contains(['=', ';', ' ']) {
            return Err(err(
                format!("{f}.from_cookies[{i}]"),
                "must be a cookie name",
            ));
        }
        sources.push(TokenSource::Cookie(c.clone()));
    }
    if sources.is_empty() {
        sources.push(TokenSource::Header {
            name: "authorization".to_owned(),
            prefix: "Bearer ".to_owned(),
        });
    }
    let claim_to_headers = match &p.claim_to_headers {
        None => vec![
            ClaimHeader {
                claim: "sub".into(),
                header: "x-user-sub".into(),
            },
            ClaimHeader {
                claim: "iss".into(),
                header: "x-user-iss".into(),
            },
            ClaimHeader {
                claim: "scope".into(),
                header: "x-user-scope".into(),
            },
            ClaimHeader {
                claim: "tenant".into(),
                header: "x-tenant-id".into(),
            },
        ],
        Some(list) => {
            let mut out: Vec<ClaimHeader> = Vec::new();
            for (i, ch) in list.iter().enumerate() {
                let header = ch.header.to_ascii_lowercase();
                if !is_header_name(&header) || header.starts_with(':') {
                    return Err(err(
                        format!("{f}.claim_to_headers[{i}].header"),
                        "must be a header name",
                    ));
                }
                if matches!(
                    header.as_str(),
                    "authorization" | "cookie" | "host" | "content-length" | "transfer-encoding"
                ) {
                    return Err(err(
                        format!("{f}.claim_to_headers[{i}].header"),
                        "must not be a protocol or credential header",
                    ));
                }
                if ch.claim.is_empty() {
                    return Err(err(
                        format!("{f}.claim_to_headers[{i}].claim"),
                        "must not be empty",
                    ));
                }
                let key = crate::headers::header_key(&header);
                if out
                    .iter()
                    .any(|x| crate::headers::header_key(&x.header) == key)
                {
                    return Err(err(
                        format!("{f}.claim_to_headers[{i}].header"),
                        "is mapped twice (names compare without case, with '_' as '-')",
                    ));
                }
                out.push(ClaimHeader {
                    claim: ch.claim.clone(),
                    header,
                });
            }
            out
        }
    };
    Ok(Provider {
        claim_to_headers,
        forward_token: p.forward_token.unwrap_or(true),
        name: name.to_owned(),
        issuer: p.issuer.clone(),
        audiences,
        jwks,
        algorithms,
        clock_skew_secs,
        require_expiration: p.require_expiration.unwrap_or(true),
        sources,
        max_token_bytes,
    })
}
