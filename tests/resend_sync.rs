//! Provider sync end to end: the three sync loops on the stateful API server (`live_api`, which
//! checks RBAC and feeds the view like a watch) against the stateful fake Resend.

mod support;

use std::sync::Arc;
use std::time::Duration;

use milo_webhook::api::common::sync::{CONTACT_READY, FINALIZER};
use milo_webhook::controllers::resend::{ResendSync, SyncMetrics, drift};
use serde_json::json;
use support::fake_resend::{FakeConfig, Fault};
use support::resend_harness::{
    CONTACTS, GROUPS, Harness, MEMBERSHIPS, contact, group, membership, populate, segment_of,
    settings, sorted,
};

#[tokio::test]
async fn first_sync_mirrors_everything_within_the_call_budget_then_costs_nothing() {
    let mut h = Harness::new(FakeConfig::default(), 100.0).await;
    populate(&h.live);
    h.start();
    h.all_synced().await;
    // One listing of the (empty) account's contacts, 1 create per contact carrying its
    // segments, 1 listing and 1 create per group, 1 topic listing and 1 topic per public group;
    // memberships ride on their contact's create.
    assert_eq!(
        h.sync.client.calls(),
        1 + 3 + (1 + 2) + (1 + 1),
        "{:?}",
        h.fake.requests()
    );
    assert_eq!(h.fake.contacts().len(), 3);
    let names: Vec<String> = sorted(h.fake.segments().into_iter().map(|s| s.name).collect());
    assert!(names[0].starts_with("groups/news-uid-"), "{names:?}");
    assert!(names[1].starts_with("groups/staff-uid-"), "{names:?}");
    let news = segment_of(&h, "news");
    assert_eq!(
        sorted(h.fake.members(&news)),
        ["ada@example.com", "bob@example.com"]
    );
    let ada = h.live.get(CONTACTS, "people", "ada").unwrap();
    let providers = ada["status"]["providers"].as_array().unwrap();
    assert!(
        providers
            .iter()
            .any(|p| p["name"] == "Loops" && p["id"] == "loops-1"),
        "{providers:?}"
    );
    assert!(
        providers.iter().any(|p| p["name"] == "Resend"),
        "{providers:?}"
    );
    assert_eq!(
        ada["status"]["providerID"],
        h.fake.contact("ada@example.com").unwrap().id
    );
    let types: Vec<&str> = ada["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    for wanted in ["LoopsContactReady", "ResendContactReady", "Ready"] {
        assert!(types.contains(&wanted), "{types:?}");
    }
    assert_eq!(ada["metadata"]["finalizers"], json!([FINALIZER]));
    // Nothing changed: a full resync (every kind relisted) makes no call at all, even in a new
    // process that remembers nothing.
    let before = h.fake.requests().len();
    h.restart(100.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.fake.requests().len(),
        before,
        "a settled cluster costs no provider call"
    );
    h.no_rbac_denials();
}

#[tokio::test]
async fn lost_answers_and_crashes_never_duplicate_anything() {
    let mut h = Harness::new(FakeConfig::default(), 100.0).await;
    populate(&h.live);
    // Every create's first answer is lost after Resend applied it.
    h.fake
        .fail_next_matching(3, http::Method::POST, "/contacts", Fault::DropAnswer);
    h.fake
        .fail_next_matching(1, http::Method::POST, "/segments", Fault::DropAnswerAs500);
    h.start();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // And the leader crashes half-way.
    h.restart(100.0).await;
    h.all_synced().await;
    assert_eq!(h.fake.contacts().len(), 3, "no second contact");
    assert_eq!(h.fake.segments().len(), 2, "no second segment");
    let news = segment_of(&h, "news");
    assert_eq!(
        sorted(h.fake.members(&news)),
        ["ada@example.com", "bob@example.com"]
    );
    h.no_rbac_denials();
}

#[tokio::test]
async fn an_email_change_is_patched_in_place_and_keeps_the_opt_out() {
    let mut h = Harness::new(FakeConfig::default(), 100.0).await;
    h.live.create(CONTACTS, contact("ada", "ada@example.com"));
    h.start();
    h.all_synced().await;
    let id = h.fake.contact("ada@example.com").unwrap().id;
    h.fake.set_unsubscribed("ada@example.com", true);
    h.live.update_spec(
        CONTACTS,
        "people",
        "ada",
        json!({"email": "ada@new.example.com", "familyName": "L"}),
    );
    h.all_synced().await;
    let contacts = h.fake.contacts();
    assert_eq!(contacts.len(), 1, "never deleted and recreated");
    assert_eq!(contacts[0].id, id);
    assert_eq!(contacts[0].email, "ada@new.example.com");
    assert!(contacts[0].unsubscribed, "the person's opt-out is kept");
    let patches: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == http::Method::PATCH)
        .collect();
    assert_eq!(patches.len(), 1, "one PATCH: {patches:?}");
}

#[tokio::test]
async fn a_429_storm_is_waited_out_and_the_rate_is_kept() {
    let config = FakeConfig {
        rate_limit: Some(10),
        ..FakeConfig::default()
    };
    let mut h = Harness::new(config, 10.0).await;
    populate(&h.live);
    h.fake.fail_next(1, Fault::RateLimited { retry_after: 2 });
    h.start();
    h.all_synced().await;
    let log = h.fake.requests();
    let limited = log
        .iter()
        .find(|r| r.status == 429)
        .expect("a 429 was answered")
        .at;
    // Requests already on the wire when the 429 was answered arrive within moments; after
    // those, nothing until retry-after has passed.
    let early: Vec<_> = log
        .iter()
        .filter(|r| r.at > limited + Duration::from_millis(100))
        .filter(|r| r.at < limited + Duration::from_millis(1950))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(early.is_empty(), "calls before retry-after: {early:?}");
    assert_eq!(
        h.fake.rate_limit_violations(),
        0,
        "never over the account's rate"
    );
}

#[tokio::test]
async fn drift_is_repaired_from_listings() {
    let mut h = Harness::new(FakeConfig::default(), 100.0).await;
    populate(&h.live);
    h.start();
    h.all_synced().await;
    let news = segment_of(&h, "news");
    let staff = segment_of(&h, "staff");
    // In the Resend dashboard: the news segment and cy's contact are deleted, and a stranger is
    // added to staff.
    assert!(h.fake.remove_segment(&news));
    assert!(h.fake.remove_contact("cy@example.com"));
    h.fake.insert_contact("stranger@example.com", None);
    h.fake.add_member("stranger@example.com", &staff);
    let report = drift::repair(&h.sync).await.unwrap();
    assert_eq!(report.segments_missing, 1, "{report:?}");
    assert_eq!(report.contacts_missing, 1, "{report:?}");
    assert_eq!(report.strays_removed, 1, "{report:?}");
    h.until("news recreated with its members", |h| {
        let id = segment_of(h, "news");
        id != news && sorted(h.fake.members(&id)) == ["ada@example.com", "bob@example.com"]
    })
    .await;
    h.until("cy back in staff", |h| {
        h.fake.contact("cy@example.com").is_some()
            && sorted(h.fake.members(&staff)) == ["ada@example.com", "cy@example.com"]
    })
    .await;
    let again = drift::repair(&h.sync).await.unwrap();
    assert_eq!(
        again,
        drift::DriftReport::default(),
        "repaired drift stays repaired"
    );
}

#[tokio::test]
async fn deleting_each_kind_removes_its_counterpart_and_never_hangs() {
    let mut h = Harness::new(FakeConfig::default(), 100.0).await;
    populate(&h.live);
    h.start();
    h.all_synced().await;
    let news = segment_of(&h, "news");
    h.live.delete(MEMBERSHIPS, "people", "bob-news");
    h.until("bob-news gone", |h| {
        h.live.get(MEMBERSHIPS, "people", "bob-news").is_none()
    })
    .await;
    assert_eq!(h.fake.members(&news), ["ada@example.com"]);
    h.live.delete(CONTACTS, "people", "bob");
    h.until("bob gone", |h| {
        h.live.get(CONTACTS, "people", "bob").is_none()
    })
    .await;
    assert!(h.fake.contact("bob@example.com").is_none());
    // The group goes first; its membership's deletion must not wait for a segment that is gone.
    h.live.delete(GROUPS, "groups", "news");
    h.until("news gone", |h| {
        h.live.get(GROUPS, "groups", "news").is_none()
    })
    .await;
    assert!(h.fake.segments().iter().all(|s| s.id != news));
    h.live.delete(MEMBERSHIPS, "people", "ada-news");
    h.until("ada-news gone", |h| {
        h.live.get(MEMBERSHIPS, "people", "ada-news").is_none()
    })
    .await;
    h.no_rbac_denials();
}

#[tokio::test]
async fn a_quota_429_is_recorded_and_retried_only_after_the_reset() {
    let mut h = Harness::new(FakeConfig::default(), 100.0).await;
    h.live.create(CONTACTS, contact("ada", "ada@example.com"));
    h.fake.fail_next_matching(
        1,
        http::Method::POST,
        "/contacts",
        Fault::Quota { retry_after: 3600 },
    );
    h.start();
    h.until("the quota recorded on the contact", |h| {
        let ada = h.live.get(CONTACTS, "people", "ada").unwrap();
        ada["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == CONTACT_READY
                    && c["status"] == "False"
                    && c["reason"] == "QuotaExceeded"
            })
        })
    })
    .await;
    let calls = h.fake.requests().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.fake.requests().len(),
        calls,
        "nothing is retried before the quota resets"
    );
    assert!(h.fake.contacts().is_empty());
}

/// A status write that fails after the provider call must not repeat the call: the sync
/// remembers Resend's answer until the status lands (the real API server refused every
/// membership status write once, and each retry spent the account's rate on a repeat).
#[tokio::test]
async fn a_failing_status_write_never_repeats_the_provider_call() {
    let mut h = Harness::new(FakeConfig::default(), 100.0).await;
    let mut ctx = h.live.context(settings());
    ctx.backoff = milo_webhook::controllers::backoff::RetryBackoff::new(
        Duration::from_millis(10),
        Duration::from_millis(40),
    );
    h.sync = Arc::new(ResendSync::new(
        Arc::new(ctx),
        h.sync.client.clone(),
        SyncMetrics::default(),
    ));
    h.live.create(CONTACTS, contact("ada", "ada@example.com"));
    h.live.create(GROUPS, group("news", "public"));
    h.live
        .create(MEMBERSHIPS, membership("ada-news", "ada", "news"));
    let status = |plural: &str, ns: &str, name: &str| {
        format!(
            "PATCH /apis/notification.miloapis.com/v1alpha1/namespaces/{ns}/{plural}/{name}/status"
        )
    };
    let contact_status = status(CONTACTS, "people", "ada");
    let membership_status = status(MEMBERSHIPS, "people", "ada-news");
    {
        let mut state = h.live.state.lock().unwrap();
        state.fail_once = [contact_status.clone(), membership_status.clone()]
            .into_iter()
            .flat_map(|path| std::iter::repeat_n(path, 5))
            .collect();
    }
    h.start();
    h.all_synced().await;
    let state = h.live.state.lock().unwrap();
    assert!(state.fail_once.is_empty(), "every injected failure fired");
    let writes = |path: &str| state.requests.iter().filter(|r| *r == path).count();
    assert!(writes(&contact_status) >= 6, "{:?}", state.requests);
    assert!(writes(&membership_status) >= 6, "{:?}", state.requests);
    drop(state);
    let requests = h.fake.requests();
    let calls = |method: &str, path: &dyn Fn(&str) -> bool| {
        requests
            .iter()
            .filter(|r| r.method == method && path(&r.path))
            .count()
    };
    // One listing and one create (carrying the membership's segment) for the new contact: as
    // many as with no failure at all.
    let listings = calls("GET", &|p| p.starts_with("/contacts?"));
    let lookups = calls("GET", &|p| p.starts_with("/contacts/"));
    let creates = calls("POST", &|p| p == "/contacts");
    let adds = calls("POST", &|p| p.contains("/segments/"));
    assert_eq!(
        (listings, lookups, creates, adds),
        (1, 0, 1, 0),
        "{requests:?}"
    );
    assert_eq!(
        h.sync.core.answers.unrecorded(),
        0,
        "nothing waits once recorded"
    );
    h.no_rbac_denials();
}

/// The sync's own writes wake it again before the view shows its status write (on a real API
/// server, the finalizer's watch event arrives first): that wake-up calls Resend no more.
#[tokio::test]
async fn a_wake_before_the_view_shows_the_status_calls_resend_no_more() {
    let mut h = Harness::new(FakeConfig::default(), 100.0).await;
    h.live.create(CONTACTS, contact("ada", "ada@example.com"));
    h.live.create(GROUPS, group("news", "public"));
    h.live
        .create(MEMBERSHIPS, membership("ada-news", "ada", "news"));
    h.start();
    h.all_synced().await;
    let before = h.fake.requests().len();
    h.live.state.lock().unwrap().lag_status = true;
    h.live
        .update_spec(CONTACTS, "people", "ada", json!({"givenName": "Ada"}));
    h.until("the new name mirrored", |h| {
        h.fake
            .contact("ada@example.com")
            .unwrap()
            .first_name
            .as_deref()
            == Some("Ada")
    })
    .await;
    h.until("its status written", |h| {
        h.ready(CONTACTS, CONTACT_READY) == 1
    })
    .await;
    // The view still shows generation 2 unsynced; wake the contact and its membership again.
    for _ in 0..3 {
        h.sync
            .core
            .ctx
            .view
            .announce(milo_webhook::view::ViewChange::Applied(
                milo_webhook::view::ViewKind::Contact,
                "people".into(),
                "ada".into(),
            ));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after: Vec<String> = h.fake.requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        after.len(),
        1,
        "one PATCH of the contact, no repeat: {after:?}"
    );
    assert!(after[0].starts_with("PATCH /contacts/"), "{after:?}");
    h.no_rbac_denials();
}
