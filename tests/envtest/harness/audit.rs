//! The API server's audit log (every request at Metadata level, JSON lines): who asked what, and
//! what the API server answered. Tests count the server's requests and the writes the API server
//! refused it.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// One completed request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    /// `create`, `update`, `patch`, `get`, `list`, `watch`, `delete`, …
    pub verb: String,
    /// `contactgroupmemberships`, or `contactgroupmemberships/status` for a subresource.
    pub resource: String,
    /// The object's namespace ("" for cluster-scoped or collection requests).
    pub namespace: String,
    /// The object's name ("" for collections).
    pub name: String,
    /// The HTTP status answered.
    pub code: u16,
    /// The answer's message, for refusals.
    pub message: String,
    /// The authenticated user.
    pub user: String,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}/{} -> {} {}",
            self.verb, self.resource, self.namespace, self.name, self.code, self.message
        )
    }
}

/// Every completed request in the audit log at `path`.
pub fn events(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete" || e["stage"] == "Panic")
        .map(|e| {
            let object = &e["objectRef"];
            let str_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let mut resource = str_of(&object["resource"]);
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            Event {
                verb: str_of(&e["verb"]),
                resource,
                namespace: str_of(&object["namespace"]),
                name: str_of(&object["name"]),
                code: e["responseStatus"]["code"]
                    .as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(0),
                message: str_of(&e["responseStatus"]["message"]),
                user: str_of(&e["user"]["username"]),
            }
        })
        .collect()
}

/// Writes (`create`, `update`, `patch`) by `user` that the API server refused (code >= 400).
/// Denials a test provokes on purpose are its own user's, so they never show up here.
pub fn refused_writes(path: &Path, user: &str) -> Vec<Event> {
    events(path)
        .into_iter()
        .filter(|e| e.user == user)
        .filter(|e| matches!(e.verb.as_str(), "create" | "update" | "patch"))
        .filter(|e| e.code >= 400)
        .collect()
}

/// Refused writes by `user` that happened more than once, identically (same verb, object, code
/// and message), with their counts: a write the server keeps sending although the API server
/// cannot take it.
pub fn repeated_refusals(path: &Path, user: &str) -> Vec<(Event, usize)> {
    let mut counts: BTreeMap<Event, usize> = BTreeMap::new();
    for event in refused_writes(path, user) {
        *counts.entry(event).or_default() += 1;
    }
    counts.into_iter().filter(|(_, n)| *n > 1).collect()
}

/// How many requests `user` made with `verb` on `resource` (`plural` or `plural/subresource`).
pub fn count(path: &Path, user: &str, verb: &str, resource: &str) -> usize {
    events(path)
        .iter()
        .filter(|e| e.user == user && e.verb == verb && e.resource == resource)
        .count()
}
