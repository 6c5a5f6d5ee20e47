//! The fake's topics: `GET/POST /topics`, `GET/DELETE /topics/{id}`, and a contact's
//! subscriptions, `GET/PATCH /contacts/{id|email}/topics`. As strict as Resend where it is known:
//! a name of at most 50 characters, `default_subscription` `opt_in` or `opt_out` (required,
//! fixed), `visibility` `public` or `private` (default private); a PATCH naming an unknown topic
//! changes nothing (404); an unknown contact is 404. A contact's topics list every topic with
//! its effective subscription (its choice, else the topic's default).

use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api::{error, page};
use super::{FakeHandle, Inner};

/// A topic in the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeTopic {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub default_subscription: String,
    pub visibility: String,
}

/// Topics and the choices contacts made, by (contact id, topic id).
#[derive(Default)]
pub struct TopicState {
    topics: Vec<FakeTopic>,
    choices: HashMap<(String, String), String>,
}

impl TopicState {
    fn effective(&self, contact: &str, topic: &FakeTopic) -> String {
        self.choices
            .get(&(contact.to_owned(), topic.id.clone()))
            .cloned()
            .unwrap_or_else(|| topic.default_subscription.clone())
    }
}

impl FakeHandle {
    /// Every topic, in creation order.
    pub fn topics(&self) -> Vec<FakeTopic> {
        self.lock().topics.topics.clone()
    }

    /// `email`'s effective subscription to the topic `topic_id`; `None` when either is unknown.
    pub fn subscription(&self, email: &str, topic_id: &str) -> Option<String> {
        let inner = self.lock();
        let contact = &inner.contacts[inner.find_contact(email)?];
        let topic = inner.topics.topics.iter().find(|t| t.id == topic_id)?;
        Some(inner.topics.effective(&contact.id, topic))
    }

    /// The person chooses on Resend's preference page (`opt_in` or `opt_out`).
    pub fn choose_topic(&self, email: &str, topic_id: &str, subscription: &str) {
        let mut inner = self.lock();
        if let Some(i) = inner.find_contact(email) {
            let id = inner.contacts[i].id.clone();
            inner
                .topics
                .choices
                .insert((id, topic_id.to_owned()), subscription.to_owned());
        }
    }

    /// Deletes a topic "in the dashboard"; whether it existed.
    pub fn remove_topic(&self, id: &str) -> bool {
        delete(&mut self.lock().topics, id)
    }
}

impl Inner {
    /// Whether the account has the topic `id`.
    pub(super) fn has_topic(&self, id: &str) -> bool {
        self.topics.topics.iter().any(|t| t.id == id)
    }
}

fn delete(state: &mut TopicState, id: &str) -> bool {
    let before = state.topics.len();
    state.topics.retain(|t| t.id != id);
    state.choices.retain(|(_, topic), _| topic != id);
    state.topics.len() != before
}

fn topic_json(t: &FakeTopic) -> Value {
    json!({
        "object": "topic", "id": t.id, "name": t.name, "description": t.description,
        "default_subscription": t.default_subscription, "visibility": t.visibility,
        "created_at": "2026-01-01T00:00:00Z",
    })
}

fn invalid(message: &str) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
        message,
    )
}

fn subscription_value(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| matches!(*s, "opt_in" | "opt_out"))
        .map(str::to_owned)
}

/// Serves a topics route; `None` when the path is none of them.
pub(super) fn route(
    inner: &mut Inner,
    method: &Method,
    segments: &[&str],
    query: &str,
    body: &Value,
) -> Option<Response> {
    let not_found = || error(StatusCode::NOT_FOUND, "not_found", "Not found");
    let ok = |v: Value| (StatusCode::OK, axum::Json(v)).into_response();
    Some(match (method.clone(), segments) {
        (Method::GET, ["topics"]) => {
            let default = inner.config.default_page;
            page(&inner.topics.topics, |t| &t.id, topic_json, query, default)
        }
        (Method::POST, ["topics"]) => create(inner, body),
        (Method::GET, ["topics", id]) => match inner.topics.topics.iter().find(|t| t.id == *id) {
            Some(t) => ok(topic_json(t)),
            None => not_found(),
        },
        (Method::DELETE, ["topics", id]) => match delete(&mut inner.topics, id) {
            true => ok(json!({"object": "topic", "id": id, "deleted": true})),
            false => not_found(),
        },
        (Method::GET, ["contacts", key, "topics"]) => {
            let Some(i) = inner.find_contact(key) else {
                return Some(not_found());
            };
            let contact = inner.contacts[i].id.clone();
            let state = &inner.topics;
            let listed: Vec<(String, Value)> = state
                .topics
                .iter()
                .map(|t| {
                    let json = json!({
                        "id": t.id, "name": t.name, "description": t.description,
                        "subscription": state.effective(&contact, t),
                    });
                    (t.id.clone(), json)
                })
                .collect();
            let default = inner.config.default_page;
            page(&listed, |(id, _)| id, |(_, j)| j.clone(), query, default)
        }
        (Method::PATCH, ["contacts", key, "topics"]) => {
            let Some(i) = inner.find_contact(key) else {
                return Some(not_found());
            };
            let contact = inner.contacts[i].id.clone();
            let Some(Value::Array(changes)) = body.get("topics") else {
                return Some(invalid("topics must be an array"));
            };
            let mut wanted = Vec::new();
            for change in changes {
                let (Some(id), Some(sub)) = (
                    change.get("id").and_then(Value::as_str),
                    subscription_value(change.get("subscription")),
                ) else {
                    return Some(invalid("each topic needs an id and opt_in or opt_out"));
                };
                if !inner.topics.topics.iter().any(|t| t.id == id) {
                    return Some(error(StatusCode::NOT_FOUND, "not_found", "Topic not found"));
                }
                wanted.push(((contact.clone(), id.to_owned()), sub));
            }
            inner.topics.choices.extend(wanted);
            ok(json!({"id": contact}))
        }
        _ => return None,
    })
}

fn create(inner: &mut Inner, body: &Value) -> Response {
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_required_field",
            "name is required",
        );
    };
    if name.is_empty() || name.chars().count() > 50 {
        return invalid("name must be 1-50 characters");
    }
    let Some(default_subscription) = subscription_value(body.get("default_subscription")) else {
        return invalid("default_subscription must be opt_in or opt_out");
    };
    let visibility = match body.get("visibility") {
        None => "private".to_owned(),
        Some(v) => match v.as_str() {
            Some(v @ ("public" | "private")) => v.to_owned(),
            _ => return invalid("visibility must be public or private"),
        },
    };
    let description = body.get("description").and_then(Value::as_str);
    if description.is_some_and(|d| d.chars().count() > 200) {
        return invalid("description must be at most 200 characters");
    }
    let id = inner.new_id();
    inner.topics.topics.push(FakeTopic {
        id: id.clone(),
        name: name.to_owned(),
        description: description.map(str::to_owned),
        default_subscription,
        visibility,
    });
    (
        StatusCode::CREATED,
        axum::Json(json!({"object": "topic", "id": id})),
    )
        .into_response()
}
