//! The Kinesis Data Streams input. [`checkpoint`] owns where each shard resumes after
//! a restart and the in-order commit rule that keeps a checkpoint from overtaking a batch the
//! pipeline has not finished; [`config`] is the `[kinesis]` section; [`consumer`] discovers
//! shards, walks the resharding DAG (children after their parents' `SHARD_END`), polls each
//! readable shard and hands its records to the pipeline as acknowledged batches; [`fanout`]
//! reads a shard through SubscribeToShard instead; [`shard`] is what both loops share (the
//! `KinesisApi` seam, batching, acknowledgements, checkpoints); [`lease`] runs a fleet of
//! instances over shard leases in DynamoDB; [`sdk`] is the real AWS client behind it, checked
//! at start-up; [`error`] sorts what a call can fail with; [`metrics`] is its telemetry.

pub mod checkpoint;
pub mod config;
pub mod consumer;
pub mod error;
pub mod fanout;
pub mod lease;
pub mod metrics;
pub mod sdk;
pub mod shard;

pub use config::{KinesisConfig, ValidKinesisConfig};
pub use metrics::KinesisMetrics;
pub use sdk::SdkApi;
