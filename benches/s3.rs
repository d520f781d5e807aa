//! S3 throughput on the emulator, in one run on the same data: moto's server (started here, as
//! the S3 tests do) holds a bucket of ALB access-log objects under the keys Elastic Load
//! Balancing writes — 24 gzip'd objects of consecutive 5-minute periods of steady generated
//! traffic (`traffic::Traffic::steady`, realistic lines of ~700 bytes, each object's lines
//! inside the period its key names) — and a queue holding the bucket's `s3:ObjectCreated`
//! notifications for them. Then, with the release binary:
//! (a) `albwatch replay` of the same gzip'd objects as local files (in key order), the pipeline
//! without the network; (b) `albwatch replay s3://BUCKET/ --from --to` over the objects'
//! periods; (c) the S3 input, `albwatch run --s3-queue-url` (`wait_time_secs = 1`), timed from
//! spawn until `albwatch_s3_lines_total` on its /metrics (polled every 20 ms) shows every line;
//! and (d) the emulator's own speed: a bare SDK loop that GetObjects every object, 8 at a time
//! like the input's default, and discards the bytes. (a)–(c) include the process's start-up.
//! It prints lines, seconds, lines/s (for (d) the lines of the objects it fetched) and each
//! path's ratio to (a). `cargo bench --bench s3`; `ALBWATCH_BENCH_LINES` (default 500000) sets
//! the data's size, `ALBWATCH_BENCH_ROUNDS` (default 3) how many rounds of (a)–(d) run (best of
//! each kept). Without `--bench` (e.g. `cargo test --benches`) it runs one tiny round of three
//! objects as a smoke test. moto comes from `scripts/install-test-deps.sh`.

#[path = "support/knobs.rs"]
mod knobs;

#[path = "../tests/support/cli.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod cli;
#[path = "../tests/support/http.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod http;
#[path = "../tests/support/moto.rs"]
#[allow(dead_code, reason = "shared with the S3 tests")]
mod moto;

use knobs::env_number;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use albwatch::traffic::Traffic;
use cli::{BIN, announced, lines_of};
use http::http_get;
use moto::{MY_LB, Moto, civil, elb_key, epoch_us, gzip};

const BUCKET: &str = "bench-logs";
const QUEUE: &str = "bench-notifications";
/// Where the objects' periods start; the last one ends `objects` × 5 minutes later.
const START: &str = "2026-12-06T10:00:00Z";
/// Five minutes in microseconds: the period of one ELB log object.
const PERIOD_US: i64 = 300_000_000;
/// GetObjects at once in (d): the S3 input's default `max_objects_in_flight`, and replay's
/// default `--parallel`.
const PARALLEL: usize = 8;
/// The longest any one path may take before the bench gives up on it.
const LIMIT: Duration = Duration::from_secs(600);

/// One log object: its key, its gzip'd bytes and the lines in them.
struct Object {
    key: String,
    bytes: Vec<u8>,
    lines: u64,
    /// Bytes of lines, before gzip.
    plain: usize,
}

/// `count` objects of consecutive 5-minute periods from [`START`], about `lines` lines in all:
/// steady traffic at the rate that spreads `lines` over the periods, each object the lines of
/// its period (node 10.0.0.{i % 3 + 1}, as one load balancer's nodes take turns).
fn objects(lines: usize, count: usize) -> Vec<Object> {
    let start = epoch_us(START);
    let per_sec = (lines as u64).div_ceil(count as u64 * 300).max(1);
    let mut traffic = Traffic::steady(7, start, u32::try_from(per_sec).expect("a rate"));
    (0..count)
        .map(|i| {
            let end = start + (i as i64 + 1) * PERIOD_US;
            let mut body = Vec::with_capacity(per_sec as usize * 300 * 720);
            let lines = traffic.generate_until(end, &mut body) as u64;
            let key = elb_key(
                &MY_LB,
                end,
                &format!("10.0.0.{}", i % 3 + 1),
                &format!("{:08x}", 0xbe4c_0000 + i),
            );
            Object {
                key,
                bytes: gzip(&body),
                lines,
                plain: body.len(),
            }
        })
        .collect()
}

/// `--from`/`--to` of a time, as `YYYY-MM-DDTHH:MM:00Z`.
fn rfc3339(us: i64) -> String {
    let (y, mo, d, h, mi) = civil(us);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:00Z")
}

/// What one path read and how long it took.
#[derive(Clone, Copy)]
struct Pass {
    lines: u64,
    took: Duration,
}

/// Runs `albwatch replay --no-progress ARGS` to its end (pointed at moto when `moto` is given)
/// and checks that its summary counted `lines` lines.
fn replay(args: &[String], moto: Option<&Moto>, lines: u64) -> Pass {
    let mut cmd = Command::new(BIN);
    cmd.args(["replay", "--no-progress"])
        .args(args)
        .stdin(Stdio::null());
    if let Some(moto) = moto {
        moto.aws_env(&mut cmd);
    }
    let started = Instant::now();
    let out = cmd.output().expect("albwatch replay runs");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "albwatch replay {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // "replayed N lines in S s (…)"
    let replayed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("replayed "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no summary in the output of albwatch replay:\n{stdout}"));
    assert_eq!(replayed, lines, "albwatch replay {args:?} read every line");
    Pass {
        lines: replayed,
        took,
    }
}

/// The value of the unlabelled sample `name` in an exposition, or 0 when absent.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// (c) `albwatch run --s3-queue-url` on the pre-filled queue, from spawn until its /metrics
/// shows every line of the objects read; then SIGTERM.
async fn s3_input(moto: &Moto, queue: &str, config: &Path, lines: u64) -> Pass {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--admin-addr", "127.0.0.1:0", "--config"])
        .arg(config)
        .args(["--s3-queue-url", queue])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    moto.aws_env(&mut cmd);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("albwatch run starts");
    let stderr = lines_of(child.stderr.take().expect("stderr"));
    let (admin, _) = announced(&stderr, false);
    // Keep the log for a failure message, and the pipe drained.
    let log = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in stderr {
            keep.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
        }
    });
    let log_text = || {
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    };
    let mut counted = 0;
    while counted < lines {
        if let Ok((200, body)) = http_get(&admin, "/metrics") {
            counted = sample(&body, "albwatch_s3_lines_total");
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "albwatch run exited ({status}) early; stderr:\n{}",
                log_text()
            );
        }
        assert!(
            started.elapsed() < LIMIT,
            "albwatch run counted {counted} of {lines} lines in {LIMIT:?}; stderr:\n{}",
            log_text()
        );
        if counted < lines {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let took = started.elapsed();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(counted, lines, "albwatch run counted every line once");
    Pass {
        lines: counted,
        took,
    }
}

/// (d) GetObject of every object, [`PARALLEL`] at a time, bytes read to the end and dropped.
/// Its lines are those of the objects fetched: what the emulator serves at most, in lines/s.
async fn bare_get(s3: &aws_sdk_s3::Client, objects: &[Object]) -> Pass {
    let keys: Arc<Vec<(String, usize)>> = Arc::new(
        objects
            .iter()
            .map(|o| (o.key.clone(), o.bytes.len()))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PARALLEL {
        let (s3, keys, next) = (s3.clone(), Arc::clone(&keys), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((key, size)) = keys.get(i) else {
                    return;
                };
                let body = s3
                    .get_object()
                    .bucket(BUCKET)
                    .key(key)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("get {key}: {e:?}"))
                    .body
                    .collect()
                    .await
                    .unwrap_or_else(|e| panic!("read {key}: {e:?}"))
                    .into_bytes();
                assert_eq!(body.len(), *size, "{key} whole");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("GetObject task");
    }
    Pass {
        lines: objects.iter().map(|o| o.lines).sum(),
        took: started.elapsed(),
    }
}

/// Puts every object into the notifying bucket, then waits until the queue holds a message
/// for each.
async fn put_all(moto: &Moto, queue: &str, objects: &[Object]) {
    let before = moto.queue_counts(queue).await.0;
    for o in objects {
        moto.put_log_object(BUCKET, &o.key, o.bytes.clone()).await;
    }
    let want = before + objects.len() as u64;
    moto.wait_queue(queue, "a message per object", LIMIT, |visible, _| {
        visible >= want
    })
    .await;
}

fn rate(p: &Pass) -> f64 {
    p.lines as f64 / p.took.as_secs_f64()
}

fn keep_best(best: &mut Option<Pass>, p: Pass) {
    if best.is_none_or(|b| p.took < b.took) {
        *best = Some(p);
    }
}

async fn bench(lines: usize, count: usize, rounds: usize) {
    let dir = std::env::temp_dir().join(format!("albwatch-s3-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");

    let objects = objects(lines, count);
    let total: u64 = objects.iter().map(|o| o.lines).sum();
    let stored: usize = objects.iter().map(|o| o.bytes.len()).sum();
    let plain: usize = objects.iter().map(|o| o.plain).sum();

    // (a)'s files: the objects under their keys' file names, in key order.
    let mut files: Vec<PathBuf> = Vec::new();
    for o in &objects {
        let name = o.key.rsplit('/').next().expect("a file name");
        let path = dir.join(name);
        std::fs::write(&path, &o.bytes).expect("write an object file");
        files.push(path);
    }
    files.sort();
    let file_args: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();

    let moto = Moto::start();
    let (queue, _dlq) = moto.create_queue_with_dlq(QUEUE, 60, 5).await;
    moto.create_bucket_notifying(BUCKET, &queue).await;
    let filling = Instant::now();
    put_all(&moto, &queue, &objects).await;
    let s3 = moto.s3().await;
    let start = epoch_us(START);
    let s3_args: Vec<String> = vec![
        format!("s3://{BUCKET}/"),
        "--from".into(),
        rfc3339(start),
        "--to".into(),
        rfc3339(start + count as i64 * PERIOD_US),
    ];
    let config = dir.join("albwatch.toml");
    std::fs::write(
        &config,
        "[s3]\nwait_time_secs = 1\nvisibility_timeout_secs = 60\n",
    )
    .expect("config");
    println!(
        "s3 bench: {count} gzip'd objects of 5-minute periods, {total} lines, {:.1} MB stored \
         ({:.1} MB of lines); put into moto in {:.1} s",
        stored as f64 / 1e6,
        plain as f64 / 1e6,
        filling.elapsed().as_secs_f64()
    );

    let mut best: [Option<Pass>; 4] = [None; 4];
    for round in 0..rounds {
        if round > 0 {
            // Fresh notifications for (c): the last round's were all deleted.
            moto.sqs()
                .await
                .purge_queue()
                .queue_url(&queue)
                .send()
                .await
                .expect("purge the queue");
            put_all(&moto, &queue, &objects).await;
        }
        let a = replay(&file_args, None, total);
        let b = replay(&s3_args, Some(&moto), total);
        let c = s3_input(&moto, &queue, &config, total).await;
        let d = bare_get(&s3, &objects).await;
        println!(
            "  round {}: (a) {:.2} s, (b) {:.2} s, (c) {:.2} s, (d) {:.2} s",
            round + 1,
            a.took.as_secs_f64(),
            b.took.as_secs_f64(),
            c.took.as_secs_f64(),
            d.took.as_secs_f64()
        );
        for (slot, p) in best.iter_mut().zip([a, b, c, d]) {
            keep_best(slot, p);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let [Some(a), Some(b), Some(c), Some(d)] = best else {
        return;
    };
    println!(
        "{:<46} {:>9} {:>8} {:>10} {:>7}",
        "path", "lines", "seconds", "lines/s", "vs (a)"
    );
    for (name, p) in [
        ("(a) replay, local gzip'd files", a),
        ("(b) replay s3:// (moto)", b),
        ("(c) run --s3-queue-url (moto)", c),
        ("(d) bare GetObject ×8, bytes dropped (moto)", d),
    ] {
        println!(
            "{name:<46} {:>9} {:>8.2} {:>10.0} {:>7.2}",
            p.lines,
            p.took.as_secs_f64(),
            rate(&p),
            rate(&p) / rate(&a)
        );
    }
    println!("best of {rounds}");
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (lines, count, rounds) = if full {
        (
            env_number("ALBWATCH_BENCH_LINES", 500_000),
            24,
            env_number("ALBWATCH_BENCH_ROUNDS", 3).max(1),
        )
    } else {
        (1_800, 3, 1)
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench(lines, count, rounds));
}
