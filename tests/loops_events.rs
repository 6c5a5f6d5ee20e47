//! Loops' events end to end in process: deliveries signed as the fake Loops signs them, posted
//! over a socket to the real events listener, acted on by the Loops sink against the stateful API
//! server (which checks every request against the deployment's RBAC and every apply against our
//! CRDs). Forged, stale and replayed deliveries change nothing; unknown lists and people are
//! acknowledged and counted; a public group's list left is a removal, a private group's a mark on
//! the membership; a rejoin undoes a provider or link opt-out and nothing else.

mod support;

use std::sync::Arc;
use std::time::Duration;

use milo_webhook::api::common::sync::{LOOPS_UNSUBSCRIBED, UNSUBSCRIBED};
use milo_webhook::controllers::ControllerSettings;
use milo_webhook::controllers::consent::{
    EVENT_ANNOTATION, JOIN_EVENT_ANNOTATION, JOIN_SOURCE_ANNOTATION, JOIN_TIME_ANNOTATION,
    SOURCE_ANNOTATION, TIME_ANNOTATION,
};
use milo_webhook::controllers::loops::events::{FIELD_MANAGER, LoopsEventSink};
use milo_webhook::controllers::resend::optout;
use milo_webhook::controllers::resend::{self, ResendSync, SyncMetrics};
use milo_webhook::metrics::Metrics;
use milo_webhook::providers::loops::LoopsSigningKey;
use milo_webhook::providers::loops::events::{MAILING_LIST_SUBSCRIBED, MAILING_LIST_UNSUBSCRIBED};
use milo_webhook::server::provider_events::{
    LOOPS_EVENTS_PATH, ProviderEventMetrics, ProviderEventsConfig, router,
};
use milo_webhook::server::{ServeOptions, Server, Shutdown};
use serde_json::{Value, json};
use support::fake_loops::events::{SignedEvent, event_body};
use support::fake_loops::{self, FakeConfig, FakeLoops};
use support::live_api::{LiveApi, notification_object as object};

const REMOVALS: &str = "contactgroupmembershipremovals";
const MEMBERSHIPS: &str = "contactgroupmemberships";

/// The cluster, the fake Loops holding the same people and lists, and the listener.
struct Setup {
    live: LiveApi,
    loops: FakeLoops,
    /// List ids by group name.
    news: String,
    offers: String,
    staff: String,
    url: String,
    server: Arc<Server>,
}

fn membership(name: &str, group: &str) -> Value {
    object(
        "ContactGroupMembership",
        "people",
        name,
        json!({"contactRef": {"namespace": "people", "name": "ada"},
               "contactGroupRef": {"namespace": "groups", "name": group}}),
    )
}

fn group(name: &str, visibility: &str, list: &str) -> Value {
    object(
        "ContactGroup",
        "groups",
        name,
        json!({"displayName": name, "visibility": visibility,
               "providers": [{"name": "Loops", "id": list}]}),
    )
}

async fn setup() -> Setup {
    let live = LiveApi::new();
    let loops = fake_loops::start(FakeConfig::default()).await;
    live.create(
        "contacts",
        object(
            "Contact",
            "people",
            "ada",
            json!({"email": "Ada@Example.com"}),
        ),
    );
    let uid = live.get("contacts", "people", "ada").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    // As the sync upserts it: userId = the Contact's uid.
    loops.insert_contact("ada@example.com", Some(&uid));
    let news = loops.insert_list("News", true);
    let offers = loops.insert_list("Offers", true);
    let staff = loops.insert_list("Staff", false);
    live.create("contactgroups", group("news", "public", &news));
    live.create("contactgroups", group("offers", "public", &offers));
    live.create("contactgroups", group("staff", "private", &staff));
    for g in ["news", "offers", "staff"] {
        live.create(MEMBERSHIPS, membership(&format!("ada-{g}"), g));
        let list = match g {
            "news" => &news,
            "offers" => &offers,
            _ => &staff,
        };
        loops.set_on_list("ada@example.com", list, true);
    }

    let server = Arc::new(Server {
        view: live.view.clone(),
        metrics: Arc::new(Metrics::default()),
        options: ServeOptions::default(),
        shutdown: Shutdown::default(),
    });
    let config = ProviderEventsConfig {
        loops_key: Some(LoopsSigningKey::parse(&loops.signing_secret()).unwrap()),
        ..ProviderEventsConfig::default()
    };
    let sink = Arc::new(LoopsEventSink::new(live.client(), live.view.clone()));
    let routes = router(
        config,
        sink,
        server.metrics.register(ProviderEventMetrics::register),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}{LOOPS_EVENTS_PATH}",
        listener.local_addr().unwrap()
    );
    let s = server.clone();
    tokio::spawn(async move { s.serve_provider_events(listener, routes, None).await });
    Setup {
        live,
        loops,
        news,
        offers,
        staff,
        url,
        server,
    }
}

impl Setup {
    async fn post(&self, event: &SignedEvent) -> u16 {
        event.post(&self.url).await.unwrap().as_u16()
    }

    /// A list event about Ada that happened `ago` seconds ago (sent now).
    fn list_event(&self, name: &str, list: &str, ago: i64) -> SignedEvent {
        let at = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - ago).unwrap();
        let contact = self.loops.contact_by_email("ada@example.com").unwrap();
        let found = self.loops.lists().into_iter().find(|l| l.id == list);
        let list = found.unwrap_or_else(|| fake_loops::FakeList {
            id: list.to_owned(),
            name: "Elsewhere".into(),
            description: None,
            is_public: true,
        });
        self.loops
            .sign_event(&event_body(name, at, &contact, Some(&list)))
    }

    fn removals(&self) -> Vec<Value> {
        self.live.all(REMOVALS)
    }

    fn memberships_in(&self, group: &str) -> Vec<Value> {
        self.live
            .all(MEMBERSHIPS)
            .into_iter()
            .filter(|m| m["spec"]["contactGroupRef"]["name"] == group)
            .collect()
    }

    fn counted(&self, type_: &str, result: &str) -> u64 {
        let prefix = format!(
            "milo_webhook_provider_events_total{{provider=\"loops\",type=\"{type_}\",result=\"{result}\"}} "
        );
        self.server
            .metrics
            .encode(&self.server.view)
            .lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    fn assert_rbac_clean(&self) {
        let denied = self.live.state.lock().unwrap().denied.clone();
        assert!(denied.is_empty(), "RBAC refused: {denied:?}");
    }
}

fn annotation<'v>(object: &'v Value, key: &str) -> &'v Value {
    &object["metadata"]["annotations"][key]
}

fn condition(object: &Value, type_: &str) -> Option<Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

#[tokio::test]
async fn forged_stale_and_replayed_deliveries_change_nothing() {
    let s = setup().await;
    let left = s.list_event(MAILING_LIST_UNSUBSCRIBED, &s.news, 10);
    assert_eq!(s.post(&left.forged()).await, 401);
    let secret = s.loops.signing_secret();
    let stale = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(6 * 60);
    assert_eq!(s.post(&left.sent_at(&secret, stale)).await, 401);
    let altered = left.with_body(
        String::from_utf8(left.body.clone())
            .unwrap()
            .replace(&s.news, &s.offers)
            .into_bytes(),
    );
    assert_eq!(s.post(&altered).await, 401);
    assert!(s.removals().is_empty());
    assert_eq!(s.counted("unknown", "unauthorized"), 3);

    assert_eq!(s.post(&left).await, 200);
    assert_eq!(s.removals().len(), 1);
    // An operator takes the opt-out back in the cluster; a replay of the delivery (inside the
    // signature's window) must not make it again.
    let name = s.removals()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    s.live.delete(REMOVALS, "people", &name);
    assert_eq!(s.post(&left).await, 200);
    assert!(s.removals().is_empty(), "a replay changed the cluster");
    assert_eq!(s.counted(MAILING_LIST_UNSUBSCRIBED, "applied"), 1);
    assert_eq!(s.counted(MAILING_LIST_UNSUBSCRIBED, "duplicate"), 1);
    s.assert_rbac_clean();
}

#[tokio::test]
async fn unknown_lists_and_people_are_acknowledged_and_counted() {
    let s = setup().await;
    let elsewhere = s.list_event(MAILING_LIST_UNSUBSCRIBED, "cl-not-ours", 10);
    assert_eq!(s.post(&elsewhere).await, 200);
    assert_eq!(s.counted(MAILING_LIST_UNSUBSCRIBED, "unknown_list"), 1);
    // The same address, but another person's userId (the address was reused): not Ada.
    s.loops.remove_contact("ada@example.com");
    s.loops
        .insert_contact("ada@example.com", Some("uid-of-someone-else"));
    let stranger = s.list_event(MAILING_LIST_UNSUBSCRIBED, &s.news, 10);
    assert_eq!(s.post(&stranger).await, 200);
    // No userId: the email decides, and nobody has this one.
    s.loops.insert_contact("nobody@example.com", None);
    let contact = s.loops.contact_by_email("nobody@example.com").unwrap();
    let at = jiff::Timestamp::now();
    let list = s
        .loops
        .lists()
        .into_iter()
        .find(|l| l.id == s.news)
        .unwrap();
    let nobody = s.loops.sign_event(&event_body(
        MAILING_LIST_UNSUBSCRIBED,
        at,
        &contact,
        Some(&list),
    ));
    assert_eq!(s.post(&nobody).await, 200);
    assert_eq!(s.counted(MAILING_LIST_UNSUBSCRIBED, "unknown_contact"), 2);
    // Types the receiver does not act on are acknowledged.
    let test = s
        .loops
        .sign_event(&json!({"eventName": "testing.testEvent", "message": "hello"}));
    assert_eq!(s.post(&test).await, 200);
    assert_eq!(s.counted("testing.testEvent", "ignored"), 1);
    assert!(s.removals().is_empty());
    assert!(
        condition(
            &s.live.get(MEMBERSHIPS, "people", "ada-staff").unwrap(),
            LOOPS_UNSUBSCRIBED
        )
        .is_none()
    );
    s.assert_rbac_clean();
}

#[tokio::test]
async fn leaving_a_public_groups_list_is_a_removal_with_its_audit_trail() {
    let s = setup().await;
    let left = s.loops.leave_list("ada@example.com", &s.news).unwrap();
    assert_eq!(s.post(&left).await, 200);
    let removals = s.removals();
    assert_eq!(removals.len(), 1, "{removals:?}");
    let r = &removals[0];
    assert_eq!(r["metadata"]["namespace"], "people");
    assert!(
        r["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("unsubscribe-ada-news-"),
        "named as every provider opt-out: {}",
        r["metadata"]["name"]
    );
    assert_eq!(
        r["spec"]["contactGroupRef"],
        json!({"namespace": "groups", "name": "news"})
    );
    assert_eq!(annotation(r, SOURCE_ANNOTATION), "loops-unsubscribe");
    assert_eq!(annotation(r, EVENT_ANNOTATION), left.id.as_str());
    let when = jiff::Timestamp::from_second(left.json()["eventTime"].as_i64().unwrap()).unwrap();
    assert_eq!(annotation(r, TIME_ANNOTATION), when.to_string().as_str());
    // The other groups are untouched, and the private one is not marked.
    assert_eq!(s.memberships_in("offers").len(), 1);
    assert!(
        condition(
            &s.live.get(MEMBERSHIPS, "people", "ada-staff").unwrap(),
            LOOPS_UNSUBSCRIBED
        )
        .is_none()
    );
    s.assert_rbac_clean();
}

#[tokio::test]
async fn leaving_a_private_groups_list_keeps_the_membership_and_marks_it() {
    let s = setup().await;
    let left = s.list_event(MAILING_LIST_UNSUBSCRIBED, &s.staff, 20);
    assert_eq!(s.post(&left).await, 200);
    assert!(s.removals().is_empty(), "private groups get no removal");
    let staff = s
        .live
        .get(MEMBERSHIPS, "people", "ada-staff")
        .expect("kept");
    let mark = condition(&staff, LOOPS_UNSUBSCRIBED).expect("marked");
    assert_eq!(mark["status"], "True");
    assert_eq!(mark["reason"], "LoopsUnsubscribe");
    assert!(mark["message"].as_str().unwrap().contains(&left.id));
    let owners = s.live.state.lock().unwrap().owners.clone();
    let id = (
        MEMBERSHIPS.to_owned(),
        "people".to_owned(),
        "ada-staff".to_owned(),
    );
    assert!(
        owners[&id].of(FIELD_MANAGER, true).is_some(),
        "applied under its own field manager"
    );
    // An older rejoin changes nothing; a newer one lifts the mark.
    let older = s.list_event(MAILING_LIST_SUBSCRIBED, &s.staff, 30);
    assert_eq!(s.post(&older).await, 200);
    let staff = s.live.get(MEMBERSHIPS, "people", "ada-staff").unwrap();
    assert_eq!(
        condition(&staff, LOOPS_UNSUBSCRIBED).unwrap()["status"],
        "True"
    );
    let back = s.list_event(MAILING_LIST_SUBSCRIBED, &s.staff, 5);
    assert_eq!(s.post(&back).await, 200);
    let staff = s.live.get(MEMBERSHIPS, "people", "ada-staff").unwrap();
    let mark = condition(&staff, LOOPS_UNSUBSCRIBED).unwrap();
    assert_eq!(
        (mark["status"].as_str(), mark["reason"].as_str()),
        (Some("False"), Some("LoopsResubscribe"))
    );
    assert!(s.removals().is_empty());
    s.assert_rbac_clean();
}

/// Ada's memberships of `group` are gone, as the removal controller would delete them.
fn membership_deleted(s: &Setup, group: &str) {
    for m in s.memberships_in(group) {
        let name = m["metadata"]["name"].as_str().unwrap();
        s.live.delete(MEMBERSHIPS, "people", name);
    }
}

#[tokio::test]
async fn rejoining_after_a_provider_or_link_opt_out_makes_the_membership_again() {
    let s = setup().await;
    let left = s.list_event(MAILING_LIST_UNSUBSCRIBED, &s.news, 60);
    assert_eq!(s.post(&left).await, 200);
    membership_deleted(&s, "news");
    let joined = s.list_event(MAILING_LIST_SUBSCRIBED, &s.news, 30);
    assert_eq!(s.post(&joined).await, 200);
    assert!(s.removals().is_empty(), "{:?}", s.removals());
    let news = s.memberships_in("news");
    assert_eq!(news.len(), 1, "{news:?}");
    let m = &news[0];
    assert!(
        m["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("rejoin-ada-news-")
    );
    assert_eq!(m["metadata"]["namespace"], "people");
    assert_eq!(annotation(m, JOIN_SOURCE_ANNOTATION), "loops-subscribe");
    assert_eq!(annotation(m, JOIN_EVENT_ANNOTATION), joined.id.as_str());
    let when = jiff::Timestamp::from_second(joined.json()["eventTime"].as_i64().unwrap()).unwrap();
    assert_eq!(
        annotation(m, JOIN_TIME_ANNOTATION),
        when.to_string().as_str()
    );

    // A Resend opt-out and a one-click link are undone the same way.
    for (group, source) in [
        ("offers", "resend-unsubscribe"),
        ("news", "one-click-unsubscribe"),
    ] {
        membership_deleted(&s, group);
        let mut r = object(
            "ContactGroupMembershipRemoval",
            "people",
            &format!("unsubscribe-ada-{group}"),
            json!({"contactRef": {"namespace": "people", "name": "ada"},
                   "contactGroupRef": {"namespace": "groups", "name": group}}),
        );
        r["metadata"]["annotations"] = json!({SOURCE_ANNOTATION: source,
            TIME_ANNOTATION: "2026-01-01T00:00:00Z"});
        s.live.create(REMOVALS, r);
        let list = if group == "news" { &s.news } else { &s.offers };
        assert_eq!(
            s.post(&s.list_event(MAILING_LIST_SUBSCRIBED, list, 1))
                .await,
            200
        );
        assert!(s.removals().is_empty(), "{source}: {:?}", s.removals());
        assert_eq!(s.memberships_in(group).len(), 1, "{source}");
    }
    s.assert_rbac_clean();
}

#[tokio::test]
async fn a_removal_made_in_the_cluster_or_newer_than_the_rejoin_stays() {
    let s = setup().await;
    for (name, annotations) in [
        ("ada-leaves-news", json!({})),
        (
            "ada-complained",
            json!({SOURCE_ANNOTATION: "resend-complaint",
            TIME_ANNOTATION: "2026-01-01T00:00:00Z"}),
        ),
    ] {
        membership_deleted(&s, "news");
        for r in s.removals() {
            s.live
                .delete(REMOVALS, "people", r["metadata"]["name"].as_str().unwrap());
        }
        let mut r = object(
            "ContactGroupMembershipRemoval",
            "people",
            name,
            json!({"contactRef": {"namespace": "people", "name": "ada"},
                   "contactGroupRef": {"namespace": "groups", "name": "news"}}),
        );
        r["metadata"]["annotations"] = annotations;
        s.live.create(REMOVALS, r);
        let joined = s.list_event(MAILING_LIST_SUBSCRIBED, &s.news, 1);
        assert_eq!(s.post(&joined).await, 200);
        assert_eq!(s.removals().len(), 1, "{name} stays");
        assert!(s.memberships_in("news").is_empty(), "{name}: no membership");
    }
    // A Loops opt-out after the rejoin (its event arrived first) is the person's newer word.
    for r in s.removals() {
        s.live
            .delete(REMOVALS, "people", r["metadata"]["name"].as_str().unwrap());
    }
    let joined = s.list_event(MAILING_LIST_SUBSCRIBED, &s.news, 60);
    let left = s.list_event(MAILING_LIST_UNSUBSCRIBED, &s.news, 30);
    assert_eq!(s.post(&left).await, 200);
    assert_eq!(s.post(&joined).await, 200);
    assert_eq!(s.removals().len(), 1);
    assert!(s.memberships_in("news").is_empty());
    assert_eq!(s.counted(MAILING_LIST_SUBSCRIBED, "ignored"), 3);
    s.assert_rbac_clean();
}

#[tokio::test]
async fn unsubscribing_from_everything_is_resends_opt_out_public_groups_only() {
    let s = setup().await;
    let all = s.loops.unsubscribe_from_all("ada@example.com").unwrap();
    assert_eq!(s.post(&all).await, 200);
    let ada = s.live.get("contacts", "people", "ada").unwrap();
    let unsubscribed = condition(&ada, UNSUBSCRIBED).expect("recorded on the Contact");
    assert_eq!(unsubscribed["status"], "True");
    assert_eq!(unsubscribed["reason"], optout::LOOPS_REASON);
    assert!(s.removals().is_empty(), "only the leader acts on it");

    // The leader's contact loop (the Resend sync's, today) creates the removals.
    let fake = support::fake_resend::start(support::fake_resend::FakeConfig::default()).await;
    let ctx = Arc::new(s.live.context(ControllerSettings::default()));
    let sync = Arc::new(ResendSync::new(
        ctx,
        fake.client(100.0),
        SyncMetrics::default(),
    ));
    let task = tokio::spawn(resend::run(sync));
    for _ in 0..400 {
        if s.removals().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    task.abort();
    let mut groups: Vec<String> = s
        .removals()
        .iter()
        .map(|r| {
            assert_eq!(annotation(r, SOURCE_ANNOTATION), "loops-unsubscribe");
            assert_eq!(annotation(r, EVENT_ANNOTATION), all.id.as_str());
            r["spec"]["contactGroupRef"]["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    groups.sort();
    assert_eq!(groups, ["news", "offers"], "the private group stays");
    s.assert_rbac_clean();
}
