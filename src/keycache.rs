//! The JWKS cache protocol over proxy-wasm shared data, written against a small `SharedStore` trait so
//! it is tested natively with an in-memory store and runs in Envoy over `get/set_shared_data`.
//!
//! Per provider source (`RemoteJwks::cache_key`) three entries are shared by every worker VM with the
//! same `vm_id`:
//! - `<key>.meta`  small JSON `{gen, fetched_at_ms, expires_at_ms}`, read on every tick to notice new keys;
//! - `<key>.body`  `<gen>\n<JWKS as fetched>`, read and parsed once per VM per generation;
//! - `<key>.lease` `{holder, until_ms, failures}`: who may fetch. Taken with compare-and-swap, so at most
//!   one fetch per provider is in flight across workers; it expires after the fetch timeout (+1 s), so a
//!   worker that dies mid-fetch cannot block refreshes. After a failed fetch the holder writes a backoff
//!   into it, so no other worker retries before then.
//!
//! Shared data has no atomic create: the first write of a missing key cannot be a CAS. The lease entry is
//! therefore created once (by `ensure_lease`, at configure time) with an "unheld" value, and every
//! acquisition afterwards is a CAS on an existing entry.

use crate::jwks::{JwksError, KeySet, MAX_STORED_BYTES};
use serde::{Deserialize, Serialize};
use std::rc::Rc;

#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    CasMismatch,
    Other,
}

pub trait SharedStore {
    /// Value and CAS token, or `None` when the key does not exist (or cannot be read).
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value`; with `cas`, only if the entry still has that CAS token.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Meta {
    gen: u64,
    fetched_at_ms: u64,
    expires_at_ms: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Lease {
    holder: u64,
    until_ms: u64,
    failures: u32,
}

/// A forced (unknown-`kid`) refetch request, shared by every VM: when it was made and which
/// generation was current then. It is satisfied once a newer generation is published.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Force {
    at_ms: u64,
    gen: u64,
}

/// Key-set health as last logged by any VM, so a state change is logged once per Envoy, not once per
/// worker.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
struct HealthRecord {
    state: String,
    since_ms: u64,
}

const LEASE_MARGIN_MS: u64 = 1_000;
/// The root context's tick: fast while anything waits for keys, slow otherwise, and in between when
/// the next refresh point or expiry is closer than a slow tick (see `tick_ms`).
pub const FAST_TICK_MS: u64 = 20;
pub const SLOW_TICK_MS: u64 = 1_000;
const MAX_BACKOFF_MS: u64 = 30_000;
/// After this many consecutive failed fetches with no usable keys, requests stop waiting for keys
/// and fail closed at once (the IdP is down, not slow).
const FAILURES_BEFORE_FAST_FAIL: u32 = 2;

pub use crate::config::Timing;

/// One VM's view of one provider's shared key set.
#[derive(Debug)]
pub struct ProviderCache {
    pub key: String,
    pub timing: Timing,
    /// Spreads this VM's refresh point so many Envoys do not hit the IdP in the same second.
    pub jitter_ms: u64,
    local: Option<LocalKeys>,
}

/// What to do with a token whose `kid` the key set lacks.
#[derive(Debug, PartialEq, Eq)]
pub enum UnknownKid {
    /// A refetch is under way (or was just requested): wait for the next generation.
    Wait,
    /// The rate limit allows no refetch now (or the last one did not bring the key): deny.
    Deny,
}

/// The key-set state worth telling on-call about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not fetched yet.
    Empty,
    Fresh,
    /// Expired, still used (stale-if-error) until `max_stale` runs out.
    Stale,
    /// No usable keys: requests fail closed.
    Unavailable,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Empty => "empty",
            Health::Fresh => "fresh",
            Health::Stale => "stale",
            Health::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LocalKeys {
    pub gen: u64,
    pub fetched_at_ms: u64,
    pub expires_at_ms: u64,
    pub set: Rc<KeySet>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SyncResult {
    Unchanged,
    /// A newer generation was loaded from shared data.
    Loaded {
        gen: u64,
        keys: usize,
    },
    /// Shared data holds a body this VM could not parse (never written by a healthy filter).
    Corrupt,
}

/// What `publish` wrote.
#[derive(Debug, PartialEq, Eq)]
pub struct Published {
    pub gen: u64,
    /// Retired keys left out (grace cut short) to keep the stored set within `MAX_STORED_BYTES`.
    pub dropped_retired: usize,
}

/// Refresh starts this long before expiry: a tenth of the cache duration (at most a minute), and at
/// least the fetch budget plus a slow tick, so a refresh that uses its whole budget still lands
/// before expiry. For short cache durations that would be most of the cycle: there the window is at
/// most a quarter of it (and `tick_ms` wakes the VM at its refresh point instead of a tick late).
pub fn refresh_ahead(timing: &Timing) -> u64 {
    let tenth = (timing.cache_duration_ms / 10).min(60_000);
    let budget = timing.fetch_budget_ms.saturating_add(SLOW_TICK_MS);
    tenth.max(budget.min(timing.cache_duration_ms / 4))
}

/// The root context's tick period: fast while anything waits or lacks keys; otherwise the time to the
/// soonest `next_event_ms` of any provider, between the fast and the slow tick.
pub fn tick_ms(
    now_ms: u64,
    missing: bool,
    next_events: impl IntoIterator<Item = Option<u64>>,
) -> u64 {
    if missing {
        return FAST_TICK_MS;
    }
    next_events
        .into_iter()
        .flatten()
        .map(|at| at.saturating_sub(now_ms))
        .min()
        .map_or(SLOW_TICK_MS, |wait| wait.clamp(FAST_TICK_MS, SLOW_TICK_MS))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl ProviderCache {
    pub fn new(key: String, timing: Timing, jitter_seed: u64) -> Self {
        let ahead = refresh_ahead(&timing);
        ProviderCache {
            key,
            timing,
            jitter_ms: jitter_seed % (ahead / 2 + 1),
            local: None,
        }
    }

    fn force_key(&self) -> String {
        format!("{}.force", self.key)
    }
    fn health_key(&self) -> String {
        format!("{}.health", self.key)
    }

    fn meta_key(&self) -> String {
        format!("{}.meta", self.key)
    }
    fn body_key(&self) -> String {
        format!("{}.body", self.key)
    }
    fn lease_key(&self) -> String {
        format!("{}.lease", self.key)
    }

    pub fn local(&self) -> Option<&LocalKeys> {
        self.local.as_ref()
    }

    /// Keys this VM may verify with at `now`: fresh, or expired by less than `max_stale`.
    pub fn usable(&self, now_ms: u64) -> Option<&Rc<KeySet>> {
        self.local
            .as_ref()
            .filter(|_| self.usable_until_ms().is_some_and(|until| now_ms < until))
            .map(|l| &l.set)
    }

    /// When this VM's set stops being usable (expiry plus `max_stale`); `None` without a set.
    pub fn usable_until_ms(&self) -> Option<u64> {
        self.local
            .as_ref()
            .map(|l| l.expires_at_ms.saturating_add(self.timing.max_stale_ms))
    }

    pub fn health(&self, now_ms: u64) -> Health {
        match &self.local {
            None => Health::Empty,
            Some(l) if now_ms < l.expires_at_ms => Health::Fresh,
            Some(_) if self.usable(now_ms).is_some() => Health::Stale,
            Some(_) => Health::Unavailable,
        }
    }

    /// Whether it is time to fetch: no keys yet, or within the refresh window before expiry (minus
    /// this VM's jitter), so requests never wait for a refresh.
    pub fn needs_refresh(&self, now_ms: u64) -> bool {
        self.refresh_at().is_none_or(|at| now_ms >= at)
    }

    /// This VM's refresh point for its current set (`None`: no set, refresh now).
    fn refresh_at(&self) -> Option<u64> {
        let ahead = refresh_ahead(&self.timing).saturating_add(self.jitter_ms);
        self.local
            .as_ref()
            .map(|l| l.expires_at_ms.saturating_sub(ahead))
    }

    /// The next moment after `now` at which this VM must look at this provider again: its refresh
    /// point, the set's expiry (to load the set another VM fetched before this one reports it stale),
    /// or the end of `max_stale`. `None` when none is ahead.
    pub fn next_event_ms(&self, now_ms: u64) -> Option<u64> {
        let local = self.local.as_ref()?;
        [
            self.refresh_at(),
            Some(local.expires_at_ms),
            self.usable_until_ms(),
        ]
        .into_iter()
        .flatten()
        .filter(|at| *at > now_ms)
        .min()
    }

    /// A forced refetch was requested for the current generation and has not been satisfied yet.
    pub fn forced_pending(&self, store: &dyn SharedStore, now_ms: u64) -> bool {
        let gen = self.local.as_ref().map_or(0, |l| l.gen);
        store
            .get(&self.force_key())
            .and_then(|(v, _)| decode::<Force>(&v))
            .is_some_and(|f| {
                f.gen >= gen && now_ms < f.at_ms.saturating_add(self.timing.refetch_interval_ms)
            })
    }

    /// Decides for a token with an unknown `kid`: request a refetch (at most one per
    /// `refetch_interval` per provider across all VMs) and wait for it, wait for one already under way,
    /// or deny. A flood of random `kid`s therefore costs at most one fetch per interval.
    pub fn unknown_kid(&self, store: &dyn SharedStore, now_ms: u64) -> UnknownKid {
        let gen = self.local.as_ref().map_or(0, |l| l.gen);
        let pending_for = self.timing.fetch_budget_ms.saturating_add(LEASE_MARGIN_MS);
        for _ in 0..3 {
            let current = store.get(&self.force_key());
            let force = current.as_ref().and_then(|(v, _)| decode::<Force>(v));
            if let Some(f) = force {
                if now_ms < f.at_ms.saturating_add(self.timing.refetch_interval_ms) {
                    // Rate-limited: only the refetch already requested for this generation counts.
                    return if f.gen >= gen && now_ms < f.at_ms.saturating_add(pending_for) {
                        UnknownKid::Wait
                    } else {
                        UnknownKid::Deny
                    };
                }
            }
            let next = encode(&Force { at_ms: now_ms, gen });
            let cas = current.map(|(_, cas)| cas);
            match store.set(&self.force_key(), &next, cas) {
                Ok(()) => return UnknownKid::Wait,
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Other) => return UnknownKid::Deny,
            }
        }
        UnknownKid::Deny
    }

    /// True when fetches keep failing and no usable keys are left: waiting would only delay the 503.
    pub fn failing(&self, store: &dyn SharedStore) -> bool {
        self.failures(store) >= FAILURES_BEFORE_FAST_FAIL
    }

    /// Consecutive failed fetches so far (0 after a success).
    pub fn failures(&self, store: &dyn SharedStore) -> u32 {
        store
            .get(&self.lease_key())
            .and_then(|(v, _)| decode::<Lease>(&v))
            .map_or(0, |l| l.failures)
    }

    /// Records `health` as the shared state; true when this call changed it (the caller logs then).
    pub fn note_health(&self, store: &dyn SharedStore, health: Health, now_ms: u64) -> bool {
        let current = store.get(&self.health_key());
        let record = current
            .as_ref()
            .and_then(|(v, _)| decode::<HealthRecord>(v));
        if record.as_ref().is_some_and(|r| r.state == health.name()) {
            return false;
        }
        let next = encode(&HealthRecord {
            state: health.name().to_owned(),
            since_ms: now_ms,
        });
        store
            .set(&self.health_key(), &next, current.map(|(_, cas)| cas))
            .is_ok()
    }

    /// Loads a newer generation from shared data if one was published by any VM.
    pub fn sync(&mut self, store: &dyn SharedStore) -> SyncResult {
        let Some(meta) = store
            .get(&self.meta_key())
            .and_then(|(v, _)| decode::<Meta>(&v))
        else {
            return SyncResult::Unchanged;
        };
        if self.local.as_ref().is_some_and(|l| l.gen >= meta.gen) {
            return SyncResult::Unchanged;
        }
        let Some((body, _)) = store.get(&self.body_key()) else {
            return SyncResult::Unchanged;
        };
        let Some(nl) = body.iter().position(|b| *b == b'\n') else {
            return SyncResult::Corrupt;
        };
        // The body is written before the meta; a body of another generation means a publish is
        // half-way, so try again on the next tick.
        if std::str::from_utf8(&body[..nl])
            .ok()
            .and_then(|g| g.parse::<u64>().ok())
            != Some(meta.gen)
        {
            return SyncResult::Unchanged;
        }
        match KeySet::parse_stored(&body[nl + 1..]) {
            Ok(set) => {
                let keys = set.keys.len();
                self.local = Some(LocalKeys {
                    gen: meta.gen,
                    fetched_at_ms: meta.fetched_at_ms,
                    expires_at_ms: meta.expires_at_ms,
                    set: Rc::new(set),
                });
                SyncResult::Loaded {
                    gen: meta.gen,
                    keys,
                }
            }
            Err(_) => SyncResult::Corrupt,
        }
    }

    /// Creates the lease entry if it does not exist yet (see the module note on atomic create).
    pub fn ensure_lease(&self, store: &dyn SharedStore) {
        if store.get(&self.lease_key()).is_none() {
            let _ = store.set(&self.lease_key(), &encode(&Lease::default()), None);
        }
    }

    /// Takes the fetch lease if nobody holds it and no backoff is running. True: this VM must fetch
    /// and then call `publish` or `record_failure`.
    pub fn try_acquire(&self, store: &dyn SharedStore, holder: u64, now_ms: u64) -> bool {
        self.ensure_lease(store);
        let Some((value, cas)) = store.get(&self.lease_key()) else {
            return false;
        };
        let current: Lease = decode(&value).unwrap_or_default();
        if current.until_ms > now_ms {
            return false;
        }
        let next = Lease {
            holder,
            until_ms: now_ms
                .saturating_add(self.timing.fetch_budget_ms)
                .saturating_add(LEASE_MARGIN_MS),
            failures: current.failures,
        };
        store
            .set(&self.lease_key(), &encode(&next), Some(cas))
            .is_ok()
    }

    /// Publishes a freshly fetched, already validated key set for every VM and releases the lease.
    /// Keys of the previous generation that the IdP no longer lists are carried over for the
    /// rotation grace period, as far as they fit the shared-data bound (`MAX_STORED_BYTES`, the bound
    /// readers apply): those whose grace ends soonest are dropped first. If the current keys alone do
    /// not fit, nothing is published and the lease is kept for `record_failure`.
    pub fn publish(
        &mut self,
        store: &dyn SharedStore,
        holder: u64,
        now_ms: u64,
        mut set: KeySet,
    ) -> Result<Published, JwksError> {
        // Carry over from the newest generation any VM published, not just what this VM last saw.
        let _ = self.sync(store);
        if let Some(prev) = &self.local {
            set.retire_from(&prev.set, now_ms, self.timing.rotation_grace_ms);
        }
        let (body, dropped_retired) = set.to_stored_within(MAX_STORED_BYTES)?;
        let prev = store
            .get(&self.meta_key())
            .and_then(|(v, _)| decode::<Meta>(&v))
            .unwrap_or_default();
        // Generations only grow; a (corrupt) entry at the top stays there rather than wrapping to
        // a generation every VM would take for old.
        let gen = prev
            .gen
            .max(self.local.as_ref().map_or(0, |l| l.gen))
            .saturating_add(1);
        let meta = Meta {
            gen,
            fetched_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(self.timing.cache_duration_ms),
        };
        let mut stored = format!("{gen}\n").into_bytes();
        stored.extend_from_slice(&body);
        let _ = store.set(&self.body_key(), &stored, None);
        let _ = store.set(&self.meta_key(), &encode(&meta), None);
        self.local = Some(LocalKeys {
            gen,
            fetched_at_ms: now_ms,
            expires_at_ms: meta.expires_at_ms,
            set: Rc::new(set),
        });
        self.release(store, holder, Lease::default());
        Ok(Published {
            gen,
            dropped_retired,
        })
    }

    /// Records a failed fetch: the lease stays closed for an exponential backoff (1 s, 2 s, 4 s …
    /// up to 30 s) so neither this VM nor another hammers a failing IdP. Returns the backoff.
    pub fn record_failure(&self, store: &dyn SharedStore, holder: u64, now_ms: u64) -> u64 {
        let failures = self.failures(store);
        let backoff = (1_000u64 << failures.min(5)).min(MAX_BACKOFF_MS);
        self.release(
            store,
            holder,
            Lease {
                holder: 0,
                until_ms: now_ms.saturating_add(backoff),
                failures: failures.saturating_add(1),
            },
        );
        backoff
    }

    fn release(&self, store: &dyn SharedStore, holder: u64, next: Lease) {
        if let Some((value, cas)) = store.get(&self.lease_key()) {
            // Only the holder releases; if the lease expired and someone else took it, leave it.
            if decode::<Lease>(&value).is_some_and(|l| l.holder == holder) {
                let _ = store.set(&self.lease_key(), &encode(&next), Some(cas));
            }
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// In-memory shared data with Envoy's semantics: every write bumps a global CAS counter; a CAS
    /// mismatch on an existing key fails; a missing key is created whatever the CAS.
    #[derive(Default)]
    pub struct MemStore {
        map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next: RefCell<u32>,
    }

    impl SharedStore for MemStore {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.map.borrow().get(key).cloned()
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let mut map = self.map.borrow_mut();
            if let (Some(cas), Some((_, current))) = (cas, map.get(key)) {
                if cas != *current {
                    return Err(StoreError::CasMismatch);
                }
            }
            *self.next.borrow_mut() += 1;
            map.insert(key.to_owned(), (value.to_vec(), *self.next.borrow()));
            Ok(())
        }
    }

    pub const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

    const TIMING: Timing = Timing {
        cache_duration_ms: 60_000,
        fetch_budget_ms: 2_000,
        max_stale_ms: 300_000,
        rotation_grace_ms: 60_000,
        refetch_interval_ms: 30_000,
    };

    fn cache() -> ProviderCache {
        ProviderCache::new("jwt_guard.jwks.p.0".into(), TIMING, 0)
    }

    #[test]
    fn one_lease_holder_across_vms_until_expiry() {
        let store = MemStore::default();
        let (a, b) = (cache(), cache());
        a.ensure_lease(&store);
        assert!(a.try_acquire(&store, 1, 1_000));
        assert!(
            !b.try_acquire(&store, 2, 1_500),
            "second VM must not fetch while the lease is held"
        );
        assert!(
            !a.try_acquire(&store, 1, 1_500),
            "the holder does not start a second fetch"
        );
        // timeout 2 s + margin 1 s: a stuck holder blocks refreshes for at most that long.
        assert!(b.try_acquire(&store, 2, 4_001));
    }

    #[test]
    fn a_stale_cas_loses() {
        let store = MemStore::default();
        let a = cache();
        a.ensure_lease(&store);
        let (_, cas) = store.get("jwt_guard.jwks.p.0.lease").unwrap();
        assert!(a.try_acquire(&store, 1, 10));
        assert_eq!(
            store.set("jwt_guard.jwks.p.0.lease", b"{}", Some(cas)),
            Err(StoreError::CasMismatch)
        );
    }

    #[test]
    fn publish_is_seen_by_other_vms_and_releases_the_lease() {
        let store = MemStore::default();
        let (mut a, mut b) = (cache(), cache());
        assert!(a.try_acquire(&store, 1, 0));
        let set = KeySet::parse(JWKS.as_bytes()).unwrap();
        assert_eq!(a.publish(&store, 1, 0, set).map(|p| p.gen), Ok(1));
        assert!(b.usable(0).is_none());
        assert_eq!(b.sync(&store), SyncResult::Loaded { gen: 1, keys: 1 });
        assert_eq!(b.sync(&store), SyncResult::Unchanged);
        assert!(b.usable(59_999).is_some());
        assert!(!b.needs_refresh(50_000));
        assert!(
            b.needs_refresh(54_000),
            "refresh starts a tenth of the cache duration before expiry"
        );
        assert!(b.usable(60_000 + TIMING.max_stale_ms - 1).is_some());
        assert!(b.usable(60_000 + TIMING.max_stale_ms).is_none());
        assert!(b.try_acquire(&store, 2, 1), "lease released after publish");
    }

    #[test]
    fn failures_back_off_for_every_vm() {
        let store = MemStore::default();
        let (a, b) = (cache(), cache());
        assert!(a.try_acquire(&store, 1, 0));
        assert_eq!(a.record_failure(&store, 1, 0), 1_000);
        assert!(!b.try_acquire(&store, 2, 999));
        assert!(b.try_acquire(&store, 2, 1_000));
        assert_eq!(b.record_failure(&store, 2, 1_000), 2_000);
        assert!(!a.try_acquire(&store, 1, 2_999));
    }

    #[test]
    fn half_written_or_corrupt_bodies_are_not_loaded() {
        let store = MemStore::default();
        let mut b = cache();
        store
            .set(
                "jwt_guard.jwks.p.0.meta",
                br#"{"gen":2,"fetched_at_ms":0,"expires_at_ms":9}"#,
                None,
            )
            .unwrap();
        store
            .set(
                "jwt_guard.jwks.p.0.body",
                format!("1\n{JWKS}").as_bytes(),
                None,
            )
            .unwrap();
        assert_eq!(b.sync(&store), SyncResult::Unchanged);
        store
            .set("jwt_guard.jwks.p.0.body", b"2\nnot json", None)
            .unwrap();
        assert_eq!(b.sync(&store), SyncResult::Corrupt);
        assert!(b.usable(0).is_none());
    }

    const ED_2: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed2","x":"fU0Of2FTpptiQrUiq77mhf2kQg-INLEIw72uNp71Sfo"}]}"#;

    fn set(jwks: &str) -> KeySet {
        KeySet::parse(jwks.as_bytes()).unwrap()
    }

    fn kid_live(c: &ProviderCache, kid: &str, now: u64) -> bool {
        let keys = c.usable(now).unwrap();
        matches!(
            keys.lookup(Some(kid), crate::crypto::Alg::EdDSA, now),
            crate::jwks::KeyLookup::Found(_)
        )
    }

    #[test]
    fn withdrawn_keys_live_out_the_rotation_grace_in_every_vm() {
        let store = MemStore::default();
        let (mut a, mut b) = (cache(), cache());
        assert!(a.try_acquire(&store, 1, 0));
        a.publish(&store, 1, 0, set(JWKS)).unwrap();
        // Rotation at t=10 s: "ed" is withdrawn, "ed2" published.
        assert!(a.try_acquire(&store, 1, 10_000));
        assert_eq!(
            a.publish(&store, 1, 10_000, set(ED_2)).map(|p| p.gen),
            Ok(2)
        );
        assert_eq!(b.sync(&store), SyncResult::Loaded { gen: 2, keys: 2 });
        assert!(kid_live(&b, "ed2", 10_000));
        assert!(kid_live(&b, "ed", 10_000 + TIMING.rotation_grace_ms - 1));
        assert!(!kid_live(&b, "ed", 10_000 + TIMING.rotation_grace_ms));
        assert_eq!(b.usable(10_000).unwrap().current_len(), 1);
        // A later refresh does not extend the withdrawn key's deadline.
        assert!(a.try_acquire(&store, 1, 20_000));
        a.publish(&store, 1, 20_000, set(ED_2)).unwrap();
        b.sync(&store);
        assert!(!kid_live(&b, "ed", 10_000 + TIMING.rotation_grace_ms));
        // And once the deadline passed, the key is not carried any further.
        assert!(a.try_acquire(&store, 1, 80_000));
        a.publish(&store, 1, 80_000, set(ED_2)).unwrap();
        b.sync(&store);
        assert_eq!(b.usable(80_000).unwrap().keys.len(), 1);
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited_across_vms() {
        let store = MemStore::default();
        let (mut a, b) = (cache(), cache());
        assert!(a.try_acquire(&store, 1, 0));
        a.publish(&store, 1, 0, set(JWKS)).unwrap();
        let mut b = b;
        b.sync(&store);
        // First unknown kid: a refetch is requested and the request waits.
        assert_eq!(b.unknown_kid(&store, 1_000), UnknownKid::Wait);
        assert!(
            a.forced_pending(&store, 1_000),
            "every VM sees the forced refetch"
        );
        // Others arriving while it is pending wait for the same refetch.
        assert_eq!(a.unknown_kid(&store, 1_500), UnknownKid::Wait);
        // The refetch lands (generation 2): the kid is still unknown, so deny until the interval passes.
        assert!(a.try_acquire(&store, 1, 1_600));
        a.publish(&store, 1, 1_600, set(JWKS)).unwrap();
        b.sync(&store);
        assert!(!a.forced_pending(&store, 1_700));
        assert_eq!(b.unknown_kid(&store, 1_700), UnknownKid::Deny);
        assert_eq!(a.unknown_kid(&store, 30_999), UnknownKid::Deny);
        assert_eq!(
            a.unknown_kid(&store, 31_000),
            UnknownKid::Wait,
            "next interval"
        );
    }

    #[test]
    fn a_refetch_that_never_lands_stops_holding_requests() {
        let store = MemStore::default();
        let mut a = cache();
        assert!(a.try_acquire(&store, 1, 0));
        a.publish(&store, 1, 0, set(JWKS)).unwrap();
        assert_eq!(a.unknown_kid(&store, 1_000), UnknownKid::Wait);
        // Budget 2 s + 1 s margin: after that the pending refetch no longer holds requests.
        assert_eq!(a.unknown_kid(&store, 3_999), UnknownKid::Wait);
        assert_eq!(a.unknown_kid(&store, 4_000), UnknownKid::Deny);
    }

    #[test]
    fn health_and_fast_fail() {
        let store = MemStore::default();
        let mut a = cache();
        assert_eq!(a.health(0), Health::Empty);
        assert!(a.try_acquire(&store, 1, 0));
        a.record_failure(&store, 1, 0);
        assert!(!a.failing(&store), "one failure: still worth waiting");
        assert!(a.try_acquire(&store, 1, 1_000));
        a.record_failure(&store, 1, 1_000);
        assert!(a.failing(&store), "two in a row: fail fast");
        assert!(a.try_acquire(&store, 1, 3_000));
        a.publish(&store, 1, 3_000, set(JWKS)).unwrap();
        assert!(!a.failing(&store));
        assert_eq!(a.health(3_000), Health::Fresh);
        assert_eq!(a.health(63_000), Health::Stale);
        assert_eq!(a.health(63_000 + TIMING.max_stale_ms), Health::Unavailable);
        // The shared health record changes once per state, whichever VM notices first.
        let b = cache();
        assert!(a.note_health(&store, Health::Stale, 63_000));
        assert!(!b.note_health(&store, Health::Stale, 63_001));
        assert!(b.note_health(&store, Health::Unavailable, 400_000));
    }

    fn big_jwk(kid: &str, x: &str, kib: usize) -> serde_json::Value {
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x,
            "x5c": ["A".repeat(kib * 1024)]})
    }

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const ED2_X: &str = "fU0Of2FTpptiQrUiq77mhf2kQg-INLEIw72uNp71Sfo";

    fn big_set(kid: &str, x: &str, kib: usize) -> KeySet {
        let doc = serde_json::json!({"keys": [big_jwk(kid, x, kib)]}).to_string();
        assert!(doc.len() <= crate::jwks::MAX_JWKS_BYTES);
        KeySet::parse(doc.as_bytes()).unwrap()
    }

    fn kids(c: &ProviderCache, now: u64) -> Vec<String> {
        let keys = c.usable(now).unwrap();
        let mut kids: Vec<String> = keys.keys.iter().filter_map(|k| k.kid.clone()).collect();
        kids.sort();
        kids
    }

    #[test]
    fn a_rotation_of_large_key_sets_publishes_only_what_readers_accept() {
        let store = MemStore::default();
        let (mut a, mut b) = (cache(), cache());
        assert!(a.try_acquire(&store, 1, 0));
        a.publish(&store, 1, 0, big_set("a", ED_X, 200)).unwrap();
        assert_eq!(b.sync(&store), SyncResult::Loaded { gen: 1, keys: 1 });
        // Rotation: "a" (200 KiB of x5c) is retired next to "b"; together past the JWKS limit, but
        // within the stored bound, so every VM reads both.
        assert!(a.try_acquire(&store, 1, 10_000));
        let p = a
            .publish(&store, 1, 10_000, big_set("b", ED2_X, 200))
            .unwrap();
        assert_eq!((p.gen, p.dropped_retired), (2, 0));
        assert_eq!(b.sync(&store), SyncResult::Loaded { gen: 2, keys: 2 });
        // Next rotation: c + b + a would not fit. "a" (grace until 70 s) goes before "b" (80 s).
        assert!(a.try_acquire(&store, 1, 20_000));
        let p = a
            .publish(&store, 1, 20_000, big_set("c", ED_X, 200))
            .unwrap();
        assert_eq!((p.gen, p.dropped_retired), (3, 1));
        assert_eq!(b.sync(&store), SyncResult::Loaded { gen: 3, keys: 2 });
        assert_eq!(kids(&b, 20_000), ["b", "c"]);
        assert_eq!(
            kids(&a, 20_000),
            ["b", "c"],
            "the publisher keeps what it published"
        );
        let (body, _) = store.get("jwt_guard.jwks.p.0.body").unwrap();
        assert!(body.len() <= MAX_STORED_BYTES);
        // Many rotations of varied sizes: no reader ever sees an unreadable set.
        for (i, kib) in [250, 10, 240, 120, 250, 250, 5, 250]
            .into_iter()
            .enumerate()
        {
            let now = 30_000 + i as u64 * 1_000;
            assert!(a.try_acquire(&store, 1, now));
            let x = if i % 2 == 0 { ED_X } else { ED2_X };
            a.publish(&store, 1, now, big_set(&format!("r{i}"), x, kib))
                .unwrap();
            assert!(
                matches!(b.sync(&store), SyncResult::Loaded { .. }),
                "rotation {i}"
            );
            assert!(kids(&b, now).contains(&format!("r{i}")));
        }
    }

    #[test]
    fn extreme_lease_values_in_shared_data_do_not_overflow() {
        let store = MemStore::default();
        let a = cache();
        let lease = "jwt_guard.jwks.p.0.lease";
        let put = |l: Lease| store.set(lease, &encode(&l), None).unwrap();
        put(Lease {
            holder: 1,
            until_ms: 0,
            failures: u32::MAX,
        });
        assert!(a.failing(&store));
        assert_eq!(a.record_failure(&store, 1, u64::MAX - 5), MAX_BACKOFF_MS);
        assert_eq!(a.failures(&store), u32::MAX, "failures saturate");
        let held: Lease = decode(&store.get(lease).unwrap().0).unwrap();
        assert_eq!(held.until_ms, u64::MAX);
        assert!(!a.try_acquire(&store, 1, u64::MAX - 1), "backoff runs");
        put(Lease::default());
        assert!(a.try_acquire(&store, 1, u64::MAX - 1));
        let held: Lease = decode(&store.get(lease).unwrap().0).unwrap();
        assert_eq!(held.until_ms, u64::MAX);
    }

    #[test]
    fn extreme_forced_refetch_values_do_not_overflow() {
        let store = MemStore::default();
        let mut a = cache();
        assert!(a.try_acquire(&store, 1, 0));
        a.publish(&store, 1, 0, set(JWKS)).unwrap();
        let force = encode(&Force {
            at_ms: u64::MAX,
            gen: u64::MAX,
        });
        store.set("jwt_guard.jwks.p.0.force", &force, None).unwrap();
        assert!(a.forced_pending(&store, 1_000));
        assert_eq!(a.unknown_kid(&store, 1_000), UnknownKid::Wait);
        assert_eq!(a.unknown_kid(&store, u64::MAX - 1), UnknownKid::Wait);
    }

    #[test]
    fn extreme_generations_and_times_in_shared_data_do_not_overflow() {
        let store = MemStore::default();
        let (mut a, mut b) = (cache(), cache());
        let meta = encode(&Meta {
            gen: u64::MAX,
            fetched_at_ms: u64::MAX,
            expires_at_ms: u64::MAX,
        });
        store.set("jwt_guard.jwks.p.0.meta", &meta, None).unwrap();
        let body = format!("{}\n{JWKS}", u64::MAX);
        store
            .set("jwt_guard.jwks.p.0.body", body.as_bytes(), None)
            .unwrap();
        assert_eq!(
            b.sync(&store),
            SyncResult::Loaded {
                gen: u64::MAX,
                keys: 1
            }
        );
        assert_eq!(b.usable_until_ms(), Some(u64::MAX));
        assert!(b.usable(u64::MAX - 1).is_some());
        assert_eq!(b.health(u64::MAX - 1), Health::Fresh);
        assert!(!b.needs_refresh(0));
        assert_eq!(b.next_event_ms(0), Some(u64::MAX - refresh_ahead(&TIMING)));
        assert_eq!(b.next_event_ms(u64::MAX), None);
        // Publishing on top of the last generation does not wrap around to an "older" one.
        assert!(a.try_acquire(&store, 1, 5));
        assert_eq!(
            a.publish(&store, 1, u64::MAX - 5, set(JWKS)).map(|p| p.gen),
            Ok(u64::MAX)
        );
        assert_eq!(a.local().map(|l| l.expires_at_ms), Some(u64::MAX));
        assert!(a.usable(u64::MAX - 1).is_some());
    }

    #[test]
    fn the_refresh_window_covers_a_fetch_where_the_cache_duration_allows() {
        let t = |cache_duration_ms, fetch_budget_ms| Timing {
            cache_duration_ms,
            fetch_budget_ms,
            ..TIMING
        };
        // Long caches: a tenth, at most a minute.
        assert_eq!(refresh_ahead(&t(300_000, 2_000)), 30_000);
        assert_eq!(refresh_ahead(&t(86_400_000, 2_000)), 60_000);
        assert_eq!(refresh_ahead(&t(60_000, 2_000)), 6_000);
        // Medium: the whole fetch budget plus a slow tick.
        assert_eq!(refresh_ahead(&t(30_000, 5_000)), 6_000);
        // Short: as much of that as a quarter of the cycle allows.
        assert_eq!(refresh_ahead(&t(10_000, 2_000)), 2_500);
        assert_eq!(refresh_ahead(&t(1_000, 2_000)), 250);
    }

    #[test]
    fn the_tick_wakes_a_vm_at_its_next_event() {
        assert_eq!(tick_ms(0, true, [Some(5_000)]), FAST_TICK_MS);
        assert_eq!(tick_ms(0, false, []), SLOW_TICK_MS);
        assert_eq!(tick_ms(0, false, [None, Some(5_000)]), SLOW_TICK_MS);
        assert_eq!(tick_ms(1_000, false, [Some(1_400), Some(9_000)]), 400);
        assert_eq!(tick_ms(1_000, false, [Some(1_001)]), FAST_TICK_MS);
        assert_eq!(tick_ms(u64::MAX, false, [Some(u64::MAX)]), FAST_TICK_MS);
    }

    /// Two VMs on their own ticks (each 3 ms late), one fetch (taking `latency` ms) per lease: the
    /// times at which either VM saw its key set stale during `run_ms`.
    fn stale_ticks(
        timing: Timing,
        latency: u64,
        run_ms: u64,
        tick: &dyn Fn(&ProviderCache, u64) -> u64,
    ) -> Vec<u64> {
        let store = MemStore::default();
        let mut vms = [
            ProviderCache::new("k".into(), timing, 0x1234_5678),
            ProviderCache::new("k".into(), timing, 0x9abc_def1),
        ];
        let mut next_tick = [0u64, 7];
        let mut landing: Option<(u64, usize)> = None;
        let mut stale = Vec::new();
        loop {
            let vm = if next_tick[0] <= next_tick[1] { 0 } else { 1 };
            let now = next_tick[vm];
            if let Some((at, holder)) = landing.filter(|(at, _)| *at <= now) {
                vms[holder]
                    .publish(&store, holder as u64 + 1, at, set(JWKS))
                    .unwrap();
                landing = None;
                continue;
            }
            if now > run_ms {
                return stale;
            }
            let c = &mut vms[vm];
            c.sync(&store);
            if c.health(now) == Health::Stale {
                stale.push(now);
            }
            if c.needs_refresh(now)
                && landing.is_none()
                && c.try_acquire(&store, vm as u64 + 1, now)
            {
                landing = Some((now + latency, vm));
            }
            // Envoy's timers fire a little late, and the period restarts after each tick's work.
            next_tick[vm] = now + tick(c, now) + 3;
        }
    }

    #[test]
    fn a_one_second_cache_never_goes_stale_with_a_healthy_idp() {
        let timing = Timing {
            cache_duration_ms: 1_000,
            ..TIMING
        };
        let adaptive =
            |c: &ProviderCache, now| tick_ms(now, c.usable(now).is_none(), [c.next_event_ms(now)]);
        for latency in [2, 50, 200] {
            assert_eq!(
                stale_ticks(timing, latency, 20_000, &adaptive),
                Vec::<u64>::new(),
                "fetch latency {latency} ms"
            );
        }
        // The same run on a fixed slow tick (as before) goes stale every cycle.
        let slow = |_: &ProviderCache, _| SLOW_TICK_MS;
        assert!(stale_ticks(timing, 2, 20_000, &slow).len() > 5);
        // And long caches keep working on the adaptive tick.
        let long = Timing {
            cache_duration_ms: 10_000,
            ..TIMING
        };
        assert!(stale_ticks(long, 300, 60_000, &adaptive).is_empty());
    }

    #[test]
    fn jitter_stays_inside_the_refresh_window() {
        for seed in [0, 1, 7, 12_345, u64::MAX] {
            let c = ProviderCache::new("k".into(), TIMING, seed);
            assert!(c.jitter_ms <= 3_000, "{}", c.jitter_ms); // window 6 s, jitter at most half
        }
    }
}
