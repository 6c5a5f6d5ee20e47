//! EmailTemplate (Milo's rules): subject and bodies parse as the Go template subset the sender
//! renders (so whatever is admitted can be rendered), every field they reference is declared in
//! `spec.variables`, and every required variable appears in both bodies.

use std::collections::BTreeSet;

use super::checks::verdict_for;
use super::email::supported_values;
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use super::{Context, Verdict};
use crate::api::notification::EmailTemplateSpec;
use crate::template::Template;

/// The validating webhook's rule (CREATE and UPDATE; unchanged specs pass, so metadata-only
/// updates of templates admitted before a rule existed are not blocked).
pub fn validate(request: &Request, _ctx: &Context<'_>) -> Verdict {
    match request.new_and_old_spec::<EmailTemplateSpec>() {
        Ok(Some((new, old))) if old.as_ref() != Some(&new) => {
            verdict_for(request, spec_errors(&new))
        }
        Ok(_) => Verdict::allow(),
        Err(denial) => denial.into(),
    }
}

/// Every problem with a template's spec, one cause each.
pub fn spec_errors(spec: &EmailTemplateSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let declared: BTreeSet<&str> = spec.variables.iter().map(|v| v.name.as_str()).collect();
    let parts = [
        ("subject", &spec.subject),
        ("htmlBody", &spec.html_body),
        ("textBody", &spec.text_body),
    ];
    for (name, source) in parts {
        let field = format!("spec.{name}");
        let template = match Template::parse(source) {
            Ok(template) => template,
            Err(error) => {
                errors.push(FieldError::without_value(
                    FieldErrorType::Invalid,
                    &field,
                    format!("{name} is not a valid Go template: {error}"),
                ));
                continue;
            }
        };
        let referenced = template.fields();
        for undeclared in referenced.iter().filter(|f| !declared.contains(f.as_str())) {
            errors.push(FieldError::new(
                FieldErrorType::NotSupported,
                &field,
                undeclared,
                supported_values(spec.variables.iter().map(|v| v.name.as_str())),
            ));
        }
        if name == "subject" {
            continue;
        }
        for required in spec.variables.iter().filter(|v| v.required) {
            if !referenced.contains(&required.name) {
                errors.push(FieldError::without_value(
                    FieldErrorType::Required,
                    &field,
                    format!(
                        "required variable {:?} is not referenced in {name}",
                        required.name
                    ),
                ));
            }
        }
    }
    errors
}
