//! The seam between the invitation lifecycle and "an authorization provider" (the seed's words):
//! one small trait, [`AccessBackend`], with two implementations, [`rbac`](super::rbac) (plain
//! Kubernetes RBAC, works on any cluster) and [`milo`](super::milo) (Milo's IAM PolicyBindings
//! and resource-manager memberships). Plus the helpers both use to name, label and own what they
//! create, so every object can be found and cleaned up.

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::iam::UserInvitation;
use crate::controllers::Error;
use crate::controllers::kubeapi::FIELD_MANAGER;
use crate::controllers::names::{MAX_NAME, label_safe, short_hash};

/// The label on everything the controller creates for an invitation (value: the invitation's
/// name, made label-safe), so objects in other namespaces, which cannot carry an ownerReference
/// to it, can still be found: `kubectl get rolebindings -A -l iam.miloapis.com/userinvitation`.
pub const INVITATION_LABEL: &str = "iam.miloapis.com/userinvitation";

/// The invitee's User, as access is granted to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitee {
    /// The User's name, which is also the username the API server authenticates it as.
    pub name: String,
    /// The User's `metadata.uid`, which Milo's PolicyBindings pin subjects by.
    pub uid: String,
}

/// Which [`AccessBackend`] the controller uses (`--access-backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessBackendKind {
    /// Kubernetes RBAC Roles and RoleBindings; works on any cluster.
    #[default]
    Rbac,
    /// Milo IAM PolicyBindings and resource-manager OrganizationMemberships.
    Milo,
}

impl AccessBackendKind {
    /// The flag value, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessBackendKind::Rbac => "rbac",
            AccessBackendKind::Milo => "milo",
        }
    }
}

/// How the controller grants, revokes and assigns access. Every method is idempotent: a retry,
/// a restart or a new leader repeats it safely, and revoking what is already gone succeeds (so
/// deleting an invitation never hangs on a missing grant).
pub trait AccessBackend: Send + Sync {
    /// `rbac` or `milo`, for logs.
    fn name(&self) -> &'static str;

    /// The display name of `organization`, or `None` when it does not exist. Where organizations
    /// live depends on the platform, hence here.
    fn organization<'a>(
        &'a self,
        organization: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, Error>>;

    /// The invitation's roles this backend knows it cannot assign as things stand (a Role that
    /// was deleted after the invitation was made), described for a condition message. Empty
    /// when every role can be assigned, or when the backend cannot tell.
    fn missing_roles(&self, invitation: &UserInvitation) -> Vec<String>;

    /// Lets `invitee` read the invitation and change its `spec.state`, and nothing else.
    fn grant<'a>(
        &'a self,
        invitation: &'a UserInvitation,
        invitee: &'a Invitee,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Removes every grant [`grant`](Self::grant) made for the invitation.
    fn revoke<'a>(&'a self, invitation: &'a UserInvitation) -> BoxFuture<'a, Result<(), Error>>;

    /// Makes `invitee` a member of the invitation's organization with its roles. Never removes
    /// roles the user already holds.
    fn assign_roles<'a>(
        &'a self,
        invitation: &'a UserInvitation,
        invitee: &'a Invitee,
    ) -> BoxFuture<'a, Result<(), Error>>;
}

/// A deterministic object name: the readable parts joined by `-` (lower-cased, with characters a
/// DNS subdomain does not allow replaced, truncated to fit) and a hash of `identity`, so the same
/// invitation always maps to the same name and two invitations never share one.
pub fn derived_name(readable: &[&str], identity: &[&str]) -> String {
    let hash = short_hash(identity);
    let room = MAX_NAME - hash.len() - 1;
    let joined: String = readable
        .join("-")
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .take(room)
        .collect();
    let trimmed = joined.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        hash
    } else {
        format!("{trimmed}-{hash}")
    }
}

/// The name of an object made for exactly one invitation (`userinvitation-<name>[-<what>]-<hash>`).
/// The hash covers the invitation's uid too: an invitation deleted and recreated under the same
/// name gets new objects rather than inheriting (or being blocked by) the old ones, which the
/// garbage collector removes with their owner.
pub fn invitation_object_name(invitation: &UserInvitation, what: Option<&str>) -> String {
    let namespace = invitation.namespace().unwrap_or_default();
    let name = invitation.name_any();
    let uid = invitation.uid().unwrap_or_default();
    let mut readable = vec!["userinvitation", name.as_str()];
    readable.extend(what);
    derived_name(
        &readable,
        &[&namespace, &name, &uid, what.unwrap_or_default()],
    )
}

/// The labels every object made for `invitation` carries.
pub fn invitation_labels(invitation: &UserInvitation) -> BTreeMap<String, String> {
    BTreeMap::from([(
        INVITATION_LABEL.to_owned(),
        label_safe(&invitation.name_any()),
    )])
}

/// An ownerReference to `invitation`, for objects in its namespace that exist only for it: the
/// garbage collector removes them if the finalizer is ever bypassed.
pub fn owned_by(invitation: &UserInvitation) -> Vec<OwnerReference> {
    invitation.controller_owner_ref(&()).into_iter().collect()
}

/// Metadata of an object that exists only for `invitation`: in its namespace, labelled, owned.
pub fn invitation_object_meta(invitation: &UserInvitation, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: invitation.namespace(),
        labels: Some(invitation_labels(invitation)),
        owner_references: Some(owned_by(invitation)),
        ..ObjectMeta::default()
    }
}

/// Server-side-applies `object` as the controller's field manager, taking ownership of the fields
/// it sets. Used for grants: applying converges an existing grant to the current invitee (a
/// create would keep a stale subject), and applying twice is a no-op.
pub async fn apply<K>(api: &Api<K>, name: &str, object: &K) -> Result<(), kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(object))
        .await
        .map(|_| ())
}

/// The display name of the organization `organization`, read from the cluster-scoped object
/// `name` of kind `K` (a Namespace for `rbac`, an Organization for `milo`): its
/// `kubernetes.io/display-name` annotation, else the organization's name; `None` when the object
/// does not exist.
pub async fn organization_display_name<K>(
    client: &kube::Client,
    name: &str,
    organization: &str,
) -> Result<Option<String>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let found = crate::controllers::kubeapi::get(&api, name).await?;
    Ok(found.map(|o| {
        crate::api::external::display_name(o.meta().annotations.as_ref())
            .unwrap_or(organization)
            .to_owned()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::iam::UserInvitationSpec;

    fn invitation(name: &str, uid: &str) -> UserInvitation {
        let mut invitation = UserInvitation::new(name, UserInvitationSpec::default());
        invitation.metadata.namespace = Some("organization-acme".into());
        invitation.metadata.uid = Some(uid.into());
        invitation
    }

    #[test]
    fn names_are_stable_per_invitation_and_differ_across_them() {
        let a = invitation_object_name(&invitation("alice", "u1"), None);
        assert!(a.starts_with("userinvitation-alice-"), "{a}");
        assert_eq!(a, invitation_object_name(&invitation("alice", "u1"), None));
        assert_ne!(a, invitation_object_name(&invitation("alice", "u2"), None));
        let get = invitation_object_name(&invitation("alice", "u1"), Some("get"));
        assert!(get.starts_with("userinvitation-alice-get-"), "{get}");
        let long = invitation_object_name(&invitation(&"x".repeat(253), "u1"), Some("accept"));
        assert!(long.len() <= MAX_NAME, "{}", long.len());
    }

    #[test]
    fn readable_parts_are_made_dns_safe() {
        let name = derived_name(&["member", "U1", "system:viewer"], &["x"]);
        assert!(name.starts_with("member-u1-system-viewer-"), "{name}");
        assert_eq!(derived_name(&["::"], &["x"]).len(), 10);
    }
}
