//! The installed CRDs, as the controllers' writes meet them.
//!
//! A cluster may run older CRDs than ours, or Milo's own (which lack fields our controllers
//! write). A server-side apply that names an undeclared field is refused whole, so a controller
//! that does not know retries that write for ever. The leader reads the installed CRDs (read-only,
//! by name) before the controllers start and again every resync: each field ours declares that
//! the cluster's lacks is logged once, with the fix, and exported as
//! `milo_webhook_crd_missing_fields`; status writes then leave such fields out (and skip a kind
//! with no status subresource), and a feature that cannot keep its guarantee without a field asks
//! [`InstalledSchemas::missing`] and stays off.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;

use crate::api::VERSION;
use crate::api::fields::VersionSchema;
use crate::metrics::CrdFieldLabels;

/// What to tell an operator whose CRDs fall short.
pub const FIX: &str = "kubectl apply -k manifests/crds";

/// What a status write does on this cluster.
#[derive(Debug, PartialEq, Eq)]
pub enum StatusWrite {
    /// Send it (fields the CRD does not declare were taken out).
    Send,
    /// Do not: the kind has no status subresource here.
    Skip,
}

/// The installed schema of each kind the controllers write, once read.
pub struct InstalledSchemas {
    /// Kind -> installed schema; a kind absent here was not read (not installed, or the read
    /// failed), and its writes go out as they are.
    installed: RwLock<HashMap<String, VersionSchema>>,
    /// Whether the first read finished (controllers wait for it).
    ready: tokio::sync::watch::Sender<bool>,
    /// (kind, field) pairs already logged, so each is said once per process.
    logged: Mutex<BTreeSet<(String, String)>>,
}

impl Default for InstalledSchemas {
    fn default() -> Self {
        Self::unchecked()
    }
}

impl InstalledSchemas {
    /// Nothing read and nothing to wait for: every write goes out as it is (offline mode, and
    /// tests that do not model CRDs).
    pub fn unchecked() -> Self {
        Self {
            installed: RwLock::default(),
            ready: tokio::sync::watch::Sender::new(true),
            logged: Mutex::default(),
        }
    }

    /// The shared [`unchecked`](Self::unchecked) instance, for writers outside the controllers
    /// (the provider events listener) that only write fields every CRD declares.
    pub fn unchecked_ref() -> &'static Self {
        static UNCHECKED: std::sync::LazyLock<InstalledSchemas> =
            std::sync::LazyLock::new(InstalledSchemas::unchecked);
        &UNCHECKED
    }

    /// Nothing read yet, and the controllers wait for the first [`check`](Self::check).
    pub fn pending() -> Self {
        let schemas = Self::unchecked();
        schemas.ready.send_replace(false);
        schemas
    }

    /// Waits until the first check has finished (at once for [`unchecked`](Self::unchecked)).
    pub async fn ready(&self) {
        let mut ready = self.ready.subscribe();
        let _ = ready.wait_for(|done| *done).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, VersionSchema>> {
        self.installed.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Prepares a status write of `kind`: takes out of `body` (an apply body with `status`) every
    /// field the installed CRD does not declare, or says to skip it when the kind has no status
    /// subresource there.
    pub fn prepare_status(&self, kind: &str, body: &mut Value) -> StatusWrite {
        let installed = self.read();
        let Some(schema) = installed.get(kind) else {
            return StatusWrite::Send;
        };
        if !schema.status_subresource {
            return StatusWrite::Skip;
        }
        schema.prune(body);
        StatusWrite::Send
    }

    /// The lists of `kind`'s status (`conditions`, `providers`) that the installed CRD keeps
    /// atomic: Milo's CRDs declare no list type, so server-side apply gives each such list
    /// whole to its last writer, and a writer must send every entry (see
    /// [`super::kubeapi::apply_status_as`]). Empty when the CRD was not read or declares them
    /// as maps keyed by `type` and `name`, as ours do.
    pub fn atomic_status_lists(&self, kind: &str) -> Vec<&'static str> {
        let installed = self.read();
        let Some(schema) = installed.get(kind) else {
            return Vec::new();
        };
        let status = schema
            .schema
            .properties
            .as_ref()
            .and_then(|p| p.get("status"));
        ["conditions", "providers"]
            .into_iter()
            .filter(|field| {
                status
                    .and_then(|s| s.properties.as_ref())
                    .and_then(|p| p.get(*field))
                    .is_some_and(|list| list.x_kubernetes_list_type.as_deref() != Some("map"))
            })
            .collect()
    }

    /// Which of `fields` (paths such as `status.pendingBatch`) the installed CRD of `kind` does
    /// not declare; empty when it declares them all or was not read.
    pub fn missing(&self, kind: &str, fields: &[&str]) -> Vec<String> {
        let installed = self.read();
        let Some(schema) = installed.get(kind) else {
            return Vec::new();
        };
        fields
            .iter()
            .filter(|path| !declares(schema, path))
            .map(|path| (*path).to_owned())
            .collect()
    }

    /// Reads the installed CRD of every kind in `ours` and [`compare`](Self::compare)s it.
    pub async fn check(
        &self,
        client: &kube::Client,
        ours: &[CustomResourceDefinition],
        gauge: &Family<CrdFieldLabels, Gauge>,
    ) {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut read = Vec::new();
        for crd in ours {
            let name = crd.metadata.name.clone().unwrap_or_default();
            match api.get_opt(&name).await {
                Ok(theirs) => read.push((name, theirs)),
                Err(error) => {
                    tracing::warn!(crd = %name, %error, "cannot read the installed CRD; writes of its kind go out unchecked");
                }
            }
        }
        self.compare(ours, &read, gauge);
    }

    /// Compares the CRDs `read` from the cluster (by name; `None`: not installed) with `ours`:
    /// logs each field they lack once, sets the gauge, and from then on shapes status writes to
    /// them. A CRD not in `read` (its read failed) leaves its kind unchecked.
    pub fn compare(
        &self,
        ours: &[CustomResourceDefinition],
        read: &[(String, Option<CustomResourceDefinition>)],
        gauge: &Family<CrdFieldLabels, Gauge>,
    ) {
        let mut installed = HashMap::new();
        let mut missing_now = BTreeSet::new();
        let mut unread = Vec::new();
        for crd in ours {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let kind = crd.spec.names.kind.clone();
            let Some(our_schema) = VersionSchema::of(crd, VERSION) else {
                continue;
            };
            let Some((_, theirs)) = read.iter().find(|(n, _)| *n == name) else {
                unread.push(kind);
                continue;
            };
            let Some(theirs) = theirs else {
                self.say_once(&kind, "", || {
                    tracing::warn!(crd = %name, fix = FIX, "the CRD is not installed");
                });
                continue;
            };
            let Some(their_schema) = VersionSchema::of(theirs, VERSION) else {
                tracing::warn!(crd = %name, version = VERSION, "the installed CRD does not serve this version with a schema");
                continue;
            };
            let mut missing = our_schema.missing_from(&their_schema);
            if our_schema.status_subresource && !their_schema.status_subresource {
                missing.retain(|field| !field.starts_with("status"));
                missing.insert(0, "status".to_owned());
            }
            for field in &missing {
                missing_now.insert((kind.clone(), field.clone()));
                self.say_once(&kind, field, || {
                    let what = if field == "status" {
                        "the installed CRD has no status subresource: status is not recorded"
                    } else {
                        "the installed CRD does not declare a field the controllers write: it is left out of writes"
                    };
                    tracing::warn!(kind = %kind, field = %field, fix = FIX, "{what}");
                });
            }
            installed.insert(kind, their_schema.without_docs());
        }
        // A field declared since the last check (the operator applied the fix) reads 0 again.
        let said = self
            .logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (kind, field) in said.into_iter().filter(|(_, field)| !field.is_empty()) {
            let labels = CrdFieldLabels { kind, field };
            let now = missing_now.contains(&(labels.kind.clone(), labels.field.clone()));
            gauge.get_or_create(&labels).set(i64::from(now));
        }
        // A kind whose read failed this time keeps what the last check learnt of it.
        let mut current = self.installed.write().unwrap_or_else(|e| e.into_inner());
        current.retain(|kind, _| unread.contains(kind));
        current.extend(installed);
        drop(current);
        self.ready.send_replace(true);
    }

    fn say_once(&self, kind: &str, field: &str, say: impl FnOnce()) {
        let first = self
            .logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((kind.to_owned(), field.to_owned()));
        if first {
            say();
        }
    }
}

/// Whether `schema` declares the field at `path` (`status.pendingBatch`, `spec.items[].name`).
fn declares(schema: &VersionSchema, path: &str) -> bool {
    let mut probe = Value::Null;
    for segment in path.rsplit('.') {
        probe = match segment.strip_suffix("[]") {
            Some(name) => serde_json::json!({ name: [probe] }),
            None => serde_json::json!({ segment: probe }),
        };
    }
    schema.undeclared(&probe).is_empty()
}

/// Keeps `schemas` checked while the controllers run: once at start (they wait for it), then
/// every `every`, so an operator's fix is picked up without a restart.
pub async fn keep_checked(
    schemas: Arc<InstalledSchemas>,
    client: kube::Client,
    metrics: Arc<crate::metrics::Metrics>,
    every: std::time::Duration,
) {
    loop {
        // Ours are generated for each check rather than kept: a few hundred KiB of schema
        // (more while generating) that nothing needs between checks, given back at once.
        let ours = crate::crds::all();
        schemas
            .check(&client, &ours, &metrics.controllers.crd_missing_fields)
            .await;
        drop(ours);
        crate::view::release_freed_memory();
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn narrow(status_subresource: bool) -> VersionSchema {
        VersionSchema {
            schema: serde_json::from_value(json!({"type": "object", "properties": {
                "spec": {"type": "object"},
                "status": {"type": "object", "properties": {
                    "conditions": {"type": "array", "items": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}},
                    "providerID": {"type": "string"},
                }},
            }}))
            .unwrap(),
            status_subresource,
        }
    }

    #[test]
    fn a_status_write_leaves_out_what_the_cluster_does_not_declare() {
        let schemas = InstalledSchemas::unchecked();
        let mut body = json!({"apiVersion": "a/v1", "kind": "EmailBroadcast",
            "status": {"conditions": [{"type": "Ready"}], "pendingBatch": {"n": 1}, "providerID": "x"}});
        let unchanged = body.clone();
        assert_eq!(
            schemas.prepare_status("EmailBroadcast", &mut body),
            StatusWrite::Send
        );
        assert_eq!(body, unchanged, "a kind not read goes out as it is");
        schemas
            .installed
            .write()
            .unwrap()
            .insert("EmailBroadcast".into(), narrow(true));
        assert_eq!(
            schemas.prepare_status("EmailBroadcast", &mut body),
            StatusWrite::Send
        );
        assert_eq!(
            body["status"],
            json!({"conditions": [{"type": "Ready"}], "providerID": "x"})
        );
        assert_eq!(
            schemas.missing(
                "EmailBroadcast",
                &["status.pendingBatch", "status.providerID"]
            ),
            ["status.pendingBatch"]
        );
        assert!(schemas.missing("Contact", &["status.anything"]).is_empty());
    }

    #[test]
    fn a_kind_without_a_status_subresource_skips_status_writes() {
        let schemas = InstalledSchemas::unchecked();
        schemas
            .installed
            .write()
            .unwrap()
            .insert("ContactGroupEnrollmentPolicy".into(), narrow(false));
        let mut body = json!({"status": {"conditions": []}});
        assert_eq!(
            schemas.prepare_status("ContactGroupEnrollmentPolicy", &mut body),
            StatusWrite::Skip
        );
    }

    #[test]
    fn a_failed_read_keeps_what_the_last_check_learnt() {
        let schemas = InstalledSchemas::unchecked();
        let gauge = Family::default();
        let ours = crate::crds::all();
        let broadcast = |crd: &CustomResourceDefinition| crd.spec.names.kind == "EmailBroadcast";
        let mut narrow = ours.iter().find(|c| broadcast(c)).unwrap().clone();
        let status = narrow.spec.versions[0]
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"))
            .and_then(|s| s.properties.as_mut())
            .unwrap();
        status.remove("pendingBatch");
        let name = narrow.metadata.name.clone().unwrap();
        schemas.compare(&ours, &[(name, Some(narrow))], &gauge);
        let lacks = || schemas.missing("EmailBroadcast", &["status.pendingBatch"]);
        assert_eq!(lacks(), ["status.pendingBatch"]);
        // The next read fails: the kind stays as it was learnt, not unchecked.
        schemas.compare(&ours, &[], &gauge);
        assert_eq!(lacks(), ["status.pendingBatch"]);
    }

    #[tokio::test]
    async fn pending_schemas_hold_the_controllers_until_checked() {
        let schemas = Arc::new(InstalledSchemas::pending());
        let waiter = tokio::spawn({
            let schemas = schemas.clone();
            async move { schemas.ready().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        schemas.ready.send_replace(true);
        waiter.await.unwrap();
    }
}
