//! ContactGroup -> Resend segment. Segments cannot be renamed, so the name is fixed from what
//! never changes: `<namespace>/<name>-<first 8 of uid>`, unique and recognisable in the Resend
//! dashboard. A segment is looked up by name in a listing (every page) before one is created, so
//! a crash between create and status write finds it again. A public group also gets its topic
//! (see [`super::topics`]) before it is recorded synced. Deleting the group deletes both.

use std::collections::HashMap;
use std::sync::Arc;

use kube::Api;

use super::ResendSync;
use crate::api::ContactGroup;
use crate::api::common::ProviderName::{self, Resend};
use crate::api::notification::Visibility;
use crate::controllers::providers::status::{self, Outcome};
use crate::controllers::providers::steps::Steps;
use crate::controllers::providers::{
    GROUPS, SyncedObject, mirrors_group, ready, run_kind, unrelated,
};
use crate::controllers::{Action, Error, ObjectKey, kubeapi};
use crate::providers::resend::ResendError;
use crate::view::{Store, ViewKind};

/// The segment name of the group `namespace/name` with uid `uid`.
pub fn segment_name(namespace: &str, name: &str, uid: &str) -> String {
    let short: String = uid.chars().take(8).collect();
    format!("{namespace}/{name}-{short}")
}

/// What reconciling a group does, decided from the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do.
    Wait,
    /// Being deleted: delete the segment (by its id, else found by name), release the finalizer.
    Release {
        /// The segment id the status records.
        segment: Option<String>,
        /// The segment's name, to find one created but never recorded.
        name: String,
    },
    /// Live: its steps, the work being to look the segment up (or create it) and record it.
    Sync(Steps<()>),
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
        if !group.marks.finalizer(Resend) {
            return Plan::Wait;
        }
        return Plan::Release {
            segment: group.segment.map(str::to_owned),
            name: segment_name(namespace, name, group.uid),
        };
    }
    let add_finalizer = !group.marks.finalizer(Resend);
    let mirror = !group.marks.synced(Resend) || group.segment.is_none() || forced;
    let mirrors = |p| mirrors_group(p, &group);
    let repair_ready = !mirror && ready::needs_repair(Resend, configured, group.marks, mirrors);
    let steps = Steps {
        add_finalizer,
        opt_out: false,
        work: mirror.then_some(()),
        repair_ready,
    };
    steps.needed().map_or(Plan::Wait, Plan::Sync)
}

/// Runs the group loop until aborted.
pub async fn run(sync: Arc<ResendSync>) {
    run_kind(sync, GROUPS, (plan, Plan::Wait), unrelated, reconcile).await;
}

/// Reconciles one group.
pub async fn reconcile(sync: Arc<ResendSync>, key: ObjectKey) -> Result<Action, Error> {
    let core = &sync.core;
    let plan = core.plan(ViewKind::ContactGroup, &key, plan);
    let mirrored_by = core.group_mirrors(&key);
    let mirrors = |p: ProviderName| mirrored_by.contains(&p);
    let api: Api<ContactGroup> = Api::namespaced(core.ctx.client.clone(), &key.namespace);
    match plan {
        Plan::Wait => {}
        Plan::Release { segment, name } => {
            let segment = match segment {
                Some(id) => Some(id),
                None => lookup(&sync, &name, false).await?,
            };
            if let Some(id) = segment {
                sync.client.delete_segment(&id).await?;
                forget(&sync, &name).await;
            }
            if public(&sync, &key) {
                let group = (key.namespace.as_str(), key.name.as_str());
                sync.topics.delete(&sync.client, group).await?;
            }
            status::set_finalizer(Resend, &api, &key.name, false).await?;
        }
        Plan::Sync(steps) => {
            let object = (&key, SyncedObject::Group);
            let mirror = |()| async {
                self::mirror(&sync, &api, &key, mirrors).await?;
                Ok(Action::await_change())
            };
            return steps.run(core, &api, object, mirrors, mirror).await;
        }
    }
    Ok(Action::await_change())
}

/// How long a listing of segments answers look-ups. Only this process creates segments while it
/// leads (and records each one it creates), so a recent listing is complete; a new leader lists
/// again.
const LISTING_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// The segment named `name`, from a recent listing unless `fresh`: a group whose segment vanished
/// must not be handed the stale id again.
async fn lookup(sync: &ResendSync, name: &str, fresh: bool) -> Result<Option<String>, ResendError> {
    let mut directory = sync.segments.lock().await;
    if !fresh
        && let Some((listed_at, names)) = directory.as_ref()
        && listed_at.elapsed() < LISTING_TTL
    {
        return Ok(names.get(name).cloned());
    }
    let listed: HashMap<String, String> = sync
        .client
        .list_segments()
        .await?
        .into_iter()
        .map(|s| (s.name, s.id))
        .collect();
    let found = listed.get(name).cloned();
    *directory = Some((std::time::Instant::now(), listed));
    Ok(found)
}

/// Whether the group `key` is public, as the view holds it.
fn public(sync: &ResendSync, key: &ObjectKey) -> bool {
    let view = sync.core.ctx.view.read();
    view.group(&key.namespace, &key.name)
        .is_some_and(|g| g.visibility == Visibility::Public)
}

async fn remember(sync: &ResendSync, name: &str, id: &str) {
    if let Some((_, names)) = sync.segments.lock().await.as_mut() {
        names.insert(name.to_owned(), id.to_owned());
    }
}

async fn forget(sync: &ResendSync, name: &str) {
    if let Some((_, names)) = sync.segments.lock().await.as_mut() {
        names.remove(name);
    }
}

/// Makes sure the group's segment exists and records its id.
async fn mirror(
    sync: &ResendSync,
    api: &Api<ContactGroup>,
    key: &ObjectKey,
    mirrors: impl Fn(ProviderName) -> bool,
) -> Result<(), Error> {
    let Some(group) = kubeapi::get(api, &key.name).await? else {
        return Ok(());
    };
    let uid = group.metadata.uid.clone().unwrap_or_default();
    let name = segment_name(&key.namespace, &key.name, &uid);
    let known = crate::view::sync::resend_id(group.status.as_ref()).map(str::to_owned);
    let forced = sync
        .core
        .is_forced(ViewKind::ContactGroup, &key.namespace, &key.name);
    let segment = match (&known, forced) {
        // The id is known and nobody doubts it: no call at all (a display-name change, say).
        (Some(id), false) => Ok(id.clone()),
        _ => ensure(sync, &name, forced).await,
    };
    let found = match segment {
        Ok(id) if group.spec.visibility == Visibility::Public => {
            let names = (key.namespace.as_str(), key.name.as_str());
            let topic = sync.topics.ensure(&sync.client, &group, names, forced);
            topic.await.map(|_| id)
        }
        other => other,
    };
    let writer = sync.core.writer();
    let record = writer.record_of(&group, SyncedObject::Group, mirrors);
    match found {
        Ok(id) => {
            writer
                .record(api, &key.name, &record, &Outcome::synced(&id))
                .await?;
            Ok(())
        }
        Err(error) => Err(writer
            .report_failure(api, &key.name, &record, known.as_deref(), error)
            .await),
    }
}

/// The id of the segment `name`: found in a listing, else created.
async fn ensure(sync: &ResendSync, name: &str, fresh: bool) -> Result<String, ResendError> {
    if let Some(id) = lookup(sync, name, fresh).await? {
        return Ok(id);
    }
    match sync.client.create_segment(name).await {
        Ok(id) => {
            remember(sync, name, &id).await;
            Ok(id)
        }
        Err(error) => {
            // The create may have happened with its answer lost: the next attempt lists again
            // rather than trusting a listing that cannot show it.
            *sync.segments.lock().await = None;
            Err(error)
        }
    }
}
