//! UserInvitation. Mutating: `spec.invitedBy` always names the requester (invitations cannot be
//! forged in someone else's name) and a missing expiration gets the operator's default. Validating:
//! a well-formed, unexpired, non-duplicate invitation to a non-member on create; afterwards only
//! `state` may change, only from Pending, only by the invitee, and never after expiry.

use jiff::Timestamp;
use kube::core::admission::Operation;
use serde_json::{Value, json};

use super::checks::{allow_with_patch, invalid_email, other_than_self, patch, verdict_for};
use super::review::Request;
use super::status::{Denial, FieldError, FieldErrorType};
use super::{Context, Verdict};
use crate::api::iam::{InvitationState, UserInvitationSpec, organization_namespace};

/// The mutating webhook's rule (CREATE).
pub fn mutate(request: &Request, ctx: &Context<'_>) -> Verdict {
    if request.operation != Operation::Create {
        return Verdict::allow();
    }
    let Some(object) = request.object.as_ref() else {
        return Denial::bad_request("request.object is required").into();
    };
    let uid = request.requester_uid();
    let inviter = match ctx.store.user(uid) {
        Some(user) if !uid.is_empty() => user.name.to_owned(),
        _ => request.requester_username().to_owned(),
    };
    let mut operations =
        vec![json!({"op": "add", "path": "/spec/invitedBy", "value": {"name": inviter}})];
    let expiration = object
        .value()
        .pointer("/spec/expirationDate")
        .filter(|v| !v.is_null());
    if let (None, Some(ttl)) = (expiration, ctx.settings.invitation_ttl) {
        let expires = ctx
            .now
            .checked_add(ttl)
            .unwrap_or(Timestamp::MAX)
            .round(jiff::Unit::Second)
            .unwrap_or(ctx.now);
        operations.push(
            json!({"op": "add", "path": "/spec/expirationDate", "value": expires.to_string()}),
        );
    }
    allow_with_patch(patch(Value::Array(operations)))
}

/// The validating webhook's rule.
pub fn validate(request: &Request, ctx: &Context<'_>) -> Verdict {
    match request.operation {
        Operation::Create => match request.spec::<UserInvitationSpec>() {
            Ok(spec) => verdict_for(request, create_errors(request, ctx, &spec)),
            Err(denial) => denial.into(),
        },
        Operation::Update => update(request, ctx),
        _ => Verdict::allow(),
    }
}

fn invalid_state(state: InvitationState, detail: &str) -> FieldError {
    FieldError::new(
        FieldErrorType::Invalid,
        "spec.state",
        format!("{state:?}"),
        detail,
    )
}

fn expired(spec: &UserInvitationSpec, now: Timestamp) -> Option<Timestamp> {
    spec.expiration_date
        .as_ref()
        .map(|t| t.0)
        .filter(|t| *t <= now)
}

fn create_errors(
    request: &Request,
    ctx: &Context<'_>,
    spec: &UserInvitationSpec,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let organization = &spec.organization_ref.name;
    if request.namespace() != organization_namespace(organization) {
        errors.push(FieldError::new(
            FieldErrorType::Invalid,
            "spec.organizationRef.name",
            organization,
            "organizationRef must be the same as the requesting user's organization",
        ));
    }
    if let Some(at) = expired(spec, ctx.now) {
        errors.push(FieldError::new(
            FieldErrorType::Invalid,
            "spec.expirationDate",
            at.to_string(),
            "expirationDate must be in the future",
        ));
    }
    let email_error = invalid_email("spec.email", &spec.email);
    let email_ok = email_error.is_none();
    errors.extend(email_error);
    if spec.state != InvitationState::Pending {
        errors.push(invalid_state(
            spec.state,
            "state must be Pending when an invitation is created",
        ));
    }
    if spec.roles.is_empty() {
        errors.push(FieldError::without_value(
            FieldErrorType::Required,
            "spec.roles",
            "at least one role is required",
        ));
    }
    for (i, role) in spec.roles.iter().enumerate() {
        let namespace = role
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(request.namespace());
        if !ctx.store.role_exists(namespace, &role.name)
            && !ctx.store.cluster_role_exists(&role.name)
        {
            let detail = format!(
                "no Role {:?} in namespace {namespace:?} and no ClusterRole of that name",
                role.name
            );
            errors.push(FieldError::new(
                FieldErrorType::NotFound,
                &format!("spec.roles[{i}].name"),
                &role.name,
                detail,
            ));
        }
    }
    if email_ok {
        let now = ctx.now.as_second();
        let pending = ctx
            .store
            .invitations_for(&spec.email, organization)
            .into_iter()
            .filter(|(_, i)| i.state == InvitationState::Pending && i.expires_at > now)
            .map(|(name, _)| name);
        if let Some(other) = other_than_self(request, pending) {
            errors.push(FieldError::new(
                FieldErrorType::Duplicate,
                "spec.email",
                &spec.email,
                format!(
                    "a pending invitation for this email already exists in UserInvitation {other}"
                ),
            ));
        }
        let namespace = organization_namespace(organization);
        if ctx
            .store
            .users_by_email(&spec.email)
            .iter()
            .any(|user| ctx.store.is_member(&namespace, user))
        {
            errors.push(FieldError::new(
                FieldErrorType::Duplicate,
                "spec.email",
                &spec.email,
                "the user is already a member of the organization",
            ));
        }
    }
    errors
}

fn update(request: &Request, ctx: &Context<'_>) -> Verdict {
    let (new, old) = match request.spec_pair::<Value>() {
        Ok(pair) => pair,
        Err(denial) => return denial.into(),
    };
    let mut errors = Vec::new();
    // The whole spec is compared: CEL transition rules do not fire when an optional field is
    // added or removed.
    let mut fields: Vec<&String> = new
        .as_object()
        .into_iter()
        .chain(old.as_object())
        .flat_map(|o| o.keys())
        .collect();
    fields.sort();
    fields.dedup();
    for field in fields.into_iter().filter(|f| *f != "state") {
        if new.get(field) != old.get(field) {
            errors.push(FieldError::without_value(
                FieldErrorType::Invalid,
                &format!("spec.{field}"),
                format!("{field} is immutable"),
            ));
        }
    }
    let (Ok(new_spec), Ok(old_spec)) = (
        serde_json::from_value::<UserInvitationSpec>(new.into_owned()),
        serde_json::from_value::<UserInvitationSpec>(old.into_owned()),
    ) else {
        return verdict_for(request, errors);
    };
    if new_spec.state != old_spec.state {
        if old_spec.state != InvitationState::Pending {
            errors.push(invalid_state(
                new_spec.state,
                "state can only transition from Pending to another state and is immutable afterwards",
            ));
        } else {
            let requester_email = ctx
                .store
                .user(request.requester_uid())
                .map(|u| u.email.to_lowercase());
            if requester_email.as_deref() != Some(old_spec.email.to_lowercase().as_str()) {
                let reason = "only the invitee can accept or decline this invitation";
                return Denial::forbidden(&request.target(), "userinvitations", reason).into();
            }
            if let (InvitationState::Accepted, Some(at)) =
                (new_spec.state, expired(&old_spec, ctx.now))
            {
                errors.push(FieldError::new(
                    FieldErrorType::Forbidden,
                    "spec.state",
                    "Accepted",
                    format!("the invitation expired at {at}"),
                ));
            }
        }
    }
    verdict_for(request, errors)
}
