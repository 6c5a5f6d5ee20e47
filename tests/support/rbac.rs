//! The RBAC in `manifests/deploy/rbac.yaml`, evaluated like the API server's authorizer would for
//! one of its service accounts: `milo-webhook` (admission, provider events and every controller
//! but invitation) or `milo-webhook-invitations` (the invitation controller). The mock API checks
//! every request a controller makes against its account, so a controller that needs a permission
//! the manifests do not grant fails its test here instead of in a production cluster.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// One policy rule.
#[derive(Debug)]
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    /// When not empty, the rule covers requests naming one of these objects only.
    names: Vec<String>,
}

/// Rules that apply everywhere (ClusterRoles bound by ClusterRoleBindings) and rules that apply
/// in one namespace (Roles bound by RoleBindings).
#[derive(Debug, Default)]
struct Grants {
    cluster: Vec<Rule>,
    namespaced: Vec<(String, Rule)>,
}

/// The service account of the milo-webhook Deployment.
pub const CONTROLLERS: &str = "milo-webhook";
/// The service account of the invitation controller's Deployment.
pub const INVITATIONS: &str = "milo-webhook-invitations";

const NAMESPACE: &str = "milo-system";

fn grants(account: &'static str) -> &'static Grants {
    static GRANTS: OnceLock<Mutex<HashMap<&'static str, &'static Grants>>> = OnceLock::new();
    let cache = GRANTS.get_or_init(Mutex::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(account)
        .or_insert_with(|| Box::leak(Box::new(load(account))))
}

fn load(account: &str) -> Grants {
    {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/deploy/rbac.yaml");
        let text = std::fs::read_to_string(path).expect("rbac.yaml");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rbac.yaml parses");
        let bound = |binding: &Value| {
            binding["subjects"].as_array().is_some_and(|subjects| {
                subjects.iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["namespace"] == NAMESPACE
                        && s["name"] == account
                })
            })
        };
        let role = |kind: &str, name: &str, namespace: Option<&str>| {
            docs.iter()
                .find(|d| {
                    d["kind"] == kind
                        && d["metadata"]["name"] == name
                        && namespace.is_none_or(|ns| d["metadata"]["namespace"] == ns)
                })
                .unwrap_or_else(|| panic!("rbac.yaml binds missing {kind} {name}"))
        };
        let rules = |role: &Value| -> Vec<Rule> {
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            role["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| Rule {
                    groups: strings(&r["apiGroups"]),
                    resources: strings(&r["resources"]),
                    verbs: strings(&r["verbs"]),
                    names: strings(&r["resourceNames"]),
                })
                .collect()
        };
        let mut grants = Grants::default();
        for doc in &docs {
            if !bound(doc) {
                continue;
            }
            let role_name = doc["roleRef"]["name"].as_str().unwrap_or_default();
            match (doc["kind"].as_str(), doc["roleRef"]["kind"].as_str()) {
                (Some("ClusterRoleBinding"), _) => {
                    grants
                        .cluster
                        .extend(rules(role("ClusterRole", role_name, None)))
                }
                (Some("RoleBinding"), Some(role_kind)) => {
                    let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
                    let found = if role_kind == "Role" {
                        role("Role", role_name, Some(ns))
                    } else {
                        role("ClusterRole", role_name, None)
                    };
                    grants
                        .namespaced
                        .extend(rules(found).into_iter().map(|r| (ns.to_owned(), r)));
                }
                _ => {}
            }
        }
        grants
    }
}

/// What a request asks for, in authorizer terms.
#[derive(Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    /// The object's name, for requests that name one.
    pub name: Option<String>,
}

/// Parses a request path the way the API server's request-info resolver does.
pub fn attributes(method: &str, path: &str, query: &str) -> Option<Attributes> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        rest => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => ((*resource).to_owned(), None),
        [resource, name] => ((*resource).to_owned(), Some((*name).to_owned())),
        [resource, name, sub] => (format!("{resource}/{sub}"), Some((*name).to_owned())),
        _ => return None,
    };
    let named = name.is_some();
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if query.contains("watch=true") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        // Not a request: the check the API server makes, on the role, as a binding is created.
        ("bind", true) => "bind",
        _ => return None,
    };
    Some(Attributes {
        verb: verb.into(),
        group,
        resource,
        namespace,
        name,
    })
}

fn allows(rule: &Rule, wanted: &Attributes) -> bool {
    let any = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
    let named = rule.names.is_empty()
        || wanted
            .name
            .as_ref()
            .is_some_and(|name| rule.names.contains(name));
    any(&rule.groups, &wanted.group)
        && any(&rule.resources, &wanted.resource)
        && any(&rule.verbs, &wanted.verb)
        && named
}

/// Why the milo-webhook service account may not make this request, or `None` when it may.
pub fn denied(method: &str, path: &str, query: &str) -> Option<String> {
    denied_as(CONTROLLERS, method, path, query)
}

/// Why `account` may not make this request, or `None` when it may.
pub fn denied_as(account: &'static str, method: &str, path: &str, query: &str) -> Option<String> {
    let Some(wanted) = attributes(method, path, query) else {
        return Some(format!("cannot resolve {method} {path} to RBAC attributes"));
    };
    let grants = grants(account);
    let allowed = grants.cluster.iter().any(|r| allows(r, &wanted))
        || grants
            .namespaced
            .iter()
            .any(|(ns, r)| wanted.namespace.as_deref() == Some(ns) && allows(r, &wanted));
    (!allowed).then(|| {
        format!(
            "manifests/deploy/rbac.yaml does not let {account} {} {}{} in {}",
            wanted.verb,
            wanted.resource,
            if wanted.group.is_empty() {
                String::new()
            } else {
                format!(".{}", wanted.group)
            },
            wanted.namespace.as_deref().unwrap_or("the cluster scope"),
        )
    })
}
