//! The only module that talks to proxy-wasm. It reads the request, asks the pure core for a decision,
//! and carries it out; fetches JWKS with `dispatch_http_call` from the root context and shares them
//! through `keycache`. Host calls go through `hostcall` (raw imports, every status a value) rather
//! than the SDK's helpers, which panic on statuses they do not expect, so a host error becomes a
//! logged, fail-closed outcome, never a trap.
//!
//! Waiting for keys: a request that needs keys not yet present is paused and parked in its VM's
//! `waiters`. The root context's tick (fast while anything waits or keys are missing) syncs shared
//! data, re-decides parked requests and resumes or answers them through `set_effective_context`.
//! While parked, body and trailer callbacks also pause, so a request body can never carry the request
//! past the filter before it is decided.

use crate::authenticator::{authenticate_at_ms, KeyState, Keys, Outcome};
use crate::config::{BackendChoice, Config, JwksSource, Mode, Rule};
use crate::crypto::{Backend, Verifier};
use crate::error::Denial;
use crate::extractor::{HeaderList, RequestView, Tokens};
use crate::fetcher::{self, FetchResult, Stage};
use crate::hostcall::{self as hostcalls, HostStatus, ProxyWasmHost};
use crate::jwks;
use crate::keycache::{
    self, Health, ProviderCache, SharedStore, StoreError, SyncResult, UnknownKid,
};
use crate::metrics::{self, Registry};
use crate::policy;
use crate::request::{self, Prepared, Step};
use crate::response::deny_response;
use crate::telemetry::ReqCtx;
use crate::tokencache::{CachedToken, ForgedCache, TokenCache};
use crate::waiters::Waiters;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root { context_id, vm: Rc::new(RefCell::new(Vm::default())) })
    });
}}

fn log(level: LogLevel, message: &str) {
    // Envoy prefixes the plugin name and root id already.
    let _ = hostcalls::log(level, message);
}

/// The host's clock in Unix milliseconds; `None` when the host cannot tell the time. Nothing that
/// depends on time is decided without it: requests that need a token get `500 internal_error`, and
/// the key refresh machinery waits for a tick with a clock. (A clock read as 0 would make every
/// expired token and every stale key set look current.)
fn now_ms() -> Option<u64> {
    now_ns().map(|ns| (ns / 1_000_000) as u64)
}

struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        hostcalls::get_shared_data(key).ok().flatten()
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, value, cas) {
            Ok(()) => Ok(()),
            Err(HostStatus::CAS_MISMATCH) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Other),
        }
    }
}

/// A refresh step this VM has dispatched.
struct InFlight {
    provider: usize,
    stage: Stage,
    /// When it was dispatched and with which timeout: a failed answer is a timeout only once that
    /// much time has passed (see `fetcher::check_answer`).
    sent_ms: u64,
    timeout_ms: u64,
    give_up_ms: u64,
}

/// What a request parked until its provider's keys arrive needs to be decided and resumed (its
/// stream and deadline are kept by `waiters::Waiters`).
struct Waiter {
    rule: RuleRef,
    tokens: Tokens,
    parked: Rc<Cell<bool>>,
    ctx: ReqCtx,
}

fn now_ns() -> Option<u128> {
    hostcalls::current_time_ns()
        .ok()
        .map(u128::from)
        .filter(|ns| *ns > 0)
}

/// The VM's telemetry, through the proxy-wasm host.
type Telemetry = crate::telemetry::Telemetry<ProxyWasmHost>;

#[derive(Default)]
struct Vm {
    config: Option<Rc<Config>>,
    /// One per provider, `None` for providers with a local JWKS.
    caches: Vec<Option<ProviderCache>>,
    waiters: Waiters<Waiter>,
    /// dispatch token → (provider index, give-up time), for fetches this VM has in flight. An entry
    /// whose answer never came is dropped at its give-up time so this VM can fetch again.
    in_flight: HashMap<u32, InFlight>,
    holder: u64,
    telemetry: Rc<Telemetry>,
    /// Verified tokens of this VM (see `tokencache`); behind its own cell so the authenticator can use
    /// it through the shared `&Vm`.
    token_cache: RefCell<TokenCache>,
    /// The signature backend in use (`None` before the first configure: wasm).
    backend: Option<Backend>,
    /// The host's known-answer check, run once per VM on the first configure that may use it.
    host_check: Option<Result<(), String>>,
    /// Tokens whose signature failed against a key-set generation (see `tokencache::ForgedCache`).
    forged: RefCell<ForgedCache>,
}

impl Vm {
    /// Resolves `signature_backend` for this VM, running the host's known-answer check the first
    /// time it is needed. `Err` (for `host` only) names the field and why.
    fn choose_backend(&mut self, choice: BackendChoice) -> Result<Backend, String> {
        if choice == BackendChoice::Wasm {
            return Ok(Backend::Wasm);
        }
        let check = self
            .host_check
            .get_or_insert_with(|| crate::detect::detect(&ProxyWasmHost));
        match (check, choice) {
            (Ok(()), _) => Ok(Backend::Host),
            (Err(why), BackendChoice::Host) => Err(format!(
                "invalid plugin configuration: signature_backend: \"host\" is not usable in this Envoy: {why}; use \"auto\" or \"wasm\""
            )),
            (Err(why), _) => {
                let notice = format!(
                    "signature_backend auto: host crypto not usable ({why}); verifying in wasm"
                );
                if note_once(&HostStore, "jwt_guard.signature_backend.notice", &notice) {
                    log(LogLevel::Warn, &notice);
                }
                Ok(Backend::Wasm)
            }
        }
    }
}

/// True the first time this exact `text` is noted under `key` across the Envoy (all VMs sharing
/// the `vm_id`), so a message every worker would print appears once.
fn note_once(store: &dyn SharedStore, key: &str, text: &str) -> bool {
    match store.get(key) {
        Some((seen, _)) if seen == text.as_bytes() => false,
        Some((_, cas)) => store.set(key, text.as_bytes(), Some(cas)).is_ok(),
        None => store.set(key, text.as_bytes(), None).is_ok(),
    }
}

/// The key view the authenticator gets. `may_wait` is false once a parked request reached its
/// deadline: missing keys then mean "unavailable" and the request fails closed.
struct VmKeys<'a> {
    vm: &'a Vm,
    config: &'a Config,
    now_ms: u64,
    may_wait: bool,
}

impl Keys for VmKeys<'_> {
    fn verifier(&self) -> Verifier<'_> {
        Verifier::new(self.vm.backend.unwrap_or(Backend::Wasm), &ProxyWasmHost)
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
            None if self.may_wait && !cache.failing(&HostStore) => KeyState::Pending,
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

    fn unknown_kid(&self, provider: usize) -> bool {
        let Some(cache) = self.vm.caches.get(provider).and_then(Option::as_ref) else {
            return false;
        };
        self.may_wait && cache.unknown_kid(&HostStore, self.now_ms) == UnknownKid::Wait
    }
}

impl Vm {
    /// Pulls newer key sets from shared data for every remote provider; logs changes.
    fn sync_all(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        for (i, cache) in self.caches.iter_mut().enumerate() {
            let Some(cache) = cache else { continue };
            let name = config.providers.get(i).map_or("?", |p| p.name.as_str());
            match cache.sync(&HostStore) {
                SyncResult::Loaded { gen, keys } => {
                    log(LogLevel::Debug, &format!("provider {name}: loaded key set generation {gen} ({keys} keys) from shared data"))
                }
                SyncResult::Corrupt => {
                    log(LogLevel::Warn, &format!("provider {name}: shared key set is unreadable; ignoring it"))
                }
                SyncResult::Unchanged => {}
            }
        }
    }

    fn decide(
        &self,
        config: &Config,
        rule: &Rule,
        tokens: &[Vec<u8>],
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
        authenticate_at_ms(config, requirement, tokens, &keys, now_ms)
    }

    fn anything_missing(&self, now_ms: u64) -> bool {
        !self.waiters.is_empty()
            || self
                .caches
                .iter()
                .flatten()
                .any(|c| c.usable(now_ms).is_none())
    }
}

fn send_denial(config: &Config, denial: &Denial) {
    let r = deny_response(denial, &config.realm);
    let headers: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Err(status) = hostcalls::send_local_response(r.status, &headers, r.body.as_bytes()) {
        log(
            LogLevel::Error,
            &format!("could not send the {} response: {status:?}", r.status),
        );
    }
}

struct Root {
    context_id: u32,
    vm: Rc<RefCell<Vm>>,
}

impl Root {
    /// Starts refreshes for providers whose keys are missing, due, or wanted early (unknown `kid`),
    /// where this VM wins the lease.
    fn refresh_due(&mut self, now: u64) {
        let mut to_fetch = Vec::new();
        {
            let mut vm = self.vm.borrow_mut();
            vm.in_flight.retain(|_, f| f.give_up_ms > now);
            let vm = &*vm;
            for (i, cache) in vm.caches.iter().enumerate() {
                let Some(cache) = cache else { continue };
                if (cache.needs_refresh(now) || cache.forced_pending(&HostStore, now))
                    && !vm.in_flight.values().any(|f| f.provider == i)
                    && cache.try_acquire(&HostStore, vm.holder, now)
                {
                    to_fetch.push(i);
                }
            }
        }
        let Some(config) = self.vm.borrow().config.clone() else {
            return;
        };
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
        let Some(p) = config.providers.get(provider) else {
            return;
        };
        let JwksSource::Remote(remote) = &p.jwks else {
            return;
        };
        let headers = vec![
            (":method", "GET"),
            (":path", path),
            (":authority", authority),
            ("accept", "application/json"),
        ];
        let timeout = Duration::from_millis(remote.timeout_ms);
        match proxy_wasm::hostcalls::dispatch_http_call(
            &remote.cluster,
            headers,
            None,
            vec![],
            timeout,
        ) {
            Ok(token) => {
                let give_up_ms = now.saturating_add(remote.timeout_ms).saturating_add(1_000);
                self.vm.borrow_mut().in_flight.insert(
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
                &fetcher::FetchError::new(
                    FetchResult::DispatchError,
                    format!(
                        "cannot call cluster {:?} ({status:?}); is it defined?",
                        remote.cluster
                    ),
                ),
            ),
        }
    }

    fn fetch_failed(
        &mut self,
        config: &Config,
        provider: usize,
        now: u64,
        error: &fetcher::FetchError,
    ) {
        let why = &error.message;
        let name = config
            .providers
            .get(provider)
            .map_or("?", |p| p.name.as_str());
        let telemetry = self.vm.borrow().telemetry.clone();
        telemetry.inc(telemetry.registry.fetch(provider, error.cause));
        let mut vm = self.vm.borrow_mut();
        let holder = vm.holder;
        let Some(cache) = vm.caches.get_mut(provider).and_then(Option::as_mut) else {
            return;
        };
        let backoff = cache.record_failure(&HostStore, holder, now);
        let serving = match cache.health(now) {
            Health::Fresh => "still serving the cached keys",
            Health::Stale => "serving the expired keys until max_stale",
            Health::Empty | Health::Unavailable => "no usable keys: requests fail closed",
        };
        // One line per attempt, and attempts back off: no log storm while the IdP is down.
        log(
            LogLevel::Warn,
            &format!(
                "provider {name}: key refresh failed: {why}; {serving}; next attempt in {} s",
                backoff / 1000
            ),
        );
    }

    /// Logs a provider's key-set state once per change across the whole Envoy.
    fn report_health(&self, now: u64) {
        let Some(config) = self.vm.borrow().config.clone() else {
            return;
        };
        let vm = self.vm.borrow();
        // Gauges: this VM's linear memory, and the key count of fixed (inline) key sets.
        let pages = core::arch::wasm32::memory_size(0) as u64;
        vm.telemetry
            .set(Some(vm.telemetry.registry.vm_memory_bytes), pages * 65_536);
        for (i, p) in config.providers.iter().enumerate() {
            if let (JwksSource::Local(set), Some(pm)) =
                (&p.jwks, vm.telemetry.registry.providers.get(i))
            {
                vm.telemetry.set(Some(pm.keys), set.current_len() as u64);
            }
        }
        for (i, cache) in vm.caches.iter().enumerate() {
            let Some(cache) = cache else { continue };
            let health = cache.health(now);
            if let (Some(local), Some(pm)) = (cache.local(), vm.telemetry.registry.providers.get(i))
            {
                vm.telemetry
                    .set(Some(pm.keys), local.set.current_len() as u64);
                vm.telemetry.set(
                    Some(pm.age_seconds),
                    now.saturating_sub(local.fetched_at_ms) / 1000,
                );
                vm.telemetry
                    .set(Some(pm.stale), u64::from(health != Health::Fresh));
            }
            if health == Health::Empty || !cache.note_health(&HostStore, health, now) {
                continue;
            }
            let name = config.providers.get(i).map_or("?", |p| p.name.as_str());
            let Some(local) = cache.local() else { continue };
            let age = now.saturating_sub(local.fetched_at_ms) / 1000;
            let retired = local.set.keys.len().saturating_sub(local.set.current_len());
            let failures = cache.failures(&HostStore);
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
            log(
                if health == Health::Fresh { LogLevel::Info } else { LogLevel::Warn },
                &format!(
                    "provider {name}: key set {} (generation {}, {} keys + {retired} retired, age {age} s, {failures} failed refreshes): {detail}",
                    health.name(),
                    local.gen,
                    local.set.current_len(),
                ),
            );
        }
    }

    /// Re-decides parked requests; resumes or answers those that can be decided now.
    fn drain_waiters(&mut self, now: u64) {
        let Some(config) = self.vm.borrow().config.clone() else {
            return;
        };
        let telemetry = self.vm.borrow().telemetry.clone();
        let decided = {
            let mut vm = self.vm.borrow_mut();
            let mut waiters = std::mem::take(&mut vm.waiters);
            let decided = waiters.drain(now, |w, may_wait| match w.rule.get(&config) {
                None => Outcome::Deny(Denial::NoRule),
                Some(rule) => {
                    let outcome = vm.decide(&config, rule, &w.tokens, now, may_wait);
                    if !matches!(outcome, Outcome::Wait(_)) {
                        w.ctx.note_token(&config, &outcome, &w.tokens);
                    }
                    outcome
                }
            });
            vm.waiters = waiters;
            decided
        };
        // No RefCell borrow is held across these host calls.
        for (p, outcome) in decided {
            if hostcalls::set_effective_context(p.context_id).is_err() {
                continue; // the stream is gone
            }
            let w = p.item;
            let Some(rule) = w.rule.get(&config) else {
                deny_without_rule(&config, &telemetry, Denial::NoRule, &w.ctx);
                continue;
            };
            if carry_out(
                &config,
                &telemetry,
                rule,
                policy::plan(&config, rule, outcome),
                &w.ctx,
            ) {
                w.parked.set(false);
                if let Err(status) = hostcalls::resume_http_request() {
                    log(
                        LogLevel::Warn,
                        &format!("could not resume a request: {status:?}"),
                    );
                }
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
    }

    /// Answers every parked request with `500 internal_error`: without a clock their deadlines and
    /// the keys they wait for cannot be judged, and they must not wait forever.
    fn fail_waiters(&mut self) {
        let Some(config) = self.vm.borrow().config.clone() else {
            return;
        };
        let telemetry = self.vm.borrow().telemetry.clone();
        let waiters = self.vm.borrow_mut().waiters.take_all();
        for p in waiters {
            if hostcalls::set_effective_context(p.context_id).is_ok() {
                deny_without_rule(&config, &telemetry, Denial::Internal, &p.item.ctx);
            }
        }
        let _ = hostcalls::set_effective_context(self.context_id);
    }

    /// Wakes this VM at its next refresh point or expiry when that is closer than a slow tick, so a
    /// short `cache_duration` is refreshed (and loaded from other VMs) before it runs out.
    fn set_tick(&self, now: u64) {
        let vm = self.vm.borrow();
        let period = keycache::tick_ms(
            now,
            vm.anything_missing(now),
            vm.caches.iter().flatten().map(|c| c.next_event_ms(now)),
        );
        if let Err(status) = hostcalls::set_tick_period_ms(period) {
            // Runs on every tick: at warn level a failing host would flood the log; the previous
            // period stays in force, so nothing else is to be done here.
            log(
                LogLevel::Debug,
                &format!("cannot set the tick period to {period} ms: {status:?}"),
            );
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(call) = self.vm.borrow_mut().in_flight.remove(&token) else {
            return;
        };
        let Some(now) = now_ms() else {
            // The answer cannot be dated; the lease lapses and the next tick with a clock retries.
            log(
                LogLevel::Error,
                "the host clock is unavailable; key refresh answer dropped",
            );
            return;
        };
        let Some(config) = self.vm.borrow().config.clone() else {
            return;
        };
        let Some(provider) = config.providers.get(call.provider) else {
            return;
        };
        let status = hostcalls::header_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok());
        // A failed answer's first bytes tell Envoy's own local replies from the IdP's.
        let body_start = if status.as_deref() == Some("200") {
            Vec::new()
        } else {
            let len = body_size.min(fetcher::BODY_START_BYTES);
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, len)
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
            match hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size) {
                Ok(Some(body)) => Ok(body),
                Ok(None) => Err(fetcher::FetchError::new(
                    FetchResult::Invalid,
                    "empty answer",
                )),
                Err(status) => Err(fetcher::FetchError::new(
                    FetchResult::Invalid,
                    format!("cannot read the answer: {status:?}"),
                )),
            }
        });
        match (call.stage, body) {
            (_, Err(why)) => self.fetch_failed(&config, call.provider, now, &why),
            (Stage::Discovery, Ok(body)) => {
                let https = matches!(&provider.jwks, JwksSource::Remote(r) if r.https);
                match fetcher::jwks_location(&body, &provider.issuer, https) {
                    Ok((authority, path)) => {
                        self.dispatch(&config, call.provider, Stage::Jwks, &authority, &path, now)
                    }
                    Err(why) => self.fetch_failed(&config, call.provider, now, &why),
                }
            }
            (Stage::Jwks, Ok(body)) => match fetcher::parse_jwks(&body) {
                Err(why) => self.fetch_failed(&config, call.provider, now, &why),
                Ok(set) => {
                    let (keys, skipped) = (set.keys.len(), jwks::skipped_summary(&set.skipped));
                    let published = {
                        let mut vm = self.vm.borrow_mut();
                        let holder = vm.holder;
                        vm.caches
                            .get_mut(call.provider)
                            .and_then(Option::as_mut)
                            .map(|cache| cache.publish(&HostStore, holder, now, set))
                    };
                    match published {
                        None => {}
                        Some(Err(e)) => self.fetch_failed(
                            &config,
                            call.provider,
                            now,
                            &fetcher::FetchError::new(
                                FetchResult::TooLarge,
                                format!("the key set does not fit shared data: {e}"),
                            ),
                        ),
                        Some(Ok(p)) => {
                            let telemetry = self.vm.borrow().telemetry.clone();
                            telemetry.inc(
                                telemetry
                                    .registry
                                    .fetch(call.provider, FetchResult::Success),
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
                            log(
                                if p.dropped_retired == 0 { LogLevel::Info } else { LogLevel::Warn },
                                &format!(
                                    "provider {}: fetched JWKS generation {} with {keys} usable keys{skipped}{dropped}",
                                    provider.name, p.gen
                                ),
                            );
                        }
                    }
                }
            },
        }
        self.report_health(now);
        self.drain_waiters(now);
        self.set_tick(now);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            Ok(None) => {
                log(LogLevel::Error, "invalid plugin configuration: it is empty");
                return false;
            }
            Err(status) => {
                log(
                    LogLevel::Error,
                    &format!("cannot read the plugin configuration: {status:?}"),
                );
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(c) => Rc::new(c),
            Err(e) => {
                log(LogLevel::Error, &e.to_string());
                return false;
            }
        };
        let now = now_ms().unwrap_or(0);
        // Distinct per VM: time of configure, this root's id and a heap address. Also seeds the
        // refresh jitter, so VMs (and Envoys) started together do not refresh in the same second.
        let addr = Rc::as_ptr(&self.vm) as usize as u64;
        let holder = (now ^ (u64::from(self.context_id) << 48) ^ addr.rotate_left(17)) | 1;
        let jitter_seed = holder.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11;
        let caches = config
            .providers
            .iter()
            .map(|p| match &p.jwks {
                JwksSource::Remote(r) => {
                    let cache = ProviderCache::new(r.cache_key.clone(), r.timing, jitter_seed);
                    cache.ensure_lease(&HostStore);
                    Some(cache)
                }
                JwksSource::Local(_) => None,
            })
            .collect();
        // Inline key sets are parsed once, here: say what they skipped, as a fetch would.
        for p in &config.providers {
            if let JwksSource::Local(set) = &p.jwks {
                if let Some(skipped) = jwks::skipped_summary(&set.skipped) {
                    log(
                        LogLevel::Warn,
                        &format!(
                            "provider {}: local JWKS has {} usable keys; {skipped}",
                            p.name,
                            set.current_len()
                        ),
                    );
                }
            }
        }
        let backend = match self
            .vm
            .borrow_mut()
            .choose_backend(config.signature_backend)
        {
            Ok(b) => b,
            Err(message) => {
                log(LogLevel::Error, &message);
                return false;
            }
        };
        if backend == Backend::Wasm {
            // The shared generator table of the in-wasm ES256 (~6 ms once per VM), here rather
            // than on the first request.
            crate::p256_fast::P256Verifier::warm_up();
        }
        let telemetry = Rc::new(Telemetry::define(ProxyWasmHost, Registry::build(&config)));
        for (b, idx) in &telemetry.registry.signature_backend {
            telemetry.set(Some(*idx), u64::from(*b == backend));
        }
        let backend_line = format!("signature backend: {}", backend.name());
        if note_once(&HostStore, "jwt_guard.signature_backend", &backend_line) {
            log(LogLevel::Info, &backend_line);
        }
        {
            let mut vm = self.vm.borrow_mut();
            vm.backend = Some(backend);
            vm.telemetry = telemetry;
            vm.token_cache = RefCell::new(TokenCache::new(config.token_cache_size));
            vm.forged = RefCell::new(ForgedCache::default());
            vm.holder = holder;
            vm.config = Some(config);
            vm.caches = caches;
            vm.in_flight.clear();
            vm.sync_all();
        }
        // The first fetch starts on the first tick, not here: at configure time Envoy's clusters may
        // not be initialised yet, and a call dispatched then can be lost (seen with Envoy 1.40).
        let _ = hostcalls::set_tick_period_ms(keycache::FAST_TICK_MS);
        true
    }

    fn on_tick(&mut self) {
        let Some(now) = now_ms() else {
            // Parked requests are answered by their own deadline check once the clock is back; a
            // refresh dated 0 would corrupt the shared lease and key-set times.
            log(
                LogLevel::Error,
                "the host clock is unavailable; skipping this tick",
            );
            self.fail_waiters();
            return;
        };
        self.vm.borrow_mut().sync_all();
        self.report_health(now);
        self.refresh_due(now);
        self.drain_waiters(now);
        self.set_tick(now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            context_id,
            vm: self.vm.clone(),
            parked: Rc::new(Cell::new(false)),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Which rule a parked request is under: an index into `rules`, or the default rule.
#[derive(Clone, Copy)]
enum RuleRef {
    Index(usize),
    Default,
}

impl RuleRef {
    fn get(self, config: &Config) -> Option<&Rule> {
        match self {
            RuleRef::Index(i) => config.rules.get(i),
            RuleRef::Default => config.default_rule.as_ref(),
        }
    }

    fn of(config: &Config, rule: &Rule) -> RuleRef {
        match config.rules.iter().position(|r| std::ptr::eq(r, rule)) {
            Some(i) => RuleRef::Index(i),
            None => RuleRef::Default,
        }
    }
}

/// Applies a plan in the current (effective) stream: answers it, or sets headers and logs. Returns
/// true when the request should go on to the upstream.
fn carry_out(
    config: &Config,
    telemetry: &Telemetry,
    rule: &Rule,
    plan: policy::Plan,
    ctx: &ReqCtx,
) -> bool {
    telemetry.decision(config, &rule.name, rule.mode, &plan, ctx);
    if let Some(denial) = plan.respond {
        log(LogLevel::Debug, &format!("deny: {denial}"));
        send_denial(config, &denial);
        return false;
    }
    for (name, value) in &plan.set_headers {
        // Every header the filter sets was stripped from the request in every spelling first
        // (`Config::managed_headers`), and each is set once: adding is replacing, and cheaper.
        if hostcalls::add_header(MapType::HttpRequestHeaders, name, value.as_bytes()).is_err() {
            // An identity header that cannot be set must not leave the request half-described.
            log(LogLevel::Error, &format!("could not set {name}; denying"));
            send_denial(config, &Denial::Internal);
            return false;
        }
    }
    for d in &plan.dropped {
        log(
            LogLevel::Warn,
            &format!("claim for {} not forwarded: {}", d.header, d.detail),
        );
    }
    if let Some(line) = &plan.log {
        log(LogLevel::Info, line);
    }
    true
}

/// Denies a request that has no rule (none matched, or the host failed us before one was chosen).
fn deny_without_rule(config: &Config, telemetry: &Telemetry, denial: Denial, ctx: &ReqCtx) {
    let plan = policy::Plan {
        outcome: crate::codes::Decision::Deny,
        reason: denial.code(),
        respond: Some(denial),
        ..policy::Plan::default()
    };
    let placeholder = Rule {
        name: metrics::NO_RULE_ROUTE.to_owned(),
        matcher: Default::default(),
        requires: None,
        mode: Mode::Enforce,
        on_keys_unavailable: crate::config::OnKeysUnavailable::FailClosed,
    };
    carry_out(config, telemetry, &placeholder, plan, ctx);
}

/// Removes the client headers and tokens `request::prepare` named. False if the host refused one
/// of the operations: the request then fails closed.
fn apply_removals(prepared: &Prepared) -> bool {
    let remove = |name: &str| hostcalls::remove_header(MapType::HttpRequestHeaders, name).is_ok();
    let mut ok = prepared.strip.iter().all(|n| remove(n));
    let scrub = &prepared.scrub;
    ok &= scrub.remove_headers.iter().all(|n| remove(n));
    if let Some(new_path) = &scrub.path {
        ok &= hostcalls::replace_header(MapType::HttpRequestHeaders, ":path", new_path).is_ok();
    }
    if let Some(new_cookie) = &scrub.cookie {
        ok &= match new_cookie {
            Some(c) => hostcalls::replace_header(MapType::HttpRequestHeaders, "cookie", c),
            None => hostcalls::remove_header(MapType::HttpRequestHeaders, "cookie"),
        }
        .is_ok();
    }
    ok
}

struct Http {
    context_id: u32,
    vm: Rc<RefCell<Vm>>,
    parked: Rc<Cell<bool>>,
}

/// The request headers, read from the host once per request (one host call instead of one per
/// header). Envoy hands header names over lowercase.
fn read_headers() -> Option<HeaderList> {
    let bytes = hostcalls::header_pairs(MapType::HttpRequestHeaders).ok()?;
    let pairs = crate::wire::parse_pairs(&bytes)?;
    Some(HeaderList(
        pairs
            .into_iter()
            .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.to_vec()))
            .collect(),
    ))
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        let id = self.context_id;
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.waiters.forget(id);
        }
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let clock = now_ns();
        let start_ns = clock.unwrap_or(0);
        let (config, telemetry) = {
            let vm = self.vm.borrow();
            (vm.config.clone(), vm.telemetry.clone())
        };
        let Some(config) = config else {
            // No valid configuration: Envoy should not have created the filter; fail closed.
            send_denial_unconfigured();
            return Action::Pause;
        };
        let Some(all) = read_headers() else {
            deny_without_rule(
                &config,
                &telemetry,
                Denial::Internal,
                &ReqCtx {
                    start_ns,
                    request_id: None,
                    method: Vec::new(),
                    path: Vec::new(),
                    token_hash: None,
                },
            );
            return Action::Pause;
        };
        let header = |name: &str| all.header(name).unwrap_or_default();
        let mut ctx = ReqCtx {
            start_ns,
            request_id: all.header("x-request-id"),
            method: header(":method"),
            path: header(":path"),
            token_hash: None,
        };
        let route_name = if config.uses_route_names {
            hostcalls::get_property(&["xds", "route_name"])
                .ok()
                .flatten()
        } else {
            None
        };
        let names = all.names();
        let clock_ms = clock.map(|ns| (ns / 1_000_000) as u64);
        let prepared = request::prepare(&config, &all, &names, clock_ms, route_name);
        // Before anything else, on every path: no client-supplied identity header survives, and no
        // token travels on where it must not.
        if !apply_removals(&prepared) {
            deny_without_rule(&config, &telemetry, Denial::Internal, &ctx);
            return Action::Pause;
        }
        let (rule, requirement, tokens, now) = match prepared.step {
            Step::Preflight => {
                telemetry.inc(Some(telemetry.registry.cors_preflights));
                return Action::Continue;
            }
            Step::Refuse(denial) => {
                deny_without_rule(&config, &telemetry, denial, &ctx);
                return Action::Pause;
            }
            Step::Decided(rule, outcome) => {
                let plan = policy::plan(&config, rule, outcome);
                return if carry_out(&config, &telemetry, rule, plan, &ctx) {
                    Action::Continue
                } else {
                    Action::Pause
                };
            }
            Step::Authenticate {
                rule,
                requirement,
                tokens,
                now_ms,
            } => (rule, requirement, tokens, now_ms),
        };
        let outcome = {
            let mut vm = self.vm.borrow_mut();
            // Within the refresh window (or without keys) a small shared-data read per request lets
            // this worker use a set another worker just published, instead of waiting for its tick.
            let due = |c: &ProviderCache| c.needs_refresh(now) || c.usable(now).is_none();
            if requirement
                .providers
                .iter()
                .any(|&i| vm.caches.get(i).and_then(Option::as_ref).is_some_and(due))
            {
                vm.sync_all();
            }
            vm.decide(&config, rule, &tokens, now, true)
        };
        if let Outcome::Wait(_) = outcome {
            self.parked.set(true);
            self.vm.borrow_mut().waiters.park(
                self.context_id,
                now.saturating_add(config.jwks_wait_timeout_ms),
                Waiter {
                    rule: RuleRef::of(&config, rule),
                    tokens,
                    parked: self.parked.clone(),
                    ctx,
                },
            );
            // Sets the tick of this VM's root context, so the wait is noticed quickly.
            let _ = hostcalls::set_tick_period_ms(keycache::FAST_TICK_MS);
            return Action::Pause;
        }
        ctx.note_token(&config, &outcome, &tokens);
        if carry_out(
            &config,
            &telemetry,
            rule,
            policy::plan(&config, rule, outcome),
            &ctx,
        ) {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, _size: usize, _end_of_stream: bool) -> Action {
        if self.parked.get() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        if self.parked.get() {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

fn send_denial_unconfigured() {
    let r = deny_response(&Denial::KeysUnavailable, "envoy");
    let headers: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let _ = hostcalls::send_local_response(r.status, &headers, r.body.as_bytes());
}
