//! Provider sync with Resend (leader only, and only when an API key is configured): Contacts
//! become Resend contacts, ContactGroups segments, memberships segment memberships; opt-outs
//! reported by Resend come back as removals.
//!
//! Three loops share one Resend client (so one account rate limit) and the view: [`contact`],
//! [`group`] and [`membership`], each a [`runner`](super::runner) work queue woken by the view's
//! changes. What was last synced is read back from each object's own condition (True for its
//! current generation, see [`crate::view::SyncMarks`]), so a reconcile where nothing changed
//! costs no provider call and survives a restart. [`drift`] compares with Resend every
//! `--provider-resync` and forces the objects that drifted; [`optout`] turns a person's
//! Resend-side opt-out into removals.
//!
//! A first sync costs about one call per contact: the contacts Resend has are listed once into
//! the shared [`directory`] (pages of 100, refreshed by drift repair) instead of looked up one by
//! one, and each new contact is created with the segments of its memberships, which then only
//! record their status.

pub mod answers;
pub mod contact;
pub mod directory;
pub mod drift;
pub mod group;
pub mod membership;
pub mod oneclick;
pub mod optout;
pub mod sink;
mod status;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::runner::{self, Driver};
use super::{Action, Context, ControllerKind, Error, ObjectKey};
use crate::providers::resend::ResendClient;
use crate::view::{Store, ViewChange, ViewKind};

/// Field manager of the sync's writes (status conditions, provider ids, its finalizer), apart
/// from the other controllers' so server-side apply never drops what they wrote.
pub const FIELD_MANAGER: &str = "milo-webhook-resend";

/// How long a membership waits before trying again when Resend does not know its contact or
/// segment yet (another loop is about to create it).
const PREREQUISITE_WAIT: Duration = Duration::from_secs(5);

/// Labels of the backlog gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BacklogLabels {
    /// `resend`.
    pub provider: String,
    /// `contact`, `contactgroup` or `membership`.
    pub kind: String,
}

/// The sync's own metrics, registered into the registry it is handed.
#[derive(Clone, Default)]
pub struct SyncMetrics {
    /// Objects waiting to sync, by kind.
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

    fn backlog(&self, kind: &str) -> Gauge {
        self.backlog
            .get_or_create(&BacklogLabels {
                provider: "resend".into(),
                kind: kind.into(),
            })
            .clone()
    }
}

/// When segments were listed, and their ids by name.
type SegmentListing = (
    std::time::Instant,
    std::collections::HashMap<String, String>,
);

/// What the three loops share.
pub struct ResendSync {
    /// The controllers' context (API client, view, settings).
    pub ctx: Arc<Context>,
    /// The Resend client (one account, one rate limiter).
    pub client: ResendClient,
    /// The sync's metrics.
    pub metrics: SyncMetrics,
    /// Segment ids by name, as last listed: what a group looks up before creating a segment.
    segments: tokio::sync::Mutex<Option<SegmentListing>>,
    /// Objects drift repair found out of step with Resend: synced again even though their
    /// conditions say they are.
    forced: Mutex<HashSet<(ViewKind, ObjectKey)>>,
    /// What Resend answered lately, and whether its status landed: a retry after a failed
    /// status write, or a wake-up before the view shows the write, calls Resend no more.
    pub answers: answers::Answers,
    /// The contacts Resend holds by email, as last listed: what a contact without a recorded id
    /// is looked up in (shared, so a first sync lists once rather than a GET per contact).
    pub directory: directory::Directory,
    /// When this sync started (a new leader): contacts wait briefly for their groups' segments
    /// only around then or when new.
    started: std::time::Instant,
}

impl ResendSync {
    /// Sync state for `ctx` through `client`.
    pub fn new(ctx: Arc<Context>, client: ResendClient, metrics: SyncMetrics) -> Self {
        Self {
            ctx,
            client,
            metrics,
            segments: tokio::sync::Mutex::new(None),
            forced: Mutex::new(HashSet::new()),
            answers: answers::Answers::new(answers::DEFAULT_CAPACITY),
            directory: directory::Directory::default(),
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
            // What Resend answered before is doubted now too.
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
}

/// Runs the three sync loops and drift repair until aborted (leadership lost).
pub async fn run(sync: Arc<ResendSync>) {
    tokio::join!(
        contact::run(sync.clone()),
        group::run(sync.clone()),
        membership::run(sync.clone()),
        drift::run(sync.clone()),
    );
}

/// One kind's loop: what it decides in memory, and how to reconcile one key.
pub(crate) struct Loop<I, W, R> {
    kind: ViewKind,
    label: &'static str,
    relists: &'static [ViewKind],
    /// Whether reconciling `namespace/name` would do nothing: `(view, namespace, name, forced)`.
    idle: I,
    /// Objects of this kind another kind's change concerns (each still checked with `idle`).
    related: W,
    reconcile: R,
}

/// Drives one kind's loop on the runner: swept when its kinds relist and every resync, woken by
/// its own objects' changes and by `related` ones, each reconcile's error turned into a retry by
/// [`retry`].
pub(crate) async fn drive_loop<I, W, R, Fut>(sync: Arc<ResendSync>, lp: Loop<I, W, R>)
where
    I: Fn(&Store, &str, &str, bool) -> bool,
    W: Fn(&ViewChange, &Store) -> Vec<ObjectKey>,
    R: Fn(Arc<ResendSync>, ObjectKey) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    let kind = lp.kind;
    let (idle, forced) = (&lp.idle, &sync);
    let needs_work = move |view: &Store, ns: &str, name: &str| {
        !idle(view, ns, name, forced.is_forced(kind, ns, name))
    };
    let feeds = runner::kind_feeds(kind, needs_work, &lp.related);
    let mut driver = Driver::new(&sync.ctx, ControllerKind::Resend, lp.relists, feeds);
    driver.depth = sync.metrics.backlog(lp.label);
    let reconcile = &lp.reconcile;
    let sync = &sync;
    runner::drive(&sync.ctx.view, driver, |key| async move {
        let label = format!("{}/{key}", lp.label);
        let work = reconcile(sync.clone(), key.clone());
        let action =
            super::reconcile_or_retry(&sync.ctx, ControllerKind::Resend, label, work).await;
        // Done, not merely waiting or retrying: drift repair's doubt is lifted.
        if action.requeue_after().is_none() {
            sync.settled(kind, &key);
        }
        action
    })
    .await;
}

/// The keys of `refs`.
fn keys<'a>(refs: impl IntoIterator<Item = crate::view::NamedRef<'a>>) -> Vec<ObjectKey> {
    refs.into_iter()
        .map(|r| ObjectKey::new(r.namespace, r.name))
        .collect()
}

use super::runner::unrelated;

#[cfg(test)]
mod plan_tests;
