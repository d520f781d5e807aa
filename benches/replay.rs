//! The whole program against the cheapest thing that reads the same bytes, in one run:
//! `albwatch replay FILE --metrics-out /dev/null` (read, split, parse, classify, aggregate,
//! evaluate the rules in event time, write the exposition) against `wc -l FILE` on the same
//! file from the page cache. The file is the demo's traffic (`traffic::Traffic::scripted`, its
//! incidents included, ~700-byte lines) over one incident cycle, generated once into the
//! target directory. Every round runs each command once, in turn, and the figures are the
//! kernel's accounting of each finished process (user + system CPU, peak RSS; see
//! `support/child.rs`); ratios are taken round by round, so a machine that drifts moves both
//! sides of a ratio alike.
//!
//! Commands: `wc -l`; replay with the default workers (one per core); replay with 1 and with 2
//! workers (`ALBWATCH_WORKERS`); and the default replay under each alternative allocator found
//! installed (Debian's libjemalloc2 and libmimalloc2.0, through `LD_PRELOAD`, so the very same
//! binary is compared). It prints, per command, the medians of CPU seconds, wall seconds,
//! lines per CPU-second, lines per second and peak RSS, and replay's lines per CPU-second as a
//! fraction of `wc -l`'s.
//!
//! `cargo bench --bench replay`; `ALBWATCH_BENCH_LINES` (default 1000000) sets the file's size,
//! `ALBWATCH_BENCH_ROUNDS` (default 7) the rounds, `ALBWATCH_BENCH_BEFORE` another albwatch
//! binary to run beside this build's (the build before a change, say). Without `--bench` (`cargo test --benches`)
//! it runs one round on 20 000 lines as a smoke test.

#[path = "support/knobs.rs"]
mod knobs;

#[path = "support/child.rs"]
mod child;

use knobs::env_number;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use albwatch::traffic::Traffic;
use child::Usage;

const BIN: &str = env!("CARGO_BIN_EXE_albwatch");
/// Event time of the file's first line (the demo's default start).
const START_US: i64 = 1_795_478_400_000_000;
/// One incident cycle of the demo's script, in seconds.
const CYCLE_SECS: u64 = 2610;
/// Alternative allocators compared by preloading them into the same binary.
const ALLOCATORS: [(&str, &str); 2] = [
    ("jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"),
    ("mimalloc", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"),
];

/// The demo's traffic, about `lines` lines over one incident cycle, written once (a file of
/// that name is reused) into the bench's scratch directory.
fn data(lines: usize) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("replay-bench-{lines}.log"));
    if path.exists() {
        return path;
    }
    let rate = u32::try_from((lines as u64).div_ceil(CYCLE_SECS)).expect("a rate");
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial).expect("create the bench data");
    let mut out = BufWriter::new(file);
    Traffic::scripted(1, START_US, rate)
        .write_until(START_US + CYCLE_SECS as i64 * 1_000_000, &mut out)
        .expect("write the bench data");
    drop(out);
    std::fs::rename(&partial, &path).expect("name the bench data");
    path
}

/// Streams the file: a child's peak RSS includes the peak of the process it was forked from,
/// so this process must never hold the file.
fn count_lines(path: &Path) -> u64 {
    let mut file = std::fs::File::open(path).expect("open the bench data");
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0;
    loop {
        match file.read(&mut buf).expect("read the bench data") {
            0 => return lines,
            n => lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64,
        }
    }
}

/// One command of the comparison: `wc -l`, or a replay by the albwatch at `bin`.
struct Contender {
    name: String,
    env: Vec<(&'static str, String)>,
    bin: Option<PathBuf>,
    runs: Vec<Usage>,
}

impl Contender {
    fn replay(name: &str, env: Vec<(&'static str, String)>) -> Self {
        Contender {
            name: name.to_owned(),
            env,
            bin: Some(PathBuf::from(BIN)),
            runs: Vec::new(),
        }
    }

    fn command(&self, file: &Path) -> Command {
        let mut cmd = if let Some(bin) = &self.bin {
            let mut c = Command::new(bin);
            c.arg("replay")
                .arg(file)
                .args(["--metrics-out", "/dev/null", "--no-progress"]);
            c
        } else {
            let mut c = Command::new("wc");
            c.arg("-l").arg(file);
            c
        };
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (lines, rounds) = if bench {
        (
            env_number("ALBWATCH_BENCH_LINES", 1_000_000),
            env_number("ALBWATCH_BENCH_ROUNDS", 7),
        )
    } else {
        (20_000, 1)
    };
    let file = data(lines);
    let lines = count_lines(&file);
    let bytes = std::fs::metadata(&file).map_or(0, |m| m.len());

    // Once, untimed: replay must count every line, or its speed means nothing.
    let out = Command::new(BIN)
        .arg("replay")
        .arg(&file)
        .args(["--metrics-out", "/dev/null", "--no-progress"])
        .output()
        .expect("run albwatch replay");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && summary.starts_with(&format!("replayed {lines} lines")),
        "replay did not count the file's {lines} lines: {summary}"
    );

    let mut contenders = vec![
        Contender {
            name: "wc -l".to_owned(),
            env: Vec::new(),
            bin: None,
            runs: Vec::new(),
        },
        Contender::replay("replay", Vec::new()),
        Contender::replay("replay, 1 worker", vec![("ALBWATCH_WORKERS", "1".into())]),
        Contender::replay("replay, 2 workers", vec![("ALBWATCH_WORKERS", "2".into())]),
    ];
    if let Some(before) = std::env::var_os("ALBWATCH_BENCH_BEFORE") {
        contenders.push(Contender {
            bin: Some(PathBuf::from(before)),
            ..Contender::replay("replay, before", Vec::new())
        });
    }
    for (name, lib) in ALLOCATORS {
        if Path::new(lib).exists() {
            contenders.push(Contender::replay(
                &format!("replay, {name}"),
                vec![("LD_PRELOAD", lib.to_owned())],
            ));
        } else {
            println!("{name}: {lib} not installed, not compared");
        }
    }
    println!(
        "{lines} lines, {:.0} MB, {rounds} rounds; cores: {}",
        bytes as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for round in 0..rounds {
        for c in &mut contenders {
            let usage = child::run(&mut c.command(&file)).expect("run the command");
            assert!(usage.status.success(), "{} failed in round {round}", c.name);
            c.runs.push(usage);
        }
    }

    let per_cpu = |u: &Usage| lines as f64 / u.cpu().max(1e-9);
    let wc: Vec<f64> = contenders[0].runs.iter().map(per_cpu).collect();
    println!(
        "{:<20} {:>8} {:>8} {:>14} {:>12} {:>9} {:>10}",
        "command", "cpu s", "wall s", "lines/cpu-s", "lines/s", "peak MiB", "vs wc -l"
    );
    for c in &contenders {
        let of = |f: fn(&Usage) -> f64| median(c.runs.iter().map(f).collect());
        // Round by round: this command's lines per CPU-second over wc's in the same round.
        let vs_wc = median(
            c.runs
                .iter()
                .zip(&wc)
                .map(|(u, w)| per_cpu(u) / w)
                .collect(),
        );
        println!(
            "{:<20} {:>8.3} {:>8.3} {:>14.0} {:>12.0} {:>9.1} {:>10.3}",
            c.name,
            of(Usage::cpu),
            of(|u| u.wall),
            median(c.runs.iter().map(per_cpu).collect()),
            median(c.runs.iter().map(|u| lines as f64 / u.wall).collect()),
            of(Usage::max_rss_mib),
            vs_wc
        );
    }
}
