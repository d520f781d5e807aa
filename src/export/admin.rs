//! The admin HTTP server (linkerd2-proxy style): `GET /metrics` encodes the registry in the
//! Prometheus text format, `GET /ready` reports whether the inputs are running (from
//! [`Health`], which the app flips), `GET /live` says the process answers at all, the live
//! view of alerts — `GET /api/alerts` (JSON) and `GET /alerts` (a table for people) — shows
//! what the [`AlertView`] returns, and `GET /` is the status page drawn from the
//! [`StatusView`] (`/?part=main` is the part the page reloads itself with); every other path
//! is 404. It owns nothing but the
//! listener it is handed and stops gracefully when the caller's shutdown future completes.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::alert::text::rfc3339_ms;
use crate::alert::{Alert, Status};
use crate::html::escape;
use crate::html::page::StatusPage;

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

/// The alerts firing now (including those waiting out their resolve hold).
pub type AlertView = Arc<dyn Fn() -> Vec<Alert> + Send + Sync>;

/// What the status page shows now; `None` when nothing evaluates (a bare metrics server).
pub type StatusView = Arc<dyn Fn() -> Option<StatusPage> + Send + Sync>;

/// The views the admin server draws its pages from.
#[derive(Clone)]
pub struct Views {
    pub alerts: AlertView,
    pub status: StatusView,
}

impl Views {
    /// No alerts and no status page: a bare metrics server.
    pub fn none() -> Self {
        Views {
            alerts: Arc::new(Vec::new),
            status: Arc::new(|| None),
        }
    }
}

#[derive(Clone)]
struct AppState {
    registry: Registry,
    health: Health,
    alerts: AlertView,
    status: StatusView,
}

/// The admin routes, for callers that mount them on their own server.
pub fn router(registry: Registry, health: Health, views: Views) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/live", get(live))
        .route("/api/alerts", get(api_alerts))
        .route("/alerts", get(alerts_page))
        .fallback(not_found)
        .with_state(AppState {
            registry,
            health,
            alerts: views.alerts,
            status: views.status,
        })
}

/// Serves the admin routes on `listener` until `shutdown` completes, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    health: Health,
    views: Views,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry, health, views))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The firing alerts as Alertmanager would receive them (labels, annotations, `startsAt`),
/// plus `status`.
async fn api_alerts(State(state): State<AppState>) -> Response {
    let alerts: Vec<serde_json::Value> = (state.alerts)()
        .iter()
        .map(|a| a.to_alertmanager(Status::Firing))
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Array(alerts).to_string(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct PageQuery {
    alertname: Option<String>,
}

#[derive(serde::Deserialize)]
struct StatusQuery {
    part: Option<String>,
}

/// The status page, or with `?part=main` the part it reloads itself with.
async fn status_page(State(state): State<AppState>, Query(q): Query<StatusQuery>) -> Response {
    let Some(status) = (state.status)() else {
        return text(
            StatusCode::NOT_FOUND,
            "no status page: this server only serves metrics\n",
        );
    };
    let (content_type, body) = match q.part.as_deref() {
        Some("main") => ("text/plain; charset=utf-8", status.part()),
        _ => ("text/html; charset=utf-8", status.page()),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// A page for people: one row per firing alert (or only those named in `?alertname=`, where
/// Alertmanager's `generatorURL` links land), refreshed every 10 s.
async fn alerts_page(State(state): State<AppState>, Query(q): Query<PageQuery>) -> Response {
    let alerts: Vec<Alert> = (state.alerts)()
        .into_iter()
        .filter(|a| {
            q.alertname
                .as_ref()
                .is_none_or(|n| a.labels.get("alertname") == Some(n))
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render_alerts_page(&alerts, q.alertname.as_deref()),
    )
        .into_response()
}

fn render_alerts_page(alerts: &[Alert], filter: Option<&str>) -> String {
    let mut page = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" \
         content=\"10\"><title>albwatch alerts</title><style>body{font-family:sans-serif;\
         margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;\
         vertical-align:top;text-align:left}th{background:#eee}.critical{color:#b00}\
         .warning{color:#a60}code{font-size:90%}</style></head><body>\n<h1>albwatch: firing alerts</h1>\n",
    );
    if let Some(name) = filter {
        let _ = writeln!(
            page,
            "<p>Only {}. <a href=\"alerts\">All alerts</a></p>",
            escape(name)
        );
    }
    if alerts.is_empty() {
        page.push_str("<p>No alert is firing.</p>\n");
    } else {
        page.push_str(
            "<table><tr><th>Alert</th><th>Severity</th><th>Cause</th><th>Where</th>\
             <th>What happened</th><th>Check first</th><th>Example trace</th><th>Since</th></tr>\n",
        );
        for a in alerts {
            let label = |k: &str| a.labels.get(k).map_or("", String::as_str);
            let note = |k: &str| a.annotations.get(k).map_or("", String::as_str);
            let place: Vec<&str> = ["elb", "target_group", "target"]
                .into_iter()
                .map(label)
                .filter(|v| !v.is_empty() && *v != "-")
                .collect();
            let severity = label("severity");
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td><code>{}</code></td><td>{}</td>\
                 <td>{}<br><small>{}</small></td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                escape(label("alertname")),
                escape(severity),
                escape(severity),
                escape(label("cause")),
                escape(&place.join(" / ")),
                escape(note("summary")),
                escape(note("description")),
                escape(note("runbook")),
                escape(note("trace_id")),
                escape(&rfc3339_ms(a.starts_at_us)),
            );
        }
        page.push_str("</table>\n");
    }
    page.push_str(
        "<p><a href=\"./\">status page</a> · <a href=\"api/alerts\">JSON</a> · \
         <a href=\"metrics\">metrics</a></p></body></html>\n",
    );
    page
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

/// The registry in the text format, with the content type the encoder speaks. The snapshot
/// families, nearly all of a scrape's bytes, arrive already written (see
/// [`gather_rendered`](super::gather_rendered)); every other family goes through
/// `TextEncoder`, and the families keep the registry's order either way.
pub fn encode(registry: &Registry) -> prometheus::Result<(String, Vec<u8>)> {
    let encoder = TextEncoder::new();
    let (families, rendered) = super::gather_rendered(registry);
    let mut body = Vec::with_capacity(64 * 1024);
    for family in &families {
        match rendered.family(family.name()) {
            Some(text) => body.extend_from_slice(text.as_bytes()),
            None => encoder.encode(std::slice::from_ref(family), &mut body)?,
        }
    }
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
