//! The embedded controllers, run by the elected leader only (see [`leader`]).
//!
//! No controller watches or caches anything of its own. On gaining leadership the shared
//! [`ClusterView`](crate::view::ClusterView) starts keeping the few fields controllers read
//! beyond admission (see [`crate::view::extras`]); each controller runs on a [`runner`] work
//! queue of object keys, with a concurrency bound, fed by the view's change feed and by a sweep
//! that compares desired and observed state in memory, so only objects that differ are
//! reconciled. When a reconcile runs, the view already holds the change that caused it. Each
//! reconcile is split into a pure plan (a function of the observed state, tested directly) and
//! the API calls that carry it out (tested against a mock API server).

pub mod backoff;
pub mod conditions;
pub mod consent;
pub mod email;
pub mod enrollment;
pub mod events;
pub mod invitation;
pub mod kubeapi;
pub mod leader;
pub mod lease;
pub mod loops;
pub mod membership;
pub mod names;
pub mod pace;
pub mod preferences;
pub mod providers;
pub mod referents;
pub mod removal;
pub mod resend;
pub mod runner;
pub mod schemas;
pub mod usercontact;

pub use runner::{Action, ObjectKey};

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType};
use tokio::sync::broadcast;

use crate::metrics::Metrics;
use crate::view::{ClusterView, ViewChange, ViewKind};
use backoff::RetryBackoff;

/// The controllers this binary can run; `--controllers` selects among them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ControllerKind {
    /// Enrolls new contacts into groups by ContactGroupEnrollmentPolicy.
    Enrollment,
    /// Deletes the memberships a ContactGroupMembershipRemoval names.
    Removal,
    /// Keeps `status.username` on memberships; deletes memberships whose referents are gone.
    Membership,
    /// Gives every User a Contact.
    #[value(name = "usercontact")]
    UserContact,
    /// Runs the UserInvitation lifecycle: Email, access grants, role assignment, expiry.
    Invitation,
    /// Mirrors Contacts, ContactGroups and memberships to Resend (only with an API key).
    Resend,
    /// Mirrors Contacts and memberships to Loops contacts and mailing lists (only with an API
    /// key).
    Loops,
    /// Sends Emails through Resend (only with an API key and a from address).
    Email,
}

impl ControllerKind {
    /// Every controller, the default selection.
    pub const ALL: [ControllerKind; 8] = [
        ControllerKind::Enrollment,
        ControllerKind::Removal,
        ControllerKind::Membership,
        ControllerKind::UserContact,
        ControllerKind::Invitation,
        ControllerKind::Resend,
        ControllerKind::Loops,
        ControllerKind::Email,
    ];

    /// The name used in flags, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ControllerKind::Enrollment => "enrollment",
            ControllerKind::Removal => "removal",
            ControllerKind::Membership => "membership",
            ControllerKind::UserContact => "usercontact",
            ControllerKind::Invitation => "invitation",
            ControllerKind::Resend => "resend",
            ControllerKind::Loops => "loops",
            ControllerKind::Email => "email",
        }
    }
}

impl fmt::Display for ControllerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings the controllers read.
#[derive(Clone, Debug)]
pub struct ControllerSettings {
    /// Namespace the usercontact controller creates Contacts in.
    pub contact_namespace: String,
    /// How often a healthy object is looked at again even without a change (a safety net for
    /// anything a change feed could miss).
    pub resync: Duration,
    /// Reconciles each controller runs at once.
    pub concurrency: usize,
    /// Writes an enrollment pass keeps in flight.
    pub enrollment_concurrency: usize,
    /// What the invitation controller needs to know.
    pub invitation: invitation::InvitationSettings,
    /// How often provider sync compares the cluster with the provider (drift repair).
    pub provider_resync: Duration,
    /// The email sender's addresses.
    pub email: email::EmailSettings,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            contact_namespace: "milo-system".into(),
            resync: Duration::from_secs(600),
            concurrency: 64,
            enrollment_concurrency: 64,
            invitation: invitation::InvitationSettings::default(),
            provider_resync: Duration::from_secs(3600),
            email: email::EmailSettings::default(),
        }
    }
}

/// What every controller shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The cluster view the admission rules read too.
    pub view: Arc<ClusterView>,
    /// The admin port's metrics.
    pub metrics: Arc<Metrics>,
    /// Controller settings.
    pub settings: ControllerSettings,
    /// Event publisher.
    pub events: events::EventPublisher,
    /// Per-object retry delays.
    pub backoff: RetryBackoff,
    /// The Resend client, when an API key is configured: provider sync runs only then.
    pub resend: Option<(
        crate::providers::resend::ResendClient,
        providers::SyncMetrics,
    )>,
    /// The Loops client, when an API key is configured: Loops sync runs only then.
    pub loops: Option<(crate::providers::loops::LoopsClient, providers::SyncMetrics)>,
    /// The installed CRDs' schemas every status write is shaped to; read by the leader when
    /// [`with_crd_check`](Self::with_crd_check) asked for it, else unchecked (writes go out
    /// as they are).
    pub schemas: Arc<schemas::InstalledSchemas>,
    /// Whether the leader reads the installed CRDs before the controllers start.
    pub check_crds: bool,
    /// Enrollment records written in this term that the view may not show yet.
    pub enrollment_records: enrollment::RecordMemory,
}

impl Context {
    /// A context whose Events are reported as coming from `instance` (the pod name).
    pub fn new(
        client: Client,
        view: Arc<ClusterView>,
        metrics: Arc<Metrics>,
        settings: ControllerSettings,
        instance: Option<String>,
    ) -> Self {
        let dropped = metrics.controllers.events_dropped.clone();
        Self {
            events: events::EventPublisher::new(client.clone(), "milo-webhook", instance, dropped),
            client,
            view,
            metrics,
            settings,
            backoff: RetryBackoff::default(),
            resend: None,
            loops: None,
            schemas: Arc::default(),
            check_crds: false,
            enrollment_records: enrollment::RecordMemory::default(),
        }
    }

    /// The same context with the installed CRDs read at each leadership's start (and every
    /// resync), the controllers waiting for the first read: what a real cluster needs, where the
    /// installed CRDs may lack fields ours declare.
    pub fn with_crd_check(mut self) -> Self {
        self.schemas = Arc::new(schemas::InstalledSchemas::pending());
        self.check_crds = true;
        self
    }

    /// The same context with provider sync through `client`.
    pub fn with_resend(
        mut self,
        client: crate::providers::resend::ResendClient,
        metrics: providers::SyncMetrics,
    ) -> Self {
        self.resend = Some((client, metrics));
        self
    }

    /// The same context with Loops sync through `client`.
    pub fn with_loops(
        mut self,
        client: crate::providers::loops::LoopsClient,
        metrics: providers::SyncMetrics,
    ) -> Self {
        self.loops = Some((client, metrics));
        self
    }

    /// The providers this process mirrors to among `selected` controllers, in the order their
    /// syncs decide `Ready` and opt-outs by.
    pub fn providers_configured(
        &self,
        selected: &[ControllerKind],
    ) -> Vec<crate::api::common::ProviderName> {
        use crate::api::common::ProviderName;
        let mut providers = Vec::new();
        if self.resend.is_some() && selected.contains(&ControllerKind::Resend) {
            providers.push(ProviderName::Resend);
        }
        if self.loops.is_some() && selected.contains(&ControllerKind::Loops) {
            providers.push(ProviderName::Loops);
        }
        providers
    }

    /// Publishes a Normal Event about `regarding`. Events are best effort: a failure is logged
    /// and never fails the reconcile that produced it.
    pub async fn event(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.events.publish(&event, regarding).await {
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }
}

/// Spawns the selected controllers; aborting the returned tasks stops them (leadership lost).
/// The view starts keeping the controllers' fields first (a relist; the controllers wait for it).
pub fn spawn(ctx: &Arc<Context>, selected: &[ControllerKind]) -> Vec<tokio::task::JoinHandle<()>> {
    ctx.view.enable_controller_fields();
    let checker = ctx.check_crds.then(|| {
        tokio::spawn(schemas::keep_checked(
            ctx.schemas.clone(),
            ctx.client.clone(),
            ctx.metrics.clone(),
            ctx.settings.resync,
        ))
    });
    let controllers: Vec<_> = selected
        .iter()
        .filter(|kind| {
            let off = match kind {
                ControllerKind::Resend => ctx.resend.is_none(),
                ControllerKind::Loops => ctx.loops.is_none(),
                ControllerKind::Email => ctx.resend.is_none() || ctx.settings.email.from.is_none(),
                _ => false,
            };
            if off && **kind == ControllerKind::Resend {
                tracing::info!("no Resend API key configured: provider sync is off");
            }
            if off && **kind == ControllerKind::Loops {
                tracing::info!("no Loops API key configured: Loops sync is off");
            }
            if off && **kind == ControllerKind::Email {
                tracing::warn!(
                    "email delivery is off: it needs a Resend API key and --email-from-address"
                );
            }
            !off
        })
        .map(|kind| {
            tracing::info!(controller = kind.as_str(), "starting controller");
            let ctx = ctx.clone();
            // Every controller waits for the first read of the installed CRDs, so none sends a
            // write the cluster would refuse.
            let schemas = ctx.schemas.clone();
            match kind {
                ControllerKind::Enrollment => after_check(&schemas, enrollment::run(ctx)),
                ControllerKind::Removal => after_check(&schemas, removal::run(ctx)),
                ControllerKind::Membership => after_check(&schemas, membership::run(ctx)),
                ControllerKind::UserContact => after_check(&schemas, usercontact::run(ctx)),
                ControllerKind::Invitation => {
                    let settings = ctx.settings.invitation.clone();
                    after_check(
                        &schemas,
                        invitation::run(Arc::new(invitation::InvitationContext::new(
                            ctx, settings,
                        ))),
                    )
                }
                ControllerKind::Resend => {
                    let (client, metrics) = ctx.resend.clone().expect("filtered above");
                    let configured = ctx.providers_configured(selected);
                    let sync = resend::ResendSync::among(ctx, client, metrics, configured);
                    after_check(&schemas, resend::run(Arc::new(sync)))
                }
                ControllerKind::Loops => {
                    let (client, metrics) = ctx.loops.clone().expect("filtered above");
                    let configured = ctx.providers_configured(selected);
                    let sync = loops::LoopsSync::new(ctx, client, metrics, configured);
                    after_check(&schemas, loops::run(Arc::new(sync)))
                }
                ControllerKind::Email => {
                    let (client, _) = ctx.resend.clone().expect("filtered above");
                    let settings = ctx.settings.email.clone();
                    let sender = email::render::Sender {
                        from: settings.from.clone().unwrap_or_default(),
                        reply_to: settings.reply_to.clone(),
                    };
                    let broadcasts = Arc::new(email::broadcast::BroadcastSender::new(
                        ctx.clone(),
                        client.clone(),
                        settings,
                    ));
                    let emails = Arc::new(email::EmailSender::new(ctx, client, sender));
                    // Emails and broadcasts share the client, so one account rate limit.
                    after_check(&schemas, async move {
                        tokio::join!(email::run(emails), email::broadcast::run(broadcasts));
                    })
                }
            }
        })
        .collect();
    checker.into_iter().chain(controllers).collect()
}

/// Spawns `work` to start once the installed CRDs have been read (at once when unchecked).
fn after_check<F>(schemas: &Arc<schemas::InstalledSchemas>, work: F) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let schemas = schemas.clone();
    tokio::spawn(async move {
        schemas.ready().await;
        work.await
    })
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The provider refused or failed a call.
    #[error("Resend: {0}")]
    Provider(#[from] crate::providers::resend::ResendError),
    /// Loops refused or failed a call.
    #[error("Loops: {0}")]
    Loops(#[from] crate::providers::loops::LoopsError),
    /// The object cannot be reconciled as it stands (a missing field the schema should have
    /// required, say); retried with backoff in case it is fixed.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Short label for the errors metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.is_conflict() => "conflict",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Invalid(_) => "invalid",
            Error::Provider(_) | Error::Loops(_) => "provider",
        }
    }
}

/// Runs one reconcile with metrics, a log span carrying the object key, and the backoff reset
/// on success. Every controller's reconcile goes through here.
pub async fn instrumented<F>(
    ctx: &Context,
    controller: ControllerKind,
    key: String,
    reconcile: F,
) -> Result<Action, Error>
where
    F: Future<Output = Result<Action, Error>>,
{
    let span = tracing::info_span!("reconcile", controller = controller.as_str(), object = %key);
    let started = Instant::now();
    let result = tracing::Instrument::instrument(reconcile, span).await;
    let outcome = match &result {
        Ok(_) => {
            ctx.backoff.succeeded(&format!("{controller}/{key}"));
            "success"
        }
        Err(_) => "error",
    };
    ctx.metrics.controllers.record_reconcile(
        controller.as_str(),
        outcome,
        started.elapsed().as_secs_f64(),
    );
    result
}

/// The error policy every controller uses: conflicts retried at once (with a little jitter); a
/// provider's permanent refusal waits for the object to change (its condition says why); a
/// provider's own wait (rate limit, quota) is obeyed; everything else gets per-object
/// exponential backoff and jitter.
pub fn retry_after(ctx: &Context, controller: ControllerKind, key: &str, error: &Error) -> Action {
    ctx.metrics
        .controllers
        .record_error(controller.as_str(), error.metric_label());
    let provider: Option<&dyn providers::ProviderFailure> = match error {
        Error::Provider(e) => Some(e),
        Error::Loops(e) => Some(e),
        _ => None,
    };
    if let Some(provider) = provider {
        if provider.is_permanent() {
            tracing::warn!(controller = controller.as_str(), object = key, %error, "the provider refused; waiting for a change");
            return Action::await_change();
        }
        if let Some(wait) = provider.retry_in() {
            tracing::info!(controller = controller.as_str(), object = key, %error, retry_in = ?wait, "the provider asked to wait");
            return Action::requeue(wait + Duration::from_millis(fastrand::u64(0..1000)));
        }
    }
    if let Error::Kube(e) = error
        && kubeapi::is_conflict(e)
    {
        tracing::debug!(
            controller = controller.as_str(),
            object = key,
            "conflict; retrying"
        );
        return Action::requeue(Duration::from_millis(50 + fastrand::u64(0..200)));
    }
    let delay = ctx.backoff.failed(&format!("{controller}/{key}"));
    tracing::warn!(controller = controller.as_str(), object = key, %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// One reconcile as every runner-driven controller runs it: [`instrumented`], and an error turned
/// into the next attempt by [`retry_after`].
pub async fn reconcile_or_retry<F>(
    ctx: &Context,
    controller: ControllerKind,
    label: String,
    reconcile: F,
) -> Action
where
    F: Future<Output = Result<Action, Error>>,
{
    match instrumented(ctx, controller, label.clone(), reconcile).await {
        Ok(action) => action,
        Err(error) => retry_after(ctx, controller, &label, &error),
    }
}

/// The view's change feed as a stream. A listener that fell behind gets a `Relisted` for every
/// kind instead of the changes it missed, so it resyncs rather than silently skipping them.
pub fn view_changes(view: &ClusterView) -> impl Stream<Item = ViewChange> + Send + 'static {
    stream::unfold(view.subscribe(), |mut receiver| async move {
        let batch = match receiver.recv().await {
            Ok(change) => vec![change],
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "controller fell behind the view's changes; resyncing"
                );
                ViewKind::ALL
                    .into_iter()
                    .map(ViewChange::Relisted)
                    .collect()
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((stream::iter(batch), receiver))
    })
    .flatten()
}

/// Waits until every kind of the view has finished its initial listing with the controllers'
/// fields kept: a controller deciding on a half-filled view would take every object it has not
/// seen yet for missing.
pub async fn until_synced(view: &ClusterView) {
    let mut waited = false;
    while !(view.is_synced() && view.controller_fields_synced()) {
        if !waited {
            tracing::info!(kinds = ?view.unsynced_kinds(), "controller waiting for the view to sync");
            waited = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Context {
    /// The queue-depth gauge of `controller`.
    pub fn queue_depth(
        &self,
        controller: ControllerKind,
    ) -> prometheus_client::metrics::gauge::Gauge {
        self.metrics
            .controllers
            .queue_depth
            .get_or_create(&crate::metrics::ControllerLabels {
                controller: controller.as_str().into(),
            })
            .clone()
    }
}

/// `object/namespace` keys for logs, metrics and backoff.
pub fn object_key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_owned(),
    }
}
