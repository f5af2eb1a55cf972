//! The JWKS fetcher of a VM: which providers are due (lease won in shared data), the discovery →
//! JWKS stages, failures with backoff, publishing a fetched set to every VM, key-set health lines
//! (once per change across the Envoy) and the tick period. What an answer means is decided by the
//! pure `fetcher` module; this part dispatches and carries the verdict out.

use super::{Engine, InFlight};
use crate::config::{Config, JwksSource};
use crate::fetcher::{self, FetchError, FetchResult, Stage};
use crate::host::{Host, Level};
use crate::jwks;
use crate::keycache::{self, Health, SyncResult};

impl<H: Host + Clone> Engine<H> {
    /// Pulls newer key sets from shared data for every remote provider; logs changes.
    pub(super) fn sync_all(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let store = super::Store(&self.host);
        for (i, cache) in self.caches.iter_mut().enumerate() {
            let Some(cache) = cache else { continue };
            let name = config.providers.get(i).map_or("?", |p| p.name.as_str());
            match cache.sync(&store) {
                SyncResult::Loaded { gen, keys } => self.host.log(
                    Level::Debug,
                    &format!("provider {name}: loaded key set generation {gen} ({keys} keys) from shared data"),
                ),
                SyncResult::Corrupt => self.host.log(
                    Level::Warn,
                    &format!("provider {name}: shared key set is unreadable; ignoring it"),
                ),
                SyncResult::Unchanged => {}
            }
        }
    }

    /// Starts refreshes for providers whose keys are missing, due, or wanted early (unknown `kid`),
    /// where this VM wins the lease.
    pub(super) fn refresh_due(&mut self, now: u64) {
        let Some(config) = self.config.clone() else {
            return;
        };
        self.in_flight.retain(|_, f| f.give_up_ms > now);
        let store = self.store();
        let to_fetch: Vec<usize> = self
            .caches
            .iter()
            .enumerate()
            .filter_map(|(i, cache)| {
                let cache = cache.as_ref()?;
                let due = cache.needs_refresh(now) || cache.forced_pending(&store, now);
                (due && !self.in_flight.values().any(|f| f.provider == i)
                    && cache.try_acquire(&store, self.holder, now))
                .then_some(i)
            })
            .collect();
        for i in to_fetch {
            let Some(JwksSource::Remote(remote)) = config.providers.get(i).map(|p| &p.jwks) else {
                continue;
            };
            let stage = if remote.discovery {
                Stage::Discovery
            } else {
                Stage::Jwks
            };
            self.dispatch(&config, i, stage, &remote.authority, &remote.path, now);
        }
    }

    /// Sends one refresh request; a refusal by the host counts as a failed fetch.
    fn dispatch(
        &mut self,
        config: &Config,
        provider: usize,
        stage: Stage,
        authority: &str,
        path: &str,
        now: u64,
    ) {
        let Some(JwksSource::Remote(remote)) = config.providers.get(provider).map(|p| &p.jwks)
        else {
            return;
        };
        let mut headers = vec![
            (":method", "GET"),
            (":path", path),
            (":authority", authority),
            ("accept", "application/json"),
        ];
        headers.extend(
            remote
                .request_headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str())),
        );
        match self
            .host
            .http_call(&remote.cluster, &headers, remote.timeout_ms)
        {
            Ok(token) => {
                let give_up_ms = now.saturating_add(remote.timeout_ms).saturating_add(1_000);
                self.in_flight.insert(
                    token,
                    InFlight {
                        provider,
                        stage,
                        sent_ms: now,
                        timeout_ms: remote.timeout_ms,
                        give_up_ms,
                    },
                );
            }
            Err(status) => self.fetch_failed(
                config,
                provider,
                now,
                &FetchError::new(
                    FetchResult::DispatchError,
                    format!(
                        "cannot call cluster {:?} ({status:?}); is it defined?",
                        remote.cluster
                    ),
                ),
            ),
        }
    }

    fn fetch_failed(&mut self, config: &Config, provider: usize, now: u64, error: &FetchError) {
        let name = config
            .providers
            .get(provider)
            .map_or("?", |p| p.name.as_str());
        self.telemetry
            .inc(self.telemetry.registry.fetch(provider, error.cause));
        let Some(cache) = self.caches.get(provider).and_then(Option::as_ref) else {
            return;
        };
        let backoff = cache.record_failure(&super::Store(&self.host), self.holder, now);
        let serving = match cache.health(now) {
            Health::Fresh => "still serving the cached keys",
            Health::Stale => "serving the expired keys until max_stale",
            Health::Empty | Health::Unavailable => "no usable keys: requests fail closed",
        };
        // One line per attempt, and attempts back off: no log storm while the IdP is down.
        self.log(
            Level::Warn,
            &format!(
                "provider {name}: key refresh failed: {}; {serving}; next attempt in {} s",
                error.message,
                backoff / 1000
            ),
        );
    }

    /// The answer to a fetch this VM dispatched (`token`), with a body of `body_size` bytes.
    pub fn on_http_call_response(&mut self, token: u32, body_size: usize) {
        let Some(call) = self.in_flight.remove(&token) else {
            return;
        };
        let Some(now) = self.now_ms() else {
            // The answer cannot be dated; the lease lapses and the next tick with a clock retries.
            self.log(
                Level::Error,
                "the host clock is unavailable; key refresh answer dropped",
            );
            return;
        };
        let Some(config) = self.config.clone() else {
            return;
        };
        let Some(provider) = config.providers.get(call.provider) else {
            return;
        };
        let status = self
            .host
            .http_call_status()
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok());
        // A failed answer's first bytes tell Envoy's own local replies from the IdP's.
        let body_start = if status.as_deref() == Some("200") {
            Vec::new()
        } else {
            self.host
                .http_call_body(body_size.min(fetcher::BODY_START_BYTES))
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let answer = fetcher::Answer {
            status: status.as_deref(),
            body_size,
            body_start: &body_start,
            elapsed_ms: now.saturating_sub(call.sent_ms),
            timeout_ms: call.timeout_ms,
        };
        let body = fetcher::check_answer(call.stage, &answer).and_then(|()| {
            match self.host.http_call_body(body_size) {
                Ok(Some(body)) => Ok(body),
                Ok(None) => Err(FetchError::new(FetchResult::Invalid, "empty answer")),
                Err(status) => Err(FetchError::new(
                    FetchResult::Invalid,
                    format!("cannot read the answer: {status:?}"),
                )),
            }
        });
        match (call.stage, body) {
            (_, Err(why)) => self.fetch_failed(&config, call.provider, now, &why),
            (Stage::Discovery, Ok(body)) => {
                let https = matches!(&provider.jwks, JwksSource::Remote(r) if r.https);
                let fits = |found: &str| provider.discovery_issuer_fits(found);
                match fetcher::jwks_location_for(&body, &provider.issuer, &fits, https) {
                    Ok((authority, path)) => {
                        self.dispatch(&config, call.provider, Stage::Jwks, &authority, &path, now)
                    }
                    Err(why) => self.fetch_failed(&config, call.provider, now, &why),
                }
            }
            (Stage::Jwks, Ok(body)) => match fetcher::parse_jwks(&body) {
                Err(why) => self.fetch_failed(&config, call.provider, now, &why),
                Ok(set) => self.publish(&config, call.provider, now, set),
            },
        }
        self.report_health(now);
        self.drain_waiters(now);
        self.set_tick(now);
    }

    /// Publishes a fetched key set to shared data (every VM) and takes it into use here.
    fn publish(&mut self, config: &Config, provider: usize, now: u64, set: jwks::KeySet) {
        let name = config
            .providers
            .get(provider)
            .map_or("?", |p| p.name.as_str());
        let (keys, skipped) = (set.keys.len(), jwks::skipped_summary(&set.skipped));
        let store = super::Store(&self.host);
        let published = self
            .caches
            .get_mut(provider)
            .and_then(Option::as_mut)
            .map(|cache| cache.publish(&store, self.holder, now, set));
        match published {
            None => {}
            Some(Err(e)) => self.fetch_failed(
                config,
                provider,
                now,
                &FetchError::new(
                    FetchResult::TooLarge,
                    format!("the key set does not fit shared data: {e}"),
                ),
            ),
            Some(Ok(p)) => {
                self.telemetry.inc(
                    self.telemetry
                        .registry
                        .fetch(provider, FetchResult::Success),
                );
                let skipped = skipped.map_or(String::new(), |s| format!("; {s}"));
                let dropped = if p.dropped_retired == 0 {
                    String::new()
                } else {
                    format!(
                        "; {} retired keys dropped before their grace ended (shared-data limit {} bytes)",
                        p.dropped_retired,
                        jwks::MAX_STORED_BYTES
                    )
                };
                self.log(
                    if p.dropped_retired == 0 { Level::Info } else { Level::Warn },
                    &format!(
                        "provider {name}: fetched JWKS generation {} with {keys} usable keys{skipped}{dropped}",
                        p.gen
                    ),
                );
            }
        }
    }

    /// Sets the gauges, and logs a provider's key-set state once per change across the Envoy.
    pub(super) fn report_health(&self, now: u64) {
        let Some(config) = self.config.as_ref() else {
            return;
        };
        let t = &self.telemetry;
        // Gauges: this VM's linear memory, and the key count of fixed (inline) key sets.
        t.set(Some(t.registry.vm_memory_bytes), self.host.memory_bytes());
        for (i, p) in config.providers.iter().enumerate() {
            if let (JwksSource::Local(set), Some(pm)) = (&p.jwks, t.registry.providers.get(i)) {
                t.set(Some(pm.keys), set.current_len() as u64);
            }
        }
        let store = self.store();
        for (i, cache) in self.caches.iter().enumerate() {
            let Some(cache) = cache else { continue };
            let health = cache.health(now);
            if let (Some(local), Some(pm)) = (cache.local(), t.registry.providers.get(i)) {
                t.set(Some(pm.keys), local.set.current_len() as u64);
                t.set(
                    Some(pm.age_seconds),
                    now.saturating_sub(local.fetched_at_ms) / 1000,
                );
                t.set(Some(pm.stale), u64::from(health != Health::Fresh));
            }
            if health == Health::Empty || !cache.note_health(&store, health, now) {
                continue;
            }
            let name = config.providers.get(i).map_or("?", |p| p.name.as_str());
            let Some(local) = cache.local() else { continue };
            let age = now.saturating_sub(local.fetched_at_ms) / 1000;
            let retired = local.set.keys.len().saturating_sub(local.set.current_len());
            let failures = cache.failures(&store);
            let detail = match health {
                Health::Fresh => "in use".to_owned(),
                Health::Stale => format!(
                    "expired {} s ago, used for at most {} s more while refreshes fail",
                    now.saturating_sub(local.expires_at_ms) / 1000,
                    cache
                        .usable_until_ms()
                        .map_or(0, |until| until.saturating_sub(now) / 1000)
                ),
                Health::Unavailable | Health::Empty => {
                    "past max_stale: requests fail closed with 503".to_owned()
                }
            };
            self.log(
                if health == Health::Fresh { Level::Info } else { Level::Warn },
                &format!(
                    "provider {name}: key set {} (generation {}, {} keys + {retired} retired, age {age} s, {failures} failed refreshes): {detail}",
                    health.name(),
                    local.gen,
                    local.set.current_len(),
                ),
            );
        }
    }

    /// True while a request waits or a provider has no usable keys: the tick stays fast.
    fn anything_missing(&self, now_ms: u64) -> bool {
        !self.waiters.is_empty()
            || self
                .caches
                .iter()
                .flatten()
                .any(|c| c.usable(now_ms).is_none())
    }

    /// Wakes this VM at its next refresh point or expiry when that is closer than a slow tick, so a
    /// short `cache_duration` is refreshed (and loaded from other VMs) before it runs out.
    pub(super) fn set_tick(&self, now: u64) {
        let period = keycache::tick_ms(
            now,
            self.anything_missing(now),
            self.caches.iter().flatten().map(|c| c.next_event_ms(now)),
        );
        if let Err(status) = self.host.set_tick_ms(period) {
            // Runs on every tick: at warn level a failing host would flood the log; the previous
            // period stays in force, so nothing else is to be done here.
            self.log(
                Level::Debug,
                &format!("cannot set the tick period to {period} ms: {status:?}"),
            );
        }
    }
}
