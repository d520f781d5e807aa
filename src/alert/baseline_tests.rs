//! The baselines over generated traffic, in event time: real fixture lines drawn at random
//! (seeded) at a given rate and share, parsed, classified and aggregated, the engine evaluated
//! at every 10 s bucket boundary as the event-time evaluator does. Each test is one of the
//! promises of the baseline rules: a surge over a low baseline fires within a minute, a
//! steady high share or a daily swing in traffic does not, a group with no history falls back
//! to the absolute thresholds.

use super::tests::{A, ELB, FIXTURE_TARGET, MINUTE, OK, REFUSED, SECOND, T0, TARGET_5XX, WAF};
use super::*;
use crate::aggregate::{AggregateConfig, Aggregator, BatchAccumulator};
use crate::classify::{LbSettings, classify};
use crate::parse::parse_line;
use crate::rng::SplitMix64;
use crate::test_support::{cause_line, retimed_tokens};
use crate::traffic::Traffic;

const HOUR: i64 = 60 * MINUTE;
const TICK: i64 = 10 * SECOND;
const B: &str = "10.0.3.13:8080";

/// Requests to one target of the fixture's load balancer: `per_minute(t)` of them around
/// event time `t` (µs after T0), each showing fixture line `bad` with probability
/// `share(t)`, else a plain OK. WAF lines carry no target: they count for the load balancer.
struct Stream {
    target: &'static str,
    bad: usize,
    per_minute: Box<dyn Fn(i64) -> f64>,
    share: Box<dyn Fn(i64) -> f64>,
    /// The fraction of a request carried to the next tick.
    carry: f64,
}

fn stream(
    target: &'static str,
    bad: usize,
    per_minute: impl Fn(i64) -> f64 + 'static,
    share: impl Fn(i64) -> f64 + 'static,
) -> Stream {
    Stream {
        target,
        bad,
        per_minute: Box::new(per_minute),
        share: Box::new(share),
        carry: 0.0,
    }
}

/// The pipeline and the engine, moved on tick by tick.
struct Sim {
    agg: Aggregator,
    acc: BatchAccumulator,
    engine: AlertEngine,
    rng: SplitMix64,
    streams: Vec<Stream>,
    now: i64,
    /// Firing and resolving, with the evaluation time in seconds after T0.
    transitions: Vec<(i64, Transition)>,
}

impl Sim {
    fn new(cfg: AlertConfig, streams: Vec<Stream>) -> Self {
        let agg = Aggregator::new(AggregateConfig::default());
        let acc = BatchAccumulator::new(agg.config());
        Sim {
            agg,
            acc,
            engine: AlertEngine::new(cfg),
            rng: SplitMix64::new(16),
            streams,
            now: T0,
            transitions: Vec::new(),
        }
    }

    fn feed(&mut self, text: &str) {
        let lb = LbSettings::default();
        let e = parse_line(text.as_bytes()).unwrap_or_else(|err| panic!("{err}: {text}"));
        self.acc.add(&e, classify(&e, &lb));
    }

    /// Generates and evaluates every tick up to `until` (µs after T0).
    fn run_until(&mut self, until: i64) {
        while self.now < T0 + until {
            let from = self.now;
            let mut lines = Vec::new();
            for s in &mut self.streams {
                let due = (s.per_minute)(from - T0) / 6.0 + s.carry;
                let n = due.floor() as i64;
                s.carry = due - n as f64;
                for k in 0..n {
                    let at = from + k * TICK / n;
                    let bad = (self.rng.below(1_000_000) as f64) < (s.share)(at - T0) * 1e6;
                    let line =
                        cause_line(if bad { s.bad } else { OK }).replace(FIXTURE_TARGET, s.target);
                    lines.push(retimed_tokens(&line, at, 4_000).join(" "));
                }
            }
            for line in &lines {
                self.feed(line);
            }
            self.tick(from + TICK);
        }
    }

    fn tick(&mut self, to: i64) {
        self.acc.merge_into(&mut self.agg);
        self.agg.advance(to);
        let snapshot = self
            .agg
            .snapshot_of(to, &[self.engine.config().window_secs]);
        let at = (to - T0) / SECOND;
        self.transitions.extend(
            self.engine
                .evaluate(&snapshot, to)
                .into_iter()
                .map(|t| (at, t)),
        );
        self.now = to;
    }

    /// `(seconds after T0, cause)` of every alert that started firing.
    fn fired(&self) -> Vec<(i64, String)> {
        self.transitions
            .iter()
            .filter(|(_, t)| t.status == Status::Firing)
            .map(|(at, t)| (*at, t.alert.labels["cause"].clone()))
            .collect()
    }
}

fn config(toml_text: &str) -> AlertConfig {
    let cfg: AlertConfig = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"));
    cfg.validate().unwrap_or_else(|e| panic!("{e}"));
    cfg
}

/// The load balancer's WAF blocking `share(t)` of 1000 requests a minute.
fn waf(share: impl Fn(i64) -> f64 + 'static, per_minute: impl Fn(i64) -> f64 + 'static) -> Stream {
    stream(A, WAF, per_minute, share)
}

#[test]
fn a_waf_surge_from_0_1_to_30_percent_fires_within_a_minute_and_says_what_is_usual() {
    let surge = |t: i64| if t >= HOUR { 0.30 } else { 0.001 };
    let mut sim = Sim::new(AlertConfig::default(), vec![waf(surge, |_| 1000.0)]);
    sim.run_until(HOUR + 5 * MINUTE);
    assert_eq!(sim.fired().len(), 1, "{:?}", sim.fired());
    let (at, t) = &sim.transitions[0];
    assert_eq!(t.alert.labels["cause"], "waf_blocked");
    assert!((3600..=3660).contains(at), "fired at {at} s");
    let a = &t.alert.annotations;
    let summary = &a["summary"];
    assert!(
        summary.contains(ELB) && summary.contains("403"),
        "{summary}"
    );
    assert!(summary.ends_with("; usually 0.1% (last hour)"), "{summary}");
    let p0: f64 = a["baseline_share"].parse().unwrap_or(f64::NAN);
    assert!((0.0005..0.002).contains(&p0), "{p0}");
    assert!(
        a["baseline_requests"]
            .parse::<f64>()
            .is_ok_and(|n| n > 10_000.0)
    );

    // The absolute rule alone (the old behaviour) stays deaf to it: 30 % < 50 %.
    let old = config("[rules.waf_blocked]\nbaseline = false\n");
    let mut sim = Sim::new(old, vec![waf(surge, |_| 1000.0)]);
    sim.run_until(HOUR + 5 * MINUTE);
    assert_eq!(sim.fired(), []);
}

/// 600 requests a minute for the first hour, 100 a minute after: quiet nights make noisy
/// minutes.
fn day_then_night(t: i64) -> f64 {
    if t < HOUR { 600.0 } else { 100.0 }
}

#[test]
fn a_steady_40_percent_waf_share_never_fires_over_hours() {
    let mut sim = Sim::new(AlertConfig::default(), vec![waf(|_| 0.4, day_then_night)]);
    sim.run_until(4 * HOUR);
    assert_eq!(sim.fired(), []);
    assert!(sim.engine.baseline_count() > 0);

    // The same traffic under the absolute rule alone pages on some quiet minute at 50 %.
    let old = config("[rules.waf_blocked]\nbaseline = false\n");
    let mut sim = Sim::new(old, vec![waf(|_| 0.4, day_then_night)]);
    sim.run_until(4 * HOUR);
    assert!(!sim.fired().is_empty(), "the old rule was noisy here");
}

#[test]
fn a_steady_2_percent_5xx_target_is_quiet_and_the_same_target_at_15_percent_fires() {
    let jump = |t: i64| if t >= 90 * MINUTE { 0.15 } else { 0.02 };
    let streams = vec![
        stream(A, TARGET_5XX, |_| 600.0, jump),
        stream(B, TARGET_5XX, |_| 600.0, |_| 0.02),
    ];
    let mut sim = Sim::new(AlertConfig::default(), streams);
    sim.run_until(90 * MINUTE);
    assert_eq!(sim.fired(), [], "2 % is normal for both");
    sim.run_until(95 * MINUTE);
    let fired = sim.fired();
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (at, t) = &sim.transitions[0];
    assert_eq!(t.alert.labels["target"], A);
    assert_eq!(t.alert.labels["cause"], "target_5xx");
    assert!((5400..=5460).contains(at), "fired at {at} s");
    let summary = &t.alert.annotations["summary"];
    assert!(summary.contains("; usually 2"), "{summary}");
    assert!(summary.ends_with("% (last hour)"), "{summary}");
}

#[test]
fn a_target_with_no_history_falls_back_to_the_absolute_rules() {
    // An hour of healthy traffic to A, so the load balancer's baselines are warm, then B
    // appears refusing every connection, and a third target appears answering 30 % 5xx.
    let new_at = HOUR;
    let streams = vec![
        stream(A, TARGET_5XX, |_| 600.0, |_| 0.01),
        stream(
            B,
            REFUSED,
            move |t| if t >= new_at { 300.0 } else { 0.0 },
            |_| 1.0,
        ),
        stream(
            "10.0.3.14:8080",
            TARGET_5XX,
            move |t| if t >= new_at { 300.0 } else { 0.0 },
            |_| 0.3,
        ),
    ];
    let mut sim = Sim::new(AlertConfig::default(), streams);
    sim.run_until(new_at + 3 * MINUTE);
    let fired = sim.fired();
    let mut causes: Vec<&str> = fired.iter().map(|(_, c)| c.as_str()).collect();
    causes.sort();
    assert_eq!(
        causes,
        ["target_5xx", "target_refused_connection"],
        "{fired:?}"
    );
    for (at, t) in &sim.transitions {
        assert!((3600..=3660).contains(at), "fired at {at} s: {t:?}");
        // Judged by the absolute thresholds: no baseline to quote.
        assert!(!t.alert.annotations.contains_key("baseline_share"));
    }
}

#[test]
fn a_5x_daily_swing_in_traffic_alone_fires_nothing() {
    // Between 200 and 1000 requests a minute, a full swing every two hours, shares steady.
    let swing = |t: i64| {
        let phase = t as f64 / (2 * HOUR) as f64 * std::f64::consts::TAU;
        600.0 - 400.0 * phase.cos()
    };
    let streams = vec![
        stream(A, WAF, swing, |_| 0.01),
        stream(B, TARGET_5XX, swing, |_| 0.03),
    ];
    let mut sim = Sim::new(AlertConfig::default(), streams);
    sim.run_until(4 * HOUR);
    assert_eq!(sim.fired(), []);
}

#[test]
fn a_day_of_steady_background_noise_raises_no_alert() {
    // The corpus mix: 7 % errors of every kind, uncapped, three requests a second.
    let mut traffic = Traffic::steady(3, T0, 3);
    let mut sim = Sim::new(AlertConfig::default(), Vec::new());
    let mut buf = Vec::new();
    let mut end = T0;
    while end < T0 + 24 * HOUR {
        end += TICK;
        buf.clear();
        traffic.generate_until(end, &mut buf);
        for line in String::from_utf8_lossy(&buf).lines() {
            sim.feed(line);
        }
        sim.tick(end);
    }
    assert_eq!(sim.fired(), []);
    // Bounded: one baseline per normal-noise cause of each scope, per group of the fleet.
    let bound = sim.engine.baseline_of.iter().flatten().count() * 200;
    assert!(
        (1..=bound).contains(&sim.engine.baseline_count()),
        "{} baselines",
        sim.engine.baseline_count()
    );
}
