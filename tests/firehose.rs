//! The Firehose HTTP endpoint over real sockets, driven the way Amazon Data Firehose drives it
//! (HTTP endpoint delivery): requests built byte for byte as Firehose builds them — headers,
//! base64 records, optional gzip body, the same request id on retries — sent by a raw HTTP/1.1
//! client over a loopback TCP (or TLS) connection, and every response checked against the
//! response spec (status, `Content-Type: application/json`, `Content-Length`, no
//! `Content-Encoding`, the request id echoed, an integer timestamp). Behind the endpoint runs
//! the real pipeline: a `Pool` of workers merging into an `Aggregator`, whose totals prove each
//! line is counted exactly once.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "support/fixtures.rs"]
mod fixtures;
use fixtures::cause_line_at;

#[path = "support/counting.rs"]
mod counting;
use counting::Counting;

use albwatch::aggregate::Aggregator;
use albwatch::event_time::InputKind;
use albwatch::input::Shutdown;
use albwatch::input::firehose::{self, FirehoseConfig, FirehoseMetrics};
use albwatch::pipeline::{RawBatch, SubmitError, Submitter};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use prometheus::Registry;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The sample delivery request: its request id, access key, and body (698 bytes, one record
/// holding the AWS example log line with a trailing newline).
const SPEC_ID: &str = "ed4acda5-034f-9f42-bba1-f29aea6d7d8f";
const SPEC_KEY: &str = "my-secret-api-key";
const SPEC_BODY: &str = r#"{"requestId":"ed4acda5-034f-9f42-bba1-f29aea6d7d8f","timestamp":1578090901599,"records":[{"data":"aHR0cCAyMDE4LTA3LTAyVDIyOjIzOjAwLjE4NjY0MVogYXBwL215LWxvYWRiYWxhbmNlci81MGRjNmM0OTVjMGM5MTg4IDE5Mi4xNjguMTMxLjM5OjI4MTcgMTAuMC4wLjE6ODAgMC4wMDAgMC4wMDEgMC4wMDAgMjAwIDIwMCAzNCAzNjYgIkdFVCBodHRwOi8vd3d3LmV4YW1wbGUuY29tOjgwLyBIVFRQLzEuMSIgImN1cmwvNy40Ni4wIiAtIC0gYXJuOmF3czplbGFzdGljbG9hZGJhbGFuY2luZzp1cy1lYXN0LTI6MTIzNDU2Nzg5MDEyOnRhcmdldGdyb3VwL215LXRhcmdldHMvNzNlMmQ2YmMyNGQ4YTA2NyAiUm9vdD0xLTU4MzM3MjYyLTM2ZDIyOGFkNWQ5OTkyMzEyMmJiZTM1NCIgIi0iICItIiAwIDIwMTgtMDctMDJUMjI6MjI6NDguMzY0MDAwWiAiZm9yd2FyZCIgIi0iICItIiAiMTAuMC4wLjE6ODAiICIyMDAiICItIiAiLSIgVElEXzEyMzRhYmNkNTY3OGVmOTAgIi0iICItIiAiLSIK"}]}"#;
/// The decoded record of [`SPEC_BODY`].
const SPEC_LINE: &str = "http 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 \"GET http://www.example.com:80/ HTTP/1.1\" \"curl/7.46.0\" - - arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 \"Root=1-58337262-36d228ad5d99923122bbe354\" \"-\" \"-\" 0 2018-07-02T22:22:48.364000Z \"forward\" \"-\" \"-\" \"10.0.0.1:80\" \"200\" \"-\" \"-\" TID_1234abcd5678ef90 \"-\" \"-\" \"-\"\n";

// ---------------------------------------------------------------------------------------------
// The server under test, with a real pipeline behind it.

struct Harness {
    addr: SocketAddr,
    counting: Counting,
    registry: Registry,
    draining: tokio::sync::watch::Sender<bool>,
    submitter: Option<Submitter>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

fn config() -> FirehoseConfig {
    FirehoseConfig {
        addr: Some("127.0.0.1:0".to_string()),
        access_key: Some(SPEC_KEY.to_string()),
        common_attribute_labels: vec!["env".to_string()],
        ..FirehoseConfig::default()
    }
}

impl Harness {
    /// The endpoint before a pool of `workers` behind a queue of `queue_batches`.
    async fn start(cfg: FirehoseConfig, (workers, queue_batches): (usize, usize)) -> Harness {
        let cfg = cfg.validate().expect("valid firehose config");
        let counting = Counting::start(workers, queue_batches);
        let registry = Registry::new();
        let metrics = FirehoseMetrics::register(&registry, &cfg).expect("metrics");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (draining, draining_signal) = Shutdown::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(firehose::serve(
            listener,
            cfg,
            counting.source(InputKind::Firehose),
            metrics,
            draining_signal,
            async move {
                let _ = stopped.await;
            },
        ));
        Harness {
            addr,
            submitter: Some(counting.submitter()),
            counting,
            registry,
            draining,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Lines counted by the aggregator so far.
    fn counted(&self) -> u64 {
        self.counting.counted()
    }

    /// The value of one sample of the exposition, e.g. `name{label="v"}`.
    fn metric(&self, sample: &str) -> f64 {
        let (_, body) = albwatch::export::admin::encode(&self.registry).expect("encode");
        let text = String::from_utf8(body).expect("utf8");
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample:?} in\n{text}"))
    }

    async fn send(&self, request: &Request) -> Reply {
        let stream = TcpStream::connect(self.addr).await.expect("connect");
        exchange(stream, &request.to_bytes()).await
    }

    /// Stops the server, then the pool (which waits for every submitter to go).
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let result = tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("server stops within 10 s")
                .expect("server task");
            result.expect("server result");
        }
        self.submitter.take();
        self.counting.finish_blocking().await;
    }
}

/// Holds the aggregator's lock on a thread of its own, so every worker blocks at its merge
/// (and no batch is acknowledged) until [`Blocker::release`].
struct Blocker {
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Blocker {
    fn hold(agg: &Arc<Mutex<Aggregator>>) -> Blocker {
        let agg = Arc::clone(agg);
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let _guard = agg.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = locked_tx.send(());
            let _ = release_rx.recv();
        });
        locked_rx.recv().expect("lock taken");
        Blocker { release, thread }
    }

    fn release(self) {
        let _ = self.release.send(());
        self.thread.join().expect("blocker thread");
    }
}

// ---------------------------------------------------------------------------------------------
// Requests as Firehose sends them.

#[derive(Clone)]
struct Request {
    method: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    /// The sample delivery request for `body` with `id` in the header, plain or gzip'd.
    fn firehose(id: &str, body: &[u8], gzip: bool) -> Request {
        let mut headers: Vec<(String, String)> = [
            ("Host", "ingest.example.com"),
            ("Content-Type", "application/json"),
            ("X-Amz-Firehose-Protocol-Version", "1.0"),
            ("X-Amz-Firehose-Request-Id", id),
            (
                "X-Amz-Firehose-Source-Arn",
                "arn:aws:firehose:us-east-1:123456789012:deliverystream/alb-logs",
            ),
            ("X-Amz-Firehose-Access-Key", SPEC_KEY),
            (
                "X-Amz-Firehose-Common-Attributes",
                r#"{"commonAttributes":{"env":"prod"}}"#,
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let body = if gzip {
            headers.push(("Content-Encoding".to_string(), "gzip".to_string()));
            gzip_bytes(body)
        } else {
            body.to_vec()
        };
        Request {
            method: "POST",
            headers,
            body,
        }
    }

    fn without(mut self, name: &str) -> Request {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    fn with(mut self, name: &str, value: &str) -> Request {
        self = self.without(name);
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn head(&self, content_length: usize) -> Vec<u8> {
        let mut out = format!(
            "{} /alb-logs/firehose?tenant=prod HTTP/1.1\r\n",
            self.method
        );
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {content_length}\r\nConnection: close\r\n\r\n"
        ));
        out.into_bytes()
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.head(self.body.len());
        out.extend_from_slice(&self.body);
        out
    }
}

/// A delivery request body: `{"requestId","timestamp","records":[{"data"}]}`.
fn body(id: &str, records: &[Vec<u8>]) -> Vec<u8> {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::json!({ "data": BASE64.encode(r) }))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "requestId": id,
        "timestamp": now_ms(),
        "records": records,
    }))
    .expect("json")
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

/// Polls `cond` until it holds (a state change on another thread, not a timing assumption).
async fn wait_until(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition never held"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client and the response spec.

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// Asserts Firehose's response requirements and the expected status; returns the body.
    fn check(&self, status: u16, request_id: &str) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "status; body {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.header("content-encoding"), None);
        assert_eq!(self.header("transfer-encoding"), None);
        let length: usize = self
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .expect("numeric Content-Length");
        assert_eq!(length, self.body.len());
        assert!(self.body.len() <= 1 << 20);
        let v = self.json();
        assert_eq!(v["requestId"], request_id, "echoed request id");
        let ts = v["timestamp"].as_u64().expect("integer timestamp");
        assert!(ts.abs_diff(now_ms()) < 60_000, "timestamp is now, in ms");
        let expected_keys = if status == 200 { 2 } else { 3 };
        assert_eq!(v.as_object().map(|o| o.len()), Some(expected_keys), "{v}");
        if status != 200 {
            let msg = v["errorMessage"].as_str().expect("errorMessage");
            assert!(!msg.is_empty() && msg.chars().count() <= 8192);
        }
        v
    }
}

/// Writes `request`, then reads one response (headers, then `Content-Length` bytes).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> Reply {
    stream.write_all(request).await.expect("write request");
    stream.flush().await.expect("flush");
    read_reply(&mut stream).await
}

async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.expect("read response");
        assert!(
            n > 0,
            "connection closed before the response headers: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status: u16 = status_line[9..12].parse().expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Reply {
        status,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Payloads.

fn corpus(seed: u64, lines: usize) -> Vec<u8> {
    albwatch::traffic::corpus(seed, lines)
}

/// A CloudWatch Logs subscription payload (gzip'd, as Firehose gets it without the
/// decompression processor).
fn cloudwatch(message_type: &str, messages: &[&str]) -> Vec<u8> {
    let events: Vec<serde_json::Value> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| serde_json::json!({"id": i.to_string(), "timestamp": 1_530_570_180_000u64, "message": m}))
        .collect();
    let envelope = serde_json::json!({
        "messageType": message_type,
        "owner": "123456789012",
        "logGroup": "/alb/my-loadbalancer",
        "logStream": "stream",
        "subscriptionFilters": ["to-firehose"],
        "logEvents": events,
    });
    gzip_bytes(&serde_json::to_vec(&envelope).expect("json"))
}

/// The sample log line as a JSON record with AWS field names (vended-log `json` format).
fn json_record() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": "http",
        "time": "2018-07-02T22:23:00.186641Z",
        "elb": "app/my-loadbalancer/50dc6c495c0c9188",
        "client:port": "192.168.131.39:2817",
        "target:port": "10.0.0.1:80",
        "request_processing_time": "0.000",
        "target_processing_time": "0.001",
        "response_processing_time": "0.000",
        "elb_status_code": "200",
        "target_status_code": "200",
        "received_bytes": "34",
        "sent_bytes": "366",
        "request": "GET http://www.example.com:80/ HTTP/1.1",
        "user_agent": "curl/7.46.0",
        "ssl_cipher": "-",
        "ssl_protocol": "-",
        "target_group_arn": "arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067",
        "trace_id": "Root=1-58337262-36d228ad5d99923122bbe354",
        "domain_name": "-",
        "chosen_cert_arn": "-",
        "matched_rule_priority": "0",
        "request_creation_time": "2018-07-02T22:22:48.364000Z",
        "actions_executed": "forward",
        "redirect_url": "-",
        "error_reason": "-",
        "target:port_list": "10.0.0.1:80",
        "target_status_code_list": "200",
        "classification": "-",
        "classification_reason": "-",
        "conn_trace_id": "TID_1234abcd5678ef90",
    }))
    .expect("json")
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_example_is_accepted_plain_and_gzipped() {
    let h = Harness::start(config(), (2, 8)).await;
    assert_eq!(SPEC_BODY.len(), 698);
    let plain = Request::firehose(SPEC_ID, SPEC_BODY.as_bytes(), false);
    assert!(
        String::from_utf8_lossy(&plain.to_bytes())
            .starts_with("POST /alb-logs/firehose?tenant=prod HTTP/1.1\r\n")
    );
    assert!(String::from_utf8_lossy(&plain.head(698)).contains("Content-Length: 698\r\n"));
    let reply = h.send(&plain).await;
    let v = reply.check(200, SPEC_ID);
    // `{"requestId":"<36>","timestamp":<13 digits>}` is 78 bytes.
    assert_eq!(reply.body.len(), 78, "{v}");
    assert_eq!(h.counted(), 1);

    let id = "0b6c0c2c-0d0e-4c8f-9d0a-000000000002";
    let body = String::from_utf8(SPEC_BODY.as_bytes().to_vec())
        .expect("utf8")
        .replace(SPEC_ID, id);
    let gzipped = Request::firehose(id, body.as_bytes(), true);
    assert!(gzipped.body.len() < body.len());
    h.send(&gzipped).await.check(200, id);
    assert_eq!(h.counted(), 2);
    assert_eq!(
        h.metric(r#"albwatch_firehose_requests_total{env="prod",status="200"}"#),
        2.0
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_records_total{format="lines"}"#),
        2.0
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_lines_total{format="lines"}"#),
        2.0
    );
    assert!(h.metric("albwatch_firehose_received_bytes_total") >= 698.0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payload_format_reaches_the_aggregator() {
    let h = Harness::start(config(), (2, 8)).await;
    let gz_lines = corpus(2, 5);
    let cw_lines = corpus(3, 4);
    let cw_text = String::from_utf8(cw_lines).expect("utf8");
    let messages: Vec<&str> = cw_text.lines().collect();
    let records = vec![
        corpus(1, 3),                          // plain lines
        gzip_bytes(&gz_lines),                 // gzip'd lines
        cloudwatch("DATA_MESSAGE", &messages), // CloudWatch Logs data
        cloudwatch(
            "CONTROL_MESSAGE",
            &["CWL CONTROL MESSAGE: Checking health of destination Firehose."],
        ),
        json_record(),                            // a JSON record
        Vec::new(),                               // an empty record
        SPEC_LINE.trim_end().as_bytes().to_vec(), // a line without its newline
    ];
    let id = "formats-1";
    h.send(&Request::firehose(id, &body(id, &records), true))
        .await
        .check(200, id);
    assert_eq!(h.counted(), 3 + 5 + 4 + 1 + 1);
    for (format, records, lines) in [
        ("lines", 2.0, 4.0),
        ("gzip_lines", 1.0, 5.0),
        ("cloudwatch_logs", 1.0, 4.0),
        ("cloudwatch_control", 1.0, 0.0),
        ("json", 1.0, 1.0),
        ("empty", 1.0, 0.0),
    ] {
        assert_eq!(
            h.metric(&format!(
                r#"albwatch_firehose_records_total{{format="{format}"}}"#
            )),
            records,
            "{format}"
        );
        assert_eq!(
            h.metric(&format!(
                r#"albwatch_firehose_lines_total{{format="{format}"}}"#
            )),
            lines,
            "{format}"
        );
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_share_a_kept_alive_connection_and_may_carry_no_records() {
    let h = Harness::start(config(), (1, 8)).await;
    let keep_alive = |r: &Request| {
        let mut out = String::from_utf8(r.head(r.body.len()))
            .expect("ASCII head")
            .replace("Connection: close\r\n", "Connection: keep-alive\r\n")
            .into_bytes();
        out.extend_from_slice(&r.body);
        out
    };
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    // AWS documents 1–10000 records; an empty list is answered 200 all the same.
    let empty = Request::firehose("empty-1", &body("empty-1", &[]), false);
    stream.write_all(&keep_alive(&empty)).await.expect("write");
    read_reply(&mut stream).await.check(200, "empty-1");
    let one = Request::firehose("one-1", &body("one-1", &[corpus(9, 2)]), true);
    stream.write_all(&keep_alive(&one)).await.expect("write");
    read_reply(&mut stream).await.check(200, "one-1");
    assert_eq!(h.counted(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_is_split_into_batches_and_answered_after_all_of_them() {
    let h = Harness::start(
        FirehoseConfig {
            batch_bytes: 4096,
            ..config()
        },
        (2, 2),
    )
    .await;
    let records: Vec<Vec<u8>> = (0..50).map(|seed| corpus(seed, 20)).collect();
    let id = "large-1";
    h.send(&Request::firehose(id, &body(id, &records), false))
        .await
        .check(200, id);
    // Every batch was acknowledged before the 200, so the counts are already there.
    assert_eq!(h.counted(), 1000);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_id_is_answered_200_and_counted_once() {
    let h = Harness::start(config(), (2, 8)).await;
    let id = "dup-1";
    let request = Request::firehose(id, &body(id, &[corpus(7, 10)]), false);
    h.send(&request).await.check(200, id);
    h.send(&request).await.check(200, id);
    // A retry that gzips this time is the same batch.
    let gz = Request::firehose(id, &body(id, &[corpus(7, 10)]), true);
    h.send(&gz).await.check(200, id);
    assert_eq!(h.counted(), 10);
    assert_eq!(h.metric("albwatch_firehose_duplicates_total"), 2.0);
    assert_eq!(
        h.metric(r#"albwatch_firehose_lines_total{format="lines"}"#),
        10.0
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_while_the_first_attempt_is_in_flight_gets_503() {
    let h = Harness::start(config(), (1, 8)).await;
    let id = "slow-1";
    let request = Request::firehose(id, &body(id, &[corpus(8, 6)]), false);
    let blocker = Blocker::hold(&h.counting.agg);
    let (a, b) = (request.to_bytes(), request.to_bytes());
    let addr = h.addr;
    let mut first = tokio::spawn(async move {
        exchange(TcpStream::connect(addr).await.expect("connect"), &a).await
    });
    let mut second = tokio::spawn(async move {
        exchange(TcpStream::connect(addr).await.expect("connect"), &b).await
    });
    // Whichever attempt claimed the id waits for its acknowledgement; the other is refused.
    let (refused, first_won) = tokio::select! {
        r = &mut first => (r.expect("task"), true),
        r = &mut second => (r.expect("task"), false),
    };
    let pending = if first_won { second } else { first };
    let v = refused.check(503, id);
    assert!(
        v["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("being processed"))
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_failures_total{reason="in_flight"}"#),
        1.0
    );
    blocker.release();
    pending.await.expect("task").check(200, id);
    // The retry after success is a duplicate.
    h.send(&request).await.check(200, id);
    assert_eq!(h.counted(), 6);
    assert_eq!(h.metric("albwatch_firehose_duplicates_total"), 1.0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_gets_503_and_the_retry_is_counted_once() {
    let h = Harness::start(config(), (1, 1)).await;
    let blocker = Blocker::hold(&h.counting.agg);
    let submitter = h.submitter.clone().expect("submitter");
    // One batch stuck in the (blocked) worker, one filling the queue of one.
    let fill = tokio::task::spawn_blocking(move || {
        submitter
            .submit(RawBatch::new(corpus(20, 4)))
            .expect("first batch");
        let mut batch = RawBatch::new(corpus(21, 5));
        // The queue frees up once the worker takes the first batch; then this one fills it.
        loop {
            match submitter.try_submit(batch) {
                Ok(()) => break,
                Err(SubmitError::Full(b)) => {
                    batch = *b;
                    std::thread::yield_now();
                }
                Err(SubmitError::Closed(_)) => panic!("pool closed"),
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), fill)
        .await
        .expect("queue filled")
        .expect("task");

    let id = "busy-1";
    let request = Request::firehose(id, &body(id, &[corpus(22, 7), corpus(23, 3)]), true);
    let v = h.send(&request).await.check(503, id);
    assert!(
        v["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("full"))
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_failures_total{reason="queue_full"}"#),
        1.0
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_requests_total{env="prod",status="503"}"#),
        1.0
    );

    blocker.release();
    // Firehose backs off (≥ 1 s) before it retries; by then the queue has drained.
    wait_until(|| h.counted() == 4 + 5).await;
    // The retry carries the same batch with the same id.
    h.send(&request).await.check(200, id);
    assert_eq!(h.counted(), 4 + 5 + 7 + 3);
    assert_eq!(
        h.metric(r#"albwatch_firehose_lines_total{format="lines"}"#),
        10.0
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_endpoint_answers_503() {
    let h = Harness::start(config(), (1, 8)).await;
    let id = "drain-1";
    let request = Request::firehose(id, &body(id, &[corpus(30, 2)]), false);
    h.draining.send_replace(true);
    h.send(&request).await.check(503, id);
    assert_eq!(h.counted(), 0);
    h.draining.send_replace(false);
    h.send(&request).await.check(200, id);
    assert_eq!(h.counted(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_without_being_buffered() {
    let h = Harness::start(
        FirehoseConfig {
            max_body_bytes: 2048,
            ..config()
        },
        (1, 8),
    )
    .await;
    let id = "big-1";
    let request = Request::firehose(id, &body(id, &[corpus(40, 20)]), false);
    assert!(request.body.len() > 3072);

    // Declared too large: refused from the headers alone, before any body byte is sent.
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    stream
        .write_all(&request.head(request.body.len()))
        .await
        .expect("write head");
    read_reply(&mut stream).await.check(413, id);

    // Streamed (chunked) past the limit: refused as soon as the limit is crossed.
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    let mut head = String::from("POST /alb-logs/firehose?tenant=prod HTTP/1.1\r\n");
    for (k, v) in &request.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    for chunk in request.body[..3072].chunks(1024) {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .expect("chunk size");
        stream.write_all(chunk).await.expect("chunk");
        stream.write_all(b"\r\n").await.expect("chunk end");
    }
    // No terminating chunk: the server must answer without waiting for the rest.
    read_reply(&mut stream).await.check(413, id);

    assert_eq!(
        h.metric(r#"albwatch_firehose_failures_total{reason="body_too_large"}"#),
        2.0
    );
    assert_eq!(h.counted(), 0);
    // A small request still goes through.
    let id = "small-1";
    h.send(&Request::firehose(id, &body(id, &[corpus(41, 1)]), false))
        .await
        .check(200, id);
    assert_eq!(h.counted(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_gets_413() {
    let h = Harness::start(
        FirehoseConfig {
            max_decompressed_body_bytes: 256 * 1024,
            ..config()
        },
        (1, 8),
    )
    .await;
    let id = "bomb-1";
    // 8 MiB of JSON whitespace and a valid request: tiny compressed, far over the cap.
    let mut json = body(id, &[corpus(50, 1)]);
    json.splice(0..0, std::iter::repeat_n(b' ', 8 << 20));
    let request = Request::firehose(id, &json, true);
    assert!(request.body.len() < 64 * 1024);
    h.send(&request).await.check(413, id);
    assert_eq!(
        h.metric(r#"albwatch_firehose_failures_total{reason="decompressed_too_large"}"#),
        1.0
    );
    assert_eq!(h.counted(), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_firehose_requests_get_400() {
    let h = Harness::start(config(), (1, 8)).await;
    // AWS's own example body, which is invalid JSON (no comma after `timestamp`).
    let aws = "{\n  \"requestId\": \"ed4acda5-034f-9f42-bba1-f29aea6d7d8f\",\n  \"timestamp\": \
               1578090901599\n  \"records\": [\n    {\n      \"data\": \"aGVsbG8=\"\n    },\n    \
               {\n      \"data\": \"aGVsbG8gd29ybGQ=\"\n    }\n  ]\n}";
    let v = h
        .send(&Request::firehose(SPEC_ID, aws.as_bytes(), false))
        .await
        .check(400, SPEC_ID);
    assert!(
        v["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("not a Firehose request"))
    );
    h.send(&Request::firehose(SPEC_ID, b"{\"requestId\":\"x\"", true))
        .await
        .check(400, SPEC_ID);
    // A gzip header on a body that is not gzip.
    let mut bad_gzip = Request::firehose(SPEC_ID, SPEC_BODY.as_bytes(), false);
    bad_gzip = bad_gzip.with("Content-Encoding", "gzip");
    h.send(&bad_gzip).await.check(400, SPEC_ID);
    // An encoding Firehose never uses.
    let br = Request::firehose(SPEC_ID, SPEC_BODY.as_bytes(), false).with("Content-Encoding", "br");
    h.send(&br).await.check(415, SPEC_ID);
    assert_eq!(
        h.metric(r#"albwatch_firehose_failures_total{reason="bad_json"}"#),
        2.0
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_failures_total{reason="bad_gzip"}"#),
        1.0
    );
    // Refused requests were not committed: the valid one is processed afterwards.
    h.send(&Request::firehose(SPEC_ID, SPEC_BODY.as_bytes(), false))
        .await
        .check(200, SPEC_ID);
    assert_eq!(h.counted(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_bad_base64_is_counted_and_the_rest_goes_through() {
    let h = Harness::start(config(), (1, 8)).await;
    let id = "b64-1";
    let good = BASE64.encode(corpus(60, 3));
    let also_good = BASE64.encode(corpus(61, 2));
    let corrupt = "gzip-bytes-copied-as-text!!";
    let gzip_garbage = BASE64.encode(b"\x1f\x8b\x08\x00garbage");
    let json = format!(
        r#"{{"requestId":"{id}","timestamp":{},"records":[{{"data":"{good}"}},{{"data":"{corrupt}"}},{{"data":"{gzip_garbage}"}},{{"data":"{also_good}"}}]}}"#,
        now_ms()
    );
    h.send(&Request::firehose(id, json.as_bytes(), false))
        .await
        .check(200, id);
    assert_eq!(h.counted(), 5);
    assert_eq!(
        h.metric(r#"albwatch_firehose_decode_errors_total{kind="bad_base64"}"#),
        1.0
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_decode_errors_total{kind="bad_gzip"}"#),
        1.0
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_records_total{format="lines"}"#),
        2.0
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_keys_are_checked() {
    let h = Harness::start(config(), (1, 8)).await;
    let request = Request::firehose(SPEC_ID, SPEC_BODY.as_bytes(), false);
    h.send(&request.clone().without("X-Amz-Firehose-Access-Key"))
        .await
        .check(401, SPEC_ID);
    for wrong in ["my-secret-api-kez", "my-secret-api-key-and-more", "my", ""] {
        h.send(&request.clone().with("X-Amz-Firehose-Access-Key", wrong))
            .await
            .check(403, SPEC_ID);
    }
    assert_eq!(h.counted(), 0);
    // Refused requests take no attribute value slots.
    assert_eq!(
        h.metric(r#"albwatch_firehose_requests_total{env="",status="403"}"#),
        4.0
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_requests_total{env="",status="401"}"#),
        1.0
    );
    h.send(&request).await.check(200, SPEC_ID);
    assert_eq!(h.counted(), 1);
    h.shutdown().await;

    // An endpoint explicitly configured without a key takes requests without one.
    let open = Harness::start(
        FirehoseConfig {
            access_key: None,
            allow_unauthenticated: true,
            ..config()
        },
        (1, 8),
    )
    .await;
    open.send(&request.clone().without("X-Amz-Firehose-Access-Key"))
        .await
        .check(200, SPEC_ID);
    open.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_headers_are_checked() {
    let h = Harness::start(config(), (1, 8)).await;
    let request = Request::firehose(SPEC_ID, SPEC_BODY.as_bytes(), false);
    h.send(
        &request
            .clone()
            .with("X-Amz-Firehose-Protocol-Version", "2.0"),
    )
    .await
    .check(400, SPEC_ID);
    h.send(&request.clone().without("X-Amz-Firehose-Protocol-Version"))
        .await
        .check(400, SPEC_ID);
    // No id in the header: nothing to echo.
    h.send(&request.clone().without("X-Amz-Firehose-Request-Id"))
        .await
        .check(400, "");
    // The header and the body disagree: the header's id is echoed.
    let other = "11111111-2222-3333-4444-555555555555";
    let v = h
        .send(&request.clone().with("X-Amz-Firehose-Request-Id", other))
        .await
        .check(400, other);
    assert!(
        v["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("does not match"))
    );
    // Junk common attributes are ignored and counted.
    h.send(
        &request
            .clone()
            .with("X-Amz-Firehose-Common-Attributes", "{not json"),
    )
    .await
    .check(200, SPEC_ID);
    assert_eq!(
        h.metric("albwatch_firehose_bad_common_attributes_total"),
        1.0
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_requests_total{env="",status="200"}"#),
        1.0
    );
    // Only POST.
    let mut get = Request::firehose(SPEC_ID, b"", false);
    get.method = "GET";
    let reply = h.send(&get).await;
    reply.check(405, SPEC_ID);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_eq!(h.counted(), 1);
    h.shutdown().await;
}

/// A self-signed certificate for `localhost` from the openssl command line.
fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", "/CN=localhost", "-days", "1"])
        // rustls checks the name in subjectAltName and refuses a CA certificate as a server's.
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl command must be installed to test TLS");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_tls() {
    let dir = std::env::temp_dir().join(format!("albwatch-firehose-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = self_signed(&dir);
    let h = Harness::start(
        FirehoseConfig {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key),
            ..config()
        },
        (1, 8),
    )
    .await;

    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&cert).expect("cert");
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.expect("PEM")).expect("trust anchor");
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");

    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let tls = connector
        .connect(name.clone(), tcp)
        .await
        .expect("handshake");
    let request = Request::firehose(SPEC_ID, SPEC_BODY.as_bytes(), true);
    exchange(tls, &request.to_bytes()).await.check(200, SPEC_ID);
    assert_eq!(h.counted(), 1);

    // Plain HTTP on the TLS port is a failed handshake, counted, and the port keeps serving.
    let mut plain = TcpStream::connect(h.addr).await.expect("connect");
    plain
        .write_all(&request.to_bytes())
        .await
        .expect("write plain");
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink).await;
    // The failure is counted just after the server drops the connection.
    wait_until(|| h.metric("albwatch_firehose_tls_handshake_failures_total") == 1.0).await;
    let tcp = TcpStream::connect(h.addr).await.expect("connect");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    exchange(tls, &request.to_bytes()).await.check(200, SPEC_ID);
    assert_eq!(h.counted(), 1);

    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads until the server closes the connection (EOF or reset), within a generous deadline;
/// returns what came before.
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the server closes the connection");
    seen
}

/// Answers once the server has answered (a deadline against a hang, not a timing claim).
async fn reply_on(stream: &mut TcpStream) -> Reply {
    tokio::time::timeout(Duration::from_secs(30), read_reply(stream))
        .await
        .expect("the server answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_concurrency_cap_gets_503_at_once() {
    let h = Harness::start(
        FirehoseConfig {
            max_concurrent_requests: 1,
            ..config()
        },
        (1, 8),
    )
    .await;
    // The first request holds the only permit: its headers and half its body are in, the
    // rest is still on its way.
    let held_id = "held-1";
    let held = Request::firehose(held_id, &body(held_id, &[corpus(60, 3)]), false);
    let half = held.body.len() / 2;
    let mut slow = TcpStream::connect(h.addr).await.expect("connect");
    slow.write_all(&held.head(held.body.len()))
        .await
        .expect("write head");
    slow.write_all(&held.body[..half])
        .await
        .expect("write half");
    wait_until(|| h.metric("albwatch_firehose_received_bytes_total") >= half as f64).await;

    let id = "over-cap-1";
    let request = Request::firehose(id, &body(id, &[corpus(61, 4)]), true);
    let v = h.send(&request).await.check(503, id);
    assert!(
        v["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("more than 1 requests in progress")),
        "{v}"
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_failures_total{reason="too_many_requests"}"#),
        1.0
    );
    // Refused before authentication: it claims no attribute value.
    assert_eq!(
        h.metric(r#"albwatch_firehose_requests_total{env="",status="503"}"#),
        1.0
    );

    slow.write_all(&held.body[half..])
        .await
        .expect("write rest");
    reply_on(&mut slow).await.check(200, held_id);
    // The permit came back with the 200: Firehose's retry goes through, counted once.
    h.send(&request).await.check(200, id);
    assert_eq!(h.counted(), 3 + 4);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_gets_408_and_its_connection_is_closed() {
    let h = Harness::start(
        FirehoseConfig {
            body_read_timeout_secs: 1,
            max_concurrent_requests: 1,
            ..config()
        },
        (1, 8),
    )
    .await;
    let id = "stall-1";
    let request = Request::firehose(id, &body(id, &[corpus(70, 5)]), false);
    let mut stream = TcpStream::connect(h.addr).await.expect("connect");
    stream
        .write_all(&request.head(request.body.len()))
        .await
        .expect("write head");
    stream
        .write_all(&request.body[..request.body.len() / 2])
        .await
        .expect("write half");
    // …and nothing more.
    let v = reply_on(&mut stream).await.check(408, id);
    assert!(
        v["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("did not arrive within 1 s")),
        "{v}"
    );
    // The rest of the body can never be told apart from a next request: the server hangs up.
    closed_by_server(&mut stream).await;
    assert_eq!(
        h.metric(r#"albwatch_firehose_failures_total{reason="body_timeout"}"#),
        1.0
    );
    assert_eq!(
        h.metric(r#"albwatch_firehose_requests_total{env="prod",status="408"}"#),
        1.0
    );
    // The id and the only permit were released: the retry is delivered, once.
    h.send(&request).await.check(200, id);
    assert_eq!(h.counted(), 5);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_but_a_slow_delivery_is_not() {
    let h = Harness::start(
        FirehoseConfig {
            header_read_timeout_secs: 1,
            idle_timeout_secs: 1,
            ..config()
        },
        (1, 8),
    )
    .await;
    let timeouts = |phase: &str| {
        h.metric(&format!(
            "albwatch_firehose_connection_timeouts_total{{phase=\"{phase}\"}}"
        ))
    };

    // Connected, never a byte.
    let mut idle = TcpStream::connect(h.addr).await.expect("connect");
    assert!(closed_by_server(&mut idle).await.is_empty());
    wait_until(|| timeouts("idle") == 1.0).await;

    // Half a request head, then silence (slowloris).
    let mut dribble = TcpStream::connect(h.addr).await.expect("connect");
    dribble
        .write_all(b"POST /alb-logs/firehose HTTP/1.1\r\nHost: ingest.example.com\r\n")
        .await
        .expect("write");
    closed_by_server(&mut dribble).await;
    wait_until(|| timeouts("headers") == 1.0).await;

    // A request whose delivery takes longer than both timeouts keeps its connection: the
    // pipeline is held until another connection has been closed for idling, which proves
    // more than the idle timeout has passed since this request was in.
    let blocker = Blocker::hold(&h.counting.agg);
    let id = "slow-ack-1";
    let request = Request::firehose(id, &body(id, &[corpus(80, 2)]), false);
    let mut kept = TcpStream::connect(h.addr).await.expect("connect");
    let keep_alive = String::from_utf8(request.to_bytes())
        .expect("ASCII request")
        .replace("Connection: close\r\n", "Connection: keep-alive\r\n");
    kept.write_all(keep_alive.as_bytes()).await.expect("write");
    wait_until(|| h.metric("albwatch_firehose_received_bytes_total") > 0.0).await;
    let mut witness = TcpStream::connect(h.addr).await.expect("connect");
    closed_by_server(&mut witness).await;
    wait_until(|| timeouts("idle") == 2.0).await;
    blocker.release();
    reply_on(&mut kept).await.check(200, id);
    assert_eq!(h.counted(), 2);
    // Once answered, the kept-alive connection idles like any other, and is closed.
    closed_by_server(&mut kept).await;
    wait_until(|| timeouts("idle") == 3.0).await;
    assert_eq!(timeouts("headers"), 1.0);
    h.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The daemon: `albwatch run` with `common_attribute_labels`, over its real ports.

/// `albwatch run` with a config file of its own, killed (and its files removed) on drop, so
/// a failing test leaves nothing running.
struct Daemon {
    child: std::process::Child,
    dir: PathBuf,
    stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Daemon {
    fn start(name: &str, config: &str) -> Daemon {
        use std::io::BufRead;
        let dir =
            std::env::temp_dir().join(format!("albwatch-firehose-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("albwatch.toml");
        std::fs::write(&path, config).expect("config file");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_albwatch"))
            .args(["run", "--admin-addr", "127.0.0.1:0", "--config"])
            .arg(&path)
            .env_remove("ALBWATCH_FIREHOSE_ACCESS_KEY")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starts albwatch run");
        let pipe = child.stderr.take().expect("stderr");
        let (tx, stderr) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Daemon { child, dir, stderr }
    }

    /// The admin and Firehose addresses, from the start-up lines.
    async fn addresses(&mut self) -> (SocketAddr, SocketAddr) {
        let (mut admin, mut firehose) = (None, None);
        let mut seen = Vec::new();
        while admin.is_none() || firehose.is_none() {
            let line = tokio::time::timeout(Duration::from_secs(30), self.stderr.recv())
                .await
                .unwrap_or_else(|_| panic!("no start-up lines within 30 s; saw {seen:#?}"))
                .unwrap_or_else(|| panic!("albwatch exited; it said {seen:#?}"));
            let addr = |prefix: &str| -> Option<SocketAddr> {
                let rest = line.split_once(prefix)?.1;
                rest.trim_end_matches("/metrics").parse().ok()
            };
            if line.contains("metrics on http://") {
                admin = addr("http://");
            } else if line.contains("Firehose endpoint on http://") {
                firehose = addr("http://");
            }
            seen.push(line);
        }
        (admin.expect("admin"), firehose.expect("firehose"))
    }
}

/// A GET on the admin port; the body as text.
async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let stream = TcpStream::connect(admin)
        .await
        .expect("connect to the admin port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    let reply = exchange(stream, request.as_bytes()).await;
    assert_eq!(reply.status, 200, "GET {path}");
    String::from_utf8(reply.body).expect("UTF-8 body")
}

/// `count` copies of fixture line `n`, one per 100 ms up to a few seconds ago, in one record.
fn record_of(n: usize, count: i64) -> Vec<u8> {
    let now = now_ms() as i64 * 1000;
    (0..count)
        .map(|i| cause_line_at(n, now - 5_000_000 - i * 100_000) + "\n")
        .collect::<String>()
        .into_bytes()
}

/// The sum of every `alb_requests_total` sample whose label block contains `has` and not
/// `lacks`.
fn requests_where(metrics: &str, has: &str, lacks: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("alb_requests_total{"))
        .filter(|l| l.contains(has) && (lacks.is_empty() || !l.contains(lacks)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_attributes_label_the_daemons_alb_series_and_alerts() {
    const OK_LINE: usize = 0; // 200 target_ok on 10.0.1.17:8080
    const REFUSED_LINE: usize = 28; // 502 target_refused_connection on the same target
    let mut daemon = Daemon::start(
        "attributes",
        &format!(
            "[aggregate]\n\
             bucket_secs = 1  # alerts are evaluated every bucket\n\
             [event_time]\n\
             idle_timeout_secs = 2  # the source's requests are all there is: evaluate them\n\
             [firehose]\n\
             addr = \"127.0.0.1:0\"\n\
             access_key = \"{SPEC_KEY}\"\n\
             common_attribute_labels = [\"env\"]\n"
        ),
    );
    let (admin, firehose) = daemon.addresses().await;
    let send = |id: &'static str, records: Vec<Vec<u8>>, env: Option<&str>| {
        let mut request = Request::firehose(id, &body(id, &records), false);
        request = match env {
            Some(env) => request.with(
                "X-Amz-Firehose-Common-Attributes",
                &format!(r#"{{"commonAttributes":{{"env":"{env}"}}}}"#),
            ),
            None => request.without("X-Amz-Firehose-Common-Attributes"),
        };
        async move {
            let stream = TcpStream::connect(firehose).await.expect("connect");
            exchange(stream, &request.to_bytes()).await.check(200, id);
        }
    };
    // prod: 40 healthy requests and 20 refused connections; staging: 25 healthy ones; and 10
    // more without the header. The 200 comes after the counting, so /metrics has them now.
    send(
        "attrs-prod",
        vec![record_of(OK_LINE, 40), record_of(REFUSED_LINE, 20)],
        Some("prod"),
    )
    .await;
    send(
        "attrs-staging",
        vec![record_of(OK_LINE, 25)],
        Some("staging"),
    )
    .await;
    send("attrs-none", vec![record_of(OK_LINE, 10)], None).await;

    let metrics = admin_get(admin, "/metrics").await;
    let place =
        r#"elb="app/shop-prod/50dc6c495c0c9188",target_group="web-prod",target="10.0.1.17:8080""#;
    for (sample, value) in [
        (
            format!(r#"{place},env="prod",code="200",cause="target_ok""#),
            40,
        ),
        (
            format!(r#"{place},env="prod",code="502",cause="target_refused_connection""#),
            20,
        ),
        (
            format!(r#"{place},env="staging",code="200",cause="target_ok""#),
            25,
        ),
        (format!(r#"{place},code="200",cause="target_ok""#), 10),
    ] {
        let line = format!("alb_requests_total{{{sample}}} {value}\n");
        assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
    }
    assert_eq!(requests_where(&metrics, r#"env="prod""#, ""), 60.0);
    assert_eq!(requests_where(&metrics, r#"env="staging""#, ""), 25.0);
    assert_eq!(requests_where(&metrics, "", "env="), 10.0);
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("alb_") && l.contains(r#"env="""#)),
        "{metrics}"
    );
    // The other alb_* families carry the label too, before their own.
    for family in [
        "alb_sent_bytes_total{",
        "alb_target_response_seconds_count{",
        "alb_window_requests{",
    ] {
        let with_env = format!(r#"{family}{place},env="staging""#);
        assert!(metrics.contains(&with_env), "no {with_env:?} in\n{metrics}");
    }

    // prod's refused connections alert, with env; the same target without attributes does
    // not (10 requests, none refused), and neither does staging.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let alerts = loop {
        let text = admin_get(admin, "/api/alerts").await;
        let alerts: serde_json::Value = serde_json::from_str(&text).expect("JSON alerts");
        if alerts.as_array().is_some_and(|a| !a.is_empty()) {
            break alerts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no alert within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let alerts = alerts.as_array().expect("an array");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let labels = &alerts[0]["labels"];
    assert_eq!(labels["cause"], "target_refused_connection", "{labels}");
    assert_eq!(labels["target"], "10.0.1.17:8080", "{labels}");
    assert_eq!(labels["env"], "prod", "{labels}");
}

#[test]
fn check_config_names_an_attribute_label_the_series_already_have() {
    let dir = std::env::temp_dir().join(format!("albwatch-firehose-{}-check", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let check = |labels: &str| {
        let path = dir.join("albwatch.toml");
        std::fs::write(
            &path,
            format!("[firehose]\ncommon_attribute_labels = {labels}\n"),
        )
        .expect("config file");
        std::process::Command::new(env!("CARGO_BIN_EXE_albwatch"))
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("runs check-config")
    };
    let out = check(r#"["env", "target-group"]"#);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("firehose.common_attribute_labels"), "{err}");
    assert!(err.contains("target_group"), "{err}");
    let out = check(r#"["env"]"#);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(r#"common-attribute labels ["env"]"#),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
