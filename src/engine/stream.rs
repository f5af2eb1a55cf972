//! Request orchestration: read the request once, let `request::prepare` strip, scrub and choose the
//! step, authenticate (or park until keys arrive), and carry the policy's plan out through the host.
//! Also what answers or resumes parked requests.

use super::telemetry::ReqCtx;
use super::{Engine, Flow, RuleRef, Waiter};
use crate::authenticator::Outcome;
use crate::config::{Config, Denials, Mode, OnKeysUnavailable, Rule};
use crate::error::Denial;
use crate::extractor::{HeaderList, RequestView};
use crate::host::{Host, HostStatus, Level};
use crate::keycache::{self, ProviderCache};
use crate::metrics;
use crate::policy;
use crate::request::{self, Prepared, Step};
use crate::response::deny_response_shaped;

impl<H: Host + Clone> Engine<H> {
    /// The request headers of stream `context_id` have arrived (it is the current stream).
    pub fn on_request_headers(&mut self, context_id: u32) -> Flow {
        let clock = self.host.now_ns();
        let start_ns = clock.unwrap_or(0);
        let Some(config) = self.config.clone() else {
            // No valid configuration: Envoy should not have created the filter; fail closed.
            let _ = self.respond(&Denial::KeysUnavailable, "envoy", &Default::default());
            return Flow::Pause;
        };
        let Some(all) = self.read_headers() else {
            let ctx = ReqCtx {
                start_ns,
                request_id: None,
                method: Vec::new(),
                path: Vec::new(),
                token_hash: None,
            };
            self.deny_without_rule(&config, Denial::Internal, &ctx);
            return Flow::Pause;
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
            // The name of the route Envoy chose from the headers as the client sent them (Envoy keeps
            // reporting it after they change): see `match.route_name` in the README.
            self.host
                .get_property(&["xds", "route_name"])
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
        if !self.apply_removals(&prepared) {
            self.deny_without_rule(&config, Denial::Internal, &ctx);
            return Flow::Pause;
        }
        let removed = prepared.changes_request();
        let (rule, requirement, tokens, presentation, now) = match prepared.step {
            Step::Preflight => {
                self.telemetry
                    .inc(Some(self.telemetry.registry.cors_preflights));
                return self.rematch_route(&config, removed, &ctx);
            }
            Step::Refuse(denial) => {
                self.deny_without_rule(&config, denial, &ctx);
                return Flow::Pause;
            }
            Step::Decided(rule, outcome) => {
                let plan = policy::plan(&config, rule, outcome);
                return self.carry_out_and_rematch(&config, rule, plan, &ctx, removed);
            }
            Step::Authenticate {
                rule,
                requirement,
                tokens,
                presentation,
                now_ms,
            } => (rule, requirement, tokens, presentation, now_ms),
        };
        // Within the refresh window (or without keys) a small shared-data read per request lets
        // this worker use a set another worker just published, instead of waiting for its tick.
        let due = |c: &ProviderCache| c.needs_refresh(now) || c.usable(now).is_none();
        if requirement
            .providers
            .iter()
            .any(|&i| self.caches.get(i).and_then(Option::as_ref).is_some_and(due))
        {
            self.sync_all();
        }
        let outcome = self.decide(&config, rule, &tokens, &presentation, now, true);
        if let Outcome::Wait(_) = outcome {
            self.held.insert(context_id);
            self.waiters.park(
                context_id,
                now.saturating_add(config.jwks_wait_timeout_ms),
                Waiter {
                    context_id,
                    rule: RuleRef::of(&config, rule),
                    tokens,
                    presentation,
                    removed,
                    ctx,
                },
            );
            // Sets the tick of this VM's root context, so the wait is noticed quickly.
            let _ = self.host.set_tick_ms(keycache::FAST_TICK_MS);
            return Flow::Pause;
        }
        ctx.note_token(&config, &outcome, &tokens);
        let plan = policy::plan(&config, rule, outcome);
        self.carry_out_and_rematch(&config, rule, plan, &ctx, removed)
    }

    /// `carry_out`, then `rematch_route` when the request goes on.
    fn carry_out_and_rematch(
        &self,
        config: &Config,
        rule: &Rule,
        plan: policy::Plan,
        ctx: &ReqCtx,
        removed: bool,
    ) -> Flow {
        let changed = removed || !plan.set_headers.is_empty();
        match self.carry_out(config, rule, plan, ctx) {
            Flow::Continue => self.rematch_route(config, changed, ctx),
            Flow::Pause => Flow::Pause,
        }
    }

    /// Envoy chose the request's route before this filter ran, from the headers as the client sent
    /// them. When the filter changed them (a stripped identity header, a cut token, a verified
    /// identity), the route is matched again, so a route on `x-tenant-id` follows the verified
    /// value and never a forged one. A host that cannot re-match fails the request closed.
    fn rematch_route(&self, config: &Config, changed: bool, ctx: &ReqCtx) -> Flow {
        if !(changed && config.clear_route_cache) {
            return Flow::Continue;
        }
        match self.host.clear_route_cache() {
            Ok(()) => Flow::Continue,
            Err(status) => {
                self.log(
                    Level::Error,
                    &format!("could not make Envoy match the route again ({status:?}); denying (set clear_route_cache: false if no route matches on identity headers)"),
                );
                self.deny_without_rule(config, Denial::Internal, ctx);
                Flow::Pause
            }
        }
    }

    /// Body and trailers of a parked request pause until it is decided.
    pub fn on_request_body(&self, context_id: u32) -> Flow {
        if self.held.contains(&context_id) {
            Flow::Pause
        } else {
            Flow::Continue
        }
    }

    /// Stream `context_id` ended: forget it if it was parked.
    pub fn on_done(&mut self, context_id: u32) {
        self.held.remove(&context_id);
        self.waiters.forget(context_id);
    }

    /// The request headers, read from the host once per request (one host call instead of one per
    /// header). Envoy hands header names over lowercase. `None` when the host fails or hands over a
    /// malformed map: the request then fails closed.
    fn read_headers(&self) -> Option<HeaderList> {
        let bytes = self.host.request_headers().ok()?;
        let pairs = crate::wire::parse_pairs(&bytes)?;
        Some(HeaderList(
            pairs
                .into_iter()
                .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), v.to_vec()))
                .collect(),
        ))
    }

    /// Removes the client headers and tokens `request::prepare` named. False if the host refused
    /// one of the operations: the request then fails closed.
    fn apply_removals(&self, prepared: &Prepared) -> bool {
        let remove = |name: &str| self.host.remove_request_header(name).is_ok();
        let mut ok = prepared.strip.iter().all(|n| remove(n));
        let scrub = &prepared.scrub;
        ok &= scrub.remove_headers.iter().all(|n| remove(n));
        if let Some(new_path) = &scrub.path {
            ok &= self.host.replace_request_header(":path", new_path).is_ok();
        }
        if let Some(new_cookie) = &scrub.cookie {
            ok &= match new_cookie {
                Some(c) => self.host.replace_request_header("cookie", c),
                None => self.host.remove_request_header("cookie"),
            }
            .is_ok();
        }
        ok
    }

    /// Answers the current request with `denial`'s response in `realm`, shaped by `denials`.
    fn respond(
        &self,
        denial: &Denial,
        realm: &str,
        denials: &Denials,
    ) -> Result<(), (u32, HostStatus)> {
        let r = deny_response_shaped(denial, realm, denials);
        self.host
            .send_response(r.status, &r.header_pairs(), r.body.as_bytes())
            .map_err(|s| (r.status, s))
    }

    fn send_denial(&self, config: &Config, rule: &Rule, denial: &Denial) {
        if let Err((status_code, status)) = self.respond(denial, &config.realm, &rule.denials) {
            self.log(
                Level::Error,
                &format!("could not send the {status_code} response: {status:?}"),
            );
        }
    }

    /// Applies a plan in the current stream: answers it, or sets headers and logs. `Continue` when
    /// the request goes on to the upstream.
    fn carry_out(&self, config: &Config, rule: &Rule, plan: policy::Plan, ctx: &ReqCtx) -> Flow {
        self.telemetry
            .decision(config, &rule.name, rule.mode, &plan, ctx);
        if let Some(denial) = plan.respond {
            self.log(Level::Debug, &format!("deny: {denial}"));
            self.send_denial(config, rule, &denial);
            return Flow::Pause;
        }
        for (name, value) in &plan.set_headers {
            // Every header the filter sets was stripped from the request in every spelling first
            // (`Config::managed_headers`), and each is set once: adding is replacing, and cheaper.
            if self
                .host
                .add_request_header(name, value.as_bytes())
                .is_err()
            {
                // An identity header that cannot be set must not leave the request half-described.
                self.log(Level::Error, &format!("could not set {name}; denying"));
                self.send_denial(config, rule, &Denial::Internal);
                return Flow::Pause;
            }
        }
        for d in &plan.dropped {
            self.log(
                Level::Warn,
                &format!("claim for {} not forwarded: {}", d.header, d.detail),
            );
        }
        if let Some(line) = &plan.log {
            self.log(Level::Info, line);
        }
        Flow::Continue
    }

    /// Denies a request that has no rule (none matched, or the host failed us before one was
    /// chosen).
    fn deny_without_rule(&self, config: &Config, denial: Denial, ctx: &ReqCtx) {
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
            on_keys_unavailable: OnKeysUnavailable::FailClosed,
            denials: config.denials.clone(),
        };
        self.carry_out(config, &placeholder, plan, ctx);
    }

    /// Re-decides parked requests; resumes or answers those that can be decided now.
    pub(super) fn drain_waiters(&mut self, now: u64) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let mut waiters = std::mem::take(&mut self.waiters);
        let decided = waiters.drain(now, |w, may_wait| {
            // Deciding may read the stream's connection (its client certificate): in its context.
            if self.host.set_effective_context(w.context_id).is_err() {
                return Outcome::Deny(Denial::Internal); // the stream is gone; nothing is sent
            }
            match w.rule.get(&config) {
                None => Outcome::Deny(Denial::NoRule),
                Some(rule) => self.decide(&config, rule, &w.tokens, &w.presentation, now, may_wait),
            }
        });
        self.waiters = waiters;
        for (p, outcome) in decided {
            if self.host.set_effective_context(p.context_id).is_err() {
                self.held.remove(&p.context_id);
                continue; // the stream is gone
            }
            let mut w = p.item;
            let Some(rule) = w.rule.get(&config) else {
                self.deny_without_rule(&config, Denial::NoRule, &w.ctx);
                continue;
            };
            w.ctx.note_token(&config, &outcome, &w.tokens);
            let plan = policy::plan(&config, rule, outcome);
            // A denied request stays held: its body never goes on.
            if self.carry_out_and_rematch(&config, rule, plan, &w.ctx, w.removed) == Flow::Continue
            {
                self.held.remove(&p.context_id);
                if let Err(status) = self.host.resume_request() {
                    self.log(
                        Level::Warn,
                        &format!("could not resume a request: {status:?}"),
                    );
                }
            }
        }
        let _ = self.host.set_effective_context(self.root_id);
    }

    /// Answers every parked request with `500 internal_error`: without a clock their deadlines and
    /// the keys they wait for cannot be judged, and they must not wait forever.
    pub(super) fn fail_waiters(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        for p in self.waiters.take_all() {
            if self.host.set_effective_context(p.context_id).is_ok() {
                self.deny_without_rule(&config, Denial::Internal, &p.item.ctx);
            }
        }
        let _ = self.host.set_effective_context(self.root_id);
    }
}
