//! The patch flavours, as far as the controllers and the lease elector use them: JSON merge
//! patch (RFC 7386), strategic merge patch (approximated by a merge patch: no list merge keys or
//! `$patch` directives, which none of the clients here send), JSON patch (RFC 6902), and
//! server-side apply (the sent object merged in, with a conflict when a non-forced apply would
//! change a field another manager owns; for the types with a CRD of ours, merged the way their
//! schema says, and a field the manager stopped sending removed: [`apply_owned`]).

use serde_json::Value;

use super::objects::{self, ApiError, Writer};
use super::schema::CrdSchema;

/// Server-side apply of `sent` by `writer` to `current`, a type with a CRD of ours: merged by its
/// schema, and what the writer's last apply owned and this one drops removed unless another
/// `managedFields` entry holds it.
pub fn apply_owned(crd: &CrdSchema, current: &mut Value, sent: &Value, writer: &Writer) {
    let (before, others) = objects::owned_fields(current, writer);
    let others: Vec<_> = others.iter().collect();
    let status = writer.subresource == Some("status");
    crd.apply(current, sent, status, &before, &others);
}

/// The 500 a real API server answers a server-side apply naming a field `crd` does not declare
/// with, nothing stored.
pub fn refuse_undeclared(crd: &CrdSchema, sent: &Value) -> Result<(), ApiError> {
    match crd.refusal(sent) {
        Some(why) => Err(ApiError {
            code: 500,
            body: objects::status(500, "InternalError", &why, None),
        }),
        None => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchKind::Apply),
            other => Err(ApiError::unsupported_media(other)),
        }
    }

    /// The `managedFields` operation a patch is recorded as.
    pub fn operation(self) -> &'static str {
        match self {
            PatchKind::Apply => "Apply",
            _ => "Update",
        }
    }

    /// Parses the body: JSON, or YAML for apply.
    pub fn parse(self, body: &[u8]) -> Result<Value, ApiError> {
        match serde_json::from_slice(body) {
            Ok(value) => Ok(value),
            Err(_) if self == PatchKind::Apply => serde_saphyr::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}"))),
            Err(e) => Err(ApiError::bad_request(format!("error decoding patch: {e}"))),
        }
    }

    /// Applies the parsed patch to `target`.
    pub fn apply_to(self, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
        match self {
            PatchKind::Merge | PatchKind::Strategic | PatchKind::Apply => {
                json_patch::merge(target, patch);
                Ok(())
            }
            PatchKind::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(target, &ops).map_err(|e| ApiError {
                    code: 422,
                    body: super::objects::status(422, "Invalid", &e.to_string(), None),
                })
            }
        }
    }
}

/// The fields a non-forced apply by `manager` would change although another manager owns them:
/// leaves set in `sent` whose current value is set and different.
pub fn apply_conflicts(current: &Value, sent: &Value, manager: &str) -> Vec<String> {
    let mut conflicts = Vec::new();
    let owners: Vec<(&str, &Value)> = current["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["manager"].as_str()?, &e["fieldsV1"])))
        .filter(|(m, _)| *m != manager)
        .collect();
    let mut path = Vec::new();
    walk(current, sent, &mut path, &mut |path| {
        let owned = owners.iter().any(|(_, tree)| {
            let mut node = *tree;
            for step in path.iter() {
                match node.get(format!("f:{step}")) {
                    Some(next) => node = next,
                    None => return false,
                }
            }
            true
        });
        if owned {
            conflicts.push(path.join("."));
        }
    });
    conflicts
}

fn walk<'a>(
    current: &Value,
    sent: &'a Value,
    path: &mut Vec<&'a str>,
    on_change: &mut dyn FnMut(&[&'a str]),
) {
    let Value::Object(fields) = sent else {
        return;
    };
    for (key, value) in fields {
        if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let Some(now) = current.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        path.push(key);
        match value {
            Value::Object(_) => walk(now, value, path, on_change),
            Value::Null => {}
            leaf if leaf != now => on_change(path),
            _ => {}
        }
        path.pop();
    }
}
