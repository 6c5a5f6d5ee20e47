//! The one HTTP exchange every provider client makes: send a request and read its whole answer,
//! recording the outcome in the shared provider metrics. Pacing, retries and what an answer means
//! stay with each provider's client.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use super::metrics::ProviderMetrics;

/// A whole answer: status, headers, body.
pub type Exchange = (StatusCode, HeaderMap, Vec<u8>);

/// Why no answer came: the transport failed, or the request timed out.
#[derive(Debug)]
pub struct NoAnswer {
    /// Whether it timed out (the request may have been applied; retrying is the caller's call).
    pub timeout: bool,
    /// `timeout` or `transport`, as the metrics record it.
    pub code: &'static str,
    /// What reqwest said, for the caller's error.
    pub error: reqwest::Error,
}

/// What one call is, for the request and its metric.
pub struct Call<'a> {
    /// The provider's metric label (`resend`, `loops`).
    pub provider: &'static str,
    /// The operation's metric label.
    pub operation: &'static str,
    /// The method.
    pub method: Method,
    /// The address.
    pub url: &'a Url,
    /// Headers beyond the client's defaults.
    pub headers: Option<&'a HeaderMap>,
    /// A JSON body.
    pub body: Option<&'a [u8]>,
}

/// Sends `call` through `http` and reads the answer; records `provider_requests_total` by status
/// code, or by `timeout` / `transport` when none came.
pub async fn exchange(
    http: &reqwest::Client,
    metrics: &ProviderMetrics,
    call: Call<'_>,
) -> Result<Exchange, NoAnswer> {
    let mut request = http.request(call.method, call.url.clone());
    if let Some(headers) = call.headers {
        request = request.headers(headers.clone());
    }
    if let Some(body) = call.body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
    }
    let sent = match request.send().await {
        Ok(response) => {
            let status = response.status();
            let headers = response.headers().clone();
            response
                .bytes()
                .await
                .map(|body| (status, headers, body.to_vec()))
        }
        Err(e) => Err(e),
    };
    match sent {
        Ok(answer) => {
            metrics.record_request(call.provider, call.operation, answer.0.as_str());
            Ok(answer)
        }
        Err(error) => {
            let timeout = error.is_timeout();
            let code = if timeout { "timeout" } else { "transport" };
            metrics.record_request(call.provider, call.operation, code);
            Err(NoAnswer {
                timeout,
                code,
                error,
            })
        }
    }
}

/// Writes a provider account's settings for `Debug`, never its API key: what every client's
/// config prints.
pub fn debug_account(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    (base_url, rate_limit, user_agent, timeout): (&str, f64, &str, std::time::Duration),
) -> std::fmt::Result {
    f.debug_struct(name)
        .field("base_url", &base_url)
        .field("api_key", &"<redacted>")
        .field("rate_limit", &rate_limit)
        .field("user_agent", &user_agent)
        .field("timeout", &timeout)
        .finish()
}

/// Where a provider client sends its calls: the API root, and an HTTP client that sends the
/// bearer key (marked sensitive, so it is never logged), a `User-Agent` (Resend refuses requests
/// without one) and `Accept: application/json` on every request, within `timeout`.
pub struct Endpoint {
    /// The API root, without a trailing slash.
    pub base: Url,
    /// The configured HTTP client (one connection pool).
    pub http: reqwest::Client,
}

/// Why an [`Endpoint`] cannot be built; each client turns it into its own error.
#[derive(Debug, PartialEq, Eq)]
pub enum EndpointError {
    /// The base URL does not parse, or is not an absolute http(s) URL.
    BaseUrl(String),
    /// The API key is empty or not a header value.
    ApiKey(&'static str),
    /// The HTTP client could not be built.
    Client(String),
}

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BaseUrl(why) => write!(f, "base URL {why}"),
            Self::ApiKey(why) => write!(f, "the API key {why}"),
            Self::Client(why) => write!(f, "HTTP client: {why}"),
        }
    }
}

impl Endpoint {
    /// Checks `base_url` and `api_key` (surrounding whitespace ignored) and builds the client.
    pub fn new(
        base_url: &str,
        api_key: &str,
        user_agent: &str,
        timeout: Duration,
    ) -> Result<Self, EndpointError> {
        let base = Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| EndpointError::BaseUrl(format!("{base_url}: {e}")))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(EndpointError::BaseUrl(format!(
                "{base_url} is not an http(s) URL"
            )));
        }
        let key = api_key.trim();
        if key.is_empty() {
            return Err(EndpointError::ApiKey("is empty"));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| EndpointError::ApiKey("is not a header value"))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, auth);
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .default_headers(headers)
            .timeout(timeout)
            .build()
            .map_err(|e| EndpointError::Client(e.to_string()))?;
        Ok(Self { base, http })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_needs_an_http_url_and_a_key() {
        let ok = Endpoint::new(
            "https://api.example.com/v1/",
            " key\n",
            "ua",
            Duration::from_secs(1),
        );
        assert_eq!(
            ok.map(|e| e.base.to_string()).ok().as_deref(),
            Some("https://api.example.com/v1")
        );
        let bad =
            |url: &str, key: &str| Endpoint::new(url, key, "ua", Duration::from_secs(1)).err();
        assert!(matches!(
            bad("not a url", "k"),
            Some(EndpointError::BaseUrl(_))
        ));
        assert!(matches!(
            bad("mailto:a@example.com", "k"),
            Some(EndpointError::BaseUrl(_))
        ));
        assert_eq!(
            bad("https://x", "  "),
            Some(EndpointError::ApiKey("is empty"))
        );
        assert_eq!(
            bad("https://x", "a\u{7f}b"),
            Some(EndpointError::ApiKey("is not a header value"))
        );
    }

    #[test]
    fn provider_configs_never_print_their_key() {
        let loops = format!(
            "{:?}",
            crate::providers::loops::LoopsConfig::new("loops-secret-key")
        );
        let resend = format!(
            "{:?}",
            crate::providers::resend::ResendConfig::new("re_secret_key")
        );
        for (printed, key) in [(&loops, "loops-secret-key"), (&resend, "re_secret_key")] {
            assert!(!printed.contains(key), "{printed}");
            assert!(printed.contains("<redacted>"), "{printed}");
        }
        assert!(loops.starts_with("LoopsConfig {"), "{loops}");
        assert!(resend.contains("api.resend.com"), "{resend}");
    }
}
