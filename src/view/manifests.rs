//! Offline feeding of the view from manifest files: the `--state` of `serve`, `review` and
//! `check`. Files are YAML (multi-document) or JSON (one document or a stream of them); a
//! `kind: List` contributes its items. Every format is read one object at a time (see
//! [`stream`]), so a million-object state file never sits in memory as one document.

mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Store, Viewed};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};

use crate::api::{
    Contact, ContactGroup, ContactGroupEnrollmentPolicy, ContactGroupMembership,
    ContactGroupMembershipRemoval, Email, EmailBroadcast, EmailTemplate, User, UserInvitation,
};

/// Why a state file could not be loaded; names the file and document so it can be fixed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The path could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A document is not valid YAML/JSON.
    #[error("{path}: document {document} is not valid {format}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based document number.
        document: usize,
        /// YAML or JSON.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A document is a known kind but does not match its schema.
    #[error("{path}: document {document} ({kind} {name}): {message}")]
    Object {
        /// The file.
        path: PathBuf,
        /// 1-based document number.
        document: usize,
        /// apiVersion/kind.
        kind: String,
        /// metadata.name, if readable.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// What a load found: objects stored per kind and kinds passed over.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Files read.
    pub files: usize,
    /// Objects stored, by kind.
    pub stored: BTreeMap<String, usize>,
    /// Objects of kinds the view does not index (Namespaces, say), by apiVersion/kind.
    pub skipped: BTreeMap<String, usize>,
}

impl LoadReport {
    /// Objects stored in all.
    pub fn total(&self) -> usize {
        self.stored.values().sum()
    }
}

/// Loads every file under `paths` (files, or directories read recursively in name order).
pub fn load_paths(store: &mut Store, paths: &[PathBuf]) -> Result<LoadReport, LoadError> {
    let mut report = LoadReport::default();
    for path in paths {
        for file in manifest_files(path)? {
            load_file(store, &file, &mut report)?;
        }
    }
    Ok(report)
}

/// The manifest files a path stands for: itself, or the `.yaml`/`.yml`/`.json` files below it.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    if !path.metadata().map_err(io)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            files.extend(manifest_files(&entry)?);
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            files.push(entry);
        }
    }
    Ok(files)
}

fn load_file(store: &mut Store, path: &Path, report: &mut LoadReport) -> Result<(), LoadError> {
    report.files += 1;
    stream::for_each_object(path, &mut |document, value| {
        apply_document(store, value, report).map_err(|(kind, name, message)| LoadError::Object {
            path: path.to_owned(),
            document,
            kind,
            name,
            message,
        })
    })
}

/// Every object under `paths` with its file and 1-based document number, `kind: List` items
/// expanded, for commands that need the objects themselves (not just the view's records). Meant
/// for human-sized inputs: the objects are all kept.
pub fn read_objects(paths: &[PathBuf]) -> Result<Vec<(PathBuf, usize, Value)>, LoadError> {
    fn expand(file: &Path, document: usize, value: Value, out: &mut Vec<(PathBuf, usize, Value)>) {
        match value.get("items").and_then(Value::as_array) {
            Some(items)
                if value
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List")) =>
            {
                for item in items.clone() {
                    expand(file, document, item, out);
                }
            }
            _ => out.push((file.to_owned(), document, value)),
        }
    }
    let mut out = Vec::new();
    for path in paths {
        for file in manifest_files(path)? {
            stream::for_each_object(&file, &mut |document, value| {
                expand(&file, document, value, &mut out);
                Ok(())
            })?;
        }
    }
    Ok(out)
}

type ObjectError = (String, String, String);

fn apply_document(
    store: &mut Store,
    value: Value,
    report: &mut LoadReport,
) -> Result<(), ObjectError> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind == "List" || kind.ends_with("List") && value.get("items").is_some_and(Value::is_array) {
        let Value::Array(items) = value.get("items").cloned().unwrap_or_default() else {
            return Ok(());
        };
        return items
            .into_iter()
            .try_for_each(|item| apply_document(store, item, report));
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    let stored = apply_object(store, &api_version, &kind, value)
        .map_err(|message| (format!("{api_version}/{kind}"), name, message))?;
    let counter = if stored {
        &mut report.stored
    } else {
        &mut report.skipped
    };
    let label = if stored {
        kind
    } else {
        format!("{api_version}/{kind}")
    };
    *counter.entry(label).or_default() += 1;
    Ok(())
}

fn typed<K: Viewed>(store: &mut Store, value: Value) -> Result<bool, String> {
    let object: K = serde_json::from_value(value).map_err(|e| e.to_string())?;
    if object.meta().name.as_deref().unwrap_or_default().is_empty() {
        return Err("metadata.name is required".into());
    }
    object.apply_to(store);
    Ok(true)
}

/// Stores one object if its kind is indexed; `Ok(false)` for kinds the view does not keep.
pub fn apply_object(
    store: &mut Store,
    api_version: &str,
    kind: &str,
    value: Value,
) -> Result<bool, String> {
    match (api_version, kind) {
        ("notification.miloapis.com/v1alpha1", "Contact") => typed::<Contact>(store, value),
        ("notification.miloapis.com/v1alpha1", "ContactGroup") => {
            typed::<ContactGroup>(store, value)
        }
        ("notification.miloapis.com/v1alpha1", "ContactGroupMembership") => {
            typed::<ContactGroupMembership>(store, value)
        }
        ("notification.miloapis.com/v1alpha1", "ContactGroupMembershipRemoval") => {
            typed::<ContactGroupMembershipRemoval>(store, value)
        }
        ("notification.miloapis.com/v1alpha1", "ContactGroupEnrollmentPolicy") => {
            typed::<ContactGroupEnrollmentPolicy>(store, value)
        }
        ("iam.miloapis.com/v1alpha1", "User") => typed::<User>(store, value),
        ("iam.miloapis.com/v1alpha1", "UserInvitation") => typed::<UserInvitation>(store, value),
        ("rbac.authorization.k8s.io/v1", "Role") => typed::<Role>(store, value),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => typed::<ClusterRole>(store, value),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => typed::<RoleBinding>(store, value),
        ("notification.miloapis.com/v1alpha1", "Email") => typed::<Email>(store, value),
        ("notification.miloapis.com/v1alpha1", "EmailTemplate") => {
            typed::<EmailTemplate>(store, value)
        }
        ("notification.miloapis.com/v1alpha1", "EmailBroadcast") => {
            typed::<EmailBroadcast>(store, value)
        }
        _ => Ok(false),
    }
}
