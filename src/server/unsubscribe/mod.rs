//! One-click unsubscribe (RFC 8058) for mail sent to a group: the link every such mail carries in
//! `List-Unsubscribe`, served on the provider events listener, which faces the internet.
//!
//! A link is `<base>/unsubscribe/<token>`, the token naming the contact and the group (namespace,
//! name and uid, so a recreated object of the same name is not the one the mail was about) and
//! signed with HMAC-SHA256 by a key from a Secret ([`tokens`]). A `POST` with
//! `List-Unsubscribe=One-Click` (what mailbox providers send) opts the person out of that one
//! group and answers 200 with an empty body, the same on every repeat; a `GET` (link scanners
//! follow links) only shows a page whose button POSTs; a forged, altered or unknown token gets 404
//! and changes nothing. The token is checked before a byte of the body is read, the body is
//! limited to what a one-click POST needs and read under a deadline, and a token honoured in the
//! last minute is answered again without an API call ([`recent`]). This layer knows no
//! controllers: it hands verified requests to an [`UnsubscribeSink`].

pub mod recent;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::server::throttle::Throttle;
use recent::RecentTokens;
pub use tokens::{
    KeyFiles, KeySet, MIN_KEY_BYTES, Named, Target, UnsubscribeKey, UnsubscribeKeys, link, mint,
    mint_without_key_id, token_id, verify,
};

/// Path prefix of one-click links on the events listener.
pub const UNSUBSCRIBE_PATH: &str = "/unsubscribe";

/// Largest one-click body read. RFC 8058's is `List-Unsubscribe=One-Click` (26 bytes) as a form,
/// or a few hundred bytes as `multipart/form-data`.
pub const MAX_ONE_CLICK_BODY: usize = 512;

/// How long a one-click body may take to arrive.
pub const ONE_CLICK_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the sink did with a verified one-click request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The person is out of the group (now, or already).
    Done,
    /// The contact or group is gone or not the one the token names, or the group is private:
    /// nothing to do (answered 404, as for a forged token).
    Unknown,
}

/// Acts on verified one-click requests. Implemented by the controllers.
pub trait UnsubscribeSink: Send + Sync + 'static {
    /// Opts `target.contact` out of `target.group`; `token_id` is a digest of the token, for the
    /// audit trail.
    fn unsubscribe(
        &self,
        target: Target,
        token_id: String,
    ) -> BoxFuture<'static, Result<Unsubscribed, String>>;
}

struct Listener {
    keys: Arc<UnsubscribeKeys>,
    sink: Arc<dyn UnsubscribeSink>,
    recent: RecentTokens,
    refused: Throttle,
}

/// The routes of one-click links: `GET` and `POST` on `/unsubscribe/{token}`, verified against
/// `keys` (reloaded in place when their files change).
pub fn router(keys: Arc<UnsubscribeKeys>, sink: Arc<dyn UnsubscribeSink>) -> Router {
    let listener = Arc::new(Listener {
        keys,
        sink,
        recent: RecentTokens::default(),
        refused: Throttle::new(Duration::from_secs(60)),
    });
    Router::new()
        .route(
            &format!("{UNSUBSCRIBE_PATH}/{{token}}"),
            get(confirm_page).post(one_click),
        )
        .with_state(listener)
}

/// Headers of every answer of these routes. The page shows a form to the person the mail was
/// for: it may be framed by nobody, load nothing, and post only back to itself; the token in its
/// address must not leak through `Referer`; and nothing about it is cached.
fn harden(headers: &mut HeaderMap) {
    const CSP: &str = "default-src 'none'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";
    harden_with(headers, CSP);
}

/// [`harden`] with a page's own Content-Security-Policy (the preference page allows its style).
pub(crate) fn harden_with(headers: &mut HeaderMap, csp: &'static str) {
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn hardened(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    harden(response.headers_mut());
    response
}

fn plain(status: StatusCode, message: &'static str) -> Response {
    hardened((
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    ))
}

/// A link that verifies under no key: 404, logged at debug (anyone can send these) with a
/// throttled summary.
fn refused(listener: &Listener, why: &'static str) -> Response {
    tracing::debug!(why, "one-click link refused");
    if let Some(left_out) = listener.refused.ready() {
        tracing::info!(
            why,
            refused_since_last_line = left_out,
            "one-click links refused (one line a minute at most)"
        );
    }
    plain(StatusCode::NOT_FOUND, "no such unsubscribe link\n")
}

/// `GET`: a page whose button POSTs; it changes nothing itself.
async fn confirm_page(
    State(listener): State<Arc<Listener>>,
    Path(token): Path<String>,
) -> Response {
    if verify(&listener.keys, &token).is_none() {
        return refused(&listener, "not a genuine token");
    }
    // A genuine token is base64url and dots: nothing in it needs escaping.
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
         <body><form method=\"post\" action=\"{UNSUBSCRIBE_PATH}/{token}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <p>Stop receiving mail sent to this list?</p>\
         <button type=\"submit\">Unsubscribe</button></form></body></html>"
    );
    hardened(Html(page))
}

/// Reads a one-click body: at most [`MAX_ONE_CLICK_BODY`] bytes within
/// [`ONE_CLICK_READ_TIMEOUT`]; 413, 408 or 400 otherwise.
async fn read_one_click(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Response> {
    read_small_body(headers, body, MAX_ONE_CLICK_BODY).await
}

/// Reads a form body of at most `limit` bytes within [`ONE_CLICK_READ_TIMEOUT`] (a declared
/// larger length is refused before a byte is read); 413, 408 or 400 otherwise.
pub(crate) async fn read_small_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let read = Limited::new(body, limit).collect();
    match tokio::time::timeout(ONE_CLICK_READ_TIMEOUT, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(plain(StatusCode::BAD_REQUEST, "cannot read the body\n")),
        Err(_) => Err(plain(
            StatusCode::REQUEST_TIMEOUT,
            "the body was not received in time\n",
        )),
    }
}

/// Whether a body carries `List-Unsubscribe=One-Click`, as a form or as `multipart/form-data`.
fn says_one_click(body: &[u8]) -> bool {
    let form = body
        .split(|b| *b == b'&')
        .any(|field| field.trim_ascii() == b"List-Unsubscribe=One-Click");
    let text = String::from_utf8_lossy(body);
    let multipart = text.contains("name=\"List-Unsubscribe\"")
        && text
            .split("\r\n\r\n")
            .skip(1)
            .any(|part| part.trim_start().starts_with("One-Click"));
    form || multipart
}

/// `POST` with `List-Unsubscribe=One-Click`: the opt-out, 200 with an empty body. The token is
/// checked before the body is read.
async fn one_click(
    State(listener): State<Arc<Listener>>,
    Path(token): Path<String>,
    request: Request,
) -> Response {
    let Some(target) = verify(&listener.keys, &token) else {
        return refused(&listener, "not a genuine token");
    };
    let (parts, body) = request.into_parts();
    let body = match read_one_click(&parts.headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if !says_one_click(&body) {
        return plain(
            StatusCode::BAD_REQUEST,
            "expected the form field List-Unsubscribe=One-Click (RFC 8058)\n",
        );
    }
    if listener.recent.contains(&token) {
        return hardened(StatusCode::OK);
    }
    match listener.sink.unsubscribe(target, token_id(&token)).await {
        Ok(Unsubscribed::Done) => {
            listener.recent.insert(&token);
            hardened(StatusCode::OK)
        }
        Ok(Unsubscribed::Unknown) => refused(&listener, "the token names nothing current"),
        Err(error) => {
            tracing::warn!(%error, "one-click unsubscribe failed; the sender may retry");
            plain(StatusCode::SERVICE_UNAVAILABLE, "try again later\n")
        }
    }
}
