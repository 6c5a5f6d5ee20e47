//! What Loops' events change in the cluster. Any replica takes them from the provider events
//! listener, which has already checked the signature and that the delivery is new; what each
//! event does is decided in [`super::plan`]:
//!
//! - `contact.mailingList.unsubscribed`: for each **public** group bound to the list, the pair's
//!   removal ([`consent::create_removal`], source `loops-unsubscribe`, the event's time and id);
//!   for each **private** one, the person's memberships stay and are marked
//!   [`LOOPS_UNSUBSCRIBED`](crate::api::common::sync::LOOPS_UNSUBSCRIBED) True under
//!   [`FIELD_MANAGER`].
//! - `contact.mailingList.subscribed`: for a public group, a removal that a provider or link
//!   opt-out made is undone and the membership made again ([`consent::rejoin`], source
//!   `loops-subscribe`); a removal made in the cluster stays. For a private group the mark goes
//!   False.
//! - `contact.unsubscribed`: the Contact's `Unsubscribed` condition, as Resend's opt-out
//!   ([`optout::record_contact`], reason `LoopsUnsubscribe`); the leader's
//!   [`optout::apply`] then removes the person from public groups only.
//!
//! An event about a list no group is bound to, or a person no Contact is, changes nothing and is
//! acknowledged ([`EventOutcome::Unknown`]): other systems may share the Loops account. Until the
//! view has synced, events are refused (503) so that Loops retries: a replica still listing
//! cannot tell an unknown person from one not yet seen.

use std::sync::Arc;

use futures::future::BoxFuture;
use kube::Api;
use kube::api::ListParams;

use super::plan::{self, ListChange, Step};
use crate::api::common::ObjectRef;
use crate::api::common::sync::LOOPS_UNSUBSCRIBED;
use crate::api::{Contact, ContactGroup, ContactGroupMembership};
use crate::controllers::consent::{
    self, EVENT_ANNOTATION, JOIN_EVENT_ANNOTATION, Made, Provenance, Rejoined, source,
};
use crate::controllers::resend::optout;
use crate::controllers::{ObjectKey, kubeapi};
use crate::providers::loops::events::{ContactIdentity, Delivery, ListEvent, LoopsEvent};
use crate::server::provider_events::{EventOutcome, ProviderEventSink, SinkError, Unmatched};
use crate::view::ClusterView;

/// Field manager of the [`LOOPS_UNSUBSCRIBED`] condition: its own, so no other writer's status
/// apply removes it.
pub const FIELD_MANAGER: &str = "milo-webhook-loops-events";

/// Acts on Loops' events (see the module documentation).
pub struct LoopsEventSink {
    client: kube::Client,
    view: Arc<ClusterView>,
}

impl LoopsEventSink {
    /// A sink writing through `client`, finding Contacts by email in `view`.
    pub fn new(client: kube::Client, view: Arc<ClusterView>) -> Self {
        Self { client, view }
    }
}

impl ProviderEventSink for LoopsEventSink {
    fn loops_event(
        &self,
        delivery: Delivery,
    ) -> BoxFuture<'static, Result<EventOutcome, SinkError>> {
        let client = self.client.clone();
        let view = self.view.clone();
        Box::pin(async move { handle(&client, &view, delivery).await })
    }
}

fn failed(what: &str, error: impl std::fmt::Display) -> SinkError {
    SinkError(format!("{what}: {error}"))
}

/// Acts on one verified, first-seen delivery.
pub async fn handle(
    client: &kube::Client,
    view: &ClusterView,
    delivery: Delivery,
) -> Result<EventOutcome, SinkError> {
    if matches!(delivery.event, LoopsEvent::Unknown { .. }) {
        return Ok(EventOutcome::Ignored);
    }
    if !view.is_synced() {
        return Err(SinkError("the cluster view is still syncing".into()));
    }
    let (change, event) = match delivery.event {
        LoopsEvent::MailingListUnsubscribed(event) => (ListChange::Left, event),
        LoopsEvent::MailingListSubscribed(event) => (ListChange::Joined, event),
        LoopsEvent::Unsubscribed(event) => {
            let contacts = people(client, view, &event.contact)
                .await
                .map_err(|e| failed("cannot read the Contact", e))?;
            if contacts.is_empty() {
                return Ok(EventOutcome::Unknown(Unmatched::Contact));
            }
            let mut changed = false;
            for contact in &contacts {
                let reason = optout::Reason::LoopsUnsubscribe;
                changed |=
                    optout::record_contact(client, contact, reason, event.time, &delivery.id)
                        .await
                        .map_err(|e| failed("cannot record the opt-out", e))?;
            }
            return Ok(applied(changed));
        }
        LoopsEvent::Unknown { .. } => return Ok(EventOutcome::Ignored),
    };
    list_event(client, view, change, &event, &delivery.id).await
}

fn applied(changed: bool) -> EventOutcome {
    if changed {
        EventOutcome::Applied
    } else {
        EventOutcome::Ignored
    }
}

/// The Contacts `identity` names (see [`plan::is_person`]): found by email in the view, then read
/// from the API server, which has their uid.
async fn people(
    client: &kube::Client,
    view: &ClusterView,
    identity: &ContactIdentity,
) -> Result<Vec<Contact>, kube::Error> {
    let candidates: Vec<(String, String)> = view
        .read()
        .contacts_by_email(&identity.email)
        .map(|c| (c.key.namespace.to_owned(), c.key.name.to_owned()))
        .collect();
    let mut people = Vec::new();
    for (namespace, name) in candidates {
        let api: Api<Contact> = Api::namespaced(client.clone(), &namespace);
        if let Some(contact) = kubeapi::get(&api, &name).await?
            && contact.metadata.deletion_timestamp.is_none()
            && plan::is_person(&contact, identity)
        {
            people.push(contact);
        }
    }
    Ok(people)
}

/// The groups bound to the Loops list `list_id`, listed from the API server (groups are few, and
/// the view does not keep their providers).
async fn groups_bound_to(
    client: &kube::Client,
    list_id: &str,
) -> Result<Vec<ContactGroup>, kube::Error> {
    let api: Api<ContactGroup> = Api::all(client.clone());
    let groups = api.list(&ListParams::default()).await?;
    Ok(groups
        .items
        .into_iter()
        .filter(|g| plan::bound_to(g, list_id))
        .collect())
}

fn object_ref<K: kube::Resource>(object: &K) -> ObjectRef {
    ObjectRef {
        namespace: object.meta().namespace.clone().unwrap_or_default(),
        name: object.meta().name.clone().unwrap_or_default(),
    }
}

/// A person left or rejoined a list.
async fn list_event(
    client: &kube::Client,
    view: &ClusterView,
    change: ListChange,
    event: &ListEvent,
    event_id: &str,
) -> Result<EventOutcome, SinkError> {
    let groups = groups_bound_to(client, &event.list.id)
        .await
        .map_err(|e| failed("cannot list ContactGroups", e))?;
    if groups.is_empty() {
        return Ok(EventOutcome::Unknown(Unmatched::List));
    }
    let contacts = people(client, view, &event.contact)
        .await
        .map_err(|e| failed("cannot read the Contact", e))?;
    if contacts.is_empty() {
        return Ok(EventOutcome::Unknown(Unmatched::Contact));
    }
    let mut changed = false;
    for contact in &contacts {
        let contact = object_ref(contact);
        for group in &groups {
            let group_ref = object_ref(group);
            let memberships: Vec<ObjectKey> = view
                .read()
                .memberships_of(&contact, &group_ref)
                .iter()
                .map(|m| ObjectKey::new(m.namespace, m.name))
                .collect();
            let step = plan::step(change, group.spec.visibility, memberships);
            changed |=
                carry_out(client, view, step, (&contact, &group_ref), event, event_id).await?;
        }
    }
    Ok(applied(changed))
}

/// Carries out one group's step; returns whether the cluster changed.
async fn carry_out(
    client: &kube::Client,
    view: &ClusterView,
    step: Step,
    (contact, group): (&ObjectRef, &ObjectRef),
    event: &ListEvent,
    event_id: &str,
) -> Result<bool, SinkError> {
    let pair = format!(
        "{}/{} in {}/{}",
        contact.namespace, contact.name, group.namespace, group.name
    );
    match step {
        Step::OptOut => {
            let by = Provenance {
                source: source::LOOPS_UNSUBSCRIBE,
                at: event.time,
                evidence: Some((EVENT_ANNOTATION, event_id)),
            };
            let made = consent::create_removal(client, contact, group, &by)
                .await
                .map_err(|e| failed("cannot create the removal", e))?;
            tracing::info!(
                pair,
                event = event_id,
                new = made == Made::New,
                "left a public group's list at Loops: opted out"
            );
            Ok(made == Made::New)
        }
        Step::Rejoin => {
            let by = Provenance {
                source: source::LOOPS_SUBSCRIBE,
                at: event.time,
                evidence: Some((JOIN_EVENT_ANNOTATION, event_id)),
            };
            let rejoined = consent::rejoin(client, view, contact, group, &by)
                .await
                .map_err(|e| failed("cannot rejoin", e))?;
            tracing::info!(pair, event = event_id, outcome = ?rejoined, "rejoined a public group's list at Loops");
            Ok(rejoined == Rejoined::Rejoined)
        }
        Step::Mark {
            memberships,
            opted_out,
        } => {
            let mut changed = false;
            for key in memberships {
                changed |= mark(client, &key, opted_out, event, event_id).await?;
            }
            Ok(changed)
        }
        Step::Nothing => Ok(false),
    }
}

/// Marks one membership of a private group (see [`plan::mark`]).
async fn mark(
    client: &kube::Client,
    key: &ObjectKey,
    opted_out: bool,
    event: &ListEvent,
    event_id: &str,
) -> Result<bool, SinkError> {
    let api: Api<ContactGroupMembership> = Api::namespaced(client.clone(), &key.namespace);
    let Some(membership) = kubeapi::get(&api, &key.name)
        .await
        .map_err(|e| failed("cannot read the membership", e))?
    else {
        return Ok(false);
    };
    let current = membership
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == LOOPS_UNSUBSCRIBED));
    let Some(condition) = plan::mark(current, opted_out, event.time, event_id) else {
        return Ok(false);
    };
    kubeapi::apply_conditions_as(&api, &key.name, vec![condition], FIELD_MANAGER)
        .await
        .map_err(|e| failed("cannot mark the membership", e))?;
    tracing::info!(membership = %key, opted_out, event = event_id, "private group's list changed at Loops: membership marked");
    Ok(true)
}
