//! What a real API server does with the fields of a write, shared by the stateful doubles
//! (`live_api`, `sim_api`, the scripted `mock_api` and the cluster bench's fake, which includes
//! this file by path): the schema of each kind is the `v1alpha1` version of its CRD from
//! [`milo_webhook::crds::all`].
//!
//! - Server-side apply refuses a body naming a field the schema does not declare (HTTP 500,
//!   "failed to create typed patch object (...): .status.providerID: field not declared in
//!   schema"): [`CrdSchema::refusal`].
//! - Create, update and merge patch prune such fields silently: [`CrdSchema::prune`].
//! - An apply merges what it sends (list-maps entry by entry on their keys, sets element by
//!   element, atomic lists whole) and owns it; applying again without a field it sent before
//!   removes that field unless another manager holds it: [`CrdSchema::apply`], with the
//!   bookkeeping in [`Owners`].
//!
//! A field path is written the way `managedFields` writes it: `["f:status", "f:conditions",
//! "k:{\"type\":\"Ready\"}", "f:reason"]`; a list-map entry owns its own path (the `.` of
//! `fieldsV1`), a set element is `v:<json>`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use milo_webhook::api::fields::VersionSchema;
use serde_json::{Map, Value, json};

/// The version whose schema the doubles enforce.
pub const VERSION: &str = "v1alpha1";

/// One field, as a `managedFields` path.
pub type FieldPath = Vec<String>;
/// The fields one manager owns.
pub type FieldSet = BTreeSet<FieldPath>;

/// The schema of one kind, as the API server holds it.
pub struct CrdSchema {
    pub group: String,
    pub plural: String,
    pub kind: String,
    pub schema: VersionSchema,
    /// The root schema with `metadata` spelled out the way the API server's own schema has it
    /// (labels and annotations maps, finalizers a set, ownerReferences a list-map on `uid`).
    root: JSONSchemaProps,
}

/// The metadata fields an apply writes and owns; the rest the API server keeps for itself.
const OWNED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

static SCHEMAS: LazyLock<Vec<CrdSchema>> = LazyLock::new(|| {
    let metadata: JSONSchemaProps = serde_json::from_value(json!({
        "type": "object",
        "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "finalizers": {"type": "array", "items": {"type": "string"},
                "x-kubernetes-list-type": "set"},
            "ownerReferences": {"type": "array", "items": {"type": "object",
                "x-kubernetes-preserve-unknown-fields": true},
                "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["uid"]},
        },
    }))
    .expect("the metadata schema is a schema");
    milo_webhook::crds::all()
        .iter()
        .filter_map(|crd| {
            let schema = VersionSchema::of(crd, VERSION)?;
            let mut root = schema.schema.clone();
            root.properties
                .get_or_insert_with(Default::default)
                .insert("metadata".into(), metadata.clone());
            Some(CrdSchema {
                group: crd.spec.group.clone(),
                plural: crd.spec.names.plural.clone(),
                kind: crd.spec.names.kind.clone(),
                schema,
                root,
            })
        })
        .collect()
});

/// The schema of `plural` in `group`, when a CRD of ours serves it.
pub fn crd(group: &str, plural: &str) -> Option<&'static CrdSchema> {
    SCHEMAS
        .iter()
        .find(|s| s.group == group && s.plural == plural)
}

/// The schema of `plural` in whichever of our groups serves it (the plurals are unique).
pub fn by_plural(plural: &str) -> Option<&'static CrdSchema> {
    SCHEMAS.iter().find(|s| s.plural == plural)
}

/// The schema of the kind a request path (`/apis/GROUP/v1alpha1/[namespaces/NS/]PLURAL/...`)
/// names, when a CRD of ours serves it.
pub fn for_path(path: &str) -> Option<&'static CrdSchema> {
    let rest = path.strip_prefix("/apis/")?;
    let (group, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix(VERSION)?.strip_prefix('/')?;
    let plural = match rest.strip_prefix("namespaces/") {
        Some(rest) => rest.split('/').nth(1)?,
        None => rest.split('/').next()?,
    };
    crd(group, plural)
}

/// Whether a request's `Content-Type` is server-side apply's.
pub fn is_apply(content_type: &str) -> bool {
    content_type.starts_with("application/apply-patch")
}

/// The value of query parameter `name` (as the clients here send it: not percent-encoded).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

impl CrdSchema {
    /// Why the API server refuses a server-side apply of `sent`, in its words (answered with
    /// HTTP 500, reason `InternalError`); `None` when every field `sent` names is declared.
    pub fn refusal(&self, sent: &Value) -> Option<String> {
        let errors: Vec<String> = self
            .schema
            .undeclared(sent)
            .iter()
            .map(|path| format!(".{path}: field not declared in schema"))
            .collect();
        let errors = match errors.as_slice() {
            [] => return None,
            [one] => one.clone(),
            many => format!("errors:\n  {}", many.join("\n  ")),
        };
        Some(format!(
            "failed to create typed patch object ({}/{VERSION}, Kind={}): {errors}",
            self.group, self.kind
        ))
    }

    /// Drops every undeclared field of `object`, as create, update and merge patch do.
    pub fn prune(&self, object: &mut Value) {
        self.schema.prune(object);
    }

    /// The part of `sent` an apply writes: the status alone through `/status`; everything but
    /// the status (when the kind has a status subresource) and the server's metadata otherwise.
    fn scoped(&self, sent: &Value, status: bool) -> Value {
        let mut out = Map::new();
        for (field, value) in sent.as_object().into_iter().flatten() {
            let keep = match field.as_str() {
                "apiVersion" | "kind" => false,
                "status" => status || !self.schema.status_subresource,
                _ => !status,
            };
            if !keep {
                continue;
            }
            let value = match (field.as_str(), value) {
                ("metadata", Value::Object(meta)) => Value::Object(
                    meta.iter()
                        .filter(|(k, _)| OWNED_METADATA.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                _ => value.clone(),
            };
            out.insert(field.clone(), value);
        }
        Value::Object(out)
    }

    /// The fields an apply of `sent` (to `/status` when `status`) owns.
    pub fn applied_fields(&self, sent: &Value, status: bool) -> FieldSet {
        let mut set = FieldSet::new();
        collect(
            Some(&self.root),
            &self.scoped(sent, status),
            &mut Vec::new(),
            &mut set,
        );
        set
    }

    /// Server-side apply of `sent` (to `/status` when `status`) to `object` by a manager whose
    /// previous apply there owned `before`, while `others` are what every other manager owns:
    /// merges what was sent, removes what the manager sent before and dropped now unless another
    /// manager holds it (or something inside it), and returns what the manager owns now.
    pub fn apply(
        &self,
        object: &mut Value,
        sent: &Value,
        status: bool,
        before: &FieldSet,
        others: &[&FieldSet],
    ) -> FieldSet {
        let now = self.applied_fields(sent, status);
        merge(Some(&self.root), object, &self.scoped(sent, status));
        for dropped in before.difference(&now) {
            let held = others
                .iter()
                .any(|set| set.iter().any(|path| path.starts_with(dropped)));
            if !held {
                remove(object, dropped);
            }
        }
        now
    }
}

/// What each manager of one object last applied, to the object or to its status.
#[derive(Clone, Debug, Default)]
pub struct Owners(BTreeMap<(String, bool), FieldSet>);

impl Owners {
    /// Applies `sent` by `manager` to `object` (see [`CrdSchema::apply`]) and records what the
    /// manager owns now. A value it changes that another manager applied is a conflict: refused
    /// (`Err`, the API server's message) unless `force`, which takes the field over (the other
    /// manager no longer holds it).
    pub fn apply(
        &mut self,
        schema: &CrdSchema,
        object: &mut Value,
        sent: &Value,
        manager: &str,
        status: bool,
        force: bool,
    ) -> Result<(), String> {
        let key = (manager.to_owned(), status);
        let before = self.0.get(&key).cloned().unwrap_or_default();
        let others: Vec<&FieldSet> = self
            .0
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, set)| set)
            .collect();
        let mut after = object.clone();
        let now = schema.apply(&mut after, sent, status, &before, &others);
        let changed = changed_fields(&now, object, &after);
        let conflicts: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| **k != key)
            .flat_map(|((other, _), set)| {
                set.intersection(&changed)
                    .map(move |path| format!("conflict with \"{other}\": {}", display(path)))
            })
            .collect();
        if !force && !conflicts.is_empty() {
            return Err(format!(
                "Apply failed with {} conflict(s): {}",
                conflicts.len(),
                conflicts.join(", ")
            ));
        }
        for set in self.0.values_mut() {
            set.retain(|path| !changed.contains(path));
        }
        self.0.insert(key, now);
        self.0.retain(|_, set| !set.is_empty());
        *object = after;
        Ok(())
    }

    /// What `manager` owns through its last apply (to `/status` when `status`).
    pub fn of(&self, manager: &str, status: bool) -> Option<&FieldSet> {
        self.0.get(&(manager.to_owned(), status))
    }
}

/// The fields of `now` (an apply's) whose value differs between `before` and `after`: what the
/// apply took from any manager that held them. A list-map entry is not a value of its own.
pub fn changed_fields(now: &FieldSet, before: &Value, after: &Value) -> FieldSet {
    now.iter()
        .filter(|path| !path.last().is_some_and(|s| s.starts_with("k:")))
        .filter(|path| locate(before, path) != locate(after, path))
        .cloned()
        .collect()
}

/// `.status.conditions[{"type":"Ready"}].reason`, as error messages name a field.
pub fn display(path: &FieldPath) -> String {
    path.iter()
        .map(|step| match step.strip_prefix("f:") {
            Some(name) => format!(".{name}"),
            None => format!("[{}]", &step[2..]),
        })
        .collect()
}

/// The value at `path` in `value`, when there is one.
fn locate<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |value, step| match step.strip_prefix("f:") {
            Some(name) => value.get(name),
            None => value.as_array()?.iter().find(|e| matches_step(e, step)),
        })
}

/// `set` as a `fieldsV1` tree: `{"f:status": {"f:providers": {"k:{\"name\":\"Resend\"}":
/// {".": {}, "f:id": {}}}}}`.
pub fn to_tree(set: &FieldSet) -> Value {
    let mut tree = json!({});
    for path in set {
        let mut node = &mut tree;
        for step in path {
            node = node
                .as_object_mut()
                .expect("tree nodes are objects")
                .entry(step.clone())
                .or_insert_with(|| json!({}));
        }
        if path.last().is_some_and(|s| s.starts_with("k:")) {
            node["."] = json!({});
        }
    }
    tree
}

/// The paths of a `fieldsV1` tree: its leaves and the entries marked `.`.
pub fn from_tree(tree: &Value) -> FieldSet {
    fn walk(node: &Value, path: &mut FieldPath, set: &mut FieldSet) {
        let Some(children) = node.as_object() else {
            return;
        };
        if children.is_empty() || children.contains_key(".") {
            set.insert(path.clone());
        }
        for (step, child) in children.iter().filter(|(k, _)| *k != ".") {
            path.push(step.clone());
            walk(child, path, set);
            path.pop();
        }
    }
    let mut set = FieldSet::new();
    if let Some(top) = tree.as_object() {
        for (step, child) in top {
            walk(child, &mut vec![step.clone()], &mut set);
        }
    }
    set
}

enum ListType<'a> {
    Atomic,
    Set,
    Map(&'a [String]),
}

fn list_type(schema: Option<&JSONSchemaProps>) -> ListType<'_> {
    match schema.and_then(|s| s.x_kubernetes_list_type.as_deref()) {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            schema
                .and_then(|s| s.x_kubernetes_list_map_keys.as_deref())
                .unwrap_or_default(),
        ),
        _ => ListType::Atomic,
    }
}

fn atomic_map(schema: Option<&JSONSchemaProps>) -> bool {
    schema.is_some_and(|s| s.x_kubernetes_map_type.as_deref() == Some("atomic"))
}

fn child<'a>(schema: Option<&'a JSONSchemaProps>, name: &str) -> Option<&'a JSONSchemaProps> {
    let schema = schema?;
    if let Some(child) = schema.properties.as_ref().and_then(|p| p.get(name)) {
        return Some(child);
    }
    match &schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(child)) => Some(child),
        _ => None,
    }
}

fn item(schema: Option<&JSONSchemaProps>) -> Option<&JSONSchemaProps> {
    match &schema?.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => Some(item),
        _ => None,
    }
}

/// `k:{"type":"Ready"}`: the step naming a list-map entry by its keys.
fn entry_step(entry: &Value, keys: &[String]) -> String {
    let key: Map<String, Value> = keys
        .iter()
        .map(|k| (k.clone(), entry.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    format!("k:{}", Value::Object(key))
}

fn collect(
    schema: Option<&JSONSchemaProps>,
    value: &Value,
    path: &mut FieldPath,
    set: &mut FieldSet,
) {
    match value {
        Value::Object(fields) if !atomic_map(schema) => {
            for (name, field) in fields {
                path.push(format!("f:{name}"));
                collect(child(schema, name), field, path, set);
                path.pop();
            }
        }
        Value::Array(entries) => match list_type(schema) {
            ListType::Map(keys) => {
                for entry in entries {
                    path.push(entry_step(entry, keys));
                    set.insert(path.clone());
                    collect(item(schema), entry, path, set);
                    path.pop();
                }
            }
            ListType::Set => {
                for element in entries {
                    path.push(format!("v:{element}"));
                    set.insert(path.clone());
                    path.pop();
                }
            }
            ListType::Atomic => {
                set.insert(path.clone());
            }
        },
        _ => {
            set.insert(path.clone());
        }
    }
}

fn merge(schema: Option<&JSONSchemaProps>, target: &mut Value, sent: &Value) {
    match (target, sent) {
        (Value::Object(target), Value::Object(sent)) if !atomic_map(schema) => {
            for (name, value) in sent {
                let slot = target.entry(name.clone()).or_insert(Value::Null);
                merge(child(schema, name), slot, value);
            }
        }
        (Value::Array(target), Value::Array(sent)) => match list_type(schema) {
            ListType::Map(keys) => {
                for entry in sent {
                    let step = entry_step(entry, keys);
                    match target.iter_mut().find(|e| entry_step(e, keys) == step) {
                        Some(existing) => merge(item(schema), existing, entry),
                        None => target.push(entry.clone()),
                    }
                }
            }
            ListType::Set => {
                for element in sent {
                    if !target.contains(element) {
                        target.push(element.clone());
                    }
                }
            }
            ListType::Atomic => *target = sent.clone(),
        },
        (target, sent) => *target = sent.clone(),
    }
}

/// Whether `value` is what a list step (`k:` or `v:`) names.
fn matches_step(value: &Value, step: &str) -> bool {
    if let Some(element) = step.strip_prefix("v:") {
        return serde_json::from_str::<Value>(element).is_ok_and(|e| e == *value);
    }
    let Some(key) = step
        .strip_prefix("k:")
        .and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok())
    else {
        return false;
    };
    key.iter()
        .all(|(k, v)| value.get(k).unwrap_or(&Value::Null) == v)
}

/// Removes the field at `path` from `value`, when it is there. A map or list left empty goes too:
/// the API server's apply leaves it null, and null is pruned from a field that is not nullable.
fn remove(value: &mut Value, path: &[String]) {
    let Some((step, rest)) = path.split_first() else {
        return;
    };
    let emptied = |v: &Value| match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    match (value, step.strip_prefix("f:")) {
        (Value::Object(fields), Some(name)) => {
            if let Some(child) = fields.get_mut(name)
                && !rest.is_empty()
            {
                remove(child, rest);
                if !emptied(child) {
                    return;
                }
            }
            fields.remove(name);
        }
        (Value::Array(entries), None) => match rest {
            [] => entries.retain(|e| !matches_step(e, step)),
            _ => {
                if let Some(entry) = entries.iter_mut().find(|e| matches_step(e, step)) {
                    remove(entry, rest);
                }
            }
        },
        _ => {}
    }
}
