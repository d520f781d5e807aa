//! One event-time engine, checked through the real binary: the same incident log gives the
//! same alert transitions — labels, annotations, `startsAt`, `endsAt` — through `replay`,
//! through `albwatch run` reading the files, and through `albwatch run`'s Firehose endpoint
//! fed by the real sender with lines tens of minutes old, with one worker or two. The log
//! rewritten in S3 delivery order (one file per load-balancer node and 5 minutes, the nodes'
//! files of a period one after the other, so times jump back 5 minutes at every file) gives
//! the alerts of the time-ordered log, with no line late, whether the files are concatenated
//! or listed in delivery order. A line stamped decades ahead neither moves the watermark nor
//! changes an alert, and is counted.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/http.rs"]
#[allow(
    dead_code,
    reason = "shared by several test binaries; this one only GETs"
)]
mod http;
use http::http_get;

#[path = "support/scratch.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod scratch;
use scratch::TempDir;

#[path = "support/cli.rs"]
mod cli;
use cli::{BIN, announced, lines_of};

const MINUTE_US: i64 = 60_000_000;

/// Five of the demo's scripted incidents.
const SECONDS: u32 = 1_500;
const RATE: u32 = 20;

fn now_us() -> i64 {
    albwatch::clock::wall_clock_us()
}

/// `albwatch generate` output from `start_us` on.
fn generate(path: &Path, start_us: i64) {
    let start = albwatch::alert::text::rfc3339_ms(start_us - start_us % 1_000_000);
    let log = cli::albwatch(&[
        "generate",
        "--seconds",
        &SECONDS.to_string(),
        "--rate",
        &RATE.to_string(),
        "--start",
        &start,
    ]);
    fs::write(path, log.stdout).expect("writes the log");
}

fn config(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).expect("writes the config");
    path
}

/// The alert transitions of an `--alerts-out` file, one JSON line each, as written.
fn transitions(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .expect("reads the alerts file")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Replays `files` and returns the transitions and the summary's count of late lines.
fn replay(dir: &TempDir, name: &str, cfg: &Path, files: &[PathBuf]) -> (Vec<String>, u64) {
    let alerts = dir.join(&format!("{name}.jsonl"));
    let mut args: Vec<String> = vec![
        "replay".into(),
        "--no-progress".into(),
        "--config".into(),
        cfg.display().to_string(),
        "--alerts-out".into(),
        alerts.display().to_string(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let summary = String::from_utf8_lossy(&cli::albwatch(&args).stdout).into_owned();
    let late = summary
        .lines()
        .next()
        .and_then(|l| l.strip_suffix(" late"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no late count in the summary:\n{summary}"));
    (transitions(&alerts), late)
}

/// `albwatch run` as a user starts it, stopped with SIGTERM.
struct Daemon {
    child: Child,
    admin: String,
    firehose: Option<String>,
}

impl Daemon {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = Command::new(BIN)
            .arg("run")
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts albwatch run");
        let stderr = lines_of(child.stderr.take().expect("stderr"));
        let (admin, firehose) = announced(&stderr, args.contains(&"--firehose-addr"));
        // Keep draining stderr so the daemon never blocks on a full pipe.
        std::thread::spawn(move || while stderr.recv().is_ok() {});
        Daemon {
            child,
            admin,
            firehose,
        }
    }

    /// Polls `/metrics` until `sample` (a whole line) appears.
    fn wait_for_sample(&self, sample: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok((200, body)) = http_get(&self.admin, "/metrics")
                && body.lines().any(|l| l == sample)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics never showed {sample}:\n{:?}",
                http_get(&self.admin, "/metrics")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("waits") {
                assert!(status.success(), "albwatch run exited {status}");
                return;
            }
            assert!(Instant::now() < deadline, "albwatch run ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The firing transitions' causes, in order: what the test's log must show.
fn firing_causes(transitions: &[String]) -> Vec<String> {
    transitions
        .iter()
        .map(|t| serde_json::from_str::<serde_json::Value>(t).expect("JSON"))
        .filter(|t| t["status"] == "firing")
        .map(|t| t["labels"]["cause"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn run_over_files_and_firehose_gives_replay_s_alert_transitions() {
    let dir = TempDir::new("event-time", "same");
    let log = dir.join("alb.log");
    // Lines from 40 to 15 minutes ago: the Firehose endpoint gets them well behind time.
    generate(&log, now_us() - 40 * MINUTE_US);
    let one_worker = config(&dir, "one.toml", "[pipeline]\nworkers = 1\n");
    let two_workers = config(
        &dir,
        "two.toml",
        "[pipeline]\nworkers = 2\nbatch_bytes = 65536\n[event_time]\nidle_timeout_secs = 2\n",
    );

    let (expected, late) = replay(&dir, "replay", &one_worker, std::slice::from_ref(&log));
    assert_eq!(late, 0);
    assert!(
        firing_causes(&expected).len() >= 5,
        "the log's incidents: {expected:#?}"
    );
    let (again, _) = replay(&dir, "replay2", &two_workers, std::slice::from_ref(&log));
    assert_eq!(again, expected, "replay with two workers and small batches");

    // `run` over the file: it finishes, so the end of the data is evaluated as in replay.
    let run_alerts = dir.join("run.jsonl");
    let daemon = Daemon::start(
        &[
            "--config",
            two_workers.to_str().expect("utf-8 path"),
            "--alerts-out",
            run_alerts.to_str().expect("utf-8 path"),
            log.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    daemon.wait_for_sample(r#"albwatch_partitions{input="files",state="finished"} 1"#);
    daemon.stop();
    assert_eq!(transitions(&run_alerts), expected, "run FILE");

    // The Firehose endpoint, fed by the real sender four requests at a time (out of order
    // within a few hundred seconds, inside the bound); once the source is idle its data is
    // evaluated to the end.
    let firehose_alerts = dir.join("firehose.jsonl");
    let daemon = Daemon::start(
        &[
            "--config",
            two_workers.to_str().expect("utf-8 path"),
            "--alerts-out",
            firehose_alerts.to_str().expect("utf-8 path"),
            "--firehose-addr",
            "127.0.0.1:0",
        ],
        &[("ALBWATCH_FIREHOSE_ACCESS_KEY", "test-key")],
    );
    let url = daemon.firehose.clone().expect("Firehose endpoint");
    let sent = Command::new(BIN)
        .args([
            "firehose-send",
            "--url",
            &url,
            "--request-bytes",
            "1000000",
            "--concurrency",
            "4",
        ])
        .arg(&log)
        .env("ALBWATCH_FIREHOSE_ACCESS_KEY", "test-key")
        .output()
        .expect("runs firehose-send");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stdout)
    );
    daemon.wait_for_sample(r#"albwatch_partitions{input="firehose",state="idle"} 1"#);
    daemon.wait_for_sample("albwatch_late_entries_total 0");
    daemon.stop();
    assert_eq!(
        transitions(&firehose_alerts),
        expected,
        "run --firehose-addr"
    );
}

/// One S3 access-log object: a load-balancer node's lines of one 5-minute period.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Object {
    period: i64,
    node: u8,
    elb: String,
}

/// Cuts a time-ordered log into S3 objects (two nodes per load balancer; a client's
/// connections stay on one node) and returns them in delivery order: period by period, and
/// within a period node after node, so every object starts 5 minutes before the last ended.
fn s3_objects(log: &str) -> Vec<(Object, String)> {
    let mut objects: BTreeMap<Object, String> = BTreeMap::new();
    for line in log.lines() {
        let tokens: Vec<&str> = line.splitn(5, ' ').collect();
        let time = albwatch::parse::timestamp_us(tokens[1].as_bytes()).expect("a time");
        let client = tokens[3].split(':').next().unwrap_or_default();
        let node = client.bytes().map(u32::from).sum::<u32>() % 2;
        let object = Object {
            period: time.div_euclid(5 * MINUTE_US),
            node: node as u8,
            elb: tokens[2].to_owned(),
        };
        let text = objects.entry(object).or_default();
        text.push_str(line);
        text.push('\n');
    }
    objects.into_iter().collect()
}

#[test]
fn s3_delivery_order_gives_the_time_ordered_alerts_with_nothing_late() {
    let dir = TempDir::new("event-time", "s3");
    let ordered = dir.join("ordered.log");
    generate(&ordered, now_us() - 120 * MINUTE_US);
    let text = fs::read_to_string(&ordered).expect("reads the log");
    let objects = s3_objects(&text);
    assert!(objects.len() > 20, "{} objects", objects.len());
    let mut files = Vec::new();
    let mut delivered = String::new();
    for (n, (o, lines)) in objects.iter().enumerate() {
        let name = format!(
            "{n:03}_{}_{}_{}.log",
            o.elb.replace('/', "."),
            o.period * 300,
            o.node
        );
        let path = dir.join(&name);
        fs::write(&path, lines).expect("writes an object");
        files.push(path);
        delivered.push_str(lines);
    }
    let concatenated = dir.join("delivered.log");
    fs::write(&concatenated, &delivered).expect("writes the delivery order");
    let cfg = config(&dir, "default.toml", "");

    let (expected, late) = replay(&dir, "ordered", &cfg, &[ordered]);
    assert_eq!(late, 0);
    assert!(firing_causes(&expected).len() >= 5, "{expected:#?}");
    let (as_one, late) = replay(&dir, "concatenated", &cfg, &[concatenated]);
    assert_eq!(
        (as_one, late),
        (expected.clone(), 0),
        "one file in delivery order"
    );
    let (as_many, late) = replay(&dir, "objects", &cfg, &files);
    assert_eq!(
        (as_many, late),
        (expected.clone(), 0),
        "objects in delivery order"
    );

    let run_alerts = dir.join("run.jsonl");
    let mut args = vec![
        "--config".to_string(),
        cfg.display().to_string(),
        "--alerts-out".to_string(),
        run_alerts.display().to_string(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&args, &[]);
    daemon.wait_for_sample(r#"albwatch_partitions{input="files",state="finished"} 1"#);
    daemon.wait_for_sample("albwatch_late_entries_total 0");
    daemon.stop();
    assert_eq!(transitions(&run_alerts), expected, "run over the objects");
}

#[test]
fn a_line_from_the_far_future_is_counted_and_moves_nothing() {
    let dir = TempDir::new("event-time", "future");
    let log = dir.join("alb.log");
    generate(&log, now_us() - 40 * MINUTE_US);
    let cfg = config(&dir, "default.toml", "");
    let (expected, _) = replay(&dir, "plain", &cfg, std::slice::from_ref(&log));

    // The same log with one line restamped to 2099 early on.
    let text = fs::read_to_string(&log).expect("reads the log");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut tokens: Vec<&str> = lines[100].split(' ').collect();
    tokens[1] = "2099-01-01T00:00:00.000000Z";
    lines[100] = tokens.join(" ");
    let skewed = dir.join("skewed.log");
    fs::write(&skewed, lines.join("\n") + "\n").expect("writes the log");
    let metrics = dir.join("metrics.txt");
    let alerts = dir.join("skewed.jsonl");
    cli::albwatch(&[
        "replay",
        "--no-progress",
        "--config",
        cfg.to_str().expect("utf-8 path"),
        "--alerts-out",
        alerts.to_str().expect("utf-8 path"),
        "--metrics-out",
        metrics.to_str().expect("utf-8 path"),
        skewed.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(transitions(&alerts), expected);
    let exposition = fs::read_to_string(&metrics).expect("reads the metrics");
    assert!(
        exposition
            .lines()
            .any(|l| l == "albwatch_future_entries_total 1"),
        "{exposition}"
    );
    let newest = exposition
        .lines()
        .find_map(|l| l.strip_prefix("albwatch_max_event_timestamp_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the newest event time");
    assert!(newest * 1e6 < now_us() as f64, "{newest}");
}
