//! Typed API resources: the wire shapes of every kind milo-webhook serves.
//!
//! The JSON field names, groups, versions, plurals and scopes are a compatibility contract with
//! Milo's own CRDs (see `shared/reference/api.md`); the CRDs in `manifests/crds/` are generated from
//! these types, so a change here is a change to the cluster's schema.

pub mod broadcast;
pub mod common;
pub mod consent;
pub mod external;
pub mod fields;
pub mod iam;
pub mod notification;

pub use broadcast::EmailBroadcast;
pub use common::{ObjectRef, ProviderRef};
pub use iam::{User, UserInvitation};
pub use notification::{
    Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
    ContactGroupMembershipRemoval, Email, EmailTemplate,
};

/// The notification API group.
pub const NOTIFICATION_GROUP: &str = "notification.miloapis.com";
/// The IAM API group.
pub const IAM_GROUP: &str = "iam.miloapis.com";
/// The one version both groups serve.
pub const VERSION: &str = "v1alpha1";
