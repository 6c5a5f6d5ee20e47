//! One membership CREATE review decided in process, without TLS or sockets, beside the floor's
//! work for the same body (parse into a `serde_json::Value`, allow, encode). Two levels:
//! `admission`: decode, decide, encode and count, as `server::routes` does; `router`: the whole
//! axum webhook router through `oneshot`, beside a router that does the floor's work. The load
//! benchmark (`benches/load.rs`) measures the same over TLS end to end; this one shows where a
//! review's own CPU goes, repeatably.
//!
//! `cargo bench --bench review`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, header};
use axum::response::IntoResponse;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::BodyExt;
use milo_webhook::admission::chain::{Route, respond};
use milo_webhook::admission::review::parse_review;
use milo_webhook::admission::{Settings, registry};
use milo_webhook::metrics::{Metrics, ReviewSeries};
use milo_webhook::server::routes::{WebhookState, router};
use milo_webhook::view::manifests::apply_object;
use milo_webhook::view::{ClusterView, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

#[path = "load/membership.rs"]
mod membership;
use membership::{API, NS};

const PATH: &str = "/validate-notification-miloapis-com-v1alpha1-contactgroupmembership";
/// Contacts (and as many memberships) in the view, as in the load benchmark's 100k case.
const CONTACTS: usize = 50_000;
const GROUPS: usize = 100;

fn view() -> Arc<ClusterView> {
    let mut store = Store::default();
    let mut add = |kind: &str, value: Value| {
        assert!(apply_object(&mut store, API, kind, value).expect("valid object"));
    };
    for g in 0..GROUPS {
        let spec = json!({"displayName": format!("Group {g}"), "visibility": "public"});
        add(
            "ContactGroup",
            json!({"metadata": {"name": format!("group-{g}"), "namespace": NS}, "spec": spec}),
        );
    }
    for i in 0..CONTACTS {
        let spec = json!({"email": format!("contact-{i}@example.com"),
            "subject": {"apiGroup": "iam.miloapis.com", "kind": "User", "name": format!("user-{i}")}});
        add(
            "Contact",
            json!({"metadata": {"name": format!("contact-{i}"), "namespace": NS}, "spec": spec}),
        );
        let spec = json!({"contactRef": {"name": format!("contact-{i}"), "namespace": NS},
            "contactGroupRef": {"name": format!("group-{}", i % GROUPS), "namespace": NS}});
        add(
            "ContactGroupMembership",
            json!({"metadata": {"name": format!("member-{i}"), "namespace": NS}, "spec": spec}),
        );
    }
    Arc::new(ClusterView::offline(store))
}

/// The load benchmark's review: a new membership of contact `j` in another group (allowed).
fn body(j: usize) -> Bytes {
    let review = membership::review(&format!("bench-{j}"), j, (j + 1) % GROUPS);
    serde_json::to_vec(&review).expect("encodes").into()
}

/// The floor's work for one body: what `benches/load/floor.rs` does.
fn floor(body: &[u8]) -> Vec<u8> {
    let review: Value = serde_json::from_slice(body).unwrap_or_default();
    let uid = review.pointer("/request/uid").cloned().unwrap_or_default();
    let reply = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true}});
    serde_json::to_vec(&reply).unwrap_or_default()
}

/// Decides every body once, as the server does; what `callgrind --toggle-collect=*decide_all*`
/// counts when the benchmark runs with `MILO_REVIEW_PROFILE=server` (`=floor`: `floor_all`).
#[inline(never)]
fn decide_all(bodies: &[Bytes], view: &ClusterView, settings: &Settings, series: &ReviewSeries) {
    let webhook = registry::by_path(PATH).expect("membership webhook");
    for body in bodies {
        let started = Instant::now();
        let parsed = parse_review(body);
        let reply = respond(Route::One(webhook), parsed, view, settings).expect("a uid");
        assert!(reply.response.allowed);
        let encoded = serde_json::to_vec(&reply).expect("encodes");
        let seconds = started.elapsed().as_secs_f64();
        series.record("CREATE", "allowed", seconds);
        std::hint::black_box(encoded);
    }
}

/// The floor's work for every body, for the same count.
#[inline(never)]
fn floor_all(bodies: &[Bytes]) {
    for body in bodies {
        std::hint::black_box(floor(body));
    }
}

fn bench(c: &mut Criterion) {
    let view = view();
    let settings = Arc::new(Settings::default());
    let metrics = Arc::new(Metrics::default());
    let webhook = registry::by_path(PATH).expect("membership webhook");
    let series = metrics.review_series(webhook.path);
    let bodies: Vec<Bytes> = (0..1000).map(|k| body(k * 7919 % CONTACTS)).collect();
    match std::env::var("MILO_REVIEW_PROFILE").as_deref() {
        Ok("floor") => return floor_all(&bodies),
        Ok(_) => return decide_all(&bodies, &view, &settings, &series),
        Err(_) => {}
    }
    let mut next = 0usize;
    let mut pick = move || {
        next = (next + 1) % bodies.len();
        bodies[next].clone()
    };

    let mut group = c.benchmark_group("admission");
    group.throughput(Throughput::Elements(1));
    group.bench_function("milo-webhook", |b| {
        b.iter(|| {
            let started = Instant::now();
            let body = pick();
            let parsed = parse_review(&body);
            let reply = respond(Route::One(webhook), parsed, &view, &settings).expect("a uid");
            assert!(reply.response.allowed);
            let encoded = serde_json::to_vec(&reply).expect("encodes");
            let seconds = started.elapsed().as_secs_f64();
            series.record("CREATE", "allowed", seconds);
            encoded
        })
    });
    group.bench_function("floor", |b| b.iter(|| floor(&pick())));
    group.finish();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ours = router(WebhookState {
        view: view.clone(),
        metrics,
        request_timeout: Duration::from_secs(10),
        settings,
        budget: std::sync::Arc::new(milo_webhook::server::budget::ReviewBudget::new(
            Default::default(),
        )),
    });
    let floor_router =
        axum::Router::new().fallback(axum::routing::post(|body: Bytes| async move {
            ([(header::CONTENT_TYPE, "application/json")], floor(&body)).into_response()
        }));
    let request = |body: Bytes| {
        Request::post(PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("request")
    };
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(1));
    for (name, app) in [("milo-webhook", ours), ("floor", floor_router)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let (app, request) = (app.clone(), request(pick()));
                runtime.block_on(async move {
                    let response = app.oneshot(request).await.expect("infallible");
                    assert!(response.status().is_success());
                    response
                        .into_body()
                        .collect()
                        .await
                        .expect("body")
                        .to_bytes()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
