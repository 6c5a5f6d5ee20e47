//! ContactGroupMembership: the references must resolve, an opt-out blocks the membership, and a
//! contact is in a group at most once.

use super::Verdict;
use super::pair::{self, other_than_self};
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use crate::api::notification::{ContactGroupMembershipSpec, ContactGroupPair};
use crate::view::Store;

/// The validating webhook's rule.
pub fn decide(request: &Request, store: &Store) -> Verdict {
    pair::decide::<ContactGroupMembershipSpec>(request, store, create_checks)
}

fn create_checks(
    request: &Request,
    spec: &ContactGroupMembershipSpec,
    store: &Store,
    errors: &mut Vec<FieldError>,
) {
    let (contact, group) = (spec.contact_ref(), spec.contact_group_ref());
    if let Some(removal) = other_than_self(request, &store.removals_of(contact, group)) {
        errors.push(FieldError::without_value(
            FieldErrorType::Forbidden,
            "spec",
            format!("cannot create membership as a ContactGroupMembershipRemoval {removal} already exists"),
        ));
    }
    if let Some(existing) = other_than_self(request, &store.memberships_of(contact, group)) {
        errors.push(FieldError::without_value(
            FieldErrorType::Duplicate,
            "spec",
            format!("membership already exists in ContactGroupMembership {existing}"),
        ));
    }
}
