//! The `milo` access backend: the shapes Milo's IAM and resource manager use.
//!
//! - Access to an invitation: two `iam.miloapis.com` PolicyBindings in the invitation's namespace,
//!   `userinvitation-<name>-get-<hash>` and `…-accept-<hash>`, binding the configured get and
//!   accept roles (defaults `iam.miloapis.com-getinvitation` and
//!   `iam.miloapis.com-acceptinvitation` in `milo-system`) to the invitee (`{kind: User, name,
//!   uid}`) on that one UserInvitation (`resourceSelector.resourceRef`, pinned by uid). Owned by
//!   the invitation and labelled with it.
//! - Roles on acceptance: the `resourcemanager.miloapis.com` OrganizationMembership
//!   `member-<user>` in `organization-<org>` gets the invitation's roles merged into `spec.roles`
//!   (read, merge, write back under the read's resourceVersion, so a concurrent writer's roles
//!   are never dropped); created with those roles when absent. Not owned by the invitation: the
//!   membership outlives it.
//! - Organizations are `resourcemanager.miloapis.com` Organizations; the display name is their
//!   `kubernetes.io/display-name` annotation, else the organization's name.

use crate::controllers::invitation::access::organization_display_name;
use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::access::{
    AccessBackend, Invitee, apply, derived_name, invitation_labels, invitation_object_meta,
    invitation_object_name,
};
use crate::api::IAM_GROUP;
use crate::api::common::NameRef;
use crate::api::external::{
    MembershipRole, Organization, OrganizationMembership, OrganizationMembershipSpec,
    PolicyBinding, PolicyBindingSpec, PolicyRoleRef, PolicySubject, ResourceRef, ResourceSelector,
    membership_name,
};
use crate::api::iam::{UserInvitation, organization_namespace};
use crate::controllers::Error;
use crate::controllers::kubeapi::{self, Created};
use crate::controllers::names::MAX_NAME;

/// The `milo` backend.
pub struct MiloBackend {
    client: Client,
    get_role: String,
    accept_role: String,
    role_namespace: String,
}

/// The two grants on an invitation: (name suffix, which role).
const GRANTS: [&str; 2] = ["get", "accept"];

impl MiloBackend {
    /// A backend writing through `client`, granting `get_role` and `accept_role` (Milo IAM Roles
    /// in `role_namespace`) on invitations.
    pub fn new(
        client: Client,
        get_role: String,
        accept_role: String,
        role_namespace: String,
    ) -> Self {
        Self {
            client,
            get_role,
            accept_role,
            role_namespace,
        }
    }

    /// The PolicyBinding granting `which` (`get` or `accept`) on `invitation` to `invitee`.
    pub fn access_binding(
        &self,
        invitation: &UserInvitation,
        invitee: &Invitee,
        which: &str,
    ) -> PolicyBinding {
        let role = if which == "get" {
            &self.get_role
        } else {
            &self.accept_role
        };
        PolicyBinding {
            metadata: invitation_object_meta(
                invitation,
                invitation_object_name(invitation, Some(which)),
            ),
            spec: PolicyBindingSpec {
                role_ref: PolicyRoleRef {
                    name: role.clone(),
                    namespace: Some(self.role_namespace.clone()),
                },
                subjects: vec![PolicySubject {
                    kind: "User".into(),
                    name: invitee.name.clone(),
                    uid: Some(invitee.uid.clone()).filter(|u| !u.is_empty()),
                    namespace: None,
                }],
                resource_selector: ResourceSelector {
                    resource_ref: Some(ResourceRef {
                        api_group: IAM_GROUP.into(),
                        kind: "UserInvitation".into(),
                        name: invitation.name_any(),
                        namespace: invitation.namespace(),
                        uid: invitation.uid(),
                    }),
                },
            },
        }
    }

    async fn merge_roles(&self, invitation: &UserInvitation, user: &str) -> Result<(), Error> {
        let organization = &invitation.spec.organization_ref.name;
        let namespace = organization_namespace(organization);
        let api: Api<OrganizationMembership> = Api::namespaced(self.client.clone(), &namespace);
        let name = membership_object_name(user);
        let wanted: Vec<MembershipRole> = invitation
            .spec
            .roles
            .iter()
            .map(|r| MembershipRole {
                name: r.name.clone(),
                namespace: r.namespace.clone().filter(|n| !n.is_empty()),
            })
            .collect();
        // Two rounds: a membership created between our read and our create is merged into.
        for _ in 0..2 {
            match kubeapi::get(&api, &name).await? {
                Some(existing) => {
                    let Some(roles) = merged(&existing.spec.roles, &wanted) else {
                        return Ok(());
                    };
                    let patch = json!({
                        "metadata": {"resourceVersion": existing.resource_version()},
                        "spec": {"roles": roles},
                    });
                    kubeapi::merge_patch(&api, &name, &patch).await?;
                    return Ok(());
                }
                None => {
                    let membership = OrganizationMembership {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            namespace: Some(namespace.clone()),
                            labels: Some(invitation_labels(invitation)),
                            ..ObjectMeta::default()
                        },
                        spec: OrganizationMembershipSpec {
                            organization_ref: NameRef {
                                name: organization.clone(),
                            },
                            user_ref: NameRef { name: user.into() },
                            roles: merged(&[], &wanted).unwrap_or_default(),
                        },
                    };
                    if kubeapi::create(&api, &membership).await? == Created::New {
                        return Ok(());
                    }
                }
            }
        }
        Err(Error::Invalid(format!(
            "OrganizationMembership {namespace}/{name} keeps changing; retrying"
        )))
    }
}

/// `member-<user>`, Milo's name for a membership, hashed only if a user name is too long for it.
pub fn membership_object_name(user: &str) -> String {
    let plain = membership_name(user);
    if plain.len() <= MAX_NAME {
        plain
    } else {
        derived_name(&["member", user], &[user])
    }
}

/// `existing` with every role of `wanted` it lacks appended, in order; `None` when nothing is
/// missing (no write needed). Existing roles are never dropped or reordered.
pub fn merged(
    existing: &[MembershipRole],
    wanted: &[MembershipRole],
) -> Option<Vec<MembershipRole>> {
    let mut roles = existing.to_vec();
    for role in wanted {
        if !roles.contains(role) {
            roles.push(role.clone());
        }
    }
    (roles.len() != existing.len()).then_some(roles)
}

impl AccessBackend for MiloBackend {
    fn name(&self) -> &'static str {
        "milo"
    }

    fn organization<'a>(
        &'a self,
        organization: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        organization_display_name::<Organization>(&self.client, organization, organization).boxed()
    }

    fn missing_roles(&self, _invitation: &UserInvitation) -> Vec<String> {
        // Milo IAM Roles are not in the view; Milo's membership controller reports roles it
        // cannot bind on the OrganizationMembership.
        Vec::new()
    }

    fn grant<'a>(
        &'a self,
        invitation: &'a UserInvitation,
        invitee: &'a Invitee,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let namespace = invitation.namespace().unwrap_or_default();
            let api: Api<PolicyBinding> = Api::namespaced(self.client.clone(), &namespace);
            for which in GRANTS {
                let binding = self.access_binding(invitation, invitee, which);
                apply(&api, &binding.name_any(), &binding).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn revoke<'a>(&'a self, invitation: &'a UserInvitation) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let namespace = invitation.namespace().unwrap_or_default();
            let api: Api<PolicyBinding> = Api::namespaced(self.client.clone(), &namespace);
            for which in GRANTS {
                kubeapi::delete(&api, &invitation_object_name(invitation, Some(which))).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn assign_roles<'a>(
        &'a self,
        invitation: &'a UserInvitation,
        invitee: &'a Invitee,
    ) -> BoxFuture<'a, Result<(), Error>> {
        self.merge_roles(invitation, &invitee.name).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, namespace: Option<&str>) -> MembershipRole {
        MembershipRole {
            name: name.into(),
            namespace: namespace.map(Into::into),
        }
    }

    #[test]
    fn merging_keeps_existing_roles_and_adds_only_missing_ones() {
        let existing = [role("owner", None), role("viewer", Some("milo-system"))];
        assert_eq!(merged(&existing, &[role("owner", None)]), None);
        assert_eq!(
            merged(&existing, &[role("viewer", None), role("owner", None)]),
            Some(vec![
                role("owner", None),
                role("viewer", Some("milo-system")),
                role("viewer", None)
            ])
        );
        assert_eq!(
            merged(&[], &[role("a", None), role("a", None)]),
            Some(vec![role("a", None)])
        );
    }

    #[test]
    fn membership_names_follow_milo() {
        assert_eq!(membership_object_name("u1"), "member-u1");
        assert!(membership_object_name(&"u".repeat(253)).len() <= MAX_NAME);
    }
}
