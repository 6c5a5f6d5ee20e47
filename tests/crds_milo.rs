//! Our CRDs are a superset of Milo's: every field, type, format, enum, default, validation,
//! printer column and selectable field of Milo's CRD for a kind is in ours unchanged, so applying
//! ours over Milo's prunes nothing Milo's controllers write and rejects nothing Milo's accepts
//! for a reason Milo's would not. Ours only adds.
//!
//! Milo's CRDs (v0.32.5) are checked in next to this repository under
//! `shared/reference/milo-crds/`. The test lists every difference at once, each with its path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use milo_webhook::crds;
use serde_json::Value;

fn milo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/milo-crds")
}

/// Milo's CRDs by file name.
fn milo_crds() -> Vec<(String, Value)> {
    let dir = milo_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "Milo's CRDs are missing: {} ({e}); they are checked in under shared/reference/milo-crds \
             next to this repository (CI always has them)",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let crd: Value =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, crd)
        })
        .collect()
}

/// Ours by CRD name.
fn our_crds() -> BTreeMap<String, Value> {
    crds::all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap();
            (name, serde_json::to_value(&crd).unwrap())
        })
        .collect()
}

/// Equal as the API server sees them: numbers by value (`0` and `0.0` are the same minimum).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|other| same(v, other)))
        }
        _ => a == b,
    }
}

/// The schema keywords compared: everything that decides what the API server accepts, keeps or
/// fills in (not `description`).
const KEYWORDS: &[&str] = &[
    "type",
    "format",
    "enum",
    "default",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "nullable",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
];

fn compare_schema(path: &str, milo: &Value, ours: &Value, problems: &mut Vec<String>) {
    for &keyword in KEYWORDS {
        let Some(theirs) = milo.get(keyword) else {
            continue;
        };
        match ours.get(keyword) {
            None => problems.push(format!("{path}: {keyword} missing (Milo: {theirs})")),
            Some(mine) if !same(theirs, mine) => problems.push(format!(
                "{path}: {keyword} differs: Milo {theirs}, ours {mine}"
            )),
            Some(_) => {}
        }
    }
    // `required` is a set.
    if let Some(theirs) = milo.get("required").and_then(Value::as_array) {
        let mut theirs: Vec<&str> = theirs.iter().filter_map(Value::as_str).collect();
        let mut mine: Vec<&str> = ours
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        theirs.sort_unstable();
        mine.sort_unstable();
        if theirs != mine {
            problems.push(format!(
                "{path}: required differs: Milo {theirs:?}, ours {mine:?}"
            ));
        }
    }
    if let Some(properties) = milo.get("properties").and_then(Value::as_object) {
        for (name, theirs) in properties {
            let child = format!("{path}.{name}");
            match ours.get("properties").and_then(|p| p.get(name)) {
                Some(mine) => compare_schema(&child, theirs, mine, problems),
                None => problems.push(format!("{child}: missing")),
            }
        }
    }
    if let Some(theirs) = milo.get("items") {
        match ours.get("items") {
            Some(mine) => compare_schema(&format!("{path}[]"), theirs, mine, problems),
            None => problems.push(format!("{path}[]: items missing")),
        }
    }
    if let Some(theirs) = milo.get("additionalProperties").filter(|v| v.is_object()) {
        match ours.get("additionalProperties").filter(|v| v.is_object()) {
            Some(mine) => compare_schema(&format!("{path}{{}}"), theirs, mine, problems),
            None => problems.push(format!("{path}{{}}: additionalProperties missing")),
        }
    }
}

fn compare_crd(name: &str, milo: &Value, ours: &Value, problems: &mut Vec<String>) {
    for key in ["group", "scope"] {
        if milo["spec"][key] != ours["spec"][key] {
            problems.push(format!(
                "{name}: spec.{key} differs: Milo {}, ours {}",
                milo["spec"][key], ours["spec"][key]
            ));
        }
    }
    for (key, theirs) in milo["spec"]["names"].as_object().into_iter().flatten() {
        let mine = &ours["spec"]["names"][key];
        if !same(theirs, mine) {
            problems.push(format!(
                "{name}: spec.names.{key} differs: Milo {theirs}, ours {mine}"
            ));
        }
    }
    for (key, theirs) in milo["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        // The version of the tool that generated Milo's file says nothing about the kind.
        if key == "controller-gen.kubebuilder.io/version" {
            continue;
        }
        let mine = &ours["metadata"]["annotations"][key];
        if theirs != mine {
            problems.push(format!(
                "{name}: annotation {key} differs: Milo {theirs}, ours {mine}"
            ));
        }
    }
    let our_versions = ours["spec"]["versions"].as_array().unwrap();
    for theirs in milo["spec"]["versions"].as_array().unwrap() {
        let version = theirs["name"].as_str().unwrap();
        let at = format!("{name} {version}");
        let Some(mine) = our_versions.iter().find(|v| v["name"] == version) else {
            problems.push(format!("{at}: version missing"));
            continue;
        };
        for key in ["served", "storage"] {
            if theirs[key] != mine[key] {
                problems.push(format!(
                    "{at}: {key} differs: Milo {}, ours {}",
                    theirs[key], mine[key]
                ));
            }
        }
        // Subresources: ours may add (the enrollment policy's status), never drop or change.
        for (key, sub) in theirs["subresources"].as_object().into_iter().flatten() {
            if !same(sub, &mine["subresources"][key]) {
                problems.push(format!(
                    "{at}: subresource {key} differs: Milo {sub}, ours {}",
                    mine["subresources"][key]
                ));
            }
        }
        // Printer columns: Milo's first, in Milo's order, equal; ours after, under other names.
        let their_columns = theirs["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let my_columns = mine["additionalPrinterColumns"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, column) in their_columns.iter().enumerate() {
            match my_columns.get(i) {
                Some(c) if same(c, column) => {}
                Some(c) => problems.push(format!(
                    "{at}: printer column {i} differs: Milo {column}, ours {c}"
                )),
                None => problems.push(format!("{at}: printer column {i} missing: {column}")),
            }
        }
        for column in my_columns.iter().skip(their_columns.len()) {
            if their_columns.iter().any(|c| c["name"] == column["name"]) {
                problems.push(format!(
                    "{at}: our printer column {column} takes the name of one of Milo's"
                ));
            }
        }
        // Selectable fields: field selectors that work against Milo's work against ours.
        let my_fields = mine["selectableFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for field in theirs["selectableFields"].as_array().into_iter().flatten() {
            if !my_fields.contains(field) {
                problems.push(format!("{at}: selectable field {field} missing"));
            }
        }
        compare_schema(
            &format!("{at} "),
            &theirs["schema"]["openAPIV3Schema"],
            &mine["schema"]["openAPIV3Schema"],
            problems,
        );
    }
}

#[test]
fn our_crds_contain_every_field_and_rule_of_milos() {
    let ours = our_crds();
    let milo = milo_crds();
    assert_eq!(
        milo.len(),
        ours.len(),
        "one Milo CRD per kind we serve in {}",
        milo_dir().display()
    );
    let mut problems = Vec::new();
    for (file, theirs) in &milo {
        let name = theirs["metadata"]["name"].as_str().unwrap();
        match ours.get(name) {
            Some(mine) => compare_crd(name, theirs, mine, &mut problems),
            None => problems.push(format!("{file}: we have no CRD {name}")),
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences from Milo's CRDs:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// The comparison itself finds what it should: a dropped field, a changed rule message, a
/// missing default and a reordered printer column are all named.
#[test]
fn the_comparison_names_every_difference() {
    let (_, milo) = milo_crds()
        .into_iter()
        .find(|(f, _)| f == "notification.miloapis.com_contactgroups.yaml")
        .expect("Milo's ContactGroup CRD");
    let name = "contactgroups.notification.miloapis.com";
    let mut ours = our_crds().remove(name).unwrap();
    let schema = &mut ours["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    schema["properties"]["status"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("providerID");
    schema["properties"]["spec"]["properties"]["visibility"]["x-kubernetes-validations"][0]["message"] =
        "changed".into();
    schema["properties"]["status"]["properties"]["conditions"]
        .as_object_mut()
        .unwrap()
        .remove("default");
    schema["properties"]["status"]["properties"]["conditions"]["items"]["properties"]["observedGeneration"]
        ["minimum"] = 0.into();
    ours["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array_mut()
        .unwrap()
        .swap(0, 1);
    let mut problems = Vec::new();
    compare_crd(name, &milo, &ours, &mut problems);
    let expected = [
        "v1alpha1 .status.providerID: missing",
        "v1alpha1 .spec.visibility: x-kubernetes-validations differs",
        "v1alpha1 .status.conditions: default missing",
        "printer column 0 differs",
        "printer column 1 differs",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for fragment in expected {
        assert!(
            problems.iter().any(|p| p.contains(fragment)),
            "{fragment} not in {problems:#?}"
        );
    }
}
