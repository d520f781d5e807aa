//! `firehose_send::run` against real loopback servers: an axum endpoint that records every
//! request and answers from a per-test script (spec-conforming or not), and a raw-TCP endpoint
//! for answers no well-behaved server framework would produce (chunked 200s, gzip'd replies,
//! dropped connections, silence). Checks the wire format (Firehose's headers, base64 records,
//! optional gzip body), the retry rules (only a conforming 200 succeeds, 413 is final, the rest
//! is retried) and the report's counts.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use albwatch::firehose_send::{self, FirehoseSendArgs, SendReport};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "support/scratch.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod scratch;
use scratch::TempDir;

const KEY: &str = "my-secret-api-key";
const ARN: &str = "arn:aws:firehose:us-east-1:123456789012:deliverystream/alb-logs";
const ATTRS: &str = r#"{"commonAttributes":{"env":"prod"}}"#;

/// One request as the endpoint saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    headers: HeaderMap,
    /// The body as it came off the wire.
    body: Vec<u8>,
    /// The body's JSON, gunzipped when the request said so.
    json: serde_json::Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn request_id(&self) -> &str {
        self.header("x-amz-firehose-request-id").unwrap_or("")
    }

    /// Each record's data, base64-decoded.
    fn records(&self) -> Vec<Vec<u8>> {
        self.json["records"]
            .as_array()
            .expect("records array")
            .iter()
            .map(|r| {
                BASE64_STANDARD
                    .decode(r["data"].as_str().expect("data is a string"))
                    .expect("data is base64")
            })
            .collect()
    }
}

/// How the scripted endpoint answers: the request and how many times its id came before.
type Script = Arc<dyn Fn(&Seen, usize) -> Response + Send + Sync>;

#[derive(Clone)]
struct Endpoint {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Script,
}

async fn record(
    State(ep): State<Endpoint>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw = body.to_vec();
    let plain = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        albwatch::gzip::inflate_capped(&raw, 64 << 20).expect("request body is gzip")
    } else {
        raw.clone()
    };
    let seen = Seen {
        method,
        uri: uri.to_string(),
        headers,
        body: raw,
        json: serde_json::from_slice(&plain).expect("request body is JSON"),
    };
    let before = {
        let mut all = ep.seen.lock().expect("lock");
        let before = all
            .iter()
            .filter(|s| s.request_id() == seen.request_id())
            .count();
        all.push(seen.clone());
        before
    };
    (ep.script)(&seen, before)
}

/// A scripted endpoint on a free loopback port; aborted when dropped.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(script: impl Fn(&Seen, usize) -> Response + Send + Sync + 'static) -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .fallback(record)
            .layer(DefaultBodyLimit::disable())
            .with_state(Endpoint {
                seen: seen.clone(),
                script: Arc::new(script),
            });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server {
            base: format!("http://{addr}"),
            seen,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn json_reply(status: u16, body: String) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).expect("status"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("response")
}

/// The spec's success answer.
fn ok(seen: &Seen) -> Response {
    json_reply(
        200,
        format!(
            r#"{{"requestId":"{}","timestamp":{}}}"#,
            seen.request_id(),
            now_ms()
        ),
    )
}

/// The spec's failure answer (with AWS's quoted timestamp, which a failure may carry).
fn fail(status: u16, seen: &Seen) -> Response {
    json_reply(
        status,
        format!(
            r#"{{"requestId":"{}","timestamp":"{}","errorMessage":"Unable to deliver records due to unknown error."}}"#,
            seen.request_id(),
            now_ms()
        ),
    )
}

/// `n` distinct ALB-shaped lines (the AWS example HTTP line with a varying client port).
fn alb_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "http 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 \
                 192.168.131.39:{} 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 \
                 \"GET http://www.example.com:80/ HTTP/1.1\" \"curl/7.46.0\" - - \
                 arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 \
                 \"Root=1-58337262-36d228ad5d99923122bbe354\" \"-\" \"-\" 0 \
                 2018-07-02T22:22:48.364000Z \"forward\" \"-\" \"-\" \"10.0.0.1:80\" \"200\" \"-\" \"-\" \
                 TID_1234abcd5678ef90 \"-\" \"-\" \"-\"",
                1000 + i
            )
        })
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write input");
}

fn args(url: &str, files: &[&Path], flags: &[&str]) -> FirehoseSendArgs {
    let mut all: Vec<String> = vec![
        "--url".into(),
        url.into(),
        "--backoff-ms".into(),
        "1".into(),
    ];
    all.extend(flags.iter().map(|f| f.to_string()));
    all.extend(files.iter().map(|p| p.display().to_string()));
    FirehoseSendArgs::try_from_flags(all).expect("flags parse")
}

/// Every line in every record, sorted (batches race each other under concurrency).
fn delivered_lines(seen: &[Seen]) -> Vec<String> {
    let mut lines: Vec<String> = seen
        .iter()
        .flat_map(Seen::records)
        .flat_map(|r| {
            assert!(r.ends_with(b"\n"), "every line keeps its newline");
            String::from_utf8(r)
                .expect("utf-8")
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    lines
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

fn is_uuid_v4(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
            }
        })
        && b[14] == b'4'
        && b"89ab".contains(&b[19])
}

/// The report's internal bookkeeping always adds up.
fn assert_consistent(r: &SendReport) {
    assert_eq!(
        r.batches,
        r.batches_delivered + r.batches_dropped_413 + r.batches_failed,
        "{r:#?}"
    );
    assert_eq!(
        r.requests_sent,
        r.requests_ok + r.requests_failed + r.batches_dropped_413,
        "{r:#?}"
    );
    assert_eq!(
        r.requests_failed,
        r.requests_retried + r.batches_failed,
        "{r:#?}"
    );
    assert_eq!(r.requests_ok, r.batches_delivered, "{r:#?}");
    assert_eq!(
        r.statuses.values().sum::<u64>() + r.transport_errors + r.timeouts,
        r.requests_sent,
        "{r:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_spec_exact_requests_and_every_line() {
    let server = Server::start(|seen, _| ok(seen)).await;
    let dir = TempDir::new("firehose-send", "plain");
    let input = dir.join("a.log");
    let lines = alb_lines(250);
    write_lines(&input, &lines);
    let url = format!("{}/alb-logs/firehose?tenant=prod", server.base);
    let started = now_ms();
    let report = firehose_send::run(
        args(
            &url,
            &[&input],
            &[
                "--records-per-request",
                "7",
                "--lines-per-record",
                "10",
                "--concurrency",
                "3",
                "--source-arn",
                ARN,
                "--common-attributes",
                ATTRS,
            ],
        ),
        Some(KEY.into()),
    )
    .await
    .expect("runs");

    let seen = server.seen();
    // 250 lines → 25 records of 10 → batches of 7, 7, 7 and 4.
    assert_eq!(seen.len(), 4);
    let mut per_batch: Vec<usize> = seen.iter().map(|s| s.records().len()).collect();
    per_batch.sort();
    assert_eq!(per_batch, [4, 7, 7, 7]);
    for s in &seen {
        assert_eq!(s.method, Method::POST);
        assert_eq!(s.uri, "/alb-logs/firehose?tenant=prod");
        assert_eq!(s.header("x-amz-firehose-protocol-version"), Some("1.0"));
        assert!(is_uuid_v4(s.request_id()), "{}", s.request_id());
        assert_eq!(s.header("x-amz-firehose-source-arn"), Some(ARN));
        assert_eq!(s.header("x-amz-firehose-access-key"), Some(KEY));
        assert_eq!(s.header("x-amz-firehose-common-attributes"), Some(ATTRS));
        assert_eq!(s.header("content-type"), Some("application/json"));
        assert_eq!(s.header("content-encoding"), None);
        assert_eq!(
            s.header("content-length"),
            Some(s.body.len().to_string().as_str())
        );
        let obj = s.json.as_object().expect("object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["records", "requestId", "timestamp"]);
        assert_eq!(obj["requestId"], s.request_id());
        let ts = obj["timestamp"].as_u64().expect("integer timestamp");
        assert!(ts >= started && ts <= now_ms(), "{ts}");
        for r in obj["records"].as_array().expect("records") {
            assert_eq!(r.as_object().expect("record").len(), 1, "only `data`");
        }
        for r in s.records() {
            assert_eq!(r.iter().filter(|&&c| c == b'\n').count(), 10);
        }
    }
    let ids: std::collections::HashSet<&str> = seen.iter().map(Seen::request_id).collect();
    assert_eq!(ids.len(), 4, "a fresh id per batch");
    assert_eq!(delivered_lines(&seen), sorted(lines));

    assert_consistent(&report);
    assert_eq!((report.batches, report.batches_delivered), (4, 4));
    assert_eq!((report.requests_sent, report.requests_ok), (4, 4));
    assert_eq!(report.requests_retried, 0);
    assert_eq!(report.statuses, BTreeMap::from([(200, 4)]));
    assert_eq!((report.records, report.records_delivered), (25, 25));
    assert_eq!((report.lines, report.lines_delivered), (250, 250));
    let on_wire: u64 = seen.iter().map(|s| s.body.len() as u64).sum();
    assert_eq!(report.raw_bytes, on_wire);
    assert_eq!(report.wire_bytes, on_wire);
    assert_eq!(report.wire_bytes_with_retries, on_wire);
    assert_eq!(report.latency.answered, 4);
    assert!(report.latency.p50_ms <= report.latency.p99_ms);
    assert!(report.latency.p99_ms <= report.latency.max_ms && report.latency.max_ms > 0.0);
    assert!(report.all_delivered());
    assert!(report.lines_per_sec() > 0.0);
    let text = report.to_string();
    assert!(
        text.starts_with("firehose-send: 250 of 250 lines delivered"),
        "{text}"
    );
    assert!(text.contains("answers 200×4"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_input_and_gzip_bodies_round_trip() {
    let server = Server::start(|seen, _| ok(seen)).await;
    let dir = TempDir::new("firehose-send", "gzip");
    let lines = alb_lines(120);
    // One gzip'd file as ALB writes to S3, one plain file after it.
    let gz_path = dir.join("a.log.gz");
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    for line in &lines[..100] {
        writeln!(gz, "{line}").expect("compress");
    }
    std::fs::write(&gz_path, gz.finish().expect("finish")).expect("write");
    let plain = dir.join("b.log");
    write_lines(&plain, &lines[100..]);

    let report = firehose_send::run(
        args(
            &server.base,
            &[&gz_path, &plain],
            &[
                "--gzip",
                "--lines-per-record",
                "1",
                "--records-per-request",
                "50",
            ],
        ),
        Some(KEY.into()),
    )
    .await
    .expect("runs");

    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.header("content-encoding"), Some("gzip"));
        assert_eq!(s.body[..2], [0x1f, 0x8b]);
        assert_eq!(
            s.header("content-length"),
            Some(s.body.len().to_string().as_str())
        );
        assert!(
            s.records()
                .iter()
                .all(|r| r.iter().filter(|&&c| c == b'\n').count() == 1)
        );
    }
    assert_eq!(delivered_lines(&seen), sorted(lines));
    assert_consistent(&report);
    assert!(report.gzip && report.all_delivered());
    assert_eq!(report.records, 120);
    let on_wire: u64 = seen.iter().map(|s| s.body.len() as u64).sum();
    assert_eq!(report.wire_bytes, on_wire);
    assert!(report.wire_bytes * 3 < report.raw_bytes, "{report:#?}");
    assert!(report.to_string().contains("(gzip)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_resend_the_same_id_and_body() {
    let server = Server::start(|seen, before| match before {
        0 => fail(503, seen),
        1 => fail(500, seen),
        _ => ok(seen),
    })
    .await;
    let dir = TempDir::new("firehose-send", "retry");
    let input = dir.join("a.log");
    write_lines(&input, &alb_lines(12));
    let report = firehose_send::run(
        args(
            &server.base,
            &[&input],
            &[
                "--lines-per-record",
                "1",
                "--records-per-request",
                "5",
                "--gzip",
            ],
        ),
        Some(KEY.into()),
    )
    .await
    .expect("runs");

    let seen = server.seen();
    let mut by_id: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for s in &seen {
        by_id.entry(s.request_id()).or_default().push(s);
    }
    assert_eq!(by_id.len(), 3);
    for attempts in by_id.values() {
        assert_eq!(attempts.len(), 3);
        for a in &attempts[1..] {
            assert_eq!(a.body, attempts[0].body, "byte-identical retry");
            assert_eq!(a.headers, attempts[0].headers);
        }
    }
    assert_consistent(&report);
    assert_eq!(report.requests_sent, 9);
    assert_eq!(report.requests_ok, 3);
    assert_eq!((report.requests_failed, report.requests_retried), (6, 6));
    assert_eq!(
        report.statuses,
        BTreeMap::from([(200, 3), (500, 3), (503, 3)])
    );
    assert!(report.all_delivered());
    assert_eq!(report.lines_delivered, 12);
    assert_eq!(report.wire_bytes_with_retries, 3 * report.wire_bytes);
    let last = report.last_error.as_deref().unwrap_or("");
    assert!(last.contains("Unable to deliver records"), "{last}");
}

/// `--prepare` encodes everything before sending: the same requests on the wire (gzip'd,
/// every line once, retries byte-identical), only the clock starts later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_requests_are_the_same_requests() {
    let server = Server::start(|seen, before| match before {
        0 => fail(503, seen),
        _ => ok(seen),
    })
    .await;
    let dir = TempDir::new("firehose-send", "prepare");
    let input = dir.join("a.log");
    let lines = alb_lines(40);
    write_lines(&input, &lines);
    let report = firehose_send::run(
        args(
            &server.base,
            &[&input],
            &[
                "--prepare",
                "--gzip",
                "--lines-per-record",
                "2",
                "--records-per-request",
                "5",
            ],
        ),
        Some(KEY.into()),
    )
    .await
    .expect("runs");

    let seen = server.seen();
    assert_eq!(
        seen.len(),
        8,
        "4 batches, each refused once then sent again"
    );
    for s in &seen {
        assert_eq!(s.header("content-encoding"), Some("gzip"));
        assert_eq!(s.body[..2], [0x1f, 0x8b]);
    }
    let mut by_id: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for s in &seen {
        by_id.entry(s.request_id()).or_default().push(s);
    }
    assert_eq!(by_id.len(), 4);
    let mut delivered = Vec::new();
    for attempts in by_id.values() {
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[1].body, attempts[0].body, "byte-identical retry");
        delivered.push(attempts[1].clone());
    }
    assert_eq!(delivered_lines(&delivered), sorted(lines));
    assert_consistent(&report);
    assert!(report.all_delivered());
    assert_eq!((report.batches, report.lines_delivered), (4, 40));
    let on_wire: u64 = delivered.iter().map(|s| s.body.len() as u64).sum();
    assert_eq!(report.wire_bytes, on_wire);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_drops_the_batch_without_retry() {
    // The first batch to arrive is refused for good; the rest are taken.
    let first = Arc::new(Mutex::new(None::<String>));
    let server = Server::start(move |seen, _| {
        let mut first = first.lock().expect("lock");
        let id = first.get_or_insert_with(|| seen.request_id().to_string());
        if id == seen.request_id() {
            json_reply(413, r#"{"errorMessage":"batch too large"}"#.into())
        } else {
            ok(seen)
        }
    })
    .await;
    let dir = TempDir::new("firehose-send", "413");
    let input = dir.join("a.log");
    write_lines(&input, &alb_lines(30));
    let report = firehose_send::run(
        args(
            &server.base,
            &[&input],
            &["--lines-per-record", "2", "--records-per-request", "5"],
        ),
        Some(KEY.into()),
    )
    .await
    .expect("runs");

    let seen = server.seen();
    assert_eq!(seen.len(), 3, "no retry of the refused batch");
    assert_consistent(&report);
    assert_eq!(report.batches, 3);
    assert_eq!(report.batches_dropped_413, 1);
    assert_eq!((report.requests_retried, report.requests_failed), (0, 0));
    assert_eq!(report.statuses, BTreeMap::from([(200, 2), (413, 1)]));
    assert_eq!((report.lines, report.lines_delivered), (30, 20));
    assert_eq!((report.records, report.records_delivered), (15, 10));
    assert!(!report.all_delivered());
    assert_eq!(report.problems.len(), 1);
    assert!(
        report.problems[0].contains(seen[0].request_id())
            && report.problems[0].contains("413: batch too large"),
        "{:?}",
        report.problems
    );
    assert!(report.to_string().contains("1 dropped (413)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_off_the_spec_is_a_failure_and_other_2xx_too() {
    let server = Server::start(|seen, before| match before {
        // No JSON at all.
        0 => Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body(Body::from("OK"))
            .expect("response"),
        // Someone else's request id.
        1 => json_reply(200, r#"{"requestId":"other","timestamp":1}"#.into()),
        // A quoted timestamp.
        2 => json_reply(
            200,
            format!(r#"{{"requestId":"{}","timestamp":"1"}}"#, seen.request_id()),
        ),
        // A good body, but only 200 is success.
        3 => {
            let mut r = ok(seen);
            *r.status_mut() = StatusCode::ACCEPTED;
            r
        }
        _ => ok(seen),
    })
    .await;
    let dir = TempDir::new("firehose-send", "bad200");
    let input = dir.join("a.log");
    write_lines(&input, &alb_lines(3));
    let report = firehose_send::run(args(&server.base, &[&input], &[]), None)
        .await
        .expect("runs");
    assert_consistent(&report);
    assert_eq!(report.batches, 1);
    assert_eq!(report.requests_sent, 5);
    assert_eq!(report.nonconforming_200s, 3);
    assert_eq!(report.statuses, BTreeMap::from([(200, 4), (202, 1)]));
    assert_eq!(report.requests_retried, 4);
    assert!(report.all_delivered());
    // No key configured: no key header, rather than an empty one.
    assert!(
        server
            .seen()
            .iter()
            .all(|s| s.header("x-amz-firehose-access-key").is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_given_up_after_max_retries() {
    let server = Server::start(|seen, _| fail(500, seen)).await;
    let dir = TempDir::new("firehose-send", "exhaust");
    let input = dir.join("a.log");
    write_lines(&input, &alb_lines(4));
    let report = firehose_send::run(
        args(
            &server.base,
            &[&input],
            &[
                "--max-retries",
                "2",
                "--lines-per-record",
                "2",
                "--records-per-request",
                "1",
            ],
        ),
        Some(KEY.into()),
    )
    .await
    .expect("runs");
    assert_eq!(server.seen().len(), 6);
    assert_consistent(&report);
    assert_eq!((report.batches, report.batches_failed), (2, 2));
    assert_eq!((report.requests_failed, report.requests_retried), (6, 4));
    assert_eq!(report.lines_delivered, 0);
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.contains("after 2 retries"))
    );
    assert!(!report.all_delivered());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_bound_every_body_and_bad_inputs_are_counted() {
    let server = Server::start(|seen, _| ok(seen)).await;
    let dir = TempDir::new("firehose-send", "bounds");
    let input = dir.join("a.log");
    let mut lines = alb_lines(40);
    let mut text = String::new();
    for (i, line) in lines.iter().enumerate() {
        text.push_str(line);
        text.push('\n');
        if i % 10 == 0 {
            text.push('\n');
            text.push_str(&"x".repeat(700));
            text.push('\n');
        }
    }
    std::fs::write(&input, text).expect("write");
    let missing = dir.join("missing.log");
    let report = firehose_send::run(
        args(
            &server.base,
            &[&missing, &input],
            &[
                "--request-bytes",
                "3000",
                "--max-line-bytes",
                "600",
                "--concurrency",
                "2",
            ],
        ),
        Some(KEY.into()),
    )
    .await
    .expect("runs");
    let seen = server.seen();
    assert!(seen.len() > 1);
    assert!(
        seen.iter().all(|s| s.body.len() <= 3000),
        "a body went over the budget"
    );
    lines.sort();
    assert_eq!(delivered_lines(&seen), lines);
    assert_consistent(&report);
    assert_eq!(report.lines_too_long, 4);
    assert_eq!(report.blank_lines, 4);
    assert_eq!(report.lines_delivered, 40);
    assert_eq!(report.unreadable.len(), 1);
    assert_eq!(report.unreadable[0].0, missing);
    assert!(
        !report.all_delivered(),
        "an unreadable input is not a full delivery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_are_an_error_before_any_request() {
    let err = firehose_send::run(
        args("http://127.0.0.1:9/", &[], &["--request-bytes", "100"]),
        None,
    )
    .await
    .expect_err("too small a budget");
    assert!(err.to_string().starts_with("--request-bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_then_given_up() {
    // A port that was free a moment ago: connecting is refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = TempDir::new("firehose-send", "refused");
    let input = dir.join("a.log");
    write_lines(&input, &alb_lines(2));
    let report = firehose_send::run(
        args(
            &format!("http://127.0.0.1:{port}/"),
            &[&input],
            &["--max-retries", "1"],
        ),
        None,
    )
    .await
    .expect("runs");
    assert_consistent(&report);
    assert_eq!(report.transport_errors, 2);
    assert_eq!(report.batches_failed, 1);
    assert_eq!(report.latency.answered, 0);
    assert!(report.last_error.is_some());
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body); returns its request id.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let length: usize = field("content-length:")?.parse().ok()?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    field("x-amz-firehose-request-id:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_answers_from_a_raw_endpoint_are_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let attempts = Arc::new(AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(Vec::new()));
    let (counter, seen_ids) = (attempts.clone(), ids.clone());
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let Some(id) = read_request(&mut stream).await else {
                continue;
            };
            seen_ids.lock().expect("lock").push(id.clone());
            let body = format!(r#"{{"requestId":"{id}","timestamp":{}}}"#, now_ms());
            let reply = match counter.fetch_add(1, Ordering::SeqCst) {
                // A 200 without Content-Length (chunked).
                0 => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                     {:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                ),
                // A 200 that claims a compressed body.
                1 => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
                // Hang up without a word.
                2 => continue,
                // Say nothing until well past the attempt timeout.
                3 => {
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        drop(stream);
                    });
                    continue;
                }
                _ => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
            };
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    });
    let dir = TempDir::new("firehose-send", "raw");
    let input = dir.join("a.log");
    write_lines(&input, &alb_lines(5));
    let report = firehose_send::run(
        args(
            &format!("http://{addr}/"),
            &[&input],
            &["--attempt-timeout-ms", "500", "--concurrency", "1"],
        ),
        Some(KEY.into()),
    )
    .await
    .expect("runs");
    server.abort();

    assert_consistent(&report);
    assert_eq!(attempts.load(Ordering::SeqCst), 5);
    let ids = ids.lock().expect("lock").clone();
    assert_eq!(ids.len(), 5);
    assert!(ids.iter().all(|id| id == &ids[0]), "one id across retries");
    assert_eq!(report.requests_sent, 5);
    assert_eq!(report.nonconforming_200s, 2);
    assert_eq!(report.transport_errors, 1);
    assert_eq!(report.timeouts, 1);
    assert_eq!(report.requests_ok, 1);
    assert_eq!(report.statuses, BTreeMap::from([(200, 3)]));
    assert!(report.all_delivered());
}
