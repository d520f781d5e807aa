//! The demo generator as an input: traffic with scripted incidents, generated as the wall
//! clock passes and stamped with it, so the demo is live data in event time. It is one
//! partition whose lines are in time order by construction (out-of-order bound zero), which
//! is why the demo's alerts come within a bucket or two of its incidents.

use std::time::Duration;

use crate::demo::DemoTraffic;
use crate::event_time::{InputKind, PartitionSpec};
use crate::export::WallClock;
use crate::pipeline::RawBatch;

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
    mut traffic: DemoTraffic,
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
