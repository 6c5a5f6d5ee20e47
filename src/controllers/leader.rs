//! Leader election: every replica serves admission, only the holder of a `coordination.k8s.io`
//! Lease (taken as [`lease`] describes) runs the controllers. Losing the lease stops them at once (their tasks are aborted), so
//! two replicas never reconcile side by side for longer than the lease's grace period; a new
//! leader starts from fresh lists, and every reconcile is idempotent, so the handover needs no
//! state of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::lease::{self, LeaseLock};

use crate::metrics::Metrics;

/// Where the lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the pod's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Seconds a lease is valid without renewal.
    pub duration_seconds: u64,
    /// Seconds before expiry the holder renews.
    pub grace_seconds: u64,
}

/// How long shutdown waits for the lease to be released before giving up (the next leader then
/// waits for it to expire).
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// This replica's part in the election.
pub struct Election {
    /// Whether this replica holds the lease.
    pub leadership: watch::Receiver<bool>,
    /// Ends the campaign: the task releases the lease (if held) and finishes.
    pub stop: oneshot::Sender<()>,
    /// The election task.
    pub task: JoinHandle<()>,
}

/// Starts competing for the lease: the holder renews it every `grace_seconds`, followers look
/// every [`lease::RETRY_PERIOD`]. A holder that cannot renew for two thirds of the lease's
/// duration steps down before anyone else may take it over.
pub async fn campaign(client: Client, settings: &LeaseSettings) -> anyhow::Result<Election> {
    let duration = Duration::from_secs(settings.duration_seconds.max(1));
    let renew_every = Duration::from_secs(settings.grace_seconds.max(1));
    let renew_deadline = duration * 2 / 3;
    let mut lock = LeaseLock::new(
        client,
        &settings.namespace,
        &settings.name,
        &settings.identity,
        duration,
    );
    let (tx, leadership) = watch::channel(false);
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut renewed: Option<Instant> = None;
        loop {
            let leading = *tx.borrow();
            let now_leading = match lock.try_acquire_or_renew().await {
                Ok(true) => {
                    renewed = Some(Instant::now());
                    true
                }
                Ok(false) => false,
                Err(error) => {
                    tracing::warn!(%error, "cannot read or write the leader lease");
                    leading && renewed.is_some_and(|at| at.elapsed() < renew_deadline)
                }
            };
            if now_leading != leading {
                if now_leading {
                    tracing::info!("acquired the leader lease");
                } else {
                    tracing::warn!("lost the leader lease");
                }
                tx.send_replace(now_leading);
            }
            let wait = if now_leading {
                renew_every
            } else {
                lease::RETRY_PERIOD
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stopped => break,
            }
        }
        tx.send_replace(false);
        match lock.release().await {
            Ok(()) => tracing::info!("leader lease released"),
            Err(error) => tracing::warn!(%error, "cannot release the leader lease"),
        }
    });
    Ok(Election {
        leadership,
        stop,
        task,
    })
}

/// Follows `election` as [`follow`] does until `stopping` completes, then releases the lease
/// (waiting at most [`RELEASE_TIMEOUT`]), so the next leader takes over at once instead of
/// waiting for the lease to expire.
pub async fn lead_until<S, F>(election: Election, metrics: Arc<Metrics>, start: S, stopping: F)
where
    S: FnMut() -> Vec<JoinHandle<()>>,
    F: Future<Output = ()>,
{
    follow(election.leadership, metrics, start, stopping).await;
    tracing::info!("releasing the leader lease");
    let _ = election.stop.send(());
    if tokio::time::timeout(RELEASE_TIMEOUT, election.task)
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?RELEASE_TIMEOUT,
            "the leader lease was not released in time; the next leader waits for it to expire"
        );
    }
}

/// Runs what `start` spawns while `leadership` is true and aborts it when it turns false, until
/// `stopping` completes or the election ends.
pub async fn follow<S, F>(
    mut leadership: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    mut start: S,
    stopping: F,
) where
    S: FnMut() -> Vec<JoinHandle<()>>,
    F: Future<Output = ()>,
{
    tokio::pin!(stopping);
    let mut running: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let leading = *leadership.borrow_and_update();
        if leading && running.is_empty() {
            tracing::info!("acquired the leader lease; starting controllers");
            metrics.controllers.leader.set(1);
            running = start();
        } else if !leading && !running.is_empty() {
            tracing::warn!("lost the leader lease; stopping controllers");
            stop(&mut running, &metrics);
        }
        tokio::select! {
            changed = leadership.changed() => {
                if changed.is_err() {
                    tracing::warn!("leader election ended; stopping controllers");
                    break;
                }
            }
            () = &mut stopping => break,
        }
    }
    stop(&mut running, &metrics);
}

fn stop(running: &mut Vec<JoinHandle<()>>, metrics: &Metrics) {
    for task in running.drain(..) {
        task.abort();
    }
    metrics.controllers.leader.set(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn controllers_run_only_while_leading() {
        let (tx, rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let starts = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let follower = {
            let (metrics, starts, alive) = (metrics.clone(), starts.clone(), alive.clone());
            tokio::spawn(follow(
                rx,
                metrics,
                move || {
                    starts.fetch_add(1, Ordering::SeqCst);
                    let alive = alive.clone();
                    vec![tokio::spawn(async move {
                        struct Alive(Arc<AtomicUsize>);
                        impl Drop for Alive {
                            fn drop(&mut self) {
                                self.0.fetch_sub(1, Ordering::SeqCst);
                            }
                        }
                        alive.fetch_add(1, Ordering::SeqCst);
                        let _guard = Alive(alive);
                        std::future::pending::<()>().await
                    })]
                },
                async move {
                    let _ = stop_rx.await;
                },
            ))
        };
        let settle = || tokio::time::sleep(Duration::from_millis(50));
        settle().await;
        assert_eq!(
            (starts.load(Ordering::SeqCst), alive.load(Ordering::SeqCst)),
            (0, 0)
        );
        tx.send(true).unwrap();
        settle().await;
        assert_eq!(
            (starts.load(Ordering::SeqCst), alive.load(Ordering::SeqCst)),
            (1, 1)
        );
        assert_eq!(metrics.controllers.leader.get(), 1);
        tx.send(false).unwrap();
        settle().await;
        assert_eq!(
            alive.load(Ordering::SeqCst),
            0,
            "controllers stop with the lease"
        );
        assert_eq!(metrics.controllers.leader.get(), 0);
        tx.send(true).unwrap();
        settle().await;
        assert_eq!(
            (starts.load(Ordering::SeqCst), alive.load(Ordering::SeqCst)),
            (2, 1)
        );
        stop_tx.send(()).unwrap();
        follower.await.unwrap();
        assert_eq!(
            alive.load(Ordering::SeqCst),
            0,
            "shutdown stops controllers"
        );
    }
}
