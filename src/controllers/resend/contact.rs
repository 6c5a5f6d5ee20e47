//! Contact -> Resend contact. A contact is found by its id (from `status.providers`) or else by
//! email before anything is created, so a crash or a lost answer never yields a second one; name
//! and email changes are PATCHed in place; the person's `unsubscribed` is never written false;
//! deleting the Contact deletes the Resend contact unless another Contact still uses the address
//! (Resend contacts are one per address).

use std::sync::Arc;

use kube::Api;

use super::answers::Recall;
use super::status::{self, Outcome};
use super::{Loop, ResendSync, drive_loop, optout, unrelated};
use crate::api::Contact;
use crate::api::common::sync::{CONTACT_READY, UNSUBSCRIBED};
use crate::controllers::{Action, Error, ObjectKey, kubeapi};
use crate::providers::resend::ResendError;
use crate::providers::resend::types::{ContactPatch, NewContact};
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
    /// Live: what to do.
    Sync {
        /// Put the finalizer on first.
        add_finalizer: bool,
        /// Create the removals a reported opt-out asks for.
        opt_out: bool,
        /// Create or update the Resend contact.
        mirror: bool,
    },
}

/// Decides what reconciling the contact `namespace/name` does.
pub fn plan(view: &Store, namespace: &str, name: &str, forced: bool) -> Plan {
    let Some(contact) = view.contact_sync(namespace, name) else {
        return Plan::Wait;
    };
    if contact.deleting {
        if !contact.marks.finalizer {
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
    let add_finalizer = !contact.marks.finalizer;
    let opt_out = contact.unsubscribe_pending;
    let mirror = !contact.marks.synced || forced;
    if add_finalizer || opt_out || mirror {
        Plan::Sync {
            add_finalizer,
            opt_out,
            mirror,
        }
    } else {
        Plan::Wait
    }
}

fn idle(view: &Store, namespace: &str, name: &str, forced: bool) -> bool {
    plan(view, namespace, name, forced) == Plan::Wait
}

/// Runs the contact loop until aborted.
pub async fn run(sync: Arc<ResendSync>) {
    let lp = Loop {
        kind: ViewKind::Contact,
        label: "contact",
        relists: &[ViewKind::Contact],
        idle,
        related: unrelated,
        reconcile,
    };
    drive_loop(sync, lp).await;
}

/// Reconciles one contact.
pub async fn reconcile(sync: Arc<ResendSync>, key: ObjectKey) -> Result<Action, Error> {
    let forced = sync.is_forced(ViewKind::Contact, &key.namespace, &key.name);
    let plan = plan(&sync.ctx.view.read(), &key.namespace, &key.name, forced);
    let api: Api<Contact> = Api::namespaced(sync.ctx.client.clone(), &key.namespace);
    match plan {
        Plan::Wait => {}
        Plan::Release { delete_remote } => {
            sync.answers.forget(ViewKind::Contact, &key);
            if delete_remote {
                release(&sync, &api, &key).await?;
            }
            status::set_finalizer(&api, &key.name, false).await?;
        }
        Plan::Sync {
            add_finalizer,
            opt_out,
            mirror,
        } => {
            if add_finalizer {
                status::set_finalizer(&api, &key.name, true).await?;
            }
            if opt_out {
                optout::apply(&sync, &key).await?;
            }
            if mirror {
                self::mirror(&sync, &api, &key).await?;
            }
        }
    }
    Ok(Action::await_change())
}

/// Deletes the Resend contact of a Contact being deleted; one already gone is fine.
async fn release(sync: &ResendSync, api: &Api<Contact>, key: &ObjectKey) -> Result<(), Error> {
    let Some(contact) = kubeapi::get(api, &key.name).await? else {
        return Ok(());
    };
    let target = resend_id(contact.status.as_ref())
        .map(str::to_owned)
        .unwrap_or_else(|| contact.spec.email.clone());
    sync.client.delete_contact(&target).await?;
    Ok(())
}

/// Whether the person opted out (as far as the cluster knows): a contact created or recreated
/// at Resend carries it, so a re-creation never re-subscribes anyone.
fn opted_out(contact: &Contact) -> bool {
    contact.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == UNSUBSCRIBED && c.status == "True")
    })
}

/// Creates or updates the Resend contact and records where it is.
async fn mirror(sync: &ResendSync, api: &Api<Contact>, key: &ObjectKey) -> Result<(), Error> {
    let Some(contact) = kubeapi::get(api, &key.name).await? else {
        return Ok(());
    };
    let known = resend_id(contact.status.as_ref()).map(str::to_owned);
    let conditions = contact
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = contact.metadata.generation;
    // What Resend already answered for this very object and generation: when only the status
    // write after it failed, recorded now without a second call; when that landed too and the
    // view has not caught up, nothing.
    let stamp = format!(
        "{}/{}",
        contact.metadata.uid.as_deref().unwrap_or_default(),
        generation.unwrap_or_default()
    );
    let answers = &sync.answers;
    let answered = match answers.recall(ViewKind::Contact, key, &stamp) {
        Some(Recall::Recorded) => return Ok(()),
        Some(Recall::Unrecorded(id)) => Ok(id),
        None => upsert(sync, &contact, known.as_deref())
            .await
            .inspect(|id| answers.answered(ViewKind::Contact, key, stamp.clone(), id.clone())),
    };
    let record = status::Record {
        condition_type: CONTACT_READY,
        existing: &conditions,
        generation,
    };
    match answered {
        Ok(id) => {
            let outcome = Outcome {
                id: Some(&id),
                failure: None,
            };
            let body = status::body(&record, &outcome, jiff::Timestamp::now());
            status::apply(&sync.ctx.schemas, api, &key.name, body).await?;
            answers.recorded(ViewKind::Contact, key);
            Ok(())
        }
        Err(error) => Err(status::report_failure(
            &sync.ctx.schemas,
            api,
            &key.name,
            &record,
            known.as_deref(),
            error,
        )
        .await),
    }
}

/// The Resend contact's id after making it match `contact`: at most one PATCH when the id is
/// known; a look-up by email and then a PATCH or a create when it is not (or is stale).
async fn upsert(
    sync: &ResendSync,
    contact: &Contact,
    known: Option<&str>,
) -> Result<String, ResendError> {
    let spec = &contact.spec;
    let patch = ContactPatch {
        email: Some(spec.email.clone()),
        first_name: spec.given_name.clone(),
        last_name: spec.family_name.clone(),
    };
    if let Some(id) = known {
        match sync.client.update_contact(id, &patch).await {
            Ok(()) => return Ok(id.to_owned()),
            // Deleted at Resend (in the dashboard, say): found by email or created again.
            Err(ResendError::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    if let Some(remote) = sync.client.get_contact(&spec.email).await? {
        let same = remote.first_name == spec.given_name && remote.last_name == spec.family_name;
        if !same {
            sync.client.update_contact(&remote.id, &patch).await?;
        }
        return Ok(remote.id);
    }
    let new = NewContact {
        email: spec.email.clone(),
        first_name: spec.given_name.clone(),
        last_name: spec.family_name.clone(),
        unsubscribed: opted_out(contact),
    };
    sync.client.create_contact(&new).await
}
