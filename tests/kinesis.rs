//! The Kinesis consumer against a real emulator: kinesalite, installed by
//! `scripts/install-test-deps.sh` into `target/test-deps/kinesalite` and started here on a free
//! loopback port (a missing install fails the tests, it never skips them). Records go through
//! a real worker pool into a real aggregator, so "counted exactly once" is checked where it
//! matters; a thin wrapper around the consumer's [`KinesisApi`] seam records the call order
//! (children only after the parent's `SHARD_END`) and injects the throttling kinesalite never
//! produces. The daemon evaluates in event time per shard: records whose lines are six minutes
//! old still raise their alert, stamped with the incident's event time, once the shard idles.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/fixtures.rs"]
mod fixtures;
use fixtures::cause_line_at;

use albwatch::input::aws::{AwsError, Fault};
use albwatch::input::kinesis::checkpoint::{
    CheckpointError, CheckpointStore, FileCheckpointStore, Position, SaveOutcome, SequenceNumber,
};
use albwatch::input::kinesis::config::{KinesisConfig, StartAt};
use albwatch::input::kinesis::consumer::{
    ApiError, IteratorStart, KinesisApi, RecordsPage, SdkApi, ShardInfo,
};
use aws_sdk_kinesis::primitives::Blob;

/// 2^127: the split point that halves a single shard's hash range.
const MIDDLE_HASH: &str = "170141183460469231731687303715884105728";

/// An explicit hash key inside each shard of a 3-shard stream (kinesalite cuts 2^128 evenly).
const HASH_IN_SHARD_OF_3: [&str; 3] = ["0", MIDDLE_HASH, LAST_HASH];

/// 2^128 − 1: the highest hash key, in the last shard of any stream.
const LAST_HASH: &str = "340282366920938463463374607431768211455";

// ---------------------------------------------------------------------------------------------
// kinesalite

#[path = "support/kinesalite.rs"]
mod kinesalite;

use kinesalite::{Kinesalite, client, create_stream_with, wait_active};

#[path = "support/kinesis_consumer.rs"]
mod kinesis_consumer;
use kinesis_consumer::{Consumer, LINE, Running, calls, lines, stop};

#[path = "support/daemon.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod daemon;
use daemon::{BIN, Daemon, aws_env};

#[path = "support/exposition.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod exposition;
use exposition::{sample, value};

#[path = "support/scratch.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod scratch;
use scratch::TempDir;

async fn create_stream(client: &aws_sdk_kinesis::Client, stream: &str) {
    create_stream_with(client, stream, 1).await;
}

/// A kinesalite of the test's own holding `stream` with `shards` shards, and its client.
async fn kinesalite_with(stream: &str, shards: i32) -> (Kinesalite, aws_sdk_kinesis::Client) {
    let k = Kinesalite::start();
    let c = client(&k.endpoint).await;
    create_stream_with(&c, stream, shards).await;
    (k, c)
}

/// PutRecord; returns the record's sequence number.
async fn put(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    data: Vec<u8>,
    hash: Option<&str>,
) -> SequenceNumber {
    let mut req = client
        .put_record()
        .stream_name(stream)
        .partition_key("pk")
        .data(Blob::new(data));
    if let Some(h) = hash {
        req = req.explicit_hash_key(h);
    }
    let out = req.send().await.expect("put record");
    SequenceNumber::parse(out.sequence_number()).expect("decimal sequence number")
}

/// One PutRecords call: each `(data, explicit hash key)` in order. Returns, per record, the
/// shard it landed in and its sequence number.
async fn put_many(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    records: &[(Vec<u8>, &str)],
) -> Vec<(String, SequenceNumber)> {
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;
    let entries = records
        .iter()
        .map(|(data, hash)| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(data.clone()))
                .partition_key("pk")
                .explicit_hash_key(*hash)
                .build()
                .expect("entry")
        })
        .collect();
    let out = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .expect("put records");
    assert_eq!(out.failed_record_count(), Some(0));
    out.records()
        .iter()
        .map(|r| {
            let shard = r.shard_id().expect("shard id").to_owned();
            let seq = SequenceNumber::parse(r.sequence_number().expect("sequence number"))
                .expect("decimal sequence number");
            (shard, seq)
        })
        .collect()
}

/// The exposition sample name of a per-shard counter, e.g. `albwatch_kinesis_lines_total{…}`.
fn shard_sample(what: &str, shard: u32) -> String {
    format!("albwatch_kinesis_{what}_total{{shard=\"shardId-{shard:012}\"}}")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

fn cwl_envelope(message_type: &str, n: usize) -> Vec<u8> {
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"id": format!("{i}"), "timestamp": 1_530_570_180_186u64,
                "message": LINE.trim_end()})
        })
        .collect();
    let body = serde_json::json!({"owner": "111111111111", "logGroup": "alb", "logStream": "s",
        "subscriptionFilters": ["f"], "messageType": message_type, "logEvents": events});
    gzip(body.to_string().as_bytes())
}

/// A KPL aggregate of `user_records`, as the KPL writes it: magic, the
/// `AggregatedRecord` protobuf (one partition key, every user record pointing at it), its MD5.
fn kpl_aggregate(user_records: &[Vec<u8>]) -> Vec<u8> {
    use md5::{Digest, Md5};
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }
    let mut message = Vec::new();
    bytes_field(&mut message, 1, b"pk");
    for data in user_records {
        let mut record = Vec::new();
        varint(&mut record, 1 << 3); // partition_key_index = 0
        varint(&mut record, 0);
        bytes_field(&mut record, 3, data);
        bytes_field(&mut message, 3, &record);
    }
    let mut framed = vec![0xF3, 0x89, 0x9A, 0xC2];
    framed.extend_from_slice(&message);
    framed.extend_from_slice(&Md5::digest(&message));
    framed
}

// ---------------------------------------------------------------------------------------------
// The consumer with a real pipeline behind it.

/// Records the order of iterator requests and throttles the first `throttle` GetRecords.
/// With `hide_children`, it also plays a ListShards that has not caught up with a split
/// (children left out) and a GetRecords that names the children at shard end (`ChildShards`,
/// which kinesalite never sends), so the consumer can only learn them the second way.
struct Recording<A> {
    inner: A,
    throttle: AtomicUsize,
    /// GetRecords calls still to fail with an expired iterator; set by the test mid-run.
    expire: Arc<AtomicUsize>,
    iterators: Arc<Mutex<Vec<String>>>,
    hide_children: bool,
    /// Which shard each iterator handed out reads.
    shard_of: Mutex<HashMap<String, String>>,
}

impl<A> Recording<A> {
    fn note_iterator(&self, iterator: &str, shard: &str) {
        self.shard_of
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(iterator.to_owned(), shard.to_owned());
    }
}

fn take_one(n: &AtomicUsize) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl<A: KinesisApi> KinesisApi for Recording<A> {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, ApiError> {
        let mut shards = self.inner.list_shards().await?;
        if self.hide_children {
            shards.retain(|s| s.parent.is_none() && s.adjacent_parent.is_none());
        }
        Ok(shards)
    }

    async fn get_shard_iterator(
        &self,
        shard: &str,
        start: &IteratorStart,
    ) -> Result<String, ApiError> {
        self.iterators
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(shard.to_owned());
        let iterator = self.inner.get_shard_iterator(shard, start).await?;
        self.note_iterator(&iterator, shard);
        Ok(iterator)
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, ApiError> {
        if take_one(&self.throttle) {
            return Err(ApiError::Throttled(AwsError::new(
                Fault::Throttled,
                "injected",
            )));
        }
        if take_one(&self.expire) {
            return Err(ApiError::ExpiredIterator);
        }
        let mut page = self.inner.get_records(iterator, limit).await?;
        let shard = self
            .shard_of
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(iterator)
            .cloned();
        if let Some(shard) = shard {
            match &page.next_iterator {
                Some(next) => self.note_iterator(next, &shard),
                None if self.hide_children => {
                    page.child_shards = self
                        .inner
                        .list_shards()
                        .await?
                        .into_iter()
                        .filter(|s| {
                            s.parent.as_deref() == Some(shard.as_str())
                                || s.adjacent_parent.as_deref() == Some(shard.as_str())
                        })
                        .collect();
                }
                None => {}
            }
        }
        Ok(page)
    }
}

/// The file store, noting the size of every `save_many` the consumer makes.
struct ObservedStore {
    inner: Arc<FileCheckpointStore>,
    save_many_sizes: Arc<Mutex<Vec<usize>>>,
}

impl CheckpointStore for ObservedStore {
    fn load(&self, stream: &str) -> Result<BTreeMap<String, Position>, CheckpointError> {
        self.inner.load(stream)
    }

    fn save(
        &self,
        stream: &str,
        shard: &str,
        position: &Position,
    ) -> Result<SaveOutcome, CheckpointError> {
        self.inner.save(stream, shard, position)
    }

    fn save_many(
        &self,
        stream: &str,
        positions: &[(&str, &Position)],
    ) -> Result<Vec<SaveOutcome>, CheckpointError> {
        self.save_many_sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(positions.len());
        self.inner.save_many(stream, positions)
    }
}

/// How a test runs the consumer.
#[derive(Debug, Clone, Copy)]
struct Options {
    /// GetRecords calls to fail with a throttle first.
    throttle: usize,
    batch_bytes: usize,
    start: StartAt,
    checkpoint_interval_secs: u64,
    hide_children: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            throttle: 0,
            batch_bytes: 1 << 20,
            start: StartAt::TrimHorizon,
            checkpoint_interval_secs: 1,
            hide_children: false,
        }
    }
}

/// The shared consumer set-up, plus what this file's wrappers note.
struct Harness {
    consumer: Consumer,
    iterators: Arc<Mutex<Vec<String>>>,
    expire: Arc<AtomicUsize>,
    save_many_sizes: Arc<Mutex<Vec<usize>>>,
}

impl std::ops::Deref for Harness {
    type Target = Consumer;

    fn deref(&self) -> &Consumer {
        &self.consumer
    }
}

impl Harness {
    fn new(name: &str) -> Harness {
        Harness {
            consumer: Consumer::new("kinesis", name),
            iterators: Arc::default(),
            expire: Arc::default(),
            save_many_sizes: Arc::default(),
        }
    }

    fn start(&self, client: &aws_sdk_kinesis::Client, stream: &str, throttle: usize) -> Running {
        self.start_with(
            client,
            stream,
            Options {
                throttle,
                ..Options::default()
            },
        )
    }

    fn start_with(
        &self,
        client: &aws_sdk_kinesis::Client,
        stream: &str,
        options: Options,
    ) -> Running {
        let mut cfg = KinesisConfig {
            stream: Some(stream.to_owned()),
            start: options.start,
            checkpoint_dir: self.dir.path().to_owned(),
            poll_interval_ms: 200,
            shard_discovery_secs: 1,
            checkpoint_interval_secs: options.checkpoint_interval_secs,
            ..KinesisConfig::default()
        }
        .validate()
        .expect("valid config");
        cfg.batch_bytes = options.batch_bytes;
        let api = Recording {
            inner: SdkApi::new(client.clone(), stream),
            throttle: AtomicUsize::new(options.throttle),
            expire: Arc::clone(&self.expire),
            iterators: Arc::clone(&self.iterators),
            hide_children: options.hide_children,
            shard_of: Mutex::default(),
        };
        let store = ObservedStore {
            inner: Arc::clone(&self.store),
            save_many_sizes: Arc::clone(&self.save_many_sizes),
        };
        self.spawn(api, cfg, Arc::new(store))
    }

    async fn wait_counted(&self, n: u64) {
        for _ in 0..300 {
            if self.counted() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A duplicate would come from a shard read again: once every shard owned has had
        // more successful GetRecords calls after the count was reached (on average two
        // each), the consumer has been past its last record and nothing late can still come.
        let calls = r#"albwatch_kinesis_api_calls_total{operation="get_records",outcome="ok"}"#;
        let shards = self.metric("albwatch_kinesis_shards_owned").max(1.0);
        let before = self.metric(calls);
        for _ in 0..300 {
            if self.metric(calls) >= before + 2.0 * shards {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(self.counted(), n, "lines counted");
    }

    fn metric(&self, name: &str) -> f64 {
        sample(&self.exposition(), name)
    }

    fn positions(&self, stream: &str) -> BTreeMap<String, Position> {
        self.store.load(stream).expect("load checkpoints")
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_gzip_and_cloudwatch_records_are_counted_once() {
    let (_k, c) = kinesalite_with("formats", 1).await;
    put(&c, "formats", lines(2), None).await;
    put(&c, "formats", gzip(&lines(3)), None).await;
    put(&c, "formats", cwl_envelope("DATA_MESSAGE", 2), None).await;
    put(&c, "formats", cwl_envelope("CONTROL_MESSAGE", 0), None).await;

    let h = Harness::new("formats");
    let (tx, task) = h.start(&c, "formats", 0);
    h.wait_counted(7).await;
    stop(tx, task).await;
    assert_eq!(h.metric(&shard_sample("records", 0)), 4.0);
    let positions = h.positions("formats");
    assert!(
        matches!(
            positions.get("shardId-000000000000"),
            Some(Position::After(_))
        ),
        "{positions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_checkpoint_without_loss() {
    let (_k, c) = kinesalite_with("restart", 1).await;
    for _ in 0..5 {
        put(&c, "restart", lines(1), None).await;
    }
    let h = Harness::new("restart");
    let (tx, task) = h.start(&c, "restart", 0);
    h.wait_counted(5).await;
    stop(tx, task).await;

    for _ in 0..4 {
        put(&c, "restart", lines(2), None).await;
    }
    let (tx, task) = h.start(&c, "restart", 0);
    h.wait_counted(13).await;
    stop(tx, task).await;
}

/// A one-shard stream holding 3 lines, split in the middle, then 2 lines on each child: 7
/// lines, the parent's 3 first.
async fn split_with_records(c: &aws_sdk_kinesis::Client, stream: &str) {
    create_stream(c, stream).await;
    for _ in 0..3 {
        put(c, stream, lines(1), None).await;
    }
    c.split_shard()
        .stream_name(stream)
        .shard_to_split("shardId-000000000000")
        .new_starting_hash_key(MIDDLE_HASH)
        .send()
        .await
        .expect("split");
    wait_active(c, stream).await;
    put(c, stream, lines(2), Some("1")).await;
    put(c, stream, lines(2), Some(LAST_HASH)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_parent_reaches_shard_end_before_children_are_read() {
    let k = Kinesalite::start();
    let c = client(&k.endpoint).await;
    split_with_records(&c, "split").await;

    let h = Harness::new("split");
    let (tx, task) = h.start(&c, "split", 0);
    h.wait_counted(7).await;
    stop(tx, task).await;

    let positions = h.positions("split");
    assert_eq!(
        positions.get("shardId-000000000000"),
        Some(&Position::ShardEnd),
        "{positions:?}"
    );
    assert_eq!(positions.len(), 3, "{positions:?}");
    let order = h
        .iterators
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(
        order.first().map(String::as_str),
        Some("shardId-000000000000")
    );
    assert!(
        order[1..].iter().all(|s| s != "shardId-000000000000"),
        "{order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_backs_off_and_loses_nothing() {
    let (_k, c) = kinesalite_with("throttle", 1).await;
    for _ in 0..3 {
        put(&c, "throttle", lines(1), None).await;
    }
    let h = Harness::new("throttle");
    let (tx, task) = h.start(&c, "throttle", 2);
    h.wait_counted(3).await;
    stop(tx, task).await;
    assert_eq!(h.metric(&calls("get_records", "throttled")), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_iterator_is_renewed_after_the_last_record_read() {
    let (_k, c) = kinesalite_with("expire", 1).await;
    for _ in 0..3 {
        put(&c, "expire", lines(1), None).await;
    }
    let h = Harness::new("expire");
    let (tx, task) = h.start(&c, "expire", 0);
    h.wait_counted(3).await;
    h.expire.store(1, Ordering::SeqCst);
    for _ in 0..2 {
        put(&c, "expire", lines(1), None).await;
    }
    // Renewed with AFTER_SEQUENCE_NUMBER of the last record queued: nothing lost or repeated.
    h.wait_counted(5).await;
    stop(tx, task).await;
    assert_eq!(h.metric(&calls("get_records", "expired_iterator")), 1.0);
    assert_eq!(
        h.metric("albwatch_kinesis_iterator_renewals_total{reason=\"expired\"}"),
        1.0
    );
    assert_eq!(h.metric(&calls("get_shard_iterator", "ok")), 2.0);
    let renewals = h
        .iterators
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len();
    assert_eq!(renewals, 2, "one iterator at start, one after the expiry");
}

/// How long `/metrics` is polled for what a test waits for.
const METRICS_LIMIT: Duration = Duration::from_secs(20);

/// How long a daemon may take to exit after SIGTERM.
const EXIT_LIMIT: Duration = Duration::from_secs(60);

impl Daemon {
    /// `albwatch run` as deployed, pointed at kinesalite through the standard AWS environment
    /// (`AWS_ENDPOINT_URL_KINESIS`, static keys, `AWS_REGION`), its admin server on a free port.
    fn start(config: &Path, endpoint: &str, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"])
            .arg(config)
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(args);
        aws_env(&mut cmd, &[("AWS_ENDPOINT_URL_KINESIS", endpoint)]);
        Daemon::spawn("albwatch", &mut cmd)
    }
}

const PARSED: &str = "albwatch_lines_total{outcome=\"parsed\"}";

/// The daemon as deployed: `albwatch run --kinesis-stream`, the endpoint from
/// `AWS_ENDPOINT_URL_KINESIS` (aws-config's standard variable), counts on `/metrics`, and on
/// SIGTERM a final checkpoint in the configured directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_reads_the_stream_named_on_the_command_line() {
    let (k, c) = kinesalite_with("daemon", 1).await;
    put(&c, "daemon", lines(2), None).await;
    put(&c, "daemon", gzip(&lines(3)), None).await;

    let dir = TempDir::new("kinesis", "daemon");
    let config = dir.join("albwatch.toml");
    let checkpoints = dir.join("checkpoints");
    std::fs::write(
        &config,
        format!(
            "[kinesis]\nstart = \"trim_horizon\"\npoll_interval_ms = 200\ncheckpoint_dir = {:?}\n",
            checkpoints.display().to_string()
        ),
    )
    .expect("config");
    let mut daemon = Daemon::start(&config, &k.endpoint, &["--kinesis-stream", "daemon"]);
    let body = daemon
        .wait_metrics("5 lines from 2 records", METRICS_LIMIT, |body| {
            sample(body, &shard_sample("records", 0)) >= 2.0 && sample(body, PARSED) >= 5.0
        })
        .await;
    let status = daemon.terminate(EXIT_LIMIT);
    assert!(status.success(), "{status}");
    assert_eq!(sample(&body, &shard_sample("records", 0)), 2.0);
    assert_eq!(sample(&body, PARSED), 5.0);
    let store = FileCheckpointStore::open(&checkpoints).expect("checkpoints");
    let positions = store.load("daemon").expect("load");
    assert!(
        matches!(
            positions.get("shardId-000000000000"),
            Some(Position::After(_))
        ),
        "{positions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_child_is_read_after_both_parents_end() {
    let (_k, c) = kinesalite_with("merge", 2).await;
    put(&c, "merge", lines(1), Some("1")).await;
    put(
        &c,
        "merge",
        lines(2),
        Some("170141183460469231731687303715884105729"),
    )
    .await;
    c.merge_shards()
        .stream_name("merge")
        .shard_to_merge("shardId-000000000000")
        .adjacent_shard_to_merge("shardId-000000000001")
        .send()
        .await
        .expect("merge");
    wait_active(&c, "merge").await;
    put(&c, "merge", lines(3), Some("1")).await;

    let h = Harness::new("merge");
    let (tx, task) = h.start(&c, "merge", 0);
    h.wait_counted(6).await;
    stop(tx, task).await;

    let positions = h.positions("merge");
    for parent in ["shardId-000000000000", "shardId-000000000001"] {
        assert_eq!(
            positions.get(parent),
            Some(&Position::ShardEnd),
            "{positions:?}"
        );
    }
    assert!(
        matches!(
            positions.get("shardId-000000000002"),
            Some(Position::After(_))
        ),
        "{positions:?}"
    );
    let order = h
        .iterators
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(
        order.last().map(String::as_str),
        Some("shardId-000000000002"),
        "{order:?}"
    );
    assert_eq!(order.len(), 3, "{order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_an_error_not_a_silent_wait() {
    let k = Kinesalite::start();
    let c = client(&k.endpoint).await;
    let h = Harness::new("missing");
    let (_tx, task) = h.start(&c, "no-such-stream", 0);
    let result = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the consumer gives up on its own")
        .expect("consumer task");
    let err = result.expect_err("ListShards on a missing stream fails");
    assert!(err.to_string().contains("no-such-stream"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_page_is_cut_into_batches_between_records() {
    let (_k, c) = kinesalite_with("cut", 1).await;
    for _ in 0..6 {
        put(&c, "cut", lines(2), None).await;
    }
    let h = Harness::new("cut");
    // Smaller than one record's lines: every record becomes its own batch.
    let (tx, task) = h.start_with(
        &c,
        "cut",
        Options {
            batch_bytes: 100,
            ..Options::default()
        },
    );
    h.wait_counted(12).await;
    stop(tx, task).await;
    assert_eq!(h.metric("albwatch_kinesis_batches_total"), 6.0);
    assert_eq!(h.metric(&shard_sample("records", 0)), 6.0);
    assert_eq!(h.metric(&shard_sample("lines", 0)), 12.0);
}

/// A consumer that dies without its shutdown save (the task is aborted, as a crash would end
/// it) resumes from the periodic checkpoint: nothing lost, and here nothing repeated either,
/// because the checkpoint interval passed after the last batch was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_checkpoints_survive_a_crash() {
    let (_k, c) = kinesalite_with("crash", 1).await;
    let mut last = None;
    for _ in 0..5 {
        last = Some(put(&c, "crash", lines(1), None).await);
    }
    let end = last.map(Position::After);
    let h = Harness::new("crash");
    let (_tx, task) = h.start(&c, "crash", 0);
    h.wait_counted(5).await;
    for _ in 0..300 {
        if h.positions("crash").get("shardId-000000000000") == end.as_ref() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    let _ = task.await;
    assert_eq!(
        h.positions("crash").get("shardId-000000000000"),
        end.as_ref(),
        "a periodic checkpoint of the last record was written"
    );
    for _ in 0..3 {
        put(&c, "crash", lines(1), None).await;
    }
    let (tx, task) = h.start(&c, "crash", 0);
    h.wait_counted(8).await;
    stop(tx, task).await;
}

/// Several shards at once: every per-shard series on `/metrics` is exact (records, stored
/// bytes, decoded lines), as are the call outcomes and payload formats; while the shards are
/// read each has a checkpoint age and they are all owned; once stopped, their gauges are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_shards_are_counted_exactly_per_shard() {
    let (_k, c) = kinesalite_with("shards", 3).await;
    let per_shard: [Vec<Vec<u8>>; 3] = [
        vec![lines(1), gzip(&lines(3))],
        vec![lines(2), lines(2), lines(2)],
        vec![
            cwl_envelope("DATA_MESSAGE", 4),
            cwl_envelope("CONTROL_MESSAGE", 0),
        ],
    ];
    let expected_lines = [4.0, 6.0, 4.0];
    for (records, hash) in per_shard.iter().zip(HASH_IN_SHARD_OF_3) {
        for data in records {
            put(&c, "shards", data.clone(), Some(hash)).await;
        }
    }

    let h = Harness::new("shards");
    let (tx, task) = h.start(&c, "shards", 0);
    h.wait_counted(14).await;
    // Every shard checkpointed (checkpoint_interval_secs = 1): polled, not slept for. The
    // counter moves just after the file, so both are waited for.
    for _ in 0..300 {
        if h.positions("shards").len() == 3 && h.metric("albwatch_kinesis_checkpoints_total") >= 3.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.positions("shards").len(),
        3,
        "{:?}",
        h.positions("shards")
    );
    let running = h.exposition();
    assert_eq!(sample(&running, "albwatch_kinesis_shards_owned"), 3.0);
    for shard in 0..3 {
        let age =
            format!("albwatch_kinesis_checkpoint_age_seconds{{shard=\"shardId-{shard:012}\"}}");
        let value = value(&running, &age).unwrap_or_else(|| panic!("{age} missing in\n{running}"));
        assert!(value >= 0.0, "{age} = {value}");
        assert_eq!(
            sample(
                &running,
                &format!("albwatch_kinesis_lag_seconds{{shard=\"shardId-{shard:012}\"}}")
            ),
            0.0,
            "caught up"
        );
    }
    assert!(sample(&running, "albwatch_kinesis_checkpoints_total") >= 3.0);
    promtool_check(&running);
    stop(tx, task).await;

    for (shard, records) in per_shard.iter().enumerate() {
        let shard = shard as u32;
        let bytes: usize = records.iter().map(Vec::len).sum();
        assert_eq!(
            h.metric(&shard_sample("records", shard)),
            records.len() as f64
        );
        assert_eq!(h.metric(&shard_sample("bytes", shard)), bytes as f64);
        assert_eq!(
            h.metric(&shard_sample("lines", shard)),
            expected_lines[shard as usize]
        );
    }
    assert_eq!(h.metric(&calls("get_shard_iterator", "ok")), 3.0);
    assert!(h.metric(&calls("list_shards", "ok")) >= 1.0);
    assert!(h.metric(&calls("get_records", "ok")) >= 3.0);
    for outcome in [
        "throttled",
        "expired_iterator",
        "not_found",
        "transient",
        "fatal",
    ] {
        assert_eq!(h.metric(&calls("get_records", outcome)), 0.0, "{outcome}");
    }
    for (format, n) in [
        ("lines", 4.0),
        ("gzip_lines", 1.0),
        ("cloudwatch_logs", 1.0),
        ("cloudwatch_control", 1.0),
        ("kpl", 0.0),
    ] {
        assert_eq!(
            h.metric(&format!(
                "albwatch_kinesis_payload_formats_total{{format=\"{format}\"}}"
            )),
            n,
            "{format}"
        );
    }
    let stopped = h.exposition();
    assert_eq!(sample(&stopped, "albwatch_kinesis_shards_owned"), 0.0);
    assert!(
        !stopped.contains("albwatch_kinesis_checkpoint_age_seconds{"),
        "{stopped}"
    );
    assert!(
        !stopped.contains("albwatch_kinesis_lag_seconds{"),
        "{stopped}"
    );
}

/// The real `promtool check metrics` (names, types, units, help) on an exposition; a missing
/// promtool fails the test.
fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be on PATH: run scripts/install-test-deps.sh");
    // promtool reads all of stdin before it prints, so writing first cannot deadlock.
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// KPL aggregates through the emulator: user records of every kind (plain lines,
/// gzip'd lines, a gzip'd CloudWatch Logs envelope) come out as their lines, each aggregate
/// is one Kinesis record; an aggregate whose MD5 does not match is passed through as a plain
/// record, as the KCL does, so none of its lines is counted as an ALB entry. A plain gzip'd
/// CloudWatch Logs record beside them is counted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpl_aggregates_and_cloudwatch_envelopes_are_counted_exactly() {
    let (_k, c) = kinesalite_with("kpl", 2).await;
    let mixed = kpl_aggregate(&[lines(2), gzip(&lines(3)), cwl_envelope("DATA_MESSAGE", 2)]);
    let many = kpl_aggregate(&(0..10).map(|_| lines(1)).collect::<Vec<_>>());
    let mut corrupt = kpl_aggregate(&[lines(1), lines(1)]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xFF; // the MD5's last byte
    put(&c, "kpl", mixed, Some("0")).await;
    put(&c, "kpl", many, Some(LAST_HASH)).await;
    put(&c, "kpl", cwl_envelope("DATA_MESSAGE", 3), Some(LAST_HASH)).await;
    put(&c, "kpl", corrupt, Some("0")).await;

    let h = Harness::new("kpl");
    let (tx, task) = h.start(&c, "kpl", 0);
    h.wait_counted(7 + 10 + 3).await;
    stop(tx, task).await;
    assert_eq!(h.metric(&shard_sample("records", 0)), 2.0);
    assert_eq!(h.metric(&shard_sample("records", 1)), 2.0);
    assert_eq!(h.metric(&shard_sample("lines", 1)), 13.0);
    // Shard 0: the 7 lines of the good aggregate, then whatever lines the corrupt one's raw
    // bytes split into; none of those parses as an ALB entry (the count above is exact).
    assert!(h.metric(&shard_sample("lines", 0)) > 7.0);
    for (format, n) in [("kpl", 2.0), ("cloudwatch_logs", 1.0), ("lines", 1.0)] {
        assert_eq!(
            h.metric(&format!(
                "albwatch_kinesis_payload_formats_total{{format=\"{format}\"}}"
            )),
            n,
            "{format}"
        );
    }
    assert_eq!(
        h.metric("albwatch_kinesis_decode_errors_total{kind=\"bad_kpl\"}"),
        0.0
    );
}

const LINES_PER_RECORD: usize = 5;

/// Puts `records_per_shard` records of [`LINES_PER_RECORD`] lines into each shard of a 2-shard
/// stream, logs them, and returns the lines put.
async fn put_round(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    log: &mut Vec<(String, SequenceNumber, usize)>,
    records_per_shard: usize,
) -> f64 {
    let records: Vec<(Vec<u8>, &str)> = (0..records_per_shard)
        .flat_map(|_| {
            [
                (lines(LINES_PER_RECORD), "0"),
                (lines(LINES_PER_RECORD), LAST_HASH),
            ]
        })
        .collect();
    for (shard, seq) in put_many(client, stream, &records).await {
        log.push((shard, seq, LINES_PER_RECORD));
    }
    (records.len() * LINES_PER_RECORD) as f64
}

/// The at-least-once promise of the real binary across `kill -9`: `albwatch run` on a 2-shard
/// stream with 1 s checkpoints and small batches, killed with SIGKILL while it consumes a
/// second put, then restarted on the same checkpoint directory. The second run reads, per
/// shard, exactly the lines after the checkpoint the first run left (nothing before it again,
/// nothing after it skipped), the checkpoint never covers more than the first run had counted,
/// so every line is counted by one run or the other, and the duplicates are only lines the
/// first run counted but had not yet checkpointed. A graceful stop then checkpoints the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_killed_daemon_resumes_from_its_checkpoint_and_loses_nothing() {
    const STREAM: &str = "hardkill";
    let (k, c) = kinesalite_with(STREAM, 2).await;
    let shard_ids = ["shardId-000000000000", "shardId-000000000001"];
    // (shard, sequence number, lines) of every record put, to tell what a checkpoint covers.
    let mut put_log: Vec<(String, SequenceNumber, usize)> = Vec::new();
    let dir = TempDir::new("kinesis", "hardkill");
    let config = dir.join("albwatch.toml");
    let checkpoints = dir.join("checkpoints");
    // 4 KiB batches: a GetRecords page becomes many acknowledged batches, so the kill lands
    // between them and the checkpoint trails what was counted.
    std::fs::write(
        &config,
        format!(
            "[pipeline]\nbatch_bytes = 4096\n\n[kinesis]\nstream = \"{STREAM}\"\n\
             start = \"trim_horizon\"\npoll_interval_ms = 200\ncheckpoint_interval_secs = 1\n\
             checkpoint_dir = {:?}\n",
            checkpoints.display().to_string()
        ),
    )
    .expect("config");
    let store = FileCheckpointStore::open(&checkpoints).expect("checkpoints");
    let load = || store.load(STREAM).expect("load checkpoints");

    // Run 1: the first put is read and checkpointed.
    let first = put_round(&c, STREAM, &mut put_log, 10).await;
    let mut run1 = Daemon::start(&config, &k.endpoint, &[]);
    run1.wait_metrics("the first put counted", METRICS_LIMIT, |b| {
        sample(b, PARSED) >= first
    })
    .await;
    let last_of = |log: &[(String, SequenceNumber, usize)], shard: &str| {
        log.iter()
            .filter(|(s, _, _)| s == shard)
            .map(|(_, seq, _)| Position::After(seq.clone()))
            .max()
            .expect("records in every shard")
    };
    let first_ends: Vec<Position> = shard_ids.iter().map(|s| last_of(&put_log, s)).collect();
    for _ in 0..400 {
        let positions = load();
        if shard_ids
            .iter()
            .zip(&first_ends)
            .all(|(s, end)| positions.get(*s) == Some(end))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        shard_ids.map(|s| load().get(s).cloned()).to_vec(),
        first_ends.iter().cloned().map(Some).collect::<Vec<_>>(),
        "run 1 checkpointed the first put"
    );

    // More puts, each counted before the next, until a checkpoint lands among them: the kill
    // then interrupts a stream read well past its first checkpoint.
    let mut counted_before_tail = first;
    for round in 0.. {
        assert!(round < 100, "no checkpoint after the first put");
        counted_before_tail += put_round(&c, STREAM, &mut put_log, 2).await;
        run1.wait_metrics("the next put counted", METRICS_LIMIT, |b| {
            sample(b, PARSED) >= counted_before_tail
        })
        .await;
        let positions = load();
        if shard_ids
            .iter()
            .zip(&first_ends)
            .any(|(s, end)| positions.get(*s).is_some_and(|p| p > end))
        {
            break;
        }
    }
    // The tail; SIGKILL as soon as run 1 has counted part of it. The checkpoint is read before
    // the scrape, so whatever it covers had been counted by that scrape (the pipeline counts a
    // batch before acknowledging it, and only acknowledged batches are checkpointed).
    let total = counted_before_tail + put_round(&c, STREAM, &mut put_log, 40).await;
    let (before_kill, counted_by_run1) = loop {
        let positions = load();
        let body = run1.metrics().unwrap_or_default();
        let counted = sample(&body, PARSED);
        if counted > counted_before_tail {
            run1.kill_hard();
            break (positions, counted);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(run1);
    let at_kill = load();
    let lines_after = |positions: &BTreeMap<String, Position>, shard: &str| {
        put_log
            .iter()
            .filter(|(s, seq, _)| {
                s == shard
                    && positions
                        .get(shard)
                        .is_none_or(|p| *p < Position::After(seq.clone()))
            })
            .map(|(_, _, n)| *n)
            .sum::<usize>() as f64
    };
    let uncovered: Vec<f64> = shard_ids.iter().map(|s| lines_after(&at_kill, s)).collect();
    let covered = total - uncovered.iter().sum::<f64>();
    if before_kill == at_kill {
        assert!(
            covered <= counted_by_run1,
            "the checkpoint covers {covered} lines but run 1 had counted only {counted_by_run1}"
        );
    } else {
        // A checkpoint landed between the last read of the file and the kill: what it covers
        // is still bounded by what was acknowledged, just not by the scrape taken before it.
        eprintln!("checkpoint moved during the kill: {before_kill:?} → {at_kill:?}");
    }

    // Run 2 on the same directory: exactly the lines after the checkpoint, per shard.
    let mut run2 = Daemon::start(&config, &k.endpoint, &[]);
    let expected: f64 = uncovered.iter().sum();
    let ends: Vec<Position> = shard_ids.iter().map(|s| last_of(&put_log, s)).collect();
    run2.wait_metrics("the lines after the checkpoint", METRICS_LIMIT, |b| {
        sample(b, PARSED) >= expected
    })
    .await;
    // Quiet means every shard's checkpoint is at its last record: all that run 2 read has been
    // counted and acknowledged, so the counts below are final.
    for _ in 0..400 {
        let positions = load();
        if shard_ids
            .iter()
            .zip(&ends)
            .all(|(s, end)| positions.get(*s) == Some(end))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = run2.metrics().expect("run 2 /metrics");
    for (i, shard) in shard_ids.iter().enumerate() {
        assert_eq!(
            sample(&body, &shard_sample("lines", i as u32)),
            uncovered[i],
            "run 2 read {shard} from its checkpoint"
        );
    }
    let counted_by_run2 = sample(&body, PARSED);
    assert_eq!(counted_by_run2, expected);
    let status = run2.terminate(EXIT_LIMIT);
    assert!(status.success(), "{status}");
    let final_positions = load();
    for (shard, end) in shard_ids.iter().zip(&ends) {
        assert_eq!(final_positions.get(*shard), Some(end), "{shard}");
    }

    let duplicates = counted_by_run1 + counted_by_run2 - total;
    assert!(
        duplicates >= 0.0,
        "lost {} lines: run 1 counted {counted_by_run1}, run 2 {counted_by_run2}, put {total}",
        -duplicates
    );
    assert!(duplicates <= expected, "{duplicates} duplicates");
    eprintln!(
        "hard kill: put {total} lines; run 1 counted ≥ {counted_by_run1}, checkpoint covered \
         {covered}; run 2 counted {counted_by_run2}; ≥ {duplicates} counted twice"
    );
}

/// ChildShards: with a ListShards that never shows a split's children, the
/// consumer still reads them, learned from the parent's last GetRecords, and only after the
/// parent's ShardEnd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_named_at_shard_end_are_read_without_a_listing() {
    let k = Kinesalite::start();
    let c = client(&k.endpoint).await;
    split_with_records(&c, "childshards").await;

    let h = Harness::new("childshards");
    let (tx, task) = h.start_with(
        &c,
        "childshards",
        Options {
            hide_children: true,
            ..Options::default()
        },
    );
    h.wait_counted(7).await;
    stop(tx, task).await;
    let positions = h.positions("childshards");
    assert_eq!(
        positions.get("shardId-000000000000"),
        Some(&Position::ShardEnd),
        "{positions:?}"
    );
    for child in ["shardId-000000000001", "shardId-000000000002"] {
        assert!(
            matches!(positions.get(child), Some(Position::After(_))),
            "{positions:?}"
        );
    }
    let order = h
        .iterators
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(order.len(), 3, "{order:?}");
    assert_eq!(order[0], "shardId-000000000000", "{order:?}");
}

/// A shard started at LATEST (the default) that stops before its first record still leaves a
/// checkpoint: the time it began reading. The restart resumes there, so records put while
/// albwatch was down are read, where a fresh LATEST would skip them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_at_latest_reads_what_arrived_while_down() {
    let (_k, c) = kinesalite_with("latest", 1).await;
    let h = Harness::new("latest");
    let at_latest = Options {
        start: StartAt::Latest,
        ..Options::default()
    };
    let shard = "shardId-000000000000";
    let (tx, task) = h.start_with(&c, "latest", at_latest);
    for _ in 0..300 {
        if h.positions("latest").contains_key(shard) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(tx, task).await;
    let started = h.positions("latest");
    assert!(
        matches!(started.get(shard), Some(Position::AtTimestamp(_))),
        "{started:?}"
    );

    let mut last = None;
    for _ in 0..3 {
        last = Some(put(&c, "latest", lines(1), None).await);
    }
    let (tx, task) = h.start_with(&c, "latest", at_latest);
    h.wait_counted(3).await;
    stop(tx, task).await;
    assert_eq!(
        h.positions("latest").get(shard),
        last.map(Position::After).as_ref()
    );
}

/// At shutdown every shard's last position is written in one durable write: with periodic
/// checkpoints out of the way (an hour apart), the stop saves all three shards with a single
/// `save_many`, each at its last record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_saves_every_shard_in_one_write() {
    let (_k, c) = kinesalite_with("final", 3).await;
    let mut ends = BTreeMap::new();
    for (i, hash) in HASH_IN_SHARD_OF_3.iter().enumerate() {
        let seq = put(&c, "final", lines(1), Some(hash)).await;
        ends.insert(format!("shardId-{i:012}"), Position::After(seq));
    }
    let h = Harness::new("final");
    let (tx, task) = h.start_with(
        &c,
        "final",
        Options {
            checkpoint_interval_secs: 3600,
            ..Options::default()
        },
    );
    h.wait_counted(3).await;
    assert!(
        h.positions("final").is_empty(),
        "no periodic checkpoint yet"
    );
    stop(tx, task).await;
    assert_eq!(h.positions("final"), ends);
    assert_eq!(
        *h.save_many_sizes
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
        vec![3]
    );
}

/// The S3 delivery path of `deploy/kinesis/cloudformation.yaml`, end to end: the forwarder
/// Lambda's inline code (run from the template by `tests/support/forwarder.py`, with the first
/// PutRecords half failed) packs a gzip'd access-log object into gzip'd records of whole lines,
/// in requests within PutRecords' 500-record and 5 MiB limits, re-sends exactly the failed
/// records, and `albwatch run` reading the stream counts every line of the object once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_forwarder_delivers_every_line_of_an_object_once() {
    const STREAM: &str = "forwarded";
    const LINES: usize = 3000;
    let (k, _c) = kinesalite_with(STREAM, 2).await;
    let dir = TempDir::new("kinesis", "forwarder");
    let object = dir
        .0
        .join("123456789012_elasticloadbalancing_us-east-1_app.shop.log.gz");
    std::fs::write(&object, gzip(&albwatch::traffic::corpus(7, LINES))).expect("log");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("target/test-deps/aws-tools/bin/python"))
        .arg(root.join("tests/support/forwarder.py"))
        .arg(root.join("deploy/kinesis/cloudformation.yaml"))
        .arg(&object)
        .env("AWS_ENDPOINT_URL_KINESIS", &k.endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("STREAM_NAME", STREAM)
        // ~2 lines a record, so one object makes more records than one request may carry.
        .env("RECORD_BYTES", "2000")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("target/test-deps/aws-tools/bin/python (boto3, PyYAML: scripts/install-test-deps.sh) runs");
    assert!(
        out.status.success(),
        "forwarder failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("forwarder JSON");
    let records = stats["records"].as_u64().expect("records");
    let calls: Vec<(u64, u64)> = stats["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| (c[0].as_u64().expect("n"), c[1].as_u64().expect("bytes")))
        .collect();
    assert!(records > 1000, "{stats}");
    assert_eq!(stats["limits"]["max_records"], 500);
    assert_eq!(stats["limits"]["max_request_bytes"], 5 << 20);
    assert!(
        calls.iter().all(|&(n, bytes)| n <= 500 && bytes <= 5 << 20),
        "{calls:?}"
    );
    assert_eq!(calls[0].0, 500, "the first request is full: {calls:?}");
    // The injected failure: half of the first request, sent again once, and nothing else.
    assert_eq!(stats["retried"], 250, "{stats}");
    assert_eq!(calls[1].0, 250, "{calls:?}");
    assert_eq!(
        calls.iter().map(|c| c.0).sum::<u64>(),
        records + 250,
        "{calls:?}"
    );

    let config = dir.join("albwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[kinesis]\nstream = \"{STREAM}\"\nstart = \"trim_horizon\"\npoll_interval_ms = 200\n\
             checkpoint_dir = {:?}\n",
            dir.join("checkpoints").display().to_string()
        ),
    )
    .expect("config");
    let mut daemon = Daemon::start(&config, &k.endpoint, &[]);
    let body = daemon
        .wait_metrics("every line of the object", METRICS_LIMIT, |b| {
            sample(b, PARSED) >= LINES as f64
        })
        .await;
    let status = daemon.terminate(EXIT_LIMIT);
    assert!(status.success(), "{status}");
    assert_eq!(sample(&body, PARSED), LINES as f64);
    let read =
        sample(&body, &shard_sample("records", 0)) + sample(&body, &shard_sample("records", 1));
    assert_eq!(read, records as f64, "every record read once");
    assert_eq!(
        sample(
            &body,
            "albwatch_kinesis_payload_formats_total{format=\"gzip_lines\"}"
        ),
        records as f64
    );
}

// ---------------------------------------------------------------------------------------------
// Event time: late records alert at their own time.

/// Real ALB lines on one target (`10.0.1.17:8080`): line 0 a healthy 200, line 28 a refused
/// connection (502, processing times -1).
const HEALTHY: usize = 0;
const REFUSED: usize = 28;
const SECOND_US: i64 = 1_000_000;
/// The aggregator's bucket (`[aggregate] bucket_secs` default): evaluation ticks at its ends.
const BUCKET_US: i64 = 10 * SECOND_US;

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The complete JSON lines `--alerts-out` holds so far (none while the file is missing).
fn alert_transitions(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: alert line {l:?}")))
        .collect()
}

/// Event time for a real shard: lines six minutes old — older than "now", so a wall-clock
/// window would never see them, and exactly at the edge of the default 360 s out-of-order
/// bound — are counted, and once the shard has been quiet for `idle_timeout_secs` its data
/// is evaluated up to its newest event. The refused-connection burst fires with `startsAt`
/// at the end of the burst's bucket (six minutes ago, not now), the shard's lag shows on
/// `/metrics`, and the detection delay is observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_six_minutes_old_raise_their_alert_at_their_event_time() {
    const STREAM: &str = "sixminutes";
    const TARGET: &str = "10.0.1.17:8080";
    let (k, c) = kinesalite_with(STREAM, 1).await;

    // The burst starts 1 s into a bucket six minutes ago and lasts 2 s, so every refused
    // connection is in that one bucket; 90 healthy requests fill the 30 s before it.
    let bucket = (now_us() - 360 * SECOND_US).div_euclid(BUCKET_US) * BUCKET_US;
    let burst_start = bucket + SECOND_US;
    let healthy: Vec<String> = (0..90)
        .map(|i| cause_line_at(HEALTHY, bucket - 30 * SECOND_US + i * 333_000) + "\n")
        .collect();
    let refused: String = (0..20)
        .map(|i| cause_line_at(REFUSED, burst_start + i * 100_000) + "\n")
        .collect();
    for chunk in healthy.chunks(30) {
        put(&c, STREAM, chunk.concat().into_bytes(), None).await;
    }
    put(&c, STREAM, gzip(refused.as_bytes()), None).await;

    let dir = TempDir::new("kinesis", "sixminutes");
    let config = dir.join("albwatch.toml");
    let alerts = dir.join("alerts.jsonl");
    std::fs::write(
        &config,
        format!(
            "[event_time]\nidle_timeout_secs = 2\n\n[kinesis]\nstart = \"trim_horizon\"\n\
             poll_interval_ms = 200\ncheckpoint_dir = {:?}\n",
            dir.join("checkpoints").display().to_string()
        ),
    )
    .expect("config");
    let alerts_arg = alerts.display().to_string();
    let daemon = Daemon::start(
        &config,
        &k.endpoint,
        &["--kinesis-stream", STREAM, "--alerts-out", &alerts_arg],
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let firing = loop {
        let transitions = alert_transitions(&alerts);
        let found = transitions.iter().find(|a| {
            a["status"] == "firing"
                && a["labels"]["cause"] == "target_refused_connection"
                && a["labels"]["target"] == TARGET
        });
        if let Some(a) = found {
            break a.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no firing target_refused_connection alert on {TARGET} in --alerts-out within 60 s; \
             transitions: {transitions:#?}\n/metrics:\n{}",
            daemon.metrics().unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let checked_at = now_us();
    let body = daemon.metrics().expect("/metrics");
    let status = daemon.terminate(EXIT_LIMIT);
    assert!(status.success(), "{status}");

    // startsAt is the event time of the incident: the tick ending the burst's bucket.
    let starts_at = firing["startsAt"].as_str().expect("startsAt");
    let starts_us = albwatch::parse::timestamp_us(starts_at.as_bytes())
        .unwrap_or_else(|| panic!("startsAt {starts_at:?} is not RFC 3339"));
    let time = albwatch::alert::text::rfc3339_ms;
    assert!(
        (burst_start..=bucket + BUCKET_US).contains(&starts_us),
        "startsAt {starts_at} is not in the burst's bucket [{}, {}]: {firing}",
        time(burst_start),
        time(bucket + BUCKET_US)
    );
    assert!(
        checked_at - starts_us > 300 * SECOND_US,
        "startsAt {starts_at} is the wall clock ({}), not the event time: {firing}",
        time(checked_at)
    );
    assert!(firing.get("endsAt").is_none(), "{firing}");

    assert_eq!(sample(&body, PARSED), 110.0, "every line counted:\n{body}");
    let lag_name =
        "albwatch_partition_lag_seconds{input=\"kinesis\",partition=\"shardId-000000000000\"}";
    assert!(
        body.lines().any(|l| l.starts_with(lag_name)),
        "no {lag_name} on /metrics:\n{body}"
    );
    let lag = sample(&body, lag_name);
    assert!(
        lag >= 300.0,
        "the shard's lines are six minutes old, but its lag is {lag} s:\n{body}"
    );
    let delays = sample(&body, "albwatch_alert_detection_delay_seconds_count");
    assert!(
        delays >= 1.0,
        "the firing alert's detection delay was not observed ({delays}):\n{body}"
    );
    eprintln!(
        "six minutes late: burst at {}, alert startsAt {starts_at}, seen at {}; shard lag {lag} s",
        time(burst_start),
        time(checked_at)
    );
}
