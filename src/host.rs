//! The host interface the engine is written against, and an in-memory fake for native tests. The
//! proxy-wasm implementation is `hostcall::ProxyWasmHost` (wasm32 only); nothing here imports
//! `proxy_wasm`.
//!
//! Every call that can fail returns its status as a value: the engine turns a refusal into a logged,
//! fail-closed outcome. Calls about "the request" act on the current stream: the one whose callback
//! is running, or the one chosen with `set_effective_context` from the root context.

use crate::crypto::{HostError, SignatureHost};
use crate::metrics::Kind;
use crate::wire;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;
use std::rc::Rc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A status other than `Ok` from a host call (proxy-wasm ABI numbering).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HostStatus(pub u32);

impl HostStatus {
    pub const NOT_FOUND: HostStatus = HostStatus(1);
    pub const BAD_ARGUMENT: HostStatus = HostStatus(2);
    pub const CAS_MISMATCH: HostStatus = HostStatus(8);
    pub const INTERNAL_FAILURE: HostStatus = HostStatus(10);
}

impl std::fmt::Debug for HostStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            12 => "Unimplemented",
            _ => return write!(f, "status {}", self.0),
        };
        f.write_str(name)
    }
}

/// Everything the engine asks of its host. The signature backend's foreign function comes with it
/// (`SignatureHost`).
pub trait Host: SignatureHost {
    /// Unix time in nanoseconds; `None` when the host cannot tell (then nothing time-bound is decided).
    fn now_ns(&self) -> Option<u128>;
    fn log(&self, level: Level, message: &str);

    fn define_metric(&self, kind: Kind, name: &str) -> Result<u32, HostStatus>;
    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostStatus>;
    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostStatus>;

    /// A property's value; `None` when the host does not have it.
    fn get_property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostStatus>;
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostStatus>;
    /// The plugin configuration; `None` when it is empty.
    fn plugin_config(&self) -> Result<Option<Vec<u8>>, HostStatus>;

    /// The current request's headers, serialized as proxy-wasm pairs (`wire::parse_pairs`).
    fn request_headers(&self) -> Result<Vec<u8>, HostStatus>;
    /// Appends a request header value (for a header known to be absent).
    fn add_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostStatus>;
    /// Sets a request header to exactly this value.
    fn replace_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostStatus>;
    /// Removes every value of a request header.
    fn remove_request_header(&self, name: &str) -> Result<(), HostStatus>;
    /// Answers the current request locally.
    fn send_response(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostStatus>;
    /// Lets the current (paused) request go on.
    fn resume_request(&self) -> Result<(), HostStatus>;
    /// Makes Envoy match the current request's route again (its headers changed).
    fn clear_route_cache(&self) -> Result<(), HostStatus>;
    /// Makes `context_id` the current stream (from the root context); fails when it is gone.
    fn set_effective_context(&self, context_id: u32) -> Result<(), HostStatus>;

    /// A shared-data entry and its CAS token; `None` when the key is not set.
    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostStatus>;
    /// Writes a shared-data entry; with `cas`, only if the entry is still at that version
    /// (`HostStatus::CAS_MISMATCH` otherwise).
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostStatus>;

    /// Sends a request to `cluster`; its answer arrives as `on_http_call_response` with the token.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, HostStatus>;
    /// The `:status` of the answer being delivered.
    fn http_call_status(&self) -> Result<Option<Vec<u8>>, HostStatus>;
    /// Up to `max` bytes of the body of the answer being delivered.
    fn http_call_body(&self, max: usize) -> Result<Option<Vec<u8>>, HostStatus>;

    /// The root context's tick period.
    fn set_tick_ms(&self, period_ms: u64) -> Result<(), HostStatus>;
    /// Size of this VM's linear memory, for the memory gauge (0 when unknown).
    fn memory_bytes(&self) -> u64;
}

/// A request the fake host holds: its headers as the filter left them, and how it ended.
#[derive(Default, Debug, Clone)]
pub struct FakeStream {
    pub headers: Vec<(String, Vec<u8>)>,
    /// Served instead of `headers` when set: a malformed serialized map, say.
    pub raw_headers: Option<Vec<u8>>,
    pub response: Option<FakeResponse>,
    /// Properties of this stream's connection and request (`connection.…`), read only while it is
    /// the current stream.
    pub properties: BTreeMap<String, Vec<u8>>,
    pub resumed: u32,
    /// How often the route was to be matched again.
    pub route_cleared: u32,
}

impl FakeStream {
    /// The value of header `name` (as the filter left it), if present once.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeResponse {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A request the engine sent with `http_call`.
#[derive(Debug, Clone)]
pub struct FakeCall {
    pub token: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub timeout_ms: u64,
}

impl FakeCall {
    pub fn path(&self) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == ":path")
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Shared data by key: value and CAS version.
pub type SharedData = BTreeMap<String, (Vec<u8>, u32)>;

/// The state of a [`FakeHost`], shared by its clones.
#[derive(Default)]
pub struct FakeState {
    pub clock_ns: RefCell<Option<u128>>,
    pub logs: RefCell<Vec<(Level, String)>>,
    /// Metric names by id (the id is the index).
    pub metrics: RefCell<Vec<(Kind, String)>>,
    /// Counter totals and the last recorded gauge/histogram value, by metric name.
    pub values: RefCell<BTreeMap<String, i64>>,
    /// Properties written, by dotted path; and the properties the host answers reads with.
    pub properties: RefCell<BTreeMap<String, Vec<u8>>>,
    pub readable: RefCell<BTreeMap<String, Vec<u8>>>,
    pub plugin_config: RefCell<Option<Vec<u8>>>,
    pub streams: RefCell<BTreeMap<u32, FakeStream>>,
    pub current: Cell<u32>,
    /// The root context's id: `set_effective_context` accepts it besides open streams.
    pub root_id: Cell<u32>,
    /// Shared data: value and CAS version. Clones of one host (VMs of one Envoy) share it.
    pub shared: Rc<RefCell<SharedData>>,
    pub calls: RefCell<Vec<FakeCall>>,
    /// The answer `http_call_status`/`http_call_body` deliver: status and body.
    pub answer: RefCell<Option<(Option<String>, Vec<u8>)>>,
    pub tick_ms: Cell<Option<u64>>,
    /// Names of metrics the host refuses to define, and whether property writes are refused.
    pub refuse_metrics: RefCell<Vec<String>>,
    pub refuse_properties: RefCell<bool>,
    /// Host operations refused with `InternalFailure`, by method name (`"add_request_header"`, …).
    pub refuse: RefCell<BTreeSet<&'static str>>,
}

/// An in-memory host: a settable clock, and everything the engine did, recorded for assertions.
/// Clones share one state, so a test keeps a handle while the engine owns another.
#[derive(Default, Clone)]
pub struct FakeHost(Rc<FakeState>);

impl Deref for FakeHost {
    type Target = FakeState;
    fn deref(&self) -> &FakeState {
        &self.0
    }
}

impl FakeHost {
    pub fn at(ns: u128) -> FakeHost {
        let host = FakeHost::default();
        *host.clock_ns.borrow_mut() = Some(ns);
        host
    }

    /// A host for a second VM of the same Envoy: its own clock, logs, metrics and streams, the
    /// same shared data.
    pub fn sibling(&self) -> FakeHost {
        FakeHost(Rc::new(FakeState {
            clock_ns: RefCell::new(*self.clock_ns.borrow()),
            plugin_config: RefCell::new(self.plugin_config.borrow().clone()),
            root_id: Cell::new(self.root_id.get()),
            shared: self.shared.clone(),
            ..FakeState::default()
        }))
    }

    /// Moves the clock by `ms` milliseconds.
    pub fn advance_ms(&self, ms: u64) {
        let mut clock = self.clock_ns.borrow_mut();
        *clock = clock.map(|ns| ns + u128::from(ms) * 1_000_000);
    }

    /// The value of metric `name` (0 if never touched).
    pub fn value(&self, name: &str) -> i64 {
        self.values.borrow().get(name).copied().unwrap_or(0)
    }

    /// Opens a request with these headers and makes it the current stream.
    pub fn open(&self, context_id: u32, headers: &[(&str, &str)]) {
        let stream = FakeStream {
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            ..FakeStream::default()
        };
        self.streams.borrow_mut().insert(context_id, stream);
        self.current.set(context_id);
    }

    /// The request `context_id` as it stands.
    pub fn stream(&self, context_id: u32) -> FakeStream {
        self.streams
            .borrow()
            .get(&context_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Log lines at `level` or above.
    pub fn logged(&self, level: Level) -> Vec<String> {
        self.logs
            .borrow()
            .iter()
            .filter(|(l, _)| *l >= level)
            .map(|(_, m)| m.clone())
            .collect()
    }

    fn name(&self, id: u32) -> Option<String> {
        self.metrics
            .borrow()
            .get(id as usize)
            .map(|(_, n)| n.clone())
    }

    fn allowed(&self, op: &'static str) -> Result<(), HostStatus> {
        if self.refuse.borrow().contains(op) {
            Err(HostStatus::INTERNAL_FAILURE)
        } else {
            Ok(())
        }
    }

    fn with_stream<T>(&self, f: impl FnOnce(&mut FakeStream) -> T) -> Result<T, HostStatus> {
        let mut streams = self.streams.borrow_mut();
        let stream = streams
            .get_mut(&self.current.get())
            .ok_or(HostStatus::BAD_ARGUMENT)?;
        Ok(f(stream))
    }
}

impl SignatureHost for FakeHost {
    /// The fake has no host crypto: detection chooses the wasm backend.
    fn call_verify_signature(&self, _args: &[u8]) -> Result<Vec<u8>, HostError> {
        Err(HostError::Unavailable)
    }
}

impl Host for FakeHost {
    fn now_ns(&self) -> Option<u128> {
        *self.clock_ns.borrow()
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }

    fn define_metric(&self, kind: Kind, name: &str) -> Result<u32, HostStatus> {
        if self.refuse_metrics.borrow().iter().any(|n| n == name) {
            return Err(HostStatus::BAD_ARGUMENT);
        }
        let mut metrics = self.metrics.borrow_mut();
        if let Some(i) = metrics.iter().position(|(_, n)| n == name) {
            // Envoy hands out one id per name, also to a second VM or a reconfigure.
            return u32::try_from(i).map_err(|_| HostStatus::BAD_ARGUMENT);
        }
        metrics.push((kind, name.to_owned()));
        u32::try_from(metrics.len() - 1).map_err(|_| HostStatus::BAD_ARGUMENT)
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), HostStatus> {
        let name = self.name(id).ok_or(HostStatus::NOT_FOUND)?;
        *self.values.borrow_mut().entry(name).or_default() += delta;
        Ok(())
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), HostStatus> {
        let name = self.name(id).ok_or(HostStatus::NOT_FOUND)?;
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        self.values.borrow_mut().insert(name, value);
        Ok(())
    }

    fn get_property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostStatus> {
        self.allowed("get_property")?;
        let key = path.join(".");
        let of_stream = self
            .streams
            .borrow()
            .get(&self.current.get())
            .and_then(|s| s.properties.get(&key).cloned());
        Ok(of_stream.or_else(|| self.readable.borrow().get(&key).cloned()))
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), HostStatus> {
        if *self.refuse_properties.borrow() {
            return Err(HostStatus::BAD_ARGUMENT);
        }
        self.properties
            .borrow_mut()
            .insert(path.join("."), value.to_vec());
        Ok(())
    }

    fn plugin_config(&self) -> Result<Option<Vec<u8>>, HostStatus> {
        self.allowed("plugin_config")?;
        Ok(self
            .plugin_config
            .borrow()
            .clone()
            .filter(|c| !c.is_empty()))
    }

    fn request_headers(&self) -> Result<Vec<u8>, HostStatus> {
        self.allowed("request_headers")?;
        self.with_stream(|s| match &s.raw_headers {
            Some(raw) => raw.clone(),
            None => wire::serialize_pairs(&s.headers),
        })
    }

    fn add_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostStatus> {
        self.allowed("add_request_header")?;
        self.with_stream(|s| s.headers.push((name.to_owned(), value.to_vec())))
    }

    fn replace_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostStatus> {
        self.allowed("replace_request_header")?;
        self.with_stream(|s| {
            s.headers.retain(|(n, _)| n != name);
            s.headers.push((name.to_owned(), value.to_vec()));
        })
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostStatus> {
        self.allowed("remove_request_header")?;
        self.with_stream(|s| s.headers.retain(|(n, _)| n != name))
    }

    fn send_response(
        &self,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostStatus> {
        self.allowed("send_response")?;
        self.with_stream(|s| {
            s.response = Some(FakeResponse {
                status,
                headers: headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
                body: String::from_utf8_lossy(body).into_owned(),
            })
        })
    }

    fn resume_request(&self) -> Result<(), HostStatus> {
        self.allowed("resume_request")?;
        self.with_stream(|s| s.resumed += 1)
    }

    fn clear_route_cache(&self) -> Result<(), HostStatus> {
        self.allowed("clear_route_cache")?;
        self.with_stream(|s| s.route_cleared += 1)
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostStatus> {
        if context_id == self.root_id.get() || self.streams.borrow().contains_key(&context_id) {
            self.current.set(context_id);
            Ok(())
        } else {
            Err(HostStatus::BAD_ARGUMENT)
        }
    }

    fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, HostStatus> {
        self.allowed("shared_get")?;
        Ok(self.shared.borrow().get(key).cloned())
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), HostStatus> {
        self.allowed("shared_set")?;
        // Envoy's semantics: CAS 0 (or none) writes unconditionally, a missing key is created
        // whatever the CAS, and every write takes the next value of one counter.
        let mut shared = self.shared.borrow_mut();
        let current = shared.get(key).map(|(_, v)| *v);
        if let (Some(cas), Some(version)) = (cas.filter(|c| *c != 0), current) {
            if cas != version {
                return Err(HostStatus::CAS_MISMATCH);
            }
        }
        let next = shared.values().map(|(_, v)| *v).max().unwrap_or(0) + 1;
        shared.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, HostStatus> {
        self.allowed("http_call")?;
        let mut calls = self.calls.borrow_mut();
        let token = u32::try_from(calls.len() + 1).map_err(|_| HostStatus::BAD_ARGUMENT)?;
        calls.push(FakeCall {
            token,
            cluster: cluster.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            timeout_ms,
        });
        Ok(token)
    }

    fn http_call_status(&self) -> Result<Option<Vec<u8>>, HostStatus> {
        Ok(self
            .answer
            .borrow()
            .as_ref()
            .and_then(|(s, _)| s.clone())
            .map(String::into_bytes))
    }

    fn http_call_body(&self, max: usize) -> Result<Option<Vec<u8>>, HostStatus> {
        self.allowed("http_call_body")?;
        Ok(self
            .answer
            .borrow()
            .as_ref()
            .map(|(_, b)| b[..b.len().min(max)].to_vec())
            .filter(|b| !b.is_empty()))
    }

    fn set_tick_ms(&self, period_ms: u64) -> Result<(), HostStatus> {
        self.tick_ms.set(Some(period_ms));
        Ok(())
    }

    fn memory_bytes(&self) -> u64 {
        0
    }
}
