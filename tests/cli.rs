//! End-to-end tests of the real `albwatch` binary: `albwatch parse` writes exactly one output
//! line per input line, in order, with Athena column names and the cause from
//! `causes.expected`; it reads plain, gzip (detected by content, multi-member too) and stdin
//! alike; bad or over-long lines become `{"error":…,"line":n}` without stopping the run; an
//! unreadable input is named on stderr and exits 1; bad flags exit 2; the idle-timeout flags
//! change the 504 verdict; `--format text` explains each cause; and a reader that closes the
//! pipe early ends the run quietly with status 0.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{self, Command, Stdio};
use std::thread;

use albwatch::parse::schema;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_albwatch");
const CAUSES_LOG: &str = include_str!("fixtures/causes.log");
const CAUSES_EXPECTED: &str = include_str!("fixtures/causes.expected");
const AWS_EXAMPLES: &str = include_str!("fixtures/aws_examples.log");

/// The NLB access-log example from the AWS documentation.
const NLB_LINE: &str = "tls 2.0 2018-12-20T02:59:40 net/my-network-loadbalancer/c6e77e28c25b2234 g3d4b5e8bb8464cd 72.21.218.154:51341 172.100.100.185:443 5 2 98 246 - arn:aws:acm:us-east-2:671290407336:certificate/2a108f19-aded-46b0-8493-c63eb1ef4a99 - ECDHE-RSA-AES128-SHA tlsv12 - my-network-loadbalancer-c6e77e28c25b2234.elb.us-east-2.amazonaws.com - - - 2018-12-20T02:59:30";

/// The Classic Load Balancer access-log example from the AWS documentation.
const CLASSIC_ELB_LINE: &str = "2015-05-13T23:39:43.945958Z my-loadbalancer 192.168.131.39:2817 10.0.0.1:80 0.000073 0.001048 0.000057 200 200 0 29 \"GET http://www.example.com:80/ HTTP/1.1\" \"curl/7.38.0\" - -";

/// The ELB of every line in causes.log.
const SHOP_ELB: &str = "app/shop-prod/50dc6c495c0c9188";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// What one run of the binary produced.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from_output(output: process::Output) -> Self {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).expect("stdout is always UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Every stdout line parsed as JSON; panics naming the first line that is not.
    fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("output line {} is not JSON ({e}): {line}", i + 1))
            })
            .collect()
    }

    fn causes(&self) -> Vec<String> {
        self.json()
            .iter()
            .map(|v| v["cause"].as_str().expect("cause is a string").to_string())
            .collect()
    }

    fn assert_clean_success(&self) {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        assert!(self.stderr.is_empty(), "unexpected stderr: {}", self.stderr);
    }
}

/// `albwatch parse FLAGS... FILES...` as arguments.
fn parse_args(flags: &[&str], files: &[&Path]) -> Vec<OsString> {
    let mut args = vec![OsString::from("parse")];
    args.extend(flags.iter().map(OsString::from));
    args.extend(files.iter().map(|f| f.as_os_str().to_owned()));
    args
}

/// Runs `albwatch` with `args` and no stdin.
fn run<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("albwatch runs");
    Run::from_output(output)
}

/// Runs `albwatch` with `args`, feeding `input` on stdin from another thread so a full stdout
/// pipe cannot deadlock the test.
fn run_with_stdin<I, S>(args: I, input: &[u8]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("albwatch starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().expect("albwatch finishes");
    writer
        .join()
        .expect("stdin writer does not panic")
        .expect("albwatch reads all of stdin");
    Run::from_output(output)
}

/// A file under the system temp dir, unique to this process and test, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn path_for(test: &str, suffix: &str) -> PathBuf {
        std::env::temp_dir().join(format!("albwatch-cli-{}-{test}{suffix}", process::id()))
    }

    fn new(test: &str, suffix: &str, contents: &[u8]) -> Self {
        let path = Self::path_for(test, suffix);
        fs::write(&path, contents).expect("temp file is writable");
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("compressing into a Vec");
    encoder.finish().expect("finishing into a Vec")
}

fn expected_causes() -> Vec<&'static str> {
    CAUSES_EXPECTED.lines().collect()
}

fn causes_line(index: usize) -> &'static str {
    CAUSES_LOG
        .lines()
        .nth(index)
        .expect("causes.log has the line")
}

/// A minimal 12-field ALB line (a 503 with no target) of exactly `len` bytes, padded in the
/// load balancer's name.
fn short_line(len: usize) -> String {
    let make = |pad: usize| {
        format!(
            "http 2026-11-24T10:00:00.000000Z app/{}/1 192.0.2.1:1234 - -1 -1 -1 503 - 0 0",
            "p".repeat(pad)
        )
    };
    let base = make(0).len();
    assert!(len >= base, "a 12-field line needs at least {base} bytes");
    let line = make(len - base);
    assert_eq!(line.len(), len);
    line
}

#[test]
fn causes_fixture_gives_one_athena_json_object_per_line_with_the_expected_cause() {
    let out = run(parse_args(&[], &[&fixture("causes.log")]));
    out.assert_clean_success();
    let input: Vec<&str> = CAUSES_LOG.lines().collect();
    let expected = expected_causes();
    assert_eq!(input.len(), expected.len(), "fixtures disagree");
    assert_eq!(
        out.lines().len(),
        input.len(),
        "one output line per input line"
    );

    let objects = out.json();
    for (i, (v, line)) in objects.iter().zip(&input).enumerate() {
        let n = i + 1;
        assert_eq!(v["cause"], expected[i], "cause of line {n}: {line}");
        // Same order as the input: each object's time is its own line's second field.
        assert_eq!(
            v["time"].as_str(),
            line.split(' ').nth(1),
            "line {n} out of order"
        );
        // Every line of the fixture has all the documented fields.
        for key in schema::FIELDS.iter().flat_map(|f| f.columns) {
            assert!(v.get(key).is_some(), "line {n} lacks Athena column {key}");
        }
        assert_eq!(v["elb"], SHOP_ELB, "line {n}");
        assert!(v["elb_status_code"].is_u64(), "line {n}: {v}");
        assert!(v["client_port"].is_u64(), "line {n}: {v}");
        assert!(v["received_bytes"].is_u64(), "line {n}: {v}");
        assert!(v["sent_bytes"].is_u64(), "line {n}: {v}");
        assert!(
            v["target_status_code"].is_u64() || v["target_status_code"].is_null(),
            "line {n}: {v}"
        );
        assert!(
            v["actions_executed"].is_array() || v["actions_executed"].is_null(),
            "line {n}: {v}"
        );
        for key in [
            "request_processing_time",
            "target_processing_time",
            "response_processing_time",
        ] {
            let t = v[key].as_f64().expect("processing times are numbers");
            assert!(t == -1.0 || t >= 0.0, "line {n}: {key} = {t}");
        }
    }

    // Line 1: a plain success through a target.
    let ok = &objects[0];
    assert_eq!(ok["type"], "https");
    assert_eq!(ok["client_ip"], "203.0.113.7");
    assert_eq!(ok["client_port"], 41822);
    assert_eq!(ok["target_ip"], "10.0.1.17");
    assert_eq!(ok["target_port"], 8080);
    assert_eq!(ok["request_processing_time"], 0.001);
    assert_eq!(ok["elb_status_code"], 200);
    assert_eq!(ok["target_status_code"], 200);
    assert_eq!(ok["request_verb"], "GET");
    assert_eq!(
        ok["request_url"],
        "https://shop.example.com:443/api/cart?id=42"
    );
    assert_eq!(ok["request_proto"], "HTTP/1.1");
    assert_eq!(ok["matched_rule_priority"], 10);
    assert_eq!(ok["actions_executed"], json!(["forward"]));
    assert_eq!(ok["redirect_url"], Value::Null);
    assert_eq!(ok["ip_address"], "10.0.0.12");

    // Line 5: a fixed response, never dispatched: -1 stays -1 (an integer), `-` is null.
    let fixed = &objects[4];
    assert!(causes_line(4).contains(" - -1 -1 -1 404 - "));
    for key in [
        "request_processing_time",
        "target_processing_time",
        "response_processing_time",
    ] {
        assert_eq!(fixed[key].as_i64(), Some(-1), "{key}: {fixed}");
    }
    assert_eq!(fixed["target_ip"], Value::Null);
    assert_eq!(fixed["target_port"], Value::Null);
    assert_eq!(fixed["target_status_code"], Value::Null);
    assert_eq!(fixed["elb_status_code"], 404);
    assert_eq!(fixed["actions_executed"], json!(["fixed-response"]));

    // Line 4: an HTTP/2 stream reset has status 000, which is the integer 0.
    assert_eq!(objects[3]["elb_status_code"], 0);
}

#[test]
fn aws_examples_omit_fields_the_line_does_not_have() {
    let out = run(parse_args(&[], &[&fixture("aws_examples.log")]));
    out.assert_clean_success();
    let objects = out.json();
    assert_eq!(objects.len(), AWS_EXAMPLES.lines().count());
    let (older, newest) = objects.split_at(objects.len() - 1);
    for (i, v) in older.iter().enumerate() {
        // 33 fields: everything through request_transform_status, then nothing.
        assert!(
            v.get("request_transform_status").is_some(),
            "line {}",
            i + 1
        );
        for key in ["ip_address", "target_error_code", "elb_error_code"] {
            assert!(v.get(key).is_none(), "line {} has {key}: {v}", i + 1);
        }
        assert_eq!(v.as_object().map(|o| o.len()), Some(38), "line {}", i + 1);
    }
    // The 36-field line observed in the wild: a malformed request with ip_address.
    let v = &newest[0];
    assert_eq!(v["ip_address"], "100.51.96.60");
    assert_eq!(v["target_error_code"], Value::Null);
    assert_eq!(v["elb_error_code"], Value::Null);
    assert_eq!(v["request_verb"], Value::Null);
    assert_eq!(v["request_processing_time"], -1);
    assert_eq!(v["cause"], "malformed_request");
    assert_eq!(v.as_object().map(|o| o.len()), Some(41));
}

/// Regression (issue: `-` as elb_status_code): a line whose load balancer sent no status is an
/// entry, not `bad_status`: `null` in JSON, `-` in text.
#[test]
fn a_dash_elb_status_code_is_parsed() {
    let file = fixture("regressions/elb-status-code-dash.log");
    let out = run(parse_args(&[], &[&file]));
    out.assert_clean_success();
    let objects = out.json();
    assert_eq!(objects.len(), 1, "{}", out.stdout);
    let v = &objects[0];
    assert_eq!(v["elb_status_code"], Value::Null, "{v}");
    assert_eq!(v["target_status_code"], Value::Null, "{v}");
    assert_eq!(v["target_port"], 8080);
    assert_eq!(v["cause"], "lb_unknown");

    let out = run(parse_args(&["--format", "text"], &[&file]));
    out.assert_clean_success();
    assert!(
        out.stdout
            .starts_with("line 1: 2026-09-23T07:20:11.482913Z - from load balancer "),
        "{}",
        out.stdout
    );
}

#[test]
fn gzip_is_detected_by_content_including_multi_member_files() {
    let plain = run(parse_args(&[], &[&fixture("causes.log")]));
    plain.assert_clean_success();
    assert_eq!(plain.causes(), expected_causes());

    let compressed = gzip(CAUSES_LOG.as_bytes());
    let gz = TempFile::new("gzip", ".log.gz", &compressed);
    let misnamed = TempFile::new("gzip", "-misnamed.log", &compressed);
    // And the other way round: plain text under a .gz name is read as plain text.
    let plain_as_gz = TempFile::new("gzip", "-plain.log.gz", CAUSES_LOG.as_bytes());

    // Several members, split mid-line, with an empty member in between (as `cat a.gz b.gz`).
    let bytes = CAUSES_LOG.as_bytes();
    let split = CAUSES_LOG
        .match_indices('\n')
        .nth(9)
        .map(|(at, _)| at + 40)
        .expect("causes.log has more than ten lines");
    let mut members = gzip(&bytes[..split]);
    members.extend(gzip(b""));
    members.extend(gzip(&bytes[split..]));
    let multi = TempFile::new("gzip", "-multi.log.gz", &members);

    for file in [&gz, &misnamed, &plain_as_gz, &multi] {
        let out = run(parse_args(&[], &[file.path()]));
        out.assert_clean_success();
        assert_eq!(
            out.stdout,
            plain.stdout,
            "{} differs from the plain run",
            file.path().display()
        );
    }

    // Gzip on stdin is detected too.
    let out = run_with_stdin(["parse"], &compressed);
    out.assert_clean_success();
    assert_eq!(out.stdout, plain.stdout, "gzip on stdin");
}

#[test]
fn truncated_gzip_prints_what_it_decoded_and_exits_1() {
    let compressed = gzip(CAUSES_LOG.as_bytes());
    let truncated = TempFile::new(
        "truncated_gzip",
        ".log.gz",
        &compressed[..compressed.len() / 2],
    );
    let out = run(parse_args(&[], &[truncated.path()]));
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    let name = truncated.path().display().to_string();
    assert!(
        out.stderr.contains(&name),
        "stderr does not name {name}: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    // Whatever was decoded before the cut is a prefix of the full output.
    let causes = out.causes();
    assert!(causes.len() < expected_causes().len());
    assert_eq!(causes, expected_causes()[..causes.len()]);
}

#[test]
fn stdin_is_read_without_files_and_for_dash() {
    let plain = run(parse_args(&[], &[&fixture("causes.log")]));
    plain.assert_clean_success();

    let implicit = run_with_stdin(["parse"], CAUSES_LOG.as_bytes());
    implicit.assert_clean_success();
    assert_eq!(implicit.stdout, plain.stdout, "no FILE reads stdin");

    let dash = run_with_stdin(["parse", "-"], CAUSES_LOG.as_bytes());
    dash.assert_clean_success();
    assert_eq!(dash.stdout, plain.stdout, "`-` reads stdin");

    // `-` among files is read in its place.
    let mixed = run_with_stdin(
        parse_args(&[], &[&fixture("causes.log"), Path::new("-")]),
        AWS_EXAMPLES.as_bytes(),
    );
    mixed.assert_clean_success();
    let causes = mixed.causes();
    let expected = expected_causes();
    assert_eq!(causes.len(), expected.len() + AWS_EXAMPLES.lines().count());
    assert_eq!(causes[..expected.len()], expected);
    assert_eq!(causes.last().map(String::as_str), Some("malformed_request"));
}

#[test]
fn bad_lines_become_numbered_errors_and_never_stop_the_run() {
    let good = causes_line(0);
    let good_4xx = causes_line(1);
    let eleven_fields: Vec<&str> = good.split(' ').take(11).collect();
    let mut input: Vec<u8> = Vec::new();
    let mut push = |line: &[u8]| {
        input.extend_from_slice(line);
        input.push(b'\n');
    };
    push(b"garbage"); // 1
    push(b""); // 2
    push(NLB_LINE.as_bytes()); // 3
    push(b"\xff\xfe\x80 \xc3 not utf-8 at all"); // 4
    push(good.replacen("Mozilla", "Moz\u{1}illa", 1).as_bytes()); // 5: a control character
    push(good.as_bytes()); // 6
    push(b"https \"unterminated quote"); // 7
    push(eleven_fields.join(" ").as_bytes()); // 8
    push(CLASSIC_ELB_LINE.as_bytes()); // 9
    push(good.replacen(" 200 200 ", " 2x0 200 ", 1).as_bytes()); // 10
    let mut bad_utf8 = good.as_bytes().to_vec();
    let at = good.find("Mozilla").expect("fixture has a user agent") + 3;
    bad_utf8.splice(at..at, [0xff, 0xc3]);
    push(&bad_utf8); // 11: invalid UTF-8 inside the user agent
    push(format!("{good_4xx}\r").as_bytes()); // 12: CRLF line ending
    input.extend_from_slice(good.as_bytes()); // 13: last line without a newline

    let file = TempFile::new("bad_lines", ".log", &input);
    let out = run(parse_args(&[], &[file.path()]));
    out.assert_clean_success();
    let lines = out.lines();
    assert_eq!(
        lines.len(),
        13,
        "one output line per input line:\n{}",
        out.stdout
    );

    for (n, kind) in [
        (1, "too_few_fields"),
        (2, "empty"),
        (3, "not_alb"),
        (4, "too_few_fields"),
        (7, "unterminated_quote"),
        (8, "too_few_fields"),
        (9, "not_alb"),
        (10, "bad_status"),
    ] {
        assert_eq!(
            lines[n - 1],
            format!(r#"{{"error":"{kind}","line":{n}}}"#),
            "line {n}"
        );
    }
    let objects = out.json();
    for (n, cause) in [
        (5, "target_ok"),
        (6, "target_ok"),
        (11, "target_ok"),
        (12, "target_4xx"),
        (13, "target_ok"),
    ] {
        assert_eq!(objects[n - 1]["cause"], cause, "line {n}: {}", lines[n - 1]);
        assert!(objects[n - 1].get("error").is_none(), "line {n}");
    }
    assert!(
        objects[4]["user_agent"]
            .as_str()
            .expect("user agent")
            .contains("Moz\u{1}illa"),
        "control characters survive as JSON escapes"
    );
    assert!(
        objects[10]["user_agent"]
            .as_str()
            .expect("user agent")
            .starts_with("Moz\u{FFFD}"),
        "invalid UTF-8 becomes U+FFFD: {}",
        objects[10]["user_agent"]
    );
    // The `\r` of a CRLF line is not glued onto the last field.
    assert_eq!(objects[11]["elb_error_code"], Value::Null);
}

#[test]
fn over_long_lines_are_reported_and_the_next_lines_still_parse() {
    let exactly = short_line(100);
    let one_over = short_line(101);
    let huge = "x".repeat(1 << 20);
    let input = [
        exactly.as_str(),
        one_over.as_str(),
        causes_line(0),
        short_line(80).as_str(),
        huge.as_str(),
        exactly.as_str(),
    ]
    .join("\n");
    let file = TempFile::new("max_line_bytes", ".log", input.as_bytes());

    let out = run(parse_args(&["--max-line-bytes", "100"], &[file.path()]));
    out.assert_clean_success();
    let lines = out.lines();
    assert_eq!(lines.len(), 6, "{}", out.stdout);
    for n in [2, 3, 5] {
        assert_eq!(
            lines[n - 1],
            format!(r#"{{"error":"line_too_long","line":{n}}}"#)
        );
    }
    let objects = out.json();
    for n in [1, 4, 6] {
        assert_eq!(objects[n - 1]["cause"], "no_registered_targets", "line {n}");
    }

    // The text format says how long the skipped line was.
    let text = run(parse_args(
        &["--format", "text", "--max-line-bytes", "100"],
        &[file.path()],
    ));
    text.assert_clean_success();
    assert!(
        text.lines()[1].starts_with("line 2: skipped, 101 bytes"),
        "{}",
        text.stdout
    );

    // The default limit (64 KiB) applies without the flag.
    let out = run(parse_args(&[], &[file.path()]));
    out.assert_clean_success();
    let lines = out.lines();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[4], r#"{"error":"line_too_long","line":5}"#);
    assert_eq!(out.json()[2]["cause"], "target_ok");
}

#[test]
fn a_missing_file_is_named_on_stderr_the_others_are_read_and_the_exit_code_is_1() {
    let missing = TempFile::path_for("missing_file", "-does-not-exist.log");
    assert!(!missing.exists(), "{} exists", missing.display());
    let out = run(parse_args(
        &[],
        &[
            &fixture("causes.log"),
            &missing,
            &fixture("aws_examples.log"),
        ],
    ));
    assert_eq!(out.code, Some(1), "stderr: {}", out.stderr);
    let name = missing.display().to_string();
    assert!(out.stderr.contains(&name), "stderr: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "stderr: {}", out.stderr);
    let causes = out.causes();
    let expected = expected_causes();
    assert_eq!(causes.len(), expected.len() + AWS_EXAMPLES.lines().count());
    assert_eq!(causes[..expected.len()], expected);
    assert_eq!(causes.last().map(String::as_str), Some("malformed_request"));
}

#[test]
fn text_format_explains_each_line() {
    let out = run(parse_args(&["--format", "text"], &[&fixture("causes.log")]));
    out.assert_clean_success();
    let lines = out.lines();
    let expected = expected_causes();
    assert_eq!(lines.len(), expected.len());
    for (i, (line, cause)) in lines.iter().zip(&expected).enumerate() {
        assert!(line.starts_with(&format!("line {}: ", i + 1)), "{line}");
        assert!(line.contains(&format!("=> {cause}: ")), "{line}");
        assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
    }
}

#[test]
fn idle_timeout_flags_decide_which_504s_are_target_too_slow() {
    // The target_timeout_other fixture, made to take 30.000456 s instead of 3.5 s.
    let original = causes_line(34);
    assert_eq!(expected_causes()[34], "target_timeout_other");
    let line = original.replacen(
        " 2026-11-24T10:03:54.623000Z ",
        " 2026-11-24T10:03:28.123000Z ",
        1,
    );
    assert_ne!(line, original, "fixture line 35 changed: {original}");
    let input = format!("{line}\n");
    let cause = |args: &[&str]| {
        let out = run_with_stdin(args, input.as_bytes());
        out.assert_clean_success();
        let causes = out.causes();
        assert_eq!(causes.len(), 1, "{}", out.stdout);
        causes[0].clone()
    };
    let shop_30 = format!("{SHOP_ELB}=30");
    let shop_60 = format!("{SHOP_ELB}=60");

    assert_eq!(cause(&["parse"]), "target_timeout_other");
    assert_eq!(cause(&["parse", "--idle-timeout", "30"]), "target_too_slow");
    assert_eq!(
        cause(&["parse", "--lb-idle-timeout", &shop_30]),
        "target_too_slow"
    );
    // An override only applies to its own load balancer, and beats the default.
    assert_eq!(
        cause(&[
            "parse",
            "--lb-idle-timeout",
            "app/other/0123456789abcdef=30"
        ]),
        "target_timeout_other"
    );
    assert_eq!(
        cause(&[
            "parse",
            "--idle-timeout",
            "30",
            "--lb-idle-timeout",
            &shop_60
        ]),
        "target_timeout_other"
    );

    for bad in [
        &["parse", "--idle-timeout", "0"][..],
        &["parse", "--idle-timeout", "4001"],
        &["parse", "--idle-timeout", "soon"],
        &["parse", "--lb-idle-timeout", "nonsense"],
        &["parse", "--lb-idle-timeout", "=30"],
        &["parse", "--lb-idle-timeout", "app/x/1=0"],
        &["parse", "--lb-idle-timeout", "app/x/1=forever"],
        &["parse", "--format", "xml"],
        &["parse", "--max-line-bytes", "-1"],
        &["frobnicate"],
    ] {
        let out = run(bad);
        assert_eq!(out.code, Some(2), "{bad:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{bad:?}: {}", out.stdout);
        assert!(!out.stderr.trim().is_empty(), "{bad:?} explains nothing");
        assert!(!out.stderr.contains("panicked"), "{bad:?}: {}", out.stderr);
    }
    let out = run(["parse", "--lb-idle-timeout", "nonsense"]);
    assert!(out.stderr.contains("--lb-idle-timeout"), "{}", out.stderr);
    assert!(out.stderr.contains("ELB=SECS"), "{}", out.stderr);
    let out = run(["parse", "--idle-timeout", "0"]);
    assert!(out.stderr.contains("--idle-timeout"), "{}", out.stderr);
}

#[test]
fn help_exits_0_and_documents_the_flags() {
    // Top-level help lists the sub-commands; the flags belong to `parse`.
    let top = run(["--help"]);
    top.assert_clean_success();
    assert!(top.stdout.contains("parse"), "{}", top.stdout);

    for args in [&["parse", "--help"][..], &["help", "parse"]] {
        let out = run(args);
        out.assert_clean_success();
        for flag in [
            "--format",
            "--idle-timeout",
            "--lb-idle-timeout",
            "--max-line-bytes",
        ] {
            assert!(out.stdout.contains(flag), "{args:?} lacks {flag}");
        }
    }
}

#[test]
fn closing_stdout_early_ends_the_run_quietly() {
    // ~200k lines: far more output than the pipe and the binary's buffers can hold.
    let copies = 200_000 / CAUSES_LOG.lines().count() + 1;
    let big = TempFile::new("closed_stdout", ".log", b"");
    let mut writer = BufWriter::new(
        fs::OpenOptions::new()
            .append(true)
            .open(big.path())
            .expect("temp file opens"),
    );
    for _ in 0..copies {
        writer
            .write_all(CAUSES_LOG.as_bytes())
            .expect("temp file is writable");
    }
    writer.flush().expect("temp file is writable");
    drop(writer);
    let mut child = Command::new(BIN)
        .args(parse_args(&[], &[big.path()]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("albwatch starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("reads the first line");
    let v: Value = serde_json::from_str(&first).expect("first line is JSON");
    assert_eq!(v["cause"], "target_ok");
    drop(stdout);

    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut stderr)
        .expect("stderr is UTF-8");
    let status = child.wait().expect("albwatch exits");
    assert!(stderr.is_empty(), "stderr after closed stdout: {stderr}");
    assert_eq!(status.code(), Some(0), "status {status}");
}

/// Regression: `matched_rule_priority` `007` was copied into the JSON as a bare number, which
/// is not valid JSON; it must come out as a string.
#[test]
fn every_output_line_is_json_even_for_odd_rule_priorities() {
    let line = causes_line(0).replacen("\" 10 2026-", "\" 007 2026-", 1);
    assert_ne!(line, causes_line(0));
    let out = run_with_stdin(["parse"], format!("{line}\n").as_bytes());
    out.assert_clean_success();
    assert_eq!(out.json().len(), 1);
}
