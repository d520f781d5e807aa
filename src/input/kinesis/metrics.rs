//! The Kinesis consumer's telemetry, registered on the app's registry by one constructor. Label
//! values come from closed sets (operations, call outcomes, payload formats, decode error kinds)
//! or are shard ids, which one stream bounds: a shard's series exist while it is read, its
//! gauges go when it ends, and its counters [`FINISHED_SHARD_SERIES_TTL`] later, so the last
//! increments are still scraped and a stream that reshards for a year does not pile up series.
//! A shard task takes its [`ShardMetrics`] handles once, so counting costs no label lookup per
//! record.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::error::ApiError;
use crate::decode::{DecodeError, DecodeStats, PayloadFormat};

/// How long a finished shard's counters stay exposed: several scrape intervals of any sane
/// Prometheus, so the final values are scraped before the series go.
pub const FINISHED_SHARD_SERIES_TTL: Duration = Duration::from_secs(600);

/// The Kinesis calls the consumer makes, as the `operation` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ListShards,
    GetShardIterator,
    GetRecords,
    /// Enhanced fan-out (`[kinesis] consumer`): the consumer registered when missing,
    RegisterStreamConsumer,
    /// looked up (and waited for until ACTIVE),
    DescribeStreamConsumer,
    /// and each shard's subscriptions.
    SubscribeToShard,
}

impl Operation {
    const ALL: [Operation; 6] = [
        Operation::ListShards,
        Operation::GetShardIterator,
        Operation::GetRecords,
        Operation::RegisterStreamConsumer,
        Operation::DescribeStreamConsumer,
        Operation::SubscribeToShard,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::ListShards => "list_shards",
            Operation::GetShardIterator => "get_shard_iterator",
            Operation::GetRecords => "get_records",
            Operation::RegisterStreamConsumer => "register_stream_consumer",
            Operation::DescribeStreamConsumer => "describe_stream_consumer",
            Operation::SubscribeToShard => "subscribe_to_shard",
        }
    }
}

/// How one SubscribeToShard subscription ended, as the `outcome` label of
/// `albwatch_kinesis_subscriptions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionEnd {
    /// Read for `resubscribe_after` (under the service's 5 minutes) and subscribed again.
    Renewed,
    /// The service ended the event stream; subscribed again.
    Ended,
    /// The event stream failed mid-way; subscribed again after a backoff.
    Failed,
    /// Its last event closed the shard (`ChildShards`).
    ShardEnd,
    /// Reading stopped (shutdown, a lost lease, a closed pipeline).
    Stopped,
}

impl SubscriptionEnd {
    const ALL: [SubscriptionEnd; 5] = [
        SubscriptionEnd::Renewed,
        SubscriptionEnd::Ended,
        SubscriptionEnd::Failed,
        SubscriptionEnd::ShardEnd,
        SubscriptionEnd::Stopped,
    ];

    const fn as_str(self) -> &'static str {
        match self {
            SubscriptionEnd::Renewed => "renewed",
            SubscriptionEnd::Ended => "ended",
            SubscriptionEnd::Failed => "failed",
            SubscriptionEnd::ShardEnd => "shard_end",
            SubscriptionEnd::Stopped => "stopped",
        }
    }
}

/// Every `outcome` label value: `ok` and the [`ApiError::kind`]s.
const OUTCOMES: [&str; 6] = [
    "ok",
    "throttled",
    "expired_iterator",
    "not_found",
    "transient",
    "fatal",
];

/// Why a shard's iterator was opened again mid-read, as the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// `ExpiredIteratorException`: the iterator was over 5 minutes old.
    Expired,
    /// GetRecords refused the iterator for another reason (e.g. `InvalidArgumentException`).
    Rejected,
}

impl Renewal {
    const fn as_str(self) -> &'static str {
        match self {
            Renewal::Expired => "expired",
            Renewal::Rejected => "rejected",
        }
    }
}

/// Consumer-side failures that are not a Kinesis call, as the `kind` label of
/// `albwatch_kinesis_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerFault {
    /// A checkpoint could not be written (retried at the next interval).
    CheckpointWrite,
    /// A checkpoint behind the stored one: two readers of one shard, or a bug.
    StaleCheckpoint,
    /// A record whose sequence number is not a decimal string.
    BadSequenceNumber,
}

impl ConsumerFault {
    const ALL: [ConsumerFault; 3] = [
        ConsumerFault::CheckpointWrite,
        ConsumerFault::StaleCheckpoint,
        ConsumerFault::BadSequenceNumber,
    ];

    const fn as_str(self) -> &'static str {
        match self {
            ConsumerFault::CheckpointWrite => "checkpoint_write",
            ConsumerFault::StaleCheckpoint => "stale_checkpoint",
            ConsumerFault::BadSequenceNumber => "bad_sequence_number",
        }
    }
}

/// The consumer's metric families; cloning shares them.
#[derive(Clone)]
pub struct KinesisMetrics {
    records: IntCounterVec,
    bytes: IntCounterVec,
    lines: IntCounterVec,
    lag_seconds: GaugeVec,
    checkpoint_age: CheckpointAge,
    calls: IntCounterVec,
    iterator_renewals: IntCounterVec,
    formats: IntCounterVec,
    decode_errors: IntCounterVec,
    batches: IntCounter,
    checkpoints: IntCounter,
    errors: IntCounterVec,
    shards_owned: IntGauge,
    subscriptions: IntCounterVec,
}

/// One shard's series, taken once when its task starts.
pub struct ShardMetrics {
    pub records: IntCounter,
    pub bytes: IntCounter,
    pub lines: IntCounter,
    pub lag_seconds: Gauge,
}

impl KinesisMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let per_shard =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["shard"]);
        let m = KinesisMetrics {
            records: per_shard(
                "albwatch_kinesis_records_total",
                "Kinesis records read, by shard (a KPL aggregate is one record)",
            )?,
            bytes: per_shard(
                "albwatch_kinesis_bytes_total",
                "Kinesis record payload bytes read, as stored in the stream (before gunzip), by shard",
            )?,
            lines: per_shard(
                "albwatch_kinesis_lines_total",
                "ALB lines decoded from Kinesis records and handed to the pipeline, by shard",
            )?,
            lag_seconds: GaugeVec::new(
                Opts::new(
                    "albwatch_kinesis_lag_seconds",
                    "MillisBehindLatest of the shard's last GetRecords, in seconds (0 = caught up)",
                ),
                &["shard"],
            )?,
            checkpoint_age: CheckpointAge::new()?,
            calls: IntCounterVec::new(
                Opts::new(
                    "albwatch_kinesis_api_calls_total",
                    "Kinesis API calls, by operation and outcome (ok or the error kind; throttles are outcome=\"throttled\")",
                ),
                &["operation", "outcome"],
            )?,
            iterator_renewals: IntCounterVec::new(
                Opts::new(
                    "albwatch_kinesis_iterator_renewals_total",
                    "Shard iterators opened again mid-read, by reason (expired after 5 min, or rejected)",
                ),
                &["reason"],
            )?,
            formats: IntCounterVec::new(
                Opts::new(
                    "albwatch_kinesis_payload_formats_total",
                    "Kinesis records decoded, by detected payload format (a KPL aggregate counts once, as kpl)",
                ),
                &["format"],
            )?,
            decode_errors: IntCounterVec::new(
                Opts::new(
                    "albwatch_kinesis_decode_errors_total",
                    "Kinesis records whose payload could not be decoded (skipped), by kind",
                ),
                &["kind"],
            )?,
            batches: IntCounter::new(
                "albwatch_kinesis_batches_total",
                "Batches handed to the pipeline (one per non-empty GetRecords response, more past pipeline.batch_bytes)",
            )?,
            checkpoints: IntCounter::new(
                "albwatch_kinesis_checkpoints_total",
                "Checkpoint positions written",
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "albwatch_kinesis_errors_total",
                    "Consumer failures other than Kinesis calls, by kind",
                ),
                &["kind"],
            )?,
            shards_owned: IntGauge::new(
                "albwatch_kinesis_shards_owned",
                "Shards this process is reading now (one task each)",
            )?,
            subscriptions: IntCounterVec::new(
                Opts::new(
                    "albwatch_kinesis_subscriptions_total",
                    "Enhanced fan-out SubscribeToShard subscriptions read, by how each ended (renewed, ended, failed, shard_end, stopped)",
                ),
                &["outcome"],
            )?,
        };
        // Pre-created so a failure that has not happened reads 0 rather than absent.
        for op in Operation::ALL {
            for outcome in OUTCOMES {
                if outcome != "expired_iterator" || op == Operation::GetRecords {
                    m.calls.with_label_values(&[op.as_str(), outcome]);
                }
            }
        }
        for reason in [Renewal::Expired, Renewal::Rejected] {
            m.iterator_renewals.with_label_values(&[reason.as_str()]);
        }
        for format in PayloadFormat::ALL {
            m.formats.with_label_values(&[format.as_str()]);
        }
        for kind in DecodeError::ALL {
            m.decode_errors.with_label_values(&[kind.as_str()]);
        }
        for fault in ConsumerFault::ALL {
            m.errors.with_label_values(&[fault.as_str()]);
        }
        for end in SubscriptionEnd::ALL {
            m.subscriptions.with_label_values(&[end.as_str()]);
        }
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.lines.clone()))?;
        registry.register(Box::new(m.lag_seconds.clone()))?;
        registry.register(Box::new(m.checkpoint_age.clone()))?;
        registry.register(Box::new(m.calls.clone()))?;
        registry.register(Box::new(m.iterator_renewals.clone()))?;
        registry.register(Box::new(m.formats.clone()))?;
        registry.register(Box::new(m.decode_errors.clone()))?;
        registry.register(Box::new(m.batches.clone()))?;
        registry.register(Box::new(m.checkpoints.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.shards_owned.clone()))?;
        registry.register(Box::new(m.subscriptions.clone()))?;
        Ok(m)
    }

    /// A shard task starts: its series, and its checkpoint age counting from now.
    pub fn shard_started(&self, shard: &str) -> ShardMetrics {
        self.shards_owned.inc();
        self.checkpoint_age.start(shard);
        ShardMetrics {
            records: self.records.with_label_values(&[shard]),
            bytes: self.bytes.with_label_values(&[shard]),
            lines: self.lines.with_label_values(&[shard]),
            lag_seconds: self.lag_seconds.with_label_values(&[shard]),
        }
    }

    /// A shard task ends. Its gauges go now: a lag or an age of a shard nobody reads would be
    /// a lie. Its counters stay until [`forget_shard_counters`](Self::forget_shard_counters).
    pub fn shard_stopped(&self, shard: &str) {
        self.shards_owned.dec();
        let _ = self.lag_seconds.remove_label_values(&[shard]);
        self.checkpoint_age.remove(shard);
    }

    /// Drops a finished shard's counters (see [`FINISHED_SHARD_SERIES_TTL`]).
    pub fn forget_shard_counters(&self, shard: &str) {
        for family in [&self.records, &self.bytes, &self.lines] {
            let _ = family.remove_label_values(&[shard]);
        }
    }

    pub fn call(&self, op: Operation, result: Result<(), &ApiError>) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(e) => e.kind(),
        };
        self.calls.with_label_values(&[op.as_str(), outcome]).inc();
    }

    /// A SubscribeToShard subscription was read until it ended this way.
    pub fn subscription_ended(&self, end: SubscriptionEnd) {
        self.subscriptions.with_label_values(&[end.as_str()]).inc();
    }

    pub fn iterator_renewed(&self, reason: Renewal) {
        self.iterator_renewals
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// What one batch's records held, once a worker decoded them.
    pub fn decoded(&self, stats: &DecodeStats) {
        for (format, n) in PayloadFormat::ALL.iter().zip(stats.records) {
            if n > 0 {
                self.formats.with_label_values(&[format.as_str()]).inc_by(n);
            }
        }
        for (kind, n) in DecodeError::ALL.iter().zip(stats.errors) {
            if n > 0 {
                self.decode_errors
                    .with_label_values(&[kind.as_str()])
                    .inc_by(n);
            }
        }
    }

    pub fn batch_submitted(&self) {
        self.batches.inc();
    }

    /// A checkpoint for `shard` became durable now.
    pub fn checkpoint_written(&self, shard: &str) {
        self.checkpoints.inc();
        self.checkpoint_age.written(shard);
    }

    pub fn fault(&self, fault: ConsumerFault) {
        self.errors.with_label_values(&[fault.as_str()]).inc();
    }
}

/// `albwatch_kinesis_checkpoint_age_seconds{shard}`: seconds since the shard's checkpoint was
/// last written by this process (or since its reading started, before the first write), worked
/// out at scrape time. It is how much a crash now would make the shard read again, in time.
#[derive(Clone)]
struct CheckpointAge {
    gauge: GaugeVec,
    since: Arc<Mutex<BTreeMap<String, Instant>>>,
}

impl CheckpointAge {
    fn new() -> prometheus::Result<Self> {
        Ok(CheckpointAge {
            gauge: GaugeVec::new(
                Opts::new(
                    "albwatch_kinesis_checkpoint_age_seconds",
                    "Seconds since the shard's checkpoint was last written (or since reading it started)",
                ),
                &["shard"],
            )?,
            since: Arc::default(),
        })
    }

    fn start(&self, shard: &str) {
        // Each update is one insert, write or remove, so a poisoned map is still consistent.
        let mut since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        since.insert(shard.to_owned(), Instant::now());
    }

    /// Only for a shard being read: the final checkpoints at shutdown are written after the
    /// tasks have stopped and must not bring their series back.
    fn written(&self, shard: &str) {
        let mut since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = since.get_mut(shard) {
            *at = Instant::now();
        }
    }

    fn remove(&self, shard: &str) {
        let mut since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        since.remove(shard);
        let _ = self.gauge.remove_label_values(&[shard]);
    }
}

impl Collector for CheckpointAge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Held while the gauge is set and read, so a shard removed meanwhile cannot come back.
        let since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        for (shard, at) in since.iter() {
            self.gauge
                .with_label_values(&[shard])
                .set(now.saturating_duration_since(*at).as_secs_f64());
        }
        self.gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::aws::{AwsError, Fault};

    fn exposition(registry: &Registry) -> String {
        let (_, body) = crate::export::admin::encode(registry).expect("encode");
        String::from_utf8(body).expect("utf8")
    }

    #[test]
    fn finished_shards_leave_no_gauges_and_later_no_counters() {
        let registry = Registry::new();
        let m = KinesisMetrics::register(&registry).expect("register");
        let s = m.shard_started("shardId-000000000007");
        s.records.inc_by(3);
        s.lag_seconds.set(1.5);
        let text = exposition(&registry);
        assert!(text.contains("albwatch_kinesis_records_total{shard=\"shardId-000000000007\"} 3"));
        assert!(
            text.contains(
                "albwatch_kinesis_checkpoint_age_seconds{shard=\"shardId-000000000007\"}"
            )
        );
        assert!(text.contains("albwatch_kinesis_shards_owned 1"));

        m.shard_stopped("shardId-000000000007");
        m.checkpoint_written("shardId-000000000007");
        let text = exposition(&registry);
        assert!(!text.contains("albwatch_kinesis_lag_seconds{"), "{text}");
        assert!(
            !text.contains("albwatch_kinesis_checkpoint_age_seconds{"),
            "{text}"
        );
        assert!(text.contains("albwatch_kinesis_records_total{shard=\"shardId-000000000007\"} 3"));
        assert!(text.contains("albwatch_kinesis_shards_owned 0"));

        m.forget_shard_counters("shardId-000000000007");
        assert!(!exposition(&registry).contains("shardId-000000000007"));
    }

    #[test]
    fn failures_that_never_happened_read_zero() {
        let registry = Registry::new();
        let m = KinesisMetrics::register(&registry).expect("register");
        m.call(
            Operation::GetRecords,
            Err(&ApiError::Throttled(AwsError::new(Fault::Throttled, ""))),
        );
        let text = exposition(&registry);
        for line in [
            "albwatch_kinesis_api_calls_total{operation=\"get_records\",outcome=\"throttled\"} 1",
            "albwatch_kinesis_api_calls_total{operation=\"get_records\",outcome=\"expired_iterator\"} 0",
            "albwatch_kinesis_api_calls_total{operation=\"list_shards\",outcome=\"throttled\"} 0",
            "albwatch_kinesis_iterator_renewals_total{reason=\"expired\"} 0",
            "albwatch_kinesis_payload_formats_total{format=\"kpl\"} 0",
            "albwatch_kinesis_decode_errors_total{kind=\"bad_gzip\"} 0",
            "albwatch_kinesis_errors_total{kind=\"checkpoint_write\"} 0",
            "albwatch_kinesis_api_calls_total{operation=\"subscribe_to_shard\",outcome=\"throttled\"} 0",
            "albwatch_kinesis_subscriptions_total{outcome=\"renewed\"} 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("operation=\"list_shards\",outcome=\"expired_iterator\""));
    }
}
