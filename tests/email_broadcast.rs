//! EmailBroadcast delivery end to end: the broadcast loop on the stateful API server (feeding the
//! view, checking RBAC) against the fake Resend with its batch idempotency.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use milo_webhook::controllers::ControllerSettings;
use milo_webhook::controllers::email::broadcast::{self, BroadcastSender};
use milo_webhook::controllers::email::{EmailSettings, UnsubscribeLinks};
use milo_webhook::providers::resend::ResendClient;
use milo_webhook::server::preferences;
use milo_webhook::server::unsubscribe::{UnsubscribeKey, UnsubscribeKeys, verify};
use serde_json::{Value, json};
use support::fake_resend::{self, FakeConfig, FakeResend, Fault};
use support::live_api::{LiveApi, notification_object as object};

const FROM: &str = "Milo <news@example.com>";
const BASE: &str = "https://mail.example.com";
const STATUS_PATH: &str =
    "PATCH /apis/notification.miloapis.com/v1alpha1/namespaces/groups/emailbroadcasts/b1/status";

fn key() -> UnsubscribeKey {
    UnsubscribeKey::new(&[7u8; 32]).unwrap()
}

fn condition(type_: &str) -> Value {
    json!({"type": type_, "status": "True", "reason": "Test", "message": "",
        "lastTransitionTime": "2026-11-27T12:00:00Z"})
}

/// A group of `members` contacts `people/c000...` (given name `Given<i>`), and the template.
fn cluster(members: usize, visibility: &str) -> LiveApi {
    let live = LiveApi::new();
    live.create(
        "emailtemplates",
        json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "EmailTemplate",
            "metadata": {"name": "news"}, "spec": {
                "subject": "News for {{.GivenName}}",
                "htmlBody": "<p>Hi {{{FIRST_NAME}}} {{.FamilyName}}</p><a href=\"{{.UnsubscribeLink}}\">out</a>",
                "textBody": "Hi {{.GivenName}} at {{{EMAIL}}} {{.UnsubscribeLink}} prefs: {{.PreferencesLink}}",
                "variables": [{"name": "GivenName", "type": "string"},
                              {"name": "FamilyName", "type": "string"},
                              {"name": "UnsubscribeLink", "type": "string"},
                              {"name": "PreferencesLink", "type": "string"}]}}),
    );
    live.create(
        "contactgroups",
        object(
            "ContactGroup",
            "groups",
            "news",
            json!({"displayName": "News", "visibility": visibility}),
        ),
    );
    for i in 0..members {
        add_member(&live, i, json!({}));
    }
    live
}

fn add_member(live: &LiveApi, i: usize, status: Value) {
    let mut contact = object(
        "Contact",
        "people",
        &format!("c{i:03}"),
        json!({"email": format!("p{i}@example.com"), "givenName": format!("Given{i}"),
            "familyName": "Doe"}),
    );
    contact["status"] = status;
    live.create("contacts", contact);
    live.create(
        "contactgroupmemberships",
        object(
            "ContactGroupMembership",
            "people",
            &format!("m{i:03}"),
            json!({"contactRef": {"namespace": "people", "name": format!("c{i:03}")},
                "contactGroupRef": {"namespace": "groups", "name": "news"}}),
        ),
    );
}

fn broadcast(live: &LiveApi, extra: Value) {
    let mut spec = json!({"contactGroupRef": {"namespace": "groups", "name": "news"},
        "templateRef": {"name": "news"}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    live.create(
        "emailbroadcasts",
        object("EmailBroadcast", "groups", "b1", spec),
    );
}

fn client(fake: &FakeResend) -> ResendClient {
    fake.client(200.0)
}

fn start(live: &LiveApi, fake: &FakeResend, links: bool) -> tokio::task::JoinHandle<()> {
    start_with(live.context(ControllerSettings::default()), fake, links)
}

fn start_with(
    ctx: milo_webhook::controllers::Context,
    fake: &FakeResend,
    links: bool,
) -> tokio::task::JoinHandle<()> {
    let ctx = Arc::new(ctx);
    let settings = EmailSettings {
        from: Some(FROM.into()),
        reply_to: None,
        unsubscribe: links.then(|| UnsubscribeLinks {
            keys: UnsubscribeKeys::single(key()),
            base_url: BASE.into(),
            preferences_ttl: std::time::Duration::from_secs(3_600),
        }),
    };
    let sender = BroadcastSender::new(ctx, client(fake), settings);
    tokio::spawn(broadcast::run(Arc::new(sender)))
}

fn ready(live: &LiveApi) -> Option<Value> {
    let b = live.get("emailbroadcasts", "groups", "b1")?;
    b["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
}

fn reason(live: &LiveApi) -> String {
    ready(live).map_or_else(String::new, |c| c["reason"].as_str().unwrap_or("").into())
}

async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..800 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// How many mails each address got.
fn per_address(fake: &FakeResend) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for mail in fake.sent_emails() {
        *counts.entry(mail.to()).or_default() += 1;
    }
    counts
}

fn counts(live: &LiveApi) -> (i64, i64, i64) {
    let status = &live.get("emailbroadcasts", "groups", "b1").unwrap()["status"];
    let n = |f: &str| status[f].as_i64().unwrap_or(-1);
    (
        n("recipientsSent"),
        n("recipientsSkipped"),
        n("recipientsFailed"),
    )
}

/// Lets the first batch go out (the caller slows it down) and fails the status write after it,
/// then stops the sender: a crash between the send and its record. The sender retries at once
/// (its own write woke it), so the writes keep failing until it is stopped: however often it
/// repeated the batch meanwhile, the batch stays recorded and unconfirmed.
async fn crash_after_the_first_batch(live: &LiveApi, task: tokio::task::JoinHandle<()>) {
    let writes = |live: &LiveApi| {
        let state = live.state.lock().unwrap();
        state
            .requests
            .iter()
            .filter(|r| r.as_str() == STATUS_PATH)
            .count()
    };
    // The batch is recorded (one write) before the slow send; the next writes come after it.
    until("the first batch recorded", || writes(live) >= 1).await;
    live.state.lock().unwrap().fail_once = vec![STATUS_PATH.to_owned(); 20];
    until("the status write after the send failed", || {
        writes(live) >= 2
    })
    .await;
    task.abort();
    tokio::time::sleep(Duration::from_millis(50)).await;
    live.state.lock().unwrap().fail_once.clear();
}

fn assert_no_denials(live: &LiveApi) {
    let denied = live.state.lock().unwrap().denied.clone();
    assert!(denied.is_empty(), "RBAC refused: {denied:?}");
}

#[tokio::test]
async fn only_members_without_opt_out_suppression_or_unsubscribe_get_mail_with_one_click_links() {
    let live = cluster(2, "public");
    add_member(&live, 2, json!({}));
    add_member(&live, 3, json!({"conditions": [condition("Suppressed")]}));
    add_member(&live, 4, json!({"conditions": [condition("Unsubscribed")]}));
    live.create(
        "contactgroupmembershipremovals",
        object(
            "ContactGroupMembershipRemoval",
            "people",
            "r2",
            json!({"contactRef": {"namespace": "people", "name": "c002"},
                "contactGroupRef": {"namespace": "groups", "name": "news"}}),
        ),
    );
    // A name that needs escaping in HTML.
    live.update_spec(
        "contacts",
        "people",
        "c001",
        json!({"givenName": "<Ada & co>"}),
    );
    broadcast(&live, json!({}));
    let fake = fake_resend::start(FakeConfig::default()).await;
    let task = start(&live, &fake, true);
    until("done", || reason(&live) == "CreateSuccessful").await;
    task.abort();
    let sent = per_address(&fake);
    assert_eq!(
        sent.keys().cloned().collect::<Vec<_>>(),
        ["p0@example.com", "p1@example.com"],
        "opted out, suppressed and unsubscribed members get nothing"
    );
    assert_eq!(counts(&live), (2, 3, 0));
    assert_eq!(ready(&live).unwrap()["status"], "True");
    assert_eq!(fake.count(Method::POST, "/emails/batch"), 1);
    let group_uid = live.get("contactgroups", "groups", "news").unwrap()["metadata"]["uid"].clone();
    for mail in fake.sent_emails() {
        let p = &mail.payload;
        let contact = if mail.to() == "p0@example.com" {
            "c000"
        } else {
            "c001"
        };
        let header = p["headers"]["List-Unsubscribe"].as_str().unwrap();
        assert_eq!(
            p["headers"]["List-Unsubscribe-Post"],
            "List-Unsubscribe=One-Click"
        );
        let url = header
            .strip_prefix('<')
            .and_then(|h| h.strip_suffix('>'))
            .unwrap();
        let token = url.strip_prefix(&format!("{BASE}/unsubscribe/")).unwrap();
        let target = verify(&UnsubscribeKeys::single(key()), token).expect("a genuine token");
        let contact_uid =
            live.get("contacts", "people", contact).unwrap()["metadata"]["uid"].clone();
        assert_eq!(json!(target.contact.uid), contact_uid);
        assert_eq!(target.contact.name, contact);
        assert_eq!(json!(target.group.uid), group_uid);
        assert!(
            p["html"]
                .as_str()
                .unwrap()
                .contains(&format!("href=\"{url}\""))
        );
        assert!(p["text"].as_str().unwrap().contains(url));
        // The preference link names the same contact and works for the configured hour.
        let text = p["text"].as_str().unwrap();
        let page = text
            .split_once("prefs: ")
            .and_then(|(_, rest)| rest.strip_prefix(&format!("{BASE}/preferences/")))
            .expect("a preference link");
        let now = jiff::Timestamp::now().as_second();
        let keys = UnsubscribeKeys::single(key());
        let named = preferences::tokens::verify(&keys, page, now).expect("a genuine page token");
        assert_eq!(json!(named.uid), contact_uid);
        assert!(
            preferences::tokens::verify(&keys, page, now + 3_601).is_err(),
            "expired"
        );
        assert_eq!(p["from"], FROM);
    }
    let ada = fake
        .sent_emails()
        .into_iter()
        .find(|m| m.to() == "p1@example.com")
        .unwrap();
    assert_eq!(ada.payload["subject"], "News for <Ada & co>");
    assert!(
        ada.payload["html"]
            .as_str()
            .unwrap()
            .starts_with("<p>Hi &lt;Ada &amp; co&gt; Doe</p>"),
        "{}",
        ada.payload["html"]
    );
    assert!(
        ada.payload["text"]
            .as_str()
            .unwrap()
            .starts_with("Hi <Ada & co> at p1@example.com")
    );
    assert_no_denials(&live);
}

#[tokio::test]
async fn a_private_group_gets_no_unsubscribe_link() {
    let live = cluster(3, "private");
    broadcast(&live, json!({}));
    let fake = fake_resend::start(FakeConfig::default()).await;
    let task = start(&live, &fake, true);
    until("done", || reason(&live) == "CreateSuccessful").await;
    task.abort();
    let sent = fake.sent_emails();
    assert_eq!(sent.len(), 3);
    for mail in sent {
        assert!(mail.payload.get("headers").is_none(), "{}", mail.payload);
        assert!(mail.payload["html"].as_str().unwrap().contains("href=\"\""));
    }
    assert_eq!(counts(&live), (3, 0, 0));
}

#[tokio::test]
async fn a_public_group_without_unsubscribe_configured_is_not_sent() {
    let live = cluster(3, "public");
    broadcast(&live, json!({}));
    let fake = fake_resend::start(FakeConfig::default()).await;
    let task = start(&live, &fake, false);
    until("refused", || reason(&live) == "UnsubscribeNotConfigured").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.abort();
    assert_eq!(ready(&live).unwrap()["status"], "False");
    assert!(fake.sent_emails().is_empty());
    assert_eq!(fake.count(Method::POST, "/emails"), 0);
    assert_no_denials(&live);
}

/// On a cluster whose EmailBroadcast CRD is Milo's (no `pendingBatch`, `sentThrough`, ...),
/// exactly-once sending cannot record its progress: nothing is sent, `Ready` says why and how
/// to fix it, and the refused bookkeeping is never sent to be refused.
#[tokio::test]
async fn on_a_crd_without_the_bookkeeping_fields_nothing_is_sent_and_ready_says_why() {
    let live = cluster(3, "public");
    broadcast(&live, json!({}));
    let fake = fake_resend::start(FakeConfig::default()).await;
    let ctx = live.context(ControllerSettings::default());
    ctx.schemas.compare(
        &milo_webhook::crds::all(),
        &support::milo_crds::as_read(),
        &Default::default(),
    );
    let task = start_with(ctx, &fake, true);
    until("refused", || reason(&live) == "CRDFieldsMissing").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.abort();
    let condition = ready(&live).unwrap();
    assert_eq!(condition["status"], "False");
    let message = condition["message"].as_str().unwrap();
    assert!(message.contains("status.pendingBatch"), "{message}");
    assert!(
        message.contains("kubectl apply -k manifests/crds"),
        "{message}"
    );
    let status = &live.get("emailbroadcasts", "groups", "b1").unwrap()["status"];
    assert!(status.get("sentThrough").is_none(), "{status}");
    assert!(fake.sent_emails().is_empty());
    assert_eq!(fake.count(Method::POST, "/emails/batch"), 0);
    let writes = live
        .state
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.as_str() == STATUS_PATH)
        .count();
    assert_eq!(writes, 1, "Ready is written once, not on every wake");
    assert_no_denials(&live);
}

#[tokio::test]
async fn every_recipient_gets_mail_exactly_once_across_a_crash_after_a_batch_was_sent() {
    let live = cluster(250, "public");
    add_member(&live, 250, json!({"conditions": [condition("Suppressed")]}));
    broadcast(&live, json!({}));
    let uid = live.get("emailbroadcasts", "groups", "b1").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let fake = fake_resend::start(FakeConfig::default()).await;
    // The first batch is slow; while it is in flight, the status write after it is made to fail.
    fake.fail_next_matching(
        1,
        Method::POST,
        "/emails/batch",
        Fault::Delay(Duration::from_millis(400)),
    );
    let task = start(&live, &fake, true);
    crash_after_the_first_batch(&live, task).await;
    assert_eq!(fake.sent_emails().len(), 100, "the first batch went out");
    let status = live.get("emailbroadcasts", "groups", "b1").unwrap()["status"].clone();
    assert_eq!(status["pendingBatch"]["key"], json!(format!("{uid}-0")));
    assert!(status.get("sentThrough").is_none(), "{status}");
    // A fresh sender (nothing in memory) takes over.
    let task = start(&live, &fake, true);
    until("done", || reason(&live) == "CreateSuccessful").await;
    task.abort();
    let sent = per_address(&fake);
    assert_eq!(sent.len(), 250, "nobody skipped");
    assert!(sent.values().all(|n| *n == 1), "nobody twice: {sent:?}");
    assert!(!sent.contains_key("p250@example.com"));
    assert_eq!(counts(&live), (250, 1, 0));
    let keys: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/emails/batch")
        .filter_map(|r| r.idempotency_key.clone())
        .collect();
    // The recorded batch was repeated under its key (by the retry, the new sender or both), then
    // the rest, each under its own.
    let mut distinct = keys.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        [0, 1, 2].map(|i| format!("{uid}-{i}")),
        "{keys:?}"
    );
    assert!(keys.len() >= 4, "the first batch was repeated: {keys:?}");
    assert_no_denials(&live);
}

#[tokio::test]
async fn a_changed_range_after_a_crash_is_recognised_as_sent_by_its_used_key() {
    let live = cluster(150, "public");
    broadcast(&live, json!({}));
    let fake = fake_resend::start(FakeConfig::default()).await;
    fake.fail_next_matching(
        1,
        Method::POST,
        "/emails/batch",
        Fault::Delay(Duration::from_millis(400)),
    );
    let task = start(&live, &fake, true);
    crash_after_the_first_batch(&live, task).await;
    // Someone in the sent range opts out meanwhile: the replay's payload differs, the key is used.
    live.create(
        "contactgroupmembershipremovals",
        object(
            "ContactGroupMembershipRemoval",
            "people",
            "r10",
            json!({"contactRef": {"namespace": "people", "name": "c010"},
                "contactGroupRef": {"namespace": "groups", "name": "news"}}),
        ),
    );
    let task = start(&live, &fake, true);
    until("done", || reason(&live) == "CreateSuccessful").await;
    task.abort();
    let sent = per_address(&fake);
    assert_eq!(sent.len(), 150);
    let log: Vec<(String, u16, Option<String>)> = fake
        .requests()
        .iter()
        .map(|r| (r.path.clone(), r.status, r.idempotency_key.clone()))
        .collect();
    assert!(
        sent.values().all(|n| *n == 1),
        "nobody twice: {:?} {log:?}",
        sent.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(
        fake.requests().iter().any(|r| r.status == 409),
        "the replay was refused as a used key"
    );
    assert_eq!(counts(&live), (150, 0, 0));
}

#[tokio::test]
async fn a_scheduled_broadcast_waits_for_its_time() {
    let live = cluster(2, "private");
    let at = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 2).unwrap();
    broadcast(&live, json!({"scheduledAt": at.to_string()}));
    let fake = fake_resend::start(FakeConfig::default()).await;
    let task = start(&live, &fake, true);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(fake.sent_emails().is_empty(), "nothing before scheduledAt");
    until("done", || reason(&live) == "CreateSuccessful").await;
    task.abort();
    assert!(jiff::Timestamp::now() >= at, "sent at or after its time");
    assert_eq!(fake.sent_emails().len(), 2);
}

#[tokio::test]
async fn deleting_a_broadcast_stops_further_batches() {
    let live = cluster(300, "private");
    broadcast(&live, json!({}));
    // A finalizer of someone else's keeps it visible while it is being deleted.
    {
        let mut state = live.state.lock().unwrap();
        let id = (
            "emailbroadcasts".to_owned(),
            "groups".to_owned(),
            "b1".to_owned(),
        );
        state.objects.get_mut(&id).unwrap()["metadata"]["finalizers"] = json!(["example.com/keep"]);
    }
    let fake = fake_resend::start(FakeConfig::default()).await;
    fake.fail_next_matching(
        1,
        Method::POST,
        "/emails/batch",
        Fault::Delay(Duration::from_millis(400)),
    );
    let task = start(&live, &fake, true);
    until("the first batch in flight", || {
        fake.count(Method::POST, "/emails/batch") >= 1
    })
    .await;
    live.delete("emailbroadcasts", "groups", "b1");
    tokio::time::sleep(Duration::from_millis(800)).await;
    task.abort();
    assert_eq!(
        fake.count(Method::POST, "/emails/batch"),
        1,
        "no batch after the deletion"
    );
    assert_eq!(fake.sent_emails().len(), 100);
    assert_ne!(reason(&live), "CreateSuccessful");
}
