//! What the sync writes on the objects it mirrors, shared by the three loops: its finalizer, and
//! its status (its own condition, `Ready`, its `status.providers` entry and the deprecated
//! `status.providerID`), each by server-side apply under the sync's own field manager, so other
//! writers' conditions and other providers' entries are never touched.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::api::Api;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::FIELD_MANAGER;
use crate::api::common::sync::FINALIZER;
use crate::controllers::conditions::{self, Desired, READY};
use crate::controllers::kubeapi;
use crate::controllers::schemas::InstalledSchemas;
use crate::providers::resend::ResendError;

/// Adds (`present`) or removes the sync's finalizer, never bringing back an object deleted
/// meanwhile ([`kubeapi::add_finalizer`], [`kubeapi::release_finalizer`]: an apply would try to
/// create it). False when adding found the object gone or being deleted: nothing to mirror.
pub async fn set_finalizer<K>(api: &Api<K>, name: &str, present: bool) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    if present {
        kubeapi::add_finalizer(api, name, FINALIZER).await
    } else {
        kubeapi::release_finalizer(api, name, FINALIZER)
            .await
            .map(|()| true)
    }
}

/// How one sync of an object ended.
pub struct Outcome<'a> {
    /// The object's id at Resend, when known. Sent on failures too: an apply that left it out
    /// would delete the entry the sync wrote before.
    pub id: Option<&'a str>,
    /// Why it is not mirrored (`None`: it is).
    pub failure: Option<&'a ResendError>,
}

/// Where a sync's outcome is recorded: the kind's own condition on an object with `existing`
/// conditions, observed at `generation`.
pub struct Record<'a> {
    /// `ResendContactReady`, `ResendContactGroupReady` or `ResendContactGroupMembershipReady`.
    pub condition_type: &'a str,
    /// The object's conditions as read (a condition keeps its transition time when unchanged).
    pub existing: &'a [Condition],
    /// The object's generation.
    pub generation: Option<i64>,
}

/// The status the sync applies for `outcome`: its condition (observed at the record's
/// generation), `Ready` (only Resend is configured, so it says the same) and the provider entry
/// when the id is known.
pub fn body(record: &Record<'_>, outcome: &Outcome<'_>, now: jiff::Timestamp) -> Value {
    let Record {
        condition_type,
        existing,
        generation,
    } = *record;
    let (own, ready) = match outcome.failure {
        None => (
            Desired {
                type_: condition_type,
                status: true,
                reason: "Synced",
                message: "mirrored to Resend".into(),
            },
            Desired {
                type_: READY,
                status: true,
                reason: "CreateSuccessful",
                message: "mirrored to Resend".into(),
            },
        ),
        Some(error) => {
            let message = format!("Resend: {error}");
            (
                Desired {
                    type_: condition_type,
                    status: false,
                    reason: error.reason(),
                    message: message.clone(),
                },
                Desired {
                    type_: READY,
                    status: false,
                    reason: error.reason(),
                    message,
                },
            )
        }
    };
    let mut status = json!({
        "conditions": [
            conditions::render(existing, &own, generation, now),
            conditions::render(existing, &ready, generation, now),
        ],
    });
    if let Some(id) = outcome.id {
        status["providers"] = json!([{"name": "Resend", "id": id}]);
        status["providerID"] = json!(id);
    }
    status
}

/// Applies `status` to the status subresource under the sync's field manager.
pub async fn apply<K>(
    schemas: &InstalledSchemas,
    api: &Api<K>,
    name: &str,
    status: Value,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    crate::controllers::kubeapi::apply_status_as(schemas, api, name, status, FIELD_MANAGER).await
}

/// Records a failed sync on the object, best effort (the reconcile's error is what retries), and
/// hands the error back.
pub async fn report_failure<K>(
    schemas: &InstalledSchemas,
    api: &Api<K>,
    name: &str,
    record: &Record<'_>,
    id: Option<&str>,
    error: ResendError,
) -> crate::controllers::Error
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let status = body(
        record,
        &Outcome {
            id,
            failure: Some(&error),
        },
        jiff::Timestamp::now(),
    );
    if let Err(write) = apply(schemas, api, name, status).await {
        tracing::warn!(error = %write, object = name, "cannot record the sync failure");
    }
    crate::controllers::Error::Provider(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_status_names_only_this_provider() {
        let now: jiff::Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let record = Record {
            condition_type: "ResendContactReady",
            existing: &[],
            generation: Some(3),
        };
        let status = body(
            &record,
            &Outcome {
                id: Some("re_1"),
                failure: None,
            },
            now,
        );
        assert_eq!(
            status["providers"],
            json!([{"name": "Resend", "id": "re_1"}])
        );
        assert_eq!(status["providerID"], "re_1");
        assert_eq!(status["conditions"][0]["type"], "ResendContactReady");
        assert_eq!(status["conditions"][0]["observedGeneration"], 3);
        assert_eq!(status["conditions"][1]["reason"], "CreateSuccessful");
    }

    #[test]
    fn failed_status_keeps_the_known_id() {
        let now: jiff::Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let error = ResendError::Transient {
            message: "503 service_unavailable".into(),
        };
        let failed = |id| Outcome {
            id,
            failure: Some(&error),
        };
        let record = Record {
            condition_type: "ResendContactReady",
            existing: &[],
            generation: Some(1),
        };
        let status = body(&record, &failed(None), now);
        assert!(status.get("providers").is_none());
        let status = body(&record, &failed(Some("re_1")), now);
        assert_eq!(status["providers"][0]["id"], "re_1");
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(status["conditions"][0]["reason"], error.reason());
    }
}
