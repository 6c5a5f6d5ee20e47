//! The scenarios: memory with a settled view (as follower and as leader), a backfilling
//! enrollment against raw creates, and a signup wave.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::env::{self, Cluster, counter, requests_between};
use crate::options::Options;
use crate::report::{Report, mib, millis, rate, secs};
use crate::seed::{self, CONTACT_NAMESPACE, IAM, NOTIFICATION};

/// Lease seconds of the foreign holder: the server takes over at most this long after it stops
/// renewing.
const FOREIGN_LEASE_SECONDS: u64 = 3;

/// What one memory run measured.
pub struct Memory {
    /// The size asked for.
    pub requested: usize,
    /// Objects seeded.
    pub objects: usize,
    pub follower_rss: u64,
    pub leader_rss: u64,
}

/// Seeds a steady-state cluster of `n` objects, starts the server while another replica holds
/// the Lease, measures it as a settled follower, lets the Lease expire and measures it again as
/// a settled leader.
pub async fn memory(
    options: &Options,
    workdir: &Path,
    n: usize,
    report: &mut Report,
) -> anyhow::Result<Memory> {
    let scenario = format!("memory {n}");
    let cluster = Cluster::start(options, workdir, &scenario.replace(' ', "-")).await?;
    let seeding = Instant::now();
    let mix = if n == 0 {
        None
    } else {
        Some(seed::mix(&cluster.fake, n))
    };
    let objects = mix.as_ref().map_or(0, |m| m.total());
    if let Some(m) = &mix {
        report.add(
            &scenario,
            "objects (users, contacts, memberships, groups, policies)",
            format!(
                "{objects} ({}, {}, {}, {}, {})",
                m.users, m.contacts, m.memberships, m.groups, m.policies
            ),
        );
        report.add(
            &scenario,
            "mean object size at the API (JSON, managedFields included)",
            format!("{} B", cluster.stored_bytes() / objects.max(1)),
        );
        eprintln!("  seeded in {}", secs(seeding.elapsed()));
    }
    let holder = cluster.hold_lease(FOREIGN_LEASE_SECONDS);
    let mut server = cluster.launch(options, "bench-1")?;
    let ready_at = env::ready(&mut server, options.timeout).await?;
    let (ready_rss, _) = server.memory()?;
    report.add(
        &scenario,
        "time to /readyz OK (view synced)",
        secs(ready_at - server.started),
    );
    report.add(&scenario, "RSS at /readyz OK (follower)", mib(ready_rss));
    let follower_settled =
        env::settle(&cluster.fake, &mut server, options.quiet, options.timeout).await?;
    let (follower_rss, _) = server.memory()?;
    if follower_settled.is_none() {
        report.add(
            &scenario,
            "follower settled",
            format!("no, timeout {}", secs(options.timeout)),
        );
    }
    report.add(&scenario, "RSS settled follower", mib(follower_rss));
    anyhow::ensure!(
        !server.scrape()?.leader(),
        "the server leads although another replica holds the Lease"
    );

    let before = cluster.fake.counters();
    let reconciles_before = server.scrape()?.reconciles();
    drop(holder);
    let released = Instant::now();
    let leading_at = env::leading(&mut server, options.timeout).await?;
    report.add(
        &scenario,
        "Lease expiry to leading",
        secs(leading_at - released),
    );
    let settled = env::settle(&cluster.fake, &mut server, options.quiet, options.timeout).await?;
    let (leader_rss, peak) = server.memory()?;
    match settled {
        Some(at) => report.add(
            &scenario,
            "leading to controllers settled",
            secs(at.saturating_duration_since(leading_at)),
        ),
        None => report.add(
            &scenario,
            "leading to controllers settled",
            format!("did not settle, timeout {}", secs(options.timeout)),
        ),
    }
    report.add(&scenario, "RSS settled leader", mib(leader_rss));
    report.add(&scenario, "peak RSS (VmHWM)", mib(peak));
    let scrape = server.scrape()?;
    let reconciles = scrape.reconciles() - reconciles_before;
    let per_object = if objects == 0 {
        "n/a".to_string()
    } else {
        format!("{:.2}", reconciles / objects as f64)
    };
    report.add(
        &scenario,
        "reconciles at start (all controllers)",
        format!("{reconciles:.0}"),
    );
    report.add(&scenario, "reconciles at start per object", per_object);
    let by_controller: Vec<String> = scrape
        .samples("milo_webhook_controller_reconciles_total")
        .map(|(labels, v)| format!("{labels}={v:.0}"))
        .collect();
    eprintln!("  reconciles: {}", by_controller.join(", "));
    let requests = requests_between(&before, &cluster.fake.counters());
    let writes: u64 = requests
        .iter()
        .filter(|(k, _)| env::is_write(k))
        .map(|(_, n)| n)
        .sum();
    let reads: u64 = requests
        .iter()
        .filter(|(k, _)| !env::is_write(k))
        .map(|(_, n)| n)
        .sum();
    report.add(
        &scenario,
        "API reads / writes by the leader at start",
        format!("{reads} / {writes}"),
    );
    eprintln!("  requests at start: {}", summary(&requests));
    if server.warnings() > 0 {
        report.add(
            &scenario,
            "WARN/ERROR log lines",
            server.warnings().to_string(),
        );
    }
    Ok(Memory {
        requested: n,
        objects,
        follower_rss,
        leader_rss,
    })
}

/// RSS per object above the empty server's.
pub fn per_object(report: &mut Report, baseline: &Memory, runs: &[Memory]) {
    for run in runs.iter().filter(|r| r.objects > 0) {
        let scenario = format!("memory {}", run.requested);
        let per = |rss: u64, base: u64| {
            format!(
                "{:.0} B",
                rss.saturating_sub(base) as f64 / run.objects as f64
            )
        };
        report.add(
            &scenario,
            "RSS per object above empty, follower",
            per(run.follower_rss, baseline.follower_rss),
        );
        report.add(
            &scenario,
            "RSS per object above empty, leader",
            per(run.leader_rss, baseline.leader_rss),
        );
    }
}

/// A backfilling policy over `n` contacts, against `n` membership creates made directly.
pub async fn enrollment(
    options: &Options,
    workdir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = options.enroll_contacts;
    let scenario = format!("enrollment {n}");
    const GROUP: &str = "everyone";

    // The baseline: the same creates, from `clients` concurrent clients, through an identical fake.
    let raw = Cluster::start(options, workdir, "enrollment-raw").await?;
    let raw_client = raw.client().await?;
    let raw_time = env::create_many(
        &raw_client,
        NOTIFICATION,
        "contactgroupmemberships",
        n,
        options.clients,
        |i| {
            let mut m = seed::membership(i, GROUP);
            if let Some(s) = m.as_object_mut() {
                s.remove("status");
            }
            m
        },
    )
    .await?;
    let raw_rate = n as f64 / raw_time.as_secs_f64();
    report.add(
        &scenario,
        &format!("raw membership creates, {} clients", options.clients),
        rate(n as f64, raw_time),
    );
    drop(raw);

    let cluster = Cluster::start(options, workdir, "enrollment").await?;
    seed::signed_up(&cluster.fake, n, GROUP);
    let mut server = cluster.launch(options, "bench-1")?;
    env::ready(&mut server, options.timeout).await?;
    env::leading(&mut server, options.timeout).await?;
    env::settle(&cluster.fake, &mut server, options.quiet, options.timeout).await?;
    let before = cluster.fake.counters();
    let created_before =
        counter(&before, "create", "contactgroupmemberships").map_or(0, |c| c.count);
    let client = cluster.client().await?;
    let policy_at = Instant::now();
    env::create(
        &client,
        NOTIFICATION,
        "contactgroupenrollmentpolicies",
        &seed::policy("backfill-everyone", GROUP, true),
    )
    .await?;
    let fake = &cluster.fake;
    let done = env::wait_for(
        &mut server,
        options.timeout,
        Duration::from_millis(100),
        |_| {
            let c = counter(&fake.counters(), "create", "contactgroupmemberships")
                .map_or(0, |c| c.count);
            Ok(c - created_before >= n as u64)
        },
    )
    .await?;
    let Some(_) = done else {
        let made = counter(&fake.counters(), "create", "contactgroupmemberships")
            .map_or(0, |c| c.count)
            - created_before;
        report.add(
            &scenario,
            "enrolled contacts/s",
            format!("incomplete: {made} of {n} in {}", secs(options.timeout)),
        );
        return Ok(());
    };
    let last = counter(&fake.counters(), "create", "contactgroupmemberships")
        .context("no creates")?
        .last;
    let took = last.saturating_duration_since(policy_at);
    let enroll_rate = n as f64 / took.as_secs_f64();
    report.add(
        &scenario,
        "policy created to last membership created",
        secs(took),
    );
    report.add(
        &scenario,
        "enrolled contacts/s (membership creates)",
        rate(n as f64, took),
    );
    report.add(
        &scenario,
        "enrollment rate / raw create rate",
        format!("{:.3}", enroll_rate / raw_rate),
    );
    env::settle(fake, &mut server, options.quiet, options.timeout).await?;
    let requests = requests_between(&before, &fake.counters());
    let writes: u64 = requests
        .iter()
        .filter(|(k, _)| env::is_write(k) && k != "create contactgroupenrollmentpolicies")
        .map(|(_, c)| c)
        .sum();
    report.add(
        &scenario,
        "API writes per enrolled contact",
        format!("{:.2}", writes as f64 / n as f64),
    );
    eprintln!("  requests during enrollment: {}", summary(&requests));
    let memberships = fake
        .store()
        .count(crate::fake::index(NOTIFICATION, "contactgroupmemberships"));
    anyhow::ensure!(
        memberships == n,
        "{memberships} memberships stored, {n} expected"
    );
    Ok(())
}

/// `n` Users signing up at a steady rate; Contacts made per second and the lag of the last.
pub async fn signup(
    options: &Options,
    workdir: &Path,
    signup_rate: f64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = options.signup_users;
    let scenario = format!("signup {n} @{signup_rate:.0}/s");
    let cluster = Cluster::start(options, workdir, &format!("signup-{signup_rate:.0}")).await?;
    let mut server = cluster.launch(options, "bench-1")?;
    env::ready(&mut server, options.timeout).await?;
    env::leading(&mut server, options.timeout).await?;
    env::settle(&cluster.fake, &mut server, options.quiet, options.timeout).await?;
    let before = cluster.fake.counters();
    let client = cluster.client().await?;

    // Paced creates: every 10 ms, the users due by then, each on its own task (at most 256 in
    // flight), so a slow answer does not slow the pace.
    let started = Instant::now();
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(n);
    let mut sent = 0;
    let deadline = started + options.timeout;
    while sent < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "signup pacing overran the timeout"
        );
        let due = ((started.elapsed().as_secs_f64() * signup_rate) as usize + 1).min(n);
        while sent < due {
            let permit = in_flight.clone().acquire_owned().await?;
            let client = client.clone();
            let user = seed::user(sent);
            tasks.push(tokio::spawn(async move {
                let result = env::create(&client, IAM, "users", &user).await;
                drop(permit);
                result
            }));
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for task in tasks {
        task.await??;
    }
    let fake = &cluster.fake;
    let users = counter(&fake.counters(), "create", "users").context("no User created")?;
    let (first_user, last_user) = (users.first, users.last);
    report.add(
        &scenario,
        "Users created/s (target)",
        format!(
            "{} ({:.0})",
            rate(n as f64, last_user - first_user),
            signup_rate
        ),
    );
    let contacts_before = counter(&before, "create", "contacts").map_or(0, |c| c.count);
    let done = env::wait_for(
        &mut server,
        options.timeout,
        Duration::from_millis(100),
        |_| {
            let c = counter(&fake.counters(), "create", "contacts").map_or(0, |c| c.count);
            Ok(c - contacts_before >= n as u64)
        },
    )
    .await?;
    if done.is_none() {
        let made = counter(&fake.counters(), "create", "contacts").map_or(0, |c| c.count)
            - contacts_before;
        report.add(
            &scenario,
            "Contacts created/s",
            format!("incomplete: {made} of {n} in {}", secs(options.timeout)),
        );
        return Ok(());
    }
    let last_contact = counter(&fake.counters(), "create", "contacts")
        .context("no creates")?
        .last;
    report.add(
        &scenario,
        "Contacts created/s (first User to last Contact stored)",
        rate(n as f64, last_contact.saturating_duration_since(first_user)),
    );
    report.add(
        &scenario,
        "lag of the last Contact after the last User (stored)",
        millis(last_contact.saturating_duration_since(last_user)),
    );
    env::settle(fake, &mut server, options.quiet, options.timeout).await?;
    let requests = requests_between(&before, &fake.counters());
    let writes: u64 = requests
        .iter()
        .filter(|(k, _)| env::is_write(k) && k != "create users")
        .map(|(_, c)| c)
        .sum();
    report.add(
        &scenario,
        "API writes per User by the server",
        format!("{:.2}", writes as f64 / n as f64),
    );
    eprintln!("  requests during signup: {}", summary(&requests));
    let contacts = fake
        .store()
        .count(crate::fake::index(NOTIFICATION, "contacts"));
    anyhow::ensure!(
        contacts == n,
        "{contacts} contacts stored in {CONTACT_NAMESPACE}, {n} expected"
    );
    Ok(())
}

fn summary(requests: &[(String, u64)]) -> String {
    requests
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
