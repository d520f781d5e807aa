//! The Amazon Data Firehose HTTP endpoint destination: an input that receives
//! delivery requests over HTTP or HTTPS, checks them against the protocol, decodes every
//! record with [`crate::decode`] and hands the lines to the pipeline as
//! [`crate::pipeline::RawBatch`]es — answering 200 only once every batch is acknowledged, 503
//! when the pipeline is full or the app is draining (Firehose backs off and retries), and
//! repeating a committed request id's 200 without counting it again.
//!
//! Split like vector's `aws_kinesis_firehose` source:
//! - [`config`]: the `[firehose]` section, raw → validated;
//! - [`models`]: wire types (headers, request and response bodies, common attributes);
//! - [`handler`]: the request handler (concurrency cap, checks, capped and timed body,
//!   decode, submit, acknowledge);
//! - [`errors`]: [`RequestError`], each variant one status;
//! - [`dedupe`]: request ids in flight and recently committed;
//! - [`auth`]: the access key and its constant-time comparison;
//! - [`metrics`]: [`FirehoseMetrics`], bounded labels;
//! - [`tls`]: PEM loading and the handshaking listener;
//! - [`conn`]: idle and header-read timeouts on every connection;
//! - [`log_limit`]: the per-request log lines' rate limit.
//!
//! The app's side: validate [`FirehoseConfig`] before binding, register [`FirehoseMetrics`],
//! bind `addr`, spawn [`serve`] with the inputs' [`Shutdown`] signal as `draining` and its
//! `wait()` as `shutdown`; at shutdown set the signal, await
//! [`serve`] (its [`PartitionSource`] holds the pool's submitter until then), and only then
//! finish the pool.

pub(crate) mod auth;
pub mod config;
pub(crate) mod conn;
pub(crate) mod dedupe;
pub mod errors;
pub(crate) mod handler;
pub(crate) mod log_limit;
pub mod metrics;
pub mod models;
pub mod tls;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::input::{PartitionSource, Shutdown};
use conn::{ConnActivity, TimedListener, Timeouts};
use log_limit::{LimitedLog, SUMMARY_INTERVAL};

pub use config::{FirehoseConfig, ValidFirehoseConfig};
pub use errors::RequestError;
pub use metrics::{DeliveryStats, FirehoseMetrics};

/// Serves the endpoint on `listener` — HTTPS when `cfg` has a certificate, HTTP otherwise —
/// until `shutdown` completes; requests in progress then finish (each within the pipeline's
/// own pace) before this returns. Once `draining` is set, new requests are answered 503.
pub async fn serve(
    listener: TcpListener,
    cfg: ValidFirehoseConfig,
    partitions: PartitionSource,
    metrics: FirehoseMetrics,
    draining: Shutdown,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = cfg.tls.clone();
    let timeouts = Timeouts {
        idle: cfg.idle_timeout,
        headers: cfg.header_read_timeout,
    };
    let log = Arc::new(LimitedLog::new(cfg.max_log_lines_per_sec, metrics.clone()));
    let shared = Arc::new(handler::Shared::new(
        cfg,
        partitions,
        metrics.clone(),
        draining,
        Arc::clone(&log),
    ));
    let app = handler::router(shared).into_make_service_with_connect_info::<ConnActivity>();
    let summaries = AbortOnDrop(tokio::spawn(summarise(Arc::clone(&log))));
    let served = match tls {
        None => {
            let listener = TimedListener::new(listener, timeouts, metrics, Arc::clone(&log));
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, tls, metrics.tls_handshake_failures())?;
            let listener = TimedListener::new(listener, timeouts, metrics, Arc::clone(&log));
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    };
    drop(summaries);
    log.summarise();
    served
}

/// Writes the count of suppressed log lines every [`SUMMARY_INTERVAL`], so a flood that
/// stopped is still reported.
async fn summarise(log: Arc<LimitedLog>) {
    let mut ticks = tokio::time::interval(SUMMARY_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        log.summarise();
    }
}

/// Stops a background task when [`serve`] returns — or is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
