//! One `coordination.k8s.io` Lease served the way the API server serves it, including what
//! leader election depends on: a write (PUT) carries the `resourceVersion` it was based on, and
//! one based on an older version is a 409 Conflict. Every client shares the one Lease; each
//! request is answered at once. Every holder the Lease ever had is recorded, in order.

use std::sync::{Arc, Mutex};

use http::Method;
use kube::Client;
use serde_json::{Map, Value, json};

/// The Lease: its spec, its resourceVersion, and its history of holders.
#[derive(Default)]
pub struct LeaseState {
    pub spec: Option<Map<String, Value>>,
    pub version: u64,
    /// Every holder the Lease ever had, in order.
    pub holders: Vec<String>,
}

impl LeaseState {
    fn object(&self, namespace: &str, name: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace,
                "resourceVersion": self.version.to_string()},
            "spec": self.spec})
    }

    fn write(&mut self, body: &Value) {
        self.spec = Some(body["spec"].as_object().cloned().unwrap_or_default());
        self.version += 1;
        let holder = self
            .spec
            .as_ref()
            .and_then(|s| s.get("holderIdentity"))
            .and_then(Value::as_str);
        if let Some(holder) = holder
            && self.holders.last().map(String::as_str) != Some(holder)
        {
            self.holders.push(holder.to_owned());
        }
    }

    fn handle(&mut self, method: &Method, body: Value) -> (u16, Value) {
        let exists = self.spec.is_some();
        match *method {
            Method::GET if exists => (200, Value::Null),
            Method::GET => (404, status(404, "NotFound")),
            Method::POST if exists => (409, status(409, "AlreadyExists")),
            Method::POST => {
                self.write(&body);
                (201, Value::Null)
            }
            Method::PUT if !exists => (404, status(404, "NotFound")),
            Method::PUT => {
                let based_on = body["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default();
                if based_on != self.version.to_string() {
                    return (409, status(409, "Conflict"));
                }
                self.write(&body);
                (200, Value::Null)
            }
            _ => (405, status(405, "MethodNotAllowed")),
        }
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
        "reason": reason, "message": reason})
}

/// A kube client whose Lease requests `lease` answers.
pub fn client(lease: Arc<Mutex<LeaseState>>) -> Client {
    super::mock_api::answering(move |parts, body| {
        let segments: Vec<&str> = parts.uri.path().split('/').collect();
        let namespace = segments.get(5).copied().unwrap_or_default();
        let name = match parts.method {
            Method::POST => body["metadata"]["name"].as_str().unwrap_or_default(),
            _ => segments.get(7).copied().unwrap_or_default(),
        }
        .to_owned();
        let mut lease = lease.lock().unwrap();
        let (code, answer) = lease.handle(&parts.method, body);
        if answer.is_null() {
            (code, lease.object(namespace, &name))
        } else {
            (code, answer)
        }
    })
}
