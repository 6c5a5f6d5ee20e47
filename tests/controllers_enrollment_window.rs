//! Enrollment keeps a window of writes in flight: a backfill pass never has more than
//! `--enrollment-concurrency` requests outstanding, keeps the window full while work remains,
//! and still writes each contact's record before its membership is created.
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use milo_webhook::api::{Contact, ContactGroup, ContactGroupEnrollmentPolicy};
use milo_webhook::controllers::enrollment::{self, EnrollmentContext};
use milo_webhook::controllers::{Context, ControllerSettings};
use milo_webhook::metrics::{Metrics, PolicyLabels};
use milo_webhook::view::{ClusterView, Store};
use serde_json::{Value, json};
use support::mock_api;

const WINDOW: usize = 8;
const CONTACTS: usize = 40;

/// What the slow API saw: the most requests outstanding at once, and per contact the order of
/// its membership create and record patch.
#[derive(Default)]
struct Seen {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    order: Mutex<HashMap<String, Vec<&'static str>>>,
}

fn slow_client(seen: Arc<Seen>) -> Client {
    Client::new(slow_api(seen, Duration::from_millis(3)), "default")
}

/// The slow API as a service: every request answered after `latency`.
fn slow_api(
    seen: Arc<Seen>,
    latency: Duration,
) -> tower_test::mock::Mock<Request<Body>, Response<Body>> {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                seen.most.fetch_max(now, Ordering::SeqCst);
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                tokio::time::sleep(latency).await;
                let path = parts.uri.path().to_owned();
                let (code, answer) = if parts.method == Method::POST {
                    if let Some(contact) = body["spec"]["contactRef"]["name"].as_str() {
                        let mut order = seen.order.lock().unwrap();
                        order.entry(contact.to_owned()).or_default().push("create");
                    }
                    (201, body)
                } else if path.ends_with("/status") {
                    (200, policy_json())
                } else {
                    let contact = path.rsplit('/').next().unwrap_or_default().to_owned();
                    seen.order
                        .lock()
                        .unwrap()
                        .entry(contact.clone())
                        .or_default()
                        .push("record");
                    let object = json!({"apiVersion": "notification.miloapis.com/v1alpha1",
                        "kind": "Contact", "metadata": {"name": contact, "namespace": "people"},
                        "spec": {"email": "x@example.com"}});
                    (200, object)
                };
                seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                send.send_response(mock_api::json_response(code, &answer));
            });
        }
    });
    service
}

fn policy_json() -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1",
        "kind": "ContactGroupEnrollmentPolicy",
        "metadata": {"name": "all", "uid": "uid-all", "generation": 1,
            "creationTimestamp": "2026-05-01T00:00:00Z"},
        "spec": {"contactGroupRef": {"name": "everyone", "namespace": "groups"},
            "trigger": {"type": "ContactCreated"}, "backfill": true}})
}

/// The group `everyone` and `n` contacts created before the policy (so its backfill takes them).
fn backfill_store(n: usize) -> Store {
    let mut store = Store::default();
    let group: ContactGroup = serde_json::from_value(json!({
        "metadata": {"name": "everyone", "namespace": "groups"},
        "spec": {"displayName": "Everyone", "visibility": "private"}}))
    .unwrap();
    store.apply_group(&group);
    for i in 0..n {
        let contact: Contact = serde_json::from_value(json!({
            "metadata": {"name": format!("c{i:03}"), "namespace": "people",
                "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"email": format!("c{i}@example.com")}}))
        .unwrap();
        store.apply_contact(&contact);
    }
    store
}

/// One pass of the backfilling policy over `store` through `client`, `window` steps at a time;
/// the metrics it counted into.
async fn backfill_pass(
    client: Client,
    store: Store,
    window: usize,
) -> Result<Arc<Metrics>, milo_webhook::controllers::Error> {
    let metrics = Arc::new(Metrics::default());
    let settings = ControllerSettings {
        enrollment_concurrency: window,
        ..ControllerSettings::default()
    };
    let shared = Arc::new(Context::new(
        client,
        Arc::new(ClusterView::offline(store)),
        metrics.clone(),
        settings,
        None,
    ));
    let policy: ContactGroupEnrollmentPolicy = serde_json::from_value(policy_json()).unwrap();
    let ctx = Arc::new(EnrollmentContext::new(shared));
    enrollment::reconcile(Arc::new(policy), ctx).await?;
    Ok(metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_keeps_the_window_full_with_one_write_per_contact() {
    let store = backfill_store(CONTACTS);
    let seen = Arc::new(Seen::default());
    let metrics = backfill_pass(slow_client(seen.clone()), store, WINDOW)
        .await
        .expect("the pass succeeds");

    let labels = PolicyLabels {
        policy: "all".into(),
    };
    assert_eq!(
        metrics.controllers.enrollments.get_or_create(&labels).get(),
        CONTACTS as u64
    );
    // Each step makes one request at a time (create, Event), so the window of steps is the
    // window of requests: full, and never more.
    assert_eq!(seen.most.load(Ordering::SeqCst), WINDOW);
    let order = seen.order.lock().unwrap();
    assert_eq!(order.len(), CONTACTS);
    for (contact, steps) in order.iter() {
        // The membership alone, holding the finalizer that records the contact as it goes.
        assert_eq!(steps, &["create"], "{contact}");
    }
}

/// Under an API client that takes fewer requests than the window (the adaptive write pace at a
/// low limit), a pass long enough to report progress still finishes: the progress write runs
/// beside the steps, whose answers hold the client's slots until polled.
#[tokio::test(start_paused = true)]
async fn a_pass_under_a_tighter_client_limit_reports_progress_and_finishes() {
    use milo_webhook::controllers::pace::{Pace, PaceSettings};
    use tower_acc::ConcurrencyLimitLayer;
    const MANY: usize = 200;
    let store = backfill_store(MANY);
    let seen = Arc::new(Seen::default());
    let limit = PaceSettings {
        initial: 4,
        ceiling: 4,
    };
    let pace = Pace::new(limit, Default::default());
    let service = tower::ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(pace))
        .service(slow_api(seen.clone(), Duration::from_millis(100)));
    // 200 creates and 100 Events, 4 at a time, 100 ms each: over seven seconds, a progress report.
    let metrics = tokio::time::timeout(
        Duration::from_secs(120),
        backfill_pass(Client::new(service, "default"), store, 32),
    )
    .await
    .expect("the pass finishes")
    .expect("the pass succeeds");
    let labels = PolicyLabels {
        policy: "all".into(),
    };
    assert_eq!(
        metrics.controllers.enrollments.get_or_create(&labels).get(),
        MANY as u64
    );
    assert!(
        seen.most.load(Ordering::SeqCst) <= 4,
        "the client's limit held"
    );
}
