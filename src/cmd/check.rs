//! `milo-webhook check`: try plain manifests against a state the way `kubectl apply` would, and
//! say what the API server would answer, in kubectl's words. For people, not for reviews.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine;
use clap::Args;
use serde_json::{Value, json};

use crate::admission::chain::run_all;
use crate::admission::registry::WEBHOOKS;
use crate::admission::review::parse_review_value;
use crate::admission::{Settings, Verdict};
use crate::crds;
use crate::view::manifests::{apply_object, load_paths, read_objects};
use crate::view::{ClusterView, Store};

/// Flags of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifests of the cluster state (files or directories, repeatable); without it the
    /// manifests are checked against an empty cluster.
    #[arg(long, env = "MILO_WEBHOOK_STATE", value_delimiter = ',')]
    pub state: Vec<PathBuf>,
    /// Username the requests are made as.
    #[arg(long = "as", env = "MILO_WEBHOOK_CHECK_AS", default_value = "admin")]
    pub as_user: String,
    /// UID the requests are made as (the name of the requester's User).
    #[arg(long, env = "MILO_WEBHOOK_CHECK_AS_UID")]
    pub as_uid: Option<String>,
    /// Mark the requests as made by the user on their own behalf (Milo's user context).
    #[arg(long, env = "MILO_WEBHOOK_CHECK_AS_USER_CONTEXT")]
    pub as_user_context: bool,
    /// Output format: kubectl's lines, or one JSON array of outcomes.
    #[arg(short = 'o', long, env = "MILO_WEBHOOK_CHECK_OUTPUT", default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Decide as if it were this time (RFC 3339).
    #[arg(long, env = "MILO_WEBHOOK_NOW", value_parser = super::parse_time)]
    pub now: Option<jiff::Timestamp>,
    /// Settings the rules read.
    #[command(flatten)]
    pub rules: super::RuleArgs,
    /// Manifests to try, in order; each admitted object is part of the state for the next.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// The outcome for one object.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The file it came from.
    pub file: String,
    /// `kind.group/name`, as kubectl names it.
    pub object: String,
    /// CREATE or UPDATE.
    pub operation: String,
    /// The verdict.
    pub allowed: bool,
    /// The webhook that denied it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The denial `Status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
    /// Warnings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The JSON Patch the mutating webhooks applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Value>,
    /// The line kubectl would print.
    pub message: String,
}

type ObjectKey = (String, String, String, String);

/// Kinds the state reads that are not ours: Kubernetes RBAC (invitations check roles and
/// organization memberships). `(group, kind) -> (plural, namespaced)`.
const BUILT_IN: &[(&str, &str, &str, bool)] = &[
    ("rbac.authorization.k8s.io", "Role", "roles", true),
    (
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRole",
        "clusterroles",
        false,
    ),
];

fn resource_of(
    crds: &HashMap<(String, String), (String, bool)>,
    group: &str,
    kind: &str,
) -> Option<(String, bool)> {
    crds.get(&(group.to_owned(), kind.to_owned()))
        .cloned()
        .or_else(|| {
            BUILT_IN
                .iter()
                .find(|(g, k, _, _)| *g == group && *k == kind)
                .map(|(_, _, plural, namespaced)| ((*plural).to_owned(), *namespaced))
        })
}

/// `apiVersion`, `kind` and `metadata.name` of a manifest, or what keeps it from being one (the
/// words kubectl would need to apply it).
fn manifest_identity(object: &Value) -> Result<(String, String, String), String> {
    let map = match object {
        Value::Object(map) => map,
        other => {
            let what = match other {
                Value::Null => "empty",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                _ => "a list",
            };
            return Err(format!(
                "is not a Kubernetes manifest: it is {what}, not a mapping with apiVersion, kind and metadata"
            ));
        }
    };
    let text = |field: &str| match map.get(field) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        Some(Value::String(_)) | None => {
            Err(format!("is not a Kubernetes manifest: {field} is missing"))
        }
        Some(_) => Err(format!(
            "is not a Kubernetes manifest: {field} is not a string"
        )),
    };
    let (api_version, kind) = (text("apiVersion")?, text("kind")?);
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| format!("({api_version} {kind}) has no metadata.name"))?;
    Ok((api_version, kind, name.to_owned()))
}

fn key_of(object: &Value) -> ObjectKey {
    let text = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    (
        text("/apiVersion"),
        text("/kind"),
        text("/metadata/namespace"),
        text("/metadata/name"),
    )
}

/// Runs the check; `Ok((output, any_rejected))`, `Err` is one line for stderr (exit 2).
pub fn run(args: &CheckArgs) -> Result<(String, bool), String> {
    let mut store = Store::admission_only();
    load_paths(&mut store, &args.state).map_err(|e| format!("cannot load state: {e}"))?;
    let mut existing: HashMap<ObjectKey, Value> = read_objects(&args.state)
        .map_err(|e| format!("cannot load state: {e}"))?
        .into_iter()
        .map(|(_, _, o)| (key_of(&o), o))
        .collect();
    let candidates = read_objects(&args.files).map_err(|e| e.to_string())?;
    let view = ClusterView::offline(store);
    let settings = Settings {
        clock: args.now,
        ..args.rules.settings()
    };
    let resources: HashMap<(String, String), (String, bool)> = crds::all()
        .into_iter()
        .map(|crd| {
            (
                (crd.spec.group, crd.spec.names.kind),
                (crd.spec.names.plural, crd.spec.scope == "Namespaced"),
            )
        })
        .collect();
    let mut outcomes = Vec::new();
    for (index, (file, document, mut object)) in candidates.into_iter().enumerate() {
        let file_name = file.display().to_string();
        let (api_version, kind, name) = manifest_identity(&object)
            .map_err(|what| format!("{file_name}: document {document} {what}"))?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let label = format!("{}.{group}/{name}", kind.to_lowercase());
        let Some((plural, namespaced)) = resource_of(&resources, group, &kind) else {
            return Err(format!(
                "{file_name}: document {document}: {api_version} {kind} is not a kind milo-webhook serves"
            ));
        };
        if namespaced && object.pointer("/metadata/namespace").is_none() {
            object["metadata"]["namespace"] = json!("default");
        }
        let namespace = object
            .pointer("/metadata/namespace")
            .cloned()
            .unwrap_or(Value::Null);
        let old = existing.get(&key_of(&object)).cloned();
        let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
        let guarded = WEBHOOKS
            .iter()
            .any(|w| w.matches(group, &plural, operation));
        let (verdict, denier) = if guarded {
            let review = review_for(
                args,
                index,
                (group, version, &kind, &plural),
                &name,
                namespace,
                operation,
                &object,
                old,
            );
            let request = parse_review_value(review)
                .map_err(|bad| format!("{file_name}: {}", bad.message))?;
            run_all(request, &view, &settings)
        } else {
            // The API server calls no webhook for this kind and operation: kubectl would get it.
            (
                Verdict::Allow {
                    patch: json_patch::Patch(Vec::new()),
                    warnings: Vec::new(),
                },
                None,
            )
        };
        let outcome = match verdict {
            Verdict::Allow { patch, warnings } => {
                if json_patch::patch(&mut object, &patch).is_ok() {
                    let _ = apply_object(&mut view.write(), &api_version, &kind, object.clone());
                    existing.insert(key_of(&object), object);
                }
                let verb = if operation == "CREATE" {
                    "created"
                } else {
                    "configured"
                };
                Outcome {
                    file: file_name,
                    message: format!("{label} {verb}"),
                    object: label,
                    operation: operation.into(),
                    allowed: true,
                    webhook: None,
                    status: None,
                    warnings,
                    patch: (!patch.0.is_empty())
                        .then(|| serde_json::to_value(&patch).unwrap_or_default()),
                }
            }
            Verdict::Deny(denial) => {
                let webhook = denier
                    .map(|w| w.name.to_owned())
                    .unwrap_or_else(|| "milo-webhook".into());
                let verb = if operation == "CREATE" {
                    "creating"
                } else {
                    "replacing"
                };
                let reason = denial.reason;
                Outcome {
                    message: format!(
                        "Error from server ({reason}): error when {verb} {file_name:?}: admission webhook {webhook:?} denied the request: {}",
                        denial.message
                    ),
                    file: file_name,
                    object: label,
                    operation: operation.into(),
                    allowed: false,
                    webhook: Some(webhook),
                    status: serde_json::to_value(&denial).ok(),
                    warnings: Vec::new(),
                    patch: None,
                }
            }
        };
        outcomes.push(outcome);
    }
    let rejected = outcomes.iter().any(|o| !o.allowed);
    let output = if args.output == "json" {
        serde_json::to_string_pretty(&outcomes).map_err(|e| e.to_string())?
    } else {
        let mut lines = Vec::new();
        for outcome in &outcomes {
            lines.extend(outcome.warnings.iter().map(|w| format!("Warning: {w}")));
            lines.push(outcome.message.clone());
        }
        lines.join("\n")
    };
    Ok((output, rejected))
}

#[allow(clippy::too_many_arguments)]
fn review_for(
    args: &CheckArgs,
    index: usize,
    (group, version, kind, plural): (&str, &str, &str, &str),
    name: &str,
    namespace: Value,
    operation: &str,
    object: &Value,
    old: Option<Value>,
) -> Value {
    let uid = args.as_uid.clone().unwrap_or_default();
    let mut user =
        json!({"username": args.as_user, "uid": uid, "groups": ["system:authenticated"]});
    if args.as_user_context {
        user["extra"] = json!({"iam.miloapis.com/parent-type": ["User"], "iam.miloapis.com/parent-name": [uid]});
    }
    let uid = format!(
        "check-{index}-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name)
    );
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": plural},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": user,
            "object": object,
            "oldObject": old,
            "dryRun": false,
        }
    })
}
