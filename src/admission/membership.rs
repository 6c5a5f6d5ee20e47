//! ContactGroupMembership: the references must resolve, an opt-out blocks the membership, a
//! contact is in a group at most once, and users manage only their own public memberships.

use super::checks::other_than_self;
use super::pair::{self, PairRules};
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use super::{Context, Verdict};
use crate::api::notification::{ContactGroupMembershipSpec, Visibility};
use crate::view::lookups::PairLookup;

const RULES: PairRules = PairRules {
    noun: "membership",
    resource: "contactgroupmemberships",
    create_checks,
    authorize_user: private_group,
};

/// The validating webhook's rule.
pub fn decide(request: &Request, ctx: &Context<'_>) -> Verdict {
    pair::decide::<ContactGroupMembershipSpec>(request, ctx, &RULES)
}

fn private_group(pair: &PairLookup<'_>) -> Option<&'static str> {
    let private = pair
        .group()
        .is_some_and(|g| g.visibility == Visibility::Private);
    private.then_some("private groups are managed by administrators")
}

fn create_checks(request: &Request, pair: &PairLookup<'_>, errors: &mut Vec<FieldError>) {
    if let Some(removal) = other_than_self(request, pair.removals()) {
        errors.push(FieldError::without_value(
            FieldErrorType::Forbidden,
            "spec",
            format!("cannot create membership as a ContactGroupMembershipRemoval {removal} already exists"),
        ));
    }
    if let Some(existing) = other_than_self(request, pair.memberships()) {
        errors.push(FieldError::without_value(
            FieldErrorType::Duplicate,
            "spec",
            format!("membership already exists in ContactGroupMembership {existing}"),
        ));
    }
}
