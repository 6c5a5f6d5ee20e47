//! One-click unsubscribe (RFC 8058) for mail sent to a group: the link every such mail carries in
//! `List-Unsubscribe`, served on the provider events listener.
//!
//! A link is `<base>/unsubscribe/<token>`, the token naming the contact and the group (namespace,
//! name and uid, so a recreated object of the same name is not the one the mail was about) and
//! signed with HMAC-SHA256 by a key from a Secret. A `POST` with `List-Unsubscribe=One-Click`
//! (what mailbox providers send) opts the person out of that one group and answers 200 with an
//! empty body, the same on every repeat; a `GET` (link scanners follow links) only shows a page
//! whose button POSTs; a forged, altered or unknown token gets 404 and changes nothing. This layer
//! knows no controllers: it hands verified requests to an [`UnsubscribeSink`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// Path prefix of one-click links on the events listener.
pub const UNSUBSCRIBE_PATH: &str = "/unsubscribe";

/// Shortest signing key accepted: HMAC-SHA256's own block of security.
pub const MIN_KEY_BYTES: usize = 32;

/// The key tokens are signed with.
#[derive(Clone)]
pub struct UnsubscribeKey(hmac::Key);

impl std::fmt::Debug for UnsubscribeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsubscribeKey(..)")
    }
}

impl UnsubscribeKey {
    /// A key from the bytes of a Secret (surrounding whitespace dropped); at least
    /// [`MIN_KEY_BYTES`] long.
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        let secret = secret.trim_ascii();
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the unsubscribe signing key has {} bytes; it needs at least {MIN_KEY_BYTES}",
                secret.len()
            ));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }
}

/// One object a token names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// Whom a link unsubscribes from what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The Contact.
    pub contact: Named,
    /// The ContactGroup.
    pub group: Named,
}

/// The token for `target`: `<payload>.<signature>`, both base64url.
pub fn mint(key: &UnsubscribeKey, target: &Target) -> String {
    let payload = serde_json::to_vec(target).unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(payload);
    let signature = hmac::sign(&key.0, payload.as_bytes());
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// The link for `target` under `base` (the listener's public address).
pub fn link(base: &str, key: &UnsubscribeKey, target: &Target) -> String {
    format!(
        "{}{UNSUBSCRIBE_PATH}/{}",
        base.trim_end_matches('/'),
        mint(key, target)
    )
}

/// The target of a genuine token; `None` for anything forged, altered or malformed.
pub fn verify(key: &UnsubscribeKey, token: &str) -> Option<Target> {
    let (payload, signature) = token.split_once('.')?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    hmac::verify(&key.0, payload.as_bytes(), &signature).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

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
    key: UnsubscribeKey,
    sink: Arc<dyn UnsubscribeSink>,
}

/// The routes of one-click links: `GET` and `POST` on `/unsubscribe/{token}`.
pub fn router(key: UnsubscribeKey, sink: Arc<dyn UnsubscribeSink>) -> Router {
    let listener = Arc::new(Listener { key, sink });
    Router::new()
        .route(
            &format!("{UNSUBSCRIBE_PATH}/{{token}}"),
            get(confirm_page).post(one_click),
        )
        .with_state(listener)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such unsubscribe link\n").into_response()
}

/// A short digest of the token: what the removal's audit annotation records.
pub fn token_id(token: &str) -> String {
    let sum = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    sum.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `GET`: a page whose button POSTs; it changes nothing itself.
async fn confirm_page(
    State(listener): State<Arc<Listener>>,
    Path(token): Path<String>,
) -> Response {
    if verify(&listener.key, &token).is_none() {
        return not_found();
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
         <body><form method=\"post\" action=\"{UNSUBSCRIBE_PATH}/{token}\">\
         <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <p>Stop receiving mail sent to this list?</p>\
         <button type=\"submit\">Unsubscribe</button></form></body></html>"
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

/// `POST` with `List-Unsubscribe=One-Click`: the opt-out, 200 with an empty body.
async fn one_click(
    State(listener): State<Arc<Listener>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let Some(target) = verify(&listener.key, &token) else {
        return not_found();
    };
    let one_click = body
        .split(|b| *b == b'&')
        .any(|field| field.trim_ascii() == b"List-Unsubscribe=One-Click");
    if !one_click {
        return (
            StatusCode::BAD_REQUEST,
            "expected the form field List-Unsubscribe=One-Click (RFC 8058)\n",
        )
            .into_response();
    }
    match listener.sink.unsubscribe(target, token_id(&token)).await {
        Ok(Unsubscribed::Done) => StatusCode::OK.into_response(),
        Ok(Unsubscribed::Unknown) => not_found(),
        Err(error) => {
            tracing::warn!(%error, "one-click unsubscribe failed; the sender may retry");
            (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        let named = |ns: &str, name: &str| Named {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        };
        Target {
            contact: named("people", "ada"),
            group: named("groups", "news"),
        }
    }

    #[test]
    fn tokens_verify_only_with_their_key_and_unaltered() {
        let key = UnsubscribeKey::new(&[7; 32]).unwrap();
        let token = mint(&key, &target());
        assert_eq!(verify(&key, &token), Some(target()));
        let other = UnsubscribeKey::new(&[8; 32]).unwrap();
        assert_eq!(verify(&other, &token), None, "another key");
        let (payload, signature) = token.split_once('.').unwrap();
        let mut forged = target();
        forged.group.name = "offers".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            verify(&key, &format!("{forged_payload}.{signature}")),
            None,
            "altered"
        );
        assert_eq!(verify(&key, payload), None, "no signature");
        assert_eq!(verify(&key, "garbage"), None);
        assert!(
            link("https://mail.example.com/", &key, &target())
                .starts_with("https://mail.example.com/unsubscribe/")
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(UnsubscribeKey::new(b"short\n").is_err());
        assert!(UnsubscribeKey::new(&[1; 40]).is_ok());
    }
}
