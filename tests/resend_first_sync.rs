//! A first sync at the floor of provider calls: one listing of the account's contacts instead of
//! a look-up per contact, each contact created together with the segments its memberships join,
//! a lost create answer adopted rather than repeated, and consent carried through all of it.

mod support;

use std::time::Duration;

use http::Method;
use milo_webhook::api::common::sync::{CONTACT_READY, MEMBERSHIP_READY};
use serde_json::{Value, json};
use support::fake_resend::{FakeConfig, Fault, RequestRecord};
use support::resend_harness::{
    CONTACTS, GROUPS, Harness, MEMBERSHIPS, REMOVALS, calls, contact, group, membership, populate,
    segment_of, sorted,
};

/// The fake's default page, so that the client's own `limit=100` is what pages the listing.
fn config() -> FakeConfig {
    FakeConfig::default()
}

struct Tally {
    list_pages: usize,
    lookups: usize,
    creates: usize,
    adds: usize,
    segment_calls: usize,
    topic_calls: usize,
    other: Vec<String>,
}

/// Sorts the Resend calls of `requests` by what they are.
fn tally(requests: &[RequestRecord]) -> Tally {
    let mut t = Tally {
        list_pages: 0,
        lookups: 0,
        creates: 0,
        adds: 0,
        segment_calls: 0,
        topic_calls: 0,
        other: Vec::new(),
    };
    for r in requests {
        let path = r.path.as_str();
        match (r.method.clone(), path) {
            (Method::GET, p) if p.starts_with("/contacts?") => t.list_pages += 1,
            (Method::GET, p) if p.starts_with("/contacts/") => t.lookups += 1,
            (Method::POST, "/contacts") => t.creates += 1,
            (Method::POST, p) if p.starts_with("/contacts/") && p.contains("/segments/") => {
                t.adds += 1
            }
            (_, p) if p.starts_with("/segments") => t.segment_calls += 1,
            (_, p) if p.starts_with("/topics") => t.topic_calls += 1,
            _ => t.other.push(format!("{} {path}", r.method)),
        }
    }
    t
}

/// The segments each create asked for, by email.
fn create_segments(requests: &[RequestRecord]) -> Vec<(String, Vec<String>)> {
    requests
        .iter()
        .filter(|r| r.method == Method::POST && r.path == "/contacts")
        .map(|r| {
            let body: Value = serde_json::from_str(&r.body).unwrap();
            let segments = body["segments"]
                .as_array()
                .map(|s| s.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            (body["email"].as_str().unwrap().to_owned(), segments)
        })
        .collect()
}

/// 250 contacts in 3 groups; 40 of them already at Resend (with the same names), among 160
/// strangers, so the listing takes two pages of 100.
#[tokio::test]
async fn a_first_sync_lists_once_and_creates_each_contact_with_its_segments() {
    let mut h = Harness::new(config(), 1000.0).await;
    for g in 0..3 {
        h.live.create(GROUPS, group(&format!("g{g}"), "public"));
    }
    let mut memberships = 0;
    let mut adopted_memberships = 0;
    for c in 0..250usize {
        let (name, email) = (format!("c{c}"), format!("c{c}@example.com"));
        h.live.create(CONTACTS, contact(&name, &email));
        let adopted = c < 40;
        if adopted {
            h.fake.insert_contact(&email, Some(&name));
        }
        let groups: &[usize] = if c.is_multiple_of(5) {
            &[c % 3, (c + 1) % 3]
        } else {
            &[c % 3]
        };
        for g in groups {
            let m = format!("c{c}-g{g}");
            h.live
                .create(MEMBERSHIPS, membership(&m, &name, &format!("g{g}")));
            memberships += 1;
            adopted_memberships += usize::from(adopted);
        }
    }
    for s in 0..160 {
        h.fake
            .insert_contact(&format!("stranger{s}@elsewhere.example"), None);
    }
    h.start();
    h.all_synced().await;
    let requests = h.fake.requests();
    let t = tally(&requests);
    assert_eq!(t.lookups, 0, "no look-up per contact");
    assert_eq!(t.list_pages, 2, "200 contacts listed in two pages");
    assert_eq!(t.creates, 210, "the 210 contacts Resend lacked, once each");
    assert_eq!(
        t.adds, adopted_memberships,
        "an add only for memberships of contacts that already existed"
    );
    assert_eq!(t.segment_calls, 1 + 3, "one listing, three creates");
    assert_eq!(
        t.topic_calls,
        1 + 3,
        "one listing, a topic for each public group"
    );
    assert!(t.other.is_empty(), "{:?}", t.other);
    assert_eq!(
        requests.len(),
        2 + 210 + adopted_memberships + 4 + 4,
        "{:?}",
        calls(&requests)
    );
    assert_eq!(h.fake.contacts().len(), 200 + 210, "nothing created twice");
    // Every create carried its contact's segments.
    let segment = |g: usize| segment_of(&h, &format!("g{g}"));
    for (email, segments) in create_segments(&requests) {
        let c: usize = email[1..email.find('@').unwrap()].parse().unwrap();
        let mut wanted = vec![segment(c % 3)];
        if c.is_multiple_of(5) {
            wanted.push(segment((c + 1) % 3));
        }
        assert_eq!(sorted(segments), sorted(wanted), "{email}");
    }
    let members: usize = (0..3).map(|g| h.fake.members(&segment(g)).len()).sum();
    assert_eq!(members, memberships);
    assert_eq!(h.ready(MEMBERSHIPS, MEMBERSHIP_READY), memberships);
    // Settled, even in a new process: not a single call, not even a listing.
    let before = h.fake.requests().len();
    h.restart(1000.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.fake.requests().len(), before);
    h.no_rbac_denials();
}

/// In a settled cluster a new Contact with its membership costs one create, and a membership
/// added later one add: the listing is not repeated per reconcile.
#[tokio::test]
async fn the_steady_state_costs_one_call_per_new_object() {
    let mut h = Harness::new(config(), 1000.0).await;
    populate(&h.live);
    h.start();
    h.all_synced().await;
    let before = h.fake.requests().len();
    h.live.create(CONTACTS, contact("dee", "dee@example.com"));
    h.live
        .create(MEMBERSHIPS, membership("dee-news", "dee", "news"));
    h.all_synced().await;
    let after = h.fake.requests();
    let new = &after[before..];
    assert_eq!(new.len(), 1, "{:?}", calls(new));
    assert_eq!(
        create_segments(new),
        [("dee@example.com".to_owned(), vec![segment_of(&h, "news")])]
    );
    h.live
        .create(MEMBERSHIPS, membership("dee-staff", "dee", "staff"));
    h.all_synced().await;
    let later = &h.fake.requests()[after.len()..];
    assert_eq!(later.len(), 1, "{:?}", calls(later));
    assert_eq!(later[0].method, Method::POST);
    assert!(later[0].path.ends_with(&segment_of(&h, "staff")));
    assert_eq!(
        sorted(h.fake.members(&segment_of(&h, "staff"))),
        ["ada@example.com", "cy@example.com", "dee@example.com"]
    );
}

/// Populates, loses the first create's answer, and (with `crash`) crashes the leader before it
/// learns what Resend did: its look-ups of the address fail until the new leader takes over.
/// Returns how many requests the first leader made.
async fn lost_create(h: &mut Harness, fault: Fault, crash: bool) -> usize {
    populate(&h.live);
    h.fake
        .fail_next_matching(1, Method::POST, "/contacts", fault);
    let mut first = 0;
    if crash {
        h.fake
            .fail_next_matching(1000, Method::GET, "/contacts/", Fault::ServerError);
    }
    h.start();
    if crash {
        h.until("the lost create doubted", |h| {
            h.fake
                .requests()
                .iter()
                .any(|r| r.method == Method::GET && r.path.starts_with("/contacts/"))
        })
        .await;
        h.restart(1000.0).await;
        first = h.fake.requests().len();
    }
    h.all_synced().await;
    let requests = h.fake.requests();
    assert_eq!(h.fake.contacts().len(), 3, "{:?}", calls(&requests));
    let t = tally(&requests);
    assert_eq!(t.creates, 3, "no create repeated: {:?}", calls(&requests));
    let news = segment_of(h, "news");
    let staff = segment_of(h, "staff");
    assert_eq!(
        sorted(h.fake.members(&news)),
        ["ada@example.com", "bob@example.com"]
    );
    assert_eq!(
        sorted(h.fake.members(&staff)),
        ["ada@example.com", "cy@example.com"]
    );
    for c in h.live.all(CONTACTS) {
        let email = c["spec"]["email"].as_str().unwrap();
        assert_eq!(
            c["status"]["providerID"],
            h.fake.contact(email).unwrap().id,
            "{email} adopted the contact Resend made"
        );
    }
    assert_eq!(h.ready(CONTACTS, CONTACT_READY), 3);
    first
}

/// A create whose answer is lost after Resend made the contact: the retry asks Resend for the
/// address (one GET) and adopts it.
#[tokio::test]
async fn a_lost_create_answer_is_adopted_not_repeated() {
    for fault in [Fault::DropAnswer, Fault::DropAnswerAs500] {
        let mut h = Harness::new(config(), 1000.0).await;
        lost_create(&mut h, fault, false).await;
        let t = tally(&h.fake.requests());
        assert_eq!(
            (t.list_pages, t.lookups),
            (1, 1),
            "one listing, one look-up"
        );
    }
}

/// The same with the leader crashing before it could ask: the new leader's listing finds it.
#[tokio::test]
async fn a_lost_create_answer_is_found_by_the_next_listing_after_a_crash() {
    let mut h = Harness::new(config(), 1000.0).await;
    let first = lost_create(&mut h, Fault::DropAnswer, true).await;
    let requests = h.fake.requests();
    let t = tally(&requests[first..]);
    let seen = calls(&requests);
    assert_eq!(t.list_pages, 1, "the new leader listed: {seen:?}");
    assert_eq!(
        (t.lookups, t.creates),
        (0, 0),
        "and found it there: {seen:?}"
    );
    h.no_rbac_denials();
}

/// A person who opted out is created opted out and with no segment; a removal keeps its group's
/// segment out of the create and its membership is never added; an opted-out contact already at
/// Resend stays opted out.
#[tokio::test]
async fn consent_rides_along_a_create_never_against_it() {
    let mut h = Harness::new(config(), 1000.0).await;
    h.live.create(GROUPS, group("news", "public"));
    h.live.create(GROUPS, group("staff", "private"));
    let mut ada = contact("ada", "ada@example.com");
    ada["status"] = json!({"conditions": [{"type": "Unsubscribed", "status": "True",
        "reason": "ProviderUnsubscribe", "message": "opted out", "observedGeneration": 1,
        "lastTransitionTime": "2026-11-27T12:00:00Z"}]});
    h.live.create(CONTACTS, ada);
    h.live.create(CONTACTS, contact("bob", "bob@example.com"));
    h.live.create(CONTACTS, contact("cy", "cy@example.com"));
    h.fake.insert_contact("cy@example.com", Some("Cy"));
    h.fake.set_unsubscribed("cy@example.com", true);
    for (m, who, grp) in [
        ("ada-news", "ada", "news"),
        ("ada-staff", "ada", "staff"),
        ("bob-news", "bob", "news"),
        ("bob-staff", "bob", "staff"),
        ("cy-news", "cy", "news"),
    ] {
        h.live.create(MEMBERSHIPS, membership(m, who, grp));
    }
    h.live.create(
        REMOVALS,
        json!({"apiVersion": "notification.miloapis.com/v1alpha1",
            "kind": "ContactGroupMembershipRemoval",
            "metadata": {"namespace": "people", "name": "bob-leaves-news"},
            "spec": {"contactRef": {"namespace": "people", "name": "bob"},
                     "contactGroupRef": {"namespace": "groups", "name": "news"}}}),
    );
    h.start();
    h.until("contacts and groups mirrored", |h| {
        h.ready(CONTACTS, CONTACT_READY) == 3
    })
    .await;
    h.until("the memberships that may be added", |h| {
        h.ready(MEMBERSHIPS, MEMBERSHIP_READY) == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = h.fake.requests();
    for r in &requests {
        assert!(
            !r.body.replace(' ', "").contains("\"unsubscribed\":false"),
            "{} {}: {}",
            r.method,
            r.path,
            r.body
        );
    }
    let creates = create_segments(&requests);
    let news = segment_of(&h, "news");
    let staff = segment_of(&h, "staff");
    assert!(
        creates.contains(&("ada@example.com".into(), vec![])),
        "{creates:?}"
    );
    assert!(
        creates.contains(&("bob@example.com".into(), vec![staff.clone()])),
        "{creates:?}"
    );
    let ada_create = requests
        .iter()
        .find(|r| r.method == Method::POST && r.body.contains("ada@example.com"))
        .unwrap();
    let body: Value = serde_json::from_str(&ada_create.body).unwrap();
    assert_eq!(body["unsubscribed"], true, "created opted out");
    assert!(h.fake.contact("ada@example.com").unwrap().unsubscribed);
    assert!(h.fake.contact("cy@example.com").unwrap().unsubscribed);
    assert_eq!(
        sorted(h.fake.members(&news)),
        ["ada@example.com", "cy@example.com"]
    );
    assert_eq!(
        sorted(h.fake.members(&staff)),
        ["ada@example.com", "bob@example.com"]
    );
    let bob_news = h.live.get(MEMBERSHIPS, "people", "bob-news").unwrap();
    assert!(
        !bob_news["status"].to_string().contains(MEMBERSHIP_READY),
        "a removed pair is never recorded as added: {}",
        bob_news["status"]
    );
}
