//! The S3 and SQS clients the S3 input and `replay s3://…` use, set up from the standard AWS
//! chain (region, credentials, `AWS_ENDPOINT_URL[_S3|_SQS]`, profile), and the start-up check
//! that refuses a set-up no retry can fix before the daemon binds a port. Errors leave here as
//! one line a person can act on ([`crate::input::aws`]).

use std::sync::Arc;

use aws_config::SdkConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::input::aws::{self, AwsError, Failure, SetupError, Target};

/// The IAM actions the queue reader needs, named when access is denied.
const SQS_ACTIONS: &str = "sqs:ReceiveMessage, sqs:DeleteMessage, sqs:ChangeMessageVisibility and \
                           sqs:GetQueueAttributes";
/// The IAM actions reading and listing the logs needs.
const S3_ACTIONS: &str = "s3:GetObject on the log prefix (and s3:ListBucket for replay)";

/// Both clients, and how errors name what they read.
#[derive(Clone)]
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    s3_target: Arc<Target>,
    sqs_target: Arc<Target>,
}

/// The region in an SQS queue URL's host (`sqs.eu-west-1.amazonaws.com`), so a user who gives
/// the queue URL need not repeat its region.
pub fn region_of_queue_url(url: &str) -> Option<String> {
    let host = reqwest::Url::parse(url).ok()?.host_str()?.to_owned();
    let mut parts = host.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("sqs"), Some(region), Some("amazonaws")) if !region.is_empty() => {
            Some(region.to_owned())
        }
        _ => None,
    }
}

impl Clients {
    /// Clients over `sdk`. An S3 endpoint set by URL (an emulator, a VPC endpoint by IP) gets
    /// path-style addressing, since a bucket cannot be a sub-domain of an address.
    pub fn new(sdk: &SdkConfig, queue: Option<&str>, bucket: Option<&str>) -> Self {
        let s3_endpoint = aws::configured_endpoint(sdk, "S3");
        let s3_conf = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(s3_endpoint.is_some())
            .build();
        let region = sdk.region().map(ToString::to_string);
        Clients {
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
            sqs: aws_sdk_sqs::Client::new(sdk),
            s3_target: Arc::new(Target {
                service: "S3",
                resource: bucket.map_or_else(|| "the log bucket".into(), |b| format!("bucket {b}")),
                region: region.clone(),
                endpoint: s3_endpoint,
                endpoint_env: "AWS_ENDPOINT_URL_S3",
                region_setting: "s3.region in the config file",
                actions: S3_ACTIONS,
            }),
            sqs_target: Arc::new(Target {
                service: "SQS",
                resource: format!("queue {}", queue.unwrap_or("-")),
                region,
                endpoint: aws::configured_endpoint(sdk, "SQS"),
                endpoint_env: "AWS_ENDPOINT_URL_SQS",
                region_setting: "s3.region in the config file",
                actions: SQS_ACTIONS,
            }),
        }
    }

    /// The daemon's clients for `queue_url`, checked before reading begins: no credentials,
    /// no region, an unusable endpoint URL, an unknown queue or denied access is a
    /// [`SetupError`]. A failure that may pass (the network, throttling) is not: the input
    /// retries it.
    pub async fn connect(queue_url: &str, region: Option<&str>) -> Result<Clients, SetupError> {
        let region = region
            .map(str::to_owned)
            .or_else(|| region_of_queue_url(queue_url));
        let sdk = aws::load(region.as_deref()).await;
        let clients = Clients::new(&sdk, Some(queue_url), None);
        aws::check_setup(&sdk, &clients.sqs_target).await?;
        // GetQueueAttributes is in the reader's policy and proves the queue, the region and the
        // credentials without taking a message.
        let checked = clients
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
            .send()
            .await;
        aws::probe(checked, &clients.sqs_target, "GetQueueAttributes")?;
        Ok(clients)
    }

    /// Clients for `replay s3://bucket/…`, checked like [`Clients::connect`] but for S3.
    pub async fn for_bucket(bucket: &str, region: Option<&str>) -> Result<Clients, SetupError> {
        let sdk = aws::load(region).await;
        let clients = Clients::new(&sdk, None, Some(bucket));
        aws::check_setup(&sdk, &clients.s3_target).await?;
        Ok(clients)
    }

    /// `err` of the SQS call `operation`, in words.
    pub fn sqs_error<E>(&self, operation: &str, err: &SdkError<E, HttpResponse>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        self.sqs_target.explain(operation, &aws::classify(err))
    }

    /// `err` of the S3 call `operation`, in words.
    pub fn s3_error<E>(&self, operation: &str, err: &SdkError<E, HttpResponse>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        self.s3_target.explain(operation, &aws::classify(err))
    }

    /// `err` of GetObject on `bucket`'s object, in words. A missing key is not a missing
    /// bucket: it was deleted (or expired) between its notification and the read.
    pub fn get_object_error<E>(&self, bucket: &str, err: &SdkError<E, HttpResponse>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let failure = aws::classify(err);
        if failure.code.as_deref() == Some("NoSuchKey") {
            return AwsError::new(
                failure.fault,
                "no such object: it was deleted or expired after its notification was sent",
            );
        }
        let target = Target {
            resource: format!("bucket {bucket}"),
            ..Target::clone(&self.s3_target)
        };
        target.explain("GetObject", &failure)
    }

    /// A failure found outside an SDK call (a body cut short), in words.
    pub fn s3_failure(&self, operation: &str, failure: &Failure) -> AwsError {
        self.s3_target.explain(operation, failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_an_aws_queue_url() {
        assert_eq!(
            region_of_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/logs").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of_queue_url("http://127.0.0.1:5001/123/logs"), None);
        assert_eq!(region_of_queue_url("not a url"), None);
    }
}
