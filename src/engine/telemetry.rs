//! Telemetry: the decision counters, the latency histogram and the audit record of each decision,
//! written through the `Host` interface (natively testable with `host::FakeHost`). Metrics and audit
//! never change a decision: a host refusal here is ignored (or logged at debug).

use crate::audit;
use crate::authenticator::Outcome;
use crate::config::{Config, Mode, AUDIT_FILTER_STATE};
use crate::host::{Host, Level};
use crate::metrics::{self, Registry};
use crate::policy;
use std::rc::Rc;

/// What the audit record and the latency metric need to know about a request.
pub struct ReqCtx {
    pub start_ns: u128,
    pub request_id: Option<Vec<u8>>,
    pub method: Vec<u8>,
    pub path: Vec<u8>,
    /// The audit record's `token_hash`: from the token-cache entry for a verified token, else
    /// computed only when a record is written.
    pub token_hash: Option<Rc<str>>,
}

impl ReqCtx {
    /// Fills `token_hash` for the decided `outcome` of `tokens`, when audit records are written.
    pub fn note_token(&mut self, config: &Config, outcome: &Outcome, tokens: &[Vec<u8>]) {
        if !(config.audit.filter_state || config.audit.log) {
            return;
        }
        self.token_hash = match outcome {
            Outcome::Allow(Some(v)) | Outcome::Forbidden(v, _) => Some(v.token_hash().clone()),
            _ => tokens.first().map(|t| Rc::from(audit::token_hash(t))),
        };
    }
}

/// Metric ids defined in Envoy, indexed like `Registry::defs`. Read-only after configure, so it is
/// shared by `Rc` and never borrowed across host calls.
#[derive(Default)]
pub struct Telemetry<H> {
    pub registry: Registry,
    ids: Vec<Option<u32>>,
    host: H,
}

impl<H: Host> Telemetry<H> {
    pub fn define(host: H, registry: Registry) -> Telemetry<H> {
        let ids = registry
            .defs
            .iter()
            .map(|d| host.define_metric(d.kind, &d.name).ok())
            .collect::<Vec<_>>();
        let missing = ids.iter().filter(|i| i.is_none()).count();
        if missing > 0 {
            host.log(
                Level::Warn,
                &format!("{missing} metrics could not be defined; they will not be reported"),
            );
        }
        Telemetry {
            registry,
            ids,
            host,
        }
    }

    fn id(&self, idx: Option<usize>) -> Option<u32> {
        idx.and_then(|i| self.ids.get(i).copied().flatten())
    }

    /// Metrics never change a decision: a host error here is ignored.
    pub fn inc(&self, idx: Option<usize>) {
        if let Some(id) = self.id(idx) {
            let _ = self.host.increment_metric(id, 1);
        }
    }

    pub fn set(&self, idx: Option<usize>, value: u64) {
        if let Some(id) = self.id(idx) {
            let _ = self.host.record_metric(id, value);
        }
    }

    /// Counts a decision, records its latency, and writes its audit record.
    pub fn decision(
        &self,
        config: &Config,
        route: &str,
        mode: Mode,
        plan: &policy::Plan,
        ctx: &ReqCtx,
    ) {
        // Metrics and audit only: a failed clock read here changes no decision.
        let now = self.host.now_ns().unwrap_or(ctx.start_ns);
        let latency_us = (now.saturating_sub(ctx.start_ns) / 1_000) as u64;
        self.inc(self.registry.decision(route, plan.outcome, plan.reason));
        self.set(self.registry.latency(mode), latency_us);
        for d in &plan.dropped {
            self.inc(self.registry.dropped(d.reason));
        }
        let audit = &config.audit;
        if !(audit.filter_state || audit.log) {
            return;
        }
        // Low bits of the clock's nanoseconds, mixed: good enough to sample allow records.
        let roll = ((now as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32;
        if !audit::should_write(plan.outcome, audit.allow_sample_rate, roll) {
            return;
        }
        let provider = plan
            .provider
            .and_then(|i| config.providers.get(i))
            .map(|p| p.name.as_str());
        let record = audit::Record {
            time_ms: (now / 1_000_000) as u64,
            request_id: ctx.request_id.as_deref(),
            route,
            mode: metrics::mode_name(mode),
            decision: plan.outcome,
            reason: plan.reason,
            provider,
            issuer: plan.issuer.as_deref(),
            subject: plan.subject.as_deref(),
            tenant: plan.tenant.as_deref(),
            token_hash: ctx.token_hash.as_deref(),
            binding: plan.binding,
            method: &ctx.method,
            path: &ctx.path,
            latency_us,
        }
        .to_json();
        if audit.filter_state
            && self
                .host
                .set_property(&[AUDIT_FILTER_STATE], record.as_bytes())
                .is_err()
        {
            self.host.log(
                Level::Debug,
                "could not store the audit record in filter state",
            );
        }
        if audit.log {
            self.host.log(Level::Info, &format!("audit {record}"));
        }
    }
}
