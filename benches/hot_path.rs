//! Criterion benches of the hot path on a realistic generated corpus (`traffic::corpus`, ~700
//! bytes a line), reported in lines/s and bytes/s. The same group holds two memchr baselines,
//! so the distance to memory speed is visible in one run: counting newlines (the floor of any
//! line-oriented reader) and finding fields 5 and 9 of every line (the least work any parser
//! that yields a target and a status code must do). The tokenizer is also timed alone, the
//! structural index `parse_line` runs next to the `nom` reference.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memchr::memchr_iter;

use std::sync::{Arc, Mutex};

use albwatch::aggregate::{AggregateConfig, Aggregator};
use albwatch::classify::{LbSettings, LoadBalancers};
use albwatch::parse::fields::{Fields, split_into, split_nom};
use albwatch::parse::{LogEntry, parse_line, parse_line_into};
use albwatch::pipeline::{RawBatch, Worker};

mod common;

use common::{each_line, fields_5_and_9, parse_classify};

const LINES: usize = 20_000;

fn hot_path(c: &mut Criterion) {
    let data = albwatch::traffic::corpus(42, LINES);
    let lb = LbSettings::default();
    let mut group = c.benchmark_group("hot_path");
    group.throughput(Throughput::ElementsAndBytes {
        elements: LINES as u64,
        bytes: data.len() as u64,
    });

    group.bench_function("memchr_newlines", |b| {
        b.iter(|| memchr_iter(b'\n', black_box(&data)).count())
    });

    group.bench_function("memchr_fields_5_and_9", |b| {
        b.iter(|| fields_5_and_9(black_box(&data)))
    });

    // The tokenizer alone, both implementations: `split_into` is what `parse_line` runs.
    group.bench_function("tokenize", |b| {
        b.iter(|| {
            let mut count = 0usize;
            each_line(black_box(&data), |line| {
                let mut fields = Fields::new();
                if split_into(line, &mut fields).is_ok() {
                    count += black_box(&fields).len();
                }
            });
            count
        })
    });

    group.bench_function("tokenize_nom", |b| {
        b.iter(|| {
            let mut count = 0usize;
            each_line(black_box(&data), |line| {
                count += black_box(split_nom(line)).map_or(0, |f| f.len());
            });
            count
        })
    });

    // As the pipeline parses: into one entry kept for the whole batch.
    group.bench_function("parse", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            let mut entry = LogEntry::blank();
            each_line(black_box(&data), |line| {
                ok += usize::from(parse_line_into(line, &mut entry).is_ok());
                black_box(&entry);
            });
            ok
        })
    });

    // `parse_line`, which returns a new entry for every line.
    group.bench_function("parse_line", |b| {
        b.iter(|| {
            let mut ok = 0usize;
            each_line(black_box(&data), |line| {
                ok += usize::from(black_box(parse_line(line)).is_ok());
            });
            ok
        })
    });

    group.bench_function("parse_classify", |b| {
        b.iter(|| parse_classify(black_box(&data), &lb))
    });
    // The whole hot path as the daemon runs it: batches of about 1 MiB through a worker
    // (parse, classify, tally) and one merge into the shared aggregator per batch.
    let batches: Vec<RawBatch> = data
        .chunks(1 << 20)
        .scan(Vec::new(), |carry: &mut Vec<u8>, chunk| {
            let mut lines = std::mem::take(carry);
            lines.extend_from_slice(chunk);
            let cut = memchr::memrchr(b'\n', &lines).map_or(0, |i| i + 1);
            *carry = lines.split_off(cut);
            Some(RawBatch::new(lines))
        })
        .collect();
    let agg_cfg = AggregateConfig::default();
    let shared = Arc::new(Mutex::new(Aggregator::new(agg_cfg.clone())));
    let mut worker = Worker::new(Arc::new(LoadBalancers::default()), shared, &agg_cfg, 65_536);
    group.bench_function("parse_classify_aggregate", |b| {
        b.iter(|| {
            let mut parsed = 0;
            for batch in &batches {
                parsed += worker.process_batch(black_box(batch), i64::MAX).parsed;
            }
            parsed
        })
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
