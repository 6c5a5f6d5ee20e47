//! (p) The preference page in a real browser against a real API server: headless Chromium opens
//! Ada's page on the server's events listener, leaves a public group and rejoins it by its
//! buttons, and after each step the cluster holds what the page said, written under the
//! deployment's RBAC past the real webhook (which refuses a membership beside a removal): the
//! removal with its provenance, the removal controller's deletion of the membership, then the
//! removal gone and a membership made again with its own provenance. A private group is shown as
//! the organisation's, with no button; a stale link gets the 404 page and changes nothing.
//! Both providers run beside it (the fake Resend and Loops): each change reaches them, and what
//! it cost there is counted. Screenshots of each step are kept in `target/test-artifacts/`.

use std::time::Duration;

use milo_webhook::server::preferences::tokens;
use milo_webhook::server::unsubscribe::{Named, UnsubscribeKey, UnsubscribeKeys};

use crate::harness::browser::Browser;
use crate::harness::objects::{create, eventually};
use crate::harness::{CrdSet, Env, EnvOptions};
use crate::support::{fake_loops, fake_resend};

use super::{annotation, contact, group, membership, pair_objects, start};

const WAIT: Duration = Duration::from_secs(45);

/// How many requests each provider has received.
fn marks(env: &Env) -> (usize, usize) {
    (env.resend().requests().len(), env.loops().requests().len())
}

/// The calls each provider received since `from`, once they have stopped coming for a second.
async fn calls_since(env: &Env, from: (usize, usize)) -> (Vec<String>, Vec<String>) {
    let mut seen = marks(env);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = marks(env);
        if now == seen {
            break;
        }
        seen = now;
    }
    (
        fake_resend::calls(&env.resend().requests()[from.0..]),
        fake_loops::calls(&env.loops().requests()[from.1..]),
    )
}

fn is_ready(o: &serde_json::Value) -> bool {
    crate::harness::objects::condition_true(o, "Ready")
}

/// Leaving and rejoining on the page, in Chromium.
pub async fn browser(crds: CrdSet) {
    let options = EnvOptions {
        resend: true,
        loops: true,
        ..Default::default()
    };
    let env = start(crds, options).await;
    let c = &env.client;
    let list = env.loops().insert_list("Product news", true);
    let mut news = group("groups", "news", "public");
    news["spec"]["providers"] = serde_json::json!([{"name": "Loops", "id": list}]);
    news["spec"]["displayName"] = "Product news".into();
    news["spec"]["description"] = "What we shipped this month.".into();
    create(c, &news).await;
    let mut staff = group("groups", "staff", "private");
    staff["spec"]["displayName"] = "Staff notices".into();
    create(c, &staff).await;
    let ada = create(c, &contact("people", "ada", "ada@example.com")).await;
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

    // The link a mail would carry, signed with the key the server reads.
    let secret = std::fs::read(env.dir().join("unsubscribe-key")).expect("the unsubscribe key");
    let keys = UnsubscribeKeys::single(UnsubscribeKey::new(&secret).expect("a valid key"));
    let named = Named {
        namespace: "people".into(),
        name: "ada".into(),
        uid: ada["metadata"]["uid"].as_str().unwrap().into(),
    };
    let now = jiff::Timestamp::now().as_second();
    let base = env.servers[0].events_url();
    let link = tokens::link(&base, &keys, &named, now, Duration::from_secs(3_600));
    let expired = tokens::link(
        &base,
        &keys,
        &named,
        now - 7_200,
        Duration::from_secs(3_600),
    );
    let set = format!("{crds:?}").to_lowercase();

    let browser = Browser::start().await;
    // The server's view catches up with the objects just made; the page then shows both groups.
    eventually("the page shows both groups", WAIT, || async {
        browser.open(&link).await;
        let text = browser.text().await;
        (text.contains("Product news") && text.contains("Staff notices"))
            .then_some(())
            .ok_or(text)
    })
    .await;
    let text = browser.text().await;
    assert!(text.contains("ada@example.com"), "{text}");
    assert!(text.contains("What we shipped this month."), "{text}");
    assert!(
        text.contains("Your organisation manages this group"),
        "{text}"
    );
    assert_eq!(
        browser
            .find("html")
            .await
            .attr("lang")
            .await
            .unwrap()
            .as_deref(),
        Some("en")
    );
    let buttons = browser
        .client
        .find_all(fantoccini::Locator::Css("button"))
        .await
        .unwrap();
    assert_eq!(buttons.len(), 1, "only the public group has a button");
    browser
        .screenshot(&format!("preference-page-{set}-1-member"))
        .await;
    eventually("ada's memberships mirrored", WAIT, || async {
        let (_, news) = pair_objects(c, "ada", "news").await;
        let (_, staff) = pair_objects(c, "ada", "staff").await;
        (news.iter().chain(&staff).all(is_ready) && news.len() + staff.len() == 2)
            .then_some(())
            .ok_or(format!("{news:?} {staff:?}"))
    })
    .await;
    let before = marks(&env);

    // Leave: the removal, with its provenance, and the membership deleted by the controller.
    browser.click_button("Leave Product news").await;
    browser.find(".notice").await;
    let text = browser.text().await;
    assert!(text.contains("You left Product news."), "{text}");
    browser.find("button.join").await;
    let removal = eventually(
        "the removal made and the membership deleted",
        WAIT,
        || async {
            match pair_objects(c, "ada", "news").await {
                (removals, memberships) if removals.len() == 1 && memberships.is_empty() => {
                    Ok(removals[0].clone())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(
        annotation(&removal, "notification.miloapis.com/removal-source"),
        "preference-page"
    );
    assert!(!annotation(&removal, "notification.miloapis.com/removal-token").is_empty());
    assert!(
        annotation(&removal, "notification.miloapis.com/removal-time")
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    browser
        .screenshot(&format!("preference-page-{set}-2-left"))
        .await;
    let (resend, loops) = calls_since(&env, before).await;
    eprintln!("{set}: leaving cost Resend {resend:?} and Loops {loops:?}");
    assert!(
        !resend.is_empty() && resend.len() <= 2,
        "Resend: {resend:?}"
    );
    assert_eq!(loops.len(), 1, "Loops: {loops:?}");
    let before = marks(&env);

    // Rejoin: the removal gone and a membership made again, past the webhook.
    browser.click_button("Rejoin Product news").await;
    browser.find(".notice").await;
    let text = browser.text().await;
    assert!(text.contains("You are back in Product news."), "{text}");
    browser.find("button.leave").await;
    let rejoined = eventually("the membership made again", WAIT, || async {
        match pair_objects(c, "ada", "news").await {
            (removals, memberships) if removals.is_empty() && memberships.len() == 1 => {
                Ok(memberships[0].clone())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        annotation(&rejoined, "notification.miloapis.com/membership-source"),
        "preference-page"
    );
    assert!(!annotation(&rejoined, "notification.miloapis.com/membership-time").is_empty());
    assert_eq!(
        pair_objects(c, "ada", "staff").await.1.len(),
        1,
        "the private group untouched"
    );
    browser
        .screenshot(&format!("preference-page-{set}-3-rejoined"))
        .await;
    eventually("the new membership mirrored", WAIT, || async {
        let (_, news) = pair_objects(c, "ada", "news").await;
        news.iter()
            .all(is_ready)
            .then_some(())
            .ok_or(format!("{news:?}"))
    })
    .await;
    let (resend, loops) = calls_since(&env, before).await;
    eprintln!("{set}: rejoining cost Resend {resend:?} and Loops {loops:?}");
    assert!(
        !resend.is_empty() && resend.len() <= 2,
        "Resend: {resend:?}"
    );
    assert_eq!(loops.len(), 1, "Loops: {loops:?}");

    // A link past its time: the 404 page, and nothing changes.
    browser.open(&expired).await;
    let text = browser.text().await;
    assert!(text.contains("This link is not valid"), "{text}");
    assert_eq!(pair_objects(c, "ada", "news").await.1.len(), 1);
    browser.close().await;
    env.assert_server_writes_clean();
}
