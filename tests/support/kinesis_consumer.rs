//! The in-process side of the Kinesis consumer tests: [`Consumer`], a real worker pool feeding
//! a real aggregator ([`Counting`], so "counted exactly once" is checked where it matters) with a checkpoint directory, a file checkpoint store and the
//! consumer's metrics in a registry of their own, which runs `consumer::run` over any
//! [`KinesisApi`] and stops it. Plus the one ALB line the tests put, and the exposition names
//! they read. Included with `#[path]` by `tests/kinesis.rs`, `tests/kinesis_fanout.rs` and
//! `tests/lease_throttling.rs`.

use std::sync::Arc;
use std::time::Duration;

use albwatch::decode::DecodeLimits;
use albwatch::event_time::InputKind;
use albwatch::input::kinesis::KinesisMetrics;
use albwatch::input::kinesis::checkpoint::{CheckpointStore, FileCheckpointStore};
use albwatch::input::kinesis::config::ValidKinesisConfig;
use albwatch::input::kinesis::consumer::{self, KinesisApi};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[path = "scratch.rs"]
#[allow(
    dead_code,
    clippy::duplicate_mod,
    reason = "a test binary may include it beside this file"
)]
mod scratch;
use scratch::TempDir;

#[path = "counting.rs"]
#[allow(dead_code, reason = "not every Kinesis test uses all of it")]
mod counting;
pub use counting::Counting;

/// One ALB access-log line (the AWS documentation's example), with its newline.
pub const LINE: &str = "http 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 \"GET http://www.example.com:80/ HTTP/1.1\" \"curl/7.46.0\" - - arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 \"Root=1-58337262-36d228ad5d99923122bbe354\" \"-\" \"-\" 0 2018-07-02T22:22:48.364000Z \"forward\" \"-\" \"-\" \"10.0.0.1:80\" \"200\" \"-\" \"-\" TID_1234abcd5678ef90 \"-\" \"-\" \"-\"\n";

/// `n` copies of [`LINE`].
pub fn lines(n: usize) -> Vec<u8> {
    LINE.repeat(n).into_bytes()
}

/// The exposition sample name of the Kinesis API calls of `operation` with `outcome`.
pub fn calls(operation: &str, outcome: &str) -> String {
    format!("albwatch_kinesis_api_calls_total{{operation=\"{operation}\",outcome=\"{outcome}\"}}")
}

/// A consumer task and the sender that stops it.
pub type Running = (
    watch::Sender<bool>,
    JoinHandle<Result<(), consumer::ConsumerError>>,
);

/// What every consumer of a test shares: the pool and aggregator, the checkpoint directory
/// and its store, and the consumer's metrics. The pool is finished before the directory is
/// removed.
pub struct Consumer {
    pub counting: Counting,
    pub dir: TempDir,
    pub store: Arc<FileCheckpointStore>,
    pub metrics: KinesisMetrics,
    pub registry: prometheus::Registry,
}

impl Consumer {
    /// Two workers; the directory `albwatch-{kind}-{pid}-{name}`.
    pub fn new(kind: &str, name: &str) -> Consumer {
        let counting = Counting::start(2, 8);
        let dir = TempDir::new(kind, name);
        let store = Arc::new(FileCheckpointStore::open(dir.path()).expect("checkpoint dir"));
        let registry = prometheus::Registry::new();
        let metrics = KinesisMetrics::register(&registry).expect("metrics");
        Consumer {
            counting,
            dir,
            store,
            metrics,
            registry,
        }
    }

    /// `consumer::run` of `api` with `cfg` and `store` on a task of its own.
    pub fn spawn(
        &self,
        api: impl KinesisApi,
        cfg: ValidKinesisConfig,
        store: Arc<dyn CheckpointStore>,
    ) -> Running {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(consumer::run(
            api,
            cfg,
            store,
            self.counting.source(InputKind::Kinesis),
            self.metrics.clone(),
            DecodeLimits::default(),
            rx,
        ));
        (tx, task)
    }

    pub fn counted(&self) -> u64 {
        self.counting.counted()
    }

    /// What `/metrics` would serve now.
    pub fn exposition(&self) -> String {
        let (_, body) = albwatch::export::admin::encode(&self.registry).expect("encode");
        String::from_utf8(body).expect("utf8")
    }
}

/// Stops a consumer started by [`Consumer::spawn`]; it must end within 20 s, without error.
pub async fn stop(tx: watch::Sender<bool>, task: JoinHandle<Result<(), consumer::ConsumerError>>) {
    let _ = tx.send(true);
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("consumer stops in time")
        .expect("consumer task")
        .expect("consumer ran without error");
}
