//! `notification.miloapis.com/v1alpha1` EmailBroadcast: one template sent to every member of a
//! contact group. Wire-compatible with Milo's kind; the recipient counts and `observedGeneration`
//! in the status are ours (sending happens per recipient here, not through the provider's own
//! broadcasts, so progress is ours to report).
// kube's `printcolumn(...)` attributes repeat keys by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{NameRef, ObjectRef, conditions};

/// A template sent to a contact group, at `scheduledAt` or at once.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "notification.miloapis.com",
    version = "v1alpha1",
    kind = "EmailBroadcast",
    plural = "emailbroadcasts",
    namespaced,
    status = "EmailBroadcastStatus",
    doc = "An EmailTemplate sent to every member of a ContactGroup.",
    annotation("discovery.miloapis.com/parent-contexts", "Platform,User"),
    printcolumn(
        name = "DisplayName",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(
        name = "ContactGroup",
        type_ = "string",
        json_path = ".spec.contactGroupRef.name"
    ),
    printcolumn(
        name = "Template",
        type_ = "string",
        json_path = ".spec.templateRef.name"
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
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct EmailBroadcastSpec {
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub display_name: Option<String>,
    /// The group whose members receive the email.
    pub contact_group_ref: ObjectRef,
    /// The template sent.
    pub template_ref: NameRef,
    /// When to send; absent means now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Time>,
}

/// Progress of a broadcast.
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailBroadcastStatus {
    /// `Ready`: `CreatePending` while sending, `CreateSuccessful` when done, False on failure.
    /// Defaults to one `Ready`/`Unknown`/`CreatePending` condition, as Milo's CRD does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::email_broadcast")]
    pub conditions: Vec<Condition>,
    /// The provider's identifier, when the provider holds one for the broadcast.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// Recipients the email was sent to.
    #[serde(default)]
    pub recipients_sent: i64,
    /// Members passed over: opted out, suppressed or unsubscribed.
    #[serde(default)]
    pub recipients_skipped: i64,
    /// Recipients the provider refused.
    #[serde(default)]
    pub recipients_failed: i64,
    /// The generation the counts describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last member (`namespace/name` of the Contact, in the sending order) whose batch is
    /// done: the cursor a restarted sender continues after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_through: Option<String>,
    /// The last batch recorded, before it was handed to the provider; pending (not known to be
    /// sent) while `sentThrough` is before its `lastContact`, and then repeated by a restarted
    /// sender under the same idempotency key. Kept once done, so batch indexes never repeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_batch: Option<PendingBatch>,
}

/// A batch of a broadcast recorded before it is sent (see [`EmailBroadcastStatus::pending_batch`]).
#[derive(Clone, Debug, Default, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PendingBatch {
    /// The batch's number, from 0.
    pub index: i64,
    /// The `Idempotency-Key` it is sent under: the broadcast's uid and the index.
    pub key: String,
    /// The first member of its range (`namespace/name` of the Contact).
    pub first_contact: String,
    /// The last member of its range.
    pub last_contact: String,
    /// Recipients in the batch when it was planned.
    #[serde(default)]
    pub recipients: i64,
    /// Members of its range passed over (opted out, suppressed or unsubscribed).
    #[serde(default)]
    pub skipped: i64,
}
