//! ContactGroupEnrollmentPolicy: supported trigger and selector values (listed in the message), a
//! fixed target group, and a warning rather than a denial when the group does not exist yet, since
//! GitOps tools apply manifests in any order.

use kube::core::admission::Operation;
use serde_json::Value;

use super::checks::{immutable, verdict_with_warnings};
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use super::{Context, Verdict};

/// Supported `spec.trigger.type` values.
pub const TRIGGER_TYPES: &[&str] = &["ContactCreated"];
/// Supported `spec.contactSelector.subjectKind` values.
pub const SUBJECT_KINDS: &[&str] = &["User"];

fn text<'a>(spec: &'a Value, pointer: &str) -> Option<&'a str> {
    spec.pointer(pointer).and_then(Value::as_str)
}

fn supported(
    field: &str,
    value: Option<&str>,
    allowed: &[&str],
    required: bool,
) -> Option<FieldError> {
    let listed = allowed
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    match value {
        None if required => Some(FieldError::without_value(
            FieldErrorType::Required,
            field,
            format!("supported values: {listed}"),
        )),
        Some(v) if !allowed.contains(&v) => Some(FieldError::new(
            FieldErrorType::NotSupported,
            field,
            v,
            format!("supported values: {listed}"),
        )),
        _ => None,
    }
}

/// The validating webhook's rule. The spec is read as JSON rather than typed, so an unsupported
/// enum value is a 422 naming the supported ones instead of a 400 parse error.
pub fn validate(request: &Request, ctx: &Context<'_>) -> Verdict {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Verdict::allow();
    }
    let spec = match request.spec::<Value>() {
        Ok(spec) => spec,
        Err(denial) => return denial.into(),
    };
    // An unchanged spec passes, as for every other kind: a metadata-only update (a finalizer's
    // removal) of a policy admitted before a rule existed is not blocked.
    if let Operation::Update = request.operation
        && request.old_spec::<Value>().is_ok_and(|old| *old == *spec)
    {
        return Verdict::allow();
    }
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    errors.extend(supported(
        "spec.trigger.type",
        text(&spec, "/trigger/type"),
        TRIGGER_TYPES,
        true,
    ));
    let kind = text(&spec, "/contactSelector/subjectKind");
    errors.extend(supported(
        "spec.contactSelector.subjectKind",
        kind,
        SUBJECT_KINDS,
        false,
    ));
    let (name, namespace) = (
        text(&spec, "/contactGroupRef/name"),
        text(&spec, "/contactGroupRef/namespace"),
    );
    for (field, value) in [
        ("spec.contactGroupRef.name", name),
        ("spec.contactGroupRef.namespace", namespace),
    ] {
        if value.is_none_or(str::is_empty) {
            errors.push(FieldError::without_value(
                FieldErrorType::Required,
                field,
                "the policy must name its group",
            ));
        }
    }
    if let Operation::Update = request.operation {
        let old = request.old_spec::<Value>().unwrap_or_default();
        if old.get("contactGroupRef") != spec.get("contactGroupRef") {
            errors.push(immutable(
                "spec.contactGroupRef",
                "contactGroupRef is immutable; create a new policy to target another group",
            ));
        }
    }
    if let (Some(name), Some(namespace)) = (name, namespace)
        && !name.is_empty()
        && !namespace.is_empty()
        && ctx.store.group(namespace, name).is_none()
    {
        warnings.push(format!(
            "ContactGroup {namespace}/{name} does not exist yet; the policy enrolls contacts once it is created"
        ));
    }
    verdict_with_warnings(request, errors, warnings)
}
