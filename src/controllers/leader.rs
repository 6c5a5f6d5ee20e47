//! Leader election: every replica serves admission, only the holder of a `coordination.k8s.io`
//! Lease runs the controllers. Losing the lease stops them at once (their tasks are aborted), so
//! two replicas never reconcile side by side for longer than the lease's grace period; a new
//! leader starts from fresh lists, and every reconcile is idempotent, so the handover needs no
//! state of its own.

use std::future::Future;
use std::sync::Arc;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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

/// Starts competing for the lease. The returned channel says whether we hold it; dropping it
/// releases the lease (on shutdown, so the next leader need not wait for expiry).
pub async fn campaign(
    client: Client,
    settings: &LeaseSettings,
) -> anyhow::Result<(watch::Receiver<bool>, JoinHandle<()>)> {
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.grace_seconds)
        .with_field_manager(super::kubeapi::FIELD_MANAGER)
        .build()
        .await?;
    let (leadership, task) = manager.watch().await;
    let task = tokio::spawn(async move {
        match task.await {
            Ok(Ok(_)) => tracing::info!("leader lease released"),
            Ok(Err(error)) => tracing::error!(%error, "leader election stopped"),
            Err(error) => tracing::error!(%error, "leader election task failed"),
        }
    });
    Ok((leadership, task))
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
    use std::time::Duration;

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
