//! The priority gate in front of the provider: when the account rate limit is the bottleneck,
//! sends wait here, and a freed slot goes to the highest priority waiting (high, then normal,
//! then low). Each priority has its own runner queue, so a high-priority Email always has a
//! waiter registered here instead of queueing behind low ones in a shared queue.

use std::sync::Mutex;

use tokio::sync::Notify;

use crate::api::notification::EmailPriority;

/// Slots: how many reconciles may read and send at once. Small, so that the order in which
/// the limiter serves them is (nearly) the gate's order; more than one, so a slow answer does not
/// idle the account's rate.
pub const SLOTS: usize = 2;

/// Admits sends by priority.
pub struct PriorityGate {
    state: Mutex<GateState>,
    notify: Notify,
    slots: usize,
}

#[derive(Default)]
struct GateState {
    busy: usize,
    /// Waiters by priority index (low 0, normal 1, high 2).
    waiting: [usize; 3],
}

/// A held slot; released on drop.
pub struct Pass<'a> {
    gate: &'a PriorityGate,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.gate.lock().busy -= 1;
        self.gate.notify.notify_waiters();
    }
}

fn index(priority: EmailPriority) -> usize {
    match priority {
        EmailPriority::Low => 0,
        EmailPriority::Normal => 1,
        EmailPriority::High => 2,
    }
}

/// Takes a waiter off the count if its `enter` is cancelled (leadership lost mid-wait).
struct Waiting<'a> {
    gate: &'a PriorityGate,
    index: usize,
    armed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.gate.lock().waiting[self.index] -= 1;
            self.gate.notify.notify_waiters();
        }
    }
}

impl PriorityGate {
    /// A gate of `slots` concurrent sends (at least one).
    pub fn new(slots: usize) -> Self {
        Self {
            state: Mutex::new(GateState::default()),
            notify: Notify::new(),
            slots: slots.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot no higher priority is waiting for.
    pub async fn enter(&self, priority: EmailPriority) -> Pass<'_> {
        let i = index(priority);
        self.lock().waiting[i] += 1;
        let mut waiting = Waiting {
            gate: self,
            index: i,
            armed: true,
        };
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let higher_waiting = state.waiting[i + 1..].iter().any(|&n| n > 0);
                if state.busy < self.slots && !higher_waiting {
                    state.waiting[i] -= 1;
                    state.busy += 1;
                    waiting.armed = false;
                    return Pass { gate: self };
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_highest_priority_waiting() {
        let gate = Arc::new(PriorityGate::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = gate.enter(EmailPriority::Normal).await;
        let mut tasks = Vec::new();
        for (n, p) in [
            (0, EmailPriority::Low),
            (1, EmailPriority::Normal),
            (2, EmailPriority::High),
        ] {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _pass = gate.enter(p).await;
                order.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [2, 1, 0]);
    }
}
