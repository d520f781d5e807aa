//! The Kinesis Data Streams input, being built piece by piece (spec §5). So far it owns only
//! [`checkpoint`]: where each shard resumes after a restart, and the in-order commit rule that
//! keeps a checkpoint from overtaking a batch the pipeline has not finished. The shard reader,
//! the resharding DAG and the wiring into `app` will hand batches to the pipeline and their
//! acknowledgements back to [`checkpoint::InOrderCommits`].

pub mod checkpoint;
