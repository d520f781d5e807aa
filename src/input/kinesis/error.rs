//! What can go wrong with one Kinesis call, sorted by what the consumer does about it; the
//! consumer reacts to it and the metrics count it by kind.

/// What went wrong with one call, sorted by what the consumer does about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// ProvisionedThroughputExceeded, LimitExceeded, KMSThrottling: back off, keep the iterator.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The iterator is over 5 minutes old: open a new one.
    #[error("shard iterator expired")]
    ExpiredIterator,
    /// The stream or shard is gone (e.g. the shard expired past retention).
    #[error("not found: {0}")]
    NotFound(String),
    /// Network or service-side trouble: retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// A bug or a permission problem: retrying will not help.
    #[error("{0}")]
    Fatal(String),
}

impl ApiError {
    /// The bounded `outcome` label value of `albwatch_kinesis_api_calls_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Throttled(_) => "throttled",
            ApiError::ExpiredIterator => "expired_iterator",
            ApiError::NotFound(_) => "not_found",
            ApiError::Transient(_) => "transient",
            ApiError::Fatal(_) => "fatal",
        }
    }
}
