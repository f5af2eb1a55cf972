//! Requests parked until their provider's keys arrive, and their deadlines. Pure: the filter keeps
//! what it needs to resume a request in `T` and decides with a closure, so the deadline rule is
//! tested natively.
//!
//! The rule: at each drain a parked request is decided again; before its deadline it may keep
//! waiting (the decision says `Wait`), at or past it the decision is made without waiting (keys
//! unavailable then: the rule's fail-closed `503` or its `degraded` pass), so no request waits
//! longer than `jwks_wait_timeout`.

use crate::authenticator::Outcome;

pub struct Parked<T> {
    /// The proxy-wasm stream it belongs to.
    pub context_id: u32,
    pub deadline_ms: u64,
    pub item: T,
}

pub struct Waiters<T> {
    parked: Vec<Parked<T>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters { parked: Vec::new() }
    }
}

impl<T> Waiters<T> {
    pub fn park(&mut self, context_id: u32, deadline_ms: u64, item: T) {
        self.parked.push(Parked {
            context_id,
            deadline_ms,
            item,
        });
    }

    /// Forgets the request of a stream that ended.
    pub fn forget(&mut self, context_id: u32) {
        self.parked.retain(|p| p.context_id != context_id);
    }

    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    pub fn len(&self) -> usize {
        self.parked.len()
    }

    /// Every parked request, in arrival order, leaving none.
    pub fn take_all(&mut self) -> Vec<Parked<T>> {
        std::mem::take(&mut self.parked)
    }

    /// Decides every parked request at `now_ms` with `decide(item, may_wait)`, where `may_wait` is
    /// false from the deadline on. Those still waiting stay (in order); the decided ones are
    /// returned with their outcome, in arrival order.
    pub fn drain(
        &mut self,
        now_ms: u64,
        mut decide: impl FnMut(&mut T, bool) -> Outcome,
    ) -> Vec<(Parked<T>, Outcome)> {
        let mut decided = Vec::new();
        for mut p in std::mem::take(&mut self.parked) {
            let may_wait = now_ms < p.deadline_ms;
            match decide(&mut p.item, may_wait) {
                Outcome::Wait(_) if may_wait => self.parked.push(p),
                // Past the deadline a `Wait` is not an answer: keys unavailable.
                Outcome::Wait(_) => {
                    decided.push((p, Outcome::Deny(crate::error::Denial::KeysUnavailable)))
                }
                outcome => decided.push((p, outcome)),
            }
        }
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Denial;

    fn code(o: &Outcome) -> &'static str {
        match o {
            Outcome::Allow(_) => "allow",
            Outcome::Deny(d) | Outcome::Forbidden(_, d) => d.code(),
            Outcome::Wait(_) => "wait",
        }
    }

    #[test]
    fn waits_until_the_deadline_then_decides_without_waiting() {
        let mut w: Waiters<&'static str> = Waiters::default();
        w.park(1, 1_000, "a");
        w.park(2, 2_000, "b");
        let mut asked: Vec<(&str, bool)> = Vec::new();
        // Keys still missing: every decision says Wait.
        let mut missing = |item: &mut &'static str, may_wait: bool| {
            asked.push((*item, may_wait));
            if may_wait {
                Outcome::Wait(0)
            } else {
                Outcome::Deny(Denial::KeysUnavailable)
            }
        };
        assert!(w.drain(999, &mut missing).is_empty());
        assert_eq!(w.len(), 2);
        let decided = w.drain(1_000, &mut missing);
        assert_eq!(decided.len(), 1);
        assert_eq!(
            (decided[0].0.context_id, code(&decided[0].1)),
            (1, "keys_unavailable")
        );
        assert_eq!(w.len(), 1);
        assert_eq!(asked, [("a", true), ("b", true), ("a", false), ("b", true)]);
    }

    #[test]
    fn a_wait_past_the_deadline_is_keys_unavailable() {
        let mut w: Waiters<()> = Waiters::default();
        w.park(7, 10, ());
        let decided = w.drain(10, |_, _| Outcome::Wait(0));
        assert_eq!(code(&decided[0].1), "keys_unavailable");
        assert!(w.is_empty());
    }

    #[test]
    fn keys_arriving_decide_in_arrival_order_and_ended_streams_are_forgotten() {
        let mut w: Waiters<u32> = Waiters::default();
        for id in 1..=4 {
            w.park(id, 5_000, id);
        }
        w.forget(2);
        let decided = w.drain(100, |item, _| {
            if *item == 3 {
                Outcome::Wait(0)
            } else {
                Outcome::Deny(Denial::Expired)
            }
        });
        let ids: Vec<u32> = decided.iter().map(|(p, _)| p.context_id).collect();
        assert_eq!(ids, [1, 4]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.take_all().len(), 1);
        assert!(w.is_empty());
    }
}
