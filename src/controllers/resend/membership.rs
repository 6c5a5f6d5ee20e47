//! ContactGroupMembership -> segment membership. A membership is added once its contact is
//! mirrored and its group has a segment; never while a removal (an opt-out) of the pair exists.
//! A contact created with its segments (see [`joins`]) leaves its memberships only their status
//! to write: the create's answer is remembered for them, so they cost no call.
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
use crate::view::{MembershipSync, Store, ViewChange, ViewKind};

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

/// The segment the live membership `m` may join once its contact is mirrored: its group is
/// mirrored and not being deleted, and no removal (an opt-out) covers the pair. [`plan`] and a
/// contact's create ([`joins`]) both ask this, so consent is decided in one place.
fn joinable<'v>(view: &'v Store, m: &MembershipSync<'_>) -> Option<&'v str> {
    let group = view.group_sync(m.group.namespace, m.group.name)?;
    if m.deleting || group.deleting || !group.marks.synced {
        return None;
    }
    let removed = !view
        .removals_of(
            &refs(m.contact.namespace, m.contact.name),
            &refs(m.group.namespace, m.group.name),
        )
        .is_empty();
    if removed { None } else { group.segment }
}

/// Decides what reconciling the membership `namespace/name` does.
pub fn plan(view: &Store, namespace: &str, name: &str, forced: bool) -> Plan {
    let Some(m) = view.membership_sync(namespace, name) else {
        return Plan::Wait;
    };
    let contact = view.contact_sync(m.contact.namespace, m.contact.name);
    if m.deleting {
        if !m.marks.finalizer {
            return Plan::Wait;
        }
        let group = view.group_sync(m.group.namespace, m.group.name);
        let remote = match (contact, group) {
            (Some(c), Some(g)) => g.segment.map(|s| (c.email.to_owned(), s.to_owned())),
            _ => None,
        };
        return Plan::Release { remote };
    }
    let add_finalizer = !m.marks.finalizer;
    let wanted = !m.marks.synced || forced;
    let add = contact
        .filter(|c| wanted && c.marks.synced && !c.deleting)
        .and_then(|c| Some((c.email.to_owned(), joinable(view, &m)?.to_owned())));
    if add_finalizer || add.is_some() {
        Plan::Sync { add_finalizer, add }
    } else {
        Plan::Wait
    }
}

/// What a contact's create can carry for its memberships.
#[derive(Debug, Default)]
pub struct Joins {
    /// Memberships whose segment the create may set, with that segment's id.
    pub segments: Vec<(ObjectKey, String)>,
    /// A group of one of its live memberships is not mirrored yet (worth a short wait).
    pub groups_pending: bool,
}

impl Joins {
    /// The segment ids to send, each once.
    pub fn segment_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.segments.iter().map(|(_, s)| s.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// What creating the contact `namespace/name` can carry: the segments of its live memberships
/// that [`plan`] would add once the contact is mirrored, so the create makes those adds.
pub fn joins(view: &Store, namespace: &str, name: &str) -> Joins {
    let mut joins = Joins::default();
    for r in view.memberships_of_contact(namespace, name) {
        let Some(m) = view.membership_sync(r.namespace, r.name) else {
            continue;
        };
        match joinable(view, &m) {
            Some(segment) => joins
                .segments
                .push((ObjectKey::new(r.namespace, r.name), segment.to_owned())),
            None => {
                joins.groups_pending |= !m.deleting
                    && view
                        .group_sync(m.group.namespace, m.group.name)
                        .is_some_and(|g| !g.deleting && !g.marks.synced)
            }
        }
    }
    joins
}

/// What an add of `email` to `segment` is remembered as (see [`super::answers`]): the same
/// whether the add was its own call or rode on the contact's create.
pub fn stamp(email: &str, segment: &str) -> String {
    format!("{email}/{segment}")
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
            if add_finalizer && !status::set_finalizer(&api, &key.name, true).await? {
                // Deleted meanwhile: its deletion wakes the release.
                return Ok(Action::await_change());
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
    let stamp = stamp(email, segment);
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
