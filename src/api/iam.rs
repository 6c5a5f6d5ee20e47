//! `iam.miloapis.com/v1alpha1`: users and invitations.
// kube's `printcolumn(...)` and `selectable` attributes repeat keys by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{NameRef, conditions};

/// The label that marks a RoleBinding in an organization's namespace as making its subjects
/// members of the organization (the `rbac` access backend's notion of membership).
pub const ORGANIZATION_MEMBERSHIP_LABEL: &str = "iam.miloapis.com/organization-membership";

/// The namespace an organization's objects (and its invitations) live in.
pub fn organization_namespace(organization: &str) -> String {
    format!("organization-{organization}")
}

/// A person who can sign in; the name is the UID the API server authenticates them with.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "iam.miloapis.com",
    version = "v1alpha1",
    kind = "User",
    plural = "users",
    status = "UserStatus",
    doc = "A person who can sign in to Milo.",
    annotation("discovery.miloapis.com/parent-contexts", "Platform,User"),
    selectable = ".status.platformAccess",
    selectable = ".spec.email",
    printcolumn(name = "Email", type_ = "string", json_path = ".spec.email"),
    printcolumn(name = "Given Name", type_ = "string", json_path = ".spec.givenName"),
    printcolumn(name = "Family Name", type_ = "string", json_path = ".spec.familyName"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Platform Access",
        type_ = "string",
        json_path = ".status.platformAccess"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    /// The user's email address.
    #[schemars(length(min = 3, max = 254))]
    pub email: String,
    /// Given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub family_name: Option<String>,
}

/// Status of a user, as Milo's IAM writes it.
// The fields beyond `conditions` are declared so that our CRD keeps what Milo writes; they are
// strings, not enums, so a value a newer Milo adds still reads.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::user")]
    pub conditions: Vec<Condition>,
    /// URL of the user's avatar, from their identity provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "uri"))]
    pub avatar_url: Option<String>,
    /// The identity provider the user last signed in with: `github`, `google`, `passkey` or
    /// `email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("allOf" = [
        {"enum": ["github", "google", "passkey", "email"]},
        {"enum": ["github", "google", "passkey", "email"]}
    ]))]
    pub last_login_provider: Option<String>,
    /// Whether the user may use the platform: `Pending`, `Approved`, `Rejected` or `Suspended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("allOf" = [
        {"enum": ["Pending", "Approved", "Rejected", "Suspended"]},
        {"enum": ["Pending", "Approved", "Rejected", "Suspended"]}
    ]))]
    pub platform_access: Option<String>,
    /// `Active` (the default) or `Inactive`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Active", "Inactive"], "default" = "Active"))]
    pub state: Option<String>,
}

/// An invitation for someone, by email, to join an organization with some roles.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "iam.miloapis.com",
    version = "v1alpha1",
    kind = "UserInvitation",
    plural = "userinvitations",
    namespaced,
    status = "UserInvitationStatus",
    doc = "An invitation to join an organization.",
    annotation("discovery.miloapis.com/parent-contexts", "Organization,User"),
    selectable = ".status.inviteeUser.name",
    printcolumn(name = "Email", type_ = "string", json_path = ".spec.email"),
    printcolumn(
        name = "Expiration Date",
        type_ = "string",
        json_path = ".spec.expirationDate"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(name = "State", type_ = "string", json_path = ".spec.state")
)]
#[serde(rename_all = "camelCase")]
pub struct UserInvitationSpec {
    /// The organization the invitee is invited to.
    #[x_kube(validation = Rule::new("type(oldSelf) == null_type || self == oldSelf")
        .message("organizationRef type is immutable"))]
    pub organization_ref: NameRef,
    /// The invitee's email address.
    #[x_kube(validation = Rule::new("type(oldSelf) == null_type || self == oldSelf")
        .message("email type is immutable"))]
    #[schemars(length(min = 3, max = 254))]
    pub email: String,
    /// The invitee's given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(oldSelf) == null_type || self == oldSelf")
        .message("givenName type is immutable"))]
    #[schemars(length(max = 256))]
    pub given_name: Option<String>,
    /// The invitee's family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(oldSelf) == null_type || self == oldSelf")
        .message("familyName type is immutable"))]
    #[schemars(length(max = 256))]
    pub family_name: Option<String>,
    /// Roles granted on acceptance.
    #[x_kube(validation = Rule::new("type(oldSelf) == null_type || self == oldSelf")
        .message("roles type is immutable"))]
    #[schemars(length(min = 1, max = 100))]
    pub roles: Vec<RoleRef>,
    /// The user who sent the invitation; set by the mutating webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(oldSelf) == null_type || self == oldSelf")
        .message("invitedBy type is immutable"))]
    pub invited_by: Option<NameRef>,
    /// When the invitation stops being acceptable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("type(oldSelf) == null_type || self == oldSelf")
        .message("expirationDate type is immutable"))]
    pub expiration_date: Option<Time>,
    /// Pending until the invitee accepts or declines.
    #[x_kube(validation = Rule::new("type(oldSelf) == null_type || oldSelf == 'Pending' || self == oldSelf")
        .message("state can only transition from Pending to another state and is immutable afterwards"))]
    pub state: InvitationState,
}

/// A role to grant, in the organization's namespace unless another is named.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct RoleRef {
    /// Role name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace the role lives in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

/// Where an invitation stands from the invitee's side.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum InvitationState {
    /// Waiting for the invitee.
    #[default]
    Pending,
    /// The invitee joined.
    Accepted,
    /// The invitee said no.
    Declined,
}

/// What the controller knows about an invitation.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserInvitationStatus {
    /// `Ready`, `Pending` and `Expired`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::user_invitation")]
    pub conditions: Vec<Condition>,
    /// The organization, as the invitee sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<InvitationOrganization>,
    /// The user who invited, as the invitee sees them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inviter_user: Option<InviterUser>,
    /// The invitee's User, once they have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitee_user: Option<NameRef>,
    /// When the invitee accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<Time>,
}

/// The organization's display details.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InvitationOrganization {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// The inviter's display details.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InviterUser {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
}
