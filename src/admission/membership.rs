//! ContactGroupMembership: the references must resolve, an opt-out blocks the membership, a
//! contact is in a group at most once, and users manage only their own public memberships.

use super::checks::other_than_self;
use super::pair::{self, PairRules};
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use super::{Context, Verdict};
use crate::api::notification::{ContactGroupMembershipSpec, ContactGroupPair, Visibility};

const RULES: PairRules<ContactGroupMembershipSpec> = PairRules {
    noun: "membership",
    resource: "contactgroupmemberships",
    create_checks,
    authorize_user: private_group,
};

/// The validating webhook's rule.
pub fn decide(request: &Request, ctx: &Context<'_>) -> Verdict {
    pair::decide(request, ctx, &RULES)
}

fn private_group(spec: &ContactGroupMembershipSpec, ctx: &Context<'_>) -> Option<&'static str> {
    let group = spec.contact_group_ref();
    let private = ctx
        .store
        .group(&group.namespace, &group.name)
        .is_some_and(|g| g.visibility == Visibility::Private);
    private.then_some("private groups are managed by administrators")
}

fn create_checks(
    request: &Request,
    spec: &ContactGroupMembershipSpec,
    ctx: &Context<'_>,
    errors: &mut Vec<FieldError>,
) {
    let (contact, group) = (spec.contact_ref(), spec.contact_group_ref());
    if let Some(removal) = other_than_self(request, ctx.store.removals_of(contact, group)) {
        errors.push(FieldError::without_value(
            FieldErrorType::Forbidden,
            "spec",
            format!("cannot create membership as a ContactGroupMembershipRemoval {removal} already exists"),
        ));
    }
    if let Some(existing) = other_than_self(request, ctx.store.memberships_of(contact, group)) {
        errors.push(FieldError::without_value(
            FieldErrorType::Duplicate,
            "spec",
            format!("membership already exists in ContactGroupMembership {existing}"),
        ));
    }
}
