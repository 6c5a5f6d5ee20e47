//! Resend (<https://resend.com>): the client for contacts, segments and memberships, its account
//! rate limiter, and the events Resend sends back.

pub mod client;
pub mod events;
pub mod ratelimit;
pub mod types;
