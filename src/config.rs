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
    realm: Option<String>,
    jwks_wait_timeout: Option<String>,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteJwks {
    http_uri: RawHttpUri,
    cache_duration: Option<String>,
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
    #[serde(rename = "match")]
    matcher: RawMatch,
    requires: Option<RawRequirement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    prefix: Option<String>,
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    provider_name: Option<String>,
    requires_any: Option<RawRequiresAny>,
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
    pub realm: String,
    /// How long a request may wait for the first key set of a provider before failing closed.
    pub jwks_wait_timeout_ms: u64,
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
}

#[derive(Debug)]
pub enum JwksSource {
    Remote(RemoteJwks),
    Local(KeySet),
}

#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    pub cache_duration_ms: u64,
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
    pub matcher: PathMatch,
    /// `None`: the route needs no token.
    pub requires: Option<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Indexes into `Config::providers`; a token from any one of them satisfies the rule.
    pub providers: Vec<usize>,
}

const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_CACHE_MS: u64 = 600_000;
const DEFAULT_WAIT_MS: u64 = 5_000;
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
fn split_uri(uri: &str) -> Option<(String, String)> {
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
            "at least one rule is required (requests matching no rule are denied)",
        ));
    }
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let f = format!("rules[{i}]");
        let matcher = match (&r.matcher.prefix, &r.matcher.path) {
            (Some(p), None) => PathMatch::Prefix(p.clone()),
            (None, Some(p)) => PathMatch::Exact(p.clone()),
            _ => {
                return Err(err(
                    format!("{f}.match"),
                    "exactly one of prefix or path is required",
                ))
            }
        };
        let (PathMatch::Prefix(p) | PathMatch::Exact(p)) = &matcher;
        if !p.starts_with('/') {
            return Err(err(format!("{f}.match"), "must start with /"));
        }
        let requires = match &r.requires {
            None => None,
            Some(req) => Some(match (&req.provider_name, &req.requires_any) {
                (Some(name), None) => Requirement {
                    providers: vec![index_of(&format!("{f}.requires.provider_name"), name)?],
                },
                (None, Some(any)) => {
                    if any.requirements.is_empty() {
                        return Err(err(format!("{f}.requires.requires_any.requirements"), "must not be empty"));
                    }
                    let mut idx = Vec::new();
                    for (j, pr) in any.requirements.iter().enumerate() {
                        let field = format!("{f}.requires.requires_any.requirements[{j}].provider_name");
                        let k = index_of(&field, &pr.provider_name)?;
                        if !idx.contains(&k) {
                            idx.push(k);
                        }
                    }
                    Requirement { providers: idx }
                }
                _ => {
                    return Err(err(
                        format!("{f}.requires"),
                        "exactly one of provider_name or requires_any is required (omit requires for a public route)",
                    ))
                }
            }),
        };
        rules.push(Rule { matcher, requires });
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
    Ok(Config {
        providers,
        rules,
        realm,
        jwks_wait_timeout_ms,
    })
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
            let uf = format!("{f}.remote_jwks.http_uri");
            let (authority, path) = split_uri(&r.http_uri.uri).ok_or_else(|| {
                err(
                    format!("{uf}.uri"),
                    "must be http:// or https:// followed by a host and a path",
                )
            })?;
            if r.http_uri.cluster.is_empty() {
                return Err(err(format!("{uf}.cluster"), "must name an Envoy cluster"));
            }
            let timeout_ms = duration(
                &format!("{uf}.timeout"),
                r.http_uri.timeout.as_ref(),
                DEFAULT_TIMEOUT_MS,
                1,
                60_000,
            )?;
            let cache_duration_ms = duration(
                &format!("{f}.remote_jwks.cache_duration"),
                r.cache_duration.as_ref(),
                DEFAULT_CACHE_MS,
                1_000,
                86_400_000,
            )?;
            let source = format!("{}|{}|{}", r.http_uri.cluster, authority, path);
            let cache_key = format!("jwt_guard.jwks.{name}.{:016x}", fnv1a(&source));
            JwksSource::Remote(RemoteJwks {
                cluster: r.http_uri.cluster.clone(),
                authority,
                path,
                timeout_ms,
                cache_duration_ms,
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
    Ok(Provider {
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
