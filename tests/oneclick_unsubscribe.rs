//! One-click unsubscribe (RFC 8058) through the real routes into the stateful API server.

mod support;

use std::sync::Arc;

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use milo_webhook::controllers::resend::oneclick::{OneClickSink, TOKEN_ANNOTATION};
use milo_webhook::controllers::resend::optout::SOURCE_ANNOTATION;
use milo_webhook::server::unsubscribe::{Named, Target, UnsubscribeKey, mint, router};
use serde_json::{Value, json};
use support::live_api::{LiveApi, notification_object as object};
use tower::ServiceExt;

fn cluster() -> LiveApi {
    let live = LiveApi::new();
    live.create(
        "contacts",
        object(
            "Contact",
            "people",
            "ada",
            json!({"email": "ada@example.com"}),
        ),
    );
    for (name, visibility) in [("news", "public"), ("staff", "private")] {
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
    live
}

fn named(live: &LiveApi, plural: &str, ns: &str, name: &str) -> Named {
    let o = live.get(plural, ns, name).unwrap();
    Named {
        namespace: ns.into(),
        name: name.into(),
        uid: o["metadata"]["uid"].as_str().unwrap().into(),
    }
}

fn target(live: &LiveApi, group: &str) -> Target {
    Target {
        contact: named(live, "contacts", "people", "ada"),
        group: named(live, "contactgroups", "groups", group),
    }
}

fn key() -> UnsubscribeKey {
    UnsubscribeKey::new(b"a-test-key-of-at-least-thirty-two-bytes").unwrap()
}

async fn call(live: &LiveApi, method: &str, token: &str, body: &str) -> (u16, String) {
    let routes = router(key(), Arc::new(OneClickSink::new(live.client())));
    let request = Request::builder()
        .method(method)
        .uri(format!("/unsubscribe/{token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = routes.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn removals(live: &LiveApi) -> Vec<Value> {
    live.all("contactgroupmembershipremovals")
}

#[tokio::test]
async fn a_get_shows_a_button_and_changes_nothing() {
    let live = cluster();
    let token = mint(&key(), &target(&live, "news"));
    let (status, page) = call(&live, "GET", &token, "").await;
    assert_eq!(status, 200);
    assert!(page.contains("method=\"post\""), "{page}");
    assert!(removals(&live).is_empty());
}

#[tokio::test]
async fn a_one_click_post_removes_the_person_from_that_group_once() {
    let live = cluster();
    let token = mint(&key(), &target(&live, "news"));
    assert_eq!(
        call(&live, "POST", &token, "List-Unsubscribe=One-Click").await,
        (200, String::new())
    );
    assert_eq!(
        call(&live, "POST", &token, "List-Unsubscribe=One-Click").await,
        (200, String::new())
    );
    let removals = removals(&live);
    assert_eq!(removals.len(), 1, "idempotent: {removals:?}");
    let r = &removals[0];
    assert_eq!(r["spec"]["contactGroupRef"]["name"], "news");
    assert_eq!(
        r["metadata"]["annotations"][SOURCE_ANNOTATION],
        "one-click-unsubscribe"
    );
    assert!(r["metadata"]["annotations"][TOKEN_ANNOTATION].is_string());
    let denied = live.state.lock().unwrap().denied.clone();
    assert!(denied.is_empty(), "RBAC refused: {denied:?}");
}

#[tokio::test]
async fn forged_altered_unknown_and_private_links_are_404_and_change_nothing() {
    let live = cluster();
    let genuine = mint(&key(), &target(&live, "news"));
    let other_key = UnsubscribeKey::new(b"another-key-of-at-least-thirty-two-bytes").unwrap();
    let forged = mint(&other_key, &target(&live, "news"));
    let (payload, signature) = genuine.split_once('.').unwrap();
    let altered = format!("{}x.{signature}", payload);
    let mut recreated = target(&live, "news");
    recreated.contact.uid = "uid-of-an-older-ada".into();
    let unknown = mint(&key(), &recreated);
    let private = mint(&key(), &target(&live, "staff"));
    for token in [&forged, &altered, &unknown, &private] {
        assert_eq!(
            call(&live, "POST", token, "List-Unsubscribe=One-Click")
                .await
                .0,
            404,
            "{token}"
        );
    }
    assert_eq!(call(&live, "GET", &forged, "").await.0, 404);
    assert_eq!(
        call(&live, "POST", &genuine, "something=else").await.0,
        400,
        "RFC 8058 body required"
    );
    assert!(removals(&live).is_empty());
}
