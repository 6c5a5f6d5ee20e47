//! The invitation Email: one `notification.miloapis.com` Email per invitation, ever. Its name is
//! derived from the invitation (name, namespace and uid), so the create is idempotent: a retry, a
//! restart or a new leader gets AlreadyExists and treats it as sent. It lives in the invitation's
//! namespace and is owned by it, so it goes when the invitation does.
//!
//! Template variables: `OrganizationDisplayName`, `InviterDisplayName`, `InviterEmail` (when the
//! inviter is a User with an address), `RecipientName` (the invitation's given and family names,
//! else the address), `Roles` (role names, comma-separated), `ExpirationDate` (RFC 3339, when the
//! invitation expires), `UserInvitationName`, and `InvitationLink`, the URL template with
//! `{organization}`, `{namespace}` and `{invitation}` replaced by the organization's name, the
//! invitation's namespace and its name.
//!
//! Only the variables the template declares are set: Email admission (Milo's rule) refuses
//! undeclared ones, so Milo's templates, which declare a subset, keep receiving invitation Emails.
//! A template that requires a variable this controller cannot fill gets no Email (the plan says
//! so in `Ready`; see [`unfillable`]).

use kube::{Resource, ResourceExt};

use super::InvitationSettings;
use super::access::{invitation_object_meta, invitation_object_name};
use crate::api::common::NameRef;
use crate::api::iam::{InviterUser, UserInvitation};
use crate::api::notification::{Email, EmailRecipient, EmailSpec, EmailVariable, TemplateVariable};

/// Longest value an Email variable may hold (the CRD's limit).
const MAX_VALUE: usize = 4096;

/// The name of the invitation's Email: `userinvitation-<name>-<hash>`.
pub fn email_name(invitation: &UserInvitation) -> String {
    invitation_object_name(invitation, None)
}

/// The link the invitee follows: `template` with `{organization}`, `{namespace}` and
/// `{invitation}` replaced. Names are DNS labels or subdomains, so they need no URL escaping.
pub fn invitation_link(template: &str, invitation: &UserInvitation) -> String {
    template
        .replace("{organization}", &invitation.spec.organization_ref.name)
        .replace(
            "{namespace}",
            invitation.meta().namespace.as_deref().unwrap_or_default(),
        )
        .replace("{invitation}", &invitation.name_any())
}

/// The invitee's name as the Email greets them: given and family names when the invitation has
/// them, else the address.
pub fn recipient_name(invitation: &UserInvitation) -> String {
    let parts: Vec<&str> = [&invitation.spec.given_name, &invitation.spec.family_name]
        .into_iter()
        .flatten()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        invitation.spec.email.clone()
    } else {
        parts.join(" ")
    }
}

fn clamp(mut value: String) -> String {
    if value.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
}

/// The names of every variable this controller can fill, in the order it fills them: what Milo's
/// invitation template declares, and what a template of one's own may use.
pub const VARIABLES: [&str; 8] = [
    "OrganizationDisplayName",
    "InviterDisplayName",
    "InviterEmail",
    "RecipientName",
    "Roles",
    "ExpirationDate",
    "UserInvitationName",
    "InvitationLink",
];

/// Every variable this controller can fill for `invitation`, in a fixed order.
fn all_variables(
    invitation: &UserInvitation,
    link: String,
    organization: &str,
    inviter: Option<&InviterUser>,
) -> Vec<(&'static str, String)> {
    let inviter_name = inviter
        .and_then(|i| i.display_name.clone())
        .or_else(|| invitation.spec.invited_by.as_ref().map(|r| r.name.clone()))
        .unwrap_or_default();
    let roles: Vec<&str> = invitation
        .spec
        .roles
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let mut variables = vec![
        ("OrganizationDisplayName", organization.to_owned()),
        ("InviterDisplayName", inviter_name),
    ];
    if let Some(address) = inviter.and_then(|i| i.email_address.clone()) {
        variables.push(("InviterEmail", address));
    }
    variables.push(("RecipientName", recipient_name(invitation)));
    variables.push(("Roles", roles.join(", ")));
    if let Some(expires) = &invitation.spec.expiration_date {
        variables.push(("ExpirationDate", expires.0.to_string()));
    }
    variables.push(("UserInvitationName", invitation.name_any()));
    variables.push(("InvitationLink", link));
    variables
}

/// The required variables of `declared` this controller cannot fill for `invitation` (an
/// unknown name, or `InviterEmail`/`ExpirationDate` when there is none): when any, no Email is
/// created, since admission would refuse it.
pub fn unfillable(
    invitation: &UserInvitation,
    inviter: Option<&InviterUser>,
    declared: &[TemplateVariable],
) -> Vec<String> {
    let available = all_variables(invitation, String::new(), "", inviter);
    declared
        .iter()
        .filter(|d| d.required && !available.iter().any(|(name, _)| *name == d.name))
        .map(|d| d.name.clone())
        .collect()
}

/// The Email for `invitation`, given the organization's display name, what is known of the
/// inviter (their display name falls back to `spec.invitedBy.name`, which the mutating webhook
/// always sets) and the names the template declares (only those are set).
pub fn build(
    invitation: &UserInvitation,
    settings: &InvitationSettings,
    organization: &str,
    inviter: Option<&InviterUser>,
    declared: &[String],
) -> Email {
    let link = invitation_link(&settings.url_template, invitation);
    let variables = all_variables(invitation, link, organization, inviter);
    Email {
        metadata: invitation_object_meta(invitation, email_name(invitation)),
        spec: EmailSpec {
            template_ref: NameRef {
                name: settings.email_template.clone(),
            },
            recipient: EmailRecipient {
                user_ref: None,
                email_address: Some(invitation.spec.email.clone()),
            },
            variables: variables
                .into_iter()
                .filter(|(name, _)| declared.iter().any(|d| d == name))
                .map(|(name, value)| EmailVariable {
                    name: name.into(),
                    value: clamp(value),
                })
                .collect(),
            ..EmailSpec::default()
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::iam::{RoleRef, UserInvitationSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn invitation() -> UserInvitation {
        let mut invitation = UserInvitation::new(
            "welcome-bob",
            UserInvitationSpec {
                organization_ref: NameRef {
                    name: "acme".into(),
                },
                email: "Bob@Example.com".into(),
                given_name: Some("Bob".into()),
                roles: vec![
                    RoleRef {
                        name: "editor".into(),
                        namespace: None,
                    },
                    RoleRef {
                        name: "viewer".into(),
                        namespace: None,
                    },
                ],
                invited_by: Some(NameRef {
                    name: "alice".into(),
                }),
                expiration_date: Some(Time("2026-12-01T00:00:00Z".parse().unwrap())),
                ..UserInvitationSpec::default()
            },
        );
        invitation.metadata.namespace = Some("organization-acme".into());
        invitation.metadata.uid = Some("uid-1".into());
        invitation
    }

    fn all_names() -> Vec<String> {
        VARIABLES.map(String::from).to_vec()
    }

    #[test]
    fn variables_names_what_the_controller_fills() {
        let inviter = InviterUser {
            display_name: Some("Alice".into()),
            email_address: Some("alice@example.com".into()),
        };
        let filled = all_variables(&invitation(), "https://x".into(), "Acme", Some(&inviter));
        let names: Vec<&str> = filled.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, VARIABLES);
    }

    fn declared(name: &str, required: bool) -> TemplateVariable {
        TemplateVariable {
            name: name.into(),
            required,
            ..TemplateVariable::default()
        }
    }

    #[test]
    fn only_declared_variables_are_set_and_unfillable_required_ones_are_named() {
        let email = build(
            &invitation(),
            &InvitationSettings::default(),
            "Acme Inc",
            None,
            &["RecipientName".into(), "Unknown".into()],
        );
        let names: Vec<&str> = email
            .spec
            .variables
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["RecipientName"]);
        let template = [
            declared("RecipientName", true),
            declared("InviterEmail", true),
            declared("Promo", true),
            declared("Footer", false),
        ];
        assert_eq!(
            unfillable(&invitation(), None, &template),
            ["InviterEmail", "Promo"]
        );
        let inviter = InviterUser {
            display_name: None,
            email_address: Some("alice@example.com".into()),
        };
        assert_eq!(
            unfillable(&invitation(), Some(&inviter), &template),
            ["Promo"]
        );
    }

    #[test]
    fn the_email_carries_every_variable_and_is_owned_by_the_invitation() {
        let settings = InvitationSettings {
            url_template: "https://portal/{organization}/{namespace}/{invitation}".into(),
            ..InvitationSettings::default()
        };
        let inviter = InviterUser {
            display_name: Some("Alice Admin".into()),
            email_address: Some("alice@example.com".into()),
        };
        let email = build(
            &invitation(),
            &settings,
            "Acme Inc",
            Some(&inviter),
            &all_names(),
        );
        assert_eq!(email.metadata.name, Some(email_name(&invitation())));
        assert!(email_name(&invitation()).starts_with("userinvitation-welcome-bob-"));
        assert_eq!(email.spec.template_ref.name, settings.email_template);
        assert_eq!(
            email.spec.recipient.email_address.as_deref(),
            Some("Bob@Example.com")
        );
        let vars: Vec<(&str, &str)> = email
            .spec
            .variables
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(
            vars,
            [
                ("OrganizationDisplayName", "Acme Inc"),
                ("InviterDisplayName", "Alice Admin"),
                ("InviterEmail", "alice@example.com"),
                ("RecipientName", "Bob"),
                ("Roles", "editor, viewer"),
                ("ExpirationDate", "2026-12-01T00:00:00Z"),
                ("UserInvitationName", "welcome-bob"),
                (
                    "InvitationLink",
                    "https://portal/acme/organization-acme/welcome-bob"
                ),
            ]
        );
        let owner = &email.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("UserInvitation", "uid-1")
        );
    }

    #[test]
    fn an_unknown_inviter_falls_back_to_invited_by_and_names_to_the_address() {
        let mut bare = invitation();
        bare.spec.given_name = None;
        let email = build(
            &bare,
            &InvitationSettings::default(),
            "acme",
            None,
            &all_names(),
        );
        let get = |name: &str| {
            email
                .spec
                .variables
                .iter()
                .find(|v| v.name == name)
                .map(|v| v.value.clone())
        };
        assert_eq!(get("InviterDisplayName").as_deref(), Some("alice"));
        assert_eq!(get("InviterEmail"), None);
        assert_eq!(get("RecipientName").as_deref(), Some("Bob@Example.com"));
        assert_eq!(clamp("é".repeat(3000)).len(), 4096);
    }
}
