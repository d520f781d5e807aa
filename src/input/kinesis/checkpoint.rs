//! Durable, at-least-once checkpoints for the Kinesis consumer. This file owns three things:
//! the [`Position`] a shard resumes from (after a [`SequenceNumber`]; at the arrival time a
//! shard started from `LATEST` with nothing processed yet; or [`Position::ShardEnd`] for a
//! closed shard read to its end, the `SHARD_END` marker its children wait for, as in the KCL);
//! the [`CheckpointStore`] that persists positions per stream, with a crash-safe
//! [`FileCheckpointStore`] (the default) and a [`MemoryCheckpointStore`] for tests; and
//! [`InOrderCommits`], which turns out-of-order batch acknowledgements from the pipeline into
//! the highest position that is safe to save. It hands the consumer a map `shard → Position`
//! at start-up (resume with `AFTER_SEQUENCE_NUMBER` or `AT_TIMESTAMP`; a load error means "refuse to start",
//! never "start over from `TRIM_HORIZON`") and, per acknowledgement, a position to save.
//!
//! # The at-least-once contract, and what the consumer must do for it
//! - Number every batch with [`InOrderCommits::sent`] before handing it to the pipeline; call
//!   [`InOrderCommits::ack`] when its outcome comes back and save whatever position it returns.
//!   A position is returned only once every batch up to it is acknowledged, so after `kill -9`
//!   the records read again are those after the last saved position: the batches in flight,
//!   plus any acknowledged batches whose position had not been saved yet (the consumer may
//!   save less often than it acknowledges; saving only the newest position is enough because
//!   positions only grow).
//! - A batch's "last sequence number" must be the last Kinesis record it contains *whole*. A
//!   KPL aggregate shares one sequence number among its sub-records and a position holds
//!   no sub-sequence number, so an aggregate split across two batches must be reported by the
//!   second one only, or a restart would skip the rest of it.
//! - At shard end (`NextShardIterator` null) call [`InOrderCommits::finish`]; the
//!   [`Position::ShardEnd`] it (or the last `ack`) returns must be saved before the children
//!   start. At graceful shutdown drain the pipeline, then save every shard's last position,
//!   best in one [`CheckpointStore::save_many`] (one durable write for all shards).
//! - Positions never move backwards in a store: a smaller one is ignored and reported as
//!   [`SaveOutcome::Stale`], and `ShardEnd` is final. A stale save means two readers of one
//!   shard or a consumer bug; count it.
//!
//! # File format (one file per stream, see [`checkpoint_file_name`])
//! ```json
//! {"version":1,"stream":"alb-logs","shards":{"shardId-000000000000":{"after":"4959…"},
//!  "shardId-000000000001":{"shard_end":true},"shardId-000000000002":{"at_timestamp_ms":1700000000000}}}
//! ```
//! (written pretty-printed). `stream` is checked on load, so a renamed or colliding file is
//! an error rather than somebody else's checkpoints.

use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{self, AtomicU64};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The API's pattern is `0|([1-9]\d{0,128})`: up to 129 decimal digits (real ones have 56).
pub const MAX_SEQUENCE_DIGITS: usize = 129;

/// The format version written and read by this build.
pub const FORMAT_VERSION: u64 = 1;

/// A checkpoint file over this size is refused rather than read: a stream's file holds one
/// ~100-byte entry per shard still within retention, so 16 MiB is far beyond any real stream
/// and a bound on what a stray file can make us allocate.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Longest file-name stem kept verbatim. With the `.checkpoint.json` suffix and the temporary
/// file's prefix and suffix it keeps every name under the usual 255-byte file-name limit.
const MAX_STEM_BYTES: usize = 160;

const FILE_SUFFIX: &str = ".checkpoint.json";

/// A Kinesis sequence number: a decimal string of up to [`MAX_SEQUENCE_DIGITS`] digits, too
/// wide for any integer type. Stored without leading zeros (which the API never sends), so
/// equality is numeric equality and ordering is by length, then by digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

/// Why a string is not a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSequenceNumber {
    #[error("empty sequence number")]
    Empty,
    #[error("sequence number has a non-digit at byte {offset}")]
    NotDecimal { offset: usize },
    #[error(
        "sequence number has {digits} significant digits; Kinesis uses at most {MAX_SEQUENCE_DIGITS}"
    )]
    TooLong { digits: usize },
}

impl SequenceNumber {
    /// Validates and normalises (leading zeros stripped, `"0"` kept).
    pub fn parse(s: &str) -> Result<Self, InvalidSequenceNumber> {
        let digits = significant_digits(s)?;
        Ok(SequenceNumber(digits.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The digits of `s` without leading zeros, after checking that `s` is a decimal number.
fn significant_digits(s: &str) -> Result<&str, InvalidSequenceNumber> {
    if s.is_empty() {
        return Err(InvalidSequenceNumber::Empty);
    }
    if let Some(offset) = s.bytes().position(|b| !b.is_ascii_digit()) {
        return Err(InvalidSequenceNumber::NotDecimal { offset });
    }
    let trimmed = s.trim_start_matches('0');
    let digits = if trimmed.is_empty() { "0" } else { trimmed };
    if digits.len() > MAX_SEQUENCE_DIGITS {
        return Err(InvalidSequenceNumber::TooLong {
            digits: digits.len(),
        });
    }
    Ok(digits)
}

impl TryFrom<String> for SequenceNumber {
    type Error = InvalidSequenceNumber;

    /// Keeps the allocation when the string is already normalised, as the API's always are.
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let digits = significant_digits(&s)?;
        if digits.len() == s.len() {
            Ok(SequenceNumber(s))
        } else {
            Ok(SequenceNumber(digits.to_owned()))
        }
    }
}

impl FromStr for SequenceNumber {
    type Err = InvalidSequenceNumber;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SequenceNumber::parse(s)
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Ord for SequenceNumber {
    /// Numeric order without big integers: with no leading zeros a longer number is larger,
    /// and numbers of one length compare digit by digit.
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for SequenceNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SequenceNumber {
    /// Validates, so a damaged file cannot produce a sequence number the API would reject.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        SequenceNumber::try_from(s).map_err(serde::de::Error::custom)
    }
}

/// Where a shard resumes. The derived order is progress: `AtTimestamp` (nothing processed
/// yet) is below every `After`, every `After` is below `ShardEnd`, and `After`s compare by
/// sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Position {
    /// Nothing processed yet; resume with `AT_TIMESTAMP` at these Unix milliseconds. Saved when
    /// a shard without a checkpoint starts at `LATEST`, which names no record: without it a
    /// restart before the first record would start at a new `LATEST` and skip whatever arrived
    /// while albwatch was down.
    AtTimestamp(u64),
    /// Every record up to and including this one is processed: resume with
    /// `AFTER_SEQUENCE_NUMBER`.
    After(SequenceNumber),
    /// The shard is closed and fully processed: do not read it again; its children may start.
    ShardEnd,
}

/// What a save did with one shard's position.
#[must_use = "a Stale save was not written; count or log it"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    /// The position was ahead of the stored one (or none was stored) and is now durable.
    Advanced,
    /// The stored position is this one already; nothing was written.
    Unchanged,
    /// The position is behind the stored one, which is kept: checkpoints never move backwards
    /// and `ShardEnd` is final.
    Stale { stored: Position },
}

impl SaveOutcome {
    /// Applies `new` to `shards[shard]` if it moves forward.
    fn apply(shards: &mut BTreeMap<String, Position>, shard: &str, new: &Position) -> Self {
        if let Some(stored) = shards.get(shard) {
            match new.cmp(stored) {
                Ordering::Greater => {}
                Ordering::Equal => return SaveOutcome::Unchanged,
                Ordering::Less => {
                    return SaveOutcome::Stale {
                        stored: stored.clone(),
                    };
                }
            }
        }
        shards.insert(shard.to_owned(), new.clone());
        SaveOutcome::Advanced
    }
}

/// Why checkpoints could not be loaded or saved. Every file error names the file; a load
/// error must stop the consumer, because starting without checkpoints re-reads or skips data.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the stream name is empty")]
    EmptyStreamName,
    /// The shard's lease in the lease table refused the write (another instance holds it now)
    /// or could not be written.
    #[error("lease of {shard}: {message}")]
    Lease { shard: String, message: String },
    #[error("checkpoint directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot {op} checkpoint file {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "checkpoint file {path} is corrupt ({reason}); not resuming from a guess: restore it, or \
         delete it to restart the stream from its initial position"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "checkpoint file {path} has format version {found}; this build reads version {FORMAT_VERSION}"
    )]
    UnsupportedVersion { path: PathBuf, found: u64 },
    #[error("checkpoint file {path} belongs to stream {found:?}, not {expected:?}")]
    WrongStream {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("checkpoint file {path} is over {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
}

/// Persists one [`Position`] per shard of a stream. Calls are synchronous and may block on
/// disk: the consumer calls them from a blocking context, at most once per shard per
/// checkpoint interval plus at shard end and shutdown.
pub trait CheckpointStore: Send + Sync {
    /// Every stored position of `stream`, by shard id; empty if nothing was ever saved.
    fn load(&self, stream: &str) -> Result<BTreeMap<String, Position>, CheckpointError>;

    /// Stores `position` for `shard` unless that would move it backwards; when this returns
    /// [`SaveOutcome::Advanced`] the position survives a crash.
    fn save(
        &self,
        stream: &str,
        shard: &str,
        position: &Position,
    ) -> Result<SaveOutcome, CheckpointError>;

    /// [`save`](Self::save) for several shards, with outcomes in the same order. The file store
    /// writes them all in one durable write, for the final checkpoints at shutdown.
    fn save_many(
        &self,
        stream: &str,
        positions: &[(&str, &Position)],
    ) -> Result<Vec<SaveOutcome>, CheckpointError> {
        positions
            .iter()
            .map(|(shard, position)| self.save(stream, shard, position))
            .collect()
    }
}

/// The file name a stream's checkpoints live in. Bytes outside `[a-z0-9._-]` are
/// percent-encoded, which keeps names like ARNs (`:` and `/`) inside the directory and is
/// injective; upper-case letters are encoded too, because stream names are case-sensitive and
/// a case-insensitive file system would otherwise give `Logs` and `logs` one file. A stem
/// longer than the file-name limit allows is cut and followed by `~` and a stable 64-bit hash
/// of the whole name (`~` is never produced by the encoding, so cut names cannot equal whole
/// ones); a hash collision is caught by the `stream` field inside the file.
pub fn checkpoint_file_name(stream: &str) -> String {
    let mut stem = String::with_capacity(stream.len());
    for b in stream.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-') {
            stem.push(char::from(b));
        } else {
            stem.push_str(&format!("%{b:02X}"));
        }
    }
    if stem.len() > MAX_STEM_BYTES {
        // The stem is ASCII, so any byte index is a char boundary.
        stem.truncate(MAX_STEM_BYTES - 17);
        stem.push_str(&format!("~{:016x}", fnv1a64(stream.as_bytes())));
    }
    stem.push_str(FILE_SUFFIX);
    stem
}

/// FNV-1a: tiny and, unlike `std`'s `DefaultHasher`, guaranteed stable across Rust releases,
/// which a file name that must be found again after an upgrade needs.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// On-disk shape of a stream's file. `deny_unknown_fields` so a hand edit with a typo is
/// refused rather than read as "no checkpoint".
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    version: u64,
    stream: String,
    shards: BTreeMap<String, FileEntry>,
}

/// Read first and alone, so a file from a newer build is reported as a version mismatch
/// rather than as corrupt.
#[derive(Deserialize)]
struct VersionProbe {
    version: u64,
}

/// One shard: exactly one of the three fields.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<SequenceNumber>,
    #[serde(default, skip_serializing_if = "is_false")]
    shard_end: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_timestamp_ms: Option<u64>,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl From<&Position> for FileEntry {
    fn from(position: &Position) -> Self {
        match position {
            Position::AtTimestamp(ms) => FileEntry {
                at_timestamp_ms: Some(*ms),
                ..FileEntry::default()
            },
            Position::After(seq) => FileEntry {
                after: Some(seq.clone()),
                ..FileEntry::default()
            },
            Position::ShardEnd => FileEntry {
                shard_end: true,
                ..FileEntry::default()
            },
        }
    }
}

impl FileEntry {
    fn into_position(self) -> Option<Position> {
        match (self.after, self.shard_end, self.at_timestamp_ms) {
            (Some(seq), false, None) => Some(Position::After(seq)),
            (None, true, None) => Some(Position::ShardEnd),
            (None, false, Some(ms)) => Some(Position::AtTimestamp(ms)),
            _ => None,
        }
    }
}

/// Makes each temporary file name unique within the process; with the pid, unique among
/// live processes. A leftover from a crashed process that had our pid is skipped.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many taken temporary names to step over before giving up.
const TEMP_ATTEMPTS: u32 = 16;

/// Checkpoints as one JSON file per stream in a directory.
///
/// A save is read-modify-write of the whole file under `lock`, then write a new temporary
/// file in the same directory, `sync_all` it, `rename` it over the old one and fsync the
/// directory, so a crash at any point leaves either the old file or the new one, never a mix.
/// Leftover temporary files (a crash before the rename) are never read. Nothing is cached: the
/// file is the truth, and a failed save leaves nothing in memory to disagree with it.
///
/// `lock` serialises saves within this instance only; share one instance (in an `Arc`) per
/// directory. Two processes or instances writing one stream's file can lose each other's
/// updates, which moves a checkpoint back (more duplicates) but never forward past unprocessed
/// records: at-least-once still holds.
#[derive(Debug)]
pub struct FileCheckpointStore {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl FileCheckpointStore {
    /// Uses `dir`, creating it if needed, so a bad path fails at start-up.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| CheckpointError::Dir {
            path: dir.clone(),
            source,
        })?;
        Ok(FileCheckpointStore {
            dir,
            lock: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding `stream`'s checkpoints.
    pub fn path_for(&self, stream: &str) -> Result<PathBuf, CheckpointError> {
        if stream.is_empty() {
            return Err(CheckpointError::EmptyStreamName);
        }
        Ok(self.dir.join(checkpoint_file_name(stream)))
    }

    /// The positions in `path`, or `None` if there is no file.
    fn read(
        path: &Path,
        stream: &str,
    ) -> Result<Option<BTreeMap<String, Position>>, CheckpointError> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    op: "open",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let mut bytes = Vec::new();
        // One byte over the limit tells "exactly at the limit" from "over it".
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| CheckpointError::Io {
                op: "read",
                path: path.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(CheckpointError::TooLarge {
                path: path.to_owned(),
                limit: MAX_FILE_BYTES,
            });
        }
        let corrupt = |reason: String| CheckpointError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let probe: VersionProbe =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if probe.version != FORMAT_VERSION {
            return Err(CheckpointError::UnsupportedVersion {
                path: path.to_owned(),
                found: probe.version,
            });
        }
        let contents: FileContents =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if contents.stream != stream {
            return Err(CheckpointError::WrongStream {
                path: path.to_owned(),
                expected: stream.to_owned(),
                found: contents.stream,
            });
        }
        let mut shards = BTreeMap::new();
        for (shard, entry) in contents.shards {
            let Some(position) = entry.into_position() else {
                return Err(corrupt(format!(
                    "shard {shard:?} needs exactly one of \"after\", \"shard_end\": true and \"at_timestamp_ms\""
                )));
            };
            shards.insert(shard, position);
        }
        Ok(Some(shards))
    }

    /// Replaces the file `name` in the directory with `bytes` durably; see the type's docs for
    /// the sequence. An error from the final directory sync comes after the rename: the file is
    /// then whole, but may be the old one again after a power loss, so the caller must treat
    /// the save as failed (and save again, which is harmless).
    fn write_atomically(&self, name: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
        let io_err = |op: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| CheckpointError::Io { op, path, source }
        };
        let path = self.dir.join(name);
        let (tmp_path, mut tmp) = self.create_temp(name)?;
        let written = tmp
            .write_all(bytes)
            .map_err(io_err("write", &tmp_path))
            .and_then(|()| tmp.sync_all().map_err(io_err("sync", &tmp_path)));
        drop(tmp);
        let renamed =
            written.and_then(|()| fs::rename(&tmp_path, &path).map_err(io_err("replace", &path)));
        if let Err(e) = renamed {
            // Best effort: a temporary file left behind is harmless, never read.
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        sync_dir(&self.dir).map_err(|source| CheckpointError::Dir {
            path: self.dir.clone(),
            source,
        })
    }

    /// A new, empty temporary file next to the target; `create_new` so a live writer's file is
    /// never reused.
    fn create_temp(&self, target_name: &str) -> Result<(PathBuf, File), CheckpointError> {
        let pid = std::process::id();
        let mut attempt = 0;
        loop {
            let n = TEMP_COUNTER.fetch_add(1, atomic::Ordering::Relaxed);
            let tmp_path = self.dir.join(format!(".{target_name}.tmp-{pid}-{n}"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_path)
            {
                Ok(file) => return Ok((tmp_path, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < TEMP_ATTEMPTS => {
                    attempt += 1;
                }
                Err(source) => {
                    return Err(CheckpointError::Io {
                        op: "create",
                        path: tmp_path,
                        source,
                    });
                }
            }
        }
    }
}

/// Makes a rename in `dir` durable: the rename changes the directory, not the file.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a `File` (and its rename is not made durable this way),
/// so there is nothing to do.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

impl CheckpointStore for FileCheckpointStore {
    fn load(&self, stream: &str) -> Result<BTreeMap<String, Position>, CheckpointError> {
        let path = self.path_for(stream)?;
        Ok(Self::read(&path, stream)?.unwrap_or_default())
    }

    fn save(
        &self,
        stream: &str,
        shard: &str,
        position: &Position,
    ) -> Result<SaveOutcome, CheckpointError> {
        let mut outcomes = self.save_many(stream, &[(shard, position)])?;
        // save_many returns one outcome per input; the fallback is unreachable.
        Ok(outcomes.pop().unwrap_or(SaveOutcome::Unchanged))
    }

    fn save_many(
        &self,
        stream: &str,
        positions: &[(&str, &Position)],
    ) -> Result<Vec<SaveOutcome>, CheckpointError> {
        let path = self.path_for(stream)?;
        // The guarded data is the file; a panic while holding the lock leaves the old or the
        // new file, both whole, so a poisoned lock is safe to take over.
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // A corrupt file fails the save too: rewriting it would drop the other shards.
        let mut shards = Self::read(&path, stream)?.unwrap_or_default();
        let outcomes: Vec<SaveOutcome> = positions
            .iter()
            .map(|(shard, position)| SaveOutcome::apply(&mut shards, shard, position))
            .collect();
        if !outcomes.contains(&SaveOutcome::Advanced) {
            return Ok(outcomes);
        }
        let contents = FileContents {
            version: FORMAT_VERSION,
            stream: stream.to_owned(),
            shards: shards
                .iter()
                .map(|(shard, position)| (shard.clone(), FileEntry::from(position)))
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&contents).map_err(|e| CheckpointError::Io {
            op: "encode",
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        self.write_atomically(&checkpoint_file_name(stream), &bytes)?;
        Ok(outcomes)
    }
}

/// Checkpoints in memory, with the same rules as the file store; for tests.
#[derive(Debug, Default)]
pub struct MemoryCheckpointStore {
    streams: Mutex<BTreeMap<String, BTreeMap<String, Position>>>,
}

impl MemoryCheckpointStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    fn load(&self, stream: &str) -> Result<BTreeMap<String, Position>, CheckpointError> {
        if stream.is_empty() {
            return Err(CheckpointError::EmptyStreamName);
        }
        // Every update is a single insert, so a poisoned map is still consistent.
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(streams.get(stream).cloned().unwrap_or_default())
    }

    fn save(
        &self,
        stream: &str,
        shard: &str,
        position: &Position,
    ) -> Result<SaveOutcome, CheckpointError> {
        if stream.is_empty() {
            return Err(CheckpointError::EmptyStreamName);
        }
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let shards = streams.entry(stream.to_owned()).or_default();
        Ok(SaveOutcome::apply(shards, shard, position))
    }
}

/// The number [`InOrderCommits::sent`] gave a batch; the batch's acknowledgement carries it
/// back to [`InOrderCommits::ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchNo(u64);

impl BatchNo {
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A misuse of [`InOrderCommits`]: a consumer bug, never caused by data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("batch {0} was never sent")]
    NotSent(u64),
    #[error("the shard has ended; no batch may follow")]
    AfterShardEnd,
    #[error("a batch ending at sequence number {last} follows one ending at {previous}")]
    Backwards {
        last: SequenceNumber,
        previous: SequenceNumber,
    },
}

/// One shard's batches between being sent to the pipeline and being checkpointed. Batches are
/// numbered in the order they are sent; acknowledgements may come back in any order (several
/// workers), and a batch's position is released only when it and every batch before it are
/// acknowledged, so the checkpoint never passes a record that is still being processed.
#[derive(Debug, Default)]
pub struct InOrderCommits {
    /// The number of `pending[0]`, the oldest batch not yet released.
    first_pending: u64,
    /// Sent and not yet released, oldest first. As long as the pipeline's bounded queue: a
    /// shard cannot have more batches in flight than the queue holds.
    pending: VecDeque<Pending>,
    /// The last sequence number of the newest batch sent, to refuse one that goes back.
    last_sent: Option<SequenceNumber>,
    /// [`finish`](Self::finish) was called: the shard is read to its end.
    finished: bool,
    /// The newest position handed out, so each is handed out once.
    released: Option<Position>,
}

#[derive(Debug)]
struct Pending {
    last: SequenceNumber,
    acked: bool,
}

impl InOrderCommits {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the next batch, whose last whole record has sequence number `last`, and
    /// returns its number. Equal to the previous batch's `last` is allowed (a batch that
    /// completes no new record, e.g. the middle of a split KPL aggregate); smaller is not.
    pub fn sent(&mut self, last: SequenceNumber) -> Result<BatchNo, CommitError> {
        if self.finished {
            return Err(CommitError::AfterShardEnd);
        }
        if let Some(previous) = &self.last_sent
            && last < *previous
        {
            return Err(CommitError::Backwards {
                last,
                previous: previous.clone(),
            });
        }
        let number = self.first_pending + self.pending.len() as u64;
        self.last_sent = Some(last.clone());
        self.pending.push_back(Pending { last, acked: false });
        Ok(BatchNo(number))
    }

    /// Records that the batch is processed. Returns the position to save if it moved: the last
    /// sequence number of the newest batch whose predecessors are all acknowledged, or
    /// [`Position::ShardEnd`] once the shard is finished and everything is acknowledged.
    /// A repeated acknowledgement returns `Ok(None)`.
    pub fn ack(&mut self, batch: BatchNo) -> Result<Option<Position>, CommitError> {
        let Some(offset) = batch.0.checked_sub(self.first_pending) else {
            return Ok(None); // already released
        };
        let Some(pending) = usize::try_from(offset)
            .ok()
            .and_then(|i| self.pending.get_mut(i))
        else {
            return Err(CommitError::NotSent(batch.0));
        };
        pending.acked = true;
        let mut newest = None;
        while let Some(front) = self.pending.front()
            && front.acked
        {
            newest = self.pending.pop_front().map(|p| p.last);
            self.first_pending += 1;
        }
        if self.finished && self.pending.is_empty() {
            return Ok(self.release(Position::ShardEnd));
        }
        Ok(newest.and_then(|seq| self.release(Position::After(seq))))
    }

    /// Marks the shard as read to its end (`NextShardIterator` null); no batch may follow.
    /// Returns [`Position::ShardEnd`] at once if nothing is in flight; otherwise the
    /// acknowledgement of the last batch returns it. Calling it again returns `None`.
    pub fn finish(&mut self) -> Option<Position> {
        self.finished = true;
        if self.pending.is_empty() {
            self.release(Position::ShardEnd)
        } else {
            None
        }
    }

    /// Batches sent and not yet released (acknowledged or not).
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The newest position handed out.
    pub fn released(&self) -> Option<&Position> {
        self.released.as_ref()
    }

    /// `position` if it is past the last one handed out.
    fn release(&mut self, position: Position) -> Option<Position> {
        if self.released.as_ref().is_some_and(|r| *r >= position) {
            return None;
        }
        self.released = Some(position.clone());
        Some(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// A fresh directory per test, removed afterwards.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("albwatch-checkpoint-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            TestDir(dir)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).expect("test sequence number")
    }

    fn after(s: &str) -> Position {
        Position::After(seq(s))
    }

    /// A 56-digit sequence number like the API's, ending in `tail`.
    fn seq56(tail: u64) -> String {
        format!("4959033827149025660855969253836157109592157598{tail:010}")
    }

    const STREAM: &str = "alb-logs";
    const ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/alb-logs";

    /// The rules every store keeps.
    fn check_store_rules(store: &dyn CheckpointStore) {
        assert_eq!(store.load(STREAM).expect("load").len(), 0);
        let s = "shardId-000000000000";
        assert_eq!(
            store.save(STREAM, s, &after(&seq56(200))).expect("save"),
            SaveOutcome::Advanced
        );
        assert_eq!(
            store.save(STREAM, s, &after(&seq56(200))).expect("save"),
            SaveOutcome::Unchanged
        );
        assert_eq!(
            store.save(STREAM, s, &after(&seq56(100))).expect("save"),
            SaveOutcome::Stale {
                stored: after(&seq56(200))
            }
        );
        assert_eq!(store.load(STREAM).expect("load")[s], after(&seq56(200)));
        assert_eq!(
            store.save(STREAM, s, &after(&seq56(300))).expect("save"),
            SaveOutcome::Advanced
        );
        assert_eq!(
            store.save(STREAM, s, &Position::ShardEnd).expect("save"),
            SaveOutcome::Advanced
        );
        assert_eq!(
            store.save(STREAM, s, &Position::ShardEnd).expect("save"),
            SaveOutcome::Unchanged
        );
        // ShardEnd is final, however large the sequence number.
        let huge = "9".repeat(MAX_SEQUENCE_DIGITS);
        assert_eq!(
            store.save(STREAM, s, &after(&huge)).expect("save"),
            SaveOutcome::Stale {
                stored: Position::ShardEnd
            }
        );
        assert_eq!(store.load(STREAM).expect("load")[s], Position::ShardEnd);
        // Streams are separate.
        assert_eq!(store.load(ARN).expect("load").len(), 0);
        assert!(matches!(
            store.load(""),
            Err(CheckpointError::EmptyStreamName)
        ));
    }

    #[test]
    fn memory_store_keeps_the_rules() {
        check_store_rules(&MemoryCheckpointStore::new());
    }

    #[test]
    fn file_store_keeps_the_rules() {
        let dir = TestDir::new("rules");
        check_store_rules(&FileCheckpointStore::open(&dir.0).expect("open"));
    }

    #[test]
    fn file_store_round_trips_through_a_new_instance() {
        let dir = TestDir::new("round-trip");
        let mut expected = BTreeMap::new();
        {
            let store = FileCheckpointStore::open(&dir.0).expect("open");
            for i in 0..5u64 {
                let shard = format!("shardId-{i:012}");
                let position = if i == 3 {
                    Position::ShardEnd
                } else {
                    after(&seq56(i * 1000))
                };
                assert_eq!(
                    store.save(ARN, &shard, &position).expect("save"),
                    SaveOutcome::Advanced
                );
                expected.insert(shard, position);
            }
        }
        let store = FileCheckpointStore::open(&dir.0).expect("reopen");
        assert_eq!(store.load(ARN).expect("load"), expected);

        // The documented format, read back as plain JSON.
        let text = fs::read_to_string(store.path_for(ARN).expect("path")).expect("read");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(json["version"], 1);
        assert_eq!(json["stream"], ARN);
        assert_eq!(
            json["shards"]["shardId-000000000001"],
            serde_json::json!({"after": seq56(1000)})
        );
        assert_eq!(
            json["shards"]["shardId-000000000003"],
            serde_json::json!({"shard_end": true})
        );
    }

    #[test]
    fn file_store_reads_the_documented_compact_form() {
        let dir = TestDir::new("compact");
        let store = FileCheckpointStore::open(&dir.0).expect("open");
        let text = format!(
            r#"{{"version":1,"stream":"{STREAM}","shards":{{"shardId-000000000000":{{"after":"{}"}},"shardId-000000000001":{{"shard_end":true}}}}}}"#,
            seq56(7)
        );
        fs::write(store.path_for(STREAM).expect("path"), text).expect("write");
        let loaded = store.load(STREAM).expect("load");
        assert_eq!(loaded["shardId-000000000000"], after(&seq56(7)));
        assert_eq!(loaded["shardId-000000000001"], Position::ShardEnd);
    }

    #[test]
    fn a_start_time_is_below_every_sequence_number_and_round_trips() {
        let dir = TestDir::new("at-timestamp");
        let store = FileCheckpointStore::open(&dir.0).expect("open");
        let s = "shardId-000000000000";
        let started = Position::AtTimestamp(1_700_000_000_123);
        assert!(started < after("0"));
        assert!(Position::AtTimestamp(1) < Position::AtTimestamp(2));
        assert_eq!(
            store.save(STREAM, s, &started).expect("save"),
            SaveOutcome::Advanced
        );
        let text = fs::read_to_string(store.path_for(STREAM).expect("path")).expect("read");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(
            json["shards"][s],
            serde_json::json!({"at_timestamp_ms": 1_700_000_000_123u64})
        );
        assert_eq!(store.load(STREAM).expect("load")[s], started);
        // The first record processed supersedes it, and it never comes back.
        assert_eq!(
            store.save(STREAM, s, &after("5")).expect("save"),
            SaveOutcome::Advanced
        );
        assert_eq!(
            store.save(STREAM, s, &started).expect("save"),
            SaveOutcome::Stale { stored: after("5") }
        );
        // Two kinds of position for one shard is a damaged file.
        let both = format!(
            r#"{{"version":1,"stream":"{STREAM}","shards":{{"{s}":{{"after":"5","at_timestamp_ms":1}}}}}}"#
        );
        fs::write(store.path_for(STREAM).expect("path"), both).expect("write");
        assert!(matches!(
            store.load(STREAM),
            Err(CheckpointError::Corrupt { .. })
        ));
    }

    #[test]
    fn save_many_writes_all_shards_at_once_in_order() {
        let dir = TestDir::new("save-many");
        let store = FileCheckpointStore::open(&dir.0).expect("open");
        let _ = store.save(STREAM, "a", &after("50")).expect("save");
        let (p10, p60) = (after("10"), after("60"));
        let outcomes = store
            .save_many(
                STREAM,
                &[("a", &p10), ("b", &Position::ShardEnd), ("a", &p60)],
            )
            .expect("save_many");
        assert_eq!(
            outcomes,
            vec![
                SaveOutcome::Stale {
                    stored: after("50")
                },
                SaveOutcome::Advanced,
                SaveOutcome::Advanced
            ]
        );
        let loaded = store.load(STREAM).expect("load");
        assert_eq!(loaded["a"], p60);
        assert_eq!(loaded["b"], Position::ShardEnd);
    }

    #[test]
    fn missing_file_is_no_checkpoint() {
        let dir = TestDir::new("missing");
        let store = FileCheckpointStore::open(dir.0.join("nested/deeper"))
            .expect("open creates the directory");
        assert!(store.load(STREAM).expect("load").is_empty());
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_path_and_is_not_overwritten() {
        let dir = TestDir::new("corrupt");
        let store = FileCheckpointStore::open(&dir.0).expect("open");
        let path = store.path_for(STREAM).expect("path");
        let garbage = b"{\"version\":1,\"stream\":\"alb-lo";
        fs::write(&path, garbage).expect("write");

        let err = store.load(STREAM).expect_err("corrupt");
        assert!(
            matches!(&err, CheckpointError::Corrupt { path: p, .. } if *p == path),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        // A save must not replace it: that would silently drop every other shard.
        assert!(matches!(
            store.save(STREAM, "s", &after("1")),
            Err(CheckpointError::Corrupt { .. })
        ));
        assert_eq!(fs::read(&path).expect("read"), garbage);
    }

    #[test]
    fn damaged_entries_versions_and_foreign_files_are_typed_errors() {
        let dir = TestDir::new("damaged");
        let store = FileCheckpointStore::open(&dir.0).expect("open");
        let path = store.path_for(STREAM).expect("path");
        let cases = [
            (
                r#"{"version":1,"stream":"alb-logs","shards":{"s":{"after":"12a"}}}"#,
                "corrupt",
            ),
            (
                r#"{"version":1,"stream":"alb-logs","shards":{"s":{"after":""}}}"#,
                "corrupt",
            ),
            (
                r#"{"version":1,"stream":"alb-logs","shards":{"s":{}}}"#,
                "corrupt",
            ),
            (
                r#"{"version":1,"stream":"alb-logs","shards":{"s":{"shard_end":false}}}"#,
                "corrupt",
            ),
            (
                r#"{"version":1,"stream":"alb-logs","shards":{"s":{"after":"1","shard_end":true}}}"#,
                "corrupt",
            ),
            (
                r#"{"version":1,"stream":"alb-logs","shards":{"s":{"afer":"1"}}}"#,
                "corrupt",
            ),
            (r#"{"version":1,"stream":"alb-logs"}"#, "corrupt"),
            ("", "corrupt"),
            (r#"{"version":2,"whatever":[]}"#, "version"),
            (r#"{"version":1,"stream":"other","shards":{}}"#, "stream"),
        ];
        for (text, kind) in cases {
            fs::write(&path, text).expect("write");
            let err = store.load(STREAM).expect_err(text);
            let ok = match kind {
                "corrupt" => matches!(&err, CheckpointError::Corrupt { path: p, .. } if *p == path),
                "version" => matches!(&err, CheckpointError::UnsupportedVersion { found: 2, .. }),
                _ => matches!(&err, CheckpointError::WrongStream { found, .. } if found == "other"),
            };
            assert!(ok, "{text}: {err:?}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn oversized_file_is_refused() {
        let dir = TestDir::new("oversized");
        let store = FileCheckpointStore::open(&dir.0).expect("open");
        let path = store.path_for(STREAM).expect("path");
        let file = File::create(&path).expect("create");
        file.set_len(MAX_FILE_BYTES + 1).expect("set_len");
        assert!(matches!(
            store.load(STREAM),
            Err(CheckpointError::TooLarge { .. })
        ));
    }

    #[test]
    fn concurrent_saves_to_different_shards_lose_nothing() {
        let dir = TestDir::new("concurrent");
        let store = Arc::new(FileCheckpointStore::open(&dir.0).expect("open"));
        const THREADS: u64 = 8;
        const SAVES: u64 = 40;
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let store = Arc::clone(&store);
                scope.spawn(move || {
                    let shard = format!("shardId-{t:012}");
                    for i in 1..=SAVES {
                        let outcome = store.save(ARN, &shard, &after(&seq56(i))).expect("save");
                        assert_eq!(outcome, SaveOutcome::Advanced);
                    }
                });
            }
        });
        let loaded = store.load(ARN).expect("load");
        assert_eq!(loaded.len(), THREADS as usize);
        for t in 0..THREADS {
            assert_eq!(loaded[&format!("shardId-{t:012}")], after(&seq56(SAVES)));
        }
        // Every temporary file was renamed away.
        let names: Vec<_> = fs::read_dir(&dir.0)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_crash_before_the_rename_leaves_the_previous_checkpoint() {
        let dir = TestDir::new("crash");
        let store = FileCheckpointStore::open(&dir.0).expect("open");
        let _ = store
            .save(ARN, "shardId-000000000000", &after(&seq56(100)))
            .expect("save");
        let path = store.path_for(ARN).expect("path");
        let name = checkpoint_file_name(ARN);

        // What a kill -9 between write and rename leaves: a half-written temporary file, from
        // another process and from this one (whose counter a later save may step over).
        let half = br#"{"version":1,"stream":"arn:aws:kinesis:us-east-1:123456789012:stream/alb-logs","shards":{"shardId-000000000000":{"after":"49590"#;
        fs::write(dir.0.join(format!(".{name}.tmp-999999-0")), half).expect("write");
        let next = TEMP_COUNTER.load(atomic::Ordering::Relaxed);
        for n in next..next + 3 {
            fs::write(
                dir.0
                    .join(format!(".{name}.tmp-{}-{n}", std::process::id())),
                half,
            )
            .expect("write");
        }

        // A restarted consumer sees the last completed checkpoint.
        let restarted = FileCheckpointStore::open(&dir.0).expect("reopen");
        assert_eq!(
            restarted.load(ARN).expect("load")["shardId-000000000000"],
            after(&seq56(100))
        );
        // And keeps saving past the leftovers.
        assert_eq!(
            restarted
                .save(ARN, "shardId-000000000000", &after(&seq56(150)))
                .expect("save"),
            SaveOutcome::Advanced
        );
        assert_eq!(
            restarted.load(ARN).expect("load")["shardId-000000000000"],
            after(&seq56(150))
        );
        let text = fs::read_to_string(&path).expect("read");
        assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
    }

    #[test]
    fn file_names_are_safe_for_arns_and_odd_names() {
        assert_eq!(
            checkpoint_file_name(ARN),
            "arn%3Aaws%3Akinesis%3Aus-east-1%3A123456789012%3Astream%2Falb-logs.checkpoint.json"
        );
        assert_eq!(
            checkpoint_file_name("alb-logs_2.v1"),
            "alb-logs_2.v1.checkpoint.json"
        );
        // Case-sensitive names stay apart on case-insensitive file systems.
        assert_ne!(
            checkpoint_file_name("Logs").to_lowercase(),
            checkpoint_file_name("logs").to_lowercase()
        );
        for odd in [
            "..",
            "../../etc/passwd",
            "a/b",
            "a\\b",
            "a\0b",
            "ünï",
            " ",
            "%41",
        ] {
            let name = checkpoint_file_name(odd);
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-%".contains(&b)),
                "{odd:?} → {name}"
            );
            assert!(name.len() > FILE_SUFFIX.len() + 1);
        }
        assert_ne!(checkpoint_file_name("%41"), checkpoint_file_name("A"));

        // Long names are cut to fit and told apart by their hash.
        let long_a = format!("{}a", "x".repeat(2000));
        let long_b = format!("{}b", "x".repeat(2000));
        let (a, b) = (checkpoint_file_name(&long_a), checkpoint_file_name(&long_b));
        assert!(a.len() <= MAX_STEM_BYTES + FILE_SUFFIX.len(), "{}", a.len());
        assert_ne!(a, b);
        assert_eq!(a, checkpoint_file_name(&long_a), "stable");

        // An ARN round-trips and its file lands directly in the directory.
        let dir = TestDir::new("names");
        let store = FileCheckpointStore::open(&dir.0).expect("open");
        for stream in [ARN, "../escape", &long_a] {
            let path = store.path_for(stream).expect("path");
            assert_eq!(path.parent(), Some(dir.0.as_path()));
            let _ = store
                .save(stream, "shardId-000000000000", &after("1"))
                .expect("save");
            assert_eq!(store.load(stream).expect("load").len(), 1);
        }
        assert!(store.load(&long_b).expect("load").is_empty());
        assert!(matches!(
            store.path_for(""),
            Err(CheckpointError::EmptyStreamName)
        ));
    }

    #[test]
    fn sequence_numbers_parse_and_normalise() {
        assert_eq!(seq("0007").as_str(), "7");
        assert_eq!(seq("000").as_str(), "0");
        assert_eq!(seq("0"), seq("00"));
        assert_eq!(seq(&seq56(1)).as_str(), seq56(1));
        assert_eq!(SequenceNumber::parse(""), Err(InvalidSequenceNumber::Empty));
        assert_eq!(
            SequenceNumber::parse("12a"),
            Err(InvalidSequenceNumber::NotDecimal { offset: 2 })
        );
        for bad in ["+1", "-1", " 1", "1 ", "1e5", "١"] {
            assert!(SequenceNumber::parse(bad).is_err(), "{bad:?}");
        }
        let max = "9".repeat(MAX_SEQUENCE_DIGITS);
        assert!(SequenceNumber::parse(&max).is_ok());
        assert!(SequenceNumber::parse(&format!("000{max}")).is_ok());
        assert_eq!(
            SequenceNumber::parse(&format!("1{max}")),
            Err(InvalidSequenceNumber::TooLong {
                digits: MAX_SEQUENCE_DIGITS + 1
            })
        );
        assert_eq!(
            SequenceNumber::try_from("0042".to_owned()).map(|s| s.to_string()),
            Ok("42".into())
        );
    }

    #[test]
    fn sequence_numbers_order_numerically() {
        let ordered = [
            "0",
            "9",
            "10",
            "00011",
            "99",
            "18446744073709551615",                    // u64::MAX
            "18446744073709551616",                    // one past it
            "340282366920938463463374607431768211455", // u128::MAX
            "340282366920938463463374607431768211456",
            &seq56(0),
            &seq56(1),
            &seq56(9_999_999_999),
            "49590338271490256608559692538361571095921575990000000000",
            "100000000000000000000000000000000000000000000000000000000",
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(seq(a).cmp(&seq(b)), i.cmp(&j), "{a} vs {b}");
            }
        }
        assert_eq!(seq("0010").cmp(&seq("9")), Ordering::Greater);
        assert_eq!(seq("0010").cmp(&seq("10")), Ordering::Equal);
        assert!(after("5") < after("10"));
        assert!(after(&"9".repeat(MAX_SEQUENCE_DIGITS)) < Position::ShardEnd);
    }

    /// The oracle: left-pad both with zeros to one length and compare as text.
    fn padded_cmp(a: &str, b: &str) -> Ordering {
        let width = a.len().max(b.len());
        format!("{a:0>width$}").cmp(&format!("{b:0>width$}"))
    }

    proptest! {
        #[test]
        fn sequence_order_matches_padded_comparison(
            a in "[0-9]{1,60}", b in "[0-9]{1,60}", za in 0usize..4, zb in 0usize..4,
        ) {
            let (a, b) = (format!("{}{a}", "0".repeat(za)), format!("{}{b}", "0".repeat(zb)));
            prop_assert_eq!(seq(&a).cmp(&seq(&b)), padded_cmp(&a, &b));
            prop_assert_eq!(seq(&a) == seq(&b), padded_cmp(&a, &b) == Ordering::Equal);
        }

        #[test]
        fn sequence_order_matches_u128(a: u128, b: u128, za in 0usize..4) {
            let a_text = format!("{}{a}", "0".repeat(za));
            prop_assert_eq!(seq(&a_text).cmp(&seq(&b.to_string())), a.cmp(&b));
        }
    }

    /// Every permutation of `items`, by Heap's algorithm.
    fn permutations(items: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        for i in 0..k {
            permutations(items, k - 1, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(j, k - 1);
        }
    }

    #[test]
    fn in_order_commits_never_pass_an_unacknowledged_batch() {
        // Lengths differ and two neighbours share a sequence number (a split aggregate).
        let lasts = ["9", "10", "10", "999", &seq56(1), &seq56(2)];
        let mut all = Vec::new();
        permutations(&mut (0..lasts.len()).collect(), lasts.len(), &mut all);
        assert_eq!(
            all.iter().collect::<std::collections::BTreeSet<_>>().len(),
            720
        );
        for finish_early in [false, true] {
            for order in &all {
                let mut commits = InOrderCommits::new();
                let numbers: Vec<BatchNo> = lasts
                    .iter()
                    .map(|l| commits.sent(seq(l)).expect("sent"))
                    .collect();
                if finish_early {
                    assert_eq!(commits.finish(), None, "batches are in flight");
                }
                let mut acked = [false; 6];
                let mut saved: Vec<Position> = Vec::new();
                for &i in order {
                    acked[i] = true;
                    let before = commits.released().cloned();
                    let got = commits.ack(numbers[i]).expect("ack");
                    // The oracle: the longest fully acknowledged prefix.
                    let prefix = acked.iter().take_while(|&&a| a).count();
                    let expected = if finish_early && prefix == lasts.len() {
                        Some(Position::ShardEnd)
                    } else if prefix == 0 {
                        None
                    } else {
                        Some(after(lasts[prefix - 1]))
                    };
                    // Handed out exactly when it moved.
                    let moved = expected.clone().filter(|e| before.as_ref() != Some(e));
                    assert_eq!(got, moved, "order {order:?}");
                    if let Some(position) = got {
                        assert!(
                            saved.last().is_none_or(|s| *s < position),
                            "order {order:?}"
                        );
                        saved.push(position);
                    }
                    assert_eq!(commits.released(), expected.as_ref(), "order {order:?}");
                    // Whatever was handed out is never past an unacknowledged batch.
                    if let Some(Position::After(s)) = commits.released() {
                        for (k, l) in lasts.iter().enumerate() {
                            if !acked[k] {
                                assert!(*s <= seq(l), "order {order:?}");
                            }
                        }
                    }
                }
                assert_eq!(commits.in_flight(), 0);
                if finish_early {
                    assert_eq!(saved.last(), Some(&Position::ShardEnd));
                } else {
                    assert_eq!(saved.last(), Some(&after(&seq56(2))));
                    assert_eq!(commits.finish(), Some(Position::ShardEnd));
                }
                assert_eq!(commits.finish(), None, "ShardEnd is handed out once");
            }
        }
    }

    #[test]
    fn in_order_commits_refuse_misuse() {
        let mut commits = InOrderCommits::new();
        let b0 = commits.sent(seq("100")).expect("sent");
        assert_eq!(
            commits.sent(seq("99")),
            Err(CommitError::Backwards {
                last: seq("99"),
                previous: seq("100")
            })
        );
        assert_eq!(commits.ack(BatchNo(7)), Err(CommitError::NotSent(7)));
        assert_eq!(commits.ack(b0), Ok(Some(after("100"))));
        assert_eq!(commits.ack(b0), Ok(None), "a repeated ack changes nothing");
        let b1 = commits.sent(seq("200")).expect("sent");
        assert_eq!(b1.get(), 1);
        assert_eq!(commits.finish(), None);
        assert_eq!(commits.sent(seq("300")), Err(CommitError::AfterShardEnd));
        assert_eq!(commits.ack(b1), Ok(Some(Position::ShardEnd)));

        // A closed shard with nothing left to read ends at once.
        let mut empty = InOrderCommits::new();
        assert_eq!(empty.finish(), Some(Position::ShardEnd));
        assert_eq!(empty.finish(), None);
    }

    #[test]
    fn kill_and_restart_resumes_after_the_last_acknowledged_prefix() {
        // Batches 0–3 sent, 0, 1 and 3 acknowledged, then the process dies: the saved
        // checkpoint is batch 1's last record, so batches 2 and 3 are read again (duplicates
        // of 3), and nothing is skipped.
        let dir = TestDir::new("restart");
        let shard = "shardId-000000000000";
        {
            let store = FileCheckpointStore::open(&dir.0).expect("open");
            let mut commits = InOrderCommits::new();
            let batches: Vec<BatchNo> = (1..=4)
                .map(|i| commits.sent(seq(&seq56(i * 10))).expect("sent"))
                .collect();
            for b in [batches[1], batches[0], batches[3]] {
                if let Some(position) = commits.ack(b).expect("ack") {
                    let _ = store.save(STREAM, shard, &position).expect("save");
                }
            }
        }
        let store = FileCheckpointStore::open(&dir.0).expect("reopen");
        assert_eq!(store.load(STREAM).expect("load")[shard], after(&seq56(20)));
    }
}
