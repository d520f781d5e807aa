//! The fleet consumer under DynamoDB throttling, in process against real servers (kinesalite
//! for the stream, dynalite for the lease table): a wrapper around the lease table — the
//! `LeaseTable` seam — answers every call with a throttling error while a switch is on, since
//! neither emulator ever throttles. Throttling shorter than the failover time costs the
//! instance nothing but counted errors: it keeps its lease and its shard, and every record is
//! counted once. Throttling longer than the failover makes it give the lease up (others may
//! have taken it by then) and stop reading, counted as lost; once the table answers again it
//! takes the lease back and reads on from the last checkpoint.

#[path = "support/kinesalite.rs"]
mod kinesalite;

#[path = "support/dynalite.rs"]
mod dynalite;

#[path = "support/kinesis_consumer.rs"]
#[allow(
    dead_code,
    reason = "shared with tests/kinesis.rs and tests/kinesis_fanout.rs"
)]
mod kinesis_consumer;
use kinesis_consumer::{Counting, LINE};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use albwatch::decode::DecodeLimits;
use albwatch::event_time::InputKind;
use albwatch::input::aws::{AwsError, Fault};
use albwatch::input::kinesis::KinesisMetrics;
use albwatch::input::kinesis::config::{KinesisConfig, StartAt};
use albwatch::input::kinesis::consumer::SdkApi;
use albwatch::input::kinesis::lease::fleet::{self, FleetHooks, LeaseMetrics};
use albwatch::input::kinesis::lease::table::{
    Checkpoint, DynamoLeaseTable, Lease, LeaseError, LeaseTable, Listing,
};
use aws_sdk_kinesis::primitives::Blob;
use tokio::sync::watch;

/// The lease table, throttled while `throttling` is on.
struct Throttled<T> {
    inner: T,
    throttling: Arc<AtomicBool>,
}

impl<T> Throttled<T> {
    fn check(&self) -> Result<(), LeaseError> {
        if self.throttling.load(Ordering::SeqCst) {
            return Err(LeaseError::Throttled(AwsError::new(
                Fault::Throttled,
                "DynamoDB throttled the call (injected)",
            )));
        }
        Ok(())
    }
}

impl<T: LeaseTable> LeaseTable for Throttled<T> {
    async fn ensure(&self, create: bool) -> Result<(), LeaseError> {
        self.inner.ensure(create).await
    }
    async fn list(&self) -> Result<Listing, LeaseError> {
        self.check()?;
        self.inner.list().await
    }
    async fn create(&self, lease: &Lease) -> Result<bool, LeaseError> {
        self.check()?;
        self.inner.create(lease).await
    }
    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.check()?;
        self.inner.renew(lease).await
    }
    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        self.check()?;
        self.inner.take(lease, owner).await
    }
    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        sub_sequence: u64,
        children: &[String],
    ) -> Result<Lease, LeaseError> {
        self.check()?;
        self.inner
            .checkpoint(lease, checkpoint, sub_sequence, children)
            .await
    }
    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.check()?;
        self.inner.release(lease).await
    }
    async fn delete(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.check()?;
        self.inner.delete(lease).await
    }
}

/// The sum of `name`'s samples (those with `label`, when given) in `registry`'s exposition.
fn metric(registry: &prometheus::Registry, name: &str, label: Option<(&str, &str)>) -> f64 {
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("exposition");
    let wanted = label.map(|(k, v)| format!("{k}=\"{v}\""));
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| wanted.as_deref().is_none_or(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `ready` every 50 ms for up to 30 s.
async fn eventually(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..600 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Puts `records` records of 5 lines each; returns the last one's sequence number.
async fn put_lines(client: &aws_sdk_kinesis::Client, stream: &str, records: usize) -> String {
    let mut last = String::new();
    for _ in 0..records {
        last = client
            .put_record()
            .stream_name(stream)
            .partition_key("pk")
            .data(Blob::new(LINE.repeat(5).into_bytes()))
            .send()
            .await
            .expect("put record")
            .sequence_number
            .clone();
    }
    last
}

/// Waits until the shard's lease records `sequence` as its checkpoint: what a re-read after
/// losing the lease starts after.
async fn wait_checkpointed(table: &DynamoLeaseTable, sequence: &str) {
    for _ in 0..600 {
        let listing = table.list().await.expect("list leases");
        if listing
            .leases
            .iter()
            .any(|l| l.checkpoint == Checkpoint::Sequence(sequence.to_owned()))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("checkpoint {sequence} never written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_throttling_shorter_than_the_failover_and_are_given_up_after_it() {
    let kinesis = kinesalite::Kinesalite::start();
    let dynamo = dynalite::shared();
    let kc = kinesalite::client(&kinesis.endpoint).await;
    kinesalite::create_stream_with(&kc, "throttled", 1).await;
    let first = put_lines(&kc, "throttled", 10).await;

    let mut pool = Counting::start(1, 8);
    let cfg = KinesisConfig {
        stream: Some("throttled".into()),
        start: StartAt::TrimHorizon,
        poll_interval_ms: 200,
        shard_discovery_secs: 1,
        checkpoint_interval_secs: 1,
        lease_table: Some("throttled-leases".into()),
        worker_id: Some("w".into()),
        failover_ms: 3_000,
        renew_interval_ms: 500,
        take_interval_ms: 500,
        ..KinesisConfig::default()
    }
    .validate()
    .expect("valid config");
    let settings = cfg.leases.clone().expect("lease settings");
    let registry = prometheus::Registry::new();
    let throttling = Arc::new(AtomicBool::new(false));
    let table = Throttled {
        inner: DynamoLeaseTable::new(dynalite::client(&dynamo.endpoint).await, "throttled-leases"),
        throttling: Arc::clone(&throttling),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(fleet::run(
        SdkApi::new(kc.clone(), "throttled"),
        cfg,
        settings,
        table,
        pool.source(InputKind::Kinesis),
        KinesisMetrics::register(&registry).expect("metrics"),
        FleetHooks {
            metrics: LeaseMetrics::register(&registry).expect("lease metrics"),
            on_gain: Arc::new(|| {}),
        },
        DecodeLimits::default(),
        stop_rx,
    ));
    let observer =
        DynamoLeaseTable::new(dynalite::client(&dynamo.endpoint).await, "throttled-leases");
    eventually("the first 50 lines", || pool.counted() == 50).await;
    wait_checkpointed(&observer, &first).await;
    assert_eq!(metric(&registry, "albwatch_kinesis_leases_held", None), 1.0);

    // Throttled for a third of the failover: renewals fail, the lease stays.
    throttling.store(true, Ordering::SeqCst);
    let renew_failed = Some(("event", "renew_failed"));
    eventually("renewals throttled", || {
        metric(
            &registry,
            "albwatch_kinesis_lease_events_total",
            renew_failed,
        ) >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    throttling.store(false, Ordering::SeqCst);
    let second = put_lines(&kc, "throttled", 10).await;
    eventually("the next 50 lines", || pool.counted() == 100).await;
    wait_checkpointed(&observer, &second).await;
    let lost = Some(("event", "lost"));
    assert_eq!(
        metric(&registry, "albwatch_kinesis_lease_events_total", lost),
        0.0
    );
    assert!(
        metric(
            &registry,
            "albwatch_kinesis_lease_events_total",
            Some(("event", "throttled"))
        ) >= 1.0
    );
    assert_eq!(metric(&registry, "albwatch_kinesis_leases_held", None), 1.0);

    // Throttled past the failover: the lease is given up and the shard stops being read.
    throttling.store(true, Ordering::SeqCst);
    eventually("the lease given up", || {
        metric(&registry, "albwatch_kinesis_lease_events_total", lost) >= 1.0
    })
    .await;
    assert_eq!(metric(&registry, "albwatch_kinesis_leases_held", None), 0.0);
    eventually("the shard no longer read", || {
        metric(&registry, "albwatch_kinesis_shards_owned", None) == 0.0
    })
    .await;
    // The table answers again: the unrenewed lease has expired, so it is taken back, and
    // reading resumes from its checkpoint: nothing is lost, nothing counted twice.
    throttling.store(false, Ordering::SeqCst);
    put_lines(&kc, "throttled", 10).await;
    eventually("the last 50 lines", || pool.counted() >= 150).await;
    eventually("the lease held again", || {
        metric(&registry, "albwatch_kinesis_leases_held", None) == 1.0
    })
    .await;
    stop_tx.send(true).expect("stop");
    task.await.expect("fleet task").expect("fleet ends cleanly");
    pool.finish();
    assert_eq!(pool.counted(), 150, "every record once");
}
