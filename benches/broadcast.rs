//! Broadcast benchmark: one EmailBroadcast to a large public group, in process. The broadcast
//! loop runs unmodified against the stateful API server of the tests (which feeds the view like a
//! watch and serves the Contacts read per batch) and the fake Resend, which enforces the account's
//! rate limit and the batch idempotency rules.
//!
//! `cargo bench --bench broadcast -- [--members N] [--rate R]` (defaults: 10,000 members at 100
//! requests/s). Reports provider calls against the goal (one batch call per 100 recipients), wall
//! time against calls / rate, API reads, and the process's memory.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use milo_webhook::controllers::ControllerSettings;
use milo_webhook::controllers::email::broadcast::{self, BroadcastSender};
use milo_webhook::controllers::email::{EmailSettings, UnsubscribeLinks};
use milo_webhook::server::unsubscribe::{UnsubscribeKey, UnsubscribeKeys};
use serde_json::json;
use support::bench::{flags, memory, parse};
use support::fake_resend::{self, FakeConfig};
use support::live_api::LiveApi;

struct Options {
    members: usize,
    rate: f64,
}

fn options() -> Options {
    let mut o = Options {
        members: 10_000,
        rate: 100.0,
    };
    flags(|flag, value| {
        match flag {
            "--members" => o.members = parse(value)?,
            "--rate" => o.rate = parse(value)?,
            other => return Err(format!("unknown flag {other}")),
        }
        Ok(())
    });
    o
}

fn object(kind: &str, ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": kind,
        "metadata": {"namespace": ns, "name": name}, "spec": spec})
}

fn seed(live: &LiveApi, o: &Options) {
    live.create(
        "emailtemplates",
        json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "EmailTemplate",
            "metadata": {"name": "news"}, "spec": {
                "subject": "News for {{.GivenName}}",
                "htmlBody": "<p>Hi {{{FIRST_NAME}}} {{.FamilyName}}</p><a href=\"{{.UnsubscribeLink}}\">unsubscribe</a>",
                "textBody": "Hi {{.GivenName}}, unsubscribe: {{.UnsubscribeLink}}"}}),
    );
    live.create(
        "contactgroups",
        object(
            "ContactGroup",
            "groups",
            "news",
            json!({"displayName": "News", "visibility": "public"}),
        ),
    );
    for i in 0..o.members {
        live.create(
            "contacts",
            object(
                "Contact",
                "people",
                &format!("contact-{i}"),
                json!({"email": format!("person{i}@example.com"),
                    "givenName": format!("Person {i}"), "familyName": "Doe"}),
            ),
        );
        live.create(
            "contactgroupmemberships",
            object(
                "ContactGroupMembership",
                "people",
                &format!("membership-{i}"),
                json!({"contactRef": {"namespace": "people", "name": format!("contact-{i}")},
                    "contactGroupRef": {"namespace": "groups", "name": "news"}}),
            ),
        );
    }
}

fn main() {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(o));
}

async fn run(o: Options) {
    let live = LiveApi::new();
    seed(&live, &o);
    let fake = fake_resend::start(FakeConfig {
        rate_limit: Some(o.rate as usize),
        ..FakeConfig::default()
    })
    .await;
    let client = fake.client(o.rate);
    let ctx = live.context(ControllerSettings::default());
    let settings = EmailSettings {
        from: Some("Milo <news@example.com>".into()),
        reply_to: None,
        unsubscribe: Some(UnsubscribeLinks {
            keys: UnsubscribeKeys::single(UnsubscribeKey::new(&[7u8; 32]).unwrap()),
            base_url: "https://mail.example.com".into(),
            preferences_ttl: std::time::Duration::from_secs(30 * 86_400),
        }),
    };
    let sender = Arc::new(BroadcastSender::new(
        Arc::new(ctx),
        client.clone(),
        settings,
    ));
    let api_before = live.state.lock().unwrap().requests.len();
    let (rss_before, _) = memory();
    live.create(
        "emailbroadcasts",
        object(
            "EmailBroadcast",
            "groups",
            "b1",
            json!({"contactGroupRef": {"namespace": "groups", "name": "news"},
                "templateRef": {"name": "news"}}),
        ),
    );
    let started = Instant::now();
    let task = tokio::spawn(broadcast::run(sender));
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let done = live
            .get("emailbroadcasts", "groups", "b1")
            .and_then(|b| b["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "CreateSuccessful"));
        if done {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            panic!("not done within an hour");
        }
    }
    let wall = started.elapsed();
    let (rss_after, peak) = memory();
    task.abort();
    let calls = client.calls();
    let goal = o.members.div_ceil(100);
    let sent = fake.sent_emails();
    let distinct: HashSet<String> = sent.iter().map(|m| m.to()).collect();
    let api_requests = live.state.lock().unwrap().requests.len() - api_before;
    let floor = calls as f64 / o.rate;
    println!(
        "\nbroadcast benchmark: {} members of a public group, {} requests/s",
        o.members, o.rate
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| provider calls | {calls} (goal {goal}: one batch call per 100 recipients) |");
    println!(
        "| mails sent / distinct recipients | {} / {} |",
        sent.len(),
        distinct.len()
    );
    println!(
        "| 429s answered by the fake / rate violations | {} / {} |",
        fake.requests().iter().filter(|r| r.status == 429).count(),
        fake.rate_limit_violations()
    );
    println!(
        "| wall time | {:.2} s (calls / rate = {floor:.2} s: {:.3} of it) |",
        wall.as_secs_f64(),
        wall.as_secs_f64() / floor
    );
    println!("| API requests (Contact reads, status writes) | {api_requests} |");
    println!("| RSS before / after, peak | {rss_before:.1} / {rss_after:.1} MiB, {peak:.1} MiB |");
}
