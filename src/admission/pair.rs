//! What memberships and removals share: both name a (contact, group) pair that must resolve, and
//! both have an immutable spec. Each kind adds only its own create checks.

use kube::core::admission::Operation;
use serde::de::DeserializeOwned;

use super::Verdict;
use super::review::Request;
use super::status::{Denial, FieldError, FieldErrorType};
use crate::api::notification::ContactGroupPair;
use crate::view::{NamedRef, Store};

/// A kind's checks on CREATE, after the references have been resolved.
pub type CreateChecks<S> = fn(&Request, &S, &Store, &mut Vec<FieldError>);

/// Decides a membership-like request: CREATE resolves the pair and runs `create_checks`, UPDATE
/// enforces spec immutability (metadata-only updates such as finalizer removal always pass, even
/// when the contact or group is gone).
pub fn decide<S>(request: &Request, store: &Store, create_checks: CreateChecks<S>) -> Verdict
where
    S: ContactGroupPair + PartialEq + DeserializeOwned,
{
    let result = match request.operation {
        Operation::Create => request.spec::<S>().map(|spec| {
            let mut errors = missing_references(&spec, store);
            create_checks(request, &spec, store, &mut errors);
            errors
        }),
        Operation::Update => request
            .spec_pair::<S>()
            .map(|(new, old)| immutable_spec(&new, &old).into_iter().collect()),
        Operation::Delete | Operation::Connect => Ok(Vec::new()),
    };
    match result {
        Ok(errors) => verdict_for(request, errors),
        Err(denial) => denial.into(),
    }
}

/// Allows when nothing is wrong, else one 422 naming every problem.
pub fn verdict_for(request: &Request, errors: Vec<FieldError>) -> Verdict {
    if errors.is_empty() {
        Verdict::allow()
    } else {
        Denial::invalid(&request.target(), errors).into()
    }
}

/// The "spec is immutable" error when `new` differs from `old`.
pub fn immutable_spec<S: PartialEq>(new: &S, old: &S) -> Option<FieldError> {
    (new != old)
        .then(|| FieldError::without_value(FieldErrorType::Invalid, "spec", "spec is immutable"))
}

/// NotFound errors for a contact or group that does not exist.
pub fn missing_references(spec: &impl ContactGroupPair, store: &Store) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let contact = spec.contact_ref();
    if store.contact(&contact.namespace, &contact.name).is_none() {
        errors.push(not_found(
            "spec.contactRef.name",
            "Contact",
            &contact.namespace,
            &contact.name,
        ));
    }
    let group = spec.contact_group_ref();
    if store.group(&group.namespace, &group.name).is_none() {
        errors.push(not_found(
            "spec.contactGroupRef.name",
            "ContactGroup",
            &group.namespace,
            &group.name,
        ));
    }
    errors
}

/// A NotFound cause for a reference to `kind` `namespace/name`.
pub fn not_found(field: &str, kind: &str, namespace: &str, name: &str) -> FieldError {
    let detail = if namespace.is_empty() {
        format!("{kind} {name:?} does not exist")
    } else {
        format!("{kind} {name:?} does not exist in namespace {namespace:?}")
    };
    FieldError::new(FieldErrorType::NotFound, field, name, detail)
}

/// The first object in `found` other than the request's own (a retried create of the same name is
/// the API server's AlreadyExists to report, not a duplicate), named for a message: bare when it
/// shares the request's namespace, `namespace/name` otherwise.
pub fn other_than_self(request: &Request, found: &[NamedRef<'_>]) -> Option<String> {
    let own = request.target().name;
    found
        .iter()
        .find(|r| !(r.namespace == request.namespace() && r.name == own))
        .map(|r| {
            if r.namespace == request.namespace() {
                r.name.to_owned()
            } else {
                format!("{}/{}", r.namespace, r.name)
            }
        })
}
