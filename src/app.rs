//! The daemon's wiring and shutdown order — the only place that knows every stage. It first
//! checks that the Kinesis stream and the S3 input's queue (when configured) can be read, so
//! an AWS set-up no retry can fix stops start-up before any port is bound; then it binds the
//! admin port and the Firehose endpoint (when configured), starts the worker pool, the inputs
//! (files, the demo generator, Firehose, Kinesis, S3 — each feeding the pool through its
//! event-time partitions) and the evaluator, which runs the alert rules at every evaluation
//! tick the event-time watermark passes, exactly as `replay` does. On SIGTERM/SIGINT (or the
//! end of `--duration`) it stops the inputs first — Firehose answers 503 to new requests while
//! those in flight finish; Kinesis stops polling, waits for its batches' acknowledgements and
//! writes its final checkpoints; S3 hands the messages of objects still being read back to the
//! queue — then drains the queue through the workers, evaluates once more and stops the admin
//! server, each step within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use reqwest::Url;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::aggregate::Aggregator;
use crate::alert::hold::AlertHold;
use crate::alert::notify::{AlertmanagerMetrics, Notifier, Timestamps, ValidAlertmanagerConfig};
use crate::alert::{AlertEngine, Status, Transition};
use crate::clock::{daemon_clock, wall_clock_us};
use crate::config::Config;
use crate::event_time::metrics::EventTimeMetrics;
use crate::event_time::{Evaluator, InputKind, Timeline};
use crate::export::WallClock;
use crate::export::admin::{self, Health};
use crate::export::{new_registry, register_snapshot_metrics_with};
use crate::history::History;
use crate::html::page::StatusPage;
use crate::input::firehose::{self, FirehoseMetrics};
use crate::input::kinesis::checkpoint::FileCheckpointStore;
use crate::input::kinesis::consumer::{self, ConsumerError};
use crate::input::kinesis::lease::fleet::{self, FleetHooks, LeaseMetrics};
use crate::input::kinesis::lease::table::DynamoLeaseTable;
use crate::input::kinesis::{KinesisMetrics, SdkApi};
use crate::input::s3;
use crate::input::{Input, InputContext, PartitionTiming, Shutdown};
use crate::pipeline::Pool;

/// How long shutdown may take before the process gives up on draining.
pub const GRACE_PERIOD: Duration = Duration::from_secs(10);

/// How often the evaluator looks at the watermark (wall clock). Evaluation itself happens at
/// event-time ticks; this only bounds how soon after the data a tick is evaluated.
const EVALUATE_EVERY: Duration = Duration::from_secs(1);

/// Runs the daemon until `stop` resolves (a signal, or the demo's `--duration`), calling
/// `on_alert` for every alert transition.
pub async fn run(
    cfg: Config,
    inputs: Vec<Input>,
    stop: impl Future<Output = ()>,
    on_alert: Arc<dyn Fn(&Transition) + Send + Sync>,
) -> anyhow::Result<()> {
    // An AWS set-up no retry can fix (no credentials or region, an unknown stream, access
    // denied) stops start-up here, as an `aws::SetupError`, before any port is bound.
    let kinesis_api = match &cfg.kinesis.stream {
        Some(stream) => Some(SdkApi::connect(stream, cfg.kinesis.region.as_deref()).await?),
        None => None,
    };
    let lease_table = match (&cfg.kinesis.stream, &cfg.kinesis.leases) {
        (Some(_), Some(leases)) => {
            Some(DynamoLeaseTable::connect(&leases.table, cfg.kinesis.region.as_deref()).await?)
        }
        _ => None,
    };
    let s3_clients = match &cfg.s3.queue_url {
        Some(queue) => Some(s3::Clients::connect(queue, cfg.s3.region.as_deref()).await?),
        None => None,
    };
    let listener = TcpListener::bind(cfg.admin_addr)
        .await
        .with_context(|| format!("binding the admin port {}", cfg.admin_addr))?;
    let admin_addr: SocketAddr = listener.local_addr()?;
    eprintln!("albwatch: metrics on http://{admin_addr}/metrics");
    eprintln!("albwatch: status page on http://{admin_addr}/");
    let wall = daemon_clock();

    // The Firehose attribute labels (in `cfg.aggregate`) key the series; the exporter's
    // descriptors and the alert gauge need the same names.
    let attribute_labels = &cfg.aggregate.attribute_labels;
    let agg = Arc::new(Mutex::new(Aggregator::new(cfg.aggregate.clone())));
    let registry = new_registry();
    let pipeline_metrics = crate::pipeline::PipelineMetrics::register(&registry)?;
    let source_agg = Arc::clone(&agg);
    register_snapshot_metrics_with(
        &registry,
        // The windows the watermark has closed: what the alerts were evaluated on.
        Arc::new(move || {
            let agg = source_agg.lock().unwrap_or_else(PoisonError::into_inner);
            agg.snapshot(agg.clock().unwrap_or(i64::MIN))
        }),
        Arc::clone(&wall),
        attribute_labels,
        cfg.metrics.clone(),
    )?;
    let timeline = Timeline::new();
    let event_metrics = EventTimeMetrics::register(&registry, timeline.clone(), Arc::clone(&wall))?;
    let max_future = cfg.event_time.max_future_us();
    let future_clock = Arc::clone(&wall);
    let pool = Pool::start(
        &cfg.pool,
        &cfg.aggregate,
        Arc::new(cfg.load_balancers.clone()),
        Arc::clone(&agg),
        Arc::new(move || future_clock().saturating_add(max_future)),
        Some(pipeline_metrics),
    )?;
    // One signal stops every input; the admin server and the evaluator stop after the drain.
    let (stop_inputs, inputs_stop) = Shutdown::channel();
    let ctx = InputContext {
        timeline: timeline.clone(),
        submitter: pool.submitter(),
        wall_clock: Arc::clone(&wall),
        timing: PartitionTiming {
            out_of_order_us: cfg.event_time.out_of_order_us(),
            idle_us: cfg.event_time.idle_timeout_us(),
        },
        batch_bytes: cfg.batch_bytes,
        max_line_bytes: cfg.pool.max_line_bytes,
        stop: inputs_stop.clone(),
    };

    // The Firehose endpoint is bound before the admin server takes the registry, so its
    // metrics are registered; it stops first on shutdown (draining: new requests get 503).
    let firehose_task = start_firehose(&cfg, &registry, &ctx).await?;
    // The Kinesis consumer holds the pool's submitter until it returns, so it is stopped and
    // awaited (final checkpoints written after its batches are acknowledged) before the pool
    // finishes.
    let alert_hold = cfg.kinesis.leases.as_ref().map(|_| {
        Arc::new(AlertHold::new(
            i64::from(cfg.alerts.window_secs) * 1_000_000,
        ))
    });
    let kinesis_task = start_kinesis(
        &cfg,
        kinesis_api,
        lease_table,
        alert_hold.clone(),
        &registry,
        &ctx,
    )?;
    // The S3 input likewise: its objects being read stop, and their messages go back to the
    // queue at once, before the pool finishes.
    let s3_task = start_s3(&cfg, s3_clients, &registry, &ctx)?;

    // The evaluator and the notifier exist before the admin server, which shows the active
    // alerts; the notifier's senders start now so a slow Alertmanager is already being
    // retried in the background when the first alert fires.
    let evaluator = Arc::new(Mutex::new(
        Evaluator::new(Arc::clone(&agg), AlertEngine::new(cfg.alerts.clone()))
            .with_history(History::new()),
    ));
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
        let evaluator = Arc::clone(&evaluator);
        Arc::new(move || {
            evaluator
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .engine()
                .active()
                .cloned()
                .collect()
        })
    };

    let status_view: admin::StatusView = {
        let (evaluator, agg, timeline, wall) = (
            Arc::clone(&evaluator),
            Arc::clone(&agg),
            timeline.clone(),
            Arc::clone(&wall),
        );
        Arc::new(move || {
            let now = wall();
            let partitions = timeline.with(|w| w.view(now));
            // The evaluator's own order: evaluator, then aggregator.
            let evaluator = evaluator.lock().unwrap_or_else(PoisonError::into_inner);
            let agg = agg.lock().unwrap_or_else(PoisonError::into_inner);
            Some(StatusPage::gather(&evaluator, &agg, &partitions, now))
        })
    };

    let (stop_outputs, outputs_stop) = Shutdown::channel();
    let health = Health::new();
    let admin_task = tokio::spawn(admin::serve(
        listener,
        registry,
        health.clone(),
        admin::Views {
            alerts: alert_view,
            status: status_view,
        },
        outputs_stop.clone().wait(),
    ));

    let input_threads = ctx.spawn(inputs);

    let evaluation = Evaluation {
        timeline: timeline.clone(),
        evaluator: Arc::clone(&evaluator),
        notifier: Arc::clone(&notifier),
        metrics: event_metrics,
        on_alert,
        wall,
        hold: alert_hold,
    };
    let alert_task = tokio::spawn(evaluate_every(evaluation.clone(), outputs_stop.clone()));
    health.set_ready(true);

    stop.await;
    eprintln!("albwatch: shutting down");
    health.set_ready(false);
    let _ = stop_inputs.send(true);
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
    // Kinesis and S3 stop side by side, within one grace period between them.
    let kinesis_stopped = async {
        if let Some(task) = kinesis_task {
            let _ = task.await;
        }
    };
    let s3_stopped = async {
        if let Some(task) = s3_task {
            let _ = task.await;
        }
    };
    let stopped = async { tokio::join!(kinesis_stopped, s3_stopped) };
    if tokio::time::timeout(GRACE_PERIOD, stopped).await.is_err() {
        eprintln!("albwatch: Kinesis shards or S3 objects did not stop within {GRACE_PERIOD:?}");
    }
    let drained = tokio::task::spawn_blocking(move || {
        for t in input_threads {
            let _ = t.join();
        }
        pool.finish();
    });
    if tokio::time::timeout(GRACE_PERIOD, drained).await.is_err() {
        eprintln!("albwatch: inputs did not drain within {GRACE_PERIOD:?}; exiting anyway");
    }
    evaluation.step();
    let _ = stop_outputs.send(true);
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

/// The daemon's side of the event-time engine: at each step, the watermark at the wall clock
/// now, every tick it has passed evaluated, the transitions sent and reported.
#[derive(Clone)]
pub struct Evaluation {
    pub timeline: Timeline,
    pub evaluator: Arc<Mutex<Evaluator>>,
    pub notifier: Arc<Notifier>,
    pub metrics: EventTimeMetrics,
    pub on_alert: Arc<dyn Fn(&Transition) + Send + Sync>,
    pub wall: WallClock,
    /// Holds this instance's own alerts while windows are partial after a Kinesis lease moved
    /// here (a fleet only).
    pub hold: Option<Arc<AlertHold>>,
}

impl Evaluation {
    /// Evaluates up to the watermark and hands on what changed.
    pub fn step(&self) {
        let now = (self.wall)();
        let progress = self.timeline.with(|w| w.progress(now));
        let mut transitions = Vec::new();
        let mut evaluator = self
            .evaluator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(progress) = progress {
            evaluator.advance_to(progress, &mut |t| transitions.push(t));
        }
        if let Some(hold) = &self.hold {
            let engine = evaluator.engine();
            transitions = hold.pass(transitions, evaluator.evaluated_to(), |a| {
                engine.active().any(|x| x.labels == a.labels)
            });
        }
        for t in &transitions {
            if t.status == Status::Firing {
                self.metrics.fired(now, t.alert.starts_at_us);
            }
        }
        self.notifier
            .update(&transitions, evaluator.engine().active(), now);
        drop(evaluator);
        for t in &transitions {
            (self.on_alert)(t);
        }
    }
}

/// Binds and serves the Firehose endpoint when `firehose.addr` is set.
async fn start_firehose(
    cfg: &Config,
    registry: &prometheus::Registry,
    ctx: &InputContext,
) -> anyhow::Result<Option<JoinHandle<std::io::Result<()>>>> {
    let Some(addr) = cfg.firehose.addr else {
        return Ok(None);
    };
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
    let metrics = FirehoseMetrics::register(registry, &cfg.firehose)?;
    Ok(Some(tokio::spawn(firehose::serve(
        listener,
        cfg.firehose.clone(),
        ctx.source(InputKind::Firehose),
        metrics,
        ctx.stop.clone(),
        ctx.stop.clone().wait(),
    ))))
}

/// Starts the Kinesis consumer over `api`, the checked client when `kinesis.stream` is set:
/// alone with file checkpoints (opened now, so a bad directory fails before anything runs),
/// or as one of a fleet over `leases` when `kinesis.lease_table` is set.
fn start_kinesis(
    cfg: &Config,
    api: Option<SdkApi>,
    leases: Option<DynamoLeaseTable>,
    hold: Option<Arc<AlertHold>>,
    registry: &prometheus::Registry,
    ctx: &InputContext,
) -> anyhow::Result<Option<JoinHandle<Result<(), ConsumerError>>>> {
    let (Some(api), Some(stream)) = (api, &cfg.kinesis.stream) else {
        return Ok(None);
    };
    let metrics = KinesisMetrics::register(registry)?;
    let limits = crate::decode::DecodeLimits {
        max_line_bytes: cfg.pool.max_line_bytes,
        ..Default::default()
    };
    let partitions = ctx.source(InputKind::Kinesis);
    let stop = ctx.stop.receiver();
    let consumer: std::pin::Pin<Box<dyn Future<Output = Result<(), ConsumerError>> + Send>> = match (
        leases,
        &cfg.kinesis.leases,
    ) {
        (Some(table), Some(settings)) => {
            eprintln!(
                "albwatch: reading Kinesis stream {stream} as {} of the fleet in lease table {}",
                settings.worker_id, settings.table
            );
            // A shard read before by another instance is complete here only from the
            // current watermark on: hold this instance's own alerts one window past it.
            let timeline = ctx.timeline.clone();
            let wall = Arc::clone(&ctx.wall_clock);
            let on_gain: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                if let (Some(hold), Some(from)) = (&hold, timeline.with(|w| w.watermark(wall()))) {
                    hold.start(from);
                }
            });
            Box::pin(fleet::run(
                api,
                cfg.kinesis.clone(),
                settings.clone(),
                table,
                partitions,
                metrics,
                FleetHooks {
                    metrics: LeaseMetrics::register(registry)?,
                    on_gain,
                },
                limits,
                stop,
            ))
        }
        _ => {
            let store = FileCheckpointStore::open(cfg.kinesis.checkpoint_dir.clone())?;
            eprintln!("albwatch: reading Kinesis stream {stream}");
            Box::pin(consumer::run(
                api,
                cfg.kinesis.clone(),
                Arc::new(store),
                partitions,
                metrics,
                limits,
                stop,
            ))
        }
    };
    Ok(Some(tokio::spawn(async move {
        // Said at once, not at shutdown: the rest of the daemon keeps running.
        let result = consumer.await;
        if let Err(e) = &result {
            eprintln!("albwatch: Kinesis input stopped: {e}");
        }
        result
    })))
}

/// Starts the S3 input over `clients`, the checked clients when `s3.queue_url` is set.
fn start_s3(
    cfg: &Config,
    clients: Option<s3::Clients>,
    registry: &prometheus::Registry,
    ctx: &InputContext,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let (Some(clients), Some(queue)) = (clients, &cfg.s3.queue_url) else {
        return Ok(None);
    };
    eprintln!("albwatch: reading S3 event notifications from {queue}");
    let input = s3::queue::S3Input {
        clients,
        cfg: cfg.s3.clone(),
        source: ctx.source(InputKind::S3),
        metrics: s3::S3Metrics::register(registry)?,
        wall: Arc::clone(&ctx.wall_clock),
        batch_bytes: cfg.batch_bytes,
        max_line: cfg.pool.max_line_bytes,
        stop: ctx.stop.clone(),
    };
    Ok(Some(tokio::spawn(s3::queue::run(input))))
}

/// Steps `evaluation` every second until `stop` is set.
pub async fn evaluate_every(evaluation: Evaluation, stop: Shutdown) {
    let mut tick = tokio::time::interval(EVALUATE_EVERY);
    let stopped = stop.wait();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => evaluation.step(),
            () = &mut stopped => return,
        }
    }
}

/// The async runtime every command that needs one runs on: two threads are plenty for the
/// inputs' I/O and the admin server; the work itself runs on the worker pool.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The live alert page as users reach it: `alertmanager.external_url`, or the admin address.
fn alert_page_url(cfg: &ValidAlertmanagerConfig, admin: SocketAddr) -> anyhow::Result<Url> {
    let base = match &cfg.external_url {
        Some(url) => url.clone(),
        None => Url::parse(&format!("http://{admin}/"))?,
    };
    crate::alert::notify::alert_page(&base).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests;
