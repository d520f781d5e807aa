//! What can go wrong with one Kinesis call, sorted by what the consumer does about it; the
//! consumer reacts to it, the metrics count it by kind and its text is the one line the log
//! shows (see [`crate::input::aws`] for how SDK errors are put into words).

use crate::input::aws::{AwsError, Failure, Fault};

/// What went wrong with one call, sorted by what the consumer does about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// ProvisionedThroughputExceeded, LimitExceeded, KMSThrottling: back off, keep the iterator.
    #[error("{0}")]
    Throttled(AwsError),
    /// The iterator is over 5 minutes old: open a new one.
    #[error("shard iterator expired")]
    ExpiredIterator,
    /// The stream or shard is gone (e.g. the shard expired past retention).
    #[error("{0}")]
    NotFound(AwsError),
    /// Network or service-side trouble, or credentials that failed to refresh: retry with
    /// backoff.
    #[error("{0}")]
    Transient(AwsError),
    /// A bug or a permission problem: retrying will not help.
    #[error("{0}")]
    Fatal(AwsError),
}

impl ApiError {
    /// Sorts a classified failure, put into words as `error`.
    pub fn sort(failure: &Failure, error: AwsError) -> ApiError {
        if failure.code.as_deref() == Some("ExpiredIteratorException") {
            return ApiError::ExpiredIterator;
        }
        match failure.fault {
            Fault::Throttled => ApiError::Throttled(error),
            Fault::NotFound => ApiError::NotFound(error),
            // Role credentials are refreshed while reading; one refresh that fails (the metadata
            // service busy for a moment) must not end the input. Missing credentials are found
            // by the start-up check, before reading begins.
            Fault::Network | Fault::Service | Fault::Credentials => ApiError::Transient(error),
            Fault::Region
            | Fault::Endpoint
            | Fault::CredentialsRejected
            | Fault::AccessDenied
            | Fault::Rejected
            | Fault::Request => ApiError::Fatal(error),
        }
    }

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

    /// What fixes it, which keys the error log's one line per kind; an expired iterator is
    /// routine and has none.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            ApiError::ExpiredIterator => None,
            ApiError::Throttled(e)
            | ApiError::NotFound(e)
            | ApiError::Transient(e)
            | ApiError::Fatal(e) => Some(e.fault),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(fault: Fault, code: Option<&str>) -> Failure {
        Failure {
            fault,
            code: code.map(str::to_owned),
            detail: String::new(),
        }
    }

    fn sorted(fault: Fault, code: Option<&str>) -> &'static str {
        ApiError::sort(&failure(fault, code), AwsError::new(fault, "line")).kind()
    }

    #[test]
    fn an_expired_iterator_is_renewed_not_reported() {
        let e = ApiError::sort(
            &failure(Fault::Rejected, Some("ExpiredIteratorException")),
            AwsError::new(Fault::Rejected, "expired"),
        );
        assert_eq!(e.kind(), "expired_iterator");
        assert_eq!(e.fault(), None);
    }

    #[test]
    fn faults_sort_into_what_the_consumer_does() {
        assert_eq!(
            sorted(Fault::Throttled, Some("LimitExceededException")),
            "throttled"
        );
        assert_eq!(
            sorted(Fault::NotFound, Some("ResourceNotFoundException")),
            "not_found"
        );
        for fault in [Fault::Network, Fault::Service, Fault::Credentials] {
            assert_eq!(sorted(fault, None), "transient", "{fault:?}");
        }
        for fault in [
            Fault::Region,
            Fault::Endpoint,
            Fault::CredentialsRejected,
            Fault::AccessDenied,
            Fault::Rejected,
            Fault::Request,
        ] {
            assert_eq!(sorted(fault, None), "fatal", "{fault:?}");
        }
    }

    #[test]
    fn the_line_is_the_explanation_alone() {
        let e = ApiError::Transient(AwsError::new(Fault::Network, "cannot reach Kinesis"));
        assert_eq!(e.to_string(), "cannot reach Kinesis");
        assert_eq!(e.fault(), Some(Fault::Network));
    }
}
