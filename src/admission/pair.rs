//! What memberships and removals share: both name a (contact, group) pair that must resolve, both
//! have an immutable spec, and in user context both may only be made for the requester's own
//! contact. Each kind adds only its own create checks.

use kube::core::admission::Operation;
use serde::de::DeserializeOwned;

use super::checks::{immutable, not_found, verdict_for};
use super::review::Request;
use super::status::{Denial, FieldError};
use super::{Context, Verdict};
use crate::api::notification::ContactGroupPair;
use crate::view::lookups::PairLookup;

/// How one membership-like kind differs from the other.
pub struct PairRules {
    /// The noun in ownership messages: "membership" or "membership removal".
    pub noun: &'static str,
    /// The plural resource, for Forbidden messages.
    pub resource: &'static str,
    /// Checks on CREATE after the references resolved, given the pair as looked up.
    pub create_checks: fn(&Request, &PairLookup<'_>, &mut Vec<FieldError>),
    /// Extra authorization in user context, after ownership (memberships: private groups).
    pub authorize_user: fn(&PairLookup<'_>) -> Option<&'static str>,
}

/// Decides a membership-like request. CREATE: in user context the contact must be the
/// requester's own (403), then the pair must resolve and the kind's checks pass (422). UPDATE:
/// spec immutability only, so metadata-only updates such as finalizer removal always pass, even
/// when the contact or group is gone. DELETE: in user context only the owner may delete, unless
/// the contact is gone.
pub fn decide<S>(request: &Request, ctx: &Context<'_>, rules: &PairRules) -> Verdict
where
    S: ContactGroupPair + PartialEq + DeserializeOwned + Clone + 'static,
{
    let result = match request.operation {
        Operation::Create => request.spec::<S>().and_then(|spec| {
            let pair = ctx
                .store
                .pair_lookup(spec.contact_ref(), spec.contact_group_ref());
            authorize(request, rules, || pair, "create")?;
            let mut errors = missing_references(&*spec, &pair);
            (rules.create_checks)(request, &pair, &mut errors);
            Ok(errors)
        }),
        Operation::Update => request.spec_pair::<S>().map(|(new, old)| {
            (new != old)
                .then(|| immutable("spec", "spec is immutable"))
                .into_iter()
                .collect()
        }),
        Operation::Delete => request.old_spec::<S>().and_then(|spec| {
            let pair = || {
                ctx.store
                    .pair_lookup(spec.contact_ref(), spec.contact_group_ref())
            };
            authorize(request, rules, pair, "delete").map(|()| Vec::new())
        }),
        Operation::Connect => Ok(Vec::new()),
    };
    match result {
        Ok(errors) => verdict_for(request, errors),
        Err(denial) => denial.into(),
    }
}

/// In user context, the contact must exist with the requester as its subject (a contact that is
/// gone owns nothing, so anyone RBAC allows may clean up after it on delete). The pair is looked
/// up only in user context.
fn authorize<'v>(
    request: &Request,
    rules: &PairRules,
    pair: impl FnOnce() -> PairLookup<'v>,
    verb: &str,
) -> Result<(), Denial> {
    let Some(user) = request.user_context() else {
        return Ok(());
    };
    let pair = pair();
    let forbidden = |reason: &str| Denial::forbidden(&request.target(), rules.resource, reason);
    match pair.contact() {
        // On create the 422 NotFound says more than a 403 would; on delete a contact that is gone
        // owns nothing, so whoever RBAC allows may clean up.
        None => return Ok(()),
        Some(c)
            if c.subject
                .is_some_and(|s| s.kind == "User" && s.name == user) => {}
        Some(_) => {
            return Err(forbidden(&format!(
                "you do not have permission to {verb} {} for this contact",
                rules.noun
            )));
        }
    }
    match (rules.authorize_user)(&pair) {
        Some(reason) if verb == "create" => Err(forbidden(reason)),
        _ => Ok(()),
    }
}

/// NotFound errors for a contact or group that does not exist.
pub fn missing_references(spec: &impl ContactGroupPair, pair: &PairLookup<'_>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !pair.contact_exists() {
        let contact = spec.contact_ref();
        errors.push(not_found(
            "spec.contactRef.name",
            "Contact",
            &contact.namespace,
            &contact.name,
        ));
    }
    if pair.group().is_none() {
        let group = spec.contact_group_ref();
        errors.push(not_found(
            "spec.contactGroupRef.name",
            "ContactGroup",
            &group.namespace,
            &group.name,
        ));
    }
    errors
}
