//! EmailBroadcast CREATE: the group and the template exist, and `scheduledAt`, when set, is not
//! more than a minute in the past (a broadcast scheduled for the past would go out at once, which
//! is rarely what its author meant; a minute absorbs clock skew and slow clients). The spec never
//! changes afterwards: the CRD's CEL rule says so, the webhook is not called on UPDATE.

use jiff::{SignedDuration, Timestamp};

use super::checks::{not_found, verdict_for};
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use super::{Context, Verdict};
use crate::api::broadcast::EmailBroadcastSpec;

/// How far in the past `scheduledAt` may be.
pub const SCHEDULE_TOLERANCE: SignedDuration = SignedDuration::from_secs(60);

/// The validating webhook's rule (CREATE).
pub fn validate(request: &Request, ctx: &Context<'_>) -> Verdict {
    match request.spec::<EmailBroadcastSpec>() {
        Ok(spec) => verdict_for(request, create_errors(ctx, &spec)),
        Err(denial) => denial.into(),
    }
}

fn create_errors(ctx: &Context<'_>, spec: &EmailBroadcastSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let group = &spec.contact_group_ref;
    if ctx.store.group(&group.namespace, &group.name).is_none() {
        errors.push(not_found(
            "spec.contactGroupRef.name",
            "ContactGroup",
            &group.namespace,
            &group.name,
        ));
    }
    let template = &spec.template_ref.name;
    if ctx.store.email_template(template).is_none() {
        errors.push(not_found(
            "spec.templateRef.name",
            "EmailTemplate",
            "",
            template,
        ));
    }
    let earliest = ctx
        .now
        .checked_sub(SCHEDULE_TOLERANCE)
        .unwrap_or(Timestamp::MIN);
    if let Some(at) = spec
        .scheduled_at
        .as_ref()
        .map(|t| t.0)
        .filter(|at| *at < earliest)
    {
        errors.push(FieldError::new(
            FieldErrorType::Invalid,
            "spec.scheduledAt",
            at.to_string(),
            "scheduledAt must not be more than a minute in the past",
        ));
    }
    errors
}
