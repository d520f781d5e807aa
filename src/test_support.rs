//! Test-only helpers shared by the unit tests of several stages: the cause fixture lines
//! (`tests/fixtures/causes.log`, one line per cause) re-timed to any instant, so windows,
//! metrics and alert rules can be exercised on real log lines under injected time.

/// One line per cause, in the order of `tests/fixtures/causes.expected`.
pub(crate) const CAUSES_LOG: &str = include_str!("../tests/fixtures/causes.log");

/// Fixture line `n` as space-separated tokens with `time` set to `at` and
/// `request_creation_time` to `at - elapsed_us` (µs since the epoch). Tokens 0–11 are fields
/// 1–12; later fields may span several tokens (the request line), so edit only those.
pub(crate) fn retimed_tokens(line: &str, at: i64, elapsed_us: i64) -> Vec<String> {
    let time = |us| {
        let mut out = Vec::new();
        crate::parse::write_timestamp(&mut out, us, true);
        String::from_utf8(out).unwrap_or_default()
    };
    let mut tokens: Vec<String> = line.split(' ').map(str::to_string).collect();
    tokens[1] = time(at);
    // request_creation_time is the last timestamp-shaped token of the fixture lines.
    if let Some(i) = tokens
        .iter()
        .rposition(|t| t.starts_with("2026-") && t.ends_with('Z'))
    {
        tokens[i] = time(at - elapsed_us);
    }
    tokens
}

/// Fixture line `n` of [`CAUSES_LOG`].
pub(crate) fn cause_line(n: usize) -> &'static str {
    CAUSES_LOG.lines().nth(n).unwrap_or_default()
}
