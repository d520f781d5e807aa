//! The S3 input as deployed: the real `albwatch run --s3-queue-url` reading ALB access-log
//! objects announced by S3 event notifications on an SQS queue, against moto's server (S3 and
//! SQS in one process, installed by `scripts/install-test-deps.sh` into
//! `target/test-deps/moto`, started per test on a free loopback port; a missing install fails
//! the tests, it never skips them). Objects are generated ALB traffic under the keys Elastic
//! Load Balancing writes, gzip'd or plain. What is checked is the at-least-once promise end to
//! end: every object counted line for line exactly once and its message deleted only then;
//! a SIGKILLed instance's object counted in full by the next one after the visibility timeout;
//! two instances on one queue never counting an object twice; corrupt and non-ALB objects left
//! for the redrive policy (they reach the dead-letter queue) without holding up the good ones;
//! and an object far larger than the memory bound streamed through without the daemon's peak
//! RSS growing by anything like the object's size.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[path = "support/daemon.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod daemon;
use daemon::{BIN, Daemon};

#[path = "support/exposition.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod exposition;
use exposition::{family_sum, sample};

#[path = "support/scratch.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod scratch;
use scratch::TempDir;

#[path = "support/moto.rs"]
#[allow(dead_code, reason = "shared with tests/s3_replay.rs")]
mod moto;
use moto::{MY_LB, Moto, alb_lines, count_lines, elb_key, epoch_us, gzip};

/// How long a test waits for the daemon to reach a state it must reach: far beyond what the
/// work takes, so only a hang or a lost message gets there.
const LIMIT: Duration = Duration::from_secs(60);

/// `[pipeline]` of most tests; one worker reads an object slowly.
const TWO_WORKERS: &str = "workers = 2\n";
const ONE_WORKER: &str = "workers = 1\n";

/// Five minutes in microseconds: the period of one ELB log object.
const PERIOD_US: i64 = 300_000_000;

/// `albwatch run --s3-queue-url QUEUE` pointed at moto through the standard AWS environment,
/// its config the `[pipeline]` and `[s3]` keys given; failure messages show its S3, SQS and
/// line samples.
fn start(moto: &Moto, dir: &TempDir, name: &str, queue: &str, s3: &str, pipeline: &str) -> Daemon {
    let config = dir.join(&format!("{name}.toml"));
    std::fs::write(&config, format!("[pipeline]\n{pipeline}\n[s3]\n{s3}")).expect("config");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--admin-addr", "127.0.0.1:0", "--config"])
        .arg(&config)
        .args(["--s3-queue-url", queue])
        .current_dir(dir.path());
    moto.aws_env(&mut cmd);
    Daemon::spawn(name, &mut cmd).showing(s3_lines_of)
}

/// Peak resident set size (`VmHWM` of `/proc/PID/status`) of `daemon`, in bytes.
fn peak_rss(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id()))
        .expect("/proc/PID/status of the daemon");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

fn objects(body: &str, outcome: &str) -> f64 {
    sample(
        body,
        &format!("albwatch_s3_objects_total{{outcome=\"{outcome}\"}}"),
    )
}

fn object_bytes(body: &str, outcome: &str) -> f64 {
    sample(
        body,
        &format!("albwatch_s3_object_bytes_total{{outcome=\"{outcome}\"}}"),
    )
}

fn messages(body: &str, outcome: &str) -> f64 {
    sample(
        body,
        &format!("albwatch_s3_messages_total{{outcome=\"{outcome}\"}}"),
    )
}

fn s3_lines(body: &str) -> f64 {
    sample(body, "albwatch_s3_lines_total")
}

fn lines_read(body: &str) -> f64 {
    family_sum(body, "albwatch_lines_total")
}

fn in_flight(body: &str) -> (f64, f64) {
    (
        sample(body, "albwatch_s3_objects_in_flight"),
        sample(body, "albwatch_s3_messages_in_flight"),
    )
}

/// The S3, SQS and line samples of an exposition: what a failure message needs.
fn s3_lines_of(body: &str) -> String {
    body.lines()
        .filter(|l| {
            !l.starts_with('#')
                && (l.starts_with("albwatch_s3_")
                    || l.starts_with("albwatch_sqs_")
                    || l.starts_with("albwatch_lines_total"))
                && !l.contains("_bucket{")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// An object to put: its key, its stored bytes and the lines in it.
struct Object {
    key: String,
    bytes: Vec<u8>,
    lines: usize,
}

/// Object `i` of a test: `lines` generated lines from 2026-12-06T10:00:00Z + i × 5 min, under
/// the ELB key of that period (node 10.0.0.{i % 3 + 1}), gzip'd when `gzipped`.
fn object(i: usize, lines: usize, gzipped: bool) -> Object {
    let start = epoch_us("2026-12-06T10:00:00Z") + i as i64 * PERIOD_US;
    let body = alb_lines(i as u64 + 1, start, lines);
    assert_eq!(count_lines(&body), lines);
    let key = elb_key(
        &MY_LB,
        start + PERIOD_US,
        &format!("10.0.0.{}", i % 3 + 1),
        &format!("{:08x}", 0x5eed_0000 + i),
    );
    let bytes = if gzipped { gzip(&body) } else { body };
    Object { key, bytes, lines }
}

/// Lines of the large object several tests read (~65 MiB plain, ~13 MiB gzip'd).
const BIG_LINES: usize = 100_000;

/// Object 0 with [`BIG_LINES`] lines, made once per test binary: generating and compressing
/// it takes seconds in a debug build.
fn big_object(gzipped: bool) -> Object {
    static PLAIN: OnceLock<Vec<u8>> = OnceLock::new();
    static GZIPPED: OnceLock<Vec<u8>> = OnceLock::new();
    let plain = PLAIN.get_or_init(|| object(0, BIG_LINES, false).bytes);
    let bytes = if gzipped {
        GZIPPED.get_or_init(|| gzip(plain)).clone()
    } else {
        plain.clone()
    };
    Object {
        key: object(0, 1, false).key,
        bytes,
        lines: BIG_LINES,
    }
}

/// Polls `daemon` until `done` holds with nothing in flight, then waits for `queue` to be
/// empty, and returns a scrape taken after that: once every message is deleted, every object
/// announced has been handled, so the counts are final.
async fn drained(
    daemon: &mut Daemon,
    moto: &Moto,
    queue: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let body = daemon
        .wait_metrics(what, LIMIT, |b| done(b) && in_flight(b) == (0.0, 0.0))
        .await;
    moto.wait_queue(queue, "every message deleted", LIMIT, |v, h| v + h == 0)
        .await;
    daemon.metrics().unwrap_or(body)
}

/// Polls `daemon` until it has handled S3's test event (sent when the bucket's notification
/// is set up) and has nothing in flight.
async fn test_event_handled(daemon: &mut Daemon) {
    daemon
        .wait_metrics("the test event handled", LIMIT, |b| {
            messages(b, "test_event") >= 1.0 && in_flight(b) == (0.0, 0.0)
        })
        .await;
}

/// Polls `daemon` until it is seen in the middle of an object (one in flight, lines read) or
/// has counted more than `counted_before` objects; returns that exposition.
async fn in_flight_or_counted(daemon: &mut Daemon, counted_before: f64) -> String {
    daemon
        .wait_metrics(
            "the object in flight with lines read, or counted",
            LIMIT,
            |b| {
                (sample(b, "albwatch_s3_objects_in_flight") == 1.0 && lines_read(b) > 0.0)
                    || objects(b, "counted") > counted_before
            },
        )
        .await
}

fn s3_config(visibility_secs: u32, extra: &str) -> String {
    format!("visibility_timeout_secs = {visibility_secs}\nwait_time_secs = 1\n{extra}")
}

/// Several objects, gzip'd and plain, and one key outside the ELB layout: each ELB object is
/// counted line for line exactly once, the other key is skipped (its ALB lines not read), the
/// test event recognised, and every message deleted — the queue ends empty. A notification
/// delivered again after its object was counted is a duplicate: deleted, no line read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_counted_line_for_line_once_and_their_messages_deleted() {
    let moto = Moto::start();
    let (queue, dlq) = moto.create_queue_with_dlq("counted", 5, 5).await;
    moto.create_bucket_notifying("alb-logs-counted", &queue)
        .await;
    let objects_put: Vec<Object> = (0..5)
        .map(|i| object(i, 700 + 311 * i, i % 2 == 0))
        .collect();
    for o in &objects_put {
        moto.put_log_object("alb-logs-counted", &o.key, o.bytes.clone())
            .await;
    }
    // ALB lines, but not where the load balancer writes: the default `elb` layout skips them.
    moto.put_log_object(
        "alb-logs-counted",
        "exports/my-lb/2026-12-06.log",
        alb_lines(99, epoch_us("2026-12-06T10:00:00Z"), 400),
    )
    .await;
    let lines: usize = objects_put.iter().map(|o| o.lines).sum();
    let stored: usize = objects_put.iter().map(|o| o.bytes.len()).sum();
    // A copy of the first object's notification, to deliver again once it is counted (SQS
    // delivers at least once). Peeked with visibility 0, so the queue is left as it was.
    let sqs = moto.sqs().await;
    let deadline = Instant::now() + LIMIT;
    let first_event = loop {
        let out = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .expect("peek at the queue");
        let found = out
            .messages()
            .iter()
            .filter_map(|m| m.body())
            .find(|b| keys_in(&[(*b).to_owned()]) == [objects_put[0].key.clone()]);
        if let Some(body) = found {
            break body.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no notification of the first object"
        );
    };

    let dir = TempDir::new("s3", "counted");
    let mut daemon = start(
        &moto,
        &dir,
        "albwatch",
        &queue,
        &s3_config(5, ""),
        TWO_WORKERS,
    );
    // Once the queue is empty every message's objects were counted: the counts are final.
    let body = drained(
        &mut daemon,
        &moto,
        &queue,
        "5 objects counted and 1 skipped",
        |b| objects(b, "counted") >= 5.0 && objects(b, "skipped_key") >= 1.0,
    )
    .await;
    let shown = s3_lines_of(&body);
    assert_eq!(objects(&body, "counted"), 5.0, "{shown}");
    assert_eq!(objects(&body, "skipped_key"), 1.0, "{shown}");
    for outcome in ["duplicate", "unreadable", "corrupt", "not_alb"] {
        assert_eq!(objects(&body, outcome), 0.0, "{outcome}\n{shown}");
    }
    assert_eq!(
        s3_lines(&body),
        lines as f64,
        "lines of counted objects\n{shown}"
    );
    assert_eq!(
        lines_read(&body),
        lines as f64,
        "every line read once, none of the skipped object's\n{shown}"
    );
    assert_eq!(
        object_bytes(&body, "counted"),
        stored as f64,
        "stored bytes of the counted objects\n{shown}"
    );
    assert_eq!(messages(&body, "test_event"), 1.0, "{shown}");
    assert!(messages(&body, "deleted") >= 6.0, "{shown}");
    for outcome in ["left", "invalid"] {
        assert_eq!(messages(&body, outcome), 0.0, "{outcome}\n{shown}");
    }
    assert!(
        sample(
            &body,
            "albwatch_sqs_requests_total{operation=\"delete_message\",outcome=\"ok\"}"
        ) >= 1.0,
        "{shown}"
    );
    assert!(
        sample(
            &body,
            "albwatch_sqs_requests_total{operation=\"receive_message\",outcome=\"ok\"}"
        ) >= 1.0,
        "{shown}"
    );
    assert!(
        sample(&body, "albwatch_s3_object_age_seconds_count") >= 5.0,
        "an age per counted object\n{shown}"
    );
    assert_eq!(
        moto.queue_counts(&dlq).await,
        (0, 0),
        "nothing dead-lettered"
    );

    // The same notification again: a duplicate, deleted without counting a line.
    sqs.send_message()
        .queue_url(&queue)
        .message_body(first_event)
        .send()
        .await
        .expect("send the notification again");
    daemon
        .wait_metrics("the redelivery recognised", LIMIT, |b| {
            objects(b, "duplicate") >= 1.0 && in_flight(b) == (0.0, 0.0)
        })
        .await;
    moto.wait_queue(&queue, "the redelivery deleted", LIMIT, |v, h| v + h == 0)
        .await;
    let body = daemon.metrics().expect("/metrics");
    let shown = s3_lines_of(&body);
    assert_eq!(objects(&body, "duplicate"), 1.0, "{shown}");
    assert_eq!(objects(&body, "counted"), 5.0, "{shown}");
    assert_eq!(s3_lines(&body), lines as f64, "{shown}");
    assert_eq!(
        lines_read(&body),
        lines as f64,
        "no line read twice\n{shown}"
    );
    let status = daemon.terminate(LIMIT);
    assert!(status.success(), "{status}");
}

/// `kill -9` while an instance reads a large object: its message was received but never
/// deleted, so after the visibility timeout the next instance receives it and counts the
/// object in full — exactly its lines, nothing lost, and the queue ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_killed_instance_leaves_its_object_to_the_next() {
    const VISIBILITY: u32 = 4;
    let moto = Moto::start();
    let (queue, dlq) = moto.create_queue_with_dlq("hardkill", VISIBILITY, 5).await;
    moto.create_bucket_notifying("alb-logs-hardkill", &queue)
        .await;
    let dir = TempDir::new("s3", "hardkill");
    // One worker, so reading the object takes a while.
    let config = s3_config(VISIBILITY, "max_messages = 1\n");
    let mut a = start(&moto, &dir, "a", &queue, &config, ONE_WORKER);
    test_event_handled(&mut a).await;
    moto.wait_queue(&queue, "the test event deleted", LIMIT, |v, h| v + h == 0)
        .await;

    // The object grows until instance A is caught in the middle of it (a fast machine may
    // finish a small one between two scrapes); each attempt is a new object.
    let mut killed_in = None;
    for (attempt, lines) in [BIG_LINES, 4 * BIG_LINES].into_iter().enumerate() {
        let o = if attempt == 0 {
            big_object(true)
        } else {
            object(attempt, lines, true)
        };
        let counted_before = objects(&a.metrics().unwrap_or_default(), "counted");
        moto.put_log_object("alb-logs-hardkill", &o.key, o.bytes.clone())
            .await;
        let body = in_flight_or_counted(&mut a, counted_before).await;
        if objects(&body, "counted") == counted_before {
            a.kill_hard();
            // Its message must still be in the queue (received, not deleted): otherwise A
            // finished between the scrape and the kill.
            let (visible, hidden) = moto.queue_counts(&queue).await;
            if visible + hidden == 1 {
                killed_in = Some((o, lines_read(&body)));
                break;
            }
            eprintln!("A finished the {lines}-line object between scrape and kill; retrying");
            a = start(&moto, &dir, "a", &queue, &config, ONE_WORKER);
        } else {
            eprintln!("A counted the {lines}-line object before it was seen in flight");
            moto.wait_queue(&queue, "the object's message deleted", LIMIT, |v, h| {
                v + h == 0
            })
            .await;
        }
    }
    let Some((o, read_by_a)) = killed_in else {
        panic!("instance A finished every object before it could be killed mid-object");
    };
    drop(a);
    eprintln!("A killed after reading {read_by_a} of {} lines", o.lines);

    let mut b = start(&moto, &dir, "b", &queue, &config, ONE_WORKER);
    let body = drained(
        &mut b,
        &moto,
        &queue,
        "the killed instance's object counted",
        |b| objects(b, "counted") >= 1.0,
    )
    .await;
    let shown = s3_lines_of(&body);
    assert_eq!(objects(&body, "counted"), 1.0, "{shown}");
    assert_eq!(s3_lines(&body), o.lines as f64, "{shown}");
    assert_eq!(lines_read(&body), o.lines as f64, "{shown}");
    assert_eq!(
        moto.queue_counts(&dlq).await,
        (0, 0),
        "nothing dead-lettered"
    );
    let status = b.terminate(LIMIT);
    assert!(status.success(), "{status}");
}

/// SIGTERM while an instance reads an object: it stops, exits 0 and hands the message back
/// at once (visibility 0), so with a visibility timeout of 300 s — far beyond this test's
/// waits — the next instance still gets the object straight away and counts all its lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_hands_its_message_back_at_once() {
    const VISIBILITY: u32 = 300;
    let moto = Moto::start();
    let (queue, dlq) = moto.create_queue_with_dlq("stopped", VISIBILITY, 5).await;
    moto.create_bucket_notifying("alb-logs-stopped", &queue)
        .await;
    let dir = TempDir::new("s3", "stopped");
    let config = s3_config(VISIBILITY, "max_messages = 1\n");
    let mut a = start(&moto, &dir, "a", &queue, &config, ONE_WORKER);
    test_event_handled(&mut a).await;
    let o = big_object(true);
    moto.put_log_object("alb-logs-stopped", &o.key, o.bytes.clone())
        .await;
    let body = in_flight_or_counted(&mut a, 0.0).await;
    assert_eq!(
        objects(&body, "counted"),
        0.0,
        "A counted the {}-line object before it was seen in flight: make it bigger",
        o.lines
    );
    let status = a.terminate(LIMIT);
    assert!(status.success(), "A exits 0 on SIGTERM: {status}");
    moto.wait_queue(&queue, "the message visible again", LIMIT, |v, h| {
        (v, h) == (1, 0)
    })
    .await;

    let mut b = start(&moto, &dir, "b", &queue, &config, ONE_WORKER);
    let body = drained(
        &mut b,
        &moto,
        &queue,
        "the stopped instance's object counted",
        |b| objects(b, "counted") >= 1.0,
    )
    .await;
    let shown = s3_lines_of(&body);
    assert_eq!(objects(&body, "counted"), 1.0, "{shown}");
    assert_eq!(s3_lines(&body), o.lines as f64, "{shown}");
    assert_eq!(
        moto.queue_counts(&dlq).await,
        (0, 0),
        "nothing dead-lettered"
    );
    let status = b.terminate(LIMIT);
    assert!(status.success(), "{status}");
}

/// Two instances on one queue: 20 objects, each counted by exactly one of them, the lines
/// of both adding up to exactly the lines put, and every message deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_queue_and_count_each_object_once() {
    let moto = Moto::start();
    let (queue, dlq) = moto.create_queue_with_dlq("shared", 5, 5).await;
    moto.create_bucket_notifying("alb-logs-shared", &queue)
        .await;
    let dir = TempDir::new("s3", "shared");
    let config = s3_config(5, "max_messages = 2\n");
    let mut a = start(&moto, &dir, "a", &queue, &config, TWO_WORKERS);
    let mut b = start(&moto, &dir, "b", &queue, &config, TWO_WORKERS);
    let objects_put: Vec<Object> = (0..20)
        .map(|i| object(i, 1500 + 97 * i, i % 3 != 0))
        .collect();
    for o in &objects_put {
        moto.put_log_object("alb-logs-shared", &o.key, o.bytes.clone())
            .await;
    }
    let lines: usize = objects_put.iter().map(|o| o.lines).sum();
    moto.wait_queue(&queue, "every message deleted", LIMIT, |v, h| v + h == 0)
        .await;
    let body_a = a
        .wait_metrics("nothing in flight", LIMIT, |b| in_flight(b) == (0.0, 0.0))
        .await;
    let body_b = b
        .wait_metrics("nothing in flight", LIMIT, |b| in_flight(b) == (0.0, 0.0))
        .await;
    let shown = format!("A:\n{}\nB:\n{}", s3_lines_of(&body_a), s3_lines_of(&body_b));
    let both = |f: fn(&str) -> f64| f(&body_a) + f(&body_b);
    assert_eq!(
        objects(&body_a, "counted") + objects(&body_b, "counted"),
        20.0,
        "{shown}"
    );
    assert_eq!(both(s3_lines), lines as f64, "{shown}");
    assert_eq!(both(lines_read), lines as f64, "{shown}");
    assert_eq!(
        messages(&body_a, "test_event") + messages(&body_b, "test_event"),
        1.0,
        "{shown}"
    );
    eprintln!(
        "A counted {} objects, B {}",
        objects(&body_a, "counted"),
        objects(&body_b, "counted")
    );
    assert_eq!(
        moto.queue_counts(&dlq).await,
        (0, 0),
        "nothing dead-lettered"
    );
    for d in [a, b] {
        let status = d.terminate(LIMIT);
        assert!(status.success(), "{status}");
    }
}

/// The keys named by the S3 event records in SQS message bodies (URL-decoded, as S3 sends
/// them form-encoded).
fn keys_in(bodies: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = bodies
        .iter()
        .flat_map(|body| {
            let v: serde_json::Value = serde_json::from_str(body).expect("JSON message body");
            v["Records"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|r| form_decode(r["s3"]["object"]["key"].as_str().expect("key")))
        })
        .collect();
    keys.sort();
    keys
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("percent escape"));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).expect("UTF-8 key")
}

/// A corrupt gzip object, an object of other text under an ELB key and an object deleted
/// after its event, among good ones: the good ones are counted in full, the bad ones counted
/// as `corrupt`, `not_alb` and `unreadable` and their messages never deleted, so the redrive
/// policy (2 receives) moves exactly those three to the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_non_alb_and_missing_objects_go_to_the_dead_letter_queue() {
    let moto = Moto::start();
    let (queue, dlq) = moto.create_queue_with_dlq("bad", 2, 2).await;
    moto.create_bucket_notifying("alb-logs-bad", &queue).await;
    let good: Vec<Object> = (0..3).map(|i| object(i, 900 + 50 * i, i != 1)).collect();
    let mut corrupt = object(3, 10, true);
    // The gzip magic and header, then garbage.
    corrupt.bytes = [0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff]
        .into_iter()
        .chain((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8))
        .collect();
    let mut other = object(4, 10, true);
    other.bytes = gzip(
        &"2026-12-06 10:03:12,114 INFO  [main] app.Server - request served in 12 ms\n"
            .repeat(300)
            .into_bytes(),
    );
    // Announced, then gone before anyone reads it: GetObject fails (NoSuchKey).
    let gone = object(5, 10, true);
    for o in good.iter().chain([&corrupt, &other, &gone]) {
        moto.put_log_object("alb-logs-bad", &o.key, o.bytes.clone())
            .await;
    }
    moto.s3()
        .await
        .delete_object()
        .bucket("alb-logs-bad")
        .key(&gone.key)
        .send()
        .await
        .expect("delete an object");
    let lines: usize = good.iter().map(|o| o.lines).sum();

    let dir = TempDir::new("s3", "bad");
    let mut daemon = start(
        &moto,
        &dir,
        "albwatch",
        &queue,
        &s3_config(2, ""),
        TWO_WORKERS,
    );
    moto.wait_queue(&dlq, "the three bad objects' messages", LIMIT, |v, h| {
        v + h >= 3
    })
    .await;
    let body = drained(
        &mut daemon,
        &moto,
        &queue,
        "the good objects counted",
        |b| objects(b, "counted") >= 3.0,
    )
    .await;
    let shown = s3_lines_of(&body);
    assert_eq!(objects(&body, "counted"), 3.0, "{shown}");
    assert_eq!(s3_lines(&body), lines as f64, "{shown}");
    assert!(objects(&body, "corrupt") >= 1.0, "{shown}");
    assert!(objects(&body, "not_alb") >= 1.0, "{shown}");
    assert!(objects(&body, "unreadable") >= 1.0, "{shown}");
    assert!(messages(&body, "left") >= 3.0, "{shown}");
    assert_eq!(objects(&body, "duplicate"), 0.0, "{shown}");

    let sqs = moto.sqs().await;
    let mut bodies = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while bodies.len() < 3 && Instant::now() < deadline {
        let out = sqs
            .receive_message()
            .queue_url(&dlq)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await
            .expect("receive from the dead-letter queue");
        bodies.extend(
            out.messages()
                .iter()
                .filter_map(|m| m.body().map(str::to_owned)),
        );
    }
    let mut expected = vec![corrupt.key.clone(), other.key.clone(), gone.key.clone()];
    expected.sort();
    assert_eq!(keys_in(&bodies), expected, "dead-lettered: {bodies:?}");
    // Each failure is logged naming its object; the missing one is not blamed on a bucket
    // that exists.
    let log = daemon.stderr();
    let status = daemon.terminate(LIMIT);
    assert!(status.success(), "{status}");
    for key in [&corrupt.key, &other.key, &gone.key] {
        assert!(log.contains(key.as_str()), "no line names {key}:\n{log}");
    }
    let missing = log
        .lines()
        .find_map(|l| l.split_once(gone.key.as_str()).map(|(_, why)| why))
        .unwrap_or_default();
    assert!(
        !missing.contains("bucket"),
        "a missing object (NoSuchKey) is reported as a missing bucket: {missing}"
    );
}

/// An object of ~65 MiB, plain, with `max_bytes_in_flight` at 1 MiB: it streams through and
/// is counted in full, and the daemon's peak RSS grows by far less than the object (it never
/// holds the object whole) — a bound on memory, not on time. The pipeline's own queue is made
/// small too (4 batches of 256 KiB instead of 64 of 1 MiB): with the default a reader ahead of
/// slow workers may rightly queue 64 MiB of batches, which would hide an object held whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_larger_than_the_memory_bound_streams_through() {
    let moto = Moto::start();
    let (queue, dlq) = moto.create_queue_with_dlq("large", 2, 5).await;
    moto.create_bucket_notifying("alb-logs-large", &queue).await;
    let dir = TempDir::new("s3", "large");
    // A 2 s visibility timeout, shorter than reading the object takes on a slow machine:
    // the message must be kept invisible meanwhile, or the object is counted twice.
    let config = s3_config(
        2,
        "max_bytes_in_flight = 1048576\nmax_objects_in_flight = 1\n",
    );
    let pipeline = "workers = 2\nqueue_batches = 4\nbatch_bytes = 262144\n";
    let mut daemon = start(&moto, &dir, "albwatch", &queue, &config, pipeline);
    test_event_handled(&mut daemon).await;
    let o = big_object(false);
    let size = o.bytes.len();
    assert!(size > 50 << 20, "the object is {size} bytes");
    let before = peak_rss(&daemon);
    moto.put_log_object("alb-logs-large", &o.key, o.bytes).await;
    let body = daemon
        .wait_metrics("the object counted", LIMIT, |b| {
            objects(b, "counted") >= 1.0 && in_flight(b) == (0.0, 0.0)
        })
        .await;
    let peak = peak_rss(&daemon);
    moto.wait_queue(&queue, "an empty queue", LIMIT, |v, h| v + h == 0)
        .await;
    let shown = s3_lines_of(&body);
    assert_eq!(s3_lines(&body), o.lines as f64, "{shown}");
    assert_eq!(lines_read(&body), o.lines as f64, "{shown}");
    assert_eq!(object_bytes(&body, "counted"), size as f64, "{shown}");
    assert_eq!(objects(&body, "duplicate"), 0.0, "{shown}");
    eprintln!(
        "peak RSS {} MiB before the {} MiB object, {} MiB after",
        before >> 20,
        size >> 20,
        peak >> 20
    );
    assert!(
        peak - before < size as u64 / 2,
        "peak RSS grew by {} MiB reading a {} MiB object with max_bytes_in_flight = 1 MiB and \
         a 1 MiB pipeline queue",
        (peak - before) >> 20,
        size >> 20
    );
    assert_eq!(
        moto.queue_counts(&dlq).await,
        (0, 0),
        "nothing dead-lettered"
    );
    let status = daemon.terminate(LIMIT);
    assert!(status.success(), "{status}");
}
