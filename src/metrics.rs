//! Prometheus metrics for the admin port: reviews by webhook, operation and verdict; review
//! latency with sub-millisecond buckets (decisions take microseconds, so default buckets would
//! put every review in the first one); certificate reloads; objects in the view.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::view::{ClusterView, ViewKind};

/// Labels of a review counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// Webhook path, or `unknown` when the body could not be tied to one.
    pub webhook: String,
    /// CREATE, UPDATE, DELETE, CONNECT, or `unknown`.
    pub operation: String,
    /// `allowed`, `denied` or `error` (no AdmissionReview could be answered).
    pub verdict: String,
}

/// Labels naming one webhook.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// Webhook path.
    pub webhook: String,
}

/// Labels of a certificate reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: String,
}

/// Labels naming a kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kubernetes kind.
    pub kind: String,
}

/// Review latency histograms, one per webhook.
pub type DurationFamily = Family<WebhookLabels, Histogram, fn() -> Histogram>;

/// Every metric the server exports, registered once.
pub struct Metrics {
    registry: Registry,
    /// Reviews answered.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Time from body received to response ready.
    pub review_duration: DurationFamily,
    /// Certificate reload attempts that changed something.
    pub certificate_reloads: Family<ReloadLabels, Counter>,
    /// Objects indexed in the view.
    pub view_objects: Family<KindLabels, Gauge>,
}

/// Histogram buckets from 50µs to 1s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("milo_webhook");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "admission_reviews",
            "Admission reviews answered",
            reviews.clone(),
        );
        let review_duration: DurationFamily =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register(
            "admission_review_duration_seconds",
            "Time to decide an admission review",
            review_duration.clone(),
        );
        let certificate_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads",
            certificate_reloads.clone(),
        );
        let view_objects = Family::<KindLabels, Gauge>::default();
        registry.register(
            "view_objects",
            "Objects indexed in the cluster view",
            view_objects.clone(),
        );
        Self {
            registry,
            reviews,
            review_duration,
            certificate_reloads,
            view_objects,
        }
    }
}

impl Metrics {
    /// Counts one answered review.
    pub fn record_review(&self, webhook: &str, operation: &str, verdict: &str, seconds: f64) {
        let labels = ReviewLabels {
            webhook: webhook.into(),
            operation: operation.into(),
            verdict: verdict.into(),
        };
        self.reviews.get_or_create(&labels).inc();
        self.review_duration
            .get_or_create(&WebhookLabels {
                webhook: webhook.into(),
            })
            .observe(seconds);
    }

    /// Counts one certificate reload.
    pub fn record_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.certificate_reloads
            .get_or_create(&ReloadLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The text exposition, with view sizes read at scrape time.
    pub fn encode(&self, view: &ClusterView) -> String {
        {
            let store = view.read();
            for kind in ViewKind::ALL {
                let labels = KindLabels {
                    kind: kind.kind_name().into(),
                };
                self.view_objects
                    .get_or_create(&labels)
                    .set(store.len(kind) as i64);
            }
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
