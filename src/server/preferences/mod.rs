//! The preference page, on the provider events listener beside one-click links: where a person
//! sees the groups they are in or left and leaves or rejoins the public ones.
//!
//! - `GET /preferences/<token>` shows the page. It reads the view only (no API call) and changes
//!   nothing, so link scanners are harmless. The token ([`tokens`]) names the Contact by
//!   namespace, name and uid and expires; a forged, altered or expired token, or a Contact
//!   recreated since, gets the same 404 page.
//! - `POST /preferences/<token>` with `form` (the page's form value: a cross-site form cannot
//!   know it), `group` (`namespace/name`) and `action` (`leave` or `join`) makes the change
//!   through a [`PreferenceSink`] and answers 303 back to the page, which then shows what was
//!   done. The token is checked before the body is read, the body is a few hundred bytes at most,
//!   read under a deadline, and changes in progress are bounded ([`MAX_CHANGES_IN_FLIGHT`]).
//!
//! This layer knows no controllers: the sink (implemented by them) checks the objects against
//! the API server and writes.

pub mod page;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::api::common::ObjectRef;
use crate::server::throttle::Throttle;
use crate::server::unsubscribe::{Named, UnsubscribeKeys, harden_with, read_small_body, token_id};
use crate::view::ClusterView;
use page::{Notice, PageContext};

/// Path prefix of preference links on the events listener.
pub const PREFERENCES_PATH: &str = "/preferences";

/// Largest form body read: three short fields.
pub const MAX_FORM_BODY: usize = 1024;

/// Changes being made at once, every page together; more get 503 with `Retry-After`.
pub const MAX_CHANGES_IN_FLIGHT: usize = 32;

/// What a person asked for on the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Leave the group.
    Leave,
    /// Come back to a group they left.
    Join,
}

/// What the sink did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    /// The change is made (or was already).
    Done,
    /// A removal the person did not make stands; nothing changed.
    Kept,
    /// The Contact or group is gone, recreated, or not one the page offers this change for.
    Unknown,
    /// Something must settle first; the person may try again.
    NotYet,
}

/// Makes the changes people choose on their page. Implemented by the controllers.
pub trait PreferenceSink: Send + Sync + 'static {
    /// Applies `choice` for `contact` and `group`; `token_id` is a digest of the page's token,
    /// for the audit trail.
    fn change(
        &self,
        contact: Named,
        group: ObjectRef,
        choice: Choice,
        token_id: String,
    ) -> BoxFuture<'static, Result<Changed, String>>;
}

struct Pages {
    keys: Arc<UnsubscribeKeys>,
    view: Arc<ClusterView>,
    sink: Arc<dyn PreferenceSink>,
    changes: Arc<tokio::sync::Semaphore>,
    refused: Throttle,
}

/// The routes of preference pages, verified against `keys` and read from `view`.
pub fn router(
    keys: Arc<UnsubscribeKeys>,
    view: Arc<ClusterView>,
    sink: Arc<dyn PreferenceSink>,
) -> Router {
    let pages = Arc::new(Pages {
        keys,
        view,
        sink,
        changes: Arc::new(tokio::sync::Semaphore::new(MAX_CHANGES_IN_FLIGHT)),
        refused: Throttle::new(std::time::Duration::from_secs(60)),
    });
    Router::new()
        .route(
            &format!("{PREFERENCES_PATH}/{{token}}"),
            get(show).post(change),
        )
        .with_state(pages)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    harden_with(response.headers_mut(), page::content_security_policy());
    response
}

fn refused(pages: &Pages, why: &'static str) -> Response {
    tracing::debug!(why, "preference link refused");
    if let Some(left_out) = pages.refused.ready() {
        tracing::info!(
            why,
            refused_since_last_line = left_out,
            "preference links refused (one line a minute at most)"
        );
    }
    html(StatusCode::NOT_FOUND, page::not_found())
}

/// The Contact a genuine, unexpired token names, or why not (for the log).
fn verified(pages: &Pages, token: &str) -> Result<Named, &'static str> {
    tokens::verify(&pages.keys, token, now()).map_err(|why| match why {
        tokens::Refusal::NotGenuine => "not a genuine token",
        tokens::Refusal::Expired => "the link expired",
    })
}

/// The query a redirect back to the page carries.
#[derive(Debug, Default, Deserialize)]
struct Done {
    done: Option<String>,
    group: Option<String>,
}

fn split_group(text: &str) -> Option<ObjectRef> {
    let (namespace, name) = text.split_once('/')?;
    let valid = |s: &str| !s.is_empty() && s.len() <= 253 && !s.contains('/');
    (valid(namespace) && valid(name)).then(|| ObjectRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// `GET`: the page, from the view; changes nothing.
async fn show(
    State(pages): State<Arc<Pages>>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let contact = match verified(&pages, &token) {
        Ok(contact) => contact,
        Err(why) => return refused(&pages, why),
    };
    // Only ever our own redirect's; anything else is ignored rather than refused.
    let done: Done = query
        .and_then(|q| serde_urlencoded::from_str(&q).ok())
        .unwrap_or_default();
    let action = format!("{PREFERENCES_PATH}/{token}");
    let form_value = tokens::form_value(&pages.keys, &token, now());
    let store = pages.view.read();
    let Some(view) = store.preferences(&contact.namespace, &contact.name, &contact.uid) else {
        drop(store);
        return refused(&pages, "the token names no current contact");
    };
    let group = done.group.as_deref().and_then(split_group);
    let group_name = group
        .as_ref()
        .and_then(|g| store.group(&g.namespace, &g.name))
        .map_or("the group", |g| g.display_name);
    let notice = done
        .done
        .as_deref()
        .and_then(Notice::from_query)
        .map(|n| (n, group_name));
    let body = page::render(
        &view,
        &PageContext {
            action: &action,
            form_value: &form_value,
            notice,
        },
    );
    drop(store);
    html(StatusCode::OK, body)
}

/// The fields of the page's form.
#[derive(Debug, Deserialize)]
struct Form {
    /// Missing counts as wrong: answered like a stale page.
    #[serde(default)]
    form: String,
    group: String,
    action: String,
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response();
    harden_with(response.headers_mut(), page::content_security_policy());
    response
}

fn see_other(token: &str, notice: Notice, group: &ObjectRef) -> Response {
    let query = serde_urlencoded::to_string([
        ("done", notice.as_query()),
        ("group", &format!("{}/{}", group.namespace, group.name)),
    ])
    .unwrap_or_default();
    let location = format!("{PREFERENCES_PATH}/{token}?{query}");
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    harden_with(response.headers_mut(), page::content_security_policy());
    response
}

/// `POST`: one change, then 303 back to the page.
async fn change(
    State(pages): State<Arc<Pages>>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let contact = match verified(&pages, &token) {
        Ok(contact) => contact,
        Err(why) => return refused(&pages, why),
    };
    let (parts, body) = request.into_parts();
    // Browsers say where a form came from; a cross-site one is refused outright (the form value
    // would refuse it too).
    if parts
        .headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return plain(StatusCode::FORBIDDEN, "cross-site form refused\n");
    }
    let body = match read_small_body(&parts.headers, body, MAX_FORM_BODY).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(form) = serde_urlencoded::from_bytes::<Form>(&body) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "expected the page's form: form, group and action\n",
        );
    };
    let action = format!("{PREFERENCES_PATH}/{token}");
    if !tokens::form_value_holds(&pages.keys, &token, &form.form, now()) {
        return html(StatusCode::FORBIDDEN, page::form_expired(&action));
    }
    let choice = match form.action.as_str() {
        "leave" => Choice::Leave,
        "join" => Choice::Join,
        _ => return plain(StatusCode::BAD_REQUEST, "action must be leave or join\n"),
    };
    let Some(group) = split_group(&form.group) else {
        return plain(StatusCode::BAD_REQUEST, "group must be namespace/name\n");
    };
    let Ok(_permit) = pages.changes.clone().try_acquire_owned() else {
        let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "busy; try again shortly\n");
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    };
    let outcome = pages
        .sink
        .change(contact, group.clone(), choice, token_id(&token))
        .await;
    let notice = match (outcome, choice) {
        (Ok(Changed::Done), Choice::Leave) => Notice::Left,
        (Ok(Changed::Done), Choice::Join) => Notice::Joined,
        (Ok(Changed::Kept), _) => Notice::Kept,
        (Ok(Changed::Unknown), _) => return refused(&pages, "the change names nothing current"),
        (Ok(Changed::NotYet), _) => Notice::Busy,
        (Err(error), _) => {
            tracing::warn!(%error, "preference change failed");
            Notice::Busy
        }
    };
    see_other(&token, notice, &group)
}
