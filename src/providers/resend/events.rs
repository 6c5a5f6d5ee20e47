//! The events Resend sends to a webhook endpoint: an envelope `{"type", "created_at", "data"}`.
//!
//! Only what the controllers act on is typed: contact events (a person opting out in Resend must
//! reach the cluster) and the email event envelope (its data stays JSON until the Email status
//! work needs it). Unknown fields are ignored, so Resend can add some; the fields an event is
//! useless without (`type`, `created_at`, a contact's `email`, an email event's `email_id`) are
//! required, so a malformed body is a clear error rather than an empty event.

use serde::Deserialize;
use serde_json::Value;

/// Why a body is not a Resend event.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or not the envelope's shape.
    #[error("not a Resend event: {0}")]
    Json(#[from] serde_json::Error),
    /// The data of a known event type lacks a required field or has the wrong shape.
    #[error("{type_} event: {reason}")]
    Data {
        /// The event type.
        type_: String,
        /// What is wrong.
        reason: String,
    },
    /// `created_at` is not a timestamp.
    #[error("created_at {0:?} is not a timestamp")]
    BadTimestamp(String),
}

/// A parsed event.
#[derive(Debug, Clone, PartialEq)]
pub enum ResendEvent {
    /// `contact.created`, `contact.updated` or `contact.deleted`.
    Contact(ContactEvent),
    /// Any `email.*` event.
    Email(EmailEvent),
    /// `suppression.added` or `suppression.removed`.
    Suppression(SuppressionEvent),
    /// A type this receiver does not act on (acknowledged so Resend stops retrying).
    Other {
        /// The event type, for logs and metrics.
        type_: String,
    },
}

impl ResendEvent {
    /// The event's `type`.
    pub fn type_(&self) -> &str {
        match self {
            ResendEvent::Contact(event) => event.kind.as_str(),
            ResendEvent::Email(event) => &event.type_,
            ResendEvent::Suppression(event) => {
                if event.added {
                    "suppression.added"
                } else {
                    "suppression.removed"
                }
            }
            ResendEvent::Other { type_ } => type_,
        }
    }
}

/// What happened to a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactEventKind {
    /// `contact.created`.
    Created,
    /// `contact.updated` (for example `unsubscribed` set by an unsubscribe link).
    Updated,
    /// `contact.deleted`.
    Deleted,
}

impl ContactEventKind {
    /// The event type naming this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ContactEventKind::Created => "contact.created",
            ContactEventKind::Updated => "contact.updated",
            ContactEventKind::Deleted => "contact.deleted",
        }
    }

    fn from_type(type_: &str) -> Option<Self> {
        match type_ {
            "contact.created" => Some(ContactEventKind::Created),
            "contact.updated" => Some(ContactEventKind::Updated),
            "contact.deleted" => Some(ContactEventKind::Deleted),
            _ => None,
        }
    }
}

/// A contact event.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactEvent {
    /// What happened.
    pub kind: ContactEventKind,
    /// When Resend recorded it; events arrive out of order, so consumers compare this.
    pub created_at: jiff::Timestamp,
    /// The contact as it is after the event.
    pub data: ContactEventData,
    /// The delivery's `svix-id`, set by the listener (empty when parsed alone): the audit
    /// trail's event id.
    pub delivery: String,
}

/// A contact as a contact event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ContactEventData {
    /// Resend's contact id.
    pub id: String,
    /// The address, which is what the cluster's Contacts are matched on.
    pub email: String,
    /// First name, when set.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name, when set.
    #[serde(default)]
    pub last_name: Option<String>,
    /// `true`: the person opted out in Resend.
    #[serde(default)]
    pub unsubscribed: Option<bool>,
    /// The segments the contact is in (absent or null: none).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub segment_ids: Vec<String>,
}

/// An email event (`email.sent`, `email.delivered`, `email.bounced`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct EmailEvent {
    /// The event type.
    pub type_: String,
    /// When Resend recorded it; a late `email.sent` must not undo a `email.delivered`.
    pub created_at: jiff::Timestamp,
    /// The email it is about.
    pub email_id: String,
    /// The whole `data` object (bounce and failure details, tags).
    pub data: Value,
    /// The delivery's `svix-id`, set by the listener (empty when parsed alone).
    pub delivery: String,
}

/// An address added to or removed from the account's suppression list (after a hard bounce or
/// a complaint, or by hand in Resend's dashboard or API).
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionEvent {
    /// `suppression.added` (else `suppression.removed`).
    pub added: bool,
    /// When Resend recorded it.
    pub created_at: jiff::Timestamp,
    /// The suppression: its id, address and origin.
    pub suppression: super::types::Suppression,
    /// The delivery's `svix-id`, set by the listener (empty when parsed alone).
    pub delivery: String,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    type_: String,
    created_at: String,
    #[serde(default)]
    data: Value,
}

/// Parses a webhook body.
pub fn parse_event(body: &[u8]) -> Result<ResendEvent, EventError> {
    let envelope: Envelope = serde_json::from_slice(body)?;
    let created_at = parse_timestamp(&envelope.created_at)?;
    let type_ = envelope.type_;
    let data_error = |reason: String| EventError::Data {
        type_: type_.clone(),
        reason,
    };
    if let Some(kind) = ContactEventKind::from_type(&type_) {
        let data = ContactEventData::deserialize(&envelope.data)
            .map_err(|error| data_error(error.to_string()))?;
        return Ok(ResendEvent::Contact(ContactEvent {
            kind,
            created_at,
            data,
            delivery: String::new(),
        }));
    }
    if let Some(added) = match type_.as_str() {
        "suppression.added" => Some(true),
        "suppression.removed" => Some(false),
        _ => None,
    } {
        let suppression = super::types::Suppression::deserialize(&envelope.data)
            .map_err(|error| data_error(error.to_string()))?;
        if suppression.id.is_empty() || suppression.email.is_empty() {
            return Err(data_error("missing data.id or data.email".into()));
        }
        return Ok(ResendEvent::Suppression(SuppressionEvent {
            added,
            created_at,
            suppression,
            delivery: String::new(),
        }));
    }
    if type_.starts_with("email.") {
        let email_id = match envelope.data.get("email_id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ => return Err(data_error("missing data.email_id".into())),
        };
        return Ok(ResendEvent::Email(EmailEvent {
            type_,
            created_at,
            email_id,
            data: envelope.data,
            delivery: String::new(),
        }));
    }
    Ok(ResendEvent::Other { type_ })
}

/// RFC 3339, and the Postgres-style `2024-02-22 23:41:12.126+00` Resend's API also uses.
fn parse_timestamp(text: &str) -> Result<jiff::Timestamp, EventError> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        return Ok(at);
    }
    let mut normalized = text.replacen(' ', "T", 1);
    let bytes = normalized.as_bytes();
    // A bare `+hh` / `-hh` offset.
    if bytes.len() > 3 && matches!(bytes[bytes.len() - 3], b'+' | b'-') {
        normalized.push_str(":00");
    }
    normalized
        .parse()
        .map_err(|_| EventError::BadTimestamp(text.to_owned()))
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> Result<ResendEvent, EventError> {
        parse_event(value.to_string().as_bytes())
    }

    #[test]
    fn a_contact_event_with_extra_fields_parses() {
        let event = parse(json!({
            "type": "contact.updated",
            "created_at": "2025-10-10T15:30:00.000Z",
            "data": {
                "id": "c-1", "audience_id": "a-1", "segment_ids": ["s-1", "s-2"],
                "created_at": "2025-10-10T15:30:00.000Z", "updated_at": "2025-10-10T15:30:00.000Z",
                "email": "ada@example.com", "first_name": "Ada", "last_name": null,
                "unsubscribed": true, "something_new": {"x": 1}
            },
            "also_new": 1
        }))
        .unwrap();
        let ResendEvent::Contact(event) = event else {
            panic!("{event:?}")
        };
        assert_eq!(event.kind, ContactEventKind::Updated);
        assert_eq!(event.created_at.to_string(), "2025-10-10T15:30:00Z");
        assert_eq!(
            event.data,
            ContactEventData {
                id: "c-1".into(),
                email: "ada@example.com".into(),
                first_name: Some("Ada".into()),
                last_name: None,
                unsubscribed: Some(true),
                segment_ids: vec!["s-1".into(), "s-2".into()],
            }
        );
    }

    #[test]
    fn optional_contact_fields_may_be_absent_or_null() {
        for data in [
            json!({"id": "c", "email": "a@example.com"}),
            json!({"id": "c", "email": "a@example.com", "segment_ids": null, "unsubscribed": null}),
        ] {
            let event = parse(
                json!({"type": "contact.deleted", "created_at": "2025-01-01T00:00:00Z", "data": data}),
            );
            let Ok(ResendEvent::Contact(event)) = event else {
                panic!("{event:?}")
            };
            assert_eq!(event.kind, ContactEventKind::Deleted);
            assert!(event.data.segment_ids.is_empty());
            assert_eq!(event.data.unsubscribed, None);
        }
    }

    #[test]
    fn required_fields_are_required() {
        let ts = "2025-01-01T00:00:00Z";
        let cases = [
            json!({"created_at": ts, "data": {}}),
            json!({"type": "contact.created", "data": {"id": "c", "email": "a@example.com"}}),
            json!({"type": "contact.created", "created_at": ts, "data": {"id": "c"}}),
            json!({"type": "contact.created", "created_at": ts}),
            json!({"type": "contact.created", "created_at": ts, "data": {"id": "c", "email": 7}}),
            json!({"type": "contact.created", "created_at": "yesterday", "data": {"id": "c", "email": "a@example.com"}}),
            json!({"type": "email.sent", "created_at": ts, "data": {"to": ["a@example.com"]}}),
            json!({"type": 3, "created_at": ts, "data": {}}),
            json!([1, 2]),
        ];
        for case in cases {
            assert!(parse(case.clone()).is_err(), "{case}");
        }
        for garbage in [&b""[..], b"{", b"\xff\xfe", b"null"] {
            assert!(parse_event(garbage).is_err());
        }
    }

    #[test]
    fn email_events_keep_their_data_and_other_types_are_named() {
        let event = parse(json!({
            "type": "email.bounced",
            "created_at": "2024-02-22 23:41:12.126+00",
            "data": {"email_id": "e-1", "bounce": {"type": "Permanent"}}
        }))
        .unwrap();
        assert_eq!(event.type_(), "email.bounced");
        let ResendEvent::Email(event) = event else {
            panic!("{event:?}")
        };
        assert_eq!(event.email_id, "e-1");
        assert_eq!(event.created_at.to_string(), "2024-02-22T23:41:12.126Z");
        assert_eq!(event.data["bounce"]["type"], "Permanent");

        // Suppressions: id and email are required, the origin is read when present.
        assert!(
            parse(json!({"type": "suppression.added", "created_at": "2025-01-01T00:00:00Z", "data": {}}))
                .is_err()
        );
        let removed = parse(
            json!({"type": "suppression.removed", "created_at": "2025-01-01T00:00:00Z",
            "data": {"id": "sup_1", "email": "a@example.com", "origin": "bounce"}}),
        )
        .unwrap();
        assert_eq!(removed.type_(), "suppression.removed");
        let ResendEvent::Suppression(removed) = removed else {
            panic!("{removed:?}")
        };
        assert!(!removed.added);
        assert_eq!(removed.suppression.origin.as_deref(), Some("bounce"));
        let other =
            parse(json!({"type": "contact.merged", "created_at": "2025-01-01T00:00:00Z"})).unwrap();
        assert_eq!(other.type_(), "contact.merged");
    }
}
