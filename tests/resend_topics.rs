//! Resend topics for per-group opt-out: the sync against the stateful fake Resend and the
//! in-process API server. Each public group gets one topic (none for private ones, none twice);
//! a leave costs one PATCH opting the contact out, a rejoin one opting them in; a topic left on
//! Resend's preference page comes back as the pair's removal (source `resend-topic`) by event
//! and at resync, while an opt-in read there changes nothing; broadcasts carry the topic.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Method;
use http::Request;
use milo_webhook::api::common::sync::MEMBERSHIP_READY;
use milo_webhook::controllers::ControllerSettings;
use milo_webhook::controllers::consent::{
    EVENT_ANNOTATION, JOIN_SOURCE_ANNOTATION, SOURCE_ANNOTATION, TIME_ANNOTATION,
};
use milo_webhook::controllers::email::broadcast::{self, BroadcastSender};
use milo_webhook::controllers::email::{EmailSettings, UnsubscribeLinks};
use milo_webhook::controllers::resend::sink::OptOutSink;
use milo_webhook::controllers::resend::topic_optout::{self, TopicsResynced};
use milo_webhook::controllers::resend::topics::{key_of, topic_key};
use milo_webhook::providers::svix::{SigningKey, sign};
use milo_webhook::server::provider_events::{
    CONTACT_EVENTS_PATH, ProviderEventMetrics, ProviderEventsConfig, router,
};
use milo_webhook::server::unsubscribe::{UnsubscribeKey, UnsubscribeKeys};
use serde_json::{Value, json};
use support::fake_resend::FakeConfig;
use support::resend_harness::{
    GROUPS, Harness, MEMBERSHIPS, REMOVALS, group, membership, populate,
};
use tower::ServiceExt;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The id of the topic of `groups/name` in the fake.
fn topic_of(h: &Harness, name: &str) -> String {
    let key = topic_key("groups", name);
    let topics = h.fake.topics();
    let found = topics
        .iter()
        .find(|t| key_of(&t.name) == Some(key.as_str()));
    found.expect("the group has a topic").id.clone()
}

/// Requests since `from` (an index in the fake's log), as `METHOD path`.
fn since(h: &Harness, from: usize) -> Vec<String> {
    h.fake.requests()[from..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn removal(name: &str, contact: &str, group: &str, source: &str) -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1",
        "kind": "ContactGroupMembershipRemoval",
        "metadata": {"namespace": "people", "name": name,
            "annotations": {SOURCE_ANNOTATION: source}},
        "spec": {"contactRef": {"namespace": "people", "name": contact},
                 "contactGroupRef": {"namespace": "groups", "name": group}}})
}

/// The removals of `contact`, as (group, source).
fn removals_of(h: &Harness, contact: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = h
        .live
        .all(REMOVALS)
        .iter()
        .filter(|r| r["spec"]["contactRef"]["name"] == contact)
        .map(|r| {
            let group = r["spec"]["contactGroupRef"]["name"].as_str().unwrap_or("");
            let source = r["metadata"]["annotations"][SOURCE_ANNOTATION]
                .as_str()
                .unwrap_or("");
            (group.to_owned(), source.to_owned())
        })
        .collect();
    found.sort();
    found
}

async fn synced_cluster() -> Harness {
    let mut h = Harness::new(FakeConfig::default(), 200.0).await;
    populate(&h.live);
    h.start();
    h.all_synced().await;
    h
}

#[tokio::test]
async fn each_public_group_gets_one_topic_and_private_ones_none() {
    let mut h = synced_cluster().await;
    let topics = h.fake.topics();
    assert_eq!(topics.len(), 1, "news is public, staff private: {topics:?}");
    let news = &topics[0];
    assert_eq!(
        key_of(&news.name),
        Some(topic_key("groups", "news").as_str())
    );
    assert!(news.name.starts_with("news ("), "{}", news.name);
    assert_eq!(news.default_subscription, "opt_in");
    assert_eq!(news.visibility, "public");
    // A plain membership costs no topic call: everyone is in until they leave.
    assert_eq!(h.fake.count(Method::PATCH, "/contacts/"), 0);
    // A new leader finds the topic again by listing; a new public group gets its own, once.
    h.restart(200.0).await;
    h.live.create(GROUPS, group("offers", "public"));
    h.until("offers synced", |h| {
        h.ready(GROUPS, "ResendContactGroupReady") == 3
    })
    .await;
    assert_eq!(h.fake.topics().len(), 2);
    assert_eq!(h.fake.count(Method::POST, "/topics"), 2, "never twice");
    // Deleting the group deletes its topic.
    h.live.delete(GROUPS, "groups", "offers");
    h.until("offers' topic deleted", |h| h.fake.topics().len() == 1)
        .await;
    h.no_rbac_denials();
}

#[tokio::test]
async fn a_leave_opts_out_with_one_patch_and_a_rejoin_opts_back_in() {
    let h = synced_cluster().await;
    let topic = topic_of(&h, "news");
    assert_eq!(
        h.fake.subscription("ada@example.com", &topic).unwrap(),
        "opt_in"
    );
    // The person leaves on the preference page: the removal, then (the removal controller's
    // work) the membership's deletion.
    let before = h.fake.requests().len();
    h.live.create(
        REMOVALS,
        removal("ada-left", "ada", "news", "preference-page"),
    );
    h.live.delete(MEMBERSHIPS, "people", "ada-news");
    h.until("the membership released", |h| {
        h.live.get(MEMBERSHIPS, "people", "ada-news").is_none()
    })
    .await;
    assert_eq!(
        h.fake.subscription("ada@example.com", &topic).unwrap(),
        "opt_out"
    );
    let calls = since(&h, before);
    assert_eq!(calls.len(), 2, "a leave costs two calls in all: {calls:?}");
    assert_eq!(
        calls.iter().filter(|c| c.ends_with("/topics")).count(),
        1,
        "{calls:?}"
    );
    // A removal without a membership (a private group's member cannot leave; nor a non-member)
    // costs nothing; a membership deleted without a removal leaves the topic alone.
    let before = h.fake.requests().len();
    h.live.delete(MEMBERSHIPS, "people", "bob-news");
    h.until("bob's membership released", |h| {
        h.live.get(MEMBERSHIPS, "people", "bob-news").is_none()
    })
    .await;
    assert_eq!(
        h.fake.subscription("bob@example.com", &topic).unwrap(),
        "opt_in"
    );
    assert!(since(&h, before).iter().all(|c| !c.ends_with("/topics")));
    // The person rejoins: the removal goes and the membership is made again, annotated.
    h.live.delete(REMOVALS, "people", "ada-left");
    let before = h.fake.requests().len();
    let mut rejoined = membership("rejoin-ada-news-0123456789", "ada", "news");
    rejoined["metadata"]["annotations"] = json!({JOIN_SOURCE_ANNOTATION: "preference-page"});
    h.live.create(MEMBERSHIPS, rejoined);
    h.until("the rejoin synced", |h| {
        h.ready(MEMBERSHIPS, MEMBERSHIP_READY) == 3
    })
    .await;
    assert_eq!(
        h.fake.subscription("ada@example.com", &topic).unwrap(),
        "opt_in"
    );
    let calls = since(&h, before);
    assert_eq!(calls.len(), 2, "a rejoin costs two calls in all: {calls:?}");
    h.no_rbac_denials();
}

fn events(h: &Harness) -> axum::Router {
    let config = ProviderEventsConfig {
        contact_key: Some(SigningKey::parse(SECRET).unwrap()),
        ..ProviderEventsConfig::default()
    };
    let resend = h.fake.client(100.0);
    let sink = OptOutSink::new(h.live.client(), h.live.view.clone()).with_topics(Some(resend));
    router(
        config,
        Arc::new(sink),
        ProviderEventMetrics::register(&mut Default::default()),
    )
}

/// Delivers a signed `contact.updated` about `email` (its Resend id `id`).
async fn contact_updated(router: &axum::Router, delivery: &str, id: &str, email: &str) -> u16 {
    let body = json!({"type": "contact.updated", "created_at": "2026-12-07T10:00:00Z",
        "data": {"id": id, "email": email, "segment_ids": []}})
    .to_string();
    let timestamp = jiff::Timestamp::now().as_second().to_string();
    let key = SigningKey::parse(SECRET).unwrap();
    let signature = sign(&key, delivery, &timestamp, body.as_bytes());
    let request = Request::post(CONTACT_EVENTS_PATH)
        .header("content-type", "application/json")
        .header("svix-id", delivery)
        .header("svix-timestamp", timestamp)
        .header("svix-signature", signature)
        .body(Body::from(body))
        .unwrap();
    let answer = router.clone().oneshot(request).await.unwrap();
    answer.status().as_u16()
}

#[tokio::test]
async fn a_topic_left_at_resend_comes_back_by_event_as_a_removal() {
    let h = synced_cluster().await;
    let topic = topic_of(&h, "news");
    let router = events(&h);
    let ada = h.fake.contact("ada@example.com").unwrap().id;
    // An update that left every topic as it was: read, nothing made.
    let reads = h
        .fake
        .count(Method::GET, &format!("/contacts/{ada}/topics"));
    assert_eq!(
        contact_updated(&router, "msg_0", &ada, "ada@example.com").await,
        200
    );
    assert_eq!(
        h.fake
            .count(Method::GET, &format!("/contacts/{ada}/topics")),
        reads + 1
    );
    assert!(removals_of(&h, "ada").is_empty());
    // The person leaves news on Resend's preference page.
    h.fake.choose_topic("ada@example.com", &topic, "opt_out");
    assert_eq!(
        contact_updated(&router, "msg_1", &ada, "ada@example.com").await,
        200
    );
    assert_eq!(
        removals_of(&h, "ada"),
        [("news".to_owned(), "resend-topic".to_owned())],
        "the private group stays"
    );
    let made = &h.live.all(REMOVALS)[0];
    let annotations = &made["metadata"]["annotations"];
    assert_eq!(annotations[EVENT_ANNOTATION], "msg_1");
    assert_eq!(annotations[TIME_ANNOTATION], "2026-12-07T10:00:00Z");
    // A redelivery finds the removal made before.
    assert_eq!(
        contact_updated(&router, "msg_2", &ada, "ada@example.com").await,
        200
    );
    assert_eq!(h.live.all(REMOVALS).len(), 1);
    // The removal controller deletes the membership: out of the segment, and no PATCH, since the
    // topic is where the choice was made (the leave cost the event's read and this one call).
    let before = h.fake.requests().len();
    h.live.delete(MEMBERSHIPS, "people", "ada-news");
    h.until("the membership released", |h| {
        h.live.get(MEMBERSHIPS, "people", "ada-news").is_none()
    })
    .await;
    let calls = since(&h, before);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].starts_with("DELETE /contacts/"), "{calls:?}");
    // Someone who is a member of no public group is not read at all.
    let cy = h.fake.contact("cy@example.com").unwrap().id;
    assert_eq!(
        contact_updated(&router, "msg_3", &cy, "cy@example.com").await,
        200
    );
    assert_eq!(
        h.fake.count(Method::GET, &format!("/contacts/{cy}/topics")),
        0
    );
    h.no_rbac_denials();
}

#[tokio::test]
async fn a_resync_turns_topic_opt_outs_into_removals_and_a_settled_one_writes_nothing() {
    let h = synced_cluster().await;
    let topic = topic_of(&h, "news");
    // Settled: the topics listed, each member address read once, nothing written.
    let before = h.fake.requests().len();
    let done = topic_optout::resync(&h.sync).await.unwrap();
    assert_eq!(
        done,
        TopicsResynced {
            topics_created: 0,
            contacts_read: 2,
            removals: 0,
        }
    );
    let calls = since(&h, before);
    assert!(calls.iter().all(|c| c.starts_with("GET ")), "{calls:?}");
    assert_eq!(
        calls.len(),
        3,
        "one listing and one read per member: {calls:?}"
    );
    // Bob leaves news at Resend; the next resync makes his removal (no event to name).
    h.fake.choose_topic("bob@example.com", &topic, "opt_out");
    let done = topic_optout::resync(&h.sync).await.unwrap();
    assert_eq!(done.removals, 1);
    assert_eq!(
        removals_of(&h, "bob"),
        [("news".into(), "resend-topic".into())]
    );
    let made = &h.live.all(REMOVALS)[0];
    assert!(made["metadata"]["annotations"][EVENT_ANNOTATION].is_null());
    assert!(made["metadata"]["annotations"][TIME_ANNOTATION].is_string());
    // Bob is not read again while he is out; the resync writes nothing more.
    let before = h.fake.requests().len();
    let done = topic_optout::resync(&h.sync).await.unwrap();
    assert_eq!((done.contacts_read, done.removals), (1, 0));
    assert!(since(&h, before).iter().all(|c| c.starts_with("GET ")));
    // A topic deleted in the dashboard (or a group mirrored before topics) is made again.
    assert!(h.fake.remove_topic(&topic));
    let done = topic_optout::resync(&h.sync).await.unwrap();
    assert_eq!(done.topics_created, 1);
    assert_eq!(h.fake.topics().len(), 1);
    h.no_rbac_denials();
}

#[tokio::test]
async fn an_opt_in_at_resend_changes_nothing_in_the_cluster() {
    let h = synced_cluster().await;
    let topic = topic_of(&h, "news");
    h.live.create(
        REMOVALS,
        removal("ada-left", "ada", "news", "one-click-unsubscribe"),
    );
    h.live.delete(MEMBERSHIPS, "people", "ada-news");
    h.until("ada's membership released", |h| {
        h.live.get(MEMBERSHIPS, "people", "ada-news").is_none()
    })
    .await;
    assert_eq!(
        h.fake.subscription("ada@example.com", &topic).unwrap(),
        "opt_out"
    );
    // Back in at Resend: neither an event nor a resync deletes the removal or makes a membership.
    h.fake.choose_topic("ada@example.com", &topic, "opt_in");
    let router = events(&h);
    let ada = h.fake.contact("ada@example.com").unwrap().id;
    assert_eq!(
        contact_updated(&router, "msg_1", &ada, "ada@example.com").await,
        200
    );
    topic_optout::resync(&h.sync).await.unwrap();
    assert_eq!(
        removals_of(&h, "ada"),
        [("news".into(), "one-click-unsubscribe".into())]
    );
    let memberships = h.live.all(MEMBERSHIPS);
    assert!(
        memberships
            .iter()
            .all(|m| m["metadata"]["name"] != "ada-news"
                && !m["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("rejoin-")),
        "{memberships:?}"
    );
    // And nobody is put back in the topic by the sync: it stays as the person set it.
    let patches: Vec<String> = h
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == Method::PATCH && r.path.ends_with("/topics"))
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(
        patches.len(),
        1,
        "only the leave's opt-out was written: {patches:?}"
    );
    assert!(patches[0].contains("opt_out"), "{patches:?}");
}

#[tokio::test]
async fn broadcasts_to_a_public_group_carry_its_topic() {
    let h = synced_cluster().await;
    let topic = topic_of(&h, "news");
    h.live.create(
        "emailtemplates",
        json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "EmailTemplate",
            "metadata": {"name": "news"}, "spec": {"subject": "News", "htmlBody": "<p>Hi</p>",
                "textBody": "Hi"}}),
    );
    for (name, group) in [("b-news", "news"), ("b-staff", "staff")] {
        h.live.create(
            "emailbroadcasts",
            json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "EmailBroadcast",
                "metadata": {"namespace": "groups", "name": name},
                "spec": {"contactGroupRef": {"namespace": "groups", "name": group},
                         "templateRef": {"name": "news"}}}),
        );
    }
    let settings = EmailSettings {
        from: Some("Milo <news@example.com>".into()),
        reply_to: None,
        unsubscribe: Some(UnsubscribeLinks {
            keys: UnsubscribeKeys::single(UnsubscribeKey::new(&[7u8; 32]).unwrap()),
            base_url: "https://mail.example.com".into(),
            preferences_ttl: std::time::Duration::from_secs(3_600),
        }),
    };
    let ctx = Arc::new(h.live.context(ControllerSettings::default()));
    let sender = BroadcastSender::new(ctx, h.fake.client(200.0), settings);
    let task = tokio::spawn(broadcast::run(Arc::new(sender)));
    for _ in 0..400 {
        if h.fake.sent_emails().len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    task.abort();
    let sent = h.fake.sent_emails();
    assert_eq!(sent.len(), 4, "ada and bob in news, ada and cy in staff");
    for mail in &sent {
        let news = mail.payload["headers"]["List-Unsubscribe"].is_string();
        let expected = if news { json!(topic) } else { Value::Null };
        assert_eq!(mail.payload["topic_id"], expected, "{:?}", mail.payload);
    }
    assert_eq!(
        sent.iter()
            .filter(|m| !m.payload["topic_id"].is_null())
            .count(),
        2
    );
}
