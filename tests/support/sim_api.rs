//! A small stateful API server for property tests: it stores Contacts, ContactGroupMemberships
//! and ContactGroupMembershipRemovals, answers the requests the enrollment, removal and
//! membership controllers make (create, get, merge and apply patches, delete, Events), and
//! admits membership creates the way the webhook does, from a view that may lag behind it. It
//! counts every membership a policy created, per contact, over its whole life. Writes are as strict
//! as on a real API server with our CRDs (see [`super::schema`]): an apply naming an undeclared
//! field is refused, creates and merge patches prune such fields, and an apply owns what it sends.
//! Finalizers work as on the real server: a delete of an object holding one only marks it
//! deleted, it goes when a write leaves it none, no finalizer can be added to an object being
//! deleted, and a merge patch naming a `resourceVersion` other than the current one conflicts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use http::Method;
use kube::Client;
use milo_webhook::api::{
    Contact, ContactGroup, ContactGroupMembership, ContactGroupMembershipRemoval,
};
use milo_webhook::view::{ClusterView, Store};
use serde_json::{Value, json};

use super::schema::{self, Owners};

const API: &str = "/apis/notification.miloapis.com/v1alpha1/namespaces/";
const POLICY_LABEL: &str = "enrollment.notification.miloapis.com/policy";

/// What the server holds, keyed by (namespace, name).
#[derive(Default)]
pub struct SimState {
    pub contacts: BTreeMap<(String, String), Value>,
    pub groups: BTreeMap<(String, String), Value>,
    pub memberships: BTreeMap<(String, String), Value>,
    pub removals: BTreeMap<(String, String), Value>,
    /// (policy label, contact name) → memberships that policy created for the contact.
    pub created_by_policy: HashMap<(String, String), usize>,
    /// What each field manager last applied, per (plural, namespace, name).
    pub owners: BTreeMap<(String, String, String), Owners>,
    /// Writes that still land before the leader "crashes": every later write fails (503), as
    /// if the process had died between two writes. `None`: no crash.
    pub writes_left: Option<usize>,
    next_version: u64,
}

fn status(code: u16, reason: &str, message: &str, cause: Option<&str>) -> (u16, Value) {
    let mut body = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
        "code": code, "reason": reason, "message": message});
    if let Some(cause) = cause {
        body["details"] =
            json!({"causes": [{"reason": cause, "message": message, "field": "spec"}]});
    }
    (code, body)
}

/// A JSON merge patch (RFC 7386) of `patch` into `target`, as the API server applies one.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

fn pair_of(object: &Value) -> (String, String) {
    let spec = &object["spec"];
    (
        format!(
            "{}/{}",
            spec["contactRef"]["namespace"].as_str().unwrap_or_default(),
            spec["contactRef"]["name"].as_str().unwrap_or_default()
        ),
        format!(
            "{}/{}",
            spec["contactGroupRef"]["namespace"]
                .as_str()
                .unwrap_or_default(),
            spec["contactGroupRef"]["name"].as_str().unwrap_or_default()
        ),
    )
}

impl SimState {
    fn stamp(&mut self, object: &mut Value) {
        self.next_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.next_version.to_string());
    }

    /// A view built from everything the server holds now (what a relist gives).
    pub fn store(&self) -> Store {
        let mut store = Store::default();
        for c in self.contacts.values() {
            store.apply_contact(&serde_json::from_value::<Contact>(c.clone()).unwrap());
        }
        for g in self.groups.values() {
            store.apply_group(&serde_json::from_value::<ContactGroup>(g.clone()).unwrap());
        }
        for m in self.memberships.values() {
            store.apply_membership(
                &serde_json::from_value::<ContactGroupMembership>(m.clone()).unwrap(),
            );
        }
        for r in self.removals.values() {
            store.apply_removal(
                &serde_json::from_value::<ContactGroupMembershipRemoval>(r.clone()).unwrap(),
            );
        }
        store
    }

    fn table(&mut self, plural: &str) -> Option<&mut BTreeMap<(String, String), Value>> {
        match plural {
            "contacts" => Some(&mut self.contacts),
            "contactgroups" => Some(&mut self.groups),
            "contactgroupmemberships" => Some(&mut self.memberships),
            "contactgroupmembershipremovals" => Some(&mut self.removals),
            _ => None,
        }
    }

    /// Answers one request; `view` is what the membership webhook decides from.
    fn handle(
        &mut self,
        request: &http::request::Parts,
        body: Value,
        view: &Store,
    ) -> (u16, Value) {
        let (method, path) = (&request.method, request.uri.path());
        if *method != Method::GET
            && let Some(left) = self.writes_left.as_mut()
        {
            if *left == 0 {
                return status(503, "ServiceUnavailable", "the leader crashed", None);
            }
            *left -= 1;
        }
        if path.starts_with("/apis/events.k8s.io/") {
            return (201, body);
        }
        if path.contains("/contactgroupenrollmentpolicies/") {
            return (
                200,
                json!({"apiVersion": "notification.miloapis.com/v1alpha1",
                "kind": "ContactGroupEnrollmentPolicy", "metadata": {"name": "newsletter"},
                "spec": {"contactGroupRef": {"name": "news", "namespace": "groups"},
                    "trigger": {"type": "ContactCreated"}}}),
            );
        }
        let Some(rest) = path.strip_prefix(API) else {
            return status(404, "NotFound", "unknown path", None);
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (ns, plural) = (
            parts[0].to_owned(),
            parts.get(1).copied().unwrap_or_default(),
        );
        let name = parts.get(2).map(|n| (*n).to_owned());
        let subresource = parts.get(3).copied();
        if *method == Method::POST && plural == "contactgroupmemberships" {
            return self.create_membership(ns, body, view);
        }
        let Some(name) = name else {
            return status(405, "MethodNotAllowed", "lists are not served", None);
        };
        let key = (ns, name);
        let id = (plural.to_owned(), key.0.clone(), key.1.clone());
        let Some(table) = self.table(plural) else {
            return status(404, "NotFound", "unknown kind", None);
        };
        match *method {
            Method::GET => match table.get(&key) {
                Some(object) => (200, object.clone()),
                None => status(404, "NotFound", "not found", None),
            },
            Method::DELETE => match self.delete(plural, &key) {
                Some(answer) => (200, answer),
                None => status(404, "NotFound", "not found", None),
            },
            Method::PATCH => self.patch(request, id, subresource == Some("status"), body),
            _ => status(405, "MethodNotAllowed", "not served", None),
        }
    }

    /// Deletes `key` of `plural` as the API server does: an object holding finalizers is only
    /// marked deleted (and returned); one without goes. `None` when there is no such object.
    pub fn delete(&mut self, plural: &str, key: &(String, String)) -> Option<Value> {
        let table = self.table(plural)?;
        let object = table.get_mut(key)?;
        let held = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if held {
            if object["metadata"]["deletionTimestamp"].is_null() {
                object["metadata"]["deletionTimestamp"] = json!("2026-06-01T00:00:00Z");
            }
            let mut object = object.clone();
            self.stamp(&mut object);
            self.table(plural)?.insert(key.clone(), object.clone());
            return Some(object);
        }
        table.remove(key)?;
        self.owners
            .remove(&(plural.to_owned(), key.0.clone(), key.1.clone()));
        Some(json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}))
    }

    /// A merge patch or a server-side apply, to the object or its `/status`.
    fn patch(
        &mut self,
        request: &http::request::Parts,
        (plural, ns, name): (String, String, String),
        to_status: bool,
        body: Value,
    ) -> (u16, Value) {
        let crd = schema::by_plural(&plural).expect("the tables hold kinds with a CRD");
        let apply = request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(schema::is_apply);
        if apply && let Some(why) = crd.refusal(&body) {
            return status(500, "InternalError", &why, None);
        }
        let key = (ns, name);
        let table = self.table(&plural).expect("routed kinds have a table");
        let Some(mut object) = table.get(&key).cloned() else {
            return status(404, "NotFound", "not found", None);
        };
        if apply {
            let query = request.uri.query().unwrap_or_default();
            let manager = schema::query_param(query, "fieldManager").unwrap_or("unknown");
            let force = schema::query_param(query, "force") == Some("true");
            let id = (plural.clone(), key.0.clone(), key.1.clone());
            let owners = self.owners.entry(id).or_default();
            if let Err(why) = owners.apply(crd, &mut object, &body, manager, to_status, force) {
                return status(409, "Conflict", &why, None);
            }
        } else {
            let sent_version = &body["metadata"]["resourceVersion"];
            if !sent_version.is_null() && *sent_version != object["metadata"]["resourceVersion"] {
                return status(409, "Conflict", "the object has been modified", None);
            }
            let before = finalizers(&object);
            // Status patches touch status only.
            match to_status {
                true => merge(&mut object, &json!({"status": body["status"].clone()})),
                false => merge(&mut object, &body),
            }
            let deleting = !object["metadata"]["deletionTimestamp"].is_null();
            if deleting && finalizers(&object).iter().any(|f| !before.contains(f)) {
                return status(
                    422,
                    "Invalid",
                    "no new finalizers can be added if the object is being deleted",
                    Some("FieldValueForbidden"),
                );
            }
            crd.prune(&mut object);
            if deleting && finalizers(&object).is_empty() {
                let table = self.table(&plural).expect("routed kinds have a table");
                table.remove(&key);
                return (200, object);
            }
        }
        self.stamp(&mut object);
        let table = self.table(&plural).expect("routed kinds have a table");
        table.insert(key, object.clone());
        (200, object)
    }

    fn create_membership(&mut self, ns: String, body: Value, view: &Store) -> (u16, Value) {
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (ns.clone(), name);
        if self.memberships.contains_key(&key) {
            return status(409, "AlreadyExists", "already exists", None);
        }
        let membership: ContactGroupMembership = serde_json::from_value(body.clone()).unwrap();
        let (contact, group) = (
            &membership.spec.contact_ref,
            &membership.spec.contact_group_ref,
        );
        // The webhook decides from its view, which may not show the newest removal yet.
        if !view.removals_of(contact, group).is_empty() {
            return status(422, "Invalid", "opted out", Some("FieldValueForbidden"));
        }
        if !view.memberships_of(contact, group).is_empty() {
            return status(422, "Invalid", "duplicate", Some("FieldValueDuplicate"));
        }
        if let Some(policy) = body["metadata"]["labels"][POLICY_LABEL].as_str() {
            *self
                .created_by_policy
                .entry((policy.to_owned(), contact.name.clone()))
                .or_default() += 1;
        }
        let mut object = body;
        object["metadata"]["namespace"] = json!(ns);
        schema::by_plural("contactgroupmemberships")
            .expect("memberships have a CRD")
            .prune(&mut object);
        self.stamp(&mut object);
        self.memberships.insert(key, object.clone());
        (201, object)
    }

    /// Memberships beside a removal of their pair: what consent forbids at rest.
    pub fn memberships_beside_removals(&self) -> Vec<String> {
        let removed: Vec<_> = self.removals.values().map(pair_of).collect();
        self.memberships
            .iter()
            .filter(|(_, m)| removed.contains(&pair_of(m)))
            .map(|((ns, name), _)| format!("{ns}/{name}"))
            .collect()
    }
}

/// A kube client served by `state`, whose membership webhook reads `view`.
pub fn client(state: Arc<Mutex<SimState>>, view: Arc<ClusterView>) -> Client {
    super::mock_api::answering(move |parts, body| {
        let store = view.read();
        state.lock().unwrap().handle(parts, body, &store)
    })
}
