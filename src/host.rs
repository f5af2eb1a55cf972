//! The host interface the engine is written against, and an in-memory fake for native tests. The
//! proxy-wasm implementation is `hostcall::ProxyWasmHost` (wasm32 only); nothing here imports
//! `proxy_wasm`.
//!
//! This is the part of the interface the telemetry engine uses (clock, log, metrics, properties);
//! the request, shared-data and outbound-call parts follow as the rest of `filter.rs` moves over.

use crate::metrics::Kind;
use std::cell::RefCell;
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// A host call the host refused (its status, for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused(pub u32);

pub trait Host {
    /// Unix time in nanoseconds; `None` when the host cannot tell (then nothing time-bound is decided).
    fn now_ns(&self) -> Option<u128>;
    fn log(&self, level: Level, message: &str);
    fn define_metric(&self, kind: Kind, name: &str) -> Result<u32, Refused>;
    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), Refused>;
    fn record_metric(&self, id: u32, value: u64) -> Result<(), Refused>;
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), Refused>;
}

impl<T: Host + ?Sized> Host for &T {
    fn now_ns(&self) -> Option<u128> {
        (**self).now_ns()
    }
    fn log(&self, level: Level, message: &str) {
        (**self).log(level, message)
    }
    fn define_metric(&self, kind: Kind, name: &str) -> Result<u32, Refused> {
        (**self).define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), Refused> {
        (**self).increment_metric(id, delta)
    }
    fn record_metric(&self, id: u32, value: u64) -> Result<(), Refused> {
        (**self).record_metric(id, value)
    }
    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), Refused> {
        (**self).set_property(path, value)
    }
}

/// An in-memory host: a settable clock, and everything the engine did, recorded for assertions.
#[derive(Default)]
pub struct FakeHost {
    pub clock_ns: RefCell<Option<u128>>,
    pub logs: RefCell<Vec<(Level, String)>>,
    /// Metric names by id (the id is the index).
    pub metrics: RefCell<Vec<(Kind, String)>>,
    /// Counter totals and the last recorded gauge/histogram value, by metric name.
    pub values: RefCell<BTreeMap<String, i64>>,
    pub properties: RefCell<BTreeMap<String, Vec<u8>>>,
    /// Names of metrics the host refuses to define, and whether property writes are refused.
    pub refuse_metrics: RefCell<Vec<String>>,
    pub refuse_properties: RefCell<bool>,
}

impl FakeHost {
    pub fn at(ns: u128) -> FakeHost {
        let host = FakeHost::default();
        *host.clock_ns.borrow_mut() = Some(ns);
        host
    }

    /// The value of metric `name` (0 if never touched).
    pub fn value(&self, name: &str) -> i64 {
        self.values.borrow().get(name).copied().unwrap_or(0)
    }

    fn name(&self, id: u32) -> Option<String> {
        self.metrics
            .borrow()
            .get(id as usize)
            .map(|(_, n)| n.clone())
    }
}

impl Host for FakeHost {
    fn now_ns(&self) -> Option<u128> {
        *self.clock_ns.borrow()
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }

    fn define_metric(&self, kind: Kind, name: &str) -> Result<u32, Refused> {
        if self.refuse_metrics.borrow().iter().any(|n| n == name) {
            return Err(Refused(2));
        }
        let mut metrics = self.metrics.borrow_mut();
        metrics.push((kind, name.to_owned()));
        u32::try_from(metrics.len() - 1).map_err(|_| Refused(2))
    }

    fn increment_metric(&self, id: u32, delta: i64) -> Result<(), Refused> {
        let name = self.name(id).ok_or(Refused(1))?;
        *self.values.borrow_mut().entry(name).or_default() += delta;
        Ok(())
    }

    fn record_metric(&self, id: u32, value: u64) -> Result<(), Refused> {
        let name = self.name(id).ok_or(Refused(1))?;
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        self.values.borrow_mut().insert(name, value);
        Ok(())
    }

    fn set_property(&self, path: &[&str], value: &[u8]) -> Result<(), Refused> {
        if *self.refuse_properties.borrow() {
            return Err(Refused(2));
        }
        self.properties
            .borrow_mut()
            .insert(path.join("."), value.to_vec());
        Ok(())
    }
}
