//! Cluster benchmark on the real control plane: the `cluster` bench's questions (what the
//! webhooks cost a create, how fast enrollment and signup go, memory per object) asked of a real
//! etcd and kube-apiserver 1.32 (`../shared/envtest`), through the envtest tier's harness, where
//! the API server pays for every webhook call and answers in tens of milliseconds under load.
//!
//! `cargo bench --features envtest --bench cluster_envtest -- [--contacts N] [--users N]
//! [--clients N]`. Needs what the tier needs (etcd, `../shared/envtest/install target/envtest`);
//! `MILO_ENVTEST_BIN=target/release/milo-webhook` measures the release build (the default is the
//! build cargo made for the bench, which is the release profile too). Everything listens on
//! 127.0.0.1 and is killed on exit; every wait is bounded.

#[path = "../tests/envtest/harness/mod.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../tests/support"]
mod support {
    #![allow(dead_code)]
    pub mod fake_loops;
    pub mod fake_resend;
}

use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::objects::create;
use harness::{CrdSet, Env, EnvOptions, SERVER_USER, SYSTEM_NAMESPACE};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};

/// What to run.
struct Options {
    contacts: usize,
    users: usize,
    clients: usize,
}

const USAGE: &str = "cargo bench --features envtest --bench cluster_envtest -- \
[--contacts N (default 2000)] [--users N (default 2000)] [--clients N (default 16)]";

impl Options {
    fn parse() -> Result<Self, String> {
        let mut o = Options {
            contacts: 2000,
            users: 2000,
            clients: 16,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--bench" {
                continue;
            }
            let value = args
                .next()
                .ok_or(format!("{flag} needs a value\n{USAGE}"))?;
            let n: usize = value
                .parse()
                .map_err(|_| format!("{flag}: not a number: {value}"))?;
            match flag.as_str() {
                "--contacts" => o.contacts = n.max(1),
                "--users" => o.users = n.max(1),
                "--clients" => o.clients = n.max(1),
                _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
            }
        }
        Ok(o)
    }
}

fn main() {
    let options = match Options::parse() {
        Ok(o) => o,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rows = runtime.block_on(run(&options));
    println!(
        "\nmilo-webhook on a real control plane ({} contacts per wave, {} users, {} clients)",
        options.contacts, options.users, options.clients
    );
    println!("| measure | value |\n|---|---|");
    for (what, value) in rows {
        println!("| {what} | {value} |");
    }
}

fn contact(namespace: &str, i: usize) -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "Contact",
        "metadata": {"namespace": namespace, "name": format!("c{i:06}")},
        "spec": {"email": format!("{namespace}-{i}@example.com"), "givenName": format!("C{i}")}})
}

fn membership(namespace: &str, i: usize, group: &str) -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroupMembership",
        "metadata": {"namespace": namespace, "name": format!("m{i:06}-{group}")},
        "spec": {"contactRef": {"namespace": namespace, "name": format!("c{i:06}")},
                 "contactGroupRef": {"namespace": "groups", "name": group}}})
}

fn user(i: usize) -> Value {
    json!({"apiVersion": "iam.miloapis.com/v1alpha1", "kind": "User",
        "metadata": {"name": format!("u{i:06}")},
        "spec": {"email": format!("user-{i}@example.com"), "givenName": format!("U{i}")}})
}

/// Creates every object with `clients` in flight; objects per second.
async fn create_all(env: &Env, objects: Vec<Value>, clients: usize) -> f64 {
    let started = Instant::now();
    let n = objects.len();
    futures::stream::iter(objects)
        .map(|object| async move { create(&env.client, &object).await })
        .buffer_unordered(clients)
        .collect::<Vec<_>>()
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// Waits (at most `limit`) until `count` reaches `want`; the time it took.
async fn until_count<F, Fut>(what: &str, want: usize, limit: Duration, count: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let started = Instant::now();
    loop {
        let have = count().await;
        if have >= want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: {have} of {want} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many objects of `kind` there are (in `namespace`), from one list of one item: the API
/// server's remaining-item count, so polling costs it no full list while it is measured.
async fn count(env: &Env, kind: &str, namespace: Option<&str>) -> usize {
    let page = harness::objects::api(&env.client, kind, namespace)
        .list_metadata(&ListParams::default().limit(1))
        .await
        .expect("list one");
    let remaining = page.metadata.remaining_item_count.unwrap_or(0);
    page.items.len() + usize::try_from(remaining).unwrap_or(0)
}

/// Writes (create, update, patch, delete) the server made so far, as the audit log saw them.
fn server_writes(env: &Env) -> usize {
    harness::audit::events(&env.plane.audit_log)
        .iter()
        .filter(|e| e.user == SERVER_USER)
        .filter(|e| matches!(e.verb.as_str(), "create" | "update" | "patch" | "delete"))
        .filter(|e| e.resource != "leases" && e.resource != "events")
        .count()
}

/// Requests the server made so far, as the audit log saw them: reads (get, list), writes
/// (leases and events apart) and Event writes. What one unit of controller work costs the API
/// server.
fn server_requests(env: &Env) -> [usize; 3] {
    let mut counts = [0; 3];
    for e in harness::audit::events(&env.plane.audit_log) {
        if e.user != SERVER_USER || e.resource == "leases" {
            continue;
        }
        let write = matches!(e.verb.as_str(), "create" | "update" | "patch" | "delete");
        match (write, e.resource == "events") {
            (false, _) if e.verb == "get" || e.verb == "list" => counts[0] += 1,
            (true, false) => counts[1] += 1,
            (true, true) => counts[2] += 1,
            _ => {}
        }
    }
    counts
}

/// Webhook calls the API server made so far (its own
/// `apiserver_admission_webhook_admission_duration_seconds_count`, every webhook and operation):
/// what it paid, calls `matchConditions` spared not included.
async fn webhook_calls(env: &Env) -> f64 {
    env.webhook_calls().await.values().sum::<u64>() as f64
}

/// The leader's resident memory, KiB: all of it (`VmRSS`), and its anonymous part (`RssAnon`:
/// the heap, without the binary's code pages, which the kernel can drop and reload).
fn rss_kib(env: &Env) -> (u64, u64) {
    let pid = env.servers[0]
        .process
        .as_ref()
        .and_then(harness::process::Process::id)
        .expect("the server runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read its status");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// CPU seconds (user + system) each process has used so far: kube-apiserver, etcd, the leader,
/// and this benchmark's own clients. Where a phase's cost lands on the shared cores.
fn cpu_seconds(env: &Env) -> [f64; 4] {
    fn of(pid: &str) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at state, field 3.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state; 100 ticks/s.
        (ticks(11) + ticks(12)) / 100.0
    }
    let pid = |p: &harness::process::Process| p.id().map(|id| id.to_string()).unwrap_or_default();
    let plane = &env.plane.processes;
    let server = env.servers[0].process.as_ref().map(pid).unwrap_or_default();
    [
        of(&pid(&plane[1])),
        of(&pid(&plane[0])),
        of(&server),
        of("self"),
    ]
}

/// The CPU a phase cost per object, by process.
fn cpu_row(before: [f64; 4], after: [f64; 4], objects: usize) -> String {
    let per = |i: usize| (after[i] - before[i]) * 1000.0 / objects as f64;
    format!(
        "{:.1} / {:.1} / {:.1} / {:.1} ms",
        per(0),
        per(1),
        per(2),
        per(3)
    )
}

/// The leader's `milo_webhook_api_write_concurrency_limit` (the adaptive pace), sampled every
/// 250 ms while a phase runs: what the pace allowed, as min / median / max.
struct PaceSampler {
    samples: std::sync::Arc<std::sync::Mutex<Vec<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PaceSampler {
    fn start(env: &Env) -> Self {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let url = format!("http://127.0.0.1:{}/metrics", env.servers[0].admin);
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                let text = match reqwest::get(&url).await {
                    Ok(response) => response.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                let limit = text
                    .lines()
                    .find_map(|l| l.strip_prefix("milo_webhook_api_write_concurrency_limit "))
                    .and_then(|v| v.trim().parse::<f64>().ok());
                if let Some(limit) = limit {
                    sink.lock().expect("samples").push(limit);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { samples, task }
    }

    fn finish(self) -> String {
        self.task.abort();
        let mut samples = self.samples.lock().expect("samples").clone();
        if samples.is_empty() {
            return "no samples".into();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        format!("{:.0} / {:.0} / {:.0}", at(0.0), at(0.5), at(1.0))
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

async fn unregister_webhooks(env: &Env) {
    let params = (DeleteParams::default(), ListParams::default());
    Api::<ValidatingWebhookConfiguration>::all(env.client.clone())
        .delete_collection(&params.0, &params.1)
        .await
        .expect("delete the validating configurations");
    Api::<MutatingWebhookConfiguration>::all(env.client.clone())
        .delete_collection(&params.0, &params.1)
        .await
        .expect("delete the mutating configurations");
    // The API server drops its webhook clients within a moment of the watch event.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn run(o: &Options) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let mut row = |what: &str, value: String| {
        eprintln!("{what}: {value}");
        rows.push((what.to_owned(), value));
    };
    // The milo-webhook Deployment's controllers; the invitation controller's own Deployment has
    // nothing to do here.
    let options = EnvOptions {
        server: harness::ServerOptions {
            controllers: Some("enrollment,removal,membership,usercontact,resend,email".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let env = Env::start(CrdSet::Ours, options).await;
    for ns in ["hooked", "raw", "groups"] {
        env.namespace(ns).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (empty_rss, empty_anon) = rss_kib(&env);
    row(
        "leader RSS (anonymous), empty",
        format!("{} ({})", mib(empty_rss), mib(empty_anon)),
    );
    let limit = Duration::from_secs(600);
    let n = o.contacts;

    // Creates through the webhooks, then with no webhook registered (the API server alone).
    let calls = webhook_calls(&env).await;
    let cpu = cpu_seconds(&env);
    let hooked = create_all(
        &env,
        (0..n).map(|i| contact("hooked", i)).collect(),
        o.clients,
    )
    .await;
    let per_contact = (webhook_calls(&env).await - calls) / n as f64;
    let hooked_cpu = cpu_row(cpu, cpu_seconds(&env), n);
    unregister_webhooks(&env).await;
    let cpu = cpu_seconds(&env);
    let raw = create_all(&env, (0..n).map(|i| contact("raw", i)).collect(), o.clients).await;
    let raw_cpu = cpu_row(cpu, cpu_seconds(&env), n);
    harness::server::register_webhooks(&env.client, env.dir(), &env.files, env.servers[0].listen)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    row(
        "Contact creates/s through the webhooks",
        format!("{hooked:.0}"),
    );
    row("Contact creates/s, no webhooks", format!("{raw:.0}"));
    row("ratio", format!("{:.2}", hooked / raw));
    row(
        "webhook calls per Contact create",
        format!("{per_contact:.2}"),
    );
    row(
        "CPU per Contact create through the webhooks (apiserver / etcd / server / clients)",
        hooked_cpu,
    );
    row("CPU per Contact create, no webhooks", raw_cpu);

    // Raw membership creates (through the webhooks, as a user makes them) for the baseline.
    create(
        &env.client,
        &json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroup",
            "metadata": {"namespace": "groups", "name": "manual"},
            "spec": {"displayName": "Manual", "visibility": "public"}}),
    )
    .await;
    let cpu = cpu_seconds(&env);
    let raw_memberships = create_all(
        &env,
        (0..n).map(|i| membership("raw", i, "manual")).collect(),
        o.clients,
    )
    .await;
    row(
        "membership creates/s by clients",
        format!("{raw_memberships:.0}"),
    );
    row(
        "CPU per membership create by clients (apiserver / etcd / server / clients)",
        cpu_row(cpu, cpu_seconds(&env), n),
    );

    // Enrollment: a backfilling policy over every contact of both waves.
    create(
        &env.client,
        &json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroup",
            "metadata": {"namespace": "groups", "name": "everyone"},
            "spec": {"displayName": "Everyone", "visibility": "public"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (writes, calls) = (server_writes(&env), webhook_calls(&env).await);
    let cpu = cpu_seconds(&env);
    let pace = PaceSampler::start(&env);
    create(
        &env.client,
        &json!({"apiVersion": "notification.miloapis.com/v1alpha1",
            "kind": "ContactGroupEnrollmentPolicy", "metadata": {"name": "everyone"},
            "spec": {"contactGroupRef": {"namespace": "groups", "name": "everyone"},
                     "trigger": {"type": "ContactCreated"}, "backfill": true}}),
    )
    .await;
    // Every membership but the clients' `n` in "manual" is the policy's.
    let enrolled_in_everyone = || async {
        count(&env, "ContactGroupMembership", None)
            .await
            .saturating_sub(n)
    };
    let took = until_count("enrollment", 2 * n, limit, enrolled_in_everyone).await;
    let enrollment_cpu = cpu_row(cpu, cpu_seconds(&env), 2 * n);
    row(
        "write concurrency limit during enrollment (min / median / max)",
        pace.finish(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let enrolled = 2 * n;
    let rate = enrolled as f64 / took.as_secs_f64();
    row("enrolled contacts/s (backfill)", format!("{rate:.0}"));
    row(
        "CPU per enrolled contact (apiserver / etcd / server / clients)",
        enrollment_cpu,
    );
    row(
        "enrolled/s ÷ membership creates/s",
        format!("{:.2}", rate / raw_memberships),
    );
    row(
        "API writes per enrolled contact",
        format!(
            "{:.2}",
            (server_writes(&env) - writes) as f64 / enrolled as f64
        ),
    );
    row(
        "webhook calls per enrolled contact",
        format!(
            "{:.2}",
            (webhook_calls(&env).await - calls) / enrolled as f64
        ),
    );

    // Signup: Users created as fast as the clients go; each gets a Contact.
    let started = Instant::now();
    let pace = PaceSampler::start(&env);
    let cpu = cpu_seconds(&env);
    let requests = server_requests(&env);
    let users = create_all(&env, (0..o.users).map(user).collect(), o.clients).await;
    let created_all = started.elapsed();
    // Only signup Contacts live in the system namespace.
    let signed_up = || async { count(&env, "Contact", Some(SYSTEM_NAMESPACE)).await };
    until_count("signup", o.users, limit, signed_up).await;
    let lag = started.elapsed().saturating_sub(created_all);
    row(
        "write concurrency limit during signup (min / median / max)",
        pace.finish(),
    );
    row(
        "CPU per signup (User and Contact; apiserver / etcd / server / clients)",
        cpu_row(cpu, cpu_seconds(&env), o.users),
    );
    let after = server_requests(&env);
    let per = |i: usize| (after[i] - requests[i]) as f64 / o.users as f64;
    row(
        "server requests per signup (reads / writes / Event writes)",
        format!("{:.2} / {:.2} / {:.2}", per(0), per(1), per(2)),
    );
    row("User creates/s", format!("{users:.0}"));
    row(
        "signup Contacts/s",
        format!("{:.0}", o.users as f64 / started.elapsed().as_secs_f64()),
    );
    row(
        "signup lag after the last User",
        format!("{:.1} s", lag.as_secs_f64()),
    );

    // Memory once settled, per object the view holds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let objects_held = 2 * n // contacts
        + n + 2 * n // memberships
        + 2 * o.users; // users and their contacts
    let (rss, anon) = rss_kib(&env);
    row(
        "leader RSS (anonymous), settled",
        format!("{} ({}), {objects_held} objects", mib(rss), mib(anon)),
    );
    let per_object = |settled: u64, empty: u64| {
        format!(
            "{:.0} B",
            (settled.saturating_sub(empty) * 1024) as f64 / objects_held as f64
        )
    };
    row(
        "RSS (anonymous) per object",
        format!(
            "{} ({})",
            per_object(rss, empty_rss),
            per_object(anon, empty_anon)
        ),
    );
    let refused = env
        .refused_writes()
        .iter()
        .filter(|e| e.code != 409)
        .count();
    row(
        "writes the API server refused the server",
        refused.to_string(),
    );
    rows
}
