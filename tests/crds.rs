//! The CRDs are right by construction: the checked-in files match the Rust types, the schemas are
//! structural, and every CEL rule compiles, stays within the cost budget and does what its
//! message says.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kube::core::cel::{Validator, compile_schema, estimate_rule_cost};
use milo_webhook::crds;
use serde_json::{Value, json};

fn schemas() -> Vec<(String, Value)> {
    crds::all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap();
            assert_eq!(crd.spec.versions.len(), 1, "{name}: one version");
            let version = &crd.spec.versions[0];
            assert!(version.served && version.storage, "{name}");
            let schema = serde_json::to_value(
                version
                    .schema
                    .as_ref()
                    .unwrap()
                    .open_api_v3_schema
                    .as_ref()
                    .unwrap(),
            )
            .unwrap();
            (name, schema)
        })
        .collect()
}

fn schema_of(name: &str) -> Value {
    schemas()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no CRD {name}"))
        .1
}

fn files_under(dir: &Path, prefix: &Path, out: &mut BTreeSet<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let relative = prefix.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            files_under(&entry.path(), &relative, out);
        } else {
            out.insert(relative);
        }
    }
}

#[test]
fn checked_in_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/crds");
    let regenerate = "regenerate with `milo-webhook crds --output-dir manifests/crds`";
    let mut expected = BTreeSet::new();
    for (file, content) in crds::files().unwrap() {
        let shown = file.display();
        let on_disk = std::fs::read_to_string(dir.join(&file))
            .unwrap_or_else(|_| panic!("manifests/crds/{shown} is missing: {regenerate}"));
        assert_eq!(
            on_disk, content,
            "manifests/crds/{shown} differs from the generated one: {regenerate}"
        );
        expected.insert(file);
    }
    let mut present = BTreeSet::new();
    files_under(&dir, Path::new(""), &mut present);
    assert_eq!(
        present, expected,
        "manifests/crds/ holds exactly the generated files (delete the others)"
    );
}

fn kustomize_resources(file: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(file).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let resources = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    (doc["kind"].as_str().unwrap().to_owned(), resources)
}

/// In a Milo installation `manifests/crds` is applied and the User CRD stays Milo's; without
/// Milo the `standalone` Component adds it. Every CRD is in exactly one of the two, and each
/// kustomization only names files in its own folder (kustomize refuses files outside it).
#[test]
fn kustomizations_split_the_kinds_milo_owns() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/crds");
    let (kind, ours) = kustomize_resources(&dir.join("kustomization.yaml"));
    assert_eq!(kind, "Kustomization");
    let (kind, standalone) = kustomize_resources(&dir.join("standalone/kustomization.yaml"));
    assert_eq!(kind, "Component");
    assert_eq!(standalone, ["users.iam.miloapis.com.yaml"]);
    for (folder, listed) in [(dir.clone(), &ours), (dir.join("standalone"), &standalone)] {
        for file in listed {
            assert!(!file.contains('/'), "{file}: outside its folder");
            assert!(folder.join(file).is_file(), "{file} is listed but missing");
        }
    }
    let all: BTreeSet<String> = crds::all().iter().map(crds::file_name).collect();
    let listed: BTreeSet<String> = ours.iter().chain(&standalone).cloned().collect();
    assert_eq!(listed, all, "every CRD is applied by one of the two");
    assert_eq!(ours.len() + standalone.len(), all.len(), "and by only one");
    for crd in crds::all() {
        let file = crds::file_name(&crd);
        assert_eq!(
            standalone.contains(&file),
            crds::owned_by_milo(&crd),
            "{file}: only the kinds Milo owns are standalone"
        );
    }
}

#[test]
fn names_scopes_and_subresources_follow_the_api_reference() {
    let expected = [
        (
            "contacts.notification.miloapis.com",
            "Contact",
            "Namespaced",
        ),
        (
            "contactgroups.notification.miloapis.com",
            "ContactGroup",
            "Namespaced",
        ),
        (
            "contactgroupmemberships.notification.miloapis.com",
            "ContactGroupMembership",
            "Namespaced",
        ),
        (
            "contactgroupmembershipremovals.notification.miloapis.com",
            "ContactGroupMembershipRemoval",
            "Namespaced",
        ),
        (
            "contactgroupenrollmentpolicies.notification.miloapis.com",
            "ContactGroupEnrollmentPolicy",
            "Cluster",
        ),
        ("emails.notification.miloapis.com", "Email", "Namespaced"),
        (
            "emailtemplates.notification.miloapis.com",
            "EmailTemplate",
            "Cluster",
        ),
        (
            "emailbroadcasts.notification.miloapis.com",
            "EmailBroadcast",
            "Namespaced",
        ),
        ("users.iam.miloapis.com", "User", "Cluster"),
        (
            "userinvitations.iam.miloapis.com",
            "UserInvitation",
            "Namespaced",
        ),
    ];
    let all = crds::all();
    assert_eq!(all.len(), expected.len());
    for (crd, (name, kind, scope)) in all.iter().zip(expected) {
        assert_eq!(crd.metadata.name.as_deref(), Some(name));
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(
            crd.spec.names.list_kind.as_deref(),
            Some(format!("{kind}List").as_str())
        );
        assert_eq!(crd.spec.scope, scope, "{name}");
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
        let subresources = crd.spec.versions[0]
            .subresources
            .as_ref()
            .expect("status subresource");
        assert!(
            subresources.status.is_some(),
            "{name} has a status subresource"
        );
    }
    let contact = &all[0].spec.versions[0];
    let selectable: Vec<_> = contact
        .selectable_fields
        .iter()
        .flatten()
        .map(|f| f.json_path.as_str())
        .collect();
    assert_eq!(
        selectable,
        [".spec.email", ".spec.subject.name", ".spec.subject.kind"]
    );
}

fn walk(path: &str, node: &Value, visit: &mut impl FnMut(&str, &Value)) {
    visit(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(&format!("{path}.{k}"), v, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, visit);
    }
    if let Some(additional) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), additional, visit);
    }
}

/// Inside `allOf`, `anyOf`, `oneOf` and `not` a structural schema may only validate values
/// (Milo's User status uses `allOf` of enums): no types, defaults, nullability, descriptions or
/// structure.
fn assert_value_validation_only(path: &str, node: &Value) {
    let members: Vec<&Value> = match node {
        Value::Array(members) => members.iter().collect(),
        other => vec![other],
    };
    for member in members {
        for (key, value) in member.as_object().unwrap() {
            assert!(
                !matches!(
                    key.as_str(),
                    "type"
                        | "default"
                        | "nullable"
                        | "description"
                        | "additionalProperties"
                        | "$ref"
                ) && !key.starts_with("x-kubernetes-"),
                "{path}: {key} is not allowed inside a logical junctor of a structural schema"
            );
            for junctor in ["allOf", "anyOf", "oneOf", "not"] {
                if key == junctor {
                    assert_value_validation_only(path, value);
                }
            }
        }
    }
}

#[test]
fn schemas_are_structural() {
    for (name, schema) in schemas() {
        walk(&name, &schema, &mut |path, node| {
            for forbidden in ["$ref", "definitions", "$defs"] {
                assert!(
                    node.get(forbidden).is_none(),
                    "{path}: {forbidden} is not allowed in a structural schema"
                );
            }
            for junctor in ["allOf", "anyOf", "oneOf", "not"] {
                if let Some(members) = node.get(junctor) {
                    assert_value_validation_only(path, members);
                }
            }
            let typed = node.get("type").is_some()
                || node.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
                || node.get("x-kubernetes-int-or-string") == Some(&json!(true));
            assert!(typed, "{path}: every node needs a type: {node}");
            if node.get("properties").is_some() {
                assert_eq!(node["type"], "object", "{path}");
            }
            if node["type"] == "array" {
                assert!(node.get("items").is_some(), "{path}: arrays need items");
            }
            if let Some(keys) = node
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
            {
                let required = node["items"]["required"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for key in keys {
                    assert!(
                        required.contains(key),
                        "{path}: list-map key {key} must be required"
                    );
                }
            }
        });
    }
}

#[test]
fn enums_match_the_api_reference() {
    let group = schema_of("contactgroups.notification.miloapis.com");
    assert_eq!(
        group["properties"]["spec"]["properties"]["visibility"]["enum"],
        json!(["public", "private"])
    );
    let policy = schema_of("contactgroupenrollmentpolicies.notification.miloapis.com");
    let spec = &policy["properties"]["spec"]["properties"];
    assert_eq!(
        spec["trigger"]["properties"]["type"]["enum"],
        json!(["ContactCreated"])
    );
    assert_eq!(
        spec["contactSelector"]["properties"]["subjectKind"]["enum"],
        json!(["User"])
    );
    assert_eq!(spec["backfill"]["default"], json!(false));
    let invitation = schema_of("userinvitations.iam.miloapis.com");
    let spec = &invitation["properties"]["spec"];
    assert_eq!(
        spec["properties"]["state"]["enum"],
        json!(["Pending", "Accepted", "Declined"])
    );
    assert_eq!(spec["properties"]["roles"]["minItems"], 1);
    assert_eq!(spec["properties"]["roles"]["maxItems"], 100);
    let required: BTreeSet<&str> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        required,
        BTreeSet::from(["organizationRef", "email", "roles", "state"])
    );
    let email = schema_of("emails.notification.miloapis.com");
    assert_eq!(
        email["properties"]["spec"]["properties"]["priority"]["enum"],
        json!(["low", "normal", "high"])
    );
    assert_eq!(
        email["properties"]["spec"]["properties"]["cc"]["maxItems"],
        10
    );
}

#[test]
fn every_cel_rule_compiles_within_the_cost_budget() {
    let mut rules = 0;
    for (name, schema) in schemas() {
        let compiled = compile_schema(&schema);
        assert!(
            !compiled.has_errors(),
            "{name}: {:?}",
            compiled.compilation_errors()
        );
        walk(&name, &schema, &mut |path, node| {
            for rule in node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                rules += 1;
                let text = rule["rule"].as_str().unwrap();
                assert!(
                    rule["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{path}: rule {text} needs a message"
                );
                let warnings = estimate_rule_cost(text, &compile_schema(node));
                assert!(warnings.is_empty(), "{path}: {text}: {warnings:?}");
            }
        });
    }
    assert!(rules >= 9, "found {rules} rules");
}

/// Milo's transition rules start with `type(oldSelf) == null_type || `. The API server runs a
/// rule that reads `oldSelf` only on an update that has the old value (there is no
/// `optionalOldSelf`), where that test is false, so the rest of the rule decides. kube-cel's CEL
/// has no `type()`, so the client-side check evaluates the rest.
const NULL_OLD_SELF: &str = "type(oldSelf) == null_type || ";

fn as_the_api_server_evaluates(node: &mut Value) {
    match node {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "rule"
                    && let Some(rest) = value.as_str().and_then(|r| r.strip_prefix(NULL_OLD_SELF))
                {
                    *value = rest.into();
                } else {
                    as_the_api_server_evaluates(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(as_the_api_server_evaluates),
        _ => {}
    }
}

fn cel_errors(crd: &str, new: Value, old: Option<Value>) -> Vec<String> {
    let mut schema = schema_of(crd);
    as_the_api_server_evaluates(&mut schema);
    match Validator::new().validate(&schema, &new, old.as_ref()) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn membership(contact: &str) -> Value {
    json!({"apiVersion": "notification.miloapis.com/v1alpha1", "kind": "ContactGroupMembership",
           "metadata": {"name": "m", "namespace": "ns"},
           "spec": {"contactRef": {"name": contact, "namespace": "ns"}, "contactGroupRef": {"name": "g", "namespace": "ns"}}})
}

#[test]
fn cel_rules_enforce_what_their_messages_say() {
    let crd = "contactgroupmemberships.notification.miloapis.com";
    assert!(cel_errors(crd, membership("a"), Some(membership("a"))).is_empty());
    assert_eq!(
        cel_errors(crd, membership("b"), Some(membership("a"))),
        ["spec is immutable"]
    );
    let crd = "contactgroupmembershipremovals.notification.miloapis.com";
    let mut removal = membership("b");
    removal["kind"] = json!("ContactGroupMembershipRemoval");
    let mut old = membership("a");
    old["kind"] = json!("ContactGroupMembershipRemoval");
    assert_eq!(cel_errors(crd, removal, Some(old)), ["spec is immutable"]);

    let group = |visibility: &str| json!({"metadata": {"name": "g"}, "spec": {"displayName": "G", "visibility": visibility}});
    let crd = "contactgroups.notification.miloapis.com";
    assert_eq!(
        cel_errors(crd, group("private"), Some(group("public"))),
        ["visibility type is immutable"]
    );
    assert!(cel_errors(crd, group("public"), Some(group("public"))).is_empty());

    let invitation = |state: &str| {
        json!({"metadata": {"name": "i"}, "spec": {
        "organizationRef": {"name": "acme"}, "email": "a@example.com", "roles": [{"name": "viewer"}], "state": state}})
    };
    let crd = "userinvitations.iam.miloapis.com";
    assert!(cel_errors(crd, invitation("Accepted"), Some(invitation("Pending"))).is_empty());
    assert_eq!(
        cel_errors(crd, invitation("Pending"), Some(invitation("Declined"))),
        ["state can only transition from Pending to another state and is immutable afterwards"]
    );

    // Milo's rule form, `type(oldSelf) == null_type || self == oldSelf`, with Milo's messages.
    let mut renamed = invitation("Pending");
    renamed["spec"]["givenName"] = json!("Ann");
    let mut old = invitation("Pending");
    old["spec"]["givenName"] = json!("Anna");
    old["spec"]["email"] = json!("b@example.com");
    assert_eq!(
        cel_errors(crd, renamed, Some(old)),
        ["email type is immutable", "givenName type is immutable"]
    );

    let crd = "contactgroups.notification.miloapis.com";
    let with_providers = |providers: Value| {
        let mut g = group("public");
        g["spec"]["providers"] = providers;
        g
    };
    let loops = |id: &str| json!([{"name": "Loops", "id": id}]);
    let providers_message = "providers can only be added, not removed, and their IDs are immutable. In order to update or remove, delete the ContactGroup and create a new one.";
    assert!(cel_errors(crd, with_providers(loops("a")), Some(group("public"))).is_empty());
    assert!(
        cel_errors(
            crd,
            with_providers(loops("a")),
            Some(with_providers(loops("a")))
        )
        .is_empty()
    );
    assert_eq!(
        cel_errors(
            crd,
            with_providers(loops("b")),
            Some(with_providers(loops("a")))
        ),
        [providers_message]
    );
    assert_eq!(
        cel_errors(crd, group("public"), Some(with_providers(loops("a")))),
        [providers_message]
    );

    let email = |recipient: Value| json!({"metadata": {"name": "e"}, "spec": {"templateRef": {"name": "t"}, "recipient": recipient}});
    let crd = "emails.notification.miloapis.com";
    assert!(cel_errors(crd, email(json!({"emailAddress": "a@example.com"})), None).is_empty());
    assert_eq!(
        cel_errors(
            crd,
            email(json!({"emailAddress": "a@example.com", "userRef": {"name": "u"}})),
            None
        ),
        ["exactly one of userRef or emailAddress must be set"]
    );
    assert_eq!(
        cel_errors(crd, email(json!({})), None),
        ["exactly one of userRef or emailAddress must be set"]
    );
}

#[test]
fn email_broadcast_matches_milo_and_defaults_its_ready_condition() {
    let crd = crds::all()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some("emailbroadcasts.notification.miloapis.com"))
        .expect("EmailBroadcast CRD");
    let annotations = crd.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("discovery.miloapis.com/parent-contexts")
            .map(String::as_str),
        Some("Platform,User")
    );
    let columns: Vec<&str> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["DisplayName", "ContactGroup", "Template", "Ready", "Age"]
    );
    let schema = schema_of("emailbroadcasts.notification.miloapis.com");
    let conditions = &schema["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["default"][0]["reason"], "CreatePending");
    assert_eq!(conditions["default"][0]["status"], "Unknown");
}
