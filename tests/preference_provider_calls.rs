//! What one choice on the preference page costs at the providers: the page's real routes and
//! actions, the removal controller and both providers' sync loops, on the stateful API server
//! against the stateful fakes of Resend and Loops. Ada leaves a public group on her page, then
//! rejoins it; each change reaches both providers in at most two calls each: Resend the group's
//! topic and segment, Loops the list.

mod support;

use std::sync::Arc;

use axum::body::Body;
use http::Request;
use milo_webhook::api::common::sync::READY;
use milo_webhook::controllers::preferences::PreferenceActions;
use milo_webhook::controllers::removal;
use milo_webhook::server::preferences::{router, tokens};
use milo_webhook::server::unsubscribe::{Named, UnsubscribeKey, UnsubscribeKeys};
use serde_json::{Value, json};
use support::fake_loops;
use support::fake_resend::{FakeConfig, calls};
use support::resend_harness::{
    CONTACTS, GROUPS, Harness, MEMBERSHIPS, contact, group, membership, settings,
};
use tower::ServiceExt;

fn listed_group(name: &str, list: &str) -> Value {
    let mut g = group(name, "public");
    g["spec"]["providers"] = json!([{"name": "Loops", "id": list}]);
    g
}

fn is_ready(o: &Value) -> bool {
    o["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == READY
                && c["status"] == "True"
                && c["observedGeneration"] == o["metadata"]["generation"]
        })
    })
}

/// Ada's memberships of `news`, each with whether it is Ready.
fn ada_news(h: &Harness) -> Vec<bool> {
    h.live
        .all(MEMBERSHIPS)
        .iter()
        .filter(|m| {
            m["spec"]["contactRef"]["name"] == "ada"
                && m["spec"]["contactGroupRef"]["name"] == "news"
        })
        .map(is_ready)
        .collect()
}

/// Every call to either provider since `from` (Resend's, Loops') requests.
fn since(h: &Harness, from: (usize, usize)) -> (Vec<String>, Vec<String>) {
    let resend = calls(&h.fake.requests()[from.0..]);
    let loops = fake_loops::calls(&h.fake_loops().requests()[from.1..]);
    (resend, loops)
}

fn marks(h: &Harness) -> (usize, usize) {
    (h.fake.requests().len(), h.fake_loops().requests().len())
}

/// Posts the page's form for `action` on `news`.
async fn choose(routes: &axum::Router, keys: &UnsubscribeKeys, token: &str, action: &str) {
    let now = jiff::Timestamp::now().as_second();
    let form = tokens::form_value(keys, token, now);
    let request = Request::post(format!("/preferences/{token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "form={form}&group=groups%2Fnews&action={action}"
        )))
        .unwrap();
    let response = routes.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 303, "{action}");
}

#[tokio::test]
async fn a_preference_change_costs_at_most_two_calls_per_provider() {
    let mut h = Harness::new(FakeConfig::default(), 1000.0).await;
    let loops = fake_loops::start(fake_loops::FakeConfig::default()).await;
    let list = loops.insert_list("News", true);
    h.attach_loops(loops, 1000.0, true);
    h.live.create(CONTACTS, contact("ada", "ada@example.com"));
    h.live.create(GROUPS, listed_group("news", &list));
    h.live
        .create(MEMBERSHIPS, membership("ada-news", "ada", "news"));
    h.start();
    let removals = tokio::spawn(removal::run(Arc::new(h.live.context(settings()))));
    h.until("ada's membership Ready", |h| ada_news(h) == [true])
        .await;
    h.until("everything settled", |h| {
        h.live.all(CONTACTS).iter().all(is_ready) && h.live.all(GROUPS).iter().all(is_ready)
    })
    .await;

    let keys = UnsubscribeKeys::single(UnsubscribeKey::new(&[3u8; 32]).unwrap());
    let ada = h.live.get(CONTACTS, "people", "ada").unwrap();
    let named = Named {
        namespace: "people".into(),
        name: "ada".into(),
        uid: ada["metadata"]["uid"].as_str().unwrap().into(),
    };
    let token = tokens::mint(&keys, &named, jiff::Timestamp::now().as_second() + 600);
    let actions = PreferenceActions::new(h.live.client(), h.live.view.clone());
    let routes = router(keys.clone(), h.live.view.clone(), Arc::new(actions));

    // Leave: the removal, the membership deleted by the removal controller, and both providers
    // take her off the group before its finalizers go.
    let before = marks(&h);
    choose(&routes, &keys, &token, "leave").await;
    h.until("ada's membership gone", |h| ada_news(h).is_empty())
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (resend, loops) = since(&h, before);
    eprintln!("leave: Resend {resend:?}; Loops {loops:?}");
    assert!(
        !resend.is_empty() && resend.len() <= 2,
        "Resend: {resend:?}"
    );
    assert_eq!(loops.len(), 1, "one upsert, the list false: {loops:?}");
    let on_list = h.fake_loops().contact_by_user_id(&named.uid).unwrap();
    assert!(!on_list.lists.contains(&list), "off the list");

    // Rejoin: the removal gone, the membership made again and mirrored to both.
    let before = marks(&h);
    choose(&routes, &keys, &token, "join").await;
    h.until("ada's membership Ready again", |h| ada_news(h) == [true])
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (resend, loops) = since(&h, before);
    eprintln!("rejoin: Resend {resend:?}; Loops {loops:?}");
    assert!(
        !resend.is_empty() && resend.len() <= 2,
        "Resend: {resend:?}"
    );
    assert_eq!(loops.len(), 1, "one upsert, the list true: {loops:?}");
    let on_list = h.fake_loops().contact_by_user_id(&named.uid).unwrap();
    assert!(on_list.lists.contains(&list), "back on the list");
    assert!(
        h.fake_loops()
            .requests()
            .iter()
            .all(|r| !r.body.replace(' ', "").contains("\"subscribed\":true")),
        "never subscribed: true"
    );
    h.no_rbac_denials();
    removals.abort();
}
