//! `albwatch replay`: runs the whole pipeline over log files in event time. Files are cut into
//! batches for the worker pool; a coordinator tracks which batches are done *in order*, so the
//! watermark (newest event of the completed prefix, minus the allowed lateness) only moves over
//! data that has really been counted. Each time it passes an evaluation tick, the aggregator's
//! clock moves to the tick and the alert rules run on the windows ending there — the same
//! alerts, at the same event times, whatever the thread timing. It hands alert transitions to
//! the caller as they happen and a [`ReplayReport`] at the end.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::Context;

use crate::aggregate::{Aggregator, Snapshot};
use crate::alert::{AlertEngine, Transition};
use crate::config::Config;
use crate::lines::{self, Chunker};
use crate::pipeline::{BatchOutcome, Pool, RawBatch};

/// What a replay saw.
#[derive(Debug)]
pub struct ReplayReport {
    pub lines: u64,
    pub parsed: u64,
    pub failed: u64,
    /// Parse failures by error kind label, including `line_too_long`.
    pub errors: BTreeMap<&'static str, u64>,
    /// The final state, windows ending just after the newest event.
    pub snapshot: Snapshot,
    /// Every transition, in order.
    pub transitions: Vec<Transition>,
    pub unreadable: Vec<String>,
    pub seconds: f64,
}

/// Follows batch completions in submission order.
#[derive(Default)]
struct Prefix {
    next: u64,
    done: BTreeMap<u64, Option<i64>>,
    max_event: Option<i64>,
    /// The oldest event of any completed batch: where evaluation ticks start.
    min_event: Option<i64>,
}

impl Prefix {
    fn complete(&mut self, seq: u64, max_event: Option<i64>) {
        self.done.insert(seq, max_event);
        while let Some(t) = self.done.remove(&self.next) {
            self.max_event = self.max_event.max(t);
            self.next += 1;
        }
    }
}

struct Coordinator {
    agg: Arc<Mutex<Aggregator>>,
    engine: AlertEngine,
    prefix: Prefix,
    done_rx: Receiver<(u64, BatchOutcome)>,
    next_tick: Option<i64>,
    tick_us: i64,
    lateness_us: i64,
    report: ReplayReport,
}

impl Coordinator {
    fn record(&mut self, seq: u64, outcome: &BatchOutcome) {
        self.report.lines += outcome.lines;
        self.report.parsed += outcome.parsed;
        self.report.failed += outcome.failed();
        for (kind, n) in crate::parse::ErrorKind::ALL.iter().zip(outcome.errors) {
            if n > 0 {
                *self.report.errors.entry(kind.as_str()).or_default() += n;
            }
        }
        if outcome.too_long > 0 {
            *self.report.errors.entry("line_too_long").or_default() += outcome.too_long;
        }
        if let Some(t) = outcome.min_event_time {
            self.prefix.min_event = Some(self.prefix.min_event.map_or(t, |m| m.min(t)));
        }
        self.prefix.complete(seq, outcome.max_event_time);
    }

    /// Takes completions without waiting (or waiting for one when `block`), then runs every
    /// evaluation tick the watermark has passed.
    fn poll(&mut self, block: bool, sink: &mut dyn FnMut(&Transition)) {
        if block && let Ok((seq, outcome)) = self.done_rx.recv() {
            self.record(seq, &outcome);
        }
        while let Ok((seq, outcome)) = self.done_rx.try_recv() {
            self.record(seq, &outcome);
        }
        if let Some(max) = self.prefix.max_event {
            self.evaluate_until(max - self.lateness_us, sink);
        }
    }

    /// Evaluates every tick up to and including `watermark`.
    fn evaluate_until(&mut self, watermark: i64, sink: &mut dyn FnMut(&Transition)) {
        let Some(first_event) = self.prefix.min_event else {
            return;
        };
        let mut tick = self
            .next_tick
            .unwrap_or_else(|| (first_event.div_euclid(self.tick_us) + 1) * self.tick_us);
        while tick <= watermark {
            let snapshot = {
                let mut agg = self.agg.lock().unwrap_or_else(PoisonError::into_inner);
                agg.advance(tick);
                agg.snapshot_of(tick, &[self.engine.config().window_secs])
            };
            for t in self.engine.evaluate(&snapshot, tick) {
                sink(&t);
                self.report.transitions.push(t);
            }
            tick += self.tick_us;
        }
        self.next_tick = Some(tick);
    }
}

/// Replays `files` (stdin for `-` or none) through the pipeline configured by `cfg`, calling
/// `sink` for each alert transition as it happens.
pub fn replay(
    cfg: &Config,
    files: &[PathBuf],
    progress: bool,
    sink: &mut dyn FnMut(&Transition),
) -> anyhow::Result<ReplayReport> {
    let started = Instant::now();
    let agg = Arc::new(Mutex::new(Aggregator::new(cfg.aggregate.clone())));
    let pool = Pool::start(
        &cfg.pool,
        &cfg.aggregate,
        Arc::new(cfg.load_balancers.clone()),
        Arc::clone(&agg),
        Arc::new(|| None),
        None,
    )
    .context("starting worker threads")?;
    let (done_tx, done_rx) = channel();
    let mut co = Coordinator {
        agg: Arc::clone(&agg),
        engine: AlertEngine::new(cfg.alerts.clone()),
        prefix: Prefix::default(),
        done_rx,
        next_tick: None,
        tick_us: i64::from(cfg.aggregate.bucket_secs) * 1_000_000,
        lateness_us: i64::from(cfg.aggregate.allowed_lateness_secs) * 1_000_000,
        report: ReplayReport {
            lines: 0,
            parsed: 0,
            failed: 0,
            errors: BTreeMap::new(),
            snapshot: agg
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot(0),
            transitions: Vec::new(),
            unreadable: Vec::new(),
            seconds: 0.0,
        },
    };
    // Batches in flight are bounded so the watermark never trails the newest merged data by
    // more than a few batches.
    let max_in_flight = (cfg.pool.workers * 2).max(2) as u64;
    let submitter = pool.submitter();
    let mut seq = 0u64;
    let mut bytes_read = 0u64;
    let mut bar = Progress::new(progress && io::stderr().is_terminal());
    let default_input = [PathBuf::from("-")];
    let inputs = if files.is_empty() {
        &default_input[..]
    } else {
        files
    };
    for path in inputs {
        let reader = match lines::open(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("albwatch replay: {}: {e}", path.display());
                co.report.unreadable.push(path.display().to_string());
                continue;
            }
        };
        let mut chunker = Chunker::new(reader, cfg.pool.max_line_bytes);
        loop {
            let chunk = match chunker.next_chunk(cfg.batch_bytes) {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("albwatch replay: {}: {e}", path.display());
                    co.report.unreadable.push(path.display().to_string());
                    break;
                }
            };
            bytes_read += chunk.lines.len() as u64;
            while seq - co.prefix.next >= max_in_flight {
                co.poll(true, sink);
            }
            let done = done_tx.clone();
            let this = seq;
            let mut batch = RawBatch::with_ack(
                chunk.lines,
                Box::new(move |o| {
                    let _ = done.send((this, o));
                }),
            );
            batch.too_long = chunk.too_long;
            submitter
                .submit(batch)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            seq += 1;
            co.poll(false, sink);
            bar.show(bytes_read, co.report.lines, started);
        }
    }
    drop(submitter);
    pool.finish();
    drop(done_tx);
    while co.prefix.next < seq {
        co.poll(true, sink);
    }
    // End of data: evaluate up to the newest event, so incidents at the very end still count.
    if let Some(max) = co.prefix.max_event {
        co.evaluate_until(max, sink);
    }
    bar.finish();
    let end = co.prefix.max_event.map_or(0, |t| t + 1);
    co.report.snapshot = agg
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .snapshot(end);
    co.report.seconds = started.elapsed().as_secs_f64();
    Ok(co.report)
}

/// A one-line progress display on stderr, only when it is a terminal.
struct Progress {
    on: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new(on: bool) -> Self {
        Progress { on, last: None }
    }

    fn show(&mut self, bytes: u64, lines: u64, started: Instant) {
        if !self.on || self.last.is_some_and(|t| t.elapsed().as_millis() < 200) {
            return;
        }
        self.last = Some(Instant::now());
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let _ = write!(
            io::stderr(),
            "\r{:>8.1} MiB read, {lines} lines, {:.0} lines/s ",
            bytes as f64 / 1_048_576.0,
            lines as f64 / secs
        );
    }

    fn finish(&self) {
        if self.on && self.last.is_some() {
            let _ = writeln!(io::stderr());
        }
    }
}
