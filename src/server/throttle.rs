//! Log lines an unauthenticated client can cause are throttled: one line per interval with the
//! count of what was left out, so a flood of forged requests cannot flood the logs (or the bill
//! of whatever stores them), while the first refusal of a burst is still seen at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one log line through per interval and counts the others.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    /// One line per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were left out since the last
    /// one; `None` (and one more left out) otherwise.
    pub fn ready(&self) -> Option<u64> {
        self.ready_at(Instant::now())
    }

    fn ready_at(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| now.saturating_duration_since(at) < self.every) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let throttle = Throttle::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(throttle.ready_at(start), Some(0), "the first is logged");
        for _ in 0..5 {
            assert_eq!(throttle.ready_at(start + Duration::from_secs(1)), None);
        }
        assert_eq!(
            throttle.ready_at(start + Duration::from_secs(61)),
            Some(5),
            "the next line says how many were left out"
        );
        assert_eq!(throttle.ready_at(start + Duration::from_secs(62)), None);
    }
}
