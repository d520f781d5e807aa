//! The inputs' one home and their one seam into the pipeline. Every input — [`files`] (a run
//! of files read in order, or files followed as they grow), [`demo`] (generated traffic), the
//! Firehose endpoint and the Kinesis consumer — opens one [`PartitionInput`] per partition of
//! its data (a run of files, a followed file, a Firehose source, a Kinesis shard) and queues
//! owned [`RawBatch`]es through it. The seam stamps each batch with its place in the
//! partition's order and, once a worker has counted it, reports its event times to the
//! [`Timeline`] before the input's own acknowledgement runs: a batch's lines move the
//! watermark only after they are counted, and inputs acknowledge (Firehose replies, Kinesis
//! checkpoints) only after the work. Record inputs (Firehose, Kinesis) cut their records into
//! batches with the one [`RecordBatcher`] and leave decoding to the workers.

pub mod aws;
pub mod demo;
pub mod files;
pub mod firehose;
pub mod kinesis;
pub mod s3;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::buffers::Buffers;
use crate::decode::{DecodeLimits, Records};
use crate::event_time::{
    InputKind, MAX_PARTITIONS_PER_INPUT, OVERFLOW_PARTITION, PartitionSpec, Stamp, Timeline,
};
use crate::export::WallClock;
use crate::pipeline::{RawBatch, SubmitError, Submitter};
use crate::traffic::Traffic;

/// The inputs that run on threads of their own.
#[derive(Debug, Clone)]
pub enum Input {
    /// Files read to their end, or followed as they grow.
    Files { paths: Vec<PathBuf>, follow: bool },
    /// The built-in traffic generator with scripted incidents, in wall-clock time.
    Demo {
        seed: u64,
        requests_per_sec: u32,
        /// Where in its cycle the incident script starts, in seconds.
        script_offset_secs: u32,
    },
}

/// What every input gets from the daemon: the timeline its partitions join, the pool's
/// queue, the wall clock (idleness), the batch and line bounds and the stop signal.
pub struct InputContext {
    pub timeline: Timeline,
    pub submitter: Submitter,
    pub wall_clock: WallClock,
    pub timing: PartitionTiming,
    pub batch_bytes: usize,
    pub max_line_bytes: usize,
    pub stop: Shutdown,
}

impl InputContext {
    /// The partition `spec` names.
    pub fn open(&self, spec: PartitionSpec) -> PartitionInput {
        PartitionInput::open(
            &self.timeline,
            spec,
            self.submitter.clone(),
            Arc::clone(&self.wall_clock),
        )
    }

    /// The partitions of an input whose names arrive with the data.
    pub fn source(&self, input: InputKind) -> PartitionSource {
        PartitionSource::new(
            input,
            self.timing,
            self.timeline.clone(),
            self.submitter.clone(),
            Arc::clone(&self.wall_clock),
        )
    }

    /// Starts each of `inputs` on a thread of its own (a followed file each); they run until
    /// their data ends or the stop signal, and hold the pool's queue until they return.
    pub fn spawn(self, inputs: Vec<Input>) -> Vec<JoinHandle<()>> {
        let (batch_bytes, max_line) = (self.batch_bytes, self.max_line_bytes);
        let mut threads = Vec::new();
        for input in inputs {
            let stop = self.stop.clone();
            match input {
                Input::Files {
                    paths,
                    follow: false,
                } if !paths.is_empty() => {
                    let input = self.open(files::run_partition(self.timing.out_of_order_us));
                    threads.push(std::thread::spawn(move || {
                        files::read_run(&paths, &input, batch_bytes, max_line, &stop);
                    }));
                }
                Input::Files { paths, .. } => {
                    for path in paths {
                        let input = self.open(files::follow_partition(
                            &path,
                            self.timing.out_of_order_us,
                            self.timing.idle_us,
                        ));
                        let stop = stop.clone();
                        threads.push(std::thread::spawn(move || {
                            if let Err(e) =
                                files::follow(&path, &input, batch_bytes, max_line, &stop)
                            {
                                eprintln!("albwatch: {}: {e}", path.display());
                            }
                        }));
                    }
                }
                Input::Demo {
                    seed,
                    requests_per_sec,
                    script_offset_secs,
                } => {
                    let input = self.open(demo::partition(self.timing.idle_us));
                    let wall = Arc::clone(&self.wall_clock);
                    threads.push(std::thread::spawn(move || {
                        let traffic = Traffic::scripted(seed, wall(), requests_per_sec)
                            .skip_script(script_offset_secs);
                        demo::run(traffic, &input, &wall, &stop);
                    }));
                }
            }
        }
        threads
    }
}

/// The one signal that stops the inputs (and, a second one, the outputs after the drain):
/// set once at shutdown; input threads poll it, tasks await it.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A signal and the sender that sets it (`send(true)`).
    pub fn channel() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the signal is set (or its sender is gone).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|set| *set).await;
    }

    /// The underlying receiver, for loops that select on it.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }
}

/// One partition's door into the pipeline; cheap to clone (concurrent Firehose requests of
/// one source share it).
#[derive(Clone)]
pub struct PartitionInput {
    timeline: Timeline,
    id: u32,
    submitter: Submitter,
    wall_clock: WallClock,
}

impl PartitionInput {
    /// Opens (or reopens) the partition `spec` names on `timeline`.
    pub fn open(
        timeline: &Timeline,
        spec: PartitionSpec,
        submitter: Submitter,
        wall_clock: WallClock,
    ) -> Self {
        let now = wall_clock();
        let id = timeline.with(|w| w.open(spec, now));
        PartitionInput {
            timeline: timeline.clone(),
            id,
            submitter,
            wall_clock,
        }
    }

    /// The pipeline's recycled batch buffers, to fill this partition's batches in.
    pub fn buffers(&self) -> &Buffers {
        self.submitter.buffers()
    }

    /// Queues `batch`, waiting while the queue is full (inputs that can slow down).
    pub fn submit(&self, batch: RawBatch) -> Result<(), SubmitError> {
        let (batch, stamp) = self.stamped(batch);
        self.submitter
            .submit(batch)
            .inspect_err(|_| self.void(stamp))
    }

    /// Queues `batch` only if there is room now (inputs that must answer at once). On either
    /// error the batch comes back with its acknowledgement wrapped; dropping it is the way to
    /// give up on it.
    pub fn try_submit(&self, batch: RawBatch) -> Result<(), SubmitError> {
        let (batch, stamp) = self.stamped(batch);
        self.submitter
            .try_submit(batch)
            .inspect_err(|_| self.void(stamp))
    }

    /// No more batches will come from this partition (through this handle's user).
    pub fn finish(&self) {
        self.timeline.with(|w| w.finish(self.id));
    }

    fn stamped(&self, mut batch: RawBatch) -> (RawBatch, Stamp) {
        let now = (self.wall_clock)();
        let stamp = self.timeline.with(|w| w.stamp(self.id, now));
        let timeline = self.timeline.clone();
        let ack = batch.ack.take();
        batch.ack = Some(Box::new(move |outcome| {
            timeline.with(|w| w.counted(stamp, outcome.events()));
            if let Some(ack) = ack {
                ack(outcome);
            }
        }));
        (batch, stamp)
    }

    /// A stamp whose batch was never queued holds nothing back.
    fn void(&self, stamp: Stamp) {
        self.timeline.with(|w| w.counted(stamp, None));
    }
}

/// How an input's partitions behave in time, for [`PartitionSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionTiming {
    pub out_of_order_us: i64,
    pub idle_us: i64,
}

/// The partitions of one input whose names arrive with the data (Firehose sources, Kinesis
/// shards), opened on first use and shared after. Names past the cap share one partition.
#[derive(Clone)]
pub struct PartitionSource {
    input: InputKind,
    timing: PartitionTiming,
    timeline: Timeline,
    submitter: Submitter,
    wall_clock: WallClock,
    opened: Arc<Mutex<HashMap<String, PartitionInput>>>,
}

impl PartitionSource {
    pub fn new(
        input: InputKind,
        timing: PartitionTiming,
        timeline: Timeline,
        submitter: Submitter,
        wall_clock: WallClock,
    ) -> Self {
        PartitionSource {
            input,
            timing,
            timeline,
            submitter,
            wall_clock,
            opened: Arc::default(),
        }
    }

    /// A source on a timeline of its own, for an input run on its own (tests, benches) where
    /// event time drives nothing.
    pub fn standalone(input: InputKind, submitter: Submitter) -> Self {
        PartitionSource::new(
            input,
            PartitionTiming {
                out_of_order_us: 0,
                idle_us: i64::MAX,
            },
            Timeline::new(),
            submitter,
            Arc::new(crate::clock::wall_clock_us),
        )
    }

    /// The partition called `name`, opened now if it is new.
    pub fn get(&self, name: &str) -> PartitionInput {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = opened.get(name) {
            return p.clone();
        }
        let name = if opened.len() >= MAX_PARTITIONS_PER_INPUT {
            OVERFLOW_PARTITION
        } else {
            name
        };
        opened
            .entry(name.to_string())
            .or_insert_with(|| {
                PartitionInput::open(
                    &self.timeline,
                    PartitionSpec {
                        input: self.input,
                        name: name.to_string(),
                        out_of_order_us: self.timing.out_of_order_us,
                        idle_us: Some(self.timing.idle_us),
                    },
                    self.submitter.clone(),
                    Arc::clone(&self.wall_clock),
                )
            })
            .clone()
    }

    /// Partition `name` has no more data (a closed shard read to its end); a later [`get`]
    /// of the same name opens it again.
    ///
    /// [`get`]: PartitionSource::get
    pub fn finish(&self, name: &str) {
        let removed = self
            .opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        if let Some(p) = removed {
            p.finish();
        }
    }
}

/// Cuts delivered records into batches of about `batch_bytes` (as delivered), each cut
/// between records, for the workers to decode: the one batcher of the record inputs.
pub struct RecordBatcher {
    records: Records,
    batch_bytes: usize,
    limits: DecodeLimits,
}

impl RecordBatcher {
    pub fn new(batch_bytes: usize, limits: DecodeLimits) -> Self {
        RecordBatcher {
            records: Records::default(),
            batch_bytes,
            limits,
        }
    }

    /// Adds one record.
    pub fn push(&mut self, record: &[u8]) {
        self.records.push(record);
    }

    /// Adds one record that `fill` writes (e.g. base64-decodes); on error nothing is added.
    pub fn push_with<E>(
        &mut self,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.records.push_with(fill)
    }

    /// Whether the batch has reached its size and should be queued.
    pub fn is_full(&self) -> bool {
        self.records.byte_len() >= self.batch_bytes
    }

    /// The records so far as a batch, if there are any; the batcher starts afresh.
    pub fn take(&mut self) -> Option<RawBatch> {
        (!self.records.is_empty())
            .then(|| RawBatch::of_records(std::mem::take(&mut self.records), self.limits))
    }
}
