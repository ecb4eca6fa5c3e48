//! `/healthz`, `/readyz` and `/metrics` on one port.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::runtime::context::Context;

#[derive(Clone)]
pub struct HttpState {
    pub ready: Arc<AtomicBool>,
    pub ctx: Arc<OnceLock<Arc<Context>>>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let body = s
        .ctx
        .get()
        .map(|c| {
            let phases: Vec<_> = c
                .store
                .state()
                .iter()
                .map(|w| w.status.as_ref().map(|st| st.phase).unwrap_or_default())
                .collect();
            c.metrics.observe_workerjoins(&phases);
            c.metrics.render()
        })
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Serve until the process ends.
pub async fn serve(addr: std::net::SocketAddr, state: HttpState) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz /readyz /metrics");
    axum::serve(listener, router(state)).await
}
