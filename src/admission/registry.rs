//! Every webhook the server implements: its HTTP path (Milo's, so existing registrations keep
//! working), the resource and operations it is registered for, and its rule. The router, the
//! offline review chain and `webhook-config` all read this one table.

use super::review::Request;
use super::status::Denial;
use super::{
    Decide, broadcast, contact, email, emailtemplate, group, invitation, membership, policy,
    removal,
};

/// Mutating webhooks run first, then validating ones, as in the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookType {
    /// May patch the object.
    Mutating,
    /// May only admit or deny.
    Validating,
}

/// One webhook.
#[derive(Debug)]
pub struct Webhook {
    /// HTTP path.
    pub path: &'static str,
    /// Webhook name in the configuration (a DNS name, unique per configuration).
    pub name: &'static str,
    /// Mutating or validating.
    pub kind: WebhookType,
    /// API group of the resource.
    pub group: &'static str,
    /// API version of the resource.
    pub version: &'static str,
    /// Plural resource name.
    pub resource: &'static str,
    /// Operations it is registered for.
    pub operations: &'static [&'static str],
    /// Whether the resource is namespaced (the configuration's rule scope).
    pub namespaced: bool,
    /// The rule.
    pub decide: Decide,
    /// CEL conditions, all of which must hold for the API server to call the webhook at all
    /// (`matchConditions`, GA in 1.30): each excludes requests the rule always allows unchanged.
    pub match_conditions: &'static [MatchCondition],
}

/// One `matchConditions` entry. The rule still decides an excluded request correctly when it
/// arrives anyway (an API server older than 1.30, `--no-match-conditions`, the offline chain).
#[derive(Debug)]
pub struct MatchCondition {
    /// The condition's name in the configuration.
    pub name: &'static str,
    /// The CEL expression (`object`, `oldObject`, `request` are bound). It must not fail on any
    /// request: with `failurePolicy: Fail` an evaluation error rejects the request.
    pub expression: &'static str,
}

/// UPDATEs that change the spec. Every rule registered for UPDATE reads only the spec and allows
/// an unchanged one, so metadata-only updates (finalizers, labels, the enrollment records) are
/// never sent: they are most of the controllers' writes.
pub const SPEC_CHANGES: MatchCondition = MatchCondition {
    name: "spec-changes",
    expression: "request.operation != 'UPDATE' || !has(object.spec) || !has(oldObject.spec) \
        || object.spec != oldObject.spec",
};

/// Contacts whose subject is a User that is not yet among their owners: the only ones the
/// mutating webhook patches. Signup Contacts carry the reference from the start.
pub const OWNER_MISSING: MatchCondition = MatchCondition {
    name: "user-owner-missing",
    expression: "has(object.spec) && has(object.spec.subject) \
        && has(object.spec.subject.apiGroup) && object.spec.subject.apiGroup == 'iam.miloapis.com' \
        && has(object.spec.subject.kind) && object.spec.subject.kind == 'User' \
        && has(object.spec.subject.name) \
        && !(has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, \
            r.kind == 'User' && r.name == object.spec.subject.name \
            && r.apiVersion.startsWith('iam.miloapis.com/')))",
};

impl Webhook {
    /// Denies requests this webhook is not registered for, naming what it does serve.
    pub fn check_serves(&self, request: &Request) -> Result<(), Denial> {
        let r = &request.resource;
        if r.group != self.group || r.resource != self.resource {
            return Err(Denial::bad_request(format!(
                "webhook {} serves {}.{}, not {}.{}",
                self.path, self.resource, self.group, r.resource, r.group
            )));
        }
        if r.version != self.version {
            return Err(Denial::bad_request(format!(
                "webhook {} serves version {}, not {}",
                self.path, self.version, r.version
            )));
        }
        if let Some(sub) = request.sub_resource.as_deref().filter(|s| !s.is_empty()) {
            return Err(Denial::bad_request(format!(
                "webhook {} does not review the {sub} subresource",
                self.path
            )));
        }
        let op = request.operation_name();
        if !self.operations.contains(&op) {
            return Err(Denial::bad_request(format!(
                "webhook {} reviews {} requests, not {op}",
                self.path,
                self.operations.join(" and ")
            )));
        }
        Ok(())
    }

    /// Whether this webhook would be called for `resource` and `operation`.
    pub fn matches(&self, group: &str, resource: &str, operation: &str) -> bool {
        self.group == group && self.resource == resource && self.operations.contains(&operation)
    }
}

/// The webhooks, in the order the API server would call them within each type.
pub static WEBHOOKS: &[Webhook] = &[
    Webhook {
        path: "/mutate-notification-miloapis-com-v1alpha1-contact",
        name: "mcontact.notification.miloapis.com",
        kind: WebhookType::Mutating,
        group: "notification.miloapis.com",
        version: "v1alpha1",
        resource: "contacts",
        operations: &["CREATE", "UPDATE"],
        namespaced: true,
        decide: contact::mutate,
        match_conditions: &[OWNER_MISSING],
    },
    Webhook {
        path: "/validate-notification-miloapis-com-v1alpha1-contact",
        name: "vcontact.notification.miloapis.com",
        kind: WebhookType::Validating,
        group: "notification.miloapis.com",
        version: "v1alpha1",
        resource: "contacts",
        operations: &["CREATE", "UPDATE"],
        namespaced: true,
        decide: contact::validate,
        match_conditions: &[SPEC_CHANGES],
    },
    Webhook {
        path: "/validate-notification-miloapis-com-v1alpha1-contactgroup",
        name: "vcontactgroup.notification.miloapis.com",
        kind: WebhookType::Validating,
        group: "notification.miloapis.com",
        version: "v1alpha1",
        resource: "contactgroups",
        operations: &["CREATE", "UPDATE"],
        namespaced: true,
        decide: group::validate,
        match_conditions: &[SPEC_CHANGES],
    },
    Webhook {
        path: "/validate-notification-miloapis-com-v1alpha1-contactgroupmembership",
        name: "vcontactgroupmembership.notification.miloapis.com",
        kind: WebhookType::Validating,
        group: "notification.miloapis.com",
        version: "v1alpha1",
        resource: "contactgroupmemberships",
        operations: &["CREATE", "UPDATE"],
        namespaced: true,
        decide: membership::decide,
        match_conditions: &[SPEC_CHANGES],
    },
    Webhook {
        path: "/validate-notification-miloapis-com-v1alpha1-contactgroupmembershipremoval",
        name: "vcontactgroupmembershipremoval.notification.miloapis.com",
        kind: WebhookType::Validating,
        group: "notification.miloapis.com",
        version: "v1alpha1",
        resource: "contactgroupmembershipremovals",
        operations: &["CREATE", "UPDATE", "DELETE"],
        namespaced: true,
        decide: removal::decide,
        match_conditions: &[SPEC_CHANGES],
    },
    Webhook {
        path: "/validate-notification-miloapis-com-v1alpha1-contactgroupenrollmentpolicy",
        name: "vcontactgroupenrollmentpolicy.notification.miloapis.com",
        kind: WebhookType::Validating,
        group: "notification.miloapis.com",
        version: "v1alpha1",
        resource: "contactgroupenrollmentpolicies",
        operations: &["CREATE", "UPDATE"],
        namespaced: false,
        decide: policy::validate,
        match_conditions: &[SPEC_CHANGES],
    },
    Webhook {
        path: "/validate-notification-miloapis-com-v1alpha1-email",
        name: "vemail.notification.miloapis.com",
        kind: WebhookType::Validating,
        group: "notification.miloapis.com",
        version: "v1alpha1",
        resource: "emails",
        operations: &["CREATE", "UPDATE"],
        namespaced: true,
        decide: email::validate,
        match_conditions: &[SPEC_CHANGES],
    },
    Webhook {
        path: "/validate-notification-miloapis-com-v1alpha1-emailtemplate",
        name: "vemailtemplate.notification.miloapis.com",
        kind: WebhookType::Validating,
        group: "notification.miloapis.com",
        version: "v1alpha1",
        resource: "emailtemplates",
        operations: &["CREATE", "UPDATE"],
        namespaced: false,
        decide: emailtemplate::validate,
        match_conditions: &[SPEC_CHANGES],
    },
    Webhook {
        path: "/validate-notification-miloapis-com-v1alpha1-emailbroadcast",
        name: "vemailbroadcast.notification.miloapis.com",
        kind: WebhookType::Validating,
        group: "notification.miloapis.com",
        version: "v1alpha1",
        resource: "emailbroadcasts",
        operations: &["CREATE"],
        namespaced: true,
        decide: broadcast::validate,
        match_conditions: &[],
    },
    Webhook {
        path: "/mutate-iam-miloapis-com-v1alpha1-userinvitation",
        name: "muserinvitation.iam.miloapis.com",
        kind: WebhookType::Mutating,
        group: "iam.miloapis.com",
        version: "v1alpha1",
        resource: "userinvitations",
        operations: &["CREATE"],
        namespaced: true,
        decide: invitation::mutate,
        match_conditions: &[],
    },
    Webhook {
        path: "/validate-iam-miloapis-com-v1alpha1-userinvitation",
        name: "vuserinvitation.iam.miloapis.com",
        kind: WebhookType::Validating,
        group: "iam.miloapis.com",
        version: "v1alpha1",
        resource: "userinvitations",
        operations: &["CREATE", "UPDATE"],
        namespaced: true,
        decide: invitation::validate,
        match_conditions: &[SPEC_CHANGES],
    },
];

/// The webhook served at `path`.
pub fn by_path(path: &str) -> Option<&'static Webhook> {
    WEBHOOKS.iter().find(|w| w.path == path)
}
