//! `albwatch replay`: runs the whole pipeline over log files in event time — the daemon's
//! engine with the files as its one input. The files are one partition of the
//! [`crate::event_time::Timeline`] (read in order, finished at their end); the
//! [`Evaluator`] runs the alert rules at every tick the watermark passes, so the alerts and
//! their times are the ones `albwatch run` gives on the same files, whatever the thread timing.
//! It hands alert transitions to the caller as they happen and a [`ReplayReport`] at the end.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::aggregate::{Aggregator, Snapshot};
use crate::alert::notify::{self, AlertmanagerMetrics, Notifier, Timestamps};
use crate::alert::{AlertEngine, Transition};
use crate::classify::Cause;
use crate::clock::wall_clock_us;
use crate::config::Config;
use crate::event_time::{Evaluator, Timeline};
use crate::history::{History, RangeLimits};
use crate::input::PartitionInput;
use crate::input::files::{self, Unreadable};
use crate::input::s3::listing::{self, Selection};
use crate::lines::Chunk;
use crate::parse::StatusText;
use crate::pipeline::{BatchOutcome, Pool};

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
    /// The whole range for `--report`, when asked for.
    pub history: Option<History>,
}

impl ReplayReport {
    fn record(&mut self, outcome: &BatchOutcome) {
        self.lines += outcome.lines;
        self.parsed += outcome.parsed;
        self.failed += outcome.failed();
        for (kind, n) in crate::parse::ErrorKind::ALL.iter().zip(outcome.errors) {
            if n > 0 {
                *self.errors.entry(kind.as_str()).or_default() += n;
            }
        }
        if outcome.too_long > 0 {
            *self.errors.entry("line_too_long").or_default() += outcome.too_long;
        }
    }
}

/// The replay's side of the engine: counted batches come back on `done`, and every tick the
/// watermark passes is evaluated.
struct Coordinator<'s> {
    timeline: Timeline,
    evaluator: Evaluator,
    done: Receiver<BatchOutcome>,
    in_flight: u64,
    report: ReplayReport,
    sink: &'s mut dyn FnMut(&Transition),
}

impl Coordinator<'_> {
    /// Takes counted batches without waiting (or waiting for one when `block`), then
    /// evaluates up to the watermark.
    fn poll(&mut self, block: bool) {
        if block {
            match self.done.recv() {
                Ok(outcome) => {
                    self.in_flight -= 1;
                    self.report.record(&outcome);
                }
                // Every acknowledgement is gone (a worker died holding one): nothing more
                // will come back.
                Err(_) => self.in_flight = 0,
            }
        }
        while let Ok(outcome) = self.done.try_recv() {
            self.in_flight -= 1;
            self.report.record(&outcome);
        }
        let now = wall_clock_us();
        let progress = self.timeline.with(|w| w.progress(now));
        if let Some(progress) = progress {
            let Coordinator {
                evaluator,
                report,
                sink,
                ..
            } = self;
            evaluator.advance_to(progress, &mut |t| {
                sink(&t);
                report.transitions.push(t);
            });
        }
    }
}

/// What a replay reads.
#[derive(Debug, Clone)]
pub enum Source {
    /// Local files in the order given (stdin for `-` or none).
    Files(Vec<PathBuf>),
    /// The ELB log objects of a time range in S3, in the order of their periods.
    S3(Selection),
}

/// Replays `source` through the pipeline configured by `cfg`, calling `sink` for each alert
/// transition as it happens. With `history`, the report keeps the whole range within those
/// limits, for `--report`.
pub fn replay(
    cfg: &Config,
    source: &Source,
    progress: bool,
    history: Option<RangeLimits>,
    sink: &mut dyn FnMut(&Transition),
) -> anyhow::Result<ReplayReport> {
    let started = Instant::now();
    let agg = Arc::new(Mutex::new(Aggregator::new(cfg.aggregate.clone())));
    let max_future = cfg.event_time.max_future_us();
    let pool = Pool::start(
        &cfg.pool,
        &cfg.aggregate,
        Arc::new(cfg.load_balancers.clone()),
        Arc::clone(&agg),
        Arc::new(move || wall_clock_us().saturating_add(max_future)),
        None,
    )
    .context("starting worker threads")?;
    let timeline = Timeline::new();
    let input = PartitionInput::open(
        &timeline,
        files::run_partition(cfg.event_time.out_of_order_us()),
        pool.submitter(),
        Arc::new(wall_clock_us),
    );
    let (done_tx, done_rx) = channel();
    let empty = agg
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .snapshot(0);
    let mut evaluator = Evaluator::new(Arc::clone(&agg), AlertEngine::new(cfg.alerts.clone()));
    if let Some(limits) = history {
        evaluator = evaluator.with_history(History::with_range(limits));
    }
    let mut co = Coordinator {
        timeline: timeline.clone(),
        evaluator,
        done: done_rx,
        in_flight: 0,
        report: ReplayReport {
            lines: 0,
            parsed: 0,
            failed: 0,
            errors: BTreeMap::new(),
            snapshot: empty,
            transitions: Vec::new(),
            unreadable: Vec::new(),
            seconds: 0.0,
            history: None,
        },
        sink,
    };
    // Batches in flight are bounded so the watermark never trails the newest merged data by
    // more than a few batches.
    let max_in_flight = (cfg.pool.workers * 2).max(2) as u64;
    let mut bytes_read = 0u64;
    let mut bar = Progress::new(progress && io::stderr().is_terminal());
    let stdin = [PathBuf::from("-")];
    let buffers = input.buffers().clone();
    let batches: Box<dyn Iterator<Item = Result<Chunk, Unreadable>>> = match source {
        Source::Files(files) => {
            let paths = if files.is_empty() { &stdin[..] } else { files };
            Box::new(files::run_batches(
                paths,
                cfg.batch_bytes,
                cfg.pool.max_line_bytes,
                &buffers,
            ))
        }
        Source::S3(selection) => {
            let objects = listing::open(selection.clone(), cfg.s3.region.clone())?;
            if progress {
                eprintln!(
                    "albwatch replay: {} objects in s3://{}/{}",
                    objects.count, selection.url.bucket, selection.url.prefix
                );
            }
            Box::new(objects.chunks(cfg.batch_bytes, cfg.pool.max_line_bytes, buffers.clone()))
        }
    };
    for item in batches {
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(u) => {
                eprintln!("albwatch replay: {}: {}", u.path.display(), u.error);
                co.report.unreadable.push(u.path.display().to_string());
                continue;
            }
        };
        bytes_read += chunk.lines.len() as u64;
        while co.in_flight >= max_in_flight {
            co.poll(true);
        }
        let done = done_tx.clone();
        let mut batch = files::batch_of(chunk);
        batch.ack = Some(Box::new(move |o| {
            let _ = done.send(o);
        }));
        input.submit(batch).map_err(|e| anyhow::anyhow!("{e}"))?;
        co.in_flight += 1;
        co.poll(false);
        bar.show(bytes_read, co.report.lines, started);
    }
    // End of data: the partition finishes, so the watermark moves to the newest event and
    // incidents at the very end are evaluated too.
    input.finish();
    drop(input);
    pool.finish();
    drop(done_tx);
    while co.in_flight > 0 {
        co.poll(true);
    }
    co.poll(false);
    bar.finish();
    let end = co.timeline.with(|w| w.watermark(wall_clock_us()));
    co.report.snapshot = agg
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .snapshot(end.map_or(0, |t| t + 1));
    co.report.seconds = started.elapsed().as_secs_f64();
    co.report.history = co.evaluator.take_history();
    Ok(co.report)
}

impl ReplayReport {
    /// The Prometheus exposition of the final snapshot (`replay --metrics-out`), the same
    /// families as the daemon's `/metrics`, stamped at the newest event.
    pub fn exposition(&self) -> prometheus::Result<Vec<u8>> {
        let registry = crate::export::new_registry();
        let snapshot = self.snapshot.clone();
        let at = snapshot.max_event_time.unwrap_or(snapshot.end);
        let attribute_labels = snapshot.attribute_labels.to_vec();
        crate::export::register_snapshot_metrics(
            &registry,
            Arc::new(move || snapshot.clone()),
            Arc::new(move || at),
            &attribute_labels,
        )?;
        let (_, body) = crate::export::admin::encode(&registry)?;
        Ok(body)
    }

    /// The summary `albwatch replay` prints: counts, top codes, top failing targets, causes
    /// and every alert transition.
    pub fn write_summary(&self, out: &mut impl Write) -> io::Result<()> {
        let r = self;
        let mut by_code: BTreeMap<Option<u16>, u64> = BTreeMap::new();
        let mut by_cause: BTreeMap<Cause, u64> = BTreeMap::new();
        let mut failing: Vec<(u64, String)> = Vec::new();
        for s in &r.snapshot.series {
            let mut errors = 0;
            for &(code, cause, n) in &s.totals {
                *by_code.entry(code).or_default() += n;
                *by_cause.entry(cause).or_default() += n;
                if cause.is_alertable() {
                    errors += n;
                }
            }
            if errors > 0 {
                let l = &s.labels;
                failing.push((
                    errors,
                    format!("{} (tg {}, {})", l.target, l.target_group, l.elb),
                ));
            }
        }
        let requests: u64 = by_code.values().sum();
        writeln!(
            out,
            "replayed {} lines in {:.2} s ({:.0} lines/s): {} requests counted, {} lines not counted, {} late",
            r.lines,
            r.seconds,
            r.lines as f64 / r.seconds.max(1e-9),
            requests,
            r.failed,
            r.snapshot.late_entries
        )?;
        for (kind, n) in &r.errors {
            writeln!(out, "  not counted: {n} {kind}")?;
        }
        let mut codes: Vec<_> = by_code.into_iter().collect();
        codes.sort_by_key(|c| std::cmp::Reverse(c.1));
        writeln!(out, "top codes:")?;
        for (code, n) in codes.iter().take(8) {
            writeln!(out, "  {:>3}  {n}", StatusText(*code))?;
        }
        failing.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        writeln!(out, "top failing targets (faults):")?;
        for (n, target) in failing.iter().take(8) {
            writeln!(out, "  {n:>8}  {target}")?;
        }
        let mut causes: Vec<_> = by_cause.into_iter().collect();
        causes.sort_by_key(|c| std::cmp::Reverse(c.1));
        writeln!(out, "causes:")?;
        for (cause, n) in &causes {
            writeln!(out, "  {n:>8}  {}", cause.as_str())?;
        }
        writeln!(out, "alerts ({} transitions):", r.transitions.len())?;
        for t in &r.transitions {
            writeln!(out, "  {}", crate::alert::text::transition_line(t))?;
        }
        Ok(())
    }
}

/// Replay's Alertmanager client: the alerts with their event times, sent in the background
/// while the replay runs, and waited for at the end.
pub struct Pusher {
    runtime: tokio::runtime::Runtime,
    notifier: Arc<Notifier>,
}

impl Pusher {
    /// How long the end of a replay waits for every Alertmanager to take the alerts.
    const FLUSH: Duration = Duration::from_secs(30);

    /// A client for `cfg.alertmanager`'s endpoints, `None` without any.
    pub fn start(cfg: &Config) -> anyhow::Result<Option<Self>> {
        let am = &cfg.alertmanager;
        if am.endpoints.is_empty() {
            return Ok(None);
        }
        let runtime = crate::app::runtime()?;
        let generator = match &am.external_url {
            Some(url) => Some(notify::alert_page(url).map_err(anyhow::Error::msg)?),
            None => None,
        };
        let notifier = {
            let _entered = runtime.enter();
            Notifier::start(
                am,
                Timestamps::Event,
                generator,
                wall_clock_us,
                AlertmanagerMetrics::register(
                    &prometheus::Registry::new(),
                    &cfg.aggregate.attribute_labels,
                )?,
            )?
        };
        Ok(Some(Pusher { runtime, notifier }))
    }

    /// Hands one transition to the senders; never waits on the network.
    pub fn push(&self, t: &Transition) {
        self.notifier
            .update(std::slice::from_ref(t), [], wall_clock_us());
    }

    /// Waits for delivery; returns the Alertmanagers that did not take the last state.
    pub fn finish(self) -> Vec<reqwest::Url> {
        self.runtime.block_on(async {
            let behind = self.notifier.flush(Self::FLUSH).await;
            self.notifier.stop().await;
            behind
        })
    }
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
