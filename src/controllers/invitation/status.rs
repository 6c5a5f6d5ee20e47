//! The status the invitation controller owns, as a value: what it wants written, how that
//! compares with what is there, what to report when a step fails half-way, and which changes of
//! state a write records (for Events and metrics).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{Value, json};

use super::plan::{ACCEPTED, EXPIRED, PENDING};
use crate::api::iam::{InvitationOrganization, InviterUser, UserInvitationStatus};
use crate::controllers::conditions::{self, Desired, READY};

/// One condition as the controller wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// One sentence for humans.
    pub message: String,
}

impl Cond {
    pub(super) fn new(status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }
}

/// The whole status the controller owns. It is server-side applied as a whole: a field left out
/// is a field removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredStatus {
    /// `status.organization`.
    pub organization: Option<InvitationOrganization>,
    /// `status.inviterUser`.
    pub inviter_user: Option<InviterUser>,
    /// `status.inviteeUser.name`.
    pub invitee_user: Option<String>,
    /// `status.acceptedAt`.
    pub accepted_at: Option<Timestamp>,
    /// The `Ready` condition.
    pub ready: Cond,
    /// The `Pending` condition.
    pub pending: Cond,
    /// The `Expired` condition.
    pub expired: Cond,
}

/// When the invitation was accepted: `status.acceptedAt`, or, on a CRD that does not declare it
/// (Milo's, which drops it from every write), when `Ready` turned True for the acceptance, so
/// the retention clock still runs and the roles are not assigned again.
pub(super) fn accepted_at(current: &UserInvitationStatus) -> Option<Timestamp> {
    current.accepted_at.as_ref().map(|t| t.0).or_else(|| {
        current
            .conditions
            .iter()
            .find(|c| c.type_ == READY && c.status == "True" && c.reason == ACCEPTED)
            .map(|c| c.last_transition_time.0)
    })
}

impl DesiredStatus {
    pub(super) fn carried(current: &UserInvitationStatus) -> Self {
        let placeholder = Cond::new(false, "Unknown", "");
        Self {
            organization: current.organization.clone(),
            inviter_user: current.inviter_user.clone(),
            invitee_user: current.invitee_user.as_ref().map(|r| r.name.clone()),
            accepted_at: accepted_at(current),
            ready: placeholder.clone(),
            pending: placeholder.clone(),
            expired: placeholder,
        }
    }

    fn conditions(&self) -> [Desired<'_>; 3] {
        [
            (READY, &self.ready),
            (PENDING, &self.pending),
            (EXPIRED, &self.expired),
        ]
        .map(|(type_, c)| Desired {
            type_,
            status: c.status,
            reason: c.reason,
            message: c.message.clone(),
        })
    }

    /// Whether `current` already says all of this, so no write is needed.
    pub fn is_current(&self, current: &UserInvitationStatus, generation: Option<i64>) -> bool {
        current.organization == self.organization
            && current.inviter_user == self.inviter_user
            && current.invitee_user.as_ref().map(|r| &r.name) == self.invitee_user.as_ref()
            && current.accepted_at.as_ref().map(|t| t.0) == self.accepted_at
            && self
                .conditions()
                .iter()
                .all(|d| conditions::is_current(&current.conditions, d, generation))
    }

    /// The status JSON to apply, keeping `lastTransitionTime` of conditions whose status holds.
    pub fn render(&self, existing: &[Condition], generation: Option<i64>, now: Timestamp) -> Value {
        let conditions: Vec<Value> = self
            .conditions()
            .iter()
            .map(|d| conditions::render(existing, d, generation, now))
            .collect();
        let mut status = json!({ "conditions": conditions });
        if let Some(organization) = &self.organization {
            status["organization"] = json!(organization);
        }
        if let Some(inviter) = &self.inviter_user {
            status["inviterUser"] = json!(inviter);
        }
        if let Some(invitee) = &self.invitee_user {
            status["inviteeUser"] = json!({ "name": invitee });
        }
        if let Some(at) = self.accepted_at {
            status["acceptedAt"] = json!(Time(at));
        }
        status
    }
}

/// The steps of a reconcile that can fail, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Granting the invitee access to the invitation.
    Grant,
    /// Creating the invitation Email.
    Email,
    /// Assigning the roles on acceptance.
    AssignRoles,
    /// Revoking the invitee's access to the invitation.
    Revoke,
}

impl Step {
    /// The `Ready` reason reported when this step fails on an API error.
    pub fn failure_reason(self) -> &'static str {
        match self {
            Step::Grant => "AccessGrantFailed",
            Step::Email => "EmailFailed",
            Step::AssignRoles => "RoleAssignmentFailed",
            Step::Revoke => "AccessRevokeFailed",
        }
    }
}

/// A change worth an Event and a metric, found by comparing the status written with the one
/// before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The invitation Email was created and recorded.
    Introduced,
    /// The invitee (this User) was granted access.
    Granted(String),
    /// The invitee accepted and holds the roles.
    Accepted,
    /// The invitee declined.
    Declined,
    /// The invitation expired (or was accepted too late).
    Expired,
}

/// The status to report when `step` failed with `message` after the plan was made: what the
/// steps before it did is kept, what it and the steps after it would have recorded is not, and
/// `Ready` says what failed.
pub fn failed_status(
    desired: &DesiredStatus,
    current: &UserInvitationStatus,
    step: Step,
    message: String,
) -> DesiredStatus {
    let mut status = desired.clone();
    if step <= Step::Grant {
        status.invitee_user = current.invitee_user.as_ref().map(|r| r.name.clone());
    }
    if step <= Step::Email {
        status.organization = current.organization.clone();
        status.inviter_user = current.inviter_user.clone();
    }
    if step <= Step::AssignRoles {
        status.accepted_at = current.accepted_at.as_ref().map(|t| t.0);
    }
    status.ready = Cond::new(false, step.failure_reason(), message);
    status
}

/// What changed between the status before (`current`) and the one written.
pub fn transitions(current: &UserInvitationStatus, written: &DesiredStatus) -> Vec<Transition> {
    let was = |type_: &str, reason: Option<&str>| {
        current
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True" && reason.is_none_or(|r| c.reason == r))
    };
    let mut changes = Vec::new();
    if current.organization.is_none() && written.organization.is_some() {
        changes.push(Transition::Introduced);
    }
    if let Some(invitee) = &written.invitee_user
        && current.invitee_user.as_ref().map(|r| &r.name) != Some(invitee)
        && written.accepted_at.is_none()
    {
        changes.push(Transition::Granted(invitee.clone()));
    }
    if current.accepted_at.is_none() && written.accepted_at.is_some() {
        changes.push(Transition::Accepted);
    }
    if written.ready.status && written.ready.reason == "Declined" && !was(READY, Some("Declined")) {
        changes.push(Transition::Declined);
    }
    if written.expired.status && !was(EXPIRED, None) {
        changes.push(Transition::Expired);
    }
    changes
}
