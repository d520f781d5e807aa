//! A fleet of real `albwatch run` processes sharing one Kinesis stream through shard leases in
//! a DynamoDB table (the Kinesis Client Library's schema): kinesalite and dynalite, installed by
//! `scripts/install-test-deps.sh` under `target/test-deps/` and started per test on free
//! loopback ports (a missing install fails the tests, it never skips them). Records are whole
//! ALB lines from `albwatch::traffic::corpus`, ten a record, put with explicit hash keys so the
//! test knows every shard's lines and sequence numbers; what each process counted comes from
//! its `/metrics`, who holds what and where each shard's checkpoint stands from a consistent
//! scan of the lease table.
//!
//! What is checked, as operators rely on it: three instances on eight shards settle at 3/3/2
//! and, once settled, count every line exactly once; an instance killed with SIGKILL has its
//! leases taken by the others after the failover time, which re-read exactly what it had read
//! past its last checkpoint and lose nothing; an instance paused (SIGSTOP) past the failover
//! time finds its lease taken when it resumes, counts it lost, says so and stops reading,
//! while the taker counts every line from the checkpoint on; a shard split while the fleet
//! reads has its children read only after the parent's end, every line once.
//!
//! Lease handovers are KCL's: a lease changes hands without the old owner's help, so the new
//! owner resumes at the lease's checkpoint and re-reads whatever the old owner had read past
//! it. The tests therefore take a baseline once the fleet is settled and every checkpoint has
//! caught up (nothing read past a checkpoint), and count exactly from there; before a baseline
//! they bound the excess by the handovers seen.
//!
//! Lease expiry is time-based (a counter standing still for the failover time), so the tests
//! of this file run one at a time: several fleets of debug builds starving each other of CPU
//! would expire leases nobody meant to give up. No assertion depends on how long anything took;
//! every wait polls with a deadline far beyond what the work needs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

#[path = "support/daemon.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod daemon;
use daemon::{BIN, Daemon, aws_env};

#[path = "support/exposition.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod exposition;
use exposition::{family_sum, sample};

#[path = "support/scratch.rs"]
#[allow(dead_code, reason = "shared by several test binaries")]
mod scratch;
use scratch::TempDir;

#[path = "support/kinesalite.rs"]
#[allow(dead_code, reason = "shared with tests/kinesis.rs and the benchmark")]
mod kinesalite;
use kinesalite::{Kinesalite, create_stream_with, wait_active};

#[path = "support/dynalite.rs"]
#[allow(dead_code, reason = "shared with tests/lease_table.rs")]
mod dynalite;
use dynalite::Dynalite;

const STREAM: &str = "fleet";
const TABLE: &str = "albwatch-leases";

/// How long a test waits for the fleet to reach a state it must reach: far beyond what the
/// work takes (a failover is 2–3 s here), so only a hang, a lost lease or a lost line gets
/// there.
const LIMIT: Duration = Duration::from_secs(60);

/// ALB lines per Kinesis record.
const LINES_PER_RECORD: u64 = 10;

/// The wording of the log line of a lost lease (`lease/fleet.rs`).
const LOST_LOG: &str = "lost (";

/// One fleet test at a time (see the module documentation). A tokio mutex: it is held across
/// the test's awaits.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The lease timings of one instance.
#[derive(Clone, Copy)]
struct Timing {
    failover_ms: u64,
    renew_ms: u64,
    take_ms: u64,
}

/// Failover 3 s, renewals every second, a take round every second.
const STEADY: Timing = Timing {
    failover_ms: 3_000,
    renew_ms: 1_000,
    take_ms: 1_000,
};

// ---------------------------------------------------------------------------------------------
// The servers and the stream

/// kinesalite and dynalite of one test, their clients, and the test's directory.
struct Servers {
    kinesalite: Kinesalite,
    dynalite: Dynalite,
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    dir: TempDir,
}

impl Servers {
    /// Both emulators, and a stream of `shards` shards.
    async fn start(name: &str, shards: i32) -> Servers {
        let kinesalite = Kinesalite::start();
        let dynalite = Dynalite::start();
        let kinesis = kinesalite::client(&kinesalite.endpoint).await;
        let dynamodb = dynalite::client(&dynalite.endpoint).await;
        create_stream_with(&kinesis, STREAM, shards).await;
        Servers {
            kinesalite,
            dynalite,
            kinesis,
            dynamodb,
            dir: TempDir::new("fleet", name),
        }
    }

    /// The open shards, each with an explicit hash key in the middle of its range.
    async fn open_shards(&self) -> Vec<Target> {
        let listed = self
            .kinesis
            .list_shards()
            .stream_name(STREAM)
            .send()
            .await
            .expect("ListShards");
        listed
            .shards()
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_none())
            })
            .map(|s| {
                let range = s.hash_key_range().expect("hash key range");
                let lo: u128 = range.starting_hash_key().parse().expect("hash key");
                let hi: u128 = range.ending_hash_key().parse().expect("hash key");
                Target {
                    shard: s.shard_id().to_owned(),
                    hash: (lo + (hi - lo) / 2).to_string(),
                }
            })
            .collect()
    }

    /// Splits `shard` in the middle of its hash range; returns the children's ids once the
    /// stream is ACTIVE again.
    async fn split(&self, shard: &Target) -> Vec<String> {
        self.kinesis
            .split_shard()
            .stream_name(STREAM)
            .shard_to_split(&shard.shard)
            .new_starting_hash_key(&shard.hash)
            .send()
            .await
            .expect("SplitShard");
        wait_active(&self.kinesis, STREAM).await;
        let listed = self
            .kinesis
            .list_shards()
            .stream_name(STREAM)
            .send()
            .await
            .expect("ListShards");
        let children: Vec<String> = listed
            .shards()
            .iter()
            .filter(|s| s.parent_shard_id() == Some(shard.shard.as_str()))
            .map(|s| s.shard_id().to_owned())
            .collect();
        assert_eq!(
            children.len(),
            2,
            "children of {}: {children:?}",
            shard.shard
        );
        children
    }

    /// Every lease in the table (a consistent scan), by shard.
    async fn leases(&self) -> BTreeMap<String, LeaseRow> {
        let mut out = BTreeMap::new();
        let mut start = None;
        loop {
            let page = self
                .dynamodb
                .scan()
                .table_name(TABLE)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan the lease table");
            for item in page.items() {
                let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
                let key = text("leaseKey").expect("leaseKey");
                out.insert(
                    key,
                    LeaseRow {
                        owner: text("leaseOwner"),
                        checkpoint: text("checkpoint"),
                    },
                );
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return out,
            }
        }
    }

    /// Waits until the fleet shows `settled` (`what`), then until every checkpoint has caught
    /// up, and returns the expositions once it is still settled: the baseline to count
    /// exactly from, with nothing read past a checkpoint.
    async fn baseline(
        &self,
        ledger: &Ledger,
        members: &mut [Member],
        what: &str,
        settled: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        wait_until(members, what, &settled).await;
        self.wait_checkpointed(ledger, &[], members).await;
        wait_until(members, &format!("still {what}"), settled).await
    }

    /// Waits until every checkpoint is at the last record put (see [`Self::wait_checkpointed`])
    /// and returns the expositions then: the counts are final.
    async fn caught_up(
        &self,
        ledger: &Ledger,
        ended: &[&str],
        members: &mut [Member],
    ) -> Vec<String> {
        self.wait_checkpointed(ledger, ended, members).await;
        wait_until(members, "the end", |_| true).await
    }

    /// Waits until every shard's lease checkpoint is at the last record put into it (or, for
    /// the shards in `ended`, at `SHARD_END` or deleted), and returns the table: then nothing
    /// any instance has read lies past a checkpoint, and nothing put is unread. Fails at once
    /// if a member exits.
    async fn wait_checkpointed(
        &self,
        ledger: &Ledger,
        ended: &[&str],
        members: &mut [Member],
    ) -> BTreeMap<String, LeaseRow> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let table = self.leases().await;
            let caught_up = ledger.shards().all(|shard| {
                let row = table.get(shard);
                if ended.contains(&shard) {
                    row.is_none_or(|r| r.checkpoint.as_deref() == Some("SHARD_END"))
                } else {
                    row.and_then(|r| r.checkpoint.as_deref()) == ledger.last(shard)
                }
            });
            if caught_up {
                return table;
            }
            for m in members.iter_mut() {
                m.check_alive("the checkpoints to catch up");
            }
            assert!(
                Instant::now() < deadline,
                "the lease checkpoints never reached the last records put within {LIMIT:?}:\n\
                 table: {table:#?}\nlast put: {:#?}\n{}",
                ledger.lasts(),
                describe(members)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One lease as the tests read it.
#[derive(Debug, Clone)]
struct LeaseRow {
    owner: Option<String>,
    checkpoint: Option<String>,
}

/// An open shard and an explicit hash key that lands in it.
#[derive(Debug, Clone)]
struct Target {
    shard: String,
    hash: String,
}

/// Every record put: per shard, in put order, its sequence number and lines.
#[derive(Default)]
struct Ledger {
    put: BTreeMap<String, Vec<(String, u64)>>,
}

impl Ledger {
    fn shards(&self) -> impl Iterator<Item = &str> {
        self.put.keys().map(String::as_str)
    }

    fn total(&self) -> u64 {
        self.put.values().flatten().map(|(_, n)| n).sum()
    }

    fn on(&self, shard: &str) -> u64 {
        self.put
            .get(shard)
            .map_or(0, |records| records.iter().map(|(_, n)| n).sum())
    }

    /// Lines put per shard: a snapshot to count later puts from.
    fn per_shard(&self) -> BTreeMap<String, u64> {
        self.put.keys().map(|s| (s.clone(), self.on(s))).collect()
    }

    fn last(&self, shard: &str) -> Option<&str> {
        self.put
            .get(shard)
            .and_then(|r| r.last())
            .map(|(seq, _)| seq.as_str())
    }

    fn lasts(&self) -> BTreeMap<&str, &str> {
        self.shards()
            .filter_map(|s| Some((s, self.last(s)?)))
            .collect()
    }

    /// Lines of `shard` in records after the lease checkpoint `checkpoint`: all of them at
    /// `TRIM_HORIZON`, none at `SHARD_END`.
    fn after(&self, shard: &str, checkpoint: &str) -> u64 {
        let records = self.put.get(shard).map_or(&[][..], Vec::as_slice);
        match checkpoint {
            "TRIM_HORIZON" => records.iter().map(|(_, n)| n).sum(),
            "SHARD_END" => 0,
            seq => records
                .iter()
                .filter(|(s, _)| later(s, seq))
                .map(|(_, n)| n)
                .sum(),
        }
    }
}

/// Whether decimal sequence number `a` comes after `b`.
fn later(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a) > (b.len(), b)
}

/// A seed per record, so every record's lines differ from every other's.
fn next_seed() -> u64 {
    static SEED: AtomicU64 = AtomicU64::new(1);
    SEED.fetch_add(1, Ordering::Relaxed)
}

/// One PutRecords call of `records_per_shard` records of [`LINES_PER_RECORD`] lines into each
/// target, each checked to land in its shard and logged. Returns the lines put.
async fn put_round(
    servers: &Servers,
    targets: &[Target],
    records_per_shard: usize,
    ledger: &mut Ledger,
) -> u64 {
    let mut entries = Vec::new();
    let mut meant = Vec::new();
    for _ in 0..records_per_shard {
        for t in targets {
            let data = albwatch::traffic::corpus(next_seed(), LINES_PER_RECORD as usize);
            assert_eq!(
                data.iter().filter(|&&b| b == b'\n').count() as u64,
                LINES_PER_RECORD
            );
            entries.push(
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(data))
                    .partition_key("pk")
                    .explicit_hash_key(&t.hash)
                    .build()
                    .expect("entry"),
            );
            meant.push(t.shard.clone());
        }
    }
    let out = servers
        .kinesis
        .put_records()
        .stream_name(STREAM)
        .set_records(Some(entries))
        .send()
        .await
        .expect("PutRecords");
    assert_eq!(out.failed_record_count(), Some(0));
    for (record, shard) in out.records().iter().zip(&meant) {
        assert_eq!(record.shard_id(), Some(shard.as_str()), "explicit hash key");
        let seq = record
            .sequence_number()
            .expect("sequence number")
            .to_owned();
        ledger
            .put
            .entry(shard.clone())
            .or_default()
            .push((seq, LINES_PER_RECORD));
    }
    meant.len() as u64 * LINES_PER_RECORD
}

// ---------------------------------------------------------------------------------------------
// The instances

/// One `albwatch run --kinesis-stream` of the fleet, worker id `name`, pointed at the test's
/// emulators through the standard AWS environment (see [`Daemon`]).
type Member = Daemon;

impl Member {
    fn start(servers: &Servers, name: &str, timing: Timing) -> Member {
        let config = servers.dir.join(&format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[kinesis]\nstart = \"trim_horizon\"\nlease_table = \"{TABLE}\"\n\
                 create_lease_table = true\nworker_id = \"{name}\"\nfailover_ms = {}\n\
                 renew_interval_ms = {}\ntake_interval_ms = {}\nmax_leases_to_steal = 1\n\
                 shard_discovery_secs = 1\npoll_interval_ms = 200\n\
                 checkpoint_interval_secs = 1\n\n[event_time]\nidle_timeout_secs = 2\n",
                timing.failover_ms, timing.renew_ms, timing.take_ms
            ),
        )
        .expect("config");
        let mut cmd = Command::new(BIN);
        cmd.args([
            "run",
            "--admin-addr",
            "127.0.0.1:0",
            "--kinesis-stream",
            STREAM,
        ])
        .arg("--config")
        .arg(&config)
        .current_dir(servers.dir.path());
        aws_env(
            &mut cmd,
            &[
                ("AWS_ENDPOINT_URL_KINESIS", &servers.kinesalite.endpoint),
                ("AWS_ENDPOINT_URL_DYNAMODB", &servers.dynalite.endpoint),
            ],
        );
        Daemon::spawn(name, &mut cmd)
    }
}

/// SIGTERM to every member at once, then each must exit 0; afterwards no lease has an owner
/// (every instance released what it held, and none took a lease once it was stopping).
async fn terminate_all(servers: &Servers, mut members: Vec<Member>) {
    for m in &members {
        m.signal("TERM");
    }
    for m in &mut members {
        let status = m.exit_status(LIMIT);
        assert!(
            status.success(),
            "albwatch {} after SIGTERM: {status}; stderr:\n{}",
            m.name,
            m.stderr()
        );
    }
    let table = servers.leases().await;
    assert!(
        table.values().all(|l| l.owner.is_none()),
        "leases still owned after every instance stopped: {table:#?}"
    );
}

/// Polls every member's `/metrics` until `done` holds for the expositions (in member order),
/// at most [`LIMIT`]; returns them. Fails at once if a member exits.
async fn wait_until(
    members: &mut [Member],
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut bodies = Vec::new();
        for m in members.iter_mut() {
            m.check_alive(what);
            if let Some(body) = m.metrics() {
                bodies.push(body);
            }
        }
        if bodies.len() == members.len() && done(&bodies) {
            return bodies;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet never showed {what} within {LIMIT:?}:\n{}",
            describe(members)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each member's lease, shard and line samples and the end of its stderr: what a failure
/// message needs.
fn describe(members: &[Member]) -> String {
    members
        .iter()
        .map(|m| {
            let samples = m
                .metrics()
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.starts_with("albwatch_kinesis_lease")
                            || l.starts_with("albwatch_kinesis_shards_owned")
                            || l.starts_with("albwatch_kinesis_lines_total")
                            || l.starts_with("albwatch_lines_total"))
                })
                .collect::<Vec<_>>()
                .join("\n");
            let log = m.stderr();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            format!(
                "--- {}:\n{samples}\nstderr (last lines):\n{}",
                m.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Reading the expositions

fn held(body: &str) -> f64 {
    sample(body, "albwatch_kinesis_leases_held")
}

fn owned(body: &str) -> f64 {
    sample(body, "albwatch_kinesis_shards_owned")
}

/// Lines read from the stream, over every shard.
fn lines(body: &str) -> f64 {
    family_sum(body, "albwatch_kinesis_lines_total")
}

fn shard_lines(body: &str, shard: &str) -> f64 {
    sample(
        body,
        &format!("albwatch_kinesis_lines_total{{shard=\"{shard}\"}}"),
    )
}

fn event(body: &str, event: &str) -> f64 {
    sample(
        body,
        &format!("albwatch_kinesis_lease_events_total{{event=\"{event}\"}}"),
    )
}

/// `f` summed over the expositions.
fn fleet(bodies: &[String], f: impl Fn(&str) -> f64) -> f64 {
    bodies.iter().map(|b| f(b)).sum()
}

/// Every member holds as many leases as it reads shards: its shard tasks follow its leases.
fn reading_what_it_holds(bodies: &[String]) -> bool {
    bodies.iter().all(|b| held(b) == owned(b))
}

/// Whether the fleet has counted, on every shard, at least the lines put there since `put0`
/// (lines per shard when `base` was scraped).
fn counted_since(
    bodies: &[String],
    base: &[String],
    ledger: &Ledger,
    put0: &BTreeMap<String, u64>,
) -> bool {
    ledger.shards().all(|s| {
        let put = ledger.on(s) - put0.get(s).copied().unwrap_or(0);
        fleet(bodies, |b| shard_lines(b, s)) - fleet(base, |b| shard_lines(b, s)) >= put as f64
    })
}

/// Lease handovers among live instances: every take or steal after a lease's first take.
fn handovers(bodies: &[String], first_takes: f64) -> f64 {
    fleet(bodies, |b| event(b, "stolen")) + fleet(bodies, |b| event(b, "taken")) - first_takes
}

/// The three members settled on eight shards: 3/3/2, each reading what it holds.
fn settled_on_eight(bodies: &[String]) -> bool {
    bodies.iter().all(|b| held(b) <= 3.0)
        && fleet(bodies, held) == 8.0
        && reading_what_it_holds(bodies)
}

// ---------------------------------------------------------------------------------------------
// The tests

/// Three instances started on an 8-shard stream already holding records settle at 3/3/2
/// leases, and nothing put is lost while they do; once settled (every checkpoint caught up),
/// records put in steps are counted exactly once, shard by shard, with no lease changing
/// hands. SIGTERM stops each with exit 0 and its leases released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_settle_on_eight_shards_and_count_each_line_once() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let servers = Servers::start("converge", 8).await;
    let targets = servers.open_shards().await;
    assert_eq!(targets.len(), 8);
    let mut ledger = Ledger::default();
    let prefilled = put_round(&servers, &targets, 5, &mut ledger).await;

    let mut members: Vec<Member> = ["a", "b", "c"]
        .into_iter()
        .map(|name| Member::start(&servers, name, STEADY))
        .collect();
    let base = servers
        .baseline(&ledger, &mut members, "3/3/2 leases", settled_on_eight)
        .await;
    let mut held_now: Vec<f64> = base.iter().map(|b| held(b)).collect();
    held_now.sort_by(f64::total_cmp);
    assert_eq!(held_now, [2.0, 3.0, 3.0]);

    // Before the baseline: every prefilled line counted; more only through handovers while
    // settling, each re-reading at most its shard's 50 lines from the lease's checkpoint.
    let counted = fleet(&base, lines);
    let moved = handovers(&base, 8.0);
    assert!(
        counted >= prefilled as f64,
        "lost {} of {prefilled} prefilled lines",
        prefilled as f64 - counted
    );
    assert!(
        counted - prefilled as f64 <= moved * (5 * LINES_PER_RECORD) as f64,
        "{counted} lines counted of {prefilled} put with {moved} handovers"
    );
    eprintln!(
        "settled: {counted} lines counted of {prefilled} prefilled, {moved} leases handed over"
    );

    // Settled: rounds of records, each counted before the next.
    let put0 = ledger.per_shard();
    for _ in 0..5 {
        put_round(&servers, &targets, 2, &mut ledger).await;
        wait_until(&mut members, "the round counted", |b| {
            counted_since(b, &base, &ledger, &put0)
        })
        .await;
    }
    let end = servers.caught_up(&ledger, &[], &mut members).await;
    for t in &targets {
        let s = t.shard.as_str();
        let counted = fleet(&end, |b| shard_lines(b, s)) - fleet(&base, |b| shard_lines(b, s));
        assert_eq!(
            counted,
            (ledger.on(s) - put0[s]) as f64,
            "lines of {s} counted once by the settled fleet\n{}",
            describe(&members)
        );
    }
    for e in ["taken", "stolen", "lost", "released"] {
        assert_eq!(
            fleet(&end, |b| event(b, e)),
            fleet(&base, |b| event(b, e)),
            "no lease {e} in a settled fleet\n{}",
            describe(&members)
        );
    }
    assert_eq!(
        end.iter().map(|b| held(b)).collect::<Vec<_>>(),
        base.iter().map(|b| held(b)).collect::<Vec<_>>()
    );
    terminate_all(&servers, members).await;
}

/// An instance SIGKILLed while the fleet reads: after the failover time the two others take
/// its leases (4/4) and read on from its last checkpoints. Nothing is lost, and the lines
/// counted twice are exactly those the dead instance had read past its last checkpoint on its
/// shards — a subset of what it read — since its checkpoints never ran ahead of what it had
/// counted and the takers resume at them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_s_shards_are_taken_over_and_no_line_is_lost() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let servers = Servers::start("kill", 8).await;
    let targets = servers.open_shards().await;
    let mut ledger = Ledger::default();
    put_round(&servers, &targets, 2, &mut ledger).await;
    let mut members: Vec<Member> = ["a", "b", "c"]
        .into_iter()
        .map(|name| Member::start(&servers, name, STEADY))
        .collect();
    let mut base = servers
        .baseline(&ledger, &mut members, "3/3/2 leases", settled_on_eight)
        .await;
    let put0 = ledger.per_shard();

    // Rounds counted one by one; right after the last is counted (with at most a checkpoint
    // interval of it checkpointed) the instance with three leases is killed. Nothing is put
    // between its last scrape and the kill, so that scrape is all it ever counted.
    for _ in 0..3 {
        put_round(&servers, &targets, 2, &mut ledger).await;
        wait_until(&mut members, "the round counted", |b| {
            counted_since(b, &base, &ledger, &put0)
        })
        .await;
    }
    put_round(&servers, &targets, 2, &mut ledger).await;
    let before = wait_until(&mut members, "the last round counted", |b| {
        counted_since(b, &base, &ledger, &put0) && settled_on_eight(b)
    })
    .await;
    let victim = before
        .iter()
        .position(|b| held(b) == 3.0)
        .expect("an instance with 3 leases");
    let mut dead = members.remove(victim);
    let (dead_base, dead_last) = (base[victim].clone(), before[victim].clone());
    base.remove(victim);
    dead.kill_hard();
    // Its leases and their last checkpoints: no one can have taken them within a failover
    // time, and it can write nothing more.
    let table = servers.leases().await;
    let its: Vec<(String, String)> = table
        .iter()
        .filter(|(_, l)| l.owner.as_deref() == Some(dead.name.as_str()))
        .map(|(s, l)| (s.clone(), l.checkpoint.clone().expect("checkpoint")))
        .collect();
    assert_eq!(its.len(), 3, "{} held 3 leases: {table:#?}", dead.name);
    let past_checkpoint: u64 = its
        .iter()
        .map(|(shard, checkpoint)| ledger.after(shard, checkpoint))
        .sum();
    let dead_read = lines(&dead_last) - lines(&dead_base);

    // Records keep coming while the others wait out the failover and take over.
    put_round(&servers, &targets, 2, &mut ledger).await;
    wait_until(&mut members, "4/4 leases", |b| {
        b.iter().all(|b| held(b) == 4.0) && reading_what_it_holds(b)
    })
    .await;
    for _ in 0..2 {
        put_round(&servers, &targets, 2, &mut ledger).await;
    }
    let end = servers.caught_up(&ledger, &[], &mut members).await;

    let put = (ledger.total() - put0.values().sum::<u64>()) as f64;
    let counted = dead_read + fleet(&end, lines) - fleet(&base, lines);
    eprintln!(
        "kill: put {put} lines after the baseline; counted {counted} ({dead_read} by the \
         killed {}), {past_checkpoint} lines past its checkpoints",
        dead.name
    );
    // What each instance counted of each shard since the baseline, and the lease events: what
    // a failure message needs to tell a handover from a wrong start.
    let mut report = format!(
        "its leases at the kill: {its:?}\nlease table now: {:#?}\n",
        servers.leases().await
    );
    for s in ledger.shards() {
        report += &format!(
            "{s}: put {}, counted by {} {}",
            ledger.on(s) - put0[s],
            dead.name,
            shard_lines(&dead_last, s) - shard_lines(&dead_base, s)
        );
        for (m, (now, then)) in members.iter().zip(end.iter().zip(&base)) {
            report += &format!(
                ", by {} {}",
                m.name,
                shard_lines(now, s) - shard_lines(then, s)
            );
        }
        report += "\n";
    }
    for e in ["taken", "stolen", "lost"] {
        report += &format!("{e} since the baseline:");
        for (m, (now, then)) in members.iter().zip(end.iter().zip(&base)) {
            report += &format!(" {} {}", m.name, event(now, e) - event(then, e));
        }
        report += "\n";
    }
    assert!(counted >= put, "lost {} lines\n{report}", put - counted);
    let events = |e: &str| fleet(&end, |b| event(b, e)) - fleet(&base, |b| event(b, e));
    assert_eq!(
        (events("taken"), events("stolen"), events("lost")),
        (3.0, 0.0, 0.0),
        "the dead instance's 3 leases were taken, and nothing else changed hands\n{report}"
    );
    assert_eq!(
        counted - put,
        past_checkpoint as f64,
        "counted twice: exactly what the killed instance read past its checkpoints\n{report}"
    );
    assert!(past_checkpoint as f64 <= dead_read);
    for (shard, checkpoint) in &its {
        let s = shard.as_str();
        assert_eq!(
            fleet(&end, |b| shard_lines(b, s)) - fleet(&base, |b| shard_lines(b, s)),
            ledger.after(s, checkpoint) as f64,
            "the takers read {s} from the killed instance's checkpoint {checkpoint}\n{report}"
        );
    }
    terminate_all(&servers, members).await;
}

/// An instance paused with SIGSTOP past the failover time: the other takes its lease and
/// reads on from its checkpoint. Resumed with SIGCONT, the paused one finds the lease gone —
/// its renewal and any checkpoint are refused, conditional on a counter that moved — logs the
/// lease lost, counts it, and stops reading the shard. The taker counts every line exactly
/// once from the baseline on; the resumed instance may count, before it notices, only records
/// put while it was paused on the shard it had, and nothing after. The paused instance takes
/// leases only at start (its take interval is ten minutes), so it does not steal one back
/// while the test watches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_instance_finds_its_lease_taken_and_stops_reading() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let servers = Servers::start("pause", 2).await;
    let targets = servers.open_shards().await;
    let mut ledger = Ledger::default();
    put_round(&servers, &targets, 2, &mut ledger).await;
    let quick = Timing {
        failover_ms: 2_000,
        renew_ms: 500,
        take_ms: 1_000,
    };
    let mut members = vec![Member::start(&servers, "a", quick)];
    wait_until(&mut members, "a holding both leases", |b| {
        held(&b[0]) == 2.0 && owned(&b[0]) == 2.0
    })
    .await;
    // b takes once, at start: a holds more than its share, so b steals one.
    members.push(Member::start(
        &servers,
        "b",
        Timing {
            take_ms: 600_000,
            ..quick
        },
    ));
    let one_each = |b: &[String]| b.iter().all(|b| held(b) == 1.0) && reading_what_it_holds(b);
    wait_until(&mut members, "1/1 leases", one_each).await;
    put_round(&servers, &targets, 2, &mut ledger).await;
    let table = servers.wait_checkpointed(&ledger, &[], &mut members).await;
    let base = wait_until(&mut members, "still 1/1 leases", one_each).await;
    let put0 = ledger.per_shard();
    let paused_shard = table
        .iter()
        .find(|(_, l)| l.owner.as_deref() == Some("b"))
        .map(|(s, _)| s.clone())
        .expect("b's lease");

    let b = members.pop().expect("b");
    b.signal("STOP");
    // a alone is scraped while b is stopped.
    put_round(&servers, &targets, 2, &mut ledger).await;
    let paused_put = ledger.on(&paused_shard) - put0[&paused_shard];
    wait_until(
        &mut members,
        "a taking b's lease and reading it",
        |bodies| {
            let a = &bodies[0];
            held(a) == 2.0
                && owned(a) == 2.0
                && ledger.shards().all(|s| {
                    shard_lines(a, s) - shard_lines(&base[0], s) >= (ledger.on(s) - put0[s]) as f64
                })
        },
    )
    .await;
    assert_eq!(
        servers.leases().await[&paused_shard].owner.as_deref(),
        Some("a")
    );

    b.signal("CONT");
    let mut resumed = vec![b];
    let after_loss = wait_until(&mut resumed, "b counting its lease lost", |bodies| {
        let b = &bodies[0];
        event(b, "lost") >= 1.0 && held(b) == 0.0 && owned(b) == 0.0
    })
    .await;
    let b = resumed.pop().expect("b");
    let log = b.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains(&paused_shard) && l.contains(LOST_LOG)),
        "b logs the lease of {paused_shard} lost; stderr:\n{log}"
    );
    members.push(b);

    for _ in 0..2 {
        put_round(&servers, &targets, 2, &mut ledger).await;
    }
    let end = servers.caught_up(&ledger, &[], &mut members).await;
    let (a_end, b_end) = (&end[0], &end[1]);
    assert_eq!(
        (held(a_end), owned(a_end), held(b_end), owned(b_end)),
        (2.0, 2.0, 0.0, 0.0),
        "a keeps both leases, b reads nothing\n{}",
        describe(&members)
    );
    for s in ledger.shards() {
        assert_eq!(
            shard_lines(a_end, s) - shard_lines(&base[0], s),
            (ledger.on(s) - put0[s]) as f64,
            "a counted every line of {s} once from the baseline on"
        );
    }
    assert_eq!(
        lines(b_end),
        lines(&after_loss[0]),
        "b read nothing once it had counted the lease lost"
    );
    let doubled = lines(b_end) - lines(&base[1]);
    assert!(
        doubled <= paused_put as f64,
        "b counted {doubled} lines after the pause, more than the {paused_put} put on \
         {paused_shard} while it was stopped"
    );
    assert_eq!(
        event(a_end, "lost"),
        event(&base[0], "lost"),
        "a never lost a lease: b's late writes were all refused"
    );
    eprintln!("pause: b counted {doubled} lines after it resumed, before it saw the loss");
    terminate_all(&servers, members).await;
}

/// A shard split while two instances read the stream: every line of the parent, of the other
/// shard and of both children counted, and exactly once unless leases changed hands (then
/// no more than the handed-over shards' lines twice); no child line is counted before the
/// parent's last. Order is checked from the outside on every poll: children's counts are
/// scraped from every instance first, the parent's after, and counters only grow, so a child
/// line seen before the parent's count is complete would be a child read before its parent's
/// end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_shard_s_children_are_read_after_the_parent_once() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let servers = Servers::start("split", 2).await;
    let targets = servers.open_shards().await;
    let mut ledger = Ledger::default();
    put_round(&servers, &targets, 2, &mut ledger).await;
    let mut members: Vec<Member> = ["a", "b"]
        .into_iter()
        .map(|name| Member::start(&servers, name, STEADY))
        .collect();
    let one_each = |b: &[String]| b.iter().all(|b| held(b) == 1.0) && reading_what_it_holds(b);
    let base = servers
        .baseline(&ledger, &mut members, "1/1 leases", one_each)
        .await;
    let put0 = ledger.per_shard();

    // Records into both shards, then the split at once, while they are being read.
    let parent = targets[0].clone();
    put_round(&servers, &targets, 3, &mut ledger).await;
    let children = servers.split(&parent).await;
    let after_split = servers.open_shards().await;
    assert_eq!(after_split.len(), 3, "{after_split:?}");
    let parent_put = (ledger.on(&parent.shard) - put0[&parent.shard]) as f64;

    let fleet_since = |bodies: &[String], s: &str| {
        fleet(bodies, |b| shard_lines(b, s)) - fleet(&base, |b| shard_lines(b, s))
    };
    let mut child_lines_seen = false;
    let mut check_order = |members: &mut [Member]| {
        let first = members
            .iter()
            .map(|m| m.metrics().unwrap_or_default())
            .collect::<Vec<_>>();
        let children_counted: f64 = children.iter().map(|c| fleet_since(&first, c)).sum();
        let then = members
            .iter()
            .map(|m| m.metrics().unwrap_or_default())
            .collect::<Vec<_>>();
        if children_counted > 0.0 {
            child_lines_seen = true;
            assert!(
                fleet_since(&then, &parent.shard) >= parent_put,
                "{children_counted} child lines counted before the parent's {parent_put} \
                 (only {} then)\n{}",
                fleet_since(&then, &parent.shard),
                describe(members)
            );
        }
    };
    for _ in 0..4 {
        put_round(&servers, &after_split, 1, &mut ledger).await;
        check_order(&mut members);
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            check_order(&mut members);
        }
    }
    let ended = [parent.shard.as_str()];
    let deadline = Instant::now() + LIMIT;
    while !counted_since(
        &wait_until(&mut members, "a scrape", |_| true).await,
        &base,
        &ledger,
        &put0,
    ) {
        check_order(&mut members);
        assert!(
            Instant::now() < deadline,
            "the fleet never counted every line put within {LIMIT:?}\n{}",
            describe(&members)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check_order(&mut members);
    assert!(child_lines_seen, "no child line was ever seen counted");
    let end = servers.caught_up(&ledger, &ended, &mut members).await;

    // Every child's first take is expected; any other take or steal is a handover.
    let moved = handovers(&end, 2.0) - handovers(&base, 0.0);
    let mut excess = 0.0;
    let mut largest = 0.0_f64;
    for s in ledger.shards() {
        let put = (ledger.on(s) - put0.get(s).copied().unwrap_or(0)) as f64;
        let counted = fleet_since(&end, s);
        assert!(
            counted >= put,
            "lost {} lines of {s}\n{}",
            put - counted,
            describe(&members)
        );
        excess += counted - put;
        largest = largest.max(put);
    }
    eprintln!("split: {excess} lines counted twice, {moved} handovers after the split");
    if moved == 0.0 {
        assert_eq!(excess, 0.0, "no handover, yet lines counted twice");
    } else {
        assert!(
            excess <= moved * largest,
            "{excess} lines counted twice with {moved} handovers"
        );
    }
    let table = servers.leases().await;
    let open: BTreeSet<&str> = after_split.iter().map(|t| t.shard.as_str()).collect();
    assert!(
        open.iter().all(|s| table.contains_key(*s)),
        "a lease for every open shard: {table:#?}"
    );
    terminate_all(&servers, members).await;
}
