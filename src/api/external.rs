//! Typed shapes of kinds milo-webhook uses but does not own: Milo's IAM PolicyBinding and its
//! resource manager's Organization and OrganizationMembership. Their CRDs belong to Milo, so these
//! types are never rendered into `manifests/crds/` (they are not in [`crate::crds::all`]); they
//! exist so the invitation controller's `milo` access backend reads and writes them with the field
//! names Milo's API server expects. Only the fields the controller touches are modelled; unknown
//! fields are ignored when reading.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::NameRef;

/// The annotation Milo keeps an object's human-readable name in (Organizations, Projects, …).
pub const DISPLAY_NAME_ANNOTATION: &str = "kubernetes.io/display-name";

/// The resource manager's API group.
pub const RESOURCE_MANAGER_GROUP: &str = "resourcemanager.miloapis.com";

/// The value of the display-name annotation, when an object carries a non-empty one.
pub fn display_name(annotations: Option<&BTreeMap<String, String>>) -> Option<&str> {
    annotations?
        .get(DISPLAY_NAME_ANNOTATION)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
}

/// Binds a Milo IAM role to subjects on one resource (or a kind of resource): how Milo grants
/// an invitee access to their own invitation.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "iam.miloapis.com",
    version = "v1alpha1",
    kind = "PolicyBinding",
    plural = "policybindings",
    namespaced,
    doc = "Milo IAM: binds a role to subjects on a resource."
)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBindingSpec {
    /// The Milo IAM Role granted.
    pub role_ref: PolicyRoleRef,
    /// Who is granted the role.
    pub subjects: Vec<PolicySubject>,
    /// What the role is granted on.
    pub resource_selector: ResourceSelector,
}

/// A Milo IAM Role, which lives in a namespace (`milo-system` for the platform's roles).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct PolicyRoleRef {
    /// Role name.
    pub name: String,
    /// Role namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A subject of a PolicyBinding. Milo names Users by name and pins them by uid, so a User that
/// is deleted and recreated under the same name does not inherit the grant.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct PolicySubject {
    /// `User` (or `Group`).
    pub kind: String,
    /// The subject's name.
    pub name: String,
    /// The subject's `metadata.uid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Namespace, for namespaced subject kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a PolicyBinding applies to: here always one named resource.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSelector {
    /// The one resource the role is granted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_ref: Option<ResourceRef>,
}

/// A reference to one object, pinned by uid so a recreated object of the same name is not
/// covered.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    /// API group of the object.
    pub api_group: String,
    /// Kind of the object.
    pub kind: String,
    /// Name of the object.
    pub name: String,
    /// Namespace of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.uid` of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// An organization in Milo's resource manager. Cluster-scoped; its human-readable name is the
/// `kubernetes.io/display-name` annotation (see [`display_name`]), its objects live in the
/// namespace `organization-<name>`.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "resourcemanager.miloapis.com",
    version = "v1alpha1",
    kind = "Organization",
    plural = "organizations",
    doc = "Milo resource manager: an organization."
)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationSpec {
    /// `Personal` or `Standard`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// A user's membership of an organization and the roles it carries, `member-<user>` in the
/// namespace `organization-<org>`; Milo's own controllers turn it into role bindings.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "resourcemanager.miloapis.com",
    version = "v1alpha1",
    kind = "OrganizationMembership",
    plural = "organizationmemberships",
    namespaced,
    doc = "Milo resource manager: a user's membership of an organization."
)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationMembershipSpec {
    /// The organization.
    pub organization_ref: NameRef,
    /// The member.
    pub user_ref: NameRef,
    /// Roles the member holds in the organization.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<MembershipRole>,
}

/// A role held through an OrganizationMembership.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct MembershipRole {
    /// Role name.
    pub name: String,
    /// Role namespace, when not the organization's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The name of `user`'s membership object, as Milo names it.
pub fn membership_name(user: &str) -> String {
    format!("member-{user}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn shapes_match_milo() {
        assert_eq!(PolicyBinding::api_version(&()), "iam.miloapis.com/v1alpha1");
        assert_eq!(PolicyBinding::plural(&()), "policybindings");
        assert_eq!(
            Organization::api_version(&()),
            "resourcemanager.miloapis.com/v1alpha1"
        );
        let organization: Organization = serde_json::from_value(serde_json::json!({
            "apiVersion": "resourcemanager.miloapis.com/v1alpha1", "kind": "Organization",
            "metadata": {"name": "acme", "annotations": {"kubernetes.io/display-name": "Acme"}},
            "spec": {"type": "Standard"}, "status": {"whatever": 1}
        }))
        .unwrap();
        assert_eq!(
            display_name(organization.metadata.annotations.as_ref()),
            Some("Acme")
        );
        let membership = OrganizationMembership::new(
            &membership_name("u1"),
            OrganizationMembershipSpec {
                organization_ref: NameRef {
                    name: "acme".into(),
                },
                user_ref: NameRef { name: "u1".into() },
                roles: vec![MembershipRole {
                    name: "viewer".into(),
                    namespace: None,
                }],
            },
        );
        let json = serde_json::to_value(&membership).unwrap();
        assert_eq!(json["spec"]["organizationRef"]["name"], "acme");
        assert_eq!(json["spec"]["userRef"]["name"], "u1");
        assert_eq!(
            json["spec"]["roles"][0],
            serde_json::json!({"name": "viewer"})
        );
    }
}
