//! The fake's sending API: `POST /emails` and `POST /emails/batch` with Resend's idempotency
//! rules. A key is remembered 24 hours with a hash of its payload and its answer: the same key and
//! payload get the first answer without sending again; another payload gets 409
//! `invalid_idempotent_request`; a repeat while the first is in flight (made observable with a
//! [`Fault::Delay`](super::Fault::Delay) on the first) gets 409 `concurrent_idempotent_requests`.
//! Refused requests (validation) are not remembered, like failures Resend does not store.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api::error;
use super::{FakeHandle, Fault};

/// How long Resend remembers an idempotency key.
const KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// One email the fake accepted (a batch records one per email).
#[derive(Clone, Debug)]
pub struct SentEmail {
    /// The id answered.
    pub id: String,
    /// The `Idempotency-Key` HTTP header of the request that sent it.
    pub idempotency_key: Option<String>,
    /// The email as posted.
    pub payload: Value,
    /// Whether it came in a batch.
    pub batch: bool,
}

impl SentEmail {
    /// The first recipient.
    pub fn to(&self) -> String {
        match &self.payload["to"] {
            Value::Array(to) => to
                .first()
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            Value::String(to) => to.clone(),
            _ => String::new(),
        }
    }
}

struct KeyEntry {
    hash: u64,
    /// `None` while the first request is in flight.
    answer: Option<(StatusCode, Value)>,
    at: Instant,
}

/// A refusal injected for recipients containing a text: (needle, status, name, message).
type Refusal = (String, StatusCode, String, String);

/// The sending state of the fake.
#[derive(Default)]
pub struct EmailState {
    pub(super) sent: Vec<SentEmail>,
    keys: HashMap<String, KeyEntry>,
    refusals: Vec<Refusal>,
}

impl FakeHandle {
    /// Every email sent, in order.
    pub fn sent_emails(&self) -> Vec<SentEmail> {
        self.lock().emails.sent.clone()
    }

    /// Refuses every email whose `to` or `from` contains `needle` with `status name: message`
    /// (e.g. 403 `validation_error` for an unverified domain).
    pub fn refuse_emails(&self, needle: &str, status: u16, name: &str, message: &str) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
        self.lock()
            .emails
            .refusals
            .push((needle.into(), status, name.into(), message.into()));
    }
}

fn payload_hash(body: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    hasher.finish()
}

/// Serves `POST /emails` (`batch` false) or `/emails/batch`. `None`: the answer is dropped after
/// the send (a [`Fault::DropAnswer`]).
pub(super) async fn serve(
    fake: &FakeHandle,
    key: Option<String>,
    batch: bool,
    body: &[u8],
    fault: Option<Fault>,
) -> Option<Response> {
    let hash = payload_hash(body);
    if let Some(key) = &key {
        let mut inner = fake.lock();
        let now = Instant::now();
        inner.emails.keys.retain(|_, e| e.at + KEY_TTL > now);
        match inner.emails.keys.get(key) {
            Some(entry) if entry.hash != hash => {
                return Some(error(
                    StatusCode::CONFLICT,
                    "invalid_idempotent_request",
                    "Same idempotency key used with a different request payload",
                ));
            }
            Some(KeyEntry { answer: None, .. }) => {
                return Some(error(
                    StatusCode::CONFLICT,
                    "concurrent_idempotent_requests",
                    "Same idempotency key used while original request is still in progress",
                ));
            }
            Some(KeyEntry {
                answer: Some((status, answer)),
                ..
            }) => return Some((*status, axum::Json(answer.clone())).into_response()),
            None => {
                let entry = KeyEntry {
                    hash,
                    answer: None,
                    at: now,
                };
                inner.emails.keys.insert(key.clone(), entry);
            }
        }
    }
    if let Some(Fault::Delay(delay)) = &fault {
        tokio::time::sleep(*delay).await;
    }
    let outcome = send(fake, key.as_deref(), batch, body);
    let mut inner = fake.lock();
    if let Some(key) = &key {
        match &outcome {
            Ok(answer) => {
                if let Some(entry) = inner.emails.keys.get_mut(key) {
                    entry.answer = Some((StatusCode::OK, answer.clone()));
                }
            }
            Err(_) => {
                inner.emails.keys.remove(key);
            }
        }
    }
    drop(inner);
    let response = match outcome {
        Ok(answer) => (StatusCode::OK, axum::Json(answer)).into_response(),
        Err(refused) => return Some(*refused),
    };
    match fault {
        Some(Fault::DropAnswer) => None,
        Some(Fault::DropAnswerAs500) => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application_error",
            "Internal server error",
        )),
        _ => Some(response),
    }
}

/// Validates and records the email(s); the answer Resend would give.
fn send(
    fake: &FakeHandle,
    key: Option<&str>,
    batch: bool,
    body: &[u8],
) -> Result<Value, Box<Response>> {
    let invalid = |message: &str| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_parameter",
            message,
        )
    };
    let parsed: Value =
        serde_json::from_slice(body).map_err(|_| Box::new(invalid("body is not JSON")))?;
    let emails: Vec<Value> = match (batch, parsed) {
        (true, Value::Array(items)) if (1..=100).contains(&items.len()) => items,
        (true, _) => return Err(Box::new(invalid("a batch is an array of 1-100 emails"))),
        (false, email @ Value::Object(_)) => vec![email],
        (false, _) => return Err(Box::new(invalid("an email is an object"))),
    };
    let mut inner = fake.lock();
    for email in &emails {
        for field in ["from", "to", "subject"] {
            if email.get(field).is_none_or(Value::is_null) {
                return Err(Box::new(error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing_required_field",
                    &format!("Missing `{field}` field."),
                )));
            }
        }
        if let Some(topic) = email.get("topic_id")
            && !topic.as_str().is_some_and(|id| inner.has_topic(id))
        {
            return Err(Box::new(error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_error",
                "topic_id is not a topic of the account",
            )));
        }
        let text = format!("{} {}", email["from"], email["to"]);
        if let Some((_, status, name, message)) = inner
            .emails
            .refusals
            .iter()
            .find(|(needle, ..)| text.contains(needle.as_str()))
        {
            return Err(Box::new(error(*status, name, message)));
        }
    }
    let mut ids = Vec::new();
    for email in emails {
        let id = inner.new_id();
        inner.emails.sent.push(SentEmail {
            id: id.clone(),
            idempotency_key: key.map(str::to_owned),
            payload: email,
            batch,
        });
        ids.push(json!({"id": id}));
    }
    Ok(if batch {
        json!({"data": ids})
    } else {
        ids.pop().unwrap_or_default()
    })
}
