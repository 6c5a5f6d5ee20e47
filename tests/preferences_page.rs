//! The preference page through its real routes into the stateful API server: what it shows (read
//! from the view), that a GET changes nothing, that forged, expired and stale links change
//! nothing, that a POST needs the page's own form value, and that leaving and rejoining write the
//! pair's removal and membership with their provenance, an operator's removal staying.

mod support;

use std::sync::Arc;

use axum::body::Body;
use http::Request;
use http_body_util::BodyExt;
use milo_webhook::controllers::consent::{
    JOIN_SOURCE_ANNOTATION, JOIN_TIME_ANNOTATION, SOURCE_ANNOTATION, TIME_ANNOTATION,
};
use milo_webhook::controllers::preferences::{
    JOIN_TOKEN_ANNOTATION, PreferenceActions, TOKEN_ANNOTATION,
};
use milo_webhook::server::preferences::{router, tokens};
use milo_webhook::server::unsubscribe::{Named, UnsubscribeKey, UnsubscribeKeys, token_id};
use serde_json::{Value, json};
use support::live_api::{LiveApi, notification_object as object};
use tower::ServiceExt;

const REMOVALS: &str = "contactgroupmembershipremovals";
const MEMBERSHIPS: &str = "contactgroupmemberships";

fn pair_object(kind: &str, name: &str, group: &str, source: Option<&str>) -> Value {
    let spec = json!({"contactRef": {"namespace": "people", "name": "ada"},
                      "contactGroupRef": {"namespace": "people", "name": group}});
    let mut o = object(kind, "people", name, spec);
    if let Some(source) = source {
        o["metadata"]["annotations"] = json!({
            SOURCE_ANNOTATION: source,
            TIME_ANNOTATION: "2026-12-01T10:00:00Z",
        });
    }
    o
}

/// Ada: a member of News (public) and Staff (private); she left Offers by a one-click link; an
/// administrator removed her from Alerts; she was never in Quiet.
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
    for (name, display, visibility, description) in [
        (
            "news",
            "News",
            "public",
            Some("Product news, <monthly> & short"),
        ),
        ("offers", "Offers", "public", None),
        ("staff", "Staff", "private", None),
        ("alerts", "Alerts", "public", None),
        ("quiet", "Quiet", "public", None),
    ] {
        let mut spec = json!({"displayName": display, "visibility": visibility});
        if let Some(d) = description {
            spec["description"] = json!(d);
        }
        live.create(
            "contactgroups",
            object("ContactGroup", "people", name, spec),
        );
    }
    live.create(
        MEMBERSHIPS,
        pair_object("ContactGroupMembership", "m-news", "news", None),
    );
    live.create(
        MEMBERSHIPS,
        pair_object("ContactGroupMembership", "m-staff", "staff", None),
    );
    live.create(
        REMOVALS,
        pair_object(
            "ContactGroupMembershipRemoval",
            "r-offers",
            "offers",
            Some("one-click-unsubscribe"),
        ),
    );
    live.create(
        REMOVALS,
        pair_object("ContactGroupMembershipRemoval", "r-alerts", "alerts", None),
    );
    live
}

fn key(byte: u8) -> UnsubscribeKey {
    UnsubscribeKey::new(&[byte; 32]).unwrap()
}

fn ada(live: &LiveApi) -> Named {
    let o = live.get("contacts", "people", "ada").unwrap();
    Named {
        namespace: "people".into(),
        name: "ada".into(),
        uid: o["metadata"]["uid"].as_str().unwrap().into(),
    }
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn token(live: &LiveApi, keys: &UnsubscribeKeys) -> String {
    tokens::mint(keys, &ada(live), now() + 3_600)
}

struct Page {
    routes: axum::Router,
    keys: Arc<UnsubscribeKeys>,
}

impl Page {
    fn new(live: &LiveApi, keys: Arc<UnsubscribeKeys>) -> Self {
        let actions = PreferenceActions::new(live.client(), live.view.clone());
        Self {
            routes: router(keys.clone(), live.view.clone(), Arc::new(actions)),
            keys,
        }
    }

    async fn send(&self, request: Request<Body>) -> (u16, http::HeaderMap, String) {
        let response = self.routes.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    async fn get(&self, path: &str) -> (u16, http::HeaderMap, String) {
        self.send(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    async fn post(&self, token: &str, body: String) -> (u16, http::HeaderMap, String) {
        let request = Request::post(format!("/preferences/{token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap();
        self.send(request).await
    }

    /// The page's form for `group` and `action`, with the form value the page carries.
    async fn submit(&self, token: &str, group: &str, action: &str) -> (u16, String) {
        let (status, _, page) = self.get(&format!("/preferences/{token}")).await;
        assert_eq!(status, 200, "{page}");
        let marker = "name=\"form\" value=\"";
        let start = page.find(marker).expect("a form") + marker.len();
        let value = &page[start..start + page[start..].find('"').unwrap()];
        let body = format!("form={value}&group=people%2F{group}&action={action}");
        let (status, headers, _) = self.post(token, body).await;
        let location = headers
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, location)
    }
}

/// The cluster, its page with one key, and Ada's link token.
fn setup() -> (LiveApi, Page, String) {
    let live = cluster();
    let page = Page::new(&live, UnsubscribeKeys::single(key(1)));
    let token = token(&live, &page.keys);
    (live, page, token)
}

fn counts(live: &LiveApi) -> (usize, usize) {
    (live.all(MEMBERSHIPS).len(), live.all(REMOVALS).len())
}

#[tokio::test]
async fn the_page_shows_each_group_with_what_the_person_may_do_and_a_get_changes_nothing() {
    let (live, page, token) = setup();
    let (status, headers, html) = page.get(&format!("/preferences/{token}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("ada@example.com"));
    assert!(
        html.contains("<button type=\"submit\" class=\"leave\">Leave News</button>"),
        "{html}"
    );
    assert!(
        html.contains("Product news, &lt;monthly&gt; &amp; short"),
        "escaped: {html}"
    );
    assert!(
        html.contains("Rejoin Offers"),
        "her own opt-out may be undone"
    );
    assert!(!html.contains("Rejoin Alerts") && html.contains("An administrator removed you"));
    assert!(!html.contains("Leave Staff") && html.contains("Your organisation manages"));
    assert!(!html.contains("Quiet"), "never a member: not shown");
    // Alphabetical: Alerts, News, Offers, Staff.
    let at = |s: &str| html.find(s).unwrap();
    assert!(at("<h2>Alerts") < at("<h2>News") && at("<h2>News") < at("<h2>Offers"));
    assert!(at("<h2>Offers") < at("<h2>Staff"));
    assert!(html.contains("<html lang=\"en\">") && html.contains("name=\"viewport\""));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("style-src 'sha256-") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(counts(&live), (2, 2), "a GET changes nothing");
}

#[tokio::test]
async fn forged_expired_and_stale_links_get_404_and_change_nothing() {
    let live = cluster();
    let page = Page::new(&live, UnsubscribeKeys::single(key(1)));
    let good = token(&live, &page.keys);
    let expired = tokens::mint(&page.keys, &ada(&live), now() - 1);
    let foreign = token(&live, &UnsubscribeKeys::single(key(2)));
    let mut altered = good.clone();
    altered.insert(20, 'x');
    for bad in [&expired, &foreign, &altered, &"nothing".to_owned()] {
        let (status, _, html) = page.get(&format!("/preferences/{bad}")).await;
        assert_eq!(status, 404, "{bad}");
        assert!(html.contains("This link is not valid"));
        let form = tokens::form_value(&page.keys, bad, now());
        let (status, _, _) = page
            .post(bad, format!("form={form}&group=people%2Fnews&action=leave"))
            .await;
        assert_eq!(status, 404, "{bad}");
    }
    // Recreated: the same name, another uid.
    live.delete("contacts", "people", "ada");
    live.create(
        "contacts",
        object(
            "Contact",
            "people",
            "ada",
            json!({"email": "ada@example.com"}),
        ),
    );
    assert_eq!(page.get(&format!("/preferences/{good}")).await.0, 404);
    let form = tokens::form_value(&page.keys, &good, now());
    let (status, _, _) = page
        .post(
            &good,
            format!("form={form}&group=people%2Fnews&action=leave"),
        )
        .await;
    assert_eq!(
        status, 404,
        "the write checks the uid with the API server too"
    );
    assert_eq!(counts(&live), (2, 2));
}

#[tokio::test]
async fn a_post_needs_the_page_form_value_and_a_same_site_origin() {
    let (live, page, token) = setup();
    let other_page = tokens::mint(&page.keys, &ada(&live), now() + 7_200);
    let foreign = tokens::form_value(&page.keys, &other_page, now());
    let stale = tokens::form_value(&page.keys, &token, now() - 3 * 3_600);
    for form in [
        "",
        "form=",
        &format!("form={foreign}"),
        &format!("form={stale}"),
    ] {
        let body = format!("{form}&group=people%2Fnews&action=leave");
        let (status, _, html) = page.post(&token, body).await;
        assert_eq!(status, 403, "{form}");
        assert!(html.contains("This page has expired"), "{html}");
    }
    let form = tokens::form_value(&page.keys, &token, now());
    let request = Request::post(format!("/preferences/{token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(Body::from(format!(
            "form={form}&group=people%2Fnews&action=leave"
        )))
        .unwrap();
    assert_eq!(page.send(request).await.0, 403);
    let (status, _, _) = page
        .post(
            &token,
            format!("form={form}&group=people%2Fnews&action=subscribe-all"),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = page.post(&token, "x".repeat(4096)).await;
    assert_eq!(status, 413);
    assert_eq!(counts(&live), (2, 2));
}

#[tokio::test]
async fn leaving_and_rejoining_write_the_pair_with_provenance_and_an_operator_removal_stays() {
    let (live, page, token) = setup();
    let (status, location) = page.submit(&token, "news", "leave").await;
    assert_eq!(status, 303);
    assert_eq!(
        location,
        format!("/preferences/{token}?done=left&group=people%2Fnews")
    );
    let removal = live
        .all(REMOVALS)
        .into_iter()
        .find(|r| r["spec"]["contactGroupRef"]["name"] == "news")
        .expect("the pair's removal");
    let annotations = &removal["metadata"]["annotations"];
    assert_eq!(annotations[SOURCE_ANNOTATION], "preference-page");
    assert_eq!(annotations[TOKEN_ANNOTATION], token_id(&token));
    assert!(
        annotations[TIME_ANNOTATION]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    let (_, _, html) = page.get(&location).await;
    assert!(html.contains("role=\"status\">You left News."), "{html}");
    assert!(html.contains("Rejoin News"), "{html}");

    // The removal controller is not running here: the membership of the pair stays beside the
    // removal until it is, and a rejoin must not wait for it.
    live.delete(MEMBERSHIPS, "people", "m-news");
    let (status, location) = page.submit(&token, "news", "join").await;
    assert_eq!(status, 303);
    assert!(location.contains("done=joined"), "{location}");
    assert!(
        live.all(REMOVALS)
            .iter()
            .all(|r| r["spec"]["contactGroupRef"]["name"] != "news")
    );
    let rejoined = live
        .all(MEMBERSHIPS)
        .into_iter()
        .find(|m| m["spec"]["contactGroupRef"]["name"] == "news")
        .expect("the membership made again");
    let annotations = &rejoined["metadata"]["annotations"];
    assert_eq!(annotations[JOIN_SOURCE_ANNOTATION], "preference-page");
    assert_eq!(annotations[JOIN_TOKEN_ANNOTATION], token_id(&token));
    assert!(annotations[JOIN_TIME_ANNOTATION].is_string());
    let (_, _, html) = page.get(&location).await;
    assert!(
        html.contains("You are back in News.") && html.contains("Leave News"),
        "{html}"
    );

    // Her own one-click opt-out from Offers is hers to undo.
    let (_, location) = page.submit(&token, "offers", "join").await;
    assert!(location.contains("done=joined"), "{location}");
    assert!(live.get(REMOVALS, "people", "r-offers").is_none());

    // An administrator's removal stays, and the page says so.
    let form = tokens::form_value(&page.keys, &token, now());
    let (status, headers, _) = page
        .post(
            &token,
            format!("form={form}&group=people%2Falerts&action=join"),
        )
        .await;
    assert_eq!(status, 303);
    assert!(headers["location"].to_str().unwrap().contains("done=kept"));
    assert!(live.get(REMOVALS, "people", "r-alerts").is_some());
    // A private group cannot be left here.
    let (status, _, _) = page
        .post(
            &token,
            format!("form={form}&group=people%2Fstaff&action=leave"),
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        live.all(REMOVALS)
            .iter()
            .all(|r| r["spec"]["contactGroupRef"]["name"] != "staff")
    );
}

#[tokio::test]
async fn links_signed_before_a_key_rotation_keep_working() {
    let live = cluster();
    let sent = token(&live, &UnsubscribeKeys::single(key(1)));
    let rotated = Page::new(&live, UnsubscribeKeys::new(key(2), vec![key(1)]));
    assert_eq!(rotated.get(&format!("/preferences/{sent}")).await.0, 200);
    let (status, location) = rotated.submit(&sent, "news", "leave").await;
    assert_eq!((status, location.contains("done=left")), (303, true));
    let dropped = Page::new(&live, UnsubscribeKeys::single(key(2)));
    assert_eq!(dropped.get(&format!("/preferences/{sent}")).await.0, 404);
}
