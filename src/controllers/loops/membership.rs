//! ContactGroupMembership -> the contact's subscription to its group's Loops list: one upsert
//! with `mailingLists: {<list>: true}` once the contact and the group are mirrored, `false` as
//! the membership goes. Never `true` beside a removal (the shared
//! [`joinable`](crate::controllers::providers::joins::joinable) decides), and never `subscribed:
//! true`. Memberships of groups that name no Loops list are not Loops' concern: no finalizer, no
//! condition, and `Ready` does not wait for Loops.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::Api;

use super::LoopsSync;
use super::contact::upsert_of;
use crate::api::common::ProviderName::{self, Loops};
use crate::api::{Contact, ContactGroupMembership};
use crate::controllers::providers::answers::Recall;
use crate::controllers::providers::joins::stamp;
use crate::controllers::providers::status::{self, Outcome, Record};
use crate::controllers::providers::steps::{self, Steps};
use crate::controllers::providers::{MEMBERSHIPS, SyncedObject, related_memberships, run_kind};
use crate::controllers::{Action, Error, ObjectKey, kubeapi};
use crate::providers::loops::LoopsError;
use crate::view::{ContactSync, Store, ViewKind};

/// What reconciling a membership does, decided from the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do.
    Wait,
    /// Being deleted (or its group left Loops): take the contact off the list, then release.
    Release {
        /// The list, when its group still names one.
        list: Option<String>,
    },
    /// Live: its steps, the work being to put (contact, list) on the list.
    Sync(Steps<(ObjectKey, String)>),
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
    let group = view.group_sync(m.group.namespace, m.group.name);
    let list = group.as_ref().and_then(|g| g.loops_list);
    if m.deleting || list.is_none() {
        return if m.marks.finalizer(Loops) {
            Plan::Release {
                list: list.map(str::to_owned),
            }
        } else {
            Plan::Wait
        };
    }
    let add = |c: &ContactSync<'_>, list: &str| {
        let contact = ObjectKey::new(c.key.namespace, c.key.name);
        (contact, list.to_owned())
    };
    steps::membership(Loops, view, &m, (forced, configured), add).map_or(Plan::Wait, Plan::Sync)
}

/// Runs the membership loop until aborted.
pub async fn run(sync: Arc<LoopsSync>) {
    let related = related_memberships;
    run_kind(sync, MEMBERSHIPS, (plan, Plan::Wait), related, reconcile).await;
}

/// Reconciles one membership.
pub async fn reconcile(sync: Arc<LoopsSync>, key: ObjectKey) -> Result<Action, Error> {
    let core = &sync.core;
    let plan = core.plan(ViewKind::Membership, &key, plan);
    let of = core.membership_of(&key);
    let mirrors = |p: ProviderName| of.mirrors.contains(&p);
    let api: Api<ContactGroupMembership> = Api::namespaced(core.ctx.client.clone(), &key.namespace);
    match plan {
        Plan::Wait => {}
        Plan::Release { list } => {
            core.answers.forget(ViewKind::Membership, &key);
            if !status::holds_finalizer(Loops, &api, &key.name).await? {
                return Ok(Action::await_change());
            }
            if let (Some(list), Some(contact)) = (list, &of.contact) {
                set_list(&sync, contact, &list, false).await?;
            }
            status::set_finalizer(Loops, &api, &key.name, false).await?;
        }
        Plan::Sync(steps) => {
            let record = of.record(Loops, &core.configured);
            let (sync, api, key, record) = (&sync, &api, &key, &record);
            let object = (key, SyncedObject::Membership);
            let add = move |(contact, list): (ObjectKey, String)| async move {
                mirror(sync, api, key, record, (&contact, &list)).await
            };
            return steps.run(core, api, object, mirrors, add).await;
        }
    }
    Ok(Action::await_change())
}

/// Sets `list` to `subscribed` on the Loops contact of `contact`, by its uid. Nothing when the
/// Contact is gone or going (its own deletion deletes the Loops contact, lists and all) or was
/// never mirrored to Loops. Returns the email the contact has, when a call was made.
async fn set_list(
    sync: &LoopsSync,
    contact: &ObjectKey,
    list: &str,
    subscribed: bool,
) -> Result<Option<String>, Error> {
    let api: Api<Contact> = Api::namespaced(sync.core.ctx.client.clone(), &contact.namespace);
    let Some(contact) = kubeapi::get(&api, &contact.name).await? else {
        return Ok(None);
    };
    let mirrored = crate::view::sync::provider_id(contact.status.as_ref(), Loops).is_some();
    if contact.metadata.deletion_timestamp.is_some() || !mirrored {
        return Ok(None);
    }
    let lists = BTreeMap::from([(list.to_owned(), subscribed)]);
    match sync
        .client
        .upsert_contact(&upsert_of(&contact, lists))
        .await
    {
        Ok(_) => Ok(Some(contact.spec.email)),
        // The list is gone from Loops: nothing holds the contact on it any more.
        Err(LoopsError::Invalid { .. }) if !subscribed => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Puts the contact on the list and records it; what the contact's create already did is
/// recorded without a call.
async fn mirror(
    sync: &LoopsSync,
    api: &Api<ContactGroupMembership>,
    key: &ObjectKey,
    record: &Record<'_>,
    (contact, list): (&ObjectKey, &str),
) -> Result<Action, Error> {
    let answers = &sync.core.answers;
    let email = sync
        .core
        .ctx
        .view
        .read()
        .contact_sync(&contact.namespace, &contact.name)
        .map(|c| c.email.to_owned())
        .unwrap_or_default();
    let stamp = stamp(&email, list);
    let writer = sync.core.writer();
    let added = match answers.recall(ViewKind::Membership, key, &stamp) {
        Some(Recall::Recorded) => return Ok(Action::await_change()),
        Some(Recall::Unrecorded(_)) => Ok(()),
        None => match set_list(sync, contact, list, true).await {
            Ok(Some(email)) => {
                let stamp = self::stamp(&email, list);
                answers.answered(ViewKind::Membership, key, stamp, list.into());
                Ok(())
            }
            // The contact went meanwhile: its deletion wakes this again.
            Ok(None) => return Ok(Action::await_change()),
            Err(Error::Loops(error)) => Err(error),
            Err(other) => return Err(other),
        },
    };
    match added {
        Ok(()) => {
            writer
                .record(api, &key.name, record, &Outcome::synced(list))
                .await?;
            answers.recorded(ViewKind::Membership, key);
            Ok(Action::await_change())
        }
        Err(error) => Err(writer
            .report_failure(api, &key.name, record, None, error)
            .await),
    }
}
