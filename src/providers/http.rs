//! The one HTTP exchange every provider client makes: send a request and read its whole answer,
//! recording the outcome in the shared provider metrics. Pacing, retries and what an answer means
//! stay with each provider's client.

use reqwest::header::HeaderMap;
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
