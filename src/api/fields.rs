//! Which fields a CRD's structural schema declares, read the way the API server reads them.
//!
//! A real API server treats an undeclared field two ways: server-side apply refuses the whole
//! request ("field not declared in schema"), while create, update and merge patch prune it
//! silently. Both hurt a controller that does not know: the first loops on a refused write, the
//! second loses data. This module answers the question both need ("which fields of this value
//! does that schema not declare?") for the runtime check of the installed CRDs and for the
//! in-process API servers the tests use, so they refuse and prune exactly what the real one does.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

/// Fields every object has whatever its schema says (the API server handles them itself).
const ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// The schema of one version of a CRD, with what the version serves beside it.
#[derive(Clone, Debug)]
pub struct VersionSchema {
    /// The version's `openAPIV3Schema`.
    pub schema: JSONSchemaProps,
    /// Whether the version has a status subresource (a status write goes nowhere without it).
    pub status_subresource: bool,
}

impl VersionSchema {
    /// The schema of `version` in `crd`, when the CRD serves it with a schema.
    pub fn of(crd: &CustomResourceDefinition, version: &str) -> Option<Self> {
        let served = crd.spec.versions.iter().find(|v| v.name == version)?;
        let schema = served.schema.as_ref()?.open_api_v3_schema.clone()?;
        let status_subresource = served
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some());
        Some(Self {
            schema,
            status_subresource,
        })
    }

    /// The same schema without its descriptions (most of a CRD's bytes), for keeping.
    pub fn without_docs(mut self) -> Self {
        fn strip(schema: &mut JSONSchemaProps) {
            schema.description = None;
            for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
                strip(child);
            }
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &mut schema.items {
                strip(item);
            }
            if let Some(JSONSchemaPropsOrBool::Schema(value)) = &mut schema.additional_properties {
                strip(value);
            }
        }
        strip(&mut self.schema);
        self
    }

    /// Paths (`status.providerID`, `spec.items[].name`) of `object`'s fields this schema does not
    /// declare, outermost only: what a server-side apply of `object` would be refused for.
    pub fn undeclared(&self, object: &Value) -> Vec<String> {
        let mut found = Vec::new();
        if let Value::Object(fields) = object {
            for (name, value) in fields {
                if ROOT_FIELDS.contains(&name.as_str()) {
                    continue;
                }
                walk_undeclared(&self.schema, name, value, name, &mut found);
            }
        }
        found.sort();
        found.dedup();
        found
    }

    /// Removes from `object` every field this schema does not declare, as an update would.
    pub fn prune(&self, object: &mut Value) {
        if let Value::Object(fields) = object {
            fields.retain(|name, value| {
                ROOT_FIELDS.contains(&name.as_str())
                    || match property(&self.schema, name) {
                        Some(child) => {
                            prune_value(child, value);
                            true
                        }
                        None => preserves_unknown(&self.schema),
                    }
            });
        }
    }

    /// Paths this schema declares that `other` does not, outermost only: what a writer that
    /// knows this schema would lose on a cluster that installed `other`.
    pub fn missing_from(&self, other: &VersionSchema) -> Vec<String> {
        let mut found = Vec::new();
        missing(&self.schema, &other.schema, "", &mut found);
        found
    }
}

fn preserves_unknown(schema: &JSONSchemaProps) -> bool {
    schema.x_kubernetes_preserve_unknown_fields == Some(true)
}

/// The schema of `name` under an object schema: a declared property, or the map's value schema.
fn property<'a>(schema: &'a JSONSchemaProps, name: &str) -> Option<&'a JSONSchemaProps> {
    if let Some(child) = schema.properties.as_ref().and_then(|p| p.get(name)) {
        return Some(child);
    }
    match &schema.additional_properties {
        Some(JSONSchemaPropsOrBool::Schema(child)) => Some(child),
        _ => None,
    }
}

/// Whether any name is allowed under `schema` (a map of anything, or unknown fields kept).
fn open(schema: &JSONSchemaProps) -> bool {
    preserves_unknown(schema)
        || matches!(
            schema.additional_properties,
            Some(JSONSchemaPropsOrBool::Bool(true))
        )
}

fn items(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match &schema.items {
        Some(JSONSchemaPropsOrArray::Schema(item)) => Some(item),
        _ => None,
    }
}

fn walk_undeclared(
    parent: &JSONSchemaProps,
    name: &str,
    value: &Value,
    path: &str,
    found: &mut Vec<String>,
) {
    match property(parent, name) {
        Some(schema) => undeclared_in(schema, value, path, found),
        None if open(parent) => {}
        None => found.push(path.to_owned()),
    }
}

fn undeclared_in(schema: &JSONSchemaProps, value: &Value, path: &str, found: &mut Vec<String>) {
    if schema.x_kubernetes_embedded_resource == Some(true) && preserves_unknown(schema) {
        return;
    }
    match value {
        Value::Object(fields) => {
            for (name, child) in fields {
                walk_undeclared(schema, name, child, &format!("{path}.{name}"), found);
            }
        }
        Value::Array(elements) => {
            if let Some(item) = items(schema) {
                for element in elements {
                    undeclared_in(item, element, &format!("{path}[]"), found);
                }
            }
        }
        _ => {}
    }
}

fn prune_value(schema: &JSONSchemaProps, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            let keep_unknown = open(schema);
            fields.retain(|name, child| match property(schema, name) {
                Some(child_schema) => {
                    prune_value(child_schema, child);
                    true
                }
                None => keep_unknown,
            });
        }
        Value::Array(elements) => {
            if let Some(item) = items(schema) {
                for element in elements {
                    prune_value(item, element);
                }
            }
        }
        _ => {}
    }
}

fn missing(ours: &JSONSchemaProps, theirs: &JSONSchemaProps, path: &str, found: &mut Vec<String>) {
    if open(theirs) {
        return;
    }
    let join = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    if let Some(properties) = &ours.properties {
        for (name, child) in properties {
            if path.is_empty() && ROOT_FIELDS.contains(&name.as_str()) {
                continue;
            }
            match property(theirs, name) {
                Some(their_child) => missing(child, their_child, &join(name), found),
                None => found.push(join(name)),
            }
        }
    }
    if let (
        Some(JSONSchemaPropsOrBool::Schema(ours)),
        Some(JSONSchemaPropsOrBool::Schema(theirs)),
    ) = (&ours.additional_properties, &theirs.additional_properties)
    {
        missing(ours, theirs, &join("*"), found);
    }
    if let (Some(our_item), Some(their_item)) = (items(ours), items(theirs)) {
        missing(our_item, their_item, &format!("{path}[]"), found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(value: Value) -> VersionSchema {
        VersionSchema {
            schema: serde_json::from_value(value).unwrap(),
            status_subresource: true,
        }
    }

    fn membership_like() -> VersionSchema {
        schema(json!({
            "type": "object",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {"type": "object"},
                "spec": {"type": "object", "properties": {"contactRef": {"type": "object",
                    "properties": {"name": {"type": "string"}}}}},
                "status": {"type": "object", "properties": {
                    "conditions": {"type": "array", "items": {"type": "object", "properties": {
                        "type": {"type": "string"}, "status": {"type": "string"}}}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                }},
            }
        }))
    }

    #[test]
    fn undeclared_names_the_outermost_unknown_fields() {
        let object = json!({
            "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "anything": 1},
            "status": {
                "providerID": "re_1",
                "providers": [{"name": "Resend", "id": "re_1"}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Synced"}],
                "labels": {"free": "form"},
                "raw": {"what": {"ever": 1}},
            },
        });
        let found = membership_like().undeclared(&object);
        assert_eq!(
            found,
            [
                "status.conditions[].reason",
                "status.providerID",
                "status.providers"
            ]
        );
    }

    #[test]
    fn prune_drops_what_apply_would_refuse_and_keeps_the_rest() {
        let schema = membership_like();
        let mut object = json!({
            "metadata": {"name": "a"},
            "bogus": true,
            "spec": {"contactRef": {"name": "c", "uid": "u"}},
            "status": {"providerID": "re_1", "conditions": [{"type": "Ready", "reason": "x"}],
                "labels": {"k": "v"}, "raw": {"z": 1}},
        });
        schema.prune(&mut object);
        assert_eq!(
            object,
            json!({
                "metadata": {"name": "a"},
                "spec": {"contactRef": {"name": "c"}},
                "status": {"conditions": [{"type": "Ready"}], "labels": {"k": "v"}, "raw": {"z": 1}},
            })
        );
        assert!(schema.undeclared(&object).is_empty());
    }

    #[test]
    fn missing_from_lists_what_a_narrower_schema_lacks() {
        let ours = membership_like();
        let narrower = schema(json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "properties": {"contactRef": {"type": "object",
                    "properties": {"name": {"type": "string"}}}}},
                "status": {"type": "object", "properties": {
                    "conditions": {"type": "array", "items": {"type": "object", "properties": {
                        "type": {"type": "string"}}}},
                }},
            }
        }));
        assert_eq!(
            ours.missing_from(&narrower),
            ["status.conditions[].status", "status.labels", "status.raw"]
        );
        assert!(narrower.missing_from(&ours).is_empty());
    }
}
