//! ContactGroupMembershipRemoval (an opt-out): the references must resolve, only public groups can
//! be left, one opt-out per (contact, group) is enough, and users create and delete only their own.

use super::checks::other_than_self;
use super::pair::{self, PairRules};
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use super::{Context, Verdict};
use crate::api::notification::{ContactGroupMembershipRemovalSpec, ContactGroupPair, Visibility};

const RULES: PairRules<ContactGroupMembershipRemovalSpec> = PairRules {
    noun: "membership removal",
    resource: "contactgroupmembershipremovals",
    create_checks,
    authorize_user: |_, _| None,
};

/// The validating webhook's rule.
pub fn decide(request: &Request, ctx: &Context<'_>) -> Verdict {
    pair::decide(request, ctx, &RULES)
}

fn create_checks(
    request: &Request,
    spec: &ContactGroupMembershipRemovalSpec,
    ctx: &Context<'_>,
    errors: &mut Vec<FieldError>,
) {
    let (contact, group) = (spec.contact_ref(), spec.contact_group_ref());
    if ctx
        .store
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
    if let Some(existing) = other_than_self(request, ctx.store.removals_of(contact, group)) {
        errors.push(FieldError::without_value(
            FieldErrorType::Duplicate,
            "spec",
            format!(
                "membership removal already exists in ContactGroupMembershipRemoval {existing}"
            ),
        ));
    }
}
