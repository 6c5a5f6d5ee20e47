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
pub mod steps;

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

/// What a loop is: its kind, its label in logs and metrics, the kinds whose relist sweeps it.
pub type LoopKind = (ViewKind, &'static str, &'static [ViewKind]);
/// Every provider's contact loop.
pub const CONTACTS: LoopKind = (ViewKind::Contact, "contact", &[ViewKind::Contact]);
/// Every provider's group loop.
pub const GROUPS: LoopKind = (
    ViewKind::ContactGroup,
    "contactgroup",
    &[ViewKind::ContactGroup],
);
/// Every provider's membership loop: its contact or group becoming mirrored concerns it too.
pub const MEMBERSHIPS: LoopKind = (
    ViewKind::Membership,
    "membership",
    &[
        ViewKind::Membership,
        ViewKind::Contact,
        ViewKind::ContactGroup,
    ],
);

/// Memberships another change concerns: those of a contact or group that became mirrored.
pub fn related_memberships(change: &ViewChange, view: &Store) -> Vec<ObjectKey> {
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

/// A provider's plan for one kind, decided from the view alone:
/// `(view, namespace, name, forced, configured providers)`.
pub type PlanFn<P> = fn(&Store, &str, &str, bool, &[ProviderName]) -> P;

/// Runs one kind's loop, idle for an object while its `plan` is `wait`.
pub async fn run_kind<S, P, W, R, Fut>(
    sync: Arc<S>,
    (kind, label, relists): LoopKind,
    (plan, wait): (PlanFn<P>, P),
    related: W,
    reconcile: R,
) where
    S: ProviderSync,
    P: PartialEq,
    W: Fn(&ViewChange, &Store) -> Vec<ObjectKey>,
    R: Fn(Arc<S>, ObjectKey) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    let configured = sync.core().configured.clone();
    let lp = Loop {
        kind,
        label,
        relists,
        idle: move |view: &Store, ns: &str, name: &str, forced| {
            plan(view, ns, name, forced, &configured) == wait
        },
        related,
        reconcile,
    };
    drive_loop(sync, lp).await;
}

impl SyncCore {
    /// What `plan` decides for `key` of `kind` now (drift repair's doubt included).
    pub fn plan<P>(&self, kind: ViewKind, key: &ObjectKey, plan: PlanFn<P>) -> P {
        let forced = self.is_forced(kind, &key.namespace, &key.name);
        plan(
            &self.ctx.view.read(),
            &key.namespace,
            &key.name,
            forced,
            &self.configured,
        )
    }

    /// The configured providers that mirror the group `key`.
    pub fn group_mirrors(&self, key: &ObjectKey) -> Vec<ProviderName> {
        let view = self.ctx.view.read();
        match view.group_sync(&key.namespace, &key.name) {
            Some(group) => self
                .configured
                .iter()
                .copied()
                .filter(|p| mirrors_group(*p, &group))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The membership `key` as a status write needs it: the configured providers that mirror
    /// it, its marks, and its contact.
    pub fn membership_of(&self, key: &ObjectKey) -> MembershipOf {
        let view = self.ctx.view.read();
        match view.membership_sync(&key.namespace, &key.name) {
            Some(m) => MembershipOf {
                mirrors: mirrored_by(&view, &m, &self.configured),
                marks: m.marks,
                contact: Some(ObjectKey::new(m.contact.namespace, m.contact.name)),
            },
            None => MembershipOf::default(),
        }
    }
}

/// What [`SyncCore::membership_of`] reads.
#[derive(Debug, Default)]
pub struct MembershipOf {
    /// The configured providers that mirror it.
    pub mirrors: Vec<ProviderName>,
    /// Its sync marks.
    pub marks: crate::view::SyncMarks,
    /// Its contact.
    pub contact: Option<ObjectKey>,
}

impl MembershipOf {
    /// Where `provider`'s outcome for it is recorded: memberships are immutable, so generation 1,
    /// as the view reads it back.
    pub fn record(
        &self,
        provider: ProviderName,
        configured: &[ProviderName],
    ) -> status::Record<'static> {
        status::Record {
            kind: SyncedObject::Membership,
            existing: &[],
            generation: Some(1),
            others: ready::others(provider, configured, self.marks, |p| {
                self.mirrors.contains(&p)
            }),
        }
    }
}

/// The keys of `refs`.
pub fn keys<'a>(refs: impl IntoIterator<Item = NamedRef<'a>>) -> Vec<ObjectKey> {
    refs.into_iter()
        .map(|r| ObjectKey::new(r.namespace, r.name))
        .collect()
}

pub use super::runner::unrelated;
