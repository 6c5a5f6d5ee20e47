//! Contact -> Resend contact. A contact without a recorded id is looked up by email in the
//! [`directory`](super::directory) (one shared listing, not a GET per contact) before anything
//! is created, so a crash or a lost answer never yields a second one; a new one is created with
//! the segments its memberships join, so those cost no call of their own; name and email
//! changes are PATCHed in place; the person's `unsubscribed` is never written false; deleting
//! the Contact deletes the Resend contact unless another Contact still uses the address (Resend
//! contacts are one per address).

use std::sync::Arc;
use std::time::Duration;

use kube::Api;

use super::ResendSync;
use super::directory::{Claim, Found, Known, MAX_AGE_RESYNCS};
use crate::api::Contact;
use crate::api::common::ProviderName::{self, Resend};
use crate::controllers::providers::answers::Recall;
use crate::controllers::providers::joins::{Joins, joins, stamp};
use crate::controllers::providers::joins::{may_wait_for_groups, opted_out};
use crate::controllers::providers::status::{self, Outcome};
use crate::controllers::providers::steps::{self, Steps};
use crate::controllers::providers::{CONTACTS, SyncedObject, run_kind, unrelated};
use crate::controllers::{Action, Error, ObjectKey, kubeapi};
use crate::providers::resend::ResendError;
use crate::providers::resend::types::{ContactPatch, NewContact, RemoteContact};
use crate::view::sync::resend_id;
use crate::view::{Store, ViewKind};

/// What reconciling a contact does, decided from the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing (gone, settled, or being deleted without our finalizer).
    Wait,
    /// Being deleted: delete the Resend contact (unless another live Contact uses the address),
    /// then release the finalizer.
    Release {
        /// Whether the Resend contact is deleted.
        delete_remote: bool,
    },
    /// Live: its steps, the work being to create or update the Resend contact.
    Sync(Steps<()>),
}

/// Decides what reconciling the contact `namespace/name` does, among the `configured` providers.
pub fn plan(
    view: &Store,
    namespace: &str,
    name: &str,
    forced: bool,
    configured: &[ProviderName],
) -> Plan {
    let Some(contact) = view.contact_sync(namespace, name) else {
        return Plan::Wait;
    };
    if contact.deleting {
        if !contact.marks.finalizer(Resend) {
            return Plan::Wait;
        }
        let shared = view.contacts_by_email(contact.email).any(|other| {
            other.key != contact.key
                && view
                    .contact_sync(other.key.namespace, other.key.name)
                    .is_some_and(|o| !o.deleting)
        });
        return Plan::Release {
            delete_remote: !shared,
        };
    }
    steps::contact(Resend, &contact, forced, configured).map_or(Plan::Wait, Plan::Sync)
}

/// Runs the contact loop until aborted.
pub async fn run(sync: Arc<ResendSync>) {
    run_kind(sync, CONTACTS, (plan, Plan::Wait), unrelated, reconcile).await;
}

/// Reconciles one contact.
pub async fn reconcile(sync: Arc<ResendSync>, key: ObjectKey) -> Result<Action, Error> {
    let core = &sync.core;
    let plan = core.plan(ViewKind::Contact, &key, plan);
    let api: Api<Contact> = Api::namespaced(core.ctx.client.clone(), &key.namespace);
    match plan {
        Plan::Wait => {}
        Plan::Release { delete_remote } => {
            core.answers.forget(ViewKind::Contact, &key);
            if delete_remote {
                release(&sync, &api, &key).await?;
            }
            status::set_finalizer(Resend, &api, &key.name, false).await?;
        }
        Plan::Sync(steps) => {
            let object = (&key, SyncedObject::Contact);
            let mirror = |()| self::mirror(&sync, &api, &key);
            return steps.run(core, &api, object, |_| true, mirror).await;
        }
    }
    Ok(Action::await_change())
}

/// Deletes the Resend contact of a Contact being deleted; one already gone is fine.
async fn release(sync: &ResendSync, api: &Api<Contact>, key: &ObjectKey) -> Result<(), Error> {
    let Some(contact) = kubeapi::get(api, &key.name).await? else {
        return Ok(());
    };
    let known = resend_id(contact.status.as_ref());
    let target = known.unwrap_or(&contact.spec.email);
    sync.client.delete_contact(target).await?;
    if let Some(id) = known {
        sync.directory.forget_id(id);
    }
    sync.directory.forget_email(&contact.spec.email);
    Ok(())
}

/// Creates or updates the Resend contact and records where it is; asks to be looked at again
/// when it should wait (for its groups, or for another Contact creating the same address).
async fn mirror(sync: &ResendSync, api: &Api<Contact>, key: &ObjectKey) -> Result<Action, Error> {
    let Some(contact) = kubeapi::get(api, &key.name).await? else {
        return Ok(Action::await_change());
    };
    let known = resend_id(contact.status.as_ref()).map(str::to_owned);
    let generation = contact.metadata.generation;
    // What Resend already answered for this very object and generation: when only the status
    // write after it failed, recorded now without a second call; when that landed too and the
    // view has not caught up, nothing.
    let stamp = format!(
        "{}/{}",
        contact.metadata.uid.as_deref().unwrap_or_default(),
        generation.unwrap_or_default()
    );
    let answers = &sync.core.answers;
    let answered = match answers.recall(ViewKind::Contact, key, &stamp) {
        Some(Recall::Recorded) => return Ok(Action::await_change()),
        Some(Recall::Unrecorded(id)) => Ok(id),
        None => match upsert(sync, key, &contact, known.as_deref()).await {
            Ok(Upserted::Wait(delay)) => return Ok(Action::requeue(delay)),
            Ok(Upserted::Id(id)) => {
                answers.answered(ViewKind::Contact, key, stamp.clone(), id.clone());
                Ok(id)
            }
            Err(error) => Err(error),
        },
    };
    let writer = sync.core.writer();
    let record = writer.record_of(&contact, SyncedObject::Contact, |_| true);
    match answered {
        Ok(id) => {
            writer
                .record(api, &key.name, &record, &Outcome::synced(&id))
                .await?;
            answers.recorded(ViewKind::Contact, key);
            Ok(Action::await_change())
        }
        Err(error) => Err(writer
            .report_failure(api, &key.name, &record, known.as_deref(), error)
            .await),
    }
}

/// How often a waiting contact looks again (a group is mirrored within moments).
const GROUP_POLL: Duration = Duration::from_millis(500);
/// How long a contact waits while another Contact of the same address is being created.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// What [`upsert`] achieved.
enum Upserted {
    /// The Resend contact's id.
    Id(String),
    /// Nothing yet: look again after this long.
    Wait(Duration),
}

/// Makes the Resend contact match `contact`: at most one PATCH when the id is known; when it is
/// not (or is stale), found in the directory and adopted, or else created.
async fn upsert(
    sync: &ResendSync,
    key: &ObjectKey,
    contact: &Contact,
    known: Option<&str>,
) -> Result<Upserted, ResendError> {
    let spec = &contact.spec;
    let patch = ContactPatch {
        email: Some(spec.email.clone()),
        first_name: spec.given_name.clone(),
        last_name: spec.family_name.clone(),
    };
    if let Some(id) = known {
        match sync.client.update_contact(id, &patch).await {
            Ok(()) => {
                note(sync, &patch, id);
                return Ok(Upserted::Id(id.to_owned()));
            }
            // Deleted at Resend (in the dashboard, say): found by email or created again.
            Err(ResendError::NotFound) => sync.directory.forget_id(id),
            Err(error) => return Err(error),
        }
    }
    let max_age = sync.core.ctx.settings.provider_resync * MAX_AGE_RESYNCS;
    let found = sync
        .directory
        .find(&sync.client, &spec.email, max_age)
        .await?;
    match found {
        Found::Present(remote) => adopt(sync, &patch, remote).await.map(Upserted::Id),
        Found::Busy => Ok(Upserted::Wait(BUSY_WAIT)),
        Found::Doubted(claim) => match sync.client.get_contact(&spec.email).await? {
            Some(remote) => {
                let remote = known_of(remote);
                claim.found(remote.clone());
                adopt(sync, &patch, remote).await.map(Upserted::Id)
            }
            None => create(sync, key, contact, claim).await,
        },
        Found::Absent(claim) => create(sync, key, contact, claim).await,
    }
}

fn known_of(remote: RemoteContact) -> Known {
    Known::written(remote.id, remote.first_name, remote.last_name)
}

/// Notes in the directory what a write of `patch` to `id` left at Resend.
fn note(sync: &ResendSync, patch: &ContactPatch, id: &str) {
    if let Some(email) = &patch.email {
        let known = Known::written(
            id.to_owned(),
            patch.first_name.clone(),
            patch.last_name.clone(),
        );
        sync.directory.note(email, known);
    }
}

/// Takes over a contact Resend already has, patching its names when they differ. Its segments
/// are unknown, so its memberships are added by their own loop.
async fn adopt(
    sync: &ResendSync,
    patch: &ContactPatch,
    remote: Known,
) -> Result<String, ResendError> {
    let same = remote.first_name == patch.first_name && remote.last_name == patch.last_name;
    if !same {
        if let Err(error) = sync.client.update_contact(&remote.id, patch).await {
            if matches!(error, ResendError::NotFound) {
                // Deleted since it was listed: the next attempt creates it.
                sync.directory.forget_id(&remote.id);
            }
            return Err(error);
        }
        note(sync, patch, &remote.id);
    }
    Ok(remote.id)
}

/// Creates the contact (claimed in the directory) with the segments its memberships may join
/// now, which are then remembered as answered so the membership loop records them without a
/// call. A person who opted out is created opted out and joins nothing here: their memberships
/// go through the membership loop's own consent checks.
async fn create(
    sync: &ResendSync,
    key: &ObjectKey,
    contact: &Contact,
    claim: Claim<'_>,
) -> Result<Upserted, ResendError> {
    let spec = &contact.spec;
    let opted_out = opted_out(contact);
    let mut joins = if opted_out {
        Joins::default()
    } else {
        joins(
            &sync.core.ctx.view.read(),
            &key.namespace,
            &key.name,
            Resend,
        )
    };
    if joins.groups_pending && may_wait_for_groups(sync.core.started, contact) {
        return Ok(Upserted::Wait(GROUP_POLL));
    }
    let mut new = NewContact {
        email: spec.email.clone(),
        first_name: spec.given_name.clone(),
        last_name: spec.family_name.clone(),
        unsubscribed: opted_out,
        segments: joins.ids(),
    };
    let mut created = sync.client.create_contact_outcome(&new).await;
    if matches!(created, Err(ResendError::NotFound)) && !new.segments.is_empty() {
        // A segment is gone (deleted in the dashboard): the contact alone, its memberships
        // left to their loop, which waits for the group to be mirrored again.
        joins.groups.clear();
        new.segments.clear();
        created = sync.client.create_contact_outcome(&new).await;
    }
    match created {
        Ok(created) => {
            let known = Known::written(created.id.clone(), new.first_name, new.last_name);
            claim.found(known);
            // An existing contact answered for: its segments are not known to have been set.
            if !created.existed {
                for (membership, segment) in joins.groups {
                    let stamp = stamp(&spec.email, &segment);
                    let kind = ViewKind::Membership;
                    sync.core
                        .answers
                        .answered(kind, &membership, stamp, segment);
                }
            }
            Ok(Upserted::Id(created.id))
        }
        Err(error) => {
            if matches!(error, ResendError::Transient { .. }) {
                // Resend may have made it with the answer lost: ask before creating again.
                claim.doubt();
            }
            Err(error)
        }
    }
}
