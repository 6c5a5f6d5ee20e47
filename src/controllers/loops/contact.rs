//! Contact -> Loops contact, keyed by `userId` = the Contact's uid. One `PUT /contacts/update`
//! does everything: the first creates the contact with the lists its memberships may join
//! (which then record their status without a call of their own), later ones change the email
//! and names in place. `subscribed` is sent only as `false`, for a person whose `Unsubscribed`
//! condition is True: a contact made for someone who opted out is made unsubscribed, and nothing
//! here ever sends `true`. Deleting the Contact deletes the Loops contact by `userId`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::Api;

use super::LoopsSync;
use crate::api::Contact;
use crate::api::common::ProviderName::{self, Loops};
use crate::controllers::providers::answers::Recall;
use crate::controllers::providers::joins::{Joins, joins, may_wait_for_groups, opted_out, stamp};
use crate::controllers::providers::status::{self, Outcome};
use crate::controllers::providers::steps::{self, Steps};
use crate::controllers::providers::{CONTACTS, SyncedObject, run_kind, unrelated};
use crate::controllers::{Action, Error, ObjectKey, kubeapi};
use crate::providers::loops::{ContactUpsert, Subscribed};
use crate::view::{Store, ViewKind};

/// How often a new contact waiting for its groups' lists looks again.
const GROUP_POLL: Duration = Duration::from_millis(500);

/// What reconciling a contact does, decided from the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing.
    Wait,
    /// Being deleted: delete the Loops contact, then release the finalizer.
    Release,
    /// Live: its steps, the work being to upsert the Loops contact.
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
        return if contact.marks.finalizer(Loops) {
            Plan::Release
        } else {
            Plan::Wait
        };
    }
    steps::contact(Loops, &contact, forced, configured).map_or(Plan::Wait, Plan::Sync)
}

/// Runs the contact loop until aborted.
pub async fn run(sync: Arc<LoopsSync>) {
    run_kind(sync, CONTACTS, (plan, Plan::Wait), unrelated, reconcile).await;
}

/// Reconciles one contact.
pub async fn reconcile(sync: Arc<LoopsSync>, key: ObjectKey) -> Result<Action, Error> {
    let core = &sync.core;
    let plan = core.plan(ViewKind::Contact, &key, plan);
    let api: Api<Contact> = Api::namespaced(core.ctx.client.clone(), &key.namespace);
    match plan {
        Plan::Wait => {}
        Plan::Release => {
            core.answers.forget(ViewKind::Contact, &key);
            if let Some(contact) = kubeapi::get(&api, &key.name).await?
                && let Some(uid) = contact.metadata.uid.as_deref()
            {
                sync.client.delete_by_user_id(uid).await?;
            }
            status::set_finalizer(Loops, &api, &key.name, false).await?;
        }
        Plan::Sync(steps) => {
            let object = (&key, SyncedObject::Contact);
            let mirror = |()| self::mirror(&sync, &api, &key);
            return steps.run(core, &api, object, |_| true, mirror).await;
        }
    }
    Ok(Action::await_change())
}

/// The upsert that mirrors `contact`, carrying `lists`: `subscribed` only ever `false`.
pub fn upsert_of(contact: &Contact, lists: BTreeMap<String, bool>) -> ContactUpsert {
    let mut upsert = ContactUpsert::new(
        contact.metadata.uid.clone().unwrap_or_default(),
        contact.spec.email.clone(),
    );
    upsert.first_name = contact.spec.given_name.clone();
    upsert.last_name = contact.spec.family_name.clone();
    upsert.mailing_lists = lists;
    upsert.subscribed = Subscribed::respecting_opt_out(opted_out(contact));
    upsert
}

/// Upserts the Loops contact and records it. A contact Loops does not hold yet (no id recorded)
/// is sent with the lists its memberships may join, remembered as answered for them.
async fn mirror(sync: &LoopsSync, api: &Api<Contact>, key: &ObjectKey) -> Result<Action, Error> {
    let Some(contact) = kubeapi::get(api, &key.name).await? else {
        return Ok(Action::await_change());
    };
    let writer = sync.core.writer();
    let known = writer_id(&contact);
    let stamp_of = format!(
        "{}/{}",
        contact.metadata.uid.as_deref().unwrap_or_default(),
        contact.metadata.generation.unwrap_or_default()
    );
    let answers = &sync.core.answers;
    let answered = match answers.recall(ViewKind::Contact, key, &stamp_of) {
        Some(Recall::Recorded) => return Ok(Action::await_change()),
        Some(Recall::Unrecorded(id)) => Ok(id),
        None => {
            // Lists ride only on the first sync, and never for someone who opted out: their
            // memberships go through the membership loop's own consent checks.
            let joins = if known.is_some() || opted_out(&contact) {
                Joins::default()
            } else {
                joins(&sync.core.ctx.view.read(), &key.namespace, &key.name, Loops)
            };
            if joins.groups_pending && may_wait_for_groups(sync.core.started, &contact) {
                return Ok(Action::requeue(GROUP_POLL));
            }
            let lists = joins.ids().into_iter().map(|id| (id, true)).collect();
            match sync
                .client
                .upsert_contact(&upsert_of(&contact, lists))
                .await
            {
                Ok(id) => {
                    for (membership, list) in joins.groups {
                        let stamp = stamp(&contact.spec.email, &list);
                        answers.answered(ViewKind::Membership, &membership, stamp, list);
                    }
                    answers.answered(ViewKind::Contact, key, stamp_of.clone(), id.clone());
                    Ok(id)
                }
                Err(error) => Err(error),
            }
        }
    };
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

fn writer_id(contact: &Contact) -> Option<String> {
    crate::view::sync::provider_id(contact.status.as_ref(), Loops).map(str::to_owned)
}
