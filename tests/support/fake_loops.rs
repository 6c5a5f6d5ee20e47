//! A stateful fake of Loops' contacts and mailing lists API for tests: plain HTTP on 127.0.0.1
//! under `/api/v1`, Loops' shapes and upsert semantics (see `api.rs`), its bearer key check, its
//! `x-ratelimit-*` headers and an enforced per-second limit, fault injection (429s, 5xx, delays,
//! lost answers after the change was applied), a record of every request, and signed event
//! deliveries as Loops would send them (see `events.rs`).
//!
//! Where Loops' documentation is silent the fake takes the strictest reading, so that code
//! passing against it does not rely on Loops being lenient: an upsert whose email belongs to
//! another contact is refused (409) rather than merged, unknown properties and mailing lists are
//! refused (400) with nothing applied, and its own 429s carry no `retry-after` unless asked
//! (Loops documents none).

mod api;
pub mod events;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use milo_webhook::providers::loops::{LoopsClient, LoopsConfig};
use milo_webhook::providers::metrics::ProviderMetrics;

use api::{error, route};

/// The key the fake accepts unless configured otherwise.
pub const API_KEY: &str = "loops_test_key";
/// Where the fake serves the API, as Loops does (`https://app.loops.so/api/v1`).
pub const API_PREFIX: &str = "/api/v1";
/// The endpoint secret deliveries are signed with unless configured otherwise (32 bytes).
pub const SIGNING_SECRET: &str = "whsec_bWlsby13ZWJob29rLWxvb3BzLWZha2Utc2lnbmluZyE=";

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The only key accepted.
    pub api_key: String,
    /// Requests allowed per `window`; `None` disables enforcement. Answers always carry
    /// `x-ratelimit-limit`: this value, or Loops' baseline of 10 when `None`, which the client
    /// lowers its pace to; a scenario that needs more speed sets a higher limit here.
    pub rate_limit: Option<usize>,
    /// The sliding window `rate_limit` counts in. A little under 1 s by default, which absorbs
    /// scheduling jitter between the client's clock and ours without hiding a real burst.
    pub window: Duration,
    /// Whether the fake's own 429s carry `retry-after` (Loops documents none).
    pub retry_after: bool,
    /// The webhook endpoint's signing secret.
    pub signing_secret: String,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            api_key: API_KEY.into(),
            rate_limit: None,
            window: Duration::from_millis(950),
            retry_after: false,
            signing_secret: SIGNING_SECRET.into(),
        }
    }
}

/// A fault answered instead of (or after) the real work.
#[derive(Clone, Debug)]
pub enum Fault {
    /// 429, with `retry-after: seconds` when given.
    RateLimited { retry_after: Option<u64> },
    /// 500, nothing applied.
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
    /// Path and query, as sent (still escaped), without [`API_PREFIX`].
    pub path: String,
    pub at: Instant,
    pub user_agent: Option<String>,
    pub authorization: Option<String>,
    pub body: String,
    /// The status answered (0 for a dropped answer).
    pub status: u16,
}

impl RequestRecord {
    /// The body's `subscribed` value, if it is a JSON object that has one.
    pub fn subscribed(&self) -> Option<serde_json::Value> {
        let body: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        body.get("subscribed").cloned()
    }
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
    pub user_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Global consent to campaigns and workflows (new contacts: true).
    pub subscribed: bool,
    /// Ids of the lists the contact is on.
    pub lists: BTreeSet<String>,
    pub source: String,
}

/// A mailing list in the fake (made "in the dashboard": the API cannot create lists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeList {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_public: bool,
}

struct Inner {
    config: FakeConfig,
    contacts: Vec<FakeContact>,
    lists: Vec<FakeList>,
    log: Vec<RequestRecord>,
    accepted: VecDeque<Instant>,
    faults: Vec<PendingFault>,
    violations: usize,
    next_id: u64,
}

/// Inspection and control of a running fake; cheap to clone.
#[derive(Clone)]
pub struct FakeHandle {
    inner: Arc<Mutex<Inner>>,
}

/// A running fake; shuts down when dropped. Dereferences to its [`FakeHandle`].
pub struct FakeLoops {
    /// `http://127.0.0.1:<port>/api/v1`: what a client's `base_url` is set to.
    pub base_url: String,
    handle: FakeHandle,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Deref for FakeLoops {
    type Target = FakeHandle;
    fn deref(&self) -> &FakeHandle {
        &self.handle
    }
}

impl Drop for FakeLoops {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a fake on a free port of 127.0.0.1.
pub async fn start(config: FakeConfig) -> FakeLoops {
    let handle = FakeHandle {
        inner: Arc::new(Mutex::new(Inner {
            config,
            contacts: Vec::new(),
            lists: Vec::new(),
            log: Vec::new(),
            accepted: VecDeque::new(),
            faults: Vec::new(),
            violations: 0,
            next_id: 1,
        })),
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind fake loops");
    let addr = listener.local_addr().expect("fake loops address");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = Router::new().fallback(serve).with_state(handle.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    FakeLoops {
        base_url: format!("http://{addr}{API_PREFIX}"),
        handle,
        shutdown: Some(tx),
    }
}

impl FakeLoops {
    /// A handle that outlives borrows of the fake.
    pub fn handle(&self) -> FakeHandle {
        self.handle.clone()
    }

    /// A client of this fake's account at `rate` requests per second (the key the fake accepts,
    /// unexported metrics): what scenarios and benchmarks sync through.
    pub fn client(&self, rate: f64) -> LoopsClient {
        let config = LoopsConfig {
            base_url: self.base_url.clone(),
            rate_limit: rate,
            ..LoopsConfig::new(self.lock().config.api_key.clone())
        };
        LoopsClient::new(config, ProviderMetrics::unregistered()).expect("fake loops client")
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

    /// The next `n` requests with this method and a path (after [`API_PREFIX`]) starting with
    /// `prefix` answer `fault`.
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

    /// Changes the enforced rate limit.
    /// Drops every fault not yet answered.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn set_rate_limit(&self, limit: Option<usize>) {
        self.lock().config.rate_limit = limit;
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().log.clone()
    }

    /// Requests with this method whose path starts with `prefix`.
    pub fn count(&self, method: Method, prefix: &str) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .count()
    }

    /// Requests that carried `"subscribed": true`: each one re-subscribes whoever it names.
    pub fn subscribed_true_writes(&self) -> Vec<RequestRecord> {
        self.lock()
            .log
            .iter()
            .filter(|r| r.subscribed() == Some(serde_json::Value::Bool(true)))
            .cloned()
            .collect()
    }

    /// Requests refused by the fake's own rate limit (not injected faults).
    pub fn rate_limit_violations(&self) -> usize {
        self.lock().violations
    }

    /// Every contact, in creation order.
    pub fn contacts(&self) -> Vec<FakeContact> {
        self.lock().contacts.clone()
    }

    /// The contact with this `userId`.
    pub fn contact_by_user_id(&self, user_id: &str) -> Option<FakeContact> {
        let inner = self.lock();
        inner.by_user_id(user_id).map(|i| inner.contacts[i].clone())
    }

    /// The contact with this email (case-insensitive).
    pub fn contact_by_email(&self, email: &str) -> Option<FakeContact> {
        let inner = self.lock();
        inner.by_email(email).map(|i| inner.contacts[i].clone())
    }

    /// Every list, in creation order.
    pub fn lists(&self) -> Vec<FakeList> {
        self.lock().lists.clone()
    }

    /// Emails of the contacts on a list.
    pub fn members(&self, list_id: &str) -> Vec<String> {
        self.lock()
            .contacts
            .iter()
            .filter(|c| c.lists.contains(list_id))
            .map(|c| c.email.clone())
            .collect()
    }

    /// Adds a list "in the dashboard"; returns its id.
    pub fn insert_list(&self, name: &str, is_public: bool) -> String {
        let mut inner = self.lock();
        let id = inner.new_id("list");
        inner.lists.push(FakeList {
            id: id.clone(),
            name: name.into(),
            description: None,
            is_public,
        });
        id
    }

    /// Deletes a list "in the dashboard" (and every membership of it); true if it existed.
    pub fn remove_list(&self, id: &str) -> bool {
        let mut inner = self.lock();
        let before = inner.lists.len();
        inner.lists.retain(|l| l.id != id);
        for c in &mut inner.contacts {
            c.lists.remove(id);
        }
        inner.lists.len() < before
    }

    /// Adds a contact "through a form or the dashboard" (subscribed, on no list); returns its id.
    pub fn insert_contact(&self, email: &str, user_id: Option<&str>) -> String {
        let mut inner = self.lock();
        let id = inner.new_id("contact");
        inner.contacts.push(FakeContact {
            id: id.clone(),
            email: email.into(),
            user_id: user_id.map(Into::into),
            first_name: None,
            last_name: None,
            subscribed: true,
            lists: BTreeSet::new(),
            source: "Form".into(),
        });
        id
    }

    /// Deletes a contact "in the dashboard"; true if it existed.
    pub fn remove_contact(&self, email: &str) -> bool {
        let mut inner = self.lock();
        match inner.by_email(email) {
            Some(i) => {
                inner.contacts.remove(i);
                true
            }
            None => false,
        }
    }

    /// The person's global consent changes outside the API (an unsubscribe link, the dashboard).
    /// No event: see [`events`] for changes that send one.
    pub fn set_subscribed(&self, email: &str, subscribed: bool) {
        let mut inner = self.lock();
        if let Some(i) = inner.by_email(email) {
            inner.contacts[i].subscribed = subscribed;
        }
    }

    /// The contact joins or leaves a list outside the API, without an event.
    pub fn set_on_list(&self, email: &str, list_id: &str, on: bool) {
        let mut inner = self.lock();
        if let Some(i) = inner.by_email(email) {
            let lists = &mut inner.contacts[i].lists;
            if on {
                lists.insert(list_id.into());
            } else {
                lists.remove(list_id);
            }
        }
    }
}

impl Inner {
    fn new_id(&mut self, kind: &str) -> String {
        let n = self.next_id;
        self.next_id += 1;
        // Loops' ids are cuid-like: 25 lowercase alphanumerics starting with "c".
        format!("c{kind:.2}{n:010}{:012x}", fastrand::u64(..) >> 16)
    }

    fn by_user_id(&self, user_id: &str) -> Option<usize> {
        self.contacts
            .iter()
            .position(|c| c.user_id.as_deref() == Some(user_id))
    }

    fn by_email(&self, email: &str) -> Option<usize> {
        self.contacts
            .iter()
            .position(|c| c.email.eq_ignore_ascii_case(email))
    }

    fn list_exists(&self, id: &str) -> bool {
        self.lists.iter().any(|l| l.id == id)
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

    /// The limit and what is left of it in the window ending now.
    fn rate_state(&mut self, now: Instant) -> (usize, usize) {
        let window = self.config.window;
        while self.accepted.front().is_some_and(|&t| t + window <= now) {
            self.accepted.pop_front();
        }
        let limit = self.config.rate_limit.unwrap_or(10);
        let remaining = match self.config.rate_limit {
            Some(limit) => limit.saturating_sub(self.accepted.len()),
            None => limit,
        };
        (limit, remaining)
    }

    /// Whole seconds until the oldest accepted request leaves the window (at least 1).
    fn seconds_to_free_slot(&self, now: Instant) -> u64 {
        self.accepted
            .front()
            .map(|&t| {
                (t + self.config.window)
                    .saturating_duration_since(now)
                    .as_secs_f64()
                    .ceil() as u64
            })
            .unwrap_or(1)
            .max(1)
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
    let full = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Some(path_and_query) = full.strip_prefix(API_PREFIX).map(str::to_owned) else {
        return error(StatusCode::NOT_FOUND, "Not found");
    };
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query.as_str(), |(p, _)| p)
        .to_owned();
    let now = Instant::now();
    let (index, fault, early) = {
        let mut inner = fake.lock();
        inner.log.push(RequestRecord {
            method: parts.method.clone(),
            path: path_and_query.clone(),
            at: now,
            user_agent: header("user-agent"),
            authorization: header("authorization"),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: 0,
        });
        let index = inner.log.len() - 1;
        let expected = format!("Bearer {}", inner.config.api_key);
        let early = if header("authorization").as_deref() != Some(expected.as_str()) {
            let body = serde_json::json!({"error": "Invalid API key"});
            Some((StatusCode::UNAUTHORIZED, axum::Json(body)).into_response())
        } else {
            let (_, remaining) = inner.rate_state(now);
            if inner.config.rate_limit.is_some() && remaining == 0 {
                inner.violations += 1;
                let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
                if inner.config.retry_after {
                    let wait = inner.seconds_to_free_slot(now);
                    r.headers_mut()
                        .insert("retry-after", HeaderValue::from(wait));
                }
                Some(r)
            } else {
                inner.accepted.push_back(now);
                None
            }
        };
        let fault = if early.is_none() {
            inner.take_fault(&parts.method, &path)
        } else {
            None
        };
        (index, fault, early)
    };
    let apply = || route(&fake, &parts.method, &path_and_query, &body);
    let mut response = match (early, fault) {
        (Some(r), _) => r,
        (None, Some(Fault::RateLimited { retry_after })) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
            if let Some(seconds) = retry_after {
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from(seconds));
            }
            r
        }
        (None, Some(Fault::ServerError)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
        }
        (None, Some(Fault::Delay(delay))) => {
            tokio::time::sleep(delay).await;
            apply()
        }
        (None, Some(Fault::DropAnswer)) => {
            let _ = apply();
            fake.lock().log[index].status = 0;
            return dropped();
        }
        (None, Some(Fault::DropAnswerAs500)) => {
            let _ = apply();
            error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
        }
        (None, None) => apply(),
    };
    let mut inner = fake.lock();
    let (limit, remaining) = inner.rate_state(Instant::now());
    inner.log[index].status = response.status().as_u16();
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
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
