//! Windows, lateness, overflow and eviction under injected event time (no clock, no sleeps).

use super::*;
use crate::classify::{LbSettings, classify};
use crate::parse::parse_line;
use crate::test_support::{cause_line, retimed_tokens};

const T0: i64 = 1_795_514_400_000_000; // 2026-11-24T10:00:00Z

/// The fixture line `n` of causes.log re-timed to `at` (µs, 4 ms after its creation) and moved
/// to `target`.
fn line_at(n: usize, at: i64, target: &str) -> String {
    let line = cause_line(n).replace("10.0.1.17:8080", target);
    retimed_tokens(&line, at, 4_000).join(" ")
}

fn feed(acc: &mut BatchAccumulator, agg: &mut Aggregator, lines: &[String]) {
    let lb = LbSettings::default();
    for line in lines {
        let e = parse_line(line.as_bytes()).unwrap_or_else(|err| panic!("{err}: {line}"));
        acc.add(&e, classify(&e, &lb));
    }
    acc.merge_into(agg);
}

fn cfg() -> AggregateConfig {
    AggregateConfig::default()
}

/// 10 OKs spread over 10 minutes, then 5 refused connections in the last minute.
fn quiet_then_refused() -> Vec<String> {
    let mut lines: Vec<String> = (0..10)
        .map(|i| line_at(0, T0 + i * MINUTE_US, "10.0.1.17:8080"))
        .collect();
    lines.extend((0..5).map(|i| line_at(28, T0 + 9 * MINUTE_US + i * SECOND_US, "10.0.1.17:8080")));
    lines
}

#[test]
fn windows_sum_the_buckets_they_cover() {
    let mut agg = Aggregator::new(cfg());
    let mut acc = BatchAccumulator::new(agg.config());
    feed(&mut acc, &mut agg, &quiet_then_refused());
    let snap = agg.snapshot(T0 + 10 * MINUTE_US);
    assert_eq!(snap.series.len(), 1);
    let s = &snap.series[0];
    assert_eq!(s.labels.target, "10.0.1.17:8080");
    assert_eq!(s.labels.target_group, "web-prod");
    let [one, five, fifteen] = [&s.windows[0], &s.windows[1], &s.windows[2]];
    assert_eq!((one.requests, one.errors()), (6, 5));
    assert_eq!((five.requests, five.errors()), (10, 5));
    assert_eq!((fifteen.requests, fifteen.errors()), (15, 5));
    let refused = one
        .cells
        .iter()
        .find(|c| c.cause == Cause::TargetRefusedConnection)
        .expect("cell");
    assert_eq!((refused.code, refused.requests), (Some(502), 5));
    assert!(
        refused
            .trace
            .expect("example trace")
            .as_str()
            .starts_with("Root=1-")
    );
    assert_eq!(s.totals.iter().map(|t| t.2).sum::<u64>(), 15);
    assert!(one.target_latency.is_some());
    // A window ending later no longer sees the burst.
    let later = agg.snapshot(T0 + 12 * MINUTE_US);
    assert_eq!(later.series[0].windows[0].requests, 0);
}

#[test]
fn window_counts_and_the_bucket_at_a_tick_match_the_snapshot() {
    let mut agg = Aggregator::new(cfg());
    let mut acc = BatchAccumulator::new(agg.config());
    feed(&mut acc, &mut agg, &quiet_then_refused());
    let end = T0 + 10 * MINUTE_US;
    let snap = agg.snapshot(end);
    let counts: Vec<(String, u64, u64)> = agg
        .window_counts(end, 60)
        .map(|(l, w)| (l.target.clone(), w.requests, w.errors()))
        .collect();
    let one = &snap.series[0].windows[0];
    assert_eq!(
        counts,
        [("10.0.1.17:8080".to_owned(), one.requests, one.errors())]
    );
    // The bucket of 10:09:00-10:09:10 holds the minute's OK and the five refusals.
    let tick: Vec<(Option<u16>, Cause, u64)> = agg
        .bucket_at(T0 + 9 * MINUTE_US)
        .map(|(_, code, cause, n)| (code, cause, n))
        .collect();
    assert_eq!(tick.iter().map(|t| t.2).sum::<u64>(), 6);
    assert!(tick.contains(&(Some(502), Cause::TargetRefusedConnection, 5)));
    assert_eq!(
        agg.bucket_at(T0 + 9 * MINUTE_US + 10 * SECOND_US).count(),
        0
    );
}

#[test]
fn late_entries_are_counted_and_kept_where_the_windows_still_reach() {
    let mut agg = Aggregator::new(cfg());
    let mut acc = BatchAccumulator::new(agg.config());
    feed(
        &mut acc,
        &mut agg,
        &[line_at(0, T0 + 60 * MINUTE_US, "10.0.1.17:8080")],
    );
    // The watermark has passed 60 minutes: every bucket before it is evaluated.
    agg.advance(T0 + 60 * MINUTE_US);
    // 15 min window + 2 min lateness behind the watermark: an entry from 30 minutes earlier
    // is late and out of every window's reach, so it counts in the totals only.
    feed(
        &mut acc,
        &mut agg,
        &[line_at(0, T0 + 30 * MINUTE_US, "10.0.1.17:8080")],
    );
    // One from 5 minutes earlier is late too (its bucket was evaluated), but the 15-minute
    // window still reaches it.
    feed(
        &mut acc,
        &mut agg,
        &[line_at(0, T0 + 55 * MINUTE_US, "10.0.1.17:8080")],
    );
    // One in the bucket the watermark has not closed is on time.
    feed(
        &mut acc,
        &mut agg,
        &[line_at(
            0,
            T0 + 60 * MINUTE_US + SECOND_US,
            "10.0.1.17:8080",
        )],
    );
    let snap = agg.snapshot(T0 + 60 * MINUTE_US + 10 * SECOND_US);
    assert_eq!(snap.late_entries, 2);
    let s = &snap.series[0];
    assert_eq!(s.totals.iter().map(|t| t.2).sum::<u64>(), 4);
    assert_eq!(s.windows[2].requests, 3);
}

#[test]
fn entries_past_the_future_limit_count_in_totals_only() {
    let mut agg = Aggregator::new(cfg());
    let mut acc = BatchAccumulator::new(agg.config());
    acc.set_future_limit(T0 + MINUTE_US);
    let year_us = 365 * 24 * 60 * MINUTE_US;
    feed(
        &mut acc,
        &mut agg,
        &[
            line_at(28, T0, "10.0.1.17:8080"),
            line_at(28, T0 + 10 * year_us, "10.0.1.17:8080"),
        ],
    );
    let snap = agg.snapshot(T0 + 10 * year_us + SECOND_US);
    assert_eq!(snap.future_entries, 1);
    assert_eq!(
        snap.max_event_time,
        Some(T0),
        "the stray line moves no event time"
    );
    assert_eq!(snap.series[0].totals.iter().map(|t| t.2).sum::<u64>(), 2);
    assert_eq!(snap.series[0].windows[2].requests, 0, "and opens no bucket");
    assert_eq!(agg.first_bucket_from(T0 + SECOND_US), None);
}

#[test]
fn wall_clock_decays_a_quiet_stream() {
    let mut agg = Aggregator::new(cfg());
    let mut acc = BatchAccumulator::new(agg.config());
    feed(&mut acc, &mut agg, &[line_at(28, T0, "10.0.1.17:8080")]);
    assert_eq!(
        agg.snapshot(T0 + SECOND_US).series[0].windows[0].errors(),
        1
    );
    agg.advance(T0 + 2 * MINUTE_US);
    assert_eq!(
        agg.snapshot(T0 + 2 * MINUTE_US).series[0].windows[0].errors(),
        0
    );
}

#[test]
fn target_churn_stays_under_the_cap_and_idle_series_are_evicted() {
    let config = AggregateConfig {
        max_series: 50,
        series_ttl_secs: 1_800,
        ..cfg()
    };
    let mut agg = Aggregator::new(config);
    let mut acc = BatchAccumulator::new(agg.config());
    let lb = LbSettings::default();
    let base = line_at(0, T0, "10.0.1.17:8080");
    // 20 000 distinct targets, one batch of 100 per simulated second.
    for batch in 0..200 {
        for i in 0..100 {
            let n = batch * 100 + i;
            let target = format!("10.{}.{}.{}:8080", n / 65_536, n / 256 % 256, n % 256);
            let line = base.replace("10.0.1.17:8080", &target);
            let e = parse_line(line.as_bytes()).expect("parses");
            acc.add(&e, classify(&e, &lb));
        }
        acc.merge_into(&mut agg);
    }
    let snap = agg.snapshot(T0 + SECOND_US);
    assert!(snap.series.len() <= 51, "{} series", snap.series.len());
    assert!(snap.overflowed_entries >= 20_000 - 50);
    let overflow = snap
        .series
        .iter()
        .find(|s| s.labels.target == series::OVERFLOW)
        .expect("overflow series");
    assert!(overflow.windows[0].requests >= 19_000);
    // Half an hour of silence later everything is evicted and room is back.
    agg.advance(T0 + 31 * MINUTE_US);
    let snap = agg.snapshot(T0 + 31 * MINUTE_US);
    assert!(snap.series.is_empty());
    assert_eq!(snap.evicted_series, 51);
}

/// A snapshot written over an earlier one (the evaluator's, reused tick after tick) reads
/// exactly as a fresh one, whether series came, went or changed their windows meanwhile.
#[test]
fn a_snapshot_written_over_an_older_one_equals_a_fresh_one() {
    let config = AggregateConfig {
        series_ttl_secs: 300,
        ..cfg()
    };
    let mut agg = Aggregator::new(config);
    let mut acc = BatchAccumulator::new(agg.config());
    let mut reused = Snapshot::default();
    let windows = [60, 300];
    // Three targets, then two others while the first ones go idle and are evicted; faults
    // and OKs mixed so the windows have several cells and latencies.
    for step in 0..12_i64 {
        let at = T0 + step * MINUTE_US;
        let targets: &[&str] = if step < 4 {
            &["10.0.1.1:80", "10.0.1.2:80", "10.0.1.3:80"]
        } else {
            &["10.0.2.1:80", "10.0.2.2:80"]
        };
        let lines: Vec<String> = targets
            .iter()
            .enumerate()
            .flat_map(|(i, t)| {
                (0..=i as i64).map(move |k| line_at(if k % 2 == 0 { 0 } else { 28 }, at + k, t))
            })
            .collect();
        feed(&mut acc, &mut agg, &lines);
        agg.advance(at);
        let end = at + SECOND_US;
        agg.snapshot_into(end, &windows, &mut reused);
        let fresh = agg.snapshot_of(end, &windows);
        assert_eq!(format!("{reused:?}"), format!("{fresh:?}"), "step {step}");
    }
    assert!(reused.evicted_series > 0, "some series went");
    assert_eq!(reused.series.len(), 2);
}

/// Regression (daemon test): entries hours old arriving now (a backfill or a late Firehose
/// delivery) made their series look idle, so the next tick evicted it and its totals vanished
/// from the exposition.
#[test]
fn old_entries_arriving_now_keep_their_series_alive() {
    let mut agg = Aggregator::new(cfg());
    let mut acc = BatchAccumulator::new(agg.config());
    let now = T0 + 6 * 60 * MINUTE_US;
    agg.advance(now);
    feed(&mut acc, &mut agg, &[line_at(0, T0, "10.0.1.17:8080")]);
    agg.advance(now + SECOND_US);
    let snap = agg.snapshot(now + SECOND_US);
    assert_eq!(snap.series.len(), 1);
    assert_eq!(snap.series[0].totals.iter().map(|t| t.2).sum::<u64>(), 1);
    assert_eq!(snap.late_entries, 1);
}

fn env_cfg(max_series: usize) -> AggregateConfig {
    AggregateConfig {
        attribute_labels: vec!["env".to_string()],
        max_series,
        ..cfg()
    }
}

/// The requests of each series as `(target, env, requests)`, sorted.
fn requests_by_series(snap: &Snapshot) -> Vec<(String, Vec<String>, u64)> {
    let mut out: Vec<_> = snap
        .series
        .iter()
        .map(|s| {
            (
                s.labels.target.clone(),
                s.labels.attributes.clone(),
                s.totals.iter().map(|t| t.2).sum(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn attribute_values_split_series() {
    let mut agg = Aggregator::new(env_cfg(100));
    let mut acc = BatchAccumulator::new(agg.config());
    let lines = |n: i64| -> Vec<String> {
        (0..n)
            .map(|i| line_at(0, T0 + i * SECOND_US, "10.0.1.17:8080"))
            .collect()
    };
    acc.set_attributes(&["prod"]);
    feed(&mut acc, &mut agg, &lines(3));
    acc.set_attributes(&["staging"]);
    feed(&mut acc, &mut agg, &lines(2));
    // A batch without attributes (a file, Kinesis): the empty value, however it is spelt.
    acc.set_attributes::<&str>(&[]);
    feed(&mut acc, &mut agg, &lines(1));
    acc.set_attributes(&[""]);
    feed(&mut acc, &mut agg, &lines(1));
    acc.set_attributes(&["prod"]);
    feed(&mut acc, &mut agg, &lines(4));
    let snap = agg.snapshot(T0 + MINUTE_US);
    assert_eq!(&*snap.attribute_labels, ["env"]);
    let t = "10.0.1.17:8080".to_string();
    assert_eq!(
        requests_by_series(&snap),
        [
            (t.clone(), vec![String::new()], 2),
            (t.clone(), vec!["prod".to_string()], 7),
            (t, vec!["staging".to_string()], 2),
        ]
    );
}

#[test]
fn many_interleaved_series_and_other_spellings_of_a_key_count_alike() {
    // More targets than the accumulator's recent-series slots, one line each per round, so
    // slots are shared and every lookup path is taken within one batch.
    let targets: Vec<String> = (0..600)
        .map(|i| format!("10.0.{}.{}:80", i / 200, i % 200))
        .collect();
    let mut lines = Vec::new();
    for round in 0..3 {
        for t in &targets {
            lines.push(line_at(0, T0 + round * SECOND_US, t));
        }
    }
    // The same series written otherwise: the port with a leading zero, and a target group of
    // the same name in another account.
    lines.push(line_at(0, T0, "10.0.0.7:080"));
    lines.push(
        line_at(0, T0, "10.0.0.7:80")
            .replace(":123456789012:targetgroup", ":210987654321:targetgroup"),
    );
    let mut agg = Aggregator::new(AggregateConfig {
        max_series: 1000,
        ..cfg()
    });
    let mut acc = BatchAccumulator::new(agg.config());
    feed(&mut acc, &mut agg, &lines);
    let snap = agg.snapshot(T0 + MINUTE_US);
    assert_eq!(snap.series.len(), targets.len());
    for s in &snap.series {
        let want = if s.labels.target == "10.0.0.7:80" {
            5
        } else {
            3
        };
        assert_eq!(s.windows[0].requests, want, "{}", s.labels.target);
        assert_eq!(s.labels.target_group, "web-prod");
    }
}

#[test]
fn new_attribute_values_within_a_batch_start_new_series() {
    let mut agg = Aggregator::new(env_cfg(100));
    let mut acc = BatchAccumulator::new(agg.config());
    let lb = LbSettings::default();
    let line = line_at(0, T0, "10.0.1.17:8080");
    let e = parse_line(line.as_bytes()).expect("parses");
    for env in ["prod", "prod", "staging", "prod"] {
        acc.set_attributes(&[env]);
        acc.add(&e, classify(&e, &lb));
    }
    acc.merge_into(&mut agg);
    let snap = agg.snapshot(T0 + MINUTE_US);
    let t = "10.0.1.17:8080".to_string();
    assert_eq!(
        requests_by_series(&snap),
        [
            (t.clone(), vec!["prod".to_string()], 3),
            (t, vec!["staging".to_string()], 1),
        ]
    );
}

#[test]
fn attribute_values_count_against_the_series_cap() {
    let mut agg = Aggregator::new(env_cfg(2));
    let mut acc = BatchAccumulator::new(agg.config());
    for env in ["a", "b", "c", "d"] {
        acc.set_attributes(&[env]);
        feed(&mut acc, &mut agg, &[line_at(0, T0, "10.0.1.17:8080")]);
    }
    let snap = agg.snapshot(T0 + SECOND_US);
    assert_eq!(snap.overflowed_entries, 2);
    let t = "10.0.1.17:8080".to_string();
    assert_eq!(
        requests_by_series(&snap),
        [
            (t.clone(), vec!["a".to_string()], 1),
            (t, vec!["b".to_string()], 1),
            (series::OVERFLOW.to_string(), vec![String::new()], 2),
        ]
    );
}

#[test]
fn without_attribute_labels_the_values_are_ignored() {
    let mut agg = Aggregator::new(cfg());
    let mut acc = BatchAccumulator::new(agg.config());
    for env in ["prod", "staging"] {
        acc.set_attributes(&[env]);
        feed(&mut acc, &mut agg, &[line_at(0, T0, "10.0.1.17:8080")]);
    }
    let snap = agg.snapshot(T0 + SECOND_US);
    assert_eq!(snap.series.len(), 1);
    assert!(snap.series[0].labels.attributes.is_empty());
}

/// Writes the address of churned target `n` into `out`: a distinct `ip:port` for every `n`
/// below 2^24.
fn churned_ip(out: &mut String, n: u32) {
    use std::fmt::Write as _;
    out.clear();
    let _ = write!(out, "10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255);
}

/// The churn case: a million distinct targets, one line each, against a cap of 100.
/// The first 100 keys merged become series, every other line is counted in the overflow
/// series exactly once, the accumulator holds no more than a batch's worth of series, and
/// idle series are evicted and give their room back.
#[test]
fn a_million_churned_targets_overflow_exactly_and_hold_a_bounded_state() {
    const TARGETS: u32 = 1_000_000;
    const BATCH: u32 = 1_000;
    const CAP: usize = 100;
    let mut agg = Aggregator::new(AggregateConfig {
        max_series: CAP,
        ..cfg()
    });
    let mut acc = BatchAccumulator::new(agg.config());
    let lb = LbSettings::default();
    // A success and a refused connection (an alertable cause with a trace id), alternating.
    let templates = [0, 28].map(|n| line_at(n, T0, "10.0.1.17:8080"));
    let entries: Vec<_> = templates
        .iter()
        .map(|l| {
            let e = parse_line(l.as_bytes()).expect("fixture parses");
            let cause = classify(&e, &lb);
            (e, cause)
        })
        .collect();
    let mut ip = String::new();
    let mut bytes_out = 0;
    for n in 0..TARGETS {
        let (template, cause) = &entries[n as usize % 2];
        churned_ip(&mut ip, n);
        let mut e = template.clone();
        e.target = Some(crate::parse::Endpoint {
            ip: crate::parse::Text::new(ip.as_bytes()),
            port: 8080,
        });
        // A thousand lines a second: the run spans about 17 minutes of event time.
        e.time = T0 + i64::from(n) * 1_000;
        bytes_out += e.sent_bytes;
        acc.add(&e, *cause);
        if (n + 1) % BATCH == 0 {
            assert!(acc.series.len() <= BATCH as usize);
            acc.merge_into(&mut agg);
            assert!(agg.table.len() <= CAP + 1);
        }
    }
    let end = T0 + i64::from(TARGETS) * 1_000;
    let snap = agg.snapshot(end);
    assert_eq!(snap.overflowed_entries, u64::from(TARGETS) - CAP as u64);
    assert_eq!(snap.series.len(), CAP + 1);
    let requests = |s: &SeriesSnapshot| s.totals.iter().map(|t| t.2).sum::<u64>();
    let overflow = snap
        .series
        .iter()
        .find(|s| s.labels.target == series::OVERFLOW)
        .expect("overflow series");
    assert_eq!(requests(overflow), u64::from(TARGETS) - CAP as u64);
    assert_eq!(
        snap.series.iter().map(requests).sum::<u64>(),
        u64::from(TARGETS)
    );
    assert_eq!(
        snap.series.iter().map(|s| s.bytes_out_total).sum::<u64>(),
        bytes_out
    );
    // The series are the first hundred targets, one request each, in the order merged.
    let mut firsts: Vec<String> = snap
        .series
        .iter()
        .filter(|s| s.labels.target != series::OVERFLOW)
        .inspect(|s| assert_eq!(requests(s), 1))
        .map(|s| s.labels.target.clone())
        .collect();
    firsts.sort();
    let mut want: Vec<String> = (0..CAP as u32)
        .map(|n| {
            churned_ip(&mut ip, n);
            format!("{ip}:8080")
        })
        .collect();
    want.sort();
    assert_eq!(firsts, want);
    // Each of those series saw one request, so its minute holds one latency, not a histogram.
    for state in agg.states.iter().flatten() {
        if state.labels.target == series::OVERFLOW {
            continue;
        }
        for m in &state.minutes {
            assert!(matches!(&m.target, Latencies::Few(v) if v.len() <= 1));
        }
    }
    // Past the TTL every series is evicted and the cap has room again.
    agg.advance(end + 31 * MINUTE_US);
    assert_eq!(
        agg.snapshot(end + 31 * MINUTE_US).evicted_series,
        CAP as u64 + 1
    );
    assert!(agg.table.is_empty());
    feed(
        &mut acc,
        &mut agg,
        &[line_at(0, end + 31 * MINUTE_US, "10.0.1.17:8080")],
    );
    let snap = agg.snapshot(end + 32 * MINUTE_US);
    assert_eq!(snap.series.len(), 1);
    assert_eq!(snap.series[0].labels.target, "10.0.1.17:8080");
    assert_eq!(snap.overflowed_entries, u64::from(TARGETS) - CAP as u64);
}

/// A minute's latencies kept as values give the same window quantiles as a histogram of them,
/// on either side of the switch.
#[test]
fn few_latencies_give_the_quantiles_of_a_histogram() {
    for count in [1, FEW_LATENCIES, FEW_LATENCIES + 1, 1_000] {
        let values: Vec<u32> = (0..count as u32).map(|i| 1 + i * 37 % 5_000).collect();
        let mut kept = Latencies::Few(Vec::new());
        let mut dense = LatencyHistogram::default();
        for &v in &values {
            kept.record(v);
            dense.record(v);
        }
        assert_eq!(
            matches!(kept, Latencies::Few(_)),
            count <= FEW_LATENCIES,
            "{count} values"
        );
        let mut window = LatencyHistogram::default();
        kept.add_to(&mut window);
        assert_eq!(window, dense, "{count} values");
    }
}

#[test]
fn microsecond_bounds_pick_the_same_bucket_as_seconds() {
    let by_seconds = |us: u64| {
        let seconds = us as f64 / 1e6;
        LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len())
    };
    for &bound in &LATENCY_BUCKETS_US {
        for us in [bound.saturating_sub(1), bound, bound + 1] {
            let mut h = ClassicHistogram::default();
            h.observe_us(us);
            assert_eq!(h.counts[by_seconds(us)], 1, "{us} µs");
        }
    }
}

#[test]
fn the_remembered_bucket_is_the_one_a_division_gives() {
    let w = 10 * SECOND_US;
    let mut last = None;
    for t in [
        T0,
        T0 + 1,
        T0 + w - 1,
        T0 + w,
        T0 - 1,
        T0,
        -1,
        0,
        w - 1,
        -w,
        -w - 1,
        i64::MAX,
        i64::MAX - w,
        T0,
    ] {
        assert_eq!(bucket_start(&mut last, t, w), t.div_euclid(w) * w, "{t}");
    }
}
