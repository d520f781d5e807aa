//! The daemon as a user runs it: `albwatch run` follows a log file that is being written,
//! serves `/metrics` over real HTTP with the counts of what was written, prints the alert for a
//! burst of refused connections on one target, answers `/ready`, and on SIGTERM drains and
//! exits 0. Bad configuration stops it before it binds anything (exit 64).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/fixtures.rs"]
mod fixtures;
use fixtures::cause_line_at;

#[path = "support/cli.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod cli;
use cli::{BIN, announced, lines_of};

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("albwatch-daemon-{}-{name}", std::process::id()))
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connects to the admin port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// Waits (bounded) for a line containing `needle`.
fn wait_for(rx: &Receiver<String>, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?} within {limit:?}; saw {seen:#?}");
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_follows_a_file_serves_metrics_alerts_and_stops_on_sigterm() {
    let log = temp("alb.log");
    std::fs::write(&log, "").expect("creates the log");
    // A followed file is one event-time partition: once it stops growing for the idle
    // timeout, what it holds is complete and its windows are evaluated.
    let cfg = temp("follow.toml");
    std::fs::write(&cfg, "[event_time]\nidle_timeout_secs = 2\n").expect("config");
    let child = Command::new(BIN)
        .args(["run", "--admin-addr", "127.0.0.1:0", "--follow", "--config"])
        .arg(&cfg)
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts albwatch run");
    let mut daemon = Daemon(child);
    let stdout = lines_of(daemon.0.stdout.take().expect("stdout"));
    let stderr = lines_of(daemon.0.stderr.take().expect("stderr"));
    let banner = wait_for(&stderr, "metrics on http://", Duration::from_secs(30));
    let addr = banner
        .rsplit("http://")
        .next()
        .and_then(|s| s.strip_suffix("/metrics"))
        .expect("admin address")
        .to_string();

    // 100 healthy requests and 20 refused connections on one target, just now.
    let now = now_us();
    let mut text = String::new();
    for i in 0..100 {
        text.push_str(&cause_line_at(0, now - 20_000_000 + i * 100_000));
        text.push('\n');
    }
    for i in 0..20 {
        text.push_str(&cause_line_at(28, now - 10_000_000 + i * 100_000));
        text.push('\n');
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("appends to the log");

    // Counted and exposed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let sample = r#"alb_requests_total{elb="app/shop-prod/50dc6c495c0c9188",target_group="web-prod",target="10.0.1.17:8080",code="502",cause="target_refused_connection"} 20"#;
    loop {
        let (status, body) = http_get(&addr, "/metrics");
        assert_eq!(status, 200);
        if body.contains(sample) {
            assert!(
                body.contains(r#"albwatch_lines_total{outcome="parsed"} 120"#),
                "{body}"
            );
            assert!(body.contains("alb_window_requests{"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the burst:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(http_get(&addr, "/ready").0, 200);
    assert_eq!(http_get(&addr, "/live").0, 200);

    // Alerted on, with the target and the cause.
    let alert = wait_for(&stdout, "FIRING", Duration::from_secs(40));
    assert!(alert.contains("target_refused_connection"), "{alert}");
    assert!(alert.contains("10.0.1.17:8080"), "{alert}");

    // SIGTERM: drains and exits 0.
    let pid = daemon.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().expect("waits") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "albwatch did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    wait_for(&stderr, "shutting down", Duration::from_secs(1));
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn bad_config_exits_64_naming_the_key_before_binding() {
    let cfg = temp("bad.toml");
    std::fs::write(&cfg, "[aggregate]\nwindows_secs = [60, 95]\n").expect("config");
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("aggregate.windows_secs"), "{err}");
    assert!(!err.contains("metrics on"), "{err}");
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&cfg)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/albwatch.toml"))
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn firehose_deliveries_are_counted_exactly_once() {
    let child = Command::new(BIN)
        .args([
            "run",
            "--admin-addr",
            "127.0.0.1:0",
            "--firehose-addr",
            "127.0.0.1:0",
        ])
        .env("ALBWATCH_FIREHOSE_ACCESS_KEY", "test-key")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts albwatch run");
    let mut daemon = Daemon(child);
    let stderr = lines_of(daemon.0.stderr.take().expect("stderr"));
    let (admin, firehose) = announced(&stderr, true);
    let firehose = firehose.expect("firehose endpoint");

    // The real load driver, gzip on, one line per record: 39 lines in one request.
    let sent = Command::new(BIN)
        .args([
            "firehose-send",
            "--gzip",
            "--lines-per-record",
            "1",
            "--url",
            &firehose,
        ])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/causes.log"
        ))
        .env("ALBWATCH_FIREHOSE_ACCESS_KEY", "test-key")
        .output()
        .expect("runs firehose-send");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stdout)
    );
    let report = String::from_utf8_lossy(&sent.stdout);
    assert!(report.contains("39 of 39 lines delivered"), "{report}");

    // Acknowledged after the work: the counts are there as soon as the 200 came back.
    let (_, body) = http_get(&admin, "/metrics");
    assert!(
        body.contains(r#"albwatch_lines_total{outcome="parsed"} 39"#),
        "{body}"
    );
    assert!(
        body.contains(r#"albwatch_firehose_requests_total{status="200"} 1"#),
        "{body}"
    );
    let counted: f64 = body
        .lines()
        .filter(|l| l.starts_with("alb_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted, 39.0);

    // A wrong key is refused and counts nothing.
    let refused = Command::new(BIN)
        .args(["firehose-send", "--max-retries", "0", "--url", &firehose])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/causes.log"
        ))
        .env("ALBWATCH_FIREHOSE_ACCESS_KEY", "wrong-key")
        .output()
        .expect("runs firehose-send");
    assert!(!refused.status.success());
    let (_, body) = http_get(&admin, "/metrics");
    assert!(
        body.contains(r#"albwatch_firehose_requests_total{status="403"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"albwatch_lines_total{outcome="parsed"} 39"#),
        "{body}"
    );
}
