//! Shapes shared by several kinds.

use std::fmt::Debug;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator};
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
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
pub enum ProviderName {
    /// Resend.
    #[default]
    Resend,
    /// Loops.
    Loops,
}

/// Status of a contact or group: conditions plus provider IDs.
// `K` names the kind, whose CRD defaults the conditions to its own placeholder; the wire shape is
// the same.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSyncStatus<K: SyncedKind> {
    /// Standard conditions; `Ready` reports provider sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "K::conditions_schema")]
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
    /// Not on the wire: which kind's status this is.
    #[serde(skip)]
    #[schemars(skip)]
    pub kind: PhantomData<K>,
}

/// The kind a [`ProviderSyncStatus`] belongs to.
pub trait SyncedKind: Clone + Debug + Default + PartialEq + JsonSchema {
    /// The schema of the kind's `status.conditions`.
    fn conditions_schema(generator: &mut SchemaGenerator) -> Schema;
}

/// [`ProviderSyncStatus`] of a Contact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ContactKind;

impl SyncedKind for ContactKind {
    fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
        conditions::contact(generator)
    }
}

/// [`ProviderSyncStatus`] of a ContactGroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct ContactGroupKind;

impl SyncedKind for ContactGroupKind {
    fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
        conditions::contact_group(generator)
    }
}

/// The schema of `status.conditions`, one function per kind (for `#[schemars(schema_with)]`):
/// `metav1.Condition` with the validations controller-gen writes for it, a list map keyed by
/// `type`, and the placeholder condition Milo's CRD for the kind defaults the list to. The API
/// server enforces all of it, so every condition written must fit: `reason` CamelCase (no
/// spaces, dots or dashes), `type` a qualified name, `message` at most 32768 characters.
pub mod conditions {
    use schemars::{Schema, SchemaGenerator, json_schema};
    use serde_json::json;

    /// Milo's `reason` pattern (metav1.Condition's).
    pub const REASON_PATTERN: &str = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";
    /// Milo's `type` pattern (metav1.Condition's).
    pub const TYPE_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$";
    /// The longest `message` the API server accepts.
    pub const MESSAGE_MAX_LENGTH: usize = 32768;

    /// `status.conditions` defaulting to one placeholder condition (`status: Unknown`), as
    /// Milo's CRDs declare it.
    fn with_placeholder(type_: &str, reason: &str, message: &str) -> Schema {
        let mut schema = without_placeholder();
        schema.insert(
            "default".into(),
            json!([{
                "lastTransitionTime": "1970-01-01T00:00:00Z",
                "message": message,
                "reason": reason,
                "status": "Unknown",
                "type": type_,
            }]),
        );
        schema
    }

    fn without_placeholder() -> Schema {
        json_schema!({
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": {
                "description": "Condition contains details for one aspect of the current state of this API Resource.",
                "type": "object",
                "required": ["lastTransitionTime", "message", "reason", "status", "type"],
                "properties": {
                    "lastTransitionTime": {
                        "description": "lastTransitionTime is the last time the condition transitioned from one status to another. This should be when the underlying condition changed.  If that is not known, then using the time when the API field changed is acceptable.",
                        "type": "string",
                        "format": "date-time",
                    },
                    "message": {
                        "description": "message is a human readable message indicating details about the transition. This may be an empty string.",
                        "type": "string",
                        "maxLength": MESSAGE_MAX_LENGTH,
                    },
                    "observedGeneration": {
                        "description": "observedGeneration represents the .metadata.generation that the condition was set based upon. For instance, if .metadata.generation is currently 12, but the .status.conditions[x].observedGeneration is 9, the condition is out of date with respect to the current state of the instance.",
                        "type": "integer",
                        "format": "int64",
                        "minimum": 0,
                    },
                    "reason": {
                        "description": "reason contains a programmatic identifier indicating the reason for the condition's last transition. Producers of specific condition types may define expected values and meanings for this field, and whether the values are considered a guaranteed API. The value should be a CamelCase string. This field may not be empty.",
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 1024,
                        "pattern": REASON_PATTERN,
                    },
                    "status": {
                        "description": "status of the condition, one of True, False, Unknown.",
                        "type": "string",
                        "enum": ["True", "False", "Unknown"],
                    },
                    "type": {
                        "description": "type of condition in CamelCase or in foo.example.com/CamelCase.",
                        "type": "string",
                        "maxLength": 316,
                        "pattern": TYPE_PATTERN,
                    },
                },
            },
        })
    }

    /// Contact: `Ready` pending creation.
    pub fn contact(_: &mut SchemaGenerator) -> Schema {
        with_placeholder(
            "Ready",
            "CreatePending",
            "Waiting for contact to be created",
        )
    }

    /// ContactGroup: `Ready` pending creation.
    pub fn contact_group(_: &mut SchemaGenerator) -> Schema {
        with_placeholder(
            "Ready",
            "CreatePending",
            "Waiting for contact group to be created",
        )
    }

    /// ContactGroupMembership: `Ready` pending creation.
    pub fn membership(_: &mut SchemaGenerator) -> Schema {
        with_placeholder(
            "Ready",
            "CreatePending",
            "Waiting for contact group membership to be created",
        )
    }

    /// ContactGroupMembershipRemoval: `Ready` pending creation.
    pub fn removal(_: &mut SchemaGenerator) -> Schema {
        with_placeholder(
            "Ready",
            "CreatePending",
            "Waiting for contact group membership removal to be created",
        )
    }

    /// ContactGroupEnrollmentPolicy: Milo's CRD has no status, so no placeholder either.
    pub fn enrollment_policy(_: &mut SchemaGenerator) -> Schema {
        without_placeholder()
    }

    /// Email: `Delivered` pending delivery.
    pub fn email(_: &mut SchemaGenerator) -> Schema {
        with_placeholder("Delivered", "DeliveryPending", "Waiting for email delivery")
    }

    /// EmailTemplate: `Ready`, reason `Unknown`.
    pub fn email_template(_: &mut SchemaGenerator) -> Schema {
        with_placeholder("Ready", "Unknown", "Waiting for control plane to reconcile")
    }

    /// EmailBroadcast: `Ready` pending creation.
    pub fn email_broadcast(_: &mut SchemaGenerator) -> Schema {
        with_placeholder(
            "Ready",
            "CreatePending",
            "Waiting for email broadcast to be created",
        )
    }

    /// User: `Ready`, reason `Unknown`.
    pub fn user(_: &mut SchemaGenerator) -> Schema {
        with_placeholder("Ready", "Unknown", "Waiting for control plane to reconcile")
    }

    /// UserInvitation: Milo's placeholder is of type `Unknown` (not `Ready`), so it stays in the
    /// list beside the conditions the controller writes unless a writer replaces the list.
    pub fn user_invitation(_: &mut SchemaGenerator) -> Schema {
        with_placeholder(
            "Unknown",
            "Unknown",
            "Waiting for control plane to reconcile",
        )
    }
}

/// Names provider sync writes on the objects it mirrors: shared by the view (which reads them
/// back) and the controllers (which write them).
pub mod sync {
    use super::ProviderName;

    /// The finalizer Resend sync puts on Contacts, ContactGroups and memberships, so that
    /// deleting one removes its counterpart at the provider first.
    pub const FINALIZER: &str = "notification.miloapis.com/resend-sync";
    /// The aggregate condition: True when every provider the object is mirrored to says so.
    pub const READY: &str = "Ready";
    /// Loops sync's finalizer, beside Resend's: each provider releases its own.
    pub const LOOPS_FINALIZER: &str = "notification.miloapis.com/loops-sync";
    /// Condition type of a Contact mirrored to Loops.
    pub const LOOPS_CONTACT_READY: &str = "LoopsContactReady";
    /// Condition type of a ContactGroup mirrored to the Loops mailing list its spec names.
    pub const LOOPS_GROUP_READY: &str = "LoopsContactGroupReady";
    /// Condition type of a membership mirrored to a Loops mailing list subscription.
    pub const LOOPS_MEMBERSHIP_READY: &str = "LoopsContactGroupMembershipReady";

    /// The kinds provider sync mirrors.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum SyncedObject {
        /// Contact.
        Contact,
        /// ContactGroup.
        Group,
        /// ContactGroupMembership.
        Membership,
    }

    /// Every provider, in the order their bits and status entries take.
    pub const PROVIDERS: [ProviderName; 2] = [ProviderName::Resend, ProviderName::Loops];

    /// The finalizer `provider`'s sync puts on the objects it mirrors.
    pub fn finalizer(provider: ProviderName) -> &'static str {
        match provider {
            ProviderName::Resend => FINALIZER,
            ProviderName::Loops => LOOPS_FINALIZER,
        }
    }

    /// The condition `provider`'s sync reports on an object of `kind` through.
    pub fn condition(provider: ProviderName, kind: SyncedObject) -> &'static str {
        match (provider, kind) {
            (ProviderName::Resend, SyncedObject::Contact) => CONTACT_READY,
            (ProviderName::Resend, SyncedObject::Group) => GROUP_READY,
            (ProviderName::Resend, SyncedObject::Membership) => MEMBERSHIP_READY,
            (ProviderName::Loops, SyncedObject::Contact) => LOOPS_CONTACT_READY,
            (ProviderName::Loops, SyncedObject::Group) => LOOPS_GROUP_READY,
            (ProviderName::Loops, SyncedObject::Membership) => LOOPS_MEMBERSHIP_READY,
        }
    }

    /// The provider's name as conditions and logs show it.
    pub fn display(provider: ProviderName) -> &'static str {
        match provider {
            ProviderName::Resend => "Resend",
            ProviderName::Loops => "Loops",
        }
    }
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
    /// Condition type on a membership of a **private** group whose person left the group's
    /// list at Loops (True) or rejoined it there (False), written by the Loops events receiver.
    /// The membership stays (private groups are administrative), but while the condition is True
    /// nothing may put the person back on that list at Loops: see [`loops_list_opt_out`].
    pub const LOOPS_UNSUBSCRIBED: &str = "LoopsUnsubscribed";

    /// Whether a membership's `conditions` say its person left the group's Loops list at Loops
    /// and has not rejoined it: provider sync must then never send the list as `true` for this
    /// membership (neither in a contact's upsert nor in a membership change).
    pub fn loops_list_opt_out(
        conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    ) -> bool {
        conditions
            .iter()
            .any(|c| c.type_ == LOOPS_UNSUBSCRIBED && c.status == "True")
    }
}
