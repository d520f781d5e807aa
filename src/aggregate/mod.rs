//! Event-time aggregation: per `(elb, target_group, target)` series — and per value of each
//! configured attribute label (Firehose common attributes; a batch carries its request's
//! values, other inputs none) — monotonic totals by `(code, cause)`, bytes and a classic
//! latency histogram, plus fine event-time buckets from which the sliding windows (1 m, 5 m,
//! 15 m by default) are summed, and per-minute latency histograms for window quantiles.
//! It hands an owned [`Snapshot`] to the exporter and the alert rules, which never touch the
//! live state.
//!
//! Two halves keep locks off the per-line path: a worker fills its own [`BatchAccumulator`]
//! line by line (no lock, no allocation once warm), then merges it into the shared
//! [`Aggregator`] once per batch. Time is always an argument: the aggregator's clock is the
//! event-time watermark, moved by the evaluator with [`Aggregator::advance`] at each
//! evaluation tick, in the daemon as in `replay`. Merging never moves the clock, so what
//! counts as late (a line whose bucket was already evaluated) depends on the watermark, not on
//! which worker merged first. Lines stamped beyond the batch's future limit are counted in the
//! totals only: they never open a bucket nor move the newest event time.

mod latency;
pub mod series;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::classify::Cause;
use crate::parse::LogEntry;
pub use latency::Quantiles;
use latency::{LatencyHistogram, MAX_MS};
use series::{SeriesLabels, SeriesTable, push_attributes, series_key};

const SECOND_US: i64 = 1_000_000;
const MINUTE_US: i64 = 60 * SECOND_US;

/// Upper bounds of the classic target-response-time histogram, in seconds: dense where
/// applications answer, with edges at the 10 s connect timeout and the 60 s default idle
/// timeout so timeout-driven latencies stand out.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Up to this many latencies of a minute are kept as they came, 4 bytes each, rather than in a
/// histogram (about 1.2 KiB): a series of a churning fleet sees a handful of requests before
/// its target goes, and then its minutes cost bytes, not kilobytes. Past it the histogram is
/// the smaller of the two.
const FEW_LATENCIES: usize = 128;

/// What the aggregator keeps and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateConfig {
    /// Width of one event-time bucket; windows move in these steps.
    pub bucket_secs: u32,
    /// The sliding windows, e.g. `[60, 300, 900]`.
    pub windows_secs: Vec<u32>,
    /// How far behind the newest event an entry may arrive and still land in the windows.
    pub allowed_lateness_secs: u32,
    /// Cap on series (`(elb, target_group, target)` with their attribute values); the rest go
    /// to `__overflow__`.
    pub max_series: usize,
    /// A series with no entry for this long is dropped from the windows and the exposition.
    pub series_ttl_secs: u32,
    /// Names of the extra label dimensions every series has, in order: the labels of
    /// `firehose.common_attribute_labels`. A series is keyed by its three labels and one
    /// value per name (`""` for entries without attributes), all under `max_series`.
    pub attribute_labels: Vec<String>,
}

impl Default for AggregateConfig {
    fn default() -> Self {
        AggregateConfig {
            bucket_secs: 10,
            windows_secs: vec![60, 300, 900],
            allowed_lateness_secs: 120,
            max_series: 10_000,
            series_ttl_secs: 1_800,
            attribute_labels: Vec::new(),
        }
    }
}

impl AggregateConfig {
    fn bucket_us(&self) -> i64 {
        i64::from(self.bucket_secs.max(1)) * SECOND_US
    }

    fn max_window_us(&self) -> i64 {
        i64::from(self.windows_secs.iter().copied().max().unwrap_or(60)) * SECOND_US
    }
}

/// An example `trace_id` held inline (ALB's are 40 bytes), so keeping one per cell allocates
/// nothing. Ordered, so merges can keep the smallest and the example does not depend on which
/// worker merged first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TraceId {
    len: u8,
    buf: [u8; 64],
}

impl TraceId {
    fn new(bytes: &[u8]) -> Option<Self> {
        let mut buf = [0u8; 64];
        buf.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(TraceId {
            len: bytes.len() as u8,
            buf,
        })
    }

    pub fn as_str(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.buf[..usize::from(self.len)])
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

fn smallest(a: Option<TraceId>, b: Option<TraceId>) -> Option<TraceId> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Requests of one `(code, cause)` in one bucket.
#[derive(Debug, Clone, Copy)]
struct Cell {
    bucket: i64,
    /// `elb_status_code`; `None` when the load balancer sent no status.
    code: Option<u16>,
    cause: Cause,
    requests: u64,
    bytes_in: u64,
    bytes_out: u64,
    trace: Option<TraceId>,
}

/// The latencies of one entry, in microseconds.
#[derive(Debug, Clone, Copy)]
struct Sample {
    time: i64,
    target_us: Option<u64>,
    elapsed_us: Option<u64>,
}

/// The bucket of a cell that holds lines beyond the future limit: totals only.
const FUTURE_BUCKET: i64 = i64::MAX;

#[derive(Debug, Default)]
struct LocalSeries {
    /// Where its key sits in the accumulator's arena.
    key_start: usize,
    key_end: usize,
    hash: u64,
    /// The entry fields the key was built from, as the first entry wrote them: the ELB name,
    /// the target group ARN and the target's address sit in the arena right after the key,
    /// ending at these offsets.
    fields_end: [usize; 3],
    has_target_group: bool,
    /// The target's port; `None` for an entry without a target.
    port: Option<u16>,
    /// The cell the series' last entry went to, tried first: most of a series' entries
    /// share a bucket and a status.
    last_cell: usize,
    cells: Vec<Cell>,
    samples: Vec<Sample>,
    /// The newest event time within the future limit; `i64::MIN` if none.
    max_time: i64,
}

/// A worker's per-batch tally, merged into the [`Aggregator`] once per batch.
///
/// A new target costs no allocation once the worker is warm, however many targets churn
/// through: keys are copied into one arena, the index holds only small ids, and the local
/// series past `live` keep their vectors for the next batch's keys. Everything is forgotten
/// at each merge, so what the accumulator holds is bounded by the batch it counts, not by
/// how many targets it has seen.
#[derive(Debug)]
pub struct BatchAccumulator {
    bucket_us: i64,
    hasher: DefaultHashBuilder,
    /// Ids into `series` by the hash of their key.
    index: HashTable<u32>,
    /// The keys of `series[..live]`, back to back.
    arena: Vec<u8>,
    /// The batch's series in the order first seen; those past `live` are spare.
    series: Vec<LocalSeries>,
    live: usize,
    scratch: Vec<u8>,
    attribute_count: usize,
    /// The attribute part of every key until the next [`BatchAccumulator::set_attributes`]:
    /// built once per batch, so a line only copies it.
    suffix: Vec<u8>,
    /// Entries stamped after this (µs) are beyond the future limit of the batch.
    future_limit: i64,
    /// Ids into `series` by a hash of an entry's key fields as written: a direct-mapped cache
    /// in front of `index`, so an entry of a series seen before in the batch skips building
    /// its key (cutting the name out of the ARN, formatting the port) and hashing it. A slot
    /// pointing past `live` or at a series of other fields is a miss, so merging leaves the
    /// cache as it is; new attribute values clear it.
    recent: Vec<u32>,
    /// The bucket of the last entry within the future limit.
    last_bucket: Option<i64>,
}

/// Slots of [`BatchAccumulator::recent`]: a power of two well above the few dozen series a
/// batch usually holds, so two of them rarely share a slot.
const RECENT_SLOTS: usize = 256;
const _: () = assert!(RECENT_SLOTS.is_power_of_two());

/// The fields a series key is built from, as an entry wrote them.
#[derive(Clone, Copy)]
struct KeyFields<'a> {
    elb: &'a [u8],
    target_group: Option<&'a [u8]>,
    target: Option<(&'a [u8], u16)>,
}

impl<'a> KeyFields<'a> {
    fn of(e: &LogEntry<'a>) -> Self {
        KeyFields {
            elb: e.elb.as_bytes(),
            target_group: e.target_group_arn().map(|t| t.as_bytes()),
            target: e.target.map(|t| (t.ip.as_bytes(), t.port)),
        }
    }

    /// The slot of [`BatchAccumulator::recent`] for these fields: a few multiplies over the
    /// last eight bytes of each, where the ELB name and the ARN keep their resource ids and an
    /// address its last digits. A poor spread only costs misses (the comparison that
    /// confirms a hit reads every byte), so it need not be a real hash.
    fn slot(&self) -> usize {
        fn tail(b: &[u8]) -> u64 {
            match b.last_chunk::<8>() {
                Some(t) => u64::from_le_bytes(*t),
                None => b.iter().fold(0, |w, &x| w << 8 | u64::from(x)),
            }
        }
        let (ip, port) = self.target.unwrap_or_default();
        let h = (tail(ip) ^ u64::from(port)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ tail(self.target_group.unwrap_or_default()).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
            ^ tail(self.elb);
        // The top bits of the product depend on every bit of `h`.
        (h.wrapping_mul(0x1656_67B1_9E37_79F9) >> (64 - RECENT_SLOTS.trailing_zeros())) as usize
    }
}

impl BatchAccumulator {
    pub fn new(cfg: &AggregateConfig) -> Self {
        let attribute_count = cfg.attribute_labels.len();
        let mut suffix = Vec::new();
        push_attributes::<&str>(&mut suffix, attribute_count, &[]);
        BatchAccumulator {
            bucket_us: cfg.bucket_us(),
            hasher: DefaultHashBuilder::default(),
            index: HashTable::new(),
            arena: Vec::new(),
            series: Vec::new(),
            live: 0,
            scratch: Vec::with_capacity(256),
            attribute_count,
            suffix,
            future_limit: i64::MAX,
            recent: vec![u32::MAX; RECENT_SLOTS],
            last_bucket: None,
        }
    }

    /// Entries added from now on with a time after `limit` (µs) count in the totals only —
    /// called once per batch with the wall clock plus the allowed skew.
    pub fn set_future_limit(&mut self, limit: i64) {
        self.future_limit = limit;
    }

    /// The attribute values (one per configured label, in order; missing ones `""`) of the
    /// entries added from now on — called once per batch, since every line of a batch comes
    /// from the same Firehose request.
    pub fn set_attributes<T: AsRef<str>>(&mut self, values: &[T]) {
        self.suffix.clear();
        push_attributes(&mut self.suffix, self.attribute_count, values);
        // The cached series carry the attribute values they were keyed with.
        self.recent.fill(u32::MAX);
    }

    /// Counts one classified entry.
    pub fn add(&mut self, e: &LogEntry<'_>, cause: Cause) {
        let idx = self.series_of(e);
        let s = &mut self.series[idx];
        let future = e.time > self.future_limit;
        let bucket = if future {
            FUTURE_BUCKET
        } else {
            s.max_time = s.max_time.max(e.time);
            bucket_start(&mut self.last_bucket, e.time, self.bucket_us)
        };
        let code = e.elb_status_code;
        let of_entry = |c: &Cell| c.bucket == bucket && c.code == code && c.cause == cause;
        let at = match s.cells.get(s.last_cell) {
            Some(c) if of_entry(c) => s.last_cell,
            _ => match s.cells.iter().rposition(of_entry) {
                Some(at) => at,
                None => {
                    s.cells.push(Cell {
                        bucket,
                        code,
                        cause,
                        requests: 0,
                        bytes_in: 0,
                        bytes_out: 0,
                        trace: None,
                    });
                    s.cells.len() - 1
                }
            },
        };
        s.last_cell = at;
        let cell = &mut s.cells[at];
        cell.requests += 1;
        cell.bytes_in += e.received_bytes;
        cell.bytes_out += e.sent_bytes;
        if cause.is_alertable() {
            let trace = e.trace_id().and_then(|t| TraceId::new(t.as_bytes()));
            cell.trace = smallest(cell.trace, trace);
        }
        if future {
            return;
        }
        s.samples.push(Sample {
            time: e.time,
            target_us: e.target_processing_time,
            elapsed_us: e.elapsed_us().and_then(|us| u64::try_from(us).ok()),
        });
    }

    /// The index of the local series of `e`: from the recent cache when its slot holds a
    /// series built from the same fields, else by its key.
    fn series_of(&mut self, e: &LogEntry<'_>) -> usize {
        let fields = KeyFields::of(e);
        let slot = fields.slot();
        let cached = self.recent[slot] as usize;
        if cached < self.live && self.built_from(cached, &fields) {
            return cached;
        }
        let tg = e.target_group_name().map_or(&b"-"[..], |t| t.as_bytes());
        let scratch = &mut self.scratch;
        series_key(scratch, fields.elb, tg, b"");
        match fields.target {
            Some((ip, port)) => {
                scratch.extend_from_slice(ip);
                scratch.push(b':');
                push_u16(scratch, port);
            }
            None => scratch.push(b'-'),
        }
        scratch.extend_from_slice(&self.suffix);
        let live = self.live;
        let idx = self.local_series();
        if self.live > live {
            // A new series: the fields it was built from follow its key in the arena. (An
            // older one keeps those of its first entry; other spellings of the same key, like
            // a port with a leading zero, just miss the cache.)
            let arena = &mut self.arena;
            let mut ends = [0; 3];
            for (end, part) in ends.iter_mut().zip([
                fields.elb,
                fields.target_group.unwrap_or_default(),
                fields.target.map_or(&[][..], |t| t.0),
            ]) {
                arena.extend_from_slice(part);
                *end = arena.len();
            }
            let s = &mut self.series[idx];
            s.fields_end = ends;
            s.has_target_group = fields.target_group.is_some();
            s.port = fields.target.map(|t| t.1);
        }
        // Fewer than u32::MAX series, as in `local_series`.
        self.recent[slot] = idx as u32;
        idx
    }

    /// Whether local series `idx` was built from `fields`.
    fn built_from(&self, idx: usize, fields: &KeyFields<'_>) -> bool {
        let s = &self.series[idx];
        let [elb_end, tg_end, target_end] = s.fields_end;
        s.port == fields.target.map(|t| t.1)
            && s.has_target_group == fields.target_group.is_some()
            && self.arena[s.key_end..elb_end] == *fields.elb
            && self.arena[elb_end..tg_end] == *fields.target_group.unwrap_or_default()
            && self.arena[tg_end..target_end] == *fields.target.map_or(&[][..], |t| t.0)
    }

    /// The index of the local series whose key is in `scratch`, taking a spare one (and
    /// copying the key into the arena) if the batch has not seen it yet.
    fn local_series(&mut self) -> usize {
        let key = &self.scratch[..];
        let hash = self.hasher.hash_one(key);
        let (arena, series) = (&self.arena, &self.series);
        let found = self.index.find(hash, |&i| {
            let s = &series[i as usize];
            arena[s.key_start..s.key_end] == *key
        });
        if let Some(&i) = found {
            return i as usize;
        }
        let idx = self.live;
        if idx == self.series.len() {
            self.series.push(LocalSeries::default());
        }
        let key_start = self.arena.len();
        self.arena.extend_from_slice(key);
        let s = &mut self.series[idx];
        s.key_start = key_start;
        s.key_end = self.arena.len();
        s.hash = hash;
        s.max_time = i64::MIN;
        self.live += 1;
        let series = &self.series;
        // A batch holds far fewer than u32::MAX lines, so far fewer series.
        self.index
            .insert_unique(hash, idx as u32, |&i| series[i as usize].hash);
        idx
    }

    /// Moves this batch's counts into `agg` and resets for the next batch.
    pub fn merge_into(&mut self, agg: &mut Aggregator) {
        for local in &mut self.series[..self.live] {
            agg.merge_series(&self.arena[local.key_start..local.key_end], local);
            local.cells.clear();
            local.samples.clear();
        }
        // Clearing keeps every capacity: the next batch's new keys cost no allocation.
        self.index.clear();
        self.arena.clear();
        self.live = 0;
    }
}

/// The start of the bucket of `time` (µs), trying `last`, the previous entry's, first: lines
/// come mostly in time order, so they mostly share it and skip a 64-bit division.
fn bucket_start(last: &mut Option<i64>, time: i64, bucket_us: i64) -> i64 {
    if let Some(b) = *last
        && time
            .checked_sub(b)
            .is_some_and(|d| (0..bucket_us).contains(&d))
    {
        return b;
    }
    let b = time.div_euclid(bucket_us) * bucket_us;
    *last = Some(b);
    b
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    let mut digits = [0u8; 5];
    let mut n = v;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Cumulative-at-export classic histogram of target processing time, in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassicHistogram {
    /// Per bucket of [`LATENCY_BUCKETS_SECONDS`] (not cumulative), then the `+Inf` overflow.
    pub counts: [u64; LATENCY_BUCKETS_SECONDS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

/// [`LATENCY_BUCKETS_SECONDS`] in whole microseconds, so a latency (µs in the logs' parsed
/// form) finds its bucket by integer compares. Every bound is a whole number of µs, so `us <=
/// bound` picks the same bucket as comparing the seconds.
const LATENCY_BUCKETS_US: [u64; LATENCY_BUCKETS_SECONDS.len()] = {
    let mut us = [0u64; LATENCY_BUCKETS_SECONDS.len()];
    let mut i = 0;
    while i < us.len() {
        us[i] = (LATENCY_BUCKETS_SECONDS[i] * 1e6) as u64;
        i += 1;
    }
    us
};

impl ClassicHistogram {
    fn observe_us(&mut self, us: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&le| us <= le)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.counts[i] += 1;
        self.sum_seconds += us as f64 / 1e6;
        self.count += 1;
    }
}

#[derive(Debug)]
struct Bucket {
    start: i64,
    cells: Vec<Cell>,
}

#[derive(Debug)]
struct Minute {
    start: i64,
    target: Latencies,
    elapsed: Latencies,
}

/// One minute's latencies of one series, in milliseconds (up to ALB's largest idle timeout,
/// with one significant digit: at most 6.25 % off, about 1.2 KiB a histogram). Window
/// quantiles read the same histogram either way: the few values are recorded into it as they
/// would have been here.
#[derive(Debug)]
enum Latencies {
    Few(Vec<u32>),
    Many(LatencyHistogram),
}

impl Latencies {
    /// Inlined into the merge, which calls it twice a line; the switch to a histogram, once a
    /// minute at most, stays out of line.
    #[inline]
    fn record(&mut self, ms: u32) {
        match self {
            Latencies::Many(many) => many.record(ms),
            Latencies::Few(few) if few.len() < FEW_LATENCIES => few.push(ms),
            Latencies::Few(_) => self.switch(ms),
        }
    }

    /// Moves the values kept so far, and `ms`, into a histogram.
    #[cold]
    fn switch(&mut self, ms: u32) {
        if let Latencies::Few(few) = self {
            let mut many = LatencyHistogram::default();
            for &v in few.iter().chain([&ms]) {
                many.record(v);
            }
            *self = Latencies::Many(many);
        }
    }

    fn add_to(&self, into: &mut LatencyHistogram) {
        match self {
            Latencies::Few(few) => {
                for &v in few {
                    into.record(v);
                }
            }
            Latencies::Many(many) => into.add(many),
        }
    }
}

#[derive(Debug)]
struct SeriesState {
    labels: Arc<SeriesLabels>,
    last_seen: i64,
    totals: Vec<(Option<u16>, Cause, u64)>,
    bytes_in: u64,
    bytes_out: u64,
    latency: ClassicHistogram,
    buckets: VecDeque<Bucket>,
    minutes: VecDeque<Minute>,
}

/// The shared state every worker merges into; see the module docs.
#[derive(Debug)]
pub struct Aggregator {
    cfg: AggregateConfig,
    /// `cfg.attribute_labels`, shared with every snapshot.
    attribute_labels: Arc<[String]>,
    table: SeriesTable,
    states: Vec<Option<SeriesState>>,
    max_event: Option<i64>,
    clock: i64,
    late_entries: u64,
    future_entries: u64,
    evicted_series: u64,
}

impl Aggregator {
    pub fn new(cfg: AggregateConfig) -> Self {
        Aggregator {
            table: SeriesTable::new(cfg.max_series, cfg.attribute_labels.len()),
            attribute_labels: cfg.attribute_labels.iter().cloned().collect(),
            cfg,
            states: Vec::new(),
            max_event: None,
            clock: i64::MIN,
            late_entries: 0,
            future_entries: 0,
            evicted_series: 0,
        }
    }

    pub fn config(&self) -> &AggregateConfig {
        &self.cfg
    }

    /// The newest event time merged so far.
    pub fn max_event_time(&self) -> Option<i64> {
        self.max_event
    }

    /// The evaluated watermark: every bucket ending at or before it is closed. `None` before
    /// the first evaluation.
    pub fn clock(&self) -> Option<i64> {
        (self.clock != i64::MIN).then_some(self.clock)
    }

    /// The start of the earliest bucket at or after `from` in any series, if any: where the
    /// next evaluation with something to look at is.
    pub fn first_bucket_from(&self, from: i64) -> Option<i64> {
        self.states
            .iter()
            .flatten()
            .filter_map(|s| {
                let at = s.buckets.partition_point(|b| b.start < from);
                s.buckets.get(at).map(|b| b.start)
            })
            .min()
    }

    /// Every `(series, code, cause, requests)` of the buckets starting at `start`: one
    /// evaluation tick's worth of requests, which the [`crate::history`] of the status page
    /// and the replay report records as the tick is evaluated.
    pub fn bucket_at(
        &self,
        start: i64,
    ) -> impl Iterator<Item = (&SeriesLabels, Option<u16>, Cause, u64)> {
        self.states.iter().flatten().flat_map(move |state| {
            let at = state.buckets.partition_point(|b| b.start < start);
            let cells = match state.buckets.get(at) {
                Some(b) if b.start == start => &b.cells[..],
                _ => &[],
            };
            cells
                .iter()
                .map(|c| (&*state.labels, c.code, c.cause, c.requests))
        })
    }

    /// Every series with its counts over the `window_secs` ending at `end`, without the
    /// latency quantiles a [`Snapshot`] computes: what the status page's health grid shows.
    pub fn window_counts(
        &self,
        end: i64,
        window_secs: u32,
    ) -> impl Iterator<Item = (&SeriesLabels, WindowSnapshot)> {
        let from = end.saturating_sub(i64::from(window_secs) * SECOND_US);
        self.states
            .iter()
            .flatten()
            .map(move |state| (&*state.labels, window_counts(state, from, end)))
    }

    /// Entries older than every open bucket start here, after the allowed lateness.
    fn horizon(&self) -> i64 {
        self.clock
            .saturating_sub(i64::from(self.cfg.allowed_lateness_secs) * SECOND_US)
            .saturating_sub(self.cfg.max_window_us())
    }

    fn merge_series(&mut self, key: &[u8], local: &LocalSeries) {
        let requests: u64 = local.cells.iter().map(|c| c.requests).sum();
        let id = self.table.intern(key, requests) as usize;
        if self.states.len() <= id {
            self.states.resize_with(id + 1, || None);
        }
        let horizon = self.horizon();
        let bucket_us = self.cfg.bucket_us();
        let table = &self.table;
        let state = self.states[id].get_or_insert_with(|| SeriesState {
            labels: table.labels(id as u32).cloned().unwrap_or_default(),
            last_seen: local.max_time,
            totals: Vec::new(),
            bytes_in: 0,
            bytes_out: 0,
            latency: ClassicHistogram::default(),
            buckets: VecDeque::new(),
            minutes: VecDeque::new(),
        });
        // Idle means nothing arrived: a series fed with old entries (a backfill, a late
        // delivery) is alive now, so the clock at merge time counts as well as event time.
        state.last_seen = state.last_seen.max(local.max_time).max(self.clock);
        if local.max_time != i64::MIN {
            self.max_event = Some(
                self.max_event
                    .map_or(local.max_time, |m| m.max(local.max_time)),
            );
        }
        for cell in &local.cells {
            match state
                .totals
                .iter_mut()
                .find(|(code, cause, _)| *code == cell.code && *cause == cell.cause)
            {
                Some(total) => total.2 += cell.requests,
                None => state.totals.push((cell.code, cell.cause, cell.requests)),
            }
            state.bytes_in += cell.bytes_in;
            state.bytes_out += cell.bytes_out;
            if cell.bucket == FUTURE_BUCKET {
                self.future_entries += cell.requests;
                continue;
            }
            // Its bucket was evaluated already: late, though still in the totals and, while
            // within the widest window, in the windows.
            if cell.bucket + bucket_us <= self.clock {
                self.late_entries += cell.requests;
            }
            if cell.bucket + bucket_us <= horizon {
                continue;
            }
            let bucket = bucket_for(&mut state.buckets, cell.bucket);
            match bucket
                .cells
                .iter_mut()
                .find(|c| c.code == cell.code && c.cause == cell.cause)
            {
                Some(c) => {
                    c.requests += cell.requests;
                    c.bytes_in += cell.bytes_in;
                    c.bytes_out += cell.bytes_out;
                    c.trace = smallest(c.trace, cell.trace);
                }
                None => bucket.cells.push(*cell),
            }
        }
        // A batch's lines of one series mostly share a minute: its position is looked up
        // (and its start divided out) once per run of them, not per line.
        let mut current: Option<(i64, usize)> = None;
        for sample in &local.samples {
            if let Some(us) = sample.target_us {
                state.latency.observe_us(us);
            }
            if sample.time < horizon {
                continue;
            }
            let at = match current {
                Some((start, at)) if (start..start + MINUTE_US).contains(&sample.time) => at,
                _ => {
                    let start = sample.time.div_euclid(MINUTE_US) * MINUTE_US;
                    let at = minute_for(&mut state.minutes, start);
                    current = Some((start, at));
                    at
                }
            };
            let minute = &mut state.minutes[at];
            if let Some(us) = sample.target_us {
                minute.target.record(ms(us));
            }
            if let Some(us) = sample.elapsed_us {
                minute.elapsed.record(ms(us));
            }
        }
    }

    /// Moves the clock forward to `now` (µs): the wall clock in the daemon, the event-time
    /// watermark in `replay`. Buckets behind the horizon close (later entries for them count as
    /// late) and series idle past the TTL are evicted. The clock never moves back.
    pub fn advance(&mut self, now: i64) {
        // Merges only add buckets and minutes ahead of the horizon and never make a series
        // look idler, so a clock that has not moved has nothing to close or evict — and the
        // replay asks after every batch, while the sweep visits every series.
        if now <= self.clock {
            return;
        }
        self.clock = now;
        let horizon = self.horizon();
        let bucket_us = self.cfg.bucket_us();
        let idle_before = self
            .clock
            .saturating_sub(i64::from(self.cfg.series_ttl_secs) * SECOND_US);
        for id in 0..self.states.len() {
            let Some(state) = self.states[id].as_mut() else {
                continue;
            };
            while state
                .buckets
                .front()
                .is_some_and(|b| b.start + bucket_us <= horizon)
            {
                state.buckets.pop_front();
            }
            while state
                .minutes
                .front()
                .is_some_and(|m| m.start + MINUTE_US <= horizon)
            {
                state.minutes.pop_front();
            }
            if state.last_seen < idle_before {
                self.states[id] = None;
                self.table.release(id as u32);
                self.evicted_series += 1;
            }
        }
    }

    /// An owned view of every series and of the windows ending at `end` (exclusive).
    pub fn snapshot(&self, end: i64) -> Snapshot {
        self.snapshot_of(end, &self.cfg.windows_secs)
    }

    /// Like [`Aggregator::snapshot`] with only the windows of `windows_secs` (the alert rules
    /// need one; summing the others at every evaluation tick would be wasted work).
    pub fn snapshot_of(&self, end: i64, windows_secs: &[u32]) -> Snapshot {
        let mut snapshot = Snapshot::default();
        self.snapshot_into(end, windows_secs, &mut snapshot);
        snapshot
    }

    /// [`Aggregator::snapshot_of`] written over `into`, an earlier snapshot: its vectors are
    /// reused, so an evaluation tick over ten thousand series allocates (and frees) next to
    /// nothing once warm.
    pub fn snapshot_into(&self, end: i64, windows_secs: &[u32], into: &mut Snapshot) {
        // One pair of histograms for every window of every series: reset, not reallocated.
        let mut scratch = (LatencyHistogram::default(), LatencyHistogram::default());
        let mut n = 0;
        for (id, state) in self.states.iter().enumerate() {
            let Some(state) = state else {
                continue;
            };
            if n == into.series.len() {
                into.series.push(SeriesSnapshot::default());
            }
            let series = &mut into.series[n];
            n += 1;
            // Ids come from the series table, which holds at most `max_series` + 1.
            series.id = id as u32;
            series.labels = Arc::clone(&state.labels);
            series.totals.clone_from(&state.totals);
            series.bytes_in_total = state.bytes_in;
            series.bytes_out_total = state.bytes_out;
            series.latency = state.latency.clone();
            series
                .windows
                .resize_with(windows_secs.len(), WindowSnapshot::default);
            for (w, &secs) in series.windows.iter_mut().zip(windows_secs) {
                let from = end.saturating_sub(i64::from(secs) * SECOND_US);
                window_into(state, from, end, &mut scratch, w);
            }
        }
        into.series.truncate(n);
        into.end = end;
        into.windows_secs.clear();
        into.windows_secs.extend_from_slice(windows_secs);
        into.attribute_labels = Arc::clone(&self.attribute_labels);
        into.max_event_time = self.max_event;
        into.late_entries = self.late_entries;
        into.future_entries = self.future_entries;
        into.overflowed_entries = self.table.overflowed_entries;
        into.evicted_series = self.evicted_series;
    }
}

fn ms(us: u64) -> u32 {
    // Clamped to MAX_MS, which fits in a u32.
    (us / 1000).clamp(1, u64::from(MAX_MS)) as u32
}

/// The bucket starting at `start`, inserted in order if it is new.
fn bucket_for(buckets: &mut VecDeque<Bucket>, start: i64) -> &mut Bucket {
    let at = buckets.partition_point(|b| b.start < start);
    if buckets.get(at).is_none_or(|b| b.start != start) {
        buckets.insert(
            at,
            Bucket {
                start,
                cells: Vec::new(),
            },
        );
    }
    &mut buckets[at]
}

/// The position of the minute starting at `start`, inserted in order if it is new.
fn minute_for(minutes: &mut VecDeque<Minute>, start: i64) -> usize {
    let at = minutes.partition_point(|m| m.start < start);
    if minutes.get(at).is_none_or(|m| m.start != start) {
        minutes.insert(
            at,
            Minute {
                start,
                target: Latencies::Few(Vec::new()),
                elapsed: Latencies::Few(Vec::new()),
            },
        );
    }
    at
}

/// The window `[from, end)` of `state`, written over `w` (whose cells' vector is reused);
/// `scratch` is any pair of histograms.
fn window_into(
    state: &SeriesState,
    from: i64,
    end: i64,
    (target, elapsed): &mut (LatencyHistogram, LatencyHistogram),
    w: &mut WindowSnapshot,
) {
    counts_into(state, from, end, w);
    let mut minutes = state
        .minutes
        .iter()
        .filter(|m| m.start + MINUTE_US > from && m.start < end)
        .peekable();
    if minutes.peek().is_none() {
        return;
    }
    target.reset();
    elapsed.reset();
    for m in minutes {
        m.target.add_to(target);
        m.elapsed.add_to(elapsed);
    }
    w.target_latency = Quantiles::of(target);
    w.elapsed_latency = Quantiles::of(elapsed);
}

/// The requests, bytes and cells of the window `[from, end)` of `state`, without latencies.
fn window_counts(state: &SeriesState, from: i64, end: i64) -> WindowSnapshot {
    let mut w = WindowSnapshot::default();
    counts_into(state, from, end, &mut w);
    w
}

/// The requests, bytes and cells of the window `[from, end)` of `state`, written over `w`;
/// its latencies are cleared.
fn counts_into(state: &SeriesState, from: i64, end: i64, w: &mut WindowSnapshot) {
    w.requests = 0;
    w.bytes_in = 0;
    w.bytes_out = 0;
    w.cells.clear();
    w.target_latency = None;
    w.elapsed_latency = None;
    for bucket in state
        .buckets
        .iter()
        .filter(|b| b.start >= from && b.start < end)
    {
        for cell in &bucket.cells {
            w.requests += cell.requests;
            w.bytes_in += cell.bytes_in;
            w.bytes_out += cell.bytes_out;
            match w
                .cells
                .iter_mut()
                .find(|c| c.code == cell.code && c.cause == cell.cause)
            {
                Some(c) => {
                    c.requests += cell.requests;
                    c.trace = smallest(c.trace, cell.trace);
                }
                None => w.cells.push(WindowCell {
                    code: cell.code,
                    cause: cell.cause,
                    requests: cell.requests,
                    trace: cell.trace,
                }),
            }
        }
    }
}

/// Requests of one `(code, cause)` in a window, with an example trace id for faults.
#[derive(Debug, Clone, Copy)]
pub struct WindowCell {
    /// `elb_status_code`; `None` when the load balancer sent no status.
    pub code: Option<u16>,
    pub cause: Cause,
    pub requests: u64,
    pub trace: Option<TraceId>,
}

/// One series over one window.
#[derive(Debug, Clone, Default)]
pub struct WindowSnapshot {
    pub requests: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cells: Vec<WindowCell>,
    pub target_latency: Option<Quantiles>,
    pub elapsed_latency: Option<Quantiles>,
}

impl WindowSnapshot {
    /// Requests whose cause is a fault ([`Cause::is_alertable`]).
    pub fn errors(&self) -> u64 {
        self.cells
            .iter()
            .filter(|c| c.cause.is_alertable())
            .map(|c| c.requests)
            .sum()
    }
}

/// One series: totals since it appeared, and each configured window.
#[derive(Debug, Clone, Default)]
pub struct SeriesSnapshot {
    /// The series' id in the aggregator: the same in every snapshot while the series lives,
    /// and given to another series once it is evicted (whose labels are then another `Arc`).
    pub id: u32,
    pub labels: Arc<SeriesLabels>,
    /// Requests by `(elb_status_code, cause)` since the series appeared.
    pub totals: Vec<(Option<u16>, Cause, u64)>,
    pub bytes_in_total: u64,
    pub bytes_out_total: u64,
    pub latency: ClassicHistogram,
    /// Parallel to [`Snapshot::windows_secs`].
    pub windows: Vec<WindowSnapshot>,
}

/// Everything the exporter and the alert rules need, owned, taken at `end`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Windows end here (exclusive), µs since the epoch.
    pub end: i64,
    pub windows_secs: Vec<u32>,
    /// The names of [`SeriesLabels::attributes`], in the same order.
    pub attribute_labels: Arc<[String]>,
    pub series: Vec<SeriesSnapshot>,
    pub max_event_time: Option<i64>,
    pub late_entries: u64,
    pub future_entries: u64,
    pub overflowed_entries: u64,
    pub evicted_series: u64,
}

impl Snapshot {
    /// The index of the window of `secs` seconds, if configured.
    pub fn window_index(&self, secs: u32) -> Option<usize> {
        self.windows_secs.iter().position(|&w| w == secs)
    }
}

#[cfg(test)]
mod tests;
