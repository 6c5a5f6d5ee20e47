//! Unit tests of the invitation plan: every lifecycle rule, no I/O.

use super::*;
use crate::api::common::NameRef;
use crate::api::iam::{RoleRef, UserInvitationSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};

const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    at("2026-11-21T12:00:00Z")
}

fn invitation(state: InvitationState) -> UserInvitation {
    let mut invitation = UserInvitation::new(
        "welcome-bob",
        UserInvitationSpec {
            organization_ref: NameRef {
                name: "acme".into(),
            },
            email: "bob@example.com".into(),
            roles: vec![RoleRef {
                name: "editor".into(),
                namespace: None,
            }],
            invited_by: Some(NameRef {
                name: "alice".into(),
            }),
            expiration_date: Some(Time(at("2026-11-21T12:05:00Z"))),
            state,
            ..UserInvitationSpec::default()
        },
    );
    invitation.metadata.namespace = Some("organization-acme".into());
    invitation.metadata.uid = Some("uid-1".into());
    invitation.metadata.generation = Some(1);
    invitation.metadata.finalizers = Some(vec![FINALIZER.into()]);
    invitation
}

fn bob() -> Invitee {
    Invitee {
        name: "bob".into(),
        uid: "bob-uid".into(),
    }
}

fn introduction() -> Introduction {
    Introduction {
        organization: Some("Acme Inc".into()),
        inviter: Some(InviterUser {
            display_name: Some("Alice".into()),
            email_address: Some("alice@example.com".into()),
        }),
        template: "userinvitation-email".into(),
        template_variables: Some(vec![TemplateVariable {
            name: "RecipientName".into(),
            required: true,
            ..TemplateVariable::default()
        }]),
    }
}

/// Applies the plan's status to the invitation, as the API server would.
fn settle(invitation: &mut UserInvitation, plan: &Plan) {
    let existing = invitation
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if let Some(desired) = &plan.status {
        let value = desired.render(&existing, invitation.metadata.generation, now());
        invitation.status = Some(serde_json::from_value(value).unwrap());
    }
    if plan.add_finalizer {
        invitation.metadata.finalizers = Some(vec![FINALIZER.into()]);
    }
}

fn condition<'a>(invitation: &'a UserInvitation, type_: &str) -> (&'a str, &'a str) {
    let c = invitation
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap();
    (c.status.as_str(), c.reason.as_str())
}

#[test]
fn a_new_invitation_gets_the_finalizer_and_its_email_then_waits_for_sign_up() {
    let mut fresh = invitation(InvitationState::Pending);
    fresh.metadata.finalizers = None;
    let observed = Observed {
        introduction: Some(introduction()),
        ..Observed::default()
    };
    assert!(needs_introduction(&fresh, now()));
    let plan = plan(&fresh, &observed, now(), RETENTION);
    assert!(plan.add_finalizer && plan.pending && !plan.revoke);
    assert_eq!(plan.grant, None);
    assert_eq!(
        plan.send_email,
        Some(EmailInputs {
            organization: "Acme Inc".into(),
            inviter: introduction().inviter,
            variables: vec!["RecipientName".into()],
        })
    );
    assert_eq!(plan.wake_at, Some(at("2026-11-21T12:05:00Z")));
    let status = plan.status.as_ref().unwrap();
    assert_eq!(
        status
            .organization
            .as_ref()
            .unwrap()
            .display_name
            .as_deref(),
        Some("Acme Inc")
    );
    assert_eq!(
        (status.pending.status, status.pending.reason),
        (true, "Pending")
    );
    assert_eq!(status.expired.reason, "NotExpired");
    assert_eq!(plan.failure, None);
    settle(&mut fresh, &plan);
    assert!(!needs_introduction(&fresh, now()));
    let again = super::plan(&fresh, &Observed::default(), now(), RETENTION);
    assert_eq!(again.status, None, "nothing changed, nothing written");
    assert_eq!(again.send_email, None, "one Email per invitation");
    assert_eq!(again.wake_at, Some(at("2026-11-21T12:05:00Z")));
}

#[test]
fn an_existing_invitee_is_granted_access_once() {
    let mut pending = invitation(InvitationState::Pending);
    let observed = Observed {
        invitee: Some(bob()),
        introduction: Some(introduction()),
        ..Observed::default()
    };
    let first = plan(&pending, &observed, now(), RETENTION);
    assert_eq!(first.grant, Some(bob()));
    assert!(first.send_email.is_some());
    let status = first.status.clone().unwrap();
    assert_eq!(status.invitee_user.as_deref(), Some("bob"));
    assert_eq!(
        transitions(&UserInvitationStatus::default(), &status),
        [Transition::Introduced, Transition::Granted("bob".into())]
    );
    settle(&mut pending, &first);
    let steady = plan(
        &pending,
        &Observed {
            invitee: Some(bob()),
            ..Observed::default()
        },
        now(),
        RETENTION,
    );
    assert_eq!(
        (steady.grant, steady.status, steady.revoke),
        (None, None, false)
    );
    // The User goes away (deleted, or its address changed): access goes with it.
    let gone = plan(&pending, &Observed::default(), now(), RETENTION);
    assert!(gone.revoke);
    assert_eq!(gone.status.unwrap().invitee_user, None);
}

#[test]
fn a_missing_organization_or_template_is_reported_and_retried_without_an_email() {
    let pending = invitation(InvitationState::Pending);
    let no_org = Observed {
        invitee: Some(bob()),
        introduction: Some(Introduction {
            organization: None,
            ..introduction()
        }),
        ..Observed::default()
    };
    let plan_a = plan(&pending, &no_org, now(), RETENTION);
    assert_eq!(plan_a.send_email, None);
    assert_eq!(
        plan_a.grant,
        Some(bob()),
        "access does not wait for the Email"
    );
    assert_eq!(plan_a.failure.as_ref().unwrap().step, Step::Email);
    let status = plan_a.status.unwrap();
    assert_eq!(
        (status.ready.status, status.ready.reason),
        (false, "OrganizationNotFound")
    );
    assert!(status.ready.message.contains("\"acme\""));
    assert_eq!(
        status.organization, None,
        "the Email is not recorded as sent"
    );
    let no_template = Observed {
        introduction: Some(Introduction {
            template_variables: None,
            ..introduction()
        }),
        ..Observed::default()
    };
    let plan_b = plan(&pending, &no_template, now(), RETENTION);
    let ready = plan_b.status.unwrap().ready;
    assert_eq!(ready.reason, "EmailTemplateNotFound");
    assert!(
        ready.message.contains("userinvitation-email"),
        "{}",
        ready.message
    );
    let unfillable = Observed {
        introduction: Some(Introduction {
            template_variables: Some(vec![TemplateVariable {
                name: "PromoCode".into(),
                required: true,
                ..TemplateVariable::default()
            }]),
            ..introduction()
        }),
        ..Observed::default()
    };
    let plan_c = plan(&pending, &unfillable, now(), RETENTION);
    assert_eq!(plan_c.send_email, None, "admission would refuse the Email");
    assert_eq!(plan_c.failure.as_ref().unwrap().step, Step::Email);
    let status = plan_c.status.unwrap();
    assert_eq!(status.ready.reason, "EmailTemplateVariableUnavailable");
    assert!(
        status.ready.message.contains("\"PromoCode\""),
        "{}",
        status.ready.message
    );
    assert_eq!(
        status.organization, None,
        "the Email is not recorded as sent"
    );
}

#[test]
fn expiry_revokes_once_and_is_scheduled_for_the_instant() {
    let mut pending = invitation(InvitationState::Pending);
    let before = plan(
        &pending,
        &Observed::default(),
        at("2026-11-21T12:04:59Z"),
        RETENTION,
    );
    assert_eq!(before.wake_at, Some(at("2026-11-21T12:05:00Z")));
    let expired = plan(
        &pending,
        &Observed {
            invitee: Some(bob()),
            ..Observed::default()
        },
        at("2026-11-21T12:05:00Z"),
        RETENTION,
    );
    assert!(expired.revoke && !expired.pending);
    assert_eq!((&expired.grant, expired.wake_at), (&None, None));
    assert!(!needs_introduction(&pending, at("2026-11-21T12:05:00Z")));
    let status = expired.status.clone().unwrap();
    assert_eq!(
        (status.expired.status, status.expired.reason),
        (true, "Expired")
    );
    assert_eq!(
        (status.ready.status, status.ready.reason),
        (true, "Expired")
    );
    assert_eq!(
        transitions(&UserInvitationStatus::default(), &status),
        [Transition::Expired]
    );
    settle(&mut pending, &expired);
    assert_eq!(condition(&pending, EXPIRED), ("True", "Expired"));
    assert_eq!(condition(&pending, PENDING), ("False", "Expired"));
    let later = plan(
        &pending,
        &Observed::default(),
        at("2026-11-22T00:00:00Z"),
        RETENTION,
    );
    assert_eq!((later.revoke, later.status), (false, None));
}

#[test]
fn declining_revokes_access() {
    let mut declined = invitation(InvitationState::Declined);
    let first = plan(&declined, &Observed::default(), now(), RETENTION);
    assert!(first.revoke && first.assign_roles.is_none());
    let status = first.status.clone().unwrap();
    assert_eq!(
        (status.ready.status, status.ready.reason),
        (true, "Declined")
    );
    assert!(!status.pending.status);
    settle(&mut declined, &first);
    let again = plan(&declined, &Observed::default(), now(), RETENTION);
    assert_eq!(
        (again.revoke, again.status, again.wake_at),
        (false, None, None)
    );
}

fn answered(invitation: &mut UserInvitation, when: &str) {
    invitation.metadata.managed_fields = Some(vec![
        ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            operation: Some("Update".into()),
            time: Some(Time(at("2026-11-21T11:00:00Z"))),
            fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:email": {}}}))),
            ..ManagedFieldsEntry::default()
        },
        ManagedFieldsEntry {
            manager: Some("portal".into()),
            operation: Some("Update".into()),
            time: Some(Time(at(when))),
            fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:state": {}}}))),
            ..ManagedFieldsEntry::default()
        },
    ]);
}

/// The invitation accepted (its state changed) at `when`, and bob known as its invitee.
fn accepted_by_bob(when: &str) -> (UserInvitation, Observed) {
    let mut accepted = invitation(InvitationState::Accepted);
    answered(&mut accepted, when);
    let observed = Observed {
        invitee: Some(bob()),
        answered_at: answered_at(&accepted),
        ..Observed::default()
    };
    (accepted, observed)
}

#[test]
fn accepting_assigns_roles_revokes_access_and_deletes_after_retention() {
    let mut accepted = invitation(InvitationState::Accepted);
    answered(&mut accepted, "2026-11-21T11:59:00Z");
    assert_eq!(answered_at(&accepted), Some(at("2026-11-21T11:59:00Z")));
    let observed = Observed {
        invitee: Some(bob()),
        answered_at: answered_at(&accepted),
        ..Observed::default()
    };
    let first = plan(&accepted, &observed, now(), RETENTION);
    assert_eq!(first.assign_roles, Some(bob()));
    assert!(first.revoke);
    let status = first.status.clone().unwrap();
    assert_eq!(status.accepted_at, Some(at("2026-11-21T11:59:00Z")));
    assert_eq!(
        (status.ready.status, status.ready.reason),
        (true, "Accepted")
    );
    assert_eq!(first.wake_at, Some(at("2026-11-28T11:59:00Z")));
    assert_eq!(
        transitions(&UserInvitationStatus::default(), &status),
        [Transition::Accepted]
    );
    settle(&mut accepted, &first);
    // Past expiry now, but accepted in time: nothing is undone.
    let later = plan(&accepted, &observed, at("2026-11-25T00:00:00Z"), RETENTION);
    assert_eq!(
        (later.assign_roles, later.revoke, later.status, later.delete),
        (None, false, None, false)
    );
    let expired = plan(&accepted, &observed, at("2026-11-28T11:59:00Z"), RETENTION);
    assert!(expired.delete);
}

#[test]
fn an_acceptance_seen_late_still_counts_when_made_in_time() {
    let (accepted, observed) = accepted_by_bob("2026-11-21T12:04:00Z");
    let plan = plan(&accepted, &observed, at("2026-11-21T13:00:00Z"), RETENTION);
    assert_eq!(plan.assign_roles, Some(bob()));
}

#[test]
fn an_acceptance_after_expiry_assigns_nothing_and_says_so() {
    let (mut accepted, observed) = accepted_by_bob("2026-11-21T12:06:00Z");
    let first = plan(&accepted, &observed, at("2026-11-21T12:07:00Z"), RETENTION);
    assert_eq!(first.assign_roles, None);
    assert!(first.revoke);
    assert_eq!(first.failure, None, "a final state, not a retry");
    let status = first.status.clone().unwrap();
    assert_eq!(
        (status.ready.status, status.ready.reason),
        (false, "AcceptedAfterExpiry")
    );
    assert!(status.ready.message.contains("no roles were assigned"));
    assert!(status.expired.status);
    assert_eq!(status.accepted_at, None);
    settle(&mut accepted, &first);
    let again = plan(&accepted, &observed, at("2026-11-22T00:00:00Z"), RETENTION);
    assert_eq!(
        (again.assign_roles, again.revoke, again.status),
        (None, false, None)
    );
    // Without managedFields the controller's clock decides.
    accepted.metadata.managed_fields = None;
    accepted.status = None;
    let unknown = plan(
        &accepted,
        &Observed {
            invitee: Some(bob()),
            ..Observed::default()
        },
        at("2026-11-21T12:05:00Z"),
        RETENTION,
    );
    assert_eq!(unknown.assign_roles, None);
}

#[test]
fn an_acceptance_without_a_user_or_with_a_vanished_role_fails_visibly() {
    let accepted = invitation(InvitationState::Accepted);
    let no_user = plan(&accepted, &Observed::default(), now(), RETENTION);
    assert_eq!(no_user.assign_roles, None);
    assert!(!no_user.revoke);
    assert_eq!(no_user.failure.as_ref().unwrap().step, Step::AssignRoles);
    assert_eq!(no_user.status.unwrap().ready.reason, "InviteeNotFound");
    let vanished = plan(
        &accepted,
        &Observed {
            invitee: Some(bob()),
            missing_roles: vec!["\"editor\" (gone)".into()],
            ..Observed::default()
        },
        now(),
        RETENTION,
    );
    assert_eq!(vanished.assign_roles, None);
    let ready = vanished.status.unwrap().ready;
    assert_eq!((ready.status, ready.reason), (false, "RoleNotFound"));
    assert!(ready.message.contains("editor"));
}

#[test]
fn deletion_revokes_then_releases_and_never_touches_roles() {
    let mut deleting = invitation(InvitationState::Accepted);
    deleting.metadata.deletion_timestamp = Some(Time(now()));
    let plan_a = plan(&deleting, &Observed::default(), now(), RETENTION);
    assert!(plan_a.revoke && plan_a.release_finalizer);
    assert_eq!((plan_a.assign_roles, plan_a.status), (None, None));
    deleting.metadata.finalizers = Some(vec!["someone/else".into()]);
    let plan_b = plan(&deleting, &Observed::default(), now(), RETENTION);
    assert!(!plan_b.revoke && !plan_b.release_finalizer && !plan_b.add_finalizer);
}

#[test]
fn a_failed_step_keeps_what_earlier_steps_did() {
    let pending = invitation(InvitationState::Pending);
    let observed = Observed {
        invitee: Some(bob()),
        introduction: Some(introduction()),
        ..Observed::default()
    };
    let desired = plan(&pending, &observed, now(), RETENTION).status.unwrap();
    let current = UserInvitationStatus::default();
    let email_failed = failed_status(&desired, &current, Step::Email, "boom".into());
    assert_eq!(email_failed.invitee_user.as_deref(), Some("bob"));
    assert_eq!(email_failed.organization, None);
    assert_eq!(
        (
            email_failed.ready.reason,
            email_failed.ready.message.as_str()
        ),
        ("EmailFailed", "boom")
    );
    let grant_failed = failed_status(&desired, &current, Step::Grant, "no".into());
    assert_eq!(grant_failed.invitee_user, None);
    assert_eq!(
        transitions(&current, &email_failed),
        [Transition::Granted("bob".into())]
    );
}

/// On Milo's UserInvitation CRD `status.acceptedAt` is not declared, so it is dropped from every
/// write: the acceptance is read back from `Ready`, the roles are not assigned again and the
/// invitation is still deleted after the retention.
#[test]
fn without_accepted_at_the_acceptance_is_read_from_ready() {
    let (mut accepted, observed) = accepted_by_bob("2026-11-21T11:59:00Z");
    let first = plan(&accepted, &observed, now(), RETENTION);
    assert_eq!(first.assign_roles, Some(bob()));
    settle(&mut accepted, &first);
    accepted.status.as_mut().unwrap().accepted_at = None;
    let again = plan(&accepted, &observed, at("2026-11-22T00:00:00Z"), RETENTION);
    assert_eq!(again.assign_roles, None, "roles are assigned once");
    assert!(!again.delete);
    // `settle` stamps the condition at now(): the retention runs from there.
    let after = plan(&accepted, &observed, at("2026-11-28T12:00:01Z"), RETENTION);
    assert!(after.delete, "deleted once the retention has passed");
}
