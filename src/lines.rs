//! Reading log files as bounded lines: opens a path (or stdin), detects gzip by its magic bytes
//! so the `.log.gz` files ALB writes to S3 work as they are, and yields one line at a time from
//! a reused buffer. A line longer than the limit is reported (with its length) and skipped
//! without ever being held in memory whole, so one runaway line cannot exhaust memory or hide
//! the lines after it. It hands borrowed lines to the parser.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read};
use std::path::Path;

use crate::buffers::Buffers;
use crate::gzip;

/// Default bound on one line: ALB truncates user agents at 8 KB and rejects request lines and
/// headers over 16 KB, so 64 KiB leaves ample room for a real entry.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Opens `path` (`-` is stdin) for reading lines, decompressing gzip (including the
/// multi-member files that concatenated uploads produce) when the content starts with its magic.
pub fn open(path: &Path) -> io::Result<Box<dyn BufRead>> {
    if path.as_os_str() == "-" {
        return maybe_gzip(BufReader::with_capacity(READ_BUFFER_BYTES, io::stdin()));
    }
    maybe_gzip(BufReader::with_capacity(
        READ_BUFFER_BYTES,
        File::open(path)?,
    ))
}

/// Whether the file at `path` starts with the gzip magic.
pub fn is_gzip(path: &Path) -> io::Result<bool> {
    let mut head = [0u8; 2];
    let got = File::open(path)?.read(&mut head)?;
    Ok(got == 2 && head == gzip::MAGIC)
}

/// Wraps `reader` in a gzip decoder when its first two bytes are the gzip magic. The bytes are
/// read (not peeked) because a pipe may deliver them one at a time.
pub fn maybe_gzip<R: BufRead + 'static>(mut reader: R) -> io::Result<Box<dyn BufRead>> {
    let mut head = [0u8; 2];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let whole = Cursor::new(head[..got].to_vec()).chain(reader);
    if head[..got] == gzip::MAGIC {
        Ok(Box::new(gzip::reader(whole, READ_BUFFER_BYTES)))
    } else {
        Ok(Box::new(whole))
    }
}

/// Cuts a reader into batches of whole lines of about `target` bytes without looking at each
/// line: the workers split lines (and count those over the limit), so the reading thread only
/// reads. It reads straight into the batch's buffer — a recycled one from [`Buffers`] when
/// given — so the bytes are copied once, by the kernel, and never again on this thread. Only
/// the partial line at a batch's end is carried over; one that grows past `max_line` is
/// skipped (never held whole) and counted.
pub struct Chunker<R> {
    inner: R,
    max_line: usize,
    carry: Vec<u8>,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    buffers: Buffers,
}

/// One batch from [`Chunker::next_chunk`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Chunk {
    /// Whole lines, each ending in `\n` (the file's last line gets one if it lacked it).
    pub lines: Vec<u8>,
    /// Lines skipped for being longer than the limit.
    pub too_long: u64,
}

impl<R: Read> Chunker<R> {
    pub fn new(inner: R, max_line: usize) -> Self {
        Chunker {
            inner,
            max_line,
            carry: Vec::new(),
            skipping: false,
            buffers: Buffers::default(),
        }
    }

    /// Fills batches in buffers taken from `buffers` (the pipeline's, handed back by the
    /// workers) instead of new ones.
    pub fn with_buffers(mut self, buffers: Buffers) -> Self {
        self.buffers = buffers;
        self
    }

    /// The next batch of about `target` bytes (fewer at the end), or `None` when the input is
    /// exhausted.
    pub fn next_chunk(&mut self, target: usize) -> io::Result<Option<Chunk>> {
        let (mut chunk, at_end) = self.whole_lines(target)?;
        if at_end {
            if !self.carry.is_empty() && !self.skipping {
                chunk.lines.append(&mut self.carry);
                chunk.lines.push(b'\n');
            }
            self.carry.clear();
        }
        let done = chunk.lines.is_empty() && chunk.too_long == 0;
        if done {
            self.buffers.give(chunk.lines);
            return Ok(None);
        }
        Ok(Some(chunk))
    }

    /// Every batch of about `target` bytes, in order, until the reader's end or its first
    /// error (the last item then), after which the reader is dropped.
    pub fn into_chunks(self, target: usize) -> impl Iterator<Item = io::Result<Chunk>> {
        let mut chunker = Some(self);
        std::iter::from_fn(move || {
            let next = chunker.as_mut()?.next_chunk(target);
            if !matches!(next, Ok(Some(_))) {
                chunker = None;
            }
            next.transpose()
        })
    }

    /// For a file that is still being written (`tail -F`): the whole lines available now, up
    /// to about `target` bytes, and whether the reader ran out. A partial last line is kept
    /// until its newline arrives, so a line is never cut while it is being written.
    pub fn available(&mut self, target: usize) -> io::Result<(Chunk, bool)> {
        self.whole_lines(target)
    }

    /// Whole lines until about `target` bytes or the reader's current end (`true`).
    fn whole_lines(&mut self, target: usize) -> io::Result<(Chunk, bool)> {
        // A recycled buffer keeps the bytes of its last batch: reading over them spares
        // zeroing the space first, and only growth past its old length is ever zeroed.
        let mut buf = self.buffers.take_with_bytes();
        let mut filled = self.carry.len();
        if buf.len() < filled {
            buf.resize(filled, 0);
        }
        buf[..filled].copy_from_slice(&self.carry);
        self.carry.clear();
        let mut last_newline: Option<usize> = None;
        let mut too_long = 0;
        let at_end = loop {
            // At least a whole `BufReader` buffer per read, so a buffered reader hands the
            // read to the file (or the gzip decoder) directly instead of copying through its
            // own buffer.
            let want = target.saturating_sub(filled).max(READ_BUFFER_BYTES);
            if buf.len() < filled + want {
                buf.resize(filled + want, 0);
            }
            let n = loop {
                match self.inner.read(&mut buf[filled..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        buf.clear();
                        self.buffers.give(buf);
                        return Err(e);
                    }
                }
            };
            if n == 0 {
                break true;
            }
            let read_from = filled;
            filled += n;
            if self.skipping {
                match memchr::memchr(b'\n', &buf[read_from..filled]) {
                    Some(at) => {
                        // The rest of the skipped line goes; what follows moves up.
                        self.skipping = false;
                        buf.copy_within(read_from + at + 1..filled, read_from);
                        filled -= at + 1;
                    }
                    None => {
                        filled = read_from;
                        continue;
                    }
                }
            }
            if let Some(at) = memchr::memrchr(b'\n', &buf[read_from..filled]) {
                last_newline = Some(read_from + at);
            }
            let partial = filled - last_newline.map_or(0, |at| at + 1);
            if partial > self.max_line {
                // The line being read is already over the limit: it is dropped here and the
                // rest of it skipped as it comes.
                filled -= partial;
                self.skipping = true;
                too_long += 1;
            }
            if filled >= target && last_newline.is_some() {
                break false;
            }
        };
        let whole = last_newline.map_or(0, |at| at + 1).min(filled);
        if !self.skipping {
            self.carry.extend_from_slice(&buf[whole..filled]);
        }
        buf.truncate(whole);
        Ok((
            Chunk {
                lines: buf,
                too_long,
            },
            at_end,
        ))
    }
}

/// One line from [`LineReader::next_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// The line without its `\n`.
    Complete(&'a [u8]),
    /// The line was longer than the limit and was skipped; `len` is its full length.
    TooLong { len: usize },
}

/// Splits a reader into lines of at most `max_len` bytes, numbering them from 1.
pub struct LineReader<R> {
    inner: R,
    max_len: usize,
    buf: Vec<u8>,
    line_no: u64,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max_len: usize) -> Self {
        LineReader {
            inner,
            max_len,
            buf: Vec::new(),
            line_no: 0,
        }
    }

    /// The next line and its number, or `None` at the end. A last line without `\n` counts.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut len = 0usize;
        let mut seen_any = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                if !seen_any {
                    return Ok(None);
                }
                break;
            }
            seen_any = true;
            let (take, done) = match memchr::memchr(b'\n', chunk) {
                Some(at) => (at, true),
                None => (chunk.len(), false),
            };
            // Only keep bytes while the line still fits: an over-long line is counted, not held.
            if len + take <= self.max_len {
                self.buf.extend_from_slice(&chunk[..take]);
            }
            len += take;
            self.inner.consume(take + usize::from(done));
            if done {
                break;
            }
        }
        self.line_no += 1;
        let line = if len > self.max_len {
            Line::TooLong { len }
        } else {
            Line::Complete(&self.buf)
        };
        Ok(Some((self.line_no, line)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn read_all(mut reader: impl Read) -> Vec<u8> {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).expect("reads");
        out
    }

    fn collect(input: &[u8], max: usize) -> Vec<(u64, String)> {
        let reader = BufReader::with_capacity(4, Cursor::new(input.to_vec()));
        let mut lines = LineReader::new(reader, max);
        let mut out = Vec::new();
        while let Some((n, line)) = lines.next_line().expect("reads") {
            out.push((
                n,
                match line {
                    Line::Complete(b) => String::from_utf8_lossy(b).into_owned(),
                    Line::TooLong { len } => format!("<{len}>"),
                },
            ));
        }
        out
    }

    #[test]
    fn splits_lines_across_small_buffers() {
        assert_eq!(
            collect(b"ab\ncdefgh\n\nlast", 100),
            vec![
                (1, "ab".into()),
                (2, "cdefgh".into()),
                (3, "".into()),
                (4, "last".into())
            ]
        );
        assert!(collect(b"", 100).is_empty());
    }

    fn chunks(input: &[u8], max: usize, target: usize) -> (Vec<u8>, u64, usize) {
        chunks_in(input, max, target, Buffers::default())
    }

    /// Chunks of `input` read one byte at a time (so every line spans reads), in buffers from
    /// `buffers`, handed back after each chunk as the workers do.
    fn chunks_in(
        input: &[u8],
        max: usize,
        target: usize,
        buffers: Buffers,
    ) -> (Vec<u8>, u64, usize) {
        let mut c = Chunker::new(Trickle(input.to_vec(), 0), max).with_buffers(buffers.clone());
        let (mut all, mut too_long, mut n) = (Vec::new(), 0, 0);
        while let Some(chunk) = c.next_chunk(target).expect("reads") {
            assert!(chunk.lines.is_empty() || chunk.lines.ends_with(b"\n"));
            all.extend_from_slice(&chunk.lines);
            buffers.give(chunk.lines);
            too_long += chunk.too_long;
            n += 1;
        }
        (all, too_long, n)
    }

    #[test]
    fn chunker_keeps_whole_lines_and_adds_a_last_newline() {
        let (all, too_long, n) = chunks(b"ab\ncdefgh\n\nlast", 100, 3);
        assert_eq!(all, b"ab\ncdefgh\n\nlast\n");
        assert_eq!(too_long, 0);
        assert!(n >= 2);
        assert_eq!(chunks(b"", 100, 3), (Vec::new(), 0, 0));
    }

    #[test]
    fn available_keeps_a_partial_last_line_for_later() {
        let reader = BufReader::with_capacity(4, Cursor::new(b"one\ntwo\nthr".to_vec()));
        let mut c = Chunker::new(reader, 100);
        let (chunk, at_end) = c.available(1000).expect("reads");
        assert_eq!(
            (chunk.lines, chunk.too_long, at_end),
            (b"one\ntwo\n".to_vec(), 0, true)
        );
        // The rest of the line arrives: a plain end now flushes it.
        assert_eq!(
            c.next_chunk(1000).expect("reads").map(|c| c.lines),
            Some(b"thr\n".to_vec())
        );
    }

    #[test]
    fn chunker_skips_lines_too_long_to_carry() {
        let (all, too_long, _) =
            chunks(b"short\nthis one is long\nok\nanother long line\n", 8, 1000);
        assert_eq!(all, b"short\nok\n");
        assert_eq!(too_long, 2);
        let (all, too_long, _) = chunks(b"ok\nendless without newline", 8, 1000);
        assert_eq!((all, too_long), (b"ok\n".to_vec(), 1));
    }

    #[test]
    fn recycled_buffers_leave_no_old_bytes_in_a_chunk() {
        let input = b"first line\nsecond\nthird line here\nx\n\nlast one";
        let pool = Buffers::new(2);
        // Dirty buffers, longer than any chunk, as workers hand them back.
        pool.give(vec![b'#'; 300]);
        pool.give(vec![b'@'; 5]);
        for target in [1, 4, 16, 1000] {
            let (all, too_long, _) = chunks_in(input, 100, target, pool.clone());
            assert_eq!(all, b"first line\nsecond\nthird line here\nx\n\nlast one\n");
            assert_eq!(too_long, 0);
            let (all, too_long, _) = chunks_in(input, 9, target, pool.clone());
            assert_eq!(all, b"second\nx\n\nlast one\n", "target {target}");
            assert_eq!(too_long, 2, "target {target}");
        }
    }

    #[test]
    fn a_whole_read_skips_an_over_long_line_and_keeps_the_rest() {
        let mut input = b"ok\n".to_vec();
        input.extend(std::iter::repeat_n(b'z', 3 * READ_BUFFER_BYTES));
        input.extend_from_slice(b"\nafter\n");
        let mut c = Chunker::new(Cursor::new(input), 1000);
        let (mut all, mut too_long) = (Vec::new(), 0);
        while let Some(chunk) = c.next_chunk(4096).expect("reads") {
            all.extend(chunk.lines);
            too_long += chunk.too_long;
        }
        assert_eq!((all, too_long), (b"ok\nafter\n".to_vec(), 1));
    }

    #[test]
    fn over_long_lines_are_skipped_and_counted() {
        assert_eq!(
            collect(b"short\nthis one is long\nok\n", 8),
            vec![(1, "short".into()), (2, "<16>".into()), (3, "ok".into())]
        );
        assert_eq!(collect(b"12345678\n", 8), vec![(1, "12345678".into())]);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).expect("compress");
        enc.finish().expect("finish")
    }

    #[test]
    fn detects_gzip_including_multi_member() {
        let mut data = gzip(b"one\ntwo\n");
        data.extend(gzip(b"three\n"));
        let reader = maybe_gzip(Cursor::new(data)).expect("opens");
        assert_eq!(read_all(reader), b"one\ntwo\nthree\n");
        let plain = maybe_gzip(Cursor::new(b"plain\n".to_vec())).expect("opens");
        assert_eq!(read_all(plain), b"plain\n");
        let tiny = maybe_gzip(Cursor::new(b"x".to_vec())).expect("opens");
        assert_eq!(read_all(tiny), b"x");
    }

    /// A reader that hands out one byte per call, like a slow pipe.
    struct Trickle(Vec<u8>, usize);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.get(self.1), buf.first_mut()) {
                (Some(&b), Some(slot)) => {
                    *slot = b;
                    self.1 += 1;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn gzip_magic_split_across_reads_is_still_detected() {
        let reader = BufReader::with_capacity(1, Trickle(gzip(b"line\n"), 0));
        assert_eq!(read_all(maybe_gzip(reader).expect("opens")), b"line\n");
    }
}
