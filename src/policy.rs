//! Turns an authentication outcome into what happens to the request under the rule's mode:
//! - `enforce`: allow (with identity headers) or deny; `keys_unavailable` may be let through only
//!   where the rule opted into `on_keys_unavailable: degraded` (flagged to the upstream, logged);
//! - `shadow`: never blocks. The upstream gets `x-auth-shadow: allow` or `deny; reason=<code>`, the log
//!   a line for every would-deny, and identity headers only when the token was valid.
//!
//! Nothing else can turn an error into access.

use crate::authenticator::{claim, Outcome, Verified};
use crate::codes::{AllowReason, Decision};
use crate::config::{Config, Mode, OnKeysUnavailable, Rule, DEGRADED_HEADER, SHADOW_HEADER};
use crate::error::Denial;
use crate::headers::{identity_headers, Dropped};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Answer the request with this denial instead of forwarding it.
    pub respond: Option<Denial>,
    /// Headers to set on the forwarded request.
    pub set_headers: Vec<(String, String)>,
    /// Claims that were not written into headers, and why.
    pub dropped: Vec<Dropped>,
    /// A line for Envoy's log (never contains a token or a claim value other than `sub`).
    pub log: Option<String>,
    /// The metric and audit outcome.
    pub outcome: Decision,
    /// `ok`, `anonymous`, `public`, `degraded` or a denial code.
    pub reason: &'static str,
    /// The verified identity's provider, when there is one.
    pub provider: Option<usize>,
    /// From the verified token only (for the audit record).
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    /// The binding the verified token proved (never the proof itself).
    pub binding: Option<&'static str>,
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `sub` for a log line: a short string without control characters, else `-`.
fn sub_for_log(identity: Option<&Verified>) -> String {
    match identity
        .and_then(|v| claim(v.claims(), "sub"))
        .and_then(|s| s.as_str())
    {
        Some(s) if s.len() <= 256 && !s.bytes().any(|b| b.is_ascii_control()) => s.to_owned(),
        _ => "-".to_owned(),
    }
}

/// Records the verified identity's provider, issuer, subject and tenant for the audit record.
fn note_identity(plan: &mut Plan, config: &Config, v: &Verified) {
    plan.provider = Some(v.provider());
    let text = |name: &str| {
        claim(v.claims(), name)
            .and_then(scalar)
            .filter(|s| s.len() <= 256)
    };
    plan.issuer = text("iss");
    plan.subject = text("sub");
    plan.tenant = text(&config.audit.tenant_claim).or_else(|| v.issuer_tenant().map(str::to_owned));
    plan.binding = Some(v.proven().name());
}

/// `outcome` must be decided (not `Wait`); a `Wait` is treated as keys unavailable.
pub fn plan(config: &Config, rule: &Rule, outcome: Outcome) -> Plan {
    let mut plan = Plan {
        outcome: Decision::Allow,
        reason: AllowReason::Public.code(),
        ..Plan::default()
    };
    match (rule.mode, outcome) {
        (Mode::Off, _) => {}
        (_, _) if rule.requires.is_none() => {}
        (mode, Outcome::Allow(identity)) => {
            plan.outcome = if mode == Mode::Shadow {
                Decision::WouldAllow
            } else {
                Decision::Allow
            };
            plan.reason = if identity.is_some() {
                AllowReason::Ok
            } else {
                AllowReason::Anonymous
            }
            .code();
            if let Some(v) = identity {
                note_identity(&mut plan, config, &v);
                if let Some(provider) = config.providers.get(v.provider()) {
                    let (mut set, dropped) =
                        identity_headers(provider, v.claims(), config.max_header_value_bytes);
                    if let (Some(h), Some(payload)) =
                        (&provider.forward_payload_header, v.payload())
                    {
                        set.push((h.clone(), payload.to_owned()));
                    }
                    if let (Some(h), Some(tenant)) = (&provider.tenant_header, v.issuer_tenant()) {
                        set.push((h.clone(), tenant.to_owned()));
                    }
                    plan.set_headers = set;
                    plan.dropped = dropped;
                }
            }
            if mode == Mode::Shadow {
                plan.set_headers
                    .push((SHADOW_HEADER.to_owned(), "allow".to_owned()));
            }
        }
        (mode, outcome) => {
            let (denial, identity) = match outcome {
                Outcome::Deny(d) => (d, None),
                // A valid token the requirement refuses: no identity headers, but the audit
                // record and the shadow line say whose it was.
                Outcome::Forbidden(v, d) => (d, Some(v)),
                _ => (Denial::KeysUnavailable, None),
            };
            if let Some(v) = &identity {
                note_identity(&mut plan, config, v);
            }
            let sub = sub_for_log(identity.as_ref());
            let code = denial.code();
            plan.reason = code;
            plan.outcome = Decision::Deny;
            if mode == Mode::Shadow {
                plan.outcome = Decision::WouldDeny;
                plan.set_headers
                    .push((SHADOW_HEADER.to_owned(), format!("deny; reason={code}")));
                plan.log = Some(format!(
                    "shadow rule={} would deny: reason={code} sub={sub}",
                    rule.name
                ));
            } else if denial == Denial::KeysUnavailable
                && rule.on_keys_unavailable == OnKeysUnavailable::Degraded
            {
                plan.outcome = Decision::Allow;
                plan.reason = AllowReason::Degraded.code();
                plan.set_headers
                    .push((DEGRADED_HEADER.to_owned(), code.to_owned()));
                plan.log = Some(format!(
                    "degraded rule={}: signing keys unavailable, passing the request without identity",
                    rule.name
                ));
            } else {
                plan.respond = Some(denial);
            }
        }
    }
    plan
}
