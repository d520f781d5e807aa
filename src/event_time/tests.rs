//! Watermarks over hand-made partitions and stamps, and the evaluator's tick skipping, with
//! the wall clock as a plain argument.

use super::*;
use crate::aggregate::AggregateConfig;
use crate::alert::{AlertConfig, Status};
use crate::classify::{LoadBalancers, classify};
use crate::history::RangeLimits;
use crate::parse::parse_line;
use crate::test_support::{cause_line, retimed_tokens};

const S: i64 = SECOND_US;
const T0: i64 = 1_795_514_400 * S;

fn spec(name: &str, bound_s: i64, idle_s: Option<i64>) -> PartitionSpec {
    PartitionSpec {
        input: InputKind::Kinesis,
        name: name.to_string(),
        out_of_order_us: bound_s * S,
        idle_us: idle_s.map(|s| s * S),
    }
}

/// Stamps and counts one batch of `p` holding events `min..=max`, at wall time `wall`.
fn batch(w: &mut Watermarks, p: u32, wall: i64, min: i64, max: i64) {
    let stamp = w.stamp(p, wall);
    w.counted(stamp, Some((min, max)));
}

#[test]
fn a_partition_s_progress_is_its_counted_prefix_minus_the_bound() {
    let mut w = Watermarks::default();
    let p = w.open(spec("a", 60, None), 0);
    assert_eq!(w.watermark(0), None, "nothing counted yet");
    let first = w.stamp(p, 0);
    let second = w.stamp(p, 0);
    // The second batch is counted first: its newer events wait for the first.
    w.counted(second, Some((T0 + 100 * S, T0 + 200 * S)));
    assert_eq!(w.watermark(0), None);
    w.counted(first, Some((T0, T0 + 100 * S)));
    assert_eq!(w.watermark(0), Some(T0 + 140 * S));
    assert_eq!(w.progress(0).map(|p| p.first_event), Some(T0));
}

#[test]
fn the_slowest_live_partition_holds_the_watermark_until_it_goes_idle() {
    let mut w = Watermarks::default();
    let fast = w.open(spec("fast", 10, Some(30)), 0);
    let slow = w.open(spec("slow", 10, Some(30)), 0);
    batch(&mut w, fast, 0, T0, T0 + 600 * S);
    assert_eq!(
        w.watermark(0),
        None,
        "the slow shard has brought nothing yet"
    );
    batch(&mut w, slow, 0, T0, T0 + 60 * S);
    assert_eq!(w.watermark(0), Some(T0 + 50 * S));
    // The fast one keeps delivering; the slow one goes quiet and, once idle, stops holding.
    batch(&mut w, fast, 20 * S, T0 + 600 * S, T0 + 620 * S);
    assert_eq!(w.watermark(29 * S), Some(T0 + 50 * S));
    assert_eq!(w.watermark(31 * S), Some(T0 + 610 * S));
    let states: Vec<_> = w.view(31 * S).iter().map(|p| p.state).collect();
    assert_eq!(states, [PartitionState::Active, PartitionState::Idle]);
}

#[test]
fn when_nothing_is_live_the_watermark_reaches_the_newest_event() {
    let mut w = Watermarks::default();
    let a = w.open(spec("a", 300, Some(30)), 0);
    batch(&mut w, a, 0, T0, T0 + 600 * S);
    assert_eq!(w.watermark(10 * S), Some(T0 + 300 * S));
    assert_eq!(w.watermark(30 * S), Some(T0 + 600 * S), "idle: all of it");
    // New data behind it never moves it back.
    batch(&mut w, a, 40 * S, T0, T0 + 10 * S);
    assert_eq!(w.watermark(40 * S), Some(T0 + 600 * S));
}

#[test]
fn a_batch_in_flight_keeps_its_partition_live_however_long_it_takes() {
    let mut w = Watermarks::default();
    let a = w.open(spec("a", 60, Some(30)), 0);
    batch(&mut w, a, 0, T0, T0 + 120 * S);
    let pending = w.stamp(a, 0);
    assert_eq!(w.watermark(3_600 * S), Some(T0 + 60 * S));
    w.counted(pending, Some((T0 + 120 * S, T0 + 180 * S)));
    assert_eq!(w.watermark(3_600 * S), Some(T0 + 180 * S));
}

#[test]
fn finished_partitions_release_everything_and_leave_the_table() {
    let mut w = Watermarks::default();
    let shard = w.open(spec("shard-1", 300, Some(3_600)), 0);
    let other = w.open(spec("shard-2", 300, Some(3_600)), 0);
    batch(&mut w, shard, 0, T0, T0 + 900 * S);
    batch(&mut w, other, 0, T0, T0 + 400 * S);
    assert_eq!(w.watermark(0), Some(T0 + 100 * S));
    w.finish(other);
    assert_eq!(w.watermark(0), Some(T0 + 600 * S));
    assert_eq!(w.view(0).len(), 1, "the finished shard is dropped");
    w.finish(shard);
    assert_eq!(w.watermark(0), Some(T0 + 900 * S));
    assert!(w.view(0).is_empty());
}

#[test]
fn a_finished_run_of_files_waits_for_its_batches_in_flight() {
    let mut w = Watermarks::default();
    let files = w.open(
        PartitionSpec {
            input: InputKind::Files,
            name: "files".into(),
            out_of_order_us: 360 * S,
            idle_us: None,
        },
        0,
    );
    batch(&mut w, files, 0, T0, T0 + 600 * S);
    let last = w.stamp(files, 0);
    w.finish(files);
    // Never idle, and still live until its last batch is counted.
    assert_eq!(w.watermark(86_400 * S), Some(T0 + 240 * S));
    w.counted(last, Some((T0 + 600 * S, T0 + 700 * S)));
    assert_eq!(w.watermark(0), Some(T0 + 700 * S));
    assert_eq!(w.view(0)[0].state, PartitionState::Finished);
}

#[test]
fn a_voided_stamp_holds_nothing_back_and_a_late_ack_changes_nothing() {
    let mut w = Watermarks::default();
    let a = w.open(spec("a", 0, None), 0);
    let refused = w.stamp(a, 0);
    w.counted(refused, None);
    batch(&mut w, a, 0, T0, T0 + 10 * S);
    assert_eq!(w.watermark(0), Some(T0 + 10 * S));
    w.counted(refused, Some((T0, T0 + 999 * S)));
    w.counted(
        Stamp {
            partition: a,
            seq: 99,
        },
        Some((T0, T0 + 999 * S)),
    );
    batch(&mut w, a, 0, T0 + 10 * S, T0 + 20 * S);
    assert_eq!(w.watermark(0), Some(T0 + 20 * S));
}

#[test]
fn partitions_past_the_cap_share_one() {
    let mut w = Watermarks::default();
    let ids: Vec<u32> = (0..MAX_PARTITIONS_PER_INPUT + 5)
        .map(|i| w.open(spec(&format!("source-{i}"), 0, None), 0))
        .collect();
    let overflow = ids[MAX_PARTITIONS_PER_INPUT];
    assert!(
        ids[MAX_PARTITIONS_PER_INPUT..]
            .iter()
            .all(|&id| id == overflow)
    );
    let view = w.view(0);
    assert_eq!(view.len(), MAX_PARTITIONS_PER_INPUT + 1);
    assert!(view.iter().any(|p| p.name == OVERFLOW_PARTITION));
    // The shared partition finishes only when its last user does.
    for _ in 0..4 {
        w.finish(overflow);
    }
    assert!(w.view(0).iter().any(|p| p.name == OVERFLOW_PARTITION));
    w.finish(overflow);
    assert!(!w.view(0).iter().any(|p| p.name == OVERFLOW_PARTITION));
}

fn progress(watermark: i64, first_event: i64) -> Progress {
    Progress {
        watermark,
        first_event,
        drained: false,
    }
}

/// An aggregator fed `lines` of (fixture line, time) pairs.
fn aggregator_with(lines: &[(usize, i64)]) -> Arc<Mutex<Aggregator>> {
    let agg = Arc::new(Mutex::new(Aggregator::new(AggregateConfig::default())));
    let mut acc = crate::aggregate::BatchAccumulator::new(&AggregateConfig::default());
    let lbs = LoadBalancers::default();
    let texts: Vec<String> = lines
        .iter()
        .map(|&(n, at)| retimed_tokens(cause_line(n), at, 3_000).join(" "))
        .collect();
    for text in &texts {
        let e = parse_line(text.as_bytes()).expect("fixture line parses");
        acc.add(&e, classify(&e, lbs.get(e.elb.as_bytes())));
    }
    acc.merge_into(&mut agg.lock().expect("lock"));
    agg
}

/// Healthy traffic plus a refused-connection burst at `at`.
fn incident_at(at: i64) -> Vec<(usize, i64)> {
    let mut lines: Vec<(usize, i64)> = (0..60).map(|i| (0, at - 30 * S + i * S / 2)).collect();
    lines.extend((0..20).map(|i| (28, at + i * S / 10)));
    lines
}

#[test]
fn ticks_without_data_are_skipped_and_change_nothing() {
    // One stray line a year before the incident: without skipping, three million ticks.
    let mut lines = vec![(0, T0 - 365 * 86_400 * S)];
    lines.extend(incident_at(T0));
    let agg = aggregator_with(&lines);
    let mut ev = Evaluator::new(agg, AlertEngine::new(AlertConfig::default()));
    let mut seen = Vec::new();
    ev.advance_to(progress(T0 + 3_600 * S, lines[0].1), &mut |t| seen.push(t));
    let statuses: Vec<_> = seen.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [Status::Firing, Status::Resolved]);
    let firing = &seen[0].alert;
    assert_eq!(firing.labels["cause"], "target_refused_connection");
    // The first tick after the burst's bucket, in event time.
    assert_eq!(firing.starts_at_us, T0 + 10 * S);
}

#[test]
fn evaluating_in_many_steps_gives_what_one_step_gives() {
    let mut lines = incident_at(T0);
    lines.extend(incident_at(T0 + 1_800 * S));
    let run = |steps: &[i64]| {
        let agg = aggregator_with(&lines);
        let mut ev = Evaluator::new(agg, AlertEngine::new(AlertConfig::default()));
        let mut seen = Vec::new();
        for &wm in steps {
            ev.advance_to(progress(wm, T0 - 30 * S), &mut |t| seen.push(t));
        }
        seen
    };
    let end = T0 + 3_600 * S;
    let whole = run(&[end]);
    assert_eq!(whole.len(), 4);
    let steps: Vec<i64> = (0..=360).map(|i| T0 + i * 10 * S - 7 * S).collect();
    assert_eq!(run(&steps), whole);
    assert_eq!(run(&[T0 + 905 * S, T0 + 905 * S, end]), whole);
}

#[test]
fn drained_data_closes_the_bucket_of_its_newest_event() {
    // The burst ends 3 s into its bucket; a live watermark there evaluates nothing yet.
    let lines = incident_at(T0 + S);
    let agg = aggregator_with(&lines);
    let mut ev = Evaluator::new(agg, AlertEngine::new(AlertConfig::default()));
    let mut seen = Vec::new();
    let newest = T0 + 3 * S;
    ev.advance_to(progress(newest, T0 - 29 * S), &mut |t| seen.push(t));
    assert!(seen.is_empty());
    ev.advance_to(
        Progress {
            drained: true,
            ..progress(newest, T0 - 29 * S)
        },
        &mut |t| seen.push(t),
    );
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].alert.starts_at_us, T0 + 10 * S);
}

#[test]
fn the_history_records_every_evaluated_tick_and_the_resolved_alert() {
    let lines = incident_at(T0);
    let agg = aggregator_with(&lines);
    let mut ev = Evaluator::new(agg, AlertEngine::new(AlertConfig::default()))
        .with_history(History::with_range(RangeLimits::default()));
    let mut seen = Vec::new();
    ev.advance_to(progress(T0 + 3_600 * S, T0 - 30 * S), &mut |t| seen.push(t));
    assert_eq!(seen.len(), 2, "fired and resolved");
    let history = ev.take_history().expect("kept");
    let range = history.range().expect("the whole range");
    let (requests, faults) = range.minutes.values().fold((0, 0), |(r, f), m| {
        (r + m.counts.requests, f + m.counts.faults)
    });
    assert_eq!((requests, faults), (80, 20), "every line, once");
    let resolved: Vec<_> = history.resolved().collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].labels, seen[1].alert.labels);
    assert!(ev.history().is_none(), "taken");
}
