//! The controllers' fields of the view: kept only once enabled (the leader's), gained by a
//! relist, enough to rebuild what each controller reads, and given back when objects go.

use kube::runtime::watcher::Event;
use milo_webhook::api::{
    Contact, ContactGroupEnrollmentPolicy, ContactGroupMembership, ContactGroupMembershipRemoval,
    User,
};
use milo_webhook::view::watch::apply_event;
use milo_webhook::view::{ClusterView, Store, ViewKind};
use serde_json::json;

fn contact(name: &str, records: serde_json::Value) -> Contact {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2026-06-01T00:00:00Z",
            "annotations": records,
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
        "spec": {"email": format!("{name}@example.com"), "givenName": "Ada",
            "subject": {"apiGroup": "iam.miloapis.com", "kind": "User", "name": name}}
    }))
    .unwrap()
}

fn pair() -> serde_json::Value {
    json!({"contactRef": {"name": "c", "namespace": "ns"},
        "contactGroupRef": {"name": "g", "namespace": "groups"}})
}

fn membership(username: Option<&str>) -> ContactGroupMembership {
    serde_json::from_value(json!({
        "metadata": {"name": "m", "namespace": "ns", "generation": 1},
        "spec": pair(),
        "status": {"username": username}
    }))
    .unwrap()
}

fn removal() -> ContactGroupMembershipRemoval {
    serde_json::from_value(json!({
        "metadata": {"name": "r", "namespace": "ns", "generation": 2,
            "deletionTimestamp": "2026-06-02T00:00:00Z"},
        "spec": pair(),
        "status": {"username": "c", "conditions": [{"type": "Ready", "status": "True",
            "reason": "CreateSuccessful", "message": "removed", "observedGeneration": 2,
            "lastTransitionTime": "2026-06-01T00:00:00Z"}]}
    }))
    .unwrap()
}

fn policy() -> ContactGroupEnrollmentPolicy {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "uid": "uid-p",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
        "spec": {"contactGroupRef": {"name": "g", "namespace": "groups"},
            "trigger": {"type": "ContactCreated"}}
    }))
    .unwrap()
}

fn user() -> User {
    serde_json::from_value(json!({
        "metadata": {"name": "c", "uid": "uid-c"},
        "spec": {"email": "c@example.com", "givenName": "Ada", "familyName": "Lovelace"}
    }))
    .unwrap()
}

#[test]
fn an_admission_only_store_keeps_no_controller_fields() {
    let mut store = Store::admission_only();
    store.apply_membership(&membership(Some("c")));
    store.apply_policy(&policy());
    store.apply_user(&user());
    assert!(!store.has_controller_fields());
    assert!(store.memberships_of_contact("ns", "c").is_empty());
    assert!(store.membership_object("ns", "m").is_none());
    assert!(store.policy("p").is_none());
    assert!(store.user_object("c").is_none());
    assert!(store.user("c").is_some(), "admission's own record is there");
}

#[test]
fn controllers_read_their_objects_rebuilt_from_the_view() {
    let mut store = Store::default();
    let key = "policy.enrollment.notification.miloapis.com/p";
    store.apply_contact(&contact("c", json!({key: "enrolled/uid-p", "other": "x"})));
    store.apply_membership(&membership(Some("c")));
    store.apply_removal(&removal());
    store.apply_policy(&policy());
    store.apply_user(&user());

    let m = store.membership_object("ns", "m").unwrap();
    assert_eq!(m.status.unwrap().username.as_deref(), Some("c"));
    assert!(m.metadata.deletion_timestamp.is_none());
    assert_eq!(m.spec.contact_group_ref.namespace, "groups");

    let r = store.removal_object("ns", "r").unwrap();
    assert!(r.metadata.deletion_timestamp.is_some());
    assert_eq!(r.metadata.generation, Some(2));
    let status = r.status.unwrap();
    assert_eq!(status.username.as_deref(), Some("c"));
    assert_eq!(status.conditions[0].reason, "CreateSuccessful");

    let p = store.policy("p").unwrap();
    assert!(p.metadata.managed_fields.is_none(), "managedFields dropped");
    assert!(
        p.metadata.annotations.is_none(),
        "unread annotations dropped"
    );

    let u = store.user_object("c").unwrap();
    assert_eq!(u.metadata.uid.as_deref(), Some("uid-c"));
    assert_eq!(u.spec.email, "c@example.com");
    use milo_webhook::view::records::names_digest;
    assert_eq!(
        store.user_names_digest("c"),
        Some(names_digest(Some("Ada"), Some("Lovelace")))
    );
    assert_eq!(
        store.contact_names_digest("ns", "c"),
        Some(names_digest(Some("Ada"), None))
    );
    assert_eq!(names_digest(Some(""), None), names_digest(None, None));
    assert_eq!(store.contact_record("ns", "c", key), Some("enrolled/uid-p"));
    assert_eq!(
        store.contact_record("ns", "c", "other"),
        None,
        "only records"
    );
    let facts: Vec<_> = store.enrollment_facts(key).collect();
    assert_eq!(facts.len(), 1);
    assert!(facts[0].user_subject && !facts[0].deleting);
    assert_eq!(facts[0].record, Some("enrolled/uid-p"));
    assert_eq!(
        facts[0].created,
        Some(
            "2026-06-01T00:00:00Z"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_second()
        )
    );

    let by_contact: Vec<_> = store.memberships_of_contact("ns", "c");
    assert_eq!(by_contact.len(), 1);
    assert_eq!(store.removals_of_contact("ns", "c").len(), 1);
    assert_eq!(
        store
            .naming_group(ViewKind::Membership, "groups", "g")
            .len(),
        1
    );
}

#[test]
fn deleting_everything_gives_every_string_back() {
    let mut store = Store::default();
    let key = "policy.enrollment.notification.miloapis.com/p";
    store.apply_contact(&contact("c", json!({key: "enrolled/uid-p"})));
    store.apply_membership(&membership(Some("c")));
    store.apply_membership(&membership(Some("someone-else")));
    store.apply_removal(&removal());
    store.apply_user(&user());
    store.apply_policy(&policy());
    for (kind, ns, name) in [
        (ViewKind::Contact, "ns", "c"),
        (ViewKind::Membership, "ns", "m"),
        (ViewKind::Removal, "ns", "r"),
        (ViewKind::User, "", "c"),
        (ViewKind::EnrollmentPolicy, "", "p"),
    ] {
        store.delete(kind, ns, name);
    }
    assert_eq!(store.symbol_count(), 0);
    assert!(store.memberships_of_contact("ns", "c").is_empty());
    assert!(store.policies().is_empty());
}

#[test]
fn gaining_leadership_relists_and_then_the_fields_are_synced() {
    let view = ClusterView::unsynced();
    let mut relist = None;
    apply_event::<ContactGroupMembership>(&view, Event::Init, &mut relist);
    apply_event(&view, Event::InitApply(membership(Some("c"))), &mut relist);
    apply_event::<ContactGroupMembership>(&view, Event::InitDone, &mut relist);
    assert!(view.read().membership_object("ns", "m").is_none());

    let mut fields = view.controller_fields();
    assert!(!*fields.borrow_and_update());
    view.enable_controller_fields();
    assert!(
        fields.has_changed().unwrap(),
        "the watchers are told to relist"
    );
    assert!(*fields.borrow_and_update());
    assert!(!view.controller_fields_synced());
    assert_eq!(
        view.read().memberships_of_contact("ns", "c").len(),
        1,
        "the by-contact index covers what was stored before"
    );

    // The watcher's relist applies every object again, now with the controllers' fields.
    apply_event::<ContactGroupMembership>(&view, Event::Init, &mut relist);
    apply_event(&view, Event::InitApply(membership(Some("c"))), &mut relist);
    apply_event::<ContactGroupMembership>(&view, Event::InitDone, &mut relist);
    view.mark_controller_synced(ViewKind::Membership);
    let username = view
        .read()
        .membership_object("ns", "m")
        .and_then(|m| m.status?.username);
    assert_eq!(username.as_deref(), Some("c"));
    for kind in ViewKind::ALL {
        view.mark_synced(kind);
        view.mark_controller_synced(kind);
    }
    assert!(view.controller_fields_synced());
    view.enable_controller_fields();
    assert!(
        view.controller_fields_synced(),
        "enabling again changes nothing"
    );
}
