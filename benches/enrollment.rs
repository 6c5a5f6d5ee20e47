//! Enrollment throughput: one backfilling policy enrolling N listed contacts in one pass, against
//! a mock API server that answers every request at once (201 echoing the body for creates, 200
//! with a minimal object for patches). What is measured is the controller's own cost per contact
//! (planning, the kube client, JSON in and out, two requests per contact, up to
//! `--enrollment-concurrency` of them in flight), not a real API
//! server's latency; criterion's `thrpt` is contacts enrolled per second for one policy.
//!
//! `cargo bench --bench enrollment`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use milo_webhook::api::{Contact, ContactGroup, ContactGroupEnrollmentPolicy};
use milo_webhook::controllers::enrollment::{self, EnrollmentContext};
use milo_webhook::controllers::{Context, ControllerSettings};
use milo_webhook::metrics::Metrics;
use milo_webhook::view::{ClusterView, Store};
use serde_json::{Value, json};

const API_VERSION: &str = "notification.miloapis.com/v1alpha1";
const SIZES: [usize; 2] = [1_000, 10_000];

/// A kube client whose every request is answered generically by a task on the current runtime.
fn mock_client() -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let path = parts.uri.path();
            let (code, answer) = match parts.method {
                Method::POST => (201, bytes.to_vec()),
                Method::PATCH if path.ends_with("/status") => {
                    (200, policy_json().to_string().into_bytes())
                }
                _ => {
                    // A contact patch (or anything else): a minimal object named by the path.
                    let mut segments = path.rsplit('/');
                    let name = segments.next().unwrap_or_default();
                    let namespace = segments.nth(1).unwrap_or_default();
                    let contact = json!({"apiVersion": API_VERSION, "kind": "Contact",
                        "metadata": {"name": name, "namespace": namespace},
                        "spec": {"email": "someone@example.com"}});
                    (200, contact.to_string().into_bytes())
                }
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(answer))
                .unwrap();
            send.send_response(response);
        }
    });
    Client::new(service, "default")
}

fn policy_json() -> Value {
    json!({
        "apiVersion": API_VERSION, "kind": "ContactGroupEnrollmentPolicy",
        "metadata": {"name": "all-users", "uid": "uid-all-users", "generation": 1,
            "creationTimestamp": "2026-05-01T00:00:00Z"},
        "spec": {"contactGroupRef": {"name": "everyone", "namespace": "groups"},
            "trigger": {"type": "ContactCreated"},
            "contactSelector": {"subjectKind": "User"},
            "backfill": true}
    })
}

/// The leader's view with the group and N user contacts, shared by every iteration (nothing
/// feeds the records back, so every pass finds all N still to enroll).
fn view(n: usize) -> Arc<ClusterView> {
    let group: ContactGroup = serde_json::from_value(json!({
        "metadata": {"name": "everyone", "namespace": "groups"},
        "spec": {"displayName": "Everyone", "visibility": "private"}
    }))
    .unwrap();
    let mut store = Store::default();
    store.apply_group(&group);
    for i in 0..n {
        let contact: Contact = serde_json::from_value(json!({
            "metadata": {"name": format!("user-{i:06}"), "namespace": "people",
                "uid": format!("uid-{i}"), "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"email": format!("user{i}@example.com"),
                "subject": {"apiGroup": "iam.miloapis.com", "kind": "User",
                    "name": format!("user-{i:06}")}}
        }))
        .unwrap();
        store.apply_contact(&contact);
    }
    Arc::new(ClusterView::offline(store))
}

/// One pass by a fresh leader (empty in-process memory), timed.
async fn one_pass(
    view: &Arc<ClusterView>,
    policy: &Arc<ContactGroupEnrollmentPolicy>,
    expect: usize,
) -> Duration {
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Context::new(
        mock_client(),
        view.clone(),
        metrics.clone(),
        ControllerSettings::default(),
        None,
    ));
    let ctx = Arc::new(EnrollmentContext::new(shared));
    let started = Instant::now();
    enrollment::reconcile(policy.clone(), ctx)
        .await
        .expect("the pass succeeds");
    let elapsed = started.elapsed();
    let labels = milo_webhook::metrics::PolicyLabels {
        policy: "all-users".into(),
    };
    let enrolled = metrics.controllers.enrollments.get_or_create(&labels).get();
    assert_eq!(enrolled, expect as u64, "every contact enrolled");
    elapsed
}

fn enrollment_throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let policy: Arc<ContactGroupEnrollmentPolicy> =
        Arc::new(serde_json::from_value(policy_json()).unwrap());
    let mut group = c.benchmark_group("enrollment");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for n in SIZES {
        let view = view(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("contacts", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += one_pass(&view, &policy, n).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, enrollment_throughput);
criterion_main!(benches);
