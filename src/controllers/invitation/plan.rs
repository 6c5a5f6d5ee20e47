//! The pure half of the invitation controller: from an invitation, what was observed around it
//! (its invitee's User, its organization, inviter and template, roles that vanished) and the
//! clock, decide what to do. No I/O, so every lifecycle rule is unit-tested here; the reconcile in
//! the parent module only carries the [`Plan`] out.
//!
//! Lifecycle, by `spec.state` and the clock:
//! - Pending, not expired: on first sight create the Email (then record `status.organization` and
//!   `status.inviterUser`, which is what marks the Email as sent); when a User has the
//!   invitation's email address, grant it access and record `status.inviteeUser`; wake again at
//!   the expiration instant.
//! - Pending, expired: revoke access; `Expired` True.
//! - Declined: revoke access; `Ready` True, reason `Declined`.
//! - Accepted: assign the roles, revoke access, record `status.acceptedAt`; `Ready` True, reason
//!   `Accepted`; delete the invitation once the retention period has passed. An acceptance made
//!   at or after the expiration instant assigns nothing (`Ready` False, `AcceptedAfterExpiry`).
//! - Being deleted: revoke access, then release the finalizer. Roles assigned on acceptance stay:
//!   they are the membership, not the invitation.

use std::time::Duration;

use jiff::Timestamp;
use kube::{Resource, ResourceExt};

use super::access::Invitee;
pub use super::status::{Cond, DesiredStatus, Step, Transition, failed_status, transitions};
use crate::api::iam::{
    InvitationOrganization, InvitationState, InviterUser, UserInvitation, UserInvitationStatus,
};
use crate::api::notification::TemplateVariable;

/// The finalizer that makes deleting an invitation wait until its grants are revoked.
pub const FINALIZER: &str = "iam.miloapis.com/userinvitation";
/// Condition type: the invitation waits for an answer.
pub const PENDING: &str = "Pending";
/// Condition type: the invitation expired.
pub const EXPIRED: &str = "Expired";
/// The reason of `Ready` True (and `Pending` False) once the invitee accepted.
pub const ACCEPTED: &str = "Accepted";

/// What the reconcile found around the invitation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The User whose email address is the invitation's (compared case-insensitively), if any.
    pub invitee: Option<Invitee>,
    /// The organization, inviter and template, looked up only while the Email is still to be
    /// sent (see [`needs_introduction`]).
    pub introduction: Option<Introduction>,
    /// When `spec.state` was last written, from `metadata.managedFields`: when the invitee
    /// answered. `None` when the API server did not say.
    pub answered_at: Option<Timestamp>,
    /// Roles of an accepted invitation the access backend cannot assign, described.
    pub missing_roles: Vec<String>,
}

/// What the invitation Email needs and where it could not be found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Introduction {
    /// The organization's display name; `None` when the organization does not exist.
    pub organization: Option<String>,
    /// The inviter as the invitee sees them.
    pub inviter: Option<InviterUser>,
    /// The EmailTemplate name.
    pub template: String,
    /// The variables that EmailTemplate declares; `None` when it does not exist.
    pub template_variables: Option<Vec<TemplateVariable>>,
}

/// A failure the plan itself detects (something missing), reported in `Ready` and retried
/// with backoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The step that cannot run.
    pub step: Step,
    /// What is wrong, as in the condition.
    pub message: String,
}

/// What the Email says about the organization and inviter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailInputs {
    /// The organization's display name.
    pub organization: String,
    /// The inviter, when known.
    pub inviter: Option<InviterUser>,
    /// The variable names the template declares: only these are set on the Email.
    pub variables: Vec<String>,
}

/// What the reconcile does, in this order: finalizer, grant, Email, roles, revoke, status,
/// delete or release.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Add [`FINALIZER`] first.
    pub add_finalizer: bool,
    /// Grant this User access to the invitation.
    pub grant: Option<Invitee>,
    /// Create the invitation Email.
    pub send_email: Option<EmailInputs>,
    /// Assign the invitation's roles to this User.
    pub assign_roles: Option<Invitee>,
    /// Revoke every grant on the invitation.
    pub revoke: bool,
    /// The status to apply, when it differs from the current one.
    pub status: Option<DesiredStatus>,
    /// Something missing: reported in the status, then retried with backoff.
    pub failure: Option<Failure>,
    /// Delete the invitation (accepted, and the retention period is over).
    pub delete: bool,
    /// Remove [`FINALIZER`] (the invitation is being deleted and its grants are revoked).
    pub release_finalizer: bool,
    /// Whether the invitation is waiting for an answer (the pending gauge).
    pub pending: bool,
    /// When the invitation changes by itself next (expiry, end of retention).
    pub wake_at: Option<Timestamp>,
}

/// When the invitation expires, if it does.
pub fn expiration(invitation: &UserInvitation) -> Option<Timestamp> {
    invitation.spec.expiration_date.as_ref().map(|t| t.0)
}

/// Whether the reconcile must look up the organization, inviter and template: the invitation is
/// live, pending and unexpired, and its Email is not recorded as sent.
pub fn needs_introduction(invitation: &UserInvitation, now: Timestamp) -> bool {
    invitation.meta().deletion_timestamp.is_none()
        && invitation.spec.state == InvitationState::Pending
        && expiration(invitation).is_none_or(|e| e > now)
        && invitation
            .status
            .as_ref()
            .is_none_or(|s| s.organization.is_none())
}

/// When `spec.state` was last written, from `metadata.managedFields`: the latest entry that owns
/// `f:spec.f:state`. Nothing else writes the state after creation, so for an answered invitation
/// this is when the invitee answered.
pub fn answered_at(invitation: &UserInvitation) -> Option<Timestamp> {
    invitation
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:state").is_some())
        })
        .filter_map(|entry| entry.time.as_ref().map(|t| t.0))
        .max()
}

/// Decides what to do with `invitation` at `now`. Accepted invitations are deleted once
/// `retention` has passed since `status.acceptedAt`.
pub fn plan(
    invitation: &UserInvitation,
    observed: &Observed,
    now: Timestamp,
    retention: Duration,
) -> Plan {
    let mut plan = Plan::default();
    let has_finalizer = invitation.finalizers().iter().any(|f| f == FINALIZER);
    if invitation.meta().deletion_timestamp.is_some() {
        plan.revoke = has_finalizer;
        plan.release_finalizer = has_finalizer;
        return plan;
    }
    plan.add_finalizer = !has_finalizer;
    let current = invitation.status.clone().unwrap_or_default();
    let mut desired = DesiredStatus::carried(&current);
    let expires = expiration(invitation);
    let not_expired = Cond::new(
        false,
        "NotExpired",
        match expires {
            Some(at) => format!("the invitation expires at {at}"),
            None => "the invitation does not expire".to_owned(),
        },
    );
    let answered = Cond::new(
        false,
        "Answered",
        "the invitee answered before the invitation expired",
    );
    let expired_cond =
        |at: Timestamp| Cond::new(true, EXPIRED, format!("the invitation expired at {at}"));
    let roles = invitation
        .spec
        .roles
        .iter()
        .map(|r| r.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let terminal;
    match invitation.spec.state {
        InvitationState::Pending if expires.is_none_or(|at| at > now) => {
            terminal = false;
            pending(invitation, observed, &current, &mut desired, &mut plan);
            desired.expired = not_expired;
            plan.pending = true;
            plan.wake_at = expires;
        }
        InvitationState::Pending => {
            terminal = true;
            let at = expires.unwrap_or(now);
            desired.ready = Cond::new(
                true,
                EXPIRED,
                format!(
                    "the invitation expired at {at} without an answer; access to it was revoked"
                ),
            );
            desired.pending = Cond::new(false, EXPIRED, "the invitation expired without an answer");
            desired.expired = expired_cond(at);
        }
        InvitationState::Declined => {
            terminal = true;
            desired.ready = Cond::new(
                true,
                "Declined",
                "the invitee declined; access to the invitation was revoked",
            );
            desired.pending = Cond::new(false, "Declined", "the invitee declined");
            let was_expired = current
                .conditions
                .iter()
                .any(|c| c.type_ == EXPIRED && c.status == "True");
            desired.expired = match expires {
                Some(at) if was_expired => expired_cond(at),
                _ => answered,
            };
        }
        InvitationState::Accepted => {
            terminal = accepted(
                observed,
                now,
                retention,
                expires,
                &roles,
                &mut desired,
                &mut plan,
            );
        }
    }
    let generation = invitation.meta().generation;
    if !desired.is_current(&current, generation) {
        // A terminal state's status is written after the grants are revoked, so until it is
        // current, revoke (again: revoking what is gone succeeds).
        plan.revoke |= terminal;
        plan.status = Some(desired);
    }
    plan
}

/// The accepted branch: assign the roles once (if accepted in time, and there is a User to
/// assign them to), then keep the invitation for the retention period. Returns whether the state
/// is final, so the invitation's grants are to be revoked.
fn accepted(
    observed: &Observed,
    now: Timestamp,
    retention: Duration,
    expires: Option<Timestamp>,
    roles: &str,
    desired: &mut DesiredStatus,
    plan: &mut Plan,
) -> bool {
    desired.pending = Cond::new(false, ACCEPTED, "the invitee accepted");
    desired.expired = Cond::new(
        false,
        "Answered",
        "the invitee answered before the invitation expired",
    );
    let accepted = Cond::new(
        true,
        ACCEPTED,
        format!(
            "the invitee accepted and holds the roles {roles}; access to the invitation was revoked"
        ),
    );
    if let Some(at) = desired.accepted_at {
        desired.ready = accepted;
        let until = at.checked_add(retention).unwrap_or(Timestamp::MAX);
        if until <= now {
            plan.delete = true;
        } else {
            plan.wake_at = Some(until);
        }
        return true;
    }
    let at = observed.answered_at.unwrap_or(now);
    if let Some(expired_at) = expires.filter(|e| *e <= at) {
        desired.ready = Cond::new(
            false,
            "AcceptedAfterExpiry",
            format!(
                "the invitation was accepted at {at}, after it expired at {expired_at}: no roles were assigned and access to it was revoked"
            ),
        );
        desired.pending = Cond::new(
            false,
            EXPIRED,
            "the invitation expired before it was accepted",
        );
        desired.expired = Cond::new(
            true,
            EXPIRED,
            format!("the invitation expired at {expired_at}"),
        );
        return true;
    }
    let Some(invitee) = &observed.invitee else {
        let message = "the invitation was accepted, but no User with its email address is known \
                       yet; the roles are assigned once one is";
        fail(
            plan,
            desired,
            Step::AssignRoles,
            "InviteeNotFound",
            message.into(),
        );
        return false;
    };
    if !observed.missing_roles.is_empty() {
        let message = format!(
            "cannot assign the roles: {}",
            observed.missing_roles.join("; ")
        );
        fail(plan, desired, Step::AssignRoles, "RoleNotFound", message);
        return false;
    }
    plan.assign_roles = Some(invitee.clone());
    desired.invitee_user = Some(invitee.name.clone());
    desired.accepted_at = Some(at);
    desired.ready = accepted;
    let until = at.checked_add(retention).unwrap_or(Timestamp::MAX);
    plan.wake_at = Some(until.max(now));
    true
}

fn fail(
    plan: &mut Plan,
    desired: &mut DesiredStatus,
    step: Step,
    reason: &'static str,
    message: String,
) {
    desired.ready = Cond::new(false, reason, message.clone());
    plan.failure = Some(Failure { step, message });
}

/// The pending branch: Email on first sight, access for the invitee while there is one.
fn pending(
    invitation: &UserInvitation,
    observed: &Observed,
    current: &UserInvitationStatus,
    desired: &mut DesiredStatus,
    plan: &mut Plan,
) {
    desired.ready = Cond::new(false, PENDING, "waiting for the invitee's answer");
    match &observed.invitee {
        Some(invitee) => {
            if desired.invitee_user.as_ref() != Some(&invitee.name) {
                plan.grant = Some(invitee.clone());
            }
            desired.invitee_user = Some(invitee.name.clone());
            desired.pending = Cond::new(
                true,
                PENDING,
                format!(
                    "waiting for user {} to accept or decline; they may read and answer the invitation",
                    invitee.name
                ),
            );
        }
        None => {
            if desired.invitee_user.take().is_some() {
                plan.revoke = true;
            }
            desired.pending = Cond::new(
                true,
                PENDING,
                "waiting for the invitee to sign up; they are given access to the invitation once a User has its email address",
            );
        }
    }
    if current.organization.is_some() {
        return;
    }
    let Some(introduction) = &observed.introduction else {
        return;
    };
    let organization = &invitation.spec.organization_ref.name;
    let unfillable = match (&introduction.organization, &introduction.template_variables) {
        (Some(_), Some(declared)) => {
            super::email::unfillable(invitation, introduction.inviter.as_ref(), declared)
        }
        _ => Vec::new(),
    };
    match &introduction.organization {
        None => fail(
            plan,
            desired,
            Step::Email,
            "OrganizationNotFound",
            format!("organization {organization:?} not found; the invitation Email was not sent"),
        ),
        Some(_) if introduction.template_variables.is_none() => fail(
            plan,
            desired,
            Step::Email,
            "EmailTemplateNotFound",
            format!(
                "EmailTemplate {:?} not found; the invitation Email was not sent",
                introduction.template
            ),
        ),
        Some(_) if !unfillable.is_empty() => fail(
            plan,
            desired,
            Step::Email,
            "EmailTemplateVariableUnavailable",
            format!(
                "EmailTemplate {:?} requires variables the invitation cannot provide ({}); the invitation Email was not sent",
                introduction.template,
                unfillable
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Some(display_name) => {
            plan.send_email = Some(EmailInputs {
                organization: display_name.clone(),
                inviter: introduction.inviter.clone(),
                variables: introduction
                    .template_variables
                    .iter()
                    .flatten()
                    .map(|v| v.name.clone())
                    .collect(),
            });
            desired.organization = Some(InvitationOrganization {
                display_name: Some(display_name.clone()),
            });
            desired.inviter_user = introduction.inviter.clone();
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
