//! The `[firehose]` configuration section in its two phases: [`FirehoseConfig`] is the file's
//! shape (every key optional, unknown keys rejected) plus the access key from the environment;
//! [`FirehoseConfig::validate`] checks every key — and loads the TLS certificate and key, so a
//! bad PEM fails `check-config` rather than the first handshake — and hands a
//! [`ValidFirehoseConfig`] to [`super::serve`], or an error naming the key at fault.

use crate::setting::InvalidSetting;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::auth::AccessKey;
use super::tls;

/// A request body is at most 64 MiB before compression (Firehose buffering hints top out at
/// 64 MiB), so the same bound serves the compressed and the decompressed body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_MAX_DECOMPRESSED_BODY_BYTES: usize = 64 * 1024 * 1024;
/// One record is at most 1 000 000 bytes raw; a gzip'd CloudWatch Logs record expands, so the
/// decoded cap is larger, but still bounded.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// Request ids remembered for deduplication. Firehose delivers at most a few requests a
/// second per stream, so ten thousand ids cover hours of retries (its retry window is ≤ 2 h).
pub const DEFAULT_DEDUPE_CAPACITY: usize = 10_000;
/// Decoded lines handed to the pipeline per batch.
pub const DEFAULT_BATCH_BYTES: usize = 1024 * 1024;
/// Requests handled at once. Firehose sends a stream's deliveries a few at a time; more than
/// this at once is a misconfiguration or an attack, answered 503 so Firehose backs off.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 64;
/// Seconds to receive a whole body once its headers are in: well inside the 3 minutes Firehose
/// waits for an attempt's response, so a stalled attempt is answered (and retried) while
/// Firehose still listens. It does ask for 2.2 MB/s on a 64 MiB body.
pub const DEFAULT_BODY_READ_TIMEOUT_SECS: u64 = 30;
/// Seconds from a request's first byte to the end of its headers (Firehose sends them in one
/// go; a client that dribbles them is holding a connection open on purpose).
pub const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Seconds a kept-alive connection may sit between requests. Longer than the 60 s default
/// idle timeout of an ALB or ingress in front, so a proxy never reuses a connection that we
/// are closing at that very moment (which it would answer 502).
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 75;
/// Per-request log lines (failures, bad records, duplicates) written per second; the rest are
/// counted and summarised.
pub const DEFAULT_MAX_LOG_LINES_PER_SEC: u32 = 10;
/// Firehose copies at most 4096 bytes of access key.
pub const MAX_ACCESS_KEY_BYTES: usize = 4096;
/// Each label multiplies the series of `albwatch_firehose_requests_total` by up to 17, and
/// the `alb_*` series as much (all under `aggregate.max_series`).
pub const MAX_COMMON_ATTRIBUTE_LABELS: usize = 4;
/// Sizes above this are typos, not buffers.
const MAX_SIZE_KNOB: usize = 1024 * 1024 * 1024;
/// More requests at once than this would be bounded only by memory.
const MAX_CONCURRENT_KNOB: usize = 65_536;
/// Firehose abandons an attempt after 3 minutes, so a longer read timeout protects nothing.
const MAX_READ_TIMEOUT_SECS: u64 = 180;
const MAX_IDLE_TIMEOUT_SECS: u64 = 3600;
const MAX_LOG_LINES_KNOB: u32 = 10_000;

/// The `[firehose]` section as written. `Debug` never prints the access key.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FirehoseConfig {
    /// `host:port` to listen on; absent = the endpoint is off.
    pub addr: Option<String>,
    /// The key Firehose sends in `X-Amz-Firehose-Access-Key`; the environment variable
    /// `ALBWATCH_FIREHOSE_ACCESS_KEY` overrides it (see [`FirehoseConfig::with_env_key`]).
    pub access_key: Option<String>,
    /// Serve without an access key. Off by default: Firehose always sends the configured key,
    /// so a missing key in our config is almost always a deployment mistake that would leave
    /// the endpoint open to anyone who can reach it; a test rig must say so explicitly.
    pub allow_unauthenticated: bool,
    /// Largest request body as received (compressed, if gzip'd); larger is answered 413.
    pub max_body_bytes: usize,
    /// Largest request body after `Content-Encoding: gzip` is undone; larger is 413.
    pub max_decompressed_body_bytes: usize,
    /// Largest record after base64 and any gzip inside it; larger is counted as an error.
    pub max_record_bytes: usize,
    /// Committed request ids remembered for deduplication (0 = remember none).
    pub dedupe_capacity: usize,
    /// PEM certificate chain; with `tls_key`, the endpoint speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Keys of `X-Amz-Firehose-Common-Attributes` exposed as labels of
    /// `albwatch_firehose_requests_total`, of every `alb_*` series and of the alerts.
    pub common_attribute_labels: Vec<String>,
    /// Bytes of records per pipeline batch, as delivered (base64 undone, before the workers
    /// decode them).
    pub batch_bytes: usize,
    /// Requests handled at once; one more is answered 503 at once.
    pub max_concurrent_requests: usize,
    /// Seconds to receive a request's body once its headers are in; slower is answered 408.
    pub body_read_timeout_secs: u64,
    /// Seconds from a request's first byte to the end of its headers; slower closes the
    /// connection.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may sit idle between requests before it is closed.
    pub idle_timeout_secs: u64,
    /// Per-request log lines written per second (a burst of as many is allowed); the rest
    /// are counted in `albwatch_firehose_suppressed_log_lines_total` and summarised.
    pub max_log_lines_per_sec: u32,
}

impl Default for FirehoseConfig {
    fn default() -> Self {
        FirehoseConfig {
            addr: None,
            access_key: None,
            allow_unauthenticated: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_decompressed_body_bytes: DEFAULT_MAX_DECOMPRESSED_BODY_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            dedupe_capacity: DEFAULT_DEDUPE_CAPACITY,
            tls_cert: None,
            tls_key: None,
            common_attribute_labels: Vec::new(),
            batch_bytes: DEFAULT_BATCH_BYTES,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            body_read_timeout_secs: DEFAULT_BODY_READ_TIMEOUT_SECS,
            header_read_timeout_secs: DEFAULT_HEADER_READ_TIMEOUT_SECS,
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            max_log_lines_per_sec: DEFAULT_MAX_LOG_LINES_PER_SEC,
        }
    }
}

impl fmt::Debug for FirehoseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FirehoseConfig")
            .field("addr", &self.addr)
            .field(
                "access_key",
                &self.access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .field("max_body_bytes", &self.max_body_bytes)
            .field(
                "max_decompressed_body_bytes",
                &self.max_decompressed_body_bytes,
            )
            .field("max_record_bytes", &self.max_record_bytes)
            .field("dedupe_capacity", &self.dedupe_capacity)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("common_attribute_labels", &self.common_attribute_labels)
            .field("batch_bytes", &self.batch_bytes)
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("body_read_timeout_secs", &self.body_read_timeout_secs)
            .field("header_read_timeout_secs", &self.header_read_timeout_secs)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .field("max_log_lines_per_sec", &self.max_log_lines_per_sec)
            .finish()
    }
}

/// A `[firehose]` key that cannot be used, named `firehose.<key>`.
fn invalid(key: &'static str, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting::in_section("firehose", key, message)
}

/// One common attribute exposed as a metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributeLabel {
    /// The attribute's key in the header, verbatim.
    pub key: String,
    /// The Prometheus label name derived from it.
    pub label: String,
}

/// A checked `[firehose]` section, ready for [`super::serve`].
#[derive(Clone)]
pub struct ValidFirehoseConfig {
    /// Where to listen; `None` = the endpoint is off and nothing else here matters.
    pub addr: Option<SocketAddr>,
    /// `None` only when `allow_unauthenticated` was set.
    pub(crate) access_key: Option<AccessKey>,
    pub max_body_bytes: usize,
    pub max_decompressed_body_bytes: usize,
    pub max_record_bytes: usize,
    pub dedupe_capacity: usize,
    pub batch_bytes: usize,
    /// Longest decoded line handed on; the pipeline's own limit, which the app may copy here
    /// (defaults to [`crate::lines::DEFAULT_MAX_LINE_BYTES`]).
    pub max_line_bytes: usize,
    pub common_attribute_labels: Vec<AttributeLabel>,
    /// The loaded certificate and key; `None` = plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub max_concurrent_requests: usize,
    pub body_read_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_log_lines_per_sec: u32,
}

impl fmt::Debug for ValidFirehoseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidFirehoseConfig")
            .field("addr", &self.addr)
            .field("authenticated", &self.access_key.is_some())
            .field("max_body_bytes", &self.max_body_bytes)
            .field(
                "max_decompressed_body_bytes",
                &self.max_decompressed_body_bytes,
            )
            .field("max_record_bytes", &self.max_record_bytes)
            .field("dedupe_capacity", &self.dedupe_capacity)
            .field("batch_bytes", &self.batch_bytes)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("common_attribute_labels", &self.common_attribute_labels)
            .field("tls", &self.tls.is_some())
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_log_lines_per_sec", &self.max_log_lines_per_sec)
            .finish()
    }
}

impl ValidFirehoseConfig {
    pub fn is_enabled(&self) -> bool {
        self.addr.is_some()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl FirehoseConfig {
    /// Applies `ALBWATCH_FIREHOSE_ACCESS_KEY`: a key from the environment wins over the file,
    /// so the secret can stay out of the config file.
    pub fn with_env_key(mut self, key: Option<String>) -> Self {
        if key.is_some() {
            self.access_key = key;
        }
        self
    }

    /// Checks every key; a disabled endpoint (`addr` absent) still gets its sizes checked, but
    /// needs no access key and loads no certificate.
    pub fn validate(self) -> Result<ValidFirehoseConfig, InvalidSetting> {
        let addr = match &self.addr {
            None => None,
            Some(a) => Some(
                a.parse::<SocketAddr>()
                    .map_err(|_| invalid("addr", format!("{a:?} is not host:port")))?,
            ),
        };
        let size = |key: &'static str, v: usize| {
            if v == 0 || v > MAX_SIZE_KNOB {
                Err(invalid(
                    key,
                    format!("{v} must be between 1 and {MAX_SIZE_KNOB}"),
                ))
            } else {
                Ok(v)
            }
        };
        let max_body_bytes = size("max_body_bytes", self.max_body_bytes)?;
        let max_decompressed_body_bytes = size(
            "max_decompressed_body_bytes",
            self.max_decompressed_body_bytes,
        )?;
        let max_record_bytes = size("max_record_bytes", self.max_record_bytes)?;
        let batch_bytes = size("batch_bytes", self.batch_bytes)?;
        let common_attribute_labels = attribute_labels(&self.common_attribute_labels)?;
        let max_concurrent_requests = bounded(
            "max_concurrent_requests",
            self.max_concurrent_requests,
            MAX_CONCURRENT_KNOB,
        )?;
        let seconds =
            |key: &'static str, v: u64, max: u64| bounded(key, v, max).map(Duration::from_secs);
        let body_read_timeout = seconds(
            "body_read_timeout_secs",
            self.body_read_timeout_secs,
            MAX_READ_TIMEOUT_SECS,
        )?;
        let header_read_timeout = seconds(
            "header_read_timeout_secs",
            self.header_read_timeout_secs,
            MAX_READ_TIMEOUT_SECS,
        )?;
        let idle_timeout = seconds(
            "idle_timeout_secs",
            self.idle_timeout_secs,
            MAX_IDLE_TIMEOUT_SECS,
        )?;
        let max_log_lines_per_sec = bounded(
            "max_log_lines_per_sec",
            self.max_log_lines_per_sec,
            MAX_LOG_LINES_KNOB,
        )?;

        let access_key = match self.access_key {
            Some(k) if k.is_empty() => return Err(invalid("access_key", "must not be empty")),
            Some(k) if k.len() > MAX_ACCESS_KEY_BYTES => {
                return Err(invalid(
                    "access_key",
                    format!("longer than Firehose's {MAX_ACCESS_KEY_BYTES} bytes"),
                ));
            }
            Some(k) => Some(AccessKey::new(k)),
            None if addr.is_none() || self.allow_unauthenticated => None,
            None => {
                return Err(invalid(
                    "access_key",
                    "missing (set it or ALBWATCH_FIREHOSE_ACCESS_KEY; Firehose always sends \
                     one, so an open endpoint needs allow_unauthenticated = true)",
                ));
            }
        };

        let tls = match (&self.tls_cert, &self.tls_key) {
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls_key", "missing; tls_cert needs it")),
            (None, Some(_)) => return Err(invalid("tls_cert", "missing; tls_key needs it")),
            (Some(_), Some(_)) if addr.is_none() => None,
            (Some(cert), Some(key)) => Some(tls::server_config(cert, key).map_err(|e| {
                let key = match e {
                    tls::TlsError::Cert { .. } => "tls_cert",
                    tls::TlsError::Key { .. } | tls::TlsError::Rustls(_) => "tls_key",
                };
                invalid(key, e.to_string())
            })?),
        };

        Ok(ValidFirehoseConfig {
            addr,
            access_key,
            max_body_bytes,
            max_decompressed_body_bytes,
            max_record_bytes,
            dedupe_capacity: self.dedupe_capacity,
            batch_bytes,
            max_line_bytes: crate::lines::DEFAULT_MAX_LINE_BYTES,
            common_attribute_labels,
            tls,
            max_concurrent_requests,
            body_read_timeout,
            header_read_timeout,
            idle_timeout,
            max_log_lines_per_sec,
        })
    }
}

/// `v` if it is between 1 and `max`.
fn bounded<T>(key: &'static str, v: T, max: T) -> Result<T, InvalidSetting>
where
    T: Copy + PartialOrd + From<u8> + fmt::Display,
{
    if v < T::from(1) || v > max {
        Err(invalid(key, format!("{v} must be between 1 and {max}")))
    } else {
        Ok(v)
    }
}

/// Label names from attribute keys: anything outside `[A-Za-z0-9_]` becomes `_`, a leading
/// digit gets a `_` in front; the result may not clash with `status`, another attribute
/// label, the `__` names Prometheus reserves, or any label albwatch already puts on the
/// `alb_*` series or on alerts (the attribute labels are added to both).
fn attribute_labels(keys: &[String]) -> Result<Vec<AttributeLabel>, InvalidSetting> {
    const KEY: &str = "common_attribute_labels";
    if keys.len() > MAX_COMMON_ATTRIBUTE_LABELS {
        return Err(invalid(
            KEY,
            format!(
                "{} keys; at most {MAX_COMMON_ATTRIBUTE_LABELS} (each multiplies the series)",
                keys.len()
            ),
        ));
    }
    let mut out: Vec<AttributeLabel> = Vec::with_capacity(keys.len());
    for key in keys {
        if key.is_empty() || key.chars().count() > 256 {
            return Err(invalid(
                KEY,
                format!("{key:?}: attribute keys are 1 to 256 characters"),
            ));
        }
        let label = label_name(key);
        if label == "status" || label.starts_with("__") || out.iter().any(|l| l.label == label) {
            return Err(invalid(
                KEY,
                format!("{key:?} becomes the label {label:?}, which is taken or reserved"),
            ));
        }
        if crate::export::series_family_label_names().contains(&label.as_str())
            || crate::alert::LABEL_NAMES.contains(&label.as_str())
        {
            return Err(invalid(
                KEY,
                format!(
                    "{key:?} becomes the label {label:?}, which albwatch already uses on the \
                     alb_* series or their alerts"
                ),
            ));
        }
        out.push(AttributeLabel {
            key: key.clone(),
            label,
        });
    }
    Ok(out)
}

pub(crate) fn label_name(key: &str) -> String {
    let mut label: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if label.starts_with(|c: char| c.is_ascii_digit()) {
        label.insert(0, '_');
    }
    label
}
