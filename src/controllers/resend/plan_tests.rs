//! The sync's plans, decided from the view alone.

use serde_json::{Value, json};

use super::{contact, group, membership, optout};
use crate::api::common::ProviderName;
use crate::api::common::sync::{CONTACT_READY, FINALIZER, GROUP_READY, MEMBERSHIP_READY};
use crate::controllers::ObjectKey;
use crate::controllers::providers::joins;
use crate::controllers::providers::steps::Steps;
use crate::view::Store;

const RESEND: &[ProviderName] = &[ProviderName::Resend];

fn meta(ns: &str, name: &str, finalizer: bool, deleting: bool) -> Value {
    let mut meta = json!({"namespace": ns, "name": name, "uid": format!("uid-{name}-0123456789"), "generation": 2});
    if finalizer {
        meta["finalizers"] = json!([FINALIZER]);
    }
    if deleting {
        meta["deletionTimestamp"] = json!("2026-11-27T12:00:00Z");
    }
    meta
}

fn synced(condition: &str, generation: i64, segment: Option<&str>) -> Value {
    let mut status = json!({"conditions": [{"type": condition, "status": "True", "reason": "Synced",
        "message": "", "lastTransitionTime": "2026-11-27T12:00:00Z", "observedGeneration": generation},
        {"type": "Ready", "status": "True", "reason": "CreateSuccessful",
        "message": "", "lastTransitionTime": "2026-11-27T12:00:00Z", "observedGeneration": generation}]});
    if let Some(id) = segment {
        status["providers"] = json!([{"name": "Resend", "id": id}]);
    }
    status
}

fn contact(store: &mut Store, name: &str, email: &str, meta: Value, status: Value) {
    let c = json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Contact",
        "metadata": meta, "spec": {"email": email}, "status": status});
    let _ = name;
    store.apply_contact(&serde_json::from_value(c).unwrap());
}

fn group(store: &mut Store, visibility: &str, meta: Value, status: Value) {
    let g = json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroup",
        "metadata": meta, "spec": {"displayName": "News", "visibility": visibility}, "status": status});
    store.apply_group(&serde_json::from_value(g).unwrap());
}

fn pair(kind: &str, meta: Value, contact: &str, group: &str, status: Value) -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": kind, "metadata": meta,
        "spec": {"contactRef": {"namespace": "people", "name": contact},
                 "contactGroupRef": {"namespace": "groups", "name": group}},
        "status": status})
}

#[test]
fn a_new_contact_gets_the_finalizer_and_is_mirrored_once() {
    let mut store = Store::default();
    contact(
        &mut store,
        "ada",
        "ada@example.com",
        meta("people", "ada", false, false),
        json!({}),
    );
    assert_eq!(
        contact::plan(&store, "people", "ada", false, RESEND),
        contact::Plan::Sync(Steps {
            add_finalizer: true,
            opt_out: false,
            work: Some(()),
            repair_ready: false,
        })
    );
    contact(
        &mut store,
        "ada",
        "ada@example.com",
        meta("people", "ada", true, false),
        synced(CONTACT_READY, 2, Some("re_1")),
    );
    assert_eq!(
        contact::plan(&store, "people", "ada", false, RESEND),
        contact::Plan::Wait
    );
    assert_eq!(
        contact::plan(&store, "people", "ada", true, RESEND),
        contact::Plan::Sync(Steps {
            add_finalizer: false,
            opt_out: false,
            work: Some(()),
            repair_ready: false,
        }),
        "drift repair forces a settled contact"
    );
    // A spec change (generation 3) is not yet synced.
    let mut m = meta("people", "ada", true, false);
    m["generation"] = json!(3);
    contact(
        &mut store,
        "ada",
        "ada@example.com",
        m,
        synced(CONTACT_READY, 2, Some("re_1")),
    );
    assert!(matches!(
        contact::plan(&store, "people", "ada", false, RESEND),
        contact::Plan::Sync(Steps { work: Some(()), .. })
    ));
}

#[test]
fn a_deleted_contact_keeps_the_resend_contact_another_contact_shares() {
    let mut store = Store::default();
    contact(
        &mut store,
        "ada",
        "ada@example.com",
        meta("people", "ada", true, true),
        json!({}),
    );
    assert_eq!(
        contact::plan(&store, "people", "ada", false, RESEND),
        contact::Plan::Release {
            delete_remote: true
        }
    );
    contact(
        &mut store,
        "ada2",
        "ADA@example.com",
        meta("other", "ada2", true, false),
        json!({}),
    );
    assert_eq!(
        contact::plan(&store, "people", "ada", false, RESEND),
        contact::Plan::Release {
            delete_remote: false
        }
    );
    contact(
        &mut store,
        "gone",
        "g@example.com",
        meta("people", "gone", false, true),
        json!({}),
    );
    assert_eq!(
        contact::plan(&store, "people", "gone", false, RESEND),
        contact::Plan::Wait,
        "not ours to release"
    );
}

#[test]
fn a_pending_opt_out_is_acted_on_once() {
    let mut store = Store::default();
    let mut status = synced(CONTACT_READY, 2, Some("re_1"));
    status["conditions"].as_array_mut().unwrap().push(json!({"type": "Unsubscribed", "status": "True",
        "reason": "ProviderUnsubscribe", "message": "", "lastTransitionTime": "2026-11-27T12:00:00Z"}));
    contact(
        &mut store,
        "ada",
        "ada@example.com",
        meta("people", "ada", true, false),
        status.clone(),
    );
    assert_eq!(
        contact::plan(&store, "people", "ada", false, RESEND),
        contact::Plan::Sync(Steps {
            add_finalizer: false,
            opt_out: true,
            work: None,
            repair_ready: false,
        })
    );
    status["conditions"][2]["observedGeneration"] = json!(2);
    contact(
        &mut store,
        "ada",
        "ada@example.com",
        meta("people", "ada", true, false),
        status,
    );
    assert_eq!(
        contact::plan(&store, "people", "ada", false, RESEND),
        contact::Plan::Wait
    );
}

#[test]
fn a_group_with_a_known_segment_costs_nothing() {
    let mut store = Store::default();
    group(
        &mut store,
        "public",
        meta("groups", "news", false, false),
        json!({}),
    );
    assert_eq!(
        group::plan(&store, "groups", "news", false, RESEND),
        group::Plan::Sync(Steps {
            add_finalizer: true,
            opt_out: false,
            work: Some(()),
            repair_ready: false,
        })
    );
    group(
        &mut store,
        "public",
        meta("groups", "news", true, false),
        synced(GROUP_READY, 2, Some("seg_1")),
    );
    assert_eq!(
        group::plan(&store, "groups", "news", false, RESEND),
        group::Plan::Wait
    );
    group(
        &mut store,
        "public",
        meta("groups", "news", true, true),
        synced(GROUP_READY, 2, Some("seg_1")),
    );
    assert_eq!(
        group::plan(&store, "groups", "news", false, RESEND),
        group::Plan::Release {
            segment: Some("seg_1".into()),
            name: "groups/news-uid-news".into()
        }
    );
    assert_eq!(
        group::segment_name("ns", "g", "0123456789abcdef"),
        "ns/g-01234567"
    );
}

fn mirrored_pair(store: &mut Store) {
    contact(
        store,
        "ada",
        "ada@example.com",
        meta("people", "ada", true, false),
        synced(CONTACT_READY, 2, Some("re_1")),
    );
    group(
        store,
        "public",
        meta("groups", "news", true, false),
        synced(GROUP_READY, 2, Some("seg_1")),
    );
}

#[test]
fn a_membership_waits_for_its_contact_and_segment_and_never_follows_an_opt_out() {
    let mut store = Store::default();
    let m = pair(
        "ContactGroupMembership",
        meta("people", "m", true, false),
        "ada",
        "news",
        json!({}),
    );
    store.apply_membership(&serde_json::from_value(m.clone()).unwrap());
    assert_eq!(
        membership::plan(&store, "people", "m", false, RESEND),
        membership::Plan::Wait,
        "nothing mirrored yet"
    );
    mirrored_pair(&mut store);
    assert_eq!(
        membership::plan(&store, "people", "m", false, RESEND),
        membership::Plan::Sync(Steps {
            add_finalizer: false,
            opt_out: false,
            work: Some(("ada@example.com".into(), "seg_1".into())),
            repair_ready: false,
        })
    );
    let r = pair(
        "ContactGroupMembershipRemoval",
        meta("people", "r", false, false),
        "ada",
        "news",
        json!({}),
    );
    store.apply_removal(&serde_json::from_value(r).unwrap());
    assert_eq!(
        membership::plan(&store, "people", "m", false, RESEND),
        membership::Plan::Wait,
        "opted out: never added"
    );
}

#[test]
fn a_deleted_membership_never_hangs_on_missing_referents() {
    let mut store = Store::default();
    let m = pair(
        "ContactGroupMembership",
        meta("people", "m", true, true),
        "ada",
        "news",
        json!({}),
    );
    store.apply_membership(&serde_json::from_value(m).unwrap());
    assert_eq!(
        membership::plan(&store, "people", "m", false, RESEND),
        membership::Plan::Release {
            remote: None,
            leave: None
        }
    );
    mirrored_pair(&mut store);
    assert_eq!(
        membership::plan(&store, "people", "m", false, RESEND),
        membership::Plan::Release {
            remote: Some(("ada@example.com".into(), "seg_1".into())),
            leave: None,
        },
        "deleted without a removal (the group or the operator): the topic is left alone"
    );
    let r = pair(
        "ContactGroupMembershipRemoval",
        meta("people", "r", false, false),
        "ada",
        "news",
        json!({}),
    );
    store.apply_removal(&serde_json::from_value(r).unwrap());
    let membership::Plan::Release { leave, .. } =
        membership::plan(&store, "people", "m", false, RESEND)
    else {
        panic!("a deleted membership is released");
    };
    assert_eq!(
        leave,
        Some(membership::Leave {
            email: "ada@example.com".into(),
            group: ("groups".into(), "news".into()),
            removals: vec![("people".into(), "r".into())],
        }),
        "the person left a public group: out of its topic"
    );
    let settled = pair(
        "ContactGroupMembership",
        meta("people", "s", true, false),
        "ada",
        "news",
        synced(MEMBERSHIP_READY, 2, None),
    );
    store.apply_membership(&serde_json::from_value(settled).unwrap());
    assert_eq!(
        membership::plan(&store, "people", "s", false, RESEND),
        membership::Plan::Wait
    );
}

#[test]
fn opt_outs_remove_public_groups_only() {
    let mut store = Store::default();
    mirrored_pair(&mut store);
    group(
        &mut store,
        "private",
        meta("groups", "staff", true, false),
        json!({}),
    );
    for (name, g) in [("m1", "news"), ("m2", "staff")] {
        let m = pair(
            "ContactGroupMembership",
            meta("people", name, true, false),
            "ada",
            g,
            json!({}),
        );
        store.apply_membership(&serde_json::from_value(m).unwrap());
    }
    let removals = optout::removals_for(&store, &ObjectKey::new("people", "ada"));
    assert_eq!(removals.len(), 1, "{removals:?}");
    assert_eq!(removals[0].1.contact_group_ref.name, "news");
    assert!(removals[0].0.starts_with("unsubscribe-ada-news-"));
    let again = optout::removals_for(&store, &ObjectKey::new("people", "ada"));
    assert_eq!(removals[0].0, again[0].0, "named deterministically");
}

/// A contact's create carries exactly the segments the membership plan would add: none while
/// the group is unmirrored (but worth waiting for), none once a removal covers the pair.
#[test]
fn a_create_carries_the_segments_the_membership_plan_would_add() {
    let mut store = Store::default();
    contact(
        &mut store,
        "ada",
        "ada@example.com",
        meta("people", "ada", true, false),
        json!({}),
    );
    group(
        &mut store,
        "public",
        meta("groups", "news", true, false),
        json!({}),
    );
    let m = pair(
        "ContactGroupMembership",
        meta("people", "m", true, false),
        "ada",
        "news",
        json!({}),
    );
    store.apply_membership(&serde_json::from_value(m).unwrap());
    let joins = joins::joins(&store, "people", "ada", ProviderName::Resend);
    assert!(joins.groups.is_empty() && joins.groups_pending, "{joins:?}");
    group(
        &mut store,
        "public",
        meta("groups", "news", true, false),
        synced(GROUP_READY, 2, Some("seg_1")),
    );
    let joins = joins::joins(&store, "people", "ada", ProviderName::Resend);
    assert_eq!(
        joins.groups,
        [(ObjectKey::new("people", "m"), "seg_1".into())]
    );
    assert!(!joins.groups_pending);
    let r = pair(
        "ContactGroupMembershipRemoval",
        meta("people", "r", false, false),
        "ada",
        "news",
        json!({}),
    );
    store.apply_removal(&serde_json::from_value(r).unwrap());
    let joins = joins::joins(&store, "people", "ada", ProviderName::Resend);
    assert!(
        joins.groups.is_empty() && !joins.groups_pending,
        "{joins:?}"
    );
}
