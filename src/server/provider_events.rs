//! The provider events listener: where Resend delivers contact and email events (Milo's paths),
//! on a port of its own that an ingress exposes, apart from the admission port.
//!
//! Each delivery is checked before anything acts on it: a bounded body (413), a Standard Webhooks
//! signature over the raw bytes (401), a parseable event (400). Deliveries read at once are
//! capped too (429 with `Retry-After` beyond), so what unauthenticated bodies hold is bounded by
//! the cap times the body limit, not by how many streams clients open. Delivery is at least once, so
//! deliveries are deduplicated by `svix-id`, and an id is remembered only once the sink has
//! succeeded: a delivery the sink failed on (or took too long with) gets 503 and Resend's retry
//! reaches the sink again. Unknown types, and events the sink has no object for, get 200 so that
//! Resend stops retrying them. This layer knows no controllers: it hands events to a
//! [`ProviderEventSink`] they implement.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::providers::resend::events::{ContactEvent, EmailEvent, ResendEvent, parse_event};
use crate::providers::svix::{self, SigningKey};
use crate::server::throttle::Throttle;

/// Where Resend delivers contact events (Milo's path).
pub const CONTACT_EVENTS_PATH: &str =
    "/apis/emailnotification.k8s.io/v1/resend/contactgroupmemberships";
/// Where Resend delivers email events (Milo's path).
pub const EMAIL_EVENTS_PATH: &str = "/apis/emailnotification.k8s.io/v1/resend/emails";

/// The `provider` label of Resend's events.
const RESEND: &str = "resend";

/// What the sink did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// It changed (or confirmed) cluster state.
    Applied,
    /// Nothing to do: an object the sink does not know, or an event it does not act on.
    Ignored,
}

/// Why the sink could not handle an event now; the delivery is answered 503 and retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Receives verified, first-seen events. Implemented by the controllers, so that this transport
/// layer does not depend on them.
pub trait ProviderEventSink: Send + Sync + 'static {
    /// A verified, first-seen contact event.
    fn contact_event(
        &self,
        event: ContactEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>>;

    /// A verified, first-seen email event. By default ignored: until Email status is driven by
    /// events, they are only verified, deduplicated and counted.
    fn email_event(
        &self,
        event: EmailEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        drop(event);
        Box::pin(async { Ok(EventOutcome::Ignored) })
    }
}

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ProviderEventsConfig {
    /// The secret contact events are signed with; `None`: the email key is used.
    pub contact_key: Option<SigningKey>,
    /// The secret email events are signed with.
    pub email_key: Option<SigningKey>,
    /// Largest body read; larger ones get 413 (Resend's events are a few KiB).
    pub max_body: usize,
    /// Bound on reading the body, and separately on the sink's handling of one event.
    pub handler_timeout: Duration,
    /// How many delivered ids are remembered for deduplication (oldest forgotten first).
    pub remembered_ids: usize,
    /// Deliveries read or handled at once; more get 429 with `Retry-After` (Resend retries).
    /// With `max_body`, what unauthenticated bodies may hold: 64 × 256 KiB = 16 MiB.
    pub max_in_flight: usize,
}

impl Default for ProviderEventsConfig {
    fn default() -> Self {
        Self {
            contact_key: None,
            email_key: None,
            max_body: 256 * 1024,
            handler_timeout: Duration::from_secs(10),
            remembered_ids: 100_000,
            max_in_flight: 64,
        }
    }
}

/// Labels of the event counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `resend`.
    pub provider: String,
    /// The event type, or `unknown` when the delivery was refused before it was read.
    pub r#type: String,
    /// `applied`, `ignored`, `duplicate`, `unauthorized`, `malformed`, `failed` or `busy`
    /// (refused at the in-flight cap).
    pub result: String,
}

/// The listener's metrics. Cloning shares the series.
#[derive(Clone, Debug, Default)]
pub struct ProviderEventMetrics {
    /// Deliveries by provider, type and result (`milo_webhook_provider_events_total`).
    pub events: Family<EventLabels, Counter>,
}

impl ProviderEventMetrics {
    /// Registers the series in `registry` (for example through
    /// [`Metrics::register`](crate::metrics::Metrics::register)).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "provider_events",
            "Provider event deliveries, by provider, type and result",
            metrics.events.clone(),
        );
        metrics
    }

    /// Counts one delivery.
    pub fn count(&self, provider: &str, type_: &str, result: &str) {
        self.events
            .get_or_create(&EventLabels {
                provider: provider.into(),
                r#type: type_.into(),
                result: result.into(),
            })
            .inc();
    }
}

/// The last `capacity` ids handed to the sink successfully, plus those being handled now.
struct SeenIds {
    capacity: usize,
    done: HashSet<String>,
    order: VecDeque<String>,
    in_flight: HashSet<String>,
}

/// Whether an id may be handled.
enum Claim {
    New,
    Done,
    InFlight,
}

impl SeenIds {
    fn claim(&mut self, id: &str) -> Claim {
        if self.done.contains(id) {
            Claim::Done
        } else if !self.in_flight.insert(id.to_owned()) {
            Claim::InFlight
        } else {
            Claim::New
        }
    }

    fn finish(&mut self, id: &str, succeeded: bool) {
        self.in_flight.remove(id);
        if !succeeded || self.capacity == 0 {
            return;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.done.remove(&oldest);
        }
        if self.done.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
        }
    }
}

struct Listener {
    contact_key: Option<SigningKey>,
    email_key: Option<SigningKey>,
    max_body: usize,
    handler_timeout: Duration,
    sink: Arc<dyn ProviderEventSink>,
    metrics: ProviderEventMetrics,
    seen: Mutex<SeenIds>,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Throttles the log lines of deliveries refused for their signature...
    refused: Throttle,
    /// ...and of those refused for want of a key.
    unconfigured: Throttle,
}

/// Which path a delivery came in on.
#[derive(Clone, Copy)]
enum Path {
    Contacts,
    Emails,
}

/// The listener's routes, answering `POST` on [`CONTACT_EVENTS_PATH`] and [`EMAIL_EVENTS_PATH`].
pub fn router(
    config: ProviderEventsConfig,
    sink: Arc<dyn ProviderEventSink>,
    metrics: ProviderEventMetrics,
) -> Router {
    let listener = Arc::new(Listener {
        contact_key: config.contact_key.or_else(|| config.email_key.clone()),
        email_key: config.email_key,
        max_body: config.max_body,
        handler_timeout: config.handler_timeout,
        sink,
        metrics,
        seen: Mutex::new(SeenIds {
            capacity: config.remembered_ids,
            done: HashSet::new(),
            order: VecDeque::new(),
            in_flight: HashSet::new(),
        }),
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1))),
        refused: Throttle::new(Duration::from_secs(60)),
        unconfigured: Throttle::new(Duration::from_secs(60)),
    });
    Router::new()
        .route(
            CONTACT_EVENTS_PATH,
            post(|State(l): State<Arc<Listener>>, r: Request| handle(l, Path::Contacts, r)),
        )
        .route(
            EMAIL_EVENTS_PATH,
            post(|State(l): State<Arc<Listener>>, r: Request| handle(l, Path::Emails, r)),
        )
        .with_state(listener)
}

fn answer(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], message).into_response()
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A type label: the event's type when it looks like one, so a signed but odd body cannot
/// create arbitrary series.
fn type_label(type_: &str) -> &str {
    let plausible = !type_.is_empty()
        && type_.len() <= 64
        && type_
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_');
    if plausible { type_ } else { "invalid" }
}

async fn handle(listener: Arc<Listener>, path: Path, request: Request) -> Response {
    let count = |type_: &str, result: &str| listener.metrics.count(RESEND, type_, result);
    let Ok(_in_flight) = listener.in_flight.clone().try_acquire_owned() else {
        count("unknown", "busy");
        let mut response = answer(StatusCode::TOO_MANY_REQUESTS, "too many deliveries\n");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > listener.max_body as u64) {
        count("unknown", "malformed");
        return answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
    }
    let body = match read(body, listener.max_body, listener.handler_timeout).await {
        Ok(body) => body,
        Err(status) => {
            count("unknown", "malformed");
            return answer(status, "cannot read the body\n");
        }
    };
    let key = match path {
        Path::Contacts => listener.contact_key.as_ref(),
        Path::Emails => listener.email_key.as_ref(),
    };
    let Some(key) = key else {
        // 503, not 404: Resend retries for about a day, so events sent before the secret is
        // configured are not lost, and the endpoint does not look like a wrong URL.
        if let Some(left_out) = listener.unconfigured.ready() {
            tracing::warn!(
                path = parts.uri.path(),
                refused_since_last_line = left_out,
                "provider event refused: no signing key is configured for this path"
            );
        }
        count("unknown", "failed");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "no signing key configured\n",
        );
    };
    // Trimmed as the signature check trims it: over HTTP/2 a leading space survives, and the
    // same delivery must not count as two ids.
    let id = header_str(&parts.headers, "svix-id").trim();
    if let Err(error) = svix::verify(
        key,
        id,
        header_str(&parts.headers, "svix-timestamp"),
        header_str(&parts.headers, "svix-signature"),
        &body,
        jiff::Timestamp::now(),
    ) {
        // Anyone can send these: one line each at debug, and a throttled summary.
        tracing::debug!(%error, id, path = parts.uri.path(), "provider event refused");
        if let Some(left_out) = listener.refused.ready() {
            tracing::info!(
                %error,
                path = parts.uri.path(),
                refused_since_last_line = left_out,
                "provider events refused: bad signature (one line a minute at most)"
            );
        }
        count("unknown", "unauthorized");
        return answer(StatusCode::UNAUTHORIZED, "invalid signature\n");
    }
    let event = match parse_event(&body) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(%error, id, "signed provider event is malformed");
            count("unknown", "malformed");
            return answer(StatusCode::BAD_REQUEST, "malformed event\n");
        }
    };
    let type_ = type_label(event.type_()).to_owned();
    let claim = listener
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .claim(id);
    match claim {
        Claim::New => {}
        Claim::Done => {
            count(&type_, "duplicate");
            return answer(StatusCode::OK, "duplicate\n");
        }
        Claim::InFlight => {
            // The first delivery's outcome is not known yet: let the sender come back.
            count(&type_, "duplicate");
            return answer(StatusCode::CONFLICT, "being handled\n");
        }
    }
    let handled = match event {
        ResendEvent::Contact(mut event) => {
            event.delivery = id.to_owned();
            Some(listener.sink.contact_event(event))
        }
        ResendEvent::Email(mut event) => {
            event.delivery = id.to_owned();
            Some(listener.sink.email_event(event))
        }
        ResendEvent::Other { .. } => None,
    };
    let outcome = match handled {
        None => Ok(EventOutcome::Ignored),
        Some(future) => match tokio::time::timeout(listener.handler_timeout, future).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SinkError("timed out".into())),
        },
    };
    listener
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .finish(id, outcome.is_ok());
    match outcome {
        Ok(EventOutcome::Applied) => {
            count(&type_, "applied");
            answer(StatusCode::OK, "applied\n")
        }
        Ok(EventOutcome::Ignored) => {
            count(&type_, "ignored");
            answer(StatusCode::OK, "ignored\n")
        }
        Err(error) => {
            tracing::warn!(%error, id, r#type = type_, "provider event not handled; the sender will retry");
            count(&type_, "failed");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "not handled; retry later\n",
            )
        }
    }
}

/// Reads at most `limit` bytes within `timeout`: 413 beyond the limit, 408 when too slow, 400
/// when the connection fails mid-body.
async fn read(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, StatusCode> {
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST),
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(capacity: usize) -> SeenIds {
        SeenIds {
            capacity,
            done: HashSet::new(),
            order: VecDeque::new(),
            in_flight: HashSet::new(),
        }
    }

    #[test]
    fn ids_are_remembered_only_after_success_and_the_oldest_are_forgotten() {
        let mut ids = seen(2);
        assert!(matches!(ids.claim("a"), Claim::New));
        assert!(matches!(ids.claim("a"), Claim::InFlight));
        ids.finish("a", false);
        // A failure is forgotten: the sender's retry is handled.
        assert!(matches!(ids.claim("a"), Claim::New));
        ids.finish("a", true);
        assert!(matches!(ids.claim("a"), Claim::Done));
        for id in ["b", "c"] {
            assert!(matches!(ids.claim(id), Claim::New));
            ids.finish(id, true);
        }
        assert_eq!((ids.done.len(), ids.order.len()), (2, 2));
        assert!(matches!(ids.claim("a"), Claim::New), "evicted");
        assert!(matches!(ids.claim("c"), Claim::Done));
    }

    #[test]
    fn no_capacity_remembers_nothing() {
        let mut ids = seen(0);
        assert!(matches!(ids.claim("a"), Claim::New));
        ids.finish("a", true);
        assert!(matches!(ids.claim("a"), Claim::New));
        assert!(ids.done.is_empty());
    }

    #[test]
    fn type_labels_are_bounded() {
        assert_eq!(type_label("contact.updated"), "contact.updated");
        assert_eq!(
            type_label("email.delivery_delayed"),
            "email.delivery_delayed"
        );
        assert_eq!(type_label("Contact Updated"), "invalid");
        assert_eq!(type_label(""), "invalid");
        assert_eq!(type_label(&"a".repeat(65)), "invalid");
    }
}
