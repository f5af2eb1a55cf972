//! The decision pipeline for one request, in Envoy's order: parse → issuer → algorithm allow-list →
//! time (with skew) → audience → key lookup → signature. Cheap checks run before the signature so a
//! flood of stale or foreign tokens costs no public-key operation. Every presented token must be
//! valid; the first one gives the identity. Then the rule's authorisation: scopes (all-of and any-of,
//! from `scope` or `scp`) and required claim values, checked on the verified identity.

use crate::config::{ClaimRequirement, Config, Provider, Requirement};
use crate::crypto;
use crate::error::Denial;
use crate::jwks::{KeyLookup, KeySet};
use crate::token::UntrustedToken;
use serde_json::{Map, Value};

/// What the key cache can say about a provider's keys right now.
pub enum KeyState<'a> {
    Ready(&'a KeySet),
    /// Not there yet; a fetch is under way or will be started. The request should wait.
    Pending,
    /// Not there and not coming in time: fail closed.
    Unavailable,
}

pub trait Keys {
    fn keys(&self, provider: usize) -> KeyState<'_>;

    /// A token names a `kid` the provider's set lacks: true to wait for a (rate-limited) refetch,
    /// false to deny now. Providers with a fixed key set never refetch.
    fn unknown_kid(&self, _provider: usize) -> bool {
        false
    }
}

#[derive(Debug)]
pub struct Verified {
    pub provider: usize,
    pub claims: Map<String, Value>,
}

#[derive(Debug)]
pub enum Outcome {
    /// `None` only when the rule has `allow_missing` and no token was presented.
    Allow(Option<Verified>),
    Deny(Denial),
    /// Keys for this provider are pending; decide again when they arrive.
    Wait(usize),
}

pub fn authenticate(
    config: &Config,
    requirement: &Requirement,
    tokens: &[Vec<u8>],
    keys: &dyn Keys,
    now_secs: u64,
) -> Outcome {
    if tokens.is_empty() {
        return if requirement.allow_missing {
            Outcome::Allow(None)
        } else {
            Outcome::Deny(Denial::Missing)
        };
    }
    let mut identity = None;
    for token in tokens {
        match check_token(config, requirement, token, keys, now_secs) {
            Outcome::Allow(Some(v)) => {
                identity.get_or_insert(v);
            }
            Outcome::Allow(None) => {}
            other => return other,
        }
    }
    let Some(identity) = identity else {
        return Outcome::Deny(Denial::Missing);
    };
    match authorize(requirement, &identity.claims) {
        Ok(()) => Outcome::Allow(Some(identity)),
        Err(d) => Outcome::Deny(d),
    }
}

fn check_token(
    config: &Config,
    requirement: &Requirement,
    token: &[u8],
    keys: &dyn Keys,
    now: u64,
) -> Outcome {
    let providers = || {
        requirement
            .providers
            .iter()
            .filter_map(|&i| config.providers.get(i).map(|p| (i, p)))
    };
    let max_bytes = providers()
        .map(|(_, p)| p.max_token_bytes)
        .max()
        .unwrap_or(0);
    let parsed = match UntrustedToken::parse(token, max_bytes) {
        Ok(t) => t,
        Err(d) => return Outcome::Deny(d),
    };
    let iss = match parsed.claims.get("iss") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Outcome::Deny(Denial::Malformed("iss is not a string")),
        None => return Outcome::Deny(Denial::WrongIssuer),
    };
    let mut first_denial = None;
    for (index, provider) in providers().filter(|(_, p)| p.issuer == iss) {
        let audiences = requirement
            .audiences
            .as_ref()
            .unwrap_or(&provider.audiences);
        match check_with_provider(index, provider, audiences, &parsed, token.len(), keys, now) {
            Ok(()) => {
                return Outcome::Allow(Some(Verified {
                    provider: index,
                    claims: parsed.claims,
                }))
            }
            Err(Outcome::Wait(p)) => return Outcome::Wait(p),
            Err(Outcome::Deny(d)) => {
                first_denial.get_or_insert(d);
            }
            Err(Outcome::Allow(_)) => {}
        }
    }
    Outcome::Deny(first_denial.unwrap_or(Denial::WrongIssuer))
}

fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or(Denial::Malformed("time claim is not a number")),
        Some(_) => Err(Denial::Malformed("time claim is not a number")),
    }
}

fn check_with_provider(
    index: usize,
    provider: &Provider,
    audiences: &[String],
    token: &UntrustedToken,
    token_len: usize,
    keys: &dyn Keys,
    now: u64,
) -> Result<(), Outcome> {
    let deny = |d| Err(Outcome::Deny(d));
    if token_len > provider.max_token_bytes {
        return deny(Denial::Oversized);
    }
    if !provider.algorithms.contains(&token.alg) {
        return deny(Denial::AlgNotAllowed);
    }
    let now = now as f64;
    let skew = provider.clock_skew_secs as f64;
    match numeric_date(&token.claims, "exp") {
        Err(d) => return deny(d),
        Ok(None) if provider.require_expiration => return deny(Denial::MissingExp),
        Ok(Some(exp)) if now >= exp + skew => return deny(Denial::Expired),
        Ok(_) => {}
    }
    match numeric_date(&token.claims, "nbf") {
        Err(d) => return deny(d),
        Ok(Some(nbf)) if now + skew < nbf => return deny(Denial::NotYetValid),
        Ok(_) => {}
    }
    if !audiences.is_empty() {
        let ok = match token.claims.get("aud") {
            Some(Value::String(a)) => audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) => {
                if !list.iter().all(Value::is_string) {
                    return deny(Denial::Malformed("aud is not a string or array of strings"));
                }
                list.iter()
                    .filter_map(Value::as_str)
                    .any(|a| audiences.iter().any(|x| x == a))
            }
            Some(_) => return deny(Denial::Malformed("aud is not a string or array of strings")),
            None => false,
        };
        if !ok {
            return deny(Denial::WrongAudience);
        }
    }
    let set = match keys.keys(index) {
        KeyState::Ready(set) => set,
        KeyState::Pending => return Err(Outcome::Wait(index)),
        KeyState::Unavailable => return deny(Denial::KeysUnavailable),
    };
    match set.lookup(token.kid.as_deref(), token.alg, now as u64 * 1000) {
        KeyLookup::UnknownKid if token.kid.is_some() && keys.unknown_kid(index) => {
            Err(Outcome::Wait(index))
        }
        KeyLookup::UnknownKid => deny(Denial::UnknownKid),
        KeyLookup::KeyMismatch => deny(Denial::KeyMismatch),
        KeyLookup::Found(candidates) => {
            if candidates
                .iter()
                .any(|k| crypto::verify(token.alg, &k.key, &token.signing_input, &token.signature))
            {
                Ok(())
            } else {
                deny(Denial::BadSignature)
            }
        }
    }
}

/// The scopes a token grants: the union of `scope` (space-delimited string, RFC 8693) and `scp`
/// (array of strings, or a space-delimited string, as some IdPs issue it).
pub fn granted_scopes(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_ascii_whitespace()),
            Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str)),
            _ => {}
        }
    }
    let mut seen = Vec::new();
    out.retain(|s| {
        let fresh = !seen.contains(s);
        seen.push(*s);
        fresh
    });
    out
}

/// A claim by name, or by dotted path into nested objects (`org.id`) when no top-level claim has
/// the full name (claim names such as `https://example.com/tenant` contain dots themselves).
pub fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn claim_fits(claims: &Map<String, Value>, req: &ClaimRequirement) -> bool {
    let Some(value) = claim(claims, &req.name).filter(|v| !v.is_null()) else {
        return false;
    };
    let Some(allowed) = &req.values else {
        return true;
    };
    let candidates: Vec<String> = match value {
        Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
        other => scalar_text(other).into_iter().collect(),
    };
    candidates.iter().any(|c| allowed.contains(c))
}

fn authorize(requirement: &Requirement, claims: &Map<String, Value>) -> Result<(), Denial> {
    let granted = granted_scopes(claims);
    let all = requirement
        .scopes
        .iter()
        .all(|s| granted.contains(&s.as_str()));
    let any = requirement.any_scopes.is_empty()
        || requirement
            .any_scopes
            .iter()
            .any(|s| granted.contains(&s.as_str()));
    if !all || !any {
        let mut needed = requirement.scopes.clone();
        needed.extend(requirement.any_scopes.iter().cloned());
        return Err(Denial::InsufficientScope(needed.join(" ")));
    }
    if !requirement.claims.iter().all(|c| claim_fits(claims, c)) {
        return Err(Denial::ClaimMismatch);
    }
    Ok(())
}
