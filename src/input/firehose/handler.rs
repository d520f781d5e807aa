//! The one HTTP handler: a Firehose delivery request in, a spec-shaped JSON response out. A
//! request first takes one of `max_concurrent_requests` permits (none left: 503 at once, and
//! Firehose backs off), then it is checked, in order, method → draining → access key →
//! protocol version → request id (a committed id is answered 200 at once, one in flight 503)
//! → content encoding and size; the body is read under its cap and within
//! `body_read_timeout` (408 past it), and the rest handed to a task of its own, which keeps
//! the permit: gunzip (capped), parse, base64 and [`Decoder`] per record — CPU work, on the
//! blocking pool — cut into [`RawBatch`]es of about `batch_bytes`, each carrying the
//! request's interned common-attribute values (the extra labels of its `alb_*` series). The
//! first batch is offered with `try_submit` (a full pipeline is answered 503 with nothing
//! half-done); once one is in, the rest wait for room. The reply is 200 only after every
//! batch's acknowledgement, and only then is the id committed and the records counted. A bad
//! record is counted, never a reason to refuse its neighbours. Each failed, duplicate or
//! partly bad request gets a log line with its id, through the rate limit of [`LimitedLog`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::config::ValidFirehoseConfig;
use super::conn::ConnActivity;
use super::dedupe::{Claim, Seen, SharedLog};
use super::errors::RequestError;
use super::log_limit::LimitedLog;
use super::metrics::{DeliveryStats, FirehoseMetrics};
use super::models::{
    ACCESS_KEY_HEADER, COMMON_ATTRIBUTES_HEADER, FirehoseRequest, FirehoseResponse,
    MAX_REQUEST_ID_BYTES, PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, REQUEST_ID_HEADER,
    SOURCE_ARN_HEADER,
};
use crate::decode::{DecodeError, DecodeLimits};
use crate::gzip::GzipError;
use crate::input::{PartitionInput, PartitionSource, RecordBatcher, Shutdown};
use crate::pipeline::{BatchOutcome, RawBatch, SubmitError};

/// Everything a request needs, shared by all of them.
pub(crate) struct Shared {
    pub(crate) cfg: ValidFirehoseConfig,
    /// One event-time partition per delivery stream (the source ARN header).
    partitions: PartitionSource,
    pub(crate) metrics: FirehoseMetrics,
    /// Set by the app when shutdown starts: new requests are answered 503 so Firehose keeps
    /// the batch and retries (against another instance, or this one after a restart).
    draining: Shutdown,
    requests: SharedLog,
    /// `max_concurrent_requests` permits; a request holds one until its delivery ends, even
    /// when its client has hung up.
    permits: Arc<Semaphore>,
    log: Arc<LimitedLog>,
}

impl Shared {
    pub(crate) fn new(
        cfg: ValidFirehoseConfig,
        partitions: PartitionSource,
        metrics: FirehoseMetrics,
        draining: Shutdown,
        log: Arc<LimitedLog>,
    ) -> Self {
        let requests = SharedLog::new(cfg.dedupe_capacity);
        let permits = Arc::new(Semaphore::new(cfg.max_concurrent_requests));
        Shared {
            cfg,
            partitions,
            metrics,
            draining,
            requests,
            permits,
            log,
        }
    }
}

/// Every path and method goes to [`handle`]: Firehose posts to whatever URL it was given.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// How a request ended well.
#[derive(Debug)]
enum Accepted {
    Delivered(DeliveryStats),
    /// A retry of an id already committed; nothing was reprocessed.
    Duplicate,
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = Instant::now();
    // Stops the connection's idle clock until the response is on its way.
    let _handling = request
        .extensions()
        .get::<ConnectInfo<ConnActivity>>()
        .map(|ConnectInfo(conn)| conn.begin());
    let (parts, body) = request.into_parts();
    let echo_id = echo_request_id(&parts.headers);
    let mut attributes = shared.metrics.no_attribute_values();
    let result = match Arc::clone(&shared.permits).try_acquire_owned() {
        Ok(permit) => accept(&shared, &parts, body, &mut attributes, permit).await,
        Err(_) => Err(RequestError::TooManyRequests {
            max: shared.cfg.max_concurrent_requests,
        }),
    };
    let elapsed = started.elapsed();
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status(),
    };
    shared
        .metrics
        .observe_request(status.as_u16(), &attributes, elapsed.as_secs_f64());
    let log = |what: &str, detail: String| {
        shared.log.write(|| {
            format!(
                "albwatch: firehose {what} request_id={echo_id:?} status={} {detail} \
                 source_arn={:?} elapsed_ms={}",
                status.as_u16(),
                header_text(&parts.headers, SOURCE_ARN_HEADER, 256),
                elapsed.as_millis(),
            )
        });
    };
    match &result {
        Ok(Accepted::Delivered(stats)) if stats.errors() > 0 => log(
            "request_with_bad_records",
            format!(
                "reason=bad_records bad_records={} lines={}",
                stats.errors(),
                stats.total_lines()
            ),
        ),
        Ok(Accepted::Delivered(_)) => {}
        Ok(Accepted::Duplicate) => log("request_duplicate", "reason=duplicate".to_string()),
        Err(e) => {
            shared.metrics.failure(e);
            log(
                "request_failed",
                format!("reason={} error={:?}", e.reason(), e.to_string()),
            );
        }
    }
    let message = result.as_ref().err().map(ToString::to_string);
    respond(status, &echo_id, message.as_deref())
}

/// The checks and the delivery; `attributes` gets the request's label values once it is
/// authenticated (an anonymous request must not claim one of the capped value slots), and
/// every batch of the request carries them to the aggregator.
async fn accept(
    shared: &Arc<Shared>,
    parts: &Parts,
    body: Body,
    attributes: &mut Arc<[Arc<str>]>,
    permit: OwnedSemaphorePermit,
) -> Result<Accepted, RequestError> {
    if parts.method != Method::POST {
        return Err(RequestError::MethodNotAllowed);
    }
    if shared.draining.is_set() {
        return Err(RequestError::Draining);
    }
    let headers = &parts.headers;
    if let Some(key) = &shared.cfg.access_key {
        let presented = headers
            .get(ACCESS_KEY_HEADER)
            .ok_or(RequestError::MissingAccessKey)?;
        if !key.matches(presented.as_bytes()) {
            return Err(RequestError::WrongAccessKey);
        }
    }
    *attributes = shared.metrics.attribute_values(
        headers
            .get(COMMON_ATTRIBUTES_HEADER)
            .map(HeaderValue::as_bytes),
    );
    match headers.get(PROTOCOL_VERSION_HEADER) {
        Some(v) if v.as_bytes().trim_ascii() == PROTOCOL_VERSION.as_bytes() => {}
        _ => {
            return Err(RequestError::ProtocolVersion(header_text(
                headers,
                PROTOCOL_VERSION_HEADER,
                64,
            )));
        }
    }
    let id = request_id(headers)?;
    let claim = match shared.requests.claim(id) {
        Seen::Committed => {
            shared.metrics.duplicate();
            return Ok(Accepted::Duplicate);
        }
        Seen::InFlight => return Err(RequestError::InFlight),
        Seen::New(claim) => claim,
    };
    let encoding = content_encoding(headers)?;
    let limit = shared.cfg.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(RequestError::BodyTooLarge { limit });
    }
    let timeout = shared.cfg.body_read_timeout;
    // A deadline for the whole body, not per read: a sender trickling a byte at a time must
    // not hold the request (and its permit) for longer than this either.
    let body = tokio::time::timeout(timeout, read_body(body, limit, declared, &shared.metrics))
        .await
        .map_err(|_| RequestError::BodyTimeout {
            secs: timeout.as_secs(),
        })??;
    // From here the request is processed to the end in a task of its own, even if Firehose
    // hangs up meanwhile: batches handed to the pipeline must be followed through to the
    // commit of the id, or the retry would count them again.
    let batch_attributes = (!attributes.is_empty()).then(|| Arc::clone(attributes));
    // Each delivery stream is its own partition in event time; a request without the header
    // (not from Firehose itself) shares one.
    let source = match header_text(headers, SOURCE_ARN_HEADER, 256) {
        s if s.is_empty() => "-".to_string(),
        s => s,
    };
    let task = tokio::spawn(deliver(
        Arc::clone(shared),
        Delivery {
            body,
            encoding,
            id: id.to_owned(),
            attributes: batch_attributes,
            source,
        },
        claim,
        permit,
    ));
    task.await
        .map_err(|e| RequestError::Internal(format!("delivery task failed: {e}")))?
}

/// A request that passed the checks, body read, ready to be decoded and counted.
struct Delivery {
    body: Vec<u8>,
    encoding: Encoding,
    id: String,
    /// The request's attribute values for its batches; `None` when no label is configured.
    attributes: Option<Arc<[Arc<str>]>>,
    /// The delivery stream it came from (`X-Amz-Firehose-Source-Arn`), or `-`.
    source: String,
}

async fn deliver(
    shared: Arc<Shared>,
    delivery: Delivery,
    claim: Claim,
    _permit: OwnedSemaphorePermit,
) -> Result<Accepted, RequestError> {
    let work = Arc::clone(&shared);
    let (acks, mut stats) =
        tokio::task::spawn_blocking(move || collect_and_submit(&work, delivery))
            .await
            .map_err(|e| RequestError::Internal(format!("decoding task failed: {e}")))??;
    for ack in acks {
        // An acknowledgement dropped unsent means a worker died holding the batch: its lines
        // may be lost, so Firehose must resend (a duplicate beats a loss).
        let outcome: BatchOutcome = ack
            .await
            .map_err(|_| RequestError::Internal("a pipeline worker lost a batch".to_string()))?;
        stats.decode.merge(&outcome.decoded);
    }
    claim.commit();
    shared.metrics.delivered(&stats);
    Ok(Accepted::Delivered(stats))
}

/// The body's transfer encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, RequestError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let value = value.as_bytes().trim_ascii();
    if value.eq_ignore_ascii_case(b"gzip") || value.eq_ignore_ascii_case(b"x-gzip") {
        Ok(Encoding::Gzip)
    } else if value.is_empty() || value.eq_ignore_ascii_case(b"identity") {
        Ok(Encoding::Identity)
    } else {
        Err(RequestError::UnsupportedEncoding(header_text(
            headers,
            header::CONTENT_ENCODING.as_str(),
            64,
        )))
    }
}

/// Reads the body frame by frame, refusing it as soon as it passes `limit` — never buffering
/// more than the limit, whatever the sender declared.
async fn read_body(
    mut body: Body,
    limit: usize,
    declared: Option<u64>,
    metrics: &FirehoseMetrics,
) -> Result<Vec<u8>, RequestError> {
    // `declared` was checked against `limit`, so this reserves at most the limit.
    let mut buf = Vec::with_capacity(declared.map_or(0, |n| n.min(limit as u64) as usize));
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| RequestError::BodyRead(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we use
        };
        metrics.received(data.len());
        // `buf.len() <= limit` always holds here, so the subtraction cannot wrap.
        if data.len() > limit - buf.len() {
            return Err(RequestError::BodyTooLarge { limit });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf)
}

/// The CPU part, on the blocking pool: body → records → batches in the pipeline, whose
/// workers decode the records. Returns the batches' acknowledgements and what the endpoint
/// itself found wrong with records (bad base64, records over the size cap).
fn collect_and_submit(
    shared: &Shared,
    delivery: Delivery,
) -> Result<(Vec<oneshot::Receiver<BatchOutcome>>, DeliveryStats), RequestError> {
    let cfg = &shared.cfg;
    let Delivery {
        body,
        encoding,
        id: header_id,
        attributes,
        source,
    } = delivery;
    let mut json = match encoding {
        Encoding::Gzip => gunzip_capped(&body, cfg.max_decompressed_body_bytes)?,
        Encoding::Identity if body.len() > cfg.max_decompressed_body_bytes => {
            return Err(RequestError::DecompressedTooLarge {
                limit: cfg.max_decompressed_body_bytes,
            });
        }
        Encoding::Identity => body,
    };
    let request = FirehoseRequest::parse(&mut json)?;
    if request.request_id != header_id {
        return Err(RequestError::RequestIdMismatch);
    }

    let mut batcher = RecordBatcher::new(
        cfg.batch_bytes,
        DecodeLimits {
            max_decompressed_bytes: cfg.max_record_bytes,
            max_line_bytes: cfg.max_line_bytes,
        },
    );
    let mut stats = DeliveryStats::default();
    let mut batches = Batches {
        partition: shared.partitions.get(&source),
        attributes,
        acks: Vec::new(),
    };
    for record in &request.records {
        let encoded = record.data.as_bytes();
        // Valid base64 of this length decodes to at least `len / 4 * 3 - 2` bytes: over the
        // cap for certain, so skip decoding what the decoder would refuse anyway.
        if encoded.len() / 4 * 3 > cfg.max_record_bytes.saturating_add(2) {
            stats.failed(DecodeError::TooLarge);
            continue;
        }
        if batcher
            .push_with(|buf| BASE64.decode_vec(encoded, buf))
            .is_err()
        {
            stats.bad_base64 += 1;
            continue;
        }
        if batcher.is_full()
            && let Some(batch) = batcher.take()
        {
            batches.submit(batch)?;
        }
    }
    if let Some(batch) = batcher.take() {
        batches.submit(batch)?;
    }
    Ok((batches.acks, stats))
}

/// The batches one request has handed to the pipeline.
struct Batches {
    partition: PartitionInput,
    /// Carried by every batch of the request.
    attributes: Option<Arc<[Arc<str>]>>,
    acks: Vec<oneshot::Receiver<BatchOutcome>>,
}

impl Batches {
    fn submit(&mut self, mut batch: RawBatch) -> Result<(), RequestError> {
        let (tx, rx) = oneshot::channel();
        batch.ack = Some(Box::new(move |outcome| {
            // The request may have been abandoned; the counts are merged either way.
            let _ = tx.send(outcome);
        }));
        batch.attributes = self.attributes.clone();
        let sent = if self.acks.is_empty() {
            // Nothing of this request is in the pipeline yet: a full queue is answered 503 at
            // once with nothing half-done, and Firehose backs off.
            self.partition.try_submit(batch)
        } else {
            // Part of the request is already being counted: finish it, waiting for room,
            // rather than fail and have Firehose resend the part already in.
            self.partition.submit(batch)
        };
        sent.map_err(|e| match e {
            SubmitError::Full(_) => RequestError::QueueFull,
            SubmitError::Closed(_) => RequestError::PipelineClosed,
        })?;
        self.acks.push(rx);
        Ok(())
    }
}

/// Gunzips a whole (multi-member) body, refusing it once it passes `cap` bytes — a gzip bomb
/// costs at most `cap` bytes of memory.
pub(crate) fn gunzip_capped(data: &[u8], cap: usize) -> Result<Vec<u8>, RequestError> {
    crate::gzip::inflate_capped(data, cap).map_err(|e| match e {
        GzipError::TooLarge => RequestError::DecompressedTooLarge { limit: cap },
        GzipError::Corrupt => RequestError::BadGzip(e.to_string()),
    })
}

/// The request id from the header, if usable.
fn request_id(headers: &HeaderMap) -> Result<&str, RequestError> {
    let value = headers
        .get(REQUEST_ID_HEADER)
        .ok_or(RequestError::MissingRequestId)?;
    let id = value.to_str().map_err(|_| RequestError::BadRequestId {
        max: MAX_REQUEST_ID_BYTES,
    })?;
    if id.is_empty() {
        return Err(RequestError::MissingRequestId);
    }
    if id.len() > MAX_REQUEST_ID_BYTES {
        return Err(RequestError::BadRequestId {
            max: MAX_REQUEST_ID_BYTES,
        });
    }
    Ok(id)
}

/// The id every response echoes: the header's, or "" when there is no usable one.
fn echo_request_id(headers: &HeaderMap) -> String {
    request_id(headers).unwrap_or_default().to_owned()
}

/// A header for a log line or an error message: lossy, cut to `max` characters.
fn header_text(headers: &HeaderMap, name: &str, max: usize) -> String {
    headers.get(name).map_or_else(String::new, |v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(max)
            .collect()
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A response as the spec wants it: JSON, `Content-Length` (the body is one known-size
/// chunk), no `Content-Encoding`, the request id echoed, an integer timestamp.
pub(crate) fn respond(status: StatusCode, request_id: &str, message: Option<&str>) -> Response {
    let body = FirehoseResponse {
        request_id,
        timestamp: now_ms(),
        error_message: message,
    }
    .to_json();
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}
