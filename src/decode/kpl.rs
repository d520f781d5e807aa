//! KPL aggregated records: recognises the magic `F3 89 9A C2` + protobuf `AggregatedRecord` +
//! MD5 framing, checks the digest, validates the protobuf with a small hand-rolled wire-format
//! reader, and hands each user record's `data` back to the decoder, which decodes it like any
//! other record. Nothing here allocates: the reader walks borrowed slices. The format:
//! <https://github.com/awslabs/amazon-kinesis-producer/blob/master/aggregation-format.md>.
//!
//! Framing follows the KCL's `AggregatorUtil`: a record that is too short or whose MD5 does not
//! match is not an aggregate at all and is passed through whole. Past a matching MD5 — 2^-128
//! odds of a plain record getting there by chance — a protobuf that does not hold together is
//! a damaged aggregate, [`DecodeError::BadKpl`], rather than text (the KCL would pass it on
//! as one binary "record", which would only reach the parser as garbage lines).
//!
//! The reader follows what protobuf-java, which the KPL and KCL use, accepts: fields in any
//! order, the last value of a repeated scalar winning, a known field number with an unexpected
//! wire type skipped as unknown, unknown fields of every wire type (groups included) skipped.
//! It is stricter than protobuf-java only where that costs no honest input: a varint must fit
//! in 64 bits and a tag in 32, and a group may nest at most [`MAX_GROUP_DEPTH`] deep. Proto2
//! `required` fields are enforced, as protobuf-java does, and key-table indexes must point
//! inside their table (the KCL would fail on them too). Tags (unimplemented in KPL/KCL)
//! are validated and ignored; partition and explicit hash keys are only counted, since log lines
//! are not keyed.

use md5::{Digest, Md5};

use super::DecodeError;

/// The four bytes every KPL aggregate starts with.
pub(super) const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The MD5 after the protobuf.
const DIGEST_BYTES: usize = 16;

/// How deep unknown groups may nest. Groups are long deprecated and the KPL writes none, so
/// this only has to be enough for a producer's unknown extension; it bounds the fixed stack
/// the skipper uses instead of recursing.
const MAX_GROUP_DEPTH: usize = 32;

/// The protobuf message of `data` when it is a KPL aggregate, `None` when it is to be treated
/// as a plain record: no magic, nothing but a digest after it, or a digest that does not match
/// (the KCL logs that and passes the record on unchanged; so do we).
pub(super) fn message(data: &[u8]) -> Option<&[u8]> {
    let body = data.strip_prefix(&MAGIC)?;
    // `<=`, as in the KCL: an empty protobuf is not an aggregate either.
    if body.len() <= DIGEST_BYTES {
        return None;
    }
    let (message, digest) = body.split_at(body.len() - DIGEST_BYTES);
    (Md5::digest(message).as_slice() == digest).then_some(message)
}

/// A validated `AggregatedRecord`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Aggregate<'a> {
    message: &'a [u8],
}

impl<'a> Aggregate<'a> {
    /// Checks the whole message before any user record is decoded, so a damaged aggregate is
    /// [`DecodeError::BadKpl`] whatever its user records hold.
    pub(super) fn parse(message: &'a [u8]) -> Result<Self, DecodeError> {
        let shape = walk(message, |_| Ok(()))?;
        // The tables may follow the records (fields come in any order), so the indexes are
        // checked once both are known.
        let inside = |max: Option<u64>, len: u64| max.is_none_or(|i| i < len);
        if !inside(shape.max_partition_key, shape.partition_keys)
            || !inside(shape.max_explicit_hash_key, shape.explicit_hash_keys)
        {
            return Err(bad());
        }
        Ok(Aggregate { message })
    }

    /// Calls `f` with each user record's `data`, in order, stopping at its first error. The
    /// message was validated by [`Aggregate::parse`]; walking it again (cheap: `data` is
    /// skipped by its length) keeps one reader for both passes instead of storing slices.
    pub(super) fn for_each_data(
        &self,
        f: impl FnMut(&'a [u8]) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        walk(self.message, f).map(|_| ())
    }
}

/// What one walk over an `AggregatedRecord` counted.
#[derive(Debug, Default)]
struct Shape {
    partition_keys: u64,
    explicit_hash_keys: u64,
    max_partition_key: Option<u64>,
    max_explicit_hash_key: Option<u64>,
}

/// Walks `AggregatedRecord` (fields 1 and 2: key tables; 3: records), calling `f` with each
/// record's `data` as it is reached.
fn walk<'a>(
    message: &'a [u8],
    mut f: impl FnMut(&'a [u8]) -> Result<(), DecodeError>,
) -> Result<Shape, DecodeError> {
    let mut shape = Shape::default();
    let mut reader = Reader::new(message);
    while let Some((field, wire)) = reader.tag()? {
        match (field, wire) {
            (1, Wire::Len) => {
                reader.bytes()?;
                shape.partition_keys += 1;
            }
            (2, Wire::Len) => {
                reader.bytes()?;
                shape.explicit_hash_keys += 1;
            }
            (3, Wire::Len) => {
                let record = Record::parse(reader.bytes()?)?;
                shape.max_partition_key = shape.max_partition_key.max(Some(record.partition_key));
                shape.max_explicit_hash_key =
                    shape.max_explicit_hash_key.max(record.explicit_hash_key);
                f(record.data)?;
            }
            _ => reader.skip(field, wire)?,
        }
    }
    Ok(shape)
}

/// One user record: `Record { required uint64 partition_key_index = 1; optional uint64
/// explicit_hash_key_index = 2; required bytes data = 3; repeated Tag tags = 4; }`.
struct Record<'a> {
    partition_key: u64,
    explicit_hash_key: Option<u64>,
    data: &'a [u8],
}

impl<'a> Record<'a> {
    fn parse(message: &'a [u8]) -> Result<Self, DecodeError> {
        let mut partition_key = None;
        let mut explicit_hash_key = None;
        let mut data = None;
        let mut reader = Reader::new(message);
        while let Some((field, wire)) = reader.tag()? {
            match (field, wire) {
                (1, Wire::Varint) => partition_key = Some(reader.varint()?),
                (2, Wire::Varint) => explicit_hash_key = Some(reader.varint()?),
                (3, Wire::Len) => data = Some(reader.bytes()?),
                (4, Wire::Len) => check_tag(reader.bytes()?)?,
                _ => reader.skip(field, wire)?,
            }
        }
        Ok(Record {
            partition_key: partition_key.ok_or_else(bad)?,
            explicit_hash_key,
            data: data.ok_or_else(bad)?,
        })
    }
}

/// `Tag { required string key = 1; optional string value = 2; }`: only its shape matters.
fn check_tag(message: &[u8]) -> Result<(), DecodeError> {
    let mut has_key = false;
    let mut reader = Reader::new(message);
    while let Some((field, wire)) = reader.tag()? {
        match (field, wire) {
            (1, Wire::Len) => {
                reader.bytes()?;
                has_key = true;
            }
            _ => reader.skip(field, wire)?,
        }
    }
    if has_key { Ok(()) } else { Err(bad()) }
}

#[cold]
fn bad() -> DecodeError {
    DecodeError::BadKpl
}

/// The six protobuf wire types (6 and 7 are invalid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Varint,
    I64,
    Len,
    StartGroup,
    EndGroup,
    I32,
}

/// A bounds-checked cursor over protobuf bytes: every read either consumes bytes that are
/// there or fails with [`DecodeError::BadKpl`], so a loop over it always ends.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// The next field's number and wire type, or `None` at the end of the message.
    fn tag(&mut self) -> Result<Option<(u32, Wire)>, DecodeError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let tag = u32::try_from(self.varint()?).map_err(|_| bad())?;
        let wire = match tag & 7 {
            0 => Wire::Varint,
            1 => Wire::I64,
            2 => Wire::Len,
            3 => Wire::StartGroup,
            4 => Wire::EndGroup,
            5 => Wire::I32,
            _ => return Err(bad()),
        };
        // Field number 0 is reserved; protobuf-java rejects it too.
        match tag >> 3 {
            0 => Err(bad()),
            field => Ok(Some((field, wire))),
        }
    }

    /// A base-128 varint of at most ten bytes whose value fits in 64 bits.
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            // The tenth byte carries bit 63 only; anything more would overflow, and a
            // continuation bit there would make an eleventh byte.
            if i == 9 && byte > 1 {
                return Err(bad());
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        // The input ended inside the varint.
        Err(bad())
    }

    /// The payload of a length-delimited field.
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| bad())?;
        self.take(len)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let (taken, rest) = self.rest.split_at_checked(len).ok_or_else(bad)?;
        self.rest = rest;
        Ok(taken)
    }

    /// Skips the value of a field this reader does not use. A group is skipped up to its
    /// matching end, with the open groups on a fixed stack rather than by recursing, so hostile
    /// nesting costs neither stack nor heap.
    fn skip(&mut self, field: u32, wire: Wire) -> Result<(), DecodeError> {
        let mut open = [0u32; MAX_GROUP_DEPTH];
        let mut depth = 0;
        let (mut field, mut wire) = (field, wire);
        loop {
            match wire {
                Wire::Varint => {
                    self.varint()?;
                }
                Wire::I64 => {
                    self.take(8)?;
                }
                Wire::Len => {
                    self.bytes()?;
                }
                Wire::I32 => {
                    self.take(4)?;
                }
                Wire::StartGroup => {
                    *open.get_mut(depth).ok_or_else(bad)? = field;
                    depth += 1;
                }
                Wire::EndGroup => {
                    // An end without its start, or ending another group than the open one.
                    if depth == 0 || open[depth - 1] != field {
                        return Err(bad());
                    }
                    depth -= 1;
                }
            }
            if depth == 0 {
                return Ok(());
            }
            // The message must not end inside a group.
            (field, wire) = self.tag()?.ok_or_else(bad)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(bytes: &[u8]) -> (Result<u64, DecodeError>, usize) {
        let mut reader = Reader::new(bytes);
        let result = reader.varint();
        (result, reader.rest.len())
    }

    /// Skips one field at the start of `bytes` and says how many bytes are left.
    fn skipped(bytes: &[u8]) -> Result<usize, DecodeError> {
        let mut reader = Reader::new(bytes);
        let (field, wire) = reader.tag()?.ok_or(DecodeError::BadKpl)?;
        reader.skip(field, wire)?;
        Ok(reader.rest.len())
    }

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x00, 0xff]), (Ok(0), 1));
        assert_eq!(varint(&[0x96, 0x01]), (Ok(150), 0));
        // Non-minimal encodings are valid protobuf.
        assert_eq!(varint(&[0x80, 0x80, 0x00]), (Ok(0), 0));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(varint(&max), (Ok(u64::MAX), 0));
        let mut overflow = max;
        overflow[9] = 0x02;
        assert_eq!(varint(&overflow).0, Err(DecodeError::BadKpl));
        let mut eleven = max.to_vec();
        eleven[9] = 0x81;
        eleven.push(0x00);
        assert_eq!(varint(&eleven).0, Err(DecodeError::BadKpl));
        assert_eq!(varint(&[]).0, Err(DecodeError::BadKpl));
        assert_eq!(varint(&[0x80, 0x80]).0, Err(DecodeError::BadKpl));
    }

    #[test]
    fn tags() {
        let tag = |bytes: &[u8]| Reader::new(bytes).tag();
        assert_eq!(tag(&[]), Ok(None));
        assert_eq!(tag(&[0x1a]), Ok(Some((3, Wire::Len))));
        assert_eq!(tag(&[0x0d]), Ok(Some((1, Wire::I32))));
        // Field number 2^29 - 1, the largest there is.
        assert_eq!(
            tag(&[0xf8, 0xff, 0xff, 0xff, 0x0f]),
            Ok(Some(((1 << 29) - 1, Wire::Varint)))
        );
        for bad_tag in [
            &[0x02][..],                     // field 0
            &[0x0e],                         // wire type 6
            &[0x0f],                         // wire type 7
            &[0xff, 0xff, 0xff, 0xff, 0x1f], // over 32 bits
            &[0x80],                         // truncated
        ] {
            assert_eq!(tag(bad_tag), Err(DecodeError::BadKpl), "{bad_tag:?}");
        }
    }

    #[test]
    fn skips_every_wire_type() {
        assert_eq!(skipped(&[0x08, 0x96, 0x01, 0xaa]), Ok(1));
        assert_eq!(skipped(&[0x09, 1, 2, 3, 4, 5, 6, 7, 8, 0xaa]), Ok(1));
        assert_eq!(skipped(&[0x0a, 0x02, 1, 2, 0xaa]), Ok(1));
        assert_eq!(skipped(&[0x0d, 1, 2, 3, 4, 0xaa]), Ok(1));
        // Group 1 holding a varint, a nested group 2 and a string, then its end.
        let group = [0x0b, 0x08, 0x01, 0x13, 0x14, 0x1a, 0x01, b'x', 0x0c, 0xaa];
        assert_eq!(skipped(&group), Ok(1));
    }

    #[test]
    fn rejects_short_and_unbalanced_fields() {
        for bytes in [
            &[0x09, 1, 2, 3][..], // fixed64 cut short
            &[0x0d, 1],           // fixed32 cut short
            &[0x0a, 0x05, 1, 2],  // length past the end
            &[0x0a, 0x80],        // length varint cut short
            &[0x0c],              // end group with nothing open
            &[0x0b, 0x08, 0x01],  // group never ended
            &[0x0b, 0x14],        // group 1 ended as group 2
            &[0x0b, 0x13, 0x0c],  // inner group 2 ended as group 1
            &[
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ], // u64::MAX long
        ] {
            assert_eq!(skipped(bytes), Err(DecodeError::BadKpl), "{bytes:?}");
        }
        let deep = |n: usize| {
            let mut bytes = vec![0x0b; n];
            bytes.extend(vec![0x0c; n]);
            bytes
        };
        assert_eq!(skipped(&deep(MAX_GROUP_DEPTH)), Ok(0));
        assert_eq!(
            skipped(&deep(MAX_GROUP_DEPTH + 1)),
            Err(DecodeError::BadKpl)
        );
        // Far past any stack: refused at the bound, not recursed into.
        assert_eq!(skipped(&deep(1_000_000)), Err(DecodeError::BadKpl));
    }

    #[test]
    fn framing() {
        let framed = |message: &[u8]| {
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(message);
            data.extend_from_slice(&Md5::digest(message));
            data
        };
        let message = [0x1a, 0x04, 0x08, 0x00, 0x1a, 0x00];
        assert_eq!(super::message(&framed(&message)), Some(&message[..]));
        // An empty protobuf leaves only the digest: not an aggregate (KCL: `<=`).
        assert_eq!(super::message(&framed(b"")), None);
        assert_eq!(super::message(&MAGIC), None);
        assert_eq!(super::message(b""), None);
        let mut wrong = framed(&message);
        if let Some(last) = wrong.last_mut() {
            *last ^= 1;
        }
        assert_eq!(super::message(&wrong), None);
        let mut no_magic = framed(&message);
        no_magic[0] = 0xF2;
        assert_eq!(super::message(&no_magic), None);
    }
}
