//! KPL aggregates (the Kinesis input's framing) with a digest that matches, so the
//! protobuf reader is what gets fuzzed. Two aggregates per input: the bytes as the protobuf
//! message itself (magic + bytes + their MD5), and a well-formed `AggregatedRecord` built by
//! this target, one user record per `\0`-separated chunk of the bytes (a chunk starting with
//! `z` is gzip'd, the `z` dropped). Checks: an `Err` leaves the output buffer as it was, an
//! `Ok` appends exactly `lines` `\n`-ended lines and, for a non-empty message, says `Kpl`; a
//! wrong digest makes the bytes plain text; the built aggregate decodes exactly as its user
//! records do one by one — same bytes in order, summed lines, the first failure failing it
//! all — with their contents charged to one `max_decompressed_bytes` budget (checked at two
//! limits); a reused decoder agrees with a fresh one.
#![no_main]

mod common;

use albwatch::decode::{DecodeError, Decoded, Decoder, PayloadFormat};
use common::{Outcome, checked, gzip, limits, text_lines};
use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};

const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const MAX: usize = 64 * 1024;
/// Small enough that the fuzzer reaches both budget checks (aggregate size and content sum).
const SMALL: usize = 300;

fuzz_target!(|data: &[u8]| {
    let mut warm = Decoder::new(limits(MAX));
    let mut tight = Decoder::new(limits(SMALL));

    // The bytes as the protobuf message.
    let framed = frame(data);
    let raw = reused_agrees(&mut warm, &framed, MAX);
    if !data.is_empty()
        && let Ok(d) = raw.0
    {
        assert_eq!(
            d.format,
            PayloadFormat::Kpl,
            "a matching digest is an aggregate"
        );
    }
    let capped = reused_agrees(&mut tight, &framed, SMALL);
    assert!(
        capped == raw || capped.0 == Err(DecodeError::TooLarge),
        "{capped:?}"
    );
    if framed.len() > SMALL {
        assert_eq!(
            capped.0,
            Err(DecodeError::TooLarge),
            "aggregate over the cap"
        );
    }
    // A digest off by one bit: not an aggregate, so plain text lines.
    let mut wrong = framed.clone();
    if let Some(last) = wrong.last_mut() {
        *last ^= 1;
    }
    if wrong.len() <= MAX {
        let want = text_lines(&wrong);
        let lines = want.iter().filter(|&&b| b == b'\n').count();
        let plain = Ok(Decoded {
            format: PayloadFormat::Lines,
            lines,
        });
        assert_eq!(checked(&mut warm, &wrong), (plain, want), "wrong digest");
    }

    // A well-formed aggregate of the chunks, table first or last as the length says.
    let users: Vec<User> = data.split(|&b| b == 0).map(User::new).collect();
    let framed = frame(&aggregate(&users, data.len() % 2 == 1));
    let mut single = Decoder::new(limits(MAX));
    for (decoder, max) in [(&mut warm, MAX), (&mut tight, SMALL)] {
        let got = reused_agrees(decoder, &framed, max);
        if let Some(want) = expected(&users, framed.len(), max, &mut single) {
            assert_eq!(got, want, "aggregate vs its user records (cap {max})");
        }
    }
});

/// One user record to put in an aggregate.
struct User {
    data: Vec<u8>,
    /// Its content's size after gunzip, when this target knows it.
    content: Option<usize>,
}

impl User {
    fn new(chunk: &[u8]) -> Self {
        match chunk.strip_prefix(b"z") {
            Some(text) => User {
                data: gzip(&[text]),
                content: Some(text.len()),
            },
            None => User {
                data: chunk.to_vec(),
                content: (!chunk.starts_with(&GZIP_MAGIC)).then_some(chunk.len()),
            },
        }
    }
}

/// What decoding the aggregate of `users` (framed into `framed_len` bytes) under `max` must
/// give, from decoding each user record alone; `None` when a user record's content size is
/// unknown (fuzzer-made gzip).
fn expected(
    users: &[User],
    framed_len: usize,
    max: usize,
    single: &mut Decoder,
) -> Option<Outcome> {
    if framed_len > max {
        return Some((Err(DecodeError::TooLarge), Vec::new()));
    }
    let mut budget = max;
    let mut lines = 0;
    let mut bytes = Vec::new();
    for user in users {
        let content = user.content?;
        if content > budget {
            return Some((Err(DecodeError::TooLarge), Vec::new()));
        }
        budget -= content;
        // A user record is not checked for the KPL magic again; alone it is, but its digest
        // cannot match (the fuzzer would need an MD5 preimage), so it is plain there too.
        match checked(single, &user.data) {
            (Ok(d), appended) => {
                lines += d.lines;
                bytes.extend_from_slice(&appended);
            }
            (Err(e), _) => return Some((Err(e), Vec::new())),
        }
    }
    let kpl = Decoded {
        format: PayloadFormat::Kpl,
        lines,
    };
    Some((Ok(kpl), bytes))
}

/// Decodes `input` twice with `decoder` and once with a fresh one; all three must agree.
fn reused_agrees(decoder: &mut Decoder, input: &[u8], max: usize) -> Outcome {
    let first = checked(decoder, input);
    assert_eq!(
        checked(decoder, input),
        first,
        "a reused decoder changed its answer"
    );
    assert_eq!(
        checked(&mut Decoder::new(limits(max)), input),
        first,
        "fresh decoder"
    );
    first
}

/// Magic, message, MD5 of the message: the KPL framing.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = MAGIC.to_vec();
    framed.extend_from_slice(message);
    framed.extend_from_slice(&Md5::digest(message));
    framed
}

/// `AggregatedRecord { partition_key_table = ["pk"]; records = [Record { partition_key_index
/// = 0, data }] }`, with the key table before or after the records (protobuf allows either).
fn aggregate(users: &[User], table_last: bool) -> Vec<u8> {
    let table = [0x0a, 0x02, b'p', b'k'];
    let mut message = Vec::new();
    if !table_last {
        message.extend_from_slice(&table);
    }
    for user in users {
        let mut record = vec![0x08, 0x00, 0x1a];
        varint(user.data.len(), &mut record);
        record.extend_from_slice(&user.data);
        message.push(0x1a);
        varint(record.len(), &mut message);
        message.extend_from_slice(&record);
    }
    if table_last {
        message.extend_from_slice(&table);
    }
    message
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}
