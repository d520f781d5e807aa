//! What one scrape of `/metrics` costs albwatch when the aggregator holds its cap of 10 000
//! series: the generated corpus (`traffic::corpus`) with each original target fanned out to
//! ~310 targets of the same target group, so the series are many but the traffic mix per
//! series is the corpus's. It times the path `GET /metrics` runs (the snapshot under the lock,
//! then `admin::encode` of the whole registry) and prints bytes, lines and CPU milliseconds
//! per scrape, the snapshot alone, and the lines of each family. CPU time is the thread's own
//! (`CLOCK_THREAD_CPUTIME_ID`), so other builds on the machine inflate wall time, not it.
//!
//! `cargo bench --bench scrape` runs the measurement (`-- --reduced` with the suggested
//! `[metrics]` settings); `-- --serve 127.0.0.1:9899 120` serves
//! the same registry on the real admin server for 120 s instead, for a real Prometheus to
//! scrape (the procedure is in docs/performance.md, "Scrape cost").

use std::hint::black_box;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use albwatch::aggregate::{AggregateConfig, Aggregator, BatchAccumulator};
use albwatch::classify::{LbSettings, classify};
use albwatch::export::admin::{self, Health};
use albwatch::export::{ExportConfig, new_registry, register_snapshot_metrics_with};
use albwatch::parse::parse_line;
use prometheus::Encoder;

/// 200 s of corpus at ~1 000 requests/s: every target sees a few requests in the last minute,
/// so all three windows carry percentiles, as at a busy cap.
const LINES: usize = 200_000;
/// Each corpus target becomes this many (32 targets → ~10 000 series with the target-less
/// and Lambda series).
const FAN_OUT: usize = 310;
const SCRAPES: u32 = 20;

/// `--reduced`: the `[metrics]` settings docs/performance.md suggests at the cap, latency
/// percentiles of the one-minute window only (what the shipped dashboard reads) and six
/// histogram buckets.
fn reduced() -> ExportConfig {
    ExportConfig {
        latency_windows_secs: Some(vec![60]),
        latency_buckets_seconds: Some(vec![0.025, 0.1, 0.25, 1.0, 2.5, 10.0]),
    }
}

/// `line` with its target (the fifth space-separated field, before any quoted field) replaced
/// by the `k`-th sibling of the same target group; a line without a target keeps its `-`.
fn fan_out(line: &[u8], k: usize, out: &mut Vec<u8>) {
    let mut spaces = line
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b' ')
        .map(|(i, _)| i);
    let (Some(start), Some(end)) = (spaces.nth(3), spaces.next()) else {
        out.extend_from_slice(line);
        return;
    };
    let target = &line[start + 1..end];
    let parsed = std::str::from_utf8(target)
        .ok()
        .and_then(|t| t.rsplit_once(':'))
        .and_then(|(ip, port)| {
            let octets: Vec<u16> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
            (octets.len() == 4).then(|| (octets, port.to_owned()))
        });
    out.extend_from_slice(&line[..=start]);
    match parsed {
        Some((o, port)) => out.extend_from_slice(
            format!(
                "10.{}.{}.{}:{port}",
                k % 250,
                o[2] + 16 * (k / 250) as u16,
                o[3]
            )
            .as_bytes(),
        ),
        None => out.extend_from_slice(target),
    }
    out.extend_from_slice(&line[end..]);
}

fn aggregate() -> Aggregator {
    let corpus = albwatch::traffic::corpus(7, LINES);
    let mut agg = Aggregator::new(AggregateConfig::default());
    let mut acc = BatchAccumulator::new(agg.config());
    let lb = LbSettings::default();
    let mut line = Vec::with_capacity(1024);
    for (i, raw) in corpus
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        line.clear();
        fan_out(raw, i % FAN_OUT, &mut line);
        let Ok(e) = parse_line(&line) else { continue };
        acc.add(&e, classify(&e, &lb));
        if i % 10_000 == 9_999 {
            acc.merge_into(&mut agg);
        }
    }
    acc.merge_into(&mut agg);
    agg
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` `n` times; mean CPU and wall milliseconds per run.
fn time<T>(n: u32, mut f: impl FnMut() -> T) -> (f64, f64) {
    let (cpu, wall) = (thread_cpu(), Instant::now());
    for _ in 0..n {
        black_box(f());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(n);
    (ms(thread_cpu() - cpu), ms(wall.elapsed()))
}

fn main() {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let export = match args.iter().position(|a| a == "--reduced") {
        Some(i) => {
            args.remove(i);
            reduced()
        }
        None => ExportConfig::default(),
    };
    let built = Instant::now();
    let agg = Arc::new(Mutex::new(aggregate()));
    // Windows end just after the newest entry, as in `replay`: the last minute is full.
    let end = agg
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .max_event_time()
        .map_or(0, |t| t + 1);
    let registry = new_registry();
    let source = Arc::clone(&agg);
    register_snapshot_metrics_with(
        &registry,
        Arc::new(move || {
            source
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot(end)
        }),
        Arc::new(move || end),
        &[],
        export.clone(),
    )
    .expect("register");
    let (_, body) = admin::encode(&registry).expect("encode");
    let text = String::from_utf8(body).expect("utf-8");
    let series = agg
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .snapshot(end)
        .series
        .len();
    println!("scrape: export {export:?}");
    println!(
        "scrape: {series} series aggregated from {LINES} lines in {:.1} s",
        built.elapsed().as_secs_f64()
    );

    if let [flag, addr, secs] = &args[..]
        && flag == "--serve"
    {
        serve(registry, addr, secs.parse().expect("seconds"));
        return;
    }

    let histograms: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" histogram"))
        .collect();
    let mut per_family: Vec<(String, usize)> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| histograms.contains(f))
            .unwrap_or(name);
        match per_family.last_mut() {
            Some((f, n)) if f == family => *n += 1,
            _ => per_family.push((family.to_owned(), 1)),
        }
    }
    let samples: usize = per_family.iter().map(|(_, n)| n).sum();
    println!(
        "scrape: {} bytes, {} lines, {samples} samples per scrape",
        text.len(),
        text.lines().count()
    );
    for (family, n) in &per_family {
        println!("scrape:   {n:>7} {family}");
    }

    let (cpu, wall) = time(SCRAPES, || {
        agg.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot(end)
    });
    println!(
        "scrape: snapshot alone     {cpu:>7.1} ms CPU {wall:>7.1} ms wall (mean of {SCRAPES})"
    );
    let (cpu, wall) = time(SCRAPES, || admin::encode(&registry).expect("encode"));
    println!(
        "scrape: GET /metrics path  {cpu:>7.1} ms CPU {wall:>7.1} ms wall (mean of {SCRAPES})"
    );
    // The same samples as `prometheus::proto` objects through `TextEncoder`: what every
    // scrape did before the text was written straight from the snapshot.
    let (cpu, wall) = time(SCRAPES, || {
        let mut body = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut body)
            .expect("encode");
        body
    });
    println!(
        "scrape: proto + TextEncoder {cpu:>6.1} ms CPU {wall:>7.1} ms wall (mean of {SCRAPES})"
    );
}

/// The registry on the real admin server at `addr` for `secs` seconds.
fn serve(registry: prometheus::Registry, addr: &str, secs: u64) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        println!("scrape: serving http://{addr}/metrics for {secs} s");
        admin::serve(
            listener,
            registry,
            Health::new(),
            admin::Views::none(),
            tokio::time::sleep(Duration::from_secs(secs)),
        )
        .await
        .expect("serve");
    });
}
