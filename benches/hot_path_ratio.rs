//! The share of the memchr fields-5-and-9 baseline that parsing and classifying reach (as the
//! pipeline runs them: `parse_line_into` one entry per batch, then `classify`), measured so that
//! noise from other work on the machine hits both sides alike: the two are
//! timed in alternation, 21 rounds of 10 passes over the same corpus each, and the median of
//! the per-round ratios is reported next to the spread. Criterion's `hot_path` group times
//! the same two one after the other, seconds apart, which on a shared machine moves the
//! ratio by several points from run to run.

use std::hint::black_box;
use std::time::Instant;

use albwatch::classify::LbSettings;

mod common;

use common::{fields_5_and_9, parse_classify};

const LINES: usize = 20_000;
const ROUNDS: usize = 21;
const PASSES: u32 = 10;

/// Seconds per pass of `f` over the corpus, averaged over [`PASSES`].
fn seconds(f: &dyn Fn() -> usize) -> f64 {
    let start = Instant::now();
    for _ in 0..PASSES {
        black_box(f());
    }
    start.elapsed().as_secs_f64() / f64::from(PASSES)
}

fn main() {
    let data = albwatch::traffic::corpus(42, LINES);
    let lb = LbSettings::default();
    let baseline = || fields_5_and_9(black_box(&data));
    let parsed = || parse_classify(black_box(&data), &lb);
    // One untimed pass each, so that neither side pays for faulting the corpus in.
    black_box(baseline());
    black_box(parsed());
    let lines = LINES as f64;
    let mut rounds: Vec<(f64, f64)> = (0..ROUNDS)
        .map(|_| (seconds(&baseline), seconds(&parsed)))
        .collect();
    rounds.sort_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
    let (b, p) = rounds[ROUNDS / 2];
    let (low, high) = (rounds[0], rounds[ROUNDS - 1]);
    println!(
        "parse_classify / memchr_fields_5_and_9, {ROUNDS} alternating rounds of {PASSES} passes \
         over {LINES} lines:"
    );
    println!(
        "  median round: baseline {:.2} M lines/s, parse_classify {:.2} M lines/s, ratio {:.1} %",
        lines / b / 1e6,
        lines / p / 1e6,
        100.0 * b / p
    );
    println!(
        "  ratio over all rounds: {:.1} % to {:.1} %",
        100.0 * low.0 / low.1,
        100.0 * high.0 / high.1
    );
}
