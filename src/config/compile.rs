//! Raw → compiled: defaults, bounds and every cross-field check, each error naming its field.

use super::model::*;
use super::raw::*;
use super::{err, ConfigError, NO_RULE_ROUTE};
use crate::crypto::Alg;
use crate::jwks::KeySet;
use crate::token::DEFAULT_MAX_TOKEN_BYTES;
use crate::units::{parse_duration_ms, split_uri};

const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_CACHE_MS: u64 = 600_000;
const DEFAULT_WAIT_MS: u64 = 5_000;
const DEFAULT_MAX_STALE_MS: u64 = 900_000;
const DEFAULT_REFETCH_INTERVAL_MS: u64 = 30_000;
const DEFAULT_SKEW_SECS: u64 = 60;
const MAX_SKEW_SECS: u64 = 600;

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
    let denials = match &raw.denials {
        None => Denials::default(),
        Some(d) => compile_denials("denials", d)?,
    };
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
        let mut rule_denials = match &r.denials {
            None => denials.clone(),
            Some(d) => compile_denials(&format!("{f}.denials"), d)?,
        };
        let requires =
            compile_requirement(&format!("{f}.requires"), r.requires.as_ref(), &index_of)?;
        rule_denials.dpop_challenge = requires
            .as_ref()
            .is_some_and(|q| matches!(q.binding, Binding::Dpop | Binding::Any));
        rules.push(Rule {
            name,
            matcher,
            requires,
            mode: r.mode.unwrap_or(Mode::Enforce),
            on_keys_unavailable: r
                .on_keys_unavailable
                .unwrap_or(OnKeysUnavailable::FailClosed),
            denials: rule_denials,
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
            denials: match &d.denials {
                None => denials.clone(),
                Some(x) => compile_denials("default.denials", x)?,
            },
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
                let p = crate::spelling::header_key(p);
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
        let set = p
            .claim_to_headers
            .iter()
            .map(|ch| &ch.header)
            .chain(p.forward_payload_header.as_ref())
            .chain(p.tenant_header.as_ref());
        for header in set {
            let key = crate::spelling::header_key(header);
            if !managed_headers.contains(&key) {
                managed_headers.push(key);
            }
        }
    }
    let mut token_headers: Vec<String> = Vec::new();
    for p in &providers {
        for source in &p.sources {
            if let TokenSource::Header { name, .. } = source {
                let name = &crate::spelling::header_key(name);
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
    let dpop = compile_dpop(raw.dpop.as_ref())?;
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
        dpop,
        clear_route_cache: raw.clear_route_cache.unwrap_or(true),
        denials,
    })
}

/// The placeholders a `body_template` string may use.
pub const BODY_PLACEHOLDERS: [&str; 4] = ["{status}", "{error}", "{code}", "{message}"];

fn compile_denials(f: &str, raw: &RawDenials) -> Result<Denials, ConfigError> {
    fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    if let Some(t) = &raw.body_template {
        if !t.is_object() {
            return Err(err(format!("{f}.body_template"), "must be a JSON object"));
        }
        let mut all = Vec::new();
        strings(t, &mut all);
        for s in all {
            let mut rest = s;
            while let Some(open) = rest.find('{') {
                let Some(close) = rest[open..].find('}') else {
                    break;
                };
                let name = &rest[open..open + close + 1];
                if !BODY_PLACEHOLDERS.contains(&name) {
                    return Err(err(
                        format!("{f}.body_template"),
                        format!(
                            "unknown placeholder {name}; use {}",
                            BODY_PLACEHOLDERS.join(", ")
                        ),
                    ));
                }
                rest = &rest[open + close + 1..];
            }
        }
    }
    Ok(Denials {
        strip_details: raw.strip_details.unwrap_or(false),
        body_template: raw.body_template.clone(),
        dpop_challenge: false,
    })
}

fn compile_dpop(raw: Option<&RawDpop>) -> Result<DpopSettings, ConfigError> {
    let defaults = DpopSettings::default();
    let Some(raw) = raw else {
        return Ok(defaults);
    };
    let iat_window_secs = duration(
        "dpop.iat_window",
        raw.iat_window.as_ref(),
        defaults.iat_window_secs * 1000,
        1_000,
        3_600_000,
    )? / 1000;
    let external_base = match &raw.external_base_url {
        None => None,
        Some(url) => match url
            .split_once("://")
            .map(|(scheme, rest)| format!("{}://{rest}", scheme.to_ascii_lowercase()))
            .as_deref()
            .and_then(|u| split_uri(u).map(|(a, p)| (u.starts_with("https://"), a, p)))
        {
            Some((https, authority, path)) if path == "/" => {
                let (scheme, default_port) = if https {
                    ("https", ":443")
                } else {
                    ("http", ":80")
                };
                let authority = authority.to_ascii_lowercase();
                let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
                Some(format!("{scheme}://{authority}"))
            }
            _ => {
                return Err(err(
                    "dpop.external_base_url",
                    format!("{url:?} is not scheme://authority (http or https, no path)"),
                ))
            }
        },
    };
    let replay_capacity = raw.replay_capacity.unwrap_or(defaults.replay_capacity);
    if !(64..=1_048_576).contains(&replay_capacity) {
        return Err(err(
            "dpop.replay_capacity",
            "must be between 64 and 1048576",
        ));
    }
    Ok(DpopSettings {
        iat_window_secs,
        external_base,
        replay_capacity,
    })
}

/// A claim name, or its explicit segments (none empty).
fn claim_path(f: &str, raw: &RawClaimName) -> Result<ClaimPath, ConfigError> {
    match raw {
        RawClaimName::Name(n) if !n.is_empty() => Ok(ClaimPath::Name(n.clone())),
        RawClaimName::Segments(s) if !s.is_empty() && s.iter().all(|x| !x.is_empty()) => {
            Ok(ClaimPath::Segments(s.clone()))
        }
        _ => Err(err(
            f,
            "must be a claim name, or a non-empty list of non-empty segments",
        )),
    }
}

/// Headers the filter must never set from a token.
fn is_protocol_header(name: &str) -> bool {
    name.starts_with(':')
        || matches!(
            name,
            "authorization"
                | "cookie"
                | "host"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "te"
                | "upgrade"
                | "dpop"
        )
}

/// A remote provider's `request_headers`: lowercase names, no protocol headers, no repeats.
fn request_headers(
    f: &str,
    raw: Option<&[RawHeaderValue]>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, h) in raw.into_iter().flatten().enumerate() {
        let name = h.name.to_ascii_lowercase();
        if !is_header_name(&name) || is_protocol_header(&name) || name == "accept" {
            return Err(err(
                format!("{f}.request_headers[{i}].name"),
                "must be a header name other than a protocol header or accept",
            ));
        }
        if h.value.bytes().any(|b| b.is_ascii_control()) {
            return Err(err(
                format!("{f}.request_headers[{i}].value"),
                "must not contain control characters",
            ));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(err(
                format!("{f}.request_headers[{i}].name"),
                "is named twice",
            ));
        }
        out.push((name, h.value.clone()));
    }
    if !out.iter().any(|(n, _)| n == "user-agent") {
        out.push(("user-agent".to_owned(), FETCH_USER_AGENT.to_owned()));
    }
    Ok(out)
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
            .then(|| crate::spelling::normalize_host(bare.as_bytes()))
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
        let name = claim_path(&format!("{f}.claims[{i}].name"), &c.name)?;
        if c.values.as_ref().is_some_and(Vec::is_empty) {
            return Err(err(
                format!("{f}.claims[{i}].values"),
                "must not be empty when set (omit it to require presence)",
            ));
        }
        claims.push(ClaimRequirement {
            name,
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
        binding: req.binding.unwrap_or_default(),
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
                timing: Timing {
                    cache_duration_ms,
                    fetch_budget_ms,
                    max_stale_ms,
                    rotation_grace_ms,
                    refetch_interval_ms,
                },
                cache_key,
                request_headers: request_headers(&rf, r.request_headers.as_deref())?,
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
                claim: ClaimPath::Name("sub".into()),
                header: "x-user-sub".into(),
            },
            ClaimHeader {
                claim: ClaimPath::Name("iss".into()),
                header: "x-user-iss".into(),
            },
            ClaimHeader {
                claim: ClaimPath::Name("scope".into()),
                header: "x-user-scope".into(),
            },
            ClaimHeader {
                claim: ClaimPath::Name("tenant".into()),
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
                if is_protocol_header(&header) {
                    return Err(err(
                        format!("{f}.claim_to_headers[{i}].header"),
                        "must not be a protocol or credential header",
                    ));
                }
                let claim = claim_path(&format!("{f}.claim_to_headers[{i}].claim"), &ch.claim)?;
                let key = crate::spelling::header_key(&header);
                if out
                    .iter()
                    .any(|x| crate::spelling::header_key(&x.header) == key)
                {
                    return Err(err(
                        format!("{f}.claim_to_headers[{i}].header"),
                        "is mapped twice (names compare without case, with '_' as '-')",
                    ));
                }
                out.push(ClaimHeader { claim, header });
            }
            out
        }
    };
    let mut subjects = Vec::new();
    for (i, m) in p.subjects.iter().flatten().enumerate() {
        let sf = format!("{f}.subjects[{i}]");
        subjects.push(match (&m.exact, &m.prefix, &m.suffix) {
            (Some(s), None, None) if !s.is_empty() => StringMatch::Exact(s.clone()),
            (None, Some(s), None) if !s.is_empty() => StringMatch::Prefix(s.clone()),
            (None, None, Some(s)) if !s.is_empty() => StringMatch::Suffix(s.clone()),
            _ => return Err(err(sf, "exactly one non-empty exact, prefix or suffix")),
        });
    }
    if p.subjects.as_ref().is_some_and(Vec::is_empty) {
        return Err(err(format!("{f}.subjects"), "must not be empty when set"));
    }
    let max_lifetime_secs = match &p.max_lifetime {
        None => None,
        Some(_) => Some(
            duration(
                &format!("{f}.max_lifetime"),
                p.max_lifetime.as_ref(),
                0,
                1_000,
                365 * 86_400 * 1000,
            )? / 1000,
        ),
    };
    let forward_payload_header = match &p.forward_payload_header {
        None => None,
        Some(h) => {
            let header = h.to_ascii_lowercase();
            if !is_header_name(&header) || is_protocol_header(&header) {
                return Err(err(
                    format!("{f}.forward_payload_header"),
                    "must be a header name, not a protocol or credential header",
                ));
            }
            let key = crate::spelling::header_key(&header);
            if claim_to_headers
                .iter()
                .any(|c| crate::spelling::header_key(&c.header) == key)
            {
                return Err(err(
                    format!("{f}.forward_payload_header"),
                    "is also a claim_to_headers header",
                ));
            }
            Some(header)
        }
    };
    let mut allowed_types = Vec::new();
    for (i, t) in p.allowed_types.iter().flatten().enumerate() {
        if t.is_empty() || t.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(err(
                format!("{f}.allowed_types[{i}]"),
                "must be a media type such as \"at+jwt\"",
            ));
        }
        allowed_types.push(type_key(t));
    }
    if p.allowed_types.as_ref().is_some_and(Vec::is_empty) {
        return Err(err(
            format!("{f}.allowed_types"),
            "must not be empty when set",
        ));
    }
    let template = p.issuer.matches(TENANT_PLACEHOLDER).count();
    let tenants = match (&p.tenants, template) {
        (None, 0) => None,
        (Some(_), 0) => {
            return Err(err(
                format!("{f}.tenants"),
                format!("the issuer has no {TENANT_PLACEHOLDER} placeholder"),
            ))
        }
        (None, _) => {
            return Err(err(
                format!("{f}.tenants"),
                "an issuer template needs its tenants: a list of tenant ids, or \"any\"",
            ))
        }
        (Some(_), n) if n > 1 => {
            return Err(err(
                format!("{f}.issuer"),
                format!("at most one {TENANT_PLACEHOLDER}"),
            ))
        }
        (Some(RawTenants::Keyword(k)), _) if k == "any" => Some(Tenants::Any),
        (Some(RawTenants::Keyword(k)), _) => {
            return Err(err(
                format!("{f}.tenants"),
                format!("{k:?}: use a list of tenant ids, or \"any\""),
            ))
        }
        (Some(RawTenants::List(list)), _) => {
            if list.is_empty() {
                return Err(err(format!("{f}.tenants"), "must not be empty"));
            }
            if let Some((i, _)) = list.iter().enumerate().find(|(_, t)| !is_tenant_id(t)) {
                return Err(err(
                    format!("{f}.tenants[{i}]"),
                    "1 to 128 letters, digits, '.', '_' or '-'",
                ));
            }
            Some(Tenants::List(list.clone()))
        }
    };
    if let JwksSource::Remote(r) = &jwks {
        if r.path.contains(TENANT_PLACEHOLDER) || r.authority.contains(TENANT_PLACEHOLDER) {
            return Err(err(
                format!("{f}.remote_jwks"),
                "a per-tenant JWKS URI is not supported: use the IdP's shared key set (for Entra ID, https://login.microsoftonline.com/common/discovery/v2.0/keys)",
            ));
        }
    }
    let tenant_header = match &p.tenant_header {
        None => None,
        Some(_) if tenants.is_none() => {
            return Err(err(
                format!("{f}.tenant_header"),
                "needs an issuer template with tenants",
            ))
        }
        Some(h) => {
            let header = h.to_ascii_lowercase();
            let key = crate::spelling::header_key(&header);
            if !is_header_name(&header)
                || is_protocol_header(&header)
                || claim_to_headers
                    .iter()
                    .any(|c| crate::spelling::header_key(&c.header) == key)
                || forward_payload_header.as_deref() == Some(header.as_str())
            {
                return Err(err(
                    format!("{f}.tenant_header"),
                    "must be a header name the filter sets for nothing else (claim_to_headers sets x-tenant-id from the tenant claim by default)",
                ));
            }
            Some(header)
        }
    };
    Ok(Provider {
        tenants,
        tenant_header,
        subjects,
        max_lifetime_secs,
        forward_payload_header,
        allowed_types,
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
