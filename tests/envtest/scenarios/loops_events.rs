//! (m) Loops' events through a real API server: deliveries signed with the Loops webhook secret,
//! posted to the server's events listener on Milo's path, acted on under the deployment's RBAC,
//! with the real webhook admitting (or refusing) what the receiver writes. A public group's list
//! left is a removal the removal controller then enforces; a rejoin deletes a provider opt-out
//! and makes the membership again, past the webhook that refuses memberships beside a removal; a
//! removal an operator made stays; a private group's membership stays, marked; forged, stale
//! and replayed deliveries change nothing.

use std::time::Duration;

use milo_webhook::providers::loops::LoopsSigningKey;
use milo_webhook::server::provider_events::LOOPS_EVENTS_PATH;
use serde_json::{Value, json};

use crate::harness::objects::{create, eventually, get};
use crate::harness::server::LOOPS_SIGNING_SECRET;
use crate::harness::{CrdSet, EnvOptions};

use super::{annotation, contact, group, membership, pair_objects, removal, start};

const WAIT: Duration = Duration::from_secs(45);
const NEWS_LIST: &str = "cm0news0000000000000000001";
const STAFF_LIST: &str = "cm0staff000000000000000001";

/// A ContactGroup bound to the Loops list `list`.
fn bound_group(name: &str, visibility: &str, list: &str) -> Value {
    let mut g = group("groups", name, visibility);
    g["spec"]["providers"] = json!([{"name": "Loops", "id": list}]);
    g
}

/// A Loops event body about the person `(email, userId)`, `ago` seconds old.
fn body(event_name: &str, who: (&str, &str), list: Option<&str>, ago: i64) -> Value {
    let mut body = json!({
        "eventName": event_name,
        "eventTime": jiff::Timestamp::now().as_second() - ago,
        "webhookSchemaVersion": "1.0.0",
        "contactIdentity": {"id": "cl0000000000000000000000001", "email": who.0, "userId": who.1},
    });
    if let Some(list) = list {
        body["mailingList"] =
            json!({"id": list, "name": list, "description": null, "isPublic": true});
    }
    body
}

/// Posts `body` as delivery `id`, signed with `secret` and sent `age` seconds ago; the status.
async fn deliver(url: &str, secret: &str, id: &str, age: i64, body: &Value) -> u16 {
    let body = body.to_string();
    let timestamp = (jiff::Timestamp::now().as_second() - age).to_string();
    let key = LoopsSigningKey::parse(secret).expect("a valid signing secret");
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", &timestamp)
        .header(
            "webhook-signature",
            key.sign(id, &timestamp, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("post the event")
        .status()
        .as_u16()
}

fn condition(object: &Value, type_: &str) -> Value {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

/// Leaving and rejoining lists at Loops, for public and private groups, against the real API
/// server and webhook.
pub async fn list_events(crds: CrdSet) {
    let env = start(crds, EnvOptions::default()).await;
    let c = &env.client;
    create(c, &bound_group("news", "public", NEWS_LIST)).await;
    create(c, &bound_group("staff", "private", STAFF_LIST)).await;
    let ada = create(c, &contact("people", "ada", "ada@example.com")).await;
    let ada_uid = ada["metadata"]["uid"].as_str().unwrap().to_owned();
    let ada_who = ("ada@example.com", ada_uid.as_str());
    create(
        c,
        &membership("ada-news", ("people", "ada"), ("groups", "news")),
    )
    .await;
    create(
        c,
        &membership("ada-staff", ("people", "ada"), ("groups", "staff")),
    )
    .await;
    let url = format!("{}{LOOPS_EVENTS_PATH}", env.servers[0].events_url());
    let left = body(
        "contact.mailingList.unsubscribed",
        ada_who,
        Some(NEWS_LIST),
        120,
    );

    // Forged and stale deliveries are refused and change nothing.
    let forged = "whsec_Zm9yZ2VkLWtleS1mb3JnZWQta2V5LWZvcmdlZC1rZXkh";
    assert_eq!(deliver(&url, forged, "msg_l1", 0, &left).await, 401);
    assert_eq!(
        deliver(&url, LOOPS_SIGNING_SECRET, "msg_l1", 6 * 60, &left).await,
        401
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(pair_objects(c, "ada", "news").await.0.is_empty());

    // Ada leaves the public group's list: a removal, which the removal controller enforces.
    assert_eq!(
        deliver(&url, LOOPS_SIGNING_SECRET, "msg_l1", 0, &left).await,
        200
    );
    let removal_made = eventually("ada's news membership removed", WAIT, || async {
        match pair_objects(c, "ada", "news").await {
            (removals, memberships) if removals.len() == 1 && memberships.is_empty() => {
                Ok(removals[0].clone())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        annotation(&removal_made, "notification.miloapis.com/removal-source"),
        "loops-unsubscribe"
    );
    assert_eq!(
        annotation(&removal_made, "notification.miloapis.com/removal-event"),
        "msg_l1"
    );
    // A replay of the same delivery is acknowledged and changes nothing.
    assert_eq!(
        deliver(&url, LOOPS_SIGNING_SECRET, "msg_l1", 0, &left).await,
        200
    );

    // Ada leaves the private group's list: the membership stays, marked.
    let left_staff = body(
        "contact.mailingList.unsubscribed",
        ada_who,
        Some(STAFF_LIST),
        90,
    );
    assert_eq!(
        deliver(&url, LOOPS_SIGNING_SECRET, "msg_l2", 0, &left_staff).await,
        200
    );
    let staff = get(c, "ContactGroupMembership", Some("people"), "ada-staff")
        .await
        .expect("a private group's membership stays");
    let mark = condition(&staff, "LoopsUnsubscribed");
    assert_eq!(mark["status"], "True", "{}", staff["status"]);
    assert_eq!(mark["reason"], "LoopsUnsubscribe");
    let managers: Vec<&str> = staff["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"milo-webhook-loops-events"),
        "{managers:?}"
    );

    // Ada rejoins the public list on Loops' preference page: her provider opt-out is undone and
    // the membership made again, which the webhook admits once the removal is gone.
    let joined = body(
        "contact.mailingList.subscribed",
        ada_who,
        Some(NEWS_LIST),
        60,
    );
    assert_eq!(
        deliver(&url, LOOPS_SIGNING_SECRET, "msg_l3", 0, &joined).await,
        200
    );
    let (removals, memberships) = pair_objects(c, "ada", "news").await;
    assert!(removals.is_empty(), "{removals:?}");
    assert_eq!(memberships.len(), 1, "{memberships:?}");
    let rejoined = &memberships[0];
    assert!(
        rejoined["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("rejoin-ada-news-")
    );
    assert_eq!(
        annotation(rejoined, "notification.miloapis.com/membership-source"),
        "loops-subscribe"
    );
    assert_eq!(
        annotation(rejoined, "notification.miloapis.com/membership-event"),
        "msg_l3"
    );

    // Bob's removal was made by an operator in the cluster: rejoining at Loops changes nothing.
    let bob = create(c, &contact("people", "bob", "bob@example.com")).await;
    let bob_uid = bob["metadata"]["uid"].as_str().unwrap().to_owned();
    create(
        c,
        &removal("bob-leaves-news", ("people", "bob"), ("groups", "news")),
    )
    .await;
    let bob_joined = body(
        "contact.mailingList.subscribed",
        ("bob@example.com", &bob_uid),
        Some(NEWS_LIST),
        5,
    );
    assert_eq!(
        deliver(&url, LOOPS_SIGNING_SECRET, "msg_l4", 0, &bob_joined).await,
        200
    );
    let (removals, memberships) = pair_objects(c, "bob", "news").await;
    assert_eq!(removals.len(), 1, "{removals:?}");
    assert!(memberships.is_empty(), "{memberships:?}");

    // A list no group is bound to, and someone else's userId: acknowledged, nothing changes.
    let elsewhere = body(
        "contact.mailingList.unsubscribed",
        ada_who,
        Some("cm0other"),
        5,
    );
    assert_eq!(
        deliver(&url, LOOPS_SIGNING_SECRET, "msg_l5", 0, &elsewhere).await,
        200
    );
    let stranger = body(
        "contact.mailingList.unsubscribed",
        ("ada@example.com", "not-ada"),
        Some(NEWS_LIST),
        5,
    );
    assert_eq!(
        deliver(&url, LOOPS_SIGNING_SECRET, "msg_l6", 0, &stranger).await,
        200
    );
    assert!(pair_objects(c, "ada", "news").await.0.is_empty());

    // Ada unsubscribes from everything: her Contact records it as a Resend opt-out would be.
    let all = body("contact.unsubscribed", ada_who, None, 1);
    assert_eq!(
        deliver(&url, LOOPS_SIGNING_SECRET, "msg_l7", 0, &all).await,
        200
    );
    let ada = get(c, "Contact", Some("people"), "ada").await.unwrap();
    let unsubscribed = condition(&ada, "Unsubscribed");
    assert_eq!(unsubscribed["status"], "True", "{}", ada["status"]);
    assert_eq!(unsubscribed["reason"], "LoopsUnsubscribe");

    let metrics = env.metrics().await;
    for (type_, result) in [
        ("unknown", "unauthorized"),
        ("contact.mailingList.unsubscribed", "applied"),
        ("contact.mailingList.unsubscribed", "duplicate"),
        ("contact.mailingList.unsubscribed", "unknown_list"),
        ("contact.mailingList.unsubscribed", "unknown_contact"),
        ("contact.mailingList.subscribed", "applied"),
        ("contact.mailingList.subscribed", "ignored"),
    ] {
        let series = format!(
            "milo_webhook_provider_events_total{{provider=\"loops\",type=\"{type_}\",result=\"{result}\"}}"
        );
        assert!(
            metrics.contains(&series),
            "{series} missing from:\n{metrics}"
        );
    }
    env.assert_server_writes_clean();
}
