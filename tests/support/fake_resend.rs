//! A stateful fake of Resend's contacts, segments, topics and sending API for tests: plain HTTP on 127.0.0.1,
//! Resend's shapes (cursor-paginated lists with `limit` 1-100, `after` and `has_more`; errors;
//! id-or-email paths; `segments` on a contact's create, all known or nothing made), its auth and
//! `User-Agent` checks, its rate-limit headers and an enforced rate limit, fault injection and
//! full inspection (every request is logged and counted).

mod api;
pub mod emails;
pub mod topics;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;

use api::{error, route};

/// What `POST /contacts` does for an email that already exists (Resend does not document it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExistingEmail {
    /// 422 `validation_error` "Contact already exists".
    Conflict,
    /// 201 with the existing contact's id.
    ReturnExisting,
}

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The only key accepted.
    pub api_key: String,
    /// Requests allowed per `window`; `None` disables enforcement (headers still sent).
    pub rate_limit: Option<usize>,
    /// The sliding window `rate_limit` counts in. A little under 1 s by default, which absorbs
    /// scheduling jitter between the client's clock and ours without hiding a real burst.
    pub window: Duration,
    /// See [`ExistingEmail`].
    pub existing_email: ExistingEmail,
    /// `limit` when a list call sends none.
    pub default_page: usize,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            api_key: "re_test_key".into(),
            rate_limit: None,
            window: Duration::from_millis(950),
            existing_email: ExistingEmail::Conflict,
            default_page: 20,
        }
    }
}

/// A fault answered instead of (or after) the real work.
#[derive(Clone, Debug)]
pub enum Fault {
    /// 429 `rate_limit_exceeded` with `retry-after: seconds`.
    RateLimited { retry_after: u64 },
    /// 429 `daily_quota_exceeded` with `retry-after: seconds`.
    Quota { retry_after: u64 },
    /// 500 `application_error`, nothing applied.
    ServerError,
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Apply the change, then break the connection instead of answering.
    DropAnswer,
    /// Apply the change, then answer 500.
    DropAnswerAs500,
}

struct PendingFault {
    fault: Fault,
    remaining: usize,
    method: Option<Method>,
    path_prefix: Option<String>,
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub method: Method,
    /// Path and query, as sent (still escaped).
    pub path: String,
    pub at: Instant,
    pub user_agent: Option<String>,
    pub authorization: Option<String>,
    /// The `Idempotency-Key` HTTP header.
    pub idempotency_key: Option<String>,
    pub body: String,
    /// The status answered (0 for a dropped answer).
    pub status: u16,
}

/// `METHOD path -> status` of each request, for failure messages.
pub fn calls(requests: &[RequestRecord]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

/// A contact in the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeContact {
    pub id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub unsubscribed: bool,
    pub segments: BTreeSet<String>,
}

/// A segment in the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeSegment {
    pub id: String,
    pub name: String,
}

struct Inner {
    config: FakeConfig,
    contacts: Vec<FakeContact>,
    segments: Vec<FakeSegment>,
    /// The account's suppression list: (id, email, origin).
    suppressions: Vec<(String, String, String)>,
    log: Vec<RequestRecord>,
    accepted: VecDeque<Instant>,
    faults: Vec<PendingFault>,
    violations: usize,
    next_id: u64,
    emails: emails::EmailState,
    topics: topics::TopicState,
}

/// Inspection and control of a running fake; cheap to clone.
#[derive(Clone)]
pub struct FakeHandle {
    inner: Arc<Mutex<Inner>>,
}

/// A running fake; shuts down when dropped. Dereferences to its [`FakeHandle`].
pub struct FakeResend {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    handle: FakeHandle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Deref for FakeResend {
    type Target = FakeHandle;
    fn deref(&self) -> &FakeHandle {
        &self.handle
    }
}

impl Drop for FakeResend {
    fn drop(&mut self) {
        self.stop();
    }
}

impl FakeResend {
    /// A handle that outlives borrows of the fake.
    pub fn handle(&self) -> FakeHandle {
        self.handle.clone()
    }

    /// Stops accepting requests.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a fake on a free port of 127.0.0.1.
pub async fn start(config: FakeConfig) -> FakeResend {
    let handle = FakeHandle {
        inner: Arc::new(Mutex::new(Inner {
            config,
            contacts: Vec::new(),
            segments: Vec::new(),
            suppressions: Vec::new(),
            log: Vec::new(),
            accepted: VecDeque::new(),
            faults: Vec::new(),
            violations: 0,
            next_id: 1,
            emails: emails::EmailState::default(),
            topics: topics::TopicState::default(),
        })),
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind fake resend");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = Router::new().fallback(serve).with_state(handle.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    FakeResend {
        base_url: format!("http://{addr}"),
        handle,
        shutdown: Some(tx),
    }
}

impl FakeResend {
    /// A client of this fake's account at `rate` requests per second (the key the fake accepts,
    /// no exported metrics): what scenarios and benchmarks sync through.
    pub fn client(&self, rate: f64) -> milo_webhook::providers::resend::ResendClient {
        let mut config = milo_webhook::providers::resend::ResendConfig::new("re_test_key");
        config.base_url = self.base_url.clone();
        config.rate_limit = rate;
        let metrics = milo_webhook::providers::metrics::ProviderMetrics::unregistered();
        milo_webhook::providers::resend::ResendClient::new(config, metrics).expect("fake client")
    }
}

impl FakeHandle {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `n` requests answer `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.push_fault(n, fault, None, None);
    }

    /// The next `n` requests with this method and a path starting with `prefix` answer `fault`.
    pub fn fail_next_matching(&self, n: usize, method: Method, prefix: &str, fault: Fault) {
        self.push_fault(n, fault, Some(method), Some(prefix.to_string()));
    }

    fn push_fault(&self, n: usize, fault: Fault, method: Option<Method>, prefix: Option<String>) {
        self.lock().faults.push(PendingFault {
            fault,
            remaining: n,
            method,
            path_prefix: prefix,
        });
    }

    /// Changes what `POST /contacts` does for an existing email.
    pub fn set_existing_email(&self, mode: ExistingEmail) {
        self.lock().config.existing_email = mode;
    }

    /// Changes the enforced rate limit.
    pub fn set_rate_limit(&self, limit: Option<usize>) {
        self.lock().config.rate_limit = limit;
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }

    /// Requests with this method whose path starts with `prefix`.
    pub fn count(&self, method: Method, prefix: &str) -> usize {
        let inner = self.lock();
        inner
            .log
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .count()
    }

    /// Requests refused by the fake's own rate limit (not injected faults).
    pub fn rate_limit_violations(&self) -> usize {
        self.lock().violations
    }

    /// Every contact, in creation order.
    pub fn contacts(&self) -> Vec<FakeContact> {
        self.lock().contacts.clone()
    }

    /// The contact with this email (case-insensitive).
    pub fn contact(&self, email: &str) -> Option<FakeContact> {
        let inner = self.lock();
        inner.find_contact(email).map(|i| inner.contacts[i].clone())
    }

    /// Every segment, in creation order.
    pub fn segments(&self) -> Vec<FakeSegment> {
        self.lock().segments.clone()
    }

    /// Emails of a segment's members.
    pub fn members(&self, segment_id: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .contacts
            .iter()
            .filter(|c| c.segments.contains(segment_id))
            .map(|c| c.email.clone())
            .collect()
    }

    /// Adds a contact "in the dashboard"; returns its id.
    pub fn insert_contact(&self, email: &str, first_name: Option<&str>) -> String {
        let mut inner = self.lock();
        let id = inner.new_id();
        inner.contacts.push(FakeContact {
            id: id.clone(),
            email: email.into(),
            first_name: first_name.map(Into::into),
            last_name: None,
            unsubscribed: false,
            segments: BTreeSet::new(),
        });
        id
    }

    /// Adds a segment "in the dashboard"; returns its id.
    pub fn insert_segment(&self, name: &str) -> String {
        let mut inner = self.lock();
        let id = inner.new_id();
        inner.segments.push(FakeSegment {
            id: id.clone(),
            name: name.into(),
        });
        id
    }

    /// Deletes a contact "in the dashboard"; true if it existed.
    pub fn remove_contact(&self, email: &str) -> bool {
        let mut inner = self.lock();
        match inner.find_contact(email) {
            Some(i) => {
                inner.contacts.remove(i);
                true
            }
            None => false,
        }
    }

    /// Deletes a segment "in the dashboard"; true if it existed.
    /// Suppresses `email` "in the dashboard" (origin `bounce`, `complaint` or `manual`); its id.
    pub fn insert_suppression(&self, email: &str, origin: &str) -> String {
        let mut inner = self.lock();
        let id = inner.new_id();
        inner
            .suppressions
            .push((id.clone(), email.into(), origin.into()));
        id
    }

    /// Lifts a suppression "in the dashboard"; whether it was there.
    pub fn remove_suppression(&self, id: &str) -> bool {
        let mut inner = self.lock();
        let before = inner.suppressions.len();
        inner.suppressions.retain(|(s, _, _)| s != id);
        inner.suppressions.len() != before
    }

    pub fn remove_segment(&self, id: &str) -> bool {
        self.lock().delete_segment(id)
    }

    /// Adds a member "in the dashboard" (a stray member the cluster does not know).
    pub fn add_member(&self, email: &str, segment_id: &str) {
        let mut inner = self.lock();
        if let Some(i) = inner.find_contact(email) {
            inner.contacts[i].segments.insert(segment_id.into());
        }
    }

    /// The person opts out (or back in) "from a broadcast's link".
    pub fn set_unsubscribed(&self, email: &str, unsubscribed: bool) {
        let mut inner = self.lock();
        if let Some(i) = inner.find_contact(email) {
            inner.contacts[i].unsubscribed = unsubscribed;
        }
    }
}

impl Inner {
    fn new_id(&mut self) -> String {
        let n = self.next_id;
        self.next_id += 1;
        let r = fastrand::u64(..);
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            (r >> 32) as u32,
            (r >> 16) as u16,
            (r & 0xfff) as u16,
            (n >> 48) & 0xfff,
            n & 0xffff_ffff_ffff
        )
    }

    fn find_contact(&self, key: &str) -> Option<usize> {
        self.contacts
            .iter()
            .position(|c| c.id == key || c.email.eq_ignore_ascii_case(key))
    }

    fn find_segment(&self, id: &str) -> Option<usize> {
        self.segments.iter().position(|s| s.id == id)
    }

    fn delete_segment(&mut self, id: &str) -> bool {
        let Some(i) = self.find_segment(id) else {
            return false;
        };
        self.segments.remove(i);
        for c in &mut self.contacts {
            c.segments.remove(id);
        }
        true
    }

    fn take_fault(&mut self, method: &Method, path: &str) -> Option<Fault> {
        let pending = self.faults.iter_mut().find(|f| {
            f.remaining > 0
                && f.method.as_ref().is_none_or(|m| m == method)
                && f.path_prefix.as_ref().is_none_or(|p| path.starts_with(p))
        })?;
        pending.remaining -= 1;
        let fault = pending.fault.clone();
        self.faults.retain(|f| f.remaining > 0);
        Some(fault)
    }

    /// Rate-limit headers for an answer sent now: limit, what is left, seconds to a free slot.
    fn rate_headers(&mut self, now: Instant) -> (usize, usize, u64) {
        let window = self.config.window;
        while self.accepted.front().is_some_and(|&t| t + window <= now) {
            self.accepted.pop_front();
        }
        let limit = self.config.rate_limit.unwrap_or(1000);
        let remaining = limit.saturating_sub(self.accepted.len());
        let reset = self
            .accepted
            .front()
            .map(|&t| {
                (t + window)
                    .saturating_duration_since(now)
                    .as_secs_f64()
                    .ceil() as u64
            })
            .unwrap_or(0);
        (limit, remaining, reset)
    }
}

async fn serve(State(fake): State<FakeHandle>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let now = Instant::now();
    let (index, fault, early) = {
        let mut inner = fake.lock();
        inner.log.push(RequestRecord {
            method: parts.method.clone(),
            path: path_and_query.clone(),
            at: now,
            user_agent: header("user-agent"),
            authorization: header("authorization"),
            idempotency_key: header("idempotency-key"),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: 0,
        });
        let index = inner.log.len() - 1;
        let expected = format!("Bearer {}", inner.config.api_key);
        let early = match header("authorization") {
            None => Some(error(
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                "Missing API key",
            )),
            Some(auth) if auth != expected => Some(error(
                StatusCode::FORBIDDEN,
                "invalid_api_key",
                "API key is invalid",
            )),
            Some(_) if header("user-agent").is_none() => Some(error(
                StatusCode::FORBIDDEN,
                "validation_error",
                "The User-Agent header is required",
            )),
            Some(_) => None,
        };
        let early = early.or_else(|| {
            let (_, remaining, reset) = inner.rate_headers(now);
            if inner.config.rate_limit.is_some() && remaining == 0 {
                inner.violations += 1;
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_exceeded",
                    "Too many requests",
                );
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from(reset.max(1)));
                Some(r)
            } else {
                inner.accepted.push_back(now);
                None
            }
        });
        let fault = if early.is_none() {
            inner.take_fault(&parts.method, parts.uri.path())
        } else {
            None
        };
        (index, fault, early)
    };
    let sending = parts.method == Method::POST
        && matches!(parts.uri.path(), "/emails" | "/emails/batch")
        && matches!(
            fault,
            None | Some(Fault::Delay(_) | Fault::DropAnswer | Fault::DropAnswerAs500)
        );
    let (early, fault) = match (early, sending) {
        (None, true) => {
            let batch = parts.uri.path() == "/emails/batch";
            let key = header("idempotency-key");
            match emails::serve(&fake, key, batch, &body, fault).await {
                Some(response) => (Some(response), None),
                None => {
                    fake.lock().log[index].status = 0;
                    return dropped();
                }
            }
        }
        other => (other.0, fault),
    };
    let mut response = match (early, fault) {
        (Some(r), _) => r,
        (None, Some(Fault::RateLimited { retry_after })) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Too many requests",
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            r
        }
        (None, Some(Fault::Quota { retry_after })) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "daily_quota_exceeded",
                "You have reached your daily email sending quota",
            );
            r.headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after));
            r
        }
        (None, Some(Fault::ServerError)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application_error",
            "Internal server error",
        ),
        (None, Some(Fault::Delay(delay))) => {
            tokio::time::sleep(delay).await;
            route(&fake, &parts.method, &path_and_query, &body)
        }
        (None, Some(Fault::DropAnswer)) => {
            let _ = route(&fake, &parts.method, &path_and_query, &body);
            fake.lock().log[index].status = 0;
            return dropped();
        }
        (None, Some(Fault::DropAnswerAs500)) => {
            let _ = route(&fake, &parts.method, &path_and_query, &body);
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application_error",
                "Internal server error",
            )
        }
        (None, None) => route(&fake, &parts.method, &path_and_query, &body),
    };
    let mut inner = fake.lock();
    let (limit, remaining, reset) = inner.rate_headers(Instant::now());
    inner.log[index].status = response.status().as_u16();
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(reset));
    response
}

/// A 200 whose body breaks off: the client sees a transport error after the work was done.
fn dropped() -> Response {
    let stream = futures::stream::once(async {
        Err::<bytes::Bytes, _>(std::io::Error::other("answer dropped"))
    });
    let mut r = Response::new(Body::from_stream(stream));
    *r.status_mut() = StatusCode::OK;
    r
}
