//! What a reconcile reads before it plans: the invitee from the view, and, while the invitation
//! Email is still to be sent, the organization (through the access backend) and the inviter User
//! from the API server, and the EmailTemplate's declared variables from the view. Also which invitations a User change concerns.

use std::sync::Arc;

use jiff::Timestamp;
use kube::api::Api;
use kube::{Resource, ResourceExt};

use super::InvitationContext;
use super::access::Invitee;
use super::plan::{Introduction, Observed, answered_at, needs_introduction};
use crate::api::iam::{InvitationState, InviterUser, User, UserInvitation};
use crate::api::notification::{TemplateVariable, TemplateVariableType};
use crate::controllers::kubeapi;
use crate::controllers::{Error, ObjectKey};
use crate::view::Store;

/// The invitations a change to the User `user` may concern: those for its email address (it may
/// have just been created, or changed its address to theirs) and those it is recorded as the
/// invitee of (it may have been deleted, or changed its address away).
pub fn invitations_for_user(
    view: &Store,
    invitations: &[Arc<UserInvitation>],
    user: &str,
) -> Vec<ObjectKey> {
    let email = view.user(user).map(|u| u.email.to_lowercase());
    invitations
        .iter()
        .filter(|i| {
            email
                .as_deref()
                .is_some_and(|e| i.spec.email.to_lowercase() == e)
                || i.status
                    .as_ref()
                    .and_then(|s| s.invitee_user.as_ref())
                    .is_some_and(|r| r.name == user)
        })
        .map(|i| ObjectKey::new(&i.namespace().unwrap_or_default(), &i.name_any()))
        .collect()
}

/// The invitee: the User with the invitation's email address (case-insensitive). Should several
/// share it, the one already recorded wins, else the first by name, so the choice is stable.
pub fn invitee(view: &Store, invitation: &UserInvitation) -> Option<Invitee> {
    let mut names = view.users_by_email(&invitation.spec.email);
    names.sort_unstable();
    let recorded = invitation
        .status
        .as_ref()
        .and_then(|s| s.invitee_user.as_ref())
        .map(|r| r.name.as_str());
    let name = recorded
        .filter(|r| names.contains(r))
        .or(names.first().copied())?;
    let user = view.user(name)?;
    Some(Invitee {
        name: user.name.to_owned(),
        uid: user.uid.to_owned(),
    })
}

/// Reads what the plan needs: the invitee from the view; when the Email is still to be sent,
/// the organization (through the backend), the inviter User and the EmailTemplate from the API.
pub async fn observe(
    invitation: &UserInvitation,
    ctx: &InvitationContext,
    now: Timestamp,
) -> Result<Observed, Error> {
    if invitation.meta().deletion_timestamp.is_some() {
        return Ok(Observed::default());
    }
    let invitee = invitee(&ctx.shared.view.read(), invitation);
    let awaiting_roles = invitation.spec.state == InvitationState::Accepted
        && invitation
            .status
            .as_ref()
            .is_none_or(|s| super::status::accepted_at(s).is_none());
    let missing_roles = if awaiting_roles {
        ctx.backend.missing_roles(invitation)
    } else {
        Vec::new()
    };
    let introduction = if needs_introduction(invitation, now) {
        Some(introduce(invitation, ctx).await?)
    } else {
        None
    };
    Ok(Observed {
        invitee,
        introduction,
        answered_at: answered_at(invitation),
        missing_roles,
    })
}

async fn introduce(
    invitation: &UserInvitation,
    ctx: &InvitationContext,
) -> Result<Introduction, Error> {
    let template = ctx.settings.email_template.clone();
    let organization = ctx
        .backend
        .organization(&invitation.spec.organization_ref.name)
        .await?;
    if organization.is_none() {
        return Ok(Introduction {
            organization,
            template,
            ..Introduction::default()
        });
    }
    let inviter = match &invitation.spec.invited_by {
        Some(by) => Some(inviter(ctx, &by.name).await?),
        None => None,
    };
    // From the view (which keeps each template's declared variables), not the API server: the
    // Email is built with exactly the variables the template declares.
    let template_variables = ctx
        .shared
        .view
        .read()
        .email_template(&template)
        .map(|vars| {
            vars.iter()
                .map(|v| TemplateVariable {
                    name: v.name.to_owned(),
                    required: v.required,
                    type_: if v.url {
                        TemplateVariableType::Url
                    } else {
                        TemplateVariableType::String
                    },
                })
                .collect()
        });
    Ok(Introduction {
        organization,
        inviter,
        template,
        template_variables,
    })
}

/// The inviter as the invitee sees them: the User's given and family names (else its name) and
/// address; an inviter who is not a User (an operator) is shown by username.
async fn inviter(ctx: &InvitationContext, name: &str) -> Result<InviterUser, Error> {
    let users: Api<User> = Api::all(ctx.shared.client.clone());
    let Some(user) = kubeapi::get(&users, name).await? else {
        return Ok(InviterUser {
            display_name: Some(name.to_owned()),
            email_address: None,
        });
    };
    let names: Vec<&str> = [&user.spec.given_name, &user.spec.family_name]
        .into_iter()
        .flatten()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    Ok(InviterUser {
        display_name: Some(if names.is_empty() {
            name.to_owned()
        } else {
            names.join(" ")
        }),
        email_address: Some(user.spec.email).filter(|e| !e.is_empty()),
    })
}
