//! albwatch turns AWS Application Load Balancer access logs into live Prometheus metrics and
//! cause-tagged alerts.
//!
//! # Layout
//! The pipeline runs `input → decode → parse → classify → aggregate → export/alert`. This crate
//! so far holds the synchronous hot-path stages that every input shares:
//! - [`parse`] turns one line into a borrowed [`parse::LogEntry`] (zero-copy, `nom`);
//! - [`classify`] gives each entry exactly one probable [`classify::Cause`], a closed set of
//!   label values with a runbook hint;
//! - [`render`] writes entries as Athena-named NDJSON or a human explanation (`albwatch parse`);
//! - [`lines`] reads plain or gzip'd files as bounded lines;
//! - [`corpus`] generates a deterministic, realistic log corpus for benches and demos.

pub mod aggregate;
pub mod classify;
pub mod corpus;
pub mod lines;
pub mod parse;
pub mod render;
