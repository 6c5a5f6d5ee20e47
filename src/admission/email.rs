//! Email (Milo's rules and messages): on CREATE exactly one recipient that exists and parses, a
//! template that exists, and variables that the template declares, each once, URLs absolute and
//! https, every required one present. An Email is a one-shot send, so its spec never changes:
//! UPDATE of the spec is 405, metadata and status updates pass.

use std::collections::BTreeSet;

use kube::core::admission::Operation;

use super::checks::{invalid_email, not_found, verdict_for};
use super::review::Request;
use super::status::{Denial, FieldError, FieldErrorType};
use super::{Context, Verdict};
use crate::api::notification::{EmailRecipient, EmailSpec, EmailVariable};
use crate::view::templates::TemplateVariableView;

/// The validating webhook's rule.
pub fn validate(request: &Request, ctx: &Context<'_>) -> Verdict {
    match request.operation {
        Operation::Create => match request.spec::<EmailSpec>() {
            Ok(spec) => verdict_for(request, create_errors(ctx, &spec)),
            Err(denial) => denial.into(),
        },
        Operation::Update => match request.spec_pair::<EmailSpec>() {
            Ok((new, old)) if new == old => Verdict::allow(),
            Ok(_) => {
                Denial::method_not_supported(&request.resource.group, "emails", "update").into()
            }
            Err(denial) => denial.into(),
        },
        _ => Verdict::allow(),
    }
}

fn create_errors(ctx: &Context<'_>, spec: &EmailSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_recipient(ctx, &spec.recipient, &mut errors);
    let template = &spec.template_ref.name;
    match ctx.store.email_template(template) {
        None => errors.push(not_found(
            "spec.templateRef.name",
            "EmailTemplate",
            "",
            template,
        )),
        Some(declared) => check_variables(&declared, &spec.variables, &mut errors),
    }
    errors
}

fn check_recipient(ctx: &Context<'_>, recipient: &EmailRecipient, errors: &mut Vec<FieldError>) {
    let user = recipient
        .user_ref
        .as_ref()
        .map(|r| r.name.as_str())
        .filter(|n| !n.is_empty());
    let address = recipient.email_address.as_deref().filter(|a| !a.is_empty());
    match (user, address) {
        (Some(user), None) => {
            if ctx.store.user(user).is_none() {
                errors.push(not_found("spec.userRef.name", "User", "", user));
            }
        }
        (None, Some(address)) => errors.extend(invalid_email("spec.emailAddress", address)),
        _ => errors.push(FieldError::without_value(
            FieldErrorType::Invalid,
            "spec",
            "exactly one of emailAddress or userRef must be provided",
        )),
    }
}

/// The supported-values list of a NotSupported cause, as `field.NotSupported` words it.
pub(super) fn supported_values<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = names.into_iter().map(|n| format!("{n:?}")).collect();
    if quoted.is_empty() {
        "the template declares no variables".to_owned()
    } else {
        format!("supported values: {}", quoted.join(", "))
    }
}

/// Why a `url`-typed value is refused, in Milo's words; `None` when it is an absolute https URL.
pub fn url_problem(value: &str) -> Option<&'static str> {
    match url::Url::parse(value) {
        Err(_) => Some("must be a valid URL"),
        Ok(url) if url.scheme() != "https" => Some("URL must use https scheme"),
        Ok(_) => None,
    }
}

fn check_variables(
    declared: &[TemplateVariableView<'_>],
    variables: &[EmailVariable],
    errors: &mut Vec<FieldError>,
) {
    let mut seen = BTreeSet::new();
    for (i, variable) in variables.iter().enumerate() {
        let field = format!("spec.variables[{i}].name");
        if !seen.insert(variable.name.as_str()) {
            errors.push(FieldError::new(
                FieldErrorType::Duplicate,
                &field,
                &variable.name,
                "",
            ));
            continue;
        }
        let Some(declaration) = declared.iter().find(|d| d.name == variable.name) else {
            errors.push(FieldError::new(
                FieldErrorType::NotSupported,
                &field,
                &variable.name,
                supported_values(declared.iter().map(|d| d.name)),
            ));
            continue;
        };
        if let Some(problem) = url_problem(&variable.value).filter(|_| declaration.url) {
            errors.push(FieldError::new(
                FieldErrorType::Invalid,
                &format!("spec.variables[{i}].value"),
                &variable.value,
                problem,
            ));
        }
    }
    for required in declared.iter().filter(|d| d.required) {
        if !seen.contains(required.name) {
            errors.push(FieldError::without_value(
                FieldErrorType::Required,
                "spec.variables",
                format!("required variable {:?} is missing", required.name),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_and_https() {
        assert_eq!(url_problem("https://example.com/a?b"), None);
        assert_eq!(
            url_problem("http://example.com"),
            Some("URL must use https scheme")
        );
        assert_eq!(url_problem("/relative"), Some("must be a valid URL"));
        assert_eq!(url_problem(""), Some("must be a valid URL"));
    }

    #[test]
    fn not_supported_lists_the_declared_names() {
        assert_eq!(
            supported_values(["A", "B"]),
            "supported values: \"A\", \"B\""
        );
        assert_eq!(supported_values([]), "the template declares no variables");
    }
}
