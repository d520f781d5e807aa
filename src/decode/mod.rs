//! The decode stage: turns the bytes of one delivered record (a Firehose record now, a Kinesis
//! record later; already base64-decoded) into zero or more newline-terminated ALB access-log
//! lines appended to a caller-owned buffer, and says which payload format it found. It
//! recognises, in the order of spec §4.5/§5.9: an empty record; gzip (capped, multi-member),
//! whose content is then detected again; JSON — a CloudWatch Logs subscription envelope
//! (`DATA_MESSAGE` lines, `CONTROL_MESSAGE` skipped) or ALB records with named fields, which are
//! rendered back into the standard space-separated line; and otherwise plain text lines. It
//! hands the lines to the parser, which treats them exactly like lines read from a file.
//!
//! A record that cannot be decoded is one [`DecodeError`] (a closed set, safe as a metric
//! label) and leaves the output buffer as it was, so the caller counts it and moves on.
//! KPL aggregates (magic `F3 89 9A C2`, §5.7) are not recognised here: they fall through to
//! plain text and fail to parse line by line.

mod gzip;
mod json;
mod record;
mod text;

use crate::lines::DEFAULT_MAX_LINE_BYTES;

/// Default cap on one record's decompressed size: Firehose records are at most 1000 KiB
/// compressed, and CloudWatch Logs batches at most 1 MiB of events, so 16 MiB leaves room for
/// any honest payload while stopping a gzip bomb early.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 16 * 1024 * 1024;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Scratch a decoder keeps between records. JSON costs several times its size in simd-json
/// buffers and tape (up to ~20 bytes per input byte for a dense array), so one outsized record
/// must not pin that much memory per worker for good: scratch grown past this is released
/// after the record. Honest records (a CloudWatch Logs batch is at most about 1 MiB) stay under
/// it and keep the no-allocation path.
const RETAIN_BYTES: usize = 4 * 1024 * 1024;

/// Bounds on what one record may expand to (house rule 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest content of one record after gunzip (or as delivered, when not compressed);
    /// anything bigger is [`DecodeError::TooLarge`] and is never held whole in memory.
    pub max_decompressed_bytes: usize,
    /// Longest useful line. Not enforced here: over-long lines are handed on so the pipeline
    /// counts them as `line_too_long`, exactly as for files; it travels with the decode limits
    /// so one struct configures a record input.
    pub max_line_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// What a record turned out to hold: a closed set, safe as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// No bytes at all.
    Empty,
    /// Plain text lines.
    Lines,
    /// Gzip'd text lines (an S3 log file shipped as is, or lines compressed by a shipper).
    GzipLines,
    /// A CloudWatch Logs subscription `DATA_MESSAGE` (gzip'd or already decompressed).
    CloudWatchLogs,
    /// A CloudWatch Logs `CONTROL_MESSAGE`: a reachability probe with no log events.
    CloudWatchControl,
    /// ALB records as JSON objects (one, an array, or one per line).
    Json,
    /// The same, gzip'd.
    GzipJson,
}

impl PayloadFormat {
    pub const ALL: [PayloadFormat; 7] = [
        PayloadFormat::Empty,
        PayloadFormat::Lines,
        PayloadFormat::GzipLines,
        PayloadFormat::CloudWatchLogs,
        PayloadFormat::CloudWatchControl,
        PayloadFormat::Json,
        PayloadFormat::GzipJson,
    ];

    /// The label value for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Empty => "empty",
            PayloadFormat::Lines => "lines",
            PayloadFormat::GzipLines => "gzip_lines",
            PayloadFormat::CloudWatchLogs => "cloudwatch_logs",
            PayloadFormat::CloudWatchControl => "cloudwatch_control",
            PayloadFormat::Json => "json",
            PayloadFormat::GzipJson => "gzip_json",
        }
    }
}

/// Why a record could not be decoded: a closed set, safe as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    #[error("corrupt or truncated gzip data")]
    BadGzip,
    #[error("record content exceeds the decompressed size limit")]
    TooLarge,
    #[error("invalid JSON")]
    BadJson,
    #[error("CloudWatch Logs envelope without a usable messageType or logEvents")]
    BadCloudWatch,
    #[error("JSON that is not an ALB access-log record")]
    NotAlbJson,
}

impl DecodeError {
    pub const ALL: [DecodeError; 5] = [
        DecodeError::BadGzip,
        DecodeError::TooLarge,
        DecodeError::BadJson,
        DecodeError::BadCloudWatch,
        DecodeError::NotAlbJson,
    ];

    /// The label value for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DecodeError::BadGzip => "bad_gzip",
            DecodeError::TooLarge => "too_large",
            DecodeError::BadJson => "bad_json",
            DecodeError::BadCloudWatch => "bad_cloudwatch",
            DecodeError::NotAlbJson => "not_alb_json",
        }
    }
}

/// What one record produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub format: PayloadFormat,
    /// Lines appended to the output, each ending in `\n`.
    pub lines: usize,
}

/// Decodes one record with a throw-away [`Decoder`]; callers decoding many records should keep
/// a `Decoder` instead, which reuses its buffers.
pub fn decode_record(
    data: &[u8],
    limits: &DecodeLimits,
    out: &mut Vec<u8>,
) -> Result<Decoded, DecodeError> {
    Decoder::new(*limits).decode(data, out)
}

/// A reusable decoder: one per worker. Its scratch buffers (inflate state, inflated bytes, JSON
/// copies and tapes) keep their capacity across records, so once warm it allocates nothing per
/// record; they only ever grow to the largest record seen, which the limits bound.
pub struct Decoder {
    limits: DecodeLimits,
    gzip: gzip::Inflater,
    json: json::JsonScratch,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DecodeLimits::default())
    }
}

impl Decoder {
    pub fn new(limits: DecodeLimits) -> Self {
        Decoder {
            limits,
            gzip: gzip::Inflater::default(),
            json: json::JsonScratch::default(),
        }
    }

    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Appends the lines in `data` to `out`. On error `out` is left exactly as it was, so a bad
    /// record never leaves half of itself behind.
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<Decoded, DecodeError> {
        let start = out.len();
        let result = self.decode_inner(data, out);
        if result.is_err() {
            out.truncate(start);
        }
        self.gzip.trim(RETAIN_BYTES);
        self.json.trim(RETAIN_BYTES);
        result
    }

    fn decode_inner(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<Decoded, DecodeError> {
        if data.is_empty() {
            return Ok(Decoded {
                format: PayloadFormat::Empty,
                lines: 0,
            });
        }
        if data.starts_with(&GZIP_MAGIC) {
            let content = self
                .gzip
                .inflate(data, self.limits.max_decompressed_bytes)?;
            return content_of(&mut self.json, content, true, out);
        }
        // The same cap as for inflated content, so a record's size means one thing whatever
        // its encoding.
        if data.len() > self.limits.max_decompressed_bytes {
            return Err(DecodeError::TooLarge);
        }
        content_of(&mut self.json, data, false, out)
    }
}

/// Detects and decodes uncompressed content: JSON when it opens with `{` or `[` (after
/// whitespace), text lines otherwise. ALB lines always open with their type, so they can never
/// be mistaken for JSON.
fn content_of(
    json: &mut json::JsonScratch,
    content: &[u8],
    gzipped: bool,
    out: &mut Vec<u8>,
) -> Result<Decoded, DecodeError> {
    let first = content.iter().find(|b| !b.is_ascii_whitespace());
    if let Some(b'{' | b'[') = first {
        let tally = json.decode(content, out)?;
        return Ok(Decoded {
            format: tally.format(gzipped),
            lines: tally.lines,
        });
    }
    Ok(Decoded {
        format: if gzipped {
            PayloadFormat::GzipLines
        } else {
            PayloadFormat::Lines
        },
        lines: text::append_lines(content, out),
    })
}

#[cfg(test)]
mod tests;
