//! ContactGroupMembership -> segment membership. A membership is added once its contact is
//! mirrored and its group has a segment; never while a removal (an opt-out) of the pair exists.
//! Deleting it removes the contact from the segment, and its finalizer completes at once when the
//! contact, the group or their Resend counterparts are already gone: deletion never hangs.

use std::sync::Arc;

use kube::Api;

use super::answers::Recall;
use super::status::{self, Outcome};
use super::{Loop, PREREQUISITE_WAIT, ResendSync, drive_loop, keys};
use crate::api::ContactGroupMembership;
use crate::api::common::ObjectRef;
use crate::api::common::sync::MEMBERSHIP_READY;
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
    },
}

fn refs(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

/// Decides what reconciling the membership `namespace/name` does.
pub fn plan(view: &Store, namespace: &str, name: &str, forced: bool) -> Plan {
    let Some(m) = view.membership_sync(namespace, name) else {
        return Plan::Wait;
    };
    let contact = view.contact_sync(m.contact.namespace, m.contact.name);
    let group = view.group_sync(m.group.namespace, m.group.name);
    let remote = match (contact, group) {
        (Some(c), Some(g)) => g.segment.map(|s| (c.email.to_owned(), s.to_owned())),
        _ => None,
    };
    if m.deleting {
        if !m.marks.finalizer {
            return Plan::Wait;
        }
        return Plan::Release { remote };
    }
    let add_finalizer = !m.marks.finalizer;
    let opted_out = !view
        .removals_of(
            &refs(m.contact.namespace, m.contact.name),
            &refs(m.group.namespace, m.group.name),
        )
        .is_empty();
    let wanted = !m.marks.synced || forced;
    let ready = contact.is_some_and(|c| c.marks.synced && !c.deleting)
        && group.is_some_and(|g| g.marks.synced && !g.deleting);
    let add = (wanted && ready && !opted_out).then_some(remote).flatten();
    if add_finalizer || add.is_some() {
        Plan::Sync { add_finalizer, add }
    } else {
        Plan::Wait
    }
}

fn idle(view: &Store, namespace: &str, name: &str, forced: bool) -> bool {
    plan(view, namespace, name, forced) == Plan::Wait
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
    let lp = Loop {
        kind: ViewKind::Membership,
        label: "membership",
        relists: &[
            ViewKind::Membership,
            ViewKind::Contact,
            ViewKind::ContactGroup,
        ],
        idle,
        related,
        reconcile,
    };
    drive_loop(sync, lp).await;
}

/// Reconciles one membership.
pub async fn reconcile(sync: Arc<ResendSync>, key: ObjectKey) -> Result<Action, Error> {
    let forced = sync.is_forced(ViewKind::Membership, &key.namespace, &key.name);
    let plan = plan(&sync.ctx.view.read(), &key.namespace, &key.name, forced);
    let api: Api<ContactGroupMembership> = Api::namespaced(sync.ctx.client.clone(), &key.namespace);
    match plan {
        Plan::Wait => {}
        Plan::Release { remote } => {
            sync.answers.forget(ViewKind::Membership, &key);
            if let Some((email, segment)) = remote {
                match sync.client.remove_from_segment(&email, &segment).await {
                    // Gone already, or the contact is unknown there: nothing left to remove.
                    Ok(_) | Err(ResendError::NotFound) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            status::set_finalizer(&api, &key.name, false).await?;
        }
        Plan::Sync { add_finalizer, add } => {
            if add_finalizer {
                status::set_finalizer(&api, &key.name, true).await?;
            }
            if let Some((email, segment)) = add {
                return mirror(&sync, &api, &key, &email, &segment).await;
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
    email: &str,
    segment: &str,
) -> Result<Action, Error> {
    // Memberships are immutable: generation 1 unless the API server says otherwise, which the
    // status written reads back the same way the view does.
    let generation = Some(1);
    // Added already, with only the status write after it lost: recorded now without a call; with
    // that landed too and the view behind, nothing.
    let stamp = format!("{email}/{segment}");
    let answers = &sync.answers;
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
    let record = status::Record {
        condition_type: MEMBERSHIP_READY,
        existing: &[],
        generation,
    };
    match added {
        Ok(()) => {
            let outcome = Outcome {
                id: Some(segment),
                failure: None,
            };
            let body = status::body(&record, &outcome, jiff::Timestamp::now());
            status::apply(&sync.ctx.schemas, api, &key.name, body).await?;
            answers.recorded(ViewKind::Membership, key);
            Ok(Action::await_change())
        }
        // The contact or segment is being recreated by the other loops: try again shortly.
        Err(ResendError::NotFound) => Ok(Action::requeue(PREREQUISITE_WAIT)),
        Err(error) => {
            Err(
                status::report_failure(&sync.ctx.schemas, api, &key.name, &record, None, error)
                    .await,
            )
        }
    }
}
