//! The few API calls controllers make, with the outcomes they care about made explicit: a create
//! that finds the object already there, a delete of something already gone, a webhook denial and
//! its causes. Every write names the same field manager so `managedFields` says who wrote what.

use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::schemas::{InstalledSchemas, StatusWrite};

/// Field manager of every write the controllers make.
pub const FIELD_MANAGER: &str = "milo-webhook";

/// What a create found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    /// The object was created now.
    New,
    /// An object of that name already existed: a retry, a restart or another leader got there
    /// first. Callers treat it as done.
    AlreadyExisted,
}

/// Creates `object`, treating AlreadyExists as success.
pub async fn create<K>(api: &Api<K>, object: &K) -> Result<Created, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, object).await {
        Ok(_) => Ok(Created::New),
        Err(kube::Error::Api(status)) if status.is_already_exists() => Ok(Created::AlreadyExisted),
        Err(error) => Err(error),
    }
}

/// Deletes `name`; returns whether it was still there. Deleting what is already gone is success,
/// so cleanup never fails on a race with someone else's delete.
pub async fn delete<K>(api: &Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(error) => Err(error),
    }
}

/// Deletes `name` only if it is still the object that was read (same uid and resourceVersion):
/// for deletes decided on what the object said, so one replaced or changed since is kept (409
/// Conflict). Returns whether it was still there; already gone is success.
pub async fn delete_unchanged<K>(
    api: &Api<K>,
    name: &str,
    uid: Option<String>,
    resource_version: Option<String>,
) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid,
            resource_version,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        Err(error) => Err(error),
    }
}

/// Reads `name` from the API server (not the view): for decisions that destroy something, such
/// as deleting a membership because its contact is gone, a lagging cache must not be trusted.
pub async fn get<K>(api: &Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await
}

/// JSON-merge-patches the object. Callers send only the fields they own; a merge patch of a
/// map leaves every other key alone.
pub async fn merge_patch<K>(api: &Api<K>, name: &str, patch: &Value) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(patch),
    )
    .await
    .map(|_| ())
}

/// Removes `finalizer` from `name`, if it is there, under the resourceVersion read: other
/// writers' finalizers are kept and a conflict is retried at once. A merge patch never creates
/// an object, where a server-side apply to an object deleted meanwhile would try to create it
/// again (and fail on its required fields, or succeed for a kind that has none); an object
/// already gone is success.
pub async fn release_finalizer<K>(
    api: &Api<K>,
    name: &str,
    finalizer: &str,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    // Other writers release theirs at the same moment (each provider its own, on the same
    // deletion): a conflict only means reading again, not failing the caller's work, which
    // would then be done twice.
    let mut attempts = 0;
    loop {
        let Some(object) = get(api, name).await? else {
            return Ok(());
        };
        let finalizers = object.meta().finalizers.as_deref().unwrap_or_default();
        if !finalizers.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let rest: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
        let patch = serde_json::json!({
            "metadata": {"finalizers": rest, "resourceVersion": object.meta().resource_version},
        });
        attempts += 1;
        match merge_patch(api, name, &patch).await {
            Err(kube::Error::Api(status)) if status.is_not_found() => return Ok(()),
            Err(error) if is_conflict(&error) && attempts < FINALIZER_ATTEMPTS => continue,
            other => return other,
        }
    }
}

/// How many times a finalizer's release reads again after a conflict before giving up.
const FINALIZER_ATTEMPTS: usize = 5;

/// Adds `finalizer` to `name` unless it is there, under the resourceVersion read: other writers'
/// finalizers are kept, and like [`release_finalizer`] it never creates an object (an apply to an
/// object deleted meanwhile would try to). False when the object is gone or being deleted, so
/// the caller does not go on to act for it.
pub async fn add_finalizer<K>(
    api: &Api<K>,
    name: &str,
    finalizer: &str,
) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(object) = get(api, name).await? else {
        return Ok(false);
    };
    let meta = object.meta();
    if meta.deletion_timestamp.is_some() {
        return Ok(false);
    }
    let finalizers = meta.finalizers.as_deref().unwrap_or_default();
    if finalizers.iter().any(|f| f == finalizer) {
        return Ok(true);
    }
    let mut all: Vec<&str> = finalizers.iter().map(String::as_str).collect();
    all.push(finalizer);
    let patch = serde_json::json!({
        "metadata": {"finalizers": all, "resourceVersion": meta.resource_version},
    });
    match merge_patch(api, name, &patch).await {
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(false),
        other => other.map(|()| true),
    }
}

/// JSON-merge-patches the status subresource, with the same rule: only the fields the caller owns.
pub async fn merge_patch_status<K>(
    api: &Api<K>,
    name: &str,
    patch: &Value,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(patch),
    )
    .await
    .map(|_| ())
}

/// [`apply_status_as`] of `conditions` alone. Every CRD of ours and of Milo's declares
/// conditions, so writers outside the controllers (the provider events listener, which has no
/// installed schemas to shape to) send them unchecked.
pub async fn apply_conditions_as<K>(
    api: &Api<K>,
    name: &str,
    conditions: Vec<Value>,
    manager: &str,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let status = serde_json::json!({ "conditions": conditions });
    apply_status_as(
        InstalledSchemas::unchecked_ref(),
        api,
        name,
        status,
        manager,
    )
    .await
}

/// The cause reasons (`FieldValueDuplicate`, `FieldValueForbidden`, …) of an admission denial,
/// when `error` is one; empty otherwise.
pub fn denial_causes(error: &kube::Error) -> Vec<&str> {
    match error {
        kube::Error::Api(status) if status.is_invalid() || status.is_forbidden() => status
            .details
            .iter()
            .flat_map(|d| d.causes.iter())
            .map(|c| c.reason.as_str())
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether `error` is an optimistic-concurrency conflict, which is retried at once rather than
/// backed off.
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_conflict())
}

/// Server-side-applies `status` to the status subresource. Conditions are a list-map keyed by
/// `type` in every CRD here, so apply merges our conditions entry by entry and leaves conditions
/// other writers own (a provider sync's `Ready`, say) untouched, which a merge patch of the whole
/// list would clobber.
pub async fn apply_status<K>(
    schemas: &InstalledSchemas,
    api: &Api<K>,
    name: &str,
    status: Value,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    apply_status_as(schemas, api, name, status, FIELD_MANAGER).await
}

/// [`apply_status`] under the field manager `manager`: each writer that applies status with its
/// own manager owns only what it sends, so one writer's apply never removes what another wrote.
/// The body is shaped to the installed CRD first (`schemas`): a field it does not declare is
/// left out rather than sent to be refused, and a kind with no status subresource is not written.
pub async fn apply_status_as<K>(
    schemas: &InstalledSchemas,
    api: &Api<K>,
    name: &str,
    status: Value,
    manager: &str,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let mut body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let atomic = schemas.atomic_status_lists(&K::kind(&()));
    if !atomic.is_empty() {
        // The installed CRD keeps these lists atomic (Milo's): the apply owns each whole, so it
        // carries every other writer's entries as read, and the read's resourceVersion, so a
        // write landing in between makes this one fail (409, retried) instead of erasing it.
        let Some(current) = get(api, name).await? else {
            return Ok(());
        };
        let current = serde_json::to_value(&current).unwrap_or_default();
        for field in atomic {
            let key = if field == "conditions" {
                "type"
            } else {
                "name"
            };
            merge_list(&mut body["status"], &current["status"], field, key);
        }
        body["metadata"] = serde_json::json!({
            "resourceVersion": current["metadata"]["resourceVersion"],
        });
    }
    if schemas.prepare_status(&K::kind(&()), &mut body) == StatusWrite::Skip {
        return Ok(());
    }
    super::conditions::bound_messages(&mut body["status"]);
    let params = PatchParams::apply(manager).force();
    api.patch_status(name, &params, &Patch::Apply(&body))
        .await
        .map(|_| ())
}

/// Puts into `status[field]` every entry of `current[field]` whose `key` it does not name: what a
/// writer of an atomic list sends so that the others' entries stay.
fn merge_list(status: &mut Value, current: &Value, field: &str, key: &str) {
    let Some(theirs) = current[field].as_array() else {
        return;
    };
    if status.get(field).is_none() && theirs.is_empty() {
        return;
    }
    let mut ours = status[field].as_array().cloned().unwrap_or_default();
    let named: Vec<Value> = ours.iter().map(|e| e[key].clone()).collect();
    ours.extend(theirs.iter().filter(|e| !named.contains(&e[key])).cloned());
    status[field] = Value::Array(ours);
}
