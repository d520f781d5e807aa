//! A real worker pool feeding a real aggregator, so a test (or a bench) checks "counted exactly
//! once" where it matters: default aggregation and load balancers, no future limit, no pool
//! metrics. Finished on drop. Included with `#[path]` by `tests/support/kinesis_consumer.rs`,
//! `tests/firehose.rs` and `benches/kinesis.rs`.

use std::sync::{Arc, Mutex, PoisonError};

use albwatch::aggregate::{AggregateConfig, Aggregator};
use albwatch::classify::LoadBalancers;
use albwatch::event_time::InputKind;
use albwatch::input::PartitionSource;
use albwatch::pipeline::{Pool, PoolConfig, Submitter};

/// Lines longer than this are dropped by the pool, as the daemon's default does.
const MAX_LINE_BYTES: usize = 65_536;

/// A worker pool of `workers` threads behind a queue of `queue_batches`, feeding one
/// aggregator.
pub struct Counting {
    pub agg: Arc<Mutex<Aggregator>>,
    pool: Option<Pool>,
}

impl Counting {
    pub fn start(workers: usize, queue_batches: usize) -> Counting {
        let agg = Arc::new(Mutex::new(Aggregator::new(AggregateConfig::default())));
        let pool = Pool::start(
            &PoolConfig {
                workers,
                queue_batches,
                max_line_bytes: MAX_LINE_BYTES,
            },
            &AggregateConfig::default(),
            Arc::new(LoadBalancers::default()),
            Arc::clone(&agg),
            Arc::new(|| i64::MAX),
            None,
        )
        .expect("worker threads");
        Counting {
            agg,
            pool: Some(pool),
        }
    }

    /// A submitter of batches to the pool.
    pub fn submitter(&self) -> Submitter {
        self.pool.as_ref().expect("pool running").submitter()
    }

    /// Partitions of an input of `kind` whose batches go to the pool.
    pub fn source(&self, kind: InputKind) -> PartitionSource {
        PartitionSource::standalone(kind, self.submitter())
    }

    /// Lines the aggregator has counted.
    pub fn counted(&self) -> u64 {
        let agg = self.agg.lock().unwrap_or_else(PoisonError::into_inner);
        agg.snapshot(i64::MAX)
            .series
            .iter()
            .flat_map(|s| &s.totals)
            .map(|t| t.2)
            .sum()
    }

    /// Stops the workers once they have handled every batch submitted (waiting for every
    /// submitter to go).
    pub fn finish(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.finish();
        }
    }

    /// [`Counting::finish`] on a blocking thread, for async callers; the counts stay.
    pub async fn finish_blocking(&mut self) {
        if let Some(pool) = self.pool.take() {
            tokio::task::spawn_blocking(move || pool.finish())
                .await
                .expect("pool finishes");
        }
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.finish();
    }
}
