//! The daemon's wiring and shutdown order — the only place that knows every stage. It binds
//! the Firehose endpoint (when configured) and the admin port, starts the worker pool, the
//! Kinesis consumer (when configured), the inputs (files, or the demo traffic generator), the
//! alert evaluator on the wall clock and the admin server. On SIGTERM/SIGINT (or the end of
//! `--duration`) it stops the inputs first — Firehose answers 503 to new requests while those
//! in flight finish; Kinesis stops polling, waits for its batches' acknowledgements and writes
//! its final checkpoints — then drains the queue through the workers, runs a final alert
//! evaluation and stops the admin server, each step within the grace period.

use std::future::Future;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use reqwest::Url;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::aggregate::Aggregator;
use crate::alert::notify::{AlertmanagerMetrics, Notifier, Timestamps, ValidAlertmanagerConfig};
use crate::alert::{AlertEngine, Transition};
use crate::config::Config;
use crate::demo::DemoTraffic;
use crate::export::admin::{self, Health};
use crate::export::{new_registry, register_snapshot_metrics};
use crate::firehose::{self, FirehoseMetrics};
use crate::kinesis::{KinesisMetrics, SdkApi};
use crate::lines;
use crate::pipeline::{Pool, RawBatch, Submitter};

/// How long shutdown may take before the process gives up on draining.
pub const GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Where the daemon's log lines come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// Files read to their end, or followed as they grow.
    Files { paths: Vec<PathBuf>, follow: bool },
    /// The built-in traffic generator with scripted incidents, in wall-clock time.
    Demo {
        seed: u64,
        requests_per_sec: u32,
        /// Where in its cycle the incident script starts, in seconds.
        script_offset_secs: u32,
    },
}

/// Microseconds since the Unix epoch, now.
pub fn wall_clock_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Runs the daemon until `stop` resolves (a signal, or the demo's `--duration`), calling
/// `on_alert` for every alert transition.
pub async fn run(
    cfg: Config,
    inputs: Vec<Input>,
    stop: impl Future<Output = ()>,
    on_alert: Arc<dyn Fn(&Transition) + Send + Sync>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.admin_addr)
        .await
        .with_context(|| format!("binding the admin port {}", cfg.admin_addr))?;
    let admin_addr: SocketAddr = listener.local_addr()?;
    eprintln!("albwatch: metrics on http://{admin_addr}/metrics");

    // The Firehose attribute labels (in `cfg.aggregate`) key the series; the exporter's
    // descriptors and the alert gauge need the same names.
    let attribute_labels = &cfg.aggregate.attribute_labels;
    let agg = Arc::new(Mutex::new(Aggregator::new(cfg.aggregate.clone())));
    let registry = new_registry();
    let pipeline_metrics = crate::pipeline::PipelineMetrics::register(&registry)?;
    let source_agg = Arc::clone(&agg);
    register_snapshot_metrics(
        &registry,
        Arc::new(move || {
            let now = wall_clock_us();
            let mut agg = source_agg.lock().unwrap_or_else(PoisonError::into_inner);
            agg.advance(now);
            agg.snapshot(now)
        }),
        Arc::new(wall_clock_us),
        attribute_labels,
    )?;
    let pool = Pool::start(
        &cfg.pool,
        &cfg.aggregate,
        Arc::new(cfg.load_balancers.clone()),
        Arc::clone(&agg),
        Arc::new(|| Some(wall_clock_us())),
        Some(pipeline_metrics),
    )?;

    // The Firehose endpoint is bound before the admin server takes the registry, so its
    // metrics are registered; it stops first on shutdown (draining: new requests get 503).
    let draining = Arc::new(AtomicBool::new(false));
    let (firehose_stop_tx, firehose_stop_rx) = watch::channel(false);
    let firehose_task = match cfg.firehose.addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the Firehose endpoint {addr}"))?;
            let scheme = if cfg.firehose.is_tls() {
                "https"
            } else {
                "http"
            };
            eprintln!(
                "albwatch: Firehose endpoint on {scheme}://{}",
                listener.local_addr()?
            );
            let metrics = FirehoseMetrics::register(&registry, &cfg.firehose)?;
            let mut rx = firehose_stop_rx;
            Some(tokio::spawn(firehose::serve(
                listener,
                cfg.firehose.clone(),
                pool.submitter(),
                metrics,
                Arc::clone(&draining),
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                },
            )))
        }
        None => None,
    };

    // The Kinesis consumer holds a Submitter clone until it returns, so it is stopped and
    // awaited (final checkpoints written after its batches are acknowledged) before the pool
    // finishes. Checkpoints are opened now so a bad directory fails before anything runs.
    let (kinesis_stop_tx, kinesis_stop_rx) = watch::channel(false);
    let kinesis_task = match cfg.kinesis.stream.clone() {
        Some(stream) => {
            let store = crate::kinesis::checkpoint::FileCheckpointStore::open(
                cfg.kinesis.checkpoint_dir.clone(),
            )?;
            let metrics = KinesisMetrics::register(&registry)?;
            let client = crate::kinesis::consumer::sdk_client(cfg.kinesis.region.as_deref()).await;
            eprintln!("albwatch: reading Kinesis stream {stream}");
            let consumer = crate::kinesis::consumer::run(
                SdkApi::new(client, stream),
                cfg.kinesis.clone(),
                Arc::new(store),
                pool.submitter(),
                metrics,
                crate::decode::DecodeLimits {
                    max_line_bytes: cfg.pool.max_line_bytes,
                    ..Default::default()
                },
                kinesis_stop_rx,
            );
            Some(tokio::spawn(async move {
                // Said at once, not at shutdown: the rest of the daemon keeps running.
                let result = consumer.await;
                if let Err(e) = &result {
                    eprintln!("albwatch: Kinesis input stopped: {e}");
                }
                result
            }))
        }
        None => None,
    };

    // The alert engine and the notifier exist before the admin server, which shows the
    // engine's active alerts; the notifier's senders start now so a slow Alertmanager is
    // already being retried in the background when the first alert fires.
    let engine = Arc::new(Mutex::new(AlertEngine::new(cfg.alerts.clone())));
    let notifier = Notifier::start(
        &cfg.alertmanager,
        Timestamps::Wall,
        Some(alert_page_url(&cfg.alertmanager, admin_addr)?),
        wall_clock_us,
        AlertmanagerMetrics::register(&registry, attribute_labels)?,
    )?;
    for url in &cfg.alertmanager.endpoints {
        eprintln!("albwatch: sending alerts to {url}");
    }
    let alert_view: admin::AlertView = {
        let engine = Arc::clone(&engine);
        Arc::new(move || {
            engine
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .active()
                .cloned()
                .collect()
        })
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let health = Health::new();
    let admin_stop = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let admin_task = tokio::spawn(admin::serve(
        listener,
        registry,
        health.clone(),
        alert_view,
        admin_stop,
    ));

    let stopping = Arc::new(AtomicBool::new(false));
    let mut input_threads = Vec::new();
    for input in inputs {
        let submitter = pool.submitter();
        let stopping = Arc::clone(&stopping);
        let batch_bytes = cfg.batch_bytes;
        let max_line = cfg.pool.max_line_bytes;
        input_threads.push(std::thread::spawn(move || match input {
            Input::Files { paths, follow } => {
                for path in paths {
                    if let Err(e) =
                        read_file(&path, follow, batch_bytes, max_line, &submitter, &stopping)
                    {
                        eprintln!("albwatch: {}: {e:#}", path.display());
                    }
                }
            }
            Input::Demo {
                seed,
                requests_per_sec,
                script_offset_secs,
            } => {
                let traffic = DemoTraffic::new(seed, wall_clock_us(), requests_per_sec)
                    .skip_script(script_offset_secs);
                demo_input(traffic, &submitter, &stopping)
            }
        }));
    }

    let eval_every = Duration::from_secs(u64::from(cfg.aggregate.bucket_secs.clamp(1, 10)));
    let alert_task = {
        let agg = Arc::clone(&agg);
        let engine = Arc::clone(&engine);
        let notifier = Arc::clone(&notifier);
        let on_alert = Arc::clone(&on_alert);
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(eval_every);
            loop {
                tokio::select! {
                    _ = tick.tick() => evaluate(&agg, &engine, &notifier, on_alert.as_ref()),
                    _ = rx.wait_for(|s| *s) => return,
                }
            }
        })
    };
    health.set_ready(true);

    stop.await;
    eprintln!("albwatch: shutting down");
    health.set_ready(false);
    draining.store(true, Ordering::Relaxed);
    let _ = firehose_stop_tx.send(true);
    if let Some(task) = firehose_task {
        // Requests in flight finish (their batches are already queued) before the queue closes.
        match tokio::time::timeout(GRACE_PERIOD, task).await {
            Ok(Ok(Err(e))) => eprintln!("albwatch: Firehose endpoint: {e}"),
            Ok(_) => {}
            Err(_) => {
                eprintln!("albwatch: Firehose requests did not finish within {GRACE_PERIOD:?}")
            }
        }
    }
    let _ = kinesis_stop_tx.send(true);
    if let Some(task) = kinesis_task {
        match tokio::time::timeout(GRACE_PERIOD, task).await {
            Ok(_) => {}
            Err(_) => eprintln!("albwatch: Kinesis shards did not stop within {GRACE_PERIOD:?}"),
        }
    }
    stopping.store(true, Ordering::Relaxed);
    let drained = tokio::task::spawn_blocking(move || {
        for t in input_threads {
            let _ = t.join();
        }
        pool.finish();
    });
    if tokio::time::timeout(GRACE_PERIOD, drained).await.is_err() {
        eprintln!("albwatch: inputs did not drain within {GRACE_PERIOD:?}; exiting anyway");
    }
    evaluate(&agg, &engine, &notifier, on_alert.as_ref());
    let _ = stop_tx.send(true);
    let _ = alert_task.await;
    // The last state reaches Alertmanager before the process goes, if it can within the grace
    // period; firing alerts then expire by their `endsAt` lease unless a successor resends.
    for url in notifier.flush(GRACE_PERIOD).await {
        eprintln!("albwatch: Alertmanager {url} did not take the last alert state before exit");
    }
    notifier.stop().await;
    match tokio::time::timeout(GRACE_PERIOD, admin_task).await {
        Ok(Ok(result)) => result.context("admin server")?,
        Ok(Err(e)) => return Err(e).context("admin server task"),
        Err(_) => eprintln!("albwatch: admin server did not stop within {GRACE_PERIOD:?}"),
    }
    Ok(())
}

fn evaluate(
    agg: &Mutex<Aggregator>,
    engine: &Mutex<AlertEngine>,
    notifier: &Notifier,
    on_alert: &(dyn Fn(&Transition) + Send + Sync),
) {
    let now = wall_clock_us();
    let snapshot = {
        let mut agg = agg.lock().unwrap_or_else(PoisonError::into_inner);
        agg.advance(now);
        let window = engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .config()
            .window_secs;
        agg.snapshot_of(now, &[window])
    };
    let mut engine = engine.lock().unwrap_or_else(PoisonError::into_inner);
    let transitions = engine.evaluate(&snapshot, now);
    notifier.update(&transitions, engine.active(), now);
    drop(engine);
    for t in &transitions {
        on_alert(t);
    }
}

/// The live alert page as users reach it: `alertmanager.external_url`, or the admin address.
fn alert_page_url(cfg: &ValidAlertmanagerConfig, admin: SocketAddr) -> anyhow::Result<Url> {
    let base = match &cfg.external_url {
        Some(url) => url.clone(),
        None => Url::parse(&format!("http://{admin}/"))?,
    };
    crate::alert::notify::alert_page(&base).map_err(anyhow::Error::msg)
}

/// Generates demo traffic in wall-clock time, a batch every 250 ms, until told to stop.
fn demo_input(mut traffic: DemoTraffic, submitter: &Submitter, stopping: &AtomicBool) {
    while !stopping.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        let mut lines = Vec::new();
        if traffic.generate_until(wall_clock_us(), &mut lines) > 0
            && submitter.submit(RawBatch::new(lines)).is_err()
        {
            return;
        }
    }
}

/// Reads one file in batches of whole lines; with `follow`, keeps reading as it grows (a
/// shrinking file is taken as truncated and re-read from its start), until told to stop. Gzip
/// files are read once: they are finished objects, not growing logs.
fn read_file(
    path: &std::path::Path,
    follow: bool,
    batch_bytes: usize,
    max_line: usize,
    submitter: &Submitter,
    stopping: &AtomicBool,
) -> anyhow::Result<()> {
    let submit = |lines: Vec<u8>, too_long: u64| {
        let mut batch = RawBatch::new(lines);
        batch.too_long = too_long;
        submitter.submit(batch).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let mut file = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let is_gzip = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0))?;
    if !follow || is_gzip {
        let mut chunker = lines::Chunker::new(lines::open(path)?, max_line);
        while let Some(chunk) = chunker.next_chunk(batch_bytes)? {
            if stopping.load(Ordering::Relaxed) {
                break;
            }
            submit(chunk.lines, chunk.too_long)?;
        }
        return Ok(());
    }
    let mut chunker = lines::Chunker::new(BufReader::new(file), max_line);
    let mut last_len = 0;
    while !stopping.load(Ordering::Relaxed) {
        let (chunk, at_end) = chunker.available(batch_bytes)?;
        if !chunk.lines.is_empty() || chunk.too_long > 0 {
            submit(chunk.lines, chunk.too_long)?;
        }
        if at_end {
            std::thread::sleep(Duration::from_millis(250));
            // A file that shrank was truncated (or replaced): read it again from the start.
            let len = std::fs::metadata(path).map_or(last_len, |m| m.len());
            if len < last_len {
                chunker = lines::Chunker::new(BufReader::new(std::fs::File::open(path)?), max_line);
            }
            last_len = len;
        }
    }
    Ok(())
}
