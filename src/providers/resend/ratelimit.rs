//! The account rate limiter: one per Resend account, shared by every request of every clone of
//! the client (retries and list pages included), because Resend limits the whole team, not a key
//! or a connection.
//!
//! Two mechanisms:
//! - **Our own pace**: at most `burst = max(1, floor(rate))` requests in any window of
//!   `burst / rate` seconds (1 s for whole rates). This is a sliding-window log rather than a
//!   refilling token bucket on purpose: a bucket of `burst` tokens refilled at `rate` lets up to
//!   `2 * burst - 1` requests into one second (a full bucket plus the refill), which is exactly
//!   what a server counting "N per second" refuses. The window keeps the bursts the bucket would
//!   allow and can never exceed the limit in any second, whichever way Resend counts.
//! - **Resend's word**: `ratelimit-remaining: 0` pauses everyone until `ratelimit-reset`, and a
//!   429 pauses everyone until `retry-after` ([`RateLimiter::pause_for`]). While paused, no
//!   request at all is sent.
//!
//! `governor` was considered: it paces well but has no way to say "nobody sends before instant
//! T", which is what a 429 needs, so the two parts would live in different places anyway; the
//! whole limiter here is ~60 lines of std + tokio time (so tests can use `tokio::time::pause`).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Requests per second assumed when the configured rate is unusable (zero, negative, NaN):
/// Resend's documented limit.
pub const DEFAULT_RATE: f64 = 5.0;

/// Longest pause a server answer can impose, so a garbled header cannot stop the client for days.
const MAX_PAUSE: Duration = Duration::from_secs(24 * 3600);

/// An account-wide limiter; see the module documentation.
#[derive(Debug)]
pub struct RateLimiter {
    burst: usize,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last `burst` requests were let through, oldest first.
    sent: VecDeque<Instant>,
    /// Nobody is let through before this instant.
    paused_until: Option<Instant>,
}

impl RateLimiter {
    /// A limiter for `rate` requests per second.
    pub fn new(rate: f64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            DEFAULT_RATE
        };
        let burst = rate.floor().max(1.0);
        let window = Duration::from_secs_f64(burst / rate);
        Self {
            burst: burst as usize,
            window,
            state: Mutex::new(State::default()),
        }
    }

    /// How many requests may go out together.
    pub fn burst(&self) -> usize {
        self.burst
    }

    /// The window in which at most [`burst`](Self::burst) requests go out.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it: use it anyway.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until a request may be sent, and counts it as sent.
    pub async fn acquire(&self) {
        loop {
            let wake = {
                let mut state = self.lock();
                let now = Instant::now();
                match state.paused_until {
                    Some(until) if until > now => until,
                    _ => {
                        state.paused_until = None;
                        while state
                            .sent
                            .front()
                            .is_some_and(|&oldest| oldest + self.window <= now)
                        {
                            state.sent.pop_front();
                        }
                        if state.sent.len() < self.burst {
                            state.sent.push_back(now);
                            return;
                        }
                        match state.sent.front() {
                            Some(&oldest) => oldest + self.window,
                            None => now,
                        }
                    }
                }
            };
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Lets nobody through for `pause` from now (keeps a later pause already in force).
    pub fn pause_for(&self, pause: Duration) {
        let until = Instant::now() + pause.min(MAX_PAUSE);
        let mut state = self.lock();
        if state.paused_until.is_none_or(|current| current < until) {
            state.paused_until = Some(until);
        }
    }

    /// Takes in Resend's `ratelimit-remaining` / `ratelimit-reset` of an answer: nothing left
    /// means nobody sends until the window resets.
    pub fn observe(&self, remaining: Option<u64>, reset: Option<Duration>) {
        if remaining == Some(0)
            && let Some(reset) = reset
        {
            self.pause_for(reset);
        }
    }

    /// The instant before which nobody is let through, if a pause is in force.
    pub fn paused_until(&self) -> Option<Instant> {
        let state = self.lock();
        state.paused_until.filter(|&until| until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_rate_in_any_window() {
        let limiter = RateLimiter::new(10.0);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..35 {
            limiter.acquire().await;
            times.push(Instant::now() - start);
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(in_window <= 10, "{in_window} requests within 1 s of {t:?}");
        }
        assert!(times[34] >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rates_and_pauses() {
        let limiter = RateLimiter::new(0.5);
        assert_eq!(
            (limiter.burst(), limiter.window()),
            (1, Duration::from_secs(2))
        );
        let start = Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));

        let limiter = RateLimiter::new(f64::NAN);
        assert_eq!(limiter.burst(), 5);
        let start = Instant::now();
        limiter.pause_for(Duration::from_secs(3));
        limiter.pause_for(Duration::from_secs(1)); // a shorter pause does not shorten it
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        limiter.observe(Some(1), Some(Duration::from_secs(9)));
        assert!(limiter.paused_until().is_none());
        limiter.observe(Some(0), Some(Duration::from_secs(2)));
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }
}
