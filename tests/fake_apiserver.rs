//! The benchmark's fake API server (benches/cluster/fake) as kube clients see it: pages,
//! selectors, watches, write semantics and leader election.

#[path = "../benches/cluster/fake/mod.rs"]
#[allow(dead_code, unused_imports)]
mod fake;

use std::time::Duration;

use fake::{Config, FakeApi};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use milo_webhook::api::notification::ContactSpec;
use milo_webhook::api::{Contact, ContactGroupMembership};
use serde_json::json;

async fn start() -> (FakeApi, Client) {
    let config = Config {
        write_latency: Duration::ZERO,
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    };
    let fake = FakeApi::start(config).await.unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&fake.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    (fake, Client::try_from(config).unwrap())
}

fn contact(name: &str) -> Contact {
    let mut c = Contact::new(
        name,
        ContactSpec {
            email: format!("{name}@example.com"),
            ..ContactSpec::default()
        },
    );
    c.metadata.labels = Some([("team".to_string(), name[..1].to_string())].into());
    c
}

#[tokio::test]
async fn creates_gets_pages_and_selects_like_an_api_server() {
    let (fake, client) = start().await;
    let api: Api<Contact> = Api::namespaced(client.clone(), "people");
    let pp = PostParams::default();
    for name in ["alice", "bob", "carol", "anna", "dave"] {
        api.create(&pp, &contact(name)).await.unwrap();
    }
    let alice = api.get("alice").await.unwrap();
    let meta = &alice.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    let managed = meta.managed_fields.as_ref().unwrap();
    assert!(managed[0].fields_v1.is_some());

    let exists = api.create(&pp, &contact("alice")).await.unwrap_err();
    assert!(
        matches!(&exists, kube::Error::Api(s) if s.is_already_exists()),
        "{exists:?}"
    );
    let missing = api.get("zoe").await.unwrap_err();
    assert!(
        matches!(&missing, kube::Error::Api(s) if s.is_not_found()),
        "{missing:?}"
    );
    assert!(api.get_opt("zoe").await.unwrap().is_none());

    let mut names = Vec::new();
    let mut params = ListParams::default().limit(2);
    for _ in 0..5 {
        let page = api.list(&params).await.unwrap();
        names.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(names, ["alice", "anna", "bob", "carol", "dave"]);
    let all: Api<Contact> = Api::all(client.clone());
    let a_team = all
        .list(&ListParams::default().labels("team=a"))
        .await
        .unwrap();
    assert_eq!(a_team.items.len(), 2);
    let elsewhere: Api<Contact> = Api::namespaced(client.clone(), "elsewhere");
    assert!(
        elsewhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let bindings: Api<RoleBinding> = Api::namespaced(client, "org");
    for (name, labelled) in [("member", true), ("other", false)] {
        let mut b: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}
        }))
        .unwrap();
        if labelled {
            b.metadata.labels = Some(
                [(
                    "iam.miloapis.com/organization-membership".to_string(),
                    "true".to_string(),
                )]
                .into(),
            );
        }
        bindings.create(&pp, &b).await.unwrap();
    }
    let selected = bindings
        .list(&ListParams::default().labels("iam.miloapis.com/organization-membership"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 1);
    assert_eq!(fake.count("create", "contacts"), 5);
    assert_eq!(fake.count("create:409", "contacts"), 1);
    assert_eq!(fake.count("get:404", "contacts"), 2);
    assert_eq!(fake.count("list", "rolebindings"), 1);
}

#[tokio::test]
async fn patches_status_generation_and_deletes() {
    let (_fake, client) = start().await;
    let api: Api<ContactGroupMembership> = Api::namespaced(client, "people");
    let m: ContactGroupMembership = serde_json::from_value(json!({
        "apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroupMembership",
        "metadata": {"name": "m"},
        "spec": {"contactRef": {"name": "alice", "namespace": "people"},
            "contactGroupRef": {"name": "news", "namespace": "groups"}},
        "status": {"username": "ignored on create"}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &m).await.unwrap();
    assert!(created.status.is_none(), "status is dropped on create");
    let params = PatchParams::apply("milo-webhook");
    let patched = api
        .patch_status(
            "m",
            &params,
            &Patch::Merge(json!({"status": {"username": "alice"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.status.unwrap().username.as_deref(), Some("alice"));
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes keep the generation"
    );
    let rv = patched.metadata.resource_version.clone().unwrap();
    let same = api
        .patch_status(
            "m",
            &params,
            &Patch::Merge(json!({"status": {"username": "alice"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version.unwrap(),
        rv,
        "a no-op write changes nothing"
    );
    let apply = json!({"apiVersion": "notification.miloapis.com/v1alpha1",
        "kind": "ContactGroupMembership", "status": {"conditions": []}});
    api.patch_status("m", &params.clone().force(), &Patch::Apply(apply))
        .await
        .unwrap();
    let labelled = api
        .patch(
            "m",
            &params,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}, "status": {"username": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.labels()["a"], "b");
    assert_eq!(
        labelled.status.unwrap().username.as_deref(),
        Some("alice"),
        "main writes keep status"
    );
    let stale = json!({"metadata": {"resourceVersion": rv, "labels": {"a": "c"}}});
    let conflict = api
        .patch("m", &params, &Patch::Merge(stale))
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, kube::Error::Api(s) if s.is_conflict()),
        "{conflict:?}"
    );
    let managers: Vec<String> = labelled
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e.manager.clone().unwrap(),
                e.subresource.clone().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        managers.contains(&"milo-webhook/status".to_string()),
        "{managers:?}"
    );
    api.delete("m", &DeleteParams::default()).await.unwrap();
    let gone = api.delete("m", &DeleteParams::default()).await.unwrap_err();
    assert!(
        matches!(&gone, kube::Error::Api(s) if s.is_not_found()),
        "{gone:?}"
    );
}

#[tokio::test]
async fn watchers_see_every_change_after_their_list() {
    let (_fake, client) = start().await;
    let api: Api<Contact> = Api::namespaced(client.clone(), "people");
    api.create(&PostParams::default(), &contact("alice"))
        .await
        .unwrap();
    let all: Api<Contact> = Api::all(client);
    let mut events = watcher(all, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen = Vec::new();
    let writer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        api.create(&PostParams::default(), &contact("bob"))
            .await
            .unwrap();
        let patch = json!({"spec": {"givenName": "Bob"}});
        api.patch("bob", &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
        api.delete("alice", &DeleteParams::default()).await.unwrap();
    };
    let reader = async {
        while let Some(event) = events.try_next().await.unwrap() {
            let done = matches!(&event, watcher::Event::Delete(_));
            seen.push(match event {
                watcher::Event::Init => "init".to_string(),
                watcher::Event::InitApply(c) => format!("listed {}", c.name_any()),
                watcher::Event::InitDone => "synced".to_string(),
                watcher::Event::Apply(c) => {
                    format!("applied {} {:?}", c.name_any(), c.spec.given_name)
                }
                watcher::Event::Delete(c) => format!("deleted {}", c.name_any()),
            });
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("watch events within 10 s");
    assert_eq!(
        seen,
        [
            "init",
            "listed alice",
            "synced",
            "applied bob None",
            "applied bob Some(\"Bob\")",
            "deleted alice"
        ]
    );
}

#[tokio::test]
async fn the_elector_takes_over_an_expired_foreign_lease_and_releases_it() {
    use milo_webhook::controllers::leader::{self, LeaseSettings};
    let (_fake, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "milo-system");
    let now = fake::objects::now_micro();
    let foreign: Lease = serde_json::from_value(json!({
        "metadata": {"name": "lock"},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 1, "renewTime": now, "acquireTime": now}
    }))
    .unwrap();
    leases
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let settings = LeaseSettings {
        namespace: "milo-system".into(),
        name: "lock".into(),
        identity: "bench-1".into(),
        duration_seconds: 3,
        grace_seconds: 1,
    };
    let election = leader::campaign(client, &settings).await.unwrap();
    let mut leading = election.leadership.clone();
    tokio::time::timeout(Duration::from_secs(10), leading.wait_for(|l| *l))
        .await
        .expect("leading within 10 s")
        .unwrap();
    let lease = leases.get("lock").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("bench-1")
    );
    let metrics = std::sync::Arc::new(milo_webhook::metrics::Metrics::default());
    tokio::time::timeout(
        Duration::from_secs(10),
        leader::lead_until(election, metrics, Vec::new, async {}),
    )
    .await
    .expect("released within 10 s");
    let lease = leases.get("lock").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None, "released");
}

#[test]
fn label_selectors_take_every_form_the_api_server_does() {
    use fake::selector::Selector;
    let l: std::collections::BTreeMap<String, String> = [("app", "web"), ("tier", "front")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let yes = [
        "",
        "app=web",
        "app==web",
        "app",
        "!db",
        "tier in (front, back)",
        "app,tier!=back",
        "db notin (x)",
    ];
    for s in yes {
        assert!(Selector::parse(s).unwrap().matches(&l), "{s}");
    }
    let no = [
        "app=db",
        "db",
        "!app",
        "tier in (back)",
        "tier notin (front)",
        "app,db",
    ];
    for s in no {
        assert!(!Selector::parse(s).unwrap().matches(&l), "{s}");
    }
    assert!(Selector::parse("a in x").is_err());
}

#[test]
fn a_non_forced_apply_conflicts_only_on_fields_others_own_and_it_changes() {
    use fake::patch::apply_conflicts;
    let current = json!({
        "metadata": {"managedFields": [{"manager": "other", "fieldsV1": {"f:spec": {"f:holderIdentity": {}, "f:leaseDurationSeconds": {}}}}]},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15}
    });
    let same = json!({"spec": {"holderIdentity": "other", "leaseDurationSeconds": 15}});
    assert!(apply_conflicts(&current, &same, "me").is_empty());
    let take = json!({"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}});
    assert_eq!(
        apply_conflicts(&current, &take, "me"),
        ["spec.holderIdentity"]
    );
    assert!(apply_conflicts(&current, &take, "other").is_empty());
}

#[test]
fn merge_patches_remove_nulls_and_json_patches_apply() {
    use fake::patch::PatchKind;
    let mut target = json!({"spec": {"a": 1, "b": 2}});
    PatchKind::Merge
        .apply_to(&mut target, &json!({"spec": {"a": null, "c": 3}}))
        .unwrap();
    assert_eq!(target, json!({"spec": {"b": 2, "c": 3}}));
    let ops = json!([{"op": "add", "path": "/spec/d", "value": 4}]);
    PatchKind::Json.apply_to(&mut target, &ops).unwrap();
    assert_eq!(target["spec"]["d"], 4);
    let bad = json!([{"op": "test", "path": "/spec/d", "value": 5}]);
    assert_eq!(
        PatchKind::Json
            .apply_to(&mut target, &bad)
            .unwrap_err()
            .code,
        422
    );
}

#[test]
fn paths_name_resources_namespaces_names_and_status() {
    use fake::RESOURCES;
    use fake::handlers::parse_path;
    let t =
        parse_path("/apis/notification.miloapis.com/v1alpha1/namespaces/ns/contacts/alice/status")
            .unwrap();
    assert_eq!(RESOURCES[t.resource].plural, "contacts");
    assert_eq!(
        (
            t.namespace.as_deref(),
            t.name.as_deref(),
            t.subresource.as_deref()
        ),
        (Some("ns"), Some("alice"), Some("status"))
    );
    let t = parse_path("/apis/iam.miloapis.com/v1alpha1/users").unwrap();
    assert_eq!(
        (RESOURCES[t.resource].kind, t.namespace, t.name),
        ("User", None, None)
    );
    let t = parse_path("/api/v1/namespaces/default").unwrap();
    assert_eq!(
        (RESOURCES[t.resource].kind, t.name.as_deref()),
        ("Namespace", Some("default"))
    );
    assert!(parse_path("/apis/iam.miloapis.com/v1alpha1/namespaces/ns/users").is_none());
    assert!(parse_path("/apis/example.com/v1/widgets").is_none());
    assert!(parse_path("/version").is_none());
}

#[test]
fn queries_are_percent_decoded() {
    let q = fake::handlers::parse_query(
        "labelSelector=iam.miloapis.com%2Forganization-membership&limit=500&continue=",
    );
    assert_eq!(
        q["labelSelector"],
        "iam.miloapis.com/organization-membership"
    );
    assert_eq!(q["limit"], "500");
    assert_eq!(q["continue"], "");
}
