//! Resend's suppression list and the Contacts' `Suppressed` condition, on the stateful API double
//! against the stateful fake Resend: `suppression.added` / `suppression.removed` events set and
//! lift the condition, the list read at each resync catches what no event reported, and lifting
//! a suppression lifts only the condition that came from it.

mod support;

use milo_webhook::api::common::sync::SUPPRESSED;
use milo_webhook::controllers::ControllerSettings;
use milo_webhook::controllers::resend::suppressions::{self, Resynced};
use milo_webhook::providers::resend::types::Suppression;
use serde_json::{Value, json};
use support::fake_resend::{self, FakeConfig};
use support::live_api::LiveApi;
use support::resend_harness::{CONTACTS, contact};

fn suppressed(live: &LiveApi, name: &str) -> Option<Value> {
    let c = live.get(CONTACTS, "people", name).unwrap();
    c["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == SUPPRESSED)
        .cloned()
}

fn at() -> jiff::Timestamp {
    "2026-12-01T10:00:00Z".parse().unwrap()
}

/// Ada, and Bob whose address already bounced (the email events set that condition).
fn cluster() -> LiveApi {
    let live = LiveApi::new();
    live.create(CONTACTS, contact("ada", "ada@example.com"));
    let mut bob = contact("bob", "bob@example.com");
    bob["status"] = json!({"conditions": [{"type": SUPPRESSED, "status": "True", "reason": "HardBounce",
        "message": "mail to this address bounced permanently at 2026-11-30T10:00:00Z (Resend email e-1)",
        "lastTransitionTime": "2026-11-30T10:00:00Z"}]});
    live.create(CONTACTS, bob);
    live
}

fn suppression(id: &str, email: &str, origin: &str) -> Suppression {
    Suppression {
        id: id.into(),
        email: email.into(),
        origin: Some(origin.into()),
    }
}

#[tokio::test]
async fn events_set_and_lift_only_what_a_suppression_set() {
    let live = cluster();
    let ctx = live.context(ControllerSettings::default());
    let (client, view) = (&ctx.client, &ctx.view);

    let ada = suppression("sup_ada", "ada@example.com", "manual");
    assert_eq!(
        suppressions::added(client, view, &ada, at()).await.unwrap(),
        1
    );
    let condition = suppressed(&live, "ada").unwrap();
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "ManualSuppression");
    // A repeat changes nothing.
    assert_eq!(
        suppressions::added(client, view, &ada, at()).await.unwrap(),
        0
    );

    // Bob's suppression at Resend came from his bounce; his condition came from the bounce
    // event, and it keeps what it says.
    let bob = suppression("sup_bob", "bob@example.com", "bounce");
    assert_eq!(
        suppressions::added(client, view, &bob, at()).await.unwrap(),
        0
    );
    assert_eq!(
        suppressions::removed(client, view, &bob, at())
            .await
            .unwrap(),
        0
    );
    let condition = suppressed(&live, "bob").unwrap();
    assert_eq!(condition["status"], "True");
    assert_eq!(condition["reason"], "HardBounce");

    // Another suppression of Ada's address lifts nothing; hers does.
    let other = suppression("sup_other", "ada@example.com", "manual");
    assert_eq!(
        suppressions::removed(client, view, &other, at())
            .await
            .unwrap(),
        0
    );
    let lifted = suppressions::removed(client, view, &ada, at())
        .await
        .unwrap();
    assert_eq!(lifted, 1, "{:?}", suppressed(&live, "ada"));
    let condition = suppressed(&live, "ada").unwrap();
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "SuppressionLifted");
}

#[tokio::test]
async fn the_list_read_at_resync_catches_what_no_event_reported() {
    let live = cluster();
    live.create(CONTACTS, contact("cy", "cy@example.com"));
    let ctx = live.context(ControllerSettings::default());
    let fake = fake_resend::start(FakeConfig::default()).await;
    let resend = fake.client(100.0);
    let ada = fake.insert_suppression("ada@example.com", "complaint");
    fake.insert_suppression("bob@example.com", "bounce");
    fake.insert_suppression("cy@example.com", "manual");

    let listed = resend.list_suppressions().await.unwrap();
    assert_eq!(listed.len(), 3);
    let done = suppressions::resync(&ctx.client, &ctx.view, &listed)
        .await
        .unwrap();
    assert_eq!(
        done,
        Resynced {
            suppressed: 2,
            lifted: 0
        }
    );
    assert_eq!(suppressed(&live, "ada").unwrap()["reason"], "Complaint");
    assert_eq!(
        suppressed(&live, "cy").unwrap()["reason"],
        "ManualSuppression"
    );
    assert_eq!(suppressed(&live, "bob").unwrap()["reason"], "HardBounce");

    // Ada's suppression is lifted in the dashboard and no event arrives: the next list lifts
    // her condition, and only hers.
    assert!(fake.remove_suppression(&ada));
    let listed = resend.list_suppressions().await.unwrap();
    let done = suppressions::resync(&ctx.client, &ctx.view, &listed)
        .await
        .unwrap();
    assert_eq!(
        done,
        Resynced {
            suppressed: 0,
            lifted: 1
        }
    );
    assert_eq!(suppressed(&live, "ada").unwrap()["status"], "False");
    assert_eq!(suppressed(&live, "cy").unwrap()["status"], "True");
    assert_eq!(suppressed(&live, "bob").unwrap()["status"], "True");
    // A settled pass writes nothing.
    let done = suppressions::resync(&ctx.client, &ctx.view, &listed)
        .await
        .unwrap();
    assert_eq!(done, Resynced::default());
}
