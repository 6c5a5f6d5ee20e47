//! A read-only, indexed view of the cluster that admission rules (and controllers) read instead of
//! the API server. It is fed by kube watchers in a cluster ([`watch`]) or by manifest files offline
//! ([`manifests`]); either way, decisions never perform I/O.

pub mod found;
pub mod index;
pub mod manifests;
pub mod records;
pub mod store;
pub mod symbols;
pub mod watch;

use std::collections::BTreeSet;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use kube::ResourceExt;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

pub use store::{ContactView, GroupView, NamedRef, Store, SubjectView, UserView, ViewKind};

use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};

use crate::api::{
    Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
    ContactGroupMembershipRemoval, User, UserInvitation,
};

/// The shared view: a store behind a lock, which kinds have finished their initial listing, and a
/// feed of changes for the controllers.
pub struct ClusterView {
    store: RwLock<Store>,
    synced: Mutex<BTreeSet<ViewKind>>,
    changes: broadcast::Sender<ViewChange>,
}

/// One change the view has applied. Controllers are woken by these rather than by watches of
/// their own, so when a reconcile runs the view already holds the object that woke it, and two
/// changes are seen in the order the view applied them (no race between two caches).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ViewChange {
    /// An object was added or replaced.
    Applied(ViewKind, String, String),
    /// An object was deleted.
    Deleted(ViewKind, String, String),
    /// A kind was relisted (or the listener fell behind): anything of it may have changed.
    Relisted(ViewKind),
}

/// How many changes a slow controller may fall behind before it is told to resync instead.
const CHANGE_FEED_CAPACITY: usize = 16 * 1024;

impl Default for ClusterView {
    fn default() -> Self {
        Self {
            store: RwLock::default(),
            synced: Mutex::default(),
            changes: broadcast::channel(CHANGE_FEED_CAPACITY).0,
        }
    }
}

impl ClusterView {
    /// An empty view that reports synced at once: the offline mode, where the manifests loaded
    /// before serving are the whole truth.
    pub fn offline(store: Store) -> Self {
        Self {
            store: RwLock::new(store),
            synced: Mutex::new(ViewKind::ALL.into_iter().collect()),
            ..Self::default()
        }
    }

    /// An empty view that is not synced until every watcher reports its initial list.
    pub fn unsynced() -> Self {
        Self::default()
    }

    /// Reads the store. Held only for the length of one decision.
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the store; only watchers and loaders call this.
    pub fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Subscribes to the changes applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ViewChange> {
        self.changes.subscribe()
    }

    /// Announces a change already applied to the store. Nobody listening is not an error: only
    /// the leader runs controllers.
    pub fn announce(&self, change: ViewChange) {
        let _ = self.changes.send(change);
    }

    /// Records that `kind` has completed its initial listing.
    pub fn mark_synced(&self, kind: ViewKind) {
        self.synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind);
    }

    /// Whether every kind has completed its initial listing; until then decisions could miss
    /// objects, so the server is not ready and refuses to decide.
    pub fn is_synced(&self) -> bool {
        self.synced.lock().unwrap_or_else(|p| p.into_inner()).len() == ViewKind::ALL.len()
    }

    /// Kinds still waiting for their initial listing, for the readiness message.
    pub fn unsynced_kinds(&self) -> Vec<ViewKind> {
        let synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        ViewKind::ALL
            .into_iter()
            .filter(|k| !synced.contains(k))
            .collect()
    }
}

/// Gives memory freed while loading back to the operating system. Building the view parses every
/// object and grows its tables by doubling; glibc keeps the freed memory (tens of MiB at a million
/// objects) in its heap unless asked to trim it, which would count against the pod's memory limit.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A typed resource the view indexes: how to store it and which table it lives in.
pub trait Viewed:
    kube::Resource<DynamicType = ()>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The table this kind lives in.
    const KIND: ViewKind;
    /// Stores or replaces this object.
    fn apply_to(&self, store: &mut Store);
    /// Forgets this object.
    fn delete_from(&self, store: &mut Store) {
        store.delete(
            Self::KIND,
            &self.namespace().unwrap_or_default(),
            &self.name_any(),
        );
    }
}

macro_rules! viewed {
    ($($ty:ty => $kind:ident, $apply:ident;)*) => {$(
        impl Viewed for $ty {
            const KIND: ViewKind = ViewKind::$kind;
            fn apply_to(&self, store: &mut Store) {
                store.$apply(self)
            }
        }
    )*};
}

viewed! {
    Role => Role, apply_role;
    ClusterRole => ClusterRole, apply_cluster_role;
    RoleBinding => MemberBinding, apply_role_binding;
    Contact => Contact, apply_contact;
    ContactGroup => ContactGroup, apply_group;
    ContactGroupMembership => Membership, apply_membership;
    ContactGroupMembershipRemoval => Removal, apply_removal;
    ContactGroupEnrollmentPolicy => EnrollmentPolicy, apply_policy;
    User => User, apply_user;
    UserInvitation => Invitation, apply_invitation;
}
