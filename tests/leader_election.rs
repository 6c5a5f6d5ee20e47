//! Leader election against one Lease served with the API server's optimistic concurrency: two
//! replicas starting together never both lead, and a leader that shuts down releases the lease
//! so the other takes over within seconds rather than after the lease expires.
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use milo_webhook::controllers::leader::{self, LeaseSettings};
use milo_webhook::metrics::Metrics;
use support::lease_api::{self, LeaseState};
use tokio::sync::watch;

/// Long enough that a takeover within it can only come from a release.
const LEASE_SECONDS: u64 = 30;

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: "milo-system".into(),
        name: "milo-webhook-controllers".into(),
        identity: identity.into(),
        duration_seconds: LEASE_SECONDS,
        grace_seconds: 5,
    }
}

async fn until(receiver: &mut watch::Receiver<bool>, leading: bool) {
    tokio::time::timeout(
        Duration::from_secs(20),
        receiver.wait_for(|now| *now == leading),
    )
    .await
    .expect("within 20 s")
    .expect("the election runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_lead_at_once_and_shutdown_hands_over() {
    // The Lease exists and is free (its last holder released it): both replicas read the same
    // version and race to write it.
    let lease = Arc::new(Mutex::new(LeaseState {
        spec: Some(serde_json::Map::new()),
        version: 7,
        holders: Vec::new(),
    }));
    let (settings_a, settings_b) = (settings("replica-a"), settings("replica-b"));
    let (a, b) = tokio::join!(
        leader::campaign(lease_api::client(lease.clone()), &settings_a),
        leader::campaign(lease_api::client(lease.clone()), &settings_b),
    );
    let (a, b) = (a.unwrap(), b.unwrap());

    // Watch both for as long as they both run: never true together.
    let (mut watch_a, mut watch_b) = (a.leadership.clone(), b.leadership.clone());
    let both = Arc::new(Mutex::new(false));
    let monitor = {
        let both = both.clone();
        tokio::spawn(async move {
            loop {
                if *watch_a.borrow_and_update() && *watch_b.borrow_and_update() {
                    *both.lock().unwrap() = true;
                }
                tokio::select! {
                    changed = watch_a.changed() => if changed.is_err() { break },
                    changed = watch_b.changed() => if changed.is_err() { break },
                }
            }
        })
    };
    let mut first = a.leadership.clone();
    let mut second = b.leadership.clone();
    let a_leads = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            _ = first.wait_for(|l| *l) => true,
            _ = second.wait_for(|l| *l) => false,
        }
    })
    .await
    .expect("someone leads within 20 s");
    // Give the loser's election loop a few rounds to (wrongly) acquire too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let state = lease.lock().unwrap();
        assert_eq!(state.holders.len(), 1, "one holder: {:?}", state.holders);
    }
    assert!(!*both.lock().unwrap(), "both replicas led at once");

    // The leader shuts down: it stops following and releases the lease.
    let (leader_election, mut other) = if a_leads {
        (a, b.leadership.clone())
    } else {
        (b, a.leadership.clone())
    };
    let keep_other = if a_leads { "replica-b" } else { "replica-a" };
    let metrics = Arc::new(Metrics::default());
    tokio::time::timeout(
        Duration::from_secs(10),
        leader::lead_until(leader_election, metrics, Vec::new, async {}),
    )
    .await
    .expect("shutdown releases within 10 s");
    until(&mut other, true).await;
    let state = lease.lock().unwrap();
    assert_eq!(
        state.holders.last().map(String::as_str),
        Some(keep_other),
        "the other replica took over within the lease's {LEASE_SECONDS} s: the lease was released"
    );
    assert!(!*both.lock().unwrap(), "both replicas led at once");
    drop(state);
    monitor.abort();
}
