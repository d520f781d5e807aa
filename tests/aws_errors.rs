//! AWS problems as a new user meets them, through the real `albwatch run --kinesis-stream`:
//! no credentials, no region or an endpoint URL that is not one, an unknown stream (against
//! kinesalite), refused credentials and denied access (from a loopback server answering every
//! call with the error AWS sends) each stop start-up with exit 64 and one line saying what is
//! missing and how to provide it — before any port is bound. An endpoint that does not answer,
//! at start or after kinesalite is killed mid-run, keeps the daemon running and retrying, its
//! errors logged one line per kind per interval, never the SDK's debug structs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

#[path = "support/cli.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod cli;
use cli::{BIN, announced, lines_of};

#[path = "support/http.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod http;
use http::{free_port, http_get};

#[path = "support/kinesalite.rs"]
#[allow(dead_code, reason = "shared with tests/kinesis.rs and the benchmark")]
mod kinesalite;
use kinesalite::{Kinesalite, client, create_stream_with};

#[path = "support/scratch.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod scratch;
use scratch::TempDir;

/// The exit status of a configuration that cannot work.
const EXIT_BAD_CONFIG: i32 = 64;

/// Longest a start-up that must fail may take before the test gives up on it: far beyond the
/// SDK's own retries and the 5 s credentials timeout, so only a hang reaches it.
const START_UP_LIMIT: Duration = Duration::from_secs(120);

/// Static keys kinesalite accepts (it checks the signature's shape, not the key).
const KEYS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
    ("AWS_SECRET_ACCESS_KEY", "secret"),
];

/// The AWS environment of a deployment reading from `endpoint`: keys, region, endpoint URL.
fn deployed(endpoint: &str) -> [(&'static str, &str); 4] {
    let [key, secret] = KEYS;
    [
        key,
        secret,
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL_KINESIS", endpoint),
    ]
}

/// Kinesalite holding `stream` with `shards` shards.
async fn kinesalite_with(stream: &str, shards: i32) -> Kinesalite {
    let k = Kinesalite::start();
    create_stream_with(&client(&k.endpoint).await, stream, shards).await;
    k
}

impl TempDir {
    /// A config file with checkpoints inside this directory, plus `extra` `[kinesis]` keys.
    fn config(&self, extra: &str) -> PathBuf {
        let path = self.join("albwatch.toml");
        let checkpoints = self.join("checkpoints");
        std::fs::write(
            &path,
            format!(
                "[kinesis]\ncheckpoint_dir = {:?}\n{extra}",
                checkpoints.display().to_string()
            ),
        )
        .expect("config");
        path
    }
}

/// `albwatch run --kinesis-stream STREAM` with `config` added to the `[kinesis]` section, in an
/// environment holding only `env`: no AWS variables of the test's own, a home without `~/.aws`,
/// and the instance-metadata service at a closed loopback port — a laptop's situation, and on
/// an EC2 test host no role is found.
fn albwatch_run(dir: &TempDir, stream: &str, config: &str, env: &[(&str, &str)]) -> Command {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--admin-addr", "127.0.0.1:0", "--config"])
        .arg(dir.config(config))
        .args(["--kinesis-stream", stream])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to its end, waiting at most [`START_UP_LIMIT`].
fn run_to_exit(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("albwatch starts");
    let deadline = Instant::now() + START_UP_LIMIT;
    while child.try_wait().expect("waits").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "albwatch did not stop within {START_UP_LIMIT:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// The single stderr line of a start-up refused with exit 64; fails the test otherwise.
fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_BAD_CONFIG),
        "{}\n{stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, not {lines:#?}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = lines[0].to_string();
    assert_readable(&line);
    line
}

/// A line a person reads: no SDK struct dumps, bounded.
fn assert_readable(line: &str) {
    for debug in [
        "{",
        "DispatchFailure",
        "ConnectorError",
        "ServiceError",
        "Some(",
    ] {
        assert!(!line.contains(debug), "{debug:?} in {line}");
    }
    assert!(line.len() < 600, "{} bytes: {line}", line.len());
}

const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance or task role";
const NO_REGION: &str = "no AWS region: set AWS_REGION, or kinesis.region in the config file, or region in the AWS profile";

#[test]
fn no_credentials_no_region_or_a_bad_endpoint_stop_start_up_with_one_line() {
    let dir = TempDir::new("aws", "setup");
    let region = ("AWS_REGION", "us-east-1");
    let [key, secret] = KEYS;
    let cases = [
        (
            "nothing set",
            vec![],
            format!("albwatch: {NO_REGION}; {NO_CREDENTIALS}"),
        ),
        ("a region only", vec![region], format!("albwatch: {NO_CREDENTIALS}")),
        ("keys only", vec![key, secret], format!("albwatch: {NO_REGION}")),
        (
            "an endpoint that is not a URL",
            vec![key, secret, region, ("AWS_ENDPOINT_URL_KINESIS", "localhost:4567")],
            "albwatch: cannot use the Kinesis endpoint \"localhost:4567\" (scheme \"localhost\" is \
             not http or https): fix or unset AWS_ENDPOINT_URL_KINESIS and AWS_ENDPOINT_URL (or \
             endpoint_url in the AWS profile)"
                .to_string(),
        ),
    ];
    for (case, env, expected) in cases {
        let out = run_to_exit(albwatch_run(&dir, "alb-logs", "", &env));
        assert_eq!(refused(&out), expected, "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stream_stops_start_up_naming_it() {
    let k = kinesalite_with("alb-logs", 1).await;
    let dir = TempDir::new("aws", "unknown");
    let out = run_to_exit(albwatch_run(&dir, "alb-logz", "", &deployed(&k.endpoint)));
    assert_eq!(
        refused(&out),
        format!(
            "albwatch: Kinesis stream alb-logz not found in us-east-1 (endpoint {}): check the \
             name, the region (AWS_REGION or kinesis.region in the config file) and the account",
            k.endpoint
        )
    );
    // Nothing was started: no checkpoint directory.
    assert!(!dir.join("checkpoints").exists());
}

/// A loopback server that answers every call with the error AWS sends for `code` (the JSON 1.1
/// protocol's `__type` and `message`, HTTP 400), for the errors no emulator produces.
fn answering(code: &'static str, message: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let answer = format!("{{\"__type\":\"{code}\",\"message\":\"{message}\"}}");
            let _ = write!(
                stream,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.1\r\n\
                 x-amzn-RequestId: 0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    endpoint
}

#[test]
fn refused_credentials_and_denied_access_stop_start_up_with_one_line() {
    let dir = TempDir::new("aws", "denied");
    let denied = "User: arn:aws:iam::123456789012:user/reader is not authorized to perform: \
                  kinesis:ListShards on resource: arn:aws:kinesis:us-east-1:123456789012:stream/alb-logs";
    let cases = [
        (
            "AccessDeniedException",
            denied,
            format!(
                "access denied to Kinesis stream alb-logs in us-east-1 (endpoint {{}}) \
                 (AccessDeniedException: {denied}): allow kinesis:ListShards, \
                 kinesis:GetShardIterator and kinesis:GetRecords on it to this identity"
            ),
        ),
        (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            "AWS rejected the credentials (UnrecognizedClientException: The security token \
             included in the request is invalid.): set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance or task role, and \
             renew them if they expired"
                .to_string(),
        ),
        (
            "ExpiredTokenException",
            "The security token included in the request is expired",
            "AWS rejected the credentials (ExpiredTokenException: The security token included \
             in the request is expired): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
             AWS_PROFILE, or run with an instance or task role, and renew them if they expired"
                .to_string(),
        ),
    ];
    for (code, message, expected) in cases {
        let endpoint = answering(code, message);
        let out = run_to_exit(albwatch_run(&dir, "alb-logs", "", &deployed(&endpoint)));
        let expected = format!("albwatch: {}", expected.replace("{}", &endpoint));
        assert_eq!(refused(&out), expected, "{code}");
    }
}

/// A running daemon whose stderr is read line by line; killed on drop.
struct Daemon {
    child: Child,
    stderr: Receiver<String>,
    admin: String,
}

impl Daemon {
    fn start(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("albwatch starts");
        let stderr = lines_of(child.stderr.take().expect("stderr"));
        let (admin, _) = announced(&stderr, false);
        Daemon {
            child,
            stderr,
            admin,
        }
    }

    /// A sample of `/metrics`, 0 when absent.
    fn sample(&self, name: &str) -> f64 {
        let Ok((200, body)) = http_get(&self.admin, "/metrics") else {
            return 0.0;
        };
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// Polls `/metrics` until `done` holds on the sample `name`, for at most two minutes.
    fn wait_for(&self, name: &str, done: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let value = self.sample(name);
            if done(value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{name} stayed at {value}; stderr so far: {:#?}",
                self.stderr.try_iter().collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM; the exit status and every stderr line since start-up's announcement.
    fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("albwatch exits");
        // The pipe closes with the process, so this ends.
        let lines = self.stderr.iter().collect();
        (status, lines)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn calls(operation: &str, outcome: &str) -> String {
    format!("albwatch_kinesis_api_calls_total{{operation=\"{operation}\",outcome=\"{outcome}\"}}")
}

/// The lines of `lines` containing `needle`, each checked to be readable.
fn lines_with<'a>(lines: &'a [String], needle: &str) -> Vec<&'a String> {
    for line in lines {
        assert_readable(line);
    }
    lines.iter().filter(|l| l.contains(needle)).collect()
}

#[test]
fn an_endpoint_that_does_not_answer_is_retried_and_logged_one_line_per_interval() {
    let dir = TempDir::new("aws", "closed");
    let closed = format!("http://127.0.0.1:{}", free_port());
    // Discovery retried within a second, so failures pile up quickly.
    let cmd = albwatch_run(
        &dir,
        "alb-logs",
        "shard_discovery_secs = 1\n",
        &deployed(&closed),
    );
    let daemon = Daemon::start(cmd);
    let failures = daemon.wait_for(&calls("list_shards", "transient"), |n| n >= 4.0);
    let (status, lines) = daemon.terminate();
    assert!(status.success(), "{status}: {lines:#?}");
    let logged = lines_with(&lines, &format!("cannot reach Kinesis at {closed}"));
    assert!(!logged.is_empty(), "{lines:#?}");
    // One line per interval, however many calls failed within it.
    assert!(
        (logged.len() as f64) < failures,
        "{failures} failures: {logged:#?}"
    );
    assert!(
        logged[0].starts_with("albwatch: kinesis ListShards: cannot reach Kinesis at")
            && logged[0].ends_with("; retrying"),
        "{}",
        logged[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinesalite_killed_mid_run_is_retried_and_logged_one_line_per_interval() {
    let k = kinesalite_with("alb-logs", 2).await;
    let dir = TempDir::new("aws", "killed");
    let config = "poll_interval_ms = 200\nshard_discovery_secs = 1\n";
    let daemon = Daemon::start(albwatch_run(
        &dir,
        "alb-logs",
        config,
        &deployed(&k.endpoint),
    ));
    daemon.wait_for(&calls("get_records", "ok"), |n| n >= 2.0);
    drop(k);
    let records = daemon.wait_for(&calls("get_records", "transient"), |n| n >= 4.0);
    let listings = daemon.wait_for(&calls("list_shards", "transient"), |n| n >= 2.0);
    // Still serving metrics, still retrying.
    assert!(daemon.sample(&calls("get_records", "ok")) >= 2.0);
    let (status, lines) = daemon.terminate();
    assert!(status.success(), "{status}: {lines:#?}");
    let logged = lines_with(&lines, "cannot reach Kinesis at http://127.0.0.1:");
    assert!(!logged.is_empty(), "{lines:#?}");
    // Two shards and discovery failing together: one line per interval for all of them.
    assert!(
        (logged.len() as f64) < records + listings,
        "{records} + {listings} failures: {logged:#?}"
    );
}
