//! The in-process API servers hold writes to our CRDs' schemas the way a real kube-apiserver
//! does, so a controller that writes a field its CRD does not declare fails here as it would in a
//! cluster: server-side apply refuses the whole request (500, `field not declared in schema`),
//! create and merge patch prune the field silently, and an apply owns what it sent, so a field its
//! manager stops sending goes unless another manager applied it. Each scenario runs, through a
//! kube client, against each stateful double: `live_api`, `sim_api` and the cluster bench's fake.

mod support;

// The fake shares `support::schema` by path, so that file is in this crate twice.
#[path = "../benches/cluster/fake/mod.rs"]
#[allow(dead_code, unused_imports, clippy::duplicate_mod)]
mod fake;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, Resource};
use milo_webhook::api::ContactGroupMembership;
use milo_webhook::view::{ClusterView, Store};
use serde_json::{Value, json};
use support::live_api::LiveApi;
use support::sim_api::{self, SimState};

const NS: &str = "people";

/// What a double stores for a membership's name.
type Stored = Box<dyn Fn(&str) -> Option<Value> + Send>;

/// One double: a client it serves and a look at what it stores.
struct Double {
    client: Client,
    stored: Stored,
    /// Keeps the bench fake serving.
    _fake: Option<fake::FakeApi>,
}

fn live() -> Double {
    let live = LiveApi::new();
    let client = live.client();
    Double {
        client,
        stored: Box::new(move |name| {
            assert!(live.state.lock().unwrap().denied.is_empty(), "RBAC refused");
            live.get("contactgroupmemberships", NS, name)
        }),
        _fake: None,
    }
}

fn sim() -> Double {
    let state = Arc::new(Mutex::new(SimState::default()));
    let view = Arc::new(ClusterView::offline(Store::default()));
    let client = sim_api::client(state.clone(), view);
    Double {
        client,
        stored: Box::new(move |name| {
            let key = (NS.to_owned(), name.to_owned());
            state.lock().unwrap().memberships.get(&key).cloned()
        }),
        _fake: None,
    }
}

async fn bench_fake() -> Double {
    let config = fake::Config {
        write_latency: Duration::ZERO,
        ..fake::Config::default()
    };
    let fake = fake::FakeApi::start(config).await.unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&fake.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let shared = fake.shared();
    let memberships = fake::index("notification.miloapis.com", "contactgroupmemberships");
    Double {
        client: Client::try_from(config).unwrap(),
        stored: Box::new(move |name| {
            let object = shared.store.get(memberships, NS, name)?;
            let mut value = object.value();
            // What the scenarios compare is the object; ownership is checked by its effects.
            value["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields");
            Some(value)
        }),
        _fake: Some(fake),
    }
}

async fn doubles() -> Vec<(&'static str, Double)> {
    vec![
        ("live_api", live()),
        ("sim_api", sim()),
        ("bench fake", bench_fake().await),
    ]
}

fn memberships(client: &Client) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<ContactGroupMembership>(&());
    Api::namespaced_with(client.clone(), NS, &resource)
}

/// Creates membership `name` through the client; `extra` is merged into its body.
async fn create(client: &Client, name: &str, extra: Value) {
    let mut body = json!({
        "apiVersion": ContactGroupMembership::api_version(&()),
        "kind": ContactGroupMembership::kind(&()),
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "contactRef": {"name": format!("{name}-contact"), "namespace": NS},
            "contactGroupRef": {"name": "news", "namespace": NS},
        },
    });
    support::sim_api::merge(&mut body, &extra);
    let object: DynamicObject = serde_json::from_value(body).unwrap();
    memberships(client)
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {name}: {e}"));
}

fn condition(type_: &str) -> Value {
    json!({"type": type_, "status": "True", "reason": "Synced", "message": "",
        "lastTransitionTime": "2026-11-27T12:00:00Z"})
}

/// Provider entries in name order (where apply puts a new entry is not what is checked).
fn by_name(providers: &Value) -> Vec<Value> {
    let mut entries = providers.as_array().cloned().unwrap_or_default();
    entries.sort_by_key(|e| e["name"].as_str().unwrap_or_default().to_owned());
    entries
}

/// Server-side applies `status` to membership `name` as `manager` (forced, as our writers do).
async fn apply_status(
    client: &Client,
    name: &str,
    manager: &str,
    status: Value,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(manager).force();
    apply_status_with(client, name, &params, status).await
}

async fn apply_status_with(
    client: &Client,
    name: &str,
    params: &PatchParams,
    status: Value,
) -> Result<(), kube::Error> {
    let body = json!({
        "apiVersion": ContactGroupMembership::api_version(&()),
        "kind": ContactGroupMembership::kind(&()),
        "status": status,
    });
    memberships(client)
        .patch_status(name, params, &Patch::Apply(&body))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn apply_naming_an_undeclared_field_is_refused_and_nothing_is_stored() {
    for (double, api) in doubles().await {
        create(&api.client, "m", json!({})).await;
        apply_status(&api.client, "m", "a", json!({"username": "ada"}))
            .await
            .unwrap();
        let before = (api.stored)("m").unwrap();

        let sent = json!({"username": "bob", "syncedAt": "2026-11-27T12:00:00Z"});
        let error = apply_status(&api.client, "m", "a", sent).await.unwrap_err();
        let kube::Error::Api(status) = error else {
            panic!("{double}: not an API error: {error}");
        };
        assert_eq!(status.code, 500, "{double}");
        assert_eq!(status.reason, "InternalError", "{double}");
        assert_eq!(
            status.message,
            "failed to create typed patch object (notification.miloapis.com/v1alpha1, \
             Kind=ContactGroupMembership): .status.syncedAt: field not declared in schema",
            "{double}"
        );
        let after = (api.stored)("m").unwrap();
        assert_eq!(after, before, "{double}: a refused apply stored something");
        assert_eq!(after["status"]["username"], "ada", "{double}");
    }
}

#[tokio::test]
async fn create_and_merge_patch_prune_undeclared_fields() {
    for (double, api) in doubles().await {
        create(&api.client, "m", json!({"spec": {"priority": 3}})).await;
        let stored = (api.stored)("m").unwrap();
        assert!(
            stored["spec"].get("priority").is_none(),
            "{double}: create kept spec.priority: {stored}"
        );
        assert_eq!(
            stored["spec"]["contactGroupRef"]["name"], "news",
            "{double}"
        );

        let patch = json!({"status": {"username": "ada", "syncedAt": "now",
            "providers": [{"name": "Resend", "id": "re_1", "state": "sent"}]}});
        memberships(&api.client)
            .patch_status("m", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("{double}: merge patch: {e}"));
        let status = &(api.stored)("m").unwrap()["status"];
        assert_eq!(
            *status,
            json!({"username": "ada", "providers": [{"name": "Resend", "id": "re_1"}]}),
            "{double}"
        );
    }
}

#[tokio::test]
async fn a_field_its_manager_stops_applying_goes_unless_another_manager_applied_it() {
    for (double, api) in doubles().await {
        let (client, stored) = (&api.client, &api.stored);
        let status = |name| stored(name).unwrap()["status"].clone();
        create(client, "m", json!({})).await;
        let resend = |id: &str| json!({"name": "Resend", "id": id});
        let sent = json!({"conditions": [condition("Ready")], "providers": [resend("re_1")],
            "username": "ada"});
        apply_status(client, "m", "a", sent).await.unwrap();

        // `a` stops sending providers and username: both go; its condition stays.
        let sent = json!({"conditions": [condition("Ready")]});
        apply_status(client, "m", "a", sent).await.unwrap();
        assert_eq!(
            status("m"),
            json!({"conditions": [condition("Ready")]}),
            "{double}"
        );

        // Another manager's condition and provider entry outlive `a` dropping its own.
        let sent = json!({"conditions": [condition("Synced")], "providers": [resend("re_2")]});
        apply_status(client, "m", "b", sent).await.unwrap();
        let loops = json!({"name": "Loops", "id": "l_1"});
        let sent = json!({"providers": [loops.clone()]});
        apply_status(client, "m", "a", sent).await.unwrap();
        let now = status("m");
        assert_eq!(now["conditions"], json!([condition("Synced")]), "{double}");
        assert_eq!(
            by_name(&now["providers"]),
            [loops.clone(), resend("re_2")],
            "{double}"
        );

        // A field both applied stays while either still sends it.
        let sent = json!({"providers": [loops.clone(), resend("re_2")]});
        apply_status(client, "m", "a", sent).await.unwrap();
        apply_status(client, "m", "b", json!({})).await.unwrap();
        assert_eq!(
            by_name(&status("m")["providers"]),
            [loops, resend("re_2")],
            "{double}"
        );
        assert!(status("m").get("conditions").is_none(), "{double}");
    }
}

#[tokio::test]
async fn a_forced_apply_takes_over_the_fields_it_changes() {
    for (double, api) in doubles().await {
        let (client, stored) = (&api.client, &api.stored);
        create(client, "m", json!({})).await;
        let resend = json!({"name": "Resend", "id": "re_1"});
        let sent = json!({"username": "ada", "providers": [resend.clone()]});
        apply_status(client, "m", "a", sent.clone()).await.unwrap();
        apply_status(client, "m", "b", json!({"username": "bob"}))
            .await
            .unwrap();

        // `b` holds username now: `a` changing it back without force conflicts.
        let error = apply_status_with(client, "m", &PatchParams::apply("a"), sent)
            .await
            .unwrap_err();
        let kube::Error::Api(status) = error else {
            panic!("{double}: not an API error: {error}");
        };
        assert_eq!(
            (status.code, status.reason.as_str()),
            (409, "Conflict"),
            "{double}"
        );
        assert_eq!(
            stored("m").unwrap()["status"]["username"],
            "bob",
            "{double}"
        );

        // `a` lost username to `b`: when `b` stops sending it, it goes.
        apply_status(client, "m", "b", json!({})).await.unwrap();
        assert_eq!(
            stored("m").unwrap()["status"],
            json!({"providers": [resend]}),
            "{double}"
        );
    }
}

#[tokio::test]
async fn finalizers_are_a_set_each_manager_owns_its_own() {
    for (double, api) in doubles().await {
        let client = &api.client;
        create(client, "m", json!({})).await;
        let finalize = |finalizers: Value| {
            json!({
                "apiVersion": ContactGroupMembership::api_version(&()),
                "kind": ContactGroupMembership::kind(&()),
                "metadata": {"name": "m", "finalizers": finalizers},
            })
        };
        for (manager, finalizers) in [
            ("a", json!(["a/f"])),
            ("b", json!(["b/f"])),
            ("a", json!([])),
        ] {
            memberships(client)
                .patch(
                    "m",
                    &PatchParams::apply(manager).force(),
                    &Patch::Apply(&finalize(finalizers)),
                )
                .await
                .unwrap_or_else(|e| panic!("{double}: apply as {manager}: {e}"));
        }
        let stored = (api.stored)("m").unwrap();
        assert_eq!(stored["metadata"]["finalizers"], json!(["b/f"]), "{double}");
    }
}

/// The sync's finalizer is added without ever creating an object: an object deleted meanwhile
/// (a membership the removal controller just deleted) stays deleted, and another writer's
/// finalizer stays in place.
#[tokio::test]
async fn adding_a_finalizer_never_creates_and_keeps_the_others() {
    use milo_webhook::controllers::kubeapi;
    const OURS: &str = "notification.miloapis.com/resend";
    for (name, double) in doubles().await {
        let api: Api<ContactGroupMembership> = Api::namespaced(double.client.clone(), NS);
        let added = kubeapi::add_finalizer(&api, "gone", OURS).await;
        assert!(
            matches!(added, Ok(false)),
            "{name}: adding to a missing object says so: {added:?}"
        );
        assert!((double.stored)("gone").is_none(), "{name}: it was created");

        create(
            &double.client,
            "kept",
            json!({"metadata": {"finalizers": ["example.com/other"]}}),
        )
        .await;
        assert!(kubeapi::add_finalizer(&api, "kept", OURS).await.unwrap());
        assert!(kubeapi::add_finalizer(&api, "kept", OURS).await.unwrap());
        let stored = (double.stored)("kept").unwrap();
        assert_eq!(
            stored["metadata"]["finalizers"],
            json!(["example.com/other", OURS]),
            "{name}"
        );
    }
}
