//! ContactGroupMembership -> segment membership. A membership is added once its contact is
//! mirrored and its group has a segment; never while a removal (an opt-out) of the pair exists.
//! A contact created with its segments (see [`crate::controllers::providers::joins`]) leaves its memberships only their status
//! to write: the create's answer is remembered for them, so they cost no call.
//! Deleting it removes the contact from the segment, and its finalizer completes at once when the
//! contact, the group or their Resend counterparts are already gone: deletion never hangs.

use std::sync::Arc;

use kube::Api;

use super::{PREREQUISITE_WAIT, ResendSync};
use crate::api::ContactGroupMembership;
use crate::api::common::ProviderName::{self, Resend};
use crate::controllers::providers::answers::Recall;
use crate::controllers::providers::joins::stamp;
use crate::controllers::providers::status::{self, Outcome, Record};
use crate::controllers::providers::steps::{self, Steps};
use crate::controllers::providers::{MEMBERSHIPS, SyncedObject, related_memberships, run_kind};
use crate::controllers::{Action, Error, ObjectKey};
use crate::providers::resend::ResendError;
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
    },
    /// Live: its steps, the work being to add (contact email, segment id).
    Sync(Steps<(String, String)>),
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
        return Plan::Release { remote };
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
        Plan::Release { remote } => {
            core.answers.forget(ViewKind::Membership, &key);
            if !status::holds_finalizer(Resend, &api, &key.name).await? {
                return Ok(Action::await_change());
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
        None => sync
            .client
            .add_to_segment(email, segment)
            .await
            .inspect(|()| {
                answers.answered(ViewKind::Membership, key, stamp.clone(), segment.into())
            }),
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
