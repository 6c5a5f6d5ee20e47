//! The review both the load benchmark and `benches/review.rs` send: a membership CREATE in the
//! shape the API server writes it, naming `contact-<contact>` and `group-<group>`.

use serde_json::{Value, json};

/// The API group and version of the objects.
pub const API: &str = "notification.miloapis.com/v1alpha1";
/// The namespace every object lives in.
pub const NS: &str = "milo-system";

/// A membership CREATE review with request uid and object name `uid`.
pub fn review(uid: &str, contact: usize, group: usize) -> Value {
    let kind = json!({"group": "notification.miloapis.com", "version": "v1alpha1", "kind": "ContactGroupMembership"});
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": kind, "requestKind": kind, "name": uid, "namespace": NS,
        "resource": {"group": "notification.miloapis.com", "version": "v1alpha1", "resource": "contactgroupmemberships"},
        "operation": "CREATE", "dryRun": false,
        "userInfo": {"username": "admin", "uid": "admin-uid", "groups": ["system:masters", "system:authenticated"]},
        "object": {"apiVersion": API, "kind": "ContactGroupMembership", "metadata": {"name": uid, "namespace": NS},
            "spec": {"contactRef": {"name": format!("contact-{contact}"), "namespace": NS},
                     "contactGroupRef": {"name": format!("group-{group}"), "namespace": NS}}}}})
}
