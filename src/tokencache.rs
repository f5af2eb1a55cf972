//! A bounded per-VM cache of verified tokens, keyed by the SHA-256 of the token. A repeated token costs
//! a hash and a lookup instead of base64 + JSON parsing and a signature check. What a hit skips is only
//! what cannot change: the parse and the signature. Time (`exp`, `nbf`), audience, scopes and claims
//! are checked again on every request (they depend on the clock and the route), and the key that
//! verified the token must still be in the provider's key set: an entry whose key left the set (after
//! its rotation grace) is dropped, and one past the token's `exp` is never returned.

use crate::crypto::Alg;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

pub type TokenHash = [u8; 32];

/// The SHA-256 of a presented token: the cache key, and (shortened) the audit record's `token_hash`.
pub fn digest(token: &[u8]) -> TokenHash {
    use sha2::{Digest, Sha256};
    Sha256::digest(token).into()
}

/// Tokens without `exp` (where the provider allows that) stay at most this long.
pub const MAX_TTL_WITHOUT_EXP_SECS: u64 = 300;

#[derive(Debug, Clone)]
pub struct CachedToken {
    pub provider: usize,
    pub alg: Alg,
    pub kid: Option<String>,
    pub claims: Rc<Map<String, Value>>,
    /// The JWK (as published) that verified the signature.
    pub key_raw: Rc<Value>,
    /// Key-set generation the key was last seen in; a newer generation re-checks the key's presence.
    pub key_gen: u64,
    /// Unix seconds after which the entry is gone: the token's `exp`, or a cap without one.
    pub expires_at: u64,
}

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    /// Each entry with its insertion number, the key of its place in `order`.
    map: HashMap<TokenHash, (u64, CachedToken)>,
    /// Insertion number → entry, oldest first, for evicting the oldest entry when full. Every change
    /// to `map` changes `order` with it, so both always hold the same entries.
    order: BTreeMap<u64, TokenHash>,
    next_seq: u64,
    pub hits: u64,
    pub misses: u64,
}

impl Default for TokenCache {
    /// A cache that keeps nothing (capacity 0) until the configured one replaces it.
    fn default() -> Self {
        TokenCache::new(0)
    }
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            map: HashMap::with_capacity(capacity.min(4096)),
            order: BTreeMap::new(),
            next_seq: 0,
            hits: 0,
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&mut self, hash: &TokenHash, now_secs: u64) -> Option<CachedToken> {
        match self.map.get(hash) {
            Some((_, e)) if now_secs < e.expires_at => {
                self.hits += 1;
                Some(e.clone())
            }
            Some(_) => {
                self.remove(hash);
                self.misses += 1;
                None
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Adds (or replaces, as the newest) the entry for `hash`, evicting the oldest ones beyond the
    /// capacity.
    pub fn insert(&mut self, hash: TokenHash, token: CachedToken) {
        if self.capacity == 0 {
            return;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if let Some((old, _)) = self.map.insert(hash, (seq, token)) {
            self.order.remove(&old);
        }
        self.order.insert(seq, hash);
        while self.map.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.map.remove(&oldest);
        }
    }

    pub fn remove(&mut self, hash: &TokenHash) {
        if let Some((seq, _)) = self.map.remove(hash) {
            self.order.remove(&seq);
        }
    }

    /// Records that the entry's key is still present in generation `gen`, capping the entry at the
    /// key's grace deadline if the key was withdrawn.
    pub fn refresh_gen(&mut self, hash: &TokenHash, gen: u64, until_secs: Option<u64>) {
        if let Some((_, e)) = self.map.get_mut(hash) {
            e.key_gen = gen;
            if let Some(until) = until_secs {
                e.expires_at = e.expires_at.min(until);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(expires_at: u64) -> CachedToken {
        CachedToken {
            provider: 0,
            alg: Alg::ES256,
            kid: None,
            claims: Rc::new(Map::new()),
            key_raw: Rc::new(Value::Null),
            key_gen: 1,
            expires_at,
        }
    }

    fn h(i: u8) -> TokenHash {
        [i; 32]
    }

    #[test]
    fn entries_never_outlive_exp() {
        let mut c = TokenCache::new(4);
        c.insert(h(1), entry(100));
        assert!(c.get(&h(1), 99).is_some());
        assert!(c.get(&h(1), 100).is_none());
        assert!(c.is_empty(), "expired entries are dropped");
        assert_eq!((c.hits, c.misses), (1, 1));
    }

    #[test]
    fn bounded_with_oldest_evicted_first() {
        let mut c = TokenCache::new(3);
        for i in 0..10 {
            c.insert(h(i), entry(1_000));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&h(6), 0).is_none());
        assert!(c.get(&h(7), 0).is_some() && c.get(&h(9), 0).is_some());
        assert_eq!(c.order.len(), 3);
        let mut off = TokenCache::new(0);
        off.insert(h(1), entry(1_000));
        assert!(off.is_empty());
    }

    #[test]
    fn a_withdrawn_key_caps_its_entries_at_the_grace_deadline() {
        let mut c = TokenCache::new(4);
        c.insert(h(7), entry(1_000));
        // Generation 2 still lists the key, but as withdrawn until t=500.
        c.refresh_gen(&h(7), 2, Some(500));
        assert!(c.get(&h(7), 499).is_some_and(|e| e.key_gen == 2));
        assert!(c.get(&h(7), 500).is_none());
    }

    fn consistent(c: &TokenCache) {
        assert_eq!(
            c.order.len(),
            c.map.len(),
            "order and map hold the same entries"
        );
        for (seq, hash) in &c.order {
            assert_eq!(c.map.get(hash).map(|(s, _)| s), Some(seq));
        }
    }

    #[test]
    fn a_token_inserted_again_after_removal_is_the_newest() {
        let mut c = TokenCache::new(2);
        c.insert(h(1), entry(1_000));
        c.insert(h(2), entry(1_000));
        c.remove(&h(1));
        c.insert(h(1), entry(1_000));
        consistent(&c);
        // Full: the oldest entry (2) goes, not the one just inserted again.
        c.insert(h(3), entry(1_000));
        consistent(&c);
        assert!(c.get(&h(2), 0).is_none());
        assert!(c.get(&h(1), 0).is_some() && c.get(&h(3), 0).is_some());
    }

    #[test]
    fn a_token_inserted_again_after_expiry_is_the_newest() {
        let mut c = TokenCache::new(2);
        c.insert(h(1), entry(10));
        c.insert(h(2), entry(1_000));
        assert!(c.get(&h(1), 10).is_none(), "expired");
        consistent(&c);
        c.insert(h(1), entry(1_000));
        c.insert(h(3), entry(1_000));
        consistent(&c);
        assert!(c.get(&h(2), 0).is_none());
        assert!(c.get(&h(1), 0).is_some());
    }

    #[test]
    fn the_order_never_holds_more_than_the_map() {
        let mut c = TokenCache::new(8);
        for round in 0..200u32 {
            let i = (round % 13) as u8;
            match round % 4 {
                0 => c.remove(&h(i)),
                1 => {
                    let _ = c.get(&h(i), u64::from(round));
                }
                _ => c.insert(h(i), entry(u64::from(round) + 5)),
            }
            consistent(&c);
            assert!(c.len() <= 8);
        }
    }
}
