//! The `rbac` access backend: plain Kubernetes RBAC, so invitations work on any cluster.
//!
//! - Access to an invitation: a Role `userinvitation-<name>-<hash>` allowing `get`, `update` and
//!   `patch` on that one UserInvitation (`resourceNames: [<name>]`), and a RoleBinding of the same
//!   name to the invitee's username, both in the invitation's namespace, owned by the invitation
//!   and labelled with it.
//! - Roles on acceptance: one RoleBinding per requested role in the organization's namespace,
//!   labelled `iam.miloapis.com/organization-membership` (which is what makes the user a member, as
//!   the admission rules read it) and with the invitation's label, but not owned by it: the
//!   membership outlives the invitation, which is deleted after the retention period.
//! - Organizations are the namespaces `organization-<org>`; the display name is the namespace's
//!   `kubernetes.io/display-name` annotation, else the organization's name.

use crate::controllers::invitation::access::organization_display_name;
use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::access::{
    AccessBackend, INVITATION_LABEL, Invitee, apply, derived_name, invitation_object_meta,
    invitation_object_name,
};
use crate::api::IAM_GROUP;
use crate::api::iam::{ORGANIZATION_MEMBERSHIP_LABEL, UserInvitation, organization_namespace};
use crate::controllers::Error;
use crate::controllers::kubeapi::{self, Created};
use crate::controllers::names::label_safe;
use crate::view::{ClusterView, Store};

/// The RBAC API group.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The `rbac` backend: RBAC objects through `client`, role kinds read from `view`.
pub struct RbacBackend {
    client: Client,
    view: Arc<ClusterView>,
}

/// What one requested role resolves to in RBAC terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// `Role` (in the organization's namespace) or `ClusterRole`.
    pub kind: &'static str,
    /// The role's name.
    pub role: String,
}

impl RbacBackend {
    /// A backend writing through `client` and resolving role kinds in `view`.
    pub fn new(client: Client, view: Arc<ClusterView>) -> Self {
        Self { client, view }
    }
}

/// Resolves every role of `invitation`: a Role in the organization's namespace when one exists
/// (and the role names no other namespace), else a ClusterRole of that name. A RoleBinding cannot
/// reference a Role in another namespace, so such a role resolves only if a ClusterRole of the same
/// name exists. Unresolvable roles come back described in `Err`.
pub fn resolve(store: &Store, invitation: &UserInvitation) -> Result<Vec<Binding>, Vec<String>> {
    let namespace = organization_namespace(&invitation.spec.organization_ref.name);
    let mut bindings = Vec::new();
    let mut missing = Vec::new();
    for role in &invitation.spec.roles {
        let role_namespace = role
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(&namespace);
        let kind = if role_namespace == namespace && store.role_exists(&namespace, &role.name) {
            "Role"
        } else if store.cluster_role_exists(&role.name) {
            "ClusterRole"
        } else if role_namespace != namespace {
            missing.push(format!(
                "{:?} (a Role in namespace {role_namespace:?} cannot be bound in {namespace:?}, and there is no ClusterRole of that name)",
                role.name
            ));
            continue;
        } else {
            missing.push(format!(
                "{:?} (no Role in {namespace:?} and no ClusterRole of that name)",
                role.name
            ));
            continue;
        };
        bindings.push(Binding {
            kind,
            role: role.name.clone(),
        });
    }
    if missing.is_empty() {
        Ok(bindings)
    } else {
        Err(missing)
    }
}

/// The Role giving the invitee access to exactly one invitation.
pub fn access_role(invitation: &UserInvitation) -> Role {
    Role {
        metadata: invitation_object_meta(invitation, invitation_object_name(invitation, None)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![IAM_GROUP.into()]),
            resources: Some(vec!["userinvitations".into()]),
            resource_names: Some(vec![invitation.name_any()]),
            verbs: vec!["get".into(), "update".into(), "patch".into()],
            ..PolicyRule::default()
        }]),
    }
}

/// The RoleBinding of [`access_role`] to the invitee.
pub fn access_binding(invitation: &UserInvitation, invitee: &Invitee) -> RoleBinding {
    let name = invitation_object_name(invitation, None);
    RoleBinding {
        metadata: invitation_object_meta(invitation, name.clone()),
        role_ref: RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: "Role".into(),
            name,
        },
        subjects: Some(vec![user_subject(&invitee.name)]),
    }
}

fn user_subject(user: &str) -> Subject {
    Subject {
        api_group: Some(RBAC_GROUP.into()),
        kind: "User".into(),
        name: user.into(),
        namespace: None,
    }
}

/// The RoleBinding making `user` hold `binding` in the organization's namespace. Named from the
/// user and the role (not the invitation), so a role the user already holds this way is not bound
/// twice.
pub fn membership_binding(
    invitation: &UserInvitation,
    user: &str,
    binding: &Binding,
) -> RoleBinding {
    let namespace = organization_namespace(&invitation.spec.organization_ref.name);
    let name = derived_name(
        &["member", user, &binding.role],
        &[&namespace, user, binding.kind, &binding.role],
    );
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels: Some(BTreeMap::from([
                (ORGANIZATION_MEMBERSHIP_LABEL.to_owned(), "true".to_owned()),
                (
                    INVITATION_LABEL.to_owned(),
                    label_safe(&invitation.name_any()),
                ),
            ])),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: binding.kind.into(),
            name: binding.role.clone(),
        },
        subjects: Some(vec![user_subject(user)]),
    }
}

impl AccessBackend for RbacBackend {
    fn name(&self) -> &'static str {
        "rbac"
    }

    fn organization<'a>(
        &'a self,
        organization: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>> {
        async move {
            let namespace = organization_namespace(organization);
            organization_display_name::<Namespace>(&self.client, &namespace, organization).await
        }
        .boxed()
    }

    fn missing_roles(&self, invitation: &UserInvitation) -> Vec<String> {
        resolve(&self.view.read(), invitation)
            .err()
            .unwrap_or_default()
    }

    fn grant<'a>(
        &'a self,
        invitation: &'a UserInvitation,
        invitee: &'a Invitee,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let namespace = invitation.namespace().unwrap_or_default();
            let name = invitation_object_name(invitation, None);
            let roles: Api<Role> = Api::namespaced(self.client.clone(), &namespace);
            apply(&roles, &name, &access_role(invitation)).await?;
            let bindings: Api<RoleBinding> = Api::namespaced(self.client.clone(), &namespace);
            apply(&bindings, &name, &access_binding(invitation, invitee)).await?;
            Ok(())
        }
        .boxed()
    }

    fn revoke<'a>(&'a self, invitation: &'a UserInvitation) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let namespace = invitation.namespace().unwrap_or_default();
            let name = invitation_object_name(invitation, None);
            let bindings: Api<RoleBinding> = Api::namespaced(self.client.clone(), &namespace);
            kubeapi::delete(&bindings, &name).await?;
            let roles: Api<Role> = Api::namespaced(self.client.clone(), &namespace);
            kubeapi::delete(&roles, &name).await?;
            Ok(())
        }
        .boxed()
    }

    fn assign_roles<'a>(
        &'a self,
        invitation: &'a UserInvitation,
        invitee: &'a Invitee,
    ) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let resolved = resolve(&self.view.read(), invitation).map_err(|missing| {
                Error::Invalid(format!("cannot assign roles: {}", missing.join("; ")))
            })?;
            let namespace = organization_namespace(&invitation.spec.organization_ref.name);
            let api: Api<RoleBinding> = Api::namespaced(self.client.clone(), &namespace);
            for binding in &resolved {
                let object = membership_binding(invitation, &invitee.name, binding);
                if kubeapi::create(&api, &object).await? == Created::AlreadyExisted {
                    tracing::debug!(
                        binding = object.metadata.name.as_deref(),
                        "role already bound"
                    );
                }
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::NameRef;
    use crate::api::iam::{RoleRef as InvitationRole, UserInvitationSpec};

    fn invitation(roles: &[(&str, Option<&str>)]) -> UserInvitation {
        let mut invitation = UserInvitation::new(
            "inv",
            UserInvitationSpec {
                organization_ref: NameRef {
                    name: "acme".into(),
                },
                roles: roles
                    .iter()
                    .map(|(name, namespace)| InvitationRole {
                        name: (*name).into(),
                        namespace: namespace.map(Into::into),
                    })
                    .collect(),
                ..UserInvitationSpec::default()
            },
        );
        invitation.metadata.namespace = Some("organization-acme".into());
        invitation.metadata.uid = Some("uid-1".into());
        invitation
    }

    fn store() -> Store {
        let mut store = Store::default();
        let role = |ns: &str, name: &str| Role {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..ObjectMeta::default()
            },
            rules: None,
        };
        store.apply_role(&role("organization-acme", "editor"));
        store.apply_role(&role("milo-system", "auditor"));
        store.apply_cluster_role(&k8s_openapi::api::rbac::v1::ClusterRole {
            metadata: ObjectMeta {
                name: Some("viewer".into()),
                ..ObjectMeta::default()
            },
            ..Default::default()
        });
        store
    }

    #[test]
    fn roles_resolve_to_a_local_role_or_a_cluster_role() {
        let store = store();
        let resolved = resolve(
            &store,
            &invitation(&[("editor", None), ("viewer", Some("organization-acme"))]),
        )
        .unwrap();
        assert_eq!(
            resolved,
            [
                Binding {
                    kind: "Role",
                    role: "editor".into()
                },
                Binding {
                    kind: "ClusterRole",
                    role: "viewer".into()
                }
            ]
        );
        let missing = resolve(
            &store,
            &invitation(&[
                ("gone", None),
                ("auditor", Some("milo-system")),
                ("editor", None),
            ]),
        )
        .unwrap_err();
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[1].contains("cannot be bound"), "{missing:?}");
    }

    #[test]
    fn membership_bindings_are_labelled_and_not_owned() {
        let binding = membership_binding(
            &invitation(&[("editor", None)]),
            "u1",
            &Binding {
                kind: "Role",
                role: "editor".into(),
            },
        );
        let labels = binding.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[ORGANIZATION_MEMBERSHIP_LABEL], "true");
        assert_eq!(labels[INVITATION_LABEL], "inv");
        assert!(binding.metadata.owner_references.is_none());
        assert!(
            binding
                .metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with("member-u1-editor-")
        );
    }
}
