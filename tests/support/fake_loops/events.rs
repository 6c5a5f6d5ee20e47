//! Signed event deliveries as Loops sends them: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` over the raw body, signed with the fake's endpoint secret.
//!
//! The person's actions on Loops' preference page change the fake's state and return the event
//! Loops would send for them, ready to post to a receiver: [`FakeHandle::leave_list`],
//! [`FakeHandle::join_list`] and [`FakeHandle::unsubscribe_from_all`]. [`SignedEvent::forged`],
//! [`SignedEvent::with_body`] and [`SignedEvent::sent_at`] make the deliveries a receiver must
//! refuse.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use milo_webhook::providers::loops::LoopsSigningKey;
use milo_webhook::providers::loops::events::{
    MAILING_LIST_SUBSCRIBED, MAILING_LIST_UNSUBSCRIBED, UNSUBSCRIBED,
};
use serde_json::{Value, json};

use super::{FakeContact, FakeHandle, FakeList};

/// One delivery: the three headers' values and the raw body.
#[derive(Clone, Debug)]
pub struct SignedEvent {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`, Unix seconds.
    pub timestamp: String,
    /// `webhook-signature`: `v1,<base64>`.
    pub signature: String,
    /// The body exactly as signed.
    pub body: Vec<u8>,
}

impl SignedEvent {
    /// Signs `body` as delivery `id` sent at `at` with the secret `secret`.
    pub fn sign(secret: &str, id: &str, at: jiff::Timestamp, body: Vec<u8>) -> Self {
        let key = LoopsSigningKey::parse(secret).expect("fake signing secret");
        let timestamp = at.as_second().to_string();
        Self {
            id: id.into(),
            signature: key.sign(id, &timestamp, &body),
            timestamp,
            body,
        }
    }

    /// The delivery's headers, as Loops sends them.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("webhook-id", &self.id),
            ("webhook-timestamp", &self.timestamp),
            ("webhook-signature", &self.signature),
        ] {
            headers.insert(name, HeaderValue::from_str(value).expect("header value"));
        }
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers
    }

    /// The parsed body.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("event body is JSON")
    }

    /// The same delivery signed with another secret: what a forger without the secret sends.
    pub fn forged(&self) -> Self {
        let other = "whsec_Zm9yZ2VkLWtleS1mb3JnZWQta2V5LWZvcmdlZC1rZXkh";
        let at = jiff::Timestamp::from_second(self.timestamp.parse().unwrap_or(0))
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        Self::sign(other, &self.id, at, self.body.clone())
    }

    /// The same signature over another body: an altered delivery.
    pub fn with_body(&self, body: Vec<u8>) -> Self {
        Self {
            body,
            ..self.clone()
        }
    }

    /// The same event and id re-signed (validly) with another send time: a stale or future
    /// delivery when `at` is more than five minutes from the receiver's clock.
    pub fn sent_at(&self, secret: &str, at: jiff::Timestamp) -> Self {
        Self::sign(secret, &self.id, at, self.body.clone())
    }

    /// Posts the delivery to `url` and returns the receiver's status.
    pub async fn post(&self, url: &str) -> reqwest::Result<StatusCode> {
        let response = reqwest::Client::new()
            .post(url)
            .headers(self.headers())
            .body(self.body.clone())
            .send()
            .await?;
        Ok(StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY))
    }
}

/// The body of a contact event, in Loops' shape (webhook schema 1.0.0).
pub fn event_body(
    event_name: &str,
    at: jiff::Timestamp,
    contact: &FakeContact,
    list: Option<&FakeList>,
) -> Value {
    let mut body = json!({
        "eventName": event_name,
        "eventTime": at.as_second(),
        "webhookSchemaVersion": "1.0.0",
        "contactIdentity": {"id": contact.id, "email": contact.email, "userId": contact.user_id},
    });
    if let Some(list) = list {
        body["mailingList"] = json!({
            "id": list.id, "name": list.name, "description": list.description,
            "isPublic": list.is_public,
        });
    }
    body
}

impl FakeHandle {
    /// The endpoint's signing secret (`whsec_...`), what the receiver is configured with.
    pub fn signing_secret(&self) -> String {
        self.lock().config.signing_secret.clone()
    }

    /// Signs `body` as a new delivery sent now, with a fresh `webhook-id`.
    pub fn sign_event(&self, body: &Value) -> SignedEvent {
        let (secret, id) = {
            let mut inner = self.lock();
            (inner.config.signing_secret.clone(), inner.new_id("msg"))
        };
        let bytes = serde_json::to_vec(body).expect("event body");
        SignedEvent::sign(&secret, &format!("msg_{id}"), jiff::Timestamp::now(), bytes)
    }

    /// The person leaves a list on the preference page: off the list, and the
    /// `contact.mailingList.unsubscribed` delivery. `None` when the contact or list is unknown.
    pub fn leave_list(&self, email: &str, list_id: &str) -> Option<SignedEvent> {
        self.list_change(email, list_id, false)
    }

    /// The person joins a list on the preference page: on the list, and the
    /// `contact.mailingList.subscribed` delivery.
    pub fn join_list(&self, email: &str, list_id: &str) -> Option<SignedEvent> {
        self.list_change(email, list_id, true)
    }

    /// The person unsubscribes from everything: `subscribed` false, and the
    /// `contact.unsubscribed` delivery.
    pub fn unsubscribe_from_all(&self, email: &str) -> Option<SignedEvent> {
        let body = {
            let mut inner = self.lock();
            let i = inner.by_email(email)?;
            inner.contacts[i].subscribed = false;
            event_body(
                UNSUBSCRIBED,
                jiff::Timestamp::now(),
                &inner.contacts[i],
                None,
            )
        };
        Some(self.sign_event(&body))
    }

    fn list_change(&self, email: &str, list_id: &str, join: bool) -> Option<SignedEvent> {
        let body = {
            let mut inner = self.lock();
            let i = inner.by_email(email)?;
            let list = inner.lists.iter().find(|l| l.id == list_id)?.clone();
            let lists = &mut inner.contacts[i].lists;
            if join {
                lists.insert(list.id.clone());
            } else {
                lists.remove(&list.id);
            }
            let name = if join {
                MAILING_LIST_SUBSCRIBED
            } else {
                MAILING_LIST_UNSUBSCRIBED
            };
            event_body(
                name,
                jiff::Timestamp::now(),
                &inner.contacts[i],
                Some(&list),
            )
        };
        Some(self.sign_event(&body))
    }
}
