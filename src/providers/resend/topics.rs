//! Resend topics: named subjects a contact is subscribed to (`opt_in`) or not (`opt_out`), shown on
//! Resend's hosted preference page, where the person chooses per topic. A mail sent with a
//! topic's id reaches only contacts subscribed to it.
//!
//! The write of a subscription is typed ([`Subscription`]), so a caller says which way it means;
//! what Resend reports is kept as its text, so a value Resend adds later reads as "not opted out"
//! rather than failing the whole read.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{HasId, ResendClient, ResendError, json_body};
use super::types::Created;

/// The most Resend keeps of a topic's name.
pub const NAME_LIMIT: usize = 50;
/// The most Resend keeps of a topic's description.
pub const DESCRIPTION_LIMIT: usize = 200;

/// A topic as Resend lists it. Unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RemoteTopic {
    /// Resend's id for it.
    pub id: String,
    /// Its name (at most [`NAME_LIMIT`] characters).
    pub name: String,
    /// `opt_in` or `opt_out`: what a contact who never chose is.
    #[serde(default)]
    pub default_subscription: Option<String>,
    /// `public` (on every contact's preference page) or `private`.
    #[serde(default)]
    pub visibility: Option<String>,
}

/// A contact's subscription to one topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    /// Subscribed: mail sent with the topic reaches them.
    OptIn,
    /// Not subscribed.
    OptOut,
}

/// The body of `POST /topics`. The default subscription cannot be changed after creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NewTopic {
    /// At most [`NAME_LIMIT`] characters.
    pub name: String,
    /// At most [`DESCRIPTION_LIMIT`] characters; omitted when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What a contact who never chose is.
    pub default_subscription: Subscription,
    /// `public`: every contact sees it on the preference page and may choose.
    pub visibility: &'static str,
}

/// One topic of a contact, as `GET /contacts/{id}/topics` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ContactTopic {
    /// The topic's id.
    pub id: String,
    /// The topic's name.
    #[serde(default)]
    pub name: String,
    /// `opt_in` or `opt_out` (kept as text: see the module's notes).
    #[serde(default)]
    pub subscription: String,
}

impl ContactTopic {
    /// Whether the person is out of this topic.
    pub fn opted_out(&self) -> bool {
        self.subscription == "opt_out"
    }
}

/// One change of `PATCH /contacts/{id}/topics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TopicChange {
    /// The topic's id.
    pub id: String,
    /// What the contact becomes.
    pub subscription: Subscription,
}

impl HasId for RemoteTopic {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for ContactTopic {
    fn id(&self) -> &str {
        &self.id
    }
}

impl ResendClient {
    /// Every topic of the account, across all pages.
    pub async fn list_topics(&self) -> Result<Vec<RemoteTopic>, ResendError> {
        self.list_all("list_topics", &["topics"], None).await
    }

    /// Creates a topic and returns its id. Resend does not refuse a duplicate name, so callers
    /// look in [`list_topics`](Self::list_topics) first.
    pub async fn create_topic(&self, topic: &NewTopic) -> Result<String, ResendError> {
        let url = self.url(&["topics"]);
        let created: Created = self
            .execute("create_topic", Method::POST, url, Some(json_body(topic)?))
            .await?
            .into_result()?
            .json()?;
        Ok(created.id)
    }

    /// Deletes a topic; `false` when it did not exist.
    pub async fn delete_topic(&self, id: &str) -> Result<bool, ResendError> {
        let url = self.url(&["topics", id]);
        self.execute("delete_topic", Method::DELETE, url, None)
            .await?
            .existed()
    }

    /// The topics of a contact (id or email) with its subscription to each, across all pages.
    /// [`ResendError::NotFound`] when the contact is gone.
    pub async fn contact_topics(&self, contact: &str) -> Result<Vec<ContactTopic>, ResendError> {
        self.list_all("contact_topics", &["contacts", contact, "topics"], None)
            .await
    }

    /// Sets a contact's (id or email) subscription to the topics named; the others keep theirs.
    /// [`ResendError::NotFound`] when the contact (or a topic) is gone.
    pub async fn update_contact_topics(
        &self,
        contact: &str,
        changes: &[TopicChange],
    ) -> Result<(), ResendError> {
        #[derive(Serialize)]
        struct Body<'a> {
            topics: &'a [TopicChange],
        }
        let url = self.url(&["contacts", contact, "topics"]);
        let body = json_body(&Body { topics: changes })?;
        self.execute("update_contact_topics", Method::PATCH, url, Some(body))
            .await?
            .into_result()
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes_are_resends() {
        let topic = NewTopic {
            name: "News (abc)".into(),
            description: None,
            default_subscription: Subscription::OptIn,
            visibility: "public",
        };
        assert_eq!(
            serde_json::to_value(&topic).unwrap(),
            serde_json::json!({"name": "News (abc)", "default_subscription": "opt_in", "visibility": "public"})
        );
        let change = TopicChange {
            id: "t1".into(),
            subscription: Subscription::OptOut,
        };
        assert_eq!(
            serde_json::to_value(&change).unwrap(),
            serde_json::json!({"id": "t1", "subscription": "opt_out"})
        );
        let read: ContactTopic =
            serde_json::from_str(r#"{"id":"t1","name":"N","subscription":"opt_out"}"#).unwrap();
        assert!(read.opted_out());
        let unknown: ContactTopic =
            serde_json::from_str(r#"{"id":"t1","subscription":"paused"}"#).unwrap();
        assert!(!unknown.opted_out());
    }
}
