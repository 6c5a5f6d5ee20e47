//! Retry delays for failed reconciles: exponential per object, with jitter so that a burst of
//! failures (the API server restarting, say) does not come back as a synchronized burst of retries.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Counts consecutive failures per object and turns them into requeue delays.
#[derive(Debug)]
pub struct RetryBackoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(300))
    }
}

impl RetryBackoff {
    /// Delays start near `base` and double per consecutive failure up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Mutex::default(),
        }
    }

    /// Records one more failure of `key` and returns how long to wait before retrying it: the
    /// capped exponential delay scaled by a random factor in [0.5, 1.0) ("equal jitter").
    pub fn failed(&self, key: &str) -> Duration {
        let attempt = {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let count = failures.entry(key.to_owned()).or_default();
            *count = count.saturating_add(1);
            *count
        };
        let ceiling = self.ceiling(attempt);
        ceiling.mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// Forgets the failures of `key` after it reconciled successfully.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// The un-jittered delay for the `attempt`-th consecutive failure (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.base
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_then_cap_and_stay_within_jitter_bounds() {
        let backoff = RetryBackoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let ceilings: Vec<_> = (1..=6).map(|a| backoff.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 8, 8]);
        for attempt in 1..=6 {
            let delay = backoff.failed("ns/a");
            let ceiling = backoff.ceiling(attempt);
            assert!(
                delay >= ceiling / 2 && delay < ceiling,
                "{delay:?} vs {ceiling:?}"
            );
        }
    }

    #[test]
    fn success_resets_the_count_for_that_object_only() {
        let backoff = RetryBackoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..4 {
            backoff.failed("a");
            backoff.failed("b");
        }
        backoff.succeeded("a");
        assert!(backoff.failed("a") < Duration::from_secs(1));
        assert!(backoff.failed("b") >= Duration::from_secs(8));
    }
}
