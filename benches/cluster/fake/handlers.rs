//! Request routing: the path names the resource (`/api/v1/...`, `/apis/GROUP/VERSION/...`,
//! optionally under `namespaces/NS/`, then a name and a subresource), the method and query the
//! verb. Writes wait for a slot (the concurrency bound) and the configured latency before they
//! touch the store, the way writes to a real API server wait on etcd.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use super::Shared;
use super::objects::{self, ApiError, Writer};
use super::patch::{self, PatchKind};
use super::resources::{self, RESOURCES};
use super::selector::Selector;
use super::store::{Key, Write};
use super::watch::{self, WatchRequest};

/// What a path names.
#[derive(Debug, PartialEq)]
pub struct Target {
    pub resource: usize,
    /// `None` for cluster-scoped objects and cluster-wide collections.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses an API path; `None` when it names nothing the fake serves.
pub fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] => (Some(ns.to_string()), prepend(plural, rest)),
        _ => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    let resource = resources::find(group, version, plural)?;
    let rt = &RESOURCES[resource];
    if namespace.is_some() && !rt.namespaced {
        return None;
    }
    if subresource.as_deref().is_some_and(|s| s != "status") {
        return None;
    }
    Some(Target {
        resource,
        namespace,
        name,
        subresource,
    })
}

fn prepend<'a>(first: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![first];
    all.extend_from_slice(rest);
    all
}

/// Decodes a query string into its parameters.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every request.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(target) = parse_path(uri.path()) else {
        let status = super::objects::status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
        return json_response(404, &status);
    };
    let query = parse_query(uri.query().unwrap_or_default());
    let rt = &RESOURCES[target.resource];
    let resource_label = match &target.subresource {
        Some(sub) => format!("{}/{sub}", rt.plural),
        None => rt.plural.to_owned(),
    };
    let verb = verb(&method, &target, &query, &headers);
    if verb == "watch" {
        shared.count(verb, &resource_label);
        return watch(shared, &target, &query);
    }
    let result = match verb {
        "list" => list(&shared, &target, &query),
        "get" => get(&shared, &target),
        _ => {
            let _slot = shared.writes.acquire().await;
            if !shared.config.write_latency.is_zero() {
                tokio::time::sleep(shared.config.write_latency).await;
            }
            write(&shared, verb, &target, &query, &headers, &body)
        }
    };
    // Counted once answered, failures apart (`create:409`), so the count and `last` of a
    // write verb say how many objects were stored and when the last one was.
    match &result {
        Ok(_) => shared.count(verb, &resource_label),
        Err(error) => shared.count(&format!("{verb}:{}", error.code), &resource_label),
    }
    match result {
        Ok((code, body)) => bytes_response(code, body),
        Err(error) => json_response(error.code, &error.body),
    }
}

fn verb(
    method: &Method,
    target: &Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> &'static str {
    let named = target.name.is_some();
    match *method {
        Method::GET if named => "get",
        Method::GET if query.get("watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if content_type.starts_with("application/apply-patch") {
                "apply"
            } else {
                "patch"
            }
        }
        Method::DELETE => "delete",
        _ => "unsupported",
    }
}

type Answer = Result<(u16, Bytes), ApiError>;

fn namespace_of(target: &Target) -> &str {
    target.namespace.as_deref().unwrap_or_default()
}

fn scope_ok(target: &Target) -> Result<(), ApiError> {
    let rt = &RESOURCES[target.resource];
    if rt.namespaced && target.namespace.is_none() {
        return Err(ApiError::bad_request(format!(
            "{} is namespaced: the request needs a namespace",
            rt.qualified()
        )));
    }
    Ok(())
}

fn selector(query: &HashMap<String, String>) -> Result<Selector, ApiError> {
    Selector::parse(
        query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)
}

fn list(shared: &Shared, target: &Target, query: &HashMap<String, String>) -> Answer {
    let rt = &RESOURCES[target.resource];
    let selector = selector(query)?;
    let limit = match query.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request("invalid limit"))?,
        ),
        None => None,
    };
    let token = match query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => Some(decode_continue(token)?),
        None => None,
    };
    let after = token.as_ref().map(|(_, key)| key);
    let page = shared.store.list(
        target.resource,
        target.namespace.as_deref(),
        &selector,
        limit,
        after,
    );
    let rv = token.as_ref().map_or(page.rv, |(rv, _)| *rv);
    let mut out = BytesMut::new();
    let head = serde_json::json!({
        "apiVersion": rt.api_version(),
        "kind": format!("{}List", rt.kind),
    });
    let head = serde_json::to_string(&head).unwrap_or_default();
    out.put_slice(&head.as_bytes()[..head.len() - 1]);
    out.put_slice(format!(",\"metadata\":{{\"resourceVersion\":\"{rv}\"").as_bytes());
    if let Some(next) = &page.next {
        out.put_slice(format!(",\"continue\":\"{}\"", encode_continue(rv, next)).as_bytes());
    }
    out.put_slice(b"},\"items\":[");
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&item.json);
    }
    out.put_slice(b"]}");
    Ok((200, out.freeze()))
}

fn encode_continue(rv: u64, (namespace, name): &Key) -> String {
    let raw = serde_json::json!([rv, namespace, name]).to_string();
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<(u64, Key), ApiError> {
    let bad = || ApiError::bad_request("invalid continue token");
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let (rv, namespace, name): (u64, String, String) =
        serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((rv, (namespace, name)))
}

fn watch(shared: Arc<Shared>, target: &Target, query: &HashMap<String, String>) -> Response {
    let selector = match selector(query) {
        Ok(s) => s,
        Err(e) => return json_response(e.code, &e.body),
    };
    let since = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse::<u64>().ok())
        .filter(|rv| *rv > 0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let request = WatchRequest {
        resource: target.resource,
        namespace: target.namespace.clone(),
        selector,
        since,
        bookmarks: query
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true"),
        timeout: Duration::from_secs(timeout),
    };
    let body = Body::from_stream(watch::stream(shared, request));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(body)
        .expect("static headers are valid")
}

fn get(shared: &Shared, target: &Target) -> Answer {
    scope_ok(target)?;
    let name = target.name.as_deref().unwrap_or_default();
    match shared
        .store
        .get(target.resource, namespace_of(target), name)
    {
        Some(object) => Ok((200, object.json.clone())),
        None => Err(ApiError::not_found(&RESOURCES[target.resource], name)),
    }
}

fn write(
    shared: &Shared,
    verb: &str,
    target: &Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    scope_ok(target)?;
    let rt = &RESOURCES[target.resource];
    let namespace = namespace_of(target);
    let manager = query
        .get("fieldManager")
        .map(String::as_str)
        .unwrap_or("unknown");
    let name = target.name.as_deref().unwrap_or_default();
    let subresource = target.subresource.as_deref();
    // Undeclared fields: pruned from what non-apply writes store, refused in applies.
    let crd = objects::crd_schema(rt);
    let prune = |object: &mut Value| {
        if let Some(crd) = crd {
            crd.prune(object);
        }
    };
    match verb {
        "create" if target.name.is_none() => {
            let mut object: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
            prune(&mut object);
            let writer = Writer {
                manager,
                operation: "Update",
                subresource: None,
            };
            let created = shared
                .store
                .create(target.resource, namespace, object, &writer)?;
            Ok((201, created.json.clone()))
        }
        "update" if target.name.is_some() => {
            let object: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
            let precondition = object["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_owned);
            let write = Write {
                writer: Writer {
                    manager,
                    operation: "Update",
                    subresource,
                },
                sent: object.clone(),
                precondition,
            };
            let updated =
                shared
                    .store
                    .update(target.resource, namespace, name, &write, |current| {
                        *current = object;
                        prune(current);
                        Ok(())
                    })?;
            Ok((200, updated.json.clone()))
        }
        "patch" | "apply" if target.name.is_some() => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let kind = PatchKind::from_content_type(content_type)?;
            let sent = kind.parse(body)?;
            let force = query.get("force").is_some_and(|f| f == "true");
            let precondition = match kind {
                PatchKind::Json => None,
                _ => sent["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_owned),
            };
            let write = Write {
                writer: Writer {
                    manager,
                    operation: kind.operation(),
                    subresource,
                },
                sent: if kind == PatchKind::Json {
                    Value::Null
                } else {
                    sent.clone()
                },
                precondition,
            };
            let applying = kind == PatchKind::Apply;
            if applying && let Some(crd) = crd {
                patch::refuse_undeclared(crd, &sent)?;
            }
            let result = shared
                .store
                .update(target.resource, namespace, name, &write, |current| {
                    if applying && !force {
                        let conflicts = patch::apply_conflicts(current, &sent, manager);
                        if !conflicts.is_empty() {
                            let why = format!(
                                "Apply failed with {} conflict(s): {}",
                                conflicts.len(),
                                conflicts.join(", ")
                            );
                            return Err(ApiError::conflict(rt, name, &why));
                        }
                    }
                    match crd {
                        Some(crd) if applying => {
                            patch::apply_owned(crd, current, &sent, &write.writer);
                            Ok(())
                        }
                        _ => {
                            kind.apply_to(current, &sent)?;
                            prune(current);
                            Ok(())
                        }
                    }
                });
            match result {
                Ok(updated) => Ok((200, updated.json.clone())),
                // Server-side apply creates what does not exist yet (not through /status).
                Err(e) if e.code == 404 && applying && subresource.is_none() => {
                    let mut object = sent.clone();
                    object["metadata"]["name"] = Value::from(name);
                    let writer = Writer {
                        manager,
                        operation: "Apply",
                        subresource: None,
                    };
                    let created =
                        shared
                            .store
                            .create(target.resource, namespace, object, &writer)?;
                    Ok((201, created.json.clone()))
                }
                Err(e) => Err(e),
            }
        }
        "delete" if target.name.is_some() && subresource.is_none() => {
            let deleted = shared.store.delete(target.resource, namespace, name)?;
            Ok((200, deleted.json.clone()))
        }
        _ => Err(ApiError {
            code: 405,
            body: super::objects::status(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            ),
        }),
    }
}

fn bytes_response(code: u16, body: Bytes) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("static headers are valid")
}

fn json_response(code: u16, body: &Value) -> Response {
    bytes_response(
        code,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
    )
}
