//! The Kinesis consumer of a fleet: several albwatch instances read one stream, each the
//! shards whose leases it holds in the lease table. Every instance lists the shards and
//! creates the leases that are missing (with their parents, so a child is read only after
//! its parents' leases reach `SHARD_END`); renews its own every `renew_every`, on a task of its
//! own so nothing else the instance does can delay the heartbeat; and every
//! `take_every` lists the table and takes what [`plan`] says. A held lease's shard is read by
//! the same shard task as a lone instance's; its checkpoints go to the lease, each write
//! conditional on the owner and counter this instance holds, so an instance that was paused
//! past the failover has its late checkpoint refused — it then counts the lease lost and stops
//! reading that shard. A renewal that fails for a whole failover time gives the lease up the
//! same way, since others may have taken it by then. At shutdown the shard tasks stop, their
//! final checkpoints are written, then every lease is released so others take them at once.
//! Finished leases are deleted once every child has a lease that has moved past its start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::plan::{self, Claim, Watch};
use super::table::{Checkpoint, Lease, LeaseError, LeaseTable};
use crate::decode::DecodeLimits;
use crate::input::PartitionSource;
use crate::input::aws::{ErrorLog, LOG_EVERY};
use crate::input::kinesis::KinesisMetrics;
use crate::input::kinesis::checkpoint::{
    CheckpointError, CheckpointStore, Position, SaveOutcome, SequenceNumber,
};
use crate::input::kinesis::config::{InitialPosition, LeaseSettings, ValidKinesisConfig};
use crate::input::kinesis::consumer::{self, ApiError, ConsumerError};
use crate::input::kinesis::metrics::Operation;
use crate::input::kinesis::shard::{self, Ctx, IteratorStart, KinesisApi, ShardExit, ShardInfo};

/// What happened to leases, as the `event` label.
const EVENTS: [&str; 8] = [
    "created",
    "taken",
    "stolen",
    "lost",
    "released",
    "deleted",
    "renew_failed",
    "throttled",
];

/// The fleet's lease telemetry.
#[derive(Clone)]
pub struct LeaseMetrics {
    held: IntGauge,
    events: IntCounterVec,
}

impl LeaseMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let held = IntGauge::new(
            "albwatch_kinesis_leases_held",
            "Shard leases this instance holds in the lease table.",
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "albwatch_kinesis_lease_events_total",
                "Lease events: created, taken, stolen, lost (a conditional write refused: \
                 another instance holds it), released, deleted, renew_failed, throttled.",
            ),
            &["event"],
        )?;
        for e in EVENTS {
            events.with_label_values(&[e]);
        }
        registry.register(Box::new(held.clone()))?;
        registry.register(Box::new(events.clone()))?;
        Ok(LeaseMetrics { held, events })
    }

    fn event(&self, event: &'static str) {
        self.events.with_label_values(&[event]).inc();
    }
}

/// What the fleet reports to the rest of the daemon.
#[derive(Clone)]
pub struct FleetHooks {
    pub metrics: LeaseMetrics,
    /// Called when a lease that another instance read before is taken: this instance's
    /// windows for that shard's groups are partial for a while.
    pub on_gain: Arc<dyn Fn() + Send + Sync>,
}

/// The leases this instance holds, each behind its own lock so a renewal and a checkpoint
/// of one lease never race each other's counter.
type Held = Mutex<HashMap<String, Arc<tokio::sync::Mutex<Lease>>>>;

/// The leases held now, each with its lock (taken one at a time by the caller).
fn held_now(held: &Held) -> Vec<(String, Arc<tokio::sync::Mutex<Lease>>)> {
    held.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(k, l)| (k.clone(), Arc::clone(l)))
        .collect()
}

/// Checkpoints written to the held leases (the consumer's shard tasks save through it).
struct LeaseStore<T> {
    table: Arc<T>,
    held: Arc<Held>,
    handle: Handle,
}

impl<T: LeaseTable> CheckpointStore for LeaseStore<T> {
    /// Positions come with the leases when they are taken, not from here.
    fn load(&self, _stream: &str) -> Result<BTreeMap<String, Position>, CheckpointError> {
        Ok(BTreeMap::new())
    }

    fn save(
        &self,
        _stream: &str,
        shard: &str,
        position: &Position,
    ) -> Result<SaveOutcome, CheckpointError> {
        let lost = |message: String| CheckpointError::Lease {
            shard: shard.to_owned(),
            message,
        };
        let checkpoint = match position {
            Position::After(seq) => Checkpoint::Sequence(seq.as_str().to_owned()),
            Position::ShardEnd => Checkpoint::ShardEnd,
            // The lease keeps its own start (LATEST here): the table has no field for the
            // time reading began, so a fleet restarted before a shard's first record resumes
            // at a new LATEST.
            Position::AtTimestamp(_) => return Ok(SaveOutcome::Unchanged),
        };
        let lease = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(shard)
            .cloned()
            .ok_or_else(|| lost("not held by this instance".into()))?;
        // Called on a blocking thread (the consumer saves off the async threads), where
        // waiting on the runtime is allowed.
        let mut held = lease.blocking_lock();
        let written = self
            .handle
            .block_on(self.table.checkpoint(&held, &checkpoint, 0, &[]));
        match written {
            Ok(now) => {
                *held = now;
                Ok(SaveOutcome::Advanced)
            }
            Err(e) => Err(lost(e.to_string())),
        }
    }
}

/// Reads the shards whose leases this instance holds until `stop`, then writes the final
/// checkpoints and releases the leases. Returns early only on an error no retry fixes.
#[allow(clippy::too_many_arguments)]
pub async fn run<A: KinesisApi, T: LeaseTable>(
    api: A,
    cfg: ValidKinesisConfig,
    settings: LeaseSettings,
    table: T,
    partitions: PartitionSource,
    metrics: KinesisMetrics,
    hooks: FleetHooks,
    limits: DecodeLimits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ConsumerError> {
    let Some(stream) = cfg.stream.clone() else {
        return Ok(());
    };
    let table = Arc::new(table);
    let fatal = |e: LeaseError| ConsumerError::Shard {
        shard: "*".into(),
        message: format!("lease table {}: {e}", settings.table),
    };
    table.ensure(settings.create_table).await.map_err(fatal)?;
    let held: Arc<Held> = Arc::default();
    let ctx = Arc::new(Ctx {
        api,
        stream,
        store: Arc::new(LeaseStore {
            table: Arc::clone(&table),
            held: Arc::clone(&held),
            handle: Handle::current(),
        }),
        cfg,
        partitions,
        metrics,
        limits,
        errors: ErrorLog::new(LOG_EVERY),
    });
    let mut fleet = Fleet {
        ctx: Arc::clone(&ctx),
        table,
        settings,
        held,
        metrics: hooks.metrics,
        on_gain: hooks.on_gain,
        watch: Watch::default(),
        leases: Vec::new(),
        shards: Vec::new(),
        reading: HashMap::new(),
        tasks: JoinSet::new(),
        finals: Vec::new(),
    };
    // Renewals run on their own, so a slow round of listing and taking (or a slow table)
    // never delays the heartbeat that keeps this instance's leases.
    let (lost_tx, mut lost_rx) = tokio::sync::mpsc::unbounded_channel();
    let (renewer_stop, renewer_stopped) = watch::channel(false);
    let renewer = tokio::spawn(renew_every(
        Arc::clone(&ctx),
        Arc::clone(&fleet.table),
        Arc::clone(&fleet.held),
        fleet.settings.clone(),
        fleet.metrics.clone(),
        lost_tx,
        renewer_stopped,
    ));
    let mut discovery = tokio::time::interval(ctx.cfg.shard_discovery);
    let mut take = tokio::time::interval(fleet.settings.take_every);
    for t in [&mut discovery, &mut take] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut result = Ok(());
    loop {
        let step = tokio::select! {
            () = shard::wait_stop(&mut stop) => break,
            _ = discovery.tick() => fleet.discover().await,
            Some((key, why)) = lost_rx.recv() => {
                fleet.lose(&key, why);
                Ok(())
            }
            _ = take.tick() => fleet.take().await,
            Some(joined) = fleet.tasks.join_next(), if !fleet.tasks.is_empty() => {
                fleet.joined(joined).await;
                Ok(())
            }
        };
        if let Err(e) = step {
            result = Err(e);
            break;
        }
        fleet.start_readable();
    }
    // The final checkpoints and releases are conditional on the counters the renewer keeps
    // current, so it stops first.
    let _ = renewer_stop.send(true);
    let _ = renewer.await;
    fleet.shut_down().await;
    result
}

/// Renews every held lease each `renew_every`; reports on `lost` a lease refused (another
/// instance holds it now) or unrenewed for a whole failover time (others may have taken it).
async fn renew_every<A, T: LeaseTable>(
    ctx: Arc<Ctx<A>>,
    table: Arc<T>,
    held: Arc<Held>,
    settings: LeaseSettings,
    metrics: LeaseMetrics,
    lost: tokio::sync::mpsc::UnboundedSender<(String, &'static str)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(settings.renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When each lease was last renewed (or first seen held), on the monotonic clock.
    let mut renewed: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = shard::wait_stop(&mut stop) => return,
            _ = tick.tick() => {}
        }
        let leases = held_now(&held);
        renewed.retain(|k, _| leases.iter().any(|(held, _)| held == k));
        for (key, lease) in leases {
            let now = Instant::now();
            let since = *renewed.entry(key.clone()).or_insert(now);
            let mut guard = lease.lock().await;
            match table.renew(&guard).await {
                Ok(now_stored) => {
                    *guard = now_stored;
                    renewed.insert(key, Instant::now());
                }
                Err(LeaseError::Lost) => {
                    let _ = lost.send((key, "another instance took it"));
                }
                Err(e) => {
                    metrics.event("renew_failed");
                    log_failure(&ctx, &metrics, "renew", &e);
                    if now.saturating_duration_since(since) >= settings.failover {
                        let _ = lost.send((key, "not renewed within the failover time"));
                    }
                }
            }
        }
    }
}

/// Counts a failed lease-table call and logs it, one line per fault per interval.
fn log_failure<A>(ctx: &Ctx<A>, metrics: &LeaseMetrics, what: &str, e: &LeaseError) {
    if matches!(e, LeaseError::Throttled(_)) {
        metrics.event("throttled");
    }
    if let Some(fault) = e.fault() {
        ctx.errors.write(fault, || {
            format!("albwatch: kinesis lease table {what}: {e}")
        });
    }
}

/// One instance's view of the fleet.
struct Fleet<A, T> {
    ctx: Arc<Ctx<A>>,
    table: Arc<T>,
    settings: LeaseSettings,
    held: Arc<Held>,
    metrics: LeaseMetrics,
    on_gain: Arc<dyn Fn() + Send + Sync>,
    watch: Watch,
    /// The last listing of the table.
    leases: Vec<Lease>,
    /// The last ListShards.
    shards: Vec<ShardInfo>,
    /// Shards being read, with the signal that stops each.
    reading: HashMap<String, watch::Sender<bool>>,
    tasks: JoinSet<(String, ShardExit)>,
    /// Positions of shards stopped at shutdown, written before the leases are released.
    finals: Vec<(String, Position)>,
}

impl<A: KinesisApi, T: LeaseTable> Fleet<A, T> {
    /// ListShards, and a lease for every shard that has none.
    async fn discover(&mut self) -> Result<(), ConsumerError> {
        match self.ctx.api.list_shards().await {
            Ok(list) => {
                self.ctx.metrics.call(Operation::ListShards, Ok(()));
                self.shards = list;
            }
            Err(e @ (ApiError::Fatal(_) | ApiError::NotFound(_))) => {
                self.ctx.metrics.call(Operation::ListShards, Err(&e));
                return Err(ConsumerError::Api(e));
            }
            Err(e) => {
                self.ctx.metrics.call(Operation::ListShards, Err(&e));
                self.ctx.log_failure("ListShards", &e);
                return Ok(());
            }
        }
        let known: HashSet<&str> = self.leases.iter().map(|l| l.key.as_str()).collect();
        let missing: Vec<ShardInfo> = self
            .shards
            .iter()
            .filter(|s| !known.contains(s.id.as_str()))
            .cloned()
            .collect();
        for shard in missing {
            self.create(&shard).await;
        }
        Ok(())
    }

    /// A lease for `shard` starting where a shard without a checkpoint starts.
    async fn create(&mut self, shard: &ShardInfo) {
        let start = match consumer::initial_for_child(&self.ctx.cfg, shard) {
            InitialPosition::Latest => Checkpoint::Latest,
            InitialPosition::TrimHorizon => Checkpoint::TrimHorizon,
            InitialPosition::AtTimestamp(_) => Checkpoint::AtTimestamp,
        };
        let mut lease = Lease::new(shard.id.clone(), start);
        lease.parents = [&shard.parent, &shard.adjacent_parent]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        lease.parents.sort();
        match self.table.create(&lease).await {
            Ok(true) => {
                self.metrics.event("created");
                self.leases.push(lease);
            }
            Ok(false) => {}
            Err(e) => self.failed("CreateLease", &e),
        }
    }

    fn failed(&self, what: &str, e: &LeaseError) {
        log_failure(&self.ctx, &self.metrics, what, e);
    }

    fn held_leases(&self) -> Vec<(String, Arc<tokio::sync::Mutex<Lease>>)> {
        held_now(&self.held)
    }

    /// Gives up `key`: its shard stops being read, and nothing of it is written any more.
    fn lose(&mut self, key: &str, why: &str) {
        let removed = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        if removed.is_none() {
            return;
        }
        self.metrics.event("lost");
        self.metrics.held.dec();
        eprintln!("albwatch: kinesis lease of {key} lost ({why}); stopped reading it");
        if let Some(halt) = self.reading.get(key) {
            let _ = halt.send(true);
        }
    }

    /// Lists the table, takes what the plan says, and deletes finished leases whose children
    /// are under way.
    async fn take(&mut self) -> Result<(), ConsumerError> {
        let listing = match self.table.list().await {
            Ok(l) => l,
            Err(e @ LeaseError::Fatal(_)) => {
                return Err(ConsumerError::Shard {
                    shard: "*".into(),
                    message: format!("lease table {}: {e}", self.settings.table),
                });
            }
            Err(e) => {
                self.failed("list", &e);
                return Ok(());
            }
        };
        for skipped in &listing.skipped {
            self.ctx
                .errors
                .write(crate::input::aws::Fault::Rejected, || {
                    format!("albwatch: kinesis lease table: skipped {skipped}")
                });
        }
        self.leases = listing.leases;
        // A lease this instance still thinks it holds but the table gives to another (a
        // refused write it has not tried yet) is lost now, before it is read any further.
        let me = self.settings.worker_id.clone();
        let elsewhere: Vec<String> = self
            .leases
            .iter()
            .filter(|l| l.owner.as_deref() != Some(me.as_str()))
            .map(|l| l.key.clone())
            .filter(|k| self.is_held(k))
            .collect();
        for key in elsewhere {
            self.lose(&key, "the table names another owner");
        }
        let now = Instant::now();
        let held: HashSet<String> = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        let claims: Vec<Claim<'_>> = self
            .leases
            .iter()
            .map(|l| Claim {
                key: &l.key,
                // A lease in this instance's name that it does not hold (given up unrenewed,
                // or held by its previous run under the same name) is free for it to take
                // back at once.
                owner: l
                    .owner
                    .as_deref()
                    .filter(|o| *o != me.as_str() || held.contains(&l.key)),
                counter: l.counter,
                finished: l.is_finished(),
            })
            .collect();
        self.watch.observe(&claims, now);
        let plan = plan::plan(
            &claims,
            &self.watch,
            &me,
            now,
            self.settings.failover,
            self.settings.max_steal,
        );
        let chosen: Vec<(String, &'static str)> = plan
            .take
            .into_iter()
            .map(|k| (k, "taken"))
            .chain(plan.steal.into_iter().map(|k| (k, "stolen")))
            .collect();
        for (key, event) in chosen {
            let Some(seen) = self.leases.iter().find(|l| l.key == key).cloned() else {
                continue;
            };
            match self.table.take(&seen, &me).await {
                Ok(mine) => {
                    self.metrics.event(event);
                    if matches!(mine.checkpoint, Checkpoint::Sequence(_)) {
                        (self.on_gain)();
                    }
                    self.metrics.held.inc();
                    self.held
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(key, Arc::new(tokio::sync::Mutex::new(mine)));
                }
                // Another instance was quicker: fine, the next round sees it.
                Err(LeaseError::Lost) => {}
                Err(e) => self.failed("take", &e),
            }
        }
        self.clean_up().await;
        Ok(())
    }

    fn is_held(&self, key: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(key)
    }

    /// Deletes finished leases whose every child has a lease that has left its start, so
    /// nothing still waits on them; any instance may, conditional on the counter seen.
    async fn clean_up(&mut self) {
        let started = |key: &str| {
            self.leases.iter().any(|l| {
                l.key == key
                    && matches!(l.checkpoint, Checkpoint::Sequence(_) | Checkpoint::ShardEnd)
            })
        };
        let done: Vec<Lease> = self
            .leases
            .iter()
            .filter(|l| l.is_finished() && l.owner.is_none() && !l.children.is_empty())
            .filter(|l| l.children.iter().all(|c| started(c)))
            .cloned()
            .collect();
        for lease in done {
            match self.table.delete(&lease).await {
                Ok(()) => {
                    self.metrics.event("deleted");
                    self.leases.retain(|l| l.key != lease.key);
                }
                Err(LeaseError::Lost) => {}
                Err(e) => self.failed("delete", &e),
            }
        }
    }

    /// A shard task ended.
    async fn joined(&mut self, joined: Result<(String, ShardExit), tokio::task::JoinError>) {
        let Ok((shard, exit)) = joined else {
            return;
        };
        self.reading.remove(&shard);
        match exit {
            ShardExit::Ended(children) => {
                // Its ShardEnd is saved; the children's leases may be new.
                let mut child_ids: Vec<String> = children.iter().map(|c| c.id.clone()).collect();
                child_ids.sort();
                let mut known = self.shards.clone();
                for child in children {
                    if !known.iter().any(|s| s.id == child.id) {
                        known.push(child.clone());
                    }
                    if !self.leases.iter().any(|l| l.key == child.id) {
                        self.create(&child).await;
                    }
                }
                self.shards = known;
                if let Some(l) = self.leases.iter_mut().find(|l| l.key == shard) {
                    l.checkpoint = Checkpoint::ShardEnd;
                }
                self.finish(&shard, child_ids).await;
            }
            // Stopped because the lease was lost: nothing of it may be written.
            ShardExit::Stopped(_) if !self.is_held(&shard) => {}
            // The shard went past retention; its lease stays until ListShards drops it.
            ShardExit::Stopped(_) | ShardExit::Gone => {}
        }
    }

    /// Records a finished shard's children on its lease (so any instance can delete it once
    /// they are under way) and releases it: nothing is left to read, so no one needs to hold
    /// or renew it.
    async fn finish(&mut self, key: &str, children: Vec<String>) {
        let Some(lease) = self
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
        else {
            return;
        };
        self.metrics.held.dec();
        let mut guard = lease.lock().await;
        if !children.is_empty() {
            match self
                .table
                .checkpoint(&guard, &Checkpoint::ShardEnd, 0, &children)
                .await
            {
                Ok(now) => *guard = now,
                Err(e) => self.failed("checkpoint", &e),
            }
        }
        match self.table.release(&guard).await {
            Ok(()) => self.metrics.event("released"),
            Err(LeaseError::Lost) => {}
            Err(e) => self.failed("release", &e),
        }
    }

    /// Starts reading every held lease whose shard is readable: not finished, not read now,
    /// and every parent's lease at `SHARD_END` (or gone with its shard).
    fn start_readable(&mut self) {
        let listed: HashSet<&str> = self.shards.iter().map(|s| s.id.as_str()).collect();
        let mut starts = Vec::new();
        for (key, lease) in self.held_leases() {
            if self.reading.contains_key(&key) {
                continue;
            }
            let Ok(lease) = lease.try_lock().map(|l| l.clone()) else {
                continue;
            };
            if lease.is_finished() {
                continue;
            }
            let parents_done =
                lease
                    .parents
                    .iter()
                    .all(|p| match self.leases.iter().find(|l| &l.key == p) {
                        Some(parent) => parent.is_finished(),
                        None => !listed.contains(p.as_str()),
                    });
            if !parents_done {
                continue;
            }
            let start = match &lease.checkpoint {
                Checkpoint::Sequence(s) => match SequenceNumber::parse(s) {
                    Ok(seq) => IteratorStart::After(seq),
                    Err(_) => continue,
                },
                Checkpoint::TrimHorizon => IteratorStart::Initial(InitialPosition::TrimHorizon),
                Checkpoint::Latest => IteratorStart::Initial(InitialPosition::Latest),
                Checkpoint::AtTimestamp => IteratorStart::Initial(self.ctx.cfg.initial),
                Checkpoint::ShardEnd => continue,
            };
            starts.push((key, start));
        }
        for (key, start) in starts {
            let (halt_tx, halt_rx) = watch::channel(false);
            self.reading.insert(key.clone(), halt_tx);
            let ctx = Arc::clone(&self.ctx);
            self.tasks.spawn(async move {
                let series = ctx.metrics.shard_started(&key);
                let exit = consumer::read_shard(&ctx, &key, &series, start, halt_rx).await;
                ctx.metrics.shard_stopped(&key);
                (key, exit)
            });
        }
    }

    /// Stops every shard task, writes their final checkpoints to the leases, then releases
    /// every lease still held.
    async fn shut_down(mut self) {
        for halt in self.reading.values() {
            let _ = halt.send(true);
        }
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok((shard, ShardExit::Stopped(Some(position)))) = joined
                && self.is_held(&shard)
            {
                self.finals.push((shard, position));
            }
        }
        consumer::save_all(&self.ctx, std::mem::take(&mut self.finals)).await;
        for (key, lease) in self.held_leases() {
            let guard = lease.lock().await;
            match self.table.release(&guard).await {
                Ok(()) => {
                    self.metrics.event("released");
                    self.metrics.held.dec();
                }
                Err(LeaseError::Lost) => self.metrics.event("lost"),
                Err(e) => {
                    self.failed("release", &e);
                    eprintln!("albwatch: kinesis lease of {key} not released ({e}); it expires");
                }
            }
        }
    }
}
