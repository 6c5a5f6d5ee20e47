//! Opt-outs flowing back: signed Resend contact events through the real events router into the
//! opt-out sink (recording the Contact's `Unsubscribed` condition on the stateful API server),
//! then the leader's contact loop creating removals for public groups only.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::Request;
use milo_webhook::api::common::sync::UNSUBSCRIBED;
use milo_webhook::controllers::ControllerSettings;
use milo_webhook::controllers::resend::optout::{self, EVENT_ANNOTATION, SOURCE_ANNOTATION};
use milo_webhook::controllers::resend::sink::OptOutSink;
use milo_webhook::controllers::resend::{self, ResendSync, SyncMetrics};
use milo_webhook::providers::svix::{SigningKey, sign};
use milo_webhook::server::provider_events::{
    CONTACT_EVENTS_PATH, ProviderEventMetrics, ProviderEventsConfig, router,
};
use serde_json::{Value, json};
use support::fake_resend::{self, FakeConfig};
use support::live_api::{LiveApi, notification_object as object};
use tower::ServiceExt;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn membership(name: &str, group: &str) -> Value {
    object(
        "ContactGroupMembership",
        "people",
        name,
        json!({"contactRef": {"namespace": "people", "name": "ada"},
               "contactGroupRef": {"namespace": "groups", "name": group}}),
    )
}

fn cluster() -> LiveApi {
    let live = LiveApi::new();
    live.create(
        "contacts",
        object(
            "Contact",
            "people",
            "ada",
            json!({"email": "Ada@Example.com"}),
        ),
    );
    for (name, visibility) in [
        ("news", "public"),
        ("offers", "public"),
        ("staff", "private"),
    ] {
        live.create(
            "contactgroups",
            object(
                "ContactGroup",
                "groups",
                name,
                json!({"displayName": name, "visibility": visibility}),
            ),
        );
    }
    live.create("contactgroupmemberships", membership("ada-news", "news"));
    live.create(
        "contactgroupmemberships",
        membership("ada-offers", "offers"),
    );
    live.create("contactgroupmemberships", membership("ada-staff", "staff"));
    live
}

fn events_router(live: &LiveApi) -> axum::Router {
    let config = ProviderEventsConfig {
        contact_key: Some(SigningKey::parse(SECRET).unwrap()),
        ..ProviderEventsConfig::default()
    };
    let sink = Arc::new(OptOutSink::new(live.client(), live.view.clone()));
    router(
        config,
        sink,
        ProviderEventMetrics::register(&mut Default::default()),
    )
}

/// A `contact.updated` event, signed with `SECRET` unless `forged`, sent `age` seconds ago.
fn event(id: &str, unsubscribed: bool, created_at: &str, age: i64, forged: bool) -> Request<Body> {
    let body = json!({"type": "contact.updated", "created_at": created_at, "data": {
        "id": "re-ada", "email": "ada@example.com", "unsubscribed": unsubscribed,
        "segment_ids": [], "created_at": "2026-01-01T00:00:00Z", "updated_at": created_at}})
    .to_string();
    signed(id, body, age, forged)
}

/// A delivery of `body` to the contact events path, signed with `SECRET` unless `forged`.
fn signed(id: &str, body: String, age: i64, forged: bool) -> Request<Body> {
    let timestamp = (jiff::Timestamp::now().as_second() - age).to_string();
    let key = if forged {
        SigningKey::parse("whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY").unwrap()
    } else {
        SigningKey::parse(SECRET).unwrap()
    };
    let signature = sign(&key, id, &timestamp, body.as_bytes());
    Request::post(CONTACT_EVENTS_PATH)
        .header("content-type", "application/json")
        .header("svix-id", id)
        .header("svix-timestamp", timestamp)
        .header("svix-signature", signature)
        .body(Body::from(body))
        .unwrap()
}

async fn send(router: &axum::Router, request: Request<Body>) -> u16 {
    router
        .clone()
        .oneshot(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn unsubscribed(live: &LiveApi) -> Option<Value> {
    let ada = live.get("contacts", "people", "ada")?;
    ada["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == UNSUBSCRIBED)
        .cloned()
}

fn removals(live: &LiveApi) -> Vec<Value> {
    live.all("contactgroupmembershipremovals")
}

async fn leader(
    live: &LiveApi,
) -> (
    tokio::task::JoinHandle<()>,
    support::fake_resend::FakeResend,
) {
    let fake = fake_resend::start(FakeConfig::default()).await;
    let client = fake.client(100.0);
    let ctx = live.context(ControllerSettings::default());
    let sync = Arc::new(ResendSync::new(
        Arc::new(ctx),
        client,
        SyncMetrics::default(),
    ));
    (tokio::spawn(resend::run(sync)), fake)
}

async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn forged_and_stale_events_change_nothing() {
    let live = cluster();
    let events = events_router(&live);
    assert_eq!(
        send(
            &events,
            event("msg_1", true, "2026-11-27T13:00:00Z", 0, true)
        )
        .await,
        401
    );
    assert_eq!(
        send(
            &events,
            event("msg_2", true, "2026-11-27T13:00:00Z", 6 * 60, false)
        )
        .await,
        401
    );
    assert!(unsubscribed(&live).is_none());
    assert!(removals(&live).is_empty());
}

#[tokio::test]
async fn an_opt_out_removes_the_person_from_public_groups_once() {
    let live = cluster();
    let events = events_router(&live);
    assert_eq!(
        send(
            &events,
            event("msg_1", true, "2026-11-27T13:00:00Z", 0, false)
        )
        .await,
        200
    );
    let condition = unsubscribed(&live).expect("the opt-out is recorded on the Contact");
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], optout::REASON);
    assert_eq!(condition["lastTransitionTime"], "2026-11-27T13:00:00Z");
    // Any replica records it; only the leader acts on it.
    assert!(removals(&live).is_empty());
    let (task, _fake) = leader(&live).await;
    until("two removals and the condition marked done", || {
        removals(&live).len() == 2
            && unsubscribed(&live).is_some_and(|c| !c["observedGeneration"].is_null())
    })
    .await;
    let mut groups: Vec<String> = removals(&live)
        .iter()
        .map(|r| {
            r["spec"]["contactGroupRef"]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    groups.sort();
    assert_eq!(groups, ["news", "offers"], "the private group stays");
    for r in removals(&live) {
        assert_eq!(
            r["metadata"]["annotations"][SOURCE_ANNOTATION],
            "resend-unsubscribe"
        );
        assert_eq!(
            r["metadata"]["annotations"][EVENT_ANNOTATION], "msg_1",
            "the audit trail names the event"
        );
    }
    // The same event again (a redelivery) and an older one change nothing.
    assert_eq!(
        send(
            &events,
            event("msg_1", true, "2026-11-27T13:00:00Z", 0, false)
        )
        .await,
        200
    );
    assert_eq!(
        send(
            &events,
            event("msg_0", false, "2026-11-27T12:00:00Z", 0, false)
        )
        .await,
        200
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(removals(&live).len(), 2);
    assert_eq!(
        unsubscribed(&live).unwrap()["status"],
        "True",
        "a late event does not undo"
    );
    // Opting back in clears the condition but rejoins nothing.
    assert_eq!(
        send(
            &events,
            event("msg_3", false, "2026-11-27T14:00:00Z", 0, false)
        )
        .await,
        200
    );
    assert_eq!(unsubscribed(&live).unwrap()["status"], "False");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        removals(&live).len(),
        2,
        "removals stay: rejoining is an explicit act"
    );
    task.abort();
    let denied = live.state.lock().unwrap().denied.clone();
    assert!(denied.is_empty(), "RBAC refused: {denied:?}");
}

#[tokio::test]
async fn events_about_unknown_people_are_accepted_and_ignored() {
    let live = cluster();
    let events = events_router(&live);
    let body = json!({"type": "contact.updated", "created_at": "2026-11-27T13:00:00Z", "data": {
        "id": "re-x", "email": "stranger@example.com", "unsubscribed": true}})
    .to_string();
    let timestamp = jiff::Timestamp::now().as_second().to_string();
    let signature = sign(
        &SigningKey::parse(SECRET).unwrap(),
        "msg_9",
        &timestamp,
        body.as_bytes(),
    );
    let request = Request::post(CONTACT_EVENTS_PATH)
        .header("svix-id", "msg_9")
        .header("svix-timestamp", timestamp)
        .header("svix-signature", signature)
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&events, request).await, 200);
    assert!(unsubscribed(&live).is_none());
}

/// A suppression made or lifted in Resend's dashboard reaches the Contact through a signed
/// event: set once (a replay changes nothing), lifted by its own removal only.
#[tokio::test]
async fn suppression_events_set_and_lift_the_condition() {
    let live = cluster();
    let router = events_router(&live);
    let suppressed = |live: &LiveApi| -> Option<Value> {
        let ada = live.get("contacts", "people", "ada")?;
        ada["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Suppressed")
            .cloned()
    };
    let body = |type_: &str, id: &str| {
        json!({"type": type_, "created_at": "2026-12-01T10:00:00Z",
            "data": {"id": id, "email": "ada@example.com", "origin": "manual"}})
        .to_string()
    };
    let added = body("suppression.added", "sup_1");
    assert_eq!(
        send(&router, signed("msg_s1", added.clone(), 0, true)).await,
        401
    );
    assert!(
        suppressed(&live).is_none(),
        "a forged event changed nothing"
    );
    assert_eq!(
        send(&router, signed("msg_s1", added.clone(), 0, false)).await,
        200
    );
    assert_eq!(suppressed(&live).unwrap()["status"], "True");
    assert_eq!(suppressed(&live).unwrap()["reason"], "ManualSuppression");
    assert_eq!(send(&router, signed("msg_s1", added, 0, false)).await, 200);
    // Another suppression's removal lifts nothing; this one's does.
    let other = body("suppression.removed", "sup_other");
    assert_eq!(send(&router, signed("msg_s2", other, 0, false)).await, 200);
    assert_eq!(suppressed(&live).unwrap()["status"], "True");
    let removed = body("suppression.removed", "sup_1");
    assert_eq!(
        send(&router, signed("msg_s3", removed, 0, false)).await,
        200
    );
    assert_eq!(suppressed(&live).unwrap()["status"], "False");
    assert_eq!(suppressed(&live).unwrap()["reason"], "SuppressionLifted");
}
