//! Target churn, whole process: `albwatch replay FILE --metrics-out FILE` (the release binary)
//! on two generated files of the same size in alternation: steady traffic over the fleet's 32
//! targets, and the same traffic whose instance targets churn (every two lines forwarded to an
//! instance go to a new `ip:port`, so 2 M lines reach about 1 M targets against the default
//! series cap of 10 000). It prints each run's peak RSS and lines/s (from the kernel's
//! accounting of the child), the medians, the churn/steady throughput ratio and the churn
//! run's overflow and eviction counters from its exposition (`ALBWATCH_BENCH_METRICS=0`: no
//! exposition, to see the pipeline's own cost). `cargo bench --bench churn`;
//! `ALBWATCH_BENCH_LINES` (default 2000000) sets the files' size, `ALBWATCH_BENCH_ROUNDS`
//! (default 3) how many steady/churn pairs run, `ALBWATCH_BENCH_BIN` another albwatch binary to
//! measure (an older build, say). The files are generated once under the target directory and
//! reused. Without `--bench` (e.g. `cargo test --benches`) it runs one
//! tiny round as a smoke test.

#[path = "support/knobs.rs"]
mod knobs;

#[path = "support/child.rs"]
mod child;

use knobs::env_number;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use albwatch::traffic::Traffic;

/// 2026-11-24T10:00:00Z, the corpus's start.
const T0: i64 = 1_795_514_400_000_000;
const SEED: u64 = 42;
/// Lines per churned target: each pair of forwarded lines has a new one.
const LINES_PER_TARGET: u32 = 2;

/// Writes `lines` lines of steady traffic at 1 000 requests a second, churning or not, to
/// `path` unless it is there already; returns the distinct churned targets (0 if reused).
fn generate(path: &Path, lines: usize, churn: bool) -> u64 {
    if path.exists() {
        return 0;
    }
    let partial = path.with_extension("partial");
    let mut traffic = Traffic::steady(SEED, T0, 1_000);
    if churn {
        traffic = traffic.churning(LINES_PER_TARGET);
    }
    let mut out = BufWriter::new(File::create(&partial).expect("create bench data"));
    traffic
        .write_lines(lines, &mut out)
        .expect("write bench data");
    drop(out);
    fs::rename(&partial, path).expect("rename bench data");
    traffic.churned_targets()
}

/// The albwatch to measure: this build's, or `ALBWATCH_BENCH_BIN` (another build, to compare
/// before and after a change on the same data).
fn binary() -> PathBuf {
    std::env::var_os("ALBWATCH_BENCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_albwatch")),
        PathBuf::from,
    )
}

/// One replay of `log`, its exposition written to `metrics` if given.
fn replay(log: &Path, metrics: Option<&Path>) -> child::Usage {
    let mut cmd = Command::new(binary());
    cmd.arg("replay").arg(log).arg("--no-progress");
    if let Some(metrics) = metrics {
        cmd.arg("--metrics-out").arg(metrics);
    }
    let usage = child::run(cmd.stdout(Stdio::null()).stderr(Stdio::inherit()))
        .expect("run albwatch replay");
    assert!(
        usage.status.success(),
        "albwatch replay {}: {}",
        log.display(),
        usage.status
    );
    usage
}

/// The value of the unlabelled sample `name` in an exposition.
fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (lines, rounds) = if full {
        (
            env_number("ALBWATCH_BENCH_LINES", 2_000_000),
            env_number("ALBWATCH_BENCH_ROUNDS", 3).max(1),
        )
    } else {
        (50_000, 1)
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-data");
    fs::create_dir_all(&dir).expect("bench data dir");
    let steady = dir.join(format!("steady-{SEED}-{lines}.log"));
    let churn = dir.join(format!("churn-{SEED}-{LINES_PER_TARGET}-{lines}.log"));
    generate(&steady, lines, false);
    let targets = generate(&churn, lines, true);
    // The final exposition of ten thousand series is a cost of its own (the export's, not
    // the pipeline's): `ALBWATCH_BENCH_METRICS=0` leaves `--metrics-out` off to tell them apart.
    let with_metrics = env_number("ALBWATCH_BENCH_METRICS", 1) != 0;
    let metrics = dir.join("churn-bench.prom");
    let _ = fs::remove_file(&metrics);
    println!(
        "albwatch replay, {lines} lines each, {rounds} alternating rounds (steady: 32 targets; \
         churn: a new target every {LINES_PER_TARGET} forwarded lines{}), {}:",
        if targets > 0 {
            format!(", {targets} targets")
        } else {
            String::new()
        },
        if with_metrics {
            "with --metrics-out"
        } else {
            "without --metrics-out"
        }
    );
    let mut runs: [Vec<child::Usage>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, (name, log)) in [("steady", &steady), ("churn", &churn)].iter().enumerate() {
            let u = replay(log, with_metrics.then_some(&*metrics));
            println!(
                "  round {round} {name:>6}: {:>7.1} MiB peak RSS, {:>5.2} s wall, {:>5.2} s CPU, {:>6.0} k lines/s",
                u.max_rss_mib(),
                u.wall,
                u.cpu(),
                lines as f64 / u.wall / 1e3
            );
            runs[i].push(u);
        }
    }
    let rate = |runs: &[child::Usage]| median(runs.iter().map(|u| lines as f64 / u.wall).collect());
    let rss = |runs: &[child::Usage]| median(runs.iter().map(child::Usage::max_rss_mib).collect());
    let (steady_rate, churn_rate) = (rate(&runs[0]), rate(&runs[1]));
    println!(
        "  median steady: {:.1} MiB, {:.0} k lines/s; churn: {:.1} MiB, {:.0} k lines/s; \
         churn/steady throughput {:.1} %",
        rss(&runs[0]),
        steady_rate / 1e3,
        rss(&runs[1]),
        churn_rate / 1e3,
        100.0 * churn_rate / steady_rate
    );
    if !with_metrics {
        return;
    }
    let exposition = fs::read_to_string(&metrics).expect("churn exposition");
    let overflowed = sample(&exposition, "albwatch_overflowed_entries_total");
    let evicted = sample(&exposition, "albwatch_evicted_series_total");
    println!("  churn run: overflowed entries {overflowed:?}, evicted series {evicted:?}");
    assert!(
        overflowed.is_some_and(|n| n > 0.0),
        "the churn run overflowed nothing"
    );
}
