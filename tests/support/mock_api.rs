//! A scripted mock API server for controller tests (the kube-rs `controller-rs` pattern): the kube
//! client talks to a `tower-test` mock service, and a task answers each request from a script,
//! checking method, path, query and body as it goes. A request the script does not expect, or one
//! that differs from it, fails the scenario with a message saying which step and what differed.
//! Every request is also checked against `manifests/deploy/rbac.yaml` (see [`super::rbac`]), and a
//! server-side apply naming a field our CRD does not declare fails the scenario, since a real API
//! server refuses it whatever the script answers (see [`super::schema`]).

use std::fmt::Write as _;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected request and the answer to it.
pub struct Exchange {
    pub method: Method,
    pub path: String,
    /// Substrings the query string must contain (`fieldManager=milo-webhook`, say).
    pub query: Vec<String>,
    /// A JSON pattern the body must match: every key given must be present with a matching
    /// value; arrays must match element by element and have the same length.
    pub body: Option<Value>,
    /// Bodies that must not contain these top-level-or-nested keys (`status.conditions`, say).
    pub absent: Vec<String>,
    pub status: u16,
    pub response: Value,
}

impl Exchange {
    fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            absent: Vec::new(),
            status: 200,
            response: json!({}),
        }
    }
    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }
    pub fn post(path: &str) -> Self {
        Self::new(Method::POST, path).status(201)
    }
    pub fn patch(path: &str) -> Self {
        Self::new(Method::PATCH, path)
    }
    pub fn delete(path: &str) -> Self {
        Self::new(Method::DELETE, path)
    }
    /// An Event about anything, with this reason; Events go to `namespace` (`default` for
    /// cluster-scoped objects).
    pub fn event(namespace: &str, reason: &str) -> Self {
        Self::post(&format!(
            "/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        ))
        .body(json!({"reason": reason}))
    }
    pub fn query(mut self, part: &str) -> Self {
        self.query.push(part.into());
        self
    }
    pub fn body(mut self, pattern: Value) -> Self {
        self.body = Some(pattern);
        self
    }
    /// The body must not have this dotted path.
    pub fn without(mut self, dotted: &str) -> Self {
        self.absent.push(dotted.into());
        self
    }
    pub fn status(mut self, code: u16) -> Self {
        self.status = code;
        self
    }
    pub fn respond(mut self, body: Value) -> Self {
        self.response = body;
        self
    }
    /// Answers with a Kubernetes Status error.
    pub fn fail(self, code: u16, reason: &str, message: &str) -> Self {
        self.status(code)
            .respond(status_body(code, reason, message, &[]))
    }
    /// Answers with an admission denial carrying these cause reasons (what the webhook returns).
    pub fn deny(self, code: u16, reason: &str, message: &str, causes: &[&str]) -> Self {
        self.status(code)
            .respond(status_body(code, reason, message, causes))
    }
    /// 404 NotFound.
    pub fn not_found(self) -> Self {
        self.fail(404, "NotFound", "not found")
    }
    /// 409 AlreadyExists.
    pub fn already_exists(self) -> Self {
        self.fail(409, "AlreadyExists", "already exists")
    }
}

/// A Kubernetes Status body.
pub fn status_body(code: u16, reason: &str, message: &str, causes: &[&str]) -> Value {
    let causes: Vec<Value> = causes
        .iter()
        .map(|r| json!({"reason": r, "message": r, "field": "spec"}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "code": code, "reason": reason, "message": message,
        "details": {"causes": causes},
    })
}

/// A kube client wired to a mock API server, and the handle that answers it.
pub fn client() -> (Client, ApiServer) {
    client_as(super::rbac::CONTROLLERS)
}

/// [`client`] for a controller running under `account` (see [`super::rbac`]): its requests are
/// checked against that service account's grants.
pub fn client_as(account: &'static str) -> (Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (
        Client::new(service, "default"),
        ApiServer { handle, account },
    )
}

/// The answering side.
pub struct ApiServer {
    handle: Handle,
    account: &'static str,
}

/// What one step saw, for assertions beyond the script.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

impl ApiServer {
    /// Answers requests from `script` in order, then stops answering; the task's result is every
    /// request seen. It panics (failing the awaiting test) at the first mismatch.
    pub fn run(mut self, scenario: &'static str, script: Vec<Exchange>) -> JoinHandle<Vec<Seen>> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for (step, expected) in script.into_iter().enumerate() {
                let Some((request, send)) = self.handle.next_request().await else {
                    panic!(
                        "{scenario}: step {step}: client went away; still expected {} {}",
                        expected.method, expected.path
                    );
                };
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("request body");
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                        panic!("{scenario}: step {step}: body is not JSON ({e})")
                    })
                };
                let query = parts.uri.query().unwrap_or_default().to_owned();
                let mut problems = String::new();
                if parts.method != expected.method || parts.uri.path() != expected.path {
                    let _ = write!(
                        problems,
                        "\n  expected {} {}\n  got      {} {}",
                        expected.method,
                        expected.path,
                        parts.method,
                        parts.uri.path()
                    );
                }
                if let Some(why) = super::rbac::denied_as(
                    self.account,
                    parts.method.as_str(),
                    parts.uri.path(),
                    &query,
                ) {
                    let _ = write!(problems, "\n  RBAC: {why}");
                }
                let apply = parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(super::schema::is_apply);
                if apply
                    && let Some(crd) = super::schema::for_path(parts.uri.path())
                    && let Some(why) = crd.refusal(&body)
                {
                    let _ = write!(problems, "\n  a real API server refuses this apply: {why}");
                }
                for part in &expected.query {
                    if !query.contains(part.as_str()) {
                        let _ = write!(problems, "\n  query {query:?} lacks {part:?}");
                    }
                }
                if let Some(pattern) = &expected.body
                    && let Err(why) = matches(pattern, &body, "")
                {
                    let _ = write!(problems, "\n  body: {why}\n  body was {body:#}");
                }
                for dotted in &expected.absent {
                    if lookup(&body, dotted).is_some() {
                        let _ = write!(problems, "\n  body must not have {dotted}: {body:#}");
                    }
                }
                assert!(
                    problems.is_empty(),
                    "{scenario}: step {step} ({} {}):{problems}",
                    expected.method,
                    expected.path
                );
                seen.push(Seen {
                    method: parts.method.clone(),
                    path: parts.uri.path().to_owned(),
                    body,
                });
                let response = Response::builder()
                    .status(expected.status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&expected.response).unwrap()))
                    .unwrap();
                send.send_response(response);
            }
            seen
        })
    }
}

fn lookup<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(value, |v, key| v.as_object()?.get(key))
}

/// Whether `actual` matches `pattern` (see [`Exchange::body`]).
pub fn matches(pattern: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (pattern, actual) {
        (Value::Object(p), Value::Object(a)) => {
            for (key, want) in p {
                let here = format!("{at}.{key}");
                match a.get(key) {
                    Some(got) => matches(want, got, &here)?,
                    None => return Err(format!("{here} missing (want {want})")),
                }
            }
            Ok(())
        }
        (Value::Array(p), Value::Array(a)) => {
            if p.len() != a.len() {
                return Err(format!("{at}: {} items, want {}", a.len(), p.len()));
            }
            for (i, (want, got)) in p.iter().zip(a).enumerate() {
                matches(want, got, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        _ if pattern == actual => Ok(()),
        _ => Err(format!("{at}: got {actual}, want {pattern}")),
    }
}

/// A JSON answer with `code`.
pub fn json_response(code: u16, answer: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(answer).unwrap()))
        .unwrap()
}

/// A kube client whose every request `answer` answers at once, from the request's head and its
/// body read as JSON (`null` when empty or not JSON): the stateful fakes' transport.
pub fn answering(
    mut answer: impl FnMut(&http::request::Parts, Value) -> (u16, Value) + Send + 'static,
) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, reply) = answer(&parts, body);
            send.send_response(json_response(code, &reply));
        }
    });
    Client::new(service, "default")
}
