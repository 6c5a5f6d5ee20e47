//! The Lease lock, the way client-go's leader election takes it: read the Lease, and write it
//! only with the `resourceVersion` just read. Two replicas racing for a free or expired Lease
//! both send the same version; the API server accepts the first and answers the second 409
//! Conflict, so two holders at once are impossible by construction (no field-manager subtleties,
//! no clocks compared across machines: a Lease counts as expired when its version has not moved
//! for its whole duration, measured on our own clock). Followers look every [`RETRY_PERIOD`], so
//! a Lease released on shutdown is taken over within a couple of seconds.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::time::Instant;

use super::kubeapi::FIELD_MANAGER;

/// How often a follower looks at the Lease, and a leader retries a failed renewal.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// What this replica knows of the Lease.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The last version seen and when (our clock) it was first seen.
    observed: Option<(String, Instant)>,
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 409)
}

fn params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

impl LeaseLock {
    /// The lock on `namespace/name` held as `identity` for `duration` per renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            observed: None,
        }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.duration.as_secs()).ok(),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Whether the Lease `lease` is held by someone else whose hold has not expired: its version
    /// moved within its duration, as seen on our clock.
    fn held_by_another(&mut self, lease: &Lease) -> bool {
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let seen_at = match &self.observed {
            Some((seen, at)) if *seen == version => *at,
            _ => {
                let now = Instant::now();
                self.observed = Some((version, now));
                now
            }
        };
        let spec = lease.spec.as_ref();
        let holder = spec
            .and_then(|s| s.holder_identity.as_deref())
            .unwrap_or("");
        let duration = spec
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|d| u64::try_from(d).ok())
            .map_or(self.duration, Duration::from_secs);
        !holder.is_empty() && holder != self.identity && seen_at.elapsed() < duration
    }

    /// Takes or renews the Lease; whether this replica holds it now. A lost race is `Ok(false)`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&params(), &lease).await {
                Ok(_) => Ok(true),
                Err(error) if is_conflict(&error) => Ok(false),
                Err(error) => Err(error),
            };
        };
        if self.held_by_another(&current) {
            return Ok(false);
        }
        let spec = current.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if ours {
            self.spec(transitions, spec.acquire_time.clone())
        } else {
            self.spec(transitions + 1, None)
        };
        let mut lease = current;
        lease.spec = Some(next);
        lease.metadata.managed_fields = None;
        // The version read travels with the write: whoever wrote in between wins, we lose.
        match self.api.replace(&self.name, &params(), &lease).await {
            Ok(written) => {
                let version = written.metadata.resource_version.unwrap_or_default();
                self.observed = Some((version, Instant::now()));
                Ok(true)
            }
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up when this replica holds it, so the next leader need not wait for it
    /// to expire.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(1);
        lease.metadata.managed_fields = None;
        match self.api.replace(&self.name, &params(), &lease).await {
            Ok(_) => Ok(()),
            // Someone else wrote it meanwhile: it is not ours to release any more.
            Err(error) if is_conflict(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }
}
