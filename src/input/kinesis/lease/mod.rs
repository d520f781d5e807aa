//! Shard leases for a fleet of albwatch instances on one stream, in the Kinesis Client
//! Library's lease table: [`table`] reads and writes the table (every write fenced by the
//! lease counter), [`plan`] decides which leases to take from a listing of it, and [`fleet`]
//! is the consumer that reads the shards of the leases it holds.
pub mod fleet;
pub mod plan;
pub mod table;
