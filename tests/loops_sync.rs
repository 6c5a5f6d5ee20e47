//! Loops sync on the provider layer, beside Resend: the stateful API server (RBAC checked, the
//! view fed like a watch) against the stateful fake Resend and fake Loops. What is checked:
//! every object carries both providers' conditions and entries and `Ready` over both; Loops costs
//! one call per new contact (lists included), one per membership change, none after a restart;
//! nobody who opted out is ever sent `subscribed: true`; one provider failing never stalls the
//! other.

mod support;

use std::time::Duration;

use http::Method;
use milo_webhook::api::common::sync::{
    CONTACT_READY, LOOPS_CONTACT_READY, LOOPS_GROUP_READY, LOOPS_MEMBERSHIP_READY, READY,
};
use serde_json::{Value, json};
use support::fake_loops::{self, Fault};
use support::fake_resend::FakeConfig;
use support::resend_harness::{
    CONTACTS, GROUPS, Harness, MEMBERSHIPS, REMOVALS, contact, group, membership,
};

/// A group naming the Loops list `list`.
fn listed_group(name: &str, visibility: &str, list: &str) -> Value {
    let mut g = group(name, visibility);
    g["spec"]["providers"] = json!([{"name": "Loops", "id": list}]);
    g
}

/// The condition `type_` of `object`.
fn condition<'o>(object: &'o Value, type_: &str) -> Option<&'o Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Whether `object` has `type_` True for its generation.
fn is_true(object: &Value, type_: &str) -> bool {
    condition(object, type_).is_some_and(|c| {
        c["status"] == "True" && c["observedGeneration"] == object["metadata"]["generation"]
    })
}

/// The ids of `object`'s `status.providers`, by provider name.
fn entries(object: &Value) -> Vec<(String, String)> {
    let mut e: Vec<(String, String)> = object["status"]["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    e.sort();
    e
}

/// Calls to Loops by kind: (upserts, list reads, others).
fn loops_calls(h: &Harness) -> (usize, usize, Vec<String>) {
    let requests = h.fake_loops().requests();
    let upserts = requests
        .iter()
        .filter(|r| r.method == Method::PUT && r.path == "/contacts/update")
        .count();
    let lists = requests
        .iter()
        .filter(|r| r.method == Method::GET && r.path == "/lists")
        .count();
    let other = requests
        .iter()
        .filter(|r| r.path != "/contacts/update" && r.path != "/lists")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    (upserts, lists, other)
}

/// Both providers, Loops at 1000/s; a public group `news` on a Loops list, a private `staff`
/// that names none; three contacts, four memberships. Returns the harness and the list id.
async fn both(rate_limit: Option<usize>) -> (Harness, String) {
    let mut h = Harness::new(FakeConfig::default(), 1000.0).await;
    let fake = fake_loops::start(fake_loops::FakeConfig {
        rate_limit,
        ..Default::default()
    })
    .await;
    let list = fake.insert_list("News", true);
    h.attach_loops(fake, 1000.0, true);
    h.live.create(CONTACTS, contact("ada", "ada@example.com"));
    h.live.create(CONTACTS, contact("bob", "bob@example.com"));
    h.live.create(CONTACTS, contact("cy", "cy@example.com"));
    h.live.create(GROUPS, listed_group("news", "public", &list));
    h.live.create(GROUPS, group("staff", "private"));
    h.live
        .create(MEMBERSHIPS, membership("ada-news", "ada", "news"));
    h.live
        .create(MEMBERSHIPS, membership("bob-news", "bob", "news"));
    h.live
        .create(MEMBERSHIPS, membership("ada-staff", "ada", "staff"));
    h.live
        .create(MEMBERSHIPS, membership("cy-staff", "cy", "staff"));
    (h, list)
}

/// Every object Ready.
async fn all_ready(h: &Harness) {
    h.until("every object Ready", |h| {
        [CONTACTS, GROUPS, MEMBERSHIPS]
            .iter()
            .all(|plural| h.live.all(plural).iter().all(|o| is_true(o, READY)))
    })
    .await;
}

#[tokio::test]
async fn a_first_sync_mirrors_to_both_with_one_loops_call_per_contact() {
    let (mut h, list) = both(None).await;
    h.start();
    all_ready(&h).await;

    for c in h.live.all(CONTACTS) {
        assert!(is_true(&c, CONTACT_READY), "{c}");
        assert!(is_true(&c, LOOPS_CONTACT_READY), "{c}");
        let names: Vec<String> = entries(&c).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Loops", "Resend"], "{c}");
        let uid = c["metadata"]["uid"].as_str().unwrap();
        let remote = h.fake_loops().contact_by_user_id(uid).expect("in Loops");
        assert_eq!(remote.email, c["spec"]["email"]);
    }
    let news = h.live.get(GROUPS, "groups", "news").unwrap();
    assert!(is_true(&news, LOOPS_GROUP_READY), "{news}");
    assert!(entries(&news).contains(&("Loops".into(), list.clone())));
    // The private group names no list: said once, not retried, and Ready does not wait for it.
    let staff = h.live.get(GROUPS, "groups", "staff").unwrap();
    let left_out = condition(&staff, LOOPS_GROUP_READY).expect("Loops says why");
    assert_eq!(left_out["status"], "False");
    assert_eq!(left_out["reason"], "NotInLoops");
    assert!(is_true(&staff, READY), "{staff}");
    for m in ["ada-news", "bob-news"] {
        let m = h.live.get(MEMBERSHIPS, "people", m).unwrap();
        assert!(is_true(&m, LOOPS_MEMBERSHIP_READY), "{m}");
    }
    let ada_staff = h.live.get(MEMBERSHIPS, "people", "ada-staff").unwrap();
    assert!(condition(&ada_staff, LOOPS_MEMBERSHIP_READY).is_none());
    assert!(
        ada_staff["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| !f.contains(&json!("notification.miloapis.com/loops-sync")))
    );

    let mut members = h.fake_loops().members(&list);
    members.sort();
    assert_eq!(members, ["ada@example.com", "bob@example.com"]);
    // One upsert per new contact, its list riding along; the lists read once.
    let (upserts, lists, other) = loops_calls(&h);
    assert_eq!((upserts, lists), (3, 1), "other: {other:?}");
    assert!(other.is_empty(), "{other:?}");
    assert!(h.fake_loops().subscribed_true_writes().is_empty());
    h.no_rbac_denials();

    // A restart (a new leader with no memory) costs no call to either provider.
    let (loops_before, resend_before) = (h.fake_loops().requests().len(), h.fake.requests().len());
    h.restart(1000.0).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(h.fake_loops().requests().len(), loops_before);
    assert_eq!(h.fake.requests().len(), resend_before);
}

#[tokio::test]
async fn an_email_change_is_one_upsert_in_place_and_a_membership_change_one_more() {
    let (mut h, list) = both(None).await;
    h.start();
    all_ready(&h).await;
    let ada = h.live.get(CONTACTS, "people", "ada").unwrap();
    let uid = ada["metadata"]["uid"].as_str().unwrap().to_owned();
    let loops_id = h.fake_loops().contact_by_user_id(&uid).unwrap().id;
    let (upserts, ..) = loops_calls(&h);

    h.live.update_spec(
        CONTACTS,
        "people",
        "ada",
        json!({"email": "ada@new.example", "givenName": "ada"}),
    );
    h.until("the new email mirrored", |h| {
        h.fake_loops()
            .contact_by_user_id(&uid)
            .is_some_and(|c| c.email == "ada@new.example")
            && is_true(&h.live.get(CONTACTS, "people", "ada").unwrap(), READY)
    })
    .await;
    let remote = h.fake_loops().contact_by_user_id(&uid).unwrap();
    assert_eq!(remote.id, loops_id, "changed in place, not recreated");
    assert!(remote.lists.contains(&list), "kept its list");
    assert_eq!(loops_calls(&h).0, upserts + 1);

    // Leaving: the list set false with one more call; the finalizer let go.
    h.live.delete(MEMBERSHIPS, "people", "bob-news");
    h.until("bob off the list", |h| {
        !h.fake_loops()
            .members(&list)
            .contains(&"bob@example.com".to_owned())
            && h.live.get(MEMBERSHIPS, "people", "bob-news").is_none()
    })
    .await;
    assert_eq!(loops_calls(&h).0, upserts + 2);
    assert!(h.fake_loops().subscribed_true_writes().is_empty());
}

#[tokio::test]
async fn a_person_who_opted_out_is_created_unsubscribed_and_never_sent_true() {
    let (mut h, list) = both(None).await;
    let mut dee = contact("dee", "dee@example.com");
    dee["status"] = json!({"conditions": [{"type": "Unsubscribed", "status": "True",
        "reason": "ProviderUnsubscribe", "message": "opted out at Resend",
        "lastTransitionTime": "2026-11-27T12:00:00Z"}]});
    h.live.create(CONTACTS, dee);
    h.live
        .create(MEMBERSHIPS, membership("dee-news", "dee", "news"));
    h.start();
    h.until("dee mirrored to Loops", |h| {
        is_true(
            &h.live.get(CONTACTS, "people", "dee").unwrap(),
            LOOPS_CONTACT_READY,
        )
    })
    .await;
    let uid = h.live.get(CONTACTS, "people", "dee").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let remote = h.fake_loops().contact_by_user_id(&uid).unwrap();
    assert!(!remote.subscribed, "created unsubscribed");
    // Her opt-out became the removal of the public group; the list never had her.
    h.until("dee's removal made", |h| {
        h.live
            .all(REMOVALS)
            .iter()
            .any(|r| r["spec"]["contactRef"]["name"] == "dee")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !h.fake_loops()
            .members(&list)
            .contains(&"dee@example.com".to_owned())
    );
    assert!(h.fake_loops().subscribed_true_writes().is_empty());
}

#[tokio::test]
async fn loops_failing_never_stalls_resend_and_ready_follows_both() {
    let (mut h, _) = both(None).await;
    // Loops answers 500 to every upsert for a while.
    h.fake_loops()
        .fail_next_matching(10_000, Method::PUT, "/contacts/update", Fault::ServerError);
    h.start();
    h.until("Resend done with every contact", |h| {
        h.live
            .all(CONTACTS)
            .iter()
            .all(|c| is_true(c, CONTACT_READY))
    })
    .await;
    h.until("Loops' failure recorded", |h| {
        h.live
            .all(CONTACTS)
            .iter()
            .all(|c| condition(c, LOOPS_CONTACT_READY).is_some_and(|l| l["status"] == "False"))
    })
    .await;
    for c in h.live.all(CONTACTS) {
        assert_eq!(condition(&c, READY).unwrap()["status"], "False", "{c}");
        assert!(entries(&c).iter().any(|(n, _)| n == "Resend"), "{c}");
    }
    // Loops comes back: everything becomes Ready without touching Resend again.
    let resend_before = h.fake.requests().len();
    h.fake_loops().clear_faults();
    all_ready(&h).await;
    assert_eq!(h.fake.requests().len(), resend_before);
}

#[tokio::test]
async fn a_list_loops_does_not_have_is_reported_and_its_members_wait() {
    let (mut h, _) = both(None).await;
    h.live.create(
        GROUPS,
        listed_group("gone", "public", "list-that-is-not-there"),
    );
    h.live
        .create(MEMBERSHIPS, membership("ada-gone", "ada", "gone"));
    h.start();
    h.until("the missing list reported", |h| {
        let g = h.live.get(GROUPS, "groups", "gone").unwrap();
        condition(&g, LOOPS_GROUP_READY).is_some_and(|c| c["reason"] == "ListNotFound")
    })
    .await;
    let gone = h.live.get(GROUPS, "groups", "gone").unwrap();
    assert_eq!(condition(&gone, READY).unwrap()["status"], "False");
    let m = h.live.get(MEMBERSHIPS, "people", "ada-gone").unwrap();
    assert!(!is_true(&m, LOOPS_MEMBERSHIP_READY), "{m}");
    // Nothing ever named the missing list to Loops.
    assert!(
        h.fake_loops()
            .requests()
            .iter()
            .all(|r| !r.body.contains("list-that-is-not-there"))
    );
}

#[tokio::test]
async fn loops_alone_mirrors_and_acts_on_opt_outs() {
    let mut h = Harness::new(FakeConfig::default(), 1000.0).await;
    let fake = fake_loops::start(fake_loops::FakeConfig::default()).await;
    let list = fake.insert_list("News", true);
    h.attach_loops(fake, 1000.0, false);
    h.live.create(CONTACTS, contact("ada", "ada@example.com"));
    h.live.create(GROUPS, listed_group("news", "public", &list));
    h.live
        .create(MEMBERSHIPS, membership("ada-news", "ada", "news"));
    let mut eve = contact("eve", "eve@example.com");
    eve["status"] = json!({"conditions": [{"type": "Unsubscribed", "status": "True",
        "reason": "ProviderUnsubscribe", "message": "opted out at Loops",
        "lastTransitionTime": "2026-11-27T12:00:00Z"}]});
    h.live.create(CONTACTS, eve);
    h.live
        .create(MEMBERSHIPS, membership("eve-news", "eve", "news"));
    h.start();
    // With Loops the only provider, its contact loop turns the opt-out into removals.
    h.until("eve's removal made", |h| {
        h.live
            .all(REMOVALS)
            .iter()
            .any(|r| r["spec"]["contactRef"]["name"] == "eve")
    })
    .await;
    h.until("ada Ready", |h| {
        ["ada"]
            .iter()
            .all(|n| is_true(&h.live.get(CONTACTS, "people", n).unwrap(), READY))
            && is_true(
                &h.live.get(MEMBERSHIPS, "people", "ada-news").unwrap(),
                READY,
            )
    })
    .await;
    assert_eq!(h.fake_loops().members(&list), ["ada@example.com"]);
    assert!(h.fake.requests().is_empty(), "Resend is not configured");
    let ada = h.live.get(CONTACTS, "people", "ada").unwrap();
    assert_eq!(entries(&ada).len(), 1);
    assert_eq!(
        condition(&ada, READY).unwrap()["message"],
        "mirrored to Loops"
    );
}

#[tokio::test]
async fn a_private_list_left_at_loops_is_never_joined_again_by_the_sync() {
    let mut h = Harness::new(FakeConfig::default(), 1000.0).await;
    let fake = fake_loops::start(fake_loops::FakeConfig::default()).await;
    let list = fake.insert_list("Staff", false);
    h.attach_loops(fake, 1000.0, true);
    h.live.create(CONTACTS, contact("ada", "ada@example.com"));
    h.live.create(CONTACTS, contact("bob", "bob@example.com"));
    h.live
        .create(GROUPS, listed_group("staff", "private", &list));
    // Ada left the staff list on Loops' preference page; the Loops events receiver marked it.
    let mut held = membership("ada-staff", "ada", "staff");
    held["status"] = json!({"conditions": [{"type": "LoopsUnsubscribed", "status": "True",
        "reason": "LoopsUnsubscribe", "message": "left the list at Loops",
        "lastTransitionTime": "2026-11-27T12:00:00Z"}]});
    h.live.create(MEMBERSHIPS, held);
    h.live
        .create(MEMBERSHIPS, membership("bob-staff", "bob", "staff"));
    h.start();
    all_ready(&h).await;
    // Ready does not wait for Loops on Ada's membership: she chose to leave the list.
    assert_eq!(h.fake_loops().members(&list), ["bob@example.com"]);
    let ada_staff = h.live.get(MEMBERSHIPS, "people", "ada-staff").unwrap();
    assert!(
        condition(&ada_staff, LOOPS_MEMBERSHIP_READY).is_none(),
        "{ada_staff}"
    );
    assert!(
        h.fake_loops()
            .requests()
            .iter()
            .filter(|r| r.body.contains("ada@example.com"))
            .all(|r| !r.body.contains(&format!("\"{list}\":true"))),
        "Ada's list was sent true"
    );
}
