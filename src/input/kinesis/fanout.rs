//! Enhanced fan-out (`[kinesis] consumer = "name"`): each shard this instance reads (every
//! shard alone, or its leased ones in a fleet) is read through SubscribeToShard instead of
//! GetRecords. The stream consumer is looked up and registered if missing, then waited for
//! until ACTIVE; its ARN is kept per stream and name for the process, so the shard tasks ask
//! once between them. A subscription pushes `SubscribeToShardEvent`s; their records go to the
//! pipeline exactly as a GetRecords page's do (the same batches, acknowledgements and
//! checkpoints, so leases and restarts behave the same), and each event's continuation
//! sequence number is where the next subscription starts (AFTER_SEQUENCE_NUMBER). A
//! subscription is read for `resubscribe_after` (under the service's 5 minutes) or until the
//! service ends it, then another is opened from there; a failed one is opened again after a
//! backoff, as is a `ResourceInUseException` (the previous subscription still open). A closed
//! shard's last event has no continuation and names its `ChildShards`: the shard ends exactly as
//! in the polling loop. Backpressure is the pipeline's: while a batch waits for room in the
//! queue the next event is not read, and the connection holds the rest.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::checkpoint::SequenceNumber;
use super::config::InitialPosition;
use super::error::ApiError;
use super::metrics::{ConsumerFault, Operation, ShardMetrics, SubscriptionEnd};
use super::shard::{
    Backoff, ConsumerStatus, Ctx, Halt, IteratorStart, KinesisApi, Released, ShardExit,
    THROTTLE_BACKOFF, end_shard, halted, save_if_due, sleep_or_stop, started_at_latest,
    submit_page, wait_stop,
};

/// How often a consumer being created (or deleted, before it is registered again) is looked
/// at: DescribeStreamConsumer allows 20 calls per second per stream, shared by the shards.
const CONSUMER_POLL: Duration = Duration::from_secs(1);

/// A consumer's ARN once it is ACTIVE, per (stream, consumer name); the async lock makes the
/// shard tasks that start together wait for one lookup instead of each registering.
type ArnCell = Arc<tokio::sync::Mutex<Option<String>>>;
static CONSUMER_ARNS: LazyLock<Mutex<HashMap<(String, String), ArnCell>>> =
    LazyLock::new(Mutex::default);

fn arn_cell<A>(ctx: &Ctx<A>, name: &str) -> ArnCell {
    let mut cells = CONSUMER_ARNS.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(
        cells
            .entry((ctx.stream.clone(), name.to_owned()))
            .or_default(),
    )
}

/// Forgets `arn` as the consumer `name`'s (SubscribeToShard said it is not found: deregistered,
/// or the stream made again), so the next subscription looks it up again.
async fn forget_consumer<A>(ctx: &Ctx<A>, name: &str, arn: &str) {
    let cell = arn_cell(ctx, name);
    let mut known = cell.lock().await;
    if known.as_deref() == Some(arn) {
        *known = None;
    }
}

/// The ARN of the stream's consumer `name` once it is ACTIVE: DescribeStreamConsumer, and
/// RegisterStreamConsumer when it is not found; retried while the failures may pass. `Err(None)`
/// = told to stop; `Err(Some(e))` = a failure no retry fixes (access denied, no such stream).
pub(super) async fn consumer_arn<A: KinesisApi>(
    ctx: &Ctx<A>,
    name: &str,
    stop: &mut watch::Receiver<bool>,
) -> Result<String, Option<ApiError>> {
    let cell = arn_cell(ctx, name);
    let mut known = tokio::select! {
        known = cell.lock() => known,
        () = wait_stop(stop) => return Err(None),
    };
    if let Some(arn) = known.as_ref() {
        return Ok(arn.clone());
    }
    let mut backoff = Backoff::default();
    loop {
        let described = tokio::select! {
            described = ctx.api.describe_consumer(name) => described,
            () = wait_stop(stop) => return Err(None),
        };
        ctx.metrics.call(
            Operation::DescribeStreamConsumer,
            described.as_ref().map(|_| ()),
        );
        let failed = match described {
            Ok(c) if c.status == ConsumerStatus::Active => {
                *known = Some(c.arn.clone());
                return Ok(c.arn);
            }
            // Being created, or being deleted (then registered again once it is gone).
            Ok(_) => None,
            Err(ApiError::NotFound(_)) => {
                let registered = tokio::select! {
                    registered = ctx.api.register_consumer(name) => registered,
                    () = wait_stop(stop) => return Err(None),
                };
                ctx.metrics.call(
                    Operation::RegisterStreamConsumer,
                    registered.as_ref().map(|_| ()),
                );
                match registered {
                    Ok(c) if c.status == ConsumerStatus::Active => {
                        *known = Some(c.arn.clone());
                        return Ok(c.arn);
                    }
                    Ok(_) => None,
                    // Registered meanwhile by another instance (`ResourceInUseException`), or
                    // a failure that may pass: look again after the backoff.
                    Err(e) => Some(("RegisterStreamConsumer", e)),
                }
            }
            Err(e) => Some(("DescribeStreamConsumer", e)),
        };
        let wait = match failed {
            None => {
                backoff.reset();
                CONSUMER_POLL
            }
            Some((_, e @ (ApiError::Fatal(_) | ApiError::NotFound(_)))) => return Err(Some(e)),
            Some((call, e)) => {
                ctx.log_failure(&format!("consumer {name} {call}"), &e);
                match e {
                    ApiError::Throttled(_) => backoff.next().max(THROTTLE_BACKOFF),
                    _ => backoff.next(),
                }
            }
        };
        if sleep_or_stop(wait, stop).await {
            return Err(None);
        }
    }
}

/// Reads one shard from `start` through subscriptions of the consumer `name` until it ends
/// or `stop` turns true; the fan-out counterpart of the polling loop, with the same exits.
pub(super) async fn read_shard<A: KinesisApi>(
    ctx: &Ctx<A>,
    shard: &str,
    series: &ShardMetrics,
    start: IteratorStart,
    mut stop: watch::Receiver<bool>,
    name: &str,
) -> ShardExit {
    let released = Arc::new(Released::default());
    let mut backoff = Backoff::default();
    // Where the next subscription starts: the last continuation sequence number (or the newest
    // record handed to the pipeline), every record up to it already queued with an ack.
    let mut resume = start;
    let mut latest_started = started_at_latest(ctx, shard, &resume).await;
    let mut last_save = Instant::now();
    // SubscribeToShard answers `ResourceNotFoundException` for a consumer that is gone as for a
    // shard that is: the first time the consumer is looked up again, the second the shard is gone.
    let mut not_found = false;

    let halt = 'reading: loop {
        if *stop.borrow() {
            break Halt::Stopped;
        }
        save_if_due(ctx, shard, &released, &mut last_save).await;
        let arn = match consumer_arn(ctx, name, &mut stop).await {
            Ok(arn) => arn,
            Err(None) => break Halt::Stopped,
            Err(Some(e)) => {
                ctx.log_failure(&format!("{shard} consumer {name}"), &e);
                break Halt::Gone;
            }
        };
        let opened = tokio::select! {
            opened = ctx.api.subscribe(&arn, shard, &resume) => opened,
            () = wait_stop(&mut stop) => break Halt::Stopped,
        };
        ctx.metrics
            .call(Operation::SubscribeToShard, opened.as_ref().map(|_| ()));
        let mut subscription = match opened {
            Ok(s) => s,
            Err(e) => {
                let wait = match &e {
                    ApiError::NotFound(_) if not_found => break Halt::Gone,
                    ApiError::NotFound(_) => {
                        not_found = true;
                        forget_consumer(ctx, name, &arn).await;
                        Duration::ZERO
                    }
                    ApiError::Fatal(_) => {
                        ctx.log_failure(&format!("{shard} SubscribeToShard"), &e);
                        break Halt::Gone;
                    }
                    ApiError::Throttled(_) => backoff.next().max(THROTTLE_BACKOFF),
                    // `ResourceInUseException` (the previous subscription is still open) is
                    // among these: it passes within seconds.
                    ApiError::Transient(_) | ApiError::ExpiredIterator => backoff.next(),
                };
                if !matches!(e, ApiError::NotFound(_)) {
                    ctx.log_failure(&format!("{shard} SubscribeToShard"), &e);
                }
                if sleep_or_stop(wait, &mut stop).await {
                    break Halt::Stopped;
                }
                continue;
            }
        };
        not_found = false;
        // Subscribed at LATEST once; a later subscription before the first record goes back to
        // the time reading began, not to a later LATEST.
        if let Some(started) = latest_started.take() {
            resume = IteratorStart::Initial(InitialPosition::AtTimestamp(started as f64 / 1000.0));
        }
        let renew_at = tokio::time::Instant::now() + ctx.cfg.resubscribe_after;
        let mut events = 0u64;
        let end = loop {
            let next = tokio::select! {
                next = subscription.next() => next,
                () = tokio::time::sleep_until(renew_at) => break SubscriptionEnd::Renewed,
                // An idle shard still saves what the pipeline has finished.
                () = tokio::time::sleep(ctx.cfg.checkpoint_interval) => {
                    save_if_due(ctx, shard, &released, &mut last_save).await;
                    continue;
                }
                () = wait_stop(&mut stop) => {
                    ctx.metrics.subscription_ended(SubscriptionEnd::Stopped);
                    break 'reading Halt::Stopped;
                }
            };
            let event = match next {
                None => break SubscriptionEnd::Ended,
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    if !matches!(e, ApiError::NotFound(_)) {
                        ctx.log_failure(&format!("{shard} SubscribeToShard event stream"), &e);
                    }
                    break SubscriptionEnd::Failed;
                }
            };
            events += 1;
            backoff.reset();
            if let Some(ms) = event.millis_behind_latest {
                series.lag_seconds.set(ms as f64 / 1000.0);
            }
            if !event.records.is_empty() {
                match submit_page(ctx, shard, series, &released, event.records).await {
                    Ok(last) => resume = IteratorStart::After(last),
                    Err(halt) => {
                        ctx.metrics.subscription_ended(SubscriptionEnd::Stopped);
                        break 'reading halt;
                    }
                }
            }
            match event.continuation {
                Some(c) => match SequenceNumber::parse(&c) {
                    Ok(seq) => resume = IteratorStart::After(seq),
                    Err(e) => {
                        ctx.metrics.fault(ConsumerFault::BadSequenceNumber);
                        eprintln!(
                            "albwatch: kinesis {shard}: bad continuation sequence number: {e}"
                        );
                    }
                },
                None => {
                    // Closed and read to its end.
                    ctx.metrics.subscription_ended(SubscriptionEnd::ShardEnd);
                    drop(subscription);
                    match end_shard(ctx, shard, &released, &mut backoff, &mut stop).await {
                        Some(exit) => return exit.with_children(event.child_shards),
                        None => break 'reading Halt::Stopped,
                    }
                }
            }
            save_if_due(ctx, shard, &released, &mut last_save).await;
        };
        ctx.metrics.subscription_ended(end);
        drop(subscription);
        // A failed stream, or one that ended before it brought anything, is not opened again at
        // once: a service that keeps closing it must not be called in a tight loop.
        if (end == SubscriptionEnd::Failed || (end == SubscriptionEnd::Ended && events == 0))
            && sleep_or_stop(backoff.next(), &mut stop).await
        {
            break Halt::Stopped;
        }
    };
    halted(ctx, shard, &released, halt).await
}
