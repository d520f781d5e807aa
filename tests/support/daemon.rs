//! A real `albwatch run` as a child process of a test: started with its admin server on a free
//! port, read from the announcement on stderr; its stderr echoed with the instance's name and
//! kept, for assertions and failure messages; `/metrics` scraped and polled (failing at once if
//! the process exits); signals, a bounded wait for the exit, and SIGKILL on drop, so a failing
//! test leaves no process behind. [`aws_env`] points it at emulators through the standard AWS
//! environment. Included with `#[path]` by `tests/kinesis.rs`, `tests/kinesis_fleet.rs`,
//! `tests/s3_input.rs` and `tests/browser.rs` (which runs `demo` with it too).

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[path = "cli.rs"]
#[allow(
    dead_code,
    clippy::duplicate_mod,
    reason = "a test binary may include it beside this file"
)]
mod cli;

#[path = "http.rs"]
#[allow(
    dead_code,
    clippy::duplicate_mod,
    reason = "a test binary may include it beside this file"
)]
mod http;

/// The `albwatch` binary under test.
pub use cli::BIN;

/// `cmd` pointed at emulators through the standard AWS environment: each `(variable,
/// endpoint)` of `endpoints` (e.g. `AWS_ENDPOINT_URL_KINESIS`), static test keys, us-east-1,
/// and none of the test's own profile, region, session or general endpoint.
pub fn aws_env<'a>(cmd: &'a mut Command, endpoints: &[(&str, &str)]) -> &'a mut Command {
    for var in [
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_DEFAULT_REGION",
        "AWS_SESSION_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(endpoints.iter().copied())
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
}

/// One running `albwatch run`.
pub struct Daemon {
    pub name: String,
    pub child: Child,
    /// The admin server's `host:port`.
    pub admin: String,
    log: Arc<Mutex<Vec<String>>>,
    /// What of an exposition a failure message shows.
    summary: fn(&str) -> String,
}

impl Daemon {
    /// Spawns `cmd` (an `albwatch run … --admin-addr 127.0.0.1:0`; stdin and stdout are
    /// null, stderr piped) and waits at most 30 s for it to announce its admin address. `name`
    /// tags its stderr lines.
    pub fn spawn(name: &str, cmd: &mut Command) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("albwatch runs");
        let stderr = cli::lines_of(child.stderr.take().expect("stderr"));
        let log = Arc::new(Mutex::new(Vec::new()));
        // The admin address, from the announcement; every line before it is kept.
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stderr.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("[{name}] {line}");
                    let admin = line
                        .contains("metrics on http://")
                        .then(|| line.rsplit(' ').next())
                        .flatten()
                        .and_then(|u| u.strip_prefix("http://"))
                        .and_then(|u| u.strip_suffix("/metrics"))
                        .map(str::to_owned);
                    log.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(line);
                    if let Some(admin) = admin {
                        break admin;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let status = child.wait().expect("albwatch exits");
                    let why = match e {
                        RecvTimeoutError::Timeout => "did not announce its admin address in 30 s",
                        RecvTimeoutError::Disconnected => "exited at start",
                    };
                    panic!(
                        "albwatch {name} {why} ({status}); stderr:\n{}",
                        log.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .join("\n")
                    );
                }
            }
        };
        let keep = Arc::clone(&log);
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in stderr {
                eprintln!("[{tag}] {line}");
                keep.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        Daemon {
            name: name.to_owned(),
            child,
            admin,
            log,
            summary: str::to_owned,
        }
    }

    /// Failure messages show `summary` of an exposition rather than all of it.
    pub fn showing(mut self, summary: fn(&str) -> String) -> Daemon {
        self.summary = summary;
        self
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// `/metrics` now; `None` while the admin server does not answer. Never call it on a
    /// stopped process: the connection would be accepted and the read would hang.
    pub fn metrics(&self) -> Option<String> {
        match http::http_get(&self.admin, "/metrics") {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }

    /// Fails the test if the process has exited.
    pub fn check_alive(&mut self, what: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "albwatch {} exited ({status}) while waiting for {what}; stderr:\n{}",
                self.name,
                self.stderr()
            );
        }
    }

    /// Polls `/metrics` until `done` holds, at most `limit`; returns that exposition. Fails at
    /// once if the process exits.
    pub async fn wait_metrics(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        loop {
            if let Some(body) = self.metrics() {
                if done(&body) {
                    return body;
                }
                last = body;
            }
            self.check_alive(what);
            assert!(
                Instant::now() < deadline,
                "/metrics of albwatch {} never showed {what} within {limit:?}; last:\n{}\n\
                 stderr:\n{}",
                self.name,
                (self.summary)(&last),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (a name `kill` knows: TERM, STOP, CONT).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} {}: {sent}", self.name);
    }

    /// SIGKILL, and the process reaped.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("killed");
    }

    /// Waits for the exit after a SIGTERM sent earlier, at most `limit`.
    pub fn exit_status(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "albwatch {} did not exit within {limit:?} of SIGTERM; stderr:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status (within `limit`).
    pub fn terminate(mut self, limit: Duration) -> ExitStatus {
        self.signal("TERM");
        self.exit_status(limit)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process; a no-op error if it already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
