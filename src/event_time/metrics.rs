//! The event-time metrics: the watermark, each partition's lag and state, and how late alerts
//! are detected. Partition gauges are read from the [`Timeline`] at scrape time (their label
//! set is bounded by the partition cap per input); the detection-delay histogram is observed
//! by the daemon when an alert starts firing.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, Histogram, HistogramOpts, IntGaugeVec, Opts, Registry};

use super::{InputKind, PartitionState, Timeline};
use crate::export::WallClock;

/// Detection delays span seconds (a live shipper) to tens of minutes (S3 files).
const DELAY_BUCKETS: [f64; 12] = [
    5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// What the daemon observes itself; the rest is read at scrape time.
#[derive(Clone)]
pub struct EventTimeMetrics {
    detection_delay: Histogram,
}

impl EventTimeMetrics {
    /// Registers the event-time families on `registry`, reading `timeline` at every scrape
    /// with `wall_clock` for lag and idleness.
    pub fn register(
        registry: &Registry,
        timeline: Timeline,
        wall_clock: WallClock,
    ) -> prometheus::Result<Self> {
        let detection_delay = Histogram::with_opts(
            HistogramOpts::new(
                "albwatch_alert_detection_delay_seconds",
                "Wall clock when an alert started firing minus the event time it started at: \
                 log delivery delay plus the out-of-order bound plus evaluation.",
            )
            .buckets(DELAY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(detection_delay.clone()))?;
        registry.register(Box::new(TimelineCollector::new(timeline, wall_clock)?))?;
        Ok(EventTimeMetrics { detection_delay })
    }

    /// An alert fired at `wall_now` for what started at event time `starts_at` (both µs).
    pub fn fired(&self, wall_now: i64, starts_at: i64) {
        self.detection_delay
            .observe(wall_now.saturating_sub(starts_at).max(0) as f64 / 1e6);
    }
}

struct TimelineCollector {
    timeline: Timeline,
    wall_clock: WallClock,
    watermark: Gauge,
    lag: GaugeVec,
    partitions: IntGaugeVec,
    descs: Vec<Desc>,
}

impl TimelineCollector {
    fn new(timeline: Timeline, wall_clock: WallClock) -> prometheus::Result<Self> {
        let watermark = Gauge::with_opts(Opts::new(
            "albwatch_event_time_watermark_seconds",
            "Event time up to which windows are closed and alerts evaluated, in seconds since \
             the Unix epoch.",
        ))?;
        let lag = GaugeVec::new(
            Opts::new(
                "albwatch_partition_lag_seconds",
                "Wall clock minus the newest event time counted from each input partition (a \
                 file, a Kinesis shard, a Firehose source).",
            ),
            &["input", "partition"],
        )?;
        let partitions = IntGaugeVec::new(
            Opts::new(
                "albwatch_partitions",
                "Input partitions by state: active ones hold the watermark back, idle and \
                 finished ones do not.",
            ),
            &["input", "state"],
        )?;
        let descs = [watermark.desc(), lag.desc(), partitions.desc()]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        Ok(TimelineCollector {
            timeline,
            wall_clock,
            watermark,
            lag,
            partitions,
            descs,
        })
    }
}

impl Collector for TimelineCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = (self.wall_clock)();
        let (watermark, view) = self.timeline.with(|w| (w.watermark(now), w.view(now)));
        self.lag.reset();
        for input in InputKind::ALL {
            for state in PartitionState::ALL {
                self.partitions
                    .with_label_values(&[input.as_str(), state.as_str()])
                    .set(0);
            }
        }
        for p in &view {
            self.partitions
                .with_label_values(&[p.input.as_str(), p.state.as_str()])
                .inc();
            if let Some(progress) = p.progress {
                self.lag
                    .with_label_values(&[p.input.as_str(), &p.name])
                    .set(now.saturating_sub(progress) as f64 / 1e6);
            }
        }
        let mut families = Vec::new();
        if let Some(w) = watermark {
            self.watermark.set(w as f64 / 1e6);
            families.extend(self.watermark.collect());
        }
        families.extend(self.lag.collect());
        families.extend(self.partitions.collect());
        families
    }
}
