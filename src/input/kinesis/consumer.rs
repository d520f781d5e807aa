//! The Kinesis Data Streams consumer. It owns the shard DAG (which
//! shards are readable: a child only once its parents are at `SHARD_END`; children come from
//! ListShards or, sooner, from the parent's last response's `ChildShards`), one tokio task per
//! readable shard running the GetShardIterator/GetRecords loop (or, with `[kinesis] consumer`,
//! the enhanced fan-out subscription loop of [`super::fanout`]), and the shard's checkpoints.
//! Each GetRecords response becomes one [`RawBatch`] of records for the workers to decode
//! (several, cut between records, past `batch_bytes`), queued through the shard's event-time
//! partition, whose acknowledgement goes through [`InOrderCommits`]; released
//! positions are saved at most every `checkpoint_interval` per shard, always at shard end, and
//! at shutdown for all shards in one write, so a restart re-reads at most the batches in flight
//! plus one interval. A shard started at `LATEST` first saves the time it started, so a restart
//! before its first record does not skip what arrived meanwhile. The AWS calls sit behind the
//! thin [`KinesisApi`] seam so tests can inject throttling the emulator never produces. Errors
//! that repeat while it retries are logged one line per kind per [`LOG_EVERY`], with a count of
//! those held back.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::checkpoint::{
    CheckpointError, CheckpointStore, InOrderCommits, Position, SaveOutcome, SequenceNumber,
};
use super::config::{InitialPosition, MIN_CALL_GAP, ValidKinesisConfig};
pub use super::error::ApiError;
use super::metrics::{
    ConsumerFault, FINISHED_SHARD_SERIES_TTL, KinesisMetrics, Operation, Renewal, ShardMetrics,
};
pub use super::sdk::SdkApi;
use crate::decode::DecodeLimits;
use crate::input::aws::{ErrorLog, LOG_EVERY};
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

/// Why the consumer stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("kinesis checkpoints: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// ListShards failed in a way retrying will not fix; the error names the stream.
    #[error("{0}")]
    Api(ApiError),
    #[error("kinesis shard {shard}: {message}")]
    Shard { shard: String, message: String },
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

/// Reads `cfg.stream` until `stop` turns true, then stops polling, waits for the batches in
/// flight and saves every shard's last position. Returns early only on an error that retrying
/// cannot fix (unreadable checkpoints, a missing stream, a permission problem).
pub async fn run<A: KinesisApi>(
    api: A,
    cfg: ValidKinesisConfig,
    store: Arc<dyn CheckpointStore>,
    partitions: PartitionSource,
    metrics: KinesisMetrics,
    limits: DecodeLimits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConsumerError> {
    let Some(stream) = cfg.stream.clone() else {
        return Ok(());
    };
    let mut loaded = {
        let store = Arc::clone(&store);
        let stream = stream.clone();
        tokio::task::spawn_blocking(move || store.load(&stream))
            .await
            .map_err(|e| ConsumerError::Shard {
                shard: "*".into(),
                message: format!("checkpoint load task: {e}"),
            })??
    };
    let ctx = Arc::new(Ctx {
        api,
        stream: stream.clone(),
        cfg,
        store,
        partitions,
        metrics,
        limits,
        errors: ErrorLog::new(LOG_EVERY),
    });
    // With enhanced fan-out the consumer is registered (or found) before any shard is read, so
    // a refusal no retry fixes (access denied) stops the input here with one line.
    if let Some(name) = ctx.cfg.consumer.clone() {
        match super::fanout::consumer_arn(&ctx, &name, &mut stop).await {
            Ok(_) => {}
            Err(Some(e)) => return Err(ConsumerError::Api(e)),
            Err(None) => return Ok(()),
        }
    }
    // Shards at ShardEnd, from the store or finished in this run.
    let mut ended: HashSet<String> = loaded
        .iter()
        .filter(|(_, p)| **p == Position::ShardEnd)
        .map(|(s, _)| s.clone())
        .collect();
    let mut reading: HashSet<String> = HashSet::new();
    let mut shards: Vec<ShardInfo> = Vec::new();
    // Children named by a parent's last GetRecords that ListShards has not shown yet.
    let mut learned: BTreeMap<String, ShardInfo> = BTreeMap::new();
    // Stopped shards' last positions, saved together once every task has stopped.
    let mut finals: Vec<(String, Position)> = Vec::new();
    let mut tasks: JoinSet<(String, ShardExit)> = JoinSet::new();
    let mut discovery = tokio::time::interval(ctx.cfg.shard_discovery);
    discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut list_backoff = Backoff::default();
    // Shards whose task ended, oldest first, until their counters are dropped.
    let mut finished: VecDeque<(tokio::time::Instant, String)> = VecDeque::new();
    let mut result = Ok(());
    // The shard tasks' own stop signal, so the loop can stop them on an error too.
    let (halt_tx, halt_rx) = watch::channel(false);

    loop {
        tokio::select! {
            _ = wait_stop(&mut stop) => break,
            _ = discovery.tick() => {
                let listing = tokio::select! {
                    listing = ctx.api.list_shards() => listing,
                    () = wait_stop(&mut stop) => break,
                };
                match listing {
                    Ok(list) => {
                        ctx.metrics.call(Operation::ListShards, Ok(()));
                        list_backoff.reset();
                        learned.retain(|id, _| {
                            !ended.contains(id) && !list.iter().any(|s| &s.id == id)
                        });
                        shards = list;
                        shards.extend(learned.values().cloned());
                    }
                    Err(e @ (ApiError::Fatal(_) | ApiError::NotFound(_))) => {
                        ctx.metrics.call(Operation::ListShards, Err(&e));
                        result = Err(ConsumerError::Api(e));
                        break;
                    }
                    Err(e) => {
                        ctx.metrics.call(Operation::ListShards, Err(&e));
                        ctx.log_failure("ListShards", &e);
                        // Retried on the next tick, or sooner when the backoff is shorter.
                        discovery.reset_after(list_backoff.next().min(ctx.cfg.shard_discovery));
                        continue;
                    }
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                match joined {
                    Ok((shard, exit)) => {
                        reading.remove(&shard);
                        if !matches!(exit, ShardExit::Stopped(_)) {
                            finished.push_back((tokio::time::Instant::now(), shard.clone()));
                        }
                        match exit {
                            ShardExit::Ended(children) => {
                                learned.remove(&shard);
                                ended.insert(shard);
                                if children.is_empty() {
                                    // Its children may be new: look now, not a period later.
                                    discovery.reset_immediately();
                                }
                                for child in children {
                                    if !shards.iter().any(|s| s.id == child.id) {
                                        shards.push(child.clone());
                                        learned.insert(child.id.clone(), child);
                                    }
                                }
                            }
                            ShardExit::Gone => {
                                learned.remove(&shard);
                                shards.retain(|s| s.id != shard);
                                // If ListShards shows it again it resumes from what this run
                                // saved, not from the positions loaded at start.
                                let store = Arc::clone(&ctx.store);
                                let stream = stream.clone();
                                if let Ok(Ok(now)) = tokio::task::spawn_blocking(move || store.load(&stream)).await {
                                    loaded = now;
                                }
                            }
                            // Only stopping (or a closed pipeline) stops a shard.
                            ShardExit::Stopped(last) => {
                                finals.extend(last.map(|p| (shard, p)));
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        result = Err(ConsumerError::Shard { shard: "?".into(), message: format!("task failed: {e}") });
                        break;
                    }
                }
            }
        }
        while let Some((at, shard)) = finished.front()
            && at.elapsed() >= FINISHED_SHARD_SERIES_TTL
        {
            // A shard read again since (it was gone and came back) keeps its series.
            if !reading.contains(shard) {
                ctx.metrics.forget_shard_counters(shard);
            }
            finished.pop_front();
        }
        let listed: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
        for shard in &shards {
            if ended.contains(&shard.id) || reading.contains(&shard.id) {
                continue;
            }
            let ready = parents_done(shard, &ended, &listed, &loaded);
            if !ready {
                continue;
            }
            let start = match loaded.get(&shard.id) {
                Some(Position::After(seq)) => IteratorStart::After(seq.clone()),
                Some(Position::AtTimestamp(ms)) => {
                    IteratorStart::Initial(InitialPosition::AtTimestamp(*ms as f64 / 1000.0))
                }
                Some(Position::ShardEnd) => continue,
                None => IteratorStart::Initial(initial_for_child(&ctx.cfg, shard)),
            };
            reading.insert(shard.id.clone());
            let ctx = Arc::clone(&ctx);
            let id = shard.id.clone();
            let stop = halt_rx.clone();
            tasks.spawn(async move {
                let series = ctx.metrics.shard_started(&id);
                let exit = read_shard(&ctx, &id, &series, start, stop).await;
                ctx.metrics.shard_stopped(&id);
                (id, exit)
            });
        }
    }

    // Whatever ended the loop (the caller's stop, an error, a closed pipeline), every shard
    // task stops polling and waits for its batches in flight; then their last positions are
    // saved in one durable write, which keeps shutdown inside its grace period however many
    // shards there are.
    let _ = halt_tx.send(true);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((shard, ShardExit::Stopped(Some(position)))) => finals.push((shard, position)),
            Ok(_) => {}
            Err(e) if !e.is_cancelled() => eprintln!("albwatch: kinesis shard task failed: {e}"),
            Err(_) => {}
        }
    }
    save_all(&ctx, finals).await;
    result
}

/// Saves the stopped shards' last positions with one [`CheckpointStore::save_many`].
pub(super) async fn save_all<A: KinesisApi>(ctx: &Ctx<A>, positions: Vec<(String, Position)>) {
    if positions.is_empty() {
        return;
    }
    let store = Arc::clone(&ctx.store);
    let stream = ctx.stream.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let refs: Vec<(&str, &Position)> = positions.iter().map(|(s, p)| (s.as_str(), p)).collect();
        let outcomes = store.save_many(&stream, &refs);
        (positions, outcomes)
    })
    .await;
    match saved {
        Ok((positions, Ok(outcomes))) => {
            for ((shard, _), outcome) in positions.iter().zip(outcomes) {
                count_outcome(ctx, shard, outcome);
            }
        }
        Ok((_, Err(e))) => {
            ctx.metrics.fault(ConsumerFault::CheckpointWrite);
            eprintln!("albwatch: kinesis final checkpoints: {e}");
        }
        Err(e) => {
            ctx.metrics.fault(ConsumerFault::CheckpointWrite);
            eprintln!("albwatch: kinesis final checkpoints: task: {e}");
        }
    }
}

/// Counts one save's outcome.
fn count_outcome<A: KinesisApi>(ctx: &Ctx<A>, shard: &str, outcome: SaveOutcome) {
    match outcome {
        SaveOutcome::Advanced => ctx.metrics.checkpoint_written(shard),
        SaveOutcome::Unchanged => {}
        SaveOutcome::Stale { stored } => {
            ctx.metrics.fault(ConsumerFault::StaleCheckpoint);
            eprintln!("albwatch: kinesis {shard}: checkpoint behind the stored {stored:?}");
        }
    }
}

/// Whether `shard` may be read: each parent is at ShardEnd, or is no longer listed (expired
/// past retention) and was never checkpointed by us, so nothing of it is left to read. A parent
/// that is unlisted but has a non-final checkpoint keeps blocking: its unread tail may only be
/// missing from a partial listing, and reading the child first would break per-key order.
fn parents_done(
    shard: &ShardInfo,
    ended: &HashSet<String>,
    listed: &HashSet<&str>,
    loaded: &BTreeMap<String, Position>,
) -> bool {
    [&shard.parent, &shard.adjacent_parent]
        .into_iter()
        .flatten()
        .all(|p| ended.contains(p) || (!listed.contains(p.as_str()) && !loaded.contains_key(p)))
}

/// A child shard found after the consumer started holds only data written after its parents
/// closed; reading it from LATEST would skip what arrived between the split and our discovery.
/// So a shard with a parent starts at TRIM_HORIZON unless AT_TIMESTAMP was asked for.
pub(super) fn initial_for_child(cfg: &ValidKinesisConfig, shard: &ShardInfo) -> InitialPosition {
    match cfg.initial {
        InitialPosition::Latest if shard.parent.is_some() || shard.adjacent_parent.is_some() => {
            InitialPosition::TrimHorizon
        }
        other => other,
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

/// Reads one shard from `start` until it ends or `stop` turns true.
pub(super) async fn read_shard<A: KinesisApi>(
    ctx: &Ctx<A>,
    shard: &str,
    series: &ShardMetrics,
    start: IteratorStart,
    mut stop: watch::Receiver<bool>,
) -> ShardExit {
    if let Some(name) = ctx.cfg.consumer.clone() {
        return super::fanout::read_shard(ctx, shard, series, start, stop, &name).await;
    }
    let released = Arc::new(Released::default());
    let mut backoff = Backoff::default();
    // The newest record handed to the pipeline: an expired iterator is renewed after it, not
    // after the last checkpoint, because every record up to it is already queued with an ack.
    let mut resume = start;
    let mut latest_started = started_at_latest(ctx, shard, &resume).await;
    let mut iterator: Option<String> = None;
    let mut last_save = Instant::now();
    let mut last_call: Option<tokio::time::Instant> = None;
    // How long the last response's size asks the next call to wait (the 2 MB/s share).
    let mut read_pause = Duration::ZERO;
    let stopped = |rx: &watch::Receiver<bool>| *rx.borrow();

    let halt = loop {
        if stopped(&stop) {
            break Halt::Stopped;
        }
        save_if_due(ctx, shard, &released, &mut last_save).await;
        let it = match &iterator {
            Some(it) => it.clone(),
            None => {
                let opened = tokio::select! {
                    opened = ctx.api.get_shard_iterator(shard, &resume) => opened,
                    () = wait_stop(&mut stop) => break Halt::Stopped,
                };
                match opened {
                    Ok(it) => {
                        ctx.metrics.call(Operation::GetShardIterator, Ok(()));
                        // Opened at LATEST once; a renewal before the first record goes back
                        // to the time reading began, not to a later LATEST.
                        if let Some(started) = latest_started.take() {
                            resume = IteratorStart::Initial(InitialPosition::AtTimestamp(
                                started as f64 / 1000.0,
                            ));
                        }
                        iterator = Some(it.clone());
                        it
                    }
                    Err(e) => {
                        ctx.metrics.call(Operation::GetShardIterator, Err(&e));
                        match e {
                            ApiError::NotFound(_) => break Halt::Gone,
                            ApiError::Fatal(_) => {
                                ctx.log_failure(&format!("{shard} GetShardIterator"), &e);
                                break Halt::Gone;
                            }
                            _ => {
                                ctx.log_failure(&format!("{shard} GetShardIterator"), &e);
                                if sleep_or_stop(backoff.next(), &mut stop).await {
                                    break Halt::Stopped;
                                }
                                continue;
                            }
                        }
                    }
                }
            }
        };
        // Never more than 5 calls per second on one shard, nor more bytes on average than its
        // read share: staying under both is what keeps throttles away.
        if let Some(at) = last_call {
            let gap = at + MIN_CALL_GAP.max(read_pause);
            if gap > tokio::time::Instant::now()
                && sleep_or_stop(gap - tokio::time::Instant::now(), &mut stop).await
            {
                break Halt::Stopped;
            }
        }
        last_call = Some(tokio::time::Instant::now());
        // Raced against stopping: a response never read is never acknowledged, so dropping
        // the call loses nothing.
        let called = tokio::select! {
            called = ctx.api.get_records(&it, ctx.cfg.max_records_per_call) => called,
            () = wait_stop(&mut stop) => break Halt::Stopped,
        };
        let page = match called {
            Ok(page) => {
                ctx.metrics.call(Operation::GetRecords, Ok(()));
                page
            }
            Err(e) => {
                ctx.metrics.call(Operation::GetRecords, Err(&e));
                if !matches!(e, ApiError::NotFound(_)) {
                    ctx.log_failure(&format!("{shard} GetRecords"), &e);
                }
                let wait = match e {
                    ApiError::ExpiredIterator => {
                        ctx.metrics.iterator_renewed(Renewal::Expired);
                        iterator = None;
                        Duration::ZERO
                    }
                    ApiError::Throttled(_) => backoff.next().max(THROTTLE_BACKOFF),
                    ApiError::NotFound(_) => break Halt::Gone,
                    ApiError::Transient(_) => backoff.next(),
                    ApiError::Fatal(_) => {
                        // A bad iterator is renewed; anything else waits at the longest backoff.
                        ctx.metrics.iterator_renewed(Renewal::Rejected);
                        iterator = None;
                        MAX_BACKOFF
                    }
                };
                if sleep_or_stop(wait, &mut stop).await {
                    break Halt::Stopped;
                }
                continue;
            }
        };
        backoff.reset();
        let page_bytes: usize = page.records.iter().map(|r| r.data.len()).sum();
        read_pause = pause_for(page_bytes, ctx.cfg.read_bytes_per_sec);
        if let Some(ms) = page.millis_behind_latest {
            series.lag_seconds.set(ms as f64 / 1000.0);
        }
        let got_records = !page.records.is_empty();
        if got_records {
            match submit_page(ctx, shard, series, &released, page.records).await {
                Ok(last) => resume = IteratorStart::After(last),
                Err(halt) => break halt,
            }
        }
        match page.next_iterator {
            Some(next) => iterator = Some(next),
            None => match end_shard(ctx, shard, &released, &mut backoff, &mut stop).await {
                Some(exit) => return exit.with_children(page.child_shards),
                None => break Halt::Stopped,
            },
        }
        // Adaptive polling: straight on while records flow, the full interval when idle.
        if !got_records && sleep_or_stop(ctx.cfg.poll_interval, &mut stop).await {
            break Halt::Stopped;
        }
    };
    halted(ctx, shard, &released, halt).await
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

/// The wait that keeps `bytes` within a read rate of `per_sec`.
fn pause_for(bytes: usize, per_sec: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / per_sec.max(1) as f64)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parent: parent.map(Into::into),
            adjacent_parent: adjacent.map(Into::into),
        }
    }

    fn seq(s: &str) -> Position {
        Position::After(SequenceNumber::parse(s).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn a_merge_child_waits_for_both_parents() {
        let child = shard("c", Some("a"), Some("b"));
        let listed: HashSet<&str> = ["a", "b", "c"].into();
        let loaded = BTreeMap::new();
        let mut ended = HashSet::new();
        assert!(!parents_done(&child, &ended, &listed, &loaded));
        ended.insert("a".to_string());
        assert!(!parents_done(&child, &ended, &listed, &loaded));
        ended.insert("b".to_string());
        assert!(parents_done(&child, &ended, &listed, &loaded));
    }

    #[test]
    fn an_expired_parent_never_read_does_not_block() {
        let child = shard("c", Some("gone"), None);
        let listed: HashSet<&str> = ["c"].into();
        let ended = HashSet::new();
        assert!(parents_done(&child, &ended, &listed, &BTreeMap::new()));
        // Read part-way by us and now unlisted: keep waiting rather than break the order.
        let loaded = BTreeMap::from([("gone".to_string(), seq("7"))]);
        assert!(!parents_done(&child, &ended, &listed, &loaded));
    }

    #[test]
    fn shards_without_parents_are_ready() {
        let root = shard("r", None, None);
        assert!(parents_done(
            &root,
            &HashSet::new(),
            &HashSet::new(),
            &BTreeMap::new()
        ));
    }

    #[test]
    fn children_found_later_start_at_the_trim_horizon_under_latest() {
        let cfg = ValidKinesisConfig::default();
        assert_eq!(cfg.initial, InitialPosition::Latest);
        assert_eq!(
            initial_for_child(&cfg, &shard("c", Some("p"), None)),
            InitialPosition::TrimHorizon
        );
        assert_eq!(
            initial_for_child(&cfg, &shard("r", None, None)),
            InitialPosition::Latest
        );
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let mut b = Backoff::default();
        let first = b.next();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
        for _ in 0..20 {
            assert!(b.next() <= MAX_BACKOFF);
        }
        assert!(b.next() >= MAX_BACKOFF / 2);
        b.reset();
        assert!(b.next() <= Duration::from_millis(200));
    }

    #[test]
    fn large_responses_slow_the_next_call_to_the_read_share() {
        assert_eq!(pause_for(0, 2_000_000), Duration::ZERO);
        // Small pages: the 5 calls/s limit is the one that binds.
        assert!(pause_for(100_000, 2_000_000) < MIN_CALL_GAP);
        // A 10 MB page at 2 MB/s: 5 s, which is also what AWS asks after a 10 MiB response.
        assert_eq!(pause_for(10_000_000, 2_000_000), Duration::from_secs(5));
        assert_eq!(pause_for(1_000_000, 1_000_000), Duration::from_secs(1));
    }

    #[test]
    fn error_kinds_are_the_documented_label_values() {
        let line = |fault| crate::input::aws::AwsError::new(fault, "");
        use crate::input::aws::Fault;
        assert_eq!(
            ApiError::Throttled(line(Fault::Throttled)).kind(),
            "throttled"
        );
        assert_eq!(ApiError::ExpiredIterator.kind(), "expired_iterator");
        assert_eq!(
            ApiError::NotFound(line(Fault::NotFound)).kind(),
            "not_found"
        );
        assert_eq!(
            ApiError::Transient(line(Fault::Network)).kind(),
            "transient"
        );
        assert_eq!(ApiError::Fatal(line(Fault::AccessDenied)).kind(), "fatal");
    }
}
