//! ContactGroup -> the Loops mailing list its `spec.providers` names. Loops lists cannot be
//! created, renamed or deleted through its API, so the group's part is to check the list exists
//! and record it: `LoopsContactGroupReady` True with the list as its `providers[]` entry, False
//! `ListNotFound` when Loops has no such list (looked at again every resync), False `NotInLoops`
//! once when the spec names no list (not an error: the group is simply not mirrored to Loops,
//! and `Ready` does not wait for Loops). No finalizer: deleting a group leaves its list, which
//! belongs to the Loops account; its memberships each take their contact off the list.

use std::collections::HashSet;
use std::sync::Arc;

use kube::Api;

use super::LoopsSync;
use crate::api::ContactGroup;
use crate::api::common::ProviderName::{self, Loops};
use crate::controllers::providers::status::Outcome;
use crate::controllers::providers::{
    GROUPS, SyncedObject, mirrors_group, ready, run_kind, unrelated,
};
use crate::controllers::{Action, Error, ObjectKey, kubeapi};
use crate::view::{Store, ViewKind};

/// Reason of the condition of a group whose spec names no Loops list.
pub const NOT_IN_LOOPS: &str = "NotInLoops";
/// Reason of the condition of a group whose list Loops does not have.
pub const LIST_NOT_FOUND: &str = "ListNotFound";

/// What reconciling a group does, decided from the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do.
    Wait,
    /// Say once that the spec names no Loops list.
    LeaveOut,
    /// Check the list exists and record it.
    Mirror {
        /// The list's id.
        list: String,
    },
    /// Only rewrite `Ready`, which disagrees with the providers' conditions.
    RepairReady,
}

/// Decides what reconciling the group `namespace/name` does, among the `configured` providers.
pub fn plan(
    view: &Store,
    namespace: &str,
    name: &str,
    forced: bool,
    configured: &[ProviderName],
) -> Plan {
    let Some(group) = view.group_sync(namespace, name) else {
        return Plan::Wait;
    };
    if group.deleting {
        return Plan::Wait;
    }
    let Some(list) = group.loops_list else {
        return if group.loops_reported {
            Plan::Wait
        } else {
            Plan::LeaveOut
        };
    };
    if !group.marks.synced(Loops) || forced {
        return Plan::Mirror {
            list: list.to_owned(),
        };
    }
    if ready::needs_repair(Loops, configured, group.marks, |p| mirrors_group(p, &group)) {
        Plan::RepairReady
    } else {
        Plan::Wait
    }
}

/// Groups whose recorded state `listed` (the account's list ids now) contradicts: a list
/// recorded found that is gone, or one recorded missing that is there.
pub fn drifted(view: &Store, listed: &HashSet<String>) -> Vec<ObjectKey> {
    view.names(ViewKind::ContactGroup)
        .into_iter()
        .filter(|(ns, name)| {
            view.group_sync(ns, name).is_some_and(|g| {
                let Some(list) = g.loops_list else {
                    return false;
                };
                !g.deleting && g.marks.synced(Loops) != listed.contains(list)
            })
        })
        .map(|(ns, name)| ObjectKey::new(&ns, &name))
        .collect()
}

/// Runs the group loop until aborted.
pub async fn run(sync: Arc<LoopsSync>) {
    run_kind(sync, GROUPS, (plan, Plan::Wait), unrelated, reconcile).await;
}

/// Reconciles one group.
pub async fn reconcile(sync: Arc<LoopsSync>, key: ObjectKey) -> Result<Action, Error> {
    let core = &sync.core;
    let forced = core.is_forced(ViewKind::ContactGroup, &key.namespace, &key.name);
    let plan = core.plan(ViewKind::ContactGroup, &key, plan);
    let mirrored_by = core.group_mirrors(&key);
    let mirrors = |p: ProviderName| mirrored_by.contains(&p);
    let api: Api<ContactGroup> = Api::namespaced(core.ctx.client.clone(), &key.namespace);
    let writer = core.writer();
    match plan {
        Plan::Wait => Ok(Action::await_change()),
        Plan::RepairReady => {
            writer
                .repair_ready(&api, &key.name, SyncedObject::Group, mirrors)
                .await?;
            Ok(Action::await_change())
        }
        Plan::LeaveOut => {
            let Some(group) = kubeapi::get(&api, &key.name).await? else {
                return Ok(Action::await_change());
            };
            let record = writer.record_of(&group, SyncedObject::Group, mirrors);
            let outcome = Outcome {
                id: None,
                failure: None,
                left_out: Some((
                    NOT_IN_LOOPS,
                    "spec.providers names no Loops list: the group is not mirrored to Loops",
                )),
            };
            writer.record(&api, &key.name, &record, &outcome).await?;
            Ok(Action::await_change())
        }
        Plan::Mirror { list } => {
            let Some(group) = kubeapi::get(&api, &key.name).await? else {
                return Ok(Action::await_change());
            };
            let record = writer.record_of(&group, SyncedObject::Group, mirrors);
            match sync.list_exists(&list, forced).await {
                Ok(true) => {
                    writer
                        .record(&api, &key.name, &record, &Outcome::synced(&list))
                        .await?;
                    Ok(Action::await_change())
                }
                Ok(false) => {
                    let missing = ListNotFound(list);
                    let outcome = Outcome::failed(None, &missing);
                    writer.record(&api, &key.name, &record, &outcome).await?;
                    // Lists are made in Loops' dashboard: look again at the next resync (drift
                    // repair also forces the group as soon as the list appears).
                    Ok(Action::requeue(core.ctx.settings.provider_resync))
                }
                Err(error) => Err(writer
                    .report_failure(&api, &key.name, &record, None, error)
                    .await),
            }
        }
    }
}

/// A list the spec names that Loops does not have, reported as [`LIST_NOT_FOUND`].
struct ListNotFound(String);

impl std::fmt::Display for ListNotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no mailing list {:?} in the account", self.0)
    }
}

impl crate::controllers::providers::ProviderFailure for ListNotFound {
    fn reason(&self) -> &'static str {
        LIST_NOT_FOUND
    }
    fn is_permanent(&self) -> bool {
        true
    }
    fn retry_in(&self) -> Option<std::time::Duration> {
        None
    }
}
