//! The objects, one table per resource type, a global resourceVersion bumped by every write,
//! and the log of changes watches replay. Objects are kept serialized (what lists, gets and
//! watches send) with their labels parsed beside them for selectors; a write parses, changes
//! and re-serializes one object.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use serde_json::{Value, json};

use super::objects::{self, ApiError, Writer};
use super::resources::{RESOURCES, ResourceType};
use super::selector::Selector;

/// One stored object.
#[derive(Debug)]
pub struct Stored {
    /// The object as sent to clients.
    pub json: Bytes,
    pub labels: BTreeMap<String, String>,
    pub rv: u64,
}

impl Stored {
    fn new(value: &Value, rv: u64) -> Arc<Self> {
        let labels = value["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Arc::new(Self {
            json: Bytes::from(serde_json::to_vec(value).expect("JSON values serialize")),
            labels,
            rv,
        })
    }

    /// The object parsed.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).expect("stored objects are JSON")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One logged change.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub resource: usize,
    pub namespace: String,
    pub kind: EventType,
    pub object: Arc<Stored>,
}

/// Which changes a watch wants.
pub struct Filter<'a> {
    pub resource: usize,
    pub namespace: Option<&'a str>,
    pub selector: &'a Selector,
}

impl Filter<'_> {
    fn wants(&self, change: &Change) -> bool {
        change.resource == self.resource
            && self.namespace.is_none_or(|ns| ns == change.namespace)
            && self.selector.matches(&change.object.labels)
    }
}

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

/// One page of a list.
pub struct Page {
    pub items: Vec<Arc<Stored>>,
    pub rv: u64,
    /// The last key returned, when more items may follow.
    pub next: Option<Key>,
}

struct Inner {
    rv: u64,
    tables: Vec<BTreeMap<Key, Arc<Stored>>>,
    log: VecDeque<Arc<Change>>,
    /// Changes up to and including this resourceVersion are no longer in the log.
    compacted: u64,
}

/// The fake's whole state.
pub struct Store {
    inner: Mutex<Inner>,
    /// Changes kept for watches; older ones are compacted away (a watch from before gets 410).
    history: usize,
    notify: tokio::sync::watch::Sender<u64>,
}

impl Store {
    pub fn new(history: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                tables: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
                log: VecDeque::new(),
                compacted: 1,
            }),
            history: history.max(1),
            notify: tokio::sync::watch::channel(1).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// A receiver woken whenever a change is logged.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn get(&self, resource: usize, namespace: &str, name: &str) -> Option<Arc<Stored>> {
        let key = (namespace.to_owned(), name.to_owned());
        self.lock().tables[resource].get(&key).cloned()
    }

    /// How many objects of the type are stored.
    pub fn count(&self, resource: usize) -> usize {
        self.lock().tables[resource].len()
    }

    /// Bytes of the serialized objects of the type, for reporting object sizes.
    pub fn bytes(&self, resource: usize) -> usize {
        self.lock().tables[resource]
            .values()
            .map(|o| o.json.len())
            .sum()
    }

    /// Up to `limit` objects after `after`, in key order.
    pub fn list(
        &self,
        resource: usize,
        namespace: Option<&str>,
        selector: &Selector,
        limit: Option<usize>,
        after: Option<&Key>,
    ) -> Page {
        use std::ops::Bound::{Excluded, Unbounded};
        let inner = self.lock();
        let table = &inner.tables[resource];
        let start = match after {
            Some(key) => Excluded(key.clone()),
            None => match namespace {
                Some(ns) => std::ops::Bound::Included((ns.to_owned(), String::new())),
                None => Unbounded,
            },
        };
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let (mut last, mut next) = (None, None);
        for (key, object) in table.range((start, Unbounded)) {
            if namespace.is_some_and(|ns| ns != key.0) {
                break;
            }
            if !selector.matches(&object.labels) {
                continue;
            }
            if items.len() == limit {
                next = last;
                break;
            }
            items.push(object.clone());
            last = Some(key);
        }
        let next = next.cloned();
        Page {
            items,
            rv: inner.rv,
            next,
        }
    }

    /// Creates `object` (whose metadata names it), stamping what the API server stamps.
    pub fn create(
        &self,
        resource: usize,
        namespace: &str,
        mut object: Value,
        writer: &Writer,
    ) -> Result<Arc<Stored>, ApiError> {
        let rt = &RESOURCES[resource];
        let sent = object.clone();
        if !object.is_object() || !object["metadata"].is_object() && !object["metadata"].is_null() {
            return Err(ApiError::bad_request("the body is not an object"));
        }
        let name = match object["metadata"]["name"].as_str() {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match object["metadata"]["generateName"].as_str() {
                Some(prefix) => format!("{prefix}{:05x}", fastrand::u32(..0xfffff)),
                None => return Err(ApiError::invalid(rt, "", "metadata.name: Required value")),
            },
        };
        if let Some(ns) = object["metadata"]["namespace"].as_str()
            && !ns.is_empty()
            && ns != namespace
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        if rt.status_subresource
            && let Some(m) = object.as_object_mut()
        {
            m.remove("status");
        }
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.clone());
        if inner.tables[resource].contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        inner.rv += 1;
        let rv = inner.rv;
        stamp_new(&mut object, rt, namespace, &name, rv);
        objects::record_write(&mut object, rt, writer, &sent);
        let stored = Stored::new(&object, rv);
        inner.tables[resource].insert(key, stored.clone());
        self.log(&mut inner, resource, namespace, EventType::Added, &stored);
        Ok(stored)
    }

    /// Stores `object` as if created (status and a given uid included) without logging a change:
    /// seeding before any client watches.
    pub fn seed(&self, resource: usize, mut object: Value, manager: &str) {
        let rt = &RESOURCES[resource];
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("seeded objects are named")
            .to_owned();
        let sent = object.clone();
        let mut inner = self.lock();
        inner.rv += 1;
        let rv = inner.rv;
        let uid = sent["metadata"]["uid"].clone();
        stamp_new(&mut object, rt, &namespace, &name, rv);
        if uid.is_string() {
            object["metadata"]["uid"] = uid;
        }
        let main = Writer {
            manager,
            operation: "Update",
            subresource: None,
        };
        objects::record_write(&mut object, rt, &main, &sent);
        if rt.status_subresource && sent.get("status").is_some() {
            let status = Writer {
                subresource: Some("status"),
                ..main
            };
            objects::record_write(&mut object, rt, &status, &sent);
        }
        let stored = Stored::new(&object, rv);
        inner.tables[resource].insert((namespace, name), stored);
        inner.compacted = inner.rv;
    }

    /// Changes an object: `change` edits it; then what the caller may not change is restored,
    /// and, unless nothing changed, resourceVersion (and generation, on a spec change) is
    /// bumped, the write recorded in managedFields and a MODIFIED logged. An object being
    /// deleted whose last finalizer goes is deleted.
    pub fn update(
        &self,
        resource: usize,
        namespace: &str,
        name: &str,
        write: &Write,
        change: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Arc<Stored>, ApiError> {
        let rt = &RESOURCES[resource];
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let Some(current) = inner.tables[resource].get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        let before = current.value();
        if let Some(expected) = &write.precondition
            && *expected != current.rv.to_string()
        {
            let why = "the object has been modified; please apply your changes to the latest version and try again";
            return Err(ApiError::conflict(rt, name, why));
        }
        let mut after = before.clone();
        change(&mut after)?;
        let status_only = write.writer.subresource == Some("status");
        keep_what_clients_cannot_change(&mut after, &before, rt, status_only);
        if after == before && !objects::ownership_changes(&before, rt, &write.writer, &write.sent) {
            return Ok(current);
        }
        let spec_changed = rt.status_subresource && !status_only && {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("metadata");
                    m.remove("status");
                }
                v
            };
            strip(&after) != strip(&before)
        };
        inner.rv += 1;
        let rv = inner.rv;
        after["metadata"]["resourceVersion"] = json!(rv.to_string());
        if spec_changed {
            let generation = before["metadata"]["generation"].as_i64().unwrap_or(0);
            after["metadata"]["generation"] = json!(generation + 1);
        }
        objects::record_write(&mut after, rt, &write.writer, &write.sent);
        objects::take_over(&mut after, &before, rt, &write.writer, &write.sent);
        let finished = after["metadata"]["deletionTimestamp"].is_string()
            && after["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        let stored = Stored::new(&after, rv);
        if finished {
            inner.tables[resource].remove(&key);
            self.log(&mut inner, resource, namespace, EventType::Deleted, &stored);
        } else {
            inner.tables[resource].insert(key, stored.clone());
            self.log(
                &mut inner,
                resource,
                namespace,
                EventType::Modified,
                &stored,
            );
        }
        Ok(stored)
    }

    /// Deletes an object, or marks it deleted while finalizers remain. Returns it as deleted.
    pub fn delete(
        &self,
        resource: usize,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<Stored>, ApiError> {
        let rt = &RESOURCES[resource];
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let Some(current) = inner.tables[resource].get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        let mut object = current.value();
        let finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if finalizers && object["metadata"]["deletionTimestamp"].is_string() {
            return Ok(current);
        }
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        if finalizers {
            object["metadata"]["deletionTimestamp"] = json!(objects::now());
            object["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let stored = Stored::new(&object, rv);
            inner.tables[resource].insert(key, stored.clone());
            self.log(
                &mut inner,
                resource,
                namespace,
                EventType::Modified,
                &stored,
            );
            return Ok(stored);
        }
        let stored = Stored::new(&object, rv);
        inner.tables[resource].remove(&key);
        self.log(&mut inner, resource, namespace, EventType::Deleted, &stored);
        Ok(stored)
    }

    /// The changes after `cursor` that `filter` wants (at most `max`), and the cursor to go on
    /// from; `Err` when changes after `cursor` were compacted away.
    pub fn changes_after(
        &self,
        cursor: u64,
        filter: &Filter,
        max: usize,
    ) -> Result<(Vec<Arc<Change>>, u64), ApiError> {
        let inner = self.lock();
        if cursor < inner.compacted {
            return Err(ApiError::gone(format!(
                "too old resource version: {cursor} ({})",
                inner.compacted
            )));
        }
        let start = inner.log.partition_point(|c| c.rv <= cursor);
        let mut found = Vec::new();
        let mut reached = cursor;
        for change in inner.log.range(start..) {
            if found.len() == max {
                return Ok((found, reached));
            }
            reached = change.rv;
            if filter.wants(change) {
                found.push(change.clone());
            }
        }
        Ok((found, reached.max(inner.rv)))
    }

    fn log(
        &self,
        inner: &mut Inner,
        resource: usize,
        namespace: &str,
        kind: EventType,
        object: &Arc<Stored>,
    ) {
        inner.log.push_back(Arc::new(Change {
            rv: object.rv,
            resource,
            namespace: namespace.to_owned(),
            kind,
            object: object.clone(),
        }));
        if inner.log.len() > self.history {
            let drop = (self.history / 10).max(1);
            for _ in 0..drop {
                if let Some(old) = inner.log.pop_front() {
                    inner.compacted = old.rv;
                }
            }
        }
        self.notify.send_replace(object.rv);
    }
}

/// What an update request carries besides its change.
pub struct Write<'a> {
    pub writer: Writer<'a>,
    /// The body sent, whose fields the writer now manages.
    pub sent: Value,
    /// `metadata.resourceVersion` the client expects the object to have.
    pub precondition: Option<String>,
}

fn stamp_new(object: &mut Value, rt: &ResourceType, namespace: &str, name: &str, rv: u64) {
    object["apiVersion"] = json!(rt.api_version());
    object["kind"] = json!(rt.kind);
    let meta = &mut object["metadata"];
    meta["name"] = json!(name);
    if rt.namespaced {
        meta["namespace"] = json!(namespace);
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    meta["uid"] = json!(objects::uid());
    meta["resourceVersion"] = json!(rv.to_string());
    if rt.status_subresource {
        meta["generation"] = json!(1);
    }
    if !meta["creationTimestamp"].is_string() {
        meta["creationTimestamp"] = json!(objects::now());
    }
    if let Some(m) = meta.as_object_mut() {
        m.remove("managedFields");
        m.remove("deletionTimestamp");
        m.remove("generateName");
    }
}

/// Puts back what a write cannot change: identity, type, server-set metadata, and the status
/// (on main-resource writes) or everything but it (on `/status` writes).
fn keep_what_clients_cannot_change(
    after: &mut Value,
    before: &Value,
    rt: &ResourceType,
    status_only: bool,
) {
    if status_only {
        let status = after.get("status").cloned();
        *after = before.clone();
        match status {
            Some(status) if !status.is_null() => after["status"] = status,
            _ => {
                if let Some(m) = after.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        return;
    }
    if !after.is_object() {
        *after = before.clone();
        return;
    }
    for field in ["apiVersion", "kind"] {
        after[field] = before[field].clone();
    }
    if !after["metadata"].is_object() {
        after["metadata"] = json!({});
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
    ] {
        let meta = after["metadata"].as_object_mut().expect("checked above");
        match before["metadata"].get(field) {
            Some(v) => meta.insert(field.to_owned(), v.clone()),
            None => meta.remove(field),
        };
    }
    if rt.status_subresource {
        let obj = after.as_object_mut().expect("checked above");
        match before.get("status") {
            Some(status) => obj.insert("status".into(), status.clone()),
            None => obj.remove("status"),
        };
    }
}
