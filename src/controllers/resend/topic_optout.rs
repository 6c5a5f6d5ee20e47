//! A choice made on Resend's hosted preference page flows back: a contact's topics are read (on
//! each `contact.updated` event, by any replica, and at each provider resync, by the leader) and
//! an `opt_out` on the topic of a public group becomes the pair's removal through
//! [`consent::create_removal`] (source `resend-topic`, its time, the event's id when there is
//! one). Never the other way round: an `opt_in` read from Resend deletes no removal and makes no
//! membership; rejoining is the person's act on a page that says so.
//!
//! Only a pair whose membership the Resend sync has mirrored counts: until then the topic may
//! still hold an earlier opt-out that a rejoin is about to lift (the membership is recorded
//! synced only after its `opt_in` landed), and reading it would send the person straight out
//! again. And only contacts that are members of a public group are read at all: one call per
//! address and resync, none for anyone else.

use std::collections::{BTreeMap, HashMap};

use kube::Api;

use super::ResendSync;
use super::topics::{key_of, public_groups_by_key};
use crate::api::ContactGroupMembership;
use crate::api::common::sync::SyncedObject;
use crate::api::common::{ObjectRef, ProviderName};
use crate::controllers::consent::{self, EVENT_ANNOTATION, Made, Provenance, source};
use crate::controllers::{Error, kubeapi};
use crate::providers::resend::events::ContactEvent;
use crate::providers::resend::topics::ContactTopic;
use crate::providers::resend::{ResendClient, ResendError};
use crate::view::{ClusterView, Store, SyncMarks};

fn object_ref(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// A pair a topic opt-out may end: the group, and the memberships of the pair (to check that one
/// is mirrored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The public group whose topic the person left.
    pub group: ObjectRef,
    /// The pair's memberships, `(namespace, name)`.
    pub memberships: Vec<(String, String)>,
}

/// Public groups `contact` is a member of, no removal covering the pair, by topic key.
fn member_groups<'g>(
    view: &Store,
    groups: &'g HashMap<String, (String, String)>,
    contact: &ObjectRef,
) -> Vec<(&'g str, Candidate)> {
    groups
        .iter()
        .filter_map(|(key, (namespace, name))| {
            let group = object_ref(namespace, name);
            let memberships: Vec<(String, String)> = view
                .memberships_of(contact, &group)
                .iter()
                .map(|m| (m.namespace.to_owned(), m.name.to_owned()))
                .collect();
            let open = !memberships.is_empty() && view.removals_of(contact, &group).is_empty();
            open.then_some((key.as_str(), Candidate { group, memberships }))
        })
        .collect()
}

/// The pairs of `contact` that `topics` (as Resend reports them) show the person left.
pub fn candidates(
    view: &Store,
    groups: &HashMap<String, (String, String)>,
    contact: &ObjectRef,
    topics: &[ContactTopic],
) -> Vec<Candidate> {
    let left: Vec<&str> = topics
        .iter()
        .filter(|t| t.opted_out())
        .filter_map(|t| key_of(&t.name))
        .collect();
    member_groups(view, groups, contact)
        .into_iter()
        .filter(|(key, _)| left.contains(key))
        .map(|(_, candidate)| candidate)
        .collect()
}

/// Creates the removals of `pairs` (`contact`, group) as `by` says; how many are new.
async fn remove(
    client: &kube::Client,
    pairs: &[(ObjectRef, ObjectRef)],
    by: &Provenance<'_>,
) -> Result<usize, kube::Error> {
    let mut made = 0;
    for (contact, group) in pairs {
        if consent::create_removal(client, contact, group, by).await? == Made::New {
            made += 1;
        }
    }
    Ok(made)
}

/// A `contact.updated` event (any replica): reads the contact's topics when the address is a
/// member of a public group, and turns an opt-out into the pair's removal, at the event's time
/// with its id. Returns how many removals were made.
pub async fn from_event(
    client: &kube::Client,
    resend: &ResendClient,
    view: &ClusterView,
    event: &ContactEvent,
) -> Result<usize, Error> {
    let (contacts, groups) = {
        let view = view.read();
        let groups = public_groups_by_key(&view);
        let contacts: Vec<ObjectRef> = view
            .contacts_by_email(&event.data.email)
            .map(|c| object_ref(c.key.namespace, c.key.name))
            .filter(|c| !member_groups(&view, &groups, c).is_empty())
            .collect();
        (contacts, groups)
    };
    if contacts.is_empty() {
        return Ok(0);
    }
    let topics = match resend.contact_topics(&event.data.id).await {
        Ok(topics) => topics,
        Err(ResendError::NotFound) => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let mut pairs = Vec::new();
    for contact in contacts {
        let found = candidates(&view.read(), &groups, &contact, &topics);
        for candidate in found {
            if mirrored_now(client, &candidate).await? {
                pairs.push((contact.clone(), candidate.group));
            }
        }
    }
    let by = Provenance {
        source: source::RESEND_TOPIC,
        at: event.created_at,
        evidence: Some((EVENT_ANNOTATION, &event.delivery)),
    };
    Ok(remove(client, &pairs, &by).await?)
}

/// Whether one of the candidate's memberships is mirrored to Resend, as the API server says
/// (a replica that does not lead keeps no sync marks).
async fn mirrored_now(client: &kube::Client, candidate: &Candidate) -> Result<bool, kube::Error> {
    for (namespace, name) in &candidate.memberships {
        let api: Api<ContactGroupMembership> = Api::namespaced(client.clone(), namespace);
        let Some(m) = kubeapi::get(&api, name).await? else {
            continue;
        };
        let conditions = m.status.as_ref().map(|s| s.conditions.as_slice());
        let marks = SyncMarks::read(
            &m.metadata,
            conditions.unwrap_or_default(),
            SyncedObject::Membership,
        );
        if m.metadata.deletion_timestamp.is_none() && marks.synced(ProviderName::Resend) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What one resync of topics found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicsResynced {
    /// Public groups whose topic was missing and was made.
    pub topics_created: usize,
    /// Addresses whose topics were read.
    pub contacts_read: usize,
    /// Removals made from opt-outs found.
    pub removals: usize,
}

/// Public groups the view holds mirrored to Resend.
fn mirrored_public_groups(view: &Store) -> Vec<(String, String)> {
    public_groups_by_key(view)
        .into_values()
        .filter(|(ns, name)| {
            view.group_sync(ns, name)
                .is_some_and(|g| !g.deleting && g.marks.synced(ProviderName::Resend))
        })
        .collect()
}

/// The addresses to read at a resync, each with its Contacts: members of a public group whose
/// topic exists, through a membership the sync mirrored, the pair not removed. One pass over the
/// memberships.
fn to_read(view: &Store, with_topic: &[(String, String)]) -> BTreeMap<String, Vec<ObjectRef>> {
    let with_topic: std::collections::HashSet<(&str, &str)> = with_topic
        .iter()
        .map(|(ns, name)| (ns.as_str(), name.as_str()))
        .collect();
    let mut by_email: BTreeMap<String, Vec<ObjectRef>> = BTreeMap::new();
    for (namespace, name) in view.names(crate::view::ViewKind::Membership) {
        let Some(m) = view.membership_sync(&namespace, &name) else {
            continue;
        };
        if !with_topic.contains(&(m.group.namespace, m.group.name))
            || m.deleting
            || !m.marks.synced(ProviderName::Resend)
        {
            continue;
        }
        let Some(c) = view.contact_sync(m.contact.namespace, m.contact.name) else {
            continue;
        };
        let contact = object_ref(m.contact.namespace, m.contact.name);
        let group = object_ref(m.group.namespace, m.group.name);
        if c.deleting || !view.removals_of(&contact, &group).is_empty() {
            continue;
        }
        let contacts = by_email.entry(c.email.to_lowercase()).or_default();
        if !contacts.contains(&contact) {
            contacts.push(contact);
        }
    }
    by_email
}

/// Whether a candidate's pair has a membership the view holds mirrored (the leader's marks).
fn mirrored_in(view: &Store, candidate: &Candidate) -> bool {
    candidate.memberships.iter().any(|(ns, name)| {
        view.membership_sync(ns, name)
            .is_some_and(|m| !m.deleting && m.marks.synced(ProviderName::Resend))
    })
}

/// The resync (leader): lists the topics, makes those public groups lack (groups mirrored before
/// topics existed get theirs here), then reads the topics of every member of a public group
/// (one call per address) and turns opt-outs into removals at the time they were seen.
pub async fn resync(sync: &ResendSync) -> Result<TopicsResynced, Error> {
    let mut done = TopicsResynced::default();
    let client = &sync.client;
    let ids = sync.topics.relist(client).await?;
    let groups = mirrored_public_groups(&sync.core.ctx.view.read());
    let mut with_topic = Vec::new();
    for (namespace, name) in groups {
        if !ids.contains_key(&super::topics::topic_key(&namespace, &name)) {
            let api: Api<crate::api::ContactGroup> =
                Api::namespaced(sync.core.ctx.client.clone(), &namespace);
            let Some(group) = kubeapi::get(&api, &name).await? else {
                continue;
            };
            sync.topics
                .ensure(client, &group, (&namespace, &name), false)
                .await?;
            done.topics_created += 1;
        }
        with_topic.push((namespace, name));
    }
    let (addresses, by_key) = {
        let view = sync.core.ctx.view.read();
        (to_read(&view, &with_topic), public_groups_by_key(&view))
    };
    let now = jiff::Timestamp::now();
    let by = Provenance {
        source: source::RESEND_TOPIC,
        at: jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
        evidence: None,
    };
    for (email, contacts) in addresses {
        let topics = match client.contact_topics(&email).await {
            Ok(topics) => topics,
            // Gone at Resend: drift repair makes it again, with its topics at their default.
            Err(ResendError::NotFound) => continue,
            Err(error) => return Err(error.into()),
        };
        done.contacts_read += 1;
        let pairs: Vec<(ObjectRef, ObjectRef)> = {
            let view = sync.core.ctx.view.read();
            contacts
                .iter()
                .flat_map(|contact| {
                    candidates(&view, &by_key, contact, &topics)
                        .into_iter()
                        .filter(|c| mirrored_in(&view, c))
                        .map(|c| (contact.clone(), c.group))
                })
                .collect()
        };
        done.removals += remove(&sync.core.ctx.client, &pairs, &by).await?;
    }
    Ok(done)
}
