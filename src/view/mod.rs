//! A read-only, indexed view of the cluster that admission rules (and controllers) read instead of
//! the API server. It is fed by kube watchers in a cluster ([`watch`]) or by manifest files offline
//! ([`manifests`]); either way, decisions never perform I/O.

pub mod broadcasts;
pub mod emails;
pub mod extras;
pub mod found;
pub mod index;
pub mod lookups;
pub mod manifests;
pub mod preferences;
pub mod records;
pub mod store;
pub mod symbols;
pub mod sync;
pub mod templates;
pub mod watch;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use kube::ResourceExt;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

pub use extras::{ContactFacts, ENROLLMENT_FINALIZER, RECORD_PREFIX};
pub use store::{ContactView, GroupView, NamedRef, Store, SubjectView, UserView, ViewKind};
pub use sync::{ContactSync, GroupSync, MembershipSync, SyncMarks};

use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};

use crate::api::{
    Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
    ContactGroupMembershipRemoval, Email, EmailBroadcast, EmailTemplate, User, UserInvitation,
};

/// The shared view: a store behind a lock, which kinds have finished their initial listing, and a
/// feed of changes for the controllers.
pub struct ClusterView {
    store: RwLock<Store>,
    synced: Mutex<BTreeSet<ViewKind>>,
    /// Whether `synced` holds every kind: read on every review, so without the lock. Kinds are
    /// only ever added, so once true it stays true.
    all_synced: AtomicBool,
    /// Kinds relisted since the controllers' fields were enabled: only these hold them all.
    controller_synced: Mutex<BTreeSet<ViewKind>>,
    /// Whether the controllers' fields are kept; watchers relist when it turns on.
    controller_fields: tokio::sync::watch::Sender<bool>,
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

impl ClusterView {
    fn with(store: Store, synced: BTreeSet<ViewKind>) -> Self {
        let fields = store.has_controller_fields();
        let controller_synced = if fields {
            synced.clone()
        } else {
            BTreeSet::new()
        };
        Self {
            store: RwLock::new(store),
            all_synced: AtomicBool::new(synced.len() == ViewKind::ALL.len()),
            synced: Mutex::new(synced),
            controller_synced: Mutex::new(controller_synced),
            controller_fields: tokio::sync::watch::channel(fields).0,
            changes: broadcast::channel(CHANGE_FEED_CAPACITY).0,
        }
    }

    /// A view of `store` that reports synced at once: the offline mode, where the manifests
    /// loaded before serving are the whole truth.
    pub fn offline(store: Store) -> Self {
        Self::with(store, ViewKind::ALL.into_iter().collect())
    }

    /// An empty view keeping only what admission reads, not synced until every watcher reports
    /// its initial list: what every replica starts with in a cluster.
    pub fn unsynced() -> Self {
        Self::with(Store::admission_only(), BTreeSet::new())
    }

    /// Starts keeping the controllers' fields (on gaining leadership): the watchers of the kinds
    /// that have any relist, and [`ClusterView::controller_fields_synced`] turns true once all
    /// of them have. Enabling twice is a no-op.
    pub fn enable_controller_fields(&self) {
        if self.read().has_controller_fields() {
            return;
        }
        self.write().enable_controller_fields();
        let synced = self
            .synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        *self
            .controller_synced
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = synced
            .into_iter()
            .filter(|k| !k.has_controller_fields())
            .collect();
        tracing::info!("keeping the controllers' fields from now on; relisting");
        self.controller_fields.send_replace(true);
    }

    /// Follows whether the controllers' fields are kept (watchers relist when it turns on).
    pub fn controller_fields(&self) -> tokio::sync::watch::Receiver<bool> {
        self.controller_fields.subscribe()
    }

    /// Records that `kind` was relisted with the controllers' fields kept.
    pub fn mark_controller_synced(&self, kind: ViewKind) {
        self.controller_synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kind);
    }

    /// Whether every kind holds the controllers' fields of every object.
    pub fn controller_fields_synced(&self) -> bool {
        self.controller_synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
            == ViewKind::ALL.len()
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
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        synced.insert(kind);
        if synced.len() == ViewKind::ALL.len() {
            self.all_synced.store(true, Ordering::Release);
        }
    }

    /// Whether every kind has completed its initial listing; until then decisions could miss
    /// objects, so the server is not ready and refuses to decide.
    pub fn is_synced(&self) -> bool {
        self.all_synced.load(Ordering::Acquire)
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
    Email => Email, apply_email;
    EmailTemplate => EmailTemplate, apply_email_template;
    EmailBroadcast => EmailBroadcast, apply_broadcast;
}
