//! The pace of the controllers' requests to the API server. Every controller, the signup and
//! status writers included, shares one client whose requests in flight are bounded by a limit
//! that adapts to how the API server answers: it grows while latency holds, falls as latency rises
//! (an API server under load answers in 15-60 ms, not the 5 ms of an idle one), and halves on
//! failures. An operator sets the ceiling (`--api-write-concurrency`).
//!
//! Throttling (API Priority and Fairness's 429) is first absorbed by kube's retry layer under the
//! limit, which waits out `Retry-After`: the wait is latency, so the limit falls; a 429 that
//! outlasts the retries, a 5xx, a transport error or an answer slower than 5 s is a failure.
//! The limit is the smaller of two of `tower-acc`'s estimators: Vegas for latency (it estimates
//! the API server's queue from the ratio of the least round-trip time seen to the latest, and
//! keeps that queue short), AIMD for failures. Leader election and
//! the view's watches use another client, so a slow write never delays a lease renewal.

use std::time::Duration;

use hyper::http::{Response, StatusCode};
use prometheus_client::metrics::gauge::Gauge;
use tower::BoxError;
use tower_acc::{Aimd, Algorithm, ConcurrencyLimitLayer, Vegas};

/// The pace's series.
#[derive(Clone, Debug, Default)]
pub struct PaceMetrics {
    /// The current limit of the controllers' requests in flight.
    pub limit: Gauge,
}

impl PaceMetrics {
    /// Registers `milo_webhook_api_write_concurrency_limit`.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "api_write_concurrency_limit",
            "Requests the controllers may have in flight to the API server, as adapted to its answers",
            metrics.limit.clone(),
        );
        metrics
    }
}

/// What an operator sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaceSettings {
    /// Requests in flight before any answer has been seen.
    pub initial: usize,
    /// Requests in flight the limit never exceeds.
    pub ceiling: usize,
}

impl Default for PaceSettings {
    fn default() -> Self {
        Self {
            initial: 16,
            ceiling: 64,
        }
    }
}

/// The lowest limit: throttling or errors never stop writes altogether.
const FLOOR: usize = 2;

/// A request slower than this counts as a failure, whatever its answer.
const SLOW: Duration = Duration::from_secs(5);

/// The adaptive limit, exported as a gauge so an operator sees the pace the server allows.
#[derive(Clone, Debug)]
pub struct Pace {
    latency: Vegas,
    floor: usize,
    failures: Aimd,
    limit: Gauge,
}

impl Pace {
    /// A pace within `settings`, reporting its limit to `limit`.
    pub fn new(settings: PaceSettings, limit: Gauge) -> Self {
        let ceiling = settings.ceiling.max(1);
        let floor = FLOOR.min(ceiling);
        let initial = settings.initial.clamp(floor, ceiling);
        let pace = Self {
            latency: Vegas::builder()
                .initial_limit(initial)
                .max_limit(ceiling)
                .build(),
            floor,
            failures: Aimd::builder()
                .initial_limit(initial)
                .min_limit(floor)
                .max_limit(ceiling)
                .backoff_ratio(0.5)
                .timeout(SLOW)
                .build(),
            limit,
        };
        pace.limit.set(pace.max_concurrency() as i64);
        pace
    }
}

impl Algorithm for Pace {
    fn max_concurrency(&self) -> usize {
        self.latency
            .max_concurrency()
            .min(self.failures.max_concurrency())
            .max(self.floor)
    }

    fn update(&mut self, rtt: Duration, in_flight: usize, is_error: bool, is_canceled: bool) {
        self.latency.update(rtt, in_flight, is_error, is_canceled);
        self.failures.update(rtt, in_flight, is_error, is_canceled);
        self.limit.set(self.max_concurrency() as i64);
    }
}

/// Whether an answer says the API server is overloaded or unwell: a transport error, 429 (what
/// kube's retries could not absorb) or a 5xx. A 4xx refusal (a webhook's denial, a conflict) is
/// an answer about the request, not about the server's load.
pub fn overloaded<B>(result: &Result<Response<B>, BoxError>) -> bool {
    match result {
        Ok(response) => {
            let status = response.status();
            status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
        }
        Err(_) => true,
    }
}

/// The controllers' client: `config`'s usual stack (retries with `Retry-After` included) under
/// an adaptive limit of requests in flight.
pub fn client(
    config: kube::Config,
    settings: PaceSettings,
    limit: Gauge,
) -> Result<kube::Client, kube::Error> {
    type Classifier = fn(&Result<Response<Box<kube::client::DynBody>>, BoxError>) -> bool;
    let classifier: Classifier = overloaded;
    let layer = ConcurrencyLimitLayer::with_classifier(Pace::new(settings, limit), classifier);
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paced(initial: usize, ceiling: usize) -> (Pace, Gauge) {
        let gauge = Gauge::default();
        (
            Pace::new(PaceSettings { initial, ceiling }, gauge.clone()),
            gauge,
        )
    }

    /// Drives `pace` with `rounds` full windows of answers taking `rtt`; the lowest limit seen.
    fn run(pace: &mut Pace, rounds: usize, rtt: Duration, error: bool) -> usize {
        let mut lowest = pace.max_concurrency();
        for _ in 0..rounds {
            let in_flight = pace.max_concurrency();
            for _ in 0..in_flight {
                pace.update(rtt, in_flight, error, false);
                lowest = lowest.min(pace.max_concurrency());
            }
        }
        lowest
    }

    #[test]
    fn grows_while_latency_holds_up_to_the_ceiling() {
        let (mut pace, gauge) = paced(16, 64);
        assert_eq!(gauge.get(), 16);
        run(&mut pace, 200, Duration::from_millis(20), false);
        assert_eq!(pace.max_concurrency(), 64);
        assert_eq!(gauge.get(), 64);
    }

    /// Latency that rises with our requests in flight is queueing: the limit falls at once.
    /// (Vegas then re-probes its baseline, so latency that stays high whatever we do, being
    /// someone else's load, does not hold the limit down for good.)
    #[test]
    fn backs_off_when_latency_rises() {
        let (mut pace, _) = paced(16, 64);
        run(&mut pace, 200, Duration::from_millis(15), false);
        let before = pace.max_concurrency();
        let lowest = run(&mut pace, 1, Duration::from_millis(60), false);
        assert!(lowest < before / 2, "{lowest} at 4x latency, from {before}");
    }

    #[test]
    fn halves_on_throttling_and_keeps_a_floor() {
        let (mut pace, gauge) = paced(32, 64);
        pace.update(Duration::from_millis(20), 32, true, false);
        assert_eq!(pace.max_concurrency(), 16);
        run(&mut pace, 20, Duration::from_millis(20), true);
        assert_eq!(pace.max_concurrency(), FLOOR);
        assert_eq!(gauge.get(), FLOOR as i64);
    }

    #[test]
    fn the_ceiling_bounds_the_start() {
        let (pace, _) = paced(16, 4);
        assert_eq!(pace.max_concurrency(), 4);
        let (pace, _) = paced(16, 1);
        assert_eq!(pace.max_concurrency(), 1);
    }

    #[test]
    fn only_overload_counts_as_failure() {
        let answer = |code: u16| -> Result<Response<()>, BoxError> {
            Ok(Response::builder().status(code).body(()).unwrap())
        };
        assert!(overloaded(&answer(429)));
        assert!(overloaded(&answer(503)));
        assert!(overloaded(&Err::<Response<()>, BoxError>("reset".into())));
        for code in [200, 201, 404, 409, 422] {
            assert!(!overloaded(&answer(code)), "{code}");
        }
    }

    /// A server that answers in 20 ms up to 24 requests in flight and queues beyond: the limit
    /// settles near what it takes. Driven directly, in simulated time: the layer measures round
    /// trips with the wall clock, which a test cannot pace.
    #[test]
    fn the_limit_settles_near_what_a_queueing_server_takes() {
        const CAPACITY: usize = 24;
        let (mut pace, gauge) = paced(16, 64);
        let mut seen = Vec::new();
        for _ in 0..400 {
            let in_flight = pace.max_concurrency();
            let rtt = Duration::from_millis(20 * in_flight.max(CAPACITY) as u64 / CAPACITY as u64);
            for _ in 0..in_flight {
                pace.update(rtt, in_flight, false, false);
            }
            seen.push(gauge.get());
        }
        let mut settled = seen[200..].to_vec();
        settled.sort_unstable();
        let median = settled[settled.len() / 2];
        assert!(
            (CAPACITY as i64 / 2..=2 * CAPACITY as i64).contains(&median),
            "settled at a median of {median} for a server taking {CAPACITY}"
        );
    }

    /// Through the layer: requests in flight never exceed the ceiling, and a burst of 429s
    /// brings the limit down (failures count whatever the round trips measured).
    #[tokio::test(start_paused = true)]
    async fn through_the_layer_the_ceiling_holds_and_throttling_brings_the_limit_down() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tower::{Layer, Service, ServiceExt};

        const CAPACITY: usize = 24;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let throttle = Arc::new(AtomicBool::new(false));
        let server = {
            let (in_flight, peak, throttle) = (in_flight.clone(), peak.clone(), throttle.clone());
            tower::service_fn(move |_: ()| {
                let (in_flight, peak, throttle) =
                    (in_flight.clone(), peak.clone(), throttle.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let queued = now.max(CAPACITY) as u64;
                    tokio::time::sleep(Duration::from_millis(20 * queued / CAPACITY as u64)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let code = if throttle.load(Ordering::SeqCst) {
                        429
                    } else {
                        200
                    };
                    Ok::<_, BoxError>(Response::builder().status(code).body(()).unwrap())
                }
            })
        };
        let gauge = Gauge::default();
        let pace = Pace::new(
            PaceSettings {
                initial: 16,
                ceiling: 64,
            },
            gauge.clone(),
        );
        let classifier: fn(&Result<Response<()>, BoxError>) -> bool = overloaded;
        let service = ConcurrencyLimitLayer::with_classifier(pace, classifier).layer(server);
        let service = tower::buffer::Buffer::new(service, 1024);
        let drive = |n: usize| {
            let service = service.clone();
            async move {
                let calls = (0..n).map(|_| {
                    let mut service = service.clone();
                    async move { service.ready().await.unwrap().call(()).await }
                });
                futures::future::join_all(calls).await
            }
        };
        for _ in 0..20 {
            drive(400).await;
        }
        let settled = gauge.get();
        assert!(peak.load(Ordering::SeqCst) <= 64, "the ceiling held");
        throttle.store(true, Ordering::SeqCst);
        drive(50).await;
        assert!(
            gauge.get() <= settled / 2,
            "429s brought {settled} down to {} only",
            gauge.get()
        );
    }
}
