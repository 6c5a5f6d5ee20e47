//! Which delivery ids the listener has handled, per provider: delivery is at least once, so an id
//! handed to the sink successfully is not handed to it again. Each provider has its own set, so
//! one provider's ids can never shadow another's (nothing makes Resend's `svix-id` and Loops'
//! `webhook-id` distinct), and each set keeps at most `capacity` ids, forgetting the oldest first.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// The providers whose deliveries the listener deduplicates, each in its own set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Provider {
    /// Contact and email events (one id space: Resend's Svix account).
    Resend,
    /// Loops' contact events.
    Loops,
}

impl Provider {
    /// The `provider` label of its metrics.
    pub(super) fn label(self) -> &'static str {
        match self {
            Provider::Resend => "resend",
            Provider::Loops => "loops",
        }
    }
}

/// Whether an id may be handled.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Claim {
    /// Not seen: handle it, then [`SeenIds::finish`].
    New,
    /// Handled successfully before.
    Done,
    /// Being handled by another delivery right now.
    InFlight,
}

/// The last `capacity` ids handed to the sink successfully, plus those being handled now.
struct Ids {
    capacity: usize,
    done: HashSet<String>,
    order: VecDeque<String>,
    in_flight: HashSet<String>,
}

impl Ids {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            done: HashSet::new(),
            order: VecDeque::new(),
            in_flight: HashSet::new(),
        }
    }

    fn claim(&mut self, id: &str) -> Claim {
        if self.done.contains(id) {
            Claim::Done
        } else if !self.in_flight.insert(id.to_owned()) {
            Claim::InFlight
        } else {
            Claim::New
        }
    }

    fn finish(&mut self, id: &str, succeeded: bool) {
        self.in_flight.remove(id);
        if !succeeded || self.capacity == 0 {
            return;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.done.remove(&oldest);
        }
        if self.done.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
        }
    }
}

/// One set of ids per [`Provider`].
pub(super) struct SeenIds {
    resend: Mutex<Ids>,
    loops: Mutex<Ids>,
}

impl SeenIds {
    /// Sets remembering at most `capacity` ids each.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            resend: Mutex::new(Ids::new(capacity)),
            loops: Mutex::new(Ids::new(capacity)),
        }
    }

    fn ids(&self, provider: Provider) -> std::sync::MutexGuard<'_, Ids> {
        let ids = match provider {
            Provider::Resend => &self.resend,
            Provider::Loops => &self.loops,
        };
        ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `id` of `provider` for handling.
    pub(super) fn claim(&self, provider: Provider, id: &str) -> Claim {
        self.ids(provider).claim(id)
    }

    /// Ends the handling of a [`Claim::New`] id: remembered when it `succeeded`, else forgotten
    /// so that the sender's retry is handled.
    pub(super) fn finish(&self, provider: Provider, id: &str, succeeded: bool) {
        self.ids(provider).finish(id, succeeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_only_after_success_and_the_oldest_are_forgotten() {
        let mut ids = Ids::new(2);
        assert_eq!(ids.claim("a"), Claim::New);
        assert_eq!(ids.claim("a"), Claim::InFlight);
        ids.finish("a", false);
        // A failure is forgotten: the sender's retry is handled.
        assert_eq!(ids.claim("a"), Claim::New);
        ids.finish("a", true);
        assert_eq!(ids.claim("a"), Claim::Done);
        for id in ["b", "c"] {
            assert_eq!(ids.claim(id), Claim::New);
            ids.finish(id, true);
        }
        assert_eq!((ids.done.len(), ids.order.len()), (2, 2));
        assert_eq!(ids.claim("a"), Claim::New, "evicted");
        assert_eq!(ids.claim("c"), Claim::Done);
    }

    #[test]
    fn no_capacity_remembers_nothing() {
        let mut ids = Ids::new(0);
        assert_eq!(ids.claim("a"), Claim::New);
        ids.finish("a", true);
        assert_eq!(ids.claim("a"), Claim::New);
        assert!(ids.done.is_empty());
    }

    #[test]
    fn each_provider_has_its_own_ids() {
        let seen = SeenIds::new(10);
        assert_eq!(seen.claim(Provider::Resend, "msg_1"), Claim::New);
        seen.finish(Provider::Resend, "msg_1", true);
        assert_eq!(seen.claim(Provider::Resend, "msg_1"), Claim::Done);
        // The same id from Loops is another delivery.
        assert_eq!(seen.claim(Provider::Loops, "msg_1"), Claim::New);
        seen.finish(Provider::Loops, "msg_1", true);
        assert_eq!(seen.claim(Provider::Loops, "msg_1"), Claim::Done);
    }
}
