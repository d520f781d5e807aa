//! Any bytes as one delivered record (a Firehose or Kinesis record after base64), through
//! `decode::Decoder`: every format the decode stage detects by content is reached from here —
//! plain lines, gzip (the input itself, and the input gzip'd by this target as one member and
//! as two), ALB JSON records, and CloudWatch Logs envelopes (the input as is, and the input
//! wrapped as the `message` of a gzip'd `DATA_MESSAGE`). Checks: an `Err` leaves the output
//! buffer byte for byte as it was; an `Ok` appends exactly `lines` non-empty lines, each ending
//! in `\n`; plain text comes out as its non-blank lines; gzip'd content decodes exactly as the
//! content itself does (format aside); a smaller `max_decompressed_bytes` only ever turns a
//! result into `TooLarge`, and does for content over it; a reused decoder, a fresh one,
//! `decode_record` and `decode_all` over `Records` all agree.
#![no_main]

mod common;

use albwatch::decode::{
    DecodeError, DecodeStats, Decoded, Decoder, PayloadFormat, Records, decode_record,
};
use common::{Outcome, PREFIX, checked, decoded, gzip, limits, text_lines};
use libfuzzer_sys::fuzz_target;

/// Small, so a gzip bomb costs at most this much to inflate.
const MAX: usize = 64 * 1024;
/// Smaller than most inputs the fuzzer grows, so the size checks are reached.
const SMALL: usize = 512;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

fuzz_target!(|data: &[u8]| {
    let (limits, small) = (limits(MAX), limits(SMALL));
    let mut warm = Decoder::new(limits);

    // Gzip'd first, so the plain decodes below run on scratch a gzip record has used.
    let zipped = checked(&mut warm, &gzip(&[data]));
    let first = checked(&mut warm, data);
    let again = checked(&mut warm, data);
    assert_eq!(first, again, "a reused decoder changed its answer");
    assert_eq!(
        first,
        checked(&mut Decoder::new(limits), data),
        "fresh decoder"
    );
    let mut out = PREFIX.to_vec();
    let free = decode_record(data, &limits, &mut out);
    assert_eq!((free, out[PREFIX.len()..].to_vec()), first, "decode_record");

    let plain = !data.starts_with(&GZIP_MAGIC);
    if data.is_empty() {
        assert_eq!(first, (Ok(decoded(PayloadFormat::Empty, 0)), Vec::new()));
    } else if plain && !looks_like_json(data) && data.len() <= MAX {
        // Not JSON, not gzip, and (no MD5 can match here) not a KPL aggregate: text, always.
        let want = text_lines(data);
        let lines = want.iter().filter(|&&b| b == b'\n').count();
        assert_eq!(first, (Ok(decoded(PayloadFormat::Lines, lines)), want));
    }

    // The content gzip'd decodes as the content does, in one member or two.
    if plain {
        let want = gzipped_outcome(&first);
        assert_eq!(zipped, want, "gzip changed the content's meaning");
        let (head, tail) = data.split_at(data.len() / 2);
        assert_eq!(
            checked(&mut warm, &gzip(&[head, tail])),
            want,
            "two members"
        );
    }

    // A lower cap only adds `TooLarge`, and content over it is `TooLarge`.
    let mut tight = Decoder::new(small);
    let capped = checked(&mut tight, data);
    assert!(
        capped == first || capped.0 == Err(DecodeError::TooLarge),
        "{capped:?}"
    );
    if plain {
        let capped_zip = checked(&mut tight, &gzip(&[data]));
        assert_eq!(capped_zip, gzipped_outcome(&capped));
        if data.len() > SMALL {
            assert_eq!(capped.0, Err(DecodeError::TooLarge));
        }
    }

    // The input as the message of a CloudWatch Logs subscription, the usual Firehose payload.
    let message = String::from_utf8_lossy(data);
    let envelope = serde_json::json!({
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "alb",
        "logStream": "s",
        "subscriptionFilters": ["f"],
        "logEvents": [{"id": "1", "timestamp": 0, "message": &*message}],
    });
    let envelope = serde_json::to_vec(&envelope).expect("serialise");
    let (result, lines) = checked(&mut warm, &gzip(&[&envelope]));
    if envelope.len() <= MAX {
        let Ok(got) = result else {
            panic!("a well-formed DATA_MESSAGE failed: {result:?}")
        };
        assert_eq!(got.format, PayloadFormat::CloudWatchLogs);
        if !message.trim_ascii_start().starts_with('{') {
            assert_eq!(lines, text_lines(message.as_bytes()), "message lines");
        }
    }

    // `decode_all`: the same bytes, in order, and counts that add up.
    let inputs: [&[u8]; 3] = [data, &gzip(&[data]), &envelope];
    let mut records = Records::default();
    let mut want_out = PREFIX.to_vec();
    let mut want_stats = DecodeStats::default();
    let mut single = Decoder::new(limits);
    for input in inputs {
        records.push(input);
        let (result, bytes) = checked(&mut single, input);
        want_out.extend_from_slice(&bytes);
        match result {
            Ok(d) => want_stats.decoded(d.format, d.lines),
            Err(e) => want_stats.failed(e),
        }
    }
    assert_eq!(records.len(), inputs.len());
    assert!(
        records.iter().eq(inputs.iter().copied()),
        "Records changed a record"
    );
    let mut out = PREFIX.to_vec();
    let mut stats = DecodeStats::default();
    warm.decode_all(&records, &mut out, &mut stats);
    assert_eq!(out, want_out, "decode_all output");
    assert_eq!(stats, want_stats, "decode_all counts");
});

/// What decoding `content` gzip'd must give, from what decoding it as is gave.
fn gzipped_outcome((result, bytes): &Outcome) -> Outcome {
    let result = result.map(|d| Decoded {
        format: match d.format {
            PayloadFormat::Empty | PayloadFormat::Lines => PayloadFormat::GzipLines,
            PayloadFormat::Json => PayloadFormat::GzipJson,
            other => other,
        },
        ..d
    });
    (result, bytes.clone())
}

fn looks_like_json(content: &[u8]) -> bool {
    matches!(content.trim_ascii_start().first(), Some(b'{' | b'['))
}
