//! ContactGroup: `(namespace, displayName, visibility)` is unique, and visibility never changes
//! (the CRD's CEL rule says so too; the webhook says it before the API server has to).

use super::checks::{immutable, other_than_self, verdict_for};
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use super::{Context, Verdict};
use crate::api::notification::ContactGroupSpec;

/// The validating webhook's rule.
pub fn validate(request: &Request, ctx: &Context<'_>) -> Verdict {
    let (new, old) = match request.new_and_old_spec::<ContactGroupSpec>() {
        Ok(Some(specs)) => specs,
        Ok(None) => return Verdict::allow(),
        Err(denial) => return denial.into(),
    };
    let mut errors = Vec::new();
    if old
        .as_ref()
        .is_some_and(|old| old.visibility != new.visibility)
    {
        errors.push(immutable("spec.visibility", "visibility type is immutable"));
    }
    if old
        .as_ref()
        .is_none_or(|old| old.display_name != new.display_name || old.visibility != new.visibility)
    {
        let same =
            ctx.store
                .groups_by_identity(request.namespace(), &new.display_name, new.visibility);
        if let Some(other) = other_than_self(request, same) {
            errors.push(FieldError::new(
                FieldErrorType::Duplicate,
                "spec.displayName",
                &new.display_name,
                format!("a ContactGroup named {other} already has this display name and visibility in the same namespace"),
            ));
        }
    }
    verdict_for(request, errors)
}
