//! The Kinesis Data Streams consumer. It owns the shard DAG (which
//! shards are readable: a child only once its parents are at `SHARD_END`; children come from
//! ListShards or, sooner, from the parent's last response's `ChildShards`), one tokio task per
//! readable shard running the GetShardIterator/GetRecords loop (or, with `[kinesis] consumer`,
//! the enhanced fan-out subscription loop of [`super::fanout`]), and the shard's checkpoints.
//! Each GetRecords response becomes one `RawBatch` of records for the workers to decode
//! (several, cut between records, past `batch_bytes`), queued through the shard's event-time
//! partition, whose acknowledgement goes through the in-order commits of [`super::shard`]; released
//! positions are saved at most every `checkpoint_interval` per shard, always at shard end, and
//! at shutdown for all shards in one write, so a restart re-reads at most the batches in flight
//! plus one interval. A shard started at `LATEST` first saves the time it started, so a restart
//! before its first record does not skip what arrived meanwhile. The AWS calls sit behind the
//! thin [`KinesisApi`] seam (in [`super::shard`], with the steps both loops share) so tests can inject throttling the emulator never produces. Errors
//! that repeat while it retries are logged one line per kind per [`LOG_EVERY`], with a count of
//! those held back.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::checkpoint::{CheckpointError, CheckpointStore, Position};
use super::config::{InitialPosition, MIN_CALL_GAP, ValidKinesisConfig};
pub use super::error::ApiError;
use super::metrics::{
    ConsumerFault, FINISHED_SHARD_SERIES_TTL, KinesisMetrics, Operation, Renewal, ShardMetrics,
};
pub use super::sdk::SdkApi;
pub use super::shard::{
    ApiRecord, ConsumerStatus, IteratorStart, KinesisApi, RecordsPage, ShardEvent, ShardInfo,
    StreamConsumer, Subscription,
};
use super::shard::{
    Backoff, Ctx, Halt, MAX_BACKOFF, Released, ShardExit, THROTTLE_BACKOFF, count_outcome,
    end_shard, halted, save_if_due, sleep_or_stop, started_at_latest, submit_page, wait_stop,
};
use crate::decode::DecodeLimits;
use crate::input::PartitionSource;
use crate::input::aws::{ErrorLog, LOG_EVERY};

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

/// The wait that keeps `bytes` within a read rate of `per_sec`.
fn pause_for(bytes: usize, per_sec: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / per_sec.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::kinesis::checkpoint::SequenceNumber;

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
