//! The endpoint's own telemetry, registered on the app's registry by one constructor. Every
//! label value comes from a closed set (status codes we emit, payload formats, decode error
//! kinds, failure reasons) or from a capped interner (common-attribute values: at most
//! [`MAX_ATTRIBUTE_VALUES`] per key, each cut to [`MAX_ATTRIBUTE_VALUE_CHARS`] characters, the
//! rest folded into [`OVERFLOW_VALUE`]). The same interned values label the request counter
//! and travel with the request's batches to the aggregator, where they label every `alb_*`
//! series, so one cap bounds both. Per-record counts arrive as one [`DeliveryStats`] per
//! committed request, so a retried batch is counted once.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use super::config::{AttributeLabel, ValidFirehoseConfig};
use super::errors::RequestError;
use crate::decode::{DecodeError, DecodeStats, PayloadFormat};

/// Distinct values remembered per attribute key before the rest become [`OVERFLOW_VALUE`].
pub const MAX_ATTRIBUTE_VALUES: usize = 16;
/// Attribute values are cut to this many characters (AWS allows 1024).
pub const MAX_ATTRIBUTE_VALUE_CHARS: usize = 64;
pub const OVERFLOW_VALUE: &str = "__overflow__";

/// The record error the endpoint finds itself, before the decoder sees the record; the
/// decoder's kinds ([`DecodeError::as_str`]) are the others.
pub const BAD_BASE64: &str = "bad_base64";

/// Every status the endpoint answers with, pre-created so rare failures read 0, not absent.
const STATUSES: [&str; 10] = [
    "200", "400", "401", "403", "405", "408", "413", "415", "500", "503",
];

/// Why the endpoint closed a connection on its own, by the phase it was in.
pub const TIMEOUT_PHASES: [&str; 2] = ["idle", "headers"];

/// What one committed request delivered, counted once it is acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    /// What the workers found in the records.
    pub decode: DecodeStats,
    /// Records whose `data` was not base64.
    pub bad_base64: u64,
}

impl DeliveryStats {
    pub fn decoded(&mut self, format: PayloadFormat, lines: usize) {
        self.decode.decoded(format, lines);
    }

    pub fn failed(&mut self, err: DecodeError) {
        self.decode.failed(err);
    }

    /// Records that produced an error of any kind.
    pub fn errors(&self) -> u64 {
        self.bad_base64 + self.decode.errors.iter().sum::<u64>()
    }

    pub fn total_lines(&self) -> u64 {
        self.decode.total_lines()
    }
}

/// The endpoint's metric families; cloning shares them.
#[derive(Clone)]
pub struct FirehoseMetrics {
    requests: IntCounterVec,
    failures: IntCounterVec,
    records: IntCounterVec,
    lines: IntCounterVec,
    decode_errors: IntCounterVec,
    duplicates: IntCounter,
    request_seconds: Histogram,
    received_bytes: IntCounter,
    bad_common_attributes: IntCounter,
    tls_handshake_failures: IntCounter,
    connection_timeouts: IntCounterVec,
    suppressed_log_lines: IntCounter,
    attributes: Arc<[AttributeValues]>,
}

/// The interned values seen for one attribute key.
struct AttributeValues {
    key: String,
    /// Locked once per request, never across an `.await`.
    seen: Mutex<HashSet<Arc<str>>>,
}

impl FirehoseMetrics {
    /// Registers every family on `registry`; `cfg` names the common-attribute labels, which
    /// are part of the request counter's label set.
    pub fn register(registry: &Registry, cfg: &ValidFirehoseConfig) -> prometheus::Result<Self> {
        let labels: &[AttributeLabel] = &cfg.common_attribute_labels;
        let mut request_labels = vec!["status"];
        request_labels.extend(labels.iter().map(|l| l.label.as_str()));
        let requests = IntCounterVec::new(
            Opts::new(
                "albwatch_firehose_requests_total",
                "Firehose requests answered, by HTTP status (and configured common attributes).",
            ),
            &request_labels,
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "albwatch_firehose_failures_total",
                "Firehose requests not answered 200, by reason.",
            ),
            &["reason"],
        )?;
        let records = IntCounterVec::new(
            Opts::new(
                "albwatch_firehose_records_total",
                "Records of committed Firehose requests, by detected payload format.",
            ),
            &["format"],
        )?;
        let lines = IntCounterVec::new(
            Opts::new(
                "albwatch_firehose_lines_total",
                "Log lines decoded from committed Firehose records, by payload format.",
            ),
            &["format"],
        )?;
        let decode_errors = IntCounterVec::new(
            Opts::new(
                "albwatch_firehose_decode_errors_total",
                "Records of committed Firehose requests that could not be decoded, by kind.",
            ),
            &["kind"],
        )?;
        let duplicates = IntCounter::new(
            "albwatch_firehose_duplicates_total",
            "Requests repeating an already committed request id, answered without reprocessing.",
        )?;
        let request_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "albwatch_firehose_request_seconds",
                "Time from a Firehose request's headers to its response (Firehose waits 3 min).",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                180.0,
            ]),
        )?;
        let received_bytes = IntCounter::new(
            "albwatch_firehose_received_bytes_total",
            "Request body bytes received by the Firehose endpoint, as sent (compressed).",
        )?;
        let bad_common_attributes = IntCounter::new(
            "albwatch_firehose_bad_common_attributes_total",
            "X-Amz-Firehose-Common-Attributes headers that were not a JSON object (ignored).",
        )?;
        let tls_handshake_failures = IntCounter::new(
            "albwatch_firehose_tls_handshake_failures_total",
            "Connections to the Firehose endpoint dropped during the TLS handshake.",
        )?;
        let connection_timeouts = IntCounterVec::new(
            Opts::new(
                "albwatch_firehose_connection_timeouts_total",
                "Connections the Firehose endpoint closed for silence: between requests (idle) \
                 or before a request's headers were complete (headers).",
            ),
            &["phase"],
        )?;
        let suppressed_log_lines = IntCounter::new(
            "albwatch_firehose_suppressed_log_lines_total",
            "Per-request log lines not written because of firehose.max_log_lines_per_sec.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(lines.clone()))?;
        registry.register(Box::new(decode_errors.clone()))?;
        registry.register(Box::new(duplicates.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(received_bytes.clone()))?;
        registry.register(Box::new(bad_common_attributes.clone()))?;
        registry.register(Box::new(tls_handshake_failures.clone()))?;
        registry.register(Box::new(connection_timeouts.clone()))?;
        registry.register(Box::new(suppressed_log_lines.clone()))?;

        // Closed sets start at zero, so a first error is a rate change, not a new series.
        for reason in RequestError::REASONS {
            failures.with_label_values(&[reason]);
        }
        for format in PayloadFormat::ALL {
            records.with_label_values(&[format.as_str()]);
            lines.with_label_values(&[format.as_str()]);
        }
        for phase in TIMEOUT_PHASES {
            connection_timeouts.with_label_values(&[phase]);
        }
        decode_errors.with_label_values(&[BAD_BASE64]);
        for kind in DecodeError::ALL {
            decode_errors.with_label_values(&[kind.as_str()]);
        }
        if labels.is_empty() {
            for status in STATUSES {
                requests.with_label_values(&[status]);
            }
        }

        let attributes = labels
            .iter()
            .map(|l| AttributeValues {
                key: l.key.clone(),
                seen: Mutex::new(HashSet::new()),
            })
            .collect();
        Ok(FirehoseMetrics {
            requests,
            failures,
            records,
            lines,
            decode_errors,
            duplicates,
            request_seconds,
            received_bytes,
            bad_common_attributes,
            tls_handshake_failures,
            connection_timeouts,
            suppressed_log_lines,
            attributes,
        })
    }

    /// The label values for the configured attribute keys, from the header's raw bytes:
    /// missing attributes are "", values are cut and interned under the cap. A header that is
    /// not a JSON object is counted and treated as absent.
    pub fn attribute_values(&self, header: Option<&[u8]>) -> Arc<[Arc<str>]> {
        if self.attributes.is_empty() {
            return Arc::new([]);
        }
        let parsed = match header {
            None => Vec::new(),
            Some(raw) => super::models::common_attributes(raw).unwrap_or_else(|| {
                self.bad_common_attributes.inc();
                Vec::new()
            }),
        };
        self.attributes
            .iter()
            .map(|attr| {
                let value = parsed
                    .iter()
                    .find(|(k, _)| *k == attr.key)
                    .map_or("", |(_, v)| v.as_str());
                attr.intern(value)
            })
            .collect()
    }

    /// Empty values for every configured attribute (requests we do not trust enough to let
    /// them claim one of the capped value slots, e.g. unauthenticated ones).
    pub fn no_attribute_values(&self) -> Arc<[Arc<str>]> {
        let empty: Arc<str> = Arc::from("");
        vec![empty; self.attributes.len()].into()
    }

    pub fn observe_request(&self, status: u16, attributes: &[Arc<str>], seconds: f64) {
        let status = status.to_string();
        let mut values: Vec<&str> = Vec::with_capacity(1 + attributes.len());
        values.push(&status);
        values.extend(attributes.iter().map(|v| &**v));
        // The label count always matches: `attributes` has one value per configured key.
        if let Ok(counter) = self.requests.get_metric_with_label_values(&values) {
            counter.inc();
        }
        self.request_seconds.observe(seconds);
    }

    pub fn failure(&self, err: &RequestError) {
        self.failures.with_label_values(&[err.reason()]).inc();
    }

    pub fn duplicate(&self) {
        self.duplicates.inc();
    }

    pub fn received(&self, bytes: usize) {
        self.received_bytes.inc_by(bytes as u64);
    }

    /// The counter of failed TLS handshakes, for the listener that does them.
    pub fn tls_handshake_failures(&self) -> IntCounter {
        self.tls_handshake_failures.clone()
    }

    /// `phase` is one of [`TIMEOUT_PHASES`].
    pub fn connection_timed_out(&self, phase: &'static str) {
        self.connection_timeouts.with_label_values(&[phase]).inc();
    }

    pub fn log_line_suppressed(&self) {
        self.suppressed_log_lines.inc();
    }

    pub fn delivered(&self, stats: &DeliveryStats) {
        for (i, format) in PayloadFormat::ALL.iter().enumerate() {
            if stats.decode.records[i] > 0 {
                self.records
                    .with_label_values(&[format.as_str()])
                    .inc_by(stats.decode.records[i]);
            }
            if stats.decode.lines[i] > 0 {
                self.lines
                    .with_label_values(&[format.as_str()])
                    .inc_by(stats.decode.lines[i]);
            }
        }
        if stats.bad_base64 > 0 {
            self.decode_errors
                .with_label_values(&[BAD_BASE64])
                .inc_by(stats.bad_base64);
        }
        for (kind, n) in DecodeError::ALL.iter().zip(stats.decode.errors) {
            if n > 0 {
                self.decode_errors
                    .with_label_values(&[kind.as_str()])
                    .inc_by(n);
            }
        }
    }
}

impl AttributeValues {
    /// The value as a label: cut, with NUL (the aggregator's key separator) replaced, and
    /// shared with every earlier request that sent it.
    fn intern(&self, value: &str) -> Arc<str> {
        let value = match value.char_indices().nth(MAX_ATTRIBUTE_VALUE_CHARS) {
            Some((cut, _)) => &value[..cut],
            None => value,
        };
        // "" means "not sent"; it needs no slot.
        if value.is_empty() {
            return Arc::from("");
        }
        let value: Cow<'_, str> = if value.contains('\0') {
            Cow::Owned(value.replace('\0', "\u{fffd}"))
        } else {
            Cow::Borrowed(value)
        };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = seen.get(&*value) {
            return Arc::clone(known);
        }
        if seen.len() < MAX_ATTRIBUTE_VALUES {
            let value: Arc<str> = Arc::from(&*value);
            seen.insert(Arc::clone(&value));
            return value;
        }
        Arc::from(OVERFLOW_VALUE)
    }
}
