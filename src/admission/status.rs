//! Denials in Kubernetes' own words: a `Status` with code, reason, message and field causes, the
//! message formatted the way `apierrors.NewInvalid` formats it, so kubectl users read the same
//! shape of error they get from built-in validation.

use serde::Serialize;

/// How a field is wrong; the names are Kubernetes' `CauseType`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum FieldErrorType {
    /// The value names something that does not exist.
    #[serde(rename = "FieldValueNotFound")]
    NotFound,
    /// The value is malformed or not allowed.
    #[serde(rename = "FieldValueInvalid")]
    Invalid,
    /// The value collides with an existing object.
    #[serde(rename = "FieldValueDuplicate")]
    Duplicate,
    /// The value is not permitted for this requester or state.
    #[serde(rename = "FieldValueForbidden")]
    Forbidden,
    /// The value is missing.
    #[serde(rename = "FieldValueRequired")]
    Required,
    /// The value is not one of the supported ones.
    #[serde(rename = "FieldValueNotSupported")]
    NotSupported,
}

impl FieldErrorType {
    fn label(self) -> &'static str {
        match self {
            FieldErrorType::NotFound => "Not found",
            FieldErrorType::Invalid => "Invalid value",
            FieldErrorType::Duplicate => "Duplicate value",
            FieldErrorType::Forbidden => "Forbidden",
            FieldErrorType::Required => "Required value",
            FieldErrorType::NotSupported => "Unsupported value",
        }
    }
}

/// One problem with one field of a request's object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The JSON path of the field, such as `spec.contactRef.name`.
    pub field: String,
    /// How it is wrong.
    pub kind: FieldErrorType,
    /// The offending value, quoted in the message when present.
    pub value: Option<String>,
    /// One sentence saying what is wrong.
    pub detail: String,
}

impl FieldError {
    /// A field error with a value.
    pub fn new(
        kind: FieldErrorType,
        field: &str,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind,
            value: Some(value.into()),
            detail: detail.into(),
        }
    }

    /// A field error whose value is not worth repeating (an object, say).
    pub fn without_value(kind: FieldErrorType, field: &str, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind,
            value: None,
            detail: detail.into(),
        }
    }

    /// The part after `field: `, as `field.Error.ErrorBody()` renders it.
    pub fn body(&self) -> String {
        let mut body = self.kind.label().to_owned();
        let quotes_value = !matches!(
            self.kind,
            FieldErrorType::Forbidden | FieldErrorType::Required
        );
        if let Some(value) = self.value.as_ref().filter(|_| quotes_value) {
            body.push_str(": ");
            body.push_str(&serde_json::to_string(value).unwrap_or_default());
        }
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }
}

/// The object a denial is about, named in the message and `details`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// API group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Object name (may be empty on CREATE with generateName).
    pub name: String,
}

/// `metav1.StatusCause`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusCause {
    /// The cause type (Go field `Type`, JSON `reason`).
    pub reason: FieldErrorType,
    /// The error body.
    pub message: String,
    /// The field path.
    pub field: String,
}

/// `metav1.StatusDetails`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusDetails {
    /// Object name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// API group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Kind.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// One cause per field problem.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// The empty `metadata` of a `Status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EmptyMeta {}

/// `metav1.Status` for a failed admission: what the API server relays to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// Always `{}`; present because clients expect the field.
    pub metadata: EmptyMeta,
    /// Always `Failure`.
    pub status: &'static str,
    /// One line for people.
    pub message: String,
    /// Machine-readable reason: `Invalid`, `Forbidden`, `BadRequest`, ...
    pub reason: &'static str,
    /// The object and field causes, when the denial is about an object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<StatusDetails>>,
    /// HTTP status code the API server returns to the client.
    pub code: u16,
}

impl Denial {
    fn new(
        code: u16,
        reason: &'static str,
        message: String,
        details: Option<StatusDetails>,
    ) -> Self {
        Self {
            metadata: EmptyMeta {},
            status: "Failure",
            message,
            reason,
            details: details.map(Box::new),
            code,
        }
    }

    /// 422 Invalid listing every field problem, as `apierrors.NewInvalid` does.
    pub fn invalid(target: &Target, errors: Vec<FieldError>) -> Self {
        let rendered: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.body()))
            .collect();
        let list = match rendered.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let message = format!(
            "{}.{} {:?} is invalid: {list}",
            target.kind, target.group, target.name
        );
        let causes = errors
            .iter()
            .map(|e| StatusCause {
                reason: e.kind,
                message: e.body(),
                field: e.field.clone(),
            })
            .collect();
        Self::new(422, "Invalid", message, Some(target.details(causes)))
    }

    /// 403 Forbidden, as `apierrors.NewForbidden` words it.
    pub fn forbidden(target: &Target, resource: &str, reason: &str) -> Self {
        let message = format!(
            "{resource}.{} {:?} is forbidden: {reason}",
            target.group, target.name
        );
        Self::new(403, "Forbidden", message, Some(target.details(Vec::new())))
    }

    /// 405 MethodNotAllowed, as `apierrors.NewMethodNotSupported` words it: for kinds whose
    /// objects cannot change once created (Milo's Emails).
    pub fn method_not_supported(group: &str, resource: &str, action: &str) -> Self {
        let qualified = format!("{resource}.{group}");
        let message = format!("{action} is not supported on resources of kind {qualified:?}");
        let details = StatusDetails {
            group: group.to_owned(),
            kind: resource.to_owned(),
            ..StatusDetails::default()
        };
        Self::new(405, "MethodNotAllowed", message, Some(details))
    }

    /// 400 BadRequest: the request itself could not be understood.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }

    /// 503 ServiceUnavailable: the webhook cannot decide yet (its view has not synced).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message.into(), None)
    }

    /// 500 InternalError: a lookup failed; never turned into an allow.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into(), None)
    }
}

impl Target {
    fn details(&self, causes: Vec<StatusCause>) -> StatusDetails {
        StatusDetails {
            name: self.name.clone(),
            group: self.group.clone(),
            kind: self.kind.clone(),
            causes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            group: "notification.miloapis.com".into(),
            kind: "ContactGroupMembership".into(),
            name: "m".into(),
        }
    }

    #[test]
    fn one_error_reads_like_new_invalid() {
        let e = FieldError::new(
            FieldErrorType::NotFound,
            "spec.contactRef.name",
            "alice",
            "",
        );
        let d = Denial::invalid(&target(), vec![e]);
        assert_eq!(
            d.message,
            r#"ContactGroupMembership.notification.miloapis.com "m" is invalid: spec.contactRef.name: Not found: "alice""#
        );
        assert_eq!((d.code, d.reason), (422, "Invalid"));
        let causes = &d.details.as_ref().unwrap().causes;
        assert_eq!(causes[0].reason, FieldErrorType::NotFound);
        assert_eq!(
            serde_json::to_value(&causes[0]).unwrap()["reason"],
            "FieldValueNotFound"
        );
    }

    #[test]
    fn several_errors_are_bracketed_and_each_has_a_cause() {
        let errors = vec![
            FieldError::without_value(FieldErrorType::Invalid, "spec", "spec is immutable"),
            FieldError::without_value(FieldErrorType::Forbidden, "spec.x", "not yours"),
        ];
        let d = Denial::invalid(&target(), errors);
        assert!(
            d.message.ends_with(
                "[spec: Invalid value: spec is immutable, spec.x: Forbidden: not yours]"
            ),
            "{}",
            d.message
        );
        assert_eq!(d.details.unwrap().causes.len(), 2);
    }

    #[test]
    fn forbidden_value_is_not_quoted() {
        let e = FieldError::new(
            FieldErrorType::Forbidden,
            "spec.contactRef",
            "x",
            "you may not",
        );
        assert_eq!(e.body(), "Forbidden: you may not");
    }
}
