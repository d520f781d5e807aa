//! The shard-lease table in DynamoDB, in the Kinesis Client Library 2.x schema, so albwatch
//! instances share a stream's shards with each other and KCL tooling can read the table: one
//! item per shard, hash key `leaseKey` (the shard id), `leaseOwner` (absent while no one holds
//! it), `leaseCounter`, `checkpoint` with `checkpointSubSequenceNumber`,
//! `ownerSwitchesSinceCheckpoint`, `parentShardId` and `childShardIds` (string sets, absent when
//! empty). Attributes albwatch does not use (`startingHashKey`, `endingHashKey`, …) are left as
//! they are: every write but [`LeaseTable::create`] is an UpdateItem of named attributes.
//!
//! Every write is conditional on the `leaseCounter` this instance last saw (and, for the
//! owner's own writes, on `leaseOwner`), and every successful write bumps the counter. So a
//! write based on a stale view fails with [`LeaseError::Lost`] instead of overwriting what
//! another instance did: an owner whose lease was stolen cannot checkpoint over the thief's
//! progress, and a counter that keeps moving is how the others see an owner alive.
//!
//! [`LeaseTable`] is the seam: the coordinator is generic over it, [`DynamoLeaseTable`] is the
//! real one, and tests wrap it to inject faults.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableDescription, TableStatus,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

use crate::input::aws::{self, AwsError, Failure, Fault, SetupError, Target};

/// The item attributes, as the KCL names them.
const LEASE_KEY: &str = "leaseKey";
const LEASE_OWNER: &str = "leaseOwner";
const LEASE_COUNTER: &str = "leaseCounter";
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_SUB_SEQUENCE: &str = "checkpointSubSequenceNumber";
const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
const PARENT_SHARD_IDS: &str = "parentShardId";
const CHILD_SHARD_IDS: &str = "childShardIds";
const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
const PENDING_CHECKPOINT_SUB_SEQUENCE: &str = "pendingCheckpointSubSequenceNumber";
/// KCL 3.4 and later keep other entries in the lease table too (leader lock, worker metric
/// stats, stream info, migration state) and mark each item with its kind; leases are `LEASE`,
/// and items without the attribute (every KCL 2.x item) are leases too.
const ENTITY_TYPE: &str = "entityType";
const LEASE_ENTITY: &str = "LEASE";

/// The service id under which `AWS_ENDPOINT_URL_DYNAMODB` and the profile's `dynamodb` section
/// are found.
const SERVICE_ID: &str = "DynamoDB";

/// The IAM actions on the lease table, named when access is denied.
const ACTIONS: &str = "dynamodb:CreateTable, dynamodb:DescribeTable, dynamodb:Scan, \
     dynamodb:PutItem, dynamodb:UpdateItem and dynamodb:DeleteItem";

/// The setting that lets [`LeaseTable::ensure`] create a missing table.
const CREATE_SETTING: &str = "kinesis.create_lease_table";

/// How long [`LeaseTable::ensure`] waits for a table to become ACTIVE. DynamoDB creates an
/// on-demand table in seconds to a minute.
const ACTIVE_LIMIT: Duration = Duration::from_secs(300);
/// The first and the longest pause between two DescribeTable calls while waiting.
const FIRST_POLL: Duration = Duration::from_millis(50);
const MAX_POLL: Duration = Duration::from_secs(2);

/// Where a shard's reading resumes, as the KCL writes it in `checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// Nothing read yet; start at the oldest record.
    TrimHorizon,
    /// Nothing read yet; start at the newest.
    Latest,
    /// Nothing read yet; start at a timestamp the application holds.
    AtTimestamp,
    /// The shard was read to its end (it was split or merged); its children come next.
    ShardEnd,
    /// The last record processed (a decimal Kinesis sequence number); resume after it.
    Sequence(String),
}

impl Checkpoint {
    /// As stored in `checkpoint`.
    pub fn as_str(&self) -> &str {
        match self {
            Checkpoint::TrimHorizon => "TRIM_HORIZON",
            Checkpoint::Latest => "LATEST",
            Checkpoint::AtTimestamp => "AT_TIMESTAMP",
            Checkpoint::ShardEnd => "SHARD_END",
            Checkpoint::Sequence(s) => s,
        }
    }

    /// A stored `checkpoint`: one of the four sentinels or a sequence number (decimal digits);
    /// `None` for anything else.
    pub fn parse(text: &str) -> Option<Checkpoint> {
        Some(match text {
            "TRIM_HORIZON" => Checkpoint::TrimHorizon,
            "LATEST" => Checkpoint::Latest,
            "AT_TIMESTAMP" => Checkpoint::AtTimestamp,
            "SHARD_END" => Checkpoint::ShardEnd,
            s if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                Checkpoint::Sequence(s.to_owned())
            }
            _ => return None,
        })
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One shard's lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard id.
    pub key: String,
    /// The instance holding it; `None` while no one does.
    pub owner: Option<String>,
    /// Bumped by every successful write; the fencing token of the conditional writes.
    pub counter: u64,
    pub checkpoint: Checkpoint,
    /// `checkpointSubSequenceNumber`: the KPL sub-record within the checkpointed record; 0 for
    /// records that are not aggregated.
    pub sub_sequence: u64,
    /// Owner changes since the last checkpoint (a lease passed around without progress).
    pub owner_switches: u64,
    /// Shards that must reach `SHARD_END` before this one is read; sorted, no repeats.
    pub parents: Vec<String>,
    /// The shards this one was split or merged into, known once it reached `SHARD_END`;
    /// sorted, no repeats.
    pub children: Vec<String>,
}

impl Lease {
    /// An unowned lease for shard `key` that starts at `checkpoint`, counter 0, no relatives.
    pub fn new(key: impl Into<String>, checkpoint: Checkpoint) -> Lease {
        Lease {
            key: key.into(),
            owner: None,
            counter: 0,
            checkpoint,
            sub_sequence: 0,
            owner_switches: 0,
            parents: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Whether its shard was read to the end.
    pub fn is_finished(&self) -> bool {
        self.checkpoint == Checkpoint::ShardEnd
    }
}

/// Every lease in the table, and the items that are not leases albwatch can use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// In the order the scan returned them.
    pub leases: Vec<Lease>,
    /// Items left out: malformed ones (no `leaseKey`, a counter that is not a number, a
    /// `checkpoint` that is neither a sentinel nor a sequence number) and the entries KCL 3.4
    /// and later keep beside the leases (`entityType` other than `LEASE`). The caller decides how loudly to report them.
    pub skipped: Vec<Skipped>,
}

/// An item [`LeaseTable::list`] left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its `leaseKey`, when it has a readable one.
    pub key: Option<String>,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "item {key:?}: {}", self.reason),
            None => write!(f, "item without a {LEASE_KEY}: {}", self.reason),
        }
    }
}

/// What a lease-table call failed with, sorted by what the caller does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// A conditional write failed: another instance changed the lease (took, renewed,
    /// released or deleted it) since this one read it. The lease is not this instance's to
    /// write any more; list again before touching it.
    #[error("the lease changed under this instance: another instance wrote it first")]
    Lost,
    /// DynamoDB asked for fewer calls: back off, then retry.
    #[error("{0}")]
    Throttled(AwsError),
    /// The network, the service or a credentials refresh failed: retry with backoff.
    #[error("{0}")]
    Transient(AwsError),
    /// Retrying will not help: access denied, table missing or not a lease table, credentials
    /// rejected, a request DynamoDB refused.
    #[error("{0}")]
    Fatal(AwsError),
}

impl LeaseError {
    /// Sorts a classified failure, put into words as `error`; a failed condition is
    /// [`LeaseError::Lost`].
    pub fn sort(failure: &Failure, error: AwsError) -> LeaseError {
        if failure.code.as_deref() == Some("ConditionalCheckFailedException") {
            return LeaseError::Lost;
        }
        match failure.fault {
            Fault::Throttled => LeaseError::Throttled(error),
            // Role credentials are refreshed while running; one refresh that fails must not end
            // the input (missing credentials are found at start-up).
            Fault::Network | Fault::Service | Fault::Credentials => LeaseError::Transient(error),
            Fault::Region
            | Fault::Endpoint
            | Fault::CredentialsRejected
            | Fault::AccessDenied
            | Fault::NotFound
            | Fault::Rejected
            | Fault::Request => LeaseError::Fatal(error),
        }
    }

    /// A bounded label value: `lost`, `throttled`, `transient` or `fatal`.
    pub fn kind(&self) -> &'static str {
        match self {
            LeaseError::Lost => "lost",
            LeaseError::Throttled(_) => "throttled",
            LeaseError::Transient(_) => "transient",
            LeaseError::Fatal(_) => "fatal",
        }
    }

    /// What fixes it, for a one-line-per-fault error log; `None` for [`LeaseError::Lost`],
    /// which is routine in a fleet.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            LeaseError::Lost => None,
            LeaseError::Throttled(e) | LeaseError::Transient(e) | LeaseError::Fatal(e) => {
                Some(e.fault)
            }
        }
    }
}

/// The lease table's operations. Every write is conditional (see the module documentation);
/// a failed condition is [`LeaseError::Lost`].
pub trait LeaseTable: Send + Sync + 'static {
    /// Makes sure the table exists and is ACTIVE. A missing table is created (hash key
    /// `leaseKey`, on-demand billing) when `create` is true, and is a [`LeaseError::Fatal`]
    /// naming the table and `kinesis.create_lease_table` otherwise. A table whose key is not
    /// `leaseKey` (a string) is Fatal too.
    fn ensure(&self, create: bool) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Every lease (a consistent Scan, all pages); items that are not usable leases are
    /// left out and reported in [`Listing::skipped`].
    fn list(&self) -> impl Future<Output = Result<Listing, LeaseError>> + Send;

    /// Writes `lease` unless an item with its key exists: `Ok(false)` if one did.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<bool, LeaseError>> + Send;

    /// The owner's heartbeat: if `leaseOwner` and `leaseCounter` are still `lease`'s, bumps
    /// the counter. Returns the lease as now stored.
    fn renew(&self, lease: &Lease) -> impl Future<Output = Result<Lease, LeaseError>> + Send;

    /// Takes `lease` for `owner` (an unowned or expired lease, or a steal): if `leaseCounter`
    /// and `leaseOwner` are still as observed in `lease` (no owner: still none), sets
    /// `leaseOwner` and bumps the counter; `ownerSwitchesSinceCheckpoint` grows by one when the
    /// lease passes from another owner, as the KCL counts it. Returns the lease as now stored.
    fn take(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> impl Future<Output = Result<Lease, LeaseError>> + Send;

    /// Records progress: if `leaseOwner` and `leaseCounter` are still `lease`'s, sets
    /// `checkpoint` and `checkpointSubSequenceNumber`, zeroes `ownerSwitchesSinceCheckpoint`,
    /// drops any KCL pending checkpoint and bumps the counter; at [`Checkpoint::ShardEnd`] a
    /// non-empty `children` is stored as `childShardIds`. Returns the lease as now stored.
    fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        sub_sequence: u64,
        children: &[String],
    ) -> impl Future<Output = Result<Lease, LeaseError>> + Send;

    /// Gives `lease` up (graceful shutdown): if `leaseOwner` and `leaseCounter` are still
    /// `lease`'s, removes `leaseOwner` and bumps the counter, so another instance can take it
    /// at once instead of waiting for it to expire.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<(), LeaseError>> + Send;

    /// Deletes a finished lease if its `leaseCounter` is still `lease`'s.
    fn delete(&self, lease: &Lease) -> impl Future<Output = Result<(), LeaseError>> + Send;
}

/// [`LeaseTable`] over `aws-sdk-dynamodb`.
#[derive(Clone)]
pub struct DynamoLeaseTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// How errors name the table, its region and endpoint.
    target: Arc<Target>,
    /// Items per Scan page; `None` = DynamoDB's 1 MB pages.
    scan_limit: Option<i32>,
}

/// How messages name `table` in `region`, reached at `endpoint`.
fn target(table: &str, region: Option<String>, endpoint: Option<String>) -> Target {
    Target {
        service: "DynamoDB",
        resource: format!("lease table {table}"),
        region,
        endpoint,
        endpoint_env: "AWS_ENDPOINT_URL_DYNAMODB",
        region_setting: "kinesis.region in the config file",
        actions: ACTIONS,
    }
}

impl DynamoLeaseTable {
    /// Over a client set up elsewhere (tests); errors name the client's region.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        let table = table.into();
        let region = client.config().region().map(ToString::to_string);
        DynamoLeaseTable {
            target: Arc::new(target(&table, region, None)),
            client,
            table,
            scan_limit: None,
        }
    }

    /// The daemon's client for `table`, its set-up checked first: no credentials, no region or
    /// an unusable endpoint URL is a [`SetupError`], one line naming what is missing and how
    /// to provide it. Whether the table exists is [`LeaseTable::ensure`]'s question.
    pub async fn connect(table: &str, region: Option<&str>) -> Result<Self, SetupError> {
        let sdk = aws::load(region).await;
        let target = target(
            table,
            sdk.region().map(ToString::to_string),
            aws::configured_endpoint(&sdk, SERVICE_ID),
        );
        aws::check_setup(&sdk, &target).await?;
        Ok(DynamoLeaseTable {
            client: aws_sdk_dynamodb::Client::new(&sdk),
            table: table.to_owned(),
            target: Arc::new(target),
            scan_limit: None,
        })
    }

    /// Reads at most `items` items per Scan page (tests use it to cross page boundaries).
    pub fn with_scan_limit(mut self, items: i32) -> Self {
        self.scan_limit = Some(items);
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// `err` of the call `operation`, classified and put into words.
    fn failed<E>(&self, operation: &str, err: &SdkError<E, HttpResponse>) -> LeaseError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let failure = aws::classify(err);
        LeaseError::sort(&failure, self.target.explain(operation, &failure))
    }

    /// A Fatal error for something the table holds or says that albwatch cannot use.
    fn unusable(&self, message: String) -> LeaseError {
        LeaseError::Fatal(AwsError::new(Fault::Rejected, message))
    }

    /// The table's description; `None` if it does not exist.
    async fn describe(&self) -> Result<Option<TableDescription>, LeaseError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(out.table),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(self.failed("DescribeTable", &e)),
        }
    }

    async fn create_table(&self) -> Result<(), LeaseError> {
        let key = KeySchemaElement::builder()
            .attribute_name(LEASE_KEY)
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| self.unusable(format!("CreateTable request: {e}")))?;
        let definition = AttributeDefinition::builder()
            .attribute_name(LEASE_KEY)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| self.unusable(format!("CreateTable request: {e}")))?;
        let sent = self
            .client
            .create_table()
            .table_name(&self.table)
            .key_schema(key)
            .attribute_definitions(definition)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // Another instance created it first.
            Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
            Err(e) => Err(self.failed("CreateTable", &e)),
        }
    }

    /// Waits until the table is ACTIVE (it may not be listed yet right after CreateTable);
    /// then checks its key.
    async fn wait_active(&self, mut found: Option<TableDescription>) -> Result<(), LeaseError> {
        let deadline = Instant::now() + ACTIVE_LIMIT;
        let mut pause = FIRST_POLL;
        loop {
            if let Some(description) = &found {
                let status = description.table_status();
                match status {
                    Some(TableStatus::Active) => return self.check_key(description),
                    Some(TableStatus::Creating | TableStatus::Updating) | None => {}
                    Some(other) => {
                        return Err(self.unusable(format!(
                            "DynamoDB lease table {} is {}, not ACTIVE",
                            self.table,
                            other.as_str()
                        )));
                    }
                }
            }
            if Instant::now() >= deadline {
                let status = found
                    .as_ref()
                    .and_then(|d| d.table_status())
                    .map_or("not listed", TableStatus::as_str);
                return Err(LeaseError::Transient(AwsError::new(
                    Fault::Service,
                    format!(
                        "DynamoDB lease table {} is still {status} after {} s; retrying",
                        self.table,
                        ACTIVE_LIMIT.as_secs()
                    ),
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
            found = self.describe().await?;
        }
    }

    /// Whether the table is keyed as a lease table: hash key `leaseKey`, a string, no range key.
    fn check_key(&self, description: &TableDescription) -> Result<(), LeaseError> {
        let keys: Vec<String> = description
            .key_schema()
            .iter()
            .map(|k| format!("{} ({})", k.attribute_name(), k.key_type().as_str()))
            .collect();
        let hash_is_lease_key = matches!(
            description.key_schema(),
            [k] if k.attribute_name() == LEASE_KEY && k.key_type() == &KeyType::Hash
        );
        let lease_key_is_string = description.attribute_definitions().iter().any(|d| {
            d.attribute_name() == LEASE_KEY && d.attribute_type() == &ScalarAttributeType::S
        });
        if hash_is_lease_key && lease_key_is_string {
            Ok(())
        } else {
            Err(self.unusable(format!(
                "DynamoDB table {} is not a Kinesis lease table: its key is {}, not the string \
                 hash key {LEASE_KEY}; name another table or delete this one",
                self.table,
                keys.join(", ")
            )))
        }
    }

    /// A conditional UpdateItem on `lease`'s item that returns the item as now stored.
    async fn update(
        &self,
        operation: &str,
        lease: &Lease,
        update: Update,
    ) -> Result<Lease, LeaseError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(LEASE_KEY, s(&lease.key))
            .update_expression(update.expression())
            .condition_expression(update.condition)
            .return_values(ReturnValue::AllNew);
        for (name, attribute) in update.names {
            req = req.expression_attribute_names(name, attribute);
        }
        for (name, value) in update.values {
            req = req.expression_attribute_values(name, value);
        }
        let out = req.send().await.map_err(|e| self.failed(operation, &e))?;
        let item = out.attributes.unwrap_or_default();
        from_item(&item).map_err(|skipped| {
            self.unusable(format!(
                "DynamoDB lease table {}: {skipped} as stored after {operation}",
                self.table
            ))
        })
    }
}

impl LeaseTable for DynamoLeaseTable {
    async fn ensure(&self, create: bool) -> Result<(), LeaseError> {
        match self.describe().await? {
            Some(found) => self.wait_active(Some(found)).await,
            None if create => {
                self.create_table().await?;
                self.wait_active(None).await
            }
            None => {
                let failure = Failure::new(Fault::NotFound, "");
                let line = self.target.explain("DescribeTable", &failure).message;
                Err(LeaseError::Fatal(AwsError::new(
                    Fault::NotFound,
                    format!("{line}; or set {CREATE_SETTING} = true to have albwatch create it"),
                )))
            }
        }
    }

    async fn list(&self) -> Result<Listing, LeaseError> {
        let mut listing = Listing::default();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_limit(self.scan_limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.failed("Scan", &e))?;
            for item in out.items() {
                match from_item(item) {
                    Ok(lease) => listing.leases.push(lease),
                    Err(skipped) => listing.skipped.push(skipped),
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(listing),
            }
        }
    }

    async fn create(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(lease)))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", LEASE_KEY)
            .send()
            .await;
        match sent.map_err(|e| self.failed("PutItem", &e)) {
            Ok(_) => Ok(true),
            Err(LeaseError::Lost) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let mut u = Update::unchanged(lease);
        u.set("#n = :next");
        self.update("UpdateItem (renew)", lease, u).await
    }

    async fn take(&self, lease: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        let mut u = Update::unchanged(lease);
        u.set("#o = :new_owner");
        u.value(":new_owner", s(owner));
        u.set("#n = :next");
        if lease.owner.as_deref().is_some_and(|old| old != owner) {
            u.set("#sw = if_not_exists(#sw, :zero) + :one");
            u.name("#sw", OWNER_SWITCHES);
            u.value(":zero", n(0));
            u.value(":one", n(1));
        }
        self.update("UpdateItem (take)", lease, u).await
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        sub_sequence: u64,
        children: &[String],
    ) -> Result<Lease, LeaseError> {
        let mut u = Update::unchanged(lease);
        u.set("#n = :next, #cp = :cp, #sub = :sub, #sw = :zero");
        u.name("#cp", CHECKPOINT);
        u.name("#sub", CHECKPOINT_SUB_SEQUENCE);
        u.name("#sw", OWNER_SWITCHES);
        u.value(":cp", s(checkpoint.as_str()));
        u.value(":sub", n(sub_sequence));
        u.value(":zero", n(0));
        if *checkpoint == Checkpoint::ShardEnd && !children.is_empty() {
            u.set("#ch = :ch");
            u.name("#ch", CHILD_SHARD_IDS);
            u.value(":ch", string_set(children));
        }
        u.remove("#pc, #pcs");
        u.name("#pc", PENDING_CHECKPOINT);
        u.name("#pcs", PENDING_CHECKPOINT_SUB_SEQUENCE);
        self.update("UpdateItem (checkpoint)", lease, u).await
    }

    async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let mut u = Update::unchanged(lease);
        u.set("#n = :next");
        u.remove("#o");
        self.update("UpdateItem (release)", lease, u)
            .await
            .map(drop)
    }

    async fn delete(&self, lease: &Lease) -> Result<(), LeaseError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key(LEASE_KEY, s(&lease.key))
            .condition_expression("#n = :c")
            .expression_attribute_names("#n", LEASE_COUNTER)
            .expression_attribute_values(":c", n(lease.counter))
            .send()
            .await
            .map(drop)
            .map_err(|e| self.failed("DeleteItem", &e))
    }
}

/// A conditional UpdateItem being built: its SET and REMOVE clauses, its condition and the
/// placeholders they use (DynamoDB refuses placeholders an expression does not use).
struct Update {
    sets: Vec<&'static str>,
    removes: Vec<&'static str>,
    condition: String,
    names: HashMap<&'static str, &'static str>,
    values: HashMap<&'static str, AttributeValue>,
}

impl Update {
    /// Conditional on the item being as `lease` shows it: the same `leaseCounter`, and the
    /// same `leaseOwner` (none, when `lease` has none). `#n = :next` bumps the counter.
    fn unchanged(lease: &Lease) -> Update {
        let mut u = Update {
            sets: Vec::new(),
            removes: Vec::new(),
            condition: String::new(),
            names: HashMap::from([("#n", LEASE_COUNTER), ("#o", LEASE_OWNER)]),
            values: HashMap::from([
                (":c", n(lease.counter)),
                (":next", n(lease.counter.saturating_add(1))),
            ]),
        };
        u.condition = match &lease.owner {
            Some(owner) => {
                u.value(":owner", s(owner));
                "#n = :c AND #o = :owner".to_owned()
            }
            None => "#n = :c AND attribute_not_exists(#o)".to_owned(),
        };
        u
    }

    fn set(&mut self, clause: &'static str) {
        self.sets.push(clause);
    }

    fn remove(&mut self, clause: &'static str) {
        self.removes.push(clause);
    }

    fn name(&mut self, placeholder: &'static str, attribute: &'static str) {
        self.names.insert(placeholder, attribute);
    }

    fn value(&mut self, placeholder: &'static str, value: AttributeValue) {
        self.values.insert(placeholder, value);
    }

    /// `SET …` then `REMOVE …`.
    fn expression(&self) -> String {
        let mut e = String::new();
        if !self.sets.is_empty() {
            e.push_str("SET ");
            e.push_str(&self.sets.join(", "));
        }
        if !self.removes.is_empty() {
            if !e.is_empty() {
                e.push(' ');
            }
            e.push_str("REMOVE ");
            e.push_str(&self.removes.join(", "));
        }
        e
    }
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn n(number: u64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

/// A string set: sorted, without repeats (DynamoDB refuses repeats). Never call with an empty
/// slice: DynamoDB refuses empty sets.
fn string_set(items: &[String]) -> AttributeValue {
    let set: BTreeSet<&String> = items.iter().collect();
    AttributeValue::Ss(set.into_iter().cloned().collect())
}

/// `lease` as an item, as the KCL writes one: no `leaseOwner` when unowned, no empty sets.
fn to_item(lease: &Lease) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (LEASE_KEY.to_owned(), s(&lease.key)),
        (LEASE_COUNTER.to_owned(), n(lease.counter)),
        (CHECKPOINT.to_owned(), s(lease.checkpoint.as_str())),
        (CHECKPOINT_SUB_SEQUENCE.to_owned(), n(lease.sub_sequence)),
        (OWNER_SWITCHES.to_owned(), n(lease.owner_switches)),
    ]);
    if let Some(owner) = &lease.owner {
        item.insert(LEASE_OWNER.to_owned(), s(owner));
    }
    if !lease.parents.is_empty() {
        item.insert(PARENT_SHARD_IDS.to_owned(), string_set(&lease.parents));
    }
    if !lease.children.is_empty() {
        item.insert(CHILD_SHARD_IDS.to_owned(), string_set(&lease.children));
    }
    item
}

/// An item as a lease, or why it is not one albwatch can use. Only `leaseKey`, `leaseCounter`
/// and `checkpoint` are required; a missing sub-sequence number or owner-switch count is 0, a
/// missing set is empty, attributes albwatch does not use are ignored.
fn from_item(item: &HashMap<String, AttributeValue>) -> Result<Lease, Skipped> {
    let key = match item.get(LEASE_KEY) {
        Some(AttributeValue::S(k)) if !k.is_empty() => k.clone(),
        Some(other) => {
            return Err(Skipped {
                key: None,
                reason: format!("{LEASE_KEY} is {}, not a string", describe(other)),
            });
        }
        None => {
            return Err(Skipped {
                key: None,
                reason: "no leaseKey".to_owned(),
            });
        }
    };
    let skipped = |reason: String| Skipped {
        key: Some(key.clone()),
        reason,
    };
    if let Some(entity) = item.get(ENTITY_TYPE) {
        match entity {
            AttributeValue::S(t) if t == LEASE_ENTITY => {}
            other => {
                return Err(skipped(format!(
                    "not a lease: {ENTITY_TYPE} is {}",
                    describe(other)
                )));
            }
        }
    }
    let owner = match item.get(LEASE_OWNER) {
        None => None,
        Some(AttributeValue::S(o)) => Some(o.clone()),
        Some(other) => {
            return Err(skipped(format!(
                "{LEASE_OWNER} is {}, not a string",
                describe(other)
            )));
        }
    };
    let counter = number(item, LEASE_COUNTER)
        .map_err(&skipped)?
        .ok_or_else(|| skipped(format!("no {LEASE_COUNTER}")))?;
    let checkpoint = match item.get(CHECKPOINT) {
        Some(AttributeValue::S(text)) => Checkpoint::parse(text).ok_or_else(|| {
            skipped(format!(
                "{CHECKPOINT} {text:?} is neither a sequence number nor TRIM_HORIZON, LATEST, \
                 AT_TIMESTAMP or SHARD_END"
            ))
        })?,
        Some(other) => {
            return Err(skipped(format!(
                "{CHECKPOINT} is {}, not a string",
                describe(other)
            )));
        }
        None => return Err(skipped(format!("no {CHECKPOINT}"))),
    };
    Ok(Lease {
        owner,
        counter,
        checkpoint,
        sub_sequence: number(item, CHECKPOINT_SUB_SEQUENCE)
            .map_err(&skipped)?
            .unwrap_or(0),
        owner_switches: number(item, OWNER_SWITCHES).map_err(&skipped)?.unwrap_or(0),
        parents: strings(item, PARENT_SHARD_IDS).map_err(&skipped)?,
        children: strings(item, CHILD_SHARD_IDS).map_err(&skipped)?,
        key,
    })
}

/// The whole number ≥ 0 in `name`, `None` if absent.
fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Result<Option<u64>, String> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::N(text)) => text
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} {text:?} is not a whole number ≥ 0")),
        Some(other) => Err(format!("{name} is {}, not a number", describe(other))),
    }
}

/// The string set in `name`, sorted; empty if absent.
fn strings(item: &HashMap<String, AttributeValue>, name: &str) -> Result<Vec<String>, String> {
    match item.get(name) {
        None => Ok(Vec::new()),
        Some(AttributeValue::Ss(set)) => {
            let sorted: BTreeSet<&String> = set.iter().collect();
            Ok(sorted.into_iter().cloned().collect())
        }
        Some(other) => Err(format!("{name} is {}, not a string set", describe(other))),
    }
}

/// A value's type, with a short value for the scalar ones, for the reasons above.
fn describe(value: &AttributeValue) -> String {
    fn short(text: &str) -> String {
        match text.char_indices().nth(40) {
            Some((cut, _)) => format!("{:?}…", &text[..cut]),
            None => format!("{text:?}"),
        }
    }
    match value {
        AttributeValue::S(t) => format!("the string {}", short(t)),
        AttributeValue::N(t) => format!("the number {}", short(t)),
        AttributeValue::B(_) => "binary".to_owned(),
        AttributeValue::Bool(b) => format!("the boolean {b}"),
        AttributeValue::Null(_) => "null".to_owned(),
        AttributeValue::Ss(_) => "a string set".to_owned(),
        AttributeValue::Ns(_) => "a number set".to_owned(),
        AttributeValue::Bs(_) => "a binary set".to_owned(),
        AttributeValue::L(_) => "a list".to_owned(),
        AttributeValue::M(_) => "a map".to_owned(),
        _ => "a value of an unknown type".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn ss(items: &[&str]) -> AttributeValue {
        AttributeValue::Ss(items.iter().map(|s| (*s).to_owned()).collect())
    }

    fn full() -> Lease {
        Lease {
            key: "shardId-000000000002".to_owned(),
            owner: Some("albwatch-0".to_owned()),
            counter: 41,
            checkpoint: Checkpoint::Sequence(
                "49590338271490256608559692538361571095921575989136588898".to_owned(),
            ),
            sub_sequence: 3,
            owner_switches: 2,
            parents: vec![
                "shardId-000000000000".to_owned(),
                "shardId-000000000001".to_owned(),
            ],
            children: vec![
                "shardId-000000000003".to_owned(),
                "shardId-000000000004".to_owned(),
            ],
        }
    }

    #[test]
    fn a_lease_round_trips_through_its_item() {
        let lease = full();
        let stored = to_item(&lease);
        assert_eq!(stored[LEASE_COUNTER], AttributeValue::N("41".into()));
        assert_eq!(
            stored[PARENT_SHARD_IDS],
            ss(&["shardId-000000000000", "shardId-000000000001"])
        );
        assert_eq!(from_item(&stored), Ok(lease));

        for checkpoint in [
            Checkpoint::TrimHorizon,
            Checkpoint::Latest,
            Checkpoint::AtTimestamp,
            Checkpoint::ShardEnd,
        ] {
            let lease = Lease::new("shardId-000000000000", checkpoint);
            assert_eq!(from_item(&to_item(&lease)), Ok(lease));
        }
    }

    #[test]
    fn an_unowned_lease_has_no_owner_and_no_empty_sets() {
        let stored = to_item(&Lease::new("shardId-000000000000", Checkpoint::TrimHorizon));
        let mut names: Vec<&str> = stored.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                CHECKPOINT,
                CHECKPOINT_SUB_SEQUENCE,
                LEASE_COUNTER,
                LEASE_KEY,
                OWNER_SWITCHES
            ]
        );
        assert_eq!(stored[CHECKPOINT], s("TRIM_HORIZON"));
    }

    #[test]
    fn sets_are_written_sorted_without_repeats_and_read_sorted() {
        let mut lease = Lease::new("shardId-000000000009", Checkpoint::ShardEnd);
        lease.children = vec!["b".into(), "a".into(), "b".into()];
        assert_eq!(to_item(&lease)[CHILD_SHARD_IDS], ss(&["a", "b"]));
        let read = from_item(&item(&[
            (LEASE_KEY, s("k")),
            (LEASE_COUNTER, n(1)),
            (CHECKPOINT, s("LATEST")),
            (PARENT_SHARD_IDS, ss(&["z", "y"])),
        ]))
        .expect("a lease");
        assert_eq!(read.parents, ["y", "z"]);
    }

    #[test]
    fn an_item_as_the_kcl_writes_it_is_read() {
        // Newer KCL releases add entityType, hash-key ranges and throughput; a pending
        // checkpoint is KCL's own.
        let read = from_item(&item(&[
            (LEASE_KEY, s("shardId-000000000001")),
            (LEASE_OWNER, s("worker-7f3a")),
            (LEASE_COUNTER, n(1234)),
            (
                CHECKPOINT,
                s("49590338271490256608559692538361571095921575989136588898"),
            ),
            (CHECKPOINT_SUB_SEQUENCE, n(0)),
            (OWNER_SWITCHES, n(1)),
            (PARENT_SHARD_IDS, ss(&["shardId-000000000000"])),
            ("startingHashKey", s("0")),
            (
                "endingHashKey",
                s("170141183460469231731687303715884105727"),
            ),
            (PENDING_CHECKPOINT, s("4959")),
            (ENTITY_TYPE, s("LEASE")),
            ("throughputKBps", AttributeValue::N("12.5".into())),
        ]))
        .expect("a lease");
        assert_eq!(read.owner.as_deref(), Some("worker-7f3a"));
        assert_eq!(read.counter, 1234);
        assert_eq!(read.owner_switches, 1);
        assert_eq!(read.parents, ["shardId-000000000000"]);
        assert!(read.children.is_empty());
    }

    #[test]
    fn optional_numbers_default_to_zero() {
        let read = from_item(&item(&[
            (LEASE_KEY, s("k")),
            (LEASE_COUNTER, n(0)),
            (CHECKPOINT, s("SHARD_END")),
        ]))
        .expect("a lease");
        assert_eq!((read.sub_sequence, read.owner_switches), (0, 0));
        assert!(read.is_finished());
    }

    #[test]
    fn malformed_items_say_why_and_name_their_key_when_they_can() {
        let base = [
            (LEASE_KEY, s("shardId-000000000000")),
            (LEASE_COUNTER, n(1)),
            (CHECKPOINT, s("TRIM_HORIZON")),
        ];
        let with = |name: &str, value: Option<AttributeValue>| {
            let mut i = item(&base);
            match value {
                Some(v) => i.insert(name.to_owned(), v),
                None => i.remove(name),
            };
            from_item(&i).expect_err("malformed")
        };
        let no_key = with(LEASE_KEY, None);
        assert_eq!(no_key.key, None);
        assert_eq!(no_key.to_string(), "item without a leaseKey: no leaseKey");
        assert_eq!(
            with(LEASE_KEY, Some(n(7))).reason,
            "leaseKey is the number \"7\", not a string"
        );
        let cases = [
            (LEASE_COUNTER, None, "no leaseCounter"),
            (
                LEASE_COUNTER,
                Some(s("12")),
                "leaseCounter is the string \"12\", not a number",
            ),
            (
                LEASE_COUNTER,
                Some(AttributeValue::N("-1".into())),
                "leaseCounter \"-1\" is not a whole number ≥ 0",
            ),
            (
                OWNER_SWITCHES,
                Some(AttributeValue::N("1.5".into())),
                "ownerSwitchesSinceCheckpoint \"1.5\" is not a whole number ≥ 0",
            ),
            (CHECKPOINT, None, "no checkpoint"),
            (
                CHECKPOINT,
                Some(s("AFTER_SEQUENCE_NUMBER")),
                "checkpoint \"AFTER_SEQUENCE_NUMBER\" is neither a sequence number nor \
                 TRIM_HORIZON, LATEST, AT_TIMESTAMP or SHARD_END",
            ),
            (
                LEASE_OWNER,
                Some(AttributeValue::Null(true)),
                "leaseOwner is null, not a string",
            ),
            (
                CHILD_SHARD_IDS,
                Some(s("shardId-1")),
                "childShardIds is the string \"shardId-1\", not a string set",
            ),
            (
                ENTITY_TYPE,
                Some(s("WORKER_METRIC_STATS")),
                "not a lease: entityType is the string \"WORKER_METRIC_STATS\"",
            ),
        ];
        for (name, value, reason) in cases {
            let skipped = with(name, value);
            assert_eq!(skipped.key.as_deref(), Some("shardId-000000000000"));
            assert_eq!(skipped.reason, reason);
        }
    }

    #[test]
    fn checkpoints_parse_as_stored() {
        assert_eq!(Checkpoint::parse("LATEST"), Some(Checkpoint::Latest));
        assert_eq!(
            Checkpoint::parse("123"),
            Some(Checkpoint::Sequence("123".into()))
        );
        for bad in ["", "latest", "12a", " 12", "-5"] {
            assert_eq!(Checkpoint::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Checkpoint::AtTimestamp.to_string(), "AT_TIMESTAMP");
    }

    #[test]
    fn updates_are_conditional_on_the_observed_owner_and_counter() {
        let mut lease = full();
        let mut u = Update::unchanged(&lease);
        u.set("#n = :next");
        u.remove("#o");
        assert_eq!(u.expression(), "SET #n = :next REMOVE #o");
        assert_eq!(u.condition, "#n = :c AND #o = :owner");
        assert_eq!(u.values[":owner"], s("albwatch-0"));
        assert_eq!(u.values[":next"], n(42));
        lease.owner = None;
        let u = Update::unchanged(&lease);
        assert_eq!(u.condition, "#n = :c AND attribute_not_exists(#o)");
        assert!(!u.values.contains_key(":owner"));
    }

    fn failure(fault: Fault, code: Option<&str>) -> Failure {
        Failure {
            fault,
            code: code.map(str::to_owned),
            detail: String::new(),
        }
    }

    #[test]
    fn errors_sort_into_what_the_caller_does() {
        let sorted =
            |fault, code| LeaseError::sort(&failure(fault, code), AwsError::new(fault, "x"));
        assert_eq!(
            sorted(Fault::Rejected, Some("ConditionalCheckFailedException")),
            LeaseError::Lost
        );
        for code in [
            "ProvisionedThroughputExceededException",
            "ThrottlingException",
            "RequestLimitExceeded",
        ] {
            // As aws::classify sorts these codes.
            assert_eq!(sorted(Fault::Throttled, Some(code)).kind(), "throttled");
        }
        for fault in [Fault::Network, Fault::Service, Fault::Credentials] {
            assert_eq!(sorted(fault, None).kind(), "transient", "{fault:?}");
        }
        for fault in [
            Fault::AccessDenied,
            Fault::NotFound,
            Fault::CredentialsRejected,
            Fault::Rejected,
            Fault::Request,
        ] {
            assert_eq!(sorted(fault, None).kind(), "fatal", "{fault:?}");
        }
        assert_eq!(LeaseError::Lost.fault(), None);
    }
}
