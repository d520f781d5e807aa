//! Log files as an input: a run of files read one after the other to their end (`run FILE…`
//! and `replay`), or one file followed as it grows (`run --follow`). A run is one partition:
//! its files are read in order, so they are one stream in event time, and the S3 layout of
//! one file per load-balancer node and 5 minutes, concatenated or listed in delivery order,
//! is only out of order within the bound. A followed file is its own partition, since files
//! followed side by side advance independently. Each yields batches of whole lines
//! ([`crate::lines::Chunker`]) for the worker pool.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::buffers::Buffers;
use crate::event_time::{InputKind, PartitionSpec};
use crate::lines::{self, Chunk, Chunker};
use crate::pipeline::RawBatch;

use super::{PartitionInput, Shutdown};

/// How often a followed file is checked for growth once read to its end.
const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// The partition of a run of files: never idle, finished after its last file.
pub fn run_partition(out_of_order_us: i64) -> PartitionSpec {
    PartitionSpec {
        input: InputKind::Files,
        name: "files".to_string(),
        out_of_order_us,
        idle_us: None,
    }
}

/// The partition of one followed file: idle when the file stops growing.
pub fn follow_partition(path: &Path, out_of_order_us: i64, idle_us: i64) -> PartitionSpec {
    PartitionSpec {
        input: InputKind::Files,
        name: path.display().to_string(),
        out_of_order_us,
        idle_us: Some(idle_us),
    }
}

/// A file that could not be read (to its end), and why.
#[derive(Debug)]
pub struct Unreadable {
    pub path: PathBuf,
    pub error: io::Error,
}

/// The batches of a run of files (`-` is stdin), in order: each file's lines, cut into
/// batches of about `batch_bytes`; a file that cannot be opened or read comes as one
/// [`Unreadable`] and the run goes on with the next.
pub fn run_batches<'a>(
    paths: &'a [PathBuf],
    batch_bytes: usize,
    max_line: usize,
    buffers: &'a Buffers,
) -> impl Iterator<Item = Result<Chunk, Unreadable>> + 'a {
    paths.iter().flat_map(move |path| {
        let unreadable = |error| Unreadable {
            path: path.clone(),
            error,
        };
        match lines::open(path) {
            Ok(reader) => Box::new(
                Chunker::new(reader, max_line)
                    .with_buffers(buffers.clone())
                    .into_chunks(batch_bytes)
                    .map(move |item| item.map_err(unreadable)),
            ) as Box<dyn Iterator<Item = _>>,
            Err(error) => Box::new(std::iter::once(Err(unreadable(error)))),
        }
    })
}

/// The batch of a chunk, its over-long lines counted with it.
pub fn batch_of(chunk: Chunk) -> RawBatch {
    let mut batch = RawBatch::new(chunk.lines);
    batch.too_long = chunk.too_long;
    batch
}

/// Reads a run of files into `input` until its end or `stopping` is set, then finishes the
/// partition; unreadable files are reported and skipped.
pub fn read_run(
    paths: &[PathBuf],
    input: &PartitionInput,
    batch_bytes: usize,
    max_line: usize,
    stopping: &Shutdown,
) {
    for item in run_batches(paths, batch_bytes, max_line, input.buffers()) {
        if stopping.is_set() {
            break;
        }
        match item {
            Ok(chunk) => {
                if input.submit(batch_of(chunk)).is_err() {
                    break;
                }
            }
            Err(u) => eprintln!("albwatch: {}: {}", u.path.display(), u.error),
        }
    }
    input.finish();
}

/// Follows one file as it grows until `stopping` (a shrinking file is taken as truncated and
/// re-read from its start). A gzip file is a finished object, not a growing log: it is read
/// once as a run of one.
pub fn follow(
    path: &Path,
    input: &PartitionInput,
    batch_bytes: usize,
    max_line: usize,
    stopping: &Shutdown,
) -> io::Result<()> {
    if lines::is_gzip(path)? {
        read_run(
            std::slice::from_ref(&path.to_path_buf()),
            input,
            batch_bytes,
            max_line,
            stopping,
        );
        return Ok(());
    }
    let open =
        || -> io::Result<_> {
            Ok(Chunker::new(std::fs::File::open(path)?, max_line)
                .with_buffers(input.buffers().clone()))
        };
    let mut chunker = open()?;
    let mut last_len = 0;
    while !stopping.is_set() {
        let (chunk, at_end) = chunker.available(batch_bytes)?;
        if (!chunk.lines.is_empty() || chunk.too_long > 0) && input.submit(batch_of(chunk)).is_err()
        {
            break;
        }
        if at_end {
            std::thread::sleep(FOLLOW_POLL);
            let len = std::fs::metadata(path).map_or(last_len, |m| m.len());
            if len < last_len {
                chunker = open()?;
            }
            last_len = len;
        }
    }
    input.finish();
    Ok(())
}
