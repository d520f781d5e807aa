//! The SQS side of the S3 input: long-polls the queue that carries the bucket's event
//! notifications, and for each message reads its objects into the pipeline and deletes the
//! message only once every line is counted. A message whose object cannot be read or decoded
//! is left alone, so SQS delivers it again after the visibility timeout and its redrive policy
//! moves it to the dead-letter queue after `maxReceiveCount` tries; nothing else waits for it.
//! While an object is read its message is kept invisible (ChangeMessageVisibility every half
//! timeout), so a long object is not handed to another instance mid-read. Instances sharing a
//! queue need no coordination: SQS gives each message to one of them at a time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_sqs::types::Message;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::config::ValidS3Config;
use super::dedupe::Seen;
use super::key;
use super::metrics::{MessageOutcome, ObjectOutcome, Operation, S3Metrics};
use super::notification::{self, Notification, ObjectRef};
use super::object::{self, ObjectError};
use super::sdk::Clients;
use crate::export::WallClock;
use crate::input::aws::{ErrorLog, LOG_EVERY};
use crate::input::{PartitionSource, Shutdown};

/// Longest pause after failed ReceiveMessage calls in a row.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Failing objects whose key was already logged, remembered so a poison object redelivered
/// until it reaches the dead-letter queue is logged once, not at every delivery.
const LOGGED_KEYS: usize = 1000;
/// The partition of objects whose key does not name a load balancer (`key_layout = "any"`).
const OTHER_PARTITION: &str = "s3";

/// Everything the message tasks share.
struct Shared {
    clients: Clients,
    queue_url: String,
    cfg: ValidS3Config,
    source: PartitionSource,
    metrics: S3Metrics,
    wall: WallClock,
    batch_bytes: usize,
    max_line: usize,
    stop: Shutdown,
    /// Admission by object bytes, in KiB so the largest objects fit a semaphore's count.
    bytes: Arc<Semaphore>,
    bytes_kib: u32,
    seen: Mutex<Seen>,
    logged: Mutex<Seen>,
    errors: ErrorLog,
}

/// The S3 input's settings and handles, as the app wires them.
pub struct S3Input {
    pub clients: Clients,
    pub cfg: ValidS3Config,
    pub source: PartitionSource,
    pub metrics: S3Metrics,
    pub wall: WallClock,
    pub batch_bytes: usize,
    pub max_line: usize,
    pub stop: Shutdown,
}

/// Reads the queue until the stop signal, then waits for the messages in hand: objects being
/// read stop, and their messages are made visible again at once for another instance.
pub async fn run(input: S3Input) {
    let Some(queue_url) = input.cfg.queue_url.clone() else {
        return;
    };
    let bytes_kib = u32::try_from(input.cfg.max_bytes_in_flight.div_ceil(1024)).unwrap_or(u32::MAX);
    let shared = Arc::new(Shared {
        queue_url,
        bytes: Arc::new(Semaphore::new(bytes_kib as usize)),
        bytes_kib,
        seen: Mutex::new(Seen::new(input.cfg.dedupe_capacity)),
        logged: Mutex::new(Seen::new(LOGGED_KEYS)),
        errors: ErrorLog::new(LOG_EVERY),
        clients: input.clients,
        cfg: input.cfg,
        source: input.source,
        metrics: input.metrics,
        wall: input.wall,
        batch_bytes: input.batch_bytes,
        max_line: input.max_line,
        stop: input.stop,
    });
    // One message is one object as S3 sends them, so message slots bound objects in flight.
    let slots = Arc::new(Semaphore::new(shared.cfg.max_objects_in_flight));
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::ZERO;
    loop {
        while tasks.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = tasks.join_next() => continue,
                () = shared.stop.clone().wait() => break,
            }
        }
        let max = i32::try_from(free)
            .unwrap_or(i32::MAX)
            .min(shared.cfg.max_messages);
        let receive = shared
            .clients
            .sqs
            .receive_message()
            .queue_url(&shared.queue_url)
            .max_number_of_messages(max)
            .wait_time_seconds(secs(shared.cfg.wait_time))
            .visibility_timeout(secs(shared.cfg.visibility_timeout))
            .send();
        let received = tokio::select! {
            r = receive => r,
            () = shared.stop.clone().wait() => break,
        };
        match received {
            Ok(out) => {
                shared.metrics.request(Operation::ReceiveMessage, true);
                backoff = Duration::ZERO;
                for message in out.messages.unwrap_or_default() {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        // Never more than asked for; if SQS sent more, the rest come back
                        // after their visibility timeout.
                        break;
                    };
                    let shared = Arc::clone(&shared);
                    tasks.spawn(async move {
                        handle(&shared, message).await;
                        drop(slot);
                    });
                }
            }
            Err(e) => {
                shared.metrics.request(Operation::ReceiveMessage, false);
                let err = shared.clients.sqs_error("ReceiveMessage", &e);
                shared
                    .errors
                    .write(err.fault, || format!("albwatch: S3 input: {err}"));
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shared.stop.clone().wait() => break,
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// SQS takes whole seconds.
fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// How a message's objects went, taken together.
enum Settled {
    /// Every object final: delete the message.
    Done,
    /// An object failed: leave the message to the redrive policy.
    Failed,
    /// Shutdown came first: hand the message back at once.
    Interrupted,
}

/// One message, to its end: its objects read and counted, then deleted, left or handed back.
async fn handle(shared: &Shared, message: Message) {
    shared.metrics.messages_in_flight.inc();
    let receipt = message.receipt_handle.unwrap_or_default();
    let body = message.body.unwrap_or_default();
    let outcome = match notification::parse(&body) {
        Ok(Notification::TestEvent) => Some(MessageOutcome::TestEvent),
        Ok(Notification::Ignored(_)) => Some(MessageOutcome::Ignored),
        Err(e) => {
            let id = message.message_id.unwrap_or_default();
            if first_time(&shared.logged, "message", &id) {
                eprintln!(
                    "albwatch: S3 input: message {id} is not an S3 event notification ({e}); \
                     left for the queue's redrive policy"
                );
            }
            shared.metrics.message(MessageOutcome::Invalid);
            None
        }
        Ok(Notification::Objects(objects)) => {
            let heartbeat = tokio::spawn(keep_invisible(
                shared.clients.clone(),
                shared.queue_url.clone(),
                receipt.clone(),
                shared.cfg.visibility_timeout,
                shared.metrics.clone(),
            ));
            let mut settled = Settled::Done;
            for o in &objects {
                match read_object(shared, o).await {
                    Some(outcome) if outcome.is_final() => {}
                    Some(_) => settled = Settled::Failed,
                    None => {
                        settled = Settled::Interrupted;
                        break;
                    }
                }
            }
            heartbeat.abort();
            match settled {
                Settled::Done => Some(MessageOutcome::Deleted),
                Settled::Failed => {
                    shared.metrics.message(MessageOutcome::Left);
                    None
                }
                Settled::Interrupted => {
                    set_visibility(
                        &shared.clients,
                        &shared.queue_url,
                        &receipt,
                        0,
                        &shared.metrics,
                    )
                    .await;
                    shared.metrics.message(MessageOutcome::Returned);
                    None
                }
            }
        }
    };
    if let Some(outcome) = outcome {
        delete(shared, &receipt).await;
        shared.metrics.message(outcome);
    }
    shared.metrics.messages_in_flight.dec();
}

/// Whether `what` `name` is seen for the first time (then remembered).
fn first_time(logged: &Mutex<Seen>, what: &str, name: &str) -> bool {
    let mut logged = logged.lock().unwrap_or_else(PoisonError::into_inner);
    if logged.contains(what, name, None) {
        return false;
    }
    logged.insert(what, name, None);
    true
}

/// Reads one object; `None` when shutdown came first.
async fn read_object(shared: &Shared, o: &ObjectRef) -> Option<ObjectOutcome> {
    let size = o.size.unwrap_or(0);
    if !shared.cfg.keys.accepts(&o.key) {
        shared.metrics.object(ObjectOutcome::SkippedKey, size);
        return Some(ObjectOutcome::SkippedKey);
    }
    let etag = o.etag.as_deref();
    if shared
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&o.bucket, &o.key, etag)
    {
        shared.metrics.object(ObjectOutcome::Duplicate, size);
        return Some(ObjectOutcome::Duplicate);
    }
    // An object larger than the whole bound waits for all of it and is then read alone.
    let kib = u32::try_from(size.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .clamp(1, shared.bytes_kib);
    let permit = tokio::select! {
        p = Arc::clone(&shared.bytes).acquire_many_owned(kib) => p.ok()?,
        () = shared.stop.clone().wait() => return None,
    };
    shared.metrics.objects_in_flight.inc();
    shared.metrics.bytes_in_flight.add(gauge(size));
    let body = object::fetch(&shared.clients, &o.bucket, &o.key);
    let partition = shared
        .source
        .get(key::parse_elb_key(&o.key).map_or(OTHER_PARTITION, |k| k.load_balancer));
    let (batch_bytes, max_line, stop) = (shared.batch_bytes, shared.max_line, shared.stop.clone());
    let read = tokio::task::spawn_blocking(move || {
        object::count(body, &partition, batch_bytes, max_line, &stop)
    })
    .await;
    drop(permit);
    shared.metrics.objects_in_flight.dec();
    shared.metrics.bytes_in_flight.sub(gauge(size));
    let outcome = match read {
        Ok(Ok(counted)) if counted.parsed == 0 && counted.failed > 0 => {
            log_failure(
                shared,
                o,
                &format!("no line of its {} is an ALB access-log line", counted.lines),
            );
            ObjectOutcome::NotAlb
        }
        Ok(Ok(counted)) => {
            let mut seen = shared.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let before = seen.evictions();
            seen.insert(&o.bucket, &o.key, etag);
            shared
                .metrics
                .dedupe_evictions
                .inc_by(seen.evictions() - before);
            drop(seen);
            shared.metrics.lines.inc_by(counted.lines);
            if let Some(created) = o.event_time_us {
                let age = (shared.wall)().saturating_sub(created).max(0);
                shared.metrics.object_age.observe(age as f64 / 1e6);
            }
            ObjectOutcome::Counted
        }
        Ok(Err(ObjectError::Interrupted)) => return None,
        Ok(Err(ObjectError::Unreadable(e))) => {
            log_failure(shared, o, &e.to_string());
            ObjectOutcome::Unreadable
        }
        Ok(Err(e @ ObjectError::Corrupt(_))) => {
            log_failure(shared, o, &e.to_string());
            ObjectOutcome::Corrupt
        }
        // The reading thread panicked: the object is as good as unreadable, and the message
        // comes back for another try.
        Err(e) => {
            log_failure(shared, o, &format!("reading failed: {e}"));
            ObjectOutcome::Unreadable
        }
    };
    shared.metrics.object(outcome, size);
    Some(outcome)
}

fn gauge(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// One line per failing object (per key, however often it is delivered).
fn log_failure(shared: &Shared, o: &ObjectRef, why: &str) {
    if first_time(&shared.logged, &o.bucket, &o.key) {
        eprintln!(
            "albwatch: S3 input: s3://{}/{}: {why}; its message is left for the queue's redrive \
             policy",
            o.bucket, o.key
        );
    }
}

/// Extends the message's invisibility every half timeout until aborted.
async fn keep_invisible(
    clients: Clients,
    queue_url: String,
    receipt: String,
    timeout: Duration,
    metrics: S3Metrics,
) {
    let every = (timeout / 2).max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        set_visibility(&clients, &queue_url, &receipt, secs(timeout), &metrics).await;
    }
}

/// Makes the message invisible for `secs` from now (0: visible at once).
async fn set_visibility(
    clients: &Clients,
    queue_url: &str,
    receipt: &str,
    secs: i32,
    metrics: &S3Metrics,
) {
    let r = clients
        .sqs
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(receipt)
        .visibility_timeout(secs)
        .send()
        .await;
    metrics.request(Operation::ChangeMessageVisibility, r.is_ok());
}

async fn delete(shared: &Shared, receipt: &str) {
    let r = shared
        .clients
        .sqs
        .delete_message()
        .queue_url(&shared.queue_url)
        .receipt_handle(receipt)
        .send()
        .await;
    shared.metrics.request(Operation::DeleteMessage, r.is_ok());
    if let Err(e) = r {
        // The object stays counted and remembered: its redelivery is a duplicate, skipped.
        let err = shared.clients.sqs_error("DeleteMessage", &e);
        shared
            .errors
            .write(err.fault, || format!("albwatch: S3 input: {err}"));
    }
}
