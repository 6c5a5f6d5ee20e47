//! The plain-HTTP admin port: liveness, readiness and metrics. Readiness is false until the view
//! has synced and from the first moment of shutdown, so the endpoints controller stops routing
//! reviews here before the listener closes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::view::ClusterView;

/// What the admin endpoints report on.
#[derive(Clone)]
pub struct AdminState {
    /// The view, for readiness and object counts.
    pub view: Arc<ClusterView>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Set when shutdown begins.
    pub shutting_down: Arc<AtomicBool>,
}

/// `/livez`, `/readyz`, `/metrics`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.shutting_down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        );
    }
    let waiting = state.view.unsynced_kinds();
    if !waiting.is_empty() {
        let kinds: Vec<&str> = waiting.iter().map(|k| k.kind_name()).collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("waiting for the view to sync: {}\n", kinds.join(", ")),
        );
    }
    (StatusCode::OK, "ok\n".to_owned())
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(&state.view),
    )
}
