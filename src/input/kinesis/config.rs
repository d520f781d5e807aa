//! The `[kinesis]` section: the stream to read, where to start when a shard has no checkpoint,
//! where checkpoints live and how fast to poll. [`KinesisConfig`] is the raw serde shape;
//! [`KinesisConfig::validate`] hands the consumer a [`ValidKinesisConfig`] whose every bound
//! is checked, or an error naming the key (`kinesis.<key>: why`).

use crate::setting::InvalidSetting;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// GetRecords' own ceiling: a larger `Limit` is `InvalidArgumentException`
/// (<https://docs.aws.amazon.com/kinesis/latest/APIReference/API_GetRecords.html>).
pub const MAX_RECORDS_PER_CALL: i32 = 10_000;
/// AWS allows 5 GetRecords calls per second per shard
/// (<https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html>): never poll
/// one shard faster.
pub const MIN_CALL_GAP: Duration = Duration::from_millis(200);
/// Polling slower than this leaves iterators to expire (5 min) between calls.
const MAX_POLL_INTERVAL_MS: u64 = 60_000;
/// Batch size until the app's config sets `pipeline.batch_bytes`.
pub const DEFAULT_BATCH_BYTES: usize = 1 << 20;
/// A shard's read throughput (2 MB/s), shared by all polling consumers: the default pace.
pub const SHARD_READ_BYTES_PER_SEC: u64 = 2_000_000;
/// Below this a shard read at 1 MB/s of writes could never catch up.
const MIN_READ_BYTES_PER_SEC: u64 = 1_000;
/// Discovery slower than a day is a typo.
const MAX_DISCOVERY_SECS: u64 = 86_400;
/// A SubscribeToShard subscription lasts 5 minutes
/// (<https://docs.aws.amazon.com/kinesis/latest/APIReference/API_SubscribeToShard.html>):
/// enhanced fan-out subscribes again a little before, from where the last one left off.
pub const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(290);

/// Where a shard without a checkpoint starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Only records written after the consumer starts.
    #[default]
    Latest,
    /// The oldest record still retained.
    TrimHorizon,
    /// The first record at or after `start_timestamp`.
    AtTimestamp,
}

/// The `[kinesis]` section as written; absent `stream` = the input is off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KinesisConfig {
    /// Stream name, or its ARN (`arn:aws:kinesis:…:stream/NAME`).
    pub stream: Option<String>,
    /// AWS region; absent = the SDK's usual chain (`AWS_REGION`, profile).
    pub region: Option<String>,
    pub start: StartAt,
    /// Seconds since the Unix epoch (fractions allowed), for `start = "at_timestamp"`.
    pub start_timestamp: Option<f64>,
    pub checkpoint_dir: PathBuf,
    /// Longest wait between GetRecords calls on an idle shard.
    pub poll_interval_ms: u64,
    pub max_records_per_call: i32,
    /// Average bytes per second read from one shard: after a response of B bytes the next
    /// call waits B / this. AWS allows 2 MB/s per shard *shared by every polling consumer*,
    /// so lower it when others read the stream too; higher only helps against an emulator.
    pub read_bytes_per_sec: u64,
    pub shard_discovery_secs: u64,
    /// Shortest gap between two checkpoint writes of one shard (shard end and shutdown
    /// always write): bounds disk syncs, at the price of re-reading up to this much on a crash.
    pub checkpoint_interval_secs: u64,
    /// A DynamoDB table of shard leases in the Kinesis Client Library's schema, shared by
    /// every instance reading the stream; absent = one instance, checkpoints in files.
    pub lease_table: Option<String>,
    /// Create the lease table (on-demand billing) when it is missing.
    pub create_lease_table: bool,
    /// This instance's name in the lease table; absent = `HOSTNAME` (a pod's name).
    pub worker_id: Option<String>,
    /// A lease whose counter has not moved for this long is free to take.
    pub failover_ms: u64,
    pub renew_interval_ms: u64,
    pub take_interval_ms: u64,
    pub max_leases_to_steal: usize,
    /// An enhanced fan-out consumer name: registered on the stream if missing, and every shard
    /// read through SubscribeToShard (a dedicated 2 MB/s per shard, pushed) instead of
    /// GetRecords; absent = polling.
    pub consumer: Option<String>,
}

impl Default for KinesisConfig {
    fn default() -> Self {
        KinesisConfig {
            stream: None,
            region: None,
            start: StartAt::Latest,
            start_timestamp: None,
            checkpoint_dir: PathBuf::from("./albwatch-checkpoints"),
            poll_interval_ms: 1000,
            max_records_per_call: MAX_RECORDS_PER_CALL,
            read_bytes_per_sec: SHARD_READ_BYTES_PER_SEC,
            shard_discovery_secs: 30,
            checkpoint_interval_secs: 5,
            lease_table: None,
            create_lease_table: true,
            worker_id: None,
            failover_ms: 10_000,
            renew_interval_ms: 3_333,
            take_interval_ms: 20_000,
            max_leases_to_steal: 1,
            consumer: None,
        }
    }
}

/// How an instance shares the stream with others through a lease table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub table: String,
    pub create_table: bool,
    pub worker_id: String,
    pub failover: Duration,
    pub renew_every: Duration,
    pub take_every: Duration,
    pub max_steal: usize,
}

/// A `[kinesis]` key that cannot be used, named `kinesis.<key>`.
fn invalid(key: &'static str, message: impl Into<String>) -> InvalidSetting {
    InvalidSetting::in_section("kinesis", key, message)
}

/// The resolved start for a shard without a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitialPosition {
    Latest,
    TrimHorizon,
    /// Seconds since the Unix epoch.
    AtTimestamp(f64),
}

/// The checked `[kinesis]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidKinesisConfig {
    /// `None` = the input is off.
    pub stream: Option<String>,
    pub region: Option<String>,
    pub initial: InitialPosition,
    pub checkpoint_dir: PathBuf,
    pub poll_interval: Duration,
    pub max_records_per_call: i32,
    pub read_bytes_per_sec: u64,
    pub shard_discovery: Duration,
    pub checkpoint_interval: Duration,
    /// Decoded bytes per batch handed to the pipeline; a GetRecords page larger than this is
    /// cut into several batches. Set from `pipeline.batch_bytes` by the app's config.
    pub batch_bytes: usize,
    /// `None` = this instance reads every shard, with file checkpoints.
    pub leases: Option<LeaseSettings>,
    /// The enhanced fan-out consumer name; `None` = polling with GetRecords.
    pub consumer: Option<String>,
    /// How long one SubscribeToShard subscription is read before subscribing again (not a
    /// config key: [`RESUBSCRIBE_AFTER`], under the service's 5 minutes; tests shorten it).
    pub resubscribe_after: Duration,
}

impl ValidKinesisConfig {
    pub fn is_enabled(&self) -> bool {
        self.stream.is_some()
    }
}

impl Default for ValidKinesisConfig {
    fn default() -> Self {
        // The defaults are valid by construction; a test below keeps it so.
        KinesisConfig::default()
            .validate()
            .unwrap_or_else(|e| unreachable!("default kinesis config is invalid: {e}"))
    }
}

impl KinesisConfig {
    pub fn validate(self) -> Result<ValidKinesisConfig, InvalidSetting> {
        if let Some(s) = &self.stream
            && (s.trim().is_empty() || s.len() > 2048)
        {
            return Err(invalid(
                "stream",
                "must be a stream name or ARN (1..=2048 bytes)",
            ));
        }
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(invalid("region", "must not be empty"));
        }
        let initial = match (self.start, self.start_timestamp) {
            (StartAt::Latest, None) => InitialPosition::Latest,
            (StartAt::TrimHorizon, None) => InitialPosition::TrimHorizon,
            (StartAt::AtTimestamp, Some(t)) if t.is_finite() && t >= 0.0 => {
                InitialPosition::AtTimestamp(t)
            }
            (StartAt::AtTimestamp, Some(_)) => {
                return Err(invalid(
                    "start_timestamp",
                    "must be seconds since the Unix epoch (>= 0)",
                ));
            }
            (StartAt::AtTimestamp, None) => {
                return Err(invalid(
                    "start_timestamp",
                    "is required when start = \"at_timestamp\"",
                ));
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "start_timestamp",
                    "is only used with start = \"at_timestamp\"",
                ));
            }
        };
        if self.checkpoint_dir.as_os_str().is_empty() {
            return Err(invalid("checkpoint_dir", "must not be empty"));
        }
        if !(MIN_CALL_GAP.as_millis() as u64..=MAX_POLL_INTERVAL_MS)
            .contains(&self.poll_interval_ms)
        {
            return Err(invalid(
                "poll_interval_ms",
                format!(
                    "must be {}..={MAX_POLL_INTERVAL_MS} (5 GetRecords calls/s per shard at most)",
                    MIN_CALL_GAP.as_millis()
                ),
            ));
        }
        if !(1..=MAX_RECORDS_PER_CALL).contains(&self.max_records_per_call) {
            return Err(invalid(
                "max_records_per_call",
                format!("must be 1..={MAX_RECORDS_PER_CALL}"),
            ));
        }
        if self.read_bytes_per_sec < MIN_READ_BYTES_PER_SEC {
            return Err(invalid(
                "read_bytes_per_sec",
                format!(
                    "must be at least {MIN_READ_BYTES_PER_SEC} (AWS allows {SHARD_READ_BYTES_PER_SEC} per shard)"
                ),
            ));
        }
        if !(1..=MAX_DISCOVERY_SECS).contains(&self.shard_discovery_secs) {
            return Err(invalid(
                "shard_discovery_secs",
                format!("must be 1..={MAX_DISCOVERY_SECS}"),
            ));
        }
        if !(1..=3600).contains(&self.checkpoint_interval_secs) {
            return Err(invalid("checkpoint_interval_secs", "must be 1..=3600"));
        }
        // RegisterStreamConsumer's own rule for consumer names.
        if let Some(c) = &self.consumer
            && !((1..=128).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
        {
            return Err(invalid(
                "consumer",
                "must be a stream consumer name: 1..=128 of a-z A-Z 0-9 _ . -",
            ));
        }
        let leases = self.lease_settings()?;
        Ok(ValidKinesisConfig {
            stream: self.stream,
            region: self.region,
            initial,
            checkpoint_dir: self.checkpoint_dir,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            max_records_per_call: self.max_records_per_call,
            read_bytes_per_sec: self.read_bytes_per_sec,
            shard_discovery: Duration::from_secs(self.shard_discovery_secs),
            checkpoint_interval: Duration::from_secs(self.checkpoint_interval_secs),
            batch_bytes: DEFAULT_BATCH_BYTES,
            leases,
            consumer: self.consumer,
            resubscribe_after: RESUBSCRIBE_AFTER,
        })
    }

    /// The lease settings when `lease_table` is set, every timing checked against the others:
    /// an owner must renew several times within the failover time, or a slow renewal costs it
    /// the lease.
    fn lease_settings(&self) -> Result<Option<LeaseSettings>, InvalidSetting> {
        let Some(table) = &self.lease_table else {
            return Ok(None);
        };
        // DynamoDB's own rule for table names.
        let valid_name = (3..=255).contains(&table.len())
            && table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid_name {
            return Err(invalid(
                "lease_table",
                "must be a DynamoDB table name: 3..=255 of a-z A-Z 0-9 _ - .",
            ));
        }
        let worker_id = match &self.worker_id {
            Some(w) if w.trim().is_empty() || w.len() > 256 => {
                return Err(invalid("worker_id", "must be 1..=256 bytes"));
            }
            Some(w) => w.clone(),
            None => default_worker_id(),
        };
        if !(1_000..=600_000).contains(&self.failover_ms) {
            return Err(invalid("failover_ms", "must be 1000..=600000"));
        }
        if self.renew_interval_ms == 0
            || self.renew_interval_ms.saturating_mul(2) > self.failover_ms
        {
            return Err(invalid(
                "renew_interval_ms",
                format!(
                    "must be 1..={} (at most half of failover_ms, so a lease is renewed at least twice before others may take it)",
                    self.failover_ms / 2
                ),
            ));
        }
        if !(100..=600_000).contains(&self.take_interval_ms) {
            return Err(invalid("take_interval_ms", "must be 100..=600000"));
        }
        if !(1..=1000).contains(&self.max_leases_to_steal) {
            return Err(invalid("max_leases_to_steal", "must be 1..=1000"));
        }
        Ok(Some(LeaseSettings {
            table: table.clone(),
            create_table: self.create_lease_table,
            worker_id,
            failover: Duration::from_millis(self.failover_ms),
            renew_every: Duration::from_millis(self.renew_interval_ms),
            take_every: Duration::from_millis(self.take_interval_ms),
            max_steal: self.max_leases_to_steal,
        }))
    }
}

/// `HOSTNAME` (a pod's name, stable in a StatefulSet), else a name made from the process id
/// and start time, unique enough among the instances of one table.
fn default_worker_id() -> String {
    match std::env::var("HOSTNAME") {
        Ok(h) if !h.trim().is_empty() && h.len() <= 200 => h,
        _ => {
            let started = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            format!("albwatch-{}-{started}", std::process::id())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ValidKinesisConfig, String> {
        let raw: KinesisConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_off() {
        let cfg = ValidKinesisConfig::default();
        assert!(!cfg.is_enabled());
        assert_eq!(cfg.initial, InitialPosition::Latest);
        assert_eq!(cfg.max_records_per_call, 10_000);
    }

    #[test]
    fn bad_keys_are_named() {
        for (text, key) in [
            (
                "max_records_per_call = 10001",
                "kinesis.max_records_per_call",
            ),
            ("poll_interval_ms = 100", "kinesis.poll_interval_ms"),
            ("start = \"at_timestamp\"", "kinesis.start_timestamp"),
            ("start_timestamp = 5.0", "kinesis.start_timestamp"),
            ("shard_discovery_secs = 0", "kinesis.shard_discovery_secs"),
            ("read_bytes_per_sec = 10", "kinesis.read_bytes_per_sec"),
            ("stream = \"\"", "kinesis.stream"),
            ("lease_table = \"x\"", "kinesis.lease_table"),
            (
                "lease_table = \"leases\"\nrenew_interval_ms = 6000",
                "kinesis.renew_interval_ms",
            ),
            (
                "lease_table = \"leases\"\nfailover_ms = 10",
                "kinesis.failover_ms",
            ),
            (
                "lease_table = \"leases\"\nworker_id = \" \"",
                "kinesis.worker_id",
            ),
            ("consumer = \"\"", "kinesis.consumer"),
            ("consumer = \"albwatch reader\"", "kinesis.consumer"),
            ("consumer = \"a/b\"", "kinesis.consumer"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(key), "{text}: {err}");
        }
    }

    #[test]
    fn a_consumer_name_selects_enhanced_fan_out() {
        assert_eq!(ValidKinesisConfig::default().consumer, None);
        let cfg = parse("stream = \"s\"\nconsumer = \"albwatch-prod_1.a\"").unwrap();
        assert_eq!(cfg.consumer.as_deref(), Some("albwatch-prod_1.a"));
        assert!(cfg.resubscribe_after < Duration::from_secs(300));
        assert!(parse(&format!("consumer = \"{}\"", "c".repeat(128))).is_ok());
        assert!(parse(&format!("consumer = \"{}\"", "c".repeat(129))).is_err());
    }

    #[test]
    fn at_timestamp_resolves() {
        let cfg = parse("stream = \"s\"\nstart = \"at_timestamp\"\nstart_timestamp = 1700000000.5")
            .unwrap();
        assert_eq!(cfg.initial, InitialPosition::AtTimestamp(1_700_000_000.5));
        assert!(cfg.is_enabled());
    }
}
