//! `albwatch replay s3://BUCKET/PREFIX --from … --to …` against moto's S3 (installed by
//! `scripts/install-test-deps.sh` into `target/test-deps/moto`, started per test on a free
//! loopback port; a missing install fails the tests, it never skips them). The bucket holds an
//! hour of the generator's traffic with its scripted incidents, cut into 5-minute gzip'd
//! objects per load balancer under the keys Elastic Load Balancing writes, with objects just
//! outside the range, in another date folder and under another prefix around them. A period
//! ending exactly at `--from` counts as overlapping (both ends of a period are included). The same
//! objects in a local directory, replayed as files in the order the S3 replay promises
//! (period, then key), must give the identical summary, the identical alert transitions and
//! the identical `--report` (but for the command it names) — for the whole hour and for a
//! range that keeps only some of the objects.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

#[path = "support/cli.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod cli;
use cli::{BIN, albwatch};

#[path = "support/scratch.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod scratch;
use scratch::TempDir;

#[path = "support/moto.rs"]
#[allow(dead_code, reason = "shared with tests/s3_input.rs")]
mod moto;
use moto::{Lb, MY_LB, Moto, civil, count_lines, elb_key, epoch_us, gzip};

const BUCKET: &str = "alb-archive";
const PREFIX: &str = "prod-logs/";
const PERIOD_US: i64 = 300_000_000;

/// One 5-minute object of one load balancer.
struct Object {
    /// The end of its period (in its name), microseconds since the epoch.
    period_end_us: i64,
    /// Its key below the bucket's prefix (`AWSLogs/…`).
    key: String,
    /// Plain lines.
    lines: Vec<u8>,
}

impl Object {
    fn file_name(&self) -> &str {
        self.key.rsplit('/').next().expect("a key")
    }
}

/// `albwatch generate` from `start` for `seconds` (the demo's traffic with its incident
/// script), cut by each line's time into 5-minute objects per load balancer, in period then
/// key order.
fn generated_objects(start: &str, seconds: u32) -> Vec<Object> {
    let out = albwatch(&[
        "generate",
        "--seconds",
        &seconds.to_string(),
        "--start",
        start,
    ]);
    let mut by_period: BTreeMap<(i64, String), Object> = BTreeMap::new();
    for line in out.stdout.split_inclusive(|b| *b == b'\n') {
        let text = std::str::from_utf8(line).expect("UTF-8 line");
        let mut fields = text.split(' ');
        let (_, time, lb) = (fields.next(), fields.next(), fields.next());
        let time_us = epoch_us(time.expect("a time field"));
        let mut parts = lb.expect("a load balancer field").split('/');
        let (_, name, id) = (parts.next(), parts.next(), parts.next());
        let lb = Lb {
            name: name.expect("load balancer name"),
            id: id.expect("load balancer id"),
        };
        let period_end_us = time_us.div_euclid(PERIOD_US) * PERIOD_US + PERIOD_US;
        let random = format!(
            "{:08x}",
            (period_end_us / PERIOD_US) as u32 ^ name_hash(lb.name)
        );
        let key = elb_key(&lb, period_end_us, "10.0.0.7", &random);
        by_period
            .entry((period_end_us, key.clone()))
            .or_insert_with(|| Object {
                period_end_us,
                key,
                lines: Vec::new(),
            })
            .lines
            .extend_from_slice(line);
    }
    by_period.into_values().collect()
}

fn name_hash(name: &str) -> u32 {
    name.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    })
}

/// The summary `replay` prints, without what differs run to run: the elapsed time and the
/// rate on its first line (`replayed N lines in 2.49 s (30520 lines/s): …`).
fn summary(stdout: &[u8]) -> String {
    let text = String::from_utf8(stdout.to_vec()).expect("UTF-8 summary");
    text.lines()
        .map(|l| match (l.split_once(" in "), l.split_once("/s): ")) {
            (Some((head, _)), Some((_, tail))) if l.starts_with("replayed ") => {
                format!("{head}: {tail}")
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The number of lines the summary says were replayed.
fn replayed_lines(summary: &str) -> usize {
    summary
        .strip_prefix("replayed ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line count in {summary}"))
}

/// `albwatch replay` with `args`, `--alerts-out` into `dir/{name}.jsonl` and `--report` into
/// `dir/{name}.html`, in moto's AWS environment: (normalised summary, alert transitions, the
/// report without the section naming its command).
fn replay(moto: &Moto, dir: &Path, name: &str, args: &[&str]) -> (String, String, String) {
    let alerts = dir.join(format!("{name}.jsonl"));
    let report = dir.join(format!("{name}.html"));
    let mut cmd = Command::new(BIN);
    cmd.args(["replay", "--no-progress", "--alerts-out"])
        .arg(&alerts)
        .arg("--report")
        .arg(&report)
        .args(args);
    moto.aws_env(&mut cmd);
    let out = cmd.output().expect("runs albwatch replay");
    assert!(
        out.status.success(),
        "albwatch replay {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let transitions = std::fs::read_to_string(&alerts).expect("the alerts file");
    let report = std::fs::read_to_string(&report).expect("the report");
    let command = report
        .find("<section id=\"command\">")
        .expect("the report names its command");
    (
        summary(&out.stdout),
        transitions,
        report[..command].to_owned(),
    )
}

/// The objects as local files, in the order given, replayed with `albwatch replay FILE…`.
fn replay_files(
    moto: &Moto,
    dir: &Path,
    name: &str,
    objects: &[&Object],
) -> (String, String, String) {
    let files: Vec<String> = objects
        .iter()
        .map(|o| {
            dir.join("objects")
                .join(o.file_name())
                .display()
                .to_string()
        })
        .collect();
    let args: Vec<&str> = files.iter().map(String::as_str).collect();
    replay(moto, dir, name, &args)
}

/// Whether `replay s3://… --from --to` reads the object: its period, taken as
/// `[end − 5 min, end]` with both ends included (AWS says a file ending 23:40 holds the requests
/// "between 23:35 and 23:40" without saying which end is open), overlaps `[from, to)`.
fn selected(o: &Object, from_us: i64, to_us: i64) -> bool {
    o.period_end_us >= from_us && o.period_end_us - PERIOD_US < to_us
}

#[test]
fn elb_keys_follow_the_layout() {
    let end = epoch_us("2026-12-06T10:05:00Z");
    assert_eq!(
        elb_key(&MY_LB, end, "10.0.0.1", "abcd1234"),
        "AWSLogs/123456789012/elasticloadbalancing/us-east-1/2026/12/06/123456789012_\
         elasticloadbalancing_us-east-1_app.my-lb.50dc6c495c0c9188_20261206T1005Z_10.0.0.1_\
         abcd1234.log.gz"
    );
    assert_eq!(
        civil(epoch_us("2024-02-29T23:59:00Z")),
        (2024, 2, 29, 23, 59)
    );
    assert_eq!(epoch_us("1970-01-01T00:00:01Z"), 1_000_000);
}

/// An hour with its incidents from S3 gives what the same objects give as local files: the
/// same summary (counts, codes, targets, causes, every alert transition) and the same
/// `--alerts-out`, with no line late; objects whose period lies outside the range, in another
/// date folder or outside the prefix are not read; and a range of 15 minutes reads only the
/// four periods it overlaps, again exactly as those files do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_from_s3_replays_like_the_same_objects_as_files() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    let dir = TempDir::new("s3-replay", "hour");
    std::fs::create_dir_all(dir.0.join("objects")).expect("objects dir");

    // 09:50 to 11:05: the periods ending 09:55 and 11:05 lie outside 10:00..11:00; the one
    // ending 10:00 touches it, so it is read (see `selected`).
    let objects = generated_objects("2026-12-06T09:50:00Z", 75 * 60);
    let (from, to) = (
        epoch_us("2026-12-06T10:00:00Z"),
        epoch_us("2026-12-06T11:00:00Z"),
    );
    let hour: Vec<&Object> = objects.iter().filter(|o| selected(o, from, to)).collect();
    assert_eq!(
        hour.len(),
        26,
        "13 periods of 2 load balancers: {:?}",
        hour.iter().map(|o| o.file_name()).collect::<Vec<_>>()
    );
    assert_eq!(
        objects.len(),
        30,
        "and one period outside each side of the hour"
    );
    for o in &objects {
        let bytes = gzip(&o.lines);
        std::fs::write(dir.0.join("objects").join(o.file_name()), &bytes).expect("object file");
        moto.put_log_object(BUCKET, &format!("{PREFIX}{}", o.key), bytes)
            .await;
    }
    // In the range, but not where the replay looks: another prefix, and the day before's
    // folder (a key dated in the range there would be a mislabelled object, never listed).
    let stray = gzip(&hour[3].lines);
    moto.put_log_object(
        BUCKET,
        &format!("staging-logs/{}", hour[3].key),
        stray.clone(),
    )
    .await;
    let day_before = hour[5].key.replace("/2026/12/06/", "/2026/12/05/");
    moto.put_log_object(BUCKET, &format!("{PREFIX}{day_before}"), stray)
        .await;

    let url = format!("s3://{BUCKET}/{PREFIX}");
    let (s3_summary, s3_alerts, s3_report) = replay(
        &moto,
        &dir.0,
        "s3-hour",
        &[
            &url,
            "--from",
            "2026-12-06T10:00:00Z",
            "--to",
            "2026-12-06T11:00:00Z",
        ],
    );
    let (file_summary, file_alerts, file_report) = replay_files(&moto, &dir.0, "files-hour", &hour);
    let hour_lines: usize = hour.iter().map(|o| count_lines(&o.lines)).sum();
    assert_eq!(replayed_lines(&file_summary), hour_lines, "{file_summary}");
    let first = file_summary.lines().next().unwrap_or_default();
    assert!(first.ends_with(", 0 late"), "no line late: {first}");
    assert!(
        file_alerts.lines().count() >= 2,
        "the hour's incidents raise alerts:\n{file_summary}"
    );
    assert_eq!(s3_summary, file_summary, "summaries of S3 and of files");
    assert_eq!(s3_alerts, file_alerts, "--alerts-out of S3 and of files");
    assert!(
        s3_report == file_report,
        "--report of S3 and of files differ"
    );

    // 10:12:30..10:27:30 overlaps the periods ending 10:15, 10:20, 10:25 and 10:30.
    let (from, to) = (
        epoch_us("2026-12-06T10:12:30Z"),
        epoch_us("2026-12-06T10:27:30Z"),
    );
    let quarter: Vec<&Object> = objects.iter().filter(|o| selected(o, from, to)).collect();
    assert_eq!(quarter.len(), 8);
    let (s3_summary, s3_alerts, s3_report) = replay(
        &moto,
        &dir.0,
        "s3-quarter",
        &[
            &url,
            "--from",
            "2026-12-06T10:12:30Z",
            "--to",
            "2026-12-06T10:27:30Z",
        ],
    );
    let (file_summary, file_alerts, file_report) =
        replay_files(&moto, &dir.0, "files-quarter", &quarter);
    let quarter_lines: usize = quarter.iter().map(|o| count_lines(&o.lines)).sum();
    assert!(quarter_lines < hour_lines);
    assert_eq!(replayed_lines(&s3_summary), quarter_lines, "{s3_summary}");
    assert_eq!(s3_summary, file_summary, "summaries of S3 and of files");
    assert_eq!(s3_alerts, file_alerts, "--alerts-out of S3 and of files");
    assert!(
        s3_report == file_report,
        "--report of S3 and of files differ"
    );
}
