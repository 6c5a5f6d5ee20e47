//! Loops' wire shapes for contacts and mailing lists, in its camelCase names, and the one write
//! shape this client sends: [`ContactUpsert`].
//!
//! # `subscribed`: never re-subscribe someone who opted out
//!
//! Loops' `subscribed` is the person's global consent to campaigns and workflows. Sending
//! `subscribed: true` in an update **re-subscribes a contact who unsubscribed** (Loops' own
//! reference warns about exactly this). Milo's separate Loops integration upserted every contact
//! with `subscribed: true` and so undid people's opt-outs; this client must never repeat that.
//!
//! So the field is not a `bool` here but [`Subscribed`], whose default, [`Subscribed::Unchanged`],
//! leaves it out of the request: an existing contact keeps whatever the person chose, and a new
//! contact gets Loops' default. The caller decides the other two cases:
//! - [`Subscribed::Unsubscribe`] sends `false`: for a person who opted out anywhere (an
//!   `Unsubscribed` condition in the cluster, a Loops opt-out), so that a contact created for
//!   them is created unsubscribed.
//! - [`Subscribed::Resubscribe`] sends `true`, and can only be built from a [`Consent`], a
//!   record of the person asking to receive mail again. Nothing converts a `bool` or an
//!   `Option<bool>` into a [`Subscribed`], so `true` cannot slip in from a default or a copy of
//!   Loops' current value.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// What an upsert does to the contact's global `subscribed` flag. See the module documentation:
/// the default leaves it alone, and `true` needs the person's [`Consent`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Subscribed {
    /// Leave `subscribed` out of the request (the default). An existing contact keeps its
    /// state, an opt-out included; a contact the upsert creates gets Loops' default (subscribed),
    /// so use [`Subscribed::Unsubscribe`] for anyone who has opted out.
    #[default]
    Unchanged,
    /// Send `subscribed: false`: the person opted out, here or at Loops. Always safe to send.
    Unsubscribe,
    /// Send `subscribed: true`. **Re-subscribes a person who unsubscribed.** Only for a person who
    /// asked for it again, which the [`Consent`] records; never for mirroring state, defaults or
    /// "everyone in the group".
    Resubscribe(Consent),
}

impl Subscribed {
    /// [`Unsubscribe`](Self::Unsubscribe) when the person opted out, else
    /// [`Unchanged`](Self::Unchanged): what a sync sends. Never yields `Resubscribe`.
    pub fn respecting_opt_out(opted_out: bool) -> Self {
        if opted_out {
            Self::Unsubscribe
        } else {
            Self::Unchanged
        }
    }

    /// The value sent as `subscribed`, `None` when the field is left out.
    pub fn wire(&self) -> Option<bool> {
        match self {
            Self::Unchanged => None,
            Self::Unsubscribe => Some(false),
            Self::Resubscribe(_) => Some(true),
        }
    }
}

/// The person's own request to receive Loops mail again, which [`Subscribed::Resubscribe`]
/// requires: a named value rather than a `bool`, so re-subscribing is a visible decision in the
/// caller's code and says why in logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consent {
    reason: String,
}

impl Consent {
    /// Records that the person asked to be subscribed again, and where (for example "rejoined
    /// through the preference page, event msg_123"). Never call this for a system decision.
    pub fn given_by_person(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// What the person did.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// One `PUT /contacts/update`: creates the contact with this `userId` or updates it in place.
///
/// Loops looks the contact up by `userId` or `email`: an existing contact with this `userId` is
/// updated (its email changed in place if it differs), else a contact with this email and no
/// `userId` is adopted (given this `userId`), else one is created with both. An email that
/// another contact holds is refused ([`super::LoopsError::Conflict`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactUpsert {
    /// The key: Milo's Contact uid. Required.
    pub user_id: String,
    /// The address. Required: a contact cannot be created without one, and sending it every time
    /// is what changes it in place after an edit.
    pub email: String,
    /// Sent when `Some`; `None` leaves Loops' value as it is.
    pub first_name: Option<String>,
    /// Sent when `Some`; `None` leaves Loops' value as it is.
    pub last_name: Option<String>,
    /// `{list id: true}` adds the contact to a list, `false` removes it; lists not named are left
    /// alone. Every id must exist in Loops, or the whole upsert is refused.
    pub mailing_lists: BTreeMap<String, bool>,
    /// See [`Subscribed`]: left out unless the caller decides otherwise.
    pub subscribed: Subscribed,
}

impl ContactUpsert {
    /// An upsert that sets only the key and the address: names, lists and `subscribed` are left
    /// as they are.
    pub fn new(user_id: impl Into<String>, email: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            email: email.into(),
            first_name: None,
            last_name: None,
            mailing_lists: BTreeMap::new(),
            subscribed: Subscribed::Unchanged,
        }
    }

    /// The request body, in Loops' names.
    pub(crate) fn body(&self) -> UpsertBody<'_> {
        UpsertBody {
            user_id: &self.user_id,
            email: &self.email,
            first_name: self.first_name.as_deref(),
            last_name: self.last_name.as_deref(),
            mailing_lists: &self.mailing_lists,
            subscribed: self.subscribed.wire(),
        }
    }
}

/// The JSON of a [`ContactUpsert`]: absent fields are left out, never sent as `null` (which
/// Loops reads as "clear this property").
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpsertBody<'a> {
    user_id: &'a str,
    email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    mailing_lists: &'a BTreeMap<String, bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribed: Option<bool>,
}

/// A contact as `GET /contacts/find` reports it. Custom properties and fields this client does
/// not use are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteContact {
    /// Loops' own id for the contact.
    pub id: String,
    /// The address (unique in the audience).
    pub email: String,
    /// Given name, if set.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Family name, if set.
    #[serde(default)]
    pub last_name: Option<String>,
    /// The `userId` (Milo's Contact uid for contacts this server made), if set.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The person's global consent to campaigns and workflows. Required: an answer without it is
    /// refused rather than read as either value, since the whole point is never to guess consent.
    pub subscribed: bool,
    /// The lists the contact is on (Loops reports only `true` entries).
    #[serde(default, deserialize_with = "null_as_default")]
    pub mailing_lists: BTreeMap<String, bool>,
    /// Double opt-in state: `pending`, `accepted`, `rejected`, or `None`.
    #[serde(default)]
    pub opt_in_status: Option<String>,
}

impl RemoteContact {
    /// Whether the contact is on the list with this id.
    pub fn on_list(&self, list_id: &str) -> bool {
        self.mailing_lists.get(list_id).copied().unwrap_or(false)
    }
}

/// A mailing list, from `GET /lists`. Lists are made in Loops' dashboard only: the API cannot
/// create them, so a list a ContactGroup names either exists there or is an error to report.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailingList {
    /// The id used as a key in `mailingLists`.
    pub id: String,
    /// The name shown in Loops and on its preference page.
    pub name: String,
    /// Shown on the preference page, if set.
    #[serde(default)]
    pub description: Option<String>,
    /// Public lists appear to every contact on the preference page; private ones only to their
    /// subscribers.
    #[serde(default)]
    pub is_public: bool,
}

/// The answer to an upsert: `{"success": true, "id"}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Upserted {
    pub id: String,
}

/// The answer to `GET /api-key`: `{"success": true, "teamName"}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiKeyInfo {
    #[serde(default)]
    pub team_name: String,
}

/// `null` read as the type's default (Loops sends `null` for empty objects at times).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire(upsert: &ContactUpsert) -> serde_json::Value {
        serde_json::to_value(upsert.body()).unwrap()
    }

    #[test]
    fn an_upsert_sends_only_what_is_set_and_never_subscribed_by_default() {
        let upsert = ContactUpsert::new("uid-1", "a@example.com");
        assert_eq!(upsert.subscribed, Subscribed::Unchanged);
        assert_eq!(
            wire(&upsert),
            json!({"userId": "uid-1", "email": "a@example.com"})
        );
        let full = ContactUpsert {
            first_name: Some("Ada".into()),
            last_name: Some(String::new()),
            mailing_lists: BTreeMap::from([("l1".into(), true), ("l2".into(), false)]),
            ..upsert.clone()
        };
        assert_eq!(
            wire(&full),
            json!({"userId": "uid-1", "email": "a@example.com", "firstName": "Ada",
                   "lastName": "", "mailingLists": {"l1": true, "l2": false}})
        );
    }

    #[test]
    fn subscribed_is_sent_only_as_the_caller_decided() {
        let upsert = ContactUpsert::new("u", "a@example.com");
        let out = ContactUpsert {
            subscribed: Subscribed::respecting_opt_out(true),
            ..upsert.clone()
        };
        assert_eq!(wire(&out)["subscribed"], json!(false));
        let kept = ContactUpsert {
            subscribed: Subscribed::respecting_opt_out(false),
            ..upsert.clone()
        };
        assert!(wire(&kept).get("subscribed").is_none());
        let consent = Consent::given_by_person("rejoined on the preference page");
        assert_eq!(consent.reason(), "rejoined on the preference page");
        let back = ContactUpsert {
            subscribed: Subscribed::Resubscribe(consent),
            ..upsert
        };
        assert_eq!(wire(&back)["subscribed"], json!(true));
    }

    #[test]
    fn contacts_read_loops_answers_and_refuse_one_without_subscribed() {
        let c: RemoteContact = serde_json::from_value(json!({
            "id": "c1", "email": "a@example.com", "firstName": "Bob", "lastName": null,
            "source": "API", "subscribed": false, "userGroup": "", "userId": null,
            "mailingLists": {"l1": true}, "optInStatus": null, "plan": "pro"
        }))
        .unwrap();
        assert!(!c.subscribed);
        assert!(c.on_list("l1") && !c.on_list("l2"));
        assert_eq!((c.first_name.as_deref(), c.user_id), (Some("Bob"), None));
        let c: RemoteContact = serde_json::from_value(
            json!({"id": "c1", "email": "a@example.com", "subscribed": true, "mailingLists": null}),
        )
        .unwrap();
        assert!(c.mailing_lists.is_empty());
        assert!(
            serde_json::from_value::<RemoteContact>(json!({"id": "c1", "email": "a@x.org"}))
                .is_err()
        );
    }

    #[test]
    fn lists_read_loops_answers() {
        let lists: Vec<MailingList> = serde_json::from_value(json!([
            {"id": "l1", "name": "News", "description": null, "isPublic": true},
            {"id": "l2", "name": "Staff"}
        ]))
        .unwrap();
        assert!(lists[0].is_public && !lists[1].is_public);
        assert_eq!(lists[1].description, None);
    }
}
