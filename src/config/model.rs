//! The compiled, validated configuration the filter runs on.

use crate::crypto::Alg;
use crate::jwks::KeySet;
use serde::Deserialize;

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
    pub dpop: DpopSettings,
    /// When the filter changed a request header (stripped, scrubbed or set), Envoy matches the route
    /// again, so routes see only verified values.
    pub clear_route_cache: bool,
    /// How denials outside any rule are answered.
    pub denials: Denials,
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
    /// The `sub` must fit one of these (empty: any).
    pub subjects: Vec<StringMatch>,
    /// `exp - iat` may be at most this (then `iat` is required).
    pub max_lifetime_secs: Option<u64>,
    /// The verified payload (base64url, as in the token) goes to the upstream in this header.
    pub forward_payload_header: Option<String>,
    /// Accepted `typ` values, lowercase without `application/` (empty: any, or none).
    pub allowed_types: Vec<String>,
    /// For an issuer template (`https://login.example.com/{tenant}/v2.0`): which tenants.
    pub tenants: Option<Tenants>,
    /// The tenant of a templated issuer goes to the upstream in this header.
    pub tenant_header: Option<String>,
}

/// The tenants a templated issuer accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenants {
    /// Every tenant (said explicitly in the config).
    Any,
    List(Vec<String>),
}

/// The placeholder of an issuer template.
pub const TENANT_PLACEHOLDER: &str = "{tenant}";

/// A tenant id as a templated issuer carries it: 1 to 128 letters, digits, `.`, `_`, `-`.
pub fn is_tenant_id(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Provider {
    /// Whether `iss` is this provider's issuer: `Some(None)` for a plain issuer, `Some(Some(tenant))`
    /// for a templated one whose tenant is allowed, `None` otherwise.
    pub fn issuer_fits<'a>(&self, iss: &'a str) -> Option<Option<&'a str>> {
        let Some(tenants) = &self.tenants else {
            return (iss == self.issuer).then_some(None);
        };
        let (prefix, suffix) = self.issuer.split_once(TENANT_PLACEHOLDER)?;
        let tenant = iss.strip_prefix(prefix)?.strip_suffix(suffix)?;
        let allowed = match tenants {
            Tenants::Any => true,
            Tenants::List(list) => list.iter().any(|t| t == tenant),
        };
        (is_tenant_id(tenant) && allowed).then_some(Some(tenant))
    }

    /// Whether a discovery document's `issuer` names this provider: the issuer itself, or for a
    /// template the same template with any `{…}` placeholder (a multi-tenant IdP's common document
    /// says `{tenantid}`), or an allowed tenant's issuer.
    pub fn discovery_issuer_fits(&self, found: &str) -> bool {
        if self.issuer_fits(found).is_some() || found == self.issuer {
            return true;
        }
        let Some((prefix, suffix)) = self.issuer.split_once(TENANT_PLACEHOLDER) else {
            return false;
        };
        found
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .is_some_and(|middle| {
                middle.len() > 2
                    && middle.starts_with('{')
                    && middle.ends_with('}')
                    && !middle[1..middle.len() - 1].contains(['{', '}', '/'])
            })
    }
}

/// A string matcher (as `jwt_authn`'s `subjects`): exact, prefix or suffix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl StringMatch {
    pub fn matches(&self, s: &str) -> bool {
        match self {
            StringMatch::Exact(x) => s == x,
            StringMatch::Prefix(p) => s.starts_with(p.as_str()),
            StringMatch::Suffix(p) => s.ends_with(p.as_str()),
        }
    }
}

/// A `typ` in the form `allowed_types` compares: lowercase, without `application/` (RFC 7515 §4.1.9).
pub fn type_key(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    lower
        .strip_prefix("application/")
        .map_or(lower.clone(), str::to_owned)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    /// `scope` means the union of `scope` and `scp`.
    pub claim: ClaimPath,
    pub header: String,
}

fn walk<'a, 'p>(
    claims: &'a serde_json::Map<String, serde_json::Value>,
    mut parts: impl Iterator<Item = &'p str>,
) -> Option<&'a serde_json::Value> {
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// A claim by name: the top-level claim of exactly that name, else the dotted path into nested
/// objects (claim names such as `https://example.com/tenant` contain dots themselves).
pub fn claim_by_name<'a>(
    claims: &'a serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Option<&'a serde_json::Value> {
    claims.get(name).or_else(|| walk(claims, name.split('.')))
}

/// Where a claim is: a name (the top-level claim of that exact name, else a dotted path into nested
/// objects, `org.id`), or explicit segments that are never split (`["https://example.com/org", "id"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPath {
    Name(String),
    Segments(Vec<String>),
}

impl ClaimPath {
    /// The claim's value in `claims`, if present.
    pub fn lookup<'a>(
        &self,
        claims: &'a serde_json::Map<String, serde_json::Value>,
    ) -> Option<&'a serde_json::Value> {
        match self {
            ClaimPath::Name(name) => claim_by_name(claims, name),
            ClaimPath::Segments(segments) => walk(claims, segments.iter().map(String::as_str)),
        }
    }

    /// True for the plain name `name`.
    pub fn is_name(&self, name: &str) -> bool {
        matches!(self, ClaimPath::Name(n) if n == name)
    }

    /// For logs and messages: the name, or the segments joined with ` / `.
    pub fn display(&self) -> String {
        match self {
            ClaimPath::Name(n) => n.clone(),
            ClaimPath::Segments(s) => s.join(" / "),
        }
    }
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
    pub timing: Timing,
    /// Identifies this provider's JWKS source in shared data: a config change that points a provider
    /// elsewhere never reads the old source's keys.
    pub cache_key: String,
    /// Extra headers on the discovery and JWKS requests; a `user-agent` is always sent.
    pub request_headers: Vec<(String, String)>,
}

/// The `user-agent` of key fetches unless `request_headers` names one (some IdP firewalls refuse
/// requests without one).
pub const FETCH_USER_AGENT: &str = concat!("jwt-guard/", env!("CARGO_PKG_VERSION"));

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

#[derive(Debug, Clone)]
pub struct Rule {
    /// For logs (and metric labels later): the configured name, or `rules[i]` / `default`.
    pub name: String,
    pub matcher: Matcher,
    /// `None`: the route needs no token.
    pub requires: Option<Requirement>,
    pub mode: Mode,
    pub on_keys_unavailable: OnKeysUnavailable,
    /// How this rule's denials are answered (the top-level `denials`, or the rule's own).
    pub denials: Denials,
}

/// The shape of denial answers. Metrics and audit records keep the exact reason whatever this says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Denials {
    /// Hide the failure detail (as `jwt_authn`'s `strip_failure_response`): the status and the
    /// challenge's `error` stay; `error_description` and the body's `code` and `message` go.
    pub strip_details: bool,
    /// The JSON body with `{status}`, `{error}`, `{code}`, `{message}` in its strings replaced.
    pub body_template: Option<serde_json::Value>,
    /// The rule needs DPoP (`binding: dpop` or `any`): its 401 challenges are `DPoP` ones, so a
    /// client without a token learns which scheme and algorithms to use (RFC 9449 §7.1).
    pub dpop_challenge: bool,
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

#[derive(Debug, Default, Clone)]
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
    /// The sender constraint the route needs (a token carrying `cnf` is checked against it anyway).
    pub binding: Binding,
}

/// Which proof of possession a route needs (RFC 9449 DPoP, RFC 8705 mTLS-bound tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// Bearer tokens are fine; a bound token must still prove its binding.
    #[default]
    None,
    /// A DPoP-bound token (`cnf.jkt`) with a valid `DPoP` proof.
    Dpop,
    /// An mTLS-bound token (`cnf["x5t#S256"]`) over a connection with that client certificate.
    Mtls,
    /// Either.
    Any,
}

impl Binding {
    pub fn name(self) -> &'static str {
        match self {
            Binding::None => "none",
            Binding::Dpop => "dpop",
            Binding::Mtls => "mtls",
            Binding::Any => "any",
        }
    }
}

/// How DPoP proofs are checked (top-level `dpop`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopSettings {
    /// A proof's `iat` may be this far from now (plus the provider's clock skew), either way.
    pub iat_window_secs: u64,
    /// `scheme://authority` the clients see when TLS ends in front of Envoy; else the request's.
    pub external_base: Option<String>,
    /// Proofs remembered per window across the Envoy (replay detection), at most.
    pub replay_capacity: usize,
}

impl Default for DpopSettings {
    fn default() -> Self {
        DpopSettings {
            iat_window_secs: 60,
            external_base: None,
            replay_capacity: 262_144,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequirement {
    pub name: ClaimPath,
    /// `None`: the claim must be present (and not null). Otherwise its value (or one of its array
    /// elements) must equal one of these.
    pub values: Option<Vec<String>>,
}

/// Timing of one provider's key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub cache_duration_ms: u64,
    /// Budget for one refresh (discovery + JWKS fetch); the lease lasts this long plus a margin.
    pub fetch_budget_ms: u64,
    /// How long an expired set is still used while refreshes fail (stale-if-error).
    pub max_stale_ms: u64,
    /// How long a key that left the JWKS stays usable.
    pub rotation_grace_ms: u64,
    /// At most one unknown-`kid` refetch per this interval.
    pub refetch_interval_ms: u64,
}
