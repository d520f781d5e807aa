//! The DynamoDB shard-lease table against a real DynamoDB API (dynalite): creating the table,
//! the KCL item layout, and the conditional writes that fence instances off each other's
//! leases — a write based on a stale view of a lease is `Lost`, never applied.

#[path = "support/dynalite.rs"]
mod dynalite;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use albwatch::input::aws::Fault;
use albwatch::input::kinesis::lease::table::{
    Checkpoint, DynamoLeaseTable, Lease, LeaseError, LeaseTable,
};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use dynalite::Dynalite;

const SHARD0: &str = "shardId-000000000000";
const SHARD1: &str = "shardId-000000000001";
const SHARD2: &str = "shardId-000000000002";
const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

/// The server and a table name no other test uses.
struct Fixture {
    /// Kept for the test's length: the last test to drop it stops the server.
    _server: Arc<Dynalite>,
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl Fixture {
    async fn new() -> Fixture {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let server = dynalite::shared();
        let client = dynalite::client(&server.endpoint).await;
        let table = format!("albwatch-leases-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        Fixture {
            _server: server,
            client,
            table,
        }
    }

    fn leases(&self) -> DynamoLeaseTable {
        DynamoLeaseTable::new(self.client.clone(), &self.table)
    }

    /// The lease table, created and ACTIVE.
    async fn ready(&self) -> DynamoLeaseTable {
        let t = self.leases();
        t.ensure(true).await.expect("create the lease table");
        t
    }

    /// The stored item of `key`, read consistently, as raw attributes.
    async fn item(&self, key: &str) -> Option<HashMap<String, AttributeValue>> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("leaseKey", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item
    }

    async fn put_raw(&self, item: &[(&str, AttributeValue)]) {
        let item = item
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .expect("raw PutItem");
    }
}

fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

fn n(number: &str) -> AttributeValue {
    AttributeValue::N(number.to_owned())
}

fn owned(key: &str, owner: &str, counter: u64) -> Lease {
    let mut lease = Lease::new(key, Checkpoint::TrimHorizon);
    lease.owner = Some(owner.to_owned());
    lease.counter = counter;
    lease
}

fn fatal_message(result: Result<impl std::fmt::Debug, LeaseError>) -> (Fault, String) {
    match result {
        Err(LeaseError::Fatal(e)) => (e.fault, e.message),
        other => panic!("expected a Fatal error, got {other:?}"),
    }
}

#[tokio::test]
async fn ensure_creates_a_missing_table_on_demand_only_when_allowed() {
    let f = Fixture::new().await;
    let t = f.leases();

    let (fault, message) = fatal_message(t.ensure(false).await);
    assert_eq!(fault, Fault::NotFound);
    assert!(
        message.starts_with(&format!(
            "DynamoDB lease table {} not found in us-east-1",
            f.table
        )) && message
            .ends_with("or set kinesis.create_lease_table = true to have albwatch create it"),
        "{message}"
    );

    t.ensure(true).await.expect("created");
    let described = f
        .client
        .describe_table()
        .table_name(&f.table)
        .send()
        .await
        .expect("DescribeTable")
        .table
        .expect("a description");
    assert_eq!(described.table_status().map(|s| s.as_str()), Some("ACTIVE"));
    let keys: Vec<(&str, &str)> = described
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().as_str()))
        .collect();
    assert_eq!(keys, [("leaseKey", "HASH")]);
    assert_eq!(
        described
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map(|b| b.as_str()),
        Some("PAY_PER_REQUEST")
    );

    // An existing table is fine either way, and creating twice is no error.
    t.ensure(false).await.expect("exists");
    t.ensure(true).await.expect("exists");
}

#[tokio::test]
async fn ensure_refuses_a_table_keyed_otherwise() {
    let f = Fixture::new().await;
    f.client
        .create_table()
        .table_name(&f.table)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("definition"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("CreateTable");
    let (_, message) = fatal_message(f.leases().ensure(true).await);
    assert_eq!(
        message,
        format!(
            "DynamoDB table {} is not a Kinesis lease table: its key is id (HASH), not the \
             string hash key leaseKey; name another table or delete this one",
            f.table
        )
    );
}

#[tokio::test]
async fn create_writes_a_lease_once() {
    let f = Fixture::new().await;
    let t = f.ready().await;
    let mut lease = Lease::new(SHARD1, Checkpoint::TrimHorizon);
    lease.parents = vec![SHARD0.to_owned()];
    assert!(t.create(&lease).await.expect("create"));

    let mut other = Lease::new(SHARD1, Checkpoint::Latest);
    other.owner = Some("b".to_owned());
    assert!(!t.create(&other).await.expect("create again"));

    let listing = t.list().await.expect("list");
    assert_eq!(listing.leases, [lease]);
    assert!(listing.skipped.is_empty());
    let item = f.item(SHARD1).await.expect("stored");
    assert_eq!(item["checkpoint"], s("TRIM_HORIZON"));
    assert_eq!(item["leaseCounter"], n("0"));
    assert_eq!(
        item["parentShardId"],
        AttributeValue::Ss(vec![SHARD0.to_owned()])
    );
    assert!(!item.contains_key("leaseOwner"));
    assert!(!item.contains_key("childShardIds"));
}

#[tokio::test]
async fn take_renew_steal_and_fencing() {
    let f = Fixture::new().await;
    let t = f.ready().await;
    let unowned = Lease::new(SHARD0, Checkpoint::TrimHorizon);
    assert!(t.create(&unowned).await.expect("create"));

    // A takes the unowned lease: no owner switch counted, as the KCL counts them.
    let a1 = t.take(&unowned, "a").await.expect("take");
    assert_eq!(a1.owner.as_deref(), Some("a"));
    assert_eq!((a1.counter, a1.owner_switches), (1, 0));
    // Someone else acting on the same (now stale) unowned view loses.
    assert_eq!(t.take(&unowned, "b").await, Err(LeaseError::Lost));

    let a2 = t.renew(&a1).await.expect("renew");
    assert_eq!(a2.counter, 2);
    assert_eq!(a2.owner.as_deref(), Some("a"));
    // A renew from the old counter is stale.
    assert_eq!(t.renew(&a1).await, Err(LeaseError::Lost));
    // So is one from an instance that does not own it, at the right counter.
    assert_eq!(t.renew(&owned(SHARD0, "b", 2)).await, Err(LeaseError::Lost));

    // B steals with what it observed: owner a, counter 2.
    let b3 = t.take(&a2, "b").await.expect("steal");
    assert_eq!(b3.owner.as_deref(), Some("b"));
    assert_eq!((b3.counter, b3.owner_switches), (3, 1));

    // A does not know yet: its checkpoint and renew are fenced off, nothing changes.
    let seq = Checkpoint::Sequence(SEQ.to_owned());
    assert_eq!(t.checkpoint(&a2, &seq, 0, &[]).await, Err(LeaseError::Lost));
    assert_eq!(t.renew(&a2).await, Err(LeaseError::Lost));
    assert_eq!(t.release(&a2).await, Err(LeaseError::Lost));
    let listing = t.list().await.expect("list");
    assert_eq!(listing.leases, std::slice::from_ref(&b3));

    // B's checkpoint lands, resets the owner switches and bumps the counter.
    let b4 = t.checkpoint(&b3, &seq, 7, &[]).await.expect("checkpoint");
    assert_eq!(b4.checkpoint, seq);
    assert_eq!(b4.sub_sequence, 7);
    assert_eq!((b4.counter, b4.owner_switches), (4, 0));
    let item = f.item(SHARD0).await.expect("stored");
    assert_eq!(item["checkpoint"], s(SEQ));
    assert_eq!(item["checkpointSubSequenceNumber"], n("7"));
}

#[tokio::test]
async fn shard_end_stores_the_children_and_release_frees_the_lease() {
    let f = Fixture::new().await;
    let t = f.ready().await;
    let mut parent = Lease::new(SHARD0, Checkpoint::Sequence(SEQ.to_owned()));
    parent.owner = Some("a".to_owned());
    parent.counter = 10;
    assert!(t.create(&parent).await.expect("create"));

    // Children are stored only at SHARD_END.
    let children = [SHARD2.to_owned(), SHARD1.to_owned()];
    let mid = t
        .checkpoint(&parent, &Checkpoint::Sequence("5".into()), 0, &children)
        .await
        .expect("checkpoint");
    assert!(mid.children.is_empty());
    assert!(
        !f.item(SHARD0)
            .await
            .expect("stored")
            .contains_key("childShardIds")
    );

    let ended = t
        .checkpoint(&mid, &Checkpoint::ShardEnd, 0, &children)
        .await
        .expect("SHARD_END");
    assert!(ended.is_finished());
    assert_eq!(ended.children, [SHARD1, SHARD2]);
    assert_eq!(ended.counter, 12);
    let item = f.item(SHARD0).await.expect("stored");
    assert_eq!(item["checkpoint"], s("SHARD_END"));
    let AttributeValue::Ss(mut stored) = item["childShardIds"].clone() else {
        panic!(
            "childShardIds is not a string set: {:?}",
            item["childShardIds"]
        );
    };
    stored.sort();
    assert_eq!(stored, [SHARD1, SHARD2]);

    t.release(&ended).await.expect("release");
    let item = f.item(SHARD0).await.expect("stored");
    assert!(!item.contains_key("leaseOwner"), "{item:?}");
    assert_eq!(item["leaseCounter"], n("13"));
    let released = t.list().await.expect("list").leases.remove(0);
    assert_eq!(released.owner, None);
    assert_eq!(released.children, [SHARD1, SHARD2]);
    // Anyone may take it at once, from what they see: no owner, counter 13.
    let b = t
        .take(&released, "b")
        .await
        .expect("take the released lease");
    assert_eq!((b.counter, b.owner_switches), (14, 0));
}

#[tokio::test]
async fn delete_is_conditional_on_the_counter() {
    let f = Fixture::new().await;
    let t = f.ready().await;
    let lease = Lease::new(SHARD0, Checkpoint::ShardEnd);
    assert!(t.create(&lease).await.expect("create"));
    let taken = t.take(&lease, "a").await.expect("take");

    assert_eq!(t.delete(&lease).await, Err(LeaseError::Lost));
    assert!(f.item(SHARD0).await.is_some());
    t.delete(&taken).await.expect("delete");
    assert!(f.item(SHARD0).await.is_none());
    // Gone: any write to it fails its condition.
    assert_eq!(t.delete(&taken).await, Err(LeaseError::Lost));
    assert_eq!(t.renew(&taken).await, Err(LeaseError::Lost));
    assert!(t.list().await.expect("list").leases.is_empty());
}

#[tokio::test]
async fn list_reads_every_page_and_round_trips_every_field() {
    let f = Fixture::new().await;
    // Two items per Scan page: seven leases take four pages.
    let t = f.ready().await.with_scan_limit(2);
    let checkpoints = [
        Checkpoint::TrimHorizon,
        Checkpoint::Latest,
        Checkpoint::AtTimestamp,
        Checkpoint::ShardEnd,
        Checkpoint::Sequence(SEQ.to_owned()),
        Checkpoint::Sequence("1".to_owned()),
        Checkpoint::Sequence(u64::MAX.to_string()),
    ];
    let mut written = Vec::new();
    for (i, checkpoint) in checkpoints.into_iter().enumerate() {
        let i = i as u64;
        let mut lease = Lease::new(format!("shardId-{i:012}"), checkpoint);
        lease.owner = i.is_multiple_of(2).then(|| format!("albwatch-{i}"));
        lease.counter = i * 1000;
        lease.sub_sequence = i;
        lease.owner_switches = i + 1;
        if i > 0 {
            lease.parents = vec![format!("shardId-{:012}", i - 1)];
        }
        if i == 3 {
            lease.children = vec!["shardId-000000000100".into(), "shardId-000000000101".into()];
        }
        if i == 6 {
            lease.counter = u64::MAX;
        }
        assert!(t.create(&lease).await.expect("create"));
        written.push(lease);
    }
    let listing = t.list().await.expect("list");
    assert!(listing.skipped.is_empty(), "{:?}", listing.skipped);
    let mut read = listing.leases;
    read.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(read, written);
}

#[tokio::test]
async fn malformed_items_are_skipped_and_reported() {
    let f = Fixture::new().await;
    let t = f.ready().await;
    let good = Lease::new(SHARD0, Checkpoint::Latest);
    assert!(t.create(&good).await.expect("create"));
    f.put_raw(&[
        ("leaseKey", s(SHARD1)),
        ("leaseCounter", s("twelve")),
        ("checkpoint", s("LATEST")),
    ])
    .await;
    f.put_raw(&[("leaseKey", s(SHARD2)), ("leaseCounter", n("3"))])
        .await;
    // An entry KCL 3.4 and later keep in the lease table beside the leases.
    f.put_raw(&[
        ("leaseKey", s("worker-7f3a")),
        ("entityType", s("WORKER_METRIC_STATS")),
    ])
    .await;

    let listing = t.list().await.expect("list");
    assert_eq!(listing.leases, [good]);
    let mut skipped: Vec<String> = listing.skipped.iter().map(ToString::to_string).collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "item \"shardId-000000000001\": leaseCounter is the string \"twelve\", not a number",
            "item \"shardId-000000000002\": no checkpoint",
            "item \"worker-7f3a\": not a lease: entityType is the string \"WORKER_METRIC_STATS\"",
        ]
    );
}

#[tokio::test]
async fn a_missing_table_and_an_unreachable_endpoint_are_sorted() {
    let f = Fixture::new().await;
    // Never created: every call is Fatal, naming the table.
    let (fault, message) = fatal_message(f.leases().list().await);
    assert_eq!(fault, Fault::NotFound);
    assert!(
        message.starts_with(&format!("DynamoDB lease table {} not found", f.table)),
        "{message}"
    );

    // Nothing listens on port 1; the SDK's own retries are off so the test does not wait.
    let conf = f
        .client
        .config()
        .to_builder()
        .endpoint_url("http://127.0.0.1:1")
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    let unreachable = DynamoLeaseTable::new(aws_sdk_dynamodb::Client::from_conf(conf), "t");
    match unreachable.renew(&owned(SHARD0, "a", 1)).await {
        Err(LeaseError::Transient(e)) => {
            assert_eq!(e.fault, Fault::Network);
            assert!(
                e.message.starts_with("cannot reach DynamoDB in us-east-1"),
                "{}",
                e.message
            );
        }
        other => panic!("expected Transient, got {other:?}"),
    }
}
