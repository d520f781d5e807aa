//! JSON content: a CloudWatch Logs subscription envelope, or ALB records as
//! objects — one, an array of them, or one per line. Parsing uses simd-json's tape, which
//! borrows every string from a scratch copy of the input (simd-json unescapes in place) and,
//! unlike a DOM, builds no maps or vectors per object: with the copy, the tape and simd-json's
//! buffers reused, a warm decoder parses without allocating. It hands log lines to the output
//! buffer: envelope messages through the text rules, records through the renderer. The
//! envelope format is described at
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/SubscriptionFilters.html>.

use simd_json::prelude::{ValueAsScalar, ValueIntoString};
use simd_json::tape::{Object, Value};
use simd_json::{Buffers, Tape};

use super::{DecodeError, PayloadFormat, record, text};

/// What the JSON in one record held.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) lines: usize,
    records: usize,
    data_messages: usize,
    control_messages: usize,
}

impl Tally {
    /// The record's format: ALB records win, then data messages, then control messages; an
    /// empty array is still JSON.
    pub(super) fn format(&self, gzipped: bool) -> PayloadFormat {
        if self.records == 0 && self.data_messages > 0 {
            PayloadFormat::CloudWatchLogs
        } else if self.records == 0 && self.control_messages > 0 {
            PayloadFormat::CloudWatchControl
        } else if gzipped {
            PayloadFormat::GzipJson
        } else {
            PayloadFormat::Json
        }
    }
}

/// Scratch for parsing: two documents because a CloudWatch Logs message may itself be a JSON
/// record, parsed while the envelope's tape is still borrowed.
#[derive(Default)]
pub(super) struct JsonScratch {
    buffers: Buffers,
    /// `pub(super)` fields here and in [`Doc`] let the tests check what is retained.
    pub(super) envelope: Doc,
    message: Doc,
    /// One rendered field value before quoting.
    field: Vec<u8>,
}

/// A mutable copy of one JSON text and the tape that borrows from it.
pub(super) struct Doc {
    pub(super) copy: Vec<u8>,
    /// Empty between parses; `'static` only because it then borrows nothing.
    pub(super) tape: Tape<'static>,
}

impl Default for Doc {
    fn default() -> Self {
        Doc {
            copy: Vec::new(),
            tape: Tape(Vec::new()),
        }
    }
}

impl Doc {
    /// Parses `text` and calls `f` with its root value. The tape's allocation is taken back
    /// afterwards whatever happened, so the next parse reuses it.
    fn parse<R>(
        &mut self,
        text: &[u8],
        buffers: &mut Buffers,
        f: impl FnOnce(Value<'_, '_>, &mut Buffers) -> R,
    ) -> Result<R, DecodeError> {
        self.copy.clear();
        self.copy.extend_from_slice(text);
        let mut tape = std::mem::replace(&mut self.tape, Tape(Vec::new())).reset();
        let result = match simd_json::fill_tape(&mut self.copy, buffers, &mut tape) {
            Ok(()) => Ok(f(tape.as_value(), buffers)),
            Err(_) => Err(DecodeError::BadJson),
        };
        self.tape = tape.reset();
        result
    }
}

impl JsonScratch {
    /// Starts afresh when either copy grew past `retain` bytes: the simd-json buffers and tapes
    /// grew with them, by a multiple.
    pub(super) fn trim(&mut self, retain: usize) {
        if self.envelope.copy.capacity() > retain || self.message.copy.capacity() > retain {
            *self = JsonScratch::default();
        }
    }

    /// Decodes JSON `content` into lines appended to `out`. Content that is not one JSON
    /// document but has several lines is tried as newline-delimited JSON, one document a line.
    pub(super) fn decode(
        &mut self,
        content: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Tally, DecodeError> {
        let mut tally = Tally::default();
        match self.document(content, out, &mut tally) {
            Err(DecodeError::BadJson) if memchr::memchr(b'\n', content.trim_ascii()).is_some() => {
                // A failed parse writes nothing, so the lines start from a clean slate.
                let mut tally = Tally::default();
                for line in content.split(|&b| b == b'\n') {
                    if !line.trim_ascii().is_empty() {
                        self.document(line, out, &mut tally)?;
                    }
                }
                Ok(tally)
            }
            result => result.map(|()| tally),
        }
    }

    fn document(
        &mut self,
        text: &[u8],
        out: &mut Vec<u8>,
        tally: &mut Tally,
    ) -> Result<(), DecodeError> {
        let JsonScratch {
            buffers,
            envelope,
            message,
            field,
        } = self;
        envelope.parse(text, buffers, |root, buffers| {
            let mut messages = Messages {
                buffers,
                doc: message,
                field,
            };
            top_level(root, &mut messages, out, tally)
        })?
    }
}

/// A document's root: an envelope, one record, or an array of records. An array is all records
/// or an error: the caller drops the whole record rather than half of it.
fn top_level(
    root: Value<'_, '_>,
    messages: &mut Messages<'_>,
    out: &mut Vec<u8>,
    tally: &mut Tally,
) -> Result<(), DecodeError> {
    if let Some(obj) = root.as_object() {
        if let Some(kind) = obj.get("messageType") {
            return cloudwatch(&obj, kind, messages, out, tally);
        }
        record::render(&obj, messages.field, out)?;
        tally.records += 1;
        tally.lines += 1;
        return Ok(());
    }
    let items = root.as_array().ok_or(DecodeError::NotAlbJson)?;
    for item in items.iter() {
        let obj = item.as_object().ok_or(DecodeError::NotAlbJson)?;
        record::render(&obj, messages.field, out)?;
        tally.records += 1;
        tally.lines += 1;
    }
    Ok(())
}

/// A CloudWatch Logs subscription envelope: each `logEvents[].message` of a `DATA_MESSAGE`
/// becomes lines; a `CONTROL_MESSAGE` (CloudWatch Logs checking that the destination is
/// reachable) carries none and is skipped.
fn cloudwatch(
    envelope: &Object<'_, '_>,
    kind: Value<'_, '_>,
    messages: &mut Messages<'_>,
    out: &mut Vec<u8>,
    tally: &mut Tally,
) -> Result<(), DecodeError> {
    match kind.as_str() {
        Some("CONTROL_MESSAGE") => {
            tally.control_messages += 1;
            Ok(())
        }
        Some("DATA_MESSAGE") => {
            let events = envelope
                .get("logEvents")
                .and_then(|v| v.as_array())
                .ok_or(DecodeError::BadCloudWatch)?;
            for event in events.iter() {
                let message = event
                    .as_object()
                    .and_then(|e| e.get("message"))
                    .and_then(|m| m.into_string())
                    .ok_or(DecodeError::BadCloudWatch)?;
                tally.lines += messages.append(message.as_bytes(), out);
            }
            tally.data_messages += 1;
            Ok(())
        }
        _ => Err(DecodeError::BadCloudWatch),
    }
}

/// Turns envelope messages into lines.
struct Messages<'s> {
    buffers: &'s mut Buffers,
    doc: &'s mut Doc,
    field: &'s mut Vec<u8>,
}

impl Messages<'_> {
    /// Appends one message and returns how many lines it gave. A message is normally one text
    /// line (possibly several), but vended logs delivered to a log group in `json` format are
    /// JSON records: those are rendered. A message that looks like JSON but is not an ALB
    /// record is passed on as text, so the parser counts it rather than the whole batch failing.
    fn append(&mut self, message: &[u8], out: &mut Vec<u8>) -> usize {
        if message.trim_ascii_start().first() == Some(&b'{') && self.record(message, out) {
            return 1;
        }
        text::append_lines(message, out)
    }

    /// Renders `message` if it is one ALB JSON record; writes nothing and says `false`
    /// otherwise.
    fn record(&mut self, message: &[u8], out: &mut Vec<u8>) -> bool {
        let field = &mut *self.field;
        self.doc
            .parse(message, self.buffers, |root, _| {
                root.as_object().is_some_and(|obj| {
                    obj.get("messageType").is_none() && record::render(&obj, field, out).is_ok()
                })
            })
            .unwrap_or(false)
    }
}
