//! What reading one shard takes, whichever way it is read: the Kinesis calls behind the thin
//! [`KinesisApi`] seam (so tests can inject throttling the emulator never produces) and the
//! types they trade in; the context every shard task shares ([`Ctx`]); and the steps both the
//! polling loop (`consumer`) and the enhanced fan-out loop (`fanout`) take: queueing a page of
//! records as acknowledged batches, the in-order release of acknowledged positions
//! ([`Released`]), periodic and final checkpoints, the start at LATEST, the shard's end and a
//! halt, backoff and waiting on the stop signal. The loops and the consumer that runs them
//! build on this module; it builds on neither.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::checkpoint::{CheckpointStore, InOrderCommits, Position, SaveOutcome, SequenceNumber};
use super::config::{InitialPosition, ValidKinesisConfig};
use super::error::ApiError;
use super::metrics::{ConsumerFault, KinesisMetrics, ShardMetrics};
use crate::decode::DecodeLimits;
use crate::input::aws::ErrorLog;
use crate::input::{PartitionSource, RecordBatcher};
use crate::pipeline::RawBatch;

/// Longest backoff after repeated throttling or transient errors.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// After a throttle AWS asks for at least a second.
pub(super) const THROTTLE_BACKOFF: Duration = Duration::from_secs(1);

/// How long a stopping shard waits for its batches in flight before saving what it has:
/// under the app's 10 s grace period, so the final save still fits inside it.
pub(super) const ACK_WAIT: Duration = Duration::from_secs(8);

/// At shard end the children wait for ShardEnd, so the acks are waited for much longer.
const SHARD_END_ACK_WAIT: Duration = Duration::from_secs(3600);

/// A shard as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    pub parent: Option<String>,
    pub adjacent_parent: Option<String>,
}

/// Where to open a shard iterator.
#[derive(Debug, Clone, PartialEq)]
pub enum IteratorStart {
    After(SequenceNumber),
    Initial(InitialPosition),
}

/// One record as the consumer needs it.
#[derive(Debug, Clone)]
pub struct ApiRecord {
    pub sequence_number: String,
    pub data: Vec<u8>,
}

/// One GetRecords response.
#[derive(Debug, Clone, Default)]
pub struct RecordsPage {
    pub records: Vec<ApiRecord>,
    /// `None` = the shard is closed and read to its end.
    pub next_iterator: Option<String>,
    pub millis_behind_latest: Option<i64>,
    /// At shard end, the shards that continue it (`ChildShards`), so they can start without
    /// waiting for a ListShards that shows them.
    pub child_shards: Vec<ShardInfo>,
}

/// A registered stream consumer (enhanced fan-out), as DescribeStreamConsumer or
/// RegisterStreamConsumer describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConsumer {
    pub arn: String,
    pub status: ConsumerStatus,
}

/// A stream consumer's `ConsumerStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerStatus {
    Creating,
    Active,
    Deleting,
}

/// One `SubscribeToShardEvent`.
#[derive(Debug, Clone, Default)]
pub struct ShardEvent {
    pub records: Vec<ApiRecord>,
    /// Where the next subscription continues (`ContinuationSequenceNumber`); `None` = the shard
    /// is closed and this was its last event.
    pub continuation: Option<String>,
    pub millis_behind_latest: Option<i64>,
    /// At shard end, the shards that continue it.
    pub child_shards: Vec<ShardInfo>,
}

/// An open SubscribeToShard event stream: its events in order until it ends (`None`, the
/// service's 5-minute limit or a closed connection) or fails. Dropping it closes the
/// subscription; events not yet taken are never acknowledged, so nothing is lost.
pub struct Subscription {
    events: tokio::sync::mpsc::Receiver<Result<ShardEvent, ApiError>>,
}

impl Subscription {
    /// A subscription fed through the returned sender (the SDK's event stream, or a test's);
    /// `capacity` events may wait in it, past that the sender waits, which is backpressure.
    pub fn channel(
        capacity: usize,
    ) -> (
        tokio::sync::mpsc::Sender<Result<ShardEvent, ApiError>>,
        Subscription,
    ) {
        let (tx, events) = tokio::sync::mpsc::channel(capacity.max(1));
        (tx, Subscription { events })
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<ShardEvent, ApiError>> {
        self.events.recv().await
    }
}

/// What a fan-out call answers on an API that has none (a test double of the polling calls).
fn not_supported(operation: &str) -> ApiError {
    use crate::input::aws::{AwsError, Fault};
    ApiError::Fatal(AwsError::new(
        Fault::Request,
        format!("{operation} is not supported by this Kinesis API"),
    ))
}

/// The Kinesis calls the consumer makes; [`SdkApi`] is the real one. The last three are
/// enhanced fan-out's (`[kinesis] consumer`); an API without them answers them with an error.
pub trait KinesisApi: Send + Sync + 'static {
    /// Every shard of the stream, all pages.
    fn list_shards(&self) -> impl Future<Output = Result<Vec<ShardInfo>, ApiError>> + Send;
    fn get_shard_iterator(
        &self,
        shard: &str,
        start: &IteratorStart,
    ) -> impl Future<Output = Result<String, ApiError>> + Send;
    fn get_records(
        &self,
        iterator: &str,
        limit: i32,
    ) -> impl Future<Output = Result<RecordsPage, ApiError>> + Send;
    /// DescribeStreamConsumer of the stream's consumer `name`; `NotFound` if it is not
    /// registered.
    fn describe_consumer(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<StreamConsumer, ApiError>> + Send {
        let _ = name;
        async { Err(not_supported("DescribeStreamConsumer")) }
    }
    /// RegisterStreamConsumer `name` on the stream (usually answered `Creating`).
    fn register_consumer(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<StreamConsumer, ApiError>> + Send {
        let _ = name;
        async { Err(not_supported("RegisterStreamConsumer")) }
    }
    /// SubscribeToShard: `shard` through the consumer `consumer_arn`, from `start`.
    fn subscribe(
        &self,
        consumer_arn: &str,
        shard: &str,
        start: &IteratorStart,
    ) -> impl Future<Output = Result<Subscription, ApiError>> + Send {
        let _ = (consumer_arn, shard, start);
        async { Err(not_supported("SubscribeToShard")) }
    }
}

/// Everything a shard task shares with the others.
pub(super) struct Ctx<A> {
    pub(super) api: A,
    pub(super) stream: String,
    pub(super) cfg: ValidKinesisConfig,
    pub(super) store: Arc<dyn CheckpointStore>,
    /// One event-time partition per shard.
    pub(super) partitions: PartitionSource,
    pub(super) metrics: KinesisMetrics,
    pub(super) limits: DecodeLimits,
    /// Shared by every shard: an outage that fails them all is one line per interval.
    pub(super) errors: ErrorLog,
}

impl<A> Ctx<A> {
    /// Logs a failed call `what` (e.g. `ListShards`, `shardId-… GetRecords`), rate-limited
    /// per kind; an expired iterator is routine and not logged.
    pub(super) fn log_failure(&self, what: &str, e: &ApiError) {
        if let Some(fault) = e.fault() {
            self.errors
                .write(fault, || format!("albwatch: kinesis {what}: {e}"));
        }
    }
}

/// How a shard task ended.
pub(super) enum ShardExit {
    /// Read to its end and `ShardEnd` saved: its children may start. They are the
    /// `ChildShards` of the last response, or empty when it named none (ListShards finds them).
    Ended(Vec<ShardInfo>),
    /// Told to stop (or the pipeline closed), with its newest released position not yet
    /// saved: [`run`] saves every stopped shard's in one write.
    Stopped(Option<Position>),
    /// The shard is gone (past retention); dropped from the DAG until ListShards shows it.
    Gone,
}

/// Why a shard's reading loop stopped before the shard ended.
pub(super) enum Halt {
    Stopped,
    Gone,
}

/// Counts one save's outcome.
pub(super) fn count_outcome<A: KinesisApi>(ctx: &Ctx<A>, shard: &str, outcome: SaveOutcome) {
    match outcome {
        SaveOutcome::Advanced => ctx.metrics.checkpoint_written(shard),
        SaveOutcome::Unchanged => {}
        SaveOutcome::Stale { stored } => {
            ctx.metrics.fault(ConsumerFault::StaleCheckpoint);
            eprintln!("albwatch: kinesis {shard}: checkpoint behind the stored {stored:?}");
        }
    }
}

/// Exponential backoff with full jitter, 100 ms doubling up to [`MAX_BACKOFF`].
#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    pub(super) fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let cap = Duration::from_millis(100)
            .saturating_mul(1u32 << self.failures.min(9))
            .min(MAX_BACKOFF);
        // Jitter from the clock's sub-second nanos: enough to de-synchronise shards without
        // pulling in a random number generator.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        cap.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
    }

    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Acknowledged positions waiting to be saved, shared with the pipeline's ack closures.
#[derive(Default)]
pub(super) struct Released {
    commits: Mutex<InOrderCommits>,
    /// The newest released position not yet saved.
    unsaved: Mutex<Option<Position>>,
    changed: Notify,
}

impl Released {
    fn ack(&self, batch: super::checkpoint::BatchNo) {
        let released = self
            .commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ack(batch);
        match released {
            Ok(Some(position)) => {
                *self.unsaved.lock().unwrap_or_else(PoisonError::into_inner) = Some(position);
            }
            Ok(None) => {}
            Err(e) => eprintln!("albwatch: kinesis commit bookkeeping: {e}"),
        }
        self.changed.notify_one();
    }

    fn take_unsaved(&self) -> Option<Position> {
        self.unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn in_flight(&self) -> usize {
        self.commits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .in_flight()
    }
}

/// Saves `position` for `shard` off the async threads; true if it is durable (or already was).
pub(super) async fn save<A: KinesisApi>(ctx: &Ctx<A>, shard: &str, position: Position) -> bool {
    let store = Arc::clone(&ctx.store);
    let stream = ctx.stream.clone();
    let shard_id = shard.to_owned();
    let saved =
        tokio::task::spawn_blocking(move || store.save(&stream, &shard_id, &position)).await;
    match saved {
        Ok(Ok(outcome)) => {
            count_outcome(ctx, shard, outcome);
            true
        }
        Ok(Err(e)) => {
            ctx.metrics.fault(ConsumerFault::CheckpointWrite);
            eprintln!("albwatch: kinesis {shard}: {e}");
            false
        }
        Err(e) => {
            ctx.metrics.fault(ConsumerFault::CheckpointWrite);
            eprintln!("albwatch: kinesis {shard}: checkpoint task: {e}");
            false
        }
    }
}

/// Waits until every batch in flight is acknowledged, or `limit` passes.
pub(super) async fn wait_for_acks(released: &Released, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let notified = released.changed.notified();
        if released.in_flight() == 0 {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return released.in_flight() == 0;
        }
    }
}

/// LATEST names no record, so until the first one is processed the checkpoint is the time
/// reading began: a restart resumes there (AT_TIMESTAMP) rather than at a later LATEST that
/// would skip what arrived while albwatch was down. Taken before the iterator (or subscription)
/// is opened, so it can only re-read, never skip (up to the host clock's lead on AWS's). A
/// failed save is counted and reading goes on, no worse off than without it. Returns the time
/// saved when `start` is LATEST.
pub(super) async fn started_at_latest<A: KinesisApi>(
    ctx: &Ctx<A>,
    shard: &str,
    start: &IteratorStart,
) -> Option<u64> {
    if *start != IteratorStart::Initial(InitialPosition::Latest) {
        return None;
    }
    let started = unix_millis();
    save(ctx, shard, Position::AtTimestamp(started)).await;
    Some(started)
}

/// Periodic checkpoint of what the pipeline has finished, once `checkpoint_interval` has
/// passed since `last_save`.
pub(super) async fn save_if_due<A: KinesisApi>(
    ctx: &Ctx<A>,
    shard: &str,
    released: &Released,
    last_save: &mut Instant,
) {
    if last_save.elapsed() < ctx.cfg.checkpoint_interval {
        return;
    }
    if let Some(position) = released.take_unsaved()
        && !save(ctx, shard, position.clone()).await
    {
        // Keep it for the next attempt rather than lose it.
        let mut unsaved = released
            .unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if unsaved.is_none() {
            *unsaved = Some(position);
        }
    }
    *last_save = Instant::now();
}

/// The shard is closed and read to its end: waits for the pipeline, then saves ShardEnd.
/// Returns [`ShardExit::Ended`] without children (the caller adds them), a `Stopped` one if
/// told to stop while ShardEnd would not save, or `None` if told to stop while batches were
/// still in flight (the caller then stops as usual).
pub(super) async fn end_shard<A: KinesisApi>(
    ctx: &Ctx<A>,
    shard: &str,
    released: &Released,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Option<ShardExit> {
    let now = released
        .commits
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .finish();
    if let Some(p) = now {
        *released
            .unsaved
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(p);
    }
    if !wait_for_acks(released, SHARD_END_ACK_WAIT).await {
        return None;
    }
    // Every batch is acknowledged and the shard finished, so ShardEnd supersedes any unsaved
    // position. Retried until durable: the children wait for it.
    let _ = released.take_unsaved();
    // Every line of the shard is counted: it stops holding the watermark back.
    ctx.partitions.finish(shard);
    loop {
        if save(ctx, shard, Position::ShardEnd).await {
            return Some(ShardExit::Ended(Vec::new()));
        }
        if sleep_or_stop(backoff.next(), stop).await {
            return Some(ShardExit::Stopped(Some(Position::ShardEnd)));
        }
    }
}

impl ShardExit {
    /// An `Ended` exit naming `children`; any other unchanged.
    pub(super) fn with_children(self, children: Vec<ShardInfo>) -> ShardExit {
        match self {
            ShardExit::Ended(_) => ShardExit::Ended(children),
            other => other,
        }
    }
}

/// A shard's reading loop stopped before the shard ended. The pipeline is still running (the
/// app stops inputs before the pool), so the batches in flight come back. A stopping shard
/// hands its newest released position to `run`, which saves all shards' at once; a gone one
/// saves its own, since the others read on.
pub(super) async fn halted<A: KinesisApi>(
    ctx: &Ctx<A>,
    shard: &str,
    released: &Released,
    halt: Halt,
) -> ShardExit {
    wait_for_acks(released, ACK_WAIT).await;
    let last = released.take_unsaved();
    match halt {
        Halt::Stopped => ShardExit::Stopped(last),
        Halt::Gone => {
            ctx.partitions.finish(shard);
            if let Some(position) = last {
                save(ctx, shard, position).await;
            }
            ShardExit::Gone
        }
    }
}

/// Now as Unix milliseconds; a clock before 1970 reads 0, which resumes at the oldest record
/// (duplicates, never a gap).
pub(super) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Cuts one page into batches of about `batch_bytes` of records (as stored), cut between
/// records so each batch's last sequence number covers only records it holds whole,
/// registers each with the shard's commits and queues it; the workers decode the records.
/// Returns the last sequence number queued.
pub(super) async fn submit_page<A: KinesisApi>(
    ctx: &Ctx<A>,
    shard: &str,
    series: &ShardMetrics,
    released: &Arc<Released>,
    records: Vec<ApiRecord>,
) -> Result<SequenceNumber, Halt> {
    let mut batcher = RecordBatcher::new(ctx.cfg.batch_bytes, ctx.limits);
    let mut last: Option<SequenceNumber> = None;
    let mut queued = None;
    series.records.inc_by(records.len() as u64);
    let count = records.len();
    for (i, record) in records.iter().enumerate() {
        series.bytes.inc_by(record.data.len() as u64);
        // A record that will not decode is counted by the worker and skipped; its sequence
        // number still moves the checkpoint, since re-reading it would fail the same way.
        batcher.push(&record.data);
        match SequenceNumber::parse(&record.sequence_number) {
            Ok(seq) => last = Some(seq),
            Err(e) => {
                ctx.metrics.fault(ConsumerFault::BadSequenceNumber);
                eprintln!("albwatch: kinesis {shard}: bad sequence number: {e}");
            }
        }
        // Bounds what one batch holds however large the page (up to 10,000 records).
        if (batcher.is_full() || i + 1 == count)
            && let Some(seq) = last.take()
            && let Some(batch) = batcher.take()
        {
            submit_batch(ctx, shard, series, released, batch, seq.clone()).await?;
            queued = Some(seq);
        }
    }
    queued.ok_or(Halt::Gone)
}

/// Registers one batch ending at record `last` and queues it; once counted, its decode
/// counts go to the metrics and its position to the shard's commits.
async fn submit_batch<A: KinesisApi>(
    ctx: &Ctx<A>,
    shard: &str,
    series: &ShardMetrics,
    released: &Arc<Released>,
    mut raw: RawBatch,
    last: SequenceNumber,
) -> Result<(), Halt> {
    let batch = released
        .commits
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .sent(last);
    let batch = match batch {
        Ok(b) => b,
        Err(e) => {
            eprintln!("albwatch: kinesis {shard}: {e}");
            return Err(Halt::Gone);
        }
    };
    let acked = Arc::clone(released);
    let metrics = ctx.metrics.clone();
    let lines = series.lines.clone();
    raw.ack = Some(Box::new(move |outcome| {
        metrics.decoded(&outcome.decoded);
        lines.inc_by(outcome.decoded.total_lines());
        acked.ack(batch);
    }));
    let partition = ctx.partitions.get(shard);
    // The queue is bounded and `submit` blocks while it is full: that is the backpressure
    // that slows polling down, kept off the async threads.
    match tokio::task::spawn_blocking(move || partition.submit(raw)).await {
        Ok(Ok(())) => {
            ctx.metrics.batch_submitted();
            Ok(())
        }
        _ => Err(Halt::Stopped),
    }
}

/// Sleeps for `d`; true if `stop` turned true first.
pub(super) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = wait_stop(stop) => true,
    };
    stopped || *stop.borrow()
}

/// Resolves once `stop` is true (or its sender is gone). Returns nothing, so no `watch::Ref`
/// lives in a `select!` output across an await, which would make the future `!Send`.
pub(super) async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
