//! A stateful API server for the provider-sync and email scenarios: it stores Contacts,
//! ContactGroups, memberships, removals, Emails, EmailTemplates and Users (the last two
//! cluster-scoped, under the namespace ""), serves the requests the sync makes (get, create, merge
//! patches, server-side apply, finalizers, deletion that waits for finalizers, unfiltered lists
//! of a namespace or of every namespace), checks each
//! request against `manifests/deploy/rbac.yaml`, and feeds every change to a [`ClusterView`] the
//! way the watchers do, so controllers run on it end to end.
//!
//! It is as strict as a real API server with our CRDs installed (see [`super::schema`]): an apply
//! naming a field the CRD does not declare is refused (500, nothing stored), creates and merge
//! patches lose such fields, and an apply owns what it sends: list-maps (`conditions`,
//! `providers`) and the finalizers set merge entry by entry, and a manager that stops sending a
//! field no other manager applied removes it. A kind with no CRD of ours is not served.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use milo_webhook::api::{
    Contact, ContactGroup, ContactGroupMembership, ContactGroupMembershipRemoval, Email,
    EmailBroadcast, User,
};
use milo_webhook::view::{ClusterView, Store, ViewChange, ViewKind};
use serde_json::{Value, json};

const NOTIFICATION: &str = "/apis/notification.miloapis.com/v1alpha1/";
const IAM: &str = "/apis/iam.miloapis.com/v1alpha1/";

/// (plural, namespace, name).
pub type ObjectId = (String, String, String);

/// What the server holds and what it was asked.
#[derive(Default)]
pub struct LiveState {
    pub objects: BTreeMap<ObjectId, Value>,
    /// Every request, as `METHOD path`.
    pub requests: Vec<String>,
    /// Requests RBAC refused (a test fails when any).
    pub denied: Vec<String>,
    /// Requests answered 500 once, instead of served: each entry is matched against
    /// `METHOD path` and removed when it fires (a crash or a lost write, injected).
    pub fail_once: Vec<String>,
    /// What each field manager last applied, per object.
    pub owners: BTreeMap<ObjectId, Owners>,
    /// Status writes are stored but not fed to the view: a watch that lags behind them.
    pub lag_status: bool,
    version: u64,
}

/// The server and the view it feeds.
#[derive(Clone)]
pub struct LiveApi {
    pub state: Arc<Mutex<LiveState>>,
    pub view: Arc<ClusterView>,
}

fn failure(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
            "code": code, "reason": reason, "message": message}),
    )
}

use super::schema::{self, Owners};
use super::sim_api::merge;

/// How a PATCH writes.
struct Write<'a> {
    /// To `/status`.
    status: bool,
    /// Server-side apply (else a merge patch).
    apply: bool,
    /// The `fieldManager` query parameter.
    manager: &'a str,
    /// An apply takes over what it changes that other managers applied (else: 409).
    force: bool,
}

fn kind_of(plural: &str) -> Option<ViewKind> {
    Some(match plural {
        "contacts" => ViewKind::Contact,
        "contactgroups" => ViewKind::ContactGroup,
        "contactgroupmemberships" => ViewKind::Membership,
        "contactgroupmembershipremovals" => ViewKind::Removal,
        "emails" => ViewKind::Email,
        "users" => ViewKind::User,
        "emailbroadcasts" => ViewKind::EmailBroadcast,
        _ => return None,
    })
}

fn feed(store: &mut Store, plural: &str, object: &Value) {
    let object = object.clone();
    match plural {
        "contacts" => store.apply_contact(&serde_json::from_value::<Contact>(object).unwrap()),
        "contactgroups" => {
            store.apply_group(&serde_json::from_value::<ContactGroup>(object).unwrap())
        }
        "contactgroupmemberships" => store
            .apply_membership(&serde_json::from_value::<ContactGroupMembership>(object).unwrap()),
        "contactgroupmembershipremovals" => store.apply_removal(
            &serde_json::from_value::<ContactGroupMembershipRemoval>(object).unwrap(),
        ),
        "emails" => store.apply_email(&serde_json::from_value::<Email>(object).unwrap()),
        "users" => store.apply_user(&serde_json::from_value::<User>(object).unwrap()),
        "emailbroadcasts" => {
            store.apply_broadcast(&serde_json::from_value::<EmailBroadcast>(object).unwrap())
        }
        _ => {}
    }
}

/// A `notification.miloapis.com/v1alpha1` object of `kind` at `ns/name` with `spec`, as the
/// scenarios create them.
pub fn notification_object(kind: &str, ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": kind,
        "metadata": {"namespace": ns, "name": name}, "spec": spec})
}

impl LiveApi {
    /// An empty server and a view with the controllers' fields, synced.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            view: Arc::new(ClusterView::offline(Store::default())),
        }
    }

    /// The controllers' context on this server and its view, with `settings`.
    pub fn context(
        &self,
        settings: milo_webhook::controllers::ControllerSettings,
    ) -> milo_webhook::controllers::Context {
        milo_webhook::controllers::Context::new(
            self.client(),
            self.view.clone(),
            std::sync::Arc::new(milo_webhook::metrics::Metrics::default()),
            settings,
            None,
        )
    }

    /// A kube client served by this server.
    pub fn client(&self) -> Client {
        let live = self.clone();
        super::mock_api::answering(move |parts, body| {
            let path = parts.uri.path().to_owned();
            let query = parts.uri.query().unwrap_or_default().to_owned();
            let apply = parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(schema::is_apply);
            live.handle(parts.method.as_str(), &path, &query, apply, body)
        })
    }

    fn stamp(state: &mut LiveState, object: &mut Value) {
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
    }

    /// Stores `object` as a user's create would (uid, generation 1, creation time), and feeds
    /// the view.
    pub fn create(&self, plural: &str, mut object: Value) {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"].as_str().unwrap().to_owned();
        if let Some(crd) = schema::by_plural(plural) {
            crd.prune(&mut object);
        }
        let mut state = self.state.lock().unwrap();
        state
            .owners
            .remove(&(plural.into(), ns.clone(), name.clone()));
        object["metadata"]["uid"] = json!(format!("uid-{}-{}", state.version + 1, name));
        object["metadata"]["generation"] = json!(1);
        object["metadata"]["creationTimestamp"] = json!("2026-11-27T12:00:00Z");
        Self::stamp(&mut state, &mut object);
        state
            .objects
            .insert((plural.into(), ns.clone(), name.clone()), object.clone());
        drop(state);
        self.changed(plural, &ns, &name, Some(&object));
    }

    /// Changes an object's spec as a user's update would (the generation moves).
    pub fn update_spec(&self, plural: &str, ns: &str, name: &str, spec: Value) {
        let mut state = self.state.lock().unwrap();
        let id = (plural.to_owned(), ns.to_owned(), name.to_owned());
        let mut object = state.objects.get(&id).cloned().expect("object exists");
        merge(&mut object["spec"], &spec);
        if let Some(crd) = schema::by_plural(plural) {
            crd.prune(&mut object);
        }
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = json!(generation);
        Self::stamp(&mut state, &mut object);
        state.objects.insert(id, object.clone());
        drop(state);
        self.changed(plural, ns, name, Some(&object));
    }

    /// Deletes as a user would: at once without finalizers, else marked and kept until they go.
    pub fn delete(&self, plural: &str, ns: &str, name: &str) {
        let (code, _) = self.remove(plural, ns, name);
        assert!(code < 300, "delete {plural} {ns}/{name}: {code}");
    }

    /// The stored object.
    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let id = (plural.to_owned(), ns.to_owned(), name.to_owned());
        self.state.lock().unwrap().objects.get(&id).cloned()
    }

    /// Every stored object of `plural`.
    pub fn all(&self, plural: &str) -> Vec<Value> {
        let state = self.state.lock().unwrap();
        state
            .objects
            .iter()
            .filter(|((p, _, _), _)| p == plural)
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn changed(&self, plural: &str, ns: &str, name: &str, object: Option<&Value>) {
        let Some(kind) = kind_of(plural) else {
            return;
        };
        {
            let mut store = self.view.write();
            match object {
                Some(object) => feed(&mut store, plural, object),
                None => store.delete(kind, ns, name),
            }
        }
        self.view.announce(match object {
            Some(_) => ViewChange::Applied(kind, ns.into(), name.into()),
            None => ViewChange::Deleted(kind, ns.into(), name.into()),
        });
    }

    fn remove(&self, plural: &str, ns: &str, name: &str) -> (u16, Value) {
        let id = (plural.to_owned(), ns.to_owned(), name.to_owned());
        let mut state = self.state.lock().unwrap();
        let Some(mut object) = state.objects.get(&id).cloned() else {
            return failure(404, "NotFound", "not found");
        };
        let finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            if object["metadata"]["deletionTimestamp"].is_null() {
                object["metadata"]["deletionTimestamp"] = json!("2026-11-27T12:30:00Z");
                Self::stamp(&mut state, &mut object);
                state.objects.insert(id, object.clone());
                drop(state);
                self.changed(plural, ns, name, Some(&object));
            }
            return (200, object);
        }
        state.objects.remove(&id);
        state.owners.remove(&id);
        drop(state);
        self.changed(plural, ns, name, None);
        (
            200,
            json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}),
        )
    }

    fn handle(
        &self,
        method: &str,
        path: &str,
        query: &str,
        apply: bool,
        body: Value,
    ) -> (u16, Value) {
        {
            let mut state = self.state.lock().unwrap();
            state.requests.push(format!("{method} {path}"));
            if let Some(why) = super::rbac::denied(method, path, query) {
                state.denied.push(why.clone());
                return failure(403, "Forbidden", &why);
            }
            let request = format!("{method} {path}");
            if let Some(i) = state
                .fail_once
                .iter()
                .position(|f| request.contains(f.as_str()))
            {
                state.fail_once.remove(i);
                return failure(500, "InternalError", "injected failure");
            }
        }
        if path.starts_with("/apis/events.k8s.io/") || path.contains("/events") {
            return (201, body);
        }
        let Some(rest) = path
            .strip_prefix(NOTIFICATION)
            .or_else(|| path.strip_prefix(IAM))
        else {
            return failure(404, "NotFound", "unknown path");
        };
        // Namespaced: namespaces/<ns>/<plural>[/<name>[/<sub>]]; cluster: <plural>[/<name>...].
        let (ns, rest) = match rest.strip_prefix("namespaces/") {
            Some(rest) => match rest.split_once('/') {
                Some((ns, rest)) => (ns.to_owned(), rest),
                None => return failure(404, "NotFound", "unknown path"),
            },
            None => (String::new(), rest),
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let plural = parts[0].to_owned();
        if schema::by_plural(&plural).is_none() {
            return failure(404, "NotFound", "no CRD serves this resource");
        }
        let name = parts.get(1).map(|n| (*n).to_owned());
        let subresource = parts.get(2).copied();
        match (method, name) {
            ("POST", None) => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if self.get(&plural, &ns, &name).is_some() {
                    return failure(409, "AlreadyExists", "already exists");
                }
                let mut object = body;
                if !ns.is_empty() {
                    object["metadata"]["namespace"] = json!(ns);
                }
                self.create(&plural, object);
                (201, self.get(&plural, &ns, &name).unwrap())
            }
            ("GET", None) => {
                let state = self.state.lock().unwrap();
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|((p, n, _), _)| *p == plural && (ns.is_empty() || *n == ns))
                    .map(|(_, o)| o.clone())
                    .collect();
                let api_version = match path.starts_with(IAM) {
                    true => "iam.miloapis.com/v1alpha1",
                    false => "notification.miloapis.com/v1alpha1",
                };
                (
                    200,
                    json!({"apiVersion": api_version, "kind": "List",
                        "metadata": {"resourceVersion": state.version.to_string()},
                        "items": items}),
                )
            }
            ("GET", Some(name)) => match self.get(&plural, &ns, &name) {
                Some(object) => (200, object),
                None => failure(404, "NotFound", "not found"),
            },
            ("DELETE", Some(name)) => self.remove(&plural, &ns, &name),
            ("PATCH", Some(name)) => {
                let write = Write {
                    status: subresource == Some("status"),
                    apply,
                    manager: schema::query_param(query, "fieldManager").unwrap_or("unknown"),
                    force: schema::query_param(query, "force") == Some("true"),
                };
                self.patch(&plural, &ns, &name, &write, body)
            }
            _ => failure(405, "MethodNotAllowed", "not served"),
        }
    }

    fn patch(
        &self,
        plural: &str,
        ns: &str,
        name: &str,
        write: &Write,
        body: Value,
    ) -> (u16, Value) {
        let crd = schema::by_plural(plural).expect("routed kinds have a CRD");
        if write.apply
            && let Some(why) = crd.refusal(&body)
        {
            return failure(500, "InternalError", &why);
        }
        let id = (plural.to_owned(), ns.to_owned(), name.to_owned());
        let mut state = self.state.lock().unwrap();
        let Some(mut object) = state.objects.get(&id).cloned() else {
            return failure(404, "NotFound", "not found");
        };
        if write.apply {
            let owners = state.owners.entry(id.clone()).or_default();
            let (manager, status, force) = (write.manager, write.status, write.force);
            if let Err(why) = owners.apply(crd, &mut object, &body, manager, status, force) {
                return failure(409, "Conflict", &why);
            }
        } else {
            // A merge patch naming a resourceVersion is a precondition, as on a real API server:
            // of two writers that read the same version, the second gets 409.
            let expected = &body["metadata"]["resourceVersion"];
            if expected.is_string() && *expected != object["metadata"]["resourceVersion"] {
                return failure(409, "Conflict", "the object has been modified");
            }
            match write.status {
                true => merge(&mut object, &json!({"status": body["status"]})),
                false => merge(&mut object, &body),
            }
            crd.prune(&mut object);
        }
        Self::stamp(&mut state, &mut object);
        let gone = !object["metadata"]["deletionTimestamp"].is_null()
            && object["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        if gone {
            state.objects.remove(&id);
            state.owners.remove(&id);
        } else {
            state.objects.insert(id, object.clone());
        }
        let unseen = write.status && state.lag_status;
        drop(state);
        if !unseen {
            self.changed(plural, ns, name, (!gone).then_some(&object));
        }
        (200, object)
    }
}
