//! albwatch turns AWS Application Load Balancer access logs into live Prometheus metrics and
//! cause-tagged alerts.
//!
//! # Layout
//! The pipeline runs `input → parse → classify → aggregate → export/alert`:
//! - inputs: [`input`] is their home and their one seam — each input queues owned
//!   [`pipeline::RawBatch`]es through the [`input::PartitionInput`] of one event-time
//!   partition: [`input::files`] (a run of files, or followed files, read through [`lines`]),
//!   [`input::demo`] (the scripted traffic of [`traffic`]), [`input::firehose`] (the Amazon Data
//!   Firehose HTTP endpoint) and [`input::kinesis`] (Kinesis Data Streams: shard DAG, polling,
//!   checkpoints), whose records the workers decode with [`decode`] (gzip, CloudWatch Logs
//!   envelopes, JSON records, KPL aggregates); [`gzip`] is every gzip decoding, streaming for
//!   files and capped for records and bodies; [`firehose_send`] is the Firehose load driver;
//! - [`event_time`]: per-partition progress, the watermark, and the [`event_time::Evaluator`]
//!   that runs the alert rules at every tick the watermark passes — the one engine of the
//!   daemon ([`app`]) and of [`replay`]; [`clock`] is the only reader of the wall clock;
//! - [`pipeline`]: worker threads that run the synchronous hot path on each batch and
//!   acknowledge it only after its counts are merged, then hand the batch's buffer back to
//!   [`buffers`] for the inputs to fill again;
//! - [`parse`] turns one line into a borrowed [`parse::LogEntry`] (zero-copy; a SIMD
//!   structural index splits the fields, with the `nom` tokenizer as reference and fallback);
//! - [`classify`] gives each entry exactly one probable [`classify::Cause`], a closed set of
//!   label values with a runbook hint;
//! - [`aggregate`]: event-time buckets and sliding windows per `(elb, target_group, target)`
//!   and Firehose common-attribute values (the configured extra labels), under a series cap,
//!   handed on as an owned [`aggregate::Snapshot`];
//! - [`export`]: the Prometheus registry built from snapshots and the admin HTTP server;
//! - [`history`]: what the evaluator saw at each tick, bounded, and [`html`], the pages for
//!   people drawn from it: the live status page on the admin port and `replay --report`;
//! - [`alert`]: pure alert rules over snapshots, with hysteresis, and their delivery to
//!   Alertmanager ([`alert::notify`], over [`http_client`]);
//! - [`config`] (file + environment → validated config, every error an
//!   [`setting::InvalidSetting`] naming its key) and [`app`] (daemon wiring and shutdown
//!   order); [`render`] serves `albwatch parse`; [`traffic`] is the one generator of access-log
//!   lines: the demo's scripted incidents and the benches' and tests' corpus.

pub mod aggregate;
pub mod alert;
pub mod app;
pub mod buffers;
pub mod classify;
pub mod clock;
pub mod config;
pub mod decode;
pub mod event_time;
pub mod export;
pub mod firehose_send;
pub mod gzip;
pub mod history;
pub mod html;
pub mod http_client;
pub mod ids;
pub mod input;
pub mod lines;
pub mod parse;
pub mod pipeline;
pub mod render;
pub mod replay;
mod rng;
pub mod setting;
#[cfg(test)]
mod test_support;
pub mod traffic;
