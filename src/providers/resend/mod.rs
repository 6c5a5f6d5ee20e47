//! Resend (<https://resend.com>): the client for contacts, segments, memberships, topics and
//! sending mail, its account rate limiter, and the events Resend sends back.

mod answer;
pub mod client;
pub mod emails;
pub mod events;
pub mod topics;
pub mod types;

/// The account limiter, shared with the other providers (kept at its former path).
pub use crate::providers::ratelimit;

pub use client::{ResendClient, ResendConfig, ResendError};
pub use emails::{EmailTag, OutgoingEmail};
