//! The Resend HTTP client for contacts, segments and segment memberships.
//!
//! What it does so that its callers (the controllers) do not repeat Milo's faults:
//! - every request waits for the one account-wide [`RateLimiter`], retries and list pages too;
//! - a 429 `rate_limit_exceeded` pauses every caller until `retry-after` and is retried here (at
//!   most [`RATE_LIMIT_RETRIES`] times), a quota 429 is reported at once as
//!   [`ResendError::QuotaExceeded`]: neither is a generic error;
//! - creating a contact that already exists returns the existing id, whatever Resend answers
//!   (and [`ResendClient::create_contact_outcome`] says so when Resend's answer does);
//! - the write shapes cannot carry `unsubscribed` (see [`super::types`]).
//!
//! 5xx answers, timeouts and transport errors are returned as [`ResendError::Transient`]: the
//! controllers already back off with jitter per object, and a retry loop here would only hold the
//! account's rate budget longer. The one exception is a GET answered with 5xx or lost in transport
//! (typically a pooled connection the server had closed), which is retried once since it changes
//! nothing; a GET that timed out is not, so a slow Resend costs one timeout, not two.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::answer::Answer;
use super::ratelimit::RateLimiter;
use super::types::{
    ContactCreated, ContactPatch, Created, ErrorBody, ListPage, NewContact, RemoteContact,
    RemoteSegment, Suppression,
};
use crate::providers::http;
use crate::providers::metrics::ProviderMetrics;

/// The `provider` label of this client's metrics.
const PROVIDER: &str = "resend";
/// How often one request is retried after 429 `rate_limit_exceeded` before giving up.
pub const RATE_LIMIT_RETRIES: u32 = 3;
/// Page size of list calls: Resend's maximum, so listing costs as few requests as possible.
const PAGE_LIMIT: u32 = 100;
/// Assumed wait after a quota 429 that says nothing of when the quota resets.
const QUOTA_FALLBACK: Duration = Duration::from_secs(3600);
/// Assumed wait after a rate 429 without `retry-after` or `ratelimit-reset`.
const RATE_FALLBACK: Duration = Duration::from_secs(1);

/// How to reach one Resend account.
#[derive(Clone)]
pub struct ResendConfig {
    /// API root, `https://api.resend.com` by default; tests point it at a local fake. A trailing
    /// slash is ignored.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// Requests per second for the whole account (Resend limits the team, not the key).
    pub rate_limit: f64,
    /// Always sent: Resend refuses requests without a `User-Agent` with 403.
    pub user_agent: String,
    /// Per request, connection to last body byte.
    pub timeout: Duration,
}

impl ResendConfig {
    /// Defaults: Resend's public API, 5 requests/s (its documented limit), 10 s per request.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            base_url: "https://api.resend.com".into(),
            api_key: api_key.into(),
            rate_limit: super::ratelimit::DEFAULT_RATE,
            user_agent: concat!("milo-webhook/", env!("CARGO_PKG_VERSION")).into(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for ResendConfig {
    /// Never prints the API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settings = (
            self.base_url.as_str(),
            self.rate_limit,
            self.user_agent.as_str(),
            self.timeout,
        );
        crate::providers::http::debug_account(f, "ResendConfig", settings)
    }
}

/// Why a Resend call failed, sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    /// 404 where the caller must know (update, add to a segment).
    #[error("not found in Resend")]
    NotFound,
    /// A daily or monthly quota is spent: retrying before `retry_in` is useless.
    #[error("Resend quota exceeded ({name}); retry in {retry_in:?}")]
    QuotaExceeded {
        /// `daily_quota_exceeded` or `monthly_quota_exceeded`.
        name: String,
        /// From `ratelimit-reset` / `retry-after`, else an hour.
        retry_in: Duration,
    },
    /// Still rate limited after the client's own bounded retries.
    #[error("Resend rate limit exceeded; retry in {retry_in:?}")]
    RateLimited {
        /// The last pause Resend asked for.
        retry_in: Duration,
    },
    /// Refused for what was sent or who sent it (validation, auth): retrying the same request
    /// cannot help, wait for a change. `status` is 0 when the client itself refused (bad config).
    #[error("Resend refused the request ({status} {name}): {message}")]
    Invalid {
        /// HTTP status.
        status: u16,
        /// Resend's error name, e.g. `validation_error`.
        name: String,
        /// Resend's explanation.
        message: String,
    },
    /// Resend was unavailable, slow or busy: retry with backoff.
    #[error("Resend unavailable: {message}")]
    Transient {
        /// What happened, for logs and conditions.
        message: String,
    },
}

impl ResendError {
    /// How long to wait before retrying, when Resend said so.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            Self::QuotaExceeded { retry_in, .. } | Self::RateLimited { retry_in } => {
                Some(*retry_in)
            }
            _ => None,
        }
    }

    /// True when retrying the same request cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Invalid { .. })
    }

    /// The condition reason a controller reports for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound => "NotFound",
            Self::QuotaExceeded { .. } => "QuotaExceeded",
            Self::RateLimited { .. } => "RateLimited",
            Self::Invalid { .. } => "Invalid",
            Self::Transient { .. } => "ProviderUnavailable",
        }
    }

    pub(super) fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
        }
    }
}

/// A Resend client. Cheap to clone; clones share one connection pool, one rate limiter and one
/// call counter, so the account limit holds across every controller using it.
#[derive(Clone)]
pub struct ResendClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    limiter: RateLimiter,
    metrics: ProviderMetrics,
    calls: AtomicU64,
}

impl ResendClient {
    /// Builds a client; fails (as [`ResendError::Invalid`] with status 0) only for an unusable
    /// base URL, API key or user agent.
    pub fn new(config: ResendConfig, metrics: ProviderMetrics) -> Result<Self, ResendError> {
        let invalid = |name: &str, message: String| ResendError::Invalid {
            status: 0,
            name: name.into(),
            message,
        };
        let http::Endpoint { base, http } = http::Endpoint::new(
            &config.base_url,
            &config.api_key,
            &config.user_agent,
            config.timeout,
        )
        .map_err(|e| {
            let name = match e {
                http::EndpointError::BaseUrl(_) => "invalid_base_url",
                http::EndpointError::ApiKey(_) => "invalid_api_key",
                http::EndpointError::Client(_) => "client_config",
            };
            invalid(name, e.to_string())
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                limiter: RateLimiter::new(config.rate_limit),
                metrics,
                calls: AtomicU64::new(0),
            }),
        })
    }

    /// Requests sent so far, retries and pages included (for benchmarks and tests).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// The account limiter this client and its clones share.
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// `base/<segments...>`, each segment percent-escaped (emails may hold `+`, `/`, `%`).
    pub(super) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// [`execute_with`](Self::execute_with) without extra headers.
    pub(super) async fn execute(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, ResendError> {
        self.execute_with(operation, method, url, body, &HeaderMap::new())
            .await
    }

    /// Sends one request (with `headers`, e.g. `Idempotency-Key`) through the limiter, handling
    /// 429s and classifying failures. Returns every other answer (2xx and 4xx) for the caller.
    pub(super) async fn execute_with(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        headers: &HeaderMap,
    ) -> Result<Answer, ResendError> {
        let inner = &self.inner;
        let mut rate_limited = 0;
        let mut retried_get = false;
        loop {
            inner.limiter.acquire().await;
            inner.calls.fetch_add(1, Ordering::Relaxed);
            let call = http::Call {
                provider: PROVIDER,
                operation,
                method: method.clone(),
                url: &url,
                headers: Some(headers),
                body: body.as_deref(),
            };
            let (status, headers, body) =
                match http::exchange(&inner.http, &inner.metrics, call).await {
                    Ok(answer) => answer,
                    Err(failed) => {
                        if method == Method::GET && !retried_get && !failed.timeout {
                            retried_get = true;
                            continue;
                        }
                        let (code, e) = (failed.code, failed.error);
                        return Err(ResendError::transient(format!("{operation}: {code}: {e}")));
                    }
                };
            let reset = seconds_header(&headers, "ratelimit-reset");
            let remaining = headers
                .get("ratelimit-remaining")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            inner.limiter.observe(remaining, reset);
            let answer = Answer { status, body };
            if status == StatusCode::TOO_MANY_REQUESTS {
                inner.metrics.record_rate_limited(PROVIDER);
                let retry_after = seconds_header(&headers, "retry-after");
                let name = answer.error_body().name;
                if name.contains("quota") {
                    // The quota is the account's, but it resets in hours: pause only as long as
                    // Resend asked, and let the caller decide when to come back.
                    if let Some(pause) = retry_after {
                        inner.limiter.pause_for(pause);
                    }
                    let retry_in = retry_after.or(reset).unwrap_or(QUOTA_FALLBACK);
                    return Err(ResendError::QuotaExceeded { name, retry_in });
                }
                let pause = retry_after.or(reset).unwrap_or(RATE_FALLBACK);
                inner.limiter.pause_for(pause);
                tracing::warn!(
                    operation,
                    ?pause,
                    "Resend rate limit exceeded; pausing all calls"
                );
                if rate_limited >= RATE_LIMIT_RETRIES {
                    return Err(ResendError::RateLimited { retry_in: pause });
                }
                rate_limited += 1;
                continue;
            }
            if status.is_server_error() {
                if method == Method::GET && !retried_get {
                    retried_get = true;
                    continue;
                }
                let ErrorBody { name, message } = answer.error_body();
                return Err(ResendError::transient(format!(
                    "{operation}: {} {name}: {message}",
                    status.as_u16()
                )));
            }
            return Ok(answer);
        }
    }

    /// Fetches every page of a list at `path`, `limit=100&after=<last id>` until `has_more` is
    /// false.
    pub(super) async fn list_all<T: DeserializeOwned + HasId>(
        &self,
        operation: &'static str,
        path: &[&str],
        filter: Option<(&str, &str)>,
    ) -> Result<Vec<T>, ResendError> {
        let mut items: Vec<T> = Vec::new();
        loop {
            let mut url = self.url(path);
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("limit", &PAGE_LIMIT.to_string());
                if let Some((key, value)) = filter {
                    query.append_pair(key, value);
                }
                if let Some(last) = items.last() {
                    query.append_pair("after", last.id());
                }
            }
            let page: ListPage<T> = self
                .execute(operation, Method::GET, url, None)
                .await?
                .into_result()?
                .json()?;
            let empty = page.data.is_empty();
            items.extend(page.data);
            if !page.has_more {
                return Ok(items);
            }
            if empty {
                // `has_more` with nothing to continue after: a server bug; never loop on it.
                return Err(ResendError::transient(format!(
                    "{operation}: Resend reported more items but sent none"
                )));
            }
        }
    }

    /// The contact with this id or email, `None` when Resend has none.
    pub async fn get_contact(&self, contact: &str) -> Result<Option<RemoteContact>, ResendError> {
        let url = self.url(&["contacts", contact]);
        let answer = self.execute("get_contact", Method::GET, url, None).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        answer.into_result()?.json().map(Some)
    }

    /// Creates a contact and returns its id. For an email Resend already has, returns the
    /// existing contact's id instead (whether Resend answers with it or with a conflict), so
    /// a retry after a lost answer never makes a second contact, and the existing contact keeps
    /// its opt-out.
    pub async fn create_contact(&self, new: &NewContact) -> Result<String, ResendError> {
        self.create_contact_outcome(new).await.map(|c| c.id)
    }

    /// [`create_contact`](Self::create_contact), saying whether the id is an existing
    /// contact's: Resend refused the create for an existing address, so its `segments` were not
    /// set. (A Resend that answered 201 with the existing id could not be told apart; the
    /// sync's drift repair corrects what such a create was assumed to do.) A `segments` id Resend
    /// does not know is [`ResendError::NotFound`] or [`ResendError::Invalid`] (the reference
    /// names neither).
    pub async fn create_contact_outcome(
        &self,
        new: &NewContact,
    ) -> Result<ContactCreated, ResendError> {
        let url = self.url(&["contacts"]);
        let answer = self
            .execute("create_contact", Method::POST, url, Some(json_body(new)?))
            .await?;
        if answer.says_already_exists() {
            return match self.get_contact(&new.email).await? {
                Some(existing) => Ok(ContactCreated {
                    id: existing.id,
                    existed: true,
                }),
                None => Err(answer.into_error()),
            };
        }
        let created: Created = answer.into_result()?.json()?;
        Ok(ContactCreated {
            id: created.id,
            existed: false,
        })
    }

    /// Changes the fields set in `patch`; [`ResendError::NotFound`] when the contact is gone.
    pub async fn update_contact(
        &self,
        contact: &str,
        patch: &ContactPatch,
    ) -> Result<(), ResendError> {
        let url = self.url(&["contacts", contact]);
        self.execute(
            "update_contact",
            Method::PATCH,
            url,
            Some(json_body(patch)?),
        )
        .await?
        .into_result()
        .map(drop)
    }

    /// Deletes a contact; `false` when it did not exist (already deleted is done, not an error).
    pub async fn delete_contact(&self, contact: &str) -> Result<bool, ResendError> {
        let url = self.url(&["contacts", contact]);
        self.execute("delete_contact", Method::DELETE, url, None)
            .await?
            .existed()
    }

    /// Every contact of the account, or of one segment, across all pages.
    pub async fn list_contacts(
        &self,
        segment_id: Option<&str>,
    ) -> Result<Vec<RemoteContact>, ResendError> {
        let filter = segment_id.map(|id| ("segment_id", id));
        self.list_all("list_contacts", &["contacts"], filter).await
    }

    /// Every suppressed address of the account, across all pages.
    pub async fn list_suppressions(&self) -> Result<Vec<Suppression>, ResendError> {
        self.list_all("list_suppressions", &["suppressions"], None)
            .await
    }

    /// Every segment of the account, across all pages.
    pub async fn list_segments(&self) -> Result<Vec<RemoteSegment>, ResendError> {
        self.list_all("list_segments", &["segments"], None).await
    }

    /// Creates a segment and returns its id. Resend allows duplicate names, so callers look up
    /// by name first (see [`list_segments`](Self::list_segments)).
    pub async fn create_segment(&self, name: &str) -> Result<String, ResendError> {
        #[derive(Serialize)]
        struct NewSegment<'a> {
            name: &'a str,
        }
        let url = self.url(&["segments"]);
        let created: Created = self
            .execute(
                "create_segment",
                Method::POST,
                url,
                Some(json_body(&NewSegment { name })?),
            )
            .await?
            .into_result()?
            .json()?;
        Ok(created.id)
    }

    /// Deletes a segment; `false` when it did not exist.
    pub async fn delete_segment(&self, id: &str) -> Result<bool, ResendError> {
        let url = self.url(&["segments", id]);
        self.execute("delete_segment", Method::DELETE, url, None)
            .await?
            .existed()
    }

    /// Adds a contact (id or email) to a segment; already a member is success.
    /// [`ResendError::NotFound`] when the contact or the segment is gone.
    pub async fn add_to_segment(&self, contact: &str, segment_id: &str) -> Result<(), ResendError> {
        let url = self.url(&["contacts", contact, "segments", segment_id]);
        let answer = self
            .execute("add_to_segment", Method::POST, url, None)
            .await?;
        if answer.says_already_exists() {
            return Ok(());
        }
        answer.into_result().map(drop)
    }

    /// Removes a contact from a segment; `false` when it was not a member (or either is gone).
    pub async fn remove_from_segment(
        &self,
        contact: &str,
        segment_id: &str,
    ) -> Result<bool, ResendError> {
        let url = self.url(&["contacts", contact, "segments", segment_id]);
        self.execute("remove_from_segment", Method::DELETE, url, None)
            .await?
            .existed()
    }
}

/// Listed items carry the id the next page starts after.
pub(super) trait HasId {
    fn id(&self) -> &str;
}

impl HasId for RemoteContact {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for Suppression {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for RemoteSegment {
    fn id(&self) -> &str {
        &self.id
    }
}

/// A header holding a number of seconds (fractions allowed), clamped to a day.
fn seconds_header(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| Duration::from_secs_f64(value.min(86_400.0)))
}

/// A request body as JSON bytes (serialized once, resent as-is on retries).
pub(super) fn json_body<T: Serialize>(value: &T) -> Result<Vec<u8>, ResendError> {
    serde_json::to_vec(value).map_err(|e| ResendError::Invalid {
        status: 0,
        name: "unserializable_body".into(),
        message: e.to_string(),
    })
}
