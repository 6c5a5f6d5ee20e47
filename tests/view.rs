//! The cluster view: indexes answer the lookups rules need, updates and deletes keep them exact,
//! strings are given back when objects go, and a relist replaces a kind's contents.

use std::collections::HashSet;

use kube::runtime::watcher::Event;
use milo_webhook::api::common::ObjectRef;
use milo_webhook::api::notification::Visibility;
use milo_webhook::api::{
    Contact, ContactGroup, ContactGroupMembership, ContactGroupMembershipRemoval,
};
use milo_webhook::view::watch::apply_event;
use milo_webhook::view::{ClusterView, Store, ViewKind};
use serde_json::json;

fn contact(name: &str, email: &str, user: Option<&str>) -> Contact {
    let mut spec = json!({"email": email});
    if let Some(user) = user {
        spec["subject"] = json!({"apiGroup": "iam.miloapis.com", "kind": "User", "name": user});
    }
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"}, "spec": spec}))
        .unwrap()
}

fn group(name: &str, display: &str, visibility: &str) -> ContactGroup {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"},
        "spec": {"displayName": display, "visibility": visibility}}))
    .unwrap()
}

fn pair_spec(contact: &str, group: &str) -> serde_json::Value {
    json!({"contactRef": {"name": contact, "namespace": "ns"}, "contactGroupRef": {"name": group, "namespace": "ns"}})
}

fn membership(name: &str, ns: &str, contact: &str, group: &str) -> ContactGroupMembership {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": ns}, "spec": pair_spec(contact, group)}),
    )
    .unwrap()
}

fn removal(name: &str, contact: &str, group: &str) -> ContactGroupMembershipRemoval {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "ns"}, "spec": pair_spec(contact, group)}),
    )
    .unwrap()
}

fn r(name: &str) -> ObjectRef {
    ObjectRef {
        name: name.into(),
        namespace: "ns".into(),
    }
}

#[test]
fn lookups_by_key_email_user_and_identity() {
    let mut store = Store::default();
    store.apply_contact(&contact("alice", "Alice@Example.com", Some("u1")));
    store.apply_contact(&contact("bob", "bob@example.com", None));
    store.apply_group(&group("news", "Newsletter", "public"));
    let alice = store.contact("ns", "alice").unwrap();
    assert_eq!(alice.email, "Alice@Example.com");
    assert_eq!(alice.subject.unwrap().name, "u1");
    assert!(
        store.contact("other", "alice").is_none(),
        "namespace is part of the key"
    );
    let by_email: Vec<_> = store
        .contacts_by_email("ALICE@example.COM")
        .map(|c| c.key.name)
        .collect();
    assert_eq!(by_email, ["alice"], "email lookups ignore case");
    assert_eq!(
        store
            .contacts_by_user("u1")
            .map(|c| c.key.name)
            .collect::<Vec<_>>(),
        ["alice"]
    );
    assert_eq!(store.contacts_by_user("nobody").count(), 0);
    assert_eq!(
        store
            .groups_by_identity("ns", "Newsletter", Visibility::Public)
            .len(),
        1
    );
    assert!(
        store
            .groups_by_identity("ns", "Newsletter", Visibility::Private)
            .is_empty()
    );
}

#[test]
fn updates_reindex_and_deletes_give_every_string_back() {
    let mut store = Store::default();
    store.apply_contact(&contact("alice", "old@example.com", Some("u1")));
    store.apply_contact(&contact("alice", "new@example.com", Some("u1")));
    assert_eq!(
        store.contacts_by_email("old@example.com").count(),
        0,
        "the old email is unindexed"
    );
    assert_eq!(store.contacts_by_email("new@example.com").count(), 1);
    store.apply_group(&group("news", "Newsletter", "public"));
    store.apply_membership(&membership("m1", "ns", "alice", "news"));
    store.apply_membership(&membership("m2", "elsewhere", "alice", "news"));
    store.apply_removal(&removal("r1", "alice", "news"));
    let names: Vec<_> = store
        .memberships_of(&r("alice"), &r("news"))
        .iter()
        .map(|m| (m.namespace, m.name))
        .collect();
    assert_eq!(
        names,
        [("ns", "m1"), ("elsewhere", "m2")],
        "memberships are found wherever they live"
    );
    assert_eq!(store.removals_of(&r("alice"), &r("news")).len(), 1);
    assert!(store.memberships_of(&r("bob"), &r("news")).is_empty());

    store.delete(ViewKind::Membership, "ns", "m1");
    assert_eq!(store.memberships_of(&r("alice"), &r("news")).len(), 1);
    for (kind, ns, name) in [
        (ViewKind::Membership, "elsewhere", "m2"),
        (ViewKind::Removal, "ns", "r1"),
        (ViewKind::ContactGroup, "ns", "news"),
        (ViewKind::Contact, "ns", "alice"),
    ] {
        store.delete(kind, ns, name);
    }
    store.delete(ViewKind::Contact, "ns", "never-existed");
    assert_eq!(
        store.symbol_count(),
        0,
        "no string outlives the objects that used it"
    );
    for kind in ViewKind::ALL {
        assert_eq!(store.len(kind), 0);
    }
}

#[test]
fn relist_replaces_a_kind_and_marks_it_synced() {
    let view = ClusterView::unsynced();
    assert!(!view.is_synced());
    let mut relist = None;
    apply_event::<Contact>(&view, Event::Init, &mut relist);
    apply_event(
        &view,
        Event::InitApply(contact("a", "a@example.com", None)),
        &mut relist,
    );
    apply_event(
        &view,
        Event::InitApply(contact("b", "b@example.com", None)),
        &mut relist,
    );
    apply_event::<Contact>(&view, Event::InitDone, &mut relist);
    assert_eq!(view.read().len(ViewKind::Contact), 2);
    assert!(
        view.unsynced_kinds()
            .iter()
            .all(|k| *k != ViewKind::Contact)
    );
    assert!(!view.is_synced(), "other kinds are still listing");

    // The watch expired; while it was down "a" was deleted and "c" created.
    apply_event::<Contact>(&view, Event::Init, &mut relist);
    apply_event(
        &view,
        Event::InitApply(contact("b", "b@example.com", None)),
        &mut relist,
    );
    assert!(
        view.read().contact("ns", "a").is_some(),
        "readers keep the old contents during a relist"
    );
    apply_event(
        &view,
        Event::InitApply(contact("c", "c@example.com", None)),
        &mut relist,
    );
    apply_event::<Contact>(&view, Event::InitDone, &mut relist);
    let store = view.read();
    let names: HashSet<_> = ["a", "b", "c"]
        .into_iter()
        .filter(|n| store.contact("ns", n).is_some())
        .collect();
    assert_eq!(names, HashSet::from(["b", "c"]));
    assert_eq!(store.contacts_by_email("a@example.com").count(), 0);
    drop(store);

    apply_event(
        &view,
        Event::Delete(contact("b", "b@example.com", None)),
        &mut relist,
    );
    apply_event(
        &view,
        Event::Apply(contact("d", "d@example.com", None)),
        &mut relist,
    );
    assert!(view.read().contact("ns", "b").is_none());
    assert!(view.read().contact("ns", "d").is_some());
}

#[test]
fn offline_views_are_synced_at_once() {
    assert!(ClusterView::offline(Store::default()).is_synced());
}
