//! The exposition of snapshots built from real fixture lines (exact samples, labels and
//! histogram shape), and the admin server on a real loopback port.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus::Encoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::admin::{self, Health};
use super::*;
use crate::aggregate::{AggregateConfig, Aggregator, BatchAccumulator};
use crate::classify::{LbSettings, classify};
use crate::parse::parse_line;
use crate::test_support::{cause_line, retimed_tokens};

const T0: i64 = 1_795_514_400_000_000; // 2026-11-24T10:00:00Z
const SECOND_US: i64 = 1_000_000;
const MINUTE_US: i64 = 60 * SECOND_US;
const ELB: &str = "app/shop-prod/50dc6c495c0c9188";
const TARGET: &str = "10.0.1.17:8080";

// Fixture lines (0-based) and the cause they carry (tests/fixtures/causes.expected).
const OK: usize = 0; // 200 target_ok
const NOT_FOUND: usize = 1; // 404 target_4xx
const UNAVAILABLE: usize = 2; // 503 target_5xx
const RESET: usize = 3; // 000 http2_stream_reset
const FIXED: usize = 4; // 404 fixed_response, no target
const REFUSED: usize = 28; // 502 target_refused_connection

/// Fixture line `n` re-timed to `at` (µs; created 4 ms earlier), with `target_processing_time`
/// replaced when `target_secs` is given.
fn line_at(n: usize, at: i64, target_secs: Option<&str>) -> String {
    let mut tokens = retimed_tokens(cause_line(n), at, 4_000);
    if let Some(secs) = target_secs {
        tokens[6] = secs.to_owned();
    }
    tokens.join(" ")
}

fn snapshot_of(lines: &[String], end: i64) -> Snapshot {
    let mut agg = Aggregator::new(AggregateConfig::default());
    let mut acc = BatchAccumulator::new(agg.config());
    let lb = LbSettings::default();
    for line in lines {
        let e = parse_line(line.as_bytes()).unwrap_or_else(|err| panic!("{err}: {line}"));
        acc.add(&e, classify(&e, &lb));
    }
    acc.merge_into(&mut agg);
    agg.snapshot(end)
}

/// The text exposition of a registry holding only the snapshot collector.
fn exposition(snapshot: Snapshot, wall_now: i64) -> String {
    let registry = new_registry();
    let snapshot_labels = snapshot.attribute_labels.to_vec();
    register_snapshot_metrics(
        &registry,
        Arc::new(move || snapshot.clone()),
        Arc::new(move || wall_now),
        &snapshot_labels,
    )
    .expect("register");
    let (content_type, body) = admin::encode(&registry).expect("encode");
    assert_eq!(content_type, "text/plain; version=0.0.4");
    String::from_utf8(body).expect("utf-8 exposition")
}

/// The value of the sample written exactly as `series` (name and label block).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let value = l.strip_prefix(series)?.strip_prefix(' ')?;
        Some(value.parse().expect("sample value"))
    })
}

fn samples_named<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

fn series(extra: &str) -> String {
    format!(r#"elb="{ELB}",target_group="web-prod",target="{TARGET}"{extra}"#)
}

#[test]
fn requests_total_counts_each_code_and_cause() {
    let mut lines = Vec::new();
    lines.extend((0..3).map(|i| line_at(OK, T0 + i * SECOND_US, None)));
    lines.extend((0..2).map(|i| line_at(NOT_FOUND, T0 + i * SECOND_US, None)));
    lines.push(line_at(UNAVAILABLE, T0, None));
    lines.extend((0..5).map(|i| line_at(REFUSED, T0 + i * SECOND_US, None)));
    lines.push(line_at(RESET, T0, None));
    lines.push(line_at(FIXED, T0, None));
    let text = exposition(snapshot_of(&lines, T0 + MINUTE_US), T0 + MINUTE_US);

    let requests = |code: &str, cause: &str| {
        sample(
            &text,
            &format!(
                "alb_requests_total{{{}}}",
                series(&format!(r#",code="{code}",cause="{cause}""#))
            ),
        )
    };
    assert_eq!(requests("200", "target_ok"), Some(3.0));
    assert_eq!(requests("404", "target_4xx"), Some(2.0));
    assert_eq!(requests("503", "target_5xx"), Some(1.0));
    assert_eq!(requests("502", "target_refused_connection"), Some(5.0));
    assert_eq!(requests("000", "http2_stream_reset"), Some(1.0));
    // The fixed response has neither target group nor target.
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"alb_requests_total{{elb="{ELB}",target_group="-",target="-",code="404",cause="fixed_response"}}"#
            )
        ),
        Some(1.0)
    );
    assert_eq!(samples_named(&text, "alb_requests_total").len(), 6);
    assert!(text.contains("# TYPE alb_requests_total counter\n"));

    // Every fixture line carries 512 received and 1783 sent bytes.
    let bytes = |name: &str| sample(&text, &format!("{name}{{{}}}", series("")));
    assert_eq!(bytes("alb_received_bytes_total"), Some(12.0 * 512.0));
    assert_eq!(bytes("alb_sent_bytes_total"), Some(12.0 * 1783.0));
    assert_eq!(sample(&text, "albwatch_series"), Some(2.0));
}

#[test]
fn histogram_buckets_are_cumulative_and_inf_equals_count() {
    let times = ["0.002", "0.002", "0.3", "7.0", "200.0"];
    let mut lines: Vec<String> = times
        .iter()
        .enumerate()
        .map(|(i, t)| line_at(OK, T0 + i as i64 * SECOND_US, Some(t)))
        .collect();
    // No target response (-1): counted as a request, not observed.
    lines.push(line_at(REFUSED, T0, None));
    lines.push(line_at(FIXED, T0, None));
    let text = exposition(snapshot_of(&lines, T0 + MINUTE_US), T0 + MINUTE_US);

    let expected = [
        ("0.005", 2.0),
        ("0.01", 2.0),
        ("0.025", 2.0),
        ("0.05", 2.0),
        ("0.1", 2.0),
        ("0.25", 2.0),
        ("0.5", 3.0),
        ("1", 3.0),
        ("2.5", 3.0),
        ("5", 3.0),
        ("10", 4.0),
        ("30", 4.0),
        ("60", 4.0),
        ("120", 4.0),
        ("+Inf", 5.0),
    ];
    let buckets: Vec<&str> = samples_named(&text, "alb_target_response_seconds_bucket");
    assert_eq!(buckets.len(), expected.len(), "{text}");
    for (line, (le, count)) in buckets.iter().zip(expected) {
        let want = format!(
            "alb_target_response_seconds_bucket{{{}}} {count}",
            series(&format!(r#",le="{le}""#))
        );
        assert_eq!(*line, want);
    }
    let count = sample(
        &text,
        &format!("alb_target_response_seconds_count{{{}}}", series("")),
    );
    assert_eq!(count, Some(5.0));
    let sum = sample(
        &text,
        &format!("alb_target_response_seconds_sum{{{}}}", series("")),
    )
    .expect("sum");
    assert!((sum - 207.304).abs() < 1e-9, "{sum}");
    assert!(text.contains("# TYPE alb_target_response_seconds histogram\n"));
}

#[test]
fn window_gauges_follow_the_snapshot() {
    // 10 OKs over 10 minutes, then 5 refused connections in the last minute.
    let mut lines: Vec<String> = (0..10)
        .map(|i| line_at(OK, T0 + i * MINUTE_US, None))
        .collect();
    lines.extend((0..5).map(|i| line_at(REFUSED, T0 + 9 * MINUTE_US + i * SECOND_US, None)));
    let snap = snapshot_of(&lines, T0 + 10 * MINUTE_US);
    let one = snap.series[0].windows[0].clone();
    let text = exposition(snap, T0 + 10 * MINUTE_US);

    let window = |name: &str, w: &str| {
        sample(
            &text,
            &format!("{name}{{{}}}", series(&format!(r#",window="{w}""#))),
        )
    };
    for (w, requests, errors) in [("1m", 6.0, 5.0), ("5m", 10.0, 5.0), ("15m", 15.0, 5.0)] {
        assert_eq!(window("alb_window_requests", w), Some(requests), "{w}");
        assert_eq!(window("alb_window_errors", w), Some(errors), "{w}");
    }

    let q = one
        .target_latency
        .expect("target quantiles in the last minute");
    let latency = |w: &str, p: &str, kind: &str| {
        sample(
            &text,
            &format!(
                "alb_window_latency_seconds{{{}}}",
                series(&format!(r#",window="{w}",percentile="{p}",kind="{kind}""#))
            ),
        )
    };
    assert_eq!(latency("1m", "50", "target"), Some(q.p50));
    assert_eq!(latency("1m", "90", "target"), Some(q.p90));
    assert_eq!(latency("1m", "99", "target"), Some(q.p99));
    // The fixture's OKs take 2 ms at the target; hdrhistogram holds small values exactly.
    assert_eq!(q.p50, 0.002);
    let e = one.elapsed_latency.expect("elapsed quantiles");
    assert_eq!(latency("1m", "99", "elapsed"), Some(e.p99));
    // 3 windows × 3 percentiles × 2 kinds.
    assert_eq!(samples_named(&text, "alb_window_latency_seconds").len(), 18);
}

#[test]
fn window_latency_is_omitted_without_quantiles() {
    // Only refused connections: no target time, but an elapsed time.
    let lines = vec![line_at(REFUSED, T0, None)];
    let snap = snapshot_of(&lines, T0 + SECOND_US);
    assert!(snap.series[0].windows[0].target_latency.is_none());
    let text = exposition(snap, T0 + SECOND_US);
    let latency = samples_named(&text, "alb_window_latency_seconds");
    assert_eq!(latency.len(), 9, "{text}");
    assert!(latency.iter().all(|l| l.contains(r#"kind="elapsed""#)));
    // A target that never answered still gets its (all-zero) histogram.
    assert_eq!(
        sample(
            &text,
            &format!("alb_target_response_seconds_count{{{}}}", series(""))
        ),
        Some(0.0)
    );
}

#[test]
fn pipeline_health_gauges_and_counters() {
    let lines = vec![line_at(OK, T0, None)];
    let snap = snapshot_of(&lines, T0 + SECOND_US);
    let max = snap.max_event_time.expect("an event");
    let text = exposition(snap, max + 2_500_000);
    assert_eq!(sample(&text, "albwatch_watermark_lag_seconds"), Some(2.5));
    assert_eq!(
        sample(&text, "albwatch_max_event_timestamp_seconds"),
        Some(max as f64 / 1e6)
    );
    assert_eq!(sample(&text, "albwatch_series"), Some(1.0));
    assert_eq!(sample(&text, "albwatch_late_entries_total"), Some(0.0));
    assert_eq!(
        sample(&text, "albwatch_overflowed_entries_total"),
        Some(0.0)
    );
    assert_eq!(sample(&text, "albwatch_evicted_series_total"), Some(0.0));
}

#[test]
fn an_empty_snapshot_exports_only_health_and_no_lag() {
    let snap = Aggregator::new(AggregateConfig::default()).snapshot(T0);
    let text = exposition(snap, T0);
    assert!(!text.contains("albwatch_watermark_lag_seconds"), "{text}");
    assert!(!text.contains("albwatch_max_event_timestamp_seconds"));
    assert!(!text.contains("alb_"), "{text}");
    assert_eq!(sample(&text, "albwatch_series"), Some(0.0));
    assert_eq!(sample(&text, "albwatch_late_entries_total"), Some(0.0));
}

#[test]
fn window_label_values() {
    assert_eq!(window_label(60), "1m");
    assert_eq!(window_label(300), "5m");
    assert_eq!(window_label(900), "15m");
    assert_eq!(window_label(120), "120s");
    assert_eq!(window_label(3600), "3600s");
    // In the registry's order of label values, a window configured twice only once.
    assert_eq!(
        windows_in_label_order(&[60, 300, 900, 60]),
        vec![
            (2, 900, "15m".to_owned()),
            (0, 60, "1m".to_owned()),
            (1, 300, "5m".to_owned())
        ]
    );
}

#[test]
fn duplicate_label_sets_are_merged_not_repeated() {
    let lines = vec![line_at(OK, T0, None), line_at(REFUSED, T0, None)];
    let mut snap = snapshot_of(&lines, T0 + SECOND_US);
    let twin = snap.series[0].clone();
    snap.series.push(twin);
    let text = exposition(snap, T0 + SECOND_US);
    assert_eq!(
        sample(
            &text,
            &format!(
                "alb_requests_total{{{}}}",
                series(r#",code="502",cause="target_refused_connection""#)
            )
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("alb_window_errors{{{}}}", series(r#",window="1m""#))
        ),
        Some(2.0)
    );
    assert_well_formed(&text);
}

#[test]
fn the_same_families_cannot_be_registered_twice() {
    let registry = new_registry();
    let source: SnapshotSource =
        Arc::new(|| Aggregator::new(AggregateConfig::default()).snapshot(T0));
    let clock: WallClock = Arc::new(|| T0);
    register_snapshot_metrics(&registry, Arc::clone(&source), Arc::clone(&clock), &[])
        .expect("first registration");
    assert!(register_snapshot_metrics(&registry, source, clock, &[]).is_err());
}

#[test]
fn every_scrape_takes_exactly_one_snapshot() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let registry = new_registry();
    register_snapshot_metrics(
        &registry,
        Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Aggregator::new(AggregateConfig::default()).snapshot(T0)
        }),
        Arc::new(|| T0),
        &[],
    )
    .expect("register");
    registry.gather();
    registry.gather();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn the_exposition_is_well_formed() {
    let mut lines: Vec<String> = (0..39)
        .map(|n| line_at(n, T0 + n as i64 * SECOND_US, None))
        .collect();
    lines.push(line_at(OK, T0, Some("0.3")));
    let text = exposition(snapshot_of(&lines, T0 + MINUTE_US), T0 + MINUTE_US);
    assert_well_formed(&text);
}

/// HELP and TYPE once per family and before its samples, each family in one group, each
/// sample line (name + labels) unique, and a final newline.
fn assert_well_formed(text: &str) {
    assert!(text.ends_with('\n'));
    let mut typed = HashSet::new();
    let mut current: Option<String> = None;
    let mut seen_samples = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().expect("name").to_owned();
            assert!(typed.insert(name.clone()), "TYPE twice for {name}");
            current = Some(name);
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, _value) = line.rsplit_once(' ').expect("sample value");
        let name = series.split('{').next().expect("name");
        let family = current.as_deref().expect("a sample before any TYPE");
        let suffixed = ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s) == Some(family));
        assert!(
            name == family || suffixed,
            "{name} outside its group {family}"
        );
        assert!(seen_samples.insert(series.to_owned()), "duplicate {series}");
    }
}

// ---- admin server ----

/// A raw HTTP/1.1 GET (or other method): status, headers (lower-cased names), body.
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let mut head = head.split("\r\n");
    let status = head
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = head
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn admin_routes_and_graceful_shutdown() {
    let lines = vec![line_at(OK, T0, None)];
    let snap = snapshot_of(&lines, T0 + SECOND_US);
    let registry = new_registry();
    register_snapshot_metrics(
        &registry,
        Arc::new(move || snap.clone()),
        Arc::new(|| T0 + 2 * SECOND_US),
        &[],
    )
    .expect("register");
    let health = Health::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(admin::serve(
        listener,
        registry,
        health.clone(),
        admin::Views::none(),
        async move {
            let _ = stopped.await;
        },
    ));

    let (status, headers, body) = request(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some(prometheus::TextEncoder::new().format_type())
    );
    assert!(
        body.contains("# TYPE alb_requests_total counter\n"),
        "{body}"
    );
    assert_eq!(sample(&body, "albwatch_series"), Some(1.0));

    assert_eq!(request(addr, "GET", "/ready").await.0, 503);
    assert_eq!(request(addr, "GET", "/ready").await.2, "not ready");
    health.set_ready(true);
    let (status, _, body) = request(addr, "GET", "/ready").await;
    assert_eq!((status, body.as_str()), (200, "ready"));
    let (status, _, body) = request(addr, "GET", "/live").await;
    assert_eq!((status, body.as_str()), (200, "live"));
    assert_eq!(request(addr, "GET", "/nope").await.0, 404);
    assert_eq!(request(addr, "GET", "/metrics/extra").await.0, 404);
    assert_eq!(request(addr, "POST", "/metrics").await.0, 405);

    stop.send(()).expect("server still running");
    server
        .await
        .expect("server task")
        .expect("serve returns Ok after shutdown");
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

/// A snapshot with the attribute labels `env` and `team`: per `(env, team)` batch, `n` OK
/// lines with a target response and one refused connection.
fn snapshot_with_attributes(batches: &[(&[&str], i64)], end: i64) -> Snapshot {
    let mut agg = Aggregator::new(AggregateConfig {
        attribute_labels: vec!["env".to_string(), "team".to_string()],
        ..AggregateConfig::default()
    });
    let mut acc = BatchAccumulator::new(agg.config());
    let lb = LbSettings::default();
    for (attributes, n) in batches {
        acc.set_attributes(attributes);
        let lines = (0..*n).map(|i| line_at(OK, T0 + i * SECOND_US, Some("0.002")));
        for line in lines.chain([line_at(REFUSED, T0, None)]) {
            let e = parse_line(line.as_bytes()).unwrap_or_else(|err| panic!("{err}: {line}"));
            acc.add(&e, classify(&e, &lb));
        }
        acc.merge_into(&mut agg);
    }
    agg.snapshot(end)
}

#[test]
fn attribute_labels_follow_the_series_labels_and_empty_ones_are_left_out() {
    let snap = snapshot_with_attributes(
        &[(&["prod", "shop"], 3), (&["", "shop"], 2), (&[], 4)],
        T0 + MINUTE_US,
    );
    let text = exposition(snap, T0 + MINUTE_US);
    let ok = |attributes: &str| {
        sample(
            &text,
            &format!(
                "alb_requests_total{{{}}}",
                series(&format!(r#"{attributes},code="200",cause="target_ok""#))
            ),
        )
    };
    assert_eq!(ok(r#",env="prod",team="shop""#), Some(3.0), "{text}");
    assert_eq!(ok(r#",team="shop""#), Some(2.0), "{text}");
    assert_eq!(ok(""), Some(4.0), "{text}");
    assert!(
        !text.contains(r#"="""#),
        "an empty label value was written:\n{text}"
    );

    // Every alb_* family carries them, before its own labels.
    let prod = series(r#",env="prod",team="shop""#);
    for (name, own, value) in [
        (
            "alb_requests_total",
            r#",code="502",cause="target_refused_connection""#,
            1.0,
        ),
        ("alb_received_bytes_total", "", 4.0 * 512.0),
        ("alb_sent_bytes_total", "", 4.0 * 1783.0),
        ("alb_target_response_seconds_bucket", r#",le="0.005""#, 3.0),
        ("alb_target_response_seconds_count", "", 3.0),
        ("alb_window_requests", r#",window="1m""#, 4.0),
        ("alb_window_errors", r#",window="1m""#, 1.0),
        (
            "alb_window_latency_seconds",
            r#",window="1m",percentile="50",kind="target""#,
            0.002,
        ),
    ] {
        let got = sample(&text, &format!("{name}{{{prod}{own}}}"));
        assert_eq!(got, Some(value), "{name}{{{prod}{own}}} in\n{text}");
    }
    assert_eq!(sample(&text, "albwatch_series"), Some(3.0));
}

#[test]
fn an_attribute_label_cannot_repeat_a_series_label() {
    let source: SnapshotSource =
        Arc::new(|| Aggregator::new(AggregateConfig::default()).snapshot(T0));
    let clock: WallClock = Arc::new(|| T0);
    for taken in ["target", "code", "window", "le"] {
        let registry = new_registry();
        let labels = [taken.to_string()];
        let registered =
            register_snapshot_metrics(&registry, Arc::clone(&source), Arc::clone(&clock), &labels);
        assert!(registered.is_err(), "{taken}");
    }
}

/// Regression (issue: `-` as elb_status_code): an entry whose load balancer sent no status is
/// counted under the code label `-`, a closed value like the three-digit codes.
#[test]
fn no_elb_status_code_is_the_dash_label() {
    let answered = line_at(OK, T0, None);
    let unanswered = answered.replacen(" 200 200 ", " - - ", 1);
    assert_ne!(unanswered, answered);
    let text = exposition(snapshot_of(&[unanswered], T0 + MINUTE_US), T0 + MINUTE_US);
    let series = format!(
        "alb_requests_total{{{}}}",
        series(r#",code="-",cause="lb_unknown""#)
    );
    assert_eq!(sample(&text, &series), Some(1.0), "{text}");
}

// ---- the text written straight from the snapshot ----

/// `/metrics`' bytes (`admin::encode`) and the oracle's: the proto families a plain
/// `gather()` gets, through `TextEncoder`.
fn both_ways(registry: &prometheus::Registry) -> (String, String) {
    let (_, body) = admin::encode(registry).expect("encode");
    let mut oracle = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&registry.gather(), &mut oracle)
        .expect("oracle");
    (
        String::from_utf8(body).expect("utf-8"),
        String::from_utf8(oracle).expect("utf-8"),
    )
}

fn registry_of(snapshot: Snapshot, export: ExportConfig) -> prometheus::Registry {
    let registry = new_registry();
    let labels = snapshot.attribute_labels.to_vec();
    register_snapshot_metrics_with(
        &registry,
        Arc::new(move || snapshot.clone()),
        Arc::new(|| T0 + MINUTE_US),
        &labels,
        export,
    )
    .expect("register");
    registry
}

fn reduced() -> ExportConfig {
    ExportConfig {
        latency_windows_secs: Some(vec![60]),
        latency_buckets_seconds: Some(vec![0.1, 1.0]),
    }
}

#[test]
fn the_text_is_the_bytes_the_encoder_writes_for_the_proto_families() {
    let mut lines: Vec<String> = (0..39)
        .map(|n| line_at(n, T0 + n as i64 * SECOND_US, None))
        .collect();
    lines.push(line_at(OK, T0, Some("0.3")));
    let fixtures = snapshot_of(&lines, T0 + MINUTE_US);
    // Series with two, one and no attributes: the registry sorts fewer labels first.
    let attributes = snapshot_with_attributes(
        &[(&["prod", "shop"], 3), (&["", "shop"], 2), (&[], 4)],
        T0 + MINUTE_US,
    );
    for snapshot in [fixtures, attributes] {
        for export in [ExportConfig::default(), reduced()] {
            let registry = registry_of(snapshot.clone(), export.clone());
            // Another collector's families sort among the snapshot's (`albwatch_lines_total`
            // between `albwatch_late_…` and `albwatch_max_…`) and still go through the encoder.
            let lines_total = prometheus::IntCounterVec::new(
                prometheus::Opts::new("albwatch_lines_total", "Lines."),
                &["outcome"],
            )
            .expect("counter");
            lines_total.with_label_values(&["parsed"]).inc_by(7);
            registry
                .register(Box::new(lines_total))
                .expect("register lines");
            let (text, oracle) = both_ways(&registry);
            assert_eq!(text, oracle, "{export:?}");
            assert!(text.contains("albwatch_lines_total{outcome=\"parsed\"} 7\n"));
            assert_well_formed(&text);
        }
    }
}

#[test]
fn label_values_from_the_logs_are_escaped() {
    let mut snapshot = snapshot_of(&[line_at(OK, T0, Some("0.3"))], T0 + MINUTE_US);
    let mut labels = (*snapshot.series[0].labels).clone();
    labels.target_group = "a\\b\"c\nd".to_owned();
    snapshot.series[0].labels = Arc::new(labels);
    let (text, oracle) = both_ways(&registry_of(snapshot, ExportConfig::default()));
    assert_eq!(text, oracle);
    let escaped = format!(
        r#"alb_sent_bytes_total{{elb="{ELB}",target_group="a\\b\"c\nd",target="{TARGET}"}} "#
    );
    assert!(text.contains(&escaped), "{escaped} not in\n{text}");
}

#[test]
fn latency_windows_and_buckets_can_be_left_out() {
    let lines: Vec<String> = ["0.002", "0.3", "0.7", "42"]
        .iter()
        .map(|secs| line_at(OK, T0, Some(secs)))
        .collect();
    let registry = registry_of(snapshot_of(&lines, T0 + MINUTE_US), reduced());
    let (text, _) = both_ways(&registry);
    let windows: HashSet<&str> = samples_named(&text, "alb_window_latency_seconds")
        .iter()
        .filter_map(|l| l.split("window=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(windows, HashSet::from(["1m"]), "{text}");
    // The requests and errors gauges keep every window.
    assert_eq!(samples_named(&text, "alb_window_requests").len(), 3);
    let bucket = |le: &str| {
        sample(
            &text,
            &format!(
                "alb_target_response_seconds_bucket{{{}}}",
                series(&format!(",le=\"{le}\""))
            ),
        )
    };
    // 0.002 is counted in the 0.1 bucket, 0.3 and 0.7 in 1, 42 only in +Inf.
    assert_eq!(bucket("0.1"), Some(1.0), "{text}");
    assert_eq!(bucket("1"), Some(3.0));
    assert_eq!(bucket("+Inf"), Some(4.0));
    assert_eq!(
        samples_named(&text, "alb_target_response_seconds_bucket").len(),
        3
    );

    let off = registry_of(
        snapshot_of(&lines, T0 + MINUTE_US),
        ExportConfig {
            latency_windows_secs: Some(Vec::new()),
            latency_buckets_seconds: Some(Vec::new()),
        },
    );
    let (text, oracle) = both_ways(&off);
    assert_eq!(text, oracle);
    assert!(!text.contains("alb_window_latency_seconds"), "{text}");
    assert_eq!(
        samples_named(&text, "alb_target_response_seconds_bucket").len(),
        1
    );
}

#[test]
fn a_plain_gather_after_an_encode_gets_proto_families_again() {
    let registry = registry_of(
        snapshot_of(&[line_at(OK, T0, None)], T0 + MINUTE_US),
        ExportConfig::default(),
    );
    admin::encode(&registry).expect("encode");
    let requests = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "alb_requests_total")
        .expect("requests family");
    assert_eq!(requests.get_metric().len(), 1);
    assert_eq!(requests.get_metric()[0].get_label().len(), 5);
}
