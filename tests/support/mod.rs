//! Shared test support: the fixture corpus and a real TLS client/server pair, and a scripted mock API server.
#![allow(dead_code)]

pub mod bench;
pub mod fake_loops;
pub mod fake_resend;
pub mod fixtures;
pub mod https;
pub mod lease_api;
pub mod live_api;
pub mod milo_crds;
pub mod mock_api;
pub mod rbac;
pub mod resend_harness;
pub mod schema;
pub mod sim_api;
