//! A cap on the endpoint's per-request log lines. Every failed request (and every duplicate
//! or request with bad records) deserves a line with its request id — until a misconfigured
//! stream or an attacker sends thousands a second, when those lines would drown everything
//! else in the log and cost more than the requests themselves. [`LogLimiter`] lets through a
//! burst of up to `per_sec` lines and then `per_sec` a second (a GCRA token bucket, on
//! instants the caller passes in, so it is testable without a clock); it counts what it
//! holds back, and [`LogLimiter::take_suppressed`] hands that count to the periodic summary
//! line that [`super::serve`] writes. [`LimitedLog`] is what the handler and the connections
//! write through: the limiter on the clock, plus the suppression counter.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::metrics::FirehoseMetrics;

/// How often the count of suppressed lines is written, when it is not zero.
pub(crate) const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Per-request log lines on stderr, under a [`LogLimiter`].
pub(crate) struct LimitedLog {
    limiter: LogLimiter,
    per_sec: u32,
    metrics: FirehoseMetrics,
}

impl LimitedLog {
    pub(crate) fn new(per_sec: u32, metrics: FirehoseMetrics) -> Self {
        LimitedLog {
            limiter: LogLimiter::new(per_sec),
            per_sec,
            metrics,
        }
    }

    /// Writes the line `line` builds, unless the limit is reached; then only counts it (the
    /// line is never built).
    pub(crate) fn write(&self, line: impl FnOnce() -> String) {
        match self.limiter.check(Instant::now()) {
            Verdict::Write => eprintln!("{}", line()),
            Verdict::Suppress => self.metrics.log_line_suppressed(),
        }
    }

    /// Writes how many lines were suppressed since the last summary, if any.
    pub(crate) fn summarise(&self) {
        let n = self.limiter.take_suppressed();
        if n > 0 {
            eprintln!(
                "albwatch: firehose suppressed_log_lines count={n} \
                 (over firehose.max_log_lines_per_sec = {})",
                self.per_sec
            );
        }
    }
}

/// Whether a log line may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Write,
    Suppress,
}

pub(crate) struct LogLimiter {
    /// Time one line costs: a second divided by the rate.
    interval: Duration,
    /// How far ahead of now the bucket may be booked: a second's worth of lines.
    burst: Duration,
    state: Mutex<State>,
}

struct State {
    /// The "theoretical arrival time": when the bucket is empty again. `None` = never used.
    booked_until: Option<Instant>,
    /// Lines held back since the last [`LogLimiter::take_suppressed`].
    suppressed: u64,
}

impl LogLimiter {
    /// At most `per_sec` lines a second, in bursts of up to `per_sec`; 0 is taken as 1.
    pub(crate) fn new(per_sec: u32) -> Self {
        let per_sec = per_sec.max(1);
        LogLimiter {
            interval: Duration::from_secs(1) / per_sec,
            burst: Duration::from_secs(1),
            state: Mutex::new(State {
                booked_until: None,
                suppressed: 0,
            }),
        }
    }

    /// Books one line at `now`, or counts it as suppressed.
    pub(crate) fn check(&self, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let start = state.booked_until.map_or(now, |t| t.max(now));
        let next = start + self.interval;
        if next.saturating_duration_since(now) > self.burst {
            state.suppressed += 1;
            return Verdict::Suppress;
        }
        state.booked_until = Some(next);
        Verdict::Write
    }

    /// Lines suppressed since the last call, resetting the count.
    pub(crate) fn take_suppressed(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut state.suppressed)
    }
}
