//! The decode stage: turns the bytes of one delivered record (a Firehose record now, a Kinesis
//! record later; already base64-decoded) into zero or more newline-terminated ALB access-log
//! lines appended to a caller-owned buffer, and says which payload format it found. It
//! recognises, in this order: an empty record; a KPL aggregate, whose
//! user records are each detected again by the rules that follow; gzip (capped, multi-member),
//! whose content is then detected again; JSON — a CloudWatch Logs subscription envelope
//! (`DATA_MESSAGE` lines, `CONTROL_MESSAGE` skipped) or ALB records with named fields, which are
//! rendered back into the standard space-separated line; and otherwise plain text lines. It
//! hands the lines to the parser, which treats them exactly like lines read from a file.
//!
//! A record that cannot be decoded is one [`DecodeError`] (a closed set, safe as a metric
//! label) and leaves the output buffer as it was, so the caller counts it and moves on. A KPL
//! aggregate is one record in this sense: if any of its user records fails, the aggregate
//! fails with that user record's error and leaves nothing behind, as a JSON array with one bad
//! item does. The aggregate is the unit an input acknowledges (one Kinesis sequence number),
//! and its user records come from one producer, so a half-decoded aggregate would only hide
//! the fault.

mod json;
mod kpl;
mod record;
mod text;

use crate::gzip::{self, GzipError, Inflater};
use crate::lines::DEFAULT_MAX_LINE_BYTES;

/// Default cap on one record's decompressed size: Firehose records are at most 1000 KiB
/// compressed, and CloudWatch Logs batches at most 1 MiB of events, so 16 MiB leaves room for
/// any honest payload while stopping a gzip bomb early.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 16 * 1024 * 1024;

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
    /// anything bigger is [`DecodeError::TooLarge`] and is never held whole in memory. For a
    /// KPL aggregate it bounds both the aggregate as delivered and the sum of its user
    /// records' contents, so packing many gzip'd user records into one aggregate buys nothing.
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
    /// A KPL aggregate; its user records may hold any of the formats above.
    Kpl,
}

impl PayloadFormat {
    pub const ALL: [PayloadFormat; 8] = [
        PayloadFormat::Empty,
        PayloadFormat::Lines,
        PayloadFormat::GzipLines,
        PayloadFormat::CloudWatchLogs,
        PayloadFormat::CloudWatchControl,
        PayloadFormat::Json,
        PayloadFormat::GzipJson,
        PayloadFormat::Kpl,
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
            PayloadFormat::Kpl => "kpl",
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
    #[error("KPL aggregate whose digest matches but whose protobuf is malformed")]
    BadKpl,
}

impl DecodeError {
    pub const ALL: [DecodeError; 6] = [
        DecodeError::BadGzip,
        DecodeError::TooLarge,
        DecodeError::BadJson,
        DecodeError::BadCloudWatch,
        DecodeError::NotAlbJson,
        DecodeError::BadKpl,
    ];

    /// The label value for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DecodeError::BadGzip => "bad_gzip",
            DecodeError::TooLarge => "too_large",
            DecodeError::BadJson => "bad_json",
            DecodeError::BadCloudWatch => "bad_cloudwatch",
            DecodeError::NotAlbJson => "not_alb_json",
            DecodeError::BadKpl => "bad_kpl",
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

/// Records as delivered (base64 already undone), back to back in one buffer, for a worker to
/// decode: one allocation per batch however many records it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Records {
    /// Appends one record.
    pub fn push(&mut self, record: &[u8]) {
        self.bytes.extend_from_slice(record);
        self.ends.push(self.bytes.len());
    }

    /// Appends one record written by `fill` at the end of the buffer; if `fill` fails, the
    /// buffer is left as it was (a record that cannot even be unwrapped is never half-kept).
    pub fn push_with<E>(
        &mut self,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.bytes.len();
        match fill(&mut self.bytes) {
            Ok(()) => {
                self.ends.push(self.bytes.len());
                Ok(())
            }
            Err(e) => {
                self.bytes.truncate(start);
                Err(e)
            }
        }
    }

    /// Bytes held, as delivered.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Records held (the fuzz target checks every record it pushed is there).
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each record, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.bytes[a..b])
    }
}

/// What the records of a batch held, by payload format and error kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Indexed like [`PayloadFormat::ALL`].
    pub records: [u64; PayloadFormat::ALL.len()],
    pub lines: [u64; PayloadFormat::ALL.len()],
    /// Indexed like [`DecodeError::ALL`].
    pub errors: [u64; DecodeError::ALL.len()],
}

impl DecodeStats {
    pub fn decoded(&mut self, format: PayloadFormat, lines: usize) {
        if let Some(i) = PayloadFormat::ALL.iter().position(|f| *f == format) {
            self.records[i] += 1;
            self.lines[i] += lines as u64;
        }
    }

    pub fn failed(&mut self, err: DecodeError) {
        if let Some(i) = DecodeError::ALL.iter().position(|e| *e == err) {
            self.errors[i] += 1;
        }
    }

    /// Adds another batch's counts.
    pub fn merge(&mut self, other: &DecodeStats) {
        let pairs = self
            .records
            .iter_mut()
            .chain(&mut self.lines)
            .chain(&mut self.errors)
            .zip(
                other
                    .records
                    .iter()
                    .chain(&other.lines)
                    .chain(&other.errors),
            );
        for (a, b) in pairs {
            *a += b;
        }
    }

    pub fn total_lines(&self) -> u64 {
        self.lines.iter().sum()
    }
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
    gzip: Inflater,
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
            gzip: Inflater::default(),
            json: json::JsonScratch::default(),
        }
    }

    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Applies `limits` to the records decoded from now on (each input has its own).
    pub fn set_limits(&mut self, limits: DecodeLimits) {
        self.limits = limits;
    }

    /// Decodes every record of `records` into `out`, counting what each held in `stats`. A
    /// record that fails is counted and leaves nothing behind; the others go on.
    pub fn decode_all(&mut self, records: &Records, out: &mut Vec<u8>, stats: &mut DecodeStats) {
        for record in records.iter() {
            match self.decode(record, out) {
                Ok(decoded) => stats.decoded(decoded.format, decoded.lines),
                Err(e) => stats.failed(e),
            }
        }
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
        let max = self.limits.max_decompressed_bytes;
        if data.starts_with(&kpl::MAGIC) {
            // The size check that plain content gets anyway, made before hashing the bytes.
            if data.len() > max {
                return Err(DecodeError::TooLarge);
            }
            if let Some(message) = kpl::message(data) {
                return self.aggregate(message, out);
            }
        }
        let mut budget = max;
        payload(&mut self.gzip, &mut self.json, data, &mut budget, out)
    }

    /// Decodes every user record of a KPL aggregate, in order, charging their contents to one
    /// budget. User records are not checked for the KPL magic again: the KPL aggregates once
    /// and the KCL de-aggregates once, so such a user record is plain text.
    fn aggregate(&mut self, message: &[u8], out: &mut Vec<u8>) -> Result<Decoded, DecodeError> {
        let aggregate = kpl::Aggregate::parse(message)?;
        let Decoder { limits, gzip, json } = self;
        let mut budget = limits.max_decompressed_bytes;
        let mut lines = 0;
        aggregate.for_each_data(|data| {
            lines += payload(gzip, json, data, &mut budget, out)?.lines;
            Ok(())
        })?;
        Ok(Decoded {
            format: PayloadFormat::Kpl,
            lines,
        })
    }
}

/// Decodes one payload that is not a KPL aggregate — a whole record, or one user record of an
/// aggregate — and takes its content's size (after gunzip) off `budget`.
fn payload(
    gzip: &mut Inflater,
    json: &mut json::JsonScratch,
    data: &[u8],
    budget: &mut usize,
    out: &mut Vec<u8>,
) -> Result<Decoded, DecodeError> {
    if data.is_empty() {
        return Ok(Decoded {
            format: PayloadFormat::Empty,
            lines: 0,
        });
    }
    if data.starts_with(&gzip::MAGIC) {
        let content = gzip.inflate(data, *budget).map_err(|e| match e {
            GzipError::Corrupt => DecodeError::BadGzip,
            GzipError::TooLarge => DecodeError::TooLarge,
        })?;
        // `inflate` never returns more than the budget; saturating all the same.
        *budget = budget.saturating_sub(content.len());
        return content_of(json, content, true, out);
    }
    // The same cap as for inflated content, so a record's size means one thing whatever its
    // encoding.
    if data.len() > *budget {
        return Err(DecodeError::TooLarge);
    }
    *budget -= data.len();
    content_of(json, data, false, out)
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
