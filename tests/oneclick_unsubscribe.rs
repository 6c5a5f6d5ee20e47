//! One-click unsubscribe (RFC 8058) through the real routes into the stateful API server: the
//! opt-out itself, the order of checks (token, then a small body under a deadline), the replay
//! cache, key rotation and the headers of the pages.

mod support;

use std::sync::Arc;

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use milo_webhook::controllers::resend::oneclick::{OneClickSink, TOKEN_ANNOTATION};
use milo_webhook::controllers::resend::optout::SOURCE_ANNOTATION;
use milo_webhook::server::unsubscribe::{
    MAX_ONE_CLICK_BODY, Named, Target, UnsubscribeKey, UnsubscribeKeys, mint, mint_without_key_id,
    router,
};
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

fn routes(live: &LiveApi, keys: Arc<UnsubscribeKeys>) -> axum::Router {
    router(keys, Arc::new(OneClickSink::new(live.client())))
}

async fn send(
    routes: &axum::Router,
    method: &str,
    token: &str,
    body: Body,
) -> http::Response<Body> {
    let request = Request::builder()
        .method(method)
        .uri(format!("/unsubscribe/{token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .unwrap();
    routes.clone().oneshot(request).await.unwrap()
}

async fn call_on(routes: &axum::Router, method: &str, token: &str, body: &str) -> (u16, String) {
    let response = send(routes, method, token, Body::from(body.to_owned())).await;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn call(live: &LiveApi, method: &str, token: &str, body: &str) -> (u16, String) {
    call_on(
        &routes(live, UnsubscribeKeys::single(key())),
        method,
        token,
        body,
    )
    .await
}

/// A body that never ends (a client that sent its head and stalls).
fn endless() -> Body {
    Body::from_stream(futures::stream::pending::<
        Result<bytes::Bytes, std::io::Error>,
    >())
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

#[tokio::test]
async fn the_token_is_checked_before_the_body_is_read_and_the_body_is_bounded() {
    let live = cluster();
    let routes = routes(&live, UnsubscribeKeys::single(key()));
    // A forged token is refused at once, though its body never ends.
    let other = UnsubscribeKey::new(b"another-key-of-at-least-thirty-two-bytes").unwrap();
    let forged = mint(&other, &target(&live, "news"));
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        send(&routes, "POST", &forged, endless()),
    )
    .await
    .expect("answered without reading the body");
    assert_eq!(answer.status(), 404);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // A genuine one: a body over the limit is 413, declared or sent.
    let genuine = mint(&key(), &target(&live, "news"));
    let big = format!(
        "List-Unsubscribe=One-Click&{}",
        "x".repeat(MAX_ONE_CLICK_BODY)
    );
    assert_eq!(call_on(&routes, "POST", &genuine, &big).await.0, 413);
    let request = Request::builder()
        .method("POST")
        .uri(format!("/unsubscribe/{genuine}"))
        .header("content-length", "100000")
        .body(endless())
        .unwrap();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        routes.clone().oneshot(request),
    )
    .await
    .expect("a declared length past the limit is refused from the head");
    assert_eq!(answer.unwrap().status(), 413);
    // ...and a body that stalls gets 408 once the read deadline passes.
    let answer = send(&routes, "POST", &genuine, endless()).await;
    assert_eq!(answer.status(), 408);
    assert!(removals(&live).is_empty());
    // RFC 8058 allows multipart/form-data too.
    let multipart = "--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n";
    assert_eq!(call_on(&routes, "POST", &genuine, multipart).await.0, 200);
    assert_eq!(removals(&live).len(), 1);
}

#[tokio::test]
async fn repeated_posts_of_one_token_within_a_minute_cost_no_api_call() {
    let live = cluster();
    let routes = routes(&live, UnsubscribeKeys::single(key()));
    let token = mint(&key(), &target(&live, "news"));
    let body = "List-Unsubscribe=One-Click";
    assert_eq!(
        call_on(&routes, "POST", &token, body).await,
        (200, String::new())
    );
    let calls = live.state.lock().unwrap().requests.len();
    assert!(calls > 0, "the first POST reads and writes");
    for _ in 0..5 {
        assert_eq!(
            call_on(&routes, "POST", &token, body).await,
            (200, String::new())
        );
    }
    assert_eq!(
        live.state.lock().unwrap().requests.len(),
        calls,
        "repeats made no API call"
    );
    // Another genuine token is not taken for the first.
    let staff = mint(&key(), &target(&live, "staff"));
    assert_eq!(call_on(&routes, "POST", &staff, body).await.0, 404);
    assert!(live.state.lock().unwrap().requests.len() > calls);
    assert_eq!(removals(&live).len(), 1);
}

#[tokio::test]
async fn links_signed_by_a_rotated_key_keep_working_and_new_ones_use_the_new_key() {
    let live = cluster();
    let old = key();
    let new = UnsubscribeKey::new(b"the-next-key-of-at-least-thirty-two-bytes").unwrap();
    let keys = UnsubscribeKeys::new(new.clone(), vec![old.clone()]);
    let routes = routes(&live, keys.clone());
    // Mail sent before the rotation, with and without key ids.
    let before = mint(&old, &target(&live, "news"));
    let legacy = mint_without_key_id(&old, &target(&live, "news"));
    assert_eq!(call_on(&routes, "GET", &before, "").await.0, 200);
    assert_eq!(call_on(&routes, "GET", &legacy, "").await.0, 200);
    let link =
        milo_webhook::server::unsubscribe::link("https://m.example", &keys, &target(&live, "news"));
    assert!(
        link.contains(&format!("/unsubscribe/{}.", new.id())),
        "{link}"
    );
    // Once the old key is dropped, its links are unknown.
    let dropped = routes_for_new_only(&live, new);
    assert_eq!(call_on(&dropped, "GET", &before, "").await.0, 404);
    assert_eq!(call_on(&dropped, "GET", &legacy, "").await.0, 404);
}

fn routes_for_new_only(live: &LiveApi, new: UnsubscribeKey) -> axum::Router {
    routes(live, UnsubscribeKeys::single(new))
}

#[tokio::test]
async fn pages_forbid_framing_scripts_and_referrers() {
    let live = cluster();
    let routes = routes(&live, UnsubscribeKeys::single(key()));
    let token = mint(&key(), &target(&live, "news"));
    for (method, token, status) in [("GET", token.as_str(), 200), ("GET", "forged", 404)] {
        let response = send(&routes, method, token, Body::empty()).await;
        assert_eq!(response.status(), status);
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["cache-control"], "no-store");
    }
}
