//! Shapes shared by several kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A namespaced reference to another object, written out in full because memberships may live in
/// a different namespace than the contact or group they join.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the referenced object.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
}

/// A reference to an object by name only, for cluster-scoped targets.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct NameRef {
    /// Name of the referenced object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The provider an object has been mirrored to, and the ID it has there.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct ProviderRef {
    /// Provider name.
    pub name: ProviderName,
    /// Identifier of the object in the provider.
    #[schemars(length(max = 256))]
    pub id: String,
}

/// Email providers objects can be mirrored to.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ProviderName {
    /// Resend.
    #[default]
    Resend,
    /// Loops.
    Loops,
}

/// Status shared by contacts, groups and memberships: conditions plus provider IDs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSyncStatus {
    /// Standard conditions; `Ready` reports provider sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where this object has been mirrored, one entry per provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub providers: Vec<ProviderRef>,
    /// Deprecated: the first provider's ID, kept for clients written before `providers`.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
}

/// Names provider sync writes on the objects it mirrors: shared by the view (which reads them
/// back) and the controllers (which write them).
pub mod sync {
    /// The finalizer provider sync puts on Contacts, ContactGroups and memberships, so that
    /// deleting one removes its counterpart at the provider first.
    pub const FINALIZER: &str = "notification.miloapis.com/resend-sync";
    /// Condition type of a Contact mirrored to Resend.
    pub const CONTACT_READY: &str = "ResendContactReady";
    /// Condition type of a ContactGroup mirrored to a Resend segment.
    pub const GROUP_READY: &str = "ResendContactGroupReady";
    /// Condition type of a membership mirrored to a segment membership.
    pub const MEMBERSHIP_READY: &str = "ResendContactGroupMembershipReady";
    /// Condition type recording a person's opt-out reported by the provider. Its
    /// `observedGeneration` is set once the removals it asks for have been created.
    pub const UNSUBSCRIBED: &str = "Unsubscribed";
    /// Condition type marking a Contact's address as suppressed (hard bounce or complaint):
    /// nothing is sent to it while the condition is True. Only an operator removes it.
    pub const SUPPRESSED: &str = "Suppressed";
}
