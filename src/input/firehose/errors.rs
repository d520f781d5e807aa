//! Why a Firehose request was not accepted. Each [`RequestError`] variant maps to exactly one
//! HTTP status ([`RequestError::status`]) and one closed-set reason ([`RequestError::reason`],
//! a log and metric label); its `Display` text becomes the response's `errorMessage`, which
//! Firehose copies into the S3 error output once it gives up. Remember what Firehose does with
//! each status: 413 drops the batch for good, everything else but 200 is retried.

use axum::http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("only POST is accepted")]
    MethodNotAllowed,
    #[error("the endpoint is shutting down; retry later")]
    Draining,
    #[error("missing X-Amz-Firehose-Access-Key")]
    MissingAccessKey,
    #[error("wrong X-Amz-Firehose-Access-Key")]
    WrongAccessKey,
    #[error("unsupported X-Amz-Firehose-Protocol-Version {0:?}; only 1.0 is understood")]
    ProtocolVersion(String),
    #[error("missing X-Amz-Firehose-Request-Id")]
    MissingRequestId,
    #[error("X-Amz-Firehose-Request-Id is not printable ASCII of at most {max} bytes")]
    BadRequestId { max: usize },
    #[error("a request with this id is being processed; retry later")]
    InFlight,
    #[error("unsupported Content-Encoding {0:?}; only gzip or none")]
    UnsupportedEncoding(String),
    /// Permanent on purpose: Firehose will not send a smaller version of the same batch, and
    /// AWS's advice for 413 is to lower the stream's buffer size.
    #[error("request body over {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("decompressed request body over {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("reading the request body failed: {0}")]
    BodyRead(String),
    /// The sender stalled (or crawled) mid-body; retried by Firehose like any non-413.
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout { secs: u64 },
    #[error("the gzip request body is corrupt: {0}")]
    BadGzip(String),
    #[error("the request body is not a Firehose request: {0}")]
    BadJson(String),
    #[error("{count} records; at most {max} per request")]
    TooManyRecords { count: usize, max: usize },
    #[error("the body's requestId does not match X-Amz-Firehose-Request-Id")]
    RequestIdMismatch,
    #[error("the pipeline is full; retry later")]
    QueueFull,
    #[error("more than {max} requests in progress; retry later")]
    TooManyRequests { max: usize },
    #[error("the pipeline is shut down; retry later")]
    PipelineClosed,
    #[error("internal error: {0}")]
    Internal(String),
}

impl RequestError {
    /// The one status this error is answered with.
    pub fn status(&self) -> StatusCode {
        use RequestError::*;
        match self {
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            MissingAccessKey => StatusCode::UNAUTHORIZED,
            WrongAccessKey => StatusCode::FORBIDDEN,
            ProtocolVersion(_)
            | MissingRequestId
            | BadRequestId { .. }
            | BodyRead(_)
            | BadGzip(_)
            | BadJson(_)
            | TooManyRecords { .. }
            | RequestIdMismatch => StatusCode::BAD_REQUEST,
            BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyTooLarge { .. } | DecompressedTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Draining | InFlight | QueueFull | TooManyRequests { .. } | PipelineClosed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, closed-set name for logs and metric labels.
    pub fn reason(&self) -> &'static str {
        use RequestError::*;
        match self {
            MethodNotAllowed => "method_not_allowed",
            Draining => "draining",
            MissingAccessKey => "missing_access_key",
            WrongAccessKey => "wrong_access_key",
            ProtocolVersion(_) => "protocol_version",
            MissingRequestId => "missing_request_id",
            BadRequestId { .. } => "bad_request_id",
            InFlight => "in_flight",
            UnsupportedEncoding(_) => "unsupported_encoding",
            BodyTooLarge { .. } => "body_too_large",
            DecompressedTooLarge { .. } => "decompressed_too_large",
            BodyRead(_) => "body_read",
            BodyTimeout { .. } => "body_timeout",
            BadGzip(_) => "bad_gzip",
            BadJson(_) => "bad_json",
            TooManyRecords { .. } => "too_many_records",
            RequestIdMismatch => "request_id_mismatch",
            QueueFull => "queue_full",
            TooManyRequests { .. } => "too_many_requests",
            PipelineClosed => "pipeline_closed",
            Internal(_) => "internal",
        }
    }

    /// Every reason, so the failure counter starts with all of them at zero.
    pub const REASONS: [&'static str; 21] = [
        "method_not_allowed",
        "draining",
        "missing_access_key",
        "wrong_access_key",
        "protocol_version",
        "missing_request_id",
        "bad_request_id",
        "in_flight",
        "unsupported_encoding",
        "body_too_large",
        "decompressed_too_large",
        "body_read",
        "body_timeout",
        "bad_gzip",
        "bad_json",
        "too_many_records",
        "request_id_mismatch",
        "queue_full",
        "too_many_requests",
        "pipeline_closed",
        "internal",
    ];
}
