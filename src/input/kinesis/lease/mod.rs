//! Shard leases for a fleet of albwatch instances on one stream, in the Kinesis Client
//! Library's lease table: [`plan`] decides which leases to take from a listing of the table.
pub mod plan;
pub mod table;
