//! Any bytes through `albwatch::gzip`, the one gzip module: as they are (mostly not gzip, so
//! the error paths) and gzip'd by the target as one, two or three members (so the content is
//! fuzzed behind valid framing), each through the capped `Inflater` (records, Firehose request
//! bodies) and the streaming `reader` (log files). Checks: nothing panics; the inflater and
//! the streaming reader agree with flate2's plain multi-member decoder on every input both
//! accept; an inflation under the cap returns exactly the content; content over the cap is
//! `TooLarge` and nothing else; a smaller cap only ever turns a result into `TooLarge`; a
//! reused inflater agrees with a fresh one and with `inflate_capped`.
#![no_main]

use std::io::{Read, Write};

use albwatch::gzip::{self, GzipError, Inflater};
use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 * 1024;
const SMALL_LIMIT: usize = 300;

fuzz_target!(|data: &[u8]| {
    let mut reused = Inflater::default();
    check(&mut reused, data, None);
    let members = 1 + data.first().map_or(0, |b| usize::from(b % 3));
    let framed = gzip_members(data, members);
    check(&mut reused, &framed, Some(data));
});

/// Inflates `input` every way there is; `content` is what it must give when the target framed
/// it itself.
fn check(reused: &mut Inflater, input: &[u8], content: Option<&[u8]>) {
    let reference = reference(input);
    let capped = reused.inflate(input, LIMIT).map(<[u8]>::to_vec);
    let fresh = Inflater::default().inflate(input, LIMIT).map(<[u8]>::to_vec);
    assert_eq!(capped, fresh, "reused and fresh inflaters differ");
    assert_eq!(capped, gzip::inflate_capped(input, LIMIT));
    if let Some(content) = content {
        let expected = if content.len() > LIMIT {
            Err(GzipError::TooLarge)
        } else {
            Ok(content.to_vec())
        };
        assert_eq!(capped, expected);
    }
    match (&capped, &reference) {
        (Ok(out), Some(whole)) => assert_eq!(out, whole),
        (Ok(out), None) => panic!("inflater accepted what flate2 rejects: {out:?}"),
        (Err(GzipError::TooLarge), Some(whole)) => assert!(whole.len() > LIMIT),
        (Err(GzipError::TooLarge), None) => {}
        // flate2's reader ends quietly where a member's header is short; the inflater insists
        // on whole members, so it may refuse what the reference accepts, never the reverse.
        (Err(GzipError::Corrupt), _) => {}
    }
    let small = reused.inflate(input, SMALL_LIMIT).map(<[u8]>::to_vec);
    match (&capped, &small) {
        (Ok(out), Ok(small_out)) => assert_eq!(out, small_out),
        (Ok(out), Err(GzipError::TooLarge)) => assert!(out.len() > SMALL_LIMIT),
        (_, Err(GzipError::TooLarge)) => {}
        (Err(e), Ok(_)) => panic!("a smaller cap turned {e:?} into a success"),
        (Err(e), Err(small_e)) => assert_eq!(e, small_e),
        (Ok(_), Err(small_e)) => panic!("a smaller cap failed as {small_e:?}"),
    }
    if input.starts_with(&gzip::MAGIC) {
        let mut streamed = Vec::new();
        let read = gzip::reader(input, 64).read_to_end(&mut streamed);
        if let (Ok(_), Some(whole)) = (read, &reference) {
            assert_eq!(&streamed, whole, "streaming reader vs flate2");
        }
    }
}

/// flate2's own multi-member decoder, uncapped but for a generous bound so a bomb stays cheap.
#[allow(clippy::disallowed_types, reason = "the reference the module is checked against")]
fn reference(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(input)
        .take(4 * LIMIT as u64)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

fn gzip_members(data: &[u8], members: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let step = data.len().div_ceil(members).max(1);
    let mut chunks: Vec<&[u8]> = data.chunks(step).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    for chunk in chunks {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(chunk).unwrap_or_default();
        out.extend(encoder.finish().unwrap_or_default());
    }
    out
}
