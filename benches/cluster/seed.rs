//! The objects scenarios start from, written the way `kubectl apply` (client-side) leaves them:
//! the `kubectl.kubernetes.io/last-applied-configuration` annotation and a
//! `kubectl-client-side-apply` managedFields entry listing every field (plus a controller's
//! entry for status), about 1-2 KB per object, like what a real API server returns.

use serde_json::{Value, json};

use crate::fake::objects;
use crate::fake::{FakeApi, index};

pub const NOTIFICATION: &str = "notification.miloapis.com";
pub const IAM: &str = "iam.miloapis.com";
/// Where Users' Contacts live (the usercontact controller's default `--contact-namespace`).
pub const CONTACT_NAMESPACE: &str = "milo-system";
pub const GROUP_NAMESPACE: &str = "groups";
const KUBECTL: &str = "kubectl-client-side-apply";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The name of the `i`th User: Milo's users are named by numeric ids.
pub fn user_name(i: usize) -> String {
    format!("{}", 332_927_149_239_362_068u64 + i as u64 * 7_919)
}

/// The User `i`, as a create body.
pub fn user(i: usize) -> Value {
    json!({
        "apiVersion": format!("{IAM}/v1alpha1"), "kind": "User",
        "metadata": {"name": user_name(i), "labels": {"iam.miloapis.com/signup": "web"}},
        "spec": {"email": format!("user{i}@example.com"), "givenName": format!("Given{i}"),
            "familyName": format!("Family{i}")},
    })
}

pub fn contact_name(i: usize) -> String {
    format!("user-{}", user_name(i))
}

/// The Contact of User `i`, as the usercontact controller makes it, owned by the User.
pub fn contact(i: usize, user_uid: &str, records: &[(String, String)]) -> Value {
    let mut c = json!({
        "apiVersion": format!("{NOTIFICATION}/v1alpha1"), "kind": "Contact",
        "metadata": {"name": contact_name(i), "namespace": CONTACT_NAMESPACE,
            "ownerReferences": [{"apiVersion": format!("{IAM}/v1alpha1"), "kind": "User",
                "name": user_name(i), "uid": user_uid}]},
        "spec": {"email": format!("user{i}@example.com"), "givenName": format!("Given{i}"),
            "familyName": format!("Family{i}"),
            "subject": {"apiGroup": IAM, "kind": "User", "name": user_name(i)}},
    });
    for (key, value) in records {
        c["metadata"]["annotations"][key] = json!(value);
    }
    c
}

pub fn group_name(g: usize) -> String {
    format!("newsletter-{g:02}")
}

pub fn group(name: &str) -> Value {
    json!({
        "apiVersion": format!("{NOTIFICATION}/v1alpha1"), "kind": "ContactGroup",
        "metadata": {"name": name, "namespace": GROUP_NAMESPACE},
        "spec": {"displayName": format!("The {name} list"), "visibility": "public",
            "description": "Product news, once a month."},
    })
}

/// A membership of contact `contact` in group `group`, with the status the controllers and a
/// provider sync leave on it.
pub fn membership(contact: usize, group: &str) -> Value {
    let name = format!("{}-{group}", contact_name(contact));
    json!({
        "apiVersion": format!("{NOTIFICATION}/v1alpha1"), "kind": "ContactGroupMembership",
        "metadata": {"name": name, "namespace": CONTACT_NAMESPACE},
        "spec": {"contactRef": {"name": contact_name(contact), "namespace": CONTACT_NAMESPACE},
            "contactGroupRef": {"name": group, "namespace": GROUP_NAMESPACE}},
        "status": {"username": user_name(contact), "conditions": [{"type": "Ready",
            "status": "True", "reason": "Synced", "message": "membership synced to the provider",
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]},
    })
}

/// An enrollment policy into `group` for contacts of Users.
pub fn policy(name: &str, group: &str, backfill: bool) -> Value {
    json!({
        "apiVersion": format!("{NOTIFICATION}/v1alpha1"), "kind": "ContactGroupEnrollmentPolicy",
        "metadata": {"name": name},
        "spec": {"contactGroupRef": {"name": group, "namespace": GROUP_NAMESPACE},
            "trigger": {"type": "ContactCreated"}, "contactSelector": {"subjectKind": "User"},
            "backfill": backfill},
    })
}

/// The record annotation the enrollment controller leaves on a contact for `policy`.
pub fn record(policy: &str, uid: &str) -> (String, String) {
    (
        format!("policy.enrollment.notification.miloapis.com/{policy}"),
        format!("enrolled/{uid}"),
    )
}

/// A Lease held by `holder`, renewed now.
pub fn lease(namespace: &str, name: &str, holder: &str, seconds: u64) -> Value {
    let now = objects::now_micro();
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
            "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
    })
}

/// Seeds `object` as `kubectl apply` would have left it; returns its uid.
pub fn apply(fake: &FakeApi, group: &str, plural: &str, mut object: Value) -> String {
    let uid = objects::uid();
    let mut applied = object.clone();
    if let Some(m) = applied.as_object_mut() {
        m.remove("status");
    }
    if let Some(meta) = applied["metadata"].as_object_mut() {
        meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace" | "labels"));
    }
    let last_applied = format!("{applied}\n");
    object["metadata"]["annotations"][LAST_APPLIED] = json!(last_applied);
    object["metadata"]["uid"] = json!(uid);
    fake.store().seed(index(group, plural), object, KUBECTL);
    uid
}

/// What [`mix`] seeded.
pub struct Mix {
    pub users: usize,
    pub contacts: usize,
    pub memberships: usize,
    pub groups: usize,
    pub policies: usize,
}

impl Mix {
    pub fn total(&self) -> usize {
        self.users + self.contacts + self.memberships + self.groups + self.policies
    }
}

/// A steady-state cluster of about `n` objects: 30% Users, 30% their Contacts (one each, as
/// the usercontact controller makes them), 40% memberships (each contact in one or two of ten
/// groups, usernames set), ten groups and one enrollment policy that has already recorded every
/// contact. Nothing in it is left for a controller to do.
pub fn mix(fake: &FakeApi, n: usize) -> Mix {
    let users = n * 3 / 10;
    let memberships = n.saturating_sub(2 * users);
    let groups = 10;
    for g in 0..groups {
        apply(fake, NOTIFICATION, "contactgroups", group(&group_name(g)));
    }
    let policy_uid = apply(
        fake,
        NOTIFICATION,
        "contactgroupenrollmentpolicies",
        with_policy_status(policy("welcome", &group_name(0), false), users),
    );
    let records = [record("welcome", &policy_uid)];
    for i in 0..users {
        let uid = apply(fake, IAM, "users", user(i));
        apply(fake, NOTIFICATION, "contacts", contact(i, &uid, &records));
    }
    for k in 0..memberships.min(2 * users) {
        let i = k % users;
        let g = (k / users + i) % groups;
        apply(
            fake,
            NOTIFICATION,
            "contactgroupmemberships",
            membership(i, &group_name(g)),
        );
    }
    Mix {
        users,
        contacts: users,
        memberships: memberships.min(2 * users),
        groups,
        policies: 1,
    }
}

/// The status the enrollment controller writes once every contact is recorded.
fn with_policy_status(mut policy: Value, enrolled: usize) -> Value {
    let group = format!(
        "{GROUP_NAMESPACE}/{}",
        policy["spec"]["contactGroupRef"]["name"]
            .as_str()
            .unwrap_or_default()
    );
    policy["status"] = json!({
        "observedGeneration": 1, "contactsEnrolled": enrolled, "contactsSkippedOptOut": 0,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Active",
            "message": format!("enrolling contacts into {group}"),
            "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}],
    });
    policy
}

/// `n` Users with their Contacts (no memberships) and the group `group`: what a backfilling
/// policy starts from.
pub fn signed_up(fake: &FakeApi, n: usize, group_name: &str) {
    apply(fake, NOTIFICATION, "contactgroups", group(group_name));
    for i in 0..n {
        let uid = apply(fake, IAM, "users", user(i));
        apply(fake, NOTIFICATION, "contacts", contact(i, &uid, &[]));
    }
}
