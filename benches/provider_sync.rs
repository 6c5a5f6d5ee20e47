//! Provider sync benchmark: the initial sync of an existing cluster to Resend, in process. The
//! three sync loops run unmodified against the stateful API server of the tests (which feeds the
//! view like a watch) and the stateful fake Resend, which enforces the account's rate limit.
//!
//! `cargo bench --bench provider_sync -- [--contacts N] [--groups N] [--memberships N] [--rate R]
//! [--loops true]` (defaults: 10,000 contacts in 10 groups with 10,000 memberships at 100 requests/s;
//! `--loops true` also mirrors to the stateful fake Loops, each group on a list, both providers at
//! once, and reports Loops' calls against its budget of one upsert per contact). Reports
//! provider calls against the budget (1 create per contact, carrying its memberships' segments;
//! 1 segment and 1 topic create per (public) group; list pages of contacts, segments and topics;
//! no topic write per membership, since topics default to `opt_in`), wall time against calls / rate,
//! and the process's memory. Before the contact directory (commit 98d18cd) the same load cost
//! 30,011 calls: a look-up and a create per contact and an add per membership.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use milo_webhook::api::common::ProviderName;
use milo_webhook::controllers::ControllerSettings;
use milo_webhook::controllers::loops::LoopsSync;
use milo_webhook::controllers::resend::{self, ResendSync, SyncMetrics};
use serde_json::json;
use support::bench::{flags, memory, parse};
use support::fake_loops;
use support::fake_resend::{self, FakeConfig};
use support::live_api::LiveApi;

struct Options {
    contacts: usize,
    groups: usize,
    memberships: usize,
    rate: f64,
    loops: bool,
}

fn options() -> Options {
    let mut o = Options {
        contacts: 10_000,
        groups: 10,
        memberships: 10_000,
        rate: 100.0,
        loops: false,
    };
    flags(|flag, value| {
        match flag {
            "--contacts" => o.contacts = parse(value)?,
            "--groups" => o.groups = parse(value)?,
            "--memberships" => o.memberships = parse(value)?,
            "--rate" => o.rate = parse(value)?,
            "--loops" => o.loops = parse(value)?,
            other => return Err(format!("unknown flag {other}")),
        }
        Ok(())
    });
    o
}

fn seed(live: &LiveApi, o: &Options, lists: &[String]) {
    for g in 0..o.groups {
        let mut group = json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroup",
            "metadata": {"namespace": "groups", "name": format!("group-{g}")},
            "spec": {"displayName": format!("Group {g}"), "visibility": "public"}});
        if let Some(list) = lists.get(g) {
            group["spec"]["providers"] = json!([{"name": "Loops", "id": list}]);
        }
        live.create("contactgroups", group);
    }
    for c in 0..o.contacts {
        live.create(
            "contacts",
            json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Contact",
                "metadata": {"namespace": "people", "name": format!("contact-{c}")},
                "spec": {"email": format!("person{c}@example.com"), "givenName": format!("Person {c}")}}),
        );
    }
    for m in 0..o.memberships {
        live.create(
            "contactgroupmemberships",
            json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroupMembership",
                "metadata": {"namespace": "people", "name": format!("membership-{m}")},
                "spec": {"contactRef": {"namespace": "people", "name": format!("contact-{}", m % o.contacts)},
                         "contactGroupRef": {"namespace": "groups", "name": format!("group-{}", m % o.groups)}}}),
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
    let loops = match o.loops {
        true => Some(
            fake_loops::start(fake_loops::FakeConfig {
                rate_limit: Some(o.rate as usize),
                ..Default::default()
            })
            .await,
        ),
        false => None,
    };
    let lists: Vec<String> = match &loops {
        Some(fake) => (0..o.groups)
            .map(|g| fake.insert_list(&format!("Group {g}"), true))
            .collect(),
        None => Vec::new(),
    };
    seed(&live, &o, &lists);
    let configured = match o.loops {
        true => vec![ProviderName::Resend, ProviderName::Loops],
        false => vec![ProviderName::Resend],
    };
    let fake = fake_resend::start(FakeConfig {
        rate_limit: Some(o.rate as usize),
        default_page: 100,
        ..FakeConfig::default()
    })
    .await;
    let client = fake.client(o.rate);
    let ctx = Arc::new(live.context(ControllerSettings::default()));
    let sync = Arc::new(ResendSync::among(
        ctx.clone(),
        client,
        SyncMetrics::default(),
        configured.clone(),
    ));
    let loops_sync = loops.as_ref().map(|fake| {
        Arc::new(LoopsSync::new(
            ctx.clone(),
            fake.client(o.rate),
            SyncMetrics::default(),
            configured.clone(),
        ))
    });
    let (rss_before, _) = memory();
    let started = Instant::now();
    let task = tokio::spawn(resend::run(sync.clone()));
    let loops_task = loops_sync
        .clone()
        .map(|sync| tokio::spawn(milo_webhook::controllers::loops::run(sync)));
    let total_members = o.memberships;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let members: usize = fake
            .segments()
            .iter()
            .map(|s| fake.members(&s.id).len())
            .sum();
        let pending = {
            // One read guard: a second read while a writer waits would deadlock.
            let view = sync.core.ctx.view.read();
            view.names(milo_webhook::view::ViewKind::Membership)
                .into_iter()
                .filter(|(ns, name)| {
                    !view
                        .membership_sync(ns, name)
                        .is_some_and(|m| configured.iter().all(|p| m.marks.synced(*p)))
                })
                .count()
        };
        if members >= total_members && pending == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            panic!("not synced within an hour: {members} members, {pending} pending");
        }
    }
    let wall = started.elapsed();
    let (rss_after, peak) = memory();
    task.abort();
    if let Some(task) = loops_task {
        task.abort();
    }
    let calls = sync.client.calls();
    // The account starts empty: one page lists its contacts, one its segments, one its topics;
    // every group is public, so each also gets a topic.
    let pages = 3;
    let budget = o.contacts + 2 * o.groups + pages;
    let floor = calls as f64 / o.rate;
    let count = |m: &str, p: &str| fake.count(http::Method::from_bytes(m.as_bytes()).unwrap(), p);
    println!(
        "\nprovider sync benchmark: {} contacts, {} groups, {} memberships, {} requests/s",
        o.contacts, o.groups, o.memberships, o.rate
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| provider calls | {calls} (budget {budget}: {:.3} of it) |",
        calls as f64 / budget as f64
    );
    println!(
        "| calls per contact / membership / group | {:.2} / {:.2} / {:.2} |",
        (count("GET", "/contacts") + count("POST", "/contacts") - count("POST", "/contacts/"))
            as f64
            / o.contacts as f64,
        count("POST", "/contacts/") as f64 / o.memberships as f64,
        (count("POST", "/segments") + count("GET", "/segments")) as f64 / o.groups as f64
    );
    println!(
        "| contact list pages / look-ups / creates / separate adds | {} / {} / {} / {} |",
        count("GET", "/contacts?"),
        count("GET", "/contacts/"),
        count("POST", "/contacts") - count("POST", "/contacts/"),
        count("POST", "/contacts/")
    );
    println!(
        "| topic creates / listings / subscription writes | {} / {} / {} |",
        count("POST", "/topics"),
        count("GET", "/topics"),
        fake.requests()
            .iter()
            .filter(|r| r.method == http::Method::PATCH && r.path.ends_with("/topics"))
            .count()
    );
    println!(
        "| 429s answered by the fake | {} |",
        fake.requests().iter().filter(|r| r.status == 429).count()
    );
    println!(
        "| rate violations seen by the fake | {} |",
        fake.rate_limit_violations()
    );
    println!(
        "| wall time | {:.1} s (calls / rate = {floor:.1} s: {:.3} of it) |",
        wall.as_secs_f64(),
        wall.as_secs_f64() / floor
    );
    println!(
        "| RSS before / after sync, peak | {rss_before:.1} / {rss_after:.1} MiB, {peak:.1} MiB |"
    );
    if let (Some(fake), Some(sync)) = (&loops, &loops_sync) {
        let count = |m: Method, p: &str| fake.count(m, p);
        let upserts = count(Method::PUT, "/contacts/update");
        println!(
            "| Loops calls | {} (budget {}: one upsert per contact) |",
            sync.client.calls(),
            o.contacts
        );
        println!(
            "| Loops upserts per contact / list reads / other | {:.3} / {} / {} |",
            upserts as f64 / o.contacts as f64,
            count(Method::GET, "/lists"),
            fake.requests().len() - upserts - count(Method::GET, "/lists")
        );
        println!(
            "| Loops `subscribed: true` sent | {} |",
            fake.subscribed_true_writes().len()
        );
    }
}
