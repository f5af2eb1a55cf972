//! The request path up to authentication, pure: what to remove from the request and which step
//! decides it. The filter carries the result out; this module only decides, so every path of the
//! trust contract is testable natively.
//!
//! Order, the same for every request:
//! 1. **strip** every client header the filter owns, in every spelling (`headers::to_strip`);
//! 2. **scrub** tokens that must not travel on (`headers::token_scrub`): query tokens always, and
//!    `forward_token: false` headers/cookies, on public, `off`, preflight and no-rule requests too;
//! 3. then the step: CORS preflight, a refusal before any rule (no rule, a `Host` host rules cannot
//!    read, no clock), a rule that needs no token, or authentication of the one presented token
//!    (`extractor::extract`; more than one is `invalid_request` under the rule's mode).

use crate::authenticator::Outcome;
use crate::binding::Presentation;
use crate::config::{Config, Mode, Requirement, Rule};
use crate::error::Denial;
use crate::extractor::{extract_presented, RequestView, Tokens};
use crate::headers::{self, Scrub};
use crate::rules::{self, RequestInfo};

#[derive(Debug)]
pub enum Step<'c> {
    /// A CORS preflight: forward without a token.
    Preflight,
    /// Denied before any rule applies: no rule matches, the `Host` cannot be matched against host
    /// rules, or the host has no clock.
    Refuse(Denial),
    /// The rule decides without verifying anything: `Allow(None)` for a public or `off` rule,
    /// `Deny(invalid_request)` when the request presents more than one token.
    Decided(&'c Rule, Outcome),
    /// Authenticate `tokens` (at most one) under the rule's requirement, at `now_ms`.
    Authenticate {
        rule: &'c Rule,
        requirement: &'c Requirement,
        tokens: Tokens,
        /// How the token came, and the binding proofs the request offers.
        presentation: Presentation,
        now_ms: u64,
    },
}

#[derive(Debug)]
pub struct Prepared<'c> {
    /// Header names to remove from the request, before anything else.
    pub strip: Vec<String>,
    pub scrub: Scrub,
    pub step: Step<'c>,
}

/// Decides what happens to a request before authentication. `now_ms` is the host's clock (`None`
/// when it failed: nothing that depends on time is decided then); `route_name` is Envoy's route name
/// when the config matches on it.
pub fn prepare<'c>(
    config: &'c Config,
    req: &dyn RequestView,
    header_names: &[&str],
    now_ms: Option<u64>,
    route_name: Option<Vec<u8>>,
) -> Prepared<'c> {
    let strip = headers::to_strip(config, header_names.iter().copied());
    let path = req.header(":path").unwrap_or_default();
    let cookie = req.header("cookie");
    let info = RequestInfo {
        method: req.header(":method").unwrap_or_default(),
        authority: req.header(":authority").unwrap_or_default(),
        path,
        route_name,
    };
    let scrub_for = |requirement: Option<&Requirement>| {
        headers::token_scrub(
            config,
            requirement,
            header_names.iter().copied(),
            &info.path,
            cookie.as_deref(),
        )
    };
    if config.allow_cors_preflight
        && rules::is_cors_preflight(
            &info.method,
            req.header("origin").is_some(),
            req.header("access-control-request-method").is_some(),
        )
    {
        return Prepared {
            strip,
            scrub: scrub_for(None),
            step: Step::Preflight,
        };
    }
    let rule = match rules::find(config, &info) {
        Ok(Some(rule)) => rule,
        Ok(None) => return refuse(strip, scrub_for(None), Denial::NoRule),
        Err(d) => return refuse(strip, scrub_for(None), d),
    };
    let requirement = match (&rule.requires, rule.mode) {
        (Some(r), Mode::Enforce | Mode::Shadow) => r,
        _ => {
            return Prepared {
                strip,
                scrub: scrub_for(None),
                step: Step::Decided(rule, Outcome::Allow(None)),
            }
        }
    };
    let scrub = scrub_for(Some(requirement));
    let Some(now_ms) = now_ms else {
        // Without a clock, `exp` and key-set freshness cannot be judged: never pass, not even in
        // shadow mode.
        return refuse(strip, scrub, Denial::Internal);
    };
    let sources = requirement
        .providers
        .iter()
        .filter_map(|&i| config.providers.get(i))
        .flat_map(|p| p.sources.iter());
    let step = match extract_presented(sources, req) {
        Ok(token) => {
            let dpop_scheme = token.as_ref().is_some_and(|(_, dpop)| *dpop);
            Step::Authenticate {
                rule,
                requirement,
                tokens: Tokens::new(token.into_iter().map(|(t, _)| t).collect()),
                presentation: presentation(req, &info, dpop_scheme),
                now_ms,
            }
        }
        Err(d) => Step::Decided(rule, Outcome::Deny(d)),
    };
    Prepared { strip, scrub, step }
}

/// What the request offers to prove a token's binding: the scheme, every `DPoP` header value (split
/// at commas, as Envoy joins repeats: a proof has none), the method and the URI parts for `htu`.
fn presentation(req: &dyn RequestView, info: &RequestInfo, dpop_scheme: bool) -> Presentation {
    let proofs = req
        .header_values("dpop")
        .iter()
        .flat_map(|v| {
            v.split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect();
    Presentation {
        dpop_scheme,
        proofs,
        method: info.method.clone(),
        scheme: req.header(":scheme").unwrap_or_else(|| b"https".to_vec()),
        authority: info.authority.clone(),
        path: rules::path_without_query(&info.path).to_vec(),
    }
}

impl Prepared<'_> {
    /// Whether carrying out the removals changes the request (a client header or token goes, the
    /// path or cookie is rewritten).
    pub fn changes_request(&self) -> bool {
        !self.strip.is_empty()
            || !self.scrub.remove_headers.is_empty()
            || self.scrub.path.is_some()
            || self.scrub.cookie.is_some()
    }
}

fn refuse<'c>(strip: Vec<String>, scrub: Scrub, denial: Denial) -> Prepared<'c> {
    Prepared {
        strip,
        scrub,
        step: Step::Refuse(denial),
    }
}
