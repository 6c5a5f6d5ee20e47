//! Publishing Kubernetes Events within a budget. kube-runtime's `Recorder` keeps every Event it
//! sent for six minutes (to fold repeats into a series) and scans that cache on every publish:
//! at signup or enrollment rates that is hundreds of MiB and a quadratic cost. Our Events are
//! about distinct objects and rarely repeat, so they are created directly, and a token bucket
//! bounds how many a burst (a backfill, a mass signup) may write: beyond it Events are counted
//! as dropped, while logs and metrics still carry every outcome.

use std::sync::Mutex;
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;

/// Events a burst may publish at once.
pub const BURST: f64 = 200.0;
/// Events per second the budget refills with.
pub const PER_SECOND: f64 = 20.0;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Creates Events as `controller` (`instance`: the pod), within the budget.
pub struct EventPublisher {
    client: Client,
    controller: String,
    instance: String,
    bucket: Mutex<Bucket>,
    dropped: Counter,
}

impl EventPublisher {
    /// A publisher with a full budget; `dropped` counts what the budget refuses.
    pub fn new(
        client: Client,
        controller: &str,
        instance: Option<String>,
        dropped: Counter,
    ) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.unwrap_or_else(|| controller.to_owned()),
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                at: Instant::now(),
            }),
            dropped,
        }
    }

    fn take(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.at).as_secs_f64() * PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Creates `event` about `regarding` in its namespace (`default` for cluster-scoped
    /// objects), or counts it dropped when the budget is spent.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        if !self.take() {
            self.dropped.inc();
            tracing::debug!(reason = %event.reason, "event budget spent; event dropped");
            return Ok(());
        }
        let now = jiff::Timestamp::now();
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let object = K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            note: event.note.clone(),
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..K8sEvent::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &object)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_budget_refuses_a_burst_beyond_it_and_counts_it() {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = Client::new(service, "default");
        let dropped = Counter::default();
        let publisher = EventPublisher::new(client, "milo-webhook", None, dropped.clone());
        let granted = (0..(BURST as usize + 50))
            .filter(|_| publisher.take())
            .count();
        assert!(
            granted >= BURST as usize && granted < BURST as usize + 5,
            "{granted}"
        );
    }
}
