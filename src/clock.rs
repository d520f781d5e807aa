//! The wall clock, the one place it is read. Event time drives windows and alerts; the wall
//! clock only measures lag and detection delay, decides when an input partition is idle and
//! bounds how far in the future a log line may claim to be.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::export::WallClock;

/// Microseconds since the Unix epoch, now.
pub fn wall_clock_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The daemon's clock: the Unix time when it was made plus tokio's monotonic time since, so
/// an adjusted system clock never makes lag jump, and tests under paused tokio time control
/// idleness exactly. Must be made inside a tokio runtime.
pub fn daemon_clock() -> WallClock {
    let base = wall_clock_us();
    let started = tokio::time::Instant::now();
    Arc::new(move || base.saturating_add(started.elapsed().as_micros() as i64))
}
