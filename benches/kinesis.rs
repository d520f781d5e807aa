//! Kinesis input throughput on the emulator, in one run: kinesalite (started here, as the tests
//! do) holds a 4-shard stream pre-filled with realistic ALB lines (`traffic::corpus`, 100 lines
//! a record, spread evenly over the shards); then (a) a bare SDK GetRecords loop, one task per
//! shard and no pause between calls, reads it all from TRIM_HORIZON, and (b) albwatch's
//! consumer with the real worker pool behind it (decode, parse, classify, aggregate, acks and
//! checkpoints) does the same. Both use the same `Limit`. It prints records/s and lines/s of
//! each and the ratio (b)/(a): how much of what the emulator can serve albwatch turns into
//! counted lines. `cargo bench --bench kinesis`; `ALBWATCH_BENCH_RECORDS` (default 2000) sets
//! the stream's size, `ALBWATCH_BENCH_ROUNDS` (default 3) how many (a)/(b) pairs run (best
//! kept). Without `--bench` (e.g. `cargo test --benches`) it runs one tiny round as a smoke test.

#[path = "support/knobs.rs"]
mod knobs;

#[path = "../tests/support/kinesalite.rs"]
mod kinesalite;

#[path = "../tests/support/counting.rs"]
mod counting;

use knobs::env_number;
use std::sync::Arc;
use std::time::{Duration, Instant};

use albwatch::decode::DecodeLimits;
use albwatch::event_time::InputKind;
use albwatch::input::kinesis::KinesisMetrics;
use albwatch::input::kinesis::checkpoint::{CheckpointStore, FileCheckpointStore};
use albwatch::input::kinesis::config::{KinesisConfig, StartAt};
use albwatch::input::kinesis::consumer::{self, SdkApi};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use counting::Counting;
use kinesalite::{Kinesalite, client, create_stream_with};
use tokio::sync::watch;

const STREAM: &str = "bench";
const SHARDS: usize = 4;
const LINES_PER_RECORD: usize = 100;
/// Records per GetRecords in both loops: 100 records of ~70 KB is ~7 MB a response, under
/// the 10 MiB AWS allows per call (kinesalite has no byte cap of its own).
const LIMIT: i32 = 100;
/// PutRecords allows 500 records and 5 MiB a call; 60 records of ~70 KB stay under both.
const PUT_BATCH: usize = 60;

/// The stream's contents: whole-line records of [`LINES_PER_RECORD`] corpus lines.
fn records(count: usize) -> Vec<Vec<u8>> {
    let data = albwatch::traffic::corpus(42, count * LINES_PER_RECORD);
    let mut out = Vec::with_capacity(count);
    let mut start = 0;
    let mut lines = 0;
    for end in memchr::memchr_iter(b'\n', &data) {
        lines += 1;
        if lines == LINES_PER_RECORD {
            out.push(data[start..=end].to_vec());
            start = end + 1;
            lines = 0;
        }
    }
    out
}

/// A hash key inside shard `k` of an evenly split stream (kinesalite cuts 2^128 in equal parts).
fn hash_key(shard: usize) -> String {
    ((shard as u128) << 126).to_string()
}

async fn fill(c: &aws_sdk_kinesis::Client, records: &[Vec<u8>]) {
    let numbered: Vec<(usize, &Vec<u8>)> = records.iter().enumerate().collect();
    for chunk in numbered.chunks(PUT_BATCH) {
        let entries = chunk
            .iter()
            .map(|(i, data)| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new((*data).clone()))
                    .partition_key("bench")
                    .explicit_hash_key(hash_key(i % SHARDS))
                    .build()
                    .expect("entry")
            })
            .collect();
        let out = c
            .put_records()
            .stream_name(STREAM)
            .set_records(Some(entries))
            .send()
            .await
            .expect("put records");
        assert_eq!(
            out.failed_record_count(),
            Some(0),
            "kinesalite refused records"
        );
    }
}

/// What one pass read and how long it took.
struct Pass {
    records: u64,
    lines: u64,
    bytes: u64,
    calls: u64,
    took: Duration,
    /// CPU seconds this process (SDK client, and in (b) albwatch) spent; kinesalite, a
    /// separate process, is not in it.
    cpu: Option<f64>,
}

/// User + system CPU seconds of this process so far, from `/proc/self/stat` (Linux; clock ticks
/// of USER_HZ = 100, what Linux reports there on every architecture it runs on).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may itself hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn cpu_since(start: Option<f64>) -> Option<f64> {
    Some(cpu_seconds()? - start?)
}

/// (a) One task per shard: GetShardIterator TRIM_HORIZON, then GetRecords back to back until
/// the shard's records are all read. Lines are counted with memchr, the least any reader does.
async fn bare_loop(c: &aws_sdk_kinesis::Client, per_shard: &[u64]) -> Pass {
    let cpu = cpu_seconds();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (shard, &expected) in per_shard.iter().enumerate() {
        let c = c.clone();
        tasks.spawn(async move {
            let mut iterator = c
                .get_shard_iterator()
                .stream_name(STREAM)
                .shard_id(format!("shardId-{shard:012}"))
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("iterator")
                .shard_iterator
                .expect("an iterator");
            let (mut records, mut lines, mut bytes, mut calls) = (0u64, 0u64, 0u64, 0u64);
            while records < expected {
                let out = c
                    .get_records()
                    .shard_iterator(&iterator)
                    .limit(LIMIT)
                    .send()
                    .await
                    .expect("get records");
                calls += 1;
                for r in out.records() {
                    let data = r.data().as_ref();
                    records += 1;
                    bytes += data.len() as u64;
                    lines += memchr::memchr_iter(b'\n', data).count() as u64;
                }
                iterator = out.next_shard_iterator.expect("open shard");
            }
            (records, lines, bytes, calls)
        });
    }
    let mut pass = Pass {
        records: 0,
        lines: 0,
        bytes: 0,
        calls: 0,
        took: Duration::ZERO,
        cpu: None,
    };
    while let Some(done) = tasks.join_next().await {
        let (records, lines, bytes, calls) = done.expect("shard task");
        pass.records += records;
        pass.lines += lines;
        pass.bytes += bytes;
        pass.calls += calls;
    }
    pass.took = started.elapsed();
    pass.cpu = cpu_since(cpu);
    pass
}

/// (b) albwatch's consumer into the real worker pool, from TRIM_HORIZON with no checkpoint,
/// until the aggregator has counted every line.
async fn albwatch_pass(c: &aws_sdk_kinesis::Client, lines: u64, round: usize) -> Pass {
    let dir = std::env::temp_dir().join(format!(
        "albwatch-kinesis-bench-{}-{round}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut pool = Counting::start(workers, 64);
    let registry = prometheus::Registry::new();
    let metrics = KinesisMetrics::register(&registry).expect("metrics");
    let store = FileCheckpointStore::open(&dir).expect("checkpoint dir");
    let cfg = KinesisConfig {
        stream: Some(STREAM.to_owned()),
        start: StartAt::TrimHorizon,
        checkpoint_dir: dir.clone(),
        max_records_per_call: LIMIT,
        // The emulator has no read limit; AWS's 2 MB/s per shard would measure the pacing.
        read_bytes_per_sec: 1 << 40,
        poll_interval_ms: 200,
        ..KinesisConfig::default()
    }
    .validate()
    .expect("valid config");
    let (tx, rx) = watch::channel(false);
    let cpu_start = cpu_seconds();
    let started = Instant::now();
    let task = tokio::spawn(consumer::run(
        SdkApi::new(c.clone(), STREAM),
        cfg,
        Arc::new(store) as Arc<dyn CheckpointStore>,
        pool.source(InputKind::Kinesis),
        metrics,
        DecodeLimits::default(),
        rx,
    ));
    while pool.counted() < lines {
        assert!(!task.is_finished(), "the consumer stopped early");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    let cpu = cpu_since(cpu_start);
    let _ = tx.send(true);
    task.await
        .expect("consumer task")
        .expect("consumer ran without error");
    pool.finish_blocking().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (_, body) = albwatch::export::admin::encode(&registry).expect("encode");
    let text = String::from_utf8_lossy(&body);
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    };
    Pass {
        records: sum("albwatch_kinesis_records_total{") as u64,
        lines: pool.counted(),
        bytes: sum("albwatch_kinesis_bytes_total{") as u64,
        calls: sum("albwatch_kinesis_api_calls_total{operation=\"get_records\",outcome=\"ok\"}")
            as u64,
        took,
        cpu,
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

async fn bench(record_count: usize, rounds: usize) {
    let k = Kinesalite::start();
    let c = client(&k.endpoint).await;
    create_stream_with(&c, STREAM, SHARDS as i32).await;
    let records = records(record_count);
    let total_lines = (records.len() * LINES_PER_RECORD) as u64;
    let total_bytes: usize = records.iter().map(Vec::len).sum();
    let mut per_shard = [0u64; SHARDS];
    for i in 0..records.len() {
        per_shard[i % SHARDS] += 1;
    }
    let filling = Instant::now();
    fill(&c, &records).await;
    println!(
        "kinesis bench: {SHARDS} shards, {} records × {LINES_PER_RECORD} lines = {total_lines} \
         lines, {:.1} MB, GetRecords Limit {LIMIT}; pre-filled in {:.1} s",
        records.len(),
        total_bytes as f64 / 1e6,
        filling.elapsed().as_secs_f64()
    );
    let mut best_bare: Option<Pass> = None;
    let mut best_albwatch: Option<Pass> = None;
    for round in 0..rounds {
        let bare = bare_loop(&c, &per_shard).await;
        assert_eq!(bare.lines, total_lines, "the bare loop read everything");
        let ours = albwatch_pass(&c, total_lines, round).await;
        assert_eq!(ours.lines, total_lines, "albwatch counted every line once");
        println!(
            "  round {}: (a) bare GetRecords loop {:.2} s, {} calls; (b) albwatch {:.2} s, {} calls",
            round + 1,
            bare.took.as_secs_f64(),
            bare.calls,
            ours.took.as_secs_f64(),
            ours.calls
        );
        if best_bare.as_ref().is_none_or(|b| bare.took < b.took) {
            best_bare = Some(bare);
        }
        if best_albwatch.as_ref().is_none_or(|b| ours.took < b.took) {
            best_albwatch = Some(ours);
        }
    }
    let (Some(bare), Some(ours)) = (best_bare, best_albwatch) else {
        return;
    };
    let per_cpu = |p: &Pass| {
        p.cpu.filter(|c| *c > 0.0).map_or_else(
            || "n/a".to_owned(),
            |c| format!("{:.0}", p.lines as f64 / c),
        )
    };
    for (name, p) in [
        ("(a) bare GetRecords loop:        ", &bare),
        ("(b) albwatch consumer + pipeline:", &ours),
    ] {
        println!(
            "{name} {:>9.0} records/s {:>10.0} lines/s {:>7.1} MB/s, {} lines per CPU-second of this process",
            rate(p.records, p.took),
            rate(p.lines, p.took),
            rate(p.bytes, p.took) / 1e6,
            per_cpu(p)
        );
    }
    println!(
        "(b)/(a): {:.2} (best of {rounds})",
        bare.took.as_secs_f64() / ours.took.as_secs_f64()
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (record_count, rounds) = if full {
        (
            env_number("ALBWATCH_BENCH_RECORDS", 2000),
            env_number("ALBWATCH_BENCH_ROUNDS", 3).max(1),
        )
    } else {
        (8, 1)
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(bench(record_count, rounds));
}
