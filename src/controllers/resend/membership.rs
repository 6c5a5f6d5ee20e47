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
use crate::controllers::providers::joins::{joinable, stamp};
use crate::controllers::providers::status::{self, Outcome, Record};
use crate::controllers::providers::{Loop, SyncedObject, drive_loop, keys, mirrored_by, ready};
use crate::controllers::{Action, Error, ObjectKey};
use crate::providers::resend::ResendError;
use crate::view::{Store, ViewChange, ViewKind};

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
    /// Live: add the finalizer and/or add the contact to the segment.
    Sync {
        /// Put the finalizer on first.
        add_finalizer: bool,
        /// (contact email, segment id) to add, once both are mirrored.
        add: Option<(String, String)>,
        /// Only rewrite `Ready`, which disagrees with the providers' conditions.
        repair_ready: bool,
    },
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
    let add_finalizer = !m.marks.finalizer(Resend);
    let wanted = !m.marks.synced(Resend) || forced;
    let add = contact
        .filter(|c| wanted && c.marks.synced(Resend) && !c.deleting)
        .and_then(|c| Some((c.email.to_owned(), joinable(view, &m, Resend)?.to_owned())));
    let mirrors = mirrored_by(view, &m, configured);
    let repair_ready =
        !wanted && ready::needs_repair(Resend, configured, m.marks, |p| mirrors.contains(&p));
    if add_finalizer || add.is_some() || repair_ready {
        Plan::Sync {
            add_finalizer,
            add,
            repair_ready,
        }
    } else {
        Plan::Wait
    }
}

/// Memberships another change concerns: those of a contact or group that became mirrored.
fn related(change: &ViewChange, view: &Store) -> Vec<ObjectKey> {
    match change {
        ViewChange::Applied(ViewKind::Contact, ns, name) => {
            keys(view.memberships_of_contact(ns, name))
        }
        ViewChange::Applied(ViewKind::ContactGroup, ns, name) => {
            keys(view.naming_group(ViewKind::Membership, ns, name))
        }
        _ => Vec::new(),
    }
}

/// Runs the membership loop until aborted.
pub async fn run(sync: Arc<ResendSync>) {
    let configured = sync.core.configured.clone();
    let lp = Loop {
        kind: ViewKind::Membership,
        label: "membership",
        relists: &[
            ViewKind::Membership,
            ViewKind::Contact,
            ViewKind::ContactGroup,
        ],
        idle: move |view: &Store, ns: &str, name: &str, forced| {
            plan(view, ns, name, forced, &configured) == Plan::Wait
        },
        related,
        reconcile,
    };
    drive_loop(sync, lp).await;
}

/// Reconciles one membership.
pub async fn reconcile(sync: Arc<ResendSync>, key: ObjectKey) -> Result<Action, Error> {
    let core = &sync.core;
    let forced = core.is_forced(ViewKind::Membership, &key.namespace, &key.name);
    let (plan, mirrors, marks) = {
        let view = core.ctx.view.read();
        let plan = plan(&view, &key.namespace, &key.name, forced, &core.configured);
        match view.membership_sync(&key.namespace, &key.name) {
            Some(m) => (plan, mirrored_by(&view, &m, &core.configured), m.marks),
            None => (plan, Vec::new(), Default::default()),
        }
    };
    let mirrors = |p: ProviderName| mirrors.contains(&p);
    let api: Api<ContactGroupMembership> = Api::namespaced(core.ctx.client.clone(), &key.namespace);
    match plan {
        Plan::Wait => {}
        Plan::Release { remote } => {
            core.answers.forget(ViewKind::Membership, &key);
            if let Some((email, segment)) = remote {
                match sync.client.remove_from_segment(&email, &segment).await {
                    // Gone already, or the contact is unknown there: nothing left to remove.
                    Ok(_) | Err(ResendError::NotFound) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            status::set_finalizer(Resend, &api, &key.name, false).await?;
        }
        Plan::Sync {
            add_finalizer,
            add,
            repair_ready,
        } => {
            if add_finalizer && !status::set_finalizer(Resend, &api, &key.name, true).await? {
                // Deleted meanwhile: its deletion wakes the release.
                return Ok(Action::await_change());
            }
            let record = Record {
                kind: SyncedObject::Membership,
                existing: &[],
                // Memberships are immutable: generation 1 unless the API server says otherwise,
                // which the status written reads back the same way the view does.
                generation: Some(1),
                others: ready::others(Resend, &core.configured, marks, mirrors),
            };
            if let Some((email, segment)) = add {
                return mirror(&sync, &api, &key, &record, (&email, &segment)).await;
            }
            if repair_ready {
                let kind = SyncedObject::Membership;
                core.writer()
                    .repair_ready(&api, &key.name, kind, mirrors)
                    .await?;
            }
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
