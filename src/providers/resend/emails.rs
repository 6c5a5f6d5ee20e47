//! Sending mail through Resend: `POST /emails` and `POST /emails/batch`, both made safe to retry
//! by the HTTP `Idempotency-Key` header (never a mail header: Milo's integration put the key in
//! the mail's headers, where Resend ignores it, so a crash after a send sent again).
//!
//! Within 24 hours Resend answers a repeated key with the same payload by the first answer
//! instead of sending again; so the caller derives the key from what it sends (an Email's uid)
//! and simply repeats the call after a crash or a lost answer. A repeat while the first request
//! is still in flight gets 409 `concurrent_idempotent_requests`: waited out here, a few times;
//! the same key with another payload gets 409 `invalid_idempotent_request`, a permanent
//! [`ResendError::Invalid`] (the caller changed what it sends under one key: a bug to surface).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::client::{ResendClient, ResendError, json_body};

/// How often a send answered 409 `concurrent_idempotent_requests` is repeated before giving up
/// (as a transient error, retried later by the caller's backoff).
pub const CONCURRENT_RETRIES: u32 = 4;
/// The wait before the first repeat of an in-flight send; doubled each time.
const CONCURRENT_WAIT: Duration = Duration::from_millis(250);
/// Resend's limit of emails in one batch.
pub const BATCH_LIMIT: usize = 100;

/// One email as Resend's `POST /emails` takes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutgoingEmail {
    /// Sender, `Name <address>` or an address on a verified domain.
    pub from: String,
    /// Recipients (Resend takes up to 50).
    pub to: Vec<String>,
    /// Subject line.
    pub subject: String,
    /// HTML body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Plain-text body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Where replies go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Carbon-copy addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cc: Vec<String>,
    /// Blind carbon-copy addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bcc: Vec<String>,
    /// Custom mail headers (`List-Unsubscribe`, ...). Never the idempotency key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Resend tags, for its dashboard and events.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<EmailTag>,
    /// The Resend topic the mail is about: Resend sends it only to contacts subscribed to it, so
    /// a person who left the topic on Resend's preference page gets nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
}

/// A Resend tag (`name` and `value`: ASCII letters, digits, `_` and `-`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EmailTag {
    /// Tag name.
    pub name: String,
    /// Tag value.
    pub value: String,
}

#[derive(Deserialize)]
struct SentId {
    id: String,
}

#[derive(Deserialize)]
struct BatchAnswer {
    data: Vec<SentId>,
}

impl ResendClient {
    /// Sends one email and returns Resend's id for it. `idempotency_key` (1-256 characters) goes
    /// in the HTTP `Idempotency-Key` header: repeating the call with the same key and email
    /// returns the first id and sends nothing.
    pub async fn send_email(
        &self,
        email: &OutgoingEmail,
        idempotency_key: &str,
    ) -> Result<String, ResendError> {
        let body = json_body(email)?;
        let answer = self
            .send_idempotent("send_email", &["emails"], body, idempotency_key, false)
            .await?;
        let sent: SentId = answer.json()?;
        Ok(sent.id)
    }

    /// Sends up to [`BATCH_LIMIT`] emails in one call (`x-batch-validation: strict`: all or
    /// none) and returns their ids in order. Same idempotency as [`send_email`](Self::send_email).
    pub async fn send_batch(
        &self,
        emails: &[OutgoingEmail],
        idempotency_key: &str,
    ) -> Result<Vec<String>, ResendError> {
        if emails.is_empty() {
            return Ok(Vec::new());
        }
        if emails.len() > BATCH_LIMIT {
            return Err(ResendError::Invalid {
                status: 0,
                name: "batch_too_large".into(),
                message: format!("{} emails; Resend takes {BATCH_LIMIT}", emails.len()),
            });
        }
        let body = json_body(&emails)?;
        let answer = self
            .send_idempotent(
                "send_batch",
                &["emails", "batch"],
                body,
                idempotency_key,
                true,
            )
            .await?;
        let sent: BatchAnswer = answer.json()?;
        if sent.data.len() != emails.len() {
            return Err(ResendError::transient(format!(
                "send_batch: {} ids for {} emails",
                sent.data.len(),
                emails.len()
            )));
        }
        Ok(sent.data.into_iter().map(|s| s.id).collect())
    }

    /// POSTs `body` with the key, waiting out `concurrent_idempotent_requests` a few times.
    async fn send_idempotent(
        &self,
        operation: &'static str,
        path: &[&str],
        body: Vec<u8>,
        idempotency_key: &str,
        batch: bool,
    ) -> Result<super::answer::Answer, ResendError> {
        let headers = idempotency_headers(idempotency_key, batch)?;
        let mut wait = CONCURRENT_WAIT;
        let mut attempt = 0;
        loop {
            let url = self.url(path);
            let answer = self
                .execute_with(operation, Method::POST, url, Some(body.clone()), &headers)
                .await?;
            let concurrent = answer.status == StatusCode::CONFLICT
                && answer.error_body().name == "concurrent_idempotent_requests";
            if !concurrent || attempt >= CONCURRENT_RETRIES {
                return answer.into_result();
            }
            attempt += 1;
            tracing::debug!(
                operation,
                ?wait,
                "same idempotency key still in flight; waiting"
            );
            tokio::time::sleep(wait + Duration::from_millis(fastrand::u64(0..50))).await;
            wait *= 2;
        }
    }
}

/// The `Idempotency-Key` header (and strict validation for a batch); a key Resend would refuse
/// (empty, longer than 256, not a header value) is refused here as permanent.
fn idempotency_headers(key: &str, batch: bool) -> Result<HeaderMap, ResendError> {
    let invalid = |message: &str| ResendError::Invalid {
        status: 0,
        name: "invalid_idempotency_key".into(),
        message: message.into(),
    };
    if key.is_empty() || key.len() > 256 {
        return Err(invalid("the idempotency key must be 1-256 characters"));
    }
    let value = HeaderValue::from_str(key).map_err(|_| invalid("not a header value"))?;
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static("idempotency-key"), value);
    if batch {
        headers.insert(
            HeaderName::from_static("x-batch-validation"),
            HeaderValue::from_static("strict"),
        );
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_an_http_header_never_a_mail_header() {
        let headers = idempotency_headers("uid-1", false).unwrap();
        assert_eq!(headers["idempotency-key"], "uid-1");
        assert!(headers.get("x-batch-validation").is_none());
        let email = OutgoingEmail {
            from: "a@b.c".into(),
            to: vec!["d@e.f".into()],
            subject: "s".into(),
            ..Default::default()
        };
        let json = serde_json::to_value(&email).unwrap();
        assert!(json.get("headers").is_none());
        assert!(idempotency_headers("", false).is_err());
        assert!(idempotency_headers(&"x".repeat(257), false).is_err());
        assert_eq!(
            idempotency_headers("k", true).unwrap()["x-batch-validation"],
            "strict"
        );
    }
}
