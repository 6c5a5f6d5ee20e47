//! The webhook endpoints: one POST route per registered webhook path. Reading the body, deciding
//! and encoding the response all run under one deadline shorter than the webhook's
//! `timeoutSeconds`, so a slow client costs us a 408 rather than the API server a timeout.

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
use crate::view::ClusterView;

/// Largest AdmissionReview accepted: UPDATE reviews carry two copies of the object, and axum's
/// 2 MiB default is smaller than one large object.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Bodies up to this size get the same early answer (404, 405, 413) over HTTP/1.1 and HTTP/2: what
/// we do not need is read and thrown away before answering. Over HTTP/2 an answer sent while the
/// client is still uploading ends in a stream reset, which curl and others report as a framing
/// error instead of our status; over HTTP/1.1 an unread body costs the keep-alive connection.
/// Beyond this the client is cut off after the answer, so nobody can make us read forever; the
/// request deadline bounds the time as well.
pub const DRAIN_BYTES: usize = 2 * MAX_BODY_BYTES;

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
            post(move |request: axum::extract::Request| {
                handle(endpoint.clone(), request.into_body())
            }),
        );
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn not_found(State(state): State<WebhookState>, request: axum::extract::Request) -> Response {
    drain_within(request.into_body(), DRAIN_BYTES, state.request_timeout).await;
    plain(StatusCode::NOT_FOUND, "no webhook is served at this path")
}

async fn method_not_allowed(
    State(state): State<WebhookState>,
    request: axum::extract::Request,
) -> Response {
    drain_within(request.into_body(), DRAIN_BYTES, state.request_timeout).await;
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

async fn handle(endpoint: Arc<Endpoint>, body: Body) -> Response {
    let Endpoint {
        webhook,
        series,
        state,
    } = &*endpoint;
    let started = Instant::now();
    let record = |operation: &str, verdict: &str| {
        series.record(operation, verdict, started.elapsed().as_secs_f64())
    };
    let review = review(webhook, state, body, &record);
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
    body: Body,
    record: &impl Fn(&str, &str),
) -> Response {
    let mut body = body;
    let limited = http_body_util::Limited::new(&mut body, MAX_BODY_BYTES);
    let bytes = match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            record("unknown", "error");
            return if is_length_limit(error.as_ref()) {
                // Let the client finish sending, so it can read the answer.
                drain(&mut body, DRAIN_BYTES - MAX_BODY_BYTES).await;
                plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("AdmissionReview is larger than the {MAX_BODY_BYTES}-byte limit"),
                )
            } else {
                plain(
                    StatusCode::BAD_REQUEST,
                    &format!("could not read the request body: {error}"),
                )
            };
        }
    };
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

fn is_length_limit(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
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
