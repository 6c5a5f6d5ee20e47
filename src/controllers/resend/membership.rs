//! ContactGroupMembership -> segment membership. A membership is added once its contact is
//! mirrored and its group has a segment; never while a removal (an opt-out) of the pair exists.
//! A contact created with its segments (see [`crate::controllers::providers::joins`]) leaves its memberships only their status
//! to write: the create's answer is remembered for them, so they cost no call.
//! Deleting it removes the contact from the segment, and its finalizer completes at once when the
//! contact, the group or their Resend counterparts are already gone: deletion never hangs.
//!
//! A public group's topic follows the person's choices, at one call each: a membership deleted
//! because the pair's removal exists (they left) opts the contact out of the topic, unless the
//! removal came from the topic itself; a membership made again by a rejoin (annotated
//! `membership-source`) opts them back in. A plain membership needs nothing: topics default to
//! `opt_in`.

use std::sync::Arc;

use kube::Api;

use super::{PREREQUISITE_WAIT, ResendSync};
use crate::api::common::ObjectRef;
use crate::api::common::ProviderName::{self, Resend};
use crate::api::notification::Visibility;
use crate::api::{ContactGroupMembership, ContactGroupMembershipRemoval};
use crate::controllers::consent::{self, JOIN_SOURCE_ANNOTATION, SOURCE_ANNOTATION};
use crate::controllers::providers::answers::Recall;
use crate::controllers::providers::joins::stamp;
use crate::controllers::providers::status::{self, Outcome, Record};
use crate::controllers::providers::steps::{self, Steps};
use crate::controllers::providers::{MEMBERSHIPS, SyncedObject, related_memberships, run_kind};
use crate::controllers::{Action, Error, ObjectKey, kubeapi};
use crate::providers::resend::ResendError;
use crate::providers::resend::topics::Subscription;
use crate::view::{ContactSync, Store, ViewKind};

/// What reconciling a membership does, decided from the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do (gone, settled, opted out, or waiting for its contact or segment).
    Wait,
    /// Being deleted: take the contact out of the segment when both are known, then release.
    Release {
        /// (contact email, segment id), when both are still known.
        remote: Option<(String, String)>,
        /// The person left a public group: opt them out of its topic.
        leave: Option<Leave>,
    },
    /// Live: its steps, the work being to add (contact email, segment id).
    Sync(Steps<(String, String)>),
}

/// A member of a public group leaving it because the pair's removal exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leave {
    /// The contact's address (Resend takes it in place of the id).
    pub email: String,
    /// The group, `(namespace, name)`.
    pub group: (String, String),
    /// The pair's removals, `(namespace, name)`: read for their source.
    pub removals: Vec<(String, String)>,
}

/// The [`Leave`] of the membership `m` being deleted, when its group is public and a removal of
/// the pair exists.
fn leave(view: &Store, m: &crate::view::MembershipSync<'_>, email: &str) -> Option<Leave> {
    let public = view
        .group(m.group.namespace, m.group.name)
        .is_some_and(|g| g.visibility == Visibility::Public);
    let refs = |r: crate::view::NamedRef<'_>| ObjectRef {
        namespace: r.namespace.to_owned(),
        name: r.name.to_owned(),
    };
    let removals: Vec<(String, String)> = view
        .removals_of(&refs(m.contact), &refs(m.group))
        .iter()
        .map(|r| (r.namespace.to_owned(), r.name.to_owned()))
        .collect();
    (public && !removals.is_empty()).then(|| Leave {
        email: email.to_owned(),
        group: (m.group.namespace.to_owned(), m.group.name.to_owned()),
        removals,
    })
}

/// Decides what reconciling the membership `namespace/name` does, among the `configured`
/// providers.
pub fn plan(
    view: &Store,
    namespace: &str,
    name: &str,
    forced: bool,
    configured: &[ProviderName],
) -> Plan {
    let Some(m) = view.membership_sync(namespace, name) else {
        return Plan::Wait;
    };
    let contact = view.contact_sync(m.contact.namespace, m.contact.name);
    if m.deleting {
        if !m.marks.finalizer(Resend) {
            return Plan::Wait;
        }
        let group = view.group_sync(m.group.namespace, m.group.name);
        let remote = match (contact, group) {
            (Some(c), Some(g)) => g.segment.map(|s| (c.email.to_owned(), s.to_owned())),
            _ => None,
        };
        let leave = contact.and_then(|c| leave(view, &m, c.email));
        return Plan::Release { remote, leave };
    }
    let add = |c: &ContactSync<'_>, segment: &str| (c.email.to_owned(), segment.to_owned());
    steps::membership(Resend, view, &m, (forced, configured), add).map_or(Plan::Wait, Plan::Sync)
}

/// Runs the membership loop until aborted.
pub async fn run(sync: Arc<ResendSync>) {
    let related = related_memberships;
    run_kind(sync, MEMBERSHIPS, (plan, Plan::Wait), related, reconcile).await;
}

/// Reconciles one membership.
pub async fn reconcile(sync: Arc<ResendSync>, key: ObjectKey) -> Result<Action, Error> {
    let core = &sync.core;
    let plan = core.plan(ViewKind::Membership, &key, plan);
    let of = core.membership_of(&key);
    let mirrors = |p: ProviderName| of.mirrors.contains(&p);
    let api: Api<ContactGroupMembership> = Api::namespaced(core.ctx.client.clone(), &key.namespace);
    match plan {
        Plan::Wait => {}
        Plan::Release { remote, leave } => {
            core.answers.forget(ViewKind::Membership, &key);
            if !status::holds_finalizer(Resend, &api, &key.name).await? {
                return Ok(Action::await_change());
            }
            if let Some(leave) = leave {
                leave_topic(&sync, &leave).await?;
            }
            if let Some((email, segment)) = remote {
                match sync.client.remove_from_segment(&email, &segment).await {
                    // Gone already, or the contact is unknown there: nothing left to remove.
                    Ok(_) | Err(ResendError::NotFound) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            status::set_finalizer(Resend, &api, &key.name, false).await?;
        }
        Plan::Sync(steps) => {
            let record = of.record(Resend, &core.configured);
            let (sync, api, key, record) = (&sync, &api, &key, &record);
            let object = (key, SyncedObject::Membership);
            let add = move |(email, segment): (String, String)| async move {
                mirror(sync, api, key, record, (&email, &segment)).await
            };
            return steps.run(core, api, object, mirrors, add).await;
        }
    }
    Ok(Action::await_change())
}

/// Adds the contact to the segment and records it. The membership's conditions are not read
/// back (the view does not keep them): a flip stamps the time of this write, which is when it
/// happened.
async fn mirror(
    sync: &ResendSync,
    api: &Api<ContactGroupMembership>,
    key: &ObjectKey,
    record: &Record<'_>,
    (email, segment): (&str, &str),
) -> Result<Action, Error> {
    // Added already, with only the status write after it lost: recorded now without a call; with
    // that landed too and the view behind, nothing.
    let stamp = stamp(email, segment);
    let answers = &sync.core.answers;
    let added = match answers.recall(ViewKind::Membership, key, &stamp) {
        Some(Recall::Recorded) => return Ok(Action::await_change()),
        Some(Recall::Unrecorded(_)) => Ok(()),
        None => {
            let rejoined = rejoined_group(sync, key).await?;
            join(sync, email, segment, rejoined).await.inspect(|()| {
                answers.answered(ViewKind::Membership, key, stamp.clone(), segment.into())
            })
        }
    };
    let writer = sync.core.writer();
    match added {
        Ok(()) => {
            writer
                .record(api, &key.name, record, &Outcome::synced(segment))
                .await?;
            answers.recorded(ViewKind::Membership, key);
            Ok(Action::await_change())
        }
        // The contact or segment is being recreated by the other loops: try again shortly.
        Err(ResendError::NotFound) => Ok(Action::requeue(PREREQUISITE_WAIT)),
        Err(error) => Err(writer
            .report_failure(api, &key.name, record, None, error)
            .await),
    }
}

/// Adds `email` to the segment and, for a rejoin of a public group, opts them back in to its
/// topic: the membership is recorded synced only after both.
async fn join(
    sync: &ResendSync,
    email: &str,
    segment: &str,
    rejoined: Option<(String, String)>,
) -> Result<(), ResendError> {
    sync.client.add_to_segment(email, segment).await?;
    if let Some((namespace, name)) = rejoined {
        let group = (namespace.as_str(), name.as_str());
        let topics = &sync.topics;
        topics
            .subscribe(&sync.client, email, group, Subscription::OptIn)
            .await?;
    }
    Ok(())
}

/// The public group `(namespace, name)` the membership `key` rejoins: it was made again on the
/// person's behalf (named by [`crate::controllers::names::rejoin_membership`] and annotated with
/// its source). Only such memberships are read from the API server.
async fn rejoined_group(
    sync: &ResendSync,
    key: &ObjectKey,
) -> Result<Option<(String, String)>, Error> {
    if !key.name.starts_with("rejoin-") {
        return Ok(None);
    }
    let api: Api<ContactGroupMembership> =
        Api::namespaced(sync.core.ctx.client.clone(), &key.namespace);
    let Some(m) = kubeapi::get(&api, &key.name).await? else {
        return Ok(None);
    };
    let annotated = m
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(JOIN_SOURCE_ANNOTATION));
    let group = &m.spec.contact_group_ref;
    let public = sync
        .core
        .ctx
        .view
        .read()
        .group(&group.namespace, &group.name)
        .is_some_and(|g| g.visibility == Visibility::Public);
    Ok((annotated && public).then(|| (group.namespace.clone(), group.name.clone())))
}

/// Opts the leaving person out of the group's topic, unless every removal of the pair came from
/// that topic (Resend has it already: no call).
async fn leave_topic(sync: &ResendSync, leave: &Leave) -> Result<(), Error> {
    let mut from_topic = true;
    for (namespace, name) in &leave.removals {
        let api: Api<ContactGroupMembershipRemoval> =
            Api::namespaced(sync.core.ctx.client.clone(), namespace);
        let source = kubeapi::get(&api, name).await?.and_then(|r| {
            r.metadata
                .annotations
                .and_then(|mut a| a.remove(SOURCE_ANNOTATION))
        });
        from_topic &= source.as_deref() == Some(consent::source::RESEND_TOPIC);
    }
    if from_topic {
        return Ok(());
    }
    let group = (leave.group.0.as_str(), leave.group.1.as_str());
    let out = Subscription::OptOut;
    Ok(sync
        .topics
        .subscribe(&sync.client, &leave.email, group, out)
        .await?)
}
