//! A local fake Kubernetes API server for benchmarks and tests: plain HTTP on 127.0.0.1, a
//! random port, the resources milo-webhook reads and writes (see [`resources`]), paginated and
//! label-selected LISTs, WATCHes from a resourceVersion, creates, gets, patches (merge,
//! strategic, JSON, server-side apply) on objects and `/status`, deletes, realistic metadata
//! (uid, resourceVersion, generation, creationTimestamp, managedFields), a latency and a
//! concurrency bound on writes, and request counters by verb and resource.
//!
//! It calls no admission webhooks and validates no values: it is the storage and watch half of
//! an API server, enough to measure what a controller costs. It does hold the types with a CRD of
//! ours to their schema the way a real one does where a controller would notice (see [`schema`],
//! shared with the test doubles): a server-side apply naming an undeclared field is refused (500),
//! creates, updates and merge patches prune such fields, and an apply owns exactly what it sent,
//! so a field its manager stops sending is removed unless another manager's `managedFields` hold it.

pub mod handlers;
pub mod objects;
pub mod patch;
pub mod resources;
#[path = "../../../tests/support/schema.rs"]
pub mod schema;
pub mod selector;
pub mod store;
pub mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use resources::{RESOURCES, index};
pub use store::Store;

/// How the fake behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Time every write takes once it has a slot.
    pub write_latency: Duration,
    /// Writes in progress at once; more wait for a slot.
    pub max_concurrent_writes: usize,
    /// How often an idle watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Changes kept for watches to resume from.
    pub history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            write_latency: Duration::from_millis(5),
            max_concurrent_writes: 64,
            bookmark_interval: Duration::from_secs(5),
            history: 1_000_000,
        }
    }
}

/// Requests of one verb on one resource.
#[derive(Clone, Copy, Debug)]
pub struct Counter {
    pub count: u64,
    pub first: Instant,
    pub last: Instant,
}

/// Counters by `(verb, resource)`: the verb is `get`, `list`, `watch`, `create`, `update`,
/// `patch`, `apply` or `delete`, with `:CODE` for requests that failed (`create:409`); the
/// resource is `plural` or `plural/status`. Watches count as they start, everything else as it
/// is answered.
pub type Counters = BTreeMap<(String, String), Counter>;

/// What every handler shares.
pub struct Shared {
    pub store: Store,
    pub config: Config,
    writes: Semaphore,
    counters: Mutex<Counters>,
}

impl Shared {
    fn count(&self, verb: &str, resource: &str) {
        let now = Instant::now();
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters
            .entry((verb.to_owned(), resource.to_owned()))
            .and_modify(|c| {
                c.count += 1;
                c.last = now;
            })
            .or_insert(Counter {
                count: 1,
                first: now,
                last: now,
            });
    }
}

/// A running fake; dropping it stops the server.
pub struct FakeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeApi {
    /// Starts serving on 127.0.0.1 at a free port.
    pub async fn start(config: Config) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Store::new(config.history),
            writes: Semaphore::new(config.max_concurrent_writes.max(1)),
            config,
            counters: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(handlers::handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("fake API server stopped: {error}");
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The objects, for seeding and inspection (neither counted nor delayed).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The state the handlers share, for tasks that outlive a borrow of the fake.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> Counters {
        self.shared
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests of `verb` on `resource` so far.
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.shared
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(verb.to_owned(), resource.to_owned()))
            .map_or(0, |c| c.count)
    }

    /// A kubeconfig for this server, with no credentials.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}
