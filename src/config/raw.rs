//! The plugin configuration as written: strict serde structs (`deny_unknown_fields`).

use super::model::{Binding, Mode, OnKeysUnavailable};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) providers: BTreeMap<String, RawProvider>,
    pub(crate) rules: Vec<RawRule>,
    pub(crate) default: Option<RawDefault>,
    pub(crate) realm: Option<String>,
    pub(crate) jwks_wait_timeout: Option<String>,
    pub(crate) allow_cors_preflight: Option<bool>,
    pub(crate) strip_header_prefixes: Option<Vec<String>>,
    pub(crate) max_header_value_bytes: Option<usize>,
    pub(crate) audit: Option<RawAudit>,
    pub(crate) token_cache_size: Option<usize>,
    pub(crate) signature_backend: Option<String>,
    pub(crate) dpop: Option<RawDpop>,
    pub(crate) clear_route_cache: Option<bool>,
    pub(crate) denials: Option<RawDenials>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDenials {
    pub(crate) strip_details: Option<bool>,
    pub(crate) body_template: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDpop {
    pub(crate) iat_window: Option<String>,
    pub(crate) external_base_url: Option<String>,
    pub(crate) replay_capacity: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub(crate) filter_state: Option<bool>,
    pub(crate) log: Option<bool>,
    pub(crate) allow_sample_rate: Option<f64>,
    pub(crate) tenant_claim: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    pub(crate) issuer: String,
    pub(crate) audiences: Option<Vec<String>>,
    pub(crate) remote_jwks: Option<RawRemoteJwks>,
    pub(crate) local_jwks: Option<RawLocalJwks>,
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) clock_skew_seconds: Option<u64>,
    pub(crate) require_expiration: Option<bool>,
    pub(crate) from_headers: Option<Vec<RawHeaderSource>>,
    pub(crate) from_params: Option<Vec<String>>,
    pub(crate) from_cookies: Option<Vec<String>>,
    pub(crate) max_token_bytes: Option<usize>,
    pub(crate) claim_to_headers: Option<Vec<RawClaimHeader>>,
    pub(crate) forward_token: Option<bool>,
    pub(crate) subjects: Option<Vec<RawStringMatch>>,
    pub(crate) max_lifetime: Option<String>,
    pub(crate) forward_payload_header: Option<String>,
    pub(crate) allowed_types: Option<Vec<String>>,
    pub(crate) tenants: Option<RawTenants>,
    pub(crate) tenant_header: Option<String>,
}

/// `"any"`, or the allowed tenant ids.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawTenants {
    Keyword(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStringMatch {
    pub(crate) exact: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) suffix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderValue {
    pub(crate) name: String,
    pub(crate) value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaimHeader {
    pub(crate) claim: RawClaimName,
    pub(crate) header: String,
}

/// A claim by name (`"tenant"`, `"https://example.com/roles"`, or a dotted path `"org.id"`), or by
/// explicit segments (`["https://example.com/org", "id"]`), never split at dots.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum RawClaimName {
    Name(String),
    Segments(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemoteJwks {
    pub(crate) http_uri: Option<RawHttpUri>,
    pub(crate) discovery: Option<RawDiscovery>,
    pub(crate) cache_duration: Option<String>,
    pub(crate) max_stale: Option<String>,
    pub(crate) rotation_grace: Option<String>,
    pub(crate) unknown_kid_refetch_interval: Option<String>,
    pub(crate) request_headers: Option<Vec<RawHeaderValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiscovery {
    /// Defaults to `<issuer>/.well-known/openid-configuration`.
    pub(crate) uri: Option<String>,
    pub(crate) cluster: String,
    pub(crate) timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpUri {
    pub(crate) uri: String,
    pub(crate) cluster: String,
    pub(crate) timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLocalJwks {
    pub(crate) inline_string: Option<String>,
    pub(crate) inline: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderSource {
    pub(crate) name: String,
    pub(crate) value_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) name: Option<String>,
    #[serde(rename = "match")]
    pub(crate) matcher: RawMatch,
    pub(crate) requires: Option<RawRequirement>,
    pub(crate) mode: Option<Mode>,
    pub(crate) on_keys_unavailable: Option<OnKeysUnavailable>,
    pub(crate) denials: Option<RawDenials>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefault {
    pub(crate) requires: Option<RawRequirement>,
    pub(crate) mode: Option<Mode>,
    pub(crate) on_keys_unavailable: Option<OnKeysUnavailable>,
    pub(crate) denials: Option<RawDenials>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    pub(crate) prefix: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) template: Option<String>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) hosts: Option<Vec<String>>,
    pub(crate) route_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequirement {
    pub(crate) provider_name: Option<String>,
    pub(crate) requires_any: Option<RawRequiresAny>,
    pub(crate) audiences: Option<Vec<String>>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) any_scopes: Option<Vec<String>>,
    pub(crate) claims: Option<Vec<RawClaimRequirement>>,
    pub(crate) allow_missing: Option<bool>,
    pub(crate) binding: Option<Binding>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClaimRequirement {
    pub(crate) name: RawClaimName,
    pub(crate) values: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRequiresAny {
    pub(crate) requirements: Vec<RawProviderRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProviderRef {
    pub(crate) provider_name: String,
}
