//! The resource types the fake serves: where each lives in the URL space, its kind and scope,
//! and whether it has a `/status` subresource. A request for anything else is a 404, as on an
//! API server without that CRD installed.

/// One served resource type.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    /// Lower-case plural, as in the URL.
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Writes to the main resource leave `status` alone and `/status` writes touch only it.
    pub status_subresource: bool,
}

impl ResourceType {
    /// `group/version`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group`, as API server messages name a resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const fn rt(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    status_subresource: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        kind,
        namespaced,
        status_subresource,
    }
}

const NOTIFICATION: &str = "notification.miloapis.com";
const IAM: &str = "iam.miloapis.com";
const RESOURCEMANAGER: &str = "resourcemanager.miloapis.com";
const RBAC: &str = "rbac.authorization.k8s.io";

/// Every resource type served, indexed by position in the store.
pub static RESOURCES: &[ResourceType] = &[
    rt(NOTIFICATION, "v1alpha1", "contacts", "Contact", true, true),
    rt(
        NOTIFICATION,
        "v1alpha1",
        "contactgroups",
        "ContactGroup",
        true,
        true,
    ),
    rt(
        NOTIFICATION,
        "v1alpha1",
        "contactgroupmemberships",
        "ContactGroupMembership",
        true,
        true,
    ),
    rt(
        NOTIFICATION,
        "v1alpha1",
        "contactgroupmembershipremovals",
        "ContactGroupMembershipRemoval",
        true,
        true,
    ),
    rt(
        NOTIFICATION,
        "v1alpha1",
        "contactgroupenrollmentpolicies",
        "ContactGroupEnrollmentPolicy",
        false,
        true,
    ),
    rt(NOTIFICATION, "v1alpha1", "emails", "Email", true, true),
    rt(
        NOTIFICATION,
        "v1alpha1",
        "emailbroadcasts",
        "EmailBroadcast",
        true,
        true,
    ),
    rt(
        NOTIFICATION,
        "v1alpha1",
        "emailtemplates",
        "EmailTemplate",
        false,
        true,
    ),
    rt(IAM, "v1alpha1", "users", "User", false, true),
    rt(
        IAM,
        "v1alpha1",
        "userinvitations",
        "UserInvitation",
        true,
        true,
    ),
    rt(
        IAM,
        "v1alpha1",
        "policybindings",
        "PolicyBinding",
        true,
        true,
    ),
    rt(
        RESOURCEMANAGER,
        "v1alpha1",
        "organizations",
        "Organization",
        false,
        true,
    ),
    rt(
        RESOURCEMANAGER,
        "v1alpha1",
        "organizationmemberships",
        "OrganizationMembership",
        true,
        true,
    ),
    rt(RBAC, "v1", "roles", "Role", true, false),
    rt(RBAC, "v1", "clusterroles", "ClusterRole", false, false),
    rt(RBAC, "v1", "rolebindings", "RoleBinding", true, false),
    rt(
        RBAC,
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        false,
    ),
    rt("coordination.k8s.io", "v1", "leases", "Lease", true, false),
    rt("events.k8s.io", "v1", "events", "Event", true, false),
    rt("", "v1", "events", "Event", true, false),
    rt("", "v1", "namespaces", "Namespace", false, true),
];

/// The index of `group/version/plural` in [`RESOURCES`].
pub fn find(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The index of a resource by its plural and group, for the harness (`find_plural("contacts",
/// "notification.miloapis.com")`); panics on a type the fake does not serve.
pub fn index(group: &str, plural: &str) -> usize {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.plural == plural)
        .unwrap_or_else(|| panic!("the fake serves no {plural}.{group}"))
}
