//! Opt-outs from everything reported by a provider (Resend's `contact.updated`, a spam
//! complaint, Loops' `contact.unsubscribed`). Two halves, so that any replica can take the event
//! and only the leader acts on it:
//! - [`record`] / [`record_as`] / [`record_contact`] (any replica, from the events listener): a
//!   signed event sets the Contact's `Unsubscribed` condition (its reason names the provider, see
//!   [`Reason`], at the event's time); a later Resend `unsubscribed: false` clears it. Older
//!   events than the condition never overwrite it.
//! - [`apply`] (the leader, from the contact loop): for a condition not yet acted on, creates a
//!   ContactGroupMembershipRemoval for every **public** group the contact belongs to (private
//!   groups are administrative and stay) through [`consent::create_removal`], its source read from
//!   the condition's reason, then marks the condition done (its `observedGeneration`). Rejoining
//!   stays an explicit act: clearing the condition deletes no removal, and memberships made after
//!   the opt-out are left alone.

use std::collections::BTreeMap;

use kube::Api;
use serde_json::json;

use crate::api::Contact;
use crate::api::common::ObjectRef;
use crate::api::common::sync::UNSUBSCRIBED;
use crate::api::notification::{ContactGroupMembershipRemovalSpec, Visibility};
use crate::controllers::consent::{self, Provenance, source};
use crate::controllers::{Context, Error, ObjectKey, kubeapi, names};
use crate::view::ClusterView;

pub use crate::controllers::consent::{EVENT_ANNOTATION, SOURCE_ANNOTATION, TIME_ANNOTATION};

/// Field manager of the `Unsubscribed` condition: its own, so the sync's status applies (which
/// do not mention it) never remove it.
pub const FIELD_MANAGER: &str = "milo-webhook-optout";

/// How the condition's message names the event, so the leader can carry it onto removals.
const EVENT_MARK: &str = "event ";

/// The event id an `Unsubscribed` condition's message names, if any.
fn event_of(message: &str) -> Option<&str> {
    let (_, rest) = message.rsplit_once(&format!("({EVENT_MARK}"))?;
    rest.strip_suffix(')').filter(|id| !id.is_empty())
}
/// Reason of the condition an opt-out sets.
pub const REASON: &str = "ProviderUnsubscribe";

/// Records on every Contact with `email` that the person opted out (`unsubscribed`) or back in,
/// as of `at`. Returns how many Contacts changed. A Contact whose condition is as new or newer is
/// left alone, so late and repeated events change nothing.
pub async fn record(
    client: &kube::Client,
    view: &ClusterView,
    email: &str,
    unsubscribed: bool,
    at: jiff::Timestamp,
    event_id: &str,
) -> Result<usize, kube::Error> {
    let reason = if unsubscribed {
        Reason::ProviderUnsubscribe
    } else {
        Reason::ProviderResubscribe
    };
    record_as(client, view, email, reason, at, event_id).await
}

/// Why a person's opt-out condition changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// They opted out at Resend (reason [`REASON`]).
    ProviderUnsubscribe,
    /// They opted back in at Resend (clears the condition; rejoins nothing).
    ProviderResubscribe,
    /// They reported mail as spam (reason `Complaint`): an opt-out from every public group.
    Complaint,
    /// They unsubscribed from everything at Loops (reason [`LOOPS_REASON`]).
    LoopsUnsubscribe,
}

impl Reason {
    /// The condition's reason and message.
    fn condition(self) -> (&'static str, &'static str) {
        match self {
            Reason::ProviderUnsubscribe => (
                REASON,
                "the person opted out at Resend; they leave every public group",
            ),
            Reason::Complaint => (
                COMPLAINT_REASON,
                "the person reported mail as spam; they leave every public group",
            ),
            Reason::LoopsUnsubscribe => (
                LOOPS_REASON,
                "the person unsubscribed at Loops; they leave every public group",
            ),
            Reason::ProviderResubscribe => (
                "ProviderResubscribe",
                "the person opted back in at Resend; groups they left are not rejoined",
            ),
        }
    }
}

/// Reason of the condition a complaint sets.
pub const COMPLAINT_REASON: &str = "Complaint";
/// Reason of the condition Loops' `contact.unsubscribed` sets.
pub const LOOPS_REASON: &str = "LoopsUnsubscribe";

/// The removal source (see [`consent::source`]) of an `Unsubscribed` condition's reason.
fn removal_source(reason: &str) -> &'static str {
    match reason {
        COMPLAINT_REASON => source::RESEND_COMPLAINT,
        LOOPS_REASON => source::LOOPS_UNSUBSCRIBE,
        _ => source::RESEND_UNSUBSCRIBE,
    }
}

/// [`record`] with the reason named: a complaint opts out like an unsubscribe, and its removals
/// say so in their source annotation.
pub async fn record_as(
    client: &kube::Client,
    view: &ClusterView,
    email: &str,
    why: Reason,
    at: jiff::Timestamp,
    event_id: &str,
) -> Result<usize, kube::Error> {
    let contacts: Vec<(String, String)> = view
        .read()
        .contacts_by_email(email)
        .map(|c| (c.key.namespace.to_owned(), c.key.name.to_owned()))
        .collect();
    let mut changed = 0;
    for (namespace, name) in contacts {
        let api: Api<Contact> = Api::namespaced(client.clone(), &namespace);
        let Some(contact) = kubeapi::get(&api, &name).await? else {
            continue;
        };
        if record_contact(client, &contact, why, at, event_id).await? {
            changed += 1;
        }
    }
    Ok(changed)
}

/// [`record_as`] on one Contact, as read from the API server: for callers that found the person
/// otherwise (Loops names them by uid). Returns whether the condition changed.
pub async fn record_contact(
    client: &kube::Client,
    contact: &Contact,
    why: Reason,
    at: jiff::Timestamp,
    event_id: &str,
) -> Result<bool, kube::Error> {
    let unsubscribed = why != Reason::ProviderResubscribe;
    let current = contact
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == UNSUBSCRIBED));
    let wanted = if unsubscribed { "True" } else { "False" };
    let stale = current.is_some_and(|c| c.last_transition_time.0 >= at || c.status == wanted);
    if stale || (current.is_none() && !unsubscribed) {
        return Ok(false);
    }
    let (reason, message) = why.condition();
    let message = if event_id.is_empty() {
        message.to_owned()
    } else {
        format!("{message} ({EVENT_MARK}{event_id})")
    };
    let condition = json!({
        "type": UNSUBSCRIBED,
        "status": wanted,
        "reason": reason,
        "message": message,
        "lastTransitionTime": jiff::Timestamp::from_second(at.as_second()).unwrap_or(at),
    });
    let (namespace, name) = (
        contact.metadata.namespace.as_deref().unwrap_or_default(),
        contact.metadata.name.as_deref().unwrap_or_default(),
    );
    let api: Api<Contact> = Api::namespaced(client.clone(), namespace);
    kubeapi::apply_conditions_as(&api, name, vec![condition], FIELD_MANAGER).await?;
    Ok(true)
}

/// The removals an opt-out asks for: (namespace, name, spec) for every membership of the contact
/// in a public group that no removal covers yet.
pub fn removals_for(
    view: &crate::view::Store,
    contact: &ObjectKey,
) -> Vec<(String, ContactGroupMembershipRemovalSpec)> {
    let contact_ref = ObjectRef {
        namespace: contact.namespace.clone(),
        name: contact.name.clone(),
    };
    let mut wanted = BTreeMap::new();
    for m in view.memberships_of_contact(&contact.namespace, &contact.name) {
        let Some((_, group_ref)) = view.membership(m.namespace, m.name) else {
            continue;
        };
        let public = view
            .group(&group_ref.namespace, &group_ref.name)
            .is_some_and(|g| g.visibility == Visibility::Public);
        if !public || !view.removals_of(&contact_ref, &group_ref).is_empty() {
            continue;
        }
        let name = names::unsubscribe_removal(
            (&contact.namespace, &contact.name),
            (&group_ref.namespace, &group_ref.name),
        );
        wanted.insert(
            name,
            ContactGroupMembershipRemovalSpec {
                contact_ref: contact_ref.clone(),
                contact_group_ref: group_ref,
            },
        );
    }
    wanted.into_iter().collect()
}

/// Acts on a contact's pending opt-out (leader only): creates its removals in the contact's
/// namespace, then marks the condition done.
pub async fn apply(ctx: &Context, contact: &ObjectKey) -> Result<(), Error> {
    let api: Api<Contact> = Api::namespaced(ctx.client.clone(), &contact.namespace);
    let Some(current) = kubeapi::get(&api, &contact.name).await? else {
        return Ok(());
    };
    let Some(condition) = current
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == UNSUBSCRIBED))
        .filter(|c| c.status == "True" && c.observed_generation.is_none())
        .cloned()
    else {
        return Ok(());
    };
    let removals = removals_for(&ctx.view.read(), contact);
    let at = condition.last_transition_time.0;
    let source = removal_source(&condition.reason);
    let by = Provenance {
        source,
        at,
        evidence: event_of(&condition.message).map(|event| (EVENT_ANNOTATION, event)),
    };
    for (_, spec) in &removals {
        consent::create_removal(&ctx.client, &spec.contact_ref, &spec.contact_group_ref, &by)
            .await?;
    }
    ctx.event(
        &kube::Resource::object_ref(&current, &()),
        "ProviderUnsubscribe",
        "OptOut",
        format!(
            "opted out ({source}) at {at}: left {} public group(s)",
            removals.len()
        ),
    )
    .await;
    let mut done = serde_json::to_value(&condition).map_err(|e| Error::Invalid(e.to_string()))?;
    done["observedGeneration"] = json!(current.metadata.generation.unwrap_or(1));
    kubeapi::apply_conditions_as(&api, &contact.name, vec![done], FIELD_MANAGER).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_event_id_is_read_back_from_the_message() {
        assert_eq!(
            super::event_of(
                "the person opted out at Resend; they leave every public group (event msg_2Ab)"
            ),
            Some("msg_2Ab")
        );
        assert_eq!(super::event_of("no event here"), None);
        assert_eq!(super::event_of("empty (event )"), None);
    }
}
