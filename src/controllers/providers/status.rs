//! What a provider's sync writes on the objects it mirrors: its finalizer, and its status (its
//! own condition, `Ready`, its `status.providers` entry, and for Resend the deprecated
//! `status.providerID`), each by server-side apply under the provider's own field manager, so
//! other writers' conditions and other providers' entries are never touched.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::api::Api;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{ProviderFailure, SyncedObject, field_manager};
use crate::api::common::ProviderName;
use crate::api::common::sync::{self, display};
use crate::controllers::conditions::{self, Desired, READY};
use crate::controllers::kubeapi;
use crate::controllers::schemas::InstalledSchemas;
use crate::view::SyncMarks;

/// Adds (`present`) or removes `provider`'s finalizer, never bringing back an object deleted
/// meanwhile ([`kubeapi::add_finalizer`], [`kubeapi::release_finalizer`]: an apply would try to
/// create it). False when adding found the object gone or being deleted: nothing to mirror.
pub async fn set_finalizer<K>(
    provider: ProviderName,
    api: &Api<K>,
    name: &str,
    present: bool,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let finalizer = sync::finalizer(provider);
    if present {
        return kubeapi::add_finalizer(api, name, finalizer).await;
    }
    // Every provider lets go of a deleted object at about the same moment, and the release is
    // written under the resourceVersion read: the one that loses reads again here rather than
    // failing the reconcile, whose retry would repeat the provider call made before it.
    let mut attempts = RELEASE_ATTEMPTS;
    loop {
        attempts -= 1;
        match kubeapi::release_finalizer(api, name, finalizer).await {
            Err(error) if attempts > 0 && kubeapi::is_conflict(&error) => continue,
            other => return other.map(|()| true),
        }
    }
}

/// How often a finalizer's release is tried when another writer changed the object meanwhile.
const RELEASE_ATTEMPTS: u32 = 3;

/// How one sync of an object ended.
pub struct Outcome<'a> {
    /// The object's id at the provider, when known. Sent on failures too: an apply that left it
    /// out would delete the entry the sync wrote before.
    pub id: Option<&'a str>,
    /// Why it is not mirrored (`None`: it is).
    pub failure: Option<&'a dyn ProviderFailure>,
    /// It is deliberately not mirrored (a group whose spec names no list of this provider): the
    /// condition says why, with this reason and message, and `Ready` ignores this provider.
    pub left_out: Option<(&'static str, &'a str)>,
}

impl<'a> Outcome<'a> {
    /// Mirrored, with `id` at the provider.
    pub fn synced(id: &'a str) -> Self {
        Self {
            id: Some(id),
            failure: None,
            left_out: None,
        }
    }

    /// Not mirrored because of `failure`; `id` as known before.
    pub fn failed(id: Option<&'a str>, failure: &'a dyn ProviderFailure) -> Self {
        Self {
            id,
            failure: Some(failure),
            left_out: None,
        }
    }
}

/// Where a sync's outcome is recorded: the kind's own condition on an object with `existing`
/// conditions, observed at `generation`, beside the other providers mirroring it.
pub struct Record<'a> {
    /// What kind of object.
    pub kind: SyncedObject,
    /// The object's conditions as read (a condition keeps its transition time when unchanged).
    pub existing: &'a [Condition],
    /// The object's generation.
    pub generation: Option<i64>,
    /// The other providers that mirror the object and whether each says it is synced
    /// ([`super::ready::others`]): `Ready` is True only when they all are too.
    pub others: Vec<(ProviderName, bool)>,
}

/// Who writes: a provider, among the `configured` ones, against the installed schemas.
#[derive(Clone, Copy)]
pub struct Writer<'a> {
    /// The provider writing.
    pub provider: ProviderName,
    /// Every provider mirrored to.
    pub configured: &'a [ProviderName],
    /// The installed CRDs (fields they do not declare are left out of the apply).
    pub schemas: &'a InstalledSchemas,
}

/// An object a provider mirrors, as the layer reads it back.
pub trait Mirrored:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug
{
    /// Its status conditions.
    fn conditions(&self) -> &[Condition];
    /// The id `provider`'s entry in `status.providers` records.
    fn provider_id(&self, provider: ProviderName) -> Option<&str>;
}

/// Contacts and groups share one status shape ([`crate::api::common::ProviderSyncStatus`]).
macro_rules! mirrored_by_sync_status {
    ($($kind:ty),+) => {$(
        impl Mirrored for $kind {
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()
            }
            fn provider_id(&self, provider: ProviderName) -> Option<&str> {
                crate::view::sync::provider_id(self.status.as_ref(), provider)
            }
        }
    )+};
}

mirrored_by_sync_status!(crate::api::Contact, crate::api::ContactGroup);

impl Mirrored for crate::api::ContactGroupMembership {
    fn conditions(&self) -> &[Condition] {
        self.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default()
    }
    fn provider_id(&self, provider: ProviderName) -> Option<&str> {
        self.status
            .as_ref()?
            .providers
            .iter()
            .find(|p| p.name == provider)
            .map(|p| p.id.as_str())
            .filter(|id| !id.is_empty())
    }
}

/// "Resend", "Resend and Loops", "Resend, Loops and X".
fn names(providers: &[ProviderName]) -> String {
    let names: Vec<&str> = providers.iter().map(|p| display(*p)).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

impl Writer<'_> {
    /// The status this provider applies for `outcome`: its condition (observed at the record's
    /// generation), `Ready` over every provider that mirrors the object, and its provider entry
    /// when the id is known. Resend also fills the deprecated `providerID` (Milo's CRDs name one).
    pub fn body(&self, record: &Record<'_>, outcome: &Outcome<'_>, now: jiff::Timestamp) -> Value {
        let provider = display(self.provider);
        let condition_type = sync::condition(self.provider, record.kind);
        let pending: Vec<ProviderName> = record
            .others
            .iter()
            .filter(|(_, synced)| !synced)
            .map(|(p, _)| *p)
            .collect();
        let mut mirrored: Vec<ProviderName> = Vec::new();
        if outcome.left_out.is_none() {
            mirrored.push(self.provider);
        }
        mirrored.extend(record.others.iter().filter(|(_, s)| *s).map(|(p, _)| *p));
        let (own, ready) = match (outcome.failure, outcome.left_out) {
            (Some(error), _) => {
                let message = format!("{provider}: {error}");
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
            (None, left_out) => {
                let own = match left_out {
                    Some((reason, message)) => Desired {
                        type_: condition_type,
                        status: false,
                        reason,
                        message: message.to_owned(),
                    },
                    None => Desired {
                        type_: condition_type,
                        status: true,
                        reason: "Synced",
                        message: format!("mirrored to {provider}"),
                    },
                };
                let ready = if pending.is_empty() {
                    Desired {
                        type_: READY,
                        status: true,
                        reason: "CreateSuccessful",
                        message: if mirrored.is_empty() {
                            "no provider mirrors it".into()
                        } else {
                            format!("mirrored to {}", names(&mirrored))
                        },
                    }
                } else {
                    Desired {
                        type_: READY,
                        status: false,
                        reason: "ProviderPending",
                        message: format!("not yet mirrored to {}", names(&pending)),
                    }
                };
                (own, ready)
            }
        };
        let mut status = json!({
            "conditions": [
                conditions::render(record.existing, &own, record.generation, now),
                conditions::render(record.existing, &ready, record.generation, now),
            ],
        });
        if let Some(id) = outcome.id {
            status["providers"] = json!([{"name": provider, "id": id}]);
            if self.provider == ProviderName::Resend {
                status["providerID"] = json!(id);
            }
        }
        status
    }

    /// Applies `status` to the status subresource under this provider's field manager.
    pub async fn apply<K>(&self, api: &Api<K>, name: &str, status: Value) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        kubeapi::apply_status_as(
            self.schemas,
            api,
            name,
            status,
            field_manager(self.provider),
        )
        .await
    }

    /// Records `outcome` on the object now.
    pub async fn record<K>(
        &self,
        api: &Api<K>,
        name: &str,
        record: &Record<'_>,
        outcome: &Outcome<'_>,
    ) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let body = self.body(record, outcome, jiff::Timestamp::now());
        self.apply(api, name, body).await
    }

    /// Where `object` as read records this provider's outcome, `Ready` decided from the other
    /// providers' conditions on it.
    pub fn record_of<'o, K: Mirrored>(
        &self,
        object: &'o K,
        kind: SyncedObject,
        mirrors: impl Fn(ProviderName) -> bool,
    ) -> Record<'o> {
        let marks = SyncMarks::read(object.meta(), object.conditions(), kind);
        Record {
            kind,
            existing: object.conditions(),
            generation: object.meta().generation,
            others: super::ready::others(self.provider, self.configured, marks, mirrors),
        }
    }

    /// Rewrites `Ready` (and this provider's own condition, as it stands) when the object as
    /// read still disagrees with its providers' conditions ([`super::ready`]): no provider call.
    pub async fn repair_ready<K: Mirrored>(
        &self,
        api: &Api<K>,
        name: &str,
        kind: SyncedObject,
        mirrors: impl Fn(ProviderName) -> bool + Copy,
    ) -> Result<(), kube::Error> {
        let Some(object) = kubeapi::get(api, name).await? else {
            return Ok(());
        };
        let marks = SyncMarks::read(object.meta(), object.conditions(), kind);
        if !super::ready::needs_repair(self.provider, self.configured, marks, mirrors) {
            return Ok(());
        }
        let record = self.record_of(&object, kind, mirrors);
        let outcome = Outcome {
            id: object.provider_id(self.provider),
            failure: None,
            left_out: None,
        };
        self.record(api, name, &record, &outcome).await
    }

    /// Records a failed sync on the object, best effort (the reconcile's error is what retries),
    /// and hands the error back.
    pub async fn report_failure<K, E>(
        &self,
        api: &Api<K>,
        name: &str,
        record: &Record<'_>,
        id: Option<&str>,
        error: E,
    ) -> crate::controllers::Error
    where
        K: Resource<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        E: ProviderFailure + Into<crate::controllers::Error>,
    {
        if let Err(write) = self
            .record(api, name, record, &Outcome::failed(id, &error))
            .await
        {
            tracing::warn!(error = %write, object = name, "cannot record the sync failure");
        }
        error.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::resend::ResendError;
    use ProviderName::{Loops, Resend};

    fn now() -> jiff::Timestamp {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    fn writer(provider: ProviderName, schemas: &InstalledSchemas) -> Writer<'_> {
        Writer {
            provider,
            configured: &[Resend, Loops],
            schemas,
        }
    }

    fn record(others: Vec<(ProviderName, bool)>) -> Record<'static> {
        Record {
            kind: SyncedObject::Contact,
            existing: &[],
            generation: Some(3),
            others,
        }
    }

    #[test]
    fn synced_status_names_only_this_provider() {
        let schemas = InstalledSchemas::unchecked();
        let status =
            writer(Resend, &schemas).body(&record(vec![]), &Outcome::synced("re_1"), now());
        assert_eq!(
            status["providers"],
            json!([{"name": "Resend", "id": "re_1"}])
        );
        assert_eq!(status["providerID"], "re_1");
        assert_eq!(status["conditions"][0]["type"], "ResendContactReady");
        assert_eq!(status["conditions"][0]["observedGeneration"], 3);
        assert_eq!(status["conditions"][1]["reason"], "CreateSuccessful");
        assert_eq!(status["conditions"][1]["message"], "mirrored to Resend");
    }

    #[test]
    fn loops_writes_its_own_entry_and_never_the_deprecated_id() {
        let schemas = InstalledSchemas::unchecked();
        let status = writer(Loops, &schemas).body(
            &record(vec![(Resend, true)]),
            &Outcome::synced("user-uid"),
            now(),
        );
        assert_eq!(
            status["providers"],
            json!([{"name": "Loops", "id": "user-uid"}])
        );
        assert!(status.get("providerID").is_none());
        assert_eq!(status["conditions"][0]["type"], "LoopsContactReady");
        assert_eq!(status["conditions"][1]["status"], "True");
        assert_eq!(
            status["conditions"][1]["message"],
            "mirrored to Loops and Resend"
        );
    }

    #[test]
    fn ready_waits_for_every_provider_that_mirrors_the_object() {
        let schemas = InstalledSchemas::unchecked();
        let status = writer(Loops, &schemas).body(
            &record(vec![(Resend, false)]),
            &Outcome::synced("u"),
            now(),
        );
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["conditions"][1]["status"], "False");
        assert_eq!(status["conditions"][1]["reason"], "ProviderPending");
        assert_eq!(
            status["conditions"][1]["message"],
            "not yet mirrored to Resend"
        );
    }

    #[test]
    fn a_left_out_group_says_why_and_ready_follows_the_others() {
        let schemas = InstalledSchemas::unchecked();
        let mut r = record(vec![(Resend, true)]);
        r.kind = SyncedObject::Group;
        let outcome = Outcome {
            id: None,
            failure: None,
            left_out: Some(("NotInLoops", "spec.providers names no Loops list")),
        };
        let status = writer(Loops, &schemas).body(&r, &outcome, now());
        assert_eq!(status["conditions"][0]["type"], "LoopsContactGroupReady");
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(status["conditions"][0]["reason"], "NotInLoops");
        assert_eq!(status["conditions"][1]["status"], "True");
        assert_eq!(status["conditions"][1]["message"], "mirrored to Resend");
        assert!(status.get("providers").is_none());
    }

    #[test]
    fn failed_status_keeps_the_known_id() {
        let schemas = InstalledSchemas::unchecked();
        let error = ResendError::Transient {
            message: "503 service_unavailable".into(),
        };
        let w = writer(Resend, &schemas);
        let status = w.body(&record(vec![]), &Outcome::failed(None, &error), now());
        assert!(status.get("providers").is_none());
        let status = w.body(
            &record(vec![]),
            &Outcome::failed(Some("re_1"), &error),
            now(),
        );
        assert_eq!(status["providers"][0]["id"], "re_1");
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(status["conditions"][0]["reason"], error.reason());
        assert_eq!(status["conditions"][1]["status"], "False");
    }
}
