//! Every gzip decoding in albwatch, in one place (clippy's `disallowed-types` keeps flate2's
//! decoders out of every other module):
//! - [`reader`]: a streaming multi-member decoder for log files and stdin (`.log.gz` as ALB
//!   writes it to S3, or concatenated uploads), never holding the file whole;
//! - [`Inflater`]: capped inflation of one record or request body, for the decode stage and the
//!   Firehose endpoint. It decodes every member into a reused buffer and stops as soon as the
//!   output would pass the limit, so a gzip bomb costs at most `limit + 1` bytes of memory and
//!   the time to inflate them.
//!
//! The inflater's state is kept between records: flate2's `MultiGzDecoder` cannot be reset,
//! and a new one allocates a fresh inflate state (tens of KiB) per record, so this drives a
//! resettable single-member `GzDecoder` over an owned copy of the input and restarts it at each
//! member boundary instead.
#![allow(
    clippy::disallowed_types,
    reason = "the one module that may use flate2's decoders"
)]

use std::io::{BufRead, BufReader, Cursor, ErrorKind, Read};

use flate2::bufread::{GzDecoder, MultiGzDecoder};

/// The first two bytes of every gzip member.
pub const MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why capped inflation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GzipError {
    #[error("corrupt or truncated gzip data")]
    Corrupt,
    #[error("more than the limit once decompressed")]
    TooLarge,
}

/// A streaming decoder of every member of `inner`, buffered by `capacity` bytes.
pub fn reader<R: BufRead>(inner: R, capacity: usize) -> impl BufRead {
    BufReader::with_capacity(capacity, MultiGzDecoder::new(inner))
}

/// Inflates `data` whole, refusing more than `limit` bytes of output: for a request body that
/// is decoded once (an [`Inflater`] kept per worker serves records).
pub fn inflate_capped(data: &[u8], limit: usize) -> Result<Vec<u8>, GzipError> {
    let mut inflater = Inflater::default();
    inflater.inflate(data, limit)?;
    Ok(std::mem::take(&mut inflater.output))
}

/// Bounds on the first size of the output buffer, guessed from the compressed size; it then
/// doubles, up to the limit. Every size is zero-filled once per record, so starting near the
/// real size keeps small records cheap.
const MIN_FIRST: usize = 4 * 1024;
const MAX_FIRST: usize = 1024 * 1024;

/// A capped inflater kept between records; see the module docs.
#[derive(Default)]
pub struct Inflater {
    /// Created on the first gzip record; afterwards reset for each record and each member. It
    /// owns the copy of the compressed input (a cursor over a reused `Vec`).
    decoder: Option<GzDecoder<Cursor<Vec<u8>>>>,
    /// The inflated content of the last record; `pub(crate)` so tests can check its bound.
    pub(crate) output: Vec<u8>,
}

impl Inflater {
    /// Inflates all members of `data` (which starts with the gzip magic). More than `limit`
    /// inflated bytes is [`GzipError::TooLarge`]; anything flate2 rejects, including a
    /// truncated member or trailing garbage, is [`GzipError::Corrupt`].
    pub fn inflate(&mut self, data: &[u8], limit: usize) -> Result<&[u8], GzipError> {
        let decoder = reset(&mut self.decoder, data);
        self.output.clear();
        let first = data.len().saturating_mul(4).clamp(MIN_FIRST, MAX_FIRST);
        let filled = inflate_members(decoder, limit, first, &mut self.output)?;
        self.output.truncate(filled);
        Ok(&self.output)
    }

    /// Releases buffers that grew past `retain` bytes (the inflate state is small and kept).
    pub fn trim(&mut self, retain: usize) {
        if self.output.capacity() > retain {
            self.output = Vec::new();
        }
        if let Some(decoder) = &mut self.decoder
            && decoder.get_ref().get_ref().capacity() > retain
        {
            // Safe to swap between records: `inflate` resets the decoder before reading.
            *decoder.get_mut() = Cursor::default();
        }
    }
}

/// Points the decoder at a fresh copy of `data`, reusing the copy's buffer and the inflate
/// state.
fn reset<'d>(
    slot: &'d mut Option<GzDecoder<Cursor<Vec<u8>>>>,
    data: &[u8],
) -> &'d mut GzDecoder<Cursor<Vec<u8>>> {
    match slot {
        Some(decoder) => {
            // Taking the cursor out does not reset the decoder; `reset` below does.
            let mut input = std::mem::take(decoder.get_mut()).into_inner();
            input.clear();
            input.extend_from_slice(data);
            decoder.reset(Cursor::new(input));
            decoder
        }
        None => slot.insert(GzDecoder::new(Cursor::new(data.to_vec()))),
    }
}

/// Reads members until the input is used up, growing `output` (zero-filled, since `Read`
/// needs an initialised slice) from `first` bytes by doubling but never past `limit + 1`
/// bytes: reaching that last byte proves the content is over the limit. Returns how many bytes
/// are filled.
fn inflate_members(
    decoder: &mut GzDecoder<Cursor<Vec<u8>>>,
    limit: usize,
    first: usize,
    output: &mut Vec<u8>,
) -> Result<usize, GzipError> {
    let cap = limit.saturating_add(1);
    let mut filled = 0;
    loop {
        if filled == output.len() {
            if filled >= cap {
                return Err(GzipError::TooLarge);
            }
            let grown = filled.saturating_add(filled.max(first)).min(cap);
            // Exact, because the doubling is done here: `resize` alone could reserve up to
            // twice the cap.
            output.reserve_exact(grown - filled);
            output.resize(grown, 0);
        }
        // The slice is never empty here, so `Ok(0)` always means the end of a member.
        match decoder.read(&mut output[filled..]) {
            Ok(0) => {
                let input_len = decoder.get_ref().get_ref().len() as u64;
                if decoder.get_ref().position() >= input_len {
                    return Ok(filled);
                }
                // Another member follows. Each member consumes at least its 18 bytes of
                // header and trailer or fails, so this loop always makes progress.
                let rest = std::mem::take(decoder.get_mut());
                decoder.reset(rest);
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(GzipError::Corrupt),
        }
    }
}
