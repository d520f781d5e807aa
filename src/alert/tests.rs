//! The rules over real pipelines: fixture lines re-timed and fed through parse → classify →
//! aggregate, then evaluated at injected times (no clock, no sleeps).

use super::*;
use crate::aggregate::{AggregateConfig, Aggregator, BatchAccumulator};
use crate::classify::{LbSettings, classify};
use crate::parse::parse_line;
use crate::test_support::{CAUSES_LOG, retimed_tokens};

pub(super) const T0: i64 = 1_795_514_400_000_000; // 2026-11-24T10:00:00Z
pub(super) const SECOND: i64 = 1_000_000;
pub(super) const MINUTE: i64 = 60 * SECOND;

// Fixture lines by cause: the line number in tests/fixtures/causes.expected minus 1.
pub(super) const OK: usize = 0;
const TARGET_4XX: usize = 1;
pub(super) const TARGET_5XX: usize = 2;
const H2_RESET: usize = 3;
pub(super) const WAF: usize = 7;
const MALFORMED: usize = 19;
pub(super) const REFUSED: usize = 28;
const NO_TARGETS: usize = 31;
const CONNECT_TIMEOUT: usize = 32;

pub(super) const ELB: &str = "app/shop-prod/50dc6c495c0c9188";
const ELB_B: &str = "app/shop-beta/0123456789abcdef";
pub(super) const FIXTURE_TARGET: &str = "10.0.1.17:8080";
pub(super) const A: &str = "10.0.3.12:8080";
const B: &str = "10.0.1.17:8080";

/// One fixture line, re-timed and moved to another target, target group or load balancer.
#[derive(Debug, Clone)]
struct Line {
    n: usize,
    at: i64,
    elapsed: i64,
    target: &'static str,
    tg: &'static str,
    elb: &'static str,
    /// The `env` attribute of the batch it comes in (with [`Pipeline::with_env`]).
    env: &'static str,
}

fn line(n: usize, at: i64) -> Line {
    Line {
        n,
        at,
        elapsed: 4_000,
        target: A,
        tg: "web-prod",
        elb: ELB,
        env: "",
    }
}

impl Line {
    fn target(self, target: &'static str) -> Self {
        Line { target, ..self }
    }
    fn tg(self, tg: &'static str) -> Self {
        Line { tg, ..self }
    }
    fn elb(self, elb: &'static str) -> Self {
        Line { elb, ..self }
    }
    fn elapsed(self, elapsed: i64) -> Self {
        Line { elapsed, ..self }
    }
    fn env(self, env: &'static str) -> Self {
        Line { env, ..self }
    }

    fn render(&self) -> String {
        let line = CAUSES_LOG
            .lines()
            .nth(self.n)
            .expect("fixture line")
            .replace(FIXTURE_TARGET, self.target)
            .replace(ELB, self.elb)
            .replace(
                "targetgroup/web-prod/",
                &format!("targetgroup/{}/", self.tg),
            );
        let tokens = retimed_tokens(&line, self.at, self.elapsed);
        tokens.join(" ")
    }
}

/// `count` lines spread evenly over `[from, from + span)`.
fn spread(count: i64, from: i64, span: i64, make: impl Fn(i64) -> Line) -> Vec<Line> {
    (0..count).map(|i| make(from + i * span / count)).collect()
}

struct Pipeline {
    agg: Aggregator,
    acc: BatchAccumulator,
    pending: Vec<Line>,
}

impl Pipeline {
    fn new() -> Self {
        Self::with(AggregateConfig::default())
    }

    /// Series (and alerts) with the attribute label `env`.
    fn with_env() -> Self {
        Self::with(AggregateConfig {
            attribute_labels: vec!["env".to_string()],
            ..AggregateConfig::default()
        })
    }

    fn with(cfg: AggregateConfig) -> Self {
        let agg = Aggregator::new(cfg);
        let acc = BatchAccumulator::new(agg.config());
        Pipeline {
            agg,
            acc,
            pending: Vec::new(),
        }
    }

    /// Queues lines; each reaches the aggregator once a snapshot is taken after its time.
    fn add(&mut self, lines: impl IntoIterator<Item = Line>) {
        self.pending.extend(lines);
    }

    fn snapshot(&mut self, end: i64) -> Snapshot {
        let lb = LbSettings::default();
        let (due, later): (Vec<Line>, Vec<Line>) = self.pending.drain(..).partition(|l| l.at < end);
        self.pending = later;
        for l in &due {
            let text = l.render();
            let e = parse_line(text.as_bytes()).unwrap_or_else(|err| panic!("{err}: {text}"));
            // As if each line came in a batch of its own Firehose request.
            self.acc.set_attributes(&[l.env]);
            self.acc.add(&e, classify(&e, &lb));
        }
        self.acc.merge_into(&mut self.agg);
        // The daemon moves the aggregator's clock to the wall clock before each snapshot.
        self.agg.advance(end);
        self.agg.snapshot(end)
    }
}

fn engine() -> AlertEngine {
    AlertEngine::new(AlertConfig::default())
}

fn config(toml_text: &str) -> AlertConfig {
    let cfg: AlertConfig = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"));
    cfg.validate().unwrap_or_else(|e| panic!("{e}"));
    cfg
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// 100 OKs per minute to each target in `targets`, for `minutes` minutes from T0.
fn background(p: &mut Pipeline, targets: &[&'static str], minutes: i64) {
    for &t in targets {
        p.add(spread(100 * minutes, T0, minutes * MINUTE, |at| {
            line(OK, at).target(t)
        }));
    }
}

/// Evaluates every 15 s from `from` to `to` (inclusive) and returns the transitions with the
/// evaluation time, in seconds after T0.
fn run(p: &mut Pipeline, engine: &mut AlertEngine, from: i64, to: i64) -> Vec<(i64, Transition)> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= to {
        let snap = p.snapshot(now);
        out.extend(
            engine
                .evaluate(&snap, now)
                .into_iter()
                .map(|t| ((now - T0) / SECOND, t)),
        );
        now += 15 * SECOND;
    }
    out
}

fn statuses(ts: &[(i64, Transition)]) -> Vec<(i64, Status, String)> {
    ts.iter()
        .map(|(at, t)| (*at, t.status, t.alert.labels["alertname"].clone()))
        .collect()
}

#[test]
fn refused_burst_on_one_target_fires_one_alert() {
    let mut p = Pipeline::new();
    background(&mut p, &[A, B], 1);
    p.add(spread(30, T0, MINUTE, |at| line(REFUSED, at).target(A)));
    let now = T0 + MINUTE;
    let mut engine = engine();
    let ts = engine.evaluate(&p.snapshot(now), now);
    assert_eq!(ts.len(), 1, "{ts:#?}");
    let t = &ts[0];
    assert_eq!(t.status, Status::Firing);
    assert_eq!(
        t.alert.labels,
        labels(&[
            ("alertname", "ALBTargetRefusedConnection"),
            ("cause", "target_refused_connection"),
            ("severity", "critical"),
            ("elb", ELB),
            ("target_group", "web-prod"),
            ("target", A),
            ("code", "502"),
        ])
    );
    let ann = &t.alert.annotations;
    assert_eq!(
        ann["summary"],
        "23% of requests to 10.0.3.12:8080 (tg web-prod, app/shop-prod/50dc6c495c0c9188) \
         ended in 502 in the last minute (30 of 130)"
    );
    assert_eq!(
        ann["description"],
        text::description(Cause::TargetRefusedConnection)
    );
    assert_eq!(ann["runbook"], Cause::TargetRefusedConnection.hint());
    assert!(ann["trace_id"].starts_with("Root=1-"), "{ann:?}");
    assert_eq!((t.alert.starts_at_us, t.alert.ends_at_us), (now, None));

    // Still true 15 s later: no news, one active alert.
    let later = now + 15 * SECOND;
    assert!(engine.evaluate(&p.snapshot(later), later).is_empty());
    assert_eq!(engine.active().count(), 1);
}

#[test]
fn background_noise_fires_nothing() {
    let mut p = Pipeline::new();
    let targets = [A, B, "10.0.2.5:8080", "10.0.2.6:8080"];
    // 1000 OKs: 250 per target over the minute.
    for t in targets {
        p.add(spread(250, T0, MINUTE, |at| line(OK, at).target(t)));
    }
    // Isolated faults, spread over the window and the targets.
    for (i, &t) in targets.iter().take(3).enumerate() {
        p.add([line(TARGET_5XX, T0 + (5 + 20 * i as i64) * SECOND).target(t)]);
    }
    p.add([line(WAF, T0 + 12 * SECOND), line(WAF, T0 + 44 * SECOND)]);
    p.add([
        line(MALFORMED, T0 + 3 * SECOND),
        line(MALFORMED, T0 + 51 * SECOND),
    ]);
    let mut engine = engine();
    let snap = p.snapshot(T0 + MINUTE);
    let w = snap.window_index(60).expect("1 m window");
    let errors: u64 = snap.series.iter().map(|s| s.windows[w].errors()).sum();
    assert_eq!(errors, 7, "the noise reached the window");
    assert_eq!(engine.evaluate(&snap, T0 + MINUTE), Vec::new());
    assert_eq!(engine.active().count(), 0);
}

#[test]
fn no_registered_targets_groups_by_target_group() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 1);
    p.add(spread(100, T0, MINUTE, |at| {
        line(OK, at).target(B).tg("web-canary")
    }));
    p.add(spread(20, T0, MINUTE, |at| line(NO_TARGETS, at)));
    p.add(spread(2, T0, MINUTE, |at| {
        line(NO_TARGETS, at).tg("web-canary")
    }));
    let ts = engine().evaluate(&p.snapshot(T0 + MINUTE), T0 + MINUTE);
    assert_eq!(ts.len(), 1, "{ts:#?}");
    let alert = &ts[0].alert;
    assert_eq!(
        alert.labels,
        labels(&[
            ("alertname", "ALBNoRegisteredTargets"),
            ("cause", "no_registered_targets"),
            ("severity", "critical"),
            ("elb", ELB),
            ("target_group", "web-prod"),
            ("code", "503"),
        ])
    );
    assert_eq!(
        alert.annotations["summary"],
        "17% of requests to target group web-prod (app/shop-prod/50dc6c495c0c9188) ended in \
         503 in the last minute (20 of 120)"
    );
}

#[test]
fn waf_blocked_groups_by_load_balancer() {
    let mut p = Pipeline::new();
    // Load balancer A: 150 blocked of 250 in each of two target groups; 60 % overall.
    for tg in ["web-prod", "web-canary"] {
        p.add(spread(100, T0, MINUTE, |at| line(OK, at).tg(tg)));
        p.add(spread(150, T0, MINUTE, |at| line(WAF, at).tg(tg)));
    }
    // Load balancer B: a 13 % trickle, under the 50 % default.
    p.add(spread(400, T0, MINUTE, |at| line(OK, at).elb(ELB_B)));
    p.add(spread(60, T0, MINUTE, |at| line(WAF, at).elb(ELB_B)));
    let ts = engine().evaluate(&p.snapshot(T0 + MINUTE), T0 + MINUTE);
    assert_eq!(ts.len(), 1, "{ts:#?}");
    let alert = &ts[0].alert;
    assert_eq!(
        alert.labels,
        labels(&[
            ("alertname", "ALBWafBlocked"),
            ("cause", "waf_blocked"),
            ("severity", "warning"),
            ("elb", ELB),
            ("code", "403"),
        ])
    );
    assert_eq!(
        alert.annotations["summary"],
        "60% of requests to app/shop-prod/50dc6c495c0c9188 ended in 403 in the last minute \
         (300 of 500)"
    );
}

#[test]
fn stream_resets_get_code_000() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 1);
    p.add(spread(20, T0, MINUTE, |at| line(H2_RESET, at)));
    let ts = engine().evaluate(&p.snapshot(T0 + MINUTE), T0 + MINUTE);
    assert_eq!(ts.len(), 1, "{ts:#?}");
    let alert = &ts[0].alert;
    assert_eq!(alert.labels["alertname"], "ALBHttp2StreamReset");
    assert_eq!(alert.labels["code"], "000");
    assert!(
        alert.annotations["summary"].contains("ended in 000 in the last minute (20 of 120)"),
        "{}",
        alert.annotations["summary"]
    );
}

#[test]
fn timeouts_say_how_long_requests_waited() {
    let mut p = Pipeline::new();
    p.add(spread(90, T0, MINUTE, |at| line(OK, at)));
    p.add(spread(10, T0, MINUTE, |at| {
        line(CONNECT_TIMEOUT, at).elapsed(10_002_000)
    }));
    let ts = engine().evaluate(&p.snapshot(T0 + MINUTE), T0 + MINUTE);
    assert_eq!(ts.len(), 1, "{ts:#?}");
    let alert = &ts[0].alert;
    assert_eq!(alert.labels["alertname"], "ALBTargetConnectTimeout");
    assert_eq!(
        alert.annotations["summary"],
        "10% of requests to 10.0.3.12:8080 (tg web-prod, app/shop-prod/50dc6c495c0c9188) \
         ended in 504 after ~10 s in the last minute (10 of 100)"
    );
}

#[test]
fn resolves_only_after_the_condition_stays_clear_for_the_hold() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 6);
    // All in the bucket [20 s, 30 s): windows ending after 80 s no longer see them.
    p.add(spread(30, T0 + 20 * SECOND, 10 * SECOND, |at| {
        line(REFUSED, at)
    }));
    let mut engine = engine();
    let ts = run(&mut p, &mut engine, T0 + MINUTE, T0 + 195 * SECOND);
    // Clear since 90 s; at 195 s it has been clear 105 s < 120 s.
    assert_eq!(
        statuses(&ts),
        vec![(60, Status::Firing, "ALBTargetRefusedConnection".into())]
    );
    assert_eq!(engine.active().count(), 1);
    let ts = run(&mut p, &mut engine, T0 + 210 * SECOND, T0 + 300 * SECOND);
    assert_eq!(
        statuses(&ts),
        vec![(210, Status::Resolved, "ALBTargetRefusedConnection".into())]
    );
    let resolved = &ts[0].1.alert;
    assert_eq!(resolved.starts_at_us, T0 + MINUTE);
    assert_eq!(resolved.ends_at_us, Some(T0 + 210 * SECOND));
    assert_eq!(resolved.labels["target"], A);
    assert_eq!(engine.active().count(), 0);
}

#[test]
fn a_condition_back_within_the_hold_does_not_flap() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 7);
    p.add(spread(30, T0 + 20 * SECOND, 10 * SECOND, |at| {
        line(REFUSED, at)
    }));
    // Back in [140 s, 150 s): true for windows ending in (140 s, 200 s], after 50 s clear.
    p.add(spread(30, T0 + 140 * SECOND, 10 * SECOND, |at| {
        line(REFUSED, at)
    }));
    let mut engine = engine();
    let ts = run(&mut p, &mut engine, T0 + MINUTE, T0 + 400 * SECOND);
    // Clear again from 210 s, resolved 120 s later; one firing, one resolve, no flap.
    assert_eq!(
        statuses(&ts),
        vec![
            (60, Status::Firing, "ALBTargetRefusedConnection".into()),
            (330, Status::Resolved, "ALBTargetRefusedConnection".into()),
        ]
    );
    assert_eq!(ts[1].1.alert.starts_at_us, T0 + MINUTE);
}

#[test]
fn a_group_missing_from_the_snapshot_counts_as_clear() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 1);
    p.add(spread(30, T0, MINUTE, |at| line(REFUSED, at)));
    let mut engine = engine();
    let snap = p.snapshot(T0 + MINUTE);
    assert_eq!(engine.evaluate(&snap, T0 + MINUTE).len(), 1);
    let evicted = Snapshot {
        series: Vec::new(),
        ..snap
    };
    assert!(engine.evaluate(&evicted, T0 + 75 * SECOND).is_empty());
    assert_eq!(engine.active().count(), 1);
    let ts = engine.evaluate(&evicted, T0 + 195 * SECOND);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].status, Status::Resolved);
    assert_eq!(ts[0].alert.ends_at_us, Some(T0 + 195 * SECOND));
}

#[test]
fn zero_hold_resolves_at_the_first_clear_evaluation() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 3);
    p.add(spread(30, T0 + 20 * SECOND, 10 * SECOND, |at| {
        line(REFUSED, at)
    }));
    let mut engine = AlertEngine::new(config("resolve_after_secs = 0"));
    let ts = run(&mut p, &mut engine, T0 + MINUTE, T0 + 120 * SECOND);
    assert_eq!(
        statuses(&ts),
        vec![
            (60, Status::Firing, "ALBTargetRefusedConnection".into()),
            (90, Status::Resolved, "ALBTargetRefusedConnection".into()),
        ]
    );
}

#[test]
fn overflow_series_group_like_any_other() {
    let mut p = Pipeline::with(AggregateConfig {
        max_series: 1,
        ..AggregateConfig::default()
    });
    p.add(spread(100, T0, MINUTE, |at| line(OK, at).target(B)));
    p.add(spread(30, T0 + SECOND, MINUTE, |at| line(REFUSED, at)));
    let ts = engine().evaluate(&p.snapshot(T0 + MINUTE), T0 + MINUTE);
    assert_eq!(ts.len(), 1, "{ts:#?}");
    assert_eq!(ts[0].alert.labels["target"], "__overflow__");
}

#[test]
fn overrides_disable_a_cause() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 1);
    p.add(spread(30, T0, MINUTE, |at| line(REFUSED, at)));
    let snap = p.snapshot(T0 + MINUTE);
    let cfg = config("[rules.target_refused_connection]\nenabled = false\n");
    let mut engine = AlertEngine::new(cfg);
    assert_eq!(engine.rule(Cause::TargetRefusedConnection), None);
    assert!(engine.evaluate(&snap, T0 + MINUTE).is_empty());
}

#[test]
fn overrides_lower_a_threshold_and_change_severity() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 1);
    p.add(spread(3, T0, MINUTE, |at| line(TARGET_5XX, at)));
    let snap = p.snapshot(T0 + MINUTE);
    assert!(engine().evaluate(&snap, T0 + MINUTE).is_empty());

    let cfg =
        config("[rules.target_5xx]\nmin_count = 3\nmin_share = 0.02\nseverity = \"critical\"\n");
    let ts = AlertEngine::new(cfg).evaluate(&snap, T0 + MINUTE);
    assert_eq!(ts.len(), 1, "{ts:#?}");
    let l = &ts[0].alert.labels;
    assert_eq!(
        (
            l["alertname"].as_str(),
            l["severity"].as_str(),
            l["code"].as_str()
        ),
        ("ALBTarget5xx", "critical", "503")
    );
}

#[test]
fn target_4xx_alerts_only_when_asked() {
    let mut p = Pipeline::new();
    p.add(spread(40, T0, MINUTE, |at| line(OK, at)));
    p.add(spread(60, T0, MINUTE, |at| line(TARGET_4XX, at)));
    let snap = p.snapshot(T0 + MINUTE);
    assert!(engine().evaluate(&snap, T0 + MINUTE).is_empty());

    for cfg in [
        "include_target_4xx = true",
        "[rules.target_4xx]\nenabled = true\n",
    ] {
        let ts = AlertEngine::new(config(cfg)).evaluate(&snap, T0 + MINUTE);
        assert_eq!(ts.len(), 1, "{cfg}: {ts:#?}");
        let l = &ts[0].alert.labels;
        assert_eq!(
            (l["alertname"].as_str(), l["code"].as_str()),
            ("ALBTarget4xx", "404")
        );
        // Target 4xx cells carry no example trace: the aggregator keeps them for faults.
        assert!(!ts[0].alert.annotations.contains_key("trace_id"));
    }
    let off = config("include_target_4xx = true\n[rules.target_4xx]\nenabled = false\n");
    assert!(
        AlertEngine::new(off)
            .evaluate(&snap, T0 + MINUTE)
            .is_empty()
    );
}

#[test]
fn validate_names_the_bad_key() {
    let cases: &[(&str, &str)] = &[
        ("window_secs = 0", "window_secs"),
        (
            "[rules.target_refused]\nenabled = true",
            "rules.target_refused",
        ),
        ("[rules.target_ok]\nmin_count = 1", "rules.target_ok"),
        (
            "[rules.target_5xx]\nmin_share = 1.5",
            "rules.target_5xx.min_share",
        ),
        (
            "[rules.target_5xx]\nmin_share = -0.1",
            "rules.target_5xx.min_share",
        ),
        (
            "[rules.target_5xx]\nmin_share = nan",
            "rules.target_5xx.min_share",
        ),
        (
            "[rules.waf_blocked]\nmin_count = 0",
            "rules.waf_blocked.min_count",
        ),
    ];
    for (text, key) in cases {
        let cfg: AlertConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let err = cfg.validate().expect_err(text);
        assert_eq!(err.key(), *key, "{text}");
        assert!(err.to_string().starts_with(&format!("{key}: ")), "{err}");
    }
    // Unknown fields are refused at parse time, naming the field.
    for (text, key) in [
        ("windw_secs = 60", "windw_secs"),
        ("[rules.target_5xx]\nmin_cnt = 3", "min_cnt"),
        ("[rules.target_5xx]\nseverity = \"page\"", "page"),
    ] {
        let err = toml::from_str::<AlertConfig>(text).expect_err(text);
        assert!(err.to_string().contains(key), "{text}: {err}");
    }
    let cfg = AlertConfig::default();
    cfg.validate().expect("defaults are valid");
    cfg.validate_windows(&[60, 300, 900]).expect("60 s is kept");
    let err = config("window_secs = 120")
        .validate_windows(&[60, 300, 900])
        .expect_err("not aggregated");
    assert_eq!(err.key(), "window_secs");
    assert!(err.to_string().contains("[60, 300, 900]"), "{err}");
}

#[test]
fn a_window_the_snapshot_lacks_skips_the_evaluation() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 1);
    p.add(spread(30, T0, MINUTE, |at| line(REFUSED, at)));
    let mut engine = AlertEngine::new(config("window_secs = 120"));
    assert!(
        engine
            .evaluate(&p.snapshot(T0 + MINUTE), T0 + MINUTE)
            .is_empty()
    );
    assert_eq!(engine.skipped_evaluations(), 1);
}

#[test]
fn longer_windows_say_so() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 5);
    p.add(spread(30, T0, MINUTE, |at| line(REFUSED, at)));
    let mut engine = AlertEngine::new(config("window_secs = 300"));
    let ts = engine.evaluate(&p.snapshot(T0 + 5 * MINUTE), T0 + 5 * MINUTE);
    assert_eq!(ts.len(), 1, "{ts:#?}");
    assert!(
        ts[0].alert.annotations["summary"].ends_with("in the last 5 minutes (30 of 530)"),
        "{}",
        ts[0].alert.annotations["summary"]
    );
}

#[test]
fn alertmanager_json_shape() {
    let mut alert = Alert {
        labels: labels(&[("alertname", "ALBTargetRefusedConnection"), ("code", "502")]),
        annotations: labels(&[("summary", "s")]),
        starts_at_us: T0 + 123_456,
        ends_at_us: None,
    };
    assert_eq!(
        alert.to_alertmanager(Status::Firing),
        serde_json::json!({
            "labels": {"alertname": "ALBTargetRefusedConnection", "code": "502"},
            "annotations": {"summary": "s"},
            "startsAt": "2026-11-24T10:00:00.123Z",
            "status": "firing",
        })
    );
    alert.ends_at_us = Some(T0 + 3 * MINUTE);
    assert_eq!(
        alert.to_alertmanager(Status::Resolved),
        serde_json::json!({
            "labels": {"alertname": "ALBTargetRefusedConnection", "code": "502"},
            "annotations": {"summary": "s"},
            "startsAt": "2026-11-24T10:00:00.123Z",
            "endsAt": "2026-11-24T10:03:00.000Z",
            "status": "resolved",
        })
    );
    // A resolve without a recorded end still reads as resolved.
    alert.ends_at_us = None;
    assert_eq!(
        alert.to_alertmanager(Status::Resolved)["endsAt"],
        "2026-11-24T10:00:00.123Z"
    );
}

#[test]
fn engine_alerts_serialise_with_every_label_as_a_string() {
    let mut p = Pipeline::new();
    background(&mut p, &[A], 1);
    p.add(spread(30, T0, MINUTE, |at| line(REFUSED, at)));
    let ts = engine().evaluate(&p.snapshot(T0 + MINUTE), T0 + MINUTE);
    let v = ts[0].alert.to_alertmanager(ts[0].status);
    assert_eq!(v["startsAt"], "2026-11-24T10:01:00.000Z");
    assert_eq!(v["status"], "firing");
    assert!(v.get("endsAt").is_none() && v.get("generatorURL").is_none());
    let labels = v["labels"].as_object().expect("labels object");
    assert!(labels.values().all(Value::is_string));
    assert_eq!(labels["alertname"], "ALBTargetRefusedConnection");
    for key in ["summary", "description", "runbook", "trace_id"] {
        assert!(v["annotations"][key].is_string(), "{key}");
    }
}

#[test]
fn default_rules_cover_exactly_the_faults() {
    let client_driven = [
        Cause::WafBlocked,
        Cause::MalformedRequest,
        Cause::DesyncBlocked,
        Cause::ClientIdleTimeout,
        Cause::ClientClosedEarly,
        Cause::MethodNotAllowed,
        Cause::UriTooLong,
        Cause::PayloadTooLarge,
        Cause::XffTooManyIps,
    ];
    let mut names = std::collections::BTreeSet::new();
    for (i, &cause) in Cause::ALL.iter().enumerate() {
        assert_eq!(
            cause as usize, i,
            "the engine indexes rules by discriminant"
        );
        let rule = default_rule(cause);
        assert_eq!(
            rule.is_some(),
            cause.is_alertable() || cause == Cause::Target4xx,
            "{}",
            cause.as_str()
        );
        if let Some(rule) = rule {
            assert!(rule.min_count >= 1 && (0.0..=1.0).contains(&rule.min_share));
        }
        if client_driven.contains(&cause) {
            let rule = rule.expect("client causes alert");
            assert!(rule.min_count >= 20 && rule.min_share >= 0.2, "{cause:?}");
        }
        let name = alert_name(cause);
        assert!(name.starts_with("ALB"));
        assert!(names.insert(name), "duplicate alertname");
        assert!(!text::description(cause).is_empty());
    }
    assert!(default_rule(Cause::WafBlocked).expect("rule").min_share >= 0.5);
    assert_eq!(
        AlertEngine::new(AlertConfig::default()).rule(Cause::Target4xx),
        None
    );
    assert_eq!(alert_name(Cause::Target5xx), "ALBTarget5xx");
    assert_eq!(alert_name(Cause::XffTooManyIps), "ALBXffTooManyIps");
}

#[test]
fn text_helpers() {
    assert_eq!(text::percent(0.41), "41%");
    assert_eq!(text::percent(0.05), "5%");
    assert_eq!(text::percent(0.0042), "0.4%");
    assert_eq!(text::percent(1.0), "100%");
    assert_eq!(text::duration(0.85), "~850 ms");
    assert_eq!(text::duration(2.5), "~2.5 s");
    assert_eq!(text::duration(10.24), "~10 s");
    assert_eq!(text::duration(600.0), "~10 min");
    assert_eq!(text::window(60), "minute");
    assert_eq!(text::window(900), "15 minutes");
    assert_eq!(text::window(90), "90 s");
    assert_eq!(text::codes(&[(Some(502), 9), (Some(504), 3)]), "502/504");
    assert_eq!(text::codes(&[(None, 4), (Some(0), 1)]), "-/000");
    assert_eq!(text::rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(text::rfc3339_ms(T0 + 999_999), "2026-11-24T10:00:00.999Z");
}

#[test]
fn attribute_values_split_groups_and_label_their_alerts() {
    let mut p = Pipeline::with_env();
    for env in ["prod", "staging", ""] {
        p.add(spread(100, T0, MINUTE, |at| line(OK, at).env(env)));
    }
    // The same target refuses connections in prod and in lines without attributes; staging
    // is healthy, and its requests must not dilute prod's share.
    p.add(spread(30, T0, MINUTE, |at| line(REFUSED, at).env("prod")));
    p.add(spread(30, T0, MINUTE, |at| line(REFUSED, at).env("")));
    let now = T0 + MINUTE;
    let ts = engine().evaluate(&p.snapshot(now), now);
    assert_eq!(ts.len(), 2, "{ts:#?}");
    let expected = |env: Option<&str>| {
        let mut l = labels(&[
            ("alertname", "ALBTargetRefusedConnection"),
            ("cause", "target_refused_connection"),
            ("severity", "critical"),
            ("elb", ELB),
            ("target_group", "web-prod"),
            ("target", A),
            ("code", "502"),
        ]);
        if let Some(env) = env {
            l.insert("env".to_string(), env.to_string());
        }
        l
    };
    let prod = ts
        .iter()
        .find(|t| t.alert.labels.contains_key("env"))
        .expect("the prod alert");
    assert_eq!(prod.alert.labels, expected(Some("prod")));
    // LABEL_NAMES (which attribute labels may not take) is every other label.
    assert!(
        prod.alert
            .labels
            .keys()
            .all(|k| k == "env" || LABEL_NAMES.contains(&k.as_str())),
        "{:?}",
        prod.alert.labels
    );
    let summary = &prod.alert.annotations["summary"];
    assert!(
        summary.contains(&format!("{A} (tg web-prod, {ELB}, env=prod)"))
            && summary.contains("(30 of 130)"),
        "{summary}"
    );
    // An empty value is no label at all.
    let bare = ts
        .iter()
        .find(|t| !t.alert.labels.contains_key("env"))
        .expect("the alert without attributes");
    assert_eq!(bare.alert.labels, expected(None));
}
