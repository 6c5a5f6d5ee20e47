//! What every scenario does: start a fake and the server against it, wait for readiness,
//! leadership and quiet, hold the leader Lease as a foreign replica, and talk to the fake as a
//! client.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::child::{Launch, Server};
use crate::fake::objects::{self, Writer};
use crate::fake::store::Write;
use crate::fake::{self, Config, Counters, FakeApi, RESOURCES, index};
use crate::options::Options;

pub const LEASE_NAMESPACE: &str = "milo-system";
/// The server's default `--leader-election-lease`.
pub const LEASE_NAME: &str = "milo-webhook-controllers";
const FOREIGN: &str = "bench-foreign";

/// One scenario's fake API server and working directory.
pub struct Cluster {
    pub fake: FakeApi,
    pub kubeconfig: PathBuf,
    pub workdir: PathBuf,
}

impl Cluster {
    pub async fn start(options: &Options, workdir: &Path, name: &str) -> anyhow::Result<Self> {
        let config = Config {
            write_latency: options.latency,
            max_concurrent_writes: options.max_writes,
            ..Config::default()
        };
        let fake = FakeApi::start(config).await?;
        let workdir = workdir.join(name);
        std::fs::create_dir_all(&workdir)?;
        let kubeconfig = workdir.join("kubeconfig");
        std::fs::write(&kubeconfig, fake.kubeconfig())?;
        Ok(Self {
            fake,
            kubeconfig,
            workdir,
        })
    }

    pub fn launch(&self, options: &Options, identity: &str) -> anyhow::Result<Server> {
        Server::start(&Launch {
            kubeconfig: &self.kubeconfig,
            identity,
            lease_namespace: LEASE_NAMESPACE,
            extra: &options.serve_args,
            workdir: &self.workdir,
        })
    }

    /// A kube client of the fake, as the harness's own.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.fake.kubeconfig())?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Bytes of every stored object.
    pub fn stored_bytes(&self) -> usize {
        (0..RESOURCES.len())
            .map(|r| self.fake.store().bytes(r))
            .sum()
    }

    /// Holds the leader Lease as another replica would, renewing it every second, until the
    /// returned guard is dropped; the server then takes it over once it expires.
    pub fn hold_lease(&self, seconds: u64) -> LeaseHolder {
        let lease = index("coordination.k8s.io", "leases");
        let store = self.fake.store();
        store.seed(
            lease,
            crate::seed::lease(LEASE_NAMESPACE, LEASE_NAME, FOREIGN, seconds),
            FOREIGN,
        );
        let shared = self.fake.shared();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let sent = json!({"spec": {"renewTime": objects::now_micro()}});
                let write = Write {
                    writer: Writer {
                        manager: FOREIGN,
                        operation: "Update",
                        subresource: None,
                    },
                    sent: sent.clone(),
                    precondition: None,
                };
                let renewed =
                    shared
                        .store
                        .update(lease, LEASE_NAMESPACE, LEASE_NAME, &write, |l| {
                            if l["spec"]["holderIdentity"] != FOREIGN {
                                return Err(objects::ApiError::bad_request("taken over"));
                            }
                            json_patch::merge(l, &sent);
                            Ok(())
                        });
                if renewed.is_err() {
                    return;
                }
            }
        });
        LeaseHolder(task)
    }
}

pub struct LeaseHolder(tokio::task::JoinHandle<()>);

impl Drop for LeaseHolder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Requests the server made that show work: everything but watches (long-lived) and Lease
/// traffic (periodic renewals).
pub fn activity(counters: &Counters) -> u64 {
    counters
        .iter()
        .filter(|((verb, resource), _)| verb != "watch" && resource != "leases")
        .map(|(_, c)| c.count)
        .sum()
}

/// `after - before` per (verb, resource), leases and watches left out, as `verb resource: n`
/// sorted by count.
pub fn requests_between(before: &Counters, after: &Counters) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = after
        .iter()
        .filter(|((verb, resource), _)| verb != "watch" && resource != "leases")
        .map(|(key, c)| {
            let was = before.get(key).map_or(0, |b| b.count);
            (format!("{} {}", key.0, key.1), c.count - was)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

pub fn is_write(verb_resource: &str) -> bool {
    let verb = verb_resource.split([' ', ':']).next().unwrap_or_default();
    matches!(verb, "create" | "update" | "patch" | "apply" | "delete")
}

/// Polls `check` every `every` until it holds; `None` after `timeout`. The server is checked to
/// be alive on every poll.
pub async fn wait_for(
    server: &mut Server,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut(&Server) -> anyhow::Result<bool>,
) -> anyhow::Result<Option<Instant>> {
    let deadline = Instant::now() + timeout;
    loop {
        server.check_alive()?;
        if check(server)? {
            return Ok(Some(Instant::now()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits until neither the server's requests to the fake nor its reconcile count have changed
/// for `quiet`; returns when they last changed, or `None` after `timeout`.
pub async fn settle(
    fake: &FakeApi,
    server: &mut Server,
    quiet: Duration,
    timeout: Duration,
) -> anyhow::Result<Option<Instant>> {
    let deadline = Instant::now() + timeout;
    let mut last = (u64::MAX, f64::NAN);
    let mut since = Instant::now();
    loop {
        server.check_alive()?;
        let now = (activity(&fake.counters()), server.scrape()?.reconciles());
        if now.0 != last.0 || now.1.to_bits() != last.1.to_bits() {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return Ok(Some(since));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for /readyz; fails with the server's log when it does not come.
pub async fn ready(server: &mut Server, timeout: Duration) -> anyhow::Result<Instant> {
    match wait_for(
        server,
        timeout,
        Duration::from_millis(50),
        |s| Ok(s.ready()),
    )
    .await?
    {
        Some(at) => Ok(at),
        None => bail!(
            "/readyz not OK within {timeout:?}; log:\n{}",
            server.log_tail(20)
        ),
    }
}

/// Waits for the server to report leadership.
pub async fn leading(server: &mut Server, timeout: Duration) -> anyhow::Result<Instant> {
    let check = |s: &Server| Ok(s.scrape().is_ok_and(|m| m.leader()));
    match wait_for(server, timeout, Duration::from_millis(100), check).await? {
        Some(at) => Ok(at),
        None => bail!(
            "not leading within {timeout:?}; log:\n{}",
            server.log_tail(20)
        ),
    }
}

/// The kube `ApiResource` of a type the fake serves.
pub fn api_resource(group: &str, plural: &str) -> ApiResource {
    let rt = &RESOURCES[index(group, plural)];
    ApiResource {
        group: rt.group.into(),
        version: rt.version.into(),
        api_version: rt.api_version(),
        kind: rt.kind.into(),
        plural: rt.plural.into(),
    }
}

/// Creates `object` through the API, as a client would.
pub async fn create(
    client: &kube::Client,
    group: &str,
    plural: &str,
    object: &Value,
) -> anyhow::Result<()> {
    let ar = api_resource(group, plural);
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let object: DynamicObject = serde_json::from_value(object.clone())?;
    api.create(&PostParams::default(), &object)
        .await
        .with_context(|| format!("creating {plural}"))?;
    Ok(())
}

/// Creates `n` objects made by `make` with `clients` concurrent clients; the time from the
/// first request to the last answer.
pub async fn create_many(
    client: &kube::Client,
    group: &'static str,
    plural: &'static str,
    n: usize,
    clients: usize,
    make: impl Fn(usize) -> Value + Send + Sync + 'static,
) -> anyhow::Result<Duration> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let make = Arc::new(make);
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (client, next, make) = (client.clone(), next.clone(), make.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return anyhow::Ok(());
                    }
                    create(&client, group, plural, &make(i)).await?;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await??;
    }
    Ok(started.elapsed())
}

/// A fake's counter for `verb` on `resource`: count and when the last one came.
pub fn counter(counters: &Counters, verb: &str, resource: &str) -> Option<fake::Counter> {
    counters
        .get(&(verb.to_owned(), resource.to_owned()))
        .copied()
}
