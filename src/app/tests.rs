//! The daemon's evaluation loop under paused tokio time: real worker threads count the
//! batches, the loop steps on its own interval, and only `tokio::time::advance` moves the
//! clock that decides idleness — no sleeps, no wall-clock thresholds. A batch is waited for
//! with a blocking receive, which holds the paused runtime still so time cannot skip ahead
//! while a worker counts.

use std::sync::mpsc;

use super::*;
use crate::alert::AlertConfig;
use crate::alert::notify::AlertmanagerConfig;
use crate::classify::LoadBalancers;
use crate::event_time::PartitionSpec;
use crate::input::{PartitionInput, files};
use crate::pipeline::{PoolConfig, RawBatch};
use crate::test_support::{cause_line, retimed_tokens};

const S: i64 = 1_000_000;

struct Harness {
    wall: WallClock,
    timeline: Timeline,
    pool: Pool,
    fired: Arc<Mutex<Vec<Transition>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn start() -> Harness {
        let wall = daemon_clock();
        let agg_cfg = crate::aggregate::AggregateConfig::default();
        let agg = Arc::new(Mutex::new(Aggregator::new(agg_cfg.clone())));
        let pool = Pool::start(
            &PoolConfig {
                workers: 1,
                queue_batches: 4,
                max_line_bytes: 65_536,
            },
            &agg_cfg,
            Arc::new(LoadBalancers::default()),
            Arc::clone(&agg),
            Arc::new(|| i64::MAX),
            None,
        )
        .expect("worker thread");
        let timeline = Timeline::new();
        let registry = prometheus::Registry::new();
        let am = AlertmanagerConfig::default()
            .validate()
            .expect("default config");
        let fired = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&fired);
        let evaluation = Evaluation {
            timeline: timeline.clone(),
            evaluator: Arc::new(Mutex::new(Evaluator::new(
                agg,
                AlertEngine::new(AlertConfig::default()),
            ))),
            notifier: Notifier::start(
                &am,
                Timestamps::Wall,
                None,
                wall_clock_us,
                AlertmanagerMetrics::register(&registry, &[]).expect("metrics"),
            )
            .expect("notifier"),
            metrics: EventTimeMetrics::register(&registry, timeline.clone(), Arc::clone(&wall))
                .expect("metrics"),
            on_alert: Arc::new(move |t: &Transition| {
                sink.lock().expect("lock").push(t.clone());
            }),
            wall: Arc::clone(&wall),
            hold: None,
        };
        let (stop, stopped) = Shutdown::channel();
        let task = tokio::spawn(evaluate_every(evaluation, stopped));
        Harness {
            wall,
            timeline,
            pool,
            fired,
            stop,
            task,
        }
    }

    fn open(&self, name: &str, out_of_order_s: i64, idle_s: Option<i64>) -> PartitionInput {
        PartitionInput::open(
            &self.timeline,
            PartitionSpec {
                input: InputKind::Kinesis,
                name: name.to_string(),
                out_of_order_us: out_of_order_s * S,
                idle_us: idle_s.map(|s| s * S),
            },
            self.pool.submitter(),
            Arc::clone(&self.wall),
        )
    }

    /// Queues `lines` and blocks until a worker has counted them.
    fn count(&self, input: &PartitionInput, lines: String) {
        let (tx, rx) = mpsc::channel();
        let batch = RawBatch::with_ack(
            lines.into_bytes(),
            Box::new(move |_| {
                let _ = tx.send(());
            }),
        );
        input.submit(batch).expect("queued");
        rx.recv().expect("counted");
    }

    /// Lets the clock run `secs` seconds, the evaluation loop stepping as it goes.
    async fn pass(&self, secs: u64) {
        for _ in 0..secs {
            tokio::time::advance(Duration::from_secs(1)).await;
            tokio::task::yield_now().await;
        }
    }

    fn fired(&self) -> Vec<Transition> {
        self.fired.lock().expect("lock").clone()
    }

    /// Stops the loop and the worker; every input opened must be dropped first.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        drop(self.timeline);
        self.pool.finish();
    }
}

/// The start of the 10 s bucket holding `at`. Incidents start on a bucket boundary so that
/// all of their two seconds of lines fall in one bucket: a start taken from the wall clock as
/// it is would, a few runs in a hundred, put some of them in the next bucket and fire there.
fn bucket_start(at: i64) -> i64 {
    at.div_euclid(10 * S) * 10 * S
}

/// Fixture line `n` at `at`, `count` times a `gap_us` apart.
fn lines(n: usize, at: i64, count: i64, gap_us: i64) -> String {
    (0..count)
        .map(|i| retimed_tokens(cause_line(n), at + i * gap_us, 3_000).join(" ") + "\n")
        .collect()
}

/// A minute of healthy traffic on one target, then a burst of refused connections.
fn incident(at: i64) -> String {
    lines(0, at - 60 * S, 120, S / 2) + &lines(28, at, 20, S / 10)
}

#[tokio::test(start_paused = true)]
async fn a_quiet_partition_holds_the_watermark_only_until_its_idle_timeout() {
    let h = Harness::start();
    let t0 = bucket_start((h.wall)() - 600 * S);
    let busy = h.open("shard-busy", 60, Some(30));
    let quiet = h.open("shard-quiet", 60, Some(30));
    h.count(&busy, incident(t0) + &lines(0, t0 + 10 * S, 240, S / 2));
    h.count(&quiet, lines(0, t0 - 120 * S, 10, S));
    h.pass(5).await;
    assert!(h.fired().is_empty(), "the quiet shard holds the watermark");

    // The busy shard keeps delivering; the quiet one says nothing more.
    h.pass(15).await;
    h.count(&busy, lines(0, t0 + 130 * S, 20, S));
    h.pass(9).await;
    assert!(h.fired().is_empty(), "29 s: not idle yet");
    h.pass(3).await;
    let fired = h.fired();
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].status, Status::Firing);
    assert_eq!(fired[0].alert.labels["cause"], "target_refused_connection");
    // Stamped with when it happened at the load balancer, not when it was seen.
    assert_eq!(fired[0].alert.starts_at_us, t0 + 10 * S);
    drop((busy, quiet));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_file_run_is_evaluated_to_its_end_when_it_finishes() {
    let h = Harness::start();
    let t0 = bucket_start((h.wall)() - 3_600 * S);
    let dir = std::env::temp_dir().join(format!("albwatch-app-eof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("alb.log");
    // The incident is the very end of the file: only the end of the data evaluates it.
    std::fs::write(&path, incident(t0)).expect("writes the log");
    let input = PartitionInput::open(
        &h.timeline,
        files::run_partition(360 * S),
        h.pool.submitter(),
        Arc::clone(&h.wall),
    );
    let (_stop_reading, stopping) = Shutdown::channel();
    // Before the end the file is live and never idle, however long it takes.
    let (tx, rx) = mpsc::channel();
    let mut batch = files::batch_of(crate::lines::Chunk {
        lines: lines(0, t0 - 600 * S, 10, S).into_bytes(),
        too_long: 0,
    });
    batch.ack = Some(Box::new(move |_| {
        let _ = tx.send(());
    }));
    input.submit(batch).expect("queued");
    rx.recv().expect("counted");
    h.pass(3_600).await;
    assert!(h.fired().is_empty(), "a run of files is never idle");

    files::read_run(
        std::slice::from_ref(&path),
        &input,
        1 << 20,
        65_536,
        &stopping,
    );
    drop(input);
    // `read_run` returns once its batches are queued; wait for the worker to count them.
    while h.timeline.with(|w| w.view(0)[0].state) != crate::event_time::PartitionState::Finished {
        std::thread::yield_now();
    }
    h.pass(1).await;
    let fired = h.fired();
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].alert.labels["cause"], "target_refused_connection");
    assert_eq!(fired[0].alert.starts_at_us, t0 + 10 * S);
    let _ = std::fs::remove_dir_all(dir);
    h.stop().await;
}
