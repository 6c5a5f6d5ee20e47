//! Objects as JSON, through `Api<DynamicObject>`: the tests create and read what kubectl would,
//! without depending on the crate's typed structs (whose fields are what is under test).

use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::Value;

/// A kind the tests touch: (apiVersion, kind, plural, namespaced).
const KINDS: &[(&str, &str, &str, bool)] = &[
    (
        "notification.miloapis.com/v1alpha1",
        "Contact",
        "contacts",
        true,
    ),
    (
        "notification.miloapis.com/v1alpha1",
        "ContactGroup",
        "contactgroups",
        true,
    ),
    (
        "notification.miloapis.com/v1alpha1",
        "ContactGroupMembership",
        "contactgroupmemberships",
        true,
    ),
    (
        "notification.miloapis.com/v1alpha1",
        "ContactGroupMembershipRemoval",
        "contactgroupmembershipremovals",
        true,
    ),
    (
        "notification.miloapis.com/v1alpha1",
        "ContactGroupEnrollmentPolicy",
        "contactgroupenrollmentpolicies",
        false,
    ),
    (
        "notification.miloapis.com/v1alpha1",
        "Email",
        "emails",
        true,
    ),
    (
        "notification.miloapis.com/v1alpha1",
        "EmailTemplate",
        "emailtemplates",
        false,
    ),
    (
        "notification.miloapis.com/v1alpha1",
        "EmailBroadcast",
        "emailbroadcasts",
        true,
    ),
    ("iam.miloapis.com/v1alpha1", "User", "users", false),
    (
        "iam.miloapis.com/v1alpha1",
        "UserInvitation",
        "userinvitations",
        true,
    ),
    ("v1", "Namespace", "namespaces", false),
    ("coordination.k8s.io/v1", "Lease", "leases", true),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    ("rbac.authorization.k8s.io/v1", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
    ),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    ),
];

fn resource(kind: &str) -> (ApiResource, bool) {
    let &(api_version, kind, plural, namespaced) = KINDS
        .iter()
        .find(|k| k.1 == kind)
        .unwrap_or_else(|| panic!("envtest: unknown kind {kind}"));
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    (ApiResource::from_gvk_with_plural(&gvk, plural), namespaced)
}

/// The API of `kind`, in `namespace` when the kind is namespaced.
pub fn api(client: &kube::Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let (ar, namespaced) = resource(kind);
    match (namespaced, namespace) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        (true, None) => Api::all_with(client.clone(), &ar),
        (false, _) => Api::all_with(client.clone(), &ar),
    }
}

fn api_for(client: &kube::Client, object: &Value) -> Api<DynamicObject> {
    let kind = object["kind"].as_str().expect("object has a kind");
    api(client, kind, object["metadata"]["namespace"].as_str())
}

/// Creates `object` as kubectl create would: the API server's answer (an admission denial is
/// an `Err(kube::Error::Api)`).
pub async fn try_create(client: &kube::Client, object: &Value) -> Result<Value, kube::Error> {
    create_with(client, object, false).await
}

async fn create_with(
    client: &kube::Client,
    object: &Value,
    dry_run: bool,
) -> Result<Value, kube::Error> {
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).expect("a valid object");
    let params = PostParams {
        dry_run,
        ..Default::default()
    };
    let created = api_for(client, object).create(&params, &dynamic).await?;
    Ok(serde_json::to_value(created).expect("serialize"))
}

/// True for a webhook denial whose every cause is a missing referent.
fn only_not_found(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            status.code == 422
                && status.details.as_ref().is_some_and(|d| {
                    !d.causes.is_empty()
                        && d.causes.iter().all(|c| c.reason == "FieldValueNotFound")
                })
        }
        _ => false,
    }
}

/// Creates `object`, panicking with the API server's answer if refused. The webhooks decide
/// from a watch-fed view, which trails the API server by a few milliseconds: a referent created
/// just before may not be in it yet, so a denial naming only missing referents is retried for
/// a few seconds (kubectl users retry the same way).
pub async fn create(client: &kube::Client, object: &Value) -> Value {
    let started = std::time::Instant::now();
    loop {
        match try_create(client, object).await {
            Ok(created) => return created,
            Err(e) if only_not_found(&e) && started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "create {} {}: {e}",
                object["kind"], object["metadata"]["name"]
            ),
        }
    }
}

/// The refusal of creating `object`, once the webhooks' view has caught up with what the test
/// created before: dry-run creates (which go through admission, and store nothing) are tried
/// until one is refused, then the real create must be refused too, and its answer is returned.
/// Panics if `object` is still admitted after 10 s.
pub async fn refused_create(client: &kube::Client, object: &Value) -> kube::core::Status {
    let started = std::time::Instant::now();
    while create_with(client, object, true).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} {} is still admitted after 10 s",
            object["kind"],
            object["metadata"]["name"]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match try_create(client, object).await {
        Err(kube::Error::Api(status)) => *status,
        Err(other) => panic!("expected an API refusal, got {other}"),
        Ok(created) => panic!("admitted after a refused dry run: {created}"),
    }
}

/// The object, or `None` when the API server has none.
pub async fn get(
    client: &kube::Client,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    api(client, kind, namespace)
        .get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get {kind} {name}: {e}"))
        .map(|o| serde_json::to_value(o).expect("serialize"))
}

/// Every object of `kind` (in `namespace`, or everywhere).
pub async fn list(client: &kube::Client, kind: &str, namespace: Option<&str>) -> Vec<Value> {
    api(client, kind, namespace)
        .list(&Default::default())
        .await
        .unwrap_or_else(|e| panic!("list {kind}: {e}"))
        .items
        .into_iter()
        .map(|o| serde_json::to_value(o).expect("serialize"))
        .collect()
}

/// Deletes the object (foreground deletion is not asked for: owners' finalizers decide).
pub async fn delete(client: &kube::Client, kind: &str, namespace: Option<&str>, name: &str) {
    api(client, kind, namespace)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete {kind} {name}: {e}"));
}

/// Merge-patches the object (`subresource` `status` for its status).
pub async fn merge_patch(
    client: &kube::Client,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    patch: &Value,
) -> Result<Value, kube::Error> {
    let patched = api(client, kind, namespace)
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await?;
    Ok(serde_json::to_value(patched).expect("serialize"))
}

/// Polls `check` until it returns `Some`, for at most `timeout`; panics naming `what` and the
/// last value seen otherwise.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let started = std::time::Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        match check().await {
            Ok(value) => return value,
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
}

/// True when `object` has a condition `type_` with status `True` for its current generation.
pub fn condition_true(object: &Value, type_: &str) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == type_
                && c["status"] == "True"
                && (c["observedGeneration"].is_null()
                    || c["observedGeneration"] == object["metadata"]["generation"])
        })
    })
}

/// A request made as another user (`Impersonate-User`, and `Impersonate-Uid`, the name of their
/// User, which the webhooks read as the requester): the test's admin may impersonate anyone,
/// and RBAC then decides as for that user. `body` is a JSON merge patch for `PATCH`, the object
/// for `POST`.
pub async fn as_user(
    client: &kube::Client,
    user: &str,
    method: http::Method,
    path: &str,
    body: &Value,
) -> Result<Value, kube::Error> {
    let content_type = if method == http::Method::PATCH {
        "application/merge-patch+json"
    } else {
        "application/json"
    };
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .header("impersonate-user", user)
        .header("impersonate-uid", user)
        .body(serde_json::to_vec(body).expect("serialize"))
        .expect("a request");
    client.request::<Value>(request).await
}
