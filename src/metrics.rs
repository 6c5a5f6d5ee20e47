//! Prometheus metrics for the admin port: reviews by webhook, operation and verdict; review
//! latency with sub-millisecond buckets (decisions take microseconds, so default buckets would
//! put every review in the first one); certificate reloads; objects in the view.
//!
//! Each subsystem registers its own metric families into the shared registry it is handed
//! ([`Metrics::register`], [`Metrics::subsystem`]), so this module depends on no layer above it.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

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

/// Labels of a refused request or connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `webhook` or `events`.
    pub listener: String,
    /// `connections`, `concurrency`, `bytes` or `body_size`.
    pub reason: String,
}

/// Labels naming a kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Kubernetes kind.
    pub kind: String,
}

/// Review latency histograms, one per webhook.
pub type DurationFamily = Family<WebhookLabels, Histogram, fn() -> Histogram>;

/// Every metric the server exports. The server's and controllers' common families are fields;
/// other subsystems register theirs through [`Metrics::register`] or [`Metrics::subsystem`].
pub struct Metrics {
    registry: Mutex<Registries>,
    /// Reviews answered.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Time from body received to response ready.
    pub review_duration: DurationFamily,
    /// Certificate reload attempts that changed something.
    pub certificate_reloads: Family<ReloadLabels, Counter>,
    /// Requests and connections refused because a listener's bounds were reached.
    pub refused: Family<RefusedLabels, Counter>,
    /// Objects indexed in the view.
    pub view_objects: Family<KindLabels, Gauge>,
    /// The embedded controllers' metrics.
    pub controllers: ControllerMetrics,
}

/// The registry, and the handles of the subsystems registered through [`Metrics::subsystem`].
struct Registries {
    registry: Registry,
    subsystems: HashMap<TypeId, Box<dyn Any + Send>>,
}

/// Labels of a reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// Controller name.
    pub controller: String,
    /// `success` or `error`.
    pub result: String,
}

/// Labels of a reconcile error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileErrorLabels {
    /// Controller name.
    pub controller: String,
    /// `api`, `conflict`, `transport` or `invalid`.
    pub error: String,
}

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// Controller name.
    pub controller: String,
}

/// Labels naming an enrollment policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// ContactGroupEnrollmentPolicy name.
    pub policy: String,
}

/// Labels naming a field an installed CRD does not declare.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrdFieldLabels {
    /// The kind (`EmailBroadcast`).
    pub kind: String,
    /// The field's path (`status.pendingBatch`), or `status` for a missing status subresource.
    pub field: String,
}

/// Reconcile durations, one histogram per controller.
pub type ControllerDurationFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

/// What the controllers export: how often they run, fail and how long they take, plus what
/// enrollment did. Cloning shares the same series.
#[derive(Clone)]
pub struct ControllerMetrics {
    /// Reconciles by controller and result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Failed reconciles by controller and kind of error.
    pub errors: Family<ReconcileErrorLabels, Counter>,
    /// Reconcile durations.
    pub duration: ControllerDurationFamily,
    /// Contacts enrolled, by policy.
    pub enrollments: Family<PolicyLabels, Counter>,
    /// Contacts a policy skipped because they opted out, by policy.
    pub opt_out_skips: Family<PolicyLabels, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// Objects waiting to be reconciled, by controller.
    pub queue_depth: Family<ControllerLabels, Gauge>,
    /// Events not published because the Event budget was spent.
    pub events_dropped: Counter,
    /// 1 for each field the controllers write that the installed CRD does not declare.
    pub crd_missing_fields: Family<CrdFieldLabels, Gauge>,
}

/// Reconcile duration buckets, 1ms to 30s: reconciles make API calls.
pub const RECONCILE_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

impl ControllerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(RECONCILE_BUCKETS)),
            enrollments: Family::default(),
            opt_out_skips: Family::default(),
            leader: Gauge::default(),
            queue_depth: Family::default(),
            events_dropped: Counter::default(),
            crd_missing_fields: Family::default(),
        };
        registry.register(
            "controller_reconciles",
            "Reconciles run",
            metrics.reconciles.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "Reconciles that failed",
            metrics.errors.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Time one reconcile took",
            metrics.duration.clone(),
        );
        registry.register(
            "enrollments",
            "Contacts enrolled into a group by a policy",
            metrics.enrollments.clone(),
        );
        registry.register(
            "enrollment_opt_out_skips",
            "Contacts a policy did not enroll because they had opted out",
            metrics.opt_out_skips.clone(),
        );
        registry.register(
            "controller_leader",
            "1 while this replica holds the leader lease and runs the controllers",
            metrics.leader.clone(),
        );
        registry.register(
            "controller_queue_depth",
            "Objects waiting to be reconciled (now or after a delay)",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "controller_events_dropped",
            "Kubernetes Events not published because the per-process Event budget was spent",
            metrics.events_dropped.clone(),
        );
        registry.register(
            "crd_missing_fields",
            "Fields the controllers write that the installed CRD does not declare (1 each): such a \
             field is not sent, and a feature that needs it stays off",
            metrics.crd_missing_fields.clone(),
        );
        metrics
    }

    /// Counts one reconcile and its duration.
    pub fn record_reconcile(&self, controller: &str, result: &str, seconds: f64) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: controller.into(),
                result: result.into(),
            })
            .inc();
        self.duration
            .get_or_create(&ControllerLabels {
                controller: controller.into(),
            })
            .observe(seconds);
    }

    /// Counts one failed reconcile.
    pub fn record_error(&self, controller: &str, error: &str) {
        self.errors
            .get_or_create(&ReconcileErrorLabels {
                controller: controller.into(),
                error: error.into(),
            })
            .inc();
    }
}

/// The review series of one webhook, each resolved in its family on first use and kept, so
/// counting a review on the hot path takes no lock, hash or allocation. Series appear in the
/// exposition only once used.
pub struct ReviewSeries {
    webhook: &'static str,
    reviews: Family<ReviewLabels, Counter>,
    review_duration: DurationFamily,
    /// By operation (the order of [`ReviewSeries::OPERATIONS`]) and verdict
    /// ([`ReviewSeries::VERDICTS`]).
    counters: [[OnceLock<Counter>; 3]; 5],
    duration: OnceLock<Histogram>,
}

impl ReviewSeries {
    /// Operation label values.
    pub const OPERATIONS: [&'static str; 5] = ["CREATE", "UPDATE", "DELETE", "CONNECT", "unknown"];
    /// Verdict label values.
    pub const VERDICTS: [&'static str; 3] = ["allowed", "denied", "error"];

    /// Counts one answered review; an operation or verdict outside the lists counts as
    /// `unknown` / `error`.
    pub fn record(&self, operation: &str, verdict: &str, seconds: f64) {
        let position = |values: &[&str], value: &str| {
            values
                .iter()
                .position(|v| *v == value)
                .unwrap_or(values.len() - 1)
        };
        let (o, v) = (
            position(&Self::OPERATIONS, operation),
            position(&Self::VERDICTS, verdict),
        );
        let counter = self.counters[o][v].get_or_init(|| {
            let labels = ReviewLabels {
                webhook: self.webhook.into(),
                operation: Self::OPERATIONS[o].into(),
                verdict: Self::VERDICTS[v].into(),
            };
            self.reviews.get_or_create(&labels).clone()
        });
        counter.inc();
        let duration = self.duration.get_or_init(|| {
            let labels = WebhookLabels {
                webhook: self.webhook.into(),
            };
            self.review_duration.get_or_create(&labels).clone()
        });
        duration.observe(seconds);
    }
}

/// Histogram buckets from 50µs to 1s (0.2 ms: the per-webhook target of the load benchmark).
pub const DURATION_BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.0002, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0,
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
        let refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "refused",
            "Requests and connections refused because a listener's bounds were reached",
            refused.clone(),
        );
        let view_objects = Family::<KindLabels, Gauge>::default();
        registry.register(
            "view_objects",
            "Objects indexed in the cluster view",
            view_objects.clone(),
        );
        let controllers = ControllerMetrics::register(&mut registry);
        Self {
            registry: Mutex::new(Registries {
                registry,
                subsystems: HashMap::new(),
            }),
            controllers,
            reviews,
            review_duration,
            certificate_reloads,
            refused,
            view_objects,
        }
    }
}

impl Metrics {
    fn registries(&self) -> MutexGuard<'_, Registries> {
        // Registering or encoding does not leave the registry half-changed on a panic.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets a subsystem register its families into the shared registry (with its
    /// `milo_webhook` prefix) and returns what `f` returns, typically the handles. Each call
    /// registers again: call it once per subsystem (at startup), or use [`Metrics::subsystem`].
    pub fn register<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registries().registry)
    }

    /// The handles of the subsystem whose handle type is `T`, registered by `f` on first use and
    /// cloned afterwards. For subsystems constructed more than once in a process (a controller
    /// restarted on every leadership term), whose series must be registered only once and keep
    /// counting across terms. `T`'s clones must share their series (prometheus-client's do).
    pub fn subsystem<T: Clone + Send + 'static>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut registries = self.registries();
        let registries = &mut *registries;
        if let Some(handles) = registries.subsystems.get(&TypeId::of::<T>())
            && let Some(handles) = handles.downcast_ref::<T>()
        {
            return handles.clone();
        }
        let handles = f(&mut registries.registry);
        registries
            .subsystems
            .insert(TypeId::of::<T>(), Box::new(handles.clone()));
        handles
    }

    /// One webhook's review series, for counting its reviews without building labels each time.
    pub fn review_series(&self, webhook: &'static str) -> ReviewSeries {
        ReviewSeries {
            webhook,
            reviews: self.reviews.clone(),
            review_duration: self.review_duration.clone(),
            counters: Default::default(),
            duration: OnceLock::new(),
        }
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

    /// Counts one request or connection refused by `listener` for `reason`.
    pub fn record_refused(&self, listener: &str, reason: &str) {
        self.refused
            .get_or_create(&RefusedLabels {
                listener: listener.into(),
                reason: reason.into(),
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
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registries().registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[derive(Clone, Default)]
    struct Widgets(Counter);

    fn widgets(registry: &mut Registry) -> Widgets {
        let widgets = Widgets::default();
        registry.register("widgets", "Widgets made", widgets.0.clone());
        widgets
    }

    #[test]
    fn a_subsystem_registers_once_and_its_handles_share_series() {
        let metrics = Metrics::default();
        let first = metrics.subsystem(widgets);
        let second =
            metrics.subsystem(|_: &mut Registry| -> Widgets { panic!("registered twice") });
        first.0.inc();
        second.0.inc();
        let text = metrics.encode(&ClusterView::offline(crate::view::Store::default()));
        assert_eq!(
            text.matches("# TYPE milo_webhook_widgets counter").count(),
            1,
            "{text}"
        );
        assert!(text.contains("milo_webhook_widgets_total 2"), "{text}");
    }

    #[test]
    fn register_adds_families_with_the_shared_prefix() {
        let metrics = Metrics::default();
        let made = metrics.register(widgets);
        made.0.inc();
        let text = metrics.encode(&ClusterView::offline(crate::view::Store::default()));
        assert!(text.contains("milo_webhook_widgets_total 1"), "{text}");
        assert!(text.contains("milo_webhook_view_objects"), "{text}");
    }

    #[test]
    fn review_series_count_in_the_shared_families_and_appear_once_used() {
        let metrics = Metrics::default();
        let view = ClusterView::offline(crate::view::Store::default());
        let (a, b) = (metrics.review_series("/a"), metrics.review_series("/b"));
        let before = metrics.encode(&view);
        assert!(!before.contains("webhook=\"/a\""), "{before}");
        a.record("CREATE", "allowed", 0.0001);
        a.record("CREATE", "allowed", 0.0003);
        a.record("PATCH", "maybe", 2.0);
        b.record("DELETE", "denied", 0.0001);
        // A second handle on the same webhook adds to the same series.
        metrics
            .review_series("/a")
            .record("CREATE", "allowed", 0.0001);
        let text = metrics.encode(&view);
        let has = |line: &str| text.lines().any(|l| l == line);
        let reviews = "milo_webhook_admission_reviews_total";
        assert!(
            has(&format!(
                "{reviews}{{webhook=\"/a\",operation=\"CREATE\",verdict=\"allowed\"}} 3"
            )),
            "{text}"
        );
        assert!(
            has(&format!(
                "{reviews}{{webhook=\"/a\",operation=\"unknown\",verdict=\"error\"}} 1"
            )),
            "{text}"
        );
        assert!(
            has(&format!(
                "{reviews}{{webhook=\"/b\",operation=\"DELETE\",verdict=\"denied\"}} 1"
            )),
            "{text}"
        );
        let durations = "milo_webhook_admission_review_duration_seconds";
        assert!(
            has(&format!("{durations}_count{{webhook=\"/a\"}} 4")),
            "{text}"
        );
        assert!(
            has(&format!(
                "{durations}_bucket{{le=\"0.0002\",webhook=\"/a\"}} 2"
            )),
            "{text}"
        );
        assert!(!text.contains("operation=\"UPDATE\""), "{text}");
    }
}
