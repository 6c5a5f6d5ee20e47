//! The UserInvitation lifecycle controller (the seed's "UserInvitation Controller"): sends the
//! invitation Email, gives the invitee access to their invitation once they have a User, assigns
//! the roles on acceptance, revokes access on acceptance, decline, expiry and deletion, expires
//! invitations at their expiration instant, and deletes accepted ones after a retention period.
//!
//! Invitations are read from the shared view (the leader keeps them slimmed), and the controller
//! is woken by the view's change feed: an invitation changed wakes itself; a User created, or
//! whose email changed, wakes the invitations for its address (and those it was the invitee of);
//! a relist of invitations, Users or roles wakes every invitation. Invitations are few and each
//! carries its own timer (expiry, retention), so the sweep queues all of them. The decisions are in
//! [`plan`]; grants and role assignments go through an [`AccessBackend`] (`rbac` or `milo`).

pub mod access;
pub mod email;
pub mod metrics;
pub mod milo;
pub mod observe;
pub mod plan;
pub mod rbac;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde_json::json;

use self::access::{AccessBackend, AccessBackendKind};
use self::metrics::InvitationMetrics;
pub use self::observe::{invitations_for_user, invitee};
use self::plan::{DesiredStatus, FINALIZER, Plan, Step, Transition, failed_status, transitions};
use super::kubeapi::{self, Created};
use super::runner::{self, Driver, ObjectKey};
use super::{Action, Context, ControllerKind, Error, instrumented, object_key, retry_after};
use crate::api::iam::UserInvitation;
use crate::api::notification::Email;
use crate::view::{Store, ViewChange, ViewKind};

/// How soon to look again while the view has not finished its initial listing.
const VIEW_LAG_RETRY: Duration = Duration::from_secs(2);

/// Invitation settings (`--access-backend`, `--invitation-email-template`,
/// `--invitation-url-template`, `--accepted-retention`, and the Milo role names).
#[derive(Clone, Debug)]
pub struct InvitationSettings {
    /// How access is granted and roles assigned. Default `rbac`.
    pub access_backend: AccessBackendKind,
    /// The EmailTemplate invitation Emails are rendered from. Default Milo's
    /// `emailtemplates.notification.miloapis.com-userinvitationemailtemplate`.
    pub email_template: String,
    /// The `InvitationLink` of the Email, with `{organization}`, `{namespace}` and
    /// `{invitation}` placeholders. Default
    /// `https://cloud.datum.net/invitations/{organization}/{invitation}`.
    pub url_template: String,
    /// How long an accepted invitation is kept (for administrators to see) before it is
    /// deleted. Default 7 days.
    pub accepted_retention: Duration,
    /// `milo` backend: the Milo IAM Role letting the invitee read their invitation. Default
    /// `iam.miloapis.com-getinvitation`.
    pub get_role: String,
    /// `milo` backend: the Milo IAM Role letting the invitee answer their invitation. Default
    /// `iam.miloapis.com-acceptinvitation`.
    pub accept_role: String,
    /// `milo` backend: the namespace of those two roles. Default `milo-system`.
    pub role_namespace: String,
}

impl Default for InvitationSettings {
    fn default() -> Self {
        Self {
            access_backend: AccessBackendKind::Rbac,
            email_template: "emailtemplates.notification.miloapis.com-userinvitationemailtemplate"
                .into(),
            url_template: "https://cloud.datum.net/invitations/{organization}/{invitation}".into(),
            accepted_retention: Duration::from_secs(7 * 24 * 3600),
            get_role: "iam.miloapis.com-getinvitation".into(),
            accept_role: "iam.miloapis.com-acceptinvitation".into(),
            role_namespace: "milo-system".into(),
        }
    }
}

/// Where the controller reads the time. Injectable so tests can pin the clock and check that
/// expiry is scheduled for the exact instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// Always this instant.
    Fixed(Timestamp),
}

impl Clock {
    /// The current time.
    pub fn now(self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Fixed(at) => at,
        }
    }
}

/// What the invitation controller's reconciles share.
pub struct InvitationContext {
    /// What every controller shares (client, view, metrics, backoff, events).
    pub shared: Arc<Context>,
    /// Invitation settings.
    pub settings: InvitationSettings,
    /// How access is granted and roles assigned.
    pub backend: Box<dyn AccessBackend>,
    /// The clock.
    pub clock: Clock,
    /// The invitation series, registered in `shared.metrics`.
    metrics: InvitationMetrics,
}

impl InvitationContext {
    /// A context with the backend `settings.access_backend` names and the system clock.
    pub fn new(shared: Arc<Context>, settings: InvitationSettings) -> Self {
        let backend: Box<dyn AccessBackend> = match settings.access_backend {
            AccessBackendKind::Rbac => Box::new(rbac::RbacBackend::new(
                shared.client.clone(),
                shared.view.clone(),
            )),
            AccessBackendKind::Milo => Box::new(milo::MiloBackend::new(
                shared.client.clone(),
                settings.get_role.clone(),
                settings.accept_role.clone(),
                settings.role_namespace.clone(),
            )),
        };
        Self {
            metrics: InvitationMetrics::of(&shared.metrics),
            shared,
            settings,
            backend,
            clock: Clock::System,
        }
    }

    /// The same context reading `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn metrics(&self) -> &InvitationMetrics {
        &self.metrics
    }
}

/// Every invitation in the view.
fn all_invitations(store: &Store) -> Vec<ObjectKey> {
    store
        .invitations()
        .iter()
        .map(|i| ObjectKey::new(&i.namespace().unwrap_or_default(), &i.name_any()))
        .collect()
}

/// The invitations a change in the view concerns: the invitation itself, or those a User change
/// concerns (see [`invitations_for_user`]).
pub fn invitations_to_wake(change: &ViewChange, store: &Store) -> Vec<ObjectKey> {
    match change {
        ViewChange::Applied(ViewKind::Invitation, ns, name) => vec![ObjectKey::new(ns, name)],
        ViewChange::Applied(ViewKind::User, _, user)
        | ViewChange::Deleted(ViewKind::User, _, user) => {
            invitations_for_user(store, &store.invitations(), user)
        }
        _ => Vec::new(),
    }
}

/// Runs the controller until the task is aborted (leadership lost).
pub async fn run(ctx: Arc<InvitationContext>) {
    tracing::info!(
        backend = ctx.backend.name(),
        "starting the invitation controller"
    );
    // Aborting this task (leadership lost) drops the guard: another replica counts from now on.
    let _pending = ClearPendingOnDrop(ctx.metrics().clone());
    let driver = Driver {
        kind: ControllerKind::Invitation,
        concurrency: ctx.shared.settings.concurrency,
        resync: ctx.shared.settings.resync,
        relists: &[
            ViewKind::Invitation,
            ViewKind::User,
            ViewKind::Role,
            ViewKind::ClusterRole,
        ],
        wake_delay: Duration::ZERO,
        sweep: all_invitations,
        wake: invitations_to_wake,
        depth: ctx.shared.queue_depth(ControllerKind::Invitation),
    };
    let ctx = &ctx;
    runner::drive(&ctx.shared.view, driver, |key| async move {
        let found = ctx.shared.view.read().invitation(&key.namespace, &key.name);
        let Some(invitation) = found else {
            return Action::await_change();
        };
        match reconcile(invitation.clone(), ctx.clone()).await {
            Ok(action) => action,
            Err(error) => error_policy(invitation, &error, ctx.clone()),
        }
    })
    .await;
}

struct ClearPendingOnDrop(InvitationMetrics);

impl Drop for ClearPendingOnDrop {
    fn drop(&mut self) {
        self.0.clear_pending();
    }
}

fn error_policy(
    invitation: Arc<UserInvitation>,
    error: &Error,
    ctx: Arc<InvitationContext>,
) -> Action {
    let key = object_key(invitation.namespace().as_deref(), &invitation.name_any());
    retry_after(&ctx.shared, ControllerKind::Invitation, &key, error)
}

/// Reconciles one invitation: observe, [`plan::plan`], carry the plan out. Returns when to look
/// again: at the expiration instant for a pending invitation, at the end of the retention period
/// for an accepted one, and at the resync interval at the latest.
pub async fn reconcile(
    invitation: Arc<UserInvitation>,
    ctx: Arc<InvitationContext>,
) -> Result<Action, Error> {
    let key = object_key(invitation.namespace().as_deref(), &invitation.name_any());
    instrumented(
        &ctx.shared,
        ControllerKind::Invitation,
        key.clone(),
        reconcile_one(&invitation, &ctx, key),
    )
    .await
}

async fn reconcile_one(
    invitation: &UserInvitation,
    ctx: &InvitationContext,
    key: String,
) -> Result<Action, Error> {
    if invitation.meta().deletion_timestamp.is_none() && !ctx.shared.view.is_synced() {
        // Until the view has listed every User, "no User has this address" may be false, and
        // acting on it would revoke access the invitee has.
        tracing::debug!("view not synced yet; waiting");
        return Ok(Action::requeue(VIEW_LAG_RETRY));
    }
    let now = ctx.clock.now();
    let observed = observe::observe(invitation, ctx, now).await?;
    let plan = plan::plan(invitation, &observed, now, ctx.settings.accepted_retention);
    ctx.metrics().set_pending(&key, plan.pending);
    execute(invitation, ctx, plan, now).await
}

async fn execute(
    invitation: &UserInvitation,
    ctx: &InvitationContext,
    plan: Plan,
    now: Timestamp,
) -> Result<Action, Error> {
    let client = &ctx.shared.client;
    let namespace = invitation.namespace().unwrap_or_default();
    let name = invitation.name_any();
    let api: Api<UserInvitation> = Api::namespaced(client.clone(), &namespace);
    if plan.release_finalizer {
        ctx.backend.revoke(invitation).await?;
        set_finalizer(&api, invitation, false).await?;
        tracing::info!("access revoked; invitation released for deletion");
        return Ok(Action::await_change());
    }
    if invitation.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if plan.add_finalizer {
        set_finalizer(&api, invitation, true).await?;
        ctx.metrics().created.inc();
    }
    let current = invitation.status.clone().unwrap_or_default();
    if let Err((step, error)) = effects(invitation, ctx, &plan).await {
        match step {
            Step::Email => ctx.metrics().email_failed(),
            Step::AssignRoles => ctx.metrics().role_assignment_failed(),
            Step::Grant | Step::Revoke => {}
        }
        if let Some(desired) = &plan.status {
            let failed = failed_status(desired, &current, step, format!("{error}"));
            if let Err(status_error) =
                write_status(&ctx.shared.schemas, &api, invitation, &failed, now).await
            {
                tracing::warn!(error = %status_error, "cannot report the failure in the status");
            } else {
                announce(invitation, ctx, &current, &failed).await;
            }
        }
        return Err(error);
    }
    if let Some(desired) = &plan.status {
        write_status(&ctx.shared.schemas, &api, invitation, desired, now).await?;
        announce(invitation, ctx, &current, desired).await;
    }
    if let Some(failure) = plan.failure {
        match failure.step {
            Step::Email => ctx.metrics().email_failed(),
            Step::AssignRoles => ctx.metrics().role_assignment_failed(),
            Step::Grant | Step::Revoke => {}
        }
        return Err(Error::Invalid(failure.message));
    }
    if plan.delete {
        kubeapi::delete(&api, &name).await?;
        tracing::info!("accepted invitation deleted after the retention period");
        return Ok(Action::await_change());
    }
    let resync = ctx.shared.settings.resync;
    let wait = match plan.wake_at {
        Some(at) => until(now, at).min(resync),
        None => resync,
    };
    Ok(Action::requeue(wait))
}

/// How long from `now` until `at`; zero when it has passed.
pub fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(now.duration_until(at)).unwrap_or(Duration::ZERO)
}

/// Grant, Email, roles, revoke, in that order; the first failure stops the rest and says which
/// step it was.
async fn effects(
    invitation: &UserInvitation,
    ctx: &InvitationContext,
    plan: &Plan,
) -> Result<(), (Step, Error)> {
    if let Some(invitee) = &plan.grant {
        ctx.backend
            .grant(invitation, invitee)
            .await
            .map_err(|e| (Step::Grant, e))?;
    }
    if let Some(inputs) = &plan.send_email {
        let email = email::build(
            invitation,
            &ctx.settings,
            &inputs.organization,
            inputs.inviter.as_ref(),
            &inputs.variables,
        );
        let namespace = invitation.namespace().unwrap_or_default();
        let emails: Api<Email> = Api::namespaced(ctx.shared.client.clone(), &namespace);
        match kubeapi::create(&emails, &email).await {
            Ok(Created::New) => ctx.metrics().email_created(),
            Ok(Created::AlreadyExisted) => {
                tracing::debug!(email = email.name_any(), "invitation Email already exists")
            }
            Err(error) => return Err((Step::Email, error.into())),
        }
    }
    if let Some(invitee) = &plan.assign_roles {
        ctx.backend
            .assign_roles(invitation, invitee)
            .await
            .map_err(|e| (Step::AssignRoles, e))?;
        ctx.metrics().roles_assigned();
    }
    if plan.revoke {
        ctx.backend
            .revoke(invitation)
            .await
            .map_err(|e| (Step::Revoke, e))?;
    }
    Ok(())
}

async fn write_status(
    schemas: &crate::controllers::schemas::InstalledSchemas,
    api: &Api<UserInvitation>,
    invitation: &UserInvitation,
    desired: &DesiredStatus,
    now: Timestamp,
) -> Result<(), Error> {
    let existing = invitation
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let status = desired.render(existing, invitation.meta().generation, now);
    kubeapi::apply_status(schemas, api, &invitation.name_any(), status).await?;
    Ok(())
}

/// Adds or removes [`FINALIZER`], under the resourceVersion read, so another writer's
/// finalizers are never lost (a conflict is retried at once). Releasing an invitation that is
/// already gone is success.
async fn set_finalizer(
    api: &Api<UserInvitation>,
    invitation: &UserInvitation,
    present: bool,
) -> Result<(), Error> {
    let mut finalizers: Vec<String> = invitation
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": invitation.resource_version(),
        }
    });
    match kubeapi::merge_patch(api, &invitation.name_any(), &patch).await {
        Err(kube::Error::Api(status)) if !present && status.is_not_found() => Ok(()),
        other => Ok(other?),
    }
}

/// Metrics, logs and Events for what the status write recorded.
async fn announce(
    invitation: &UserInvitation,
    ctx: &InvitationContext,
    before: &crate::api::iam::UserInvitationStatus,
    written: &DesiredStatus,
) {
    let reference = invitation.object_ref(&());
    for transition in transitions(before, written) {
        let (reason, note) = match &transition {
            Transition::Introduced => (
                "InvitationSent",
                format!("invitation Email {} created", email::email_name(invitation)),
            ),
            Transition::Granted(user) => (
                "AccessGranted",
                format!("user {user} may read and answer the invitation"),
            ),
            Transition::Accepted => {
                ctx.metrics().accepted.inc();
                ("Accepted", written.ready.message.clone())
            }
            Transition::Declined => {
                ctx.metrics().declined.inc();
                ("Declined", written.ready.message.clone())
            }
            Transition::Expired => {
                ctx.metrics().expired.inc();
                ("Expired", written.expired.message.clone())
            }
        };
        tracing::info!(reason, "{note}");
        ctx.shared
            .event(&reference, reason, "Reconcile", note)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_exact_and_never_negative() {
        let now: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        let at: Timestamp = "2026-11-21T12:05:00.5Z".parse().unwrap();
        assert_eq!(until(now, at), Duration::from_millis(300_500));
        assert_eq!(until(at, now), Duration::ZERO);
        assert_eq!(Clock::Fixed(now).now(), now);
        let defaults = InvitationSettings::default();
        assert_eq!(defaults.accepted_retention, Duration::from_secs(604_800));
        assert_eq!(defaults.access_backend, AccessBackendKind::Rbac);
    }
}
