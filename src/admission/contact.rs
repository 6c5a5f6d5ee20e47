//! Contact: a valid email, unique across the cluster (case-insensitively); a subject that is an
//! existing `iam.miloapis.com` User referenced by no other Contact, and that cannot change once
//! set. The mutating webhook makes the User the Contact's owner, so deleting the User
//! garbage-collects its Contact. A duplicate held in another namespace is refused without naming
//! the Contact that holds it ([`Taken::Elsewhere`]): uniqueness is cluster-wide, visibility is
//! not.

use kube::core::admission::Operation;
use serde_json::json;

use super::checks::{
    Taken, allow_with_patch, immutable, invalid_email, not_found, patch, taken_by, verdict_for,
};
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use super::{Context, Verdict};
use crate::api::IAM_GROUP;
use crate::api::notification::{ContactSpec, SubjectRef};

/// The validating webhook's rule.
pub fn validate(request: &Request, ctx: &Context<'_>) -> Verdict {
    let (new, old) = match request.new_and_old_spec::<ContactSpec>() {
        Ok(Some(specs)) => specs,
        Ok(None) => return Verdict::allow(),
        Err(denial) => return denial.into(),
    };
    let mut errors = Vec::new();
    // On UPDATE only what changed is checked again, so metadata-only updates (finalizers) pass
    // even after the User is gone.
    if old.as_ref().is_none_or(|old| old.email != new.email) {
        check_email(request, ctx, &new.email, &mut errors);
    }
    match (
        old.as_ref().and_then(|o| o.subject.as_ref()),
        new.subject.as_ref(),
    ) {
        (Some(before), after) if Some(before) != after => {
            errors.push(immutable("spec.subject", "subject is immutable once set"));
        }
        (None, Some(subject)) => check_subject(request, ctx, subject, &mut errors),
        _ => {}
    }
    verdict_for(request, errors)
}

fn check_email(request: &Request, ctx: &Context<'_>, email: &str, errors: &mut Vec<FieldError>) {
    if let Some(error) = invalid_email("spec.email", email) {
        errors.push(error);
        return;
    }
    let holders = ctx.store.contacts_by_email(email).map(|c| c.key);
    if let Some(taken) = taken_by(request, holders) {
        let who = match taken {
            Taken::Here(name) => format!("a Contact named {name}"),
            Taken::Elsewhere => "a Contact in another namespace".to_owned(),
        };
        errors.push(FieldError::new(
            FieldErrorType::Duplicate,
            "spec.email",
            email,
            format!("{who} already has this email in the cluster"),
        ));
    }
}

fn check_subject(
    request: &Request,
    ctx: &Context<'_>,
    subject: &SubjectRef,
    errors: &mut Vec<FieldError>,
) {
    if subject.api_group != IAM_GROUP {
        errors.push(FieldError::new(
            FieldErrorType::NotSupported,
            "spec.subject.apiGroup",
            &subject.api_group,
            format!("supported values: {IAM_GROUP:?}"),
        ));
    } else if subject.kind != "User" {
        errors.push(FieldError::new(
            FieldErrorType::Invalid,
            "spec.subject.kind",
            &subject.kind,
            "kind must be User for iam.miloapis.com API group",
        ));
    }
    if subject
        .namespace
        .as_deref()
        .is_some_and(|ns| !ns.is_empty())
    {
        errors.push(FieldError::new(
            FieldErrorType::Invalid,
            "spec.subject.namespace",
            subject.namespace.as_deref().unwrap_or_default(),
            "namespace must be empty for User",
        ));
    }
    // Only a User reference names a User: looking the name up otherwise would add a spurious cause.
    if subject.api_group != IAM_GROUP || subject.kind != "User" {
        return;
    }
    if ctx.store.user(&subject.name).is_none() {
        errors.push(not_found("spec.subject.name", "User", "", &subject.name));
    }
    let others = ctx.store.contacts_by_user(&subject.name).map(|c| c.key);
    if let Some(taken) = taken_by(request, others) {
        let who = match taken {
            Taken::Here(name) => format!("a Contact named {name}"),
            Taken::Elsewhere => "a Contact in another namespace".to_owned(),
        };
        errors.push(FieldError::new(
            FieldErrorType::Duplicate,
            "spec.subject.name",
            &subject.name,
            format!("{who} already references User {}", subject.name),
        ));
    }
}

/// The mutating webhook's rule: add a non-controller ownerReference to the subject User. A
/// missing User (or a subject that is not a User) is left to the validator's 422.
pub fn mutate(request: &Request, ctx: &Context<'_>) -> Verdict {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    let Some(object) = request.object.as_ref() else {
        return Verdict::allow();
    };
    let Ok(spec) = request.spec::<ContactSpec>() else {
        return Verdict::allow();
    };
    let Some(subject) = spec
        .subject
        .as_ref()
        .filter(|s| s.api_group == IAM_GROUP && s.kind == "User")
    else {
        return Verdict::allow();
    };
    let Some(user) = ctx.store.user(&subject.name).filter(|u| !u.uid.is_empty()) else {
        return Verdict::allow();
    };
    let owners = object
        .value()
        .pointer("/metadata/ownerReferences")
        .and_then(|o| o.as_array());
    if owners.is_some_and(|refs| refs.iter().any(|r| r["uid"] == user.uid)) {
        return Verdict::allow();
    }
    let owner = json!({"apiVersion": "iam.miloapis.com/v1alpha1", "kind": "User", "name": user.name, "uid": user.uid});
    let operation = match owners {
        Some(_) => json!({"op": "add", "path": "/metadata/ownerReferences/-", "value": owner}),
        None => json!({"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}),
    };
    allow_with_patch(patch(json!([operation])))
}
