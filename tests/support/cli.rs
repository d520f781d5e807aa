//! Running the real `albwatch` binary from integration tests: one-shot commands, a child's
//! output line by line, and the addresses a starting `albwatch run` announces on stderr.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_albwatch");

/// Runs `albwatch ARGS` to its end; fails the test unless it succeeds.
pub fn albwatch(args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("runs albwatch");
    assert!(
        out.status.success(),
        "albwatch {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The lines of `pipe`, read on a thread of their own until it closes.
pub fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The admin address (`host:port`) and, when `firehose`, the Firehose endpoint URL that a
/// starting `albwatch run` announces on `stderr`, waiting at most 30 s for them.
pub fn announced(stderr: &Receiver<String>, firehose: bool) -> (String, Option<String>) {
    let (mut admin, mut endpoint) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin.is_none() || (firehose && endpoint.is_none()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = stderr
            .recv_timeout(left)
            .expect("albwatch run announces its addresses");
        let url = line.rsplit(' ').next().unwrap_or_default().to_string();
        if line.contains("metrics on http://") {
            admin = url
                .strip_prefix("http://")
                .and_then(|u| u.strip_suffix("/metrics"))
                .map(str::to_owned);
        } else if line.contains("Firehose endpoint on") {
            endpoint = Some(url);
        }
    }
    (admin.expect("admin address"), endpoint)
}
