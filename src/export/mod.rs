//! The Prometheus side of albwatch: a custom [`Registry`] (never the crate's global one) and
//! the [`SnapshotCollector`], which at every scrape takes ONE owned aggregate [`Snapshot`] and
//! turns it into metric families — request/byte counters, the classic target-latency
//! histogram, the sliding-window gauges and the pipeline's own health. It hands the registry
//! to [`admin`], whose HTTP server encodes it for `/metrics` beside `/ready` and `/live`.
//!
//! The families are built straight from `prometheus::proto` types rather than from live
//! `…Vec` metrics: the aggregator already holds the totals (and a pre-bucketed histogram,
//! which no `Histogram` can be set from), so mirroring them into a second set of atomics
//! would only add a copy that can drift. Every label value comes from the snapshot — interned
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
use std::collections::HashMap;
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
/// by `attribute_labels` (the aggregator's, in the same order). Fails if any family name is
/// already registered there, so two exporters can never emit the same family twice.
pub fn register_snapshot_metrics(
    registry: &Registry,
    source: SnapshotSource,
    wall_clock: WallClock,
    attribute_labels: &[String],
) -> prometheus::Result<()> {
    registry.register(Box::new(SnapshotCollector::new(
        source,
        wall_clock,
        attribute_labels,
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

/// Exports a [`Snapshot`] per scrape; see the module docs.
pub struct SnapshotCollector {
    source: SnapshotSource,
    wall_clock: WallClock,
    /// One per entry of [`FAMILIES`], in that order; the registry uses them to refuse a
    /// second collector with the same names.
    descs: Vec<Desc>,
}

impl std::fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCollector")
            .field("families", &FAMILIES.map(|f| f.name))
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
            descs,
        })
    }
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
        families(&snapshot, now)
    }
}

/// The metric families of `snapshot`, with the watermark lag measured against `wall_now`
/// (µs since the epoch). Families without samples are returned empty; the registry drops them.
pub fn families(snapshot: &Snapshot, wall_now: i64) -> Vec<MetricFamily> {
    let mut requests = Vec::new();
    let mut received = Vec::new();
    let mut sent = Vec::new();
    let mut latency = Vec::new();
    let mut window_requests = Vec::new();
    let mut window_errors = Vec::new();
    let mut window_latency = Vec::new();

    let windows = window_labels(&snapshot.windows_secs);
    for series in unique_series(&snapshot.series) {
        let l = &series.labels;
        let base = series_labels(l, &snapshot.attribute_labels);

        let mut totals: Vec<_> = series.totals.clone();
        totals.sort_unstable_by_key(|&(code, cause, _)| (code, cause));
        for (code, cause, n) in totals {
            let code = code_label(code);
            let values = [code.as_str(), cause.as_str()];
            requests.push(counter(labels(&base, &REQUESTS, &values), n as f64));
        }
        received.push(counter(
            labels(&base, &RECEIVED_BYTES, &[]),
            series.bytes_in_total as f64,
        ));
        sent.push(counter(
            labels(&base, &SENT_BYTES, &[]),
            series.bytes_out_total as f64,
        ));
        // A series without a target (fixed responses, redirects, WAF blocks) can never
        // observe a target response time; seventeen zero series each would be pure noise.
        // Lambda targets log `-` too but do observe, hence the count test.
        if series.latency.count > 0 || l.target != "-" {
            latency.push(histogram(
                labels(&base, &TARGET_RESPONSE, &[]),
                &series.latency,
            ));
        }

        for (window, w) in windows.iter().zip(&series.windows) {
            let Some(window) = window else { continue };
            let values = [window.as_str()];
            window_requests.push(gauge(
                labels(&base, &WINDOW_REQUESTS, &values),
                w.requests as f64,
            ));
            window_errors.push(gauge(
                labels(&base, &WINDOW_ERRORS, &values),
                w.errors() as f64,
            ));
            for (kind, q) in [
                ("target", &w.target_latency),
                ("elapsed", &w.elapsed_latency),
            ] {
                let Some(q) = q else { continue };
                for (percentile, value) in PERCENTILES {
                    let values = [window.as_str(), percentile, kind];
                    window_latency.push(gauge(labels(&base, &WINDOW_LATENCY, &values), value(q)));
                }
            }
        }
    }

    let mut max_event = Vec::new();
    let mut lag = Vec::new();
    if let Some(max) = snapshot.max_event_time {
        max_event.push(gauge(Vec::new(), seconds(max)));
        lag.push(gauge(Vec::new(), seconds(wall_now.saturating_sub(max))));
    }

    vec![
        family(&REQUESTS, requests),
        family(&RECEIVED_BYTES, received),
        family(&SENT_BYTES, sent),
        family(&TARGET_RESPONSE, latency),
        family(&WINDOW_REQUESTS, window_requests),
        family(&WINDOW_ERRORS, window_errors),
        family(&WINDOW_LATENCY, window_latency),
        family(
            &SERIES,
            vec![gauge(Vec::new(), snapshot.series.len() as f64)],
        ),
        family(
            &LATE_ENTRIES,
            vec![counter(Vec::new(), snapshot.late_entries as f64)],
        ),
        family(
            &FUTURE_ENTRIES,
            vec![counter(Vec::new(), snapshot.future_entries as f64)],
        ),
        family(
            &OVERFLOWED_ENTRIES,
            vec![counter(Vec::new(), snapshot.overflowed_entries as f64)],
        ),
        family(
            &EVICTED_SERIES,
            vec![counter(Vec::new(), snapshot.evicted_series as f64)],
        ),
        family(&MAX_EVENT_TIME, max_event),
        family(&WATERMARK_LAG, lag),
    ]
}

/// `60` → `1m`, `300` → `5m`, `900` → `15m`, anything else `<n>s`. A window configured twice
/// gets `None` the second time: one label set may appear only once in a scrape.
fn window_labels(windows_secs: &[u32]) -> Vec<Option<String>> {
    let mut seen: Vec<u32> = Vec::with_capacity(windows_secs.len());
    windows_secs
        .iter()
        .map(|&secs| {
            if seen.contains(&secs) {
                return None;
            }
            seen.push(secs);
            Some(window_label(secs))
        })
        .collect()
}

/// The `window` label value of a window of `secs` seconds.
pub fn window_label(secs: u32) -> String {
    match secs {
        60 => "1m".to_owned(),
        300 => "5m".to_owned(),
        900 => "15m".to_owned(),
        n => format!("{n}s"),
    }
}

/// As ALB writes the code: three digits (`000` for a forwarded HTTP/2 reset), or `-` when the
/// load balancer sent no status.
fn code_label(code: Option<u16>) -> String {
    StatusText(code).to_string()
}

fn seconds(us: i64) -> f64 {
    us as f64 / 1e6
}

/// The series sorted by labels, with any that share a label set merged into one. The
/// interner keeps labels unique, so merging is a safety net: a duplicate label set would make
/// Prometheus reject the whole scrape.
fn unique_series(series: &[SeriesSnapshot]) -> Vec<Cow<'_, SeriesSnapshot>> {
    let mut sorted: Vec<&SeriesSnapshot> = series.iter().collect();
    sorted.sort_by(|a, b| a.labels.cmp(&b.labels));
    let mut out: Vec<Cow<'_, SeriesSnapshot>> = Vec::with_capacity(sorted.len());
    for s in sorted {
        match out.last_mut() {
            Some(last) if last.labels == s.labels => merge(last.to_mut(), s),
            _ => out.push(Cow::Borrowed(s)),
        }
    }
    out
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

fn pair(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_owned());
    pair.set_value(value.to_owned());
    pair
}

/// The series labels of a sample, in descriptor order: elb, target_group, target, then each
/// attribute label whose value is not empty.
fn series_labels(l: &SeriesLabels, attribute_labels: &[String]) -> Vec<LabelPair> {
    SERIES_LABELS
        .iter()
        .zip([&l.elb, &l.target_group, &l.target])
        .map(|(name, value)| pair(name, value))
        .chain(
            attribute_labels
                .iter()
                .zip(&l.attributes)
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| pair(name, value)),
        )
        .collect()
}

/// The label pairs of one sample of the per-series family `f`: the series' own `base`, then
/// `values` under the family's own label names, so they always match its descriptor.
fn labels(base: &[LabelPair], f: &Family, values: &[&str]) -> Vec<LabelPair> {
    debug_assert!(f.per_series, "{}", f.name);
    debug_assert_eq!(f.labels.len(), values.len(), "{}", f.name);
    let mut out = Vec::with_capacity(base.len() + values.len());
    out.extend_from_slice(base);
    out.extend(
        f.labels
            .iter()
            .zip(values)
            .map(|(name, value)| pair(name, value)),
    );
    out
}

fn counter(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut c = proto::Counter::default();
    c.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

fn gauge(labels: Vec<LabelPair>, value: f64) -> Metric {
    let mut g = proto::Gauge::default();
    g.set_value(value);
    let mut m = Metric::from_label(labels);
    m.set_gauge(g);
    m
}

/// Cumulative buckets in increasing `le`. The `+Inf` bucket is left to the encoder, which
/// writes it as the sample count; the aggregator's overflow slot is part of that count.
fn histogram(labels: Vec<LabelPair>, h: &ClassicHistogram) -> Metric {
    let mut cumulative = 0u64;
    let buckets = LATENCY_BUCKETS_SECONDS
        .iter()
        .zip(h.counts)
        .map(|(&le, n)| {
            cumulative += n;
            let mut b = proto::Bucket::default();
            b.set_upper_bound(le);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    // The overflow slot completes the count. Taking the count from the buckets rather than
    // `h.count` (the aggregator keeps them equal) makes `+Inf` >= every bucket by construction.
    let total = cumulative + h.counts[LATENCY_BUCKETS_SECONDS.len()];
    debug_assert_eq!(total, h.count);
    let mut p = proto::Histogram::default();
    p.set_bucket(buckets);
    p.set_sample_count(total);
    p.set_sample_sum(h.sum_seconds);
    let mut m = Metric::from_label(labels);
    m.set_histogram(p);
    m
}

fn family(f: &Family, metrics: Vec<Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(f.name.to_owned());
    mf.set_help(f.help.to_owned());
    mf.set_field_type(f.kind);
    mf.set_metric(metrics);
    mf
}

#[cfg(test)]
mod tests;
