//! Plugin configuration: strict serde structs (`deny_unknown_fields`, so a typo is an error, never a
//! silently disabled check) compiled into a validated `Config`. Every error names the field it is
//! about, e.g. `providers.corp.remote_jwks.http_uri.uri: must start with http:// or https://`.
//!
//! The vocabulary follows Envoy's `jwt_authn` (providers, issuer, audiences, remote_jwks.http_uri,
//! cache_duration, local_jwks, from_headers/from_params/from_cookies, clock_skew_seconds, rules with
//! match + requires/provider_name/requires_any) so it reads familiar to whoever runs Envoy.
//!
//! Modules: `raw` (the serde structs, as written), `model` (the compiled, validated types the filter
//! uses), `compile` (raw → model, with every check). Durations and URIs are parsed by
//! `crate::units`. `config` depends on nothing above it (crypto, jwks and token only).

mod compile;
mod model;
mod raw;

pub use model::*;

use std::fmt;

/// The route label (and reserved rule name) for requests no rule matched.
pub const NO_RULE_ROUTE: &str = "no_rule";

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

pub(crate) fn err(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}
