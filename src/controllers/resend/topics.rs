//! Public ContactGroup -> Resend topic, so a person can leave one group on Resend's hosted
//! preference page. Each public group gets a topic (`default_subscription: opt_in`, public
//! visibility): a member needs no call of their own, since everyone is in a topic until they
//! leave it. What follows the cluster: a removal of a member opts them out of the topic, a rejoin
//! opts them in again (see [`super::membership`]); what comes back: see [`super::topic_optout`].
//!
//! Where the topic's id lives: nowhere in the cluster. Its name carries a key derived from the
//! group's namespace and name (`<display name> (<key>)`, within Resend's 50 characters), so the
//! topic is found again in one listing of the account's topics (shared, like the segments'),
//! after a restart or by another replica, and a contact's topics as Resend reports them (with
//! their names) map back to groups on any replica without a listing. So no status field is
//! written that Milo's CRDs would have to declare. The display name in it is what the person
//! sees; the key keeps it unique and survives a rename of the group's display name.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::api::ContactGroup;
use crate::api::notification::Visibility;
use crate::controllers::names;
use crate::providers::resend::topics::{DESCRIPTION_LIMIT, NAME_LIMIT, NewTopic, Subscription};
use crate::providers::resend::{ResendClient, ResendError};
use crate::view::Store;

/// Hex digits of a topic key.
const KEY_DIGITS: usize = 10;

/// The key in the topic name of the group `namespace/name`: hex digits of a hash of both, so a
/// group recreated under the same name finds its topic again (its old one is deleted with it).
pub fn topic_key(namespace: &str, name: &str) -> String {
    names::short_hash(&["resend-topic", namespace, name])
}

/// The topic name of a group: its display name, cut to fit, and its key in parentheses.
pub fn topic_name(display_name: &str, namespace: &str, name: &str) -> String {
    let key = topic_key(namespace, name);
    let room = NAME_LIMIT - key.len() - 3;
    let cut: String = display_name.chars().take(room).collect();
    let label = cut.trim();
    if label.is_empty() {
        format!("({key})")
    } else {
        format!("{label} ({key})")
    }
}

/// The key a topic name carries, when it is one of ours.
pub fn key_of(topic_name: &str) -> Option<&str> {
    let inner = topic_name.strip_suffix(')')?;
    let start = inner.rfind('(')?;
    let key = &inner[start + 1..];
    (key.len() == KEY_DIGITS && key.bytes().all(|b| b.is_ascii_hexdigit())).then_some(key)
}

/// The public groups of the view by topic key (a key two groups share is left out: neither can
/// be told from the other, so neither is acted on).
pub fn public_groups_by_key(view: &Store) -> HashMap<String, (String, String)> {
    let mut by_key: HashMap<String, Option<(String, String)>> = HashMap::new();
    for (namespace, name) in view.names(crate::view::ViewKind::ContactGroup) {
        let public = view
            .group(&namespace, &name)
            .is_some_and(|g| g.visibility == Visibility::Public);
        if public {
            by_key
                .entry(topic_key(&namespace, &name))
                .and_modify(|seen| *seen = None)
                .or_insert(Some((namespace, name)));
        }
    }
    by_key
        .into_iter()
        .filter_map(|(key, group)| Some((key, group?)))
        .collect()
}

/// The body creating a group's topic.
fn new_topic(group: &ContactGroup, namespace: &str, name: &str) -> NewTopic {
    let description = group
        .spec
        .description
        .as_deref()
        .map(|d| d.chars().take(DESCRIPTION_LIMIT).collect::<String>())
        .filter(|d| !d.trim().is_empty());
    NewTopic {
        name: topic_name(&group.spec.display_name, namespace, name),
        description,
        default_subscription: Subscription::OptIn,
        visibility: "public",
    }
}

/// The account's topics by key, as last listed and since written (leader only). Only this process
/// makes our topics while it leads (and notes each one), so a listing stays complete until
/// drift repair lists again: a leave or a rejoin costs no listing of its own.
pub struct Topics {
    listing: tokio::sync::Mutex<Option<(Instant, HashMap<String, String>)>>,
    /// How long a listing answers look-ups (a few resync periods).
    max_age: Duration,
}

impl Topics {
    /// No listing yet; one answers look-ups for `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            listing: tokio::sync::Mutex::new(None),
            max_age,
        }
    }

    /// The id of the topic with `key`, from a recent listing unless `fresh`.
    pub async fn lookup(
        &self,
        client: &ResendClient,
        key: &str,
        fresh: bool,
    ) -> Result<Option<String>, ResendError> {
        let mut listing = self.listing.lock().await;
        if !fresh
            && let Some((at, ids)) = listing.as_ref()
            && at.elapsed() < self.max_age
        {
            return Ok(ids.get(key).cloned());
        }
        let ids = by_key(client).await?;
        let found = ids.get(key).cloned();
        *listing = Some((Instant::now(), ids));
        Ok(found)
    }

    /// Every topic id by key, listed now (drift repair): the look-ups' listing is renewed too.
    pub async fn relist(
        &self,
        client: &ResendClient,
    ) -> Result<HashMap<String, String>, ResendError> {
        let ids = by_key(client).await?;
        *self.listing.lock().await = Some((Instant::now(), ids.clone()));
        Ok(ids)
    }

    async fn note(&self, key: &str, id: Option<&str>) {
        if let Some((_, ids)) = self.listing.lock().await.as_mut() {
            match id {
                Some(id) => ids.insert(key.to_owned(), id.to_owned()),
                None => ids.remove(key),
            };
        }
    }

    /// The id of the topic of the public `group`: found in a listing, else created. `fresh`
    /// lists anew (drift repair doubts the listing).
    pub async fn ensure(
        &self,
        client: &ResendClient,
        group: &ContactGroup,
        (namespace, name): (&str, &str),
        fresh: bool,
    ) -> Result<String, ResendError> {
        let key = topic_key(namespace, name);
        if let Some(id) = self.lookup(client, &key, fresh).await? {
            return Ok(id);
        }
        match client
            .create_topic(&new_topic(group, namespace, name))
            .await
        {
            Ok(id) => {
                self.note(&key, Some(&id)).await;
                Ok(id)
            }
            Err(error) => {
                // Made with its answer lost, perhaps: the next attempt lists again.
                *self.listing.lock().await = None;
                Err(error)
            }
        }
    }

    /// Deletes the topic of the group `namespace/name`, if it has one.
    pub async fn delete(
        &self,
        client: &ResendClient,
        (namespace, name): (&str, &str),
    ) -> Result<(), ResendError> {
        let key = topic_key(namespace, name);
        if let Some(id) = self.lookup(client, &key, false).await? {
            client.delete_topic(&id).await?;
            self.note(&key, None).await;
        }
        Ok(())
    }

    /// Sets `contact`'s (id or email) subscription to the topic of the group `namespace/name`:
    /// one call, none when the group has no topic. A contact Resend does not have is done.
    pub async fn subscribe(
        &self,
        client: &ResendClient,
        contact: &str,
        (namespace, name): (&str, &str),
        subscription: Subscription,
    ) -> Result<(), ResendError> {
        let key = topic_key(namespace, name);
        let Some(id) = self.lookup(client, &key, false).await? else {
            return Ok(());
        };
        let change = crate::providers::resend::topics::TopicChange { id, subscription };
        match client.update_contact_topics(contact, &[change]).await {
            Ok(()) | Err(ResendError::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Our topics' ids by key, listed now.
async fn by_key(client: &ResendClient) -> Result<HashMap<String, String>, ResendError> {
    Ok(client
        .list_topics()
        .await?
        .into_iter()
        .filter_map(|t| Some((key_of(&t.name)?.to_owned(), t.id)))
        .collect())
}

/// The topic id of the group `namespace/name`, listed now (the broadcast sender's one look-up per
/// broadcast); `None` when it has none yet.
pub async fn find(
    client: &ResendClient,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, ResendError> {
    Ok(by_key(client).await?.remove(&topic_key(namespace, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_resend_and_carry_the_key_back() {
        let name = topic_name("Product news", "people", "news");
        assert!(name.starts_with("Product news ("), "{name}");
        assert_eq!(key_of(&name), Some(topic_key("people", "news").as_str()));
        let long = topic_name(&"é".repeat(300), "people", "news");
        assert_eq!(long.chars().count(), NAME_LIMIT, "{long}");
        assert_eq!(key_of(&long), Some(topic_key("people", "news").as_str()));
        assert_eq!(key_of(&topic_name("  ", "a", "b")).map(str::len), Some(10));
        assert_ne!(topic_key("a", "b"), topic_key("b", "a"));
        assert_eq!(topic_key("a", "b").len(), KEY_DIGITS);
        // Names of topics made by others are not ours.
        for other in ["Weekly", "News (12)", "News (zzzzzzzzzz)", "x)", "(", ""] {
            assert_eq!(key_of(other), None, "{other}");
        }
    }
}
