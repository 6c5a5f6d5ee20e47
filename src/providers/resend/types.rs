//! Resend's wire shapes for contacts and segments, in its snake_case names.
//!
//! The write shapes are deliberately narrower than the API: [`ContactPatch`] cannot carry
//! `unsubscribed` and [`NewContact`] sends it only as `true`, so no code path of ours can write
//! `unsubscribed: false` over a person's opt-out (Milo's integration re-subscribed people by
//! deleting and recreating contacts; we only ever patch, and never that field).

use serde::{Deserialize, Serialize};

/// A contact as Resend reports it. Unknown fields (`created_at`, `properties`, ...) are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RemoteContact {
    /// Resend's id for the contact.
    pub id: String,
    /// The address; unique per account (Resend contacts are global per email).
    pub email: String,
    /// Given name, if set.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Family name, if set.
    #[serde(default)]
    pub last_name: Option<String>,
    /// The person's global opt-out from broadcasts. Read only: we report it, never write it.
    #[serde(default)]
    pub unsubscribed: bool,
}

/// An address on the account's suppression list: Resend sends nothing to it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Suppression {
    /// Resend's id for it.
    pub id: String,
    /// The address.
    pub email: String,
    /// `bounce`, `complaint` or `manual` (absent in older answers).
    #[serde(default)]
    pub origin: Option<String>,
}

/// A segment (a named set of contacts). Its name is fixed at creation: Resend has no rename.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RemoteSegment {
    /// Resend's id for the segment.
    pub id: String,
    /// The name given at creation.
    pub name: String,
}

/// The body of `POST /contacts`. `unsubscribed` is sent only as `true`: a new contact otherwise
/// takes Resend's default, and an existing one (same email) keeps its opt-out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewContact {
    /// Required by Resend.
    pub email: String,
    /// Omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Sent only when true: creating (or re-creating) the contact of someone who opted out keeps
    /// them out; `false` is never sent, so nobody is ever re-subscribed by a create.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unsubscribed: bool,
    /// Segment ids the new contact joins in the same call (omitted when empty): a first sync
    /// needs no separate add per membership.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
}

/// What a create of a contact came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactCreated {
    /// The contact's id.
    pub id: String,
    /// Resend refused the create because the address exists and this is the existing contact's
    /// id: what the create asked (its `segments`) cannot be assumed to have happened.
    pub existed: bool,
}

/// The body of `PATCH /contacts/{id|email}`: only the fields that are `Some` are sent, so a patch
/// changes exactly what the caller meant to change. Has no `unsubscribed` field at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ContactPatch {
    /// A new address (Resend changes it in place; the contact keeps its id and opt-out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// New given name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// New family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
}

/// One page of a cursor-paginated list: `{"object": "list", "has_more", "data"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListPage<T> {
    #[serde(default)]
    pub has_more: bool,
    pub data: Vec<T>,
}

/// The answer to a create: `{"object", "id"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Created {
    pub id: String,
}

/// Resend's error body: `{"statusCode", "name", "message"}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_sends_only_what_is_set_and_never_unsubscribed() {
        let patch = ContactPatch {
            first_name: Some("Ada".into()),
            ..ContactPatch::default()
        };
        let json = serde_json::to_value(&patch).unwrap();
        assert_eq!(json, serde_json::json!({"first_name": "Ada"}));
        let new = NewContact {
            email: "a@example.com".into(),
            first_name: None,
            last_name: Some("L".into()),
            unsubscribed: false,
            segments: Vec::new(),
        };
        let json = serde_json::to_string(&new).unwrap();
        assert!(!json.contains("unsubscribed"), "{json}");
        let opted_out = NewContact {
            unsubscribed: true,
            ..new.clone()
        };
        let created = serde_json::to_value(&opted_out).unwrap();
        assert_eq!(
            created["unsubscribed"], true,
            "an opt-out is carried into a create"
        );
        assert!(!json.contains("first_name"), "{json}");
        assert!(!json.contains("segments"), "{json}");
        let joining = NewContact {
            segments: vec!["s1".into()],
            ..new
        };
        assert_eq!(
            serde_json::to_value(&joining).unwrap()["segments"],
            serde_json::json!(["s1"])
        );
    }

    #[test]
    fn contact_reads_nulls_and_missing_fields() {
        let c: RemoteContact = serde_json::from_str(
            r#"{"object":"contact","id":"c1","email":"a@example.com","first_name":null,
                "created_at":"2026-01-01","properties":{}}"#,
        )
        .unwrap();
        assert_eq!(c.first_name, None);
        assert!(!c.unsubscribed);
    }
}
