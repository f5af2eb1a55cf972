//! The key view the authenticator gets from a VM: inline key sets, the provider caches synced from
//! shared data, the token cache and the forged-signature memory.

use super::{Engine, Store};
use crate::authenticator::{authenticate_traced, KeyState, Keys, Outcome};
use crate::binding::{self, Presentation, ProofId, Replay};
use crate::config::{Config, JwksSource, Rule};
use crate::crypto::{Backend, Verifier};
use crate::host::Host;
use crate::keycache::UnknownKid;
use crate::tokencache::CachedToken;

/// `may_wait` is false once a parked request reached its deadline: missing keys then mean
/// "unavailable" and the request fails closed.
struct VmKeys<'a, H: Host + Clone> {
    vm: &'a Engine<H>,
    config: &'a Config,
    now_ms: u64,
    may_wait: bool,
}

impl<H: Host + Clone> Keys for VmKeys<'_, H> {
    fn verifier(&self) -> Verifier<'_> {
        Verifier::new(self.vm.backend.unwrap_or(Backend::Wasm), &self.vm.host)
    }

    fn keys(&self, provider: usize) -> KeyState<'_> {
        if let Some(JwksSource::Local(set)) = self.config.providers.get(provider).map(|p| &p.jwks) {
            return KeyState::Ready(set);
        }
        let Some(cache) = self.vm.caches.get(provider).and_then(Option::as_ref) else {
            return KeyState::Unavailable;
        };
        match cache.usable(self.now_ms) {
            Some(set) => KeyState::Ready(set),
            // Fetches keep failing: the IdP is down, not slow, so do not hold the request.
            None if self.may_wait && !cache.failing(&Store(&self.vm.host)) => KeyState::Pending,
            None => KeyState::Unavailable,
        }
    }

    fn generation(&self, provider: usize) -> u64 {
        self.vm
            .caches
            .get(provider)
            .and_then(Option::as_ref)
            .and_then(|c| c.local())
            .map_or(0, |l| l.gen)
    }

    fn cache_get(&self, token: &[u8], now_secs: u64) -> Option<CachedToken> {
        let hit = self
            .vm
            .token_cache
            .try_borrow_mut()
            .ok()?
            .get(token, now_secs);
        let t = &self.vm.telemetry;
        t.inc(Some(if hit.is_some() {
            t.registry.token_cache_hits
        } else {
            t.registry.token_cache_misses
        }));
        hit
    }

    fn cache_put(&self, token: &[u8], entry: CachedToken) {
        if let Ok(mut c) = self.vm.token_cache.try_borrow_mut() {
            c.insert(token, entry);
        }
    }

    fn cache_drop(&self, token: &[u8]) {
        if let Ok(mut c) = self.vm.token_cache.try_borrow_mut() {
            c.remove(token);
        }
    }

    fn cache_key_seen(&self, token: &[u8], gen: u64, until_secs: Option<u64>) {
        if let Ok(mut c) = self.vm.token_cache.try_borrow_mut() {
            c.refresh_gen(token, gen, until_secs);
        }
    }

    fn forged_seen(&self, provider: usize, gen: u64, token: &[u8]) -> bool {
        let hit = self
            .vm
            .forged
            .try_borrow_mut()
            .is_ok_and(|mut f| f.contains(provider, gen, token));
        if hit {
            let t = &self.vm.telemetry;
            t.inc(Some(t.registry.forged_cache_hits));
        }
        hit
    }

    fn forged_put(&self, provider: usize, gen: u64, token: &[u8]) {
        if let Ok(mut f) = self.vm.forged.try_borrow_mut() {
            f.insert(provider, gen, token);
        }
    }

    fn peer_certificate_sha256(&self) -> Option<Vec<u8>> {
        let hex = self
            .vm
            .host
            .get_property(&["connection", "sha256_peer_certificate_digest"])
            .ok()
            .flatten()?;
        binding::certificate_thumbprint_from_hex(&hex)
    }

    /// Clients sign many proofs with one key: its parsed key (and, for P-256 in wasm, its
    /// precomputed tables) is kept per VM, keyed by the whole `jwk` as written, so a different
    /// member is a different entry.
    fn proof_key(
        &self,
        jwk: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<crate::crypto::PublicKey, &'static str> {
        let value = serde_json::Value::Object(jwk.clone());
        let text = value.to_string();
        if let Some(key) = self
            .vm
            .proof_keys
            .try_borrow()
            .ok()
            .and_then(|keys| keys.get(&text).cloned())
        {
            return Ok(key);
        }
        let (_, key) = crate::jwks::parse_jwk_value(&value)?;
        if let Ok(mut keys) = self.vm.proof_keys.try_borrow_mut() {
            if keys.len() >= super::PROOF_KEYS {
                keys.clear();
            }
            keys.insert(text, key.clone());
        }
        Ok(key)
    }

    fn record_proof(&self, id: &ProofId, skew: u64, now_secs: u64) -> Replay {
        binding::record_proof(&Store(&self.vm.host), &self.config.dpop, skew, id, now_secs)
    }

    fn unknown_kid(&self, provider: usize) -> bool {
        let Some(cache) = self.vm.caches.get(provider).and_then(Option::as_ref) else {
            return false;
        };
        self.may_wait && cache.unknown_kid(&Store(&self.vm.host), self.now_ms) == UnknownKid::Wait
    }
}

impl<H: Host + Clone> Engine<H> {
    /// Decides `tokens` under `rule` at `now_ms` with this VM's keys.
    pub(super) fn decide(
        &self,
        config: &Config,
        rule: &Rule,
        tokens: &[Vec<u8>],
        presentation: &Presentation,
        now_ms: u64,
        may_wait: bool,
    ) -> Outcome {
        let Some(requirement) = rule.requires.as_ref() else {
            return Outcome::Allow(None);
        };
        let keys = VmKeys {
            vm: self,
            config,
            now_ms,
            may_wait,
        };
        authenticate_traced(config, requirement, tokens, presentation, &keys, now_ms).0
    }
}
