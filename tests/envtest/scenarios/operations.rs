//! What happens around the processes: (h) a provider opt-out event becoming a removal, (i) an
//! Email sent exactly once across a crash of the server (and its delivery event recorded), (l)
//! the Lease handed over on SIGTERM.

use std::time::{Duration, Instant};

use http::Method;
use milo_webhook::providers::svix::{SigningKey, sign};
use milo_webhook::server::provider_events::{CONTACT_EVENTS_PATH, EMAIL_EVENTS_PATH};
use serde_json::{Value, json};

use crate::harness::objects::{condition_true, create, eventually, get, list};
use crate::harness::server::SIGNING_SECRET;
use crate::harness::{CrdSet, Env, EnvOptions, SYSTEM_NAMESPACE, ServerOptions};
use crate::support::fake_resend::Fault;

use super::{contact, group, membership, start, user};

const WAIT: Duration = Duration::from_secs(45);

/// A signed Resend webhook delivery to the server's provider events listener; the HTTP status.
pub(super) async fn deliver(url: &str, id: &str, body: &Value) -> u16 {
    let body = body.to_string();
    let timestamp = jiff::Timestamp::now().as_second().to_string();
    let key = SigningKey::parse(SIGNING_SECRET).expect("a valid signing secret");
    let signature = sign(&key, id, &timestamp, body.as_bytes());
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("svix-id", id)
        .header("svix-timestamp", timestamp)
        .header("svix-signature", signature)
        .body(body)
        .send()
        .await
        .expect("post the event")
        .status()
        .as_u16()
}

/// A person unsubscribing at Resend (a signed `contact.updated` event) gets the Contact's
/// `Unsubscribed` condition and a removal for each public group (whose membership the removal
/// controller then deletes); private groups are kept.
pub async fn provider_opt_out(crds: CrdSet) {
    let options = EnvOptions {
        resend: true,
        ..Default::default()
    };
    let env = start(crds, options).await;
    let c = &env.client;
    create(c, &group("groups", "news", "public")).await;
    create(c, &group("groups", "staff", "private")).await;
    create(c, &contact("people", "ada", "ada@example.com")).await;
    let news = ("groups", "news");
    create(c, &membership("ada-news", ("people", "ada"), news)).await;
    create(
        c,
        &membership("ada-staff", ("people", "ada"), ("groups", "staff")),
    )
    .await;
    eventually("ada mirrored", WAIT, || async {
        let ada = get(c, "Contact", Some("people"), "ada").await.unwrap();
        if condition_true(&ada, "ResendContactReady") {
            Ok(())
        } else {
            Err(ada["status"].to_string())
        }
    })
    .await;
    let id = env
        .resend()
        .contact("ada@example.com")
        .expect("mirrored")
        .id;
    let event = json!({"type": "contact.updated", "created_at": "2026-12-07T12:00:00.000Z",
        "data": {"id": id, "email": "ada@example.com", "first_name": "ada",
                 "unsubscribed": true, "segment_ids": [], "audience_id": "a-1"}});
    let url = format!("{}{CONTACT_EVENTS_PATH}", env.servers[0].events_url());
    assert_eq!(deliver(&url, "msg_optout_1", &event).await, 200);

    eventually("ada Unsubscribed", WAIT, || async {
        let ada = get(c, "Contact", Some("people"), "ada").await.unwrap();
        if condition_true(&ada, "Unsubscribed") {
            Ok(())
        } else {
            Err(ada["status"].to_string())
        }
    })
    .await;
    let removals = eventually("a removal from news", WAIT, || async {
        let removals = list(c, "ContactGroupMembershipRemoval", None).await;
        if removals.is_empty() {
            Err("none".into())
        } else {
            Ok(removals)
        }
    })
    .await;
    eventually("ada's news membership deleted", WAIT, || async {
        match get(c, "ContactGroupMembership", Some("people"), "ada-news").await {
            None => Ok(()),
            Some(m) => Err(m["metadata"].to_string()),
        }
    })
    .await;
    // The same event again (Resend retries): nothing new.
    assert_eq!(deliver(&url, "msg_optout_1", &event).await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = list(c, "ContactGroupMembershipRemoval", None).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(removals.len(), 1, "{removals:?}");
    let spec = &after[0]["spec"];
    assert_eq!(
        spec["contactRef"],
        json!({"namespace": "people", "name": "ada"})
    );
    assert_eq!(
        spec["contactGroupRef"],
        json!({"namespace": "groups", "name": "news"})
    );
    assert!(
        get(c, "ContactGroupMembership", Some("people"), "ada-staff")
            .await
            .is_some(),
        "a private group's membership is kept"
    );

    // A suppression made and then lifted in Resend's dashboard reaches the Contact.
    let suppression = |type_: &str| {
        json!({"type": type_, "created_at": "2026-12-07T12:05:00.000Z",
            "data": {"id": "sup_env_1", "email": "ada@example.com", "origin": "manual"}})
    };
    let suppressed = |status: &'static str| async move {
        let ada = get(c, "Contact", Some("people"), "ada").await.unwrap();
        let found = ada["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Suppressed").cloned());
        match found {
            Some(s) if s["status"] == status => Ok(s),
            other => Err(format!("{other:?}")),
        }
    };
    let added = suppression("suppression.added");
    assert_eq!(deliver(&url, "msg_suppressed_1", &added).await, 200);
    let condition = eventually("ada Suppressed", WAIT, || suppressed("True")).await;
    assert_eq!(condition["reason"], "ManualSuppression");
    let removed = suppression("suppression.removed");
    assert_eq!(deliver(&url, "msg_suppressed_2", &removed).await, 200);
    let condition = eventually("ada's suppression lifted", WAIT, || suppressed("False")).await;
    assert_eq!(condition["reason"], "SuppressionLifted");
    env.assert_server_writes_clean();
}

fn template() -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "EmailTemplate",
        "metadata": {"name": "welcome"}, "spec": {
            "subject": "Welcome to {{.Org}}",
            "htmlBody": "<p>{{.Org}} welcomes you</p>",
            "textBody": "{{.Org}} welcomes you",
            "variables": [{"name": "Org", "required": true, "type": "string"}]}})
}

/// An Email whose first send is answered but the answer lost, with the server killed right
/// then and started again: Resend gets the same idempotency key each time and sends one mail;
/// the Email records its id.
pub async fn email_once_across_restart(crds: CrdSet) {
    let options = EnvOptions {
        resend: true,
        ..Default::default()
    };
    let mut env = Env::start(crds, options).await;
    let c = env.client.clone();
    env.namespace("org-1").await;
    create(&c, &template()).await;
    create(&c, &user("u-ada", "ada@example.com")).await;
    let fake = env.resend().handle();
    fake.fail_next_matching(1, Method::POST, "/emails", Fault::DropAnswer);
    create(
        &c,
        &json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Email",
            "metadata": {"namespace": "org-1", "name": "hello"},
            "spec": {"templateRef": {"name": "welcome"}, "recipient": {"userRef": {"name": "u-ada"}},
                     "priority": "normal", "variables": [{"name": "Org", "value": "Acme"}]}}),
    )
    .await;
    eventually("the first send", WAIT, || async {
        match fake.count(Method::POST, "/emails") {
            0 => Err("no send yet".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    // A crash between the send and the status write.
    env.servers[0].kill();
    env.servers[0].restart().await;
    let email = eventually("the provider id recorded", WAIT, || async {
        let email = get(&c, "Email", Some("org-1"), "hello").await.unwrap();
        if email["status"]["providerID"].is_string() {
            Ok(email)
        } else {
            Err(email["status"].to_string())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = fake.sent_emails();
    assert_eq!(sent.len(), 1, "exactly one mail: {sent:?}");
    assert_eq!(sent[0].to(), "ada@example.com");
    assert_eq!(email["status"]["providerID"], json!(sent[0].id));
    let keys: Vec<Option<String>> = fake
        .requests()
        .iter()
        .filter(|r| r.method == Method::POST && r.path.starts_with("/emails"))
        .map(|r| r.idempotency_key.clone())
        .collect();
    assert!(keys.len() >= 2, "the send was repeated after the crash");
    assert!(
        keys.iter().all(|k| k.is_some() && *k == keys[0]),
        "one idempotency key: {keys:?}"
    );

    // Resend reports the delivery (a signed email event): the Email says so.
    let event = json!({"type": "email.delivered", "created_at": "2026-12-07T12:00:00.000Z",
        "data": {"email_id": sent[0].id, "to": ["ada@example.com"]}});
    let url = format!("{}{EMAIL_EVENTS_PATH}", env.servers[0].events_url());
    assert_eq!(deliver(&url, "msg_delivered_1", &event).await, 200);
    eventually("Delivered", WAIT, || async {
        let email = get(&c, "Email", Some("org-1"), "hello").await.unwrap();
        let delivered = email["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Delivered"))
            .cloned();
        match delivered {
            Some(d) if d["status"] == "True" && d["reason"] == "DeliverySuccessful" => Ok(()),
            _ => Err(email["status"].to_string()),
        }
    })
    .await;
    env.assert_server_writes_clean();
}

async fn holder(c: &kube::Client) -> Option<String> {
    get(
        c,
        "Lease",
        Some(SYSTEM_NAMESPACE),
        "milo-webhook-controllers",
    )
    .await
    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

/// Two replicas: the first leads; on SIGTERM it exits within its drain and releases the Lease,
/// so the second takes over well before the Lease would have expired, and its controllers run.
pub async fn lease_handover(crds: CrdSet) {
    const LEASE_SECONDS: u64 = 12;
    let options = EnvOptions {
        server: ServerOptions {
            lease_seconds: LEASE_SECONDS,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut env = Env::start(crds, options).await;
    let c = env.client.clone();
    eventually("replica-a leads", WAIT, || async {
        match holder(&c).await.as_deref() {
            Some("replica-a") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    env.add_replica("replica-b").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(holder(&c).await.as_deref(), Some("replica-a"));

    let sigterm = Instant::now();
    assert!(
        env.servers[0].terminate(Duration::from_secs(10)),
        "replica-a did not exit within 10 s of SIGTERM"
    );
    eventually("replica-b leads", WAIT, || async {
        match holder(&c).await.as_deref() {
            Some("replica-b") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let handover = sigterm.elapsed();
    assert!(
        handover < Duration::from_secs(LEASE_SECONDS),
        "the Lease was taken over after {handover:?}: expired, not released"
    );

    // replica-a comes back (it serves the registered webhooks) as a follower; replica-b's
    // controllers do the work: a new User gets its Contact.
    env.servers[0].restart().await;
    create(&c, &user("u-7", "seven@example.com")).await;
    eventually("user-u-7 created by the new leader", WAIT, || async {
        get(&c, "Contact", Some(SYSTEM_NAMESPACE), "user-u-7")
            .await
            .map(drop)
            .ok_or_else(|| "no Contact yet".to_owned())
    })
    .await;
    assert_eq!(holder(&c).await.as_deref(), Some("replica-b"));
    env.assert_server_writes_clean();
}
