//! Shared test support: the fixture corpus and a real TLS client/server pair.
#![allow(dead_code)]

pub mod fixtures;
pub mod https;
