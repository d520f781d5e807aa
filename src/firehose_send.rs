//! `albwatch firehose-send`: a load driver that plays Amazon Data Firehose against an HTTP
//! endpoint (ours in `firehose/`, or anyone's). It owns the client side of the Firehose HTTP
//! endpoint delivery protocol
//! (<https://docs.aws.amazon.com/firehose/latest/dev/httpdeliveryrequestresponse.html>):
//! it reads ALB log files (plain or gzip, through [`crate::lines`]), packs their lines into
//! base64 records and requests within Firehose's limits (10 000 records, 1 024 000 raw bytes a
//! record, a byte budget a request), sends them with the spec's headers and optional gzip body
//! under bounded concurrency, and retries exactly as Firehose does: only a spec-conforming 200
//! is success, 413 drops the batch for good, and anything else is retried with the same request
//! id and body after a jittered, capped exponential backoff. It hands back a [`SendReport`]
//! (counts, bytes, throughput, latency percentiles) for the CLI to print and tests to check;
//! nothing in the daemon depends on it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
// `axum::body::Bytes` is the `bytes` crate's type re-exported; reqwest takes it as a body, and
// cloning it for a retry shares the buffer instead of copying up to 64 MiB.
use axum::body::Bytes;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use clap::Parser as _;
use flate2::Compression;
use flate2::write::GzEncoder;
use hdrhistogram::Histogram;
use reqwest::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
};
use reqwest::{Client, Url};
use tokio::sync::{Mutex, mpsc};

use crate::lines::{self, DEFAULT_MAX_LINE_BYTES, Line, LineReader};
use crate::rng::SplitMix64;

/// Where the access key comes from unless `--access-key-env` names another variable.
pub const DEFAULT_ACCESS_KEY_ENV: &str = "ALBWATCH_FIREHOSE_ACCESS_KEY";
/// A made-up but well-formed stream ARN, so an endpoint that logs or checks it sees a real shape.
pub const DEFAULT_SOURCE_ARN: &str =
    "arn:aws:firehose:us-east-1:123456789012:deliverystream/albwatch-firehose-send";
/// Firehose's ceiling on records in one request.
pub const MAX_RECORDS_PER_REQUEST: u32 = 10_000;
/// Firehose's ceiling on one record's raw (pre-base64) size.
pub const MAX_RECORD_BYTES: usize = 1_024_000;
/// Firehose's ceiling on one request body before compression (64 MiB buffering hint).
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024 * 1024;
/// Firehose copies at most this many bytes of access key.
pub const MAX_ACCESS_KEY_BYTES: usize = 4096;
/// The response spec's body ceiling; a bigger 200 does not conform.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Backoff multiplier cap: Firehose waits at most 120 × its 1 s base.
const BACKOFF_CAP_STEPS: u64 = 120;
/// Problems kept for the report; a run against a dead endpoint would otherwise list every batch.
const MAX_PROBLEMS: usize = 20;
/// Bounds of the latency histogram, in microseconds: 1 µs to one hour, 3 significant digits.
const LATENCY_MAX_US: u64 = 3_600_000_000;

const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("x-amz-firehose-protocol-version");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-amz-firehose-request-id");
const SOURCE_ARN: HeaderName = HeaderName::from_static("x-amz-firehose-source-arn");
const ACCESS_KEY: HeaderName = HeaderName::from_static("x-amz-firehose-access-key");
const COMMON_ATTRIBUTES: HeaderName = HeaderName::from_static("x-amz-firehose-common-attributes");

/// Send ALB log lines to an HTTP endpoint exactly as Amazon Data Firehose would.
#[derive(Debug, Clone, clap::Args)]
pub struct FirehoseSendArgs {
    /// Log files to send (plain or gzip, detected by content); `-` or none reads stdin.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// The endpoint, http:// or https://; its path and query are sent as they are.
    #[arg(long, value_name = "URL")]
    pub url: String,

    /// Environment variable holding the access key sent as X-Amz-Firehose-Access-Key (at most
    /// 4096 bytes). The key is never a flag, so it stays out of `ps` and shell history; with
    /// the variable unset no key header is sent.
    #[arg(long, value_name = "VAR", default_value = DEFAULT_ACCESS_KEY_ENV)]
    pub access_key_env: String,

    /// Most records in one request (Firehose allows 1-10000).
    #[arg(long, value_name = "N", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub records_per_request: u32,

    /// Most bytes of JSON body in one request, before compression (Firehose's buffering hint:
    /// 1-64 MiB, default 5 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = 5 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=67_108_864))]
    pub request_bytes: u64,

    /// Log lines in one record, each ending in a newline: 100 is what a forwarder of S3 log
    /// files might send, 1 is one line per record as vended logs are. A record is also closed
    /// before it would pass 1 024 000 bytes.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub lines_per_record: u32,

    /// Gzip the whole body and send Content-Encoding: gzip, as a stream configured with GZIP.
    #[arg(long)]
    pub gzip: bool,

    /// Gzip level with --gzip (0-9). Firehose's own level is not documented; 1 keeps the
    /// sender's CPU out of a benchmark of the endpoint on the same machine.
    #[arg(long, value_name = "LEVEL", default_value_t = 6,
          value_parser = clap::value_parser!(u32).range(0..=9))]
    pub gzip_level: u32,

    /// Encode (and gzip) every request before the clock starts, holding the whole input in
    /// memory: the rate reported is then the endpoint's alone, as with a real Firehose, which
    /// does its encoding on AWS's machines, not on the endpoint's.
    #[arg(long)]
    pub prepare: bool,

    /// Requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,

    /// Retries of one batch after its first attempt before giving it up.
    #[arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub max_retries: u32,

    /// Backoff unit: retry n waits min(120, 2^n) units × U(0.85, 1.15). Firehose's unit is
    /// 1000 ms; the smaller default keeps load runs and tests quick.
    #[arg(long, value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub backoff_ms: u64,

    /// Time one attempt may take, response body included, before it counts as failed and is
    /// retried (Firehose allows 3 minutes).
    #[arg(long, value_name = "MS", default_value_t = 180_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub attempt_timeout_ms: u64,

    /// Sent as X-Amz-Firehose-Source-Arn.
    #[arg(long, value_name = "ARN", default_value = DEFAULT_SOURCE_ARN)]
    pub source_arn: String,

    /// A JSON object sent verbatim as X-Amz-Firehose-Common-Attributes, e.g.
    /// '{"commonAttributes":{"env":"prod"}}'.
    #[arg(long, value_name = "JSON")]
    pub common_attributes: Option<String>,

    /// Longest log line sent, in bytes; longer lines are skipped and counted.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
}

impl FirehoseSendArgs {
    /// Parses the sub-command's flags (without program or sub-command name), with clap's
    /// defaults and range checks; for tests and for callers that build the arguments in code.
    pub fn try_from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: FirehoseSendArgs,
        }
        let argv = std::iter::once(OsString::from("firehose-send"))
            .chain(flags.into_iter().map(Into::into));
        Wrapper::try_parse_from(argv).map(|w| w.args)
    }

    /// Second phase of the flags: everything checked and turned into the values the send loop
    /// uses, before any file is opened or connection made.
    fn validate(&self, access_key: Option<&str>) -> Result<SendConfig, ArgsError> {
        let url = Url::parse(&self.url).map_err(|e| ArgsError::Url {
            url: self.url.clone(),
            why: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ArgsError::Url {
                url: self.url.clone(),
                why: "must be an http:// or https:// URL with a host".into(),
            });
        }

        let request_bytes =
            usize::try_from(self.request_bytes.min(MAX_REQUEST_BYTES)).unwrap_or(usize::MAX);
        if self.max_line_bytes == 0 || self.max_line_bytes >= MAX_RECORD_BYTES {
            return Err(ArgsError::MaxLineBytes(self.max_line_bytes));
        }
        // Every line (plus its newline) must fit a record that fits an otherwise empty request,
        // so no input can produce a request over the budget.
        let need = ENVELOPE_BYTES + record_json_len(self.max_line_bytes + 1);
        if request_bytes < need {
            return Err(ArgsError::RequestBytesTooSmall {
                got: self.request_bytes,
                max_line: self.max_line_bytes,
                need,
            });
        }

        let mut headers = HeaderMap::new();
        headers.insert(PROTOCOL_VERSION, HeaderValue::from_static("1.0"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.gzip {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if !self.source_arn.is_ascii() || self.source_arn.is_empty() {
            return Err(ArgsError::SourceArn("must be non-empty ASCII".into()));
        }
        let arn = HeaderValue::from_str(&self.source_arn)
            .map_err(|_| ArgsError::SourceArn("cannot be sent as a header value".into()))?;
        headers.insert(SOURCE_ARN, arn);
        if let Some(key) = access_key {
            let why = if key.len() > MAX_ACCESS_KEY_BYTES {
                Some(format!(
                    "{} bytes is over Firehose's {MAX_ACCESS_KEY_BYTES}",
                    key.len()
                ))
            } else {
                None
            };
            let value = match why {
                Some(why) => Err(why),
                None => HeaderValue::from_bytes(key.as_bytes())
                    .map_err(|_| "contains control characters (a newline?)".to_string()),
            };
            let mut value = value.map_err(|why| ArgsError::AccessKey {
                var: self.access_key_env.clone(),
                why,
            })?;
            // Keeps the key out of any Debug print of the headers.
            value.set_sensitive(true);
            headers.insert(ACCESS_KEY, value);
        }
        if let Some(attrs) = &self.common_attributes {
            match serde_json::from_str::<serde_json::Value>(attrs) {
                Ok(serde_json::Value::Object(_)) => {}
                Ok(_) => return Err(ArgsError::CommonAttributes("not a JSON object".into())),
                Err(e) => return Err(ArgsError::CommonAttributes(format!("not JSON: {e}"))),
            }
            let value = HeaderValue::from_bytes(attrs.as_bytes()).map_err(|_| {
                ArgsError::CommonAttributes(
                    "cannot be a header value (write it on one line)".into(),
                )
            })?;
            headers.insert(COMMON_ATTRIBUTES, value);
        }

        let files = if self.files.is_empty() {
            vec![PathBuf::from("-")]
        } else {
            self.files.clone()
        };
        Ok(SendConfig {
            files,
            url,
            headers,
            limits: Limits {
                records_per_request: self.records_per_request.clamp(1, MAX_RECORDS_PER_REQUEST)
                    as usize,
                request_bytes,
                lines_per_record: self.lines_per_record.max(1) as usize,
                max_line_bytes: self.max_line_bytes,
            },
            gzip: self.gzip,
            gzip_level: self.gzip_level,
            prepare: self.prepare,
            concurrency: self.concurrency.max(1) as usize,
            max_retries: self.max_retries,
            backoff_unit: Duration::from_millis(self.backoff_ms),
            attempt_timeout: Duration::from_millis(self.attempt_timeout_ms.max(1)),
        })
    }
}

/// Flags that cannot be used, each message naming its flag.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("--url {url:?}: {why}")]
    Url { url: String, why: String },
    #[error(
        "--max-line-bytes {0}: must be at least 1 and leave room for a newline in a record of \
         at most {MAX_RECORD_BYTES} bytes"
    )]
    MaxLineBytes(usize),
    #[error(
        "--request-bytes {got}: too small for one record holding a {max_line}-byte line \
         (--max-line-bytes); needs at least {need}"
    )]
    RequestBytesTooSmall {
        got: u64,
        max_line: usize,
        need: usize,
    },
    #[error("--source-arn: {0}")]
    SourceArn(String),
    #[error("--common-attributes: {0}")]
    CommonAttributes(String),
    #[error("access key (from ${var}): {why}")]
    AccessKey { var: String, why: String },
}

/// Validated flags.
#[derive(Debug)]
struct SendConfig {
    /// Inputs in order; `-` is stdin.
    files: Vec<PathBuf>,
    url: Url,
    /// Headers every request carries; only the request id differs between batches.
    headers: HeaderMap,
    limits: Limits,
    gzip: bool,
    gzip_level: u32,
    prepare: bool,
    concurrency: usize,
    max_retries: u32,
    backoff_unit: Duration,
    attempt_timeout: Duration,
}

/// How lines are packed into records and requests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    records_per_request: usize,
    /// Budget for the uncompressed JSON body; validation ensures one longest line fits.
    request_bytes: usize,
    lines_per_record: usize,
    max_line_bytes: usize,
}

/// Bytes of the body around the records, with room for a 20-digit (any `u64`) timestamp so the
/// budget holds whatever the clock says: `{"requestId":"<36>","timestamp":<ts>,"records":[`…`]}`.
const ENVELOPE_BYTES: usize = r#"{"requestId":""#.len()
    + 36
    + r#"","timestamp":"#.len()
    + 20
    + r#","records":["#.len()
    + r#"]}"#.len();
/// `{"data":""}` around one record's base64.
const RECORD_OVERHEAD: usize = r#"{"data":""}"#.len();

fn base64_len(raw: usize) -> usize {
    raw.div_ceil(3) * 4
}

fn record_json_len(raw: usize) -> usize {
    RECORD_OVERHEAD + base64_len(raw)
}

/// The largest raw record that fits an otherwise empty request of `request_bytes`, and
/// Firehose's per-record ceiling.
fn record_cap(request_bytes: usize) -> usize {
    let room = request_bytes.saturating_sub(ENVELOPE_BYTES + RECORD_OVERHEAD);
    (room / 4 * 3).min(MAX_RECORD_BYTES)
}

/// One request's worth of records. Built once; every retry resends the same id and bytes.
#[derive(Debug)]
struct Batch {
    request_id: String,
    /// The uncompressed JSON body (emptied once `body` is prepared).
    json: Vec<u8>,
    /// Its length: what `raw_bytes` counts.
    json_len: usize,
    /// The body as sent, when prepared before sending (`--prepare`).
    body: Option<Bytes>,
    records: u64,
    lines: u64,
}

/// Packs lines into records and records into batches, closing each as soon as the next piece
/// would break one of the [`Limits`].
struct BatchBuilder {
    limits: Limits,
    record_cap: usize,
    rng: SplitMix64,
    /// The open record's raw bytes: whole lines, each ending in `\n`.
    record: Vec<u8>,
    record_lines: usize,
    /// The open batch's records as JSON, comma-separated.
    records_json: String,
    batch_records: usize,
    batch_lines: u64,
}

impl BatchBuilder {
    fn new(limits: Limits, rng: SplitMix64) -> Self {
        BatchBuilder {
            limits,
            record_cap: record_cap(limits.request_bytes),
            rng,
            record: Vec::new(),
            record_lines: 0,
            records_json: String::new(),
            batch_records: 0,
            batch_lines: 0,
        }
    }

    /// Adds one line (without its newline); returns the batch this closed, if any.
    fn push_line(&mut self, line: &[u8]) -> Option<Batch> {
        let need = line.len() + 1;
        let mut closed = None;
        if self.record_lines > 0
            && (self.record_lines >= self.limits.lines_per_record
                || self.record.len() + need > self.record_cap)
        {
            closed = self.close_record();
        }
        self.record.extend_from_slice(line);
        self.record.push(b'\n');
        self.record_lines += 1;
        closed
    }

    /// Moves the open record into the open batch, first closing the batch if the record would
    /// break its count or byte budget. At most one batch closes per call.
    fn close_record(&mut self) -> Option<Batch> {
        if self.record_lines == 0 {
            return None;
        }
        let cost = usize::from(self.batch_records > 0) + record_json_len(self.record.len());
        let closed = if self.batch_records > 0
            && (self.batch_records >= self.limits.records_per_request
                || ENVELOPE_BYTES + self.records_json.len() + cost > self.limits.request_bytes)
        {
            self.take_batch()
        } else {
            None
        };
        if self.batch_records > 0 {
            self.records_json.push(',');
        }
        self.records_json.push_str(r#"{"data":""#);
        BASE64_STANDARD.encode_string(&self.record, &mut self.records_json);
        self.records_json.push_str(r#""}"#);
        self.batch_records += 1;
        self.batch_lines += self.record_lines as u64;
        self.record.clear();
        self.record_lines = 0;
        closed
    }

    /// Wraps the open batch's records in the request envelope, with a fresh id and the time.
    fn take_batch(&mut self) -> Option<Batch> {
        if self.batch_records == 0 {
            return None;
        }
        let request_id = request_id(&mut self.rng);
        let mut json = String::with_capacity(ENVELOPE_BYTES + self.records_json.len());
        // Writing to a String cannot fail.
        let _ = write!(
            json,
            r#"{{"requestId":"{request_id}","timestamp":{},"records":["#,
            now_ms()
        );
        json.push_str(&self.records_json);
        json.push_str("]}");
        let batch = Batch {
            request_id,
            json_len: json.len(),
            json: json.into_bytes(),
            body: None,
            records: self.batch_records as u64,
            lines: self.batch_lines,
        };
        self.records_json.clear();
        self.batch_records = 0;
        self.batch_lines = 0;
        Some(batch)
    }

    /// End of input: closes the last record and batch.
    fn finish(&mut self) -> Vec<Batch> {
        let mut out: Vec<Batch> = self.close_record().into_iter().collect();
        out.extend(self.take_batch());
        out
    }
}

fn now_ms() -> u64 {
    // A clock before 1970 is a broken host; 0 still makes a well-formed body.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random id shaped like a UUID v4 (version nibble 4, variant bits 10), lower-case hex, as
/// Firehose's ids are.
fn request_id(rng: &mut SplitMix64) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next().to_be_bytes());
    b[8..].copy_from_slice(&rng.next().to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut id = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// Firehose's wait before retry `retry` (0 for the first retry): `min(120, 2^n)` units times a
/// jitter factor in [0.85, 1.15] taken from `unit_random` in [0, 1).
pub fn backoff_delay(retry: u32, unit: Duration, unit_random: f64) -> Duration {
    let steps = if retry >= 7 {
        BACKOFF_CAP_STEPS
    } else {
        (1u64 << retry).min(BACKOFF_CAP_STEPS)
    };
    // Randomness out of range (or NaN) must not stretch the wait past the formula's bounds.
    let r = if unit_random.is_finite() {
        unit_random.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let jitter = 0.85 + 0.30 * r;
    Duration::try_from_secs_f64(unit.as_secs_f64() * steps as f64 * jitter).unwrap_or(Duration::MAX)
}

/// What one HTTP answer means to Firehose.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// A 200 that meets the response spec.
    Delivered,
    /// 413: the batch is dropped, never retried.
    TooLarge(String),
    /// Anything else, including a 200 off the spec (Firehose reads it as a 500).
    Retry { why: String, bad_200: bool },
}

/// Judges one answer the way Firehose does: only a 200 that meets the response spec succeeds,
/// 413 drops the batch, and anything else is retried. `truncated` says the body went past 1 MiB
/// and only its start is in `body`.
fn judge(status: u16, headers: &HeaderMap, body: &[u8], truncated: bool, id: &str) -> Verdict {
    match status {
        200 => match conforms(headers, body, truncated, id) {
            Ok(()) => Verdict::Delivered,
            Err(why) => Verdict::Retry {
                why: format!("200 off the response spec ({why}), taken as 500"),
                bad_200: true,
            },
        },
        413 => Verdict::TooLarge(with_message("413", body)),
        _ => Verdict::Retry {
            why: with_message(&status.to_string(), body),
            bad_200: false,
        },
    }
}

/// Whether a 200 meets the response spec. A `Content-Type` with parameters
/// (`application/json; charset=utf-8`) is accepted: the spec names only the media type.
fn conforms(headers: &HeaderMap, body: &[u8], truncated: bool, id: &str) -> Result<(), String> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match content_type.as_deref() {
        Some(ct)
            if ct
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) => {}
        Some(ct) => return Err(format!("Content-Type {ct:?}, not application/json")),
        None => return Err("no Content-Type".into()),
    }
    if let Some(enc) = headers.get(CONTENT_ENCODING) {
        return Err(format!(
            "Content-Encoding {:?} on the response",
            String::from_utf8_lossy(enc.as_bytes())
        ));
    }
    if truncated {
        return Err(format!("body over {MAX_RESPONSE_BYTES} bytes"));
    }
    if !body.is_empty() && !headers.contains_key(CONTENT_LENGTH) {
        return Err("body without Content-Length".into());
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let obj = value.as_object().ok_or("body is not a JSON object")?;
    match obj.get("requestId") {
        Some(serde_json::Value::String(got)) if got == id => {}
        Some(serde_json::Value::String(got)) => {
            return Err(format!("requestId {got:?} is not the request's {id:?}"));
        }
        _ => return Err("no requestId string".into()),
    }
    match obj.get("timestamp") {
        Some(t) if t.is_u64() || t.is_i64() => Ok(()),
        Some(_) => Err("timestamp is not an integer".into()),
        None => Err("no timestamp".into()),
    }
}

/// `status` plus the body's `errorMessage` when it has one, shortened for a report line.
fn with_message(status: &str, body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errorMessage")?.as_str().map(str::to_owned));
    match message {
        Some(m) => {
            let short: String = m.chars().take(200).collect();
            format!("{status}: {short}")
        }
        None => status.to_string(),
    }
}

/// Counts from the reading side.
#[derive(Debug, Default)]
struct ReadStats {
    lines: u64,
    too_long: u64,
    blank: u64,
    unreadable: Vec<(PathBuf, String)>,
}

/// Reads every input in turn, line by line, and hands batches to the senders. Runs on a
/// blocking thread; `blocking_send` on the bounded channel is the backpressure that keeps at
/// most `concurrency` batches waiting. A file that cannot be read is reported and skipped.
fn read_inputs(files: &[PathBuf], limits: Limits, tx: &mpsc::Sender<Batch>) -> ReadStats {
    let mut stats = ReadStats::default();
    let mut builder = BatchBuilder::new(limits, SplitMix64::from_entropy());
    for path in files {
        let reader = match lines::open(path) {
            Ok(reader) => reader,
            Err(e) => {
                stats.unreadable.push((path.clone(), e.to_string()));
                continue;
            }
        };
        let mut lines = LineReader::new(reader, limits.max_line_bytes);
        loop {
            match lines.next_line() {
                Ok(Some((_, Line::Complete(line)))) => {
                    // A blank line carries no entry, and the endpoint would skip it anyway.
                    if line.is_empty() {
                        stats.blank += 1;
                        continue;
                    }
                    stats.lines += 1;
                    if let Some(batch) = builder.push_line(line) {
                        // A closed channel means every sender is gone: nothing left to do.
                        if tx.blocking_send(batch).is_err() {
                            return stats;
                        }
                    }
                }
                Ok(Some((_, Line::TooLong { .. }))) => stats.too_long += 1,
                Ok(None) => break,
                Err(e) => {
                    stats.unreadable.push((path.clone(), e.to_string()));
                    break;
                }
            }
        }
    }
    for batch in builder.finish() {
        if tx.blocking_send(batch).is_err() {
            break;
        }
    }
    stats
}

/// What one sender task counted; merged into the report at the end, so no lock per request.
#[derive(Debug)]
struct SendStats {
    batches: u64,
    delivered: u64,
    dropped_413: u64,
    given_up: u64,
    attempts: u64,
    ok: u64,
    failed: u64,
    retried: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    timeouts: u64,
    bad_200: u64,
    records: u64,
    records_delivered: u64,
    lines: u64,
    lines_delivered: u64,
    raw_bytes: u64,
    wire_bytes: u64,
    wire_bytes_sent: u64,
    /// Microseconds per answered attempt.
    latency_us: Histogram<u64>,
    last_error: Option<String>,
    problems: Vec<String>,
    problems_omitted: u64,
}

impl SendStats {
    fn new(latency_us: Histogram<u64>) -> Self {
        SendStats {
            batches: 0,
            delivered: 0,
            dropped_413: 0,
            given_up: 0,
            attempts: 0,
            ok: 0,
            failed: 0,
            retried: 0,
            statuses: BTreeMap::new(),
            transport_errors: 0,
            timeouts: 0,
            bad_200: 0,
            records: 0,
            records_delivered: 0,
            lines: 0,
            lines_delivered: 0,
            raw_bytes: 0,
            wire_bytes: 0,
            wire_bytes_sent: 0,
            latency_us,
            last_error: None,
            problems: Vec::new(),
            problems_omitted: 0,
        }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        } else {
            self.problems_omitted += 1;
        }
    }

    fn merge(&mut self, other: SendStats) {
        self.batches += other.batches;
        self.delivered += other.delivered;
        self.dropped_413 += other.dropped_413;
        self.given_up += other.given_up;
        self.attempts += other.attempts;
        self.ok += other.ok;
        self.failed += other.failed;
        self.retried += other.retried;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.timeouts += other.timeouts;
        self.bad_200 += other.bad_200;
        self.records += other.records;
        self.records_delivered += other.records_delivered;
        self.lines += other.lines;
        self.lines_delivered += other.lines_delivered;
        self.raw_bytes += other.raw_bytes;
        self.wire_bytes += other.wire_bytes;
        self.wire_bytes_sent += other.wire_bytes_sent;
        // Same bounds on both sides, so adding cannot fail; if it somehow did, only the
        // percentiles would be short.
        let _ = self.latency_us.add(&other.latency_us);
        if other.last_error.is_some() {
            self.last_error = other.last_error;
        }
        for p in other.problems {
            self.problem(p);
        }
        self.problems_omitted += other.problems_omitted;
    }
}

/// How one attempt ended.
enum Attempt {
    Delivered,
    TooLarge(String),
    Failed(String),
}

/// What every sender task shares.
struct Sender {
    client: Client,
    url: Url,
    headers: HeaderMap,
    gzip: bool,
    gzip_level: u32,
    max_retries: u32,
    backoff_unit: Duration,
    attempt_timeout: Duration,
}

impl Sender {
    /// Pulls batches until the reader is done. The receiver sits behind a mutex so that idle
    /// tasks queue for the next batch; the lock is never held while sending.
    async fn work(
        self: Arc<Self>,
        rx: Arc<Mutex<mpsc::Receiver<Batch>>>,
        mut stats: SendStats,
    ) -> SendStats {
        let mut rng = SplitMix64::from_entropy();
        loop {
            let next = rx.lock().await.recv().await;
            let Some(batch) = next else { break };
            self.deliver(batch, &mut stats, &mut rng).await;
        }
        stats
    }

    /// Sends one batch until it is delivered, dropped (413) or out of retries.
    async fn deliver(&self, batch: Batch, stats: &mut SendStats, rng: &mut SplitMix64) {
        let Batch {
            request_id,
            json,
            json_len: raw_len,
            body,
            records,
            lines,
        } = batch;
        stats.batches += 1;
        stats.records += records;
        stats.lines += lines;
        stats.raw_bytes += raw_len as u64;
        let body = if let Some(body) = body {
            body
        } else if self.gzip {
            // Compression is CPU work; off the async threads it runs in parallel per sender.
            let level = self.gzip_level;
            match tokio::task::spawn_blocking(move || gzip_body(&json, level)).await {
                Ok(Ok(gz)) => Bytes::from(gz),
                Ok(Err(e)) => return self.give_up(stats, &request_id, &format!("gzip: {e}")),
                Err(e) => return self.give_up(stats, &request_id, &format!("gzip task: {e}")),
            }
        } else {
            Bytes::from(json)
        };
        stats.wire_bytes += body.len() as u64;
        let mut retry = 0;
        loop {
            match self.attempt(&request_id, &body, stats).await {
                Attempt::Delivered => {
                    stats.delivered += 1;
                    stats.records_delivered += records;
                    stats.lines_delivered += lines;
                    return;
                }
                Attempt::TooLarge(why) => {
                    stats.dropped_413 += 1;
                    stats.problem(format!(
                        "batch {request_id} ({records} records, {raw_len} bytes) dropped: {why}"
                    ));
                    return;
                }
                Attempt::Failed(why) => {
                    stats.failed += 1;
                    stats.last_error = Some(why.clone());
                    if retry >= self.max_retries {
                        let why = format!("{why} (after {retry} retries)");
                        return self.give_up(stats, &request_id, &why);
                    }
                    stats.retried += 1;
                    tokio::time::sleep(backoff_delay(retry, self.backoff_unit, rng.unit())).await;
                    retry += 1;
                }
            }
        }
    }

    fn give_up(&self, stats: &mut SendStats, request_id: &str, why: &str) {
        stats.given_up += 1;
        stats.problem(format!("batch {request_id} failed: {why}"));
    }

    /// One POST of the batch, response body included, under the attempt timeout.
    async fn attempt(&self, request_id: &str, body: &Bytes, stats: &mut SendStats) -> Attempt {
        stats.attempts += 1;
        stats.wire_bytes_sent += body.len() as u64;
        let started = Instant::now();
        let request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(REQUEST_ID, request_id)
            .body(body.clone());
        let exchange = async {
            let mut response = request.send().await?;
            let status = response.status().as_u16();
            let headers = std::mem::take(response.headers_mut());
            let (answer, truncated) = read_capped(&mut response, MAX_RESPONSE_BYTES).await?;
            Ok::<_, reqwest::Error>((status, headers, answer, truncated))
        };
        let (status, headers, answer, truncated) =
            match tokio::time::timeout(self.attempt_timeout, exchange).await {
                Err(_) => {
                    stats.timeouts += 1;
                    return Attempt::Failed(format!(
                        "no answer within {} ms",
                        self.attempt_timeout.as_millis()
                    ));
                }
                Ok(Err(e)) => {
                    stats.transport_errors += 1;
                    return Attempt::Failed(crate::http_client::error_chain(&e));
                }
                Ok(Ok(answered)) => answered,
            };
        stats
            .latency_us
            .saturating_record(started.elapsed().as_micros() as u64);
        *stats.statuses.entry(status).or_default() += 1;
        match judge(status, &headers, &answer, truncated, request_id) {
            Verdict::Delivered => {
                stats.ok += 1;
                Attempt::Delivered
            }
            Verdict::TooLarge(why) => Attempt::TooLarge(why),
            Verdict::Retry { why, bad_200 } => {
                stats.bad_200 += u64::from(bad_200);
                Attempt::Failed(why)
            }
        }
    }
}

/// Reads the response body up to `cap` bytes; `true` if there was more (the rest is dropped
/// with the connection).
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            let room = cap - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

fn gzip_body(json: &[u8], level: u32) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::new(level));
    encoder.write_all(json)?;
    encoder.finish()
}

fn http_client(cfg: &SendConfig) -> anyhow::Result<Client> {
    crate::http_client::install_crypto_provider();
    Client::builder()
        // Firehose follows no redirects: a 3xx is a failed attempt, retried.
        .redirect(reqwest::redirect::Policy::none())
        // Firehose connects directly, and the latencies measured should be the endpoint's.
        .no_proxy()
        .connect_timeout(cfg.attempt_timeout)
        .pool_max_idle_per_host(cfg.concurrency)
        .user_agent(concat!(
            "albwatch-firehose-send/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .context("building the HTTP client")
}

/// Request latency percentiles, in milliseconds, over the attempts that got an answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub answered: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The outcome of a `firehose-send` run.
///
/// A batch is one request id: `batches == batches_delivered + batches_dropped_413 +
/// batches_failed`. A request is one HTTP attempt: `requests_sent == requests_ok +
/// requests_failed + batches_dropped_413`, and every failed attempt was either retried or was
/// its batch's last (`requests_failed == requests_retried + batches_failed`, barring a batch
/// that could not be compressed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendReport {
    /// Batches built from the input, one request id each.
    pub batches: u64,
    /// Batches answered by a conforming 200.
    pub batches_delivered: u64,
    /// Batches answered 413 and dropped, as Firehose drops them.
    pub batches_dropped_413: u64,
    /// Batches given up after `--max-retries` retries.
    pub batches_failed: u64,
    /// HTTP attempts made, retries included.
    pub requests_sent: u64,
    /// Attempts answered by a conforming 200.
    pub requests_ok: u64,
    /// Attempts that failed in a retryable way (other status, bad 200, error, timeout).
    pub requests_failed: u64,
    /// Failed attempts followed by another attempt of the same batch.
    pub requests_retried: u64,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Attempts that got no HTTP answer (connect refused, reset, TLS, …).
    pub transport_errors: u64,
    /// Attempts that took longer than `--attempt-timeout-ms`.
    pub timeouts: u64,
    /// 200s that broke the response spec and so counted as failures.
    pub nonconforming_200s: u64,
    pub records: u64,
    pub records_delivered: u64,
    /// Log lines put into records.
    pub lines: u64,
    pub lines_delivered: u64,
    /// Lines longer than `--max-line-bytes`, skipped.
    pub lines_too_long: u64,
    /// Empty lines, skipped.
    pub blank_lines: u64,
    /// Uncompressed JSON bodies, each batch once.
    pub raw_bytes: u64,
    /// Bodies as sent (gzip'd with `--gzip`), each batch once.
    pub wire_bytes: u64,
    /// Bodies as sent, every attempt counted.
    pub wire_bytes_with_retries: u64,
    pub gzip: bool,
    /// Wall time of the whole run.
    pub seconds: f64,
    pub latency: Latency,
    /// The last retryable failure seen, for a quick look at why.
    pub last_error: Option<String>,
    /// Dropped and failed batches, the first few.
    pub problems: Vec<String>,
    pub problems_omitted: u64,
    /// Inputs that could not be opened or read to the end, with the error.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl SendReport {
    /// Delivered lines per second of wall time.
    pub fn lines_per_sec(&self) -> f64 {
        self.lines_delivered as f64 / self.seconds.max(1e-9)
    }

    /// Every input read and every batch delivered.
    pub fn all_delivered(&self) -> bool {
        self.unreadable.is_empty() && self.batches_delivered == self.batches
    }
}

impl fmt::Display for SendReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "firehose-send: {} of {} lines delivered in {:.2} s ({:.0} lines/s)",
            self.lines_delivered,
            self.lines,
            self.seconds,
            self.lines_per_sec()
        )?;
        writeln!(
            f,
            "  batches:  {} built, {} delivered, {} dropped (413), {} failed after retries",
            self.batches, self.batches_delivered, self.batches_dropped_413, self.batches_failed
        )?;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, n)| format!("{status}×{n}"))
            .collect();
        writeln!(
            f,
            "  requests: {} sent, {} ok, {} failed ({} retried), {} dropped (413); answers {}; \
             {} connection errors, {} timeouts, {} non-conforming 200s",
            self.requests_sent,
            self.requests_ok,
            self.requests_failed,
            self.requests_retried,
            self.batches_dropped_413,
            if statuses.is_empty() {
                "none".to_string()
            } else {
                statuses.join(" ")
            },
            self.transport_errors,
            self.timeouts,
            self.nonconforming_200s
        )?;
        writeln!(
            f,
            "  records:  {} ({} delivered); lines skipped: {} over --max-line-bytes, {} blank",
            self.records, self.records_delivered, self.lines_too_long, self.blank_lines
        )?;
        writeln!(
            f,
            "  bytes:    {} raw JSON, {} on the wire{}, {} with retries",
            self.raw_bytes,
            self.wire_bytes,
            if self.gzip { " (gzip)" } else { "" },
            self.wire_bytes_with_retries
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "  latency:  p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} answered requests)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.answered
        )?;
        if let Some(e) = &self.last_error {
            writeln!(f, "  last error: {e}")?;
        }
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        if self.problems_omitted > 0 {
            writeln!(f, "  … and {} more problems", self.problems_omitted)?;
        }
        for (path, e) in &self.unreadable {
            writeln!(f, "  unreadable: {}: {e}", path.display())?;
        }
        Ok(())
    }
}

/// Reads the access key from `var`: unset means no key; a value that is not UTF-8 is an error
/// rather than a silently mangled key.
fn env_access_key(
    var: &str,
    lookup: impl FnOnce(&str) -> Result<String, std::env::VarError>,
) -> Result<Option<String>, ArgsError> {
    match lookup(var) {
        Ok(key) => Ok(Some(key)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(ArgsError::AccessKey {
            var: var.to_string(),
            why: "not valid UTF-8".into(),
        }),
    }
}

/// Runs `firehose-send`: validates `args`, reads the inputs and sends every batch, and returns
/// the report once all are delivered, dropped or given up. `access_key` overrides the variable
/// named by `--access-key-env` (tests pass it directly; the CLI passes `None`). Errors are bad
/// flags and a client that cannot be built; an unreadable input or a failed batch is counted in
/// the report, not an error.
/// The input reader: still feeding the senders, or done before they started (`--prepare`).
enum Reader {
    Running(tokio::task::JoinHandle<ReadStats>),
    Done(ReadStats),
}

/// Reads every input and encodes every request up front (`--prepare`), gzip included, on
/// every core; returns them queued for the senders.
async fn prepare(cfg: &SendConfig) -> anyhow::Result<(mpsc::Receiver<Batch>, ReadStats)> {
    let (tx, mut rx) = mpsc::channel::<Batch>(cfg.concurrency);
    let files = cfg.files.clone();
    let limits = cfg.limits;
    let reader = tokio::task::spawn_blocking(move || read_inputs(&files, limits, &tx));
    let mut encoding = Vec::new();
    while let Some(mut batch) = rx.recv().await {
        let (gzip, level) = (cfg.gzip, cfg.gzip_level);
        encoding.push(tokio::task::spawn_blocking(move || {
            let json = std::mem::take(&mut batch.json);
            batch.body = Some(if gzip {
                Bytes::from(gzip_body(&json, level)?)
            } else {
                Bytes::from(json)
            });
            Ok::<_, std::io::Error>(batch)
        }));
    }
    let read = reader.await.context("the input reader failed")?;
    let (all_tx, all_rx) = mpsc::channel::<Batch>(encoding.len().max(1));
    for task in encoding {
        let batch = task
            .await
            .context("an encoding task failed")?
            .context("gzip")?;
        // The receiver is ours and the queue holds every batch: this cannot block or fail.
        let _ = all_tx.send(batch).await;
    }
    Ok((all_rx, read))
}

pub async fn run(args: FirehoseSendArgs, access_key: Option<String>) -> anyhow::Result<SendReport> {
    let access_key = match access_key {
        Some(key) => Some(key),
        None => env_access_key(&args.access_key_env, |v| std::env::var(v))?,
    };
    let cfg = args.validate(access_key.as_deref())?;
    let client = http_client(&cfg)?;
    let histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3)
        .context("creating the latency histogram")?;
    let files = cfg.files.clone();
    let limits = cfg.limits;
    let (rx, reader) = if cfg.prepare {
        let (rx, read) = prepare(&cfg).await?;
        (rx, Reader::Done(read))
    } else {
        // A bounded queue: at most `concurrency` built batches wait, so memory stays near
        // (2 × concurrency + 1) × --request-bytes however large the input.
        let (tx, rx) = mpsc::channel::<Batch>(cfg.concurrency);
        let task = tokio::task::spawn_blocking(move || read_inputs(&files, limits, &tx));
        (rx, Reader::Running(task))
    };
    let started = Instant::now();

    let sender = Arc::new(Sender {
        client,
        url: cfg.url.clone(),
        headers: cfg.headers.clone(),
        gzip: cfg.gzip,
        gzip_level: cfg.gzip_level,
        max_retries: cfg.max_retries,
        backoff_unit: cfg.backoff_unit,
        attempt_timeout: cfg.attempt_timeout,
    });
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|_| {
            tokio::spawn(
                sender
                    .clone()
                    .work(rx.clone(), SendStats::new(histogram.clone())),
            )
        })
        .collect();
    // Only the senders may hold the receiver: if they all died, the reader's next send fails
    // and it stops instead of waiting forever.
    drop(rx);

    let read = match reader {
        Reader::Done(read) => read,
        Reader::Running(task) => task.await.context("the input reader failed")?,
    };
    let mut stats = SendStats::new(histogram);
    for worker in workers {
        stats.merge(worker.await.context("a sender task failed")?);
    }
    let ms = |q: f64| stats.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let latency = Latency {
        answered: stats.latency_us.len(),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: stats.latency_us.max() as f64 / 1000.0,
    };
    Ok(SendReport {
        batches: stats.batches,
        batches_delivered: stats.delivered,
        batches_dropped_413: stats.dropped_413,
        batches_failed: stats.given_up,
        requests_sent: stats.attempts,
        requests_ok: stats.ok,
        requests_failed: stats.failed,
        requests_retried: stats.retried,
        statuses: stats.statuses,
        transport_errors: stats.transport_errors,
        timeouts: stats.timeouts,
        nonconforming_200s: stats.bad_200,
        records: stats.records,
        records_delivered: stats.records_delivered,
        lines: read.lines,
        lines_delivered: stats.lines_delivered,
        lines_too_long: read.too_long,
        blank_lines: read.blank,
        raw_bytes: stats.raw_bytes,
        wire_bytes: stats.wire_bytes,
        wire_bytes_with_retries: stats.wire_bytes_sent,
        gzip: cfg.gzip,
        seconds: started.elapsed().as_secs_f64(),
        latency,
        last_error: stats.last_error,
        problems: stats.problems,
        problems_omitted: stats.problems_omitted,
        unreadable: read.unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(records: usize, bytes: usize, lines: usize, max_line: usize) -> Limits {
        Limits {
            records_per_request: records,
            request_bytes: bytes,
            lines_per_record: lines,
            max_line_bytes: max_line,
        }
    }

    /// Every batch's records, decoded: the oracle the builder is checked against.
    fn decode(batch: &Batch) -> Vec<Vec<u8>> {
        let v: serde_json::Value = serde_json::from_slice(&batch.json).expect("body is JSON");
        let obj = v.as_object().expect("object");
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert_eq!(obj["requestId"], batch.request_id.as_str());
        assert!(obj["timestamp"].is_u64());
        obj["records"]
            .as_array()
            .expect("records array")
            .iter()
            .map(|r| {
                let r = r.as_object().expect("record object");
                assert_eq!(r.len(), 1);
                BASE64_STANDARD
                    .decode(r["data"].as_str().expect("data string"))
                    .expect("base64")
            })
            .collect()
    }

    fn build(limits: Limits, lines: &[&[u8]]) -> Vec<Batch> {
        let mut b = BatchBuilder::new(limits, SplitMix64::new(7));
        let mut out: Vec<Batch> = lines.iter().filter_map(|l| b.push_line(l)).collect();
        out.extend(b.finish());
        out
    }

    #[test]
    fn packs_lines_into_records_and_records_into_batches() {
        let lines: Vec<Vec<u8>> = (0..13).map(|i| format!("line {i}").into_bytes()).collect();
        let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        let batches = build(limits(2, 1 << 20, 3, 100), &refs);
        let shape: Vec<Vec<usize>> = batches
            .iter()
            .map(|b| {
                decode(b)
                    .iter()
                    .map(|r| r.iter().filter(|&&c| c == b'\n').count())
                    .collect()
            })
            .collect();
        assert_eq!(shape, vec![vec![3, 3], vec![3, 3], vec![1]]);
        assert_eq!(batches.iter().map(|b| b.lines).sum::<u64>(), 13);
        assert_eq!(
            batches.iter().map(|b| b.records).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        let first = decode(&batches[0]);
        assert_eq!(first[0], b"line 0\nline 1\nline 2\n");
        let ids: std::collections::HashSet<_> = batches.iter().map(|b| &b.request_id).collect();
        assert_eq!(ids.len(), 3, "a fresh id per batch");
    }

    #[test]
    fn no_input_makes_no_batch() {
        assert!(build(limits(500, 1 << 20, 100, 100), &[]).is_empty());
    }

    #[test]
    fn records_stop_at_firehose_record_ceiling() {
        let line = vec![b'x'; 60_000];
        let lines: Vec<&[u8]> = (0..40).map(|_| line.as_slice()).collect();
        let batches = build(limits(10_000, 64 << 20, 1000, 64 * 1024), &lines);
        assert_eq!(batches.len(), 1);
        let records = decode(&batches[0]);
        // 17 lines of 60 001 bytes fit in 1 024 000; the 18th would not.
        assert_eq!(records[0].len(), 17 * 60_001);
        assert!(records.iter().all(|r| r.len() <= MAX_RECORD_BYTES));
        assert_eq!(records.iter().map(Vec::len).sum::<usize>(), 40 * 60_001);
    }

    proptest! {
        #[test]
        fn builder_keeps_every_limit_and_every_line(
            lines in proptest::collection::vec(proptest::collection::vec(b'!'..=b'~', 1..200), 0..300),
            records in 1usize..20,
            per_record in 1usize..30,
            extra in 0usize..5000,
        ) {
            let max_line = 200;
            let bytes = ENVELOPE_BYTES + record_json_len(max_line + 1) + extra;
            let l = limits(records, bytes, per_record, max_line);
            let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
            let batches = build(l, &refs);
            let mut joined = Vec::new();
            for b in &batches {
                prop_assert!(b.json.len() <= bytes, "{} > {bytes}", b.json.len());
                let recs = decode(b);
                prop_assert!(!recs.is_empty() && recs.len() <= records);
                prop_assert_eq!(recs.len() as u64, b.records);
                for r in recs {
                    prop_assert!(r.ends_with(b"\n"));
                    prop_assert!(r.iter().filter(|&&c| c == b'\n').count() <= per_record);
                    joined.extend(r);
                }
            }
            let mut expected = Vec::new();
            for line in &lines {
                expected.extend_from_slice(line);
                expected.push(b'\n');
            }
            prop_assert_eq!(joined, expected);
        }
    }

    #[test]
    fn backoff_follows_firehose_formula() {
        let s = Duration::from_secs(1);
        assert_eq!(backoff_delay(0, s, 0.0), Duration::from_millis(850));
        assert_eq!(backoff_delay(0, s, 1.0), Duration::from_millis(1150));
        assert_eq!(backoff_delay(3, s, 0.5), Duration::from_secs(8));
        assert_eq!(backoff_delay(6, s, 0.5), Duration::from_secs(64));
        // 2^7 = 128 is past the 120 s cap.
        for n in [7, 8, 30, u32::MAX] {
            assert_eq!(backoff_delay(n, s, 0.5), Duration::from_secs(120));
        }
        assert_eq!(
            backoff_delay(2, Duration::from_millis(100), 0.5),
            Duration::from_millis(400)
        );
        assert_eq!(backoff_delay(5, Duration::ZERO, 0.9), Duration::ZERO);
        // Out-of-range randomness is clamped, never a panic.
        assert_eq!(backoff_delay(0, s, 7.0), Duration::from_millis(1150));
        assert_eq!(backoff_delay(0, s, f64::NAN), s);
    }

    #[test]
    fn request_ids_are_uuid_v4_shaped() {
        let mut rng = SplitMix64::from_entropy();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = request_id(&mut rng);
            let b = id.as_bytes();
            assert_eq!(b.len(), 36, "{id}");
            for (i, &c) in b.iter().enumerate() {
                if matches!(i, 8 | 13 | 18 | 23) {
                    assert_eq!(c, b'-', "{id}");
                } else {
                    assert!(c.is_ascii_digit() || (b'a'..=b'f').contains(&c), "{id}");
                }
            }
            assert_eq!(b[14], b'4', "{id}");
            assert!(b"89ab".contains(&b[19]), "{id}");
            assert!(seen.insert(id));
        }
        let u = SplitMix64::new(1).unit();
        assert!((0.0..1.0).contains(&u));
    }

    fn args(flags: &[&str]) -> FirehoseSendArgs {
        let mut all = vec!["--url", "http://127.0.0.1:9/path?q=1"];
        all.extend_from_slice(flags);
        FirehoseSendArgs::try_from_flags(all).expect("flags parse")
    }

    #[test]
    fn flags_have_the_documented_defaults_and_ranges() {
        let a = args(&[]);
        assert_eq!(a.records_per_request, 500);
        assert_eq!(a.request_bytes, 5 * 1024 * 1024);
        assert_eq!(a.lines_per_record, 100);
        assert_eq!((a.concurrency, a.max_retries, a.backoff_ms), (4, 8, 100));
        assert_eq!(a.access_key_env, DEFAULT_ACCESS_KEY_ENV);
        assert_eq!(a.source_arn, DEFAULT_SOURCE_ARN);
        assert!(!a.gzip && a.common_attributes.is_none() && a.files.is_empty());
        let cfg = a.validate(None).expect("defaults are valid");
        assert_eq!(cfg.files, [PathBuf::from("-")]);
        assert!(!cfg.headers.contains_key(ACCESS_KEY));
        assert!(!cfg.headers.contains_key(CONTENT_ENCODING));
        assert_eq!(cfg.headers[PROTOCOL_VERSION], "1.0");
        assert_eq!(cfg.headers[CONTENT_TYPE], "application/json");
        assert_eq!(cfg.headers[SOURCE_ARN], DEFAULT_SOURCE_ARN);

        for bad in [
            &["--records-per-request", "10001"][..],
            &["--records-per-request", "0"],
            &["--request-bytes", "67108865"],
            &["--concurrency", "0"],
            &["--lines-per-record", "0"],
        ] {
            assert!(
                FirehoseSendArgs::try_from_flags(["--url", "http://x/"].iter().chain(bad)).is_err()
            );
        }
        assert!(
            FirehoseSendArgs::try_from_flags(["a.log"]).is_err(),
            "--url is required"
        );
    }

    #[test]
    fn validation_names_the_bad_flag() {
        let err = |a: FirehoseSendArgs, key: Option<&str>| {
            a.validate(key).expect_err("invalid").to_string()
        };
        assert!(
            err(
                FirehoseSendArgs::try_from_flags(["--url", "ftp://host/"]).expect("parses"),
                None
            )
            .starts_with("--url")
        );
        assert!(
            err(
                FirehoseSendArgs::try_from_flags(["--url", "not a url"]).expect("parses"),
                None
            )
            .starts_with("--url")
        );
        assert!(err(args(&["--request-bytes", "1000"]), None).starts_with("--request-bytes"));
        assert!(err(args(&["--max-line-bytes", "1024000"]), None).starts_with("--max-line-bytes"));
        assert!(err(args(&["--source-arn", "arn:é"]), None).starts_with("--source-arn"));
        assert!(
            err(args(&["--common-attributes", "[1]"]), None).starts_with("--common-attributes")
        );
        assert!(err(args(&["--common-attributes", "{"]), None).starts_with("--common-attributes"));
        assert!(
            err(args(&["--common-attributes", "{\n\"a\":\"b\"}"]), None)
                .starts_with("--common-attributes")
        );
        let long = "k".repeat(MAX_ACCESS_KEY_BYTES + 1);
        assert!(err(args(&[]), Some(&long)).contains("ALBWATCH_FIREHOSE_ACCESS_KEY"));
        assert!(err(args(&[]), Some("a\nb")).contains("access key"));

        let ok = args(&[
            "--gzip",
            "--common-attributes",
            r#"{"commonAttributes":{"env":"prod"}}"#,
            "--request-bytes",
            "100000",
            "--max-line-bytes",
            "1000",
        ])
        .validate(Some(&"k".repeat(MAX_ACCESS_KEY_BYTES)))
        .expect("valid");
        assert_eq!(ok.headers[CONTENT_ENCODING], "gzip");
        assert_eq!(
            ok.headers[COMMON_ATTRIBUTES],
            r#"{"commonAttributes":{"env":"prod"}}"#
        );
        assert!(ok.headers[ACCESS_KEY].is_sensitive());
        assert!(!format!("{:?}", ok.headers).contains("kkkk"));
        // The smallest budget that still holds one longest line.
        let min = ENVELOPE_BYTES + record_json_len(1001);
        assert!(
            args(&[
                "--max-line-bytes",
                "1000",
                "--request-bytes",
                &min.to_string()
            ])
            .validate(None)
            .is_ok()
        );
        assert!(
            args(&[
                "--max-line-bytes",
                "1000",
                "--request-bytes",
                &(min - 1).to_string()
            ])
            .validate(None)
            .is_err()
        );
    }

    #[test]
    fn access_key_comes_from_the_named_variable() {
        use std::env::VarError;
        assert_eq!(
            env_access_key("V", |v| {
                assert_eq!(v, "V");
                Ok("secret".into())
            })
            .expect("ok"),
            Some("secret".into())
        );
        assert_eq!(
            env_access_key("V", |_| Err(VarError::NotPresent)).expect("ok"),
            None
        );
        assert!(env_access_key("V", |_| Err(VarError::NotUnicode("x".into()))).is_err());
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    const ID: &str = "ed4acda5-034f-9f42-bba1-f29aea6d7d8f";

    fn json_200() -> HeaderMap {
        headers(&[
            ("content-type", "application/json"),
            ("content-length", "78"),
        ])
    }

    #[test]
    fn judges_answers_like_firehose() {
        let good = format!(r#"{{"requestId":"{ID}","timestamp":1578090903599}}"#);
        assert_eq!(
            judge(200, &json_200(), good.as_bytes(), false, ID),
            Verdict::Delivered
        );
        let charset = headers(&[
            ("content-type", "Application/JSON; charset=utf-8"),
            ("content-length", "78"),
        ]);
        assert_eq!(
            judge(200, &charset, good.as_bytes(), false, ID),
            Verdict::Delivered
        );

        let bad_200 = |h: &HeaderMap, body: &str, truncated: bool| match judge(
            200,
            h,
            body.as_bytes(),
            truncated,
            ID,
        ) {
            Verdict::Retry { why, bad_200: true } => why,
            other => panic!("expected a bad 200, got {other:?}"),
        };
        let text = headers(&[("content-type", "text/plain"), ("content-length", "2")]);
        assert!(bad_200(&text, "OK", false).contains("text/plain"));
        assert!(bad_200(&HeaderMap::new(), &good, false).contains("no Content-Type"));
        let mut gz = json_200();
        gz.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(bad_200(&gz, &good, false).contains("Content-Encoding"));
        let chunked = headers(&[("content-type", "application/json")]);
        assert!(bad_200(&chunked, &good, false).contains("Content-Length"));
        assert!(bad_200(&json_200(), &good, true).contains("over"));
        assert!(bad_200(&json_200(), "", false).contains("not JSON"));
        assert!(bad_200(&json_200(), "[]", false).contains("not a JSON object"));
        let other = r#"{"requestId":"other","timestamp":1}"#;
        assert!(bad_200(&json_200(), other, false).contains("\"other\""));
        assert!(bad_200(&json_200(), r#"{"timestamp":1}"#, false).contains("no requestId"));
        // AWS's own failure example quotes the timestamp; in a 200 that breaks the schema.
        let quoted = format!(r#"{{"requestId":"{ID}","timestamp":"1578090903599"}}"#);
        assert!(bad_200(&json_200(), &quoted, false).contains("not an integer"));
        let no_ts = format!(r#"{{"requestId":"{ID}"}}"#);
        assert!(bad_200(&json_200(), &no_ts, false).contains("no timestamp"));

        let failure = format!(
            r#"{{"requestId":"{ID}","timestamp":"1578090903599","errorMessage":"Unable to deliver records due to unknown error."}}"#
        );
        assert_eq!(
            judge(503, &json_200(), failure.as_bytes(), false, ID),
            Verdict::Retry {
                why: "503: Unable to deliver records due to unknown error.".into(),
                bad_200: false
            }
        );
        assert_eq!(
            judge(
                413,
                &HeaderMap::new(),
                br#"{"errorMessage":"too big"}"#,
                false,
                ID
            ),
            Verdict::TooLarge("413: too big".into())
        );
        // Other 2xx, 3xx and every 4xx but 413 are retried.
        for status in [201, 202, 204, 301, 302, 400, 401, 403, 404, 429, 500, 502] {
            assert!(
                matches!(
                    judge(status, &json_200(), good.as_bytes(), false, ID),
                    Verdict::Retry { bad_200: false, .. }
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn report_reads_as_a_summary() {
        let report = SendReport {
            batches: 3,
            batches_delivered: 1,
            batches_dropped_413: 1,
            batches_failed: 1,
            requests_sent: 5,
            requests_ok: 1,
            requests_failed: 3,
            requests_retried: 2,
            statuses: [(200, 1), (413, 1), (503, 3)].into_iter().collect(),
            lines: 300,
            lines_delivered: 100,
            seconds: 2.0,
            gzip: true,
            last_error: Some("503".into()),
            problems: vec!["batch x dropped: 413".into()],
            unreadable: vec![(PathBuf::from("gone.log"), "No such file".into())],
            ..SendReport::default()
        };
        let text = report.to_string();
        assert!(
            text.starts_with("firehose-send: 100 of 300 lines delivered in 2.00 s (50 lines/s)")
        );
        assert!(text.contains("3 built, 1 delivered, 1 dropped (413), 1 failed after retries"));
        assert!(text.contains(
            "5 sent, 1 ok, 3 failed (2 retried), 1 dropped (413); answers 200×1 413×1 503×3"
        ));
        assert!(text.contains("(gzip)"));
        assert!(text.contains("problem: batch x dropped: 413"));
        assert!(text.contains("unreadable: gone.log: No such file"));
        assert!(!report.all_delivered());
    }
}
