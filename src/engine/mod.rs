//! The engine: everything the filter does between the host's callbacks and the pure core, written
//! against `host::Host` so it runs natively on `host::FakeHost` as well as in Envoy. Split by job,
//! the way Envoy's `jwt_authn` keeps its fetcher, verifier and filter apart:
//!
//! - `stream`: request orchestration (strip, choose the step, authenticate, carry the plan out), and
//!   resuming or answering parked requests;
//! - `fetch`: the JWKS fetcher (leases, discovery → JWKS stages, failures and backoff, publishing to
//!   shared data, health reporting, the tick period);
//! - `keys`: the key view the authenticator gets (shared-data key sets, token and forged caches);
//! - `waiters`: parked requests and their deadlines;
//! - `telemetry`: decision metrics and audit records.
//!
//! One `Engine` is one VM: the proxy-wasm adapter (`filter.rs`) owns it and forwards each callback.
//!
//! Waiting for keys: a request that needs keys not yet present is paused and parked. The root
//! context's tick (fast while anything waits or keys are missing) syncs shared data, re-decides
//! parked requests and resumes or answers them through `set_effective_context`. While parked, body
//! and trailer callbacks also pause, so a request body can never carry the request past the filter
//! before it is decided.

mod fetch;
mod keys;
mod stream;
pub mod telemetry;
pub mod waiters;

use crate::config::{BackendChoice, Config, JwksSource, Rule};
use crate::crypto::Backend;
use crate::fetcher::Stage;
use crate::host::{Host, HostStatus, Level};
use crate::jwks;
use crate::keycache::{self, ProviderCache, SharedStore, StoreError};
use crate::metrics::Registry;
use crate::tokencache::{ForgedCache, TokenCache};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use telemetry::{ReqCtx, Telemetry};
use waiters::Waiters;

/// What the host should do with a request after a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// Shared data through the host, as the key cache's store.
pub(crate) struct Store<'a, H>(pub &'a H);

impl<H: Host> SharedStore for Store<'_, H> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.shared_get(key).ok().flatten()
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match self.0.shared_set(key, value, cas) {
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
/// stream and deadline are kept by `Waiters`).
struct Waiter {
    /// Its stream (also the key of its place in `Waiters`), made effective to decide it.
    context_id: u32,
    rule: RuleRef,
    tokens: crate::extractor::Tokens,
    presentation: crate::binding::Presentation,
    /// The filter removed or rewrote request headers before parking it (the route is re-matched).
    removed: bool,
    ctx: ReqCtx,
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

/// One VM's state and the callbacks the adapter forwards.
pub struct Engine<H: Host + Clone> {
    host: H,
    /// The root context's id, made effective again after answering parked requests.
    root_id: u32,
    config: Option<Rc<Config>>,
    /// One per provider, `None` for providers with a local JWKS.
    caches: Vec<Option<ProviderCache>>,
    waiters: Waiters<Waiter>,
    /// Streams paused until decided: their body and trailers pause too.
    held: HashSet<u32>,
    /// dispatch token → the fetch in flight. An entry whose answer never came is dropped at its
    /// give-up time so this VM can fetch again.
    in_flight: HashMap<u32, InFlight>,
    holder: u64,
    telemetry: Rc<Telemetry<H>>,
    /// Verified tokens of this VM (see `tokencache`); behind a cell so the authenticator can use it
    /// through the shared key view.
    token_cache: RefCell<TokenCache>,
    /// The signature backend in use (`None` before the first configure: wasm).
    backend: Option<Backend>,
    /// The host's known-answer check, run once per VM on the first configure that may use it.
    host_check: Option<Result<(), String>>,
    /// Tokens whose signature failed against a key-set generation (see `tokencache::ForgedCache`).
    forged: RefCell<ForgedCache>,
    /// DPoP proof keys parsed before, by their `jwk` text (at most `PROOF_KEYS`, then cleared).
    proof_keys: RefCell<HashMap<String, crate::crypto::PublicKey>>,
}

/// DPoP proof keys a VM keeps.
const PROOF_KEYS: usize = 256;

impl<H: Host + Clone> Engine<H> {
    pub fn new(host: H, root_id: u32) -> Engine<H> {
        Engine {
            telemetry: Rc::new(Telemetry::define(host.clone(), Registry::default())),
            host,
            root_id,
            config: None,
            caches: Vec::new(),
            waiters: Waiters::default(),
            held: HashSet::new(),
            in_flight: HashMap::new(),
            holder: 0,
            token_cache: RefCell::new(TokenCache::new(0)),
            backend: None,
            host_check: None,
            forged: RefCell::new(ForgedCache::default()),
            proof_keys: RefCell::new(HashMap::new()),
        }
    }

    fn log(&self, level: Level, message: &str) {
        self.host.log(level, message);
    }

    /// The host's clock in Unix milliseconds; `None` when the host cannot tell the time. Nothing
    /// that depends on time is decided without it: requests that need a token get
    /// `500 internal_error`, and the key refresh machinery waits for a tick with a clock. (A clock
    /// read as 0 would make every expired token and every stale key set look current.)
    fn now_ms(&self) -> Option<u64> {
        self.host.now_ns().map(|ns| (ns / 1_000_000) as u64)
    }

    fn store(&self) -> Store<'_, H> {
        Store(&self.host)
    }

    /// Reads, compiles and installs the plugin configuration. False (with the reason logged, field
    /// named) when it is refused: Envoy then refuses the plugin.
    pub fn configure(&mut self) -> bool {
        let bytes = match self.host.plugin_config() {
            Ok(Some(b)) => b,
            Ok(None) => {
                self.log(Level::Error, "invalid plugin configuration: it is empty");
                return false;
            }
            Err(status) => {
                self.log(
                    Level::Error,
                    &format!("cannot read the plugin configuration: {status:?}"),
                );
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(c) => Rc::new(c),
            Err(e) => {
                self.log(Level::Error, &e.to_string());
                return false;
            }
        };
        let now = self.now_ms().unwrap_or(0);
        // Distinct per VM: time of configure, the root's id and this engine's address. Also seeds
        // the refresh jitter, so VMs (and Envoys) started together do not refresh in the same second.
        let addr = std::ptr::from_ref(self) as usize as u64;
        let holder = (now ^ (u64::from(self.root_id) << 48) ^ addr.rotate_left(17)) | 1;
        let jitter_seed = holder.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11;
        let caches = config
            .providers
            .iter()
            .map(|p| match &p.jwks {
                JwksSource::Remote(r) => {
                    let cache = ProviderCache::new(r.cache_key.clone(), r.timing, jitter_seed);
                    cache.ensure_lease(&self.store());
                    Some(cache)
                }
                JwksSource::Local(_) => None,
            })
            .collect();
        // Inline key sets are parsed once, here: say what they skipped, as a fetch would.
        for p in &config.providers {
            if let JwksSource::Local(set) = &p.jwks {
                if let Some(skipped) = jwks::skipped_summary(&set.skipped) {
                    self.log(
                        Level::Warn,
                        &format!(
                            "provider {}: local JWKS has {} usable keys; {skipped}",
                            p.name,
                            set.current_len()
                        ),
                    );
                }
            }
        }
        let backend = match self.choose_backend(config.signature_backend) {
            Ok(b) => b,
            Err(message) => {
                self.log(Level::Error, &message);
                return false;
            }
        };
        if backend == Backend::Wasm {
            // The shared generator table of the in-wasm ES256 (~6 ms once per VM), here rather
            // than on the first request.
            crate::p256_fast::P256Verifier::warm_up();
        }
        let telemetry = Rc::new(Telemetry::define(
            self.host.clone(),
            Registry::build(&config),
        ));
        for (b, idx) in &telemetry.registry.signature_backend {
            telemetry.set(Some(*idx), u64::from(*b == backend));
        }
        let backend_line = format!("signature backend: {}", backend.name());
        if note_once(&self.store(), "jwt_guard.signature_backend", &backend_line) {
            self.log(Level::Info, &backend_line);
        }
        self.backend = Some(backend);
        self.telemetry = telemetry;
        self.token_cache = RefCell::new(TokenCache::new(config.token_cache_size));
        self.forged = RefCell::new(ForgedCache::default());
        self.proof_keys = RefCell::new(HashMap::new());
        self.holder = holder;
        self.config = Some(config);
        self.caches = caches;
        self.in_flight.clear();
        self.sync_all();
        // The first fetch starts on the first tick, not here: at configure time Envoy's clusters
        // may not be initialised yet, and a call dispatched then can be lost (seen with Envoy 1.40).
        let _ = self.host.set_tick_ms(keycache::FAST_TICK_MS);
        true
    }

    /// Resolves `signature_backend` for this VM, running the host's known-answer check the first
    /// time it is needed. `Err` (for `host` only) names the field and why.
    fn choose_backend(&mut self, choice: BackendChoice) -> Result<Backend, String> {
        if choice == BackendChoice::Wasm {
            return Ok(Backend::Wasm);
        }
        let host = &self.host;
        let check = self
            .host_check
            .get_or_insert_with(|| crate::detect::detect(host));
        match (check, choice) {
            (Ok(()), _) => Ok(Backend::Host),
            (Err(why), BackendChoice::Host) => Err(format!(
                "invalid plugin configuration: signature_backend: \"host\" is not usable in this Envoy: {why}; use \"auto\" or \"wasm\""
            )),
            (Err(why), _) => {
                let notice = format!(
                    "signature_backend auto: host crypto not usable ({why}); verifying in wasm"
                );
                if note_once(
                    &Store(host),
                    "jwt_guard.signature_backend.notice",
                    &notice,
                ) {
                    host.log(Level::Warn, &notice);
                }
                Ok(Backend::Wasm)
            }
        }
    }

    /// The root context's tick: sync key sets, report health, start due refreshes, re-decide
    /// parked requests, set the next tick.
    pub fn on_tick(&mut self) {
        let Some(now) = self.now_ms() else {
            // A refresh dated 0 would corrupt the shared lease and key-set times.
            self.log(
                Level::Error,
                "the host clock is unavailable; skipping this tick",
            );
            self.fail_waiters();
            return;
        };
        self.sync_all();
        self.report_health(now);
        self.refresh_due(now);
        self.drain_waiters(now);
        self.set_tick(now);
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
