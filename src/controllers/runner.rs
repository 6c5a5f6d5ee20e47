//! The work queue every controller runs on. Controllers keep no objects of their own: they are
//! handed object keys, read what they need from the shared view, and are woken by the view's
//! change feed. The queue deduplicates keys (a key waiting or running is never queued twice; one
//! requested while it runs runs once more afterwards), holds delayed requeues in one timer heap,
//! and runs at most `concurrency` reconciles at once.
//!
//! What to reconcile is decided in memory first: a controller's `sweep` lists the objects whose
//! observed state differs from the desired one, and only those are queued, at start, on a relist
//! of a kind it reads, and every resync period. Healthy objects cost nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{ControllerKind, view_changes};
use crate::view::{ClusterView, Store, ViewChange, ViewKind};

/// What a reconcile asks for next: to be looked at again after a delay, or only on a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Look again after `duration` even without a change (a retry, an expiry, a view lagging).
    pub const fn requeue(duration: Duration) -> Self {
        Self {
            requeue_after: Some(duration),
        }
    }

    /// Look again only when a change (or a sweep) says so.
    pub const fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }

    /// The requested delay, if any.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// The key of an object a controller reconciles; `namespace` is empty for cluster-scoped kinds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace ("" for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::object_key(Some(&self.namespace), &self.name))
    }
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<ObjectKey>,
    queued: HashSet<ObjectKey>,
    running: HashSet<ObjectKey>,
    again: HashSet<ObjectKey>,
    timers: BinaryHeap<Reverse<(Instant, ObjectKey)>>,
    due: HashMap<ObjectKey, Instant>,
}

impl QueueState {
    fn push(&mut self, key: ObjectKey) {
        if self.running.contains(&key) {
            self.again.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    /// Moves the timers that are due into the ready queue; the next deadline, if any.
    fn promote(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                return Some(*at);
            }
            let Some(Reverse((at, key))) = self.timers.pop() else {
                break;
            };
            // A stale entry: the key was rescheduled earlier, or already ran.
            if self.due.get(&key) == Some(&at) {
                self.due.remove(&key);
                self.push(key);
            }
        }
        None
    }
}

/// A deduplicating, delaying work queue of object keys.
#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<QueueState>,
    notify: Notify,
}

impl WorkQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` now (a no-op when it is already waiting).
    pub fn request(&self, key: ObjectKey) {
        let mut state = self.state();
        state.due.remove(&key);
        state.push(key);
        drop(state);
        self.notify.notify_one();
    }

    /// Queues `key` after `delay`, unless it is already waiting or due sooner.
    pub fn request_after(&self, key: ObjectKey, delay: Duration) {
        if delay.is_zero() {
            return self.request(key);
        }
        let at = Instant::now() + delay;
        let mut state = self.state();
        if state.queued.contains(&key) || state.due.get(&key).is_some_and(|due| *due <= at) {
            return;
        }
        state.due.insert(key.clone(), at);
        state.timers.push(Reverse((at, key)));
        drop(state);
        self.notify.notify_one();
    }

    /// How many keys wait (now or later), for the queue-depth gauge.
    pub fn len(&self) -> usize {
        let state = self.state();
        state.queued.len() + state.due.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next key to reconcile, marked running; waits for one.
    pub async fn next(&self) -> ObjectKey {
        loop {
            let deadline = {
                let mut state = self.state();
                let deadline = state.promote(Instant::now());
                if let Some(key) = state.ready.pop_front() {
                    state.queued.remove(&key);
                    state.running.insert(key.clone());
                    return key;
                }
                deadline
            };
            match deadline {
                Some(at) => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    /// Marks `key` done; it is queued again at once if it was requested meanwhile, else after
    /// the delay `action` asks for.
    pub fn done(&self, key: ObjectKey, action: Action) {
        let mut state = self.state();
        state.running.remove(&key);
        if state.again.remove(&key) {
            state.push(key);
            drop(state);
            self.notify.notify_one();
            return;
        }
        drop(state);
        if let Some(delay) = action.requeue_after() {
            self.request_after(key, delay);
        }
    }
}

/// How a controller is driven from the view.
pub struct Driver<S, W> {
    /// The controller, for logs and metrics.
    pub kind: ControllerKind,
    /// Reconciles at once.
    pub concurrency: usize,
    /// How often the sweep runs without a relist (the safety net for anything the feed missed).
    pub resync: Duration,
    /// Kinds whose relist runs the sweep.
    pub relists: &'static [ViewKind],
    /// Delay before a woken key runs, so bursts of changes cost one reconcile (zero: at once).
    pub wake_delay: Duration,
    /// The keys whose observed state differs from the desired one, decided in memory.
    pub sweep: S,
    /// The keys a change concerns.
    pub wake: W,
    /// Set to the number of keys waiting, for `milo_webhook_controller_queue_depth`.
    pub depth: Gauge,
}

impl<S, W> Driver<S, W> {
    /// A driver with the controllers' settings (concurrency, resync), no wake delay, and the
    /// queue-depth gauge of `kind`; `feeds` is the sweep and the wake (see [`kind_feeds`]).
    pub fn new(
        ctx: &super::Context,
        kind: ControllerKind,
        relists: &'static [ViewKind],
        (sweep, wake): (S, W),
    ) -> Self {
        Self {
            kind,
            concurrency: ctx.settings.concurrency,
            resync: ctx.settings.resync,
            relists,
            wake_delay: Duration::ZERO,
            sweep,
            wake,
            depth: ctx.queue_depth(kind),
        }
    }
}

/// The sweep and the wake of a controller of one view kind whose work `needs` decides from the
/// view: the sweep keeps the objects of `kind` that need work; a change wakes the object it is
/// about when that needs work, and the objects `related` names for other kinds' changes (each
/// checked with `needs` too). Every such controller shares this instead of writing its own.
pub fn kind_feeds<N, W>(
    kind: ViewKind,
    needs: N,
    related: W,
) -> (
    impl Fn(&Store) -> Vec<ObjectKey>,
    impl Fn(&ViewChange, &Store) -> Vec<ObjectKey>,
)
where
    N: Fn(&Store, &str, &str) -> bool + Clone,
    W: Fn(&ViewChange, &Store) -> Vec<ObjectKey>,
{
    let sweep_needs = needs.clone();
    let sweep = move |view: &Store| -> Vec<ObjectKey> {
        view.names(kind)
            .into_iter()
            .filter(|(ns, name)| sweep_needs(view, ns, name))
            .map(|(namespace, name)| ObjectKey { namespace, name })
            .collect()
    };
    let wake = move |change: &ViewChange, view: &Store| -> Vec<ObjectKey> {
        let mut keys = match change {
            ViewChange::Applied(k, ns, name) if *k == kind => vec![ObjectKey::new(ns, name)],
            _ => related(change, view),
        };
        keys.retain(|key| needs(view, &key.namespace, &key.name));
        keys
    };
    (sweep, wake)
}

/// What a controller whose objects no other kind's change concerns passes as `related`.
pub fn unrelated(_: &ViewChange, _: &Store) -> Vec<ObjectKey> {
    Vec::new()
}

/// Runs a controller until its task is aborted (leadership lost, which also cancels the
/// reconciles in flight). It starts once the view holds the controllers' fields of every kind.
pub async fn drive<S, W, R, Fut>(view: &ClusterView, driver: Driver<S, W>, reconcile: R)
where
    S: Fn(&Store) -> Vec<ObjectKey>,
    W: Fn(&ViewChange, &Store) -> Vec<ObjectKey>,
    R: Fn(ObjectKey) -> Fut,
    Fut: Future<Output = Action>,
{
    let queue = WorkQueue::default();
    let controller = driver.kind.as_str();
    super::until_synced(view).await;
    // Subscribed before the first sweep reads the view: every change after it is delivered,
    // everything before it is in what the sweep sees (and the relists that led up to the sync
    // are not replayed as sweeps of their own).
    let mut changes = Box::pin(view_changes(view));
    let sweep = |why: &str| {
        let keys = (driver.sweep)(&view.read());
        // A sweep rebuilds every object it checks: give what it freed back to the OS, as the
        // view does after a relist, so it does not linger as RSS.
        crate::view::release_freed_memory();
        if !keys.is_empty() {
            tracing::info!(controller, objects = keys.len(), why, "queued what differs");
        }
        for key in keys {
            queue.request(key);
        }
    };
    sweep("start");
    tracing::info!(controller, "controller started");
    let mut resync = tokio::time::interval_at(Instant::now() + driver.resync, driver.resync);
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            change = changes.next() => match change {
                Some(ViewChange::Relisted(kind)) => {
                    if driver.relists.contains(&kind) {
                        sweep("relist");
                    }
                }
                Some(change) => {
                    for key in (driver.wake)(&change, &view.read()) {
                        queue.request_after(key, driver.wake_delay);
                    }
                }
                None => return,
            },
            _ = resync.tick() => sweep("resync"),
            key = queue.next(), if in_flight.len() < driver.concurrency.max(1) => {
                let run = reconcile(key.clone());
                in_flight.push(async move { (key, run.await) });
            }
            Some((key, action)) = in_flight.next() => queue.done(key, action),
        }
        driver
            .depth
            .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("ns", name)
    }

    #[tokio::test]
    async fn keys_are_deduplicated_and_rerun_once_when_requested_while_running() {
        let queue = WorkQueue::default();
        queue.request(key("a"));
        queue.request(key("a"));
        queue.request(key("b"));
        assert_eq!(queue.next().await, key("a"));
        queue.request(key("a"));
        queue.request(key("a"));
        assert_eq!(queue.next().await, key("b"));
        assert!(
            queue.next().now_or_never().is_none(),
            "a runs: not handed out twice"
        );
        queue.done(key("a"), Action::await_change());
        assert_eq!(queue.next().await, key("a"));
        queue.done(key("a"), Action::await_change());
        queue.done(key("b"), Action::await_change());
        assert!(queue.next().now_or_never().is_none());
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn requeues_wait_and_the_earliest_wins() {
        let queue = WorkQueue::default();
        queue.request_after(key("a"), Duration::from_secs(10));
        queue.request_after(key("a"), Duration::from_secs(60));
        queue.request_after(key("b"), Duration::from_secs(5));
        assert_eq!(queue.len(), 2);
        let started = Instant::now();
        assert_eq!(queue.next().await, key("b"));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(queue.next().await, key("a"));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        queue.done(key("a"), Action::requeue(Duration::from_secs(1)));
        queue.request(key("a"));
        assert_eq!(queue.next().await, key("a"));
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "a request beats the timer"
        );
        queue.done(key("a"), Action::await_change());
        assert!(
            queue.next().now_or_never().is_none(),
            "the stale timer fires nothing"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(queue.next().now_or_never().is_none());
    }

    #[tokio::test]
    async fn drive_runs_the_sweep_then_what_changes_wake_within_the_bound() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let view = Arc::new(ClusterView::offline(Store::default()));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let driver = Driver {
            kind: ControllerKind::Membership,
            concurrency: 2,
            resync: Duration::from_secs(3600),
            relists: &[],
            wake_delay: Duration::ZERO,
            sweep: |_: &Store| (0..6).map(|i| key(&i.to_string())).collect(),
            depth: Gauge::default(),
            wake: |change: &ViewChange, _: &Store| match change {
                ViewChange::Applied(_, ns, name) => vec![ObjectKey::new(ns, name)],
                _ => Vec::new(),
            },
        };
        let task = {
            let (view, running, most, seen) =
                (view.clone(), running.clone(), most.clone(), seen.clone());
            tokio::spawn(async move {
                drive(&view, driver, |key| {
                    let (running, most, seen) = (running.clone(), most.clone(), seen.clone());
                    async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        seen.lock().unwrap().push(key.name);
                        running.fetch_sub(1, Ordering::SeqCst);
                        Action::await_change()
                    }
                })
                .await
            })
        };
        let until = |n: usize| {
            let seen = seen.clone();
            tokio::time::timeout(Duration::from_secs(10), async move {
                while seen.lock().unwrap().len() < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        until(6).await.expect("the sweep's keys run within 10 s");
        view.announce(ViewChange::Applied(
            ViewKind::Membership,
            "ns".into(),
            "woken".into(),
        ));
        until(7).await.expect("the woken key runs within 10 s");
        task.abort();
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(
            seen.lock().unwrap().last().map(String::as_str),
            Some("woken")
        );
    }
}
