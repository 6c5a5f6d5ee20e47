//! The provider events listener: where Resend delivers contact and email events and Loops its
//! contact and mailing list events (Milo's paths), on a port of its own that an ingress exposes,
//! apart from the admission port.
//!
//! Each delivery is checked before anything acts on it: a bounded body (413), a Standard Webhooks
//! signature over the raw bytes under the provider's own header names and key (401; see
//! `accept`), a parseable event (400). Deliveries read at once are capped too (429 with
//! `Retry-After` beyond), so what unauthenticated bodies hold is bounded by the cap times the body
//! limit, not by how many streams clients open. Delivery is at least once, so deliveries are
//! deduplicated by their id (`svix-id`, `webhook-id`), per provider (`seen`), and an id is
//! remembered only once the sink has succeeded: a delivery the sink failed on (or took too long
//! with) gets 503 and the provider's retry reaches the sink again. Unknown types, and events the
//! sink has no object for, get 200 so that the provider stops retrying them. This layer knows no
//! controllers: it hands events to a [`ProviderEventSink`] they implement.

mod accept;
mod seen;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::providers::loops::events::{Delivery, LoopsEvent, LoopsSigningKey};
use crate::providers::resend::events::{ContactEvent, EmailEvent, ResendEvent, SuppressionEvent};
use crate::providers::svix::SigningKey;
use crate::server::throttle::Throttle;
use accept::{Accepted, Incoming, Keys, Path, Refused};
use seen::{Claim, SeenIds};

/// Where Resend delivers contact events (Milo's path).
pub const CONTACT_EVENTS_PATH: &str =
    "/apis/emailnotification.k8s.io/v1/resend/contactgroupmemberships";
/// Where Resend delivers email events (Milo's path).
pub const EMAIL_EVENTS_PATH: &str = "/apis/emailnotification.k8s.io/v1/resend/emails";
/// Where Loops delivers contact and mailing list events (Milo's path).
pub const LOOPS_EVENTS_PATH: &str =
    "/apis/emailnotification.k8s.io/v1/loops/contactgroupmemberships";

/// What the sink did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// It changed (or confirmed) cluster state.
    Applied,
    /// Nothing to do: an event it does not act on, or one that changes nothing now.
    Ignored,
    /// The event names something the cluster does not have: acknowledged all the same (other
    /// systems may share the provider account), and counted apart.
    Unknown(Unmatched),
}

/// What an [`EventOutcome::Unknown`] event named that the cluster does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// No Contact is the person (counted as `unknown_contact`).
    Contact,
    /// No ContactGroup is bound to the list (counted as `unknown_list`).
    List,
}

impl EventOutcome {
    /// The `result` label of the event counter.
    fn label(self) -> &'static str {
        match self {
            EventOutcome::Applied => "applied",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Unknown(Unmatched::Contact) => "unknown_contact",
            EventOutcome::Unknown(Unmatched::List) => "unknown_list",
        }
    }
}

/// Why the sink could not handle an event now; the delivery is answered 503 and retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Receives verified, first-seen events. Implemented by the controllers, so that this transport
/// layer does not depend on them. Every method defaults to ignoring the event, so a sink
/// implements only its provider's; [`PerProvider`] puts one sink per provider together.
pub trait ProviderEventSink: Send + Sync + 'static {
    /// A verified, first-seen Resend contact event.
    fn contact_event(
        &self,
        event: ContactEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        drop(event);
        Box::pin(async { Ok(EventOutcome::Ignored) })
    }

    /// A verified, first-seen email event. By default ignored: until Email status is driven by
    /// events, they are only verified, deduplicated and counted.
    fn email_event(
        &self,
        event: EmailEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        drop(event);
        Box::pin(async { Ok(EventOutcome::Ignored) })
    }

    /// A verified, first-seen Resend suppression event. By default ignored.
    fn suppression_event(
        &self,
        event: SuppressionEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        drop(event);
        Box::pin(async { Ok(EventOutcome::Ignored) })
    }

    /// A verified, first-seen Loops event of a type Loops' receiver acts on (never
    /// [`LoopsEvent::Unknown`], which the listener acknowledges itself). `delivery.id` is the
    /// `webhook-id`, the event id to record.
    fn loops_event(
        &self,
        delivery: Delivery,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        drop(delivery);
        Box::pin(async { Ok(EventOutcome::Ignored) })
    }
}

/// One sink per provider: Resend's contact and email events go to `resend`, Loops' events to
/// `loops`.
pub struct PerProvider {
    /// Takes Resend's events.
    pub resend: Arc<dyn ProviderEventSink>,
    /// Takes Loops' events.
    pub loops: Arc<dyn ProviderEventSink>,
}

impl ProviderEventSink for PerProvider {
    fn contact_event(
        &self,
        event: ContactEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        self.resend.contact_event(event)
    }

    fn email_event(
        &self,
        event: EmailEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        self.resend.email_event(event)
    }

    fn suppression_event(
        &self,
        event: SuppressionEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        self.resend.suppression_event(event)
    }

    fn loops_event(
        &self,
        delivery: Delivery,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        self.loops.loops_event(delivery)
    }
}

/// Listener settings.
#[derive(Clone, Debug)]
pub struct ProviderEventsConfig {
    /// The secret contact events are signed with; `None`: the email key is used.
    pub contact_key: Option<SigningKey>,
    /// The secret email events are signed with.
    pub email_key: Option<SigningKey>,
    /// The secret Loops events are signed with; `None`: Loops deliveries get 503.
    pub loops_key: Option<LoopsSigningKey>,
    /// Largest body read; larger ones get 413 (the providers' events are a few KiB).
    pub max_body: usize,
    /// Bound on reading the body, and separately on the sink's handling of one event.
    pub handler_timeout: Duration,
    /// How many delivered ids are remembered for deduplication, per provider (oldest forgotten
    /// first).
    pub remembered_ids: usize,
    /// Deliveries read or handled at once, every path together; more get 429 with `Retry-After`
    /// (both providers retry).
    /// With `max_body`, what unauthenticated bodies may hold: 64 × 256 KiB = 16 MiB.
    pub max_in_flight: usize,
}

impl Default for ProviderEventsConfig {
    fn default() -> Self {
        Self {
            contact_key: None,
            email_key: None,
            loops_key: None,
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
    /// `resend` or `loops`.
    pub provider: String,
    /// The event type, or `unknown` when the delivery was refused before it was read.
    pub r#type: String,
    /// `applied`, `ignored`, `unknown_contact` or `unknown_list` (acknowledged, nothing in the
    /// cluster matched), `duplicate`, `unauthorized`, `malformed`, `failed` or `busy` (refused at
    /// the in-flight cap).
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

struct Listener {
    keys: Keys,
    max_body: usize,
    handler_timeout: Duration,
    sink: Arc<dyn ProviderEventSink>,
    metrics: ProviderEventMetrics,
    seen: SeenIds,
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Throttles the log lines of deliveries refused for their signature...
    refused: Throttle,
    /// ...and of those refused for want of a key.
    unconfigured: Throttle,
}

/// The listener's routes, answering `POST` on [`CONTACT_EVENTS_PATH`], [`EMAIL_EVENTS_PATH`] and
/// [`LOOPS_EVENTS_PATH`].
pub fn router(
    config: ProviderEventsConfig,
    sink: Arc<dyn ProviderEventSink>,
    metrics: ProviderEventMetrics,
) -> Router {
    let listener = Arc::new(Listener {
        keys: Keys {
            contacts: config.contact_key.or_else(|| config.email_key.clone()),
            emails: config.email_key,
            loops: config.loops_key,
        },
        max_body: config.max_body,
        handler_timeout: config.handler_timeout,
        sink,
        metrics,
        seen: SeenIds::new(config.remembered_ids),
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
        .route(
            LOOPS_EVENTS_PATH,
            post(|State(l): State<Arc<Listener>>, r: Request| handle(l, Path::Loops, r)),
        )
        .with_state(listener)
}

fn answer(status: StatusCode, message: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], message).into_response()
}

/// A type label: the event's type when it looks like one (Resend's `contact.updated`, Loops'
/// `contact.mailingList.unsubscribed`), so a signed but odd body cannot create arbitrary series.
fn type_label(type_: &str) -> &str {
    let plausible = !type_.is_empty()
        && type_.len() <= 64
        && type_
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'.' || b == b'_');
    if plausible { type_ } else { "invalid" }
}

async fn handle(listener: Arc<Listener>, path: Path, request: Request) -> Response {
    let provider = path.provider();
    let count = |type_: &str, result: &str| listener.metrics.count(provider.label(), type_, result);
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
    let Accepted { id, event } = match accept::accept(
        &listener.keys,
        path,
        &parts.headers,
        &body,
        jiff::Timestamp::now(),
    ) {
        Ok(accepted) => accepted,
        Err(refused) => return refuse(&listener, parts.uri.path(), provider, refused),
    };
    let type_ = type_label(event.type_()).to_owned();
    match listener.seen.claim(provider, &id) {
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
        Incoming::Resend(ResendEvent::Contact(mut event)) => {
            event.delivery = id.clone();
            Some(listener.sink.contact_event(event))
        }
        Incoming::Resend(ResendEvent::Email(mut event)) => {
            event.delivery = id.clone();
            Some(listener.sink.email_event(event))
        }
        Incoming::Resend(ResendEvent::Suppression(mut event)) => {
            event.delivery = id.clone();
            Some(listener.sink.suppression_event(event))
        }
        Incoming::Resend(ResendEvent::Other { .. })
        | Incoming::Loops(LoopsEvent::Unknown { .. }) => None,
        Incoming::Loops(event) => Some(listener.sink.loops_event(Delivery {
            id: id.clone(),
            event,
        })),
    };
    let outcome = match handled {
        None => Ok(EventOutcome::Ignored),
        Some(future) => match tokio::time::timeout(listener.handler_timeout, future).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SinkError("timed out".into())),
        },
    };
    listener.seen.finish(provider, &id, outcome.is_ok());
    match outcome {
        Ok(outcome) => {
            count(&type_, outcome.label());
            let message = match outcome {
                EventOutcome::Applied => "applied\n",
                EventOutcome::Ignored => "ignored\n",
                EventOutcome::Unknown(_) => "unknown; ignored\n",
            };
            answer(StatusCode::OK, message)
        }
        Err(error) => {
            tracing::warn!(%error, id, provider = provider.label(), r#type = type_, "provider event not handled; the sender will retry");
            count(&type_, "failed");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "not handled; retry later\n",
            )
        }
    }
}

/// Answers a delivery refused before any sink saw it, logging and counting it.
fn refuse(listener: &Listener, path: &str, provider: seen::Provider, refused: Refused) -> Response {
    let count = |result: &str| listener.metrics.count(provider.label(), "unknown", result);
    match refused {
        Refused::NoKey => {
            // 503, not 404: the providers retry for hours, so events sent before the secret is
            // configured are not lost, and the endpoint does not look like a wrong URL.
            if let Some(left_out) = listener.unconfigured.ready() {
                tracing::warn!(
                    path,
                    refused_since_last_line = left_out,
                    "provider event refused: no signing key is configured for this path"
                );
            }
            count("failed");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "no signing key configured\n",
            )
        }
        Refused::Signature(error) => {
            // Anyone can send these: one line each at debug, and a throttled summary.
            tracing::debug!(%error, path, "provider event refused");
            if let Some(left_out) = listener.refused.ready() {
                tracing::info!(
                    %error,
                    path,
                    refused_since_last_line = left_out,
                    "provider events refused: bad signature (one line a minute at most)"
                );
            }
            count("unauthorized");
            answer(StatusCode::UNAUTHORIZED, "invalid signature\n")
        }
        Refused::Malformed(error) => {
            tracing::warn!(%error, path, "signed provider event is malformed");
            count("malformed");
            answer(StatusCode::BAD_REQUEST, "malformed event\n")
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

    #[test]
    fn type_labels_are_bounded() {
        assert_eq!(type_label("contact.updated"), "contact.updated");
        assert_eq!(
            type_label("email.delivery_delayed"),
            "email.delivery_delayed"
        );
        assert_eq!(
            type_label("contact.mailingList.unsubscribed"),
            "contact.mailingList.unsubscribed"
        );
        assert_eq!(type_label("Contact Updated"), "invalid");
        assert_eq!(type_label("contact.updated\n"), "invalid");
        assert_eq!(type_label(""), "invalid");
        assert_eq!(type_label(&"a".repeat(65)), "invalid");
    }
}
