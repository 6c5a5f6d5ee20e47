//! The provider events listener over a real socket: signatures, deduplication, retries after a
//! sink failure, limits, and the metrics they leave.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use milo_webhook::metrics::Metrics;
use milo_webhook::providers::resend::events::{ContactEvent, ContactEventKind};
use milo_webhook::providers::svix::{SigningKey, sign};
use milo_webhook::server::provider_events::{
    CONTACT_EVENTS_PATH, EMAIL_EVENTS_PATH, EventOutcome, ProviderEventMetrics, ProviderEventSink,
    ProviderEventsConfig, SinkError, router,
};
use milo_webhook::server::{ServeOptions, Server, Shutdown};
use milo_webhook::view::{ClusterView, Store};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

const EMAIL_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CONTACT_SECRET: &str = "whsec_c2VjcmV0LWNvbnRhY3QtZXZlbnRzLTI0";

/// Records contact events; fails the first `failures` calls, sleeps `delay` in each.
#[derive(Default)]
struct RecordingSink {
    contacts: Mutex<Vec<ContactEvent>>,
    failures: AtomicUsize,
    delay: Option<Duration>,
}

impl RecordingSink {
    fn calls(&self) -> usize {
        self.contacts.lock().unwrap().len()
    }
}

impl ProviderEventSink for RecordingSink {
    fn contact_event(
        &self,
        event: ContactEvent,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        self.contacts.lock().unwrap().push(event);
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let delay = self.delay;
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if fail {
                Err(SinkError("apiserver unavailable".into()))
            } else {
                Ok(EventOutcome::Applied)
            }
        })
    }
}

struct Listener {
    addr: SocketAddr,
    sink: Arc<RecordingSink>,
    server: Arc<Server>,
}

impl Listener {
    async fn start(config: ProviderEventsConfig, sink: RecordingSink) -> Self {
        let sink = Arc::new(sink);
        let server = Arc::new(Server {
            view: Arc::new(ClusterView::offline(Store::default())),
            metrics: Arc::new(Metrics::default()),
            options: ServeOptions::default(),
            shutdown: Shutdown::default(),
        });
        let metrics = server.metrics.register(ProviderEventMetrics::register);
        let routes = router(config, sink.clone(), metrics);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let s = server.clone();
        tokio::spawn(async move { s.serve_provider_events(listener, routes, None).await });
        Self { addr, sink, server }
    }

    /// Both keys set.
    async fn with_keys(sink: RecordingSink) -> Self {
        Self::start(
            ProviderEventsConfig {
                contact_key: Some(key(CONTACT_SECRET)),
                email_key: Some(key(EMAIL_SECRET)),
                ..ProviderEventsConfig::default()
            },
            sink,
        )
        .await
    }

    async fn post(&self, path: &str, headers: &[(&str, String)], body: Vec<u8>) -> u16 {
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut request = Request::post(path).header("host", "events.example.com");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(Full::new(Bytes::from(body))).unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        response.into_body().collect().await.unwrap();
        status
    }

    /// Posts `body` signed with `secret` as message `id`, sent `age` seconds ago.
    async fn deliver(&self, path: &str, secret: &str, id: &str, age: i64, body: &Value) -> u16 {
        let body = body.to_string().into_bytes();
        let timestamp = (jiff::Timestamp::now().as_second() - age).to_string();
        let signature = sign(&key(secret), id, &timestamp, &body);
        self.post(path, &signed_headers(id, timestamp, signature), body)
            .await
    }

    fn metrics(&self) -> String {
        self.server.metrics.encode(&self.server.view)
    }

    fn counted(&self, type_: &str, result: &str) -> u64 {
        let prefix = format!(
            "milo_webhook_provider_events_total{{provider=\"resend\",type=\"{type_}\",result=\"{result}\"}} "
        );
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |n| n.parse().unwrap())
    }
}

fn key(secret: &str) -> SigningKey {
    SigningKey::parse(secret).unwrap()
}

fn signed_headers(id: &str, timestamp: String, signature: String) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".into()),
        ("svix-id", id.into()),
        ("svix-timestamp", timestamp),
        ("svix-signature", signature),
    ]
}

fn contact_event(type_: &str, email: &str) -> Value {
    json!({
        "type": type_,
        "created_at": "2025-10-10T15:30:00.000Z",
        "data": {
            "id": "c-1", "email": email, "first_name": "Ada", "last_name": "Lovelace",
            "unsubscribed": true, "segment_ids": ["s-1"], "audience_id": "a-1"
        }
    })
}

#[tokio::test]
async fn a_signed_contact_event_reaches_the_sink_once_with_its_data() {
    let listener = Listener::with_keys(RecordingSink::default()).await;
    let event = contact_event("contact.updated", "ada@example.com");
    let status = listener
        .deliver(CONTACT_EVENTS_PATH, CONTACT_SECRET, "msg_1", 0, &event)
        .await;
    assert_eq!(status, 200);
    let seen = listener.sink.contacts.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].kind, ContactEventKind::Updated);
    assert_eq!(seen[0].data.email, "ada@example.com");
    assert_eq!(seen[0].data.unsubscribed, Some(true));
    assert_eq!(seen[0].data.segment_ids, vec!["s-1".to_string()]);
    assert_eq!(listener.counted("contact.updated", "applied"), 1);
}

#[tokio::test]
async fn forged_or_missing_signatures_are_401_and_never_reach_the_sink() {
    let listener = Listener::with_keys(RecordingSink::default()).await;
    let event = contact_event("contact.updated", "ada@example.com");
    // Signed with the wrong secret (the email one, while the contact path has its own).
    let status = listener
        .deliver(CONTACT_EVENTS_PATH, EMAIL_SECRET, "msg_1", 0, &event)
        .await;
    assert_eq!(status, 401);
    // A valid signature over a different body.
    let now = jiff::Timestamp::now().as_second().to_string();
    let signature = sign(&key(CONTACT_SECRET), "msg_2", &now, b"{}");
    let headers = signed_headers("msg_2", now.clone(), signature.clone());
    let body = event.to_string().into_bytes();
    assert_eq!(
        listener
            .post(CONTACT_EVENTS_PATH, &headers, body.clone())
            .await,
        401
    );
    // No signature headers at all.
    assert_eq!(
        listener.post(CONTACT_EVENTS_PATH, &[], body.clone()).await,
        401
    );
    // A signature header that is not `v1,<base64>`.
    let headers = signed_headers("msg_3", now, "v1,???".into());
    assert_eq!(
        listener.post(CONTACT_EVENTS_PATH, &headers, body).await,
        401
    );
    assert_eq!(listener.sink.calls(), 0);
    assert_eq!(listener.counted("unknown", "unauthorized"), 4);
}

#[tokio::test]
async fn stale_and_future_timestamps_are_401() {
    let listener = Listener::with_keys(RecordingSink::default()).await;
    let event = contact_event("contact.updated", "ada@example.com");
    for (id, age) in [("old", 6 * 60), ("future", -6 * 60)] {
        let status = listener
            .deliver(CONTACT_EVENTS_PATH, CONTACT_SECRET, id, age, &event)
            .await;
        assert_eq!(status, 401, "{id}");
    }
    assert_eq!(listener.sink.calls(), 0);
    // Within the tolerance is fine.
    let status = listener
        .deliver(
            CONTACT_EVENTS_PATH,
            CONTACT_SECRET,
            "recent",
            4 * 60,
            &event,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_repeated_delivery_is_200_without_calling_the_sink_again() {
    let listener = Listener::with_keys(RecordingSink::default()).await;
    let event = contact_event("contact.created", "ada@example.com");
    for _ in 0..3 {
        let status = listener
            .deliver(CONTACT_EVENTS_PATH, CONTACT_SECRET, "msg_dup", 0, &event)
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(listener.sink.calls(), 1);
    assert_eq!(listener.counted("contact.created", "applied"), 1);
    assert_eq!(listener.counted("contact.created", "duplicate"), 2);
}

#[tokio::test]
async fn a_sink_failure_is_503_and_the_retry_with_the_same_id_reaches_the_sink() {
    let sink = RecordingSink {
        failures: AtomicUsize::new(1),
        ..RecordingSink::default()
    };
    let listener = Listener::with_keys(sink).await;
    let event = contact_event("contact.updated", "ada@example.com");
    let deliver = || listener.deliver(CONTACT_EVENTS_PATH, CONTACT_SECRET, "msg_r", 0, &event);
    assert_eq!(deliver().await, 503);
    assert_eq!(deliver().await, 200);
    assert_eq!(deliver().await, 200);
    assert_eq!(listener.sink.calls(), 2);
    assert_eq!(listener.counted("contact.updated", "failed"), 1);
    assert_eq!(listener.counted("contact.updated", "applied"), 1);
    assert_eq!(listener.counted("contact.updated", "duplicate"), 1);
}

#[tokio::test]
async fn a_sink_slower_than_the_handler_timeout_is_503() {
    let sink = RecordingSink {
        delay: Some(Duration::from_secs(5)),
        ..RecordingSink::default()
    };
    let listener = Listener::start(
        ProviderEventsConfig {
            email_key: Some(key(EMAIL_SECRET)),
            handler_timeout: Duration::from_millis(200),
            ..ProviderEventsConfig::default()
        },
        sink,
    )
    .await;
    let event = contact_event("contact.updated", "ada@example.com");
    let started = std::time::Instant::now();
    let status = listener
        .deliver(CONTACT_EVENTS_PATH, EMAIL_SECRET, "msg_slow", 0, &event)
        .await;
    assert_eq!(status, 503);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(listener.counted("contact.updated", "failed"), 1);
}

#[tokio::test]
async fn malformed_events_with_a_valid_signature_are_400() {
    let listener = Listener::with_keys(RecordingSink::default()).await;
    let now = jiff::Timestamp::now().as_second().to_string();
    let bodies: [&[u8]; 3] = [
        b"{not json",
        br#"{"type":"contact.created","created_at":"2025-10-10T15:30:00Z","data":{"id":"c"}}"#,
        br#"{"type":"contact.created","data":{"id":"c","email":"a@example.com"}}"#,
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        let id = format!("msg_bad_{i}");
        let signature = sign(&key(CONTACT_SECRET), &id, &now, body);
        let headers = signed_headers(&id, now.clone(), signature);
        let status = listener
            .post(CONTACT_EVENTS_PATH, &headers, body.to_vec())
            .await;
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
    }
    assert_eq!(listener.sink.calls(), 0);
    assert_eq!(listener.counted("unknown", "malformed"), 3);
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let listener = Listener::start(
        ProviderEventsConfig {
            email_key: Some(key(EMAIL_SECRET)),
            max_body: 1024,
            ..ProviderEventsConfig::default()
        },
        RecordingSink::default(),
    )
    .await;
    let mut event = contact_event("contact.updated", "ada@example.com");
    event["data"]["padding"] = json!("x".repeat(2048));
    let status = listener
        .deliver(CONTACT_EVENTS_PATH, EMAIL_SECRET, "msg_big", 0, &event)
        .await;
    assert_eq!(status, 413);
    assert_eq!(listener.sink.calls(), 0);
}

#[tokio::test]
async fn unknown_event_types_are_200_and_counted_as_ignored() {
    let listener = Listener::with_keys(RecordingSink::default()).await;
    let event = json!({"type": "domain.updated", "created_at": "2025-10-10T15:30:00Z", "data": {}});
    let status = listener
        .deliver(EMAIL_EVENTS_PATH, EMAIL_SECRET, "msg_u", 0, &event)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listener.sink.calls(), 0);
    assert_eq!(listener.counted("domain.updated", "ignored"), 1);
}

#[tokio::test]
async fn the_contact_path_falls_back_to_the_email_key() {
    let listener = Listener::start(
        ProviderEventsConfig {
            email_key: Some(key(EMAIL_SECRET)),
            ..ProviderEventsConfig::default()
        },
        RecordingSink::default(),
    )
    .await;
    let event = contact_event("contact.created", "ada@example.com");
    let status = listener
        .deliver(CONTACT_EVENTS_PATH, EMAIL_SECRET, "msg_f", 0, &event)
        .await;
    assert_eq!(status, 200);
    let status = listener
        .deliver(CONTACT_EVENTS_PATH, CONTACT_SECRET, "msg_g", 0, &event)
        .await;
    assert_eq!(status, 401);
    assert_eq!(listener.sink.calls(), 1);
}

#[tokio::test]
async fn a_path_without_a_key_is_503() {
    let listener = Listener::start(
        ProviderEventsConfig {
            contact_key: Some(key(CONTACT_SECRET)),
            ..ProviderEventsConfig::default()
        },
        RecordingSink::default(),
    )
    .await;
    let event = json!({"type": "email.sent", "created_at": "2025-10-10T15:30:00Z", "data": {"email_id": "e"}});
    let status = listener
        .deliver(EMAIL_EVENTS_PATH, EMAIL_SECRET, "msg_k", 0, &event)
        .await;
    assert_eq!(status, 503);
    assert_eq!(listener.counted("unknown", "failed"), 1);
}

#[tokio::test]
async fn email_events_are_verified_deduplicated_and_counted() {
    let listener = Listener::with_keys(RecordingSink::default()).await;
    let delivered = json!({
        "type": "email.delivered", "created_at": "2025-10-10T15:30:00Z",
        "data": {"email_id": "e-1", "to": ["ada@example.com"], "subject": "Hi"}
    });
    for _ in 0..2 {
        let status = listener
            .deliver(EMAIL_EVENTS_PATH, EMAIL_SECRET, "msg_e1", 0, &delivered)
            .await;
        assert_eq!(status, 200);
    }
    let bounced = json!({
        "type": "email.bounced", "created_at": "2025-10-10T15:31:00Z",
        "data": {"email_id": "e-1", "bounce": {"type": "Permanent"}}
    });
    let status = listener
        .deliver(EMAIL_EVENTS_PATH, EMAIL_SECRET, "msg_e2", 0, &bounced)
        .await;
    assert_eq!(status, 200);
    // Email events go to the sink's default handler, which ignores them.
    assert_eq!(listener.sink.calls(), 0);
    assert_eq!(listener.counted("email.delivered", "ignored"), 1);
    assert_eq!(listener.counted("email.delivered", "duplicate"), 1);
    assert_eq!(listener.counted("email.bounced", "ignored"), 1);
    // The contact key does not sign email events.
    let status = listener
        .deliver(EMAIL_EVENTS_PATH, CONTACT_SECRET, "msg_e3", 0, &bounced)
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn metrics_count_every_result_under_the_documented_name() {
    let sink = RecordingSink {
        failures: AtomicUsize::new(1),
        ..RecordingSink::default()
    };
    let listener = Listener::with_keys(sink).await;
    let event = contact_event("contact.deleted", "ada@example.com");
    let path = CONTACT_EVENTS_PATH;
    assert_eq!(
        listener
            .deliver(path, CONTACT_SECRET, "m1", 0, &event)
            .await,
        503
    );
    assert_eq!(
        listener
            .deliver(path, CONTACT_SECRET, "m1", 0, &event)
            .await,
        200
    );
    assert_eq!(
        listener
            .deliver(path, CONTACT_SECRET, "m1", 0, &event)
            .await,
        200
    );
    assert_eq!(
        listener.deliver(path, EMAIL_SECRET, "m2", 0, &event).await,
        401
    );
    let other = json!({"type": "contact.merged", "created_at": "2025-10-10T15:30:00Z"});
    assert_eq!(
        listener
            .deliver(path, CONTACT_SECRET, "m3", 0, &other)
            .await,
        200
    );
    let malformed = json!({"type": "contact.created"});
    assert_eq!(
        listener
            .deliver(path, CONTACT_SECRET, "m4", 0, &malformed)
            .await,
        400
    );
    for (type_, result) in [
        ("contact.deleted", "failed"),
        ("contact.deleted", "applied"),
        ("contact.deleted", "duplicate"),
        ("unknown", "unauthorized"),
        ("contact.merged", "ignored"),
        ("unknown", "malformed"),
    ] {
        assert_eq!(
            listener.counted(type_, result),
            1,
            "{type_} {result}:\n{}",
            listener.metrics()
        );
    }
    assert!(
        listener
            .metrics()
            .contains("# TYPE milo_webhook_provider_events counter")
    );
}

#[tokio::test]
async fn other_methods_and_paths_are_refused() {
    let listener = Listener::with_keys(RecordingSink::default()).await;
    let stream = TcpStream::connect(listener.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for (method, path, expected) in [
        ("GET", CONTACT_EVENTS_PATH, 405),
        (
            "POST",
            "/apis/emailnotification.k8s.io/v1/resend/other",
            404,
        ),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "events.example.com")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{method} {path}");
        response.into_body().collect().await.unwrap();
    }
}

/// Over HTTP/2 a header keeps its leading space (HTTP/1.1 parsers trim it): the id is
/// deduplicated as the signature check reads it, trimmed, so one delivery is handled once.
#[tokio::test]
async fn ids_are_deduplicated_as_signed_whatever_surrounds_them() {
    let listener = Listener::with_keys(RecordingSink::default()).await;
    let event = contact_event("contact.created", "ada@example.com");
    assert_eq!(
        listener
            .deliver(CONTACT_EVENTS_PATH, CONTACT_SECRET, "msg_t", 0, &event)
            .await,
        200
    );
    let body = event.to_string().into_bytes();
    let timestamp = jiff::Timestamp::now().as_second().to_string();
    let signature = sign(&key(CONTACT_SECRET), "msg_t", &timestamp, &body);
    // HTTP/2 with prior knowledge over plain TCP, as an ingress may speak it.
    let stream = TcpStream::connect(listener.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut request = Request::post(format!("http://events.example.com{CONTACT_EVENTS_PATH}"));
    for (name, value) in signed_headers(" msg_t", timestamp, signature) {
        request = request.header(name, value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&text[..], b"duplicate\n");
    assert_eq!(listener.sink.calls(), 1, "handled once");
}

/// The events path keeps its own bounds: 256 KiB and 10 s by default; a body that stalls is
/// answered 408 once the read deadline passes, and the sink never sees it.
#[tokio::test]
async fn a_stalled_body_is_408_within_the_read_deadline() {
    let defaults = ProviderEventsConfig::default();
    assert_eq!(
        (defaults.max_body, defaults.handler_timeout),
        (256 * 1024, Duration::from_secs(10))
    );
    let listener = Listener::start(
        ProviderEventsConfig {
            email_key: Some(key(EMAIL_SECRET)),
            handler_timeout: Duration::from_millis(300),
            ..ProviderEventsConfig::default()
        },
        RecordingSink::default(),
    )
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(listener.addr).await.unwrap();
    let head = format!(
        "POST {CONTACT_EVENTS_PATH} HTTP/1.1\r\nhost: events.example.com\r\ncontent-length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(listener.sink.calls(), 0);
}

/// Deliveries in flight are capped: past the cap a delivery gets 429 with Retry-After at once
/// (Resend retries), so unauthenticated bodies cannot pile up over many streams.
#[tokio::test]
async fn deliveries_past_the_in_flight_cap_are_429_at_once() {
    let sink = RecordingSink {
        delay: Some(Duration::from_millis(500)),
        ..RecordingSink::default()
    };
    let listener = Arc::new(
        Listener::start(
            ProviderEventsConfig {
                contact_key: Some(key(CONTACT_SECRET)),
                max_in_flight: 1,
                ..ProviderEventsConfig::default()
            },
            sink,
        )
        .await,
    );
    let event = contact_event("contact.updated", "ada@example.com");
    let first = {
        let (listener, event) = (listener.clone(), event.clone());
        tokio::spawn(async move {
            listener
                .deliver(CONTACT_EVENTS_PATH, CONTACT_SECRET, "msg_a", 0, &event)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let second = listener
        .deliver(CONTACT_EVENTS_PATH, CONTACT_SECRET, "msg_b", 0, &event)
        .await;
    assert_eq!(second, 429);
    assert!(started.elapsed() < Duration::from_millis(300), "not queued");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(listener.counted("unknown", "busy"), 1);
    // The slot is back: the retry goes through.
    assert_eq!(
        listener
            .deliver(CONTACT_EVENTS_PATH, CONTACT_SECRET, "msg_b", 0, &event)
            .await,
        200
    );
}
