//! Cluster mode: one kube watcher per indexed kind keeps the view current. A relist (the initial
//! list, or one after a watch expired) replaces the kind's contents atomically at its end, so
//! objects deleted while the watch was down disappear and readers never see a half-filled table.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use super::index::Key;
use super::{ClusterView, ViewChange, Viewed};
use hashbrown::HashSet;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};

use crate::api::iam::ORGANIZATION_MEMBERSHIP_LABEL;
use crate::api::{
    Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
    ContactGroupMembershipRemoval, Email, EmailBroadcast, EmailTemplate, User, UserInvitation,
};

/// Runs every watcher until the process ends; each retries with backoff on its own.
pub async fn run(client: Client, view: Arc<ClusterView>) {
    tokio::join!(
        watch_kind::<Contact>(client.clone(), view.clone()),
        watch_kind::<ContactGroup>(client.clone(), view.clone()),
        watch_kind::<ContactGroupMembership>(client.clone(), view.clone()),
        watch_kind::<ContactGroupMembershipRemoval>(client.clone(), view.clone()),
        watch_kind::<ContactGroupEnrollmentPolicy>(client.clone(), view.clone()),
        watch_kind::<User>(client.clone(), view.clone()),
        watch_kind::<UserInvitation>(client.clone(), view.clone()),
        watch_kind::<Role>(client.clone(), view.clone()),
        watch_kind::<ClusterRole>(client.clone(), view.clone()),
        watch_membership_bindings(client.clone(), view.clone()),
        watch_kind::<Email>(client.clone(), view.clone()),
        watch_kind::<EmailTemplate>(client.clone(), view.clone()),
        watch_kind::<EmailBroadcast>(client, view),
    );
}

/// Only bindings labelled as organization memberships matter; selecting them server-side keeps
/// every other RoleBinding in the cluster out of this process.
async fn watch_membership_bindings(client: Client, view: Arc<ClusterView>) {
    let config = watcher::Config::default().labels(ORGANIZATION_MEMBERSHIP_LABEL);
    watch_with::<RoleBinding>(client, view, config).await
}

async fn watch_kind<K: Viewed>(client: Client, view: Arc<ClusterView>) {
    watch_with::<K>(client, view, watcher::Config::default()).await
}

/// Watches one kind. When the controllers' fields are switched on (this replica became the
/// leader) the watch starts over, so every object is applied again with them; the relist
/// replaces the kind's contents atomically, so admission keeps deciding meanwhile.
async fn watch_with<K: Viewed>(client: Client, view: Arc<ClusterView>, config: watcher::Config) {
    let kind = K::KIND.kind_name();
    let api = Api::<K>::all(client);
    let mut fields = view.controller_fields();
    let mut restarted = false;
    loop {
        let with_fields = *fields.borrow_and_update() || !K::KIND.has_controller_fields();
        // Relists for leadership take turns: six kinds relisting at once would hold six sets
        // of list pages at a time, and what the allocator keeps of them stays as RSS.
        let mut turn = match restarted {
            true => Some(RELIST_TURNS.acquire().await),
            false => None,
        };
        let mut events = watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed();
        let mut relist: Option<HashSet<Key>> = None;
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        let done = matches!(event, watcher::Event::InitDone);
                        apply_event(&view, event, &mut relist);
                        if done {
                            turn = None;
                            if with_fields {
                                view.mark_controller_synced(K::KIND);
                            }
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(kind, %error, "watch failed; retrying with backoff")
                    }
                    None => return,
                },
                changed = fields.changed(), if !with_fields => {
                    if changed.is_err() {
                        return;
                    }
                    restarted = true;
                    break;
                }
            }
        }
        drop(turn);
    }
}

/// One relist for leadership at a time (see `watch_with`).
static RELIST_TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Applies one watch event to the view; `relist` collects the keys seen during a relist (as
/// interned keys: a relist of a million objects would otherwise hold two million strings).
pub fn apply_event<K: Viewed>(
    view: &ClusterView,
    event: watcher::Event<K>,
    relist: &mut Option<HashSet<Key>>,
) {
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    match event {
        watcher::Event::Init => {
            *relist = Some(HashSet::new());
            view.write().set_listing(K::KIND, true);
        }
        watcher::Event::InitApply(object) => {
            let mut store = view.write();
            object.apply_to(&mut store);
            if let Some(seen) = relist.as_mut() {
                let (namespace, name) = key(&object);
                if let Some(stored) = store.stored_key(K::KIND, &namespace, &name) {
                    seen.insert(stored);
                }
            }
        }
        watcher::Event::InitDone => {
            let seen = relist.take().unwrap_or_default();
            let mut store = view.write();
            let pruned = store.retain_keys(K::KIND, &seen);
            store.set_listing(K::KIND, false);
            drop(store);
            view.mark_synced(K::KIND);
            view.announce(ViewChange::Relisted(K::KIND));
            super::release_freed_memory();
            tracing::info!(
                kind = K::KIND.kind_name(),
                objects = seen.len(),
                pruned,
                "view synced"
            );
        }
        watcher::Event::Apply(object) => {
            object.apply_to(&mut view.write());
            let (namespace, name) = key(&object);
            view.announce(ViewChange::Applied(K::KIND, namespace, name));
        }
        watcher::Event::Delete(object) => {
            object.delete_from(&mut view.write());
            let (namespace, name) = key(&object);
            view.announce(ViewChange::Deleted(K::KIND, namespace, name));
        }
    }
}
