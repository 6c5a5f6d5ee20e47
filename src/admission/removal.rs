//! ContactGroupMembershipRemoval (an opt-out): the references must resolve, only public groups can
//! be left, one opt-out per (contact, group) is enough, and users create and delete only their own.

use super::checks::other_than_self;
use super::pair::{self, PairRules};
use super::review::Request;
use super::status::{FieldError, FieldErrorType};
use super::{Context, Verdict};
use crate::api::notification::{ContactGroupMembershipRemovalSpec, Visibility};
use crate::view::lookups::PairLookup;

const RULES: PairRules = PairRules {
    noun: "membership removal",
    resource: "contactgroupmembershipremovals",
    create_checks,
    authorize_user: |_| None,
};

/// The validating webhook's rule.
pub fn decide(request: &Request, ctx: &Context<'_>) -> Verdict {
    pair::decide::<ContactGroupMembershipRemovalSpec>(request, ctx, &RULES)
}

fn create_checks(request: &Request, pair: &PairLookup<'_>, errors: &mut Vec<FieldError>) {
    if let Some(group) = pair.group()
        && group.visibility == Visibility::Private
    {
        errors.push(FieldError::new(
            FieldErrorType::Invalid,
            "spec.contactGroupRef.name",
            group.key.name,
            "ContactGroup must be public for creating a ContactGroupMembershipRemoval",
        ));
    }
    if let Some(existing) = other_than_self(request, pair.removals()) {
        errors.push(FieldError::without_value(
            FieldErrorType::Duplicate,
            "spec",
            format!(
                "membership removal already exists in ContactGroupMembershipRemoval {existing}"
            ),
        ));
    }
}
