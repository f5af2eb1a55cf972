//! The decision pipeline for one request, in Envoy's order: parse → issuer → algorithm allow-list →
//! time (with skew) → audience → key lookup → signature. Cheap checks run before the signature so a
//! flood of stale or foreign tokens costs no public-key operation. Every presented token must be
//! valid; the first one gives the identity. A token seen before (the same bytes) skips parsing and the
//! signature through the verified-token cache; everything else is checked again. A token whose
//! signature failed before against the same key-set generation is denied `bad_signature` again
//! without a public-key operation (`tokencache::ForgedCache`), after every other check has run again. Then the rule's authorisation: scopes (all-of and any-of,
//! from `scope` or `scp`) and required claim values, checked on the verified identity.

use crate::binding::{self, Presentation, ProofId, Proven, Replay};
use crate::codes::codes;
use crate::config::{ClaimRequirement, Config, Provider, Requirement};
use crate::crypto;
use crate::error::Denial;
use crate::jwks::{KeyLookup, KeySet};
use crate::token::UntrustedToken;
use crate::tokencache::{CachedToken, MAX_TTL_WITHOUT_EXP_SECS};
use serde_json::{Map, Value};
use std::rc::Rc;

codes! {
    /// The pipeline's checks, in the order they run. `authenticate_traced` says at which one a
    /// token stopped; `jwt-guard explain` prints the whole list with each verdict.
    pub enum Check {
        /// A token was presented (or the rule allows none).
        Token => "token",
        /// A compact JWS within the size cap, its header allowed (no `jku`/`jwk`/`x5u`/`x5c`/`crit`,
        /// no nested JWT), an algorithm the filter knows and never `none` or HMAC.
        Format => "format",
        /// `iss` names a provider of the rule.
        Issuer => "issuer",
        /// The token fits the provider's `max_token_bytes`.
        Size => "size",
        /// `alg` is in the provider's allow-list.
        Algorithm => "algorithm",
        /// The header's `typ` is one of the provider's `allowed_types` (when set).
        Type => "type",
        /// `exp` (required unless `require_expiration: false`) and `nbf`, with the clock skew; `exp -
        /// iat` within `max_lifetime` (when set).
        Lifetime => "lifetime",
        /// `aud` names an accepted audience.
        Audience => "audience",
        /// `sub` fits the provider's `subjects` (when set).
        Subject => "subject",
        /// The provider's key set is usable.
        Keys => "keys",
        /// A key of the set fits the token's `kid` and `alg`.
        Key => "key",
        /// The signature verifies with that key.
        Signature => "signature",
        /// A bound token (`cnf`) proves its binding (DPoP proof, client certificate), and the
        /// route's `binding` is met.
        Binding => "binding",
        /// The rule's `scopes` and `any_scopes` are granted.
        Scopes => "scopes",
        /// The rule's required claim values are present.
        Claims => "claims",
    }
}

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

    /// Generation of the provider's key set (changes when a new set is published).
    fn generation(&self, _provider: usize) -> u64 {
        0
    }

    /// The verified-token cache (see `tokencache`); the defaults cache nothing.
    /// Entries are keyed by the exact token bytes.
    fn cache_get(&self, _token: &[u8], _now_secs: u64) -> Option<CachedToken> {
        None
    }
    fn cache_put(&self, _token: &[u8], _entry: CachedToken) {}
    fn cache_drop(&self, _token: &[u8]) {}
    /// The entry's key is still in generation `gen`; `until_secs` caps the entry when that key is
    /// a withdrawn one living out its rotation grace.
    fn cache_key_seen(&self, _token: &[u8], _gen: u64, _until_secs: Option<u64>) {}

    /// The forged-token memory (see `tokencache::ForgedCache`): whether exactly `token` failed its
    /// signature against `provider`'s key-set generation `gen`; the defaults remember nothing.
    fn forged_seen(&self, _provider: usize, _gen: u64, _token: &[u8]) -> bool {
        false
    }
    fn forged_put(&self, _provider: usize, _gen: u64, _token: &[u8]) {}

    /// A token names a `kid` the provider's set lacks: true to wait for a (rate-limited) refetch,
    /// false to deny now. Providers with a fixed key set never refetch.
    fn unknown_kid(&self, _provider: usize) -> bool {
        false
    }

    /// How signatures are checked (the VM's backend); the default does everything in wasm.
    fn verifier(&self) -> crypto::Verifier<'_> {
        crypto::Verifier::wasm()
    }

    /// The SHA-256 of the client certificate Envoy verified on this connection; `None` without one.
    fn peer_certificate_sha256(&self) -> Option<Vec<u8>> {
        None
    }

    /// The key of a DPoP proof's `jwk`; the default parses it every time.
    fn proof_key(&self, jwk: &Map<String, Value>) -> Result<crypto::PublicKey, &'static str> {
        crate::jwks::parse_jwk_value(&Value::Object(jwk.clone())).map(|(_, key)| key)
    }

    /// Records a DPoP proof in the replay memory (`skew` is the provider's clock skew); the default
    /// has no memory, so every proof fails closed.
    fn record_proof(&self, _id: &ProofId, _skew: u64, _now_secs: u64) -> Replay {
        Replay::Unavailable
    }
}

/// A token whose signature and claims were checked. Only the authenticator makes one (the fields
/// are private), so holding a `Verified` means the checks ran.
#[derive(Debug)]
pub struct Verified {
    provider: usize,
    claims: Rc<Map<String, Value>>,
    /// The audit record's `token_hash` of the token (`audit::token_hash`), kept with the cache entry.
    token_hash: Rc<str>,
    /// The binding this request proved (checked on every request, cached token or not).
    proven: Proven,
    /// The token's payload segment (base64url, as presented), kept when the provider forwards it.
    payload: Option<Rc<str>>,
    /// The tenant of a templated issuer.
    tenant: Option<Rc<str>>,
}

impl Verified {
    /// The index of the provider whose key verified it.
    pub fn provider(&self) -> usize {
        self.provider
    }

    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The audit record's `token_hash`.
    pub fn token_hash(&self) -> &Rc<str> {
        &self.token_hash
    }

    /// The binding the request proved: `bearer` for an unbound token.
    pub fn proven(&self) -> Proven {
        self.proven
    }

    /// The verified payload segment, for `forward_payload_header`.
    pub fn payload(&self) -> Option<&str> {
        self.payload.as_deref()
    }

    /// The tenant of a templated issuer (`https://login.example.com/{tenant}/v2.0`).
    pub fn issuer_tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }
}

#[derive(Debug)]
pub enum Outcome {
    /// `None` only when the rule has `allow_missing` and no token was presented.
    Allow(Option<Verified>),
    Deny(Denial),
    /// A valid token whose claims the rule's requirement refuses (scope, claims): the identity is
    /// kept so a shadow line and an audit record can say who would have been denied.
    Forbidden(Verified, Denial),
    /// Keys for this provider are pending; decide again when they arrive.
    Wait(usize),
}

/// `authenticate_at_ms` at a whole second.
pub fn authenticate(
    config: &Config,
    requirement: &Requirement,
    tokens: &[Vec<u8>],
    keys: &dyn Keys,
    now_secs: u64,
) -> Outcome {
    authenticate_at_ms(
        config,
        requirement,
        tokens,
        keys,
        now_secs.saturating_mul(1000),
    )
}

/// Decides the request's tokens at `now_ms`. Token times (`exp`, `nbf`, `iat`) are whole seconds and
/// are checked at `now_ms / 1000`; a retired key's grace deadline is in milliseconds and is checked
/// at `now_ms` itself, on the cached path as on the full one, so every worker stops using a key at
/// the same instant.
pub fn authenticate_at_ms(
    config: &Config,
    requirement: &Requirement,
    tokens: &[Vec<u8>],
    keys: &dyn Keys,
    now_ms: u64,
) -> Outcome {
    authenticate_traced(
        config,
        requirement,
        tokens,
        &Presentation::default(),
        keys,
        now_ms,
    )
    .0
}

/// `authenticate_at_ms`, and the check at which the request stopped (`None` when it passed them
/// all): every check before it passed, the ones after it did not run.
pub fn authenticate_traced(
    config: &Config,
    requirement: &Requirement,
    tokens: &[Vec<u8>],
    presentation: &Presentation,
    keys: &dyn Keys,
    now_ms: u64,
) -> (Outcome, Option<Check>) {
    if tokens.is_empty() {
        return if requirement.allow_missing {
            (Outcome::Allow(None), None)
        } else {
            (Outcome::Deny(Denial::Missing), Some(Check::Token))
        };
    }
    let mut identity = None;
    for token in tokens {
        match check_token(config, requirement, token, keys, now_ms) {
            (Outcome::Allow(Some(v)), _) => {
                identity.get_or_insert((v, token));
            }
            (Outcome::Allow(None), _) => {}
            other => return other,
        }
    }
    let Some((mut identity, token)) = identity else {
        return (Outcome::Deny(Denial::Missing), Some(Check::Token));
    };
    // Every request, cached token or not: the binding is proven per request.
    let skew = config
        .providers
        .get(identity.provider)
        .map_or(0, |p| p.clock_skew_secs);
    let env = binding::Env {
        settings: &config.dpop,
        skew,
        now: now_ms / 1000,
        verifier: keys.verifier(),
        peer_certificate_sha256: &|| keys.peer_certificate_sha256(),
        record_proof: &|id, now| keys.record_proof(id, skew, now),
        proof_key: &|jwk| keys.proof_key(jwk),
    };
    match binding::check(
        requirement.binding,
        &identity.claims,
        token,
        presentation,
        &env,
    ) {
        Ok(proven) => identity.proven = proven,
        Err(d) => return (Outcome::Deny(d), Some(Check::Binding)),
    }
    let provider = config.providers.get(identity.provider);
    identity.tenant = provider.filter(|p| p.tenants.is_some()).and_then(|p| {
        let iss = identity.claims.get("iss").and_then(Value::as_str)?;
        p.issuer_fits(iss).flatten().map(Rc::from)
    });
    let forwards_payload = provider.is_some_and(|p| p.forward_payload_header.is_some());
    if forwards_payload {
        // The token verified, so it is three base64url segments of ASCII.
        identity.payload = token
            .split(|b| *b == b'.')
            .nth(1)
            .and_then(|p| std::str::from_utf8(p).ok())
            .map(Rc::from);
    }
    match authorize(requirement, &identity.claims) {
        Ok(()) => (Outcome::Allow(Some(identity)), None),
        Err((check, d)) => (Outcome::Forbidden(identity, d), Some(check)),
    }
}

fn check_token(
    config: &Config,
    requirement: &Requirement,
    token: &[u8],
    keys: &dyn Keys,
    now_ms: u64,
) -> (Outcome, Option<Check>) {
    let now = now_ms / 1000;
    if let Some(outcome) = check_cached(config, requirement, token, keys, now_ms) {
        return outcome;
    }
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
    let deny = |check, d| (Outcome::Deny(d), Some(check));
    let parsed = match UntrustedToken::parse(token, max_bytes) {
        Ok(t) => t,
        Err(d) => return deny(Check::Format, d),
    };
    let iss = match parsed.claims.get("iss") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return deny(Check::Issuer, Denial::Malformed("iss is not a string")),
        None => return deny(Check::Issuer, Denial::WrongIssuer),
    };
    let mut first_denial = None;
    for (index, provider) in providers().filter(|(_, p)| p.issuer_fits(iss).is_some()) {
        let audiences = requirement
            .audiences
            .as_ref()
            .unwrap_or(&provider.audiences);
        let checked = claim_checks(
            provider,
            audiences,
            parsed.alg,
            parsed.typ.as_deref(),
            &parsed.claims,
            token.len(),
            now,
        )
        .map_err(|(check, d)| (check, Outcome::Deny(d)))
        .and_then(|()| verify_signature(index, token, &parsed, keys, now_ms));
        match checked {
            Ok((key_raw, key_until_ms)) => {
                let claims = Rc::new(parsed.claims);
                let token_hash: Rc<str> = Rc::from(crate::audit::token_hash(token));
                let expires_at = match numeric_date(&claims, "exp") {
                    Ok(Some(exp)) if exp > 0.0 => exp as u64,
                    _ => now.saturating_add(MAX_TTL_WITHOUT_EXP_SECS),
                };
                keys.cache_put(
                    token,
                    CachedToken {
                        provider: index,
                        alg: parsed.alg,
                        kid: parsed.kid.map(Rc::from),
                        typ: parsed.typ.map(Rc::from),
                        claims: claims.clone(),
                        key_raw,
                        key_gen: keys.generation(index),
                        // Never past the token's exp, nor past a retired key's grace deadline.
                        expires_at: expires_at
                            .min(now.saturating_add(86_400))
                            .min(key_until_ms.map_or(u64::MAX, |ms| ms / 1000)),
                        token_hash: token_hash.clone(),
                    },
                );
                return (
                    Outcome::Allow(Some(Verified {
                        provider: index,
                        claims,
                        token_hash,
                        proven: Proven::Bearer,
                        payload: None,
                        tenant: None,
                    })),
                    None,
                );
            }
            Err((check, Outcome::Wait(p))) => return (Outcome::Wait(p), Some(check)),
            Err((check, Outcome::Deny(d))) => {
                first_denial.get_or_insert((check, d));
            }
            // Not produced by verification (authorization runs after it).
            Err((_, Outcome::Allow(_) | Outcome::Forbidden(..))) => {}
        }
    }
    let (check, denial) = first_denial.unwrap_or((Check::Issuer, Denial::WrongIssuer));
    (Outcome::Deny(denial), Some(check))
}

/// The cached path: no parse, no signature; every check that depends on time or the route runs again,
/// and the verifying key must still be usable: its key set usable and the key in it, within its
/// rotation grace. `None` means "take the full path".
fn check_cached(
    config: &Config,
    requirement: &Requirement,
    token: &[u8],
    keys: &dyn Keys,
    now_ms: u64,
) -> Option<(Outcome, Option<Check>)> {
    let now = now_ms / 1000;
    let token_len = token.len();
    let hit = keys.cache_get(token, now)?;
    let provider = config.providers.get(hit.provider)?;
    if !requirement.providers.contains(&hit.provider) {
        // Verified for another rule's provider: this rule decides from scratch.
        return None;
    }
    let audiences = requirement
        .audiences
        .as_ref()
        .unwrap_or(&provider.audiences);
    if let Err((check, d)) = claim_checks(
        provider,
        audiences,
        hit.alg,
        hit.typ.as_deref(),
        &hit.claims,
        token_len,
        now,
    ) {
        return Some((Outcome::Deny(d), Some(check)));
    }
    // The signature stays verified, but the key only vouches for the token while the key set may
    // be used (fresh, or within max_stale) and the key is in it, within its rotation grace. Anything
    // else takes the full path, which waits for keys or fails closed as an uncached token would.
    let KeyState::Ready(set) = keys.keys(hit.provider) else {
        return None;
    };
    let key = match set.lookup(hit.kid.as_deref(), hit.alg, now_ms) {
        KeyLookup::Found(candidates) => candidates
            .into_iter()
            .find(|k| Rc::ptr_eq(&k.raw, &hit.key_raw) || k.raw == hit.key_raw),
        _ => None,
    };
    let Some(key) = key else {
        keys.cache_drop(token);
        return None;
    };
    let gen = keys.generation(hit.provider);
    if gen != hit.key_gen {
        // A key withdrawn in this generation is live only until its grace deadline: so is the entry.
        keys.cache_key_seen(token, gen, key.until_ms.map(|ms| ms / 1000));
    }
    Some((
        Outcome::Allow(Some(Verified {
            provider: hit.provider,
            claims: hit.claims,
            token_hash: hit.token_hash,
            proven: Proven::Bearer,
            payload: None,
            tenant: None,
        })),
        None,
    ))
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

/// Everything about a token that does not need its signature: size, algorithm allow-list, time
/// (with skew) and audience. Runs on every request, cached or not.
fn claim_checks(
    provider: &Provider,
    audiences: &[String],
    alg: crypto::Alg,
    typ: Option<&str>,
    claims: &Map<String, Value>,
    token_len: usize,
    now: u64,
) -> Result<(), (Check, Denial)> {
    if token_len > provider.max_token_bytes {
        return Err((Check::Size, Denial::Oversized));
    }
    if !provider.algorithms.contains(&alg) {
        return Err((Check::Algorithm, Denial::AlgNotAllowed));
    }
    if !provider.allowed_types.is_empty()
        && !typ.is_some_and(|t| provider.allowed_types.contains(&crate::config::type_key(t)))
    {
        return Err((Check::Type, Denial::WrongType));
    }
    let now = now as f64;
    let skew = provider.clock_skew_secs as f64;
    let lifetime = |d| (Check::Lifetime, d);
    match numeric_date(claims, "exp").map_err(lifetime)? {
        None if provider.require_expiration => return Err(lifetime(Denial::MissingExp)),
        Some(exp) if now >= exp + skew => return Err(lifetime(Denial::Expired)),
        _ => {}
    }
    if let Some(nbf) = numeric_date(claims, "nbf").map_err(lifetime)? {
        if now + skew < nbf {
            return Err(lifetime(Denial::NotYetValid));
        }
    }
    if let Some(max) = provider.max_lifetime_secs {
        let iat = numeric_date(claims, "iat")
            .map_err(lifetime)?
            .ok_or(lifetime(Denial::MissingIat))?;
        // Without `exp` the lifetime is unbounded.
        let exp = numeric_date(claims, "exp").map_err(lifetime)?;
        if exp.is_none_or(|exp| exp - iat > max as f64) {
            return Err(lifetime(Denial::LifetimeTooLong));
        }
    }
    if !audiences.is_empty() {
        let malformed = (
            Check::Audience,
            Denial::Malformed("aud is not a string or array of strings"),
        );
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => audiences.iter().any(|x| x == a),
            Some(Value::Array(list)) => {
                if !list.iter().all(Value::is_string) {
                    return Err(malformed);
                }
                list.iter()
                    .filter_map(Value::as_str)
                    .any(|a| audiences.iter().any(|x| x == a))
            }
            Some(_) => return Err(malformed),
            None => false,
        };
        if !ok {
            return Err((Check::Audience, Denial::WrongAudience));
        }
    }
    if !provider.subjects.is_empty() {
        let fits = match claims.get("sub") {
            Some(Value::String(sub)) => provider.subjects.iter().any(|m| m.matches(sub)),
            _ => false,
        };
        if !fits {
            return Err((Check::Subject, Denial::WrongSubject));
        }
    }
    Ok(())
}

/// Finds the key and verifies the signature; returns the verifying key's published JWK. `raw` is the
/// token as presented: a signature that failed against this key-set generation before is not
/// checked again (`Keys::forged_seen`); a new failure is remembered (`Keys::forged_put`).
fn verify_signature(
    index: usize,
    raw: &[u8],
    token: &UntrustedToken,
    keys: &dyn Keys,
    now_ms: u64,
) -> Result<(Rc<Value>, Option<u64>), (Check, Outcome)> {
    let deny = |check, d| Err((check, Outcome::Deny(d)));
    let set = match keys.keys(index) {
        KeyState::Ready(set) => set,
        KeyState::Pending => return Err((Check::Keys, Outcome::Wait(index))),
        KeyState::Unavailable => return deny(Check::Keys, Denial::KeysUnavailable),
    };
    match set.lookup(token.kid.as_deref(), token.alg, now_ms) {
        KeyLookup::UnknownKid if token.kid.is_some() && keys.unknown_kid(index) => {
            Err((Check::Key, Outcome::Wait(index)))
        }
        KeyLookup::UnknownKid => deny(Check::Key, Denial::UnknownKid),
        KeyLookup::KeyMismatch => deny(Check::Key, Denial::KeyMismatch),
        KeyLookup::Found(candidates) => {
            // Within one generation the candidates only shrink with time (retired keys' grace
            // ends), so a token no candidate verified before cannot verify now.
            let gen = keys.generation(index);
            if keys.forged_seen(index, gen, raw) {
                return deny(Check::Signature, Denial::BadSignature);
            }
            let verifier = keys.verifier();
            candidates
                .iter()
                .find(|k| {
                    verifier.verify(token.alg, &k.key, &token.signing_input, &token.signature)
                })
                .map(|k| (k.raw.clone(), k.until_ms))
                .map_or_else(
                    || {
                        keys.forged_put(index, gen, raw);
                        deny(Check::Signature, Denial::BadSignature)
                    },
                    Ok,
                )
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
    crate::config::claim_by_name(claims, name)
}

/// A string, number or boolean claim as text; `None` for null, arrays and objects.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn claim_fits(claims: &Map<String, Value>, req: &ClaimRequirement) -> bool {
    let Some(value) = req.name.lookup(claims).filter(|v| !v.is_null()) else {
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

fn authorize(
    requirement: &Requirement,
    claims: &Map<String, Value>,
) -> Result<(), (Check, Denial)> {
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
        return Err((Check::Scopes, Denial::InsufficientScope(needed.join(" "))));
    }
    if !requirement.claims.iter().all(|c| claim_fits(claims, c)) {
        return Err((Check::Claims, Denial::ClaimMismatch));
    }
    Ok(())
}
