//! The admin HTTP server (linkerd2-proxy style): `GET /metrics` encodes the registry in the
//! Prometheus text format, `GET /ready` reports whether the inputs are running (from
//! [`Health`], which the app flips), `GET /live` says the process answers at all; every
//! other path is 404. It owns nothing but the listener it is handed and stops gracefully
//! when the caller's shutdown future completes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

/// What `/ready` reports. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Set by the app once its inputs are running, cleared when it starts draining, so a
    /// load balancer or orchestrator stops sending traffic before the inputs close.
    pub ready: Arc<AtomicBool>,
}

impl Health {
    /// Not ready until [`Health::set_ready`] says so.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_ready(&self, ready: bool) {
        // A lone flag with no data published alongside it: no ordering needed.
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    health: Health,
}

/// The admin routes, for callers that mount them on their own server.
pub fn router(registry: Registry, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/live", get(live))
        .fallback(not_found)
        .with_state(AppState { registry, health })
}

/// Serves the admin routes on `listener` until `shutdown` completes, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, health))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<AppState>) -> Response {
    // The collectors take the aggregator's lock and copy every series; that can take
    // milliseconds, which belong on the blocking pool rather than on an async worker.
    let encoded = tokio::task::spawn_blocking(move || encode(&state.registry)).await;
    match encoded {
        Ok(Ok((content_type, body))) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(Err(e)) => error(format!("encoding metrics failed: {e}\n")),
        Err(e) => error(format!("gathering metrics failed: {e}\n")),
    }
}

/// The registry in the text format, with the content type the encoder speaks.
pub fn encode(registry: &Registry) -> prometheus::Result<(String, Vec<u8>)> {
    let encoder = TextEncoder::new();
    let mut body = Vec::with_capacity(64 * 1024);
    encoder.encode(&registry.gather(), &mut body)?;
    Ok((encoder.format_type().to_owned(), body))
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.health.is_ready() {
        text(StatusCode::OK, "ready")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn live() -> Response {
    text(StatusCode::OK, "live")
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found")
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn error(message: String) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}
