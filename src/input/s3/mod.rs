//! ALB access logs from S3, where load balancers write them by default: the daemon's input
//! reads the bucket's event notifications from an SQS queue ([`queue`]) and streams each new
//! object into the pipeline ([`object`]), deleting the message only after its lines are
//! counted; `replay s3://…` lists and streams a time range of objects ([`listing`]). The
//! notification shapes (direct, SNS, EventBridge) are in [`notification`], the ELB key layout
//! (load balancer, node, 5-minute period) in [`key`], the memory of objects already counted in
//! [`dedupe`]. Each load balancer is one event-time partition: its nodes' 5-minute files
//! arrive out of order within the out-of-order bound, and one load balancer's quiet hours do
//! not hold the others back.

pub mod config;
pub mod dedupe;
pub mod key;
pub mod listing;
pub mod metrics;
pub mod notification;
pub mod object;
pub mod queue;
pub mod sdk;

pub use config::{S3Config, ValidS3Config};
pub use metrics::S3Metrics;
pub use sdk::Clients;
