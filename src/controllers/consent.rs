//! What every path that opts a person out of a group on their behalf shares, and what undoes it
//! when they come back: Resend's opt-outs ([`super::resend::optout`]), one-click links
//! ([`super::resend::oneclick`]) and Loops' list events ([`super::loops::events`]).
//!
//! - [`create_removal`] makes the pair's ContactGroupMembershipRemoval in the contact's namespace,
//!   named `unsubscribe-<contact>-<group>-<hash>` ([`names::unsubscribe_removal`]), so a retry, a
//!   restart or another replica finds the one made before, and annotated with what made it, when
//!   and on what evidence ([`Provenance`]): the consent audit trail. A removal of the pair that
//!   someone else made already opts the person out; the webhook then refuses ours as a duplicate,
//!   which counts as done.
//! - [`rejoin`] undoes only what a provider or a link did: when every removal of the pair was
//!   made by one of [`REJOINABLE`] before the person rejoined, they are deleted and the
//!   membership is made again (`rejoin-<contact>-<group>-<hash>`, annotated like a removal). A
//!   removal an operator or the person made in the cluster (any other source, or none), a
//!   complaint, or an opt-out newer than the rejoin stays, and the rejoin changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Api;

use super::{kubeapi, names};
use crate::api::common::ObjectRef;
use crate::api::notification::{ContactGroupMembershipRemovalSpec, ContactGroupMembershipSpec};
use crate::api::{ContactGroupMembership, ContactGroupMembershipRemoval};
use crate::server::unsubscribe::Named;
use crate::view::ClusterView;

pub use crate::api::consent::{
    EVENT_ANNOTATION, JOIN_EVENT_ANNOTATION, JOIN_SOURCE_ANNOTATION, JOIN_TIME_ANNOTATION,
    REJOINABLE, SOURCE_ANNOTATION, TIME_ANNOTATION, source,
};

/// What made a removal or membership on the person's behalf, when, and on what evidence.
#[derive(Clone, Copy, Debug)]
pub struct Provenance<'a> {
    /// One of [`source`]'s values.
    pub source: &'a str,
    /// When the person acted.
    pub at: jiff::Timestamp,
    /// The annotation naming the evidence (the event id, a token's digest) and its value; left
    /// out when the value is empty.
    pub evidence: Option<(&'a str, &'a str)>,
}

impl Provenance<'_> {
    /// The annotations recording it under `source_key` and `time_key`.
    fn annotations(&self, source_key: &str, time_key: &str) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::from([
            (source_key.to_owned(), self.source.to_owned()),
            (time_key.to_owned(), self.at.to_string()),
        ]);
        if let Some((key, value)) = self.evidence.filter(|(_, v)| !v.is_empty()) {
            annotations.insert(key.to_owned(), value.to_owned());
        }
        annotations
    }
}

/// What [`create_removal`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Made {
    /// The removal was created now.
    New,
    /// The pair was already opted out: by the removal made before (a retry), or by another one.
    Existing,
}

/// Opts `contact` out of `group` on the person's behalf, as `by` says: the pair's removal, in the
/// contact's namespace, once.
pub async fn create_removal(
    client: &kube::Client,
    contact: &ObjectRef,
    group: &ObjectRef,
    by: &Provenance<'_>,
) -> Result<Made, kube::Error> {
    let name = names::unsubscribe_removal(
        (&contact.namespace, &contact.name),
        (&group.namespace, &group.name),
    );
    let spec = ContactGroupMembershipRemovalSpec {
        contact_ref: contact.clone(),
        contact_group_ref: group.clone(),
    };
    let mut removal = ContactGroupMembershipRemoval::new(&name, spec);
    removal.metadata.namespace = Some(contact.namespace.clone());
    removal.metadata.annotations = Some(by.annotations(SOURCE_ANNOTATION, TIME_ANNOTATION));
    let api: Api<ContactGroupMembershipRemoval> =
        Api::namespaced(client.clone(), &contact.namespace);
    match kubeapi::create(&api, &removal).await {
        Ok(kubeapi::Created::New) => Ok(Made::New),
        Ok(kubeapi::Created::AlreadyExisted) => Ok(Made::Existing),
        // Another removal of the pair already opts the person out.
        Err(error) if kubeapi::denial_causes(&error).contains(&"FieldValueDuplicate") => {
            Ok(Made::Existing)
        }
        Err(error) => Err(error),
    }
}

/// The object a link names, when it is still that very object (same uid): a link outlives the
/// object it was made for, and a recreated object of the same name is not the one it meant.
pub async fn current<K>(client: &kube::Client, named: &Named) -> Result<Option<K>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &named.namespace);
    Ok(kubeapi::get(&api, &named.name)
        .await?
        .filter(|o| o.meta().uid.as_deref() == Some(named.uid.as_str())))
}

/// The reference to what `named` names.
pub fn object_ref(named: &Named) -> ObjectRef {
    ObjectRef {
        namespace: named.namespace.clone(),
        name: named.name.clone(),
    }
}

/// When the person opted out, as `removal` records it: its time annotation, else its creation.
fn opted_out_at(removal: &ContactGroupMembershipRemoval) -> Option<jiff::Timestamp> {
    let recorded = removal
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TIME_ANNOTATION))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    recorded.or_else(|| removal.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Whether a rejoin at `at` may undo `removal`: a provider or link opt-out
/// ([`REJOINABLE`]) made strictly before the rejoin. An opt-out in the same second or later is
/// the person's newer word, and stays.
pub fn undoable(removal: &ContactGroupMembershipRemoval, at: jiff::Timestamp) -> bool {
    let source = removal
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SOURCE_ANNOTATION));
    crate::api::consent::made_by_person(source.map(String::as_str))
        && opted_out_at(removal).is_some_and(|t| t < at)
}

/// What a [`rejoin`] did for one pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejoined {
    /// The opt-out was undone and the membership made again (or found made by an earlier try).
    Rejoined,
    /// No removal opts the person out of the group: nothing to undo.
    NotOptedOut,
    /// A removal the rejoin may not undo (see [`undoable`]): everything stays.
    Kept,
}

/// Why a rejoin could not finish now; the caller answers so that the provider retries.
#[derive(Debug, thiserror::Error)]
pub enum RejoinError {
    /// The API server failed or refused.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// Something must settle first (a membership still being deleted, a removal changed under us).
    #[error("{0}")]
    NotYet(String),
}

/// How long a rejoin waits for the view to stop showing the removals it deleted, so that the
/// webhook (which admits the membership from its own view) no longer sees them either.
const REMOVALS_GONE_WAIT: Duration = Duration::from_secs(3);
/// Pauses before the membership's create is tried again while the webhook still sees a removal.
const CREATE_RETRIES: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(750),
    Duration::from_millis(1500),
];

/// The person rejoined `group` at a provider, as `by` says: when every removal of the pair may be
/// undone ([`undoable`]), deletes them and makes the membership again in the contact's
/// namespace. Removals are read from the API server, not the view: they are what is deleted.
pub async fn rejoin(
    client: &kube::Client,
    view: &ClusterView,
    contact: &ObjectRef,
    group: &ObjectRef,
    by: &Provenance<'_>,
) -> Result<Rejoined, RejoinError> {
    let listed: Vec<(String, String)> = view
        .read()
        .removals_of(contact, group)
        .iter()
        .map(|r| (r.namespace.to_owned(), r.name.to_owned()))
        .collect();
    let mut removals = Vec::new();
    for (namespace, name) in &listed {
        let api: Api<ContactGroupMembershipRemoval> = Api::namespaced(client.clone(), namespace);
        removals.extend(kubeapi::get(&api, name).await?);
    }
    if removals.is_empty() {
        return Ok(Rejoined::NotOptedOut);
    }
    if !removals.iter().all(|r| undoable(r, by.at)) {
        return Ok(Rejoined::Kept);
    }
    // The membership the opt-out ended may still be finishing its deletion (a provider's
    // finalizer): the webhook would take the new one for its duplicate, which then goes with it.
    // Nothing is deleted until it is gone.
    let members: Vec<(String, String)> = view
        .read()
        .memberships_of(contact, group)
        .iter()
        .map(|m| (m.namespace.to_owned(), m.name.to_owned()))
        .collect();
    for (namespace, name) in &members {
        let api: Api<ContactGroupMembership> = Api::namespaced(client.clone(), namespace);
        if kubeapi::get(&api, name)
            .await?
            .is_some_and(|m| m.metadata.deletion_timestamp.is_some())
        {
            return Err(RejoinError::NotYet(format!(
                "membership {name} is still being deleted"
            )));
        }
    }
    let evidence = by.evidence.map(|(_, v)| v.to_owned());
    let name = names::rejoin_membership(
        (&contact.namespace, &contact.name),
        (&group.namespace, &group.name),
        evidence.as_deref().unwrap_or(&by.at.to_string()),
    );
    let memberships: Api<ContactGroupMembership> =
        Api::namespaced(client.clone(), &contact.namespace);
    if let Some(existing) = kubeapi::get(&memberships, &name).await?
        && existing.metadata.deletion_timestamp.is_some()
    {
        return Err(RejoinError::NotYet(format!(
            "membership {name} is still being deleted"
        )));
    }
    for removal in &removals {
        let meta = &removal.metadata;
        let api: Api<ContactGroupMembershipRemoval> = Api::namespaced(
            client.clone(),
            meta.namespace.as_deref().unwrap_or_default(),
        );
        let name = meta.name.as_deref().unwrap_or_default();
        match kubeapi::delete_unchanged(&api, name, meta.uid.clone(), meta.resource_version.clone())
            .await
        {
            Ok(_) => {}
            Err(error) if kubeapi::is_conflict(&error) => {
                return Err(RejoinError::NotYet(format!(
                    "removal {name} changed while the rejoin read it"
                )));
            }
            Err(error) => return Err(error.into()),
        }
    }
    wait_removals_gone(view, contact, group).await;
    let spec = ContactGroupMembershipSpec {
        contact_ref: contact.clone(),
        contact_group_ref: group.clone(),
    };
    let mut membership = ContactGroupMembership::new(&name, spec);
    membership.metadata.namespace = Some(contact.namespace.clone());
    membership.metadata.annotations =
        Some(by.annotations(JOIN_SOURCE_ANNOTATION, JOIN_TIME_ANNOTATION));
    create_membership(&memberships, &membership).await
}

/// Waits (bounded) until the view shows no removal of the pair.
async fn wait_removals_gone(view: &ClusterView, contact: &ObjectRef, group: &ObjectRef) {
    let deadline = tokio::time::Instant::now() + REMOVALS_GONE_WAIT;
    while !view.read().removals_of(contact, group).is_empty()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates the rejoined membership, trying again while the webhook's view still shows a removal
/// of the pair (its `FieldValueForbidden`). A membership of the pair already there (the
/// webhook's `FieldValueDuplicate`, or ours from an earlier try) is the rejoin done.
async fn create_membership(
    api: &Api<ContactGroupMembership>,
    membership: &ContactGroupMembership,
) -> Result<Rejoined, RejoinError> {
    let mut pauses = CREATE_RETRIES.iter();
    loop {
        let error = match kubeapi::create(api, membership).await {
            Ok(_) => return Ok(Rejoined::Rejoined),
            Err(error) => error,
        };
        let causes = kubeapi::denial_causes(&error);
        if causes.contains(&"FieldValueDuplicate") {
            return Ok(Rejoined::Rejoined);
        }
        match pauses.next() {
            Some(pause) if causes.contains(&"FieldValueForbidden") => {
                tokio::time::sleep(*pause).await
            }
            _ => return Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removal(
        source: Option<&str>,
        time: Option<&str>,
        created: &str,
    ) -> ContactGroupMembershipRemoval {
        let mut r = ContactGroupMembershipRemoval::new("r", Default::default());
        let mut annotations = BTreeMap::new();
        if let Some(source) = source {
            annotations.insert(SOURCE_ANNOTATION.to_owned(), source.to_owned());
        }
        if let Some(time) = time {
            annotations.insert(TIME_ANNOTATION.to_owned(), time.to_owned());
        }
        r.metadata.annotations = Some(annotations);
        r.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            created.parse().unwrap(),
        ));
        r
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn only_provider_and_link_opt_outs_made_before_the_rejoin_are_undone() {
        let rejoin = at("2026-12-07T12:00:00Z");
        let before = Some("2026-12-07T11:00:00Z");
        let created = "2026-12-07T11:00:01Z";
        for source in REJOINABLE {
            assert!(
                undoable(&removal(Some(source), before, created), rejoin),
                "{source}"
            );
        }
        for kept in [
            Some(source::RESEND_COMPLAINT),
            Some("operator"),
            Some(""),
            Some("Loops-Unsubscribe"),
            None,
        ] {
            assert!(
                !undoable(&removal(kept, before, created), rejoin),
                "{kept:?}"
            );
        }
        let loops = Some(source::LOOPS_UNSUBSCRIBE);
        // The same second, or later: the opt-out is the person's newer word.
        assert!(!undoable(
            &removal(loops, Some("2026-12-07T12:00:00Z"), created),
            rejoin
        ));
        assert!(!undoable(
            &removal(loops, Some("2026-12-07T12:00:01Z"), created),
            rejoin
        ));
        // Without a time annotation (or an unreadable one) the creation time counts.
        assert!(undoable(&removal(loops, None, created), rejoin));
        assert!(undoable(
            &removal(loops, Some("yesterday"), created),
            rejoin
        ));
        assert!(!undoable(
            &removal(loops, None, "2026-12-07T12:30:00Z"),
            rejoin
        ));
    }

    #[test]
    fn provenance_annotations_leave_out_empty_evidence() {
        let by = Provenance {
            source: source::LOOPS_UNSUBSCRIBE,
            at: at("2026-12-07T12:00:00Z"),
            evidence: Some((EVENT_ANNOTATION, "msg_1")),
        };
        let annotations = by.annotations(SOURCE_ANNOTATION, TIME_ANNOTATION);
        assert_eq!(annotations[SOURCE_ANNOTATION], "loops-unsubscribe");
        assert_eq!(annotations[TIME_ANNOTATION], "2026-12-07T12:00:00Z");
        assert_eq!(annotations[EVENT_ANNOTATION], "msg_1");
        let by = Provenance {
            evidence: Some((EVENT_ANNOTATION, "")),
            ..by
        };
        assert_eq!(by.annotations(SOURCE_ANNOTATION, TIME_ANNOTATION).len(), 2);
    }
}
