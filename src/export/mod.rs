//! The Prometheus side of albwatch: a custom [`Registry`] (never the crate's global one) and
//! the [`SnapshotCollector`], which at every scrape takes ONE owned aggregate [`Snapshot`] and
//! turns it into metric families — request/byte counters, the classic target-latency
//! histogram, the sliding-window gauges and the pipeline's own health. It hands the registry
//! to [`admin`], whose HTTP server encodes it for `/metrics` beside `/ready` and `/live`.
//!
//! The families come straight from the snapshot rather than from live `…Vec` metrics: the
//! aggregator already holds the totals (and a pre-bucketed histogram, which no `Histogram`
//! can be set from), so mirroring them into a second set of atomics would only add a copy
//! that can drift. One walk over the snapshot feeds two sinks: `prometheus::proto` families
//! for a plain `Registry::gather`, and, for `/metrics` ([`admin::encode`] through
//! [`gather_rendered`]), the text format written directly, byte for byte what `TextEncoder`
//! makes of the proto families. At the 10 000-series cap a scrape is ~450 k lines, and half a
//! million proto objects with two `String`s per label cost several times the text itself;
//! [`ExportConfig`] trims the two heaviest families. Every label value comes from the snapshot — interned
//! and capped series labels, the closed [`Cause`](crate::classify::Cause) set, configured
//! windows — so cardinality stays bounded.
//!
//! Every `alb_*` family starts with the series labels: elb, target_group, target, then the
//! configured attribute labels (`firehose.common_attribute_labels`, e.g. `env`) in config
//! order, each left out of a sample whose value is empty (an entry without attributes), as
//! Prometheus would read an empty value anyway. The family's own labels follow.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `alb_requests_total` | counter | series labels, code, cause |
//! | `alb_received_bytes_total`, `alb_sent_bytes_total` | counter | series labels |
//! | `alb_target_response_seconds` | histogram | series labels |
//! | `alb_window_requests`, `alb_window_errors` | gauge | series labels, window |
//! | `alb_window_latency_seconds` | gauge | series labels, window, percentile, kind |
//! | `albwatch_series`, `albwatch_max_event_timestamp_seconds`, `albwatch_watermark_lag_seconds` | gauge | — |
//! | `albwatch_{late,future,overflowed}_entries_total`, `albwatch_evicted_series_total` | counter | — |

pub mod admin;

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;
use std::sync::Arc;

use prometheus::Registry;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};

use crate::aggregate::series::SeriesLabels;
use crate::aggregate::{
    ClassicHistogram, LATENCY_BUCKETS_SECONDS, Quantiles, SeriesSnapshot, Snapshot, WindowSnapshot,
};
use crate::parse::StatusText;

/// Produces the snapshot a scrape exports (typically: lock the aggregator, `snapshot(now)`).
pub type SnapshotSource = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// Microseconds since the Unix epoch; injected so tests are deterministic.
pub type WallClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The registry `/metrics` serves. No prefix: the names below carry their own (`alb_`,
/// `albwatch_`), and no const labels, which belong to Prometheus' target relabelling.
pub fn new_registry() -> Registry {
    Registry::new()
}

/// Registers the [`SnapshotCollector`] families on `registry`, their series labels extended
/// by `attribute_labels` (the aggregator's, in the same order), everything exported. Fails if
/// any family name is already registered there, so two exporters can never emit the same
/// family twice.
pub fn register_snapshot_metrics(
    registry: &Registry,
    source: SnapshotSource,
    wall_clock: WallClock,
    attribute_labels: &[String],
) -> prometheus::Result<()> {
    register_snapshot_metrics_with(
        registry,
        source,
        wall_clock,
        attribute_labels,
        ExportConfig::default(),
    )
}

/// [`register_snapshot_metrics`] with the `[metrics]` settings: how much of the heaviest
/// families is exported.
pub fn register_snapshot_metrics_with(
    registry: &Registry,
    source: SnapshotSource,
    wall_clock: WallClock,
    attribute_labels: &[String],
    export: ExportConfig,
) -> prometheus::Result<()> {
    registry.register(Box::new(SnapshotCollector::new(
        source,
        wall_clock,
        attribute_labels,
        export,
    )?))
}

/// One exported family: the name, help and label names are fixed here, once, so a sample can
/// never carry a label set that disagrees with its family's descriptor.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// Whether samples start with the series labels ([`SERIES_LABELS`], then the attribute
    /// labels).
    per_series: bool,
    /// The family's own labels, after the series labels.
    labels: &'static [&'static str],
}

const SERIES_LABELS: [&str; 3] = ["elb", "target_group", "target"];

const REQUESTS: Family = Family {
    name: "alb_requests_total",
    help: "ALB access-log entries counted, by load balancer, target group, target, elb_status_code (a dash when the load balancer sent none) and probable cause.",
    kind: MetricType::COUNTER,
    per_series: true,
    labels: &["code", "cause"],
};
const RECEIVED_BYTES: Family = Family {
    name: "alb_received_bytes_total",
    help: "Bytes received from clients (request headers and body), from received_bytes of the access logs.",
    kind: MetricType::COUNTER,
    per_series: true,
    labels: &[],
};
const SENT_BYTES: Family = Family {
    name: "alb_sent_bytes_total",
    help: "Bytes sent to clients (response headers and body), from sent_bytes of the access logs.",
    kind: MetricType::COUNTER,
    per_series: true,
    labels: &[],
};
const TARGET_RESPONSE: Family = Family {
    name: "alb_target_response_seconds",
    help: "Target processing time (target_processing_time of the access logs; entries without a target response, -1, excluded).",
    kind: MetricType::HISTOGRAM,
    per_series: true,
    labels: &[],
};
const WINDOW_REQUESTS: Family = Family {
    name: "alb_window_requests",
    help: "Requests whose event time falls in the sliding window ending at the aggregator's clock.",
    kind: MetricType::GAUGE,
    per_series: true,
    labels: &["window"],
};
const WINDOW_ERRORS: Family = Family {
    name: "alb_window_errors",
    help: "Requests in the sliding window whose probable cause is an alertable fault.",
    kind: MetricType::GAUGE,
    per_series: true,
    labels: &["window"],
};
/// `percentile`, not `quantile`: Prometheus reserves `quantile` for summaries, and
/// `promtool check metrics` rejects it on a gauge.
const WINDOW_LATENCY: Family = Family {
    name: "alb_window_latency_seconds",
    help: "Latency percentile over the sliding window: kind=target is target_processing_time, kind=elapsed is the time from request creation to the log entry.",
    kind: MetricType::GAUGE,
    per_series: true,
    labels: &["window", "percentile", "kind"],
};
const SERIES: Family = Family {
    name: "albwatch_series",
    help: "Live series (elb, target_group, target and attribute values) held by the aggregator, the overflow series included.",
    kind: MetricType::GAUGE,
    per_series: false,
    labels: &[],
};
const LATE_ENTRIES: Family = Family {
    name: "albwatch_late_entries_total",
    help: "Entries that arrived after the event-time watermark had evaluated their bucket: counted in totals, and in the windows that still reach them.",
    kind: MetricType::COUNTER,
    per_series: false,
    labels: &[],
};
const FUTURE_ENTRIES: Family = Family {
    name: "albwatch_future_entries_total",
    help: "Entries stamped further ahead of the wall clock than event_time.max_future_secs: counted in totals, never in windows or watermarks.",
    kind: MetricType::COUNTER,
    per_series: false,
    labels: &[],
};
const OVERFLOWED_ENTRIES: Family = Family {
    name: "albwatch_overflowed_entries_total",
    help: "Entries mapped to the __overflow__ series because the series cap was reached.",
    kind: MetricType::COUNTER,
    per_series: false,
    labels: &[],
};
const EVICTED_SERIES: Family = Family {
    name: "albwatch_evicted_series_total",
    help: "Series dropped after staying idle longer than the series TTL.",
    kind: MetricType::COUNTER,
    per_series: false,
    labels: &[],
};
const MAX_EVENT_TIME: Family = Family {
    name: "albwatch_max_event_timestamp_seconds",
    help: "Newest access-log event time seen, in seconds since the Unix epoch.",
    kind: MetricType::GAUGE,
    per_series: false,
    labels: &[],
};
const WATERMARK_LAG: Family = Family {
    name: "albwatch_watermark_lag_seconds",
    help: "Wall clock minus the newest event time seen: how far behind real time the logs are.",
    kind: MetricType::GAUGE,
    per_series: false,
    labels: &[],
};

const FAMILIES: [&Family; 14] = [
    &REQUESTS,
    &RECEIVED_BYTES,
    &SENT_BYTES,
    &TARGET_RESPONSE,
    &WINDOW_REQUESTS,
    &WINDOW_ERRORS,
    &WINDOW_LATENCY,
    &SERIES,
    &LATE_ENTRIES,
    &FUTURE_ENTRIES,
    &OVERFLOWED_ENTRIES,
    &EVICTED_SERIES,
    &MAX_EVENT_TIME,
    &WATERMARK_LAG,
];

/// Every label name the `alb_*` families use, `le` of the histogram buckets included: the
/// names an attribute label must not take.
pub fn series_family_label_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = SERIES_LABELS.to_vec();
    for f in FAMILIES.iter().filter(|f| f.per_series) {
        names.extend_from_slice(f.labels);
        if f.kind == MetricType::HISTOGRAM {
            names.push("le");
        }
    }
    names.sort_unstable();
    names.dedup();
    names
}

/// The label names of `f`'s descriptor: the series labels with `attribute_labels` for a
/// per-series family, then its own.
fn label_names(f: &Family, attribute_labels: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    if f.per_series {
        names.extend(SERIES_LABELS.iter().map(|l| (*l).to_owned()));
        names.extend_from_slice(attribute_labels);
    }
    names.extend(f.labels.iter().map(|l| (*l).to_owned()));
    names
}

/// Reads one field of [`Quantiles`].
type Percentile = fn(&Quantiles) -> f64;

/// The `percentile` label values, paired with the [`Quantiles`] field they read.
const PERCENTILES: [(&str, Percentile); 3] =
    [("50", |q| q.p50), ("90", |q| q.p90), ("99", |q| q.p99)];

/// How much of the two heaviest per-series families a scrape carries. At the series cap every
/// series writes about 44 lines, 17 of them `alb_target_response_seconds` and 18 of them
/// `alb_window_latency_seconds`, so these two decide what a scrape costs Prometheus. The
/// default exports everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportConfig {
    /// The windows (seconds, among the aggregator's) whose `alb_window_latency_seconds`
    /// gauges are exported; `None` exports every window, an empty list none.
    pub latency_windows_secs: Option<Vec<u32>>,
    /// The `le` bounds of `alb_target_response_seconds` that are exported, each one of
    /// [`LATENCY_BUCKETS_SECONDS`]; `None` exports all of them. A left-out bound's
    /// observations stay in the next exported bucket (the buckets are cumulative), so the
    /// histogram stays valid, only coarser; `+Inf`, `_sum` and `_count` are always there.
    pub latency_buckets_seconds: Option<Vec<f64>>,
}

impl ExportConfig {
    fn latency_window(&self, secs: u32) -> bool {
        self.latency_windows_secs
            .as_ref()
            .is_none_or(|w| w.contains(&secs))
    }

    /// Whether bucket `i` of [`LATENCY_BUCKETS_SECONDS`] is exported.
    fn bucket_mask(&self) -> [bool; LATENCY_BUCKETS_SECONDS.len()] {
        LATENCY_BUCKETS_SECONDS.map(|le| {
            self.latency_buckets_seconds
                .as_ref()
                .is_none_or(|bounds| bounds.contains(&le))
        })
    }
}

/// Exports a [`Snapshot`] per scrape; see the module docs.
pub struct SnapshotCollector {
    source: SnapshotSource,
    wall_clock: WallClock,
    export: ExportConfig,
    /// One per entry of [`FAMILIES`], in that order; the registry uses them to refuse a
    /// second collector with the same names.
    descs: Vec<Desc>,
}

impl std::fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCollector")
            .field("families", &FAMILIES.map(|f| f.name))
            .field("export", &self.export)
            .finish_non_exhaustive()
    }
}

impl SnapshotCollector {
    /// Validates every family name and label name (as `Desc` does: an attribute label that
    /// repeats another label is refused too) up front, so a typo is an error at start-up
    /// rather than a broken scrape. `attribute_labels` must be the aggregator's.
    pub fn new(
        source: SnapshotSource,
        wall_clock: WallClock,
        attribute_labels: &[String],
        export: ExportConfig,
    ) -> prometheus::Result<Self> {
        // `le` is no descriptor label (the encoder adds it to buckets), so `Desc` alone would
        // not catch that one.
        let taken = series_family_label_names();
        if let Some(label) = attribute_labels
            .iter()
            .find(|l| taken.contains(&l.as_str()))
        {
            return Err(prometheus::Error::Msg(format!(
                "the attribute label {label:?} is already a label of the alb_* families"
            )));
        }
        let descs = FAMILIES
            .iter()
            .map(|f| {
                Desc::new(
                    f.name.to_owned(),
                    f.help.to_owned(),
                    label_names(f, attribute_labels),
                    HashMap::new(),
                )
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(SnapshotCollector {
            source,
            wall_clock,
            export,
            descs,
        })
    }
}

thread_local! {
    /// Set while [`gather_rendered`] gathers on this thread: the snapshot collector then
    /// writes its families' text here and hands the registry stand-ins. `admin::encode` only
    /// has the registry to go by, and the registry only calls `collect`, so this slot is how
    /// the text gets from one to the other without half a million proto objects in between.
    static RENDERING: RefCell<Option<Rendered>> = const { RefCell::new(None) };
}

/// The snapshot families of one scrape in the text format (HELP, TYPE and samples), by
/// family name.
#[derive(Debug, Default)]
pub struct Rendered {
    text: String,
    families: Vec<(&'static str, Range<usize>)>,
}

impl Rendered {
    /// The text of the family `name`, if the snapshot collector rendered it.
    pub fn family(&self, name: &str) -> Option<&str> {
        self.families
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, range)| self.text.get(range.clone()))
    }
}

/// Clears the slot when the gathering ends, a panicking collector included, so a later plain
/// `gather()` on this thread gets proto families again.
struct RenderingGuard;

impl Drop for RenderingGuard {
    fn drop(&mut self) {
        RENDERING.with(|slot| slot.borrow_mut().take());
    }
}

/// `registry.gather()`, except that the snapshot families come back as text in [`Rendered`]
/// and as stand-ins (name, help, type and one empty sample) in the gathered list, where they
/// keep the registry's order among the other collectors' families. Every other family is
/// gathered as usual.
pub fn gather_rendered(registry: &Registry) -> (Vec<MetricFamily>, Rendered) {
    let guard = RenderingGuard;
    RENDERING.with(|slot| *slot.borrow_mut() = Some(Rendered::default()));
    let families = registry.gather();
    let rendered = RENDERING.with(|slot| slot.borrow_mut().take());
    drop(guard);
    (families, rendered.unwrap_or_default())
}

impl Collector for SnapshotCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // One snapshot and one clock reading per scrape, so every family describes the same
        // instant.
        let snapshot = (self.source)();
        let now = (self.wall_clock)();
        let stand_ins = RENDERING.with(|slot| {
            let mut slot = slot.borrow_mut();
            let rendered = slot.as_mut()?;
            let mut sink = TextSink::new(rendered);
            walk(&snapshot, now, &self.export, &mut sink);
            Some(sink.stand_ins)
        });
        stand_ins.unwrap_or_else(|| families(&snapshot, now, &self.export))
    }
}

/// The metric families of `snapshot` as `prometheus::proto` objects, with the watermark lag
/// measured against `wall_now` (µs since the epoch). Families without samples are returned
/// empty; the registry drops them. `/metrics` writes the same samples as text instead (see
/// [`gather_rendered`]); this is what a plain `Registry::gather` gets.
pub fn families(snapshot: &Snapshot, wall_now: i64, export: &ExportConfig) -> Vec<MetricFamily> {
    let mut sink = ProtoSink::default();
    walk(snapshot, wall_now, export, &mut sink);
    sink.families
}

/// Where [`walk`] puts the samples: proto objects for `Registry::gather`, or the text format.
/// Families come in [`FAMILIES`] order and their samples in the order the registry sorts them
/// into (by label values), so both outputs encode to the same bytes.
trait Sink {
    /// The series labels of a sample, built once per series and scrape.
    type Labels;
    fn series_labels<'a>(&self, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Self::Labels;
    fn begin(&mut self, f: &'static Family);
    /// A counter or gauge sample of the current family: `series` for a per-series family,
    /// `values` under the family's own label names.
    fn sample(&mut self, series: Option<&Self::Labels>, values: &[&str], value: f64);
    /// A histogram sample: `(index in LATENCY_BUCKETS_SECONDS, cumulative count)` of each
    /// exported bucket; `+Inf` is `count`.
    fn histogram(&mut self, series: &Self::Labels, buckets: &[(usize, u64)], count: u64, sum: f64);
    fn end(&mut self);
}

/// The one walk over a snapshot behind both outputs.
fn walk<S: Sink>(snapshot: &Snapshot, wall_now: i64, export: &ExportConfig, sink: &mut S) {
    let series = unique_series(&snapshot.series);
    let labels: Vec<S::Labels> = series
        .iter()
        .map(|s| sink.series_labels(series_pairs(&s.labels, &snapshot.attribute_labels)))
        .collect();
    let windows = windows_in_label_order(&snapshot.windows_secs);
    let latency_windows: Vec<&(usize, u32, String)> = windows
        .iter()
        .filter(|(_, secs, _)| export.latency_window(*secs))
        .collect();

    sink.begin(&REQUESTS);
    let mut totals: Vec<(CodeLabel, &'static str, u64)> = Vec::new();
    for (s, l) in series.iter().zip(&labels) {
        totals.clear();
        totals.extend(
            s.totals
                .iter()
                .map(|&(code, cause, n)| (CodeLabel::new(code), cause.as_str(), n)),
        );
        totals.sort_unstable_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
        for (code, cause, n) in &totals {
            sink.sample(Some(l), &[code.as_str(), cause], *n as f64);
        }
    }
    sink.end();

    sink.begin(&RECEIVED_BYTES);
    for (s, l) in series.iter().zip(&labels) {
        sink.sample(Some(l), &[], s.bytes_in_total as f64);
    }
    sink.end();
    sink.begin(&SENT_BYTES);
    for (s, l) in series.iter().zip(&labels) {
        sink.sample(Some(l), &[], s.bytes_out_total as f64);
    }
    sink.end();

    sink.begin(&TARGET_RESPONSE);
    let mask = export.bucket_mask();
    let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_SECONDS.len());
    for (s, l) in series.iter().zip(&labels) {
        // A series without a target (fixed responses, redirects, WAF blocks) can never
        // observe a target response time; seventeen zero series each would be pure noise.
        // Lambda targets log `-` too but do observe, hence the count test.
        if s.latency.count == 0 && s.labels.target == "-" {
            continue;
        }
        buckets.clear();
        let mut cumulative = 0u64;
        for (i, &n) in s.latency.counts[..LATENCY_BUCKETS_SECONDS.len()]
            .iter()
            .enumerate()
        {
            cumulative += n;
            if mask[i] {
                buckets.push((i, cumulative));
            }
        }
        // The overflow slot completes the count. Taking the count from the buckets rather
        // than `h.count` (the aggregator keeps them equal) makes `+Inf` >= every bucket by
        // construction.
        let total = cumulative + s.latency.counts[LATENCY_BUCKETS_SECONDS.len()];
        debug_assert_eq!(total, s.latency.count);
        sink.histogram(l, &buckets, total, s.latency.sum_seconds);
    }
    sink.end();

    sink.begin(&WINDOW_REQUESTS);
    for (s, l) in series.iter().zip(&labels) {
        for (i, _, window) in &windows {
            sink.sample(Some(l), &[window], s.windows[*i].requests as f64);
        }
    }
    sink.end();
    sink.begin(&WINDOW_ERRORS);
    for (s, l) in series.iter().zip(&labels) {
        for (i, _, window) in &windows {
            sink.sample(Some(l), &[window], s.windows[*i].errors() as f64);
        }
    }
    sink.end();
    sink.begin(&WINDOW_LATENCY);
    for (s, l) in series.iter().zip(&labels) {
        for (i, _, window) in &latency_windows {
            let w = &s.windows[*i];
            for (percentile, value) in PERCENTILES {
                // `elapsed` sorts before `target`.
                for (kind, q) in [
                    ("elapsed", &w.elapsed_latency),
                    ("target", &w.target_latency),
                ] {
                    if let Some(q) = q {
                        sink.sample(Some(l), &[window, percentile, kind], value(q));
                    }
                }
            }
        }
    }
    sink.end();

    for (f, value) in [
        (&SERIES, snapshot.series.len() as f64),
        (&LATE_ENTRIES, snapshot.late_entries as f64),
        (&FUTURE_ENTRIES, snapshot.future_entries as f64),
        (&OVERFLOWED_ENTRIES, snapshot.overflowed_entries as f64),
        (&EVICTED_SERIES, snapshot.evicted_series as f64),
    ] {
        sink.begin(f);
        sink.sample(None, &[], value);
        sink.end();
    }
    for (f, value) in [
        (&MAX_EVENT_TIME, snapshot.max_event_time.map(seconds)),
        (
            &WATERMARK_LAG,
            snapshot
                .max_event_time
                .map(|max| seconds(wall_now.saturating_sub(max))),
        ),
    ] {
        sink.begin(f);
        if let Some(value) = value {
            sink.sample(None, &[], value);
        }
        sink.end();
    }
}

/// The configured windows that get samples, as `(index in windows_secs, seconds, label)`, in
/// the order of their labels (`15m` < `1m` < `5m`, as the registry sorts them). A window
/// configured twice is exported once: one label set may appear only once in a scrape.
fn windows_in_label_order(windows_secs: &[u32]) -> Vec<(usize, u32, String)> {
    let mut windows: Vec<(usize, u32, String)> = Vec::with_capacity(windows_secs.len());
    for (i, &secs) in windows_secs.iter().enumerate() {
        if windows.iter().all(|&(_, s, _)| s != secs) {
            windows.push((i, secs, window_label(secs)));
        }
    }
    windows.sort_by(|a, b| a.2.cmp(&b.2));
    windows
}

/// The `window` label value of a window of `secs` seconds: `60` → `1m`, `300` → `5m`, `900`
/// → `15m`, anything else `<n>s`.
pub fn window_label(secs: u32) -> String {
    match secs {
        60 => "1m".to_owned(),
        300 => "5m".to_owned(),
        900 => "15m".to_owned(),
        n => format!("{n}s"),
    }
}

/// The `code` label as ALB writes it (three digits, `000` for a forwarded HTTP/2 reset, or `-`
/// when the load balancer sent no status), on the stack: one per request sample would
/// otherwise be an allocation each.
struct CodeLabel {
    buf: [u8; 8],
    len: usize,
}

impl CodeLabel {
    fn new(code: Option<u16>) -> Self {
        let mut buf = [0u8; 8];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        // `-` or a u16 (at most five digits) always fits in eight bytes.
        let _ = write!(cursor, "{}", StatusText(code));
        let len = usize::try_from(cursor.position()).unwrap_or(0);
        CodeLabel { buf, len }
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and `-` are ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("-")
    }
}

fn seconds(us: i64) -> f64 {
    us as f64 / 1e6
}

/// The series in the order the registry sorts samples (fewer labels first, then by label
/// values), with any that share a label set merged into one. The interner keeps labels
/// unique, so merging is a safety net: a duplicate label set would make Prometheus reject the
/// whole scrape.
fn unique_series(series: &[SeriesSnapshot]) -> Vec<Cow<'_, SeriesSnapshot>> {
    let mut sorted: Vec<&SeriesSnapshot> = series.iter().collect();
    // The full labels break ties, so equal label sets end up next to each other.
    sorted
        .sort_by(|a, b| registry_order(&a.labels, &b.labels).then_with(|| a.labels.cmp(&b.labels)));
    let mut out: Vec<Cow<'_, SeriesSnapshot>> = Vec::with_capacity(sorted.len());
    for s in sorted {
        match out.last_mut() {
            Some(last) if last.labels == s.labels => merge(last.to_mut(), s),
            _ => out.push(Cow::Borrowed(s)),
        }
    }
    out
}

/// The registry's order of samples, on the series labels: by the number of labels (empty
/// attributes are left out), then value by value.
fn registry_order(a: &SeriesLabels, b: &SeriesLabels) -> std::cmp::Ordering {
    fn present(l: &SeriesLabels) -> impl Iterator<Item = &str> {
        [&l.elb, &l.target_group, &l.target]
            .into_iter()
            .chain(l.attributes.iter().filter(|v| !v.is_empty()))
            .map(String::as_str)
    }
    present(a)
        .count()
        .cmp(&present(b).count())
        .then_with(|| present(a).cmp(present(b)))
}

fn merge(into: &mut SeriesSnapshot, other: &SeriesSnapshot) {
    for &(code, cause, n) in &other.totals {
        match into
            .totals
            .iter_mut()
            .find(|(c, k, _)| *c == code && *k == cause)
        {
            Some(total) => total.2 += n,
            None => into.totals.push((code, cause, n)),
        }
    }
    into.bytes_in_total += other.bytes_in_total;
    into.bytes_out_total += other.bytes_out_total;
    let h: &mut ClassicHistogram = &mut into.latency;
    for (count, add) in h.counts.iter_mut().zip(other.latency.counts) {
        *count += add;
    }
    h.sum_seconds += other.latency.sum_seconds;
    h.count += other.latency.count;
    for (w, o) in into.windows.iter_mut().zip(&other.windows) {
        merge_window(w, o);
    }
}

/// Percentiles cannot be combined from two summaries; the larger of each is the cautious
/// choice for an alerting view.
fn merge_window(into: &mut WindowSnapshot, other: &WindowSnapshot) {
    into.requests += other.requests;
    into.bytes_in += other.bytes_in;
    into.bytes_out += other.bytes_out;
    into.cells.extend_from_slice(&other.cells);
    let max = |a: Option<Quantiles>, b: Option<Quantiles>| match (a, b) {
        (Some(a), Some(b)) => Some(Quantiles {
            p50: a.p50.max(b.p50),
            p90: a.p90.max(b.p90),
            p99: a.p99.max(b.p99),
        }),
        (a, b) => a.or(b),
    };
    into.target_latency = max(into.target_latency, other.target_latency);
    into.elapsed_latency = max(into.elapsed_latency, other.elapsed_latency);
}

/// The series labels of a sample, in descriptor order: elb, target_group, target, then each
/// attribute label whose value is not empty.
fn series_pairs<'a>(
    l: &'a SeriesLabels,
    attribute_labels: &'a [String],
) -> impl Iterator<Item = (&'a str, &'a str)> {
    SERIES_LABELS
        .iter()
        .zip([&l.elb, &l.target_group, &l.target])
        .map(|(name, value)| (*name, value.as_str()))
        .chain(
            attribute_labels
                .iter()
                .zip(&l.attributes)
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (name.as_str(), value.as_str())),
        )
}

/// Builds `prometheus::proto` families, for `Registry::gather`.
#[derive(Default)]
struct ProtoSink {
    families: Vec<MetricFamily>,
    family: Option<&'static Family>,
}

fn pair(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

impl Sink for ProtoSink {
    type Labels = Vec<LabelPair>;

    fn series_labels<'a>(&self, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<LabelPair> {
        pairs.map(|(name, value)| pair(name, value)).collect()
    }

    fn begin(&mut self, f: &'static Family) {
        let mut mf = MetricFamily::default();
        mf.set_name(f.name.to_owned());
        mf.set_help(f.help.to_owned());
        mf.set_field_type(f.kind);
        self.families.push(mf);
        self.family = Some(f);
    }

    fn sample(&mut self, series: Option<&Vec<LabelPair>>, values: &[&str], value: f64) {
        let (Some(f), Some(mf)) = (self.family, self.families.last_mut()) else {
            return;
        };
        debug_assert_eq!(f.labels.len(), values.len(), "{}", f.name);
        let mut labels = Vec::with_capacity(series.map_or(0, Vec::len) + values.len());
        labels.extend(series.into_iter().flatten().cloned());
        labels.extend(f.labels.iter().zip(values).map(|(n, v)| pair(n, v)));
        let mut m = Metric::from_label(labels);
        if f.kind == MetricType::COUNTER {
            let mut c = proto::Counter::default();
            c.set_value(value);
            m.set_counter(c);
        } else {
            let mut g = proto::Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
        mf.mut_metric().push(m);
    }

    fn histogram(
        &mut self,
        series: &Vec<LabelPair>,
        buckets: &[(usize, u64)],
        count: u64,
        sum: f64,
    ) {
        let Some(mf) = self.families.last_mut() else {
            return;
        };
        let buckets = buckets
            .iter()
            .map(|&(i, cumulative)| {
                let mut b = proto::Bucket::default();
                b.set_upper_bound(LATENCY_BUCKETS_SECONDS[i]);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        // The `+Inf` bucket is left to the encoder, which writes it as the sample count.
        let mut h = proto::Histogram::default();
        h.set_bucket(buckets);
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        let mut m = Metric::from_label(series.clone());
        m.set_histogram(h);
        mf.mut_metric().push(m);
    }

    fn end(&mut self) {
        self.family = None;
    }
}

/// Writes the text format straight from the snapshot, exactly as `TextEncoder` would write
/// the proto families (same escaping, number formatting and order), into a [`Rendered`].
struct TextSink<'r> {
    out: &'r mut Rendered,
    family: Option<&'static Family>,
    /// Where the current family's text starts, and where its samples start.
    start: usize,
    samples_start: usize,
    /// The `le` label values, written once per scrape rather than once per bucket.
    le: [String; LATENCY_BUCKETS_SECONDS.len()],
    stand_ins: Vec<MetricFamily>,
}

impl<'r> TextSink<'r> {
    fn new(out: &'r mut Rendered) -> Self {
        TextSink {
            out,
            family: None,
            start: 0,
            samples_start: 0,
            le: LATENCY_BUCKETS_SECONDS.map(|b| b.to_string()),
            stand_ins: Vec::new(),
        }
    }

    /// `name{series,own="value"…,extra} value\n`, as the encoder writes a sample.
    fn line(
        &mut self,
        suffix: &str,
        series: Option<&str>,
        values: &[&str],
        extra: Option<(&str, &str)>,
        value: f64,
    ) {
        let Some(f) = self.family else { return };
        let text = &mut self.out.text;
        text.push_str(f.name);
        text.push_str(suffix);
        let mut separator = '{';
        if let Some(series) = series {
            text.push(separator);
            text.push_str(series);
            separator = ',';
        }
        for (name, value) in f
            .labels
            .iter()
            .zip(values)
            .chain(extra.as_ref().map(|(n, v)| (n, v)))
        {
            text.push(separator);
            push_pair(text, name, value);
            separator = ',';
        }
        if separator == ',' {
            text.push('}');
        }
        text.push(' ');
        push_value(text, value);
        text.push('\n');
    }
}

/// `name="value"` with the value escaped as the text format requires: backslash, double quote
/// and newline (label values come from the logs, so any of them may occur).
fn push_pair(text: &mut String, name: &str, value: &str) {
    text.push_str(name);
    text.push_str("=\"");
    push_escaped(text, value, true);
    text.push('"');
}

/// `value` with `\` and newline escaped, and `"` too in a label value (HELP text keeps it).
fn push_escaped(text: &mut String, value: &str, quote: bool) {
    let mut rest = value;
    while let Some(i) = rest.find(|c| c == '\\' || c == '\n' || (quote && c == '"')) {
        text.push_str(&rest[..i]);
        text.push_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            _ => "\\\"",
        });
        rest = &rest[i + 1..];
    }
    text.push_str(rest);
}

/// A sample value as the encoder writes it (`f64`'s `Display`).
fn push_value(text: &mut String, value: f64) {
    // Writing to a String cannot fail.
    let _ = write!(text, "{value}");
}

impl Sink for TextSink<'_> {
    /// The series labels of every sample of a series, escaped, written once per scrape.
    type Labels = String;

    fn series_labels<'a>(&self, pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
        let mut labels = String::with_capacity(96);
        for (i, (name, value)) in pairs.enumerate() {
            if i > 0 {
                labels.push(',');
            }
            push_pair(&mut labels, name, value);
        }
        labels
    }

    fn begin(&mut self, f: &'static Family) {
        self.family = Some(f);
        let text = &mut self.out.text;
        self.start = text.len();
        text.push_str("# HELP ");
        text.push_str(f.name);
        text.push(' ');
        push_escaped(text, f.help, false);
        text.push_str("\n# TYPE ");
        text.push_str(f.name);
        text.push(' ');
        text.push_str(type_name(f.kind));
        text.push('\n');
        self.samples_start = text.len();
    }

    fn sample(&mut self, series: Option<&String>, values: &[&str], value: f64) {
        debug_assert_eq!(
            self.family.map(|f| f.labels.len()),
            Some(values.len()),
            "label values"
        );
        self.line("", series.map(String::as_str), values, None, value);
    }

    fn histogram(&mut self, series: &String, buckets: &[(usize, u64)], count: u64, sum: f64) {
        for &(i, cumulative) in buckets {
            let le = std::mem::take(&mut self.le[i]);
            self.line(
                "_bucket",
                Some(series),
                &[],
                Some(("le", &le)),
                cumulative as f64,
            );
            self.le[i] = le;
        }
        self.line(
            "_bucket",
            Some(series),
            &[],
            Some(("le", "+Inf")),
            count as f64,
        );
        self.line("_sum", Some(series), &[], None, sum);
        self.line("_count", Some(series), &[], None, count as f64);
    }

    fn end(&mut self) {
        let Some(f) = self.family.take() else { return };
        // The registry drops a family without samples, HELP and TYPE included.
        if self.out.text.len() == self.samples_start {
            self.out.text.truncate(self.start);
            return;
        }
        self.out
            .families
            .push((f.name, self.start..self.out.text.len()));
        let mut stand_in = MetricFamily::default();
        stand_in.set_name(f.name.to_owned());
        stand_in.set_help(f.help.to_owned());
        stand_in.set_field_type(f.kind);
        stand_in.set_metric(vec![Metric::default()]);
        self.stand_ins.push(stand_in);
    }
}

/// The TYPE line's word for `kind`.
fn type_name(kind: MetricType) -> &'static str {
    match kind {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

#[cfg(test)]
mod tests;
