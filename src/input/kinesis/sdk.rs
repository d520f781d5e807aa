//! [`KinesisApi`] over `aws-sdk-kinesis`: the client set-up (rustls with *ring*; region,
//! credentials and `AWS_ENDPOINT_URL[_KINESIS]` from the usual AWS chain), the start-up check
//! that refuses a set-up no retry can fix, and the three calls, whose errors leave here as
//! [`ApiError`]s carrying one line a person can act on.

use std::sync::Arc;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::list_shards::{ListShardsError, ListShardsOutput};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::config::InitialPosition;
use super::consumer::{ApiRecord, IteratorStart, KinesisApi, RecordsPage, ShardInfo};
use super::error::ApiError;
use crate::input::aws::{self, Failure, SetupError, Target};

/// The service id under which `AWS_ENDPOINT_URL_KINESIS` and the profile's `kinesis` section
/// are found.
const SERVICE_ID: &str = "Kinesis";

/// The IAM actions the consumer needs, named when access is denied.
const ACTIONS: &str = "kinesis:ListShards, kinesis:GetShardIterator and kinesis:GetRecords";

/// [`KinesisApi`] over `aws-sdk-kinesis`.
#[derive(Clone)]
pub struct SdkApi {
    client: aws_sdk_kinesis::Client,
    /// The stream name or ARN: ARNs go in `StreamARN`, names in `StreamName`.
    stream: String,
    /// How errors name the stream, its region and endpoint.
    target: Arc<Target>,
}

/// How messages name `stream` in `region`, reached at `endpoint`.
fn target(stream: &str, region: Option<String>, endpoint: Option<String>) -> Target {
    Target {
        service: "Kinesis",
        resource: format!("stream {stream}"),
        region,
        endpoint,
        endpoint_env: "AWS_ENDPOINT_URL_KINESIS",
        region_setting: "kinesis.region in the config file",
        actions: ACTIONS,
    }
}

impl SdkApi {
    /// Over a client set up elsewhere (tests, benchmarks); errors name the client's region.
    pub fn new(client: aws_sdk_kinesis::Client, stream: impl Into<String>) -> Self {
        let stream = stream.into();
        let region = client.config().region().map(ToString::to_string);
        SdkApi {
            target: Arc::new(target(&stream, region, None)),
            client,
            stream,
        }
    }

    /// The daemon's client for `stream`, checked before reading begins: no credentials, no
    /// region, an unusable endpoint URL, an unknown stream or denied access is a
    /// [`SetupError`], one line naming what is missing and how to provide it. A failure that
    /// may pass (the network, throttling, the service) is not: the consumer retries it.
    pub async fn connect(stream: &str, region: Option<&str>) -> Result<SdkApi, SetupError> {
        let sdk = aws::load(region).await;
        let target = target(
            stream,
            sdk.region().map(ToString::to_string),
            aws::configured_endpoint(&sdk, SERVICE_ID),
        );
        aws::check_setup(&sdk, &target).await?;
        let api = SdkApi {
            client: aws_sdk_kinesis::Client::new(&sdk),
            stream: stream.to_owned(),
            target: Arc::new(target),
        };
        // ListShards is the call the consumer makes first and one the reader's IAM policy
        // already allows, so it proves the stream, the region and the permissions.
        match api.list_page(None).await {
            Ok(_) => Ok(api),
            Err(e) => {
                let failure = aws::classify(&e);
                if failure.fault.is_transient() {
                    Ok(api)
                } else {
                    Err(api.target.explain("ListShards", &failure).into())
                }
            }
        }
    }

    fn is_arn(&self) -> bool {
        self.stream.starts_with("arn:")
    }

    /// `err` of the call `operation`, classified and put into words.
    fn failed<E>(&self, operation: &str, err: &SdkError<E, HttpResponse>) -> ApiError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let failure = aws::classify(err);
        ApiError::sort(&failure, self.target.explain(operation, &failure))
    }

    /// One ListShards page: the first (naming the stream) or the one after `token`.
    async fn list_page(
        &self,
        token: Option<&str>,
    ) -> Result<ListShardsOutput, SdkError<ListShardsError, HttpResponse>> {
        let req = self.client.list_shards();
        // With NextToken the stream must not be named again (ListShards rejects the pair).
        let req = match token {
            Some(t) => req.next_token(t),
            None if self.is_arn() => req.stream_arn(&self.stream),
            None => req.stream_name(&self.stream),
        };
        req.send().await
    }
}

impl KinesisApi for SdkApi {
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, ApiError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .list_page(token.as_deref())
                .await
                .map_err(|e| self.failed("ListShards", &e))?;
            shards.extend(out.shards().iter().map(|s| ShardInfo {
                id: s.shard_id().to_owned(),
                parent: s.parent_shard_id().map(str::to_owned),
                adjacent_parent: s.adjacent_parent_shard_id().map(str::to_owned),
            }));
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return Ok(shards),
            }
        }
    }

    async fn get_shard_iterator(
        &self,
        shard: &str,
        start: &IteratorStart,
    ) -> Result<String, ApiError> {
        use aws_sdk_kinesis::types::ShardIteratorType as T;
        let mut req = self.client.get_shard_iterator().shard_id(shard);
        req = if self.is_arn() {
            req.stream_arn(&self.stream)
        } else {
            req.stream_name(&self.stream)
        };
        req = match start {
            IteratorStart::After(seq) => req
                .shard_iterator_type(T::AfterSequenceNumber)
                .starting_sequence_number(seq.as_str()),
            IteratorStart::Initial(InitialPosition::Latest) => req.shard_iterator_type(T::Latest),
            IteratorStart::Initial(InitialPosition::TrimHorizon) => {
                req.shard_iterator_type(T::TrimHorizon)
            }
            IteratorStart::Initial(InitialPosition::AtTimestamp(t)) => req
                .shard_iterator_type(T::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from_secs_f64(*t)),
        };
        let out = req
            .send()
            .await
            .map_err(|e| self.failed("GetShardIterator", &e))?;
        out.shard_iterator().map(str::to_owned).ok_or_else(|| {
            let failure = Failure::new(aws::Fault::Service, "no iterator in the answer");
            ApiError::Transient(self.target.explain("GetShardIterator", &failure))
        })
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<RecordsPage, ApiError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|e| self.failed("GetRecords", &e))?;
        let millis_behind_latest = out.millis_behind_latest();
        let next_iterator = out.next_shard_iterator().map(str::to_owned);
        let child_shards = out
            .child_shards()
            .iter()
            .map(|c| ShardInfo {
                id: c.shard_id().to_owned(),
                parent: c.parent_shards().first().cloned(),
                adjacent_parent: c.parent_shards().get(1).cloned(),
            })
            .collect();
        let records = out
            .records
            .into_iter()
            .map(|r| ApiRecord {
                sequence_number: r.sequence_number,
                data: r.data.into_inner(),
            })
            .collect();
        Ok(RecordsPage {
            records,
            next_iterator,
            millis_behind_latest,
            child_shards,
        })
    }
}
