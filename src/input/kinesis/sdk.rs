//! [`KinesisApi`] over `aws-sdk-kinesis`: the client set-up (rustls with *ring*; region,
//! credentials and `AWS_ENDPOINT_URL[_KINESIS]` from the usual AWS chain), the start-up check
//! that refuses a set-up no retry can fix, and the calls — ListShards, GetShardIterator and
//! GetRecords for polling; DescribeStreamConsumer, RegisterStreamConsumer and SubscribeToShard
//! (whose event stream is pumped into a [`Subscription`]) for enhanced fan-out — whose errors
//! leave here as [`ApiError`]s carrying one line a person can act on.

use std::sync::Arc;

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::list_shards::{ListShardsError, ListShardsOutput};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use super::config::InitialPosition;
use super::error::ApiError;
use super::shard::{
    ApiRecord, ConsumerStatus, IteratorStart, KinesisApi, RecordsPage, ShardEvent, ShardInfo,
    StreamConsumer, Subscription,
};
use crate::input::aws::{self, Failure, SetupError, Target};

/// The service id under which `AWS_ENDPOINT_URL_KINESIS` and the profile's `kinesis` section
/// are found.
const SERVICE_ID: &str = "Kinesis";

/// The IAM actions the consumer needs, named when access is denied.
const ACTIONS: &str = "kinesis:ListShards, kinesis:GetShardIterator and kinesis:GetRecords";

/// The IAM actions enhanced fan-out (`[kinesis] consumer`) needs, named when one of its calls
/// is denied. DescribeStreamSummary finds the stream's ARN, which RegisterStreamConsumer
/// needs, when the stream is configured by name.
const FAN_OUT_ACTIONS: &str = "kinesis:ListShards, kinesis:DescribeStreamSummary, \
     kinesis:RegisterStreamConsumer, kinesis:DescribeStreamConsumer and kinesis:SubscribeToShard";

/// [`KinesisApi`] over `aws-sdk-kinesis`.
#[derive(Clone)]
pub struct SdkApi {
    client: aws_sdk_kinesis::Client,
    /// The stream name or ARN: ARNs go in `StreamARN`, names in `StreamName`.
    stream: String,
    /// How errors name the stream, its region and endpoint.
    target: Arc<Target>,
    /// The same for enhanced fan-out's calls, whose denial names their actions.
    fan_out_target: Arc<Target>,
    /// The stream's ARN once known (the configured ARN, or DescribeStreamSummary's answer).
    stream_arn: Arc<tokio::sync::OnceCell<String>>,
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

/// [`target`] for enhanced fan-out's calls.
fn fan_out_target(target: &Target) -> Target {
    Target {
        actions: FAN_OUT_ACTIONS,
        ..target.clone()
    }
}

impl SdkApi {
    /// Over a client set up elsewhere (tests, benchmarks); errors name the client's region.
    pub fn new(client: aws_sdk_kinesis::Client, stream: impl Into<String>) -> Self {
        let stream = stream.into();
        let region = client.config().region().map(ToString::to_string);
        let target = target(&stream, region, None);
        SdkApi {
            fan_out_target: Arc::new(fan_out_target(&target)),
            target: Arc::new(target),
            stream_arn: Arc::default(),
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
            fan_out_target: Arc::new(fan_out_target(&target)),
            target: Arc::new(target),
            stream_arn: Arc::default(),
        };
        // ListShards is the call the consumer makes first and one the reader's IAM policy
        // already allows, so it proves the stream, the region and the permissions.
        aws::probe(api.list_page(None).await, &api.target, "ListShards")?;
        Ok(api)
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

    /// `err` of the enhanced fan-out call `operation`.
    fn fan_out_failed<E>(&self, operation: &str, err: &SdkError<E, HttpResponse>) -> ApiError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let failure = aws::classify(err);
        ApiError::sort(&failure, self.fan_out_target.explain(operation, &failure))
    }

    /// The stream's ARN: the configured one, or DescribeStreamSummary's answer, asked once.
    async fn stream_arn(&self) -> Result<String, ApiError> {
        if self.is_arn() {
            return Ok(self.stream.clone());
        }
        self.stream_arn
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .describe_stream_summary()
                    .stream_name(&self.stream)
                    .send()
                    .await
                    .map_err(|e| self.fan_out_failed("DescribeStreamSummary", &e))?;
                match out.stream_description_summary() {
                    Some(d) if !d.stream_arn().is_empty() => Ok(d.stream_arn().to_owned()),
                    _ => Err(self.no_answer("DescribeStreamSummary", "no stream ARN")),
                }
            })
            .await
            .cloned()
    }

    /// An answer without what the call is for: retried, as a service fault.
    fn no_answer(&self, operation: &str, what: &str) -> ApiError {
        let failure = Failure::new(aws::Fault::Service, format!("{what} in the answer"));
        ApiError::Transient(self.fan_out_target.explain(operation, &failure))
    }

    /// A failure of an open event stream: a service error sent in the stream (sorted by its
    /// code) or a connection that failed. Either way the loop subscribes again, so this only
    /// decides how it is counted and logged.
    fn stream_failed(
        &self,
        err: &SdkError<
            aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
            aws_smithy_types::event_stream::RawMessage,
        >,
    ) -> ApiError {
        use aws::Fault;
        let failure = match err {
            SdkError::ServiceError(context) => {
                let e = context.err();
                let fault = match e.code() {
                    Some("ResourceNotFoundException") => Fault::NotFound,
                    Some("KMSThrottlingException") => Fault::Throttled,
                    Some("KMSAccessDeniedException") => Fault::AccessDenied,
                    _ => Fault::Service,
                };
                Failure {
                    fault,
                    code: e.code().map(str::to_owned),
                    detail: e.message().unwrap_or_default().to_owned(),
                }
            }
            other => Failure::new(Fault::Network, other.to_string()),
        };
        ApiError::sort(
            &failure,
            self.fan_out_target
                .explain("SubscribeToShard event stream", &failure),
        )
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

/// A stream consumer as the SDK describes it.
fn stream_consumer(arn: &str, status: &aws_sdk_kinesis::types::ConsumerStatus) -> StreamConsumer {
    use aws_sdk_kinesis::types::ConsumerStatus as S;
    StreamConsumer {
        arn: arn.to_owned(),
        status: match status {
            S::Active => ConsumerStatus::Active,
            S::Deleting => ConsumerStatus::Deleting,
            // CREATING, or a status this SDK does not know: wait and look again.
            _ => ConsumerStatus::Creating,
        },
    }
}

/// One SDK event as the consumer needs it. AWS leaves `ContinuationSequenceNumber` out of a
/// closed shard's last event; the SDK reads that as empty.
fn shard_event(e: aws_sdk_kinesis::types::SubscribeToShardEvent) -> ShardEvent {
    ShardEvent {
        continuation: Some(e.continuation_sequence_number).filter(|c| !c.is_empty()),
        millis_behind_latest: Some(e.millis_behind_latest),
        child_shards: e
            .child_shards
            .unwrap_or_default()
            .iter()
            .map(|c| ShardInfo {
                id: c.shard_id().to_owned(),
                parent: c.parent_shards().first().cloned(),
                adjacent_parent: c.parent_shards().get(1).cloned(),
            })
            .collect(),
        records: e
            .records
            .into_iter()
            .map(|r| ApiRecord {
                sequence_number: r.sequence_number,
                data: r.data.into_inner(),
            })
            .collect(),
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

    async fn describe_consumer(&self, name: &str) -> Result<StreamConsumer, ApiError> {
        let stream_arn = self.stream_arn().await?;
        let out = self
            .client
            .describe_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(|e| self.fan_out_failed("DescribeStreamConsumer", &e))?;
        match out.consumer_description() {
            Some(d) => Ok(stream_consumer(d.consumer_arn(), d.consumer_status())),
            None => Err(self.no_answer("DescribeStreamConsumer", "no consumer")),
        }
    }

    async fn register_consumer(&self, name: &str) -> Result<StreamConsumer, ApiError> {
        let stream_arn = self.stream_arn().await?;
        let out = self
            .client
            .register_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(|e| self.fan_out_failed("RegisterStreamConsumer", &e))?;
        match out.consumer() {
            Some(c) => Ok(stream_consumer(c.consumer_arn(), c.consumer_status())),
            None => Err(self.no_answer("RegisterStreamConsumer", "no consumer")),
        }
    }

    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard: &str,
        start: &IteratorStart,
    ) -> Result<Subscription, ApiError> {
        use aws_sdk_kinesis::types::{
            ShardIteratorType as T, StartingPosition, SubscribeToShardEventStream as Event,
        };
        let position = match start {
            IteratorStart::After(seq) => StartingPosition::builder()
                .r#type(T::AfterSequenceNumber)
                .sequence_number(seq.as_str()),
            IteratorStart::Initial(InitialPosition::Latest) => {
                StartingPosition::builder().r#type(T::Latest)
            }
            IteratorStart::Initial(InitialPosition::TrimHorizon) => {
                StartingPosition::builder().r#type(T::TrimHorizon)
            }
            IteratorStart::Initial(InitialPosition::AtTimestamp(t)) => StartingPosition::builder()
                .r#type(T::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from_secs_f64(*t)),
        };
        let position = position.build().map_err(|e| {
            let failure = Failure::new(aws::Fault::Request, e.to_string());
            ApiError::Fatal(self.fan_out_target.explain("SubscribeToShard", &failure))
        })?;
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(shard)
            .starting_position(position)
            .send()
            .await
            .map_err(|e| self.fan_out_failed("SubscribeToShard", &e))?;
        // One event may wait while the consumer hands the last to the pipeline; past that the
        // pump stops reading the connection, which is the push stream's backpressure.
        let (tx, subscription) = Subscription::channel(1);
        let api = self.clone();
        let mut events = out.event_stream;
        tokio::spawn(async move {
            loop {
                // Dropping the subscription closes the channel: stop reading, which drops the
                // event stream and with it the connection.
                let received = tokio::select! {
                    received = events.recv() => received,
                    () = tx.closed() => return,
                };
                let item = match received {
                    Ok(Some(Event::SubscribeToShardEvent(e))) => Ok(shard_event(e)),
                    // An event type newer than this SDK: nothing the consumer can use.
                    Ok(Some(_)) => continue,
                    Ok(None) => return,
                    Err(e) => Err(api.stream_failed(&e)),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(subscription)
    }
}
