//! Email delivery end to end: the leader's email controller on the stateful API server (feeding
//! the view, checking RBAC) against the fake Resend, and signed email events through the real
//! events router into the sink of any replica.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Method;
use http::Request;
use milo_webhook::controllers::email::{self, EmailSender, render::Sender};
use milo_webhook::controllers::resend::sink::OptOutSink;
use milo_webhook::controllers::resend::{self, ResendSync, SyncMetrics};
use milo_webhook::controllers::{Context, ControllerSettings};
use milo_webhook::providers::resend::ResendClient;
use milo_webhook::providers::svix::{SigningKey, sign};
use milo_webhook::server::provider_events::{
    EMAIL_EVENTS_PATH, ProviderEventMetrics, ProviderEventsConfig, router,
};
use serde_json::{Value, json};
use support::fake_resend::{self, FakeConfig, FakeResend, Fault};
use support::live_api::{LiveApi, notification_object as object};
use tower::ServiceExt;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const FROM: &str = "Milo <noreply@example.com>";

fn cluster() -> LiveApi {
    let live = LiveApi::new();
    live.create(
        "emailtemplates",
        json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "EmailTemplate",
            "metadata": {"name": "invite"}, "spec": {
                "subject": "Join {{.Org}}",
                "htmlBody": "<p>{{.Org}} invites you{{if .Note}}: {{.Note}}{{end}}</p>",
                "textBody": "{{.Org}} invites you",
                "variables": [{"name": "Org", "required": true, "type": "string"},
                              {"name": "Note", "required": false, "type": "string"}]}}),
    );
    live.create(
        "users",
        json!({"apiVersion": "iam.miloapis.com/v1alpha1", "kind": "User",
            "metadata": {"name": "u-ada"}, "spec": {"email": "ada@example.com"}}),
    );
    live
}

fn email_to(name: &str, recipient: Value, priority: &str) -> Value {
    object(
        "Email",
        "org-1",
        name,
        json!({"templateRef": {"name": "invite"}, "recipient": recipient, "priority": priority,
            "variables": [{"name": "Org", "value": "A&B"}]}),
    )
}

async fn sender(live: &LiveApi, rate: f64) -> (tokio::task::JoinHandle<()>, FakeResend) {
    let fake = fake_resend::start(FakeConfig::default()).await;
    (start_sender(live, &fake, rate), fake)
}

fn client(fake: &FakeResend, rate: f64) -> ResendClient {
    fake.client(rate)
}

fn context(live: &LiveApi) -> Arc<Context> {
    Arc::new(live.context(ControllerSettings::default()))
}

fn start_sender(live: &LiveApi, fake: &FakeResend, rate: f64) -> tokio::task::JoinHandle<()> {
    let sender = Sender {
        from: FROM.into(),
        reply_to: Some("help@example.com".into()),
    };
    let sender = EmailSender::new(context(live), client(fake, rate), sender);
    tokio::spawn(email::run(Arc::new(sender)))
}

fn events_router(live: &LiveApi) -> axum::Router {
    let config = ProviderEventsConfig {
        email_key: Some(SigningKey::parse(SECRET).unwrap()),
        ..ProviderEventsConfig::default()
    };
    let sink = Arc::new(OptOutSink::new(live.client(), live.view.clone()));
    router(
        config,
        sink,
        ProviderEventMetrics::register(&mut Default::default()),
    )
}

/// Sends a signed email event; the answer's status.
async fn event(events: &axum::Router, id: &str, type_: &str, at: &str, data: Value) -> u16 {
    let body = json!({"type": type_, "created_at": at, "data": data}).to_string();
    let timestamp = jiff::Timestamp::now().as_second().to_string();
    let signature = sign(
        &SigningKey::parse(SECRET).unwrap(),
        id,
        &timestamp,
        body.as_bytes(),
    );
    let request = Request::post(EMAIL_EVENTS_PATH)
        .header("content-type", "application/json")
        .header("svix-id", id)
        .header("svix-timestamp", timestamp)
        .header("svix-signature", signature)
        .body(Body::from(body))
        .unwrap();
    let response = events.clone().oneshot(request).await.unwrap();
    response.status().as_u16()
}

fn delivered(live: &LiveApi, name: &str) -> Option<Value> {
    let email = live.get("emails", "org-1", name)?;
    email["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Delivered")
        .cloned()
}

fn contact_condition(live: &LiveApi, name: &str, type_: &str) -> Option<Value> {
    let contact = live.get("contacts", "people", name)?;
    contact["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn provider_id(live: &LiveApi, name: &str) -> Option<String> {
    live.get("emails", "org-1", name)?["status"]["providerID"]
        .as_str()
        .map(str::to_owned)
}

fn assert_no_denials(live: &LiveApi) {
    let denied = live.state.lock().unwrap().denied.clone();
    assert!(denied.is_empty(), "RBAC refused: {denied:?}");
}

#[tokio::test]
async fn an_invitation_email_is_sent_once_across_a_crash_between_send_and_status_write() {
    let live = cluster();
    live.create(
        "emails",
        email_to("inv", json!({"userRef": {"name": "u-ada"}}), "normal"),
    );
    let uid = live.get("emails", "org-1", "inv").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let fake = fake_resend::start(FakeConfig::default()).await;
    // The send happens, its answer is lost; then the status write after the replayed send fails.
    fake.fail_next_matching(1, Method::POST, "/emails", Fault::DropAnswer);
    live.state.lock().unwrap().fail_once.push(
        "PATCH /apis/notification.miloapis.com/v1alpha1/namespaces/org-1/emails/inv/status".into(),
    );
    let task = start_sender(&live, &fake, 50.0);
    until("the provider id recorded", || {
        provider_id(&live, "inv").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    let sent = fake.sent_emails();
    assert_eq!(sent.len(), 1, "exactly one email: {sent:?}");
    assert!(
        fake.count(Method::POST, "/emails") >= 3,
        "the send was repeated"
    );
    for request in fake.requests() {
        assert_eq!(request.idempotency_key.as_deref(), Some(uid.as_str()));
    }
    let mail = &sent[0];
    assert_eq!(mail.to(), "ada@example.com");
    assert_eq!(mail.payload["from"], FROM);
    assert_eq!(mail.payload["reply_to"], "help@example.com");
    assert!(
        !mail.payload.to_string().contains(&uid),
        "no mail header or field carries the key"
    );
    let email = live.get("emails", "org-1", "inv").unwrap();
    assert_eq!(email["status"]["providerID"], json!(mail.id));
    assert_eq!(email["status"]["subject"], "Join A&B");
    assert_eq!(email["status"]["htmlBody"], "<p>A&amp;B invites you</p>");
    assert_eq!(email["status"]["textBody"], "A&B invites you");
    assert_eq!(email["status"]["emailAddress"], "ada@example.com");
    let condition = delivered(&live, "inv").unwrap();
    assert_eq!(condition["status"], "Unknown");
    assert_eq!(condition["reason"], "DeliveryPending");
    assert_no_denials(&live);
}

#[tokio::test]
async fn delivery_events_out_of_order_never_regress_a_final_state() {
    let live = cluster();
    live.create(
        "emails",
        email_to("e1", json!({"emailAddress": "bob@example.com"}), "normal"),
    );
    let (task, _fake) = sender(&live, 50.0).await;
    until("sent", || provider_id(&live, "e1").is_some()).await;
    task.abort();
    let id = provider_id(&live, "e1").unwrap();
    let events = events_router(&live);
    let data = json!({"email_id": id, "to": ["bob@example.com"]});
    let status = |live: &LiveApi| delivered(live, "e1").unwrap()["status"].clone();
    assert_eq!(
        event(
            &events,
            "m1",
            "email.delivered",
            "2026-11-27T13:00:00Z",
            data.clone()
        )
        .await,
        200
    );
    assert_eq!(status(&live), "True");
    assert_eq!(
        delivered(&live, "e1").unwrap()["reason"],
        "DeliverySuccessful"
    );
    // A late sent, and even a later-stamped delayed, keep it delivered.
    event(
        &events,
        "m2",
        "email.sent",
        "2026-11-27T12:59:00Z",
        data.clone(),
    )
    .await;
    event(
        &events,
        "m3",
        "email.delivery_delayed",
        "2026-11-27T13:05:00Z",
        data.clone(),
    )
    .await;
    assert_eq!(status(&live), "True");
    // A bounce is stronger than a delivery: final False with the reason.
    let mut bounced = data.clone();
    bounced["bounce"] =
        json!({"type": "Transient", "subType": "MailboxFull", "message": "mailbox full"});
    event(
        &events,
        "m4",
        "email.bounced",
        "2026-11-27T13:10:00Z",
        bounced,
    )
    .await;
    let condition = delivered(&live, "e1").unwrap();
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "DeliveryFailed");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("mailbox full")
    );
    // A later delivery does not undo the failure.
    event(
        &events,
        "m5",
        "email.delivered",
        "2026-11-27T13:20:00Z",
        data.clone(),
    )
    .await;
    assert_eq!(status(&live), "False");
    // A transient bounce suppresses nothing.
    assert!(contact_condition(&live, "bob", "Suppressed").is_none());
    // Mail other systems sent through the account: accepted, ignored.
    let other = json!({"email_id": "not-ours", "to": ["x@example.com"]});
    assert_eq!(
        event(
            &events,
            "m6",
            "email.delivered",
            "2026-11-27T13:00:00Z",
            other
        )
        .await,
        200
    );
    assert_no_denials(&live);
}

#[tokio::test]
async fn a_hard_bounce_suppresses_the_address_and_nothing_more_is_sent_to_it() {
    let live = cluster();
    live.create(
        "contacts",
        object(
            "Contact",
            "people",
            "ada",
            json!({"email": "Ada@Example.com"}),
        ),
    );
    live.create(
        "emails",
        email_to("first", json!({"userRef": {"name": "u-ada"}}), "normal"),
    );
    let (task, fake) = sender(&live, 50.0).await;
    until("sent", || provider_id(&live, "first").is_some()).await;
    let id = provider_id(&live, "first").unwrap();
    let events = events_router(&live);
    let data = json!({"email_id": id, "to": ["ada@example.com"],
        "bounce": {"type": "Permanent", "subType": "General", "message": "no such user"}});
    assert_eq!(
        event(&events, "b1", "email.bounced", "2026-11-27T13:00:00Z", data).await,
        200
    );
    let suppressed = contact_condition(&live, "ada", "Suppressed").expect("suppressed");
    assert_eq!(suppressed["status"], "True");
    assert_eq!(suppressed["reason"], "HardBounce");
    let message = suppressed["message"].as_str().unwrap();
    assert!(
        message.contains(&id) && message.contains("2026-11-27T13:00:00Z"),
        "{message}"
    );
    assert_eq!(
        delivered(&live, "first").unwrap()["reason"],
        "DeliveryFailed"
    );
    live.create(
        "emails",
        email_to("second", json!({"emailAddress": "ada@example.com"}), "high"),
    );
    until("the second settled", || {
        delivered(&live, "second").is_some()
    })
    .await;
    let condition = delivered(&live, "second").unwrap();
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "Suppressed");
    assert_eq!(
        fake.sent_emails().len(),
        1,
        "no provider call for a suppressed address"
    );
    assert_eq!(fake.count(Method::POST, "/emails"), 1);
    task.abort();
    assert_no_denials(&live);
}

#[tokio::test]
async fn a_complaint_suppresses_and_opts_out_of_public_groups_only() {
    let live = cluster();
    live.create(
        "contacts",
        object(
            "Contact",
            "people",
            "ada",
            json!({"email": "ada@example.com"}),
        ),
    );
    for (group, visibility) in [("news", "public"), ("staff", "private")] {
        live.create(
            "contactgroups",
            object(
                "ContactGroup",
                "groups",
                group,
                json!({"displayName": group, "visibility": visibility}),
            ),
        );
        live.create(
            "contactgroupmemberships",
            object(
                "ContactGroupMembership",
                "people",
                &format!("ada-{group}"),
                json!({"contactRef": {"namespace": "people", "name": "ada"},
                       "contactGroupRef": {"namespace": "groups", "name": group}}),
            ),
        );
    }
    live.create(
        "emails",
        email_to("e1", json!({"emailAddress": "ada@example.com"}), "normal"),
    );
    let (task, fake) = sender(&live, 50.0).await;
    until("sent", || provider_id(&live, "e1").is_some()).await;
    let id = provider_id(&live, "e1").unwrap();
    let events = events_router(&live);
    let data = json!({"email_id": id, "to": ["ada@example.com"]});
    assert_eq!(
        event(
            &events,
            "c1",
            "email.complained",
            "2026-11-27T13:00:00Z",
            data
        )
        .await,
        200
    );
    assert_eq!(
        contact_condition(&live, "ada", "Suppressed").unwrap()["reason"],
        "Complaint"
    );
    assert_eq!(
        contact_condition(&live, "ada", "Unsubscribed").unwrap()["reason"],
        "Complaint"
    );
    // The leader's contact loop turns the opt-out into removals.
    let sync = Arc::new(ResendSync::new(
        context(&live),
        client(&fake, 50.0),
        SyncMetrics::default(),
    ));
    let sync_task = tokio::spawn(resend::run(sync));
    until("a removal", || {
        !live.all("contactgroupmembershipremovals").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let removals = live.all("contactgroupmembershipremovals");
    assert_eq!(removals.len(), 1, "{removals:?}");
    assert_eq!(removals[0]["spec"]["contactGroupRef"]["name"], "news");
    assert_eq!(
        removals[0]["metadata"]["annotations"]["notification.miloapis.com/removal-source"],
        "resend-complaint"
    );
    sync_task.abort();
    task.abort();
    assert_no_denials(&live);
}

#[tokio::test]
async fn a_permanent_refusal_is_recorded_and_not_retried() {
    let live = cluster();
    let fake = fake_resend::start(FakeConfig::default()).await;
    fake.refuse_emails(
        "unverified.example",
        403,
        "validation_error",
        "The unverified.example domain is not verified.",
    );
    live.create(
        "emails",
        email_to(
            "bad",
            json!({"emailAddress": "x@unverified.example"}),
            "normal",
        ),
    );
    let task = start_sender(&live, &fake, 50.0);
    until("settled", || delivered(&live, "bad").is_some()).await;
    let condition = delivered(&live, "bad").unwrap();
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "DeliveryFailed");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("not verified")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.count(Method::POST, "/emails"), 1, "never retried");
    task.abort();
    assert_no_denials(&live);
}

#[tokio::test]
async fn high_priority_goes_first_when_the_rate_limit_binds() {
    let live = cluster();
    for i in 0..6 {
        live.create(
            "emails",
            email_to(
                &format!("low-{i}"),
                json!({"emailAddress": format!("low{i}@example.com")}),
                "low",
            ),
        );
    }
    for i in 0..3 {
        live.create(
            "emails",
            email_to(
                &format!("high-{i}"),
                json!({"emailAddress": format!("high{i}@example.com")}),
                "high",
            ),
        );
    }
    let (task, fake) = sender(&live, 4.0).await;
    until("all sent", || fake.sent_emails().len() == 9).await;
    task.abort();
    let order: Vec<String> = fake.sent_emails().iter().map(|e| e.to()).collect();
    let last_high = order.iter().rposition(|to| to.starts_with("high")).unwrap();
    // Three highs, and at most the gate's slots taken by lows before the highs registered.
    assert!(
        last_high <= 4,
        "high-priority mail waited behind low: {order:?}"
    );
    assert_no_denials(&live);
}
