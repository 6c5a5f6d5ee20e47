//! The provider layer: what mirroring Contacts, ContactGroups and memberships to any provider
//! shares. Each provider ([`super::resend`], [`super::loops`]) brings a client and a mapping (a
//! plan per kind, decided from the view, and the calls that carry it out); this layer gives it:
//! - [`SyncCore`]: the controllers' context, the drift-repair "forced" set, the memory of
//!   answers whose status has not landed yet ([`answers`]), the backlog metric;
//! - [`Loop`] and [`drive_loop`]: one work queue per kind on the [`runner`](super::runner),
//!   woken by the view, retried by the shared error policy;
//! - [`status`]: the provider's own condition, its `status.providers[]` entry and the aggregate
//!   `Ready`, applied under the provider's own field manager, and its finalizer;
//! - [`ready`]: who repairs a `Ready` that two providers' writes left out of step.
//!
//! What was last synced is read back from each object's own condition (True for its current
//! generation, see [`crate::view::SyncMarks`]), so an unchanged object costs no provider call and
//! survives a restart.

pub mod answers;
pub mod joins;
pub mod ready;
pub mod status;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::runner::{self, Driver};
use super::{Action, Context, ControllerKind, Error, ObjectKey};
use crate::api::common::ProviderName;
use crate::view::{NamedRef, Store, ViewChange, ViewKind};

pub use crate::api::common::sync::SyncedObject;

/// The field manager of `provider`'s writes (its condition, its `providers[]` entry, its
/// finalizer): one per provider, so server-side apply never drops what another wrote.
pub fn field_manager(provider: ProviderName) -> &'static str {
    match provider {
        ProviderName::Resend => "milo-webhook-resend",
        ProviderName::Loops => "milo-webhook-loops",
    }
}

/// The `provider` label of metrics and the controller of logs.
pub fn label(provider: ProviderName) -> &'static str {
    match provider {
        ProviderName::Resend => "resend",
        ProviderName::Loops => "loops",
    }
}

fn controller(provider: ProviderName) -> ControllerKind {
    match provider {
        ProviderName::Resend => ControllerKind::Resend,
        ProviderName::Loops => ControllerKind::Loops,
    }
}

/// Whether `provider` mirrors the group `group` (and so its memberships): Resend mirrors every
/// group to a segment; Loops only those whose `spec.providers` names a list (lists cannot be made
/// through its API).
pub fn mirrors_group(provider: ProviderName, group: &crate::view::GroupSync<'_>) -> bool {
    match provider {
        ProviderName::Resend => true,
        ProviderName::Loops => group.loops_list.is_some(),
    }
}

/// Which of `configured` mirror the membership `m`: those that mirror its group.
pub fn mirrored_by(
    view: &Store,
    m: &crate::view::MembershipSync<'_>,
    configured: &[ProviderName],
) -> Vec<ProviderName> {
    let Some(group) = view.group_sync(m.group.namespace, m.group.name) else {
        return Vec::new();
    };
    configured
        .iter()
        .copied()
        .filter(|p| mirrors_group(*p, &group))
        // The person left the list at Loops: Loops no longer mirrors this membership.
        .filter(|p| *p != ProviderName::Loops || !m.marks.loops_list_opt_out())
        .collect()
}

/// What a reconcile failure of a provider call says about retrying.
pub trait ProviderFailure: std::fmt::Display + Send + Sync {
    /// The condition reason.
    fn reason(&self) -> &'static str;
    /// Retrying cannot help until something changes.
    fn is_permanent(&self) -> bool;
    /// The provider asked to wait this long.
    fn retry_in(&self) -> Option<std::time::Duration>;
}

impl ProviderFailure for crate::providers::resend::ResendError {
    fn reason(&self) -> &'static str {
        self.reason()
    }
    fn is_permanent(&self) -> bool {
        self.is_permanent()
    }
    fn retry_in(&self) -> Option<std::time::Duration> {
        self.retry_in()
    }
}

impl ProviderFailure for crate::providers::loops::LoopsError {
    fn reason(&self) -> &'static str {
        self.reason()
    }
    fn is_permanent(&self) -> bool {
        self.is_permanent()
    }
    fn retry_in(&self) -> Option<std::time::Duration> {
        self.retry_in()
    }
}

/// Labels of the backlog gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BacklogLabels {
    /// `resend` or `loops`.
    pub provider: String,
    /// `contact`, `contactgroup` or `membership`.
    pub kind: String,
}

/// The syncs' metrics, registered once and shared by every provider.
#[derive(Clone, Default)]
pub struct SyncMetrics {
    /// Objects waiting to sync, by provider and kind.
    pub backlog: Family<BacklogLabels, Gauge>,
}

impl SyncMetrics {
    /// Registers `milo_webhook_provider_sync_backlog`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "provider_sync_backlog",
            "Objects waiting to be mirrored to the provider",
            metrics.backlog.clone(),
        );
        metrics
    }

    fn backlog(&self, provider: ProviderName, kind: &str) -> Gauge {
        self.backlog
            .get_or_create(&BacklogLabels {
                provider: label(provider).into(),
                kind: kind.into(),
            })
            .clone()
    }
}

/// What every provider's sync holds beside its client.
pub struct SyncCore {
    /// The controllers' context (API client, view, settings).
    pub ctx: Arc<Context>,
    /// Which provider this is.
    pub provider: ProviderName,
    /// Every provider this process mirrors to (this one included): `Ready` waits for them all.
    pub configured: Vec<ProviderName>,
    /// The syncs' metrics.
    pub metrics: SyncMetrics,
    /// Objects drift repair found out of step with the provider: synced again even though their
    /// conditions say they are.
    forced: Mutex<HashSet<(ViewKind, ObjectKey)>>,
    /// What the provider answered lately, and whether its status landed: a retry after a failed
    /// status write, or a wake-up before the view shows the write, calls the provider no more.
    pub answers: answers::Answers,
    /// When this sync started (a new leader).
    pub started: std::time::Instant,
}

impl SyncCore {
    /// The shared state of `provider`'s sync; `configured` lists every provider mirrored to.
    pub fn new(
        ctx: Arc<Context>,
        provider: ProviderName,
        configured: Vec<ProviderName>,
        metrics: SyncMetrics,
    ) -> Self {
        Self {
            ctx,
            provider,
            configured,
            metrics,
            forced: Mutex::new(HashSet::new()),
            answers: answers::Answers::new(answers::DEFAULT_CAPACITY),
            started: std::time::Instant::now(),
        }
    }

    fn forced_lock(&self) -> std::sync::MutexGuard<'_, HashSet<(ViewKind, ObjectKey)>> {
        self.forced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether drift repair asked for `namespace/name` of `kind` to be synced again.
    pub fn is_forced(&self, kind: ViewKind, namespace: &str, name: &str) -> bool {
        self.forced_lock()
            .contains(&(kind, ObjectKey::new(namespace, name)))
    }

    /// Asks for objects to be synced again whatever their conditions say, and wakes them.
    pub fn force(&self, objects: Vec<(ViewKind, ObjectKey)>) {
        if objects.is_empty() {
            return;
        }
        self.forced_lock().extend(objects.iter().cloned());
        for (kind, key) in objects {
            // What the provider answered before is doubted now too.
            self.answers.forget(kind, &key);
            self.ctx
                .view
                .announce(ViewChange::Applied(kind, key.namespace, key.name));
        }
    }

    fn settled(&self, kind: ViewKind, key: &ObjectKey) {
        self.forced_lock().remove(&(kind, key.clone()));
    }

    /// How many objects are forced (for tests and logs).
    pub fn forced_count(&self) -> usize {
        self.forced_lock().len()
    }

    /// How this provider writes an object's status.
    pub fn writer(&self) -> status::Writer<'_> {
        status::Writer {
            provider: self.provider,
            configured: &self.configured,
            schemas: &self.ctx.schemas,
        }
    }
}

/// A provider's sync state: the shared [`SyncCore`] and its own client and caches.
pub trait ProviderSync: Send + Sync + 'static {
    /// The shared part.
    fn core(&self) -> &SyncCore;
}

/// One kind's loop: what it decides in memory, and how to reconcile one key.
pub struct Loop<I, W, R> {
    /// The kind.
    pub kind: ViewKind,
    /// Its label in logs and metrics.
    pub label: &'static str,
    /// Kinds whose relist sweeps this loop.
    pub relists: &'static [ViewKind],
    /// Whether reconciling `namespace/name` would do nothing: `(view, namespace, name, forced)`.
    pub idle: I,
    /// Objects of this kind another kind's change concerns (each still checked with `idle`).
    pub related: W,
    /// Reconciles one key.
    pub reconcile: R,
}

/// Drives one kind's loop on the runner: swept when its kinds relist and every resync, woken by
/// its own objects' changes and by `related` ones, each reconcile's error turned into a retry by
/// the shared error policy.
pub async fn drive_loop<S, I, W, R, Fut>(sync: Arc<S>, lp: Loop<I, W, R>)
where
    S: ProviderSync,
    I: Fn(&Store, &str, &str, bool) -> bool,
    W: Fn(&ViewChange, &Store) -> Vec<ObjectKey>,
    R: Fn(Arc<S>, ObjectKey) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    let kind = lp.kind;
    let core = sync.core();
    let controller = controller(core.provider);
    let idle = &lp.idle;
    let needs_work = move |view: &Store, ns: &str, name: &str| {
        !idle(view, ns, name, core.is_forced(kind, ns, name))
    };
    let feeds = runner::kind_feeds(kind, needs_work, &lp.related);
    let mut driver = Driver::new(&core.ctx, controller, lp.relists, feeds);
    driver.depth = core.metrics.backlog(core.provider, lp.label);
    let reconcile = &lp.reconcile;
    let sync = &sync;
    runner::drive(&core.ctx.view, driver, |key| async move {
        let label = format!("{}/{key}", lp.label);
        let work = reconcile(sync.clone(), key.clone());
        let action = super::reconcile_or_retry(&core.ctx, controller, label, work).await;
        // Done, not merely waiting or retrying: drift repair's doubt is lifted.
        if action.requeue_after().is_none() {
            core.settled(kind, &key);
        }
        action
    })
    .await;
}

/// The keys of `refs`.
pub fn keys<'a>(refs: impl IntoIterator<Item = NamedRef<'a>>) -> Vec<ObjectKey> {
    refs.into_iter()
        .map(|r| ObjectKey::new(r.namespace, r.name))
        .collect()
}

pub use super::runner::unrelated;
