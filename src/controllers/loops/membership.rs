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
use crate::controllers::providers::joins::{joinable, stamp};
use crate::controllers::providers::status::{self, Outcome, Record};
use crate::controllers::providers::{Loop, SyncedObject, drive_loop, keys, mirrored_by, ready};
use crate::controllers::{Action, Error, ObjectKey, kubeapi};
use crate::providers::loops::LoopsError;
use crate::view::{Store, ViewChange, ViewKind};

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
    /// Live: add the finalizer and/or put the contact on the list.
    Sync {
        /// Put the finalizer on first.
        add_finalizer: bool,
        /// (contact, list) to join, once both are mirrored.
        add: Option<(ObjectKey, String)>,
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
    let add_finalizer = !m.marks.finalizer(Loops);
    let wanted = !m.marks.synced(Loops) || forced;
    let contact = view.contact_sync(m.contact.namespace, m.contact.name);
    let add = contact
        .filter(|c| wanted && c.marks.synced(Loops) && !c.deleting)
        .and_then(|_| joinable(view, &m, Loops))
        .map(|list| {
            let contact = ObjectKey::new(m.contact.namespace, m.contact.name);
            (contact, list.to_owned())
        });
    let mirrors = mirrored_by(view, &m, configured);
    let repair_ready =
        !wanted && ready::needs_repair(Loops, configured, m.marks, |p| mirrors.contains(&p));
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
pub async fn run(sync: Arc<LoopsSync>) {
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
pub async fn reconcile(sync: Arc<LoopsSync>, key: ObjectKey) -> Result<Action, Error> {
    let core = &sync.core;
    let forced = core.is_forced(ViewKind::Membership, &key.namespace, &key.name);
    let (plan, mirrors, marks, contact_key) = {
        let view = core.ctx.view.read();
        let plan = plan(&view, &key.namespace, &key.name, forced, &core.configured);
        match view.membership_sync(&key.namespace, &key.name) {
            Some(m) => (
                plan,
                mirrored_by(&view, &m, &core.configured),
                m.marks,
                Some(ObjectKey::new(m.contact.namespace, m.contact.name)),
            ),
            None => (plan, Vec::new(), Default::default(), None),
        }
    };
    let mirrors = |p: ProviderName| mirrors.contains(&p);
    let api: Api<ContactGroupMembership> = Api::namespaced(core.ctx.client.clone(), &key.namespace);
    match plan {
        Plan::Wait => {}
        Plan::Release { list } => {
            core.answers.forget(ViewKind::Membership, &key);
            if let (Some(list), Some(contact)) = (list, contact_key) {
                set_list(&sync, &contact, &list, false).await?;
            }
            status::set_finalizer(Loops, &api, &key.name, false).await?;
        }
        Plan::Sync {
            add_finalizer,
            add,
            repair_ready,
        } => {
            if add_finalizer && !status::set_finalizer(Loops, &api, &key.name, true).await? {
                // Deleted meanwhile: its deletion wakes the release.
                return Ok(Action::await_change());
            }
            let record = Record {
                kind: SyncedObject::Membership,
                existing: &[],
                // Memberships are immutable: generation 1, as the view reads it back.
                generation: Some(1),
                others: ready::others(Loops, &core.configured, marks, mirrors),
            };
            if let Some((contact, list)) = add {
                return mirror(&sync, &api, &key, &record, (&contact, &list)).await;
            }
            if repair_ready {
                core.writer()
                    .repair_ready(&api, &key.name, SyncedObject::Membership, mirrors)
                    .await?;
            }
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
