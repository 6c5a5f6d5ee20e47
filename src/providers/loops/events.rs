//! The events Loops sends to a webhook endpoint, and the check that Loops sent them.
//!
//! Loops signs deliveries the Standard Webhooks way (see [`crate::providers::svix`]) under the
//! specification's header names, `webhook-id`, `webhook-timestamp` and `webhook-signature`.
//! [`receive`] checks the signature over the raw bytes, in constant time, within five minutes of
//! the stated send time, with a key of at least 24 bytes ([`LoopsSigningKey`]), and only then
//! parses the body. Milo's own Loops integration checked without a time window and in
//! non-constant time; a replay inside the window is caught by the receiver deduplicating on the
//! delivery id ([`Delivery::id`]), which this module cannot do alone.
//!
//! The body is `{"eventName", "eventTime" (Unix seconds), "webhookSchemaVersion",
//! "contactIdentity": {"id", "email", "userId"}, ...}`; list events add
//! `"mailingList": {"id", "name", "description", "isPublic"}`. The three types the sync acts on
//! are typed; every other type is [`LoopsEvent::Unknown`], to be acknowledged so Loops stops
//! retrying, not refused. For the typed ones the fields they are useless without (`eventTime`,
//! the contact's `email`, the list's `id`) are required, so a malformed body is a clear error
//! rather than an event about nobody.

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use crate::providers::svix::{self, STANDARD_HEADERS, SigningKey, SvixError};

/// `contact.mailingList.subscribed`: the contact joined a list (for example on Loops'
/// preference page).
pub const MAILING_LIST_SUBSCRIBED: &str = "contact.mailingList.subscribed";
/// `contact.mailingList.unsubscribed`: the contact left a list.
pub const MAILING_LIST_UNSUBSCRIBED: &str = "contact.mailingList.unsubscribed";
/// `contact.unsubscribed`: the contact unsubscribed from everything (`subscribed` became false).
pub const UNSUBSCRIBED: &str = "contact.unsubscribed";

/// The endpoint's signing secret, decoded. Refuses secrets shorter than the Standard Webhooks
/// minimum (24 bytes) so that a truncated or hand-made secret fails at start-up, not open.
#[derive(Clone, Debug)]
pub struct LoopsSigningKey(SigningKey);

impl LoopsSigningKey {
    /// Decodes `whsec_<base64>` (or bare base64) as Loops shows it; surrounding whitespace (a
    /// file's trailing newline) is ignored. Errors never contain the secret.
    pub fn parse(secret: &str) -> Result<Self, SvixError> {
        SigningKey::parse_with_min(secret, svix::STANDARD_MIN_SECRET_LEN).map(Self)
    }

    /// The `webhook-signature` entry for `body` sent as `id` at `timestamp`: for tests and fakes
    /// that play Loops.
    pub fn sign(&self, id: &str, timestamp: &str, body: &[u8]) -> String {
        svix::sign(&self.0, id, timestamp, body)
    }
}

/// A verified delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The `webhook-id`: what the receiver deduplicates on, and records as the event id.
    pub id: String,
    /// What happened.
    pub event: LoopsEvent,
}

/// Why a delivery was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// Not signed by the key, stale, or missing headers: answer 401, act on nothing.
    #[error("Loops event refused: {0}")]
    Signature(#[from] SvixError),
    /// Signed, but not an event this receiver can read: answer 400.
    #[error(transparent)]
    Event(#[from] EventError),
}

/// Why a signed body is not a Loops event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or no `eventName`.
    #[error("not a Loops event: {0}")]
    Json(String),
    /// A typed event lacks a required field or has the wrong shape.
    #[error("{event_name} event: {reason}")]
    Data {
        /// The event type.
        event_name: String,
        /// What is wrong.
        reason: String,
    },
}

/// A parsed event.
#[derive(Debug, Clone, PartialEq)]
pub enum LoopsEvent {
    /// `contact.mailingList.subscribed`.
    MailingListSubscribed(ListEvent),
    /// `contact.mailingList.unsubscribed`.
    MailingListUnsubscribed(ListEvent),
    /// `contact.unsubscribed`.
    Unsubscribed(ContactEvent),
    /// Any other type (email metrics, `contact.created`, `testing.testEvent`, types Loops adds
    /// later): acknowledged, not acted on.
    Unknown {
        /// The event type, for logs and metrics.
        event_name: String,
    },
}

impl LoopsEvent {
    /// The event's `eventName`.
    pub fn event_name(&self) -> &str {
        match self {
            Self::MailingListSubscribed(_) => MAILING_LIST_SUBSCRIBED,
            Self::MailingListUnsubscribed(_) => MAILING_LIST_UNSUBSCRIBED,
            Self::Unsubscribed(_) => UNSUBSCRIBED,
            Self::Unknown { event_name } => event_name,
        }
    }

    /// The contact a typed event is about.
    pub fn contact(&self) -> Option<&ContactIdentity> {
        match self {
            Self::MailingListSubscribed(e) | Self::MailingListUnsubscribed(e) => Some(&e.contact),
            Self::Unsubscribed(e) => Some(&e.contact),
            Self::Unknown { .. } => None,
        }
    }
}

/// A contact event: who, and when it happened in Loops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactEvent {
    /// `eventTime`: when the person acted (recorded as the removal's time).
    pub time: jiff::Timestamp,
    /// The contact.
    pub contact: ContactIdentity,
}

/// A list event: who, which list, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEvent {
    /// `eventTime`.
    pub time: jiff::Timestamp,
    /// The contact.
    pub contact: ContactIdentity,
    /// The list.
    pub list: EventMailingList,
}

/// `contactIdentity`: how the event names the contact.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactIdentity {
    /// Loops' id for the contact.
    #[serde(default)]
    pub id: String,
    /// The address.
    pub email: String,
    /// The `userId` (Milo's Contact uid), `None` for contacts made outside this server.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `mailingList`: the list a list event is about.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMailingList {
    /// The list id, as in `mailingLists` and `spec.providers[].id`.
    pub id: String,
    /// The list's name.
    #[serde(default)]
    pub name: String,
    /// Whether Loops shows the list to every contact on the preference page.
    #[serde(default)]
    pub is_public: bool,
}

/// Checks a delivery's signature (headers `webhook-id`, `webhook-timestamp`,
/// `webhook-signature`) against `key` and `now`, then parses the raw `body`.
pub fn receive(
    key: &LoopsSigningKey,
    headers: &HeaderMap,
    body: &[u8],
    now: jiff::Timestamp,
) -> Result<Delivery, ReceiveError> {
    let id = svix::verify_headers(&STANDARD_HEADERS, &key.0, headers, body, now)?;
    let event = parse_event(body)?;
    Ok(Delivery { id, event })
}

/// Parses an event body. Call only on a body whose signature [`receive`] checked.
pub fn parse_event(body: &[u8]) -> Result<LoopsEvent, EventError> {
    let envelope: Value =
        serde_json::from_slice(body).map_err(|e| EventError::Json(e.to_string()))?;
    let Some(name) = envelope.get("eventName").and_then(Value::as_str) else {
        return Err(EventError::Json("no eventName".into()));
    };
    let data_error = |reason: String| EventError::Data {
        event_name: name.to_owned(),
        reason,
    };
    let time = || -> Result<jiff::Timestamp, EventError> {
        let seconds = envelope
            .get("eventTime")
            .and_then(|t| t.as_i64().or_else(|| t.as_f64().map(|f| f as i64)))
            .ok_or_else(|| data_error("eventTime is missing or not a number".into()))?;
        jiff::Timestamp::from_second(seconds)
            .map_err(|_| data_error(format!("eventTime {seconds} is out of range")))
    };
    let field = |key: &str| -> Result<Value, EventError> {
        envelope
            .get(key)
            .cloned()
            .ok_or_else(|| data_error(format!("{key} is missing")))
    };
    let contact = || -> Result<ContactIdentity, EventError> {
        serde_json::from_value(field("contactIdentity")?)
            .map_err(|e| data_error(format!("contactIdentity: {e}")))
    };
    let list = || -> Result<ListEvent, EventError> {
        let list = serde_json::from_value(field("mailingList")?)
            .map_err(|e| data_error(format!("mailingList: {e}")))?;
        Ok(ListEvent {
            time: time()?,
            contact: contact()?,
            list,
        })
    };
    Ok(match name {
        MAILING_LIST_SUBSCRIBED => LoopsEvent::MailingListSubscribed(list()?),
        MAILING_LIST_UNSUBSCRIBED => LoopsEvent::MailingListUnsubscribed(list()?),
        UNSUBSCRIBED => LoopsEvent::Unsubscribed(ContactEvent {
            time: time()?,
            contact: contact()?,
        }),
        other => LoopsEvent::Unknown {
            event_name: other.to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 32 ASCII bytes, base64: `abcdefghijklmnopqrstuvwxyz012345`.
    const SECRET: &str = "whsec_YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXowMTIzNDU=";
    const BODY: &str = r#"{"eventName":"contact.unsubscribed","eventTime":1734425918,"webhookSchemaVersion":"1.0.0","contactIdentity":{"id":"c1","email":"a@example.com","userId":"uid-1"}}"#;
    /// Computed independently: `printf 'msg_1.1734425918.<BODY>' | openssl dgst -sha256 -hmac
    /// abcdefghijklmnopqrstuvwxyz012345 -binary | base64`.
    const SIGNATURE: &str = "v1,8LvPWIVaA1gWQARgMAu+8EqcJPR5tJv5qevpiYO1SXA=";

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", timestamp.parse().unwrap());
        h.insert("webhook-signature", signature.parse().unwrap());
        h
    }

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn an_independently_signed_delivery_is_received() {
        let key = LoopsSigningKey::parse(SECRET).unwrap();
        assert_eq!(key.sign("msg_1", "1734425918", BODY.as_bytes()), SIGNATURE);
        let h = headers("msg_1", "1734425918", SIGNATURE);
        let delivery = receive(&key, &h, BODY.as_bytes(), at(1_734_425_918 + 299)).unwrap();
        assert_eq!(delivery.id, "msg_1");
        let LoopsEvent::Unsubscribed(event) = &delivery.event else {
            panic!("{delivery:?}");
        };
        assert_eq!(event.time, at(1_734_425_918));
        assert_eq!(event.contact.user_id.as_deref(), Some("uid-1"));
        assert_eq!(delivery.event.event_name(), UNSUBSCRIBED);
    }

    #[test]
    fn svix_headers_stale_and_short_keys_are_refused() {
        let key = LoopsSigningKey::parse(SECRET).unwrap();
        let mut svix = HeaderMap::new();
        svix.insert("svix-id", "msg_1".parse().unwrap());
        svix.insert("svix-timestamp", "1734425918".parse().unwrap());
        svix.insert("svix-signature", SIGNATURE.parse().unwrap());
        let now = at(1_734_425_918);
        assert_eq!(
            receive(&key, &svix, BODY.as_bytes(), now),
            Err(ReceiveError::Signature(SvixError::Missing("webhook-id")))
        );
        let h = headers("msg_1", "1734425918", SIGNATURE);
        assert_eq!(
            receive(&key, &h, BODY.as_bytes(), at(1_734_425_918 + 301)),
            Err(ReceiveError::Signature(SvixError::Stale(-301)))
        );
        // 23 bytes.
        let short = "whsec_YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnc=";
        assert_eq!(
            LoopsSigningKey::parse(short).unwrap_err(),
            SvixError::ShortSecret { len: 23, min: 24 }
        );
        assert!(!format!("{key:?}").contains("YWJj"));
    }

    #[test]
    fn the_three_typed_events_and_unknown_ones() {
        let list = |name: &str| {
            format!(
                r#"{{"eventName":"{name}","eventTime":1734425918.0,"webhookSchemaVersion":"1.0.0",
                    "contactIdentity":{{"id":"c1","email":"a@example.com","userId":null}},
                    "mailingList":{{"id":"l1","name":"News","description":null,"isPublic":true}}}}"#
            )
        };
        let event = parse_event(list(MAILING_LIST_UNSUBSCRIBED).as_bytes()).unwrap();
        let LoopsEvent::MailingListUnsubscribed(e) = &event else {
            panic!("{event:?}");
        };
        assert_eq!((e.list.id.as_str(), e.list.is_public), ("l1", true));
        assert_eq!(e.contact.user_id, None);
        assert_eq!(event.contact().unwrap().email, "a@example.com");
        let event = parse_event(list(MAILING_LIST_SUBSCRIBED).as_bytes()).unwrap();
        assert!(matches!(event, LoopsEvent::MailingListSubscribed(_)));
        for body in [
            r#"{"eventName":"email.opened","eventTime":1}"#,
            r#"{"eventName":"testing.testEvent","message":"test"}"#,
            r#"{"eventName":"contact.created","contactIdentity":7}"#,
        ] {
            let event = parse_event(body.as_bytes()).unwrap();
            assert!(matches!(event, LoopsEvent::Unknown { .. }), "{body}");
            assert!(event.contact().is_none());
        }
        assert_eq!(
            parse_event(br#"{"eventName":"testing.testEvent"}"#)
                .unwrap()
                .event_name(),
            "testing.testEvent"
        );
    }

    #[test]
    fn typed_events_without_what_they_need_are_errors() {
        for (body, needle) in [
            (r#"not json"#, "not a Loops event"),
            (r#"{"eventTime":1}"#, "no eventName"),
            (r#"{"eventName":7}"#, "no eventName"),
            (
                r#"{"eventName":"contact.unsubscribed","contactIdentity":{"email":"a@x.org"}}"#,
                "eventTime",
            ),
            (
                r#"{"eventName":"contact.unsubscribed","eventTime":"soon","contactIdentity":{"email":"a@x.org"}}"#,
                "eventTime",
            ),
            (
                r#"{"eventName":"contact.unsubscribed","eventTime":9223372036854775807,"contactIdentity":{"email":"a@x.org"}}"#,
                "out of range",
            ),
            (
                r#"{"eventName":"contact.unsubscribed","eventTime":1,"contactIdentity":{"id":"c1"}}"#,
                "email",
            ),
            (
                r#"{"eventName":"contact.mailingList.subscribed","eventTime":1,"contactIdentity":{"email":"a@x.org"}}"#,
                "mailingList is missing",
            ),
            (
                r#"{"eventName":"contact.mailingList.subscribed","eventTime":1,"contactIdentity":{"email":"a@x.org"},"mailingList":{"name":"x"}}"#,
                "id",
            ),
        ] {
            let err = parse_event(body.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(needle), "{body}: {err}");
        }
    }
}
