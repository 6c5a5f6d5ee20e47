//! Object metadata as an API server writes it: uid, resourceVersion, generation,
//! creationTimestamp and `managedFields` entries whose `fieldsV1` tree lists every field the
//! writer set; and the `Status` bodies errors are reported with.

use serde_json::{Map, Value, json};

use super::resources::ResourceType;
use super::schema::{self, CrdSchema, FieldSet};

/// Now, as an RFC 3339 timestamp with seconds precision (what `metav1.Time` serializes).
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Now with microseconds (`metav1.MicroTime`, used by Leases and Events).
pub fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// A random version-4 UUID.
pub fn uid() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// The `fieldsV1` tree of `value`: `{"f:spec": {"f:email": {}}, ...}`. Maps get a `"."` entry
/// when they are themselves owned (labels, annotations), list entries keyed by `name` or `type`
/// become `k:{...}` keys, other lists are owned whole.
pub fn fields_v1(value: &Value) -> Value {
    let Value::Object(map) = value else {
        return json!({});
    };
    let mut tree = Map::new();
    for (key, child) in map {
        if matches!(key.as_str(), "apiVersion" | "kind") {
            continue;
        }
        tree.insert(format!("f:{key}"), subtree(key, child));
    }
    Value::Object(tree)
}

fn subtree(key: &str, value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut tree = Map::new();
            if matches!(key, "labels" | "annotations") {
                tree.insert(".".into(), json!({}));
            }
            for (k, v) in map {
                if key == "metadata" && !metadata_field_is_owned(k) {
                    continue;
                }
                tree.insert(format!("f:{k}"), subtree(k, v));
            }
            Value::Object(tree)
        }
        Value::Array(items) => {
            let mut tree = Map::new();
            for item in items {
                let Some(id) = list_key(item) else {
                    return json!({});
                };
                let mut entry = subtree("", item);
                if let Value::Object(m) = &mut entry {
                    m.insert(".".into(), json!({}));
                }
                tree.insert(format!("k:{id}"), entry);
            }
            Value::Object(tree)
        }
        _ => json!({}),
    }
}

fn metadata_field_is_owned(field: &str) -> bool {
    matches!(
        field,
        "labels" | "annotations" | "ownerReferences" | "finalizers"
    )
}

/// `{"type":"Ready"}` for a list-map entry keyed by `type` (conditions), `name` (providers,
/// subjects) or `uid` (owner references).
fn list_key(item: &Value) -> Option<String> {
    let map = item.as_object()?;
    for key in ["uid", "type", "name"] {
        if let Some(v) = map.get(key) {
            return Some(json!({ key: v }).to_string());
        }
    }
    None
}

/// Merges `more` into the tree `into` (both `fieldsV1` trees).
pub fn merge_fields(into: &mut Value, more: &Value) {
    match (into, more) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge_fields(a.entry(k.clone()).or_insert_with(|| json!({})), v);
            }
        }
        (into, more) => *into = more.clone(),
    }
}

/// How a write was made, for its `managedFields` entry.
pub struct Writer<'a> {
    pub manager: &'a str,
    /// `Update` or `Apply`.
    pub operation: &'a str,
    /// `Some("status")` for writes to the status subresource.
    pub subresource: Option<&'a str>,
}

/// The schema of a type with a CRD of ours, which writes to it are held to.
pub fn crd_schema(rt: &ResourceType) -> Option<&'static CrdSchema> {
    if rt.version != schema::VERSION {
        return None;
    }
    schema::crd(rt.group, rt.plural)
}

/// What `writer`'s server-side apply of `sent` owns, as a `fieldsV1` tree, when the type has a
/// CRD of ours (an apply owns what it sent and nothing else: its entry is replaced, not merged).
fn applied_tree(rt: &ResourceType, writer: &Writer, sent: &Value) -> Option<Value> {
    let crd = crd_schema(rt).filter(|_| writer.operation == "Apply")?;
    let status = writer.subresource == Some("status");
    Some(schema::to_tree(&crd.applied_fields(sent, status)))
}

fn same_writer(entry: &Value, writer: &Writer) -> bool {
    entry["manager"] == writer.manager
        && entry["operation"] == writer.operation
        && entry.get("subresource").and_then(Value::as_str) == writer.subresource
}

/// Whether recording `writer`'s apply of `sent` changes what it owns on `object`: an apply that
/// changes no value but takes up or lets go of fields is still a write.
pub fn ownership_changes(object: &Value, rt: &ResourceType, writer: &Writer, sent: &Value) -> bool {
    let Some(tree) = applied_tree(rt, writer, sent) else {
        return false;
    };
    let entry = object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| same_writer(e, writer));
    let empty = json!({});
    entry.map_or(&empty, |e| &e["fieldsV1"]) != &tree
}

/// The fields every `managedFields` entry of `object` owns, `writer`'s own entry apart:
/// `(writer's, everyone else's)`.
pub fn owned_fields(object: &Value, writer: &Writer) -> (FieldSet, Vec<FieldSet>) {
    let mut mine = FieldSet::new();
    let mut others = Vec::new();
    for entry in object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let fields = schema::from_tree(&entry["fieldsV1"]);
        match same_writer(entry, writer) {
            true => mine = fields,
            false => others.push(fields),
        }
    }
    (mine, others)
}

/// A server-side apply to a type with a CRD of ours takes over the fields whose value it changed
/// (applies here are forced, or refused before on a conflict): the other `managedFields` entries
/// of `after` let go of them.
pub fn take_over(
    after: &mut Value,
    before: &Value,
    rt: &ResourceType,
    writer: &Writer,
    sent: &Value,
) {
    let Some(crd) = crd_schema(rt).filter(|_| writer.operation == "Apply") else {
        return;
    };
    let now = crd.applied_fields(sent, writer.subresource == Some("status"));
    let changed = schema::changed_fields(&now, before, after);
    if changed.is_empty() {
        return;
    }
    let Some(Value::Array(entries)) = after["metadata"].get_mut("managedFields") else {
        return;
    };
    for entry in entries.iter_mut().filter(|e| !same_writer(e, writer)) {
        let mut fields = schema::from_tree(&entry["fieldsV1"]);
        let held = fields.len();
        fields.retain(|path| !changed.contains(path));
        if fields.len() != held {
            entry["fieldsV1"] = schema::to_tree(&fields);
        }
    }
    entries.retain(|e| e["fieldsV1"].as_object().is_none_or(|m| !m.is_empty()));
}

/// Records in `object`'s `managedFields` that `writer` set the fields of `sent` (the body of the
/// request): its entry (one per manager, operation and subresource) gains their tree, or, for an
/// apply to a type with a CRD of ours, becomes their tree.
pub fn record_write(object: &mut Value, rt: &ResourceType, writer: &Writer, sent: &Value) {
    let applied = applied_tree(rt, writer, sent);
    let replace = applied.is_some();
    let mut fields = applied.unwrap_or_else(|| fields_v1(sent));
    if let Value::Object(m) = &mut fields {
        if writer.subresource == Some("status") {
            m.retain(|k, _| k == "f:status");
        } else if rt.status_subresource {
            m.remove("f:status");
        }
        if m.is_empty() {
            if replace
                && let Some(Value::Array(entries)) = object["metadata"].get_mut("managedFields")
            {
                entries.retain(|e| !same_writer(e, writer));
            }
            return;
        }
    }
    let api_version = rt.api_version();
    let entries = object["metadata"]
        .as_object_mut()
        .map(|m| m.entry("managedFields").or_insert_with(|| json!([])));
    let Some(Value::Array(entries)) = entries else {
        return;
    };
    let time = now();
    if let Some(entry) = entries.iter_mut().find(|e| same_writer(e, writer)) {
        match replace {
            true => entry["fieldsV1"] = fields,
            false => merge_fields(&mut entry["fieldsV1"], &fields),
        }
        entry["time"] = json!(time);
        return;
    }
    let mut entry = json!({
        "manager": writer.manager,
        "operation": writer.operation,
        "apiVersion": api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if let Some(sub) = writer.subresource {
        entry["subresource"] = json!(sub);
    }
    entries.push(entry);
}

/// A `Status` failure body, the way the API server reports errors.
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    body
}

/// An error a request ends in, with the HTTP code and Status body it is answered with.
#[derive(Debug)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
}

impl ApiError {
    fn about(code: u16, reason: &str, message: String, rt: &ResourceType, name: &str) -> Self {
        let details = json!({"name": name, "group": rt.group, "kind": rt.plural});
        Self {
            code,
            body: status(code, reason, &message, Some(details)),
        }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", rt.qualified());
        Self::about(404, "NotFound", message, rt, name)
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", rt.qualified());
        Self::about(409, "AlreadyExists", message, rt, name)
    }

    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            rt.qualified()
        );
        Self::about(409, "Conflict", message, rt, name)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            body: status(400, "BadRequest", &message.into(), None),
        }
    }

    pub fn invalid(rt: &ResourceType, name: &str, message: impl Into<String>) -> Self {
        let message = format!("{} \"{name}\" is invalid: {}", rt.kind, message.into());
        Self::about(422, "Invalid", message, rt, name)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self {
            code: 410,
            body: status(410, "Expired", &message.into(), None),
        }
    }

    pub fn unsupported_media(content_type: &str) -> Self {
        let message = format!("the body of the request was in an unknown format: {content_type}");
        Self {
            code: 415,
            body: status(415, "UnsupportedMediaType", &message, None),
        }
    }
}
