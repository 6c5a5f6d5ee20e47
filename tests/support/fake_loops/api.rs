//! The fake's API: Loops' routes applied to the fake's state, in Loops' shapes.
//!
//! `PUT /contacts/update` follows Loops' reference: the contact is looked up by `userId` or
//! `email`; when one matches, the other value is set on it (an email change in place, or a
//! `userId` given to a contact that had none); when none matches, one is created with both,
//! subscribed unless told otherwise. Stricter than the reference where it is silent: an email
//! held by a different contact than the `userId`'s, or by a contact with another `userId`, is
//! 409 (as `POST /contacts/create` documents for an existing email); unknown properties and
//! unknown mailing lists are 400; and nothing is applied when any part is refused.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{FakeContact, FakeHandle, Inner};

/// The properties an upsert may carry: Loops' default ones (custom properties must be created
/// in Loops first, and this account has none).
const PROPERTIES: [&str; 8] = [
    "email",
    "userId",
    "firstName",
    "lastName",
    "subscribed",
    "mailingLists",
    "source",
    "userGroup",
];

/// Loops' error body: `{"success": false, "message"}`.
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"success": false, "message": message})),
    )
        .into_response()
}

fn ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

fn contact_json(c: &FakeContact) -> Value {
    let lists: Map<String, Value> = c.lists.iter().map(|l| (l.clone(), json!(true))).collect();
    json!({
        "id": c.id, "email": c.email, "firstName": c.first_name, "lastName": c.last_name,
        "source": c.source, "subscribed": c.subscribed, "userGroup": "", "userId": c.user_id,
        "mailingLists": lists, "optInStatus": null,
    })
}

pub(super) fn route(
    fake: &FakeHandle,
    method: &Method,
    path_and_query: &str,
    body: &[u8],
) -> Response {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut inner = fake.lock();
    let known = [
        "/api-key",
        "/contacts/update",
        "/contacts/find",
        "/contacts/delete",
        "/lists",
    ];
    match (method.clone(), path) {
        (Method::GET, "/api-key") => ok(json!({"success": true, "teamName": "Fake team"})),
        (Method::PUT, "/contacts/update") => upsert(&mut inner, body),
        (Method::GET, "/contacts/find") => find(&inner, query),
        (Method::POST, "/contacts/delete") => delete(&mut inner, body),
        (Method::GET, "/lists") => ok(Value::Array(
            inner
                .lists
                .iter()
                .map(|l| {
                    json!({"id": l.id, "name": l.name, "description": l.description,
                           "isPublic": l.is_public})
                })
                .collect(),
        )),
        (_, p) if known.contains(&p) => error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// A string field: `Ok(None)` when absent, a 400's message when present but not a non-empty
/// string.
fn text(body: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} must be a non-empty string")),
    }
}

/// A name: absent (leave), `null` (clear) or a string.
fn name(body: &Map<String, Value>, key: &str) -> Result<Option<Option<String>>, String> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

fn plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty() && domain.contains('.') && !email.chars().any(char::is_whitespace)
}

fn upsert(inner: &mut Inner, body: &[u8]) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "Body must be a JSON object");
    };
    if let Some(key) = body.keys().find(|k| !PROPERTIES.contains(&k.as_str())) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("Contact property {key} does not exist"),
        );
    }
    let parsed = (|| {
        let email = text(&body, "email")?;
        let user_id = text(&body, "userId")?;
        let first = name(&body, "firstName")?;
        let last = name(&body, "lastName")?;
        let subscribed = match body.get("subscribed") {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                return Err("subscribed must be a boolean".into());
            }
        };
        let lists: BTreeMap<String, bool> = match body.get("mailingLists") {
            None => BTreeMap::new(),
            Some(Value::Object(lists)) => {
                let mut out = BTreeMap::new();
                for (id, on) in lists {
                    let Some(on) = on.as_bool() else {
                        return Err("mailingLists values must be booleans".into());
                    };
                    if !inner.list_exists(id) {
                        return Err(format!("Mailing list {id} not found"));
                    }
                    out.insert(id.clone(), on);
                }
                out
            }
            Some(_) => {
                return Err("mailingLists must be an object".into());
            }
        };
        Ok((email, user_id, first, last, subscribed, lists))
    })();
    let (email, user_id, first, last, subscribed, lists) = match parsed {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    if email.is_none() && user_id.is_none() {
        return error(StatusCode::BAD_REQUEST, "An email or userId is required");
    }
    if let Some(email) = &email
        && !plausible_email(email)
    {
        return error(StatusCode::BAD_REQUEST, "Invalid email address");
    }
    let by_user = user_id.as_deref().and_then(|u| inner.by_user_id(u));
    let by_email = email.as_deref().and_then(|e| inner.by_email(e));
    let target = match (by_user, by_email) {
        (Some(a), Some(b)) if a != b => {
            return error(
                StatusCode::CONFLICT,
                "Email already in use by another contact",
            );
        }
        (Some(a), _) => Some(a),
        (None, Some(b)) => {
            if inner.contacts[b].user_id.is_some() && user_id.is_some() {
                // Another userId holds this email: Loops would overwrite it; refusing is the
                // strictest reading, and nothing of ours should rely on the overwrite.
                return error(
                    StatusCode::CONFLICT,
                    "Email already in use by another contact",
                );
            }
            Some(b)
        }
        (None, None) => None,
    };
    let index = match target {
        Some(i) => i,
        None => {
            let Some(email) = email.clone() else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "An email is required to create a contact",
                );
            };
            let id = inner.new_id("contact");
            inner.contacts.push(FakeContact {
                id,
                email,
                user_id: None,
                first_name: None,
                last_name: None,
                // Loops: "All new contacts are subscribed by default."
                subscribed: true,
                lists: BTreeSet::new(),
                source: "API".into(),
            });
            inner.contacts.len() - 1
        }
    };
    let contact = &mut inner.contacts[index];
    if let Some(email) = email {
        contact.email = email;
    }
    if let Some(user_id) = user_id {
        contact.user_id = Some(user_id);
    }
    if let Some(first) = first {
        contact.first_name = first;
    }
    if let Some(last) = last {
        contact.last_name = last;
    }
    if let Some(subscribed) = subscribed {
        contact.subscribed = subscribed;
    }
    for (id, on) in lists {
        if on {
            contact.lists.insert(id);
        } else {
            contact.lists.remove(&id);
        }
    }
    ok(json!({"success": true, "id": contact.id}))
}

fn find(inner: &Inner, query: &str) -> Response {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let found = match params.as_slice() {
        [(key, value)] if key == "email" && !value.is_empty() => inner.by_email(value),
        [(key, value)] if key == "userId" && !value.is_empty() => inner.by_user_id(value),
        _ => {
            return error(StatusCode::BAD_REQUEST, "Search by one of email or userId");
        }
    };
    ok(Value::Array(
        found
            .map(|i| contact_json(&inner.contacts[i]))
            .into_iter()
            .collect(),
    ))
}

fn delete(inner: &mut Inner, body: &[u8]) -> Response {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "Body must be a JSON object");
    };
    let found = match (text(&body, "email"), text(&body, "userId"), body.len()) {
        (Ok(Some(email)), Ok(None), 1) => inner.by_email(&email),
        (Ok(None), Ok(Some(user_id)), 1) => inner.by_user_id(&user_id),
        _ => return error(StatusCode::BAD_REQUEST, "Provide one of email or userId"),
    };
    match found {
        Some(i) => {
            inner.contacts.remove(i);
            ok(json!({"success": true, "message": "Contact deleted."}))
        }
        None => error(StatusCode::NOT_FOUND, "Contact not found."),
    }
}
