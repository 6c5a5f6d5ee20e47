//! The account rate limiter: one per provider account, shared by every request of every clone of
//! that provider's client (retries and list pages included), because providers limit the whole
//! account (Resend's team, Loops' team), not a key or a connection.
//!
//! Two mechanisms:
//! - **Our own pace**: at most `burst = max(1, floor(rate))` requests in any window of
//!   `burst / rate` seconds (1 s for whole rates). This is a sliding-window log rather than a
//!   refilling token bucket on purpose: a bucket of `burst` tokens refilled at `rate` lets up to
//!   `2 * burst - 1` requests into one second (a full bucket plus the refill), which is exactly
//!   what a server counting "N per second" refuses. The window keeps the bursts the bucket would
//!   allow and can never exceed the limit in any second, whichever way the server counts.
//! - **The provider's word**: a rate-limit header saying nothing is left pauses everyone until
//!   the window resets ([`RateLimiter::observe`]), a 429 pauses everyone until `retry-after`
//!   ([`RateLimiter::pause_for`]), and an account limit lower than the configured rate lowers
//!   our pace to it ([`RateLimiter::lower_rate`]). While paused, no request at all is sent.
//!
//! `governor` was considered: it paces well but has no way to say "nobody sends before instant
//! T", which is what a 429 needs, so the two parts would live in different places anyway; the
//! whole limiter here is ~80 lines of std + tokio time (so tests can use `tokio::time::pause`).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Requests per second [`RateLimiter::new`] assumes when the configured rate is unusable (zero,
/// negative, NaN): Resend's documented limit, the lowest of the providers this server talks to.
/// Other providers pass their own through [`RateLimiter::with_fallback`].
pub const DEFAULT_RATE: f64 = 5.0;

/// Longest pause a server answer can impose, so a garbled header cannot stop the client for days.
const MAX_PAUSE: Duration = Duration::from_secs(24 * 3600);

/// An account-wide limiter; see the module documentation.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The pace in force: the configured rate, or a lower one the provider announced.
    rate: f64,
    /// How many requests may go out within `window`.
    burst: usize,
    /// See the module documentation.
    window: Duration,
    /// When the last `burst` requests were let through, oldest first.
    sent: VecDeque<Instant>,
    /// Nobody is let through before this instant.
    paused_until: Option<Instant>,
}

impl RateLimiter {
    /// A limiter for `rate` requests per second; an unusable rate means [`DEFAULT_RATE`].
    pub fn new(rate: f64) -> Self {
        Self::with_fallback(rate, DEFAULT_RATE)
    }

    /// A limiter for `rate` requests per second, or `fallback` when `rate` is unusable (zero,
    /// negative, NaN): each provider falls back to its own documented limit.
    pub fn with_fallback(rate: f64, fallback: f64) -> Self {
        let rate = [rate, fallback]
            .into_iter()
            .find(|r| r.is_finite() && *r > 0.0)
            .unwrap_or(DEFAULT_RATE);
        let (burst, window) = pace(rate);
        Self {
            state: Mutex::new(State {
                rate,
                burst,
                window,
                sent: VecDeque::new(),
                paused_until: None,
            }),
        }
    }

    /// How many requests may go out together.
    pub fn burst(&self) -> usize {
        self.lock().burst
    }

    /// The window in which at most [`burst`](Self::burst) requests go out.
    pub fn window(&self) -> Duration {
        self.lock().window
    }

    /// The requests per second in force.
    pub fn rate(&self) -> f64 {
        self.lock().rate
    }

    /// Lowers the pace to `rate` requests per second when the provider says the account allows
    /// fewer than configured (Loops' `x-ratelimit-limit`); never raises it, so a configured rate
    /// below the account's (to leave room for other clients of the account) is kept.
    pub fn lower_rate(&self, rate: f64) {
        if !(rate.is_finite() && rate > 0.0) {
            return;
        }
        let mut state = self.lock();
        if rate < state.rate {
            let (burst, window) = pace(rate);
            state.rate = rate;
            state.burst = burst;
            state.window = window;
        }
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
                        let window = state.window;
                        while state
                            .sent
                            .front()
                            .is_some_and(|&oldest| oldest + window <= now)
                        {
                            state.sent.pop_front();
                        }
                        if state.sent.len() < state.burst {
                            state.sent.push_back(now);
                            return;
                        }
                        // After a lowered rate the log may hold more than the new burst: wait
                        // for the entry whose expiry brings it under the burst.
                        let excess = state.sent.len() - state.burst;
                        match state.sent.get(excess) {
                            Some(&oldest) => oldest + window,
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

    /// Takes in an answer's remaining requests and time to the window's reset (Resend's
    /// `ratelimit-remaining` / `ratelimit-reset`, Loops' `x-ratelimit-remaining` and its
    /// one-second window): nothing left means nobody sends until the window resets.
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

/// `(burst, window)` for `rate` requests per second (see the module documentation).
fn pace(rate: f64) -> (usize, Duration) {
    let burst = rate.floor().max(1.0);
    (burst as usize, Duration::from_secs_f64(burst / rate))
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

    #[tokio::test(start_paused = true)]
    async fn each_provider_falls_back_to_its_own_rate() {
        let limiter = RateLimiter::with_fallback(0.0, 10.0);
        assert_eq!((limiter.burst(), limiter.rate()), (10, 10.0));
        let limiter = RateLimiter::with_fallback(f64::INFINITY, -1.0);
        assert_eq!(limiter.rate(), DEFAULT_RATE, "both unusable");
        let limiter = RateLimiter::with_fallback(2.0, 10.0);
        assert_eq!(limiter.rate(), 2.0, "a usable configured rate wins");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_account_limit_lowers_the_pace_and_never_raises_it() {
        let limiter = RateLimiter::new(10.0);
        let start = Instant::now();
        for _ in 0..10 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start, "a full burst at the configured rate");
        limiter.lower_rate(4.0);
        limiter.lower_rate(8.0); // higher than in force: ignored
        limiter.lower_rate(f64::NAN);
        assert_eq!((limiter.burst(), limiter.rate()), (4, 4.0));
        let mut times = Vec::new();
        for _ in 0..12 {
            limiter.acquire().await;
            times.push(Instant::now() - start);
        }
        // The ten already sent fill the first second; then 4 per second.
        assert_eq!(times[0], Duration::from_secs(1));
        assert_eq!(times[3], Duration::from_secs(1));
        assert_eq!(times[4], Duration::from_secs(2));
        assert_eq!(times[11], Duration::from_secs(3));
    }
}
