//! Checks and error builders every rule module shares, so the same problem is worded the same way
//! whichever kind it is found on.

use serde_json::Value;

use super::Verdict;
use super::review::Request;
use super::status::{Denial, FieldError, FieldErrorType};
use crate::view::NamedRef;

/// Allows when nothing is wrong, else one 422 naming every problem.
pub fn verdict_for(request: &Request, errors: Vec<FieldError>) -> Verdict {
    if errors.is_empty() {
        Verdict::allow()
    } else {
        Denial::invalid(&request.target(), errors).into()
    }
}

/// Allows with warnings, or one 422 naming every problem.
pub fn verdict_with_warnings(
    request: &Request,
    errors: Vec<FieldError>,
    warnings: Vec<String>,
) -> Verdict {
    match verdict_for(request, errors) {
        Verdict::Allow { patch, .. } => Verdict::Allow { patch, warnings },
        denied => denied,
    }
}

/// A NotFound cause for a reference to `kind` `namespace/name` ("" namespace: cluster-scoped).
pub fn not_found(field: &str, kind: &str, namespace: &str, name: &str) -> FieldError {
    let detail = if namespace.is_empty() {
        format!("{kind} {name:?} does not exist")
    } else {
        format!("{kind} {name:?} does not exist in namespace {namespace:?}")
    };
    FieldError::new(FieldErrorType::NotFound, field, name, detail)
}

/// An Invalid cause with the standard wording for a field that cannot change.
pub fn immutable(field: &str, message: &str) -> FieldError {
    FieldError::without_value(FieldErrorType::Invalid, field, message)
}

/// The first object in `found` other than the one the request is about (a retried create of the
/// same name is the API server's AlreadyExists to report, not a duplicate), named for a message:
/// bare when it shares the request's namespace, `namespace/name` otherwise.
pub fn other_than_self<'a>(
    request: &Request,
    found: impl IntoIterator<Item = NamedRef<'a>>,
) -> Option<String> {
    let own = request.own_name();
    found
        .into_iter()
        .find(|r| !(r.namespace == request.namespace() && r.name == own))
        .map(|r| {
            if r.namespace == request.namespace() || r.namespace.is_empty() {
                r.name.to_owned()
            } else {
                format!("{}/{}", r.namespace, r.name)
            }
        })
}

/// Who holds a value that must be unique, as a denial may tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    /// An object in the request's own namespace (or a cluster-scoped one), by name.
    Here(String),
    /// An object in another namespace: not named, so that whoever may write in one namespace
    /// learns that the value is taken, but not which object in which namespace holds it.
    Elsewhere,
}

/// The first object in `found` other than the one the request is about (see
/// [`other_than_self`]), named only when it shares the request's namespace.
pub fn taken_by<'a>(
    request: &Request,
    found: impl IntoIterator<Item = NamedRef<'a>>,
) -> Option<Taken> {
    let own = request.own_name();
    let namespace = request.namespace();
    let mut others = found
        .into_iter()
        .filter(|r| !(r.namespace == namespace && r.name == own))
        .peekable();
    // One in the request's namespace is named even when others elsewhere hold the value too.
    let first = others.peek().copied()?;
    let here = std::iter::once(first)
        .chain(others)
        .find(|r| r.namespace == namespace || r.namespace.is_empty());
    Some(match here {
        Some(r) => Taken::Here(r.name.to_owned()),
        None => Taken::Elsewhere,
    })
}

/// An Invalid cause when `value` is not a plain email address ("invalid email address: <why>").
pub fn invalid_email(field: &str, value: &str) -> Option<FieldError> {
    let why = match value.parse::<email_address::EmailAddress>() {
        Ok(parsed) if parsed.display_part().is_empty() && parsed.as_str() == value => return None,
        Ok(_) => "a display name or angle brackets are not allowed".to_owned(),
        Err(error) => error.to_string(),
    };
    Some(FieldError::new(
        FieldErrorType::Invalid,
        field,
        value,
        format!("invalid email address: {why}"),
    ))
}

/// A JSON Patch from its JSON form; the operations are written by rules, so this cannot fail.
pub fn patch(operations: Value) -> json_patch::Patch {
    serde_json::from_value(operations).unwrap_or_else(|_| json_patch::Patch(Vec::new()))
}

/// Allows with a patch (an empty patch is a plain allow).
pub fn allow_with_patch(patch: json_patch::Patch) -> Verdict {
    Verdict::Allow {
        patch,
        warnings: Vec::new(),
    }
}
