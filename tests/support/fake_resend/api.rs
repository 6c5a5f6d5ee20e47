//! The fake's API: Resend's routes applied to the fake's state, in Resend's shapes.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ExistingEmail, FakeContact, FakeHandle, FakeSegment};

pub(super) fn error(status: StatusCode, name: &str, message: &str) -> Response {
    let body = json!({"statusCode": status.as_u16(), "name": name, "message": message});
    (status, axum::Json(body)).into_response()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn contact_json(c: &FakeContact) -> Value {
    json!({
        "object": "contact", "id": c.id, "email": c.email, "first_name": c.first_name,
        "last_name": c.last_name, "unsubscribed": c.unsubscribed,
        "created_at": "2026-01-01T00:00:00Z", "properties": {},
    })
}

pub(super) fn page<T>(
    items: &[T],
    id: impl Fn(&T) -> &str,
    to_json: impl Fn(&T) -> Value,
    query: &str,
    default: usize,
) -> Response {
    let limit = match query_param(query, "limit").map(|l| l.parse::<usize>()) {
        None => default,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        Some(_) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_parameter",
                "limit must be 1-100",
            );
        }
    };
    let start = match query_param(query, "after") {
        None => 0,
        Some(after) => match items.iter().position(|i| id(i) == after) {
            Some(p) => p + 1,
            None => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_parameter",
                    "unknown cursor",
                );
            }
        },
    };
    let rest = &items[start.min(items.len())..];
    let data: Vec<Value> = rest.iter().take(limit).map(to_json).collect();
    let body = json!({"object": "list", "has_more": rest.len() > limit, "data": data});
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn str_field(body: &Value, key: &str) -> Option<Option<String>> {
    body.get(key).map(|v| v.as_str().map(String::from))
}

/// The API itself, applied to the state.
pub(super) fn route(
    fake: &FakeHandle,
    method: &Method,
    path_and_query: &str,
    body: &[u8],
) -> Response {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_parameter",
                    "body is not JSON",
                );
            }
        }
    };
    let not_found = || error(StatusCode::NOT_FOUND, "not_found", "Not found");
    let ok = |v: Value| (StatusCode::OK, axum::Json(v)).into_response();
    let created = |v: Value| (StatusCode::CREATED, axum::Json(v)).into_response();
    let mut inner = fake.lock();
    if let Some(answer) = super::topics::route(&mut inner, method, &segments, query, &body) {
        return answer;
    }
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["contacts"]) => {
            let segment = query_param(query, "segment_id");
            if let Some(s) = &segment
                && inner.find_segment(s).is_none()
            {
                return not_found();
            }
            let list: Vec<FakeContact> = inner
                .contacts
                .iter()
                .filter(|c| segment.as_ref().is_none_or(|s| c.segments.contains(s)))
                .cloned()
                .collect();
            page(
                &list,
                |c| &c.id,
                contact_json,
                query,
                inner.config.default_page,
            )
        }
        (Method::POST, ["contacts"]) => {
            let Some(Some(email)) = str_field(&body, "email") else {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing_required_field",
                    "email is required",
                );
            };
            // `segments` must be a list of ids the account has; one unknown id refuses the
            // whole create (the reference names no error: 404, as for the add path).
            let segments: BTreeSet<String> = match body.get("segments") {
                None => BTreeSet::new(),
                Some(Value::Array(ids)) if ids.iter().all(Value::is_string) => ids
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
                Some(_) => {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_parameter",
                        "segments must be an array of segment ids",
                    );
                }
            };
            if segments.iter().any(|s| inner.find_segment(s).is_none()) {
                return error(StatusCode::NOT_FOUND, "not_found", "Segment not found");
            }
            // An existing address: refused, or answered with the existing id; either way, as
            // the strictest reading of an undocumented case, its segments are left untouched.
            if let Some(i) = inner.find_contact(&email) {
                return match inner.config.existing_email {
                    ExistingEmail::Conflict => error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "validation_error",
                        "Contact already exists",
                    ),
                    ExistingEmail::ReturnExisting => {
                        created(json!({"object": "contact", "id": inner.contacts[i].id}))
                    }
                };
            }
            let id = inner.new_id();
            inner.contacts.push(FakeContact {
                id: id.clone(),
                email,
                first_name: str_field(&body, "first_name").flatten(),
                last_name: str_field(&body, "last_name").flatten(),
                unsubscribed: body
                    .get("unsubscribed")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                segments,
            });
            created(json!({"object": "contact", "id": id}))
        }
        (Method::GET, ["contacts", key]) => match inner.find_contact(key) {
            Some(i) => ok(contact_json(&inner.contacts[i])),
            None => not_found(),
        },
        (Method::PATCH, ["contacts", key]) => {
            let Some(i) = inner.find_contact(key) else {
                return not_found();
            };
            if let Some(Some(email)) = str_field(&body, "email")
                && inner.find_contact(&email).is_some_and(|j| j != i)
            {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_error",
                    "Email already in use",
                );
            }
            let c = &mut inner.contacts[i];
            if let Some(Some(email)) = str_field(&body, "email") {
                c.email = email;
            }
            if let Some(v) = str_field(&body, "first_name") {
                c.first_name = v;
            }
            if let Some(v) = str_field(&body, "last_name") {
                c.last_name = v;
            }
            if let Some(v) = body.get("unsubscribed").and_then(Value::as_bool) {
                c.unsubscribed = v;
            }
            ok(json!({"object": "contact", "id": c.id}))
        }
        (Method::DELETE, ["contacts", key]) => match inner.find_contact(key) {
            Some(i) => {
                let c = inner.contacts.remove(i);
                ok(json!({"object": "contact", "id": c.id, "deleted": true}))
            }
            None => not_found(),
        },
        (Method::POST, ["contacts", key, "segments", segment]) => {
            let (Some(i), Some(_)) = (inner.find_contact(key), inner.find_segment(segment)) else {
                return not_found();
            };
            let c = &mut inner.contacts[i];
            c.segments.insert(segment.to_string());
            created(json!({"id": c.id, "contact_id": c.id, "segment_id": segment}))
        }
        (Method::DELETE, ["contacts", key, "segments", segment]) => {
            let Some(i) = inner.find_contact(key) else {
                return not_found();
            };
            let c = &mut inner.contacts[i];
            if c.segments.remove(*segment) {
                ok(json!({"id": c.id, "segment_id": segment, "deleted": true}))
            } else {
                not_found()
            }
        }
        (Method::GET, ["suppressions"]) => page(
            &inner.suppressions,
            |s| &s.0,
            |(id, email, origin)| json!({"id": id, "email": email, "origin": origin, "created_at": "2026-01-01T00:00:00Z"}),
            query,
            inner.config.default_page,
        ),
        (Method::GET, ["segments"]) => page(
            &inner.segments,
            |s| &s.id,
            |s| json!({"id": s.id, "name": s.name, "created_at": "2026-01-01T00:00:00Z"}),
            query,
            inner.config.default_page,
        ),
        (Method::POST, ["segments"]) => {
            let Some(Some(name)) = str_field(&body, "name") else {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing_required_field",
                    "name is required",
                );
            };
            let id = inner.new_id();
            inner.segments.push(FakeSegment {
                id: id.clone(),
                name,
            });
            created(json!({"object": "segment", "id": id}))
        }
        (Method::GET, ["segments", id]) => match inner.find_segment(id) {
            Some(i) => {
                let s = &inner.segments[i];
                ok(json!({"object": "segment", "id": s.id, "name": s.name}))
            }
            None => not_found(),
        },
        (Method::DELETE, ["segments", id]) => {
            if inner.delete_segment(id) {
                ok(json!({"object": "segment", "id": id, "deleted": true}))
            } else {
                not_found()
            }
        }
        _ => not_found(),
    }
}
