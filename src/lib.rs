//! milo-webhook: admission webhooks for Milo's contact-group, enrollment and invitation APIs.
//!
//! Layers, from the bottom up: [`api`] (typed resources), [`view`] (a read-only, indexed view of the
//! cluster), [`admission`] (pure decision functions over the view, one module per resource),
//! [`server`] (HTTPS transport, certificates, admin endpoints).

#![warn(missing_docs)]

pub mod admission;
pub mod api;
pub mod cmd;
pub mod controllers;
pub mod crds;
pub mod metrics;
pub mod providers;
pub mod server;
pub mod template;
pub mod view;
pub mod webhook_config;
