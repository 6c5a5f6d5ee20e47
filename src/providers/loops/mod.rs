//! Loops (<https://loops.so>): the client for contacts and mailing lists, its account rate
//! limit, and the events Loops sends back. No Kubernetes here: the provider layer maps cluster
//! objects onto these calls.
//!
//! The API surface, in one place:
//! - [`LoopsClient::upsert_contact`] (`PUT /contacts/update`) creates or updates the contact whose
//!   `userId` is the Contact's uid: email changed in place, names, `mailingLists: {id: bool}`, and
//!   `subscribed` **only as the caller decides** ([`Subscribed`]; by default it is not sent);
//! - [`LoopsClient::find_by_user_id`] / [`LoopsClient::find_by_email`] (`GET /contacts/find`);
//! - [`LoopsClient::delete_by_user_id`] (`POST /contacts/delete`), `false` when already gone;
//! - [`LoopsClient::list_mailing_lists`] (`GET /lists`): lists cannot be created by API, so a
//!   list a ContactGroup names is checked against this;
//! - [`LoopsClient::check_api_key`] (`GET /api-key`) for a start-up check;
//! - [`events::receive`] for deliveries to the events endpoint.
//!
//! What this relies on from Loops' documentation (API reference and SDKs as of 2026):
//! - Base URL `https://app.loops.so/api/v1`, `Authorization: Bearer <key>`; a bad key is 401
//!   `{"error": "Invalid API key"}`, other errors `{"success": false, "message"}`.
//! - Rate limit: 10 requests per second per team as a baseline; answers carry
//!   `x-ratelimit-limit` (requests per second) and `x-ratelimit-remaining`; over the limit is 429.
//!   No `retry-after` or reset header is documented, so a 429 without one waits a second.
//! - `PUT /contacts/update` looks the contact up by `email` or `userId`; when one matches, the
//!   other value is updated on it (so sending `userId` with a new email changes the email in
//!   place); when none matches, a contact is created with both. New contacts are subscribed by
//!   default, and "If you send `subscribed: true` in your update calls, contacts who have
//!   previously unsubscribed will be re-subscribed". A `null` property value clears it.
//! - `POST /contacts/create` answers 409 when the email or `userId` already exists; what
//!   `PUT /contacts/update` does when the email belongs to a different contact than the `userId`
//!   is not documented: this client reports any 409 as [`LoopsError::Conflict`] and the test fake
//!   refuses that case.
//! - `GET /contacts/find?email=|userId=` (one of the two) answers a list, empty when none;
//!   `mailingLists` there holds only the lists the contact is on.
//! - `POST /contacts/delete {email | userId}`: 404 when no contact matches.
//! - `GET /lists` answers every list `{id, name, description, isPublic}`, unpaged.
//! - Webhooks: Standard Webhooks signatures in `webhook-id`, `webhook-timestamp`,
//!   `webhook-signature`, secret `whsec_<base64>`; body `{eventName, eventTime, ...}` (see
//!   [`events`]); one endpoint per account, events sent at most 10 per second.

pub mod client;
mod error;
pub mod events;
pub mod types;

pub use client::{DEFAULT_BASE_URL, DEFAULT_RATE, LoopsClient, LoopsConfig, PROVIDER};
pub use error::LoopsError;
pub use events::{Delivery, LoopsEvent, LoopsSigningKey, ReceiveError};
pub use types::{Consent, ContactUpsert, MailingList, RemoteContact, Subscribed};
