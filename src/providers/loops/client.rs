//! The Loops HTTP client: contacts by `userId`, mailing lists, and the account's rate limit.
//!
//! What it does so that its callers (the provider layer) do not repeat Milo's integration:
//! - every request waits for the one account-wide [`RateLimiter`], retries included, and the
//!   limiter follows Loops' `x-ratelimit-limit` (lowering the pace to the account's) and
//!   `x-ratelimit-remaining` (nothing left pauses every caller for Loops' one-second window);
//! - a 429 pauses every caller until `retry-after` (one second when Loops sends none) and is
//!   retried here at most [`RATE_LIMIT_RETRIES`] times before [`LoopsError::RateLimited`];
//! - the one write shape, [`ContactUpsert`], never sends `subscribed: true` unless the caller
//!   built it from the person's [`Consent`](super::types::Consent).
//!
//! Every call is idempotent: an upsert sets the same fields to the same values however often it
//! is applied, a delete of what is gone is "already deleted", and reads change nothing. So a
//! request whose answer was lost in transport, or answered with a 5xx, is sent once more here
//! (a lost upsert answer becomes an update of the contact it created, never a second contact).
//! A request that timed out is not: a slow Loops costs one timeout, not two. Anything else is
//! returned as [`LoopsError::Transient`] for the caller's backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;

use super::error::{Answer, LoopsError, error_message};
use super::types::{ApiKeyInfo, ContactUpsert, MailingList, RemoteContact, Subscribed, Upserted};
use crate::providers::http;
use crate::providers::metrics::ProviderMetrics;
use crate::providers::ratelimit::RateLimiter;

/// The `provider` label of this client's metrics.
pub const PROVIDER: &str = "loops";
/// Loops' API root.
pub const DEFAULT_BASE_URL: &str = "https://app.loops.so/api/v1";
/// Requests per second for the account: Loops' documented baseline (10 per second per team).
pub const DEFAULT_RATE: f64 = 10.0;
/// How often one request is retried after a 429 before giving up.
pub const RATE_LIMIT_RETRIES: u32 = 3;
/// Loops counts requests per second: the pause when it says nothing is left, or answers 429
/// without `retry-after`.
const WINDOW: Duration = Duration::from_secs(1);

/// How to reach one Loops account.
#[derive(Clone)]
pub struct LoopsConfig {
    /// API root including the version, [`DEFAULT_BASE_URL`] by default; tests point it at a
    /// local fake. A trailing slash is ignored.
    pub base_url: String,
    /// Sent as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// Requests per second for the whole account, shared by every call ([`DEFAULT_RATE`]).
    pub rate_limit: f64,
    /// Sent on every request, so Loops can tell this server's traffic apart.
    pub user_agent: String,
    /// Per request, connection to last body byte.
    pub timeout: Duration,
}

impl LoopsConfig {
    /// Defaults: Loops' public API, 10 requests/s, 10 s per request.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.into(),
            api_key: api_key.into(),
            rate_limit: DEFAULT_RATE,
            user_agent: concat!("milo-webhook/", env!("CARGO_PKG_VERSION")).into(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for LoopsConfig {
    /// Never prints the API key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settings = (
            self.base_url.as_str(),
            self.rate_limit,
            self.user_agent.as_str(),
            self.timeout,
        );
        crate::providers::http::debug_account(f, "LoopsConfig", settings)
    }
}
/// A Loops client. Cheap to clone; clones share one connection pool, one rate limiter and one
/// call counter, so the account limit holds across every controller using it.
#[derive(Clone)]
pub struct LoopsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    limiter: RateLimiter,
    metrics: ProviderMetrics,
    calls: AtomicU64,
}
impl LoopsClient {
    /// Builds a client; fails (as [`LoopsError::Invalid`] with status 0) only for an unusable
    /// base URL, API key or user agent.
    pub fn new(config: LoopsConfig, metrics: ProviderMetrics) -> Result<Self, LoopsError> {
        let http::Endpoint { base, http } = http::Endpoint::new(
            &config.base_url,
            &config.api_key,
            &config.user_agent,
            config.timeout,
        )
        .map_err(|e| LoopsError::refused(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                limiter: RateLimiter::with_fallback(config.rate_limit, DEFAULT_RATE),
                metrics,
                calls: AtomicU64::new(0),
            }),
        })
    }

    /// Requests sent so far, retries included (for benchmarks and tests).
    pub fn calls(&self) -> u64 {
        self.inner.calls.load(Ordering::Relaxed)
    }

    /// The account limiter this client and its clones share.
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// Checks the API key (`GET /api-key`) and returns the team's name: a start-up check that
    /// turns a wrong key into one clear error instead of a failure per contact.
    pub async fn check_api_key(&self) -> Result<String, LoopsError> {
        let url = self.url(&["api-key"], &[]);
        let info: ApiKeyInfo = self
            .execute("check_api_key", Method::GET, url, None)
            .await?
            .into_result()?
            .json()?;
        Ok(info.team_name)
    }

    /// Creates or updates the contact with `upsert.user_id` (`PUT /contacts/update`) and returns
    /// Loops' id for it. An email change is made in place on the same contact; an email another
    /// contact holds is [`LoopsError::Conflict`], a mailing list Loops does not know is
    /// [`LoopsError::Invalid`] (nothing is applied in either case).
    ///
    /// `subscribed` is sent only as [`upsert.subscribed`](ContactUpsert::subscribed) says: by
    /// default not at all. **Never** build it to send `true` for someone who opted out.
    pub async fn upsert_contact(&self, upsert: &ContactUpsert) -> Result<String, LoopsError> {
        if upsert.user_id.trim().is_empty() {
            return Err(LoopsError::refused("an upsert needs a userId"));
        }
        if upsert.email.trim().is_empty() {
            return Err(LoopsError::refused("an upsert needs an email"));
        }
        if let Some(id) = upsert.mailing_lists.keys().find(|id| id.trim().is_empty()) {
            return Err(LoopsError::refused(format!(
                "mailing list id {id:?} is empty"
            )));
        }
        if let Subscribed::Resubscribe(consent) = &upsert.subscribed {
            tracing::info!(
                user_id = upsert.user_id,
                reason = consent.reason(),
                "re-subscribing a Loops contact at the person's request"
            );
        }
        let url = self.url(&["contacts", "update"], &[]);
        let body = json_body(&upsert.body())?;
        let upserted: Upserted = self
            .execute("upsert_contact", Method::PUT, url, Some(body))
            .await?
            .into_result()?
            .json()?;
        Ok(upserted.id)
    }

    /// The contact with this `userId`, `None` when Loops has none.
    pub async fn find_by_user_id(
        &self,
        user_id: &str,
    ) -> Result<Option<RemoteContact>, LoopsError> {
        self.find("userId", user_id).await
    }

    /// The contact with this email, `None` when Loops has none.
    pub async fn find_by_email(&self, email: &str) -> Result<Option<RemoteContact>, LoopsError> {
        self.find("email", email).await
    }

    /// `GET /contacts/find?<key>=<value>`: Loops answers a list, empty when nothing matches.
    async fn find(&self, key: &str, value: &str) -> Result<Option<RemoteContact>, LoopsError> {
        if value.trim().is_empty() {
            return Err(LoopsError::refused(format!("find by an empty {key}")));
        }
        let url = self.url(&["contacts", "find"], &[(key, value)]);
        let found: Vec<RemoteContact> = self
            .execute("find_contact", Method::GET, url, None)
            .await?
            .into_result()?
            .json()?;
        if found.len() > 1 {
            // userId and email are unique in an audience; if Loops ever answers more, the first
            // is as good a guess as any and the count is worth knowing.
            tracing::warn!(key, count = found.len(), "Loops found several contacts");
        }
        Ok(found.into_iter().next())
    }

    /// Deletes the contact with this `userId` (`POST /contacts/delete`); `false` when there was
    /// none (already deleted is done, not an error, so a retried delete converges).
    pub async fn delete_by_user_id(&self, user_id: &str) -> Result<bool, LoopsError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Delete<'a> {
            user_id: &'a str,
        }
        if user_id.trim().is_empty() {
            return Err(LoopsError::refused("delete by an empty userId"));
        }
        let url = self.url(&["contacts", "delete"], &[]);
        let answer = self
            .execute(
                "delete_contact",
                Method::POST,
                url,
                Some(json_body(&Delete { user_id })?),
            )
            .await?;
        match answer.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(answer.into_error()),
        }
    }

    /// Every mailing list of the account (`GET /lists`, one request: Loops does not page it).
    pub async fn list_mailing_lists(&self) -> Result<Vec<MailingList>, LoopsError> {
        let url = self.url(&["lists"], &[]);
        self.execute("list_mailing_lists", Method::GET, url, None)
            .await?
            .into_result()?
            .json()
    }

    /// `base/<segments...>?<query>`, each part percent-escaped (emails may hold `+`, which a
    /// query would otherwise read as a space).
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends one request through the limiter, handling 429s, retrying once what was lost or
    /// answered 5xx (every call is idempotent, see the module documentation), and classifying
    /// failures. Returns every other answer (2xx and 4xx) for the caller.
    async fn execute(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, LoopsError> {
        let inner = &self.inner;
        let mut rate_limited = 0;
        let mut retried = false;
        loop {
            inner.limiter.acquire().await;
            inner.calls.fetch_add(1, Ordering::Relaxed);
            let call = http::Call {
                provider: PROVIDER,
                operation,
                method: method.clone(),
                url: &url,
                headers: None,
                body: body.as_deref(),
            };
            let (status, headers, body) =
                match http::exchange(&inner.http, &inner.metrics, call).await {
                    Ok(answer) => answer,
                    Err(failed) => {
                        if !retried && !failed.timeout {
                            retried = true;
                            continue;
                        }
                        let (code, e) = (failed.code, failed.error);
                        return Err(LoopsError::transient(format!("{operation}: {code}: {e}")));
                    }
                };
            if let Some(limit) = number_header(&headers, "x-ratelimit-limit") {
                inner.limiter.lower_rate(limit);
            }
            let remaining =
                number_header(&headers, "x-ratelimit-remaining").map(|r| r.max(0.0) as u64);
            inner.limiter.observe(remaining, Some(WINDOW));
            if status == StatusCode::TOO_MANY_REQUESTS {
                inner.metrics.record_rate_limited(PROVIDER);
                let pause = number_header(&headers, "retry-after")
                    .filter(|s| *s >= 0.0)
                    .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
                    .unwrap_or(WINDOW);
                inner.limiter.pause_for(pause);
                tracing::warn!(
                    operation,
                    ?pause,
                    "Loops rate limit exceeded; pausing all calls"
                );
                if rate_limited >= RATE_LIMIT_RETRIES {
                    return Err(LoopsError::RateLimited { retry_in: pause });
                }
                rate_limited += 1;
                continue;
            }
            if status.is_server_error() {
                if !retried {
                    retried = true;
                    continue;
                }
                return Err(LoopsError::transient(format!(
                    "{operation}: {}: {}",
                    status.as_u16(),
                    error_message(&body)
                )));
            }
            return Ok(Answer { status, body });
        }
    }
}

/// A header holding a finite number (Loops' rate-limit headers, `retry-after` in seconds).
fn number_header(headers: &HeaderMap, name: &str) -> Option<f64> {
    let value: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
    value.is_finite().then_some(value)
}
/// A request body as JSON bytes (serialized once, resent as-is on retries).
fn json_body<T: Serialize>(value: &T) -> Result<Vec<u8>, LoopsError> {
    serde_json::to_vec(value).map_err(|e| LoopsError::refused(format!("unserializable body: {e}")))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_urls() {
        let config = LoopsConfig::new("secret-key");
        assert!(!format!("{config:?}").contains("secret-key"));
        let metrics = ProviderMetrics::unregistered();
        let client = LoopsClient::new(config, metrics.clone()).unwrap();
        assert_eq!(client.limiter().rate(), DEFAULT_RATE);
        let url = client.url(&["contacts", "find"], &[("email", "a+b c@example.com")]);
        assert_eq!(
            url.as_str(),
            "https://app.loops.so/api/v1/contacts/find?email=a%2Bb+c%40example.com"
        );
        for (base, key) in [
            ("not a url", "k"),
            ("mailto:x@example.com", "k"),
            ("ftp://example.com/api", "k"),
            ("https://app.loops.so/api/v1", " "),
            ("https://app.loops.so/api/v1", "bad\nkey"),
        ] {
            let config = LoopsConfig {
                base_url: base.into(),
                ..LoopsConfig::new(key)
            };
            let err = LoopsClient::new(config, metrics.clone()).err();
            assert!(
                matches!(err, Some(LoopsError::Invalid { status: 0, .. })),
                "{base} {key:?}: {err:?}"
            );
        }
        let slash = LoopsConfig {
            base_url: "http://127.0.0.1:1/api/v1/".into(),
            rate_limit: f64::NAN,
            ..LoopsConfig::new("k")
        };
        let client = LoopsClient::new(slash, metrics).unwrap();
        assert_eq!(
            client.url(&["lists"], &[]).as_str(),
            "http://127.0.0.1:1/api/v1/lists"
        );
        assert_eq!(client.limiter().rate(), DEFAULT_RATE);
    }
}
