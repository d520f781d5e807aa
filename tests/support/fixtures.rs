//! The cause fixture lines (`tests/fixtures/causes.log`, one ALB line per cause) re-timed to
//! any instant, shared by the tests that feed a running daemon lines from just now or from
//! minutes ago.

const CAUSES_LOG: &str = include_str!("../fixtures/causes.log");

/// Fixture line `n` with its `time` set to `at_us` (µs since the epoch) and its
/// `request_creation_time` 3 ms earlier, without a newline.
pub fn cause_line_at(n: usize, at_us: i64) -> String {
    let time = albwatch::alert::text::rfc3339_ms;
    let mut tokens: Vec<String> = CAUSES_LOG
        .lines()
        .nth(n)
        .expect("fixture line")
        .split(' ')
        .map(str::to_string)
        .collect();
    tokens[1] = time(at_us);
    // request_creation_time is the last timestamp-shaped token of the fixture lines.
    let created = tokens
        .iter()
        .rposition(|t| t.starts_with("2026-") && t.ends_with('Z'))
        .expect("request_creation_time");
    tokens[created] = time(at_us - 3_000);
    tokens.join(" ")
}
