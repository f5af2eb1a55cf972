//! Two bounded per-VM memories of tokens, both keyed by the exact token bytes (a keyed SipHash picks
//! the bucket, then the whole token is compared, so no two tokens ever share an entry):
//!
//! - `TokenCache`: verified tokens. A repeated token costs a hash and a lookup instead of base64 +
//!   JSON parsing and a signature check. What a hit skips is only what cannot change: the parse and the
//!   signature. Time (`exp`, `nbf`), audience, scopes and claims are checked again on every request
//!   (they depend on the clock and the route), and the key that verified the token must still be in
//!   the provider's key set: an entry whose key left the set (after its rotation grace) is dropped,
//!   and one past the token's `exp` is never returned. The entry also keeps the audit record's
//!   `token_hash`, so a hit hashes nothing cryptographically.
//! - `ForgedCache`: tokens whose signature failed (`bad_signature`) against a provider's key-set
//!   generation. The same forged token sent again costs a lookup instead of a public-key operation,
//!   until that provider's key set changes (a rotation can make it valid). Bounded in entries and in
//!   token bytes, oldest out first.

use crate::crypto::Alg;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// A SHA-256 digest.
pub type TokenHash = [u8; 32];

/// The SHA-256 of a presented token; shortened, the audit record's `token_hash` (`audit::token_hash`).
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
    pub kid: Option<Rc<str>>,
    /// The header's `typ`, for `allowed_types` on the cached path.
    pub typ: Option<Rc<str>>,
    pub claims: Rc<Map<String, Value>>,
    /// The JWK (as published) that verified the signature.
    pub key_raw: Rc<Value>,
    /// Key-set generation the key was last seen in; a newer generation re-checks the key's presence.
    pub key_gen: u64,
    /// Unix seconds after which the entry is gone: the token's `exp`, or a cap without one.
    pub expires_at: u64,
    /// The audit record's `token_hash` of this token (`audit::token_hash`), computed once.
    pub token_hash: Rc<str>,
}

/// Insertion-ordered bounded map from token bytes to `V`: the common part of both caches. Every
/// change to `map` changes `order` with it, so both always hold the same entries.
#[derive(Debug)]
struct Ordered<V> {
    /// Each entry with its insertion number, the key of its place in `order`.
    map: HashMap<Rc<[u8]>, (u64, V)>,
    /// Insertion number → token, oldest first, for evicting the oldest entry.
    order: BTreeMap<u64, Rc<[u8]>>,
    next_seq: u64,
    /// Sum of the stored tokens' lengths.
    bytes: usize,
}

impl<V> Ordered<V> {
    fn new(capacity: usize) -> Self {
        Ordered {
            map: HashMap::with_capacity(capacity.min(4096)),
            order: BTreeMap::new(),
            next_seq: 0,
            bytes: 0,
        }
    }

    fn get(&self, token: &[u8]) -> Option<&V> {
        self.map.get(token).map(|(_, v)| v)
    }

    fn get_mut(&mut self, token: &[u8]) -> Option<&mut V> {
        self.map.get_mut(token).map(|(_, v)| v)
    }

    /// Adds (or replaces, as the newest) the entry for `token`, then evicts the oldest entries
    /// while there are more than `max_entries` or their tokens exceed `max_bytes`.
    fn insert(&mut self, token: &[u8], value: V, max_entries: usize, max_bytes: usize) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let key: Rc<[u8]> = match self.map.remove_entry(token) {
            Some((key, (old, _))) => {
                self.order.remove(&old);
                key
            }
            None => {
                self.bytes = self.bytes.saturating_add(token.len());
                Rc::from(token)
            }
        };
        self.order.insert(seq, key.clone());
        self.map.insert(key, (seq, value));
        while self.map.len() > max_entries || self.bytes > max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if self.map.remove(&oldest).is_some() {
                self.bytes = self.bytes.saturating_sub(oldest.len());
            }
        }
    }

    fn remove(&mut self, token: &[u8]) {
        if let Some((key, (seq, _))) = self.map.remove_entry(token) {
            self.order.remove(&seq);
            self.bytes = self.bytes.saturating_sub(key.len());
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    fn consistent(&self) {
        assert_eq!(
            self.order.len(),
            self.map.len(),
            "order and map hold the same entries"
        );
        for (seq, token) in &self.order {
            assert_eq!(self.map.get(token).map(|(s, _)| s), Some(seq));
        }
        assert_eq!(self.bytes, self.map.keys().map(|k| k.len()).sum::<usize>());
    }
}

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    entries: Ordered<CachedToken>,
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
            entries: Ordered::new(capacity),
            hits: 0,
            misses: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// The entry for exactly `token`, unless it expired (then it is dropped).
    pub fn get(&mut self, token: &[u8], now_secs: u64) -> Option<CachedToken> {
        match self.entries.get(token) {
            Some(e) if now_secs < e.expires_at => {
                self.hits += 1;
                Some(e.clone())
            }
            Some(_) => {
                self.entries.remove(token);
                self.misses += 1;
                None
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Adds (or replaces, as the newest) the entry for `token`, evicting the oldest ones beyond the
    /// capacity.
    pub fn insert(&mut self, token: &[u8], entry: CachedToken) {
        if self.capacity == 0 {
            return;
        }
        self.entries.insert(token, entry, self.capacity, usize::MAX);
    }

    pub fn remove(&mut self, token: &[u8]) {
        self.entries.remove(token);
    }

    /// Records that the entry's key is still present in generation `gen`, capping the entry at the
    /// key's grace deadline if the key was withdrawn.
    pub fn refresh_gen(&mut self, token: &[u8], gen: u64, until_secs: Option<u64>) {
        if let Some(e) = self.entries.get_mut(token) {
            e.key_gen = gen;
            if let Some(until) = until_secs {
                e.expires_at = e.expires_at.min(until);
            }
        }
    }
}

/// Default bounds of the forged-token memory, per worker VM.
pub const FORGED_MAX_ENTRIES: usize = 1024;
pub const FORGED_MAX_BYTES: usize = 1 << 20;

/// Recently failed signatures: exact token → (provider, key-set generation) it failed against.
/// Only `bad_signature` failures go in; a hit stands for that failure only while the provider's
/// key-set generation is the same one.
#[derive(Debug)]
pub struct ForgedCache {
    max_entries: usize,
    max_bytes: usize,
    entries: Ordered<(usize, u64)>,
}

impl Default for ForgedCache {
    fn default() -> Self {
        ForgedCache::new(FORGED_MAX_ENTRIES, FORGED_MAX_BYTES)
    }
}

impl ForgedCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        ForgedCache {
            max_entries,
            max_bytes,
            entries: Ordered::new(max_entries),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Stored token bytes (the bound is `max_bytes`).
    pub fn bytes(&self) -> usize {
        self.entries.bytes
    }

    /// Whether exactly `token` failed its signature check against `provider`'s generation `gen`.
    /// An entry from another generation is dropped: the token is verified again.
    pub fn contains(&mut self, provider: usize, gen: u64, token: &[u8]) -> bool {
        match self.entries.get(token) {
            Some(&(p, g)) if p == provider && g == gen => true,
            Some(&(p, _)) if p == provider => {
                self.entries.remove(token);
                false
            }
            _ => false,
        }
    }

    /// Remembers that `token` failed its signature against `provider`'s generation `gen`. A token
    /// longer than the byte bound is not kept.
    pub fn insert(&mut self, provider: usize, gen: u64, token: &[u8]) {
        if self.max_entries == 0 || token.len() > self.max_bytes {
            return;
        }
        self.entries
            .insert(token, (provider, gen), self.max_entries, self.max_bytes);
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
            typ: None,
            claims: Rc::new(Map::new()),
            key_raw: Rc::new(Value::Null),
            key_gen: 1,
            expires_at,
            token_hash: Rc::from("0011223344556677"),
        }
    }

    fn h(i: u8) -> Vec<u8> {
        vec![i; 32]
    }

    #[test]
    fn entries_never_outlive_exp() {
        let mut c = TokenCache::new(4);
        c.insert(&h(1), entry(100));
        assert!(c.get(&h(1), 99).is_some());
        assert!(c.get(&h(1), 100).is_none());
        assert!(c.is_empty(), "expired entries are dropped");
        assert_eq!((c.hits, c.misses), (1, 1));
    }

    #[test]
    fn keys_are_the_exact_token() {
        let mut c = TokenCache::new(4);
        c.insert(b"abc.def.ghi", entry(100));
        assert!(c.get(b"abc.def.ghi", 0).is_some());
        assert!(c.get(b"abc.def.ghj", 0).is_none());
        assert!(c.get(b"abc.def.gh", 0).is_none());
        assert!(c.get(b"abc.def.ghi.", 0).is_none());
    }

    #[test]
    fn bounded_with_oldest_evicted_first() {
        let mut c = TokenCache::new(3);
        for i in 0..10 {
            c.insert(&h(i), entry(1_000));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&h(6), 0).is_none());
        assert!(c.get(&h(7), 0).is_some() && c.get(&h(9), 0).is_some());
        c.entries.consistent();
        let mut off = TokenCache::new(0);
        off.insert(&h(1), entry(1_000));
        assert!(off.is_empty());
    }

    #[test]
    fn a_withdrawn_key_caps_its_entries_at_the_grace_deadline() {
        let mut c = TokenCache::new(4);
        c.insert(&h(7), entry(1_000));
        // Generation 2 still lists the key, but as withdrawn until t=500.
        c.refresh_gen(&h(7), 2, Some(500));
        assert!(c.get(&h(7), 499).is_some_and(|e| e.key_gen == 2));
        assert!(c.get(&h(7), 500).is_none());
    }

    #[test]
    fn a_token_inserted_again_after_removal_is_the_newest() {
        let mut c = TokenCache::new(2);
        c.insert(&h(1), entry(1_000));
        c.insert(&h(2), entry(1_000));
        c.remove(&h(1));
        c.insert(&h(1), entry(1_000));
        c.entries.consistent();
        // Full: the oldest entry (2) goes, not the one just inserted again.
        c.insert(&h(3), entry(1_000));
        c.entries.consistent();
        assert!(c.get(&h(2), 0).is_none());
        assert!(c.get(&h(1), 0).is_some() && c.get(&h(3), 0).is_some());
    }

    #[test]
    fn a_token_inserted_again_after_expiry_is_the_newest() {
        let mut c = TokenCache::new(2);
        c.insert(&h(1), entry(10));
        c.insert(&h(2), entry(1_000));
        assert!(c.get(&h(1), 10).is_none(), "expired");
        c.entries.consistent();
        c.insert(&h(1), entry(1_000));
        c.insert(&h(3), entry(1_000));
        c.entries.consistent();
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
                _ => c.insert(&h(i), entry(u64::from(round) + 5)),
            }
            c.entries.consistent();
            assert!(c.len() <= 8);
        }
    }

    #[test]
    fn forged_tokens_hit_only_for_their_provider_and_generation() {
        let mut f = ForgedCache::default();
        assert!(!f.contains(0, 1, b"a.b.c"));
        f.insert(0, 1, b"a.b.c");
        assert!(f.contains(0, 1, b"a.b.c"));
        assert!(
            !f.contains(1, 1, b"a.b.c"),
            "another provider verifies itself"
        );
        assert!(
            !f.contains(0, 1, b"a.b.d"),
            "one changed character is another token"
        );
        assert!(!f.contains(0, 1, b"a.b.c "));
        assert!(
            !f.contains(0, 2, b"a.b.c"),
            "a new key-set generation verifies again"
        );
        assert!(f.is_empty(), "the stale entry is dropped");
        assert!(!f.contains(0, 1, b"a.b.c"));
    }

    #[test]
    fn forged_memory_is_bounded_in_entries_and_bytes() {
        let mut f = ForgedCache::new(4, 100);
        for i in 0..10u8 {
            f.insert(0, 1, &[i; 10]);
            f.entries.consistent();
        }
        assert_eq!(f.len(), 4);
        assert!(f.contains(0, 1, &[9; 10]) && f.contains(0, 1, &[6; 10]));
        assert!(!f.contains(0, 1, &[5; 10]), "oldest out first");
        // Bytes: three 30-byte tokens fit in 100, a fourth pushes the oldest out.
        let mut f = ForgedCache::new(100, 100);
        for i in 0..4u8 {
            f.insert(0, 1, &[i; 30]);
            f.entries.consistent();
            assert!(f.bytes() <= 100);
        }
        assert_eq!(f.len(), 3);
        assert!(!f.contains(0, 1, &[0; 30]) && f.contains(0, 1, &[3; 30]));
        f.insert(0, 1, &[7; 101]);
        assert!(
            !f.contains(0, 1, &[7; 101]),
            "a token above the byte bound is not kept"
        );
        assert_eq!(f.len(), 3);
        // The same token again replaces its entry; the bytes are counted once.
        f.insert(0, 1, &[3; 30]);
        f.entries.consistent();
        assert_eq!(f.bytes(), 90);
        let mut off = ForgedCache::new(0, 100);
        off.insert(0, 1, b"x");
        assert!(off.is_empty());
    }
}
