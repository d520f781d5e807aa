//! The demo generator as an input: traffic with scripted incidents, generated as the wall
//! clock passes and stamped with it, so the demo is live data in event time. It is one
//! partition whose lines are in time order by construction (out-of-order bound zero), which
//! is why the demo's alerts come within a bucket or two of its incidents.

use std::time::Duration;

use crate::event_time::{InputKind, PartitionSpec};
use crate::export::WallClock;
use crate::pipeline::RawBatch;
use crate::traffic::Traffic;

use super::{PartitionInput, Shutdown};

/// How often the generator catches up with the wall clock.
const EVERY: Duration = Duration::from_millis(250);

/// The demo's partition: in order, idle like any live input.
pub fn partition(idle_us: i64) -> PartitionSpec {
    PartitionSpec {
        input: InputKind::Demo,
        name: "demo".to_string(),
        out_of_order_us: 0,
        idle_us: Some(idle_us),
    }
}

/// Generates traffic up to the wall clock every 250 ms until `stopping`.
pub fn run(
    mut traffic: Traffic,
    input: &PartitionInput,
    wall_clock: &WallClock,
    stopping: &Shutdown,
) {
    while !stopping.is_set() {
        std::thread::sleep(EVERY);
        let mut lines = Vec::new();
        if traffic.generate_until(wall_clock(), &mut lines) > 0
            && input.submit(RawBatch::new(lines)).is_err()
        {
            break;
        }
    }
    input.finish();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use crate::aggregate::{AggregateConfig, Aggregator};
    use crate::alert::{AlertConfig, AlertEngine, Status};
    use crate::classify::LoadBalancers;
    use crate::event_time::{Evaluator, Progress};
    use crate::pipeline::{RawBatch, Worker};
    use crate::traffic::{DEFAULT_SCRIPT_OFFSET_SECS, Traffic};

    const S: i64 = 1_000_000;

    /// The demo's promise, in event time: with the default script offset the first alert
    /// fires within a minute of the start. Live, the demo's partition has no out-of-order
    /// bound, so the daemon evaluates each tick within a second of the wall clock passing it.
    #[test]
    fn the_default_demo_alerts_within_its_first_minute() {
        let t0 = 1_795_514_400 * S;
        let mut traffic = Traffic::scripted(1, t0, 200).skip_script(DEFAULT_SCRIPT_OFFSET_SECS);
        let agg = Arc::new(Mutex::new(Aggregator::new(AggregateConfig::default())));
        let mut worker = Worker::new(
            Arc::new(LoadBalancers::default()),
            Arc::clone(&agg),
            &AggregateConfig::default(),
            65_536,
        );
        let mut evaluator = Evaluator::new(agg, AlertEngine::new(AlertConfig::default()));
        let mut first = None;
        // A batch every 250 ms, as the live demo generates them, evaluated as it goes.
        for step in 1..=240 {
            let now = t0 + step * S / 4;
            let mut lines = Vec::new();
            traffic.generate_until(now, &mut lines);
            worker.process_batch(&RawBatch::new(lines), i64::MAX);
            let progress = Progress {
                watermark: now,
                first_event: t0,
                drained: false,
            };
            evaluator.advance_to(progress, &mut |t| {
                if t.status == Status::Firing && first.is_none() {
                    first = Some(t.alert.starts_at_us);
                }
            });
        }
        let first = first.expect("an alert in the first minute");
        assert!(first <= t0 + 60 * S, "{} s", (first - t0) / S);
    }
}
