//! Any bytes as a log file, read the way `run FILE`, `replay` and `parse` read one: through
//! `lines::maybe_gzip` (content starting with the gzip magic is decompressed, as ALB's
//! `.log.gz` objects are), then cut into batches by `lines::Chunker` (replay, run) or into
//! numbered lines by `lines::LineReader` (parse), with a small line limit and small reads so
//! line boundaries fall everywhere. The same bytes gzip'd by the target must read exactly as
//! the bytes themselves. Checks against a plain oracle (split at `\n`; a last line without one
//! counts; a line over the limit is skipped and counted, never returned): both readers give
//! the oracle's lines and over-long count; every batch is whole lines ending in `\n`; nothing
//! panics on content that is not gzip after all.
#![no_main]

use std::io::{BufReader, Cursor, Write};

use albwatch::lines::{Chunker, Line, LineReader, maybe_gzip};
use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;

/// Small, so over-long lines are common; the read buffer smaller still.
const MAX_LINE: usize = 40;
const READ: usize = 7;

fuzz_target!(|data: &[u8]| {
    let target = 1 + data.first().map_or(0, |&b| usize::from(b));
    let plain = read_both(data.to_vec(), target);
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap_or_default();
    let gzipped = read_both(encoder.finish().unwrap_or_default(), target);
    // Content that itself starts with the gzip magic is decompressed when read plain, and
    // read as it is once gzip'd (one layer only), so only the rest has an oracle.
    if !data.starts_with(&albwatch::gzip::MAGIC) {
        assert_eq!(plain, Some(oracle(data)), "plain file");
        assert_eq!(gzipped, plain, "gzip'd file");
    }
});

/// What a file holds: its lines that fit, and how many did not.
type Read = (Vec<Vec<u8>>, u64);

/// Reads `file` with both readers, which must agree; `None` when reading fails (corrupt gzip).
fn read_both(file: Vec<u8>, target: usize) -> Option<Read> {
    let open = || maybe_gzip(BufReader::with_capacity(READ, Cursor::new(file.clone())));
    let mut chunker = Chunker::new(open().ok()?, MAX_LINE);
    let mut chunked = (Vec::new(), 0);
    let chunks_ok = loop {
        match chunker.next_chunk(target) {
            Ok(Some(chunk)) => {
                assert!(
                    chunk.lines.is_empty() || chunk.lines.ends_with(b"\n"),
                    "{chunk:?}"
                );
                chunked.0.extend(
                    chunk
                        .lines
                        .split_inclusive(|&b| b == b'\n')
                        .map(|l| l[..l.len() - 1].to_vec()),
                );
                chunked.1 += chunk.too_long;
            }
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    let mut reader = LineReader::new(open().ok()?, MAX_LINE);
    let mut numbered = (Vec::new(), 0);
    let mut expected_no = 0;
    let lines_ok = loop {
        match reader.next_line() {
            Ok(Some((no, line))) => {
                expected_no += 1;
                assert_eq!(no, expected_no);
                match line {
                    Line::Complete(bytes) => {
                        assert!(bytes.len() <= MAX_LINE && !bytes.contains(&b'\n'));
                        numbered.0.push(bytes.to_vec());
                    }
                    Line::TooLong { len } => {
                        assert!(len > MAX_LINE);
                        numbered.1 += 1;
                    }
                }
            }
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    assert_eq!(chunks_ok, lines_ok, "one reader failed where the other did not");
    if !chunks_ok {
        return None;
    }
    // The chunker leaves the line limit of lines after the first in a read to the workers, so
    // it may pass on long lines the line reader counts: apply the limit as the workers do.
    let (mut kept, mut too_long) = (Vec::new(), chunked.1);
    for line in chunked.0 {
        if line.len() > MAX_LINE {
            too_long += 1;
        } else {
            kept.push(line);
        }
    }
    assert_eq!((&kept, too_long), (&numbered.0, numbered.1), "chunker vs line reader");
    Some(numbered)
}

fn oracle(data: &[u8]) -> Read {
    let mut lines = Vec::new();
    let mut too_long = 0;
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    if data.is_empty() {
        return (lines, too_long);
    }
    for line in body.split(|&b| b == b'\n') {
        if line.len() > MAX_LINE {
            too_long += 1;
        } else {
            lines.push(line.to_vec());
        }
    }
    (lines, too_long)
}
