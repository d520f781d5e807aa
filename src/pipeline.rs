//! The hot path and the threads that run it. A [`Worker`] turns one [`RawBatch`] into counts:
//! decode (when the batch holds records as delivered by Firehose or Kinesis) → split → parse →
//! classify → tally in its own accumulator, then one merge into the shared [`Aggregator`]
//! under one lock per batch. Decoding here rather than in the inputs puts gunzip, KPL and
//! JSON under the same `pipeline.workers` bound as parsing. A [`Pool`] runs a fixed number of
//! workers fed by a bounded channel (backpressure, never an unbounded queue) and reports each
//! batch's [`BatchOutcome`] through the batch's acknowledgement, so inputs acknowledge only
//! after the work (Firehose replies, Kinesis checkpoints).
//!
//! `process_batch` reads no clock: the caller passes the batch's future limit (the wall clock
//! plus the allowed skew), past which a line counts in the totals only and never moves event
//! time. Windows and alerts move with the event-time watermark, not here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

use crate::aggregate::{AggregateConfig, Aggregator, BatchAccumulator};
use crate::buffers::{Buffers, RETAIN_BYTES};
use crate::classify::{LoadBalancers, classify};
use crate::decode::{DecodeLimits, DecodeStats, Decoder, Records};
use crate::parse::{ErrorKind, LogEntry, parse_line_into};

/// Called once with the batch's outcome, after its counts are merged.
pub type Ack = Box<dyn FnOnce(BatchOutcome) + Send>;

/// ALB log lines to count — newline-separated, or still inside the records they were
/// delivered in — owned, with the acknowledgement to run once they are counted.
pub struct RawBatch {
    pub lines: Vec<u8>,
    /// Records to decode first (gzip, KPL, CloudWatch Logs, JSON); their lines are counted
    /// after [`RawBatch::lines`].
    pub records: Records,
    /// How far one of [`RawBatch::records`] may expand.
    pub limits: DecodeLimits,
    /// Lines the input already dropped for being over the length limit, so they are counted
    /// with the rest of the batch.
    pub too_long: u64,
    /// The values of the configured attribute labels shared by every line (a Firehose
    /// request's common attributes, one per `aggregate.attribute_labels` entry, already
    /// interned under their cap); `None` for inputs without attributes.
    pub attributes: Option<Arc<[Arc<str>]>>,
    pub ack: Option<Ack>,
}

impl RawBatch {
    pub fn new(lines: Vec<u8>) -> Self {
        RawBatch {
            lines,
            records: Records::default(),
            limits: DecodeLimits::default(),
            too_long: 0,
            attributes: None,
            ack: None,
        }
    }

    /// A batch of records for the worker to decode under `limits`.
    pub fn of_records(records: Records, limits: DecodeLimits) -> Self {
        RawBatch {
            records,
            limits,
            ..RawBatch::new(Vec::new())
        }
    }

    pub fn with_ack(lines: Vec<u8>, ack: Ack) -> Self {
        RawBatch {
            ack: Some(ack),
            ..RawBatch::new(lines)
        }
    }
}

/// What became of one batch's lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub lines: u64,
    pub parsed: u64,
    /// Indexed like [`ErrorKind::ALL`].
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Lines over the line-length limit, skipped.
    pub too_long: u64,
    /// The oldest and newest event times of the batch within its future limit, µs.
    pub min_event_time: Option<i64>,
    pub max_event_time: Option<i64>,
    /// What the batch's records held (nothing for a batch of lines).
    pub decoded: DecodeStats,
}

impl BatchOutcome {
    pub fn failed(&self) -> u64 {
        self.errors.iter().sum::<u64>() + self.too_long
    }

    /// The oldest and newest event times, when the batch held any.
    pub fn events(&self) -> Option<(i64, i64)> {
        self.min_event_time.zip(self.max_event_time)
    }
}

/// The pipeline's own health metrics, registered on the app's registry.
#[derive(Clone)]
pub struct PipelineMetrics {
    lines: IntCounterVec,
    batch_seconds: Histogram,
    queue_depth: IntGauge,
}

impl PipelineMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let lines = IntCounterVec::new(
            Opts::new(
                "albwatch_lines_total",
                "Log lines read, by outcome: parsed, or the parse error kind, or line_too_long.",
            ),
            &["outcome"],
        )?;
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "albwatch_batch_seconds",
                "Time to parse, classify and merge one batch.",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
            ]),
        )?;
        let queue_depth = IntGauge::new(
            "albwatch_queue_depth",
            "Batches waiting for a worker in the bounded queue.",
        )?;
        registry.register(Box::new(lines.clone()))?;
        registry.register(Box::new(batch_seconds.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        // Every outcome exists from the start, so rates of rare errors are never "no data".
        lines.with_label_values(&["parsed"]);
        lines.with_label_values(&["line_too_long"]);
        for kind in ErrorKind::ALL {
            lines.with_label_values(&[kind.as_str()]);
        }
        Ok(PipelineMetrics {
            lines,
            batch_seconds,
            queue_depth,
        })
    }

    fn record(&self, outcome: &BatchOutcome, seconds: f64) {
        self.lines
            .with_label_values(&["parsed"])
            .inc_by(outcome.parsed);
        self.lines
            .with_label_values(&["line_too_long"])
            .inc_by(outcome.too_long);
        for (kind, n) in ErrorKind::ALL.iter().zip(outcome.errors) {
            if n > 0 {
                self.lines.with_label_values(&[kind.as_str()]).inc_by(n);
            }
        }
        self.batch_seconds.observe(seconds);
    }
}

/// Turns batches into counts; one per thread, reused for every batch.
pub struct Worker {
    lbs: Arc<LoadBalancers>,
    shared: Arc<Mutex<Aggregator>>,
    acc: BatchAccumulator,
    max_line_bytes: usize,
    decoder: Decoder,
    /// The lines of a batch of records, reused from batch to batch.
    decoded: Vec<u8>,
}

impl Worker {
    pub fn new(
        lbs: Arc<LoadBalancers>,
        shared: Arc<Mutex<Aggregator>>,
        cfg: &AggregateConfig,
        max_line_bytes: usize,
    ) -> Self {
        Worker {
            lbs,
            shared,
            acc: BatchAccumulator::new(cfg),
            max_line_bytes,
            decoder: Decoder::default(),
            decoded: Vec::new(),
        }
    }

    /// Parses, classifies and counts every line of `batch`, then merges the counts into the
    /// shared aggregator once. Lines stamped after `future_limit` (µs) count in the totals
    /// only and are left out of the batch's event times.
    pub fn process_batch(&mut self, batch: &RawBatch, future_limit: i64) -> BatchOutcome {
        let mut outcome = BatchOutcome {
            lines: batch.too_long,
            too_long: batch.too_long,
            ..BatchOutcome::default()
        };
        self.acc
            .set_attributes(batch.attributes.as_deref().unwrap_or_default());
        self.acc.set_future_limit(future_limit);
        let data: &[u8] = if batch.records.is_empty() {
            &batch.lines
        } else {
            self.decoded.clear();
            self.decoded.extend_from_slice(&batch.lines);
            self.decoder.set_limits(batch.limits);
            self.decoder
                .decode_all(&batch.records, &mut self.decoded, &mut outcome.decoded);
            &self.decoded
        };
        let mut entry = LogEntry::blank();
        let mut start = 0;
        while start < data.len() {
            let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
            let line = &data[start..end];
            start = end + 1;
            if line.is_empty() || line == b"\r" {
                continue;
            }
            outcome.lines += 1;
            if line.len() > self.max_line_bytes {
                outcome.too_long += 1;
                continue;
            }
            match parse_line_into(line, &mut entry) {
                Ok(()) => {
                    outcome.parsed += 1;
                    if entry.time <= future_limit {
                        outcome.min_event_time = Some(
                            outcome
                                .min_event_time
                                .map_or(entry.time, |t| t.min(entry.time)),
                        );
                        outcome.max_event_time = Some(
                            outcome
                                .max_event_time
                                .map_or(entry.time, |t| t.max(entry.time)),
                        );
                    }
                    let cause = classify(&entry, self.lbs.get(entry.elb.as_bytes()));
                    self.acc.add(&entry, cause);
                }
                Err(err) => {
                    let i = ErrorKind::ALL
                        .iter()
                        .position(|k| *k == err.kind)
                        .unwrap_or_default();
                    outcome.errors[i] += 1;
                }
            }
        }
        // A poisoned lock means another worker panicked mid-merge; its counts are lost either
        // way, and stopping every other worker would lose more.
        if self.decoded.capacity() > RETAIN_BYTES {
            self.decoded = Vec::new();
        }
        let mut agg = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        self.acc.merge_into(&mut agg);
        outcome
    }
}

/// Gives a worker the future limit of the batch it takes (µs): the wall clock plus the
/// allowed skew, read once per batch.
pub type FutureLimit = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Why a batch was not queued; the batch comes back (boxed: errors stay small).
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the pipeline queue is full")]
    Full(Box<RawBatch>),
    #[error("the pipeline is shut down")]
    Closed(Box<RawBatch>),
}

impl std::fmt::Debug for RawBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBatch")
            .field("bytes", &self.lines.len())
            .field("attributes", &self.attributes)
            .field("ack", &self.ack.is_some())
            .finish()
    }
}

/// The sending side of the pool's bounded queue; cheap to clone, one per input.
#[derive(Clone)]
pub struct Submitter {
    tx: SyncSender<RawBatch>,
    depth: Arc<AtomicUsize>,
    metrics: Option<PipelineMetrics>,
    buffers: Buffers,
}

impl Submitter {
    /// The buffers the workers hand back, for an input to fill its next batches in.
    pub fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    /// Queues `batch`, waiting while the queue is full (inputs that can simply slow down:
    /// files, replay).
    pub fn submit(&self, batch: RawBatch) -> Result<(), SubmitError> {
        self.note_depth(1);
        self.tx.send(batch).map_err(|e| {
            self.note_depth(-1);
            SubmitError::Closed(Box::new(e.0))
        })
    }

    /// Queues `batch` only if there is room now (inputs that must answer at once: Firehose
    /// replies 503 so the sender backs off).
    pub fn try_submit(&self, batch: RawBatch) -> Result<(), SubmitError> {
        self.note_depth(1);
        self.tx.try_send(batch).map_err(|e| {
            self.note_depth(-1);
            match e {
                TrySendError::Full(b) => SubmitError::Full(Box::new(b)),
                TrySendError::Disconnected(b) => SubmitError::Closed(Box::new(b)),
            }
        })
    }

    fn note_depth(&self, delta: isize) {
        let depth = if delta > 0 {
            self.depth.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.depth.fetch_sub(1, Ordering::Relaxed) - 1
        };
        if let Some(m) = &self.metrics {
            m.queue_depth.set(depth as i64);
        }
    }
}

/// A fixed set of worker threads behind one bounded queue.
pub struct Pool {
    submitter: Submitter,
    threads: Vec<JoinHandle<()>>,
}

/// How to build a [`Pool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub workers: usize,
    pub queue_batches: usize,
    pub max_line_bytes: usize,
}

impl Pool {
    pub fn start(
        cfg: &PoolConfig,
        agg_cfg: &AggregateConfig,
        lbs: Arc<LoadBalancers>,
        shared: Arc<Mutex<Aggregator>>,
        clock: FutureLimit,
        metrics: Option<PipelineMetrics>,
    ) -> std::io::Result<Pool> {
        let (tx, rx) = sync_channel::<RawBatch>(cfg.queue_batches.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let depth = Arc::new(AtomicUsize::new(0));
        // Enough for every batch that can be queued, in a worker's hands and being filled.
        let buffers = Buffers::new(cfg.queue_batches.max(1) + 2 * cfg.workers.max(1) + 1);
        let submitter = Submitter {
            tx,
            depth: Arc::clone(&depth),
            metrics: metrics.clone(),
            buffers: buffers.clone(),
        };
        let mut threads = Vec::new();
        for n in 0..cfg.workers.max(1) {
            let worker = Worker::new(
                Arc::clone(&lbs),
                Arc::clone(&shared),
                agg_cfg,
                cfg.max_line_bytes,
            );
            let rx = Arc::clone(&rx);
            let clock = Arc::clone(&clock);
            let depth = Arc::clone(&depth);
            let metrics = metrics.clone();
            let buffers = buffers.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("albwatch-worker-{n}"))
                    .spawn(move || {
                        run_worker(worker, &rx, &clock, &depth, metrics.as_ref(), &buffers);
                    })?,
            );
        }
        Ok(Pool { submitter, threads })
    }

    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// Stops taking batches, lets the workers finish what is queued and joins them. Every
    /// [`Submitter`] clone must be dropped for the workers to see the end of the queue.
    pub fn finish(self) {
        let Pool { submitter, threads } = self;
        drop(submitter);
        for t in threads {
            // A worker that panicked has already lost its batch; the others are joined anyway.
            let _ = t.join();
        }
    }
}

fn run_worker(
    mut worker: Worker,
    rx: &Mutex<Receiver<RawBatch>>,
    clock: &FutureLimit,
    depth: &AtomicUsize,
    metrics: Option<&PipelineMetrics>,
    buffers: &Buffers,
) {
    loop {
        let batch = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(batch) => batch,
                Err(_) => return,
            }
        };
        let left = depth.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        let started = Instant::now();
        let outcome = worker.process_batch(&batch, clock());
        if let Some(m) = metrics {
            m.queue_depth.set(left as i64);
            m.record(&outcome, started.elapsed().as_secs_f64());
        }
        let RawBatch { lines, ack, .. } = batch;
        if let Some(ack) = ack {
            ack(outcome);
        }
        buffers.give(lines);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::corpus;
    use std::sync::mpsc::channel;

    fn shared() -> Arc<Mutex<Aggregator>> {
        Arc::new(Mutex::new(Aggregator::new(AggregateConfig::default())))
    }

    #[test]
    fn worker_counts_good_and_bad_lines() {
        let agg = shared();
        let mut w = Worker::new(
            Arc::new(LoadBalancers::default()),
            Arc::clone(&agg),
            &AggregateConfig::default(),
            4096,
        );
        let mut lines = corpus(3, 100);
        lines.extend_from_slice(b"garbage line\n\n");
        lines.extend_from_slice(&[b'x'; 5000]);
        lines.push(b'\n');
        let outcome = w.process_batch(&RawBatch::new(lines), i64::MAX);
        assert_eq!(outcome.lines, 102);
        assert_eq!(outcome.parsed, 100);
        assert_eq!(outcome.too_long, 1);
        assert_eq!(outcome.failed(), 2);
        let snap = agg
            .lock()
            .expect("lock")
            .snapshot(outcome.max_event_time.expect("events") + 1);
        let total: u64 = snap
            .series
            .iter()
            .flat_map(|s| &s.totals)
            .map(|t| t.2)
            .sum();
        assert_eq!(total, 100);
    }

    #[test]
    fn a_batch_s_attribute_values_label_every_line_of_it() {
        let cfg = AggregateConfig {
            attribute_labels: vec!["env".to_string()],
            ..AggregateConfig::default()
        };
        let agg = Arc::new(Mutex::new(Aggregator::new(cfg.clone())));
        let mut w = Worker::new(
            Arc::new(LoadBalancers::default()),
            Arc::clone(&agg),
            &cfg,
            4096,
        );
        let mut prod = RawBatch::new(corpus(1, 50));
        prod.attributes = Some(Arc::from([Arc::<str>::from("prod")]));
        w.process_batch(&prod, i64::MAX);
        // The next batch, from an input without attributes, does not inherit them.
        w.process_batch(&RawBatch::new(corpus(2, 30)), i64::MAX);
        let snap = agg.lock().expect("lock").snapshot(i64::MAX);
        let count = |env: &str| -> u64 {
            snap.series
                .iter()
                .filter(|s| s.labels.attributes == [env])
                .flat_map(|s| &s.totals)
                .map(|t| t.2)
                .sum()
        };
        assert_eq!((count("prod"), count("")), (50, 30));
    }

    /// A pool of `workers` threads over a queue of `queue_batches`, merging into `agg`.
    fn start_pool(agg: &Arc<Mutex<Aggregator>>, workers: usize, queue_batches: usize) -> Pool {
        let cfg = PoolConfig {
            workers,
            queue_batches,
            max_line_bytes: 65_536,
        };
        Pool::start(
            &cfg,
            &AggregateConfig::default(),
            Arc::new(LoadBalancers::default()),
            Arc::clone(agg),
            Arc::new(|| i64::MAX),
            None,
        )
        .expect("threads")
    }

    #[test]
    fn pool_acknowledges_every_batch_after_counting_it() {
        let agg = shared();
        let pool = start_pool(&agg, 2, 2);
        let (done_tx, done_rx) = channel();
        let submitter = pool.submitter();
        for seed in 0..20 {
            let done = done_tx.clone();
            submitter
                .submit(RawBatch::with_ack(
                    corpus(seed, 50),
                    Box::new(move |o| {
                        let _ = done.send(o.parsed);
                    }),
                ))
                .expect("queued");
        }
        drop(submitter);
        pool.finish();
        drop(done_tx);
        let acked: Vec<u64> = done_rx.iter().collect();
        assert_eq!(acked, vec![50; 20]);
        let snap = agg.lock().expect("lock").snapshot(i64::MAX);
        let total: u64 = snap
            .series
            .iter()
            .flat_map(|s| &s.totals)
            .map(|t| t.2)
            .sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn workers_hand_batch_buffers_back_for_the_next_batch() {
        let agg = shared();
        let pool = start_pool(&agg, 1, 2);
        let s = pool.submitter();
        let buffers = s.buffers().clone();
        let mut lines = buffers.take();
        lines.extend_from_slice(&corpus(1, 10));
        let capacity = lines.capacity();
        s.submit(RawBatch::new(lines)).expect("queued");
        drop(s);
        pool.finish();
        let again = buffers.take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
        // An outsized buffer is freed, not kept.
        buffers.give(Vec::with_capacity(RETAIN_BYTES + 1));
        assert_eq!(buffers.take().capacity(), 0);
    }

    #[test]
    fn try_submit_reports_a_full_queue() {
        let agg = shared();
        // No worker can take the first batch while we hold the aggregator lock.
        let guard = agg.lock().expect("lock");
        let pool = start_pool(&agg, 1, 1);
        let s = pool.submitter();
        let mut full = false;
        for _ in 0..10 {
            if let Err(SubmitError::Full(_)) = s.try_submit(RawBatch::new(corpus(1, 5))) {
                full = true;
                break;
            }
        }
        assert!(full, "the bounded queue must fill up");
        drop(guard);
        drop(s);
        pool.finish();
    }
}
