//! End to end for the exporter: a realistic corpus parsed, classified and aggregated, the
//! real admin server on a free loopback port, `/metrics`, `/ready` and `/live` fetched over
//! real HTTP, and the exposition judged by the real `promtool check metrics`. The batches
//! take turns at carrying the common attribute `env` ("prod", "staging") and none, so the
//! exposition mixes series with and without that label. promtool comes from
//! `scripts/install-test-deps.sh`; without it this test fails, it never skips.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use albwatch::aggregate::{AggregateConfig, Aggregator, BatchAccumulator};
use albwatch::classify::{LbSettings, classify};
use albwatch::export::admin::{self, Health};
use albwatch::export::{new_registry, register_snapshot_metrics};
use albwatch::parse::parse_line;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LINES: usize = 5000;

/// The corpus aggregated the way a worker does it, in batches of alternating `env`.
fn aggregate_corpus() -> Aggregator {
    let corpus = albwatch::traffic::corpus(7, LINES);
    let mut agg = Aggregator::new(AggregateConfig {
        attribute_labels: vec!["env".to_string()],
        ..AggregateConfig::default()
    });
    let mut acc = BatchAccumulator::new(agg.config());
    let envs: [&[&str]; 3] = [&["prod"], &["staging"], &[]];
    acc.set_attributes(envs[0]);
    let lb = LbSettings::default();
    let mut parsed = 0;
    for (i, line) in corpus
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let e = parse_line(line).unwrap_or_else(|err| {
            panic!("corpus line {i}: {err}: {}", String::from_utf8_lossy(line))
        });
        acc.add(&e, classify(&e, &lb));
        parsed += 1;
        if parsed % 500 == 0 {
            acc.merge_into(&mut agg);
            acc.set_attributes(envs[parsed / 500 % envs.len()]);
        }
    }
    acc.merge_into(&mut agg);
    assert_eq!(parsed, LINES);
    agg
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

/// A raw HTTP/1.1 GET with `Connection: close`; the body must be `Content-Length` framed.
async fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to admin server");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&raw[..end]).expect("ascii headers");
    let body = raw[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let response = Response {
        status,
        headers,
        body,
    };
    let length: usize = response
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .expect("Content-Length");
    assert_eq!(response.body.len(), length, "truncated body for {path}");
    response
}

/// `promtool check metrics` on `exposition`: its exit code and everything it printed.
/// Panics, failing the test, if promtool is not installed.
fn promtool_check(exposition: &[u8]) -> (Option<i32>, String) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not on PATH: this test needs the real one. Run \
             scripts/install-test-deps.sh (Debian: apt-get install prometheus)."
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    // promtool reads all of stdin before it prints, so writing first cannot deadlock.
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(exposition)
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool exit");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_passes_promtool() {
    let agg = aggregate_corpus();
    let end = agg.max_event_time().expect("events") + 1_000_000;
    let agg = Arc::new(Mutex::new(agg));
    let registry = new_registry();
    let source = Arc::clone(&agg);
    register_snapshot_metrics(
        &registry,
        Arc::new(move || match source.lock() {
            Ok(agg) => agg.snapshot(end),
            Err(poisoned) => poisoned.into_inner().snapshot(end),
        }),
        Arc::new(move || end + 30_000_000),
        &["env".to_string()],
    )
    .expect("register snapshot metrics");

    let health = Health::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
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

    let metrics = get(addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let text = metrics.text();
    for family in [
        "alb_requests_total",
        "alb_received_bytes_total",
        "alb_sent_bytes_total",
        "alb_target_response_seconds",
        "alb_window_requests",
        "alb_window_errors",
        "alb_window_latency_seconds",
        "albwatch_series",
        "albwatch_late_entries_total",
        "albwatch_overflowed_entries_total",
        "albwatch_evicted_series_total",
        "albwatch_max_event_timestamp_seconds",
        "albwatch_watermark_lag_seconds",
    ] {
        assert!(
            text.contains(&format!("\n# TYPE {family} "))
                || text.starts_with(&format!("# HELP {family} ")),
            "{family} missing from /metrics"
        );
    }
    assert!(text.contains("albwatch_watermark_lag_seconds 31\n"), "lag");
    let requests: f64 = text
        .lines()
        .filter(|l| l.starts_with("alb_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(requests, LINES as f64, "every corpus line counted once");
    for env in [r#"env="prod""#, r#"env="staging""#] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("alb_window_requests{") && l.contains(env)),
            "no alb_window_requests with {env}"
        );
    }
    assert!(!text.contains(r#"env="""#), "empty env label written");

    // Kept on disk so a rejection can be inspected (and re-run through promtool) by hand.
    let dump = std::env::temp_dir().join("albwatch-metrics_promtool.prom");
    let _ = std::fs::write(&dump, &metrics.body);
    let (code, printed) = promtool_check(&metrics.body);
    assert_eq!(
        code,
        Some(0),
        "promtool check metrics rejected /metrics (saved in {}):\n{printed}",
        dump.display()
    );

    let ready = get(addr, "/ready").await;
    assert_eq!((ready.status, ready.text()), (503, "not ready"));
    health.set_ready(true);
    let ready = get(addr, "/ready").await;
    assert_eq!((ready.status, ready.text()), (200, "ready"));
    let live = get(addr, "/live").await;
    assert_eq!((live.status, live.text()), (200, "live"));
    assert_eq!(get(addr, "/nothing-here").await.status, 404);

    stop.send(()).expect("server still running");
    server
        .await
        .expect("server task")
        .expect("serve returns Ok after graceful shutdown");
}

/// The check above is only worth something if promtool really judges: a counter without
/// `_total` must be rejected (exit 3, a lint problem).
#[test]
fn promtool_rejects_a_bad_exposition() {
    let bad = b"# HELP alb_requests ALB requests.\n# TYPE alb_requests counter\nalb_requests 1\n";
    let (code, printed) = promtool_check(bad);
    assert_eq!(code, Some(3), "{printed}");
    assert!(printed.contains("_total"), "{printed}");
}
