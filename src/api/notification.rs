//! `notification.miloapis.com/v1alpha1`: contacts, groups, memberships, opt-outs, enrollment
//! policies and emails.
// kube's `printcolumn(...)` and `selectable` attributes repeat keys by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    ContactGroupKind, ContactKind, NameRef, ObjectRef, ProviderSyncStatus, conditions,
};

/// How a contact is reached, and who it belongs to.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "notification.miloapis.com",
    version = "v1alpha1",
    kind = "Contact",
    plural = "contacts",
    namespaced,
    status = "ContactStatus",
    doc = "A person or system that notifications are sent to.",
    annotation("discovery.miloapis.com/parent-contexts", "Platform,User"),
    selectable = ".spec.email",
    selectable = ".spec.subject.name",
    selectable = ".spec.subject.kind",
    printcolumn(
        name = "SubjectRef",
        type_ = "string",
        json_path = ".spec.subject.name"
    ),
    printcolumn(
        name = "SubjectRef",
        type_ = "string",
        json_path = ".spec.subject.kind"
    ),
    printcolumn(name = "EmailRef", type_ = "string", json_path = ".spec.email"),
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
#[serde(rename_all = "camelCase")]
pub struct ContactSpec {
    /// Email address notifications are delivered to.
    #[schemars(length(min = 3, max = 254))]
    pub email: String,
    /// Given name, used to greet the contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub family_name: Option<String>,
    /// The object this contact belongs to; for people, the `iam.miloapis.com` User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectRef>,
}

/// Status of a contact: provider sync conditions and IDs.
pub type ContactStatus = ProviderSyncStatus<ContactKind>;

/// A typed reference to the object a contact belongs to.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SubjectRef {
    /// API group of the subject: `iam.miloapis.com`, the only one Milo's CRD allows.
    #[schemars(length(max = 253), extend("enum" = ["iam.miloapis.com"]))]
    pub api_group: String,
    /// Kind of the subject: `User`, the only one Milo's CRD allows.
    #[schemars(length(max = 63), extend("enum" = ["User"]))]
    pub kind: String,
    /// Name of the subject.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the subject; empty for cluster-scoped kinds such as User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
}

/// A named audience of contacts.
#[derive(CustomResource, KubeSchema, Clone, Debug, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "notification.miloapis.com",
    version = "v1alpha1",
    kind = "ContactGroup",
    plural = "contactgroups",
    namespaced,
    status = "ContactGroupStatus",
    doc = "A group of contacts that notifications can be sent to.",
    annotation("discovery.miloapis.com/parent-contexts", "Platform,User"),
    selectable = ".spec.visibility",
    printcolumn(
        name = "DisplayName",
        type_ = "string",
        json_path = ".spec.displayName"
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
    printcolumn(name = "Visibility", type_ = "string", json_path = ".spec.visibility")
)]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.providers) || (has(self.providers) && oldSelf.providers.all(o, self.providers.exists(n, n.name == o.name)) && !self.providers.exists(n, oldSelf.providers.exists(o, o.name == n.name && o.id != n.id)))"
).message(
    "providers can only be added, not removed, and their IDs are immutable. In order to update or remove, delete the ContactGroup and create a new one."
))]
#[serde(rename_all = "camelCase")]
pub struct ContactGroupSpec {
    /// Human-readable name shown to members.
    #[schemars(length(min = 1, max = 256))]
    pub display_name: String,
    /// Whether members may leave on their own (`public`) or membership is enforced (`private`).
    #[x_kube(validation = Rule::new("type(oldSelf) == null_type || self == oldSelf")
        .message("visibility type is immutable"))]
    pub visibility: Visibility,
    /// What the group is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Provider-side lists this group is bound to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub providers: Vec<GroupProviderRef>,
}

/// Status of a group: provider sync conditions and IDs.
pub type ContactGroupStatus = ProviderSyncStatus<ContactGroupKind>;

/// Who may leave a group.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Members may opt out with a ContactGroupMembershipRemoval.
    #[default]
    Public,
    /// Membership is managed by administrators; opt-outs are rejected.
    Private,
}

impl Visibility {
    /// The wire spelling, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
        }
    }
}

/// A provider-side list a group is bound to.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct GroupProviderRef {
    /// Provider name.
    pub name: GroupProviderName,
    /// Identifier of the list in the provider.
    #[schemars(length(max = 256))]
    pub id: String,
}

/// Providers whose lists a group can be bound to by spec.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum GroupProviderName {
    /// Loops.
    #[default]
    Loops,
}

/// One contact's membership in one group.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "notification.miloapis.com",
    version = "v1alpha1",
    kind = "ContactGroupMembership",
    plural = "contactgroupmemberships",
    namespaced,
    status = "ContactGroupMembershipStatus",
    doc = "Membership of a Contact in a ContactGroup.",
    annotation("discovery.miloapis.com/parent-contexts", "Platform,User"),
    selectable = ".spec.contactRef.name",
    selectable = ".spec.contactGroupRef.name",
    selectable = ".status.username",
    printcolumn(
        name = "Contact",
        type_ = "string",
        json_path = ".spec.contactRef.name"
    ),
    printcolumn(
        name = "ContactGroup",
        type_ = "string",
        json_path = ".spec.contactGroupRef.name"
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
    printcolumn(name = "User", type_ = "string", json_path = ".status.username")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct ContactGroupMembershipSpec {
    /// The contact that joins.
    pub contact_ref: ObjectRef,
    /// The group joined.
    pub contact_group_ref: ObjectRef,
}

/// Status of a membership: provider sync plus the user the contact belongs to.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContactGroupMembershipStatus {
    /// Standard conditions; `Ready` reports provider sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::membership")]
    pub conditions: Vec<Condition>,
    /// Deprecated: the provider's ID, as Milo's CRD declares it; `providers` holds the IDs.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// Where this membership has been mirrored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub providers: Vec<super::common::ProviderRef>,
    /// The User named by the referenced Contact's subject, so users can find their memberships.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// An opt-out: removes a contact from a group and keeps it out while it exists.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "notification.miloapis.com",
    version = "v1alpha1",
    kind = "ContactGroupMembershipRemoval",
    plural = "contactgroupmembershipremovals",
    namespaced,
    status = "ContactGroupMembershipRemovalStatus",
    doc = "A Contact's opt-out from a public ContactGroup.",
    annotation("discovery.miloapis.com/parent-contexts", "Platform,User"),
    selectable = ".spec.contactRef.name",
    selectable = ".status.username",
    printcolumn(
        name = "Contact",
        type_ = "string",
        json_path = ".spec.contactRef.name"
    ),
    printcolumn(
        name = "ContactGroup",
        type_ = "string",
        json_path = ".spec.contactGroupRef.name"
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
    printcolumn(name = "User", type_ = "string", json_path = ".status.username")
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
#[serde(rename_all = "camelCase")]
pub struct ContactGroupMembershipRemovalSpec {
    /// The contact that leaves.
    pub contact_ref: ObjectRef,
    /// The group left.
    pub contact_group_ref: ObjectRef,
}

/// Status of a removal.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContactGroupMembershipRemovalStatus {
    /// Standard conditions; `Ready` once the membership is gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::removal")]
    pub conditions: Vec<Condition>,
    /// The User named by the referenced Contact's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// The (contact, group) pair that memberships and removals both name, so one set of lookups serves
/// both kinds.
pub trait ContactGroupPair {
    /// The contact joining or leaving.
    fn contact_ref(&self) -> &ObjectRef;
    /// The group joined or left.
    fn contact_group_ref(&self) -> &ObjectRef;
}

impl ContactGroupPair for ContactGroupMembershipSpec {
    fn contact_ref(&self) -> &ObjectRef {
        &self.contact_ref
    }
    fn contact_group_ref(&self) -> &ObjectRef {
        &self.contact_group_ref
    }
}

impl ContactGroupPair for ContactGroupMembershipRemovalSpec {
    fn contact_ref(&self) -> &ObjectRef {
        &self.contact_ref
    }
    fn contact_group_ref(&self) -> &ObjectRef {
        &self.contact_group_ref
    }
}

/// Declares which groups new contacts are enrolled in.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "notification.miloapis.com",
    version = "v1alpha1",
    kind = "ContactGroupEnrollmentPolicy",
    plural = "contactgroupenrollmentpolicies",
    status = "ContactGroupEnrollmentPolicyStatus",
    doc = "Enrolls newly created Contacts into a ContactGroup.",
    printcolumn(
        name = "ContactGroup",
        type_ = "string",
        json_path = ".spec.contactGroupRef.name"
    ),
    printcolumn(name = "Trigger", type_ = "string", json_path = ".spec.trigger.type"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Ready')].status"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ContactGroupEnrollmentPolicySpec {
    /// The group contacts are enrolled into.
    #[x_kube(validation = Rule::new("self == oldSelf").message("contactGroupRef is immutable"))]
    pub contact_group_ref: ObjectRef,
    /// When enrollment happens.
    pub trigger: EnrollmentTrigger,
    /// Which contacts the policy applies to; omitted, it applies to every contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_selector: Option<ContactSelector>,
    /// Also enroll contacts that existed before the policy.
    #[serde(default)]
    pub backfill: bool,
}

/// When a policy enrolls contacts.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct EnrollmentTrigger {
    /// The triggering event.
    #[serde(rename = "type")]
    pub type_: TriggerType,
}

/// Events that trigger enrollment.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum TriggerType {
    /// A Contact was created.
    #[default]
    ContactCreated,
}

/// Filters the contacts a policy applies to.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContactSelector {
    /// Only contacts whose subject is of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_kind: Option<SubjectKind>,
}

/// Subject kinds a selector can match.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum SubjectKind {
    /// `iam.miloapis.com` User.
    #[default]
    User,
}

/// What a policy has done.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContactGroupEnrollmentPolicyStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the group exists and the policy is being applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::enrollment_policy")]
    pub conditions: Vec<Condition>,
    /// Contacts this policy has enrolled.
    #[serde(default)]
    pub contacts_enrolled: i64,
    /// Contacts skipped because they had opted out of the group.
    #[serde(default)]
    pub contacts_skipped_opt_out: i64,
    /// The backfill boundary within the policy's own second (`creationTimestamp` has one-second
    /// resolution): the contacts (`namespace/name`) created in that second that existed before
    /// the policy, decided when the controller first saw the policy. A policy without
    /// `backfill` never enrolls them and enrolls every other contact of that second. Unset until
    /// decided; unused with `backfill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_second_contacts: Option<Vec<String>>,
}

/// One email to one recipient, rendered from a template.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "notification.miloapis.com",
    version = "v1alpha1",
    kind = "Email",
    plural = "emails",
    namespaced,
    status = "EmailStatus",
    doc = "An email rendered from an EmailTemplate and delivered to one recipient.",
    annotation("discovery.miloapis.com/parent-contexts", "Platform,User"),
    selectable = ".spec.recipient.userRef.name",
    selectable = ".spec.recipient.emailAddress",
    printcolumn(
        name = "Template",
        type_ = "string",
        json_path = ".spec.templateRef.name"
    ),
    printcolumn(name = "Priority", type_ = "string", json_path = ".spec.priority"),
    printcolumn(
        name = "Delivered",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Delivered')].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EmailSpec {
    /// The template rendered into this email.
    pub template_ref: NameRef,
    /// Who receives it.
    pub recipient: EmailRecipient,
    /// Carbon-copy addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(max = 254)))]
    pub cc: Vec<String>,
    /// Blind carbon-copy addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(max = 254)))]
    pub bcc: Vec<String>,
    /// Values for the template's variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub variables: Vec<EmailVariable>,
    /// Delivery priority.
    #[serde(default)]
    pub priority: EmailPriority,
}

/// The recipient of an email: exactly one of a User or a literal address.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.userRef) != has(self.emailAddress)",
    "message": "exactly one of userRef or emailAddress must be set"
}]))]
pub struct EmailRecipient {
    /// The User whose address receives the email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ref: Option<NameRef>,
    /// A literal address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254))]
    pub email_address: Option<String>,
}

/// A name/value pair substituted into a template.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct EmailVariable {
    /// Variable name, as used in the template.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Value substituted.
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// Delivery priority of an email.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EmailPriority {
    /// Deliver when convenient.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Deliver first.
    High,
}

/// Delivery state of an email and what was rendered.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmailStatus {
    /// `Delivered` with reasons `DeliveryPending`, `DeliverySuccessful`, `DeliveryFailed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::email")]
    pub conditions: Vec<Condition>,
    /// The provider's ID for the sent message.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// Rendered subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Rendered HTML body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_body: Option<String>,
    /// Rendered text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_body: Option<String>,
    /// The address the email went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
}

/// A reusable email body with declared variables.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "notification.miloapis.com",
    version = "v1alpha1",
    kind = "EmailTemplate",
    plural = "emailtemplates",
    status = "EmailTemplateStatus",
    doc = "A Go-template email that Emails are rendered from.",
    annotation("discovery.miloapis.com/parent-contexts", "Platform"),
    printcolumn(name = "Subject", type_ = "string", json_path = ".spec.subject"),
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
#[serde(rename_all = "camelCase")]
pub struct EmailTemplateSpec {
    /// Subject line template.
    #[schemars(length(min = 1, max = 1024))]
    pub subject: String,
    /// HTML body template.
    #[schemars(length(min = 1, max = 262144))]
    pub html_body: String,
    /// Plain-text body template.
    #[schemars(length(min = 1, max = 262144))]
    pub text_body: String,
    /// Variables the template uses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub variables: Vec<TemplateVariable>,
}

/// A variable a template declares.
// Milo's CRD requires all three fields; ours defaults `required` to false first, so a template
// that leaves it out is still accepted.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[schemars(extend("required" = ["name", "required", "type"]))]
pub struct TemplateVariable {
    /// Variable name, as used in the template.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Whether an Email must supply it.
    #[serde(default)]
    pub required: bool,
    /// How the value is checked.
    #[serde(rename = "type")]
    pub type_: TemplateVariableType,
}

/// Types of template variables.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TemplateVariableType {
    /// Any text.
    #[default]
    String,
    /// An absolute URL.
    Url,
}

/// Status of a template.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct EmailTemplateStatus {
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions::email_template")]
    pub conditions: Vec<Condition>,
}
