//! Helpers shared by the decode targets (`mod common;` in each; not a target itself).
#![allow(dead_code)] // each target uses its own subset

use std::io::Write;

use albwatch::decode::{DecodeError, DecodeLimits, Decoded, Decoder, PayloadFormat};
use flate2::Compression;
use flate2::write::GzEncoder;

/// What the caller's buffer held before the record: it must survive every outcome.
pub const PREFIX: &[u8] = b"line kept from an earlier record\n";

/// A decode's result with the bytes it appended after [`PREFIX`].
pub type Outcome = (Result<Decoded, DecodeError>, Vec<u8>);

pub fn limits(max_decompressed_bytes: usize) -> DecodeLimits {
    DecodeLimits {
        max_decompressed_bytes,
        ..DecodeLimits::default()
    }
}

pub fn decoded(format: PayloadFormat, lines: usize) -> Decoded {
    Decoded { format, lines }
}

/// Decodes `input` after a non-empty prefix, checks what every outcome must satisfy, and
/// returns the result with the bytes it appended.
pub fn checked(decoder: &mut Decoder, input: &[u8]) -> Outcome {
    let mut out = PREFIX.to_vec();
    let result = decoder.decode(input, &mut out);
    assert!(out.starts_with(PREFIX), "the prefix was overwritten");
    let appended = out[PREFIX.len()..].to_vec();
    match &result {
        Err(e) => assert!(appended.is_empty(), "{e:?} left {appended:?} behind"),
        Ok(d) => {
            let newlines = appended.iter().filter(|&&b| b == b'\n').count();
            assert_eq!(d.lines, newlines, "lines vs newlines in {appended:?}");
            assert!(
                appended.is_empty() || appended.ends_with(b"\n"),
                "{appended:?}"
            );
            assert!(!appended.starts_with(b"\n"), "empty line in {appended:?}");
            assert!(!contains(&appended, b"\n\n"), "empty line in {appended:?}");
            assert_eq!(d.format == PayloadFormat::Empty, input.is_empty(), "{d:?}");
        }
    }
    (result, appended)
}

/// The documented text rule: every non-blank line (blank: empty or a lone `\r`), `\n`-ended.
pub fn text_lines(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        if !line.is_empty() && line != b"\r" {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `parts`, each as its own gzip member, back to back.
pub fn gzip(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(part).expect("write to a Vec");
        out.extend(encoder.finish().expect("finish a Vec"));
    }
    out
}
