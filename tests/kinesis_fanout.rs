//! Enhanced fan-out (`[kinesis] consumer`) against a real emulator: kinesis-local, installed
//! by `scripts/install-test-deps.sh` into `target/test-deps/kinesis-local` and started once
//! per test binary on free loopback ports (a missing install fails the tests, it never skips
//! them), which implements RegisterStreamConsumer, SubscribeToShard's event stream and
//! `ChildShards`. The consumer runs in-process over a real worker pool and aggregator, so
//! "counted exactly once" is checked where it matters; a thin wrapper around the
//! [`KinesisApi`] seam records which calls were made (no GetRecords at all), fails the first
//! subscription of each shard with `ResourceInUseException` as AWS does while a previous one is
//! still open, and notes, when a child shard is first subscribed, whether its parent's
//! `SHARD_END` was already saved.
//!
//! kinesis-local 0.6.2 never ends a closed shard's subscription the way AWS does (its events
//! always carry a continuation sequence number and never `ChildShards`; only its GetRecords
//! names the children), so for the split the wrapper plays AWS's last event: once a
//! subscription of the closed parent is past the parent's last record, it ends it with an event
//! without a continuation that names the children ListShards shows. Everything else — the
//! split, the children, their records and subscriptions — is the emulator's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use albwatch::input::aws::{AwsError, Fault};
use albwatch::input::kinesis::checkpoint::{
    CheckpointStore, FileCheckpointStore, Position, SequenceNumber,
};
use albwatch::input::kinesis::config::{KinesisConfig, StartAt};
use albwatch::input::kinesis::consumer::{
    ApiError, IteratorStart, KinesisApi, RecordsPage, SdkApi, ShardEvent, ShardInfo,
    StreamConsumer, Subscription,
};
use aws_sdk_kinesis::primitives::Blob;

#[path = "support/kinesis_local.rs"]
mod kinesis_local;
use kinesis_local::{KinesisLocal, client, create_stream_with, wait_active};

#[path = "support/kinesis_consumer.rs"]
mod kinesis_consumer;
use kinesis_consumer::{Consumer, Running, calls, lines, stop};

#[path = "support/exposition.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod exposition;
use exposition::value;

/// 2^127: the split point that halves a single shard's hash range.
const MIDDLE_HASH: &str = "170141183460469231731687303715884105728";
/// 2^128 − 1: the highest hash key, in the last shard of any stream.
const LAST_HASH: &str = "340282366920938463463374607431768211455";

/// PutRecord with an explicit hash key; returns the shard and the record's sequence number.
async fn put(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    data: Vec<u8>,
    hash: &str,
) -> (String, SequenceNumber) {
    let out = client
        .put_record()
        .stream_name(stream)
        .partition_key("pk")
        .explicit_hash_key(hash)
        .data(Blob::new(data))
        .send()
        .await
        .expect("put record");
    let seq = SequenceNumber::parse(out.sequence_number()).expect("decimal sequence number");
    (out.shard_id().to_owned(), seq)
}

/// What the wrapper saw.
#[derive(Default)]
struct Seen {
    /// Every SubscribeToShard call: the shard and where it started.
    subscribes: Mutex<Vec<(String, IteratorStart)>>,
    get_records: AtomicUsize,
    /// Per child shard first subscribed: whether its parent was at `SHARD_END` in the store.
    child_after_parent_end: Mutex<BTreeMap<String, bool>>,
}

/// [`SdkApi`] with the calls noted; the first subscription of each shard fails with
/// `ResourceInUseException` when `in_use` is set.
struct Watched {
    inner: SdkApi,
    seen: Arc<Seen>,
    in_use: bool,
    refused: Mutex<Vec<String>>,
    store: Arc<FileCheckpointStore>,
    stream: String,
    /// The split parent and its last record, once the test has split it: its subscriptions
    /// end as AWS's do, and its children are checked.
    parent: Arc<Mutex<Option<(String, String)>>>,
}

impl KinesisApi for Watched {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, ApiError> {
        self.inner.list_shards().await
    }

    async fn get_shard_iterator(
        &self,
        shard: &str,
        start: &IteratorStart,
    ) -> Result<String, ApiError> {
        self.inner.get_shard_iterator(shard, start).await
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, ApiError> {
        self.seen.get_records.fetch_add(1, Ordering::SeqCst);
        self.inner.get_records(iterator, limit).await
    }

    async fn describe_consumer(&self, name: &str) -> Result<StreamConsumer, ApiError> {
        self.inner.describe_consumer(name).await
    }

    async fn register_consumer(&self, name: &str) -> Result<StreamConsumer, ApiError> {
        self.inner.register_consumer(name).await
    }

    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard: &str,
        start: &IteratorStart,
    ) -> Result<Subscription, ApiError> {
        self.seen
            .subscribes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((shard.to_owned(), start.clone()));
        let parent = self
            .parent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some((parent, last)) = &parent
            && parent == shard
        {
            let mut inner = self.inner.subscribe(consumer_arn, shard, start).await?;
            let children: Vec<ShardInfo> = self
                .inner
                .list_shards()
                .await?
                .into_iter()
                .filter(|s| s.parent.as_deref() == Some(parent.as_str()))
                .collect();
            let last = last.clone();
            let (tx, subscription) = Subscription::channel(1);
            tokio::spawn(async move {
                while let Some(event) = inner.next().await {
                    let end = matches!(&event, Ok(e) if e.records.is_empty()
                        && e.continuation.as_deref() == Some(last.as_str()));
                    let event = match event {
                        Ok(e) if end => Ok(ShardEvent {
                            continuation: None,
                            child_shards: children.clone(),
                            ..e
                        }),
                        other => other,
                    };
                    if tx.send(event).await.is_err() || end {
                        return;
                    }
                }
            });
            return Ok(subscription);
        }
        if let Some((parent, _)) = parent
            && parent != shard
        {
            let ended = self
                .store
                .load(&self.stream)
                .expect("load checkpoints")
                .get(&parent)
                == Some(&Position::ShardEnd);
            self.seen
                .child_after_parent_end
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(shard.to_owned())
                .or_insert(ended);
        }
        if self.in_use {
            let mut refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
            if !refused.iter().any(|s| s == shard) {
                refused.push(shard.to_owned());
                return Err(ApiError::Transient(AwsError::new(
                    Fault::Service,
                    "ResourceInUseException: another subscription is open (injected)",
                )));
            }
        }
        self.inner.subscribe(consumer_arn, shard, start).await
    }
}

/// The shared consumer set-up, plus what this file's wrapper notes.
struct Harness {
    consumer: Consumer,
    seen: Arc<Seen>,
    parent: Arc<Mutex<Option<(String, String)>>>,
}

impl std::ops::Deref for Harness {
    type Target = Consumer;

    fn deref(&self) -> &Consumer {
        &self.consumer
    }
}

/// How a test runs the consumer.
struct Options {
    resubscribe_after: Duration,
    in_use: bool,
    /// Long = children can only be learned from the parent's last event.
    shard_discovery_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resubscribe_after: Duration::from_secs(290),
            in_use: false,
            shard_discovery_secs: 1,
        }
    }
}

impl Harness {
    fn new(name: &str) -> Harness {
        Harness {
            consumer: Consumer::new("fanout", name),
            seen: Arc::default(),
            parent: Arc::default(),
        }
    }

    fn start(
        &self,
        client: &aws_sdk_kinesis::Client,
        stream: &str,
        consumer_name: &str,
        options: Options,
    ) -> Running {
        let mut cfg = KinesisConfig {
            stream: Some(stream.to_owned()),
            start: StartAt::TrimHorizon,
            checkpoint_dir: self.dir.path().to_owned(),
            shard_discovery_secs: options.shard_discovery_secs,
            checkpoint_interval_secs: 1,
            consumer: Some(consumer_name.to_owned()),
            ..KinesisConfig::default()
        }
        .validate()
        .expect("valid config");
        cfg.resubscribe_after = options.resubscribe_after;
        let api = Watched {
            inner: SdkApi::new(client.clone(), stream),
            seen: Arc::clone(&self.seen),
            in_use: options.in_use,
            refused: Mutex::default(),
            store: Arc::clone(&self.store),
            stream: stream.to_owned(),
            parent: Arc::clone(&self.parent),
        };
        self.spawn(
            api,
            cfg,
            Arc::clone(&self.store) as Arc<dyn CheckpointStore>,
        )
    }

    /// Waits until `n` lines are counted, then a while longer (several events of every
    /// subscription) so a line read twice would show, and checks the count is exactly `n`.
    async fn wait_counted(&self, n: u64) {
        for _ in 0..600 {
            if self.counted() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            self.counted(),
            n,
            "lines counted; subscriptions {:?}; metrics:\n{}",
            self.subscribes(),
            self.exposition()
                .lines()
                .filter(|l| l.contains("subscri") || l.contains("consumer"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.exposition();
        value(&text, name).unwrap_or_else(|| panic!("{name} not in\n{text}"))
    }

    fn subscribes(&self) -> Vec<(String, IteratorStart)> {
        self.seen
            .subscribes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn subscriptions(outcome: &str) -> String {
    format!("albwatch_kinesis_subscriptions_total{{outcome=\"{outcome}\"}}")
}

async fn started(stream: &str, shards: i32) -> (Arc<KinesisLocal>, aws_sdk_kinesis::Client) {
    let k = kinesis_local::shared();
    let c = client(&k.endpoint).await;
    create_stream_with(&c, stream, shards).await;
    (k, c)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_through_subscribe_to_shard_each_counted_once() {
    let (_k, c) = started("efo-basic", 2).await;
    // Before the consumer starts, into both shards.
    let mut last: BTreeMap<String, SequenceNumber> = BTreeMap::new();
    for (i, hash) in ["0", LAST_HASH, "1", LAST_HASH].into_iter().enumerate() {
        let (shard, seq) = put(&c, "efo-basic", lines(i + 1), hash).await;
        last.insert(shard, seq);
    }
    let h = Harness::new("basic");
    let (tx, task) = h.start(&c, "efo-basic", "albwatch-basic", Options::default());
    h.wait_counted(10).await;
    // While subscribed.
    for (i, hash) in ["0", LAST_HASH, "2"].into_iter().enumerate() {
        let (shard, seq) = put(&c, "efo-basic", lines(i + 3), hash).await;
        last.insert(shard, seq);
    }
    h.wait_counted(10 + 3 + 4 + 5).await;
    stop(tx, task).await;

    assert_eq!(h.seen.get_records.load(Ordering::SeqCst), 0, "no polling");
    assert_eq!(h.metric(&calls("get_records", "ok")), 0.0);
    assert_eq!(h.metric(&calls("register_stream_consumer", "ok")), 1.0);
    assert!(h.metric(&calls("describe_stream_consumer", "ok")) >= 1.0);
    assert!(h.metric(&calls("subscribe_to_shard", "ok")) >= 2.0);
    let subscribed: std::collections::BTreeSet<String> =
        h.subscribes().into_iter().map(|(s, _)| s).collect();
    assert_eq!(subscribed.len(), 2, "{subscribed:?}");
    // The checkpoints stand at each shard's last record.
    let positions = h.store.load("efo-basic").expect("load");
    for (shard, seq) in &last {
        assert_eq!(
            positions.get(shard),
            Some(&Position::After(seq.clone())),
            "{shard}"
        );
    }
    // The consumer stays registered: a second run finds it, registers nothing and reads on
    // from the checkpoints, counting nothing again.
    let before = h.counted();
    let (tx, task) = h.start(&c, "efo-basic", "albwatch-basic", Options::default());
    put(&c, "efo-basic", lines(6), "0").await;
    h.wait_counted(before + 6).await;
    stop(tx, task).await;
    assert_eq!(h.metric(&calls("register_stream_consumer", "ok")), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_resubscribe_mid_stream_loses_and_doubles_nothing() {
    let (_k, c) = started("efo-renew", 1).await;
    let h = Harness::new("renew");
    let (tx, task) = h.start(
        &c,
        "efo-renew",
        "albwatch-renew",
        Options {
            resubscribe_after: Duration::from_millis(400),
            in_use: true,
            ..Options::default()
        },
    );
    // Records keep arriving across many subscriptions.
    let mut total = 0;
    for i in 0..20 {
        let n = i % 3 + 1;
        put(&c, "efo-renew", lines(n), "0").await;
        total += n as u64;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    h.wait_counted(total).await;
    stop(tx, task).await;

    // kinesis-local holds a dropped subscription open for a moment, so some renewals are
    // refused in the event stream (`ResourceInUseException`) and retried: those are `failed`.
    let renewed = h.metric(&subscriptions("renewed"));
    let failed = h.metric(&subscriptions("failed"));
    assert!(
        renewed >= 2.0 && renewed + failed >= 4.0,
        "renewed {renewed}, failed {failed}"
    );
    // The injected ResourceInUseException was retried.
    assert_eq!(h.metric(&calls("subscribe_to_shard", "transient")), 1.0);
    // Every subscription after the first records continues after a sequence number.
    let subs = h.subscribes();
    assert!(subs.len() >= 5, "{subs:?}");
    assert!(
        subs.iter()
            .skip(2)
            .all(|(_, start)| matches!(start, IteratorStart::After(_))),
        "{subs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_shard_ends_with_child_shards_and_children_are_read_after_it() {
    let (_k, c) = started("efo-split", 1).await;
    let h = Harness::new("split");
    // Discovery so slow that the children can only come from the parent's last event.
    let (tx, task) = h.start(
        &c,
        "efo-split",
        "albwatch-split",
        Options {
            shard_discovery_secs: 3600,
            resubscribe_after: Duration::from_secs(1),
            ..Options::default()
        },
    );
    let (parent, _) = put(&c, "efo-split", lines(3), "0").await;
    let (_, last) = put(&c, "efo-split", lines(4), LAST_HASH).await;
    h.wait_counted(7).await;
    *h.parent.lock().unwrap_or_else(PoisonError::into_inner) =
        Some((parent.clone(), last.as_str().to_owned()));
    c.split_shard()
        .stream_name("efo-split")
        .shard_to_split(&parent)
        .new_starting_hash_key(MIDDLE_HASH)
        .send()
        .await
        .expect("split shard");
    wait_active(&c, "efo-split").await;
    let (low, _) = put(&c, "efo-split", lines(5), "0").await;
    let (high, _) = put(&c, "efo-split", lines(6), LAST_HASH).await;
    assert_ne!(low, parent);
    assert_ne!(high, low);
    h.wait_counted(7 + 5 + 6).await;
    stop(tx, task).await;

    let positions = h.store.load("efo-split").expect("load");
    assert_eq!(positions.get(&parent), Some(&Position::ShardEnd));
    assert_eq!(h.metric(&subscriptions("shard_end")), 1.0);
    let children = h
        .seen
        .child_after_parent_end
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(
        children,
        BTreeMap::from([(low.clone(), true), (high.clone(), true)]),
        "each child first subscribed after the parent's SHARD_END was saved"
    );
    // Learned from ChildShards: ListShards ran once, at start.
    assert_eq!(h.metric(&calls("list_shards", "ok")), 1.0);
}
