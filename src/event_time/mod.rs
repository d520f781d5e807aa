//! Event time: how far the log data has got, and the alert evaluation that follows it. Live
//! (`albwatch run`, `demo`) and `replay` run the same code here, so the same lines give the
//! same alert transitions whichever way they arrive and however many workers count them.
//!
//! - [`Watermarks`] tracks progress per input **partition** (a run of files, a followed file,
//!   a Kinesis shard, a Firehose source, the demo generator). Each batch an input queues gets a
//!   [`Stamp`] (partition, place in its order); a partition's progress is the newest event of
//!   the batches counted *in order*, so it never covers a batch still in a worker. The
//!   watermark is the least progress of the live partitions minus each one's out-of-order
//!   bound. A partition that is finished (end of a file run, a closed shard) or idle (no new
//!   batch for its idle timeout, nothing in flight) stops holding it back; when none is live
//!   any more, it moves to the newest event of all, so the end of the data is evaluated as
//!   `replay` evaluates it. It never moves back.
//! - [`Evaluator`] turns the watermark into evaluation ticks: each bucket boundary the
//!   watermark passes is evaluated exactly once, with the aggregator's clock at the tick and
//!   the alert rules over the windows ending there, so `startsAt`/`endsAt` are event times.
//!
//! The wall clock enters only as an argument: it decides idleness here and measures lag and
//! detection delay in the metrics. Nothing in this module reads a clock.

pub mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;

use crate::aggregate::{Aggregator, Snapshot};
use crate::alert::{AlertEngine, Transition};
use crate::history::History;
use crate::setting::InvalidSetting;

const SECOND_US: i64 = 1_000_000;

/// The `[event_time]` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventTimeConfig {
    /// How far back in event time a line may come after newer lines of the same partition and
    /// still be evaluated on time. ALB writes one S3 file per load-balancer node every 5
    /// minutes, and files of one period arrive node by node, so times jump back by up to 5
    /// minutes at every file boundary: the default covers that with a minute to spare.
    pub out_of_order_secs: u32,
    /// A partition with no new data for this long (wall clock) stops holding the watermark
    /// back, so a quiet load balancer or a drained shard does not freeze evaluation.
    pub idle_timeout_secs: u32,
    /// Lines stamped further than this ahead of the wall clock are counted
    /// (`albwatch_future_entries_total`) and kept in the totals, but never move a watermark or
    /// enter a window: one bad clock must not close everyone else's windows.
    pub max_future_secs: u32,
}

impl Default for EventTimeConfig {
    fn default() -> Self {
        EventTimeConfig {
            out_of_order_secs: 360,
            idle_timeout_secs: 300,
            max_future_secs: 300,
        }
    }
}

impl EventTimeConfig {
    pub fn out_of_order_us(&self) -> i64 {
        i64::from(self.out_of_order_secs) * SECOND_US
    }

    pub fn idle_timeout_us(&self) -> i64 {
        i64::from(self.idle_timeout_secs) * SECOND_US
    }

    pub fn max_future_us(&self) -> i64 {
        i64::from(self.max_future_secs) * SECOND_US
    }

    /// Checks the settings, naming the bad key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |key, message| InvalidSetting::in_section("event_time", key, message);
        if self.out_of_order_secs > 86_400 {
            return Err(invalid(
                "out_of_order_secs",
                "must be at most 86400 (a day)",
            ));
        }
        if self.idle_timeout_secs == 0 {
            return Err(invalid("idle_timeout_secs", "must be at least 1"));
        }
        Ok(())
    }
}

/// Which input a partition belongs to: a closed set, safe as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputKind {
    Files,
    Demo,
    Firehose,
    Kinesis,
    S3,
}

impl InputKind {
    pub const ALL: [InputKind; 5] = [
        InputKind::Files,
        InputKind::Demo,
        InputKind::Firehose,
        InputKind::Kinesis,
        InputKind::S3,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            InputKind::Files => "files",
            InputKind::Demo => "demo",
            InputKind::Firehose => "firehose",
            InputKind::Kinesis => "kinesis",
            InputKind::S3 => "s3",
        }
    }
}

/// How a partition's data behaves in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    pub input: InputKind,
    /// Its name within the input: a path, a shard id, a Firehose source.
    pub name: String,
    /// The out-of-order bound of its data, µs.
    pub out_of_order_us: i64,
    /// After this long without a new batch (wall clock, µs) it stops holding the watermark;
    /// `None` for inputs that always finish (files read to their end, `replay`).
    pub idle_us: Option<i64>,
}

/// Partitions per input beyond which new names share one `__overflow__` partition: the
/// names are metric label values, and a Firehose source is whatever the sender says.
pub const MAX_PARTITIONS_PER_INPUT: usize = 100;

/// The name of the partition that takes an input's names past the cap.
pub const OVERFLOW_PARTITION: &str = "__overflow__";

/// One batch's place: its partition and its position in that partition's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    partition: u32,
    seq: u64,
}

/// Where a partition stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionState {
    /// Holding the watermark back (or about to, once its first batch is counted).
    Active,
    /// Quiet past its idle timeout with nothing in flight.
    Idle,
    /// Told there is no more data, and everything it queued is counted.
    Finished,
}

impl PartitionState {
    pub const ALL: [PartitionState; 3] = [
        PartitionState::Active,
        PartitionState::Idle,
        PartitionState::Finished,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            PartitionState::Active => "active",
            PartitionState::Idle => "idle",
            PartitionState::Finished => "finished",
        }
    }
}

#[derive(Debug)]
struct Partition {
    spec: PartitionSpec,
    /// The next stamp to hand out.
    next_seq: u64,
    /// Every batch before this one is counted.
    counted: u64,
    /// Counted batches past a gap, with their newest event.
    done: BTreeMap<u64, Option<i64>>,
    /// The newest event of the batches counted in order.
    progress: Option<i64>,
    /// Wall clock of the last stamp, µs.
    last_batch: i64,
    finished: bool,
    /// Names sharing this partition (more than one only for the overflow partition).
    users: usize,
}

impl Partition {
    fn in_flight(&self) -> bool {
        self.counted < self.next_seq
    }

    fn state(&self, wall_now: i64) -> PartitionState {
        if self.in_flight() {
            return PartitionState::Active;
        }
        if self.finished {
            return PartitionState::Finished;
        }
        match self.spec.idle_us {
            Some(idle) if wall_now.saturating_sub(self.last_batch) >= idle => PartitionState::Idle,
            _ => PartitionState::Active,
        }
    }
}

/// One partition as the metrics show it.
#[derive(Debug, Clone)]
pub struct PartitionView {
    pub input: InputKind,
    pub name: String,
    pub state: PartitionState,
    pub progress: Option<i64>,
}

/// Progress per partition and the watermark that follows from it; see the module docs.
#[derive(Debug, Default)]
pub struct Watermarks {
    partitions: HashMap<u32, Partition>,
    by_name: HashMap<(InputKind, String), u32>,
    next_id: u32,
    /// The newest event of partitions that are gone (finished and dropped).
    finished_progress: Option<i64>,
    /// The oldest event counted anywhere: where evaluation ticks start.
    first_event: Option<i64>,
    watermark: Option<i64>,
}

impl Watermarks {
    /// Opens the partition `spec` names, or reopens it (a file followed again, a shard read
    /// again after a restart of its reader): its progress is kept.
    pub fn open(&mut self, spec: PartitionSpec, wall_now: i64) -> u32 {
        let key = (spec.input, spec.name.clone());
        if let Some(&id) = self.by_name.get(&key)
            && let Some(p) = self.partitions.get_mut(&id)
        {
            p.finished = false;
            p.users += 1;
            p.last_batch = wall_now;
            return id;
        }
        let input = spec.input;
        let named = self.by_name.keys().filter(|(i, _)| *i == input).count();
        let spec = if named >= MAX_PARTITIONS_PER_INPUT {
            let overflow = (input, OVERFLOW_PARTITION.to_string());
            if let Some(&id) = self.by_name.get(&overflow)
                && let Some(p) = self.partitions.get_mut(&id)
            {
                p.finished = false;
                p.users += 1;
                return id;
            }
            PartitionSpec {
                name: OVERFLOW_PARTITION.to_string(),
                ..spec
            }
        } else {
            spec
        };
        let id = self.next_id;
        self.next_id += 1;
        self.by_name.insert((spec.input, spec.name.clone()), id);
        self.partitions.insert(
            id,
            Partition {
                spec,
                next_seq: 0,
                counted: 0,
                done: BTreeMap::new(),
                progress: None,
                last_batch: wall_now,
                finished: false,
                users: 1,
            },
        );
        id
    }

    /// A stamp for the next batch of `partition`, queued at `wall_now`.
    pub fn stamp(&mut self, partition: u32, wall_now: i64) -> Stamp {
        let seq = match self.partitions.get_mut(&partition) {
            Some(p) => {
                p.last_batch = wall_now;
                p.next_seq += 1;
                p.next_seq - 1
            }
            None => 0,
        };
        Stamp { partition, seq }
    }

    /// Records that the batch of `stamp` is counted, with the oldest and newest event times
    /// it held (`None` when it held no countable line, or was never queued).
    pub fn counted(&mut self, stamp: Stamp, events: Option<(i64, i64)>) {
        if let Some((min, _)) = events {
            self.first_event = Some(self.first_event.map_or(min, |f| f.min(min)));
        }
        let Some(p) = self.partitions.get_mut(&stamp.partition) else {
            return;
        };
        // Counted twice (a batch voided, then acknowledged after all): the first one holds.
        if stamp.seq < p.counted || stamp.seq >= p.next_seq {
            return;
        }
        p.done
            .entry(stamp.seq)
            .or_insert(events.map(|(_, max)| max));
        while let Some(max) = p.done.remove(&p.counted) {
            p.progress = p.progress.max(max);
            p.counted += 1;
        }
        self.drop_if_finished(stamp.partition);
    }

    /// Says `partition` will queue nothing more (through this user: a partition shared by
    /// several names finishes when the last one does).
    pub fn finish(&mut self, partition: u32) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.users = p.users.saturating_sub(1);
            if p.users == 0 {
                p.finished = true;
            }
        }
        self.drop_if_finished(partition);
    }

    /// A finished partition with nothing in flight only ever contributes its newest event;
    /// dropping it keeps the table as small as the live partitions (shards come and go).
    /// Followed files and the files of a run keep theirs (their names are few and fixed), so
    /// the metrics can show them finished.
    fn drop_if_finished(&mut self, partition: u32) {
        let Some(p) = self.partitions.get(&partition) else {
            return;
        };
        if !p.finished || p.in_flight() || p.spec.input == InputKind::Files {
            return;
        }
        self.finished_progress = self.finished_progress.max(p.progress);
        let key = (p.spec.input, p.spec.name.clone());
        self.by_name.remove(&key);
        self.partitions.remove(&partition);
    }

    /// The watermark at `wall_now` (which decides idleness): how far event time is complete.
    /// `None` until some partition has counted data and no live partition lacks it.
    pub fn watermark(&mut self, wall_now: i64) -> Option<i64> {
        self.progress(wall_now).map(|p| p.watermark)
    }

    /// What the evaluator needs at `wall_now`: the watermark, where the data starts, and
    /// whether no partition is live (the data so far is all there is).
    pub fn progress(&mut self, wall_now: i64) -> Option<Progress> {
        let mut live: Option<i64> = None;
        let mut any_live = false;
        let mut blocked = false;
        let mut newest = self.finished_progress;
        for p in self.partitions.values() {
            newest = newest.max(p.progress);
            if p.state(wall_now) != PartitionState::Active {
                continue;
            }
            any_live = true;
            match p.progress {
                // A live partition with nothing counted yet could still bring anything.
                None => blocked = true,
                Some(t) => {
                    let w = t.saturating_sub(p.spec.out_of_order_us);
                    live = Some(live.map_or(w, |l| l.min(w)));
                }
            }
        }
        let candidate = if any_live {
            if blocked { None } else { live }
        } else {
            newest
        };
        self.watermark = self.watermark.max(candidate);
        Some(Progress {
            watermark: self.watermark?,
            first_event: self.first_event?,
            drained: !any_live,
        })
    }

    /// Every partition, for the metrics.
    pub fn view(&self, wall_now: i64) -> Vec<PartitionView> {
        let mut v: Vec<PartitionView> = self
            .partitions
            .values()
            .map(|p| PartitionView {
                input: p.spec.input,
                name: p.spec.name.clone(),
                state: p.state(wall_now),
                progress: p.progress,
            })
            .collect();
        v.sort_by(|a, b| (a.input, &a.name).cmp(&(b.input, &b.name)));
        v
    }
}

/// Where event time stands, for the [`Evaluator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Every event at or before it is counted (within the out-of-order bounds).
    pub watermark: i64,
    /// The oldest event counted: evaluation ticks start just after it.
    pub first_event: i64,
    /// No partition is live: the data up to the watermark is all there is for now, so the
    /// bucket holding the newest event is complete too and gets evaluated.
    pub drained: bool,
}

/// [`Watermarks`] shared by the inputs (stamps), the workers (counted batches) and the
/// evaluator; one short lock per batch.
#[derive(Clone, Default, Debug)]
pub struct Timeline(Arc<Mutex<Watermarks>>);

impl Timeline {
    pub fn new() -> Self {
        Timeline::default()
    }

    /// Runs `f` on the watermarks. A poisoned lock means a panic mid-update of plain
    /// counters; the numbers are still the best there are.
    pub fn with<T>(&self, f: impl FnOnce(&mut Watermarks) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Runs the alert rules at every tick the watermark passes; see the module docs.
#[derive(Debug)]
pub struct Evaluator {
    agg: Arc<Mutex<Aggregator>>,
    engine: AlertEngine,
    tick_us: i64,
    window_us: i64,
    next_tick: Option<i64>,
    /// What the status page or the replay report draws, when one is wanted.
    history: Option<History>,
    /// The last tick's snapshot, written over at the next one so that its vectors are reused.
    snapshot: Snapshot,
}

impl Evaluator {
    /// Ticks every `bucket_secs` of the aggregator's config.
    pub fn new(agg: Arc<Mutex<Aggregator>>, engine: AlertEngine) -> Self {
        let tick_us = {
            let agg = agg.lock().unwrap_or_else(PoisonError::into_inner);
            i64::from(agg.config().bucket_secs.max(1)) * SECOND_US
        };
        let window_us = i64::from(engine.config().window_secs) * SECOND_US;
        Evaluator {
            agg,
            engine,
            tick_us,
            window_us,
            next_tick: None,
            history: None,
            snapshot: Snapshot::default(),
        }
    }

    /// Records every evaluated tick and transition in `history` too.
    pub fn with_history(mut self, history: History) -> Self {
        self.history = Some(history);
        self
    }

    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// The history, taken out (at the end of a replay).
    pub fn take_history(&mut self) -> Option<History> {
        self.history.take()
    }

    pub fn engine(&self) -> &AlertEngine {
        &self.engine
    }

    /// The last tick evaluated, if any.
    pub fn evaluated_to(&self) -> Option<i64> {
        self.next_tick.map(|t| t - self.tick_us)
    }

    /// Evaluates every tick up to and including the watermark (when drained, up to the end
    /// of the bucket holding it), the first one just after the first event, handing each
    /// transition to `sink` in order. Ticks whose window holds no data while no alert is
    /// active cannot change anything and are skipped, so a gap of days in the data (or one
    /// stray old line) costs nothing.
    pub fn advance_to(&mut self, progress: Progress, sink: &mut dyn FnMut(Transition)) {
        let tick_us = self.tick_us;
        let Progress {
            watermark,
            first_event,
            drained,
        } = progress;
        let watermark = if drained {
            (watermark.div_euclid(tick_us) + 1) * tick_us
        } else {
            watermark
        };
        let mut tick = self
            .next_tick
            .unwrap_or_else(|| (first_event.div_euclid(tick_us) + 1) * tick_us);
        while tick <= watermark {
            // Locked per tick, so workers merge between ticks of a long catch-up.
            let mut agg = self.agg.lock().unwrap_or_else(PoisonError::into_inner);
            if self.engine.active().next().is_none() {
                // The first tick whose window holds data: the one just past its bucket.
                match agg.first_bucket_from(tick - self.window_us) {
                    Some(start) if start + tick_us > tick => {
                        tick = start + tick_us;
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        tick = (watermark.div_euclid(tick_us) + 1) * tick_us;
                        break;
                    }
                }
            }
            agg.advance(tick);
            agg.snapshot_into(
                tick,
                &[self.engine.config().window_secs],
                &mut self.snapshot,
            );
            if let Some(history) = &mut self.history {
                history.record_tick(tick, tick_us, agg.bucket_at(tick - tick_us));
            }
            drop(agg);
            for t in self.engine.evaluate(&self.snapshot, tick) {
                if let Some(history) = &mut self.history {
                    history.record_transition(&t);
                }
                sink(t);
            }
            tick += tick_us;
        }
        // Every tick up to the watermark is evaluated or had nothing to evaluate: the clock
        // closes their buckets, which is what makes a line arriving for them late.
        self.agg
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .advance(watermark.div_euclid(tick_us) * tick_us);
        self.next_tick = Some(tick);
    }
}

#[cfg(test)]
mod tests;
