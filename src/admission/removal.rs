//! ContactGroupMembershipRemoval (an opt-out): the references must resolve, only public groups can
//! be left, and one opt-out per (contact, group) is enough.

use super::Verdict;
use super::pair::{self, other_than_self};
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use crate::api::notification::{ContactGroupMembershipRemovalSpec, ContactGroupPair, Visibility};
use crate::view::Store;

/// The validating webhook's rule.
pub fn decide(request: &Request, store: &Store) -> Verdict {
    pair::decide::<ContactGroupMembershipRemovalSpec>(request, store, create_checks)
}

fn create_checks(
    request: &Request,
    spec: &ContactGroupMembershipRemovalSpec,
    store: &Store,
    errors: &mut Vec<FieldError>,
) {
    let (contact, group) = (spec.contact_ref(), spec.contact_group_ref());
    if store
        .group(&group.namespace, &group.name)
        .is_some_and(|g| g.visibility == Visibility::Private)
    {
        errors.push(FieldError::new(
            FieldErrorType::Invalid,
            "spec.contactGroupRef.name",
            &group.name,
            "ContactGroup must be public for creating a ContactGroupMembershipRemoval",
        ));
    }
    if let Some(existing) = other_than_self(request, &store.removals_of(contact, group)) {
        errors.push(FieldError::without_value(
            FieldErrorType::Duplicate,
            "spec",
            format!(
                "membership removal already exists in ContactGroupMembershipRemoval {existing}"
            ),
        ));
    }
}
