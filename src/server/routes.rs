//! The webhook endpoints: one POST route per registered webhook path. Reading the body, deciding
//! and encoding the response all run under one deadline shorter than the webhook's
//! `timeoutSeconds`, so a slow client costs us a 408 rather than the API server a timeout. What
//! the reviews hold at once is bounded by a [`ReviewBudget`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::admission::chain::{Route, respond};
use crate::admission::review::{ReviewResponse, parse_review};
use crate::admission::{Settings, WEBHOOKS, Webhook};
use crate::metrics::{Metrics, ReviewSeries};
use crate::server::budget::{ReadError, ReviewBudget, Slot};
use crate::view::ClusterView;

/// Bodies up to twice the limit get the same early answer (404, 405, 413) over HTTP/1.1 and
/// HTTP/2: what we do not need is read and thrown away before answering. Over HTTP/2 an answer
/// sent while the client is still uploading ends in a stream reset, which curl and others report
/// as a framing error instead of our status; over HTTP/1.1 an unread body costs the keep-alive
/// connection. Beyond this the client is cut off after the answer, so nobody can make us read
/// forever; the request deadline bounds the time as well.
pub const DRAIN_FACTOR: usize = 2;

/// What every webhook request needs.
#[derive(Clone)]
pub struct WebhookState {
    /// The cluster view decisions read.
    pub view: Arc<ClusterView>,
    /// Where reviews are counted.
    pub metrics: Arc<Metrics>,
    /// Deadline for one request, body included.
    pub request_timeout: Duration,
    /// Settings the rules read.
    pub settings: Arc<Settings>,
    /// What the reviews of this listener may hold at once.
    pub budget: Arc<ReviewBudget>,
}

/// The webhook router: every path in the registry, nothing else.
pub fn router(state: WebhookState) -> Router {
    let mut router = Router::new();
    for webhook in WEBHOOKS {
        // What a review needs, behind one reference count taken per request (axum's `State`
        // would clone the state's three).
        let endpoint = Arc::new(Endpoint {
            webhook,
            series: state.metrics.review_series(webhook.path),
            state: state.clone(),
        });
        router = router.route(
            webhook.path,
            post(move |request: axum::extract::Request| handle(endpoint.clone(), request)),
        );
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// How much of an unwanted body is read and thrown away before answering.
fn drain_budget(state: &WebhookState) -> usize {
    DRAIN_FACTOR.saturating_mul(state.budget.limits().max_body)
}

async fn not_found(State(state): State<WebhookState>, request: axum::extract::Request) -> Response {
    let budget = drain_budget(&state);
    drain_within(request.into_body(), budget, state.request_timeout).await;
    plain(StatusCode::NOT_FOUND, "no webhook is served at this path")
}

async fn method_not_allowed(
    State(state): State<WebhookState>,
    request: axum::extract::Request,
) -> Response {
    let budget = drain_budget(&state);
    drain_within(request.into_body(), budget, state.request_timeout).await;
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "webhooks accept POST only");
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    response
}

/// Reads and discards up to `budget` bytes of `body`, giving up at the deadline.
async fn drain_within(mut body: Body, budget: usize, deadline: Duration) {
    let _ = tokio::time::timeout(deadline, drain(&mut body, budget)).await;
}

/// Reads and discards up to `budget` bytes of `body`.
async fn drain(body: &mut Body, mut budget: usize) {
    use http_body_util::BodyExt;
    while let Some(Ok(frame)) = body.frame().await {
        let Some(data) = frame.data_ref() else {
            continue;
        };
        match budget.checked_sub(data.len()) {
            Some(left) => budget = left,
            None => return,
        }
    }
}

/// One webhook's route.
struct Endpoint {
    webhook: &'static Webhook,
    series: ReviewSeries,
    state: WebhookState,
}

async fn handle(endpoint: Arc<Endpoint>, request: axum::extract::Request) -> Response {
    let Endpoint {
        webhook,
        series,
        state,
    } = &*endpoint;
    let started = Instant::now();
    let record = |operation: &str, verdict: &str| {
        series.record(operation, verdict, started.elapsed().as_secs_f64())
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let mut body = request.into_body();
    // Refused before anything is read: a length past the limit, or a full replica, is answered
    // at once rather than queued.
    if declared.is_some_and(|length| length > state.budget.limits().max_body as u64) {
        record("unknown", "error");
        return too_large(state, &mut body, declared).await;
    }
    let Some(slot) = state.budget.admit(declared) else {
        record("unknown", "error");
        state.metrics.record_refused("webhook", "concurrency");
        return too_many("too many AdmissionReviews in flight on this replica");
    };
    let review = review(webhook, state, slot, body, declared, &record);
    tokio::pin!(review);
    // A review almost always arrives whole with its head and is answered in the first poll,
    // which then needs no timer: arming and dropping one per request cost more than the lookups.
    if let std::task::Poll::Ready(response) = futures::poll!(review.as_mut()) {
        return response;
    }
    let deadline = tokio::time::Instant::from_std(started + state.request_timeout);
    match tokio::time::timeout_at(deadline, review).await {
        Ok(response) => response,
        Err(_) => {
            record("unknown", "error");
            plain(
                StatusCode::REQUEST_TIMEOUT,
                "the AdmissionReview was not received in time",
            )
        }
    }
}

async fn review(
    webhook: &'static Webhook,
    state: &WebhookState,
    mut slot: Slot,
    body: Body,
    declared: Option<u64>,
    record: &impl Fn(&str, &str),
) -> Response {
    let mut body = body;
    let budget = &state.budget;
    let bytes = match budget.read(&mut slot, &mut body, declared).await {
        Ok(bytes) => bytes,
        Err(error) => {
            record("unknown", "error");
            return match error {
                ReadError::TooLarge => {
                    // The slot is not needed to throw bytes away.
                    drop(slot);
                    too_large(state, &mut body, declared).await
                }
                ReadError::Busy => {
                    state.metrics.record_refused("webhook", "bytes");
                    too_many("too many AdmissionReview bytes in flight on this replica")
                }
                ReadError::Failed(error) => plain(
                    StatusCode::BAD_REQUEST,
                    &format!("could not read the request body: {error}"),
                ),
            };
        }
    };
    drop(body);
    let _heavy = budget.heavy(bytes.len()).await;
    let parsed = parse_review(&bytes);
    let operation = match &parsed {
        Ok(request) => request.operation_name(),
        Err(_) => "unknown",
    };
    let reply = respond(Route::One(webhook), parsed, &state.view, &state.settings);
    match reply {
        Ok(reply) => {
            record(
                operation,
                if reply.response.allowed {
                    "allowed"
                } else {
                    "denied"
                },
            );
            json(&reply)
        }
        Err(message) => {
            record(operation, "error");
            tracing::debug!(webhook = webhook.path, %message, "unanswerable review");
            plain(StatusCode::BAD_REQUEST, &message)
        }
    }
}

/// 413, once the client has finished sending (so that it can read the answer) up to twice the
/// limit in all and within the request deadline: a declared length past that is cut off at once,
/// and a body sent without one has had the limit read already.
async fn too_large(state: &WebhookState, body: &mut Body, declared: Option<u64>) -> Response {
    state.metrics.record_refused("webhook", "body_size");
    let max = state.budget.limits().max_body;
    let drained = drain_budget(state);
    let budget = match declared {
        None => drained.saturating_sub(max),
        Some(length) if length <= drained as u64 => drained,
        Some(_) => 0,
    };
    if budget > 0 {
        let _ = tokio::time::timeout(state.request_timeout, drain(body, budget)).await;
    }
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("AdmissionReview is larger than the {max}-byte limit"),
    )
}

/// 429 with `Retry-After`, as the API server's own max-in-flight filter answers: the replica is
/// full now, not broken.
fn too_many(message: &str) -> Response {
    let mut response = plain(StatusCode::TOO_MANY_REQUESTS, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

fn json(reply: &ReviewResponse) -> Response {
    // An allow is ~100 bytes and a denial a few hundred: one allocation, no regrowth.
    let mut body = Vec::with_capacity(512);
    match serde_json::to_writer(&mut body, reply) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("could not encode the response: {error}"),
        ),
    }
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}
