//! One S3 object as lines for the pipeline, never held whole. [`fetch`] starts a task that
//! streams the object's body (GetObject) into a small bounded channel; [`Body`] reads that
//! channel as a blocking [`Read`], so the gzip decoder and the line chunker — the same ones
//! local files go through — run on a reading thread, and memory per object is a few network
//! chunks and one batch whatever the object's size. [`count`] queues the object's batches on
//! its partition and waits until the workers have counted every one, which is what allows the
//! queue reader to delete the message afterwards.

use std::io::{self, BufReader, Read};
use std::sync::mpsc;

use aws_smithy_types::byte_stream::ByteStream;
use bytes::Bytes;
use tokio::sync::mpsc as async_mpsc;

use super::sdk::Clients;
use crate::buffers::Buffers;
use crate::input::aws::{AwsError, Failure, Fault};
use crate::input::{PartitionInput, Shutdown, files};
use crate::lines::{self, Chunk, Chunker};
use crate::pipeline::BatchOutcome;

/// Network chunks buffered per object ahead of its reader: enough to keep the connection
/// busy while a batch is handed on, few enough that many objects in flight stay small.
const CHUNKS_AHEAD: usize = 8;
/// The reading thread's buffer in front of the gzip decoder.
const READ_BUFFER: usize = 64 * 1024;

/// What the fetching task hands the reader.
enum Piece {
    Data(Bytes),
    /// The body arrived whole.
    End,
    Failed(AwsError),
}

/// An object's body as it arrives, read on a blocking thread.
pub struct Body {
    rx: async_mpsc::Receiver<Piece>,
    current: Bytes,
    ended: bool,
}

/// The object could not be fetched whole: carried through the decoder as an I/O error so
/// it can be told apart from a decoding failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FetchFailed(pub AwsError);

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.current.is_empty() {
                let n = buf.len().min(self.current.len());
                buf[..n].copy_from_slice(&self.current.split_to(n));
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(b)) => self.current = b,
                Some(Piece::End) => self.ended = true,
                Some(Piece::Failed(e)) => return Err(io::Error::other(FetchFailed(e))),
                // The task went without saying the body ended: never take that for the end.
                None => {
                    return Err(io::Error::other(FetchFailed(AwsError::new(
                        Fault::Network,
                        "the object's download stopped before its end",
                    ))));
                }
            }
        }
    }
}

/// Starts streaming `bucket/key` on the current runtime; the body is read from the returned
/// [`Body`] on a blocking thread. Dropping the `Body` stops the download.
pub fn fetch(clients: &Clients, bucket: &str, key: &str) -> Body {
    let (tx, rx) = async_mpsc::channel(CHUNKS_AHEAD);
    let request = clients.s3.get_object().bucket(bucket).key(key).send();
    let clients = clients.clone();
    let bucket = bucket.to_owned();
    tokio::spawn(async move {
        let piece = match request.await {
            Ok(out) => match stream(out.body, &tx).await {
                Ok(()) => Piece::End,
                Err(e) => Piece::Failed(clients.s3_failure(
                    "GetObject",
                    &Failure::new(Fault::Network, crate::input::aws::cause_chain(Some(&e))),
                )),
            },
            Err(e) => Piece::Failed(clients.get_object_error(&bucket, &e)),
        };
        let _ = tx.send(piece).await;
    });
    Body {
        rx,
        current: Bytes::new(),
        ended: false,
    }
}

/// Sends `body`'s chunks until its end, or until the reader is gone (then quietly).
async fn stream(
    mut body: ByteStream,
    tx: &async_mpsc::Sender<Piece>,
) -> Result<(), aws_smithy_types::byte_stream::error::Error> {
    while let Some(chunk) = body.try_next().await? {
        if tx.send(Piece::Data(chunk)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Why an object's lines could not all be counted.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{0}")]
    Unreadable(AwsError),
    #[error("cannot decode: {0}")]
    Corrupt(io::Error),
    #[error("shutting down")]
    Interrupted,
}

impl From<io::Error> for ObjectError {
    fn from(e: io::Error) -> Self {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<FetchFailed>())
        {
            Some(FetchFailed(aws)) => ObjectError::Unreadable(aws.clone()),
            None => ObjectError::Corrupt(e),
        }
    }
}

/// The object's lines in batches of about `batch_bytes`, gzip decoded as they stream when the
/// body starts with gzip's magic bytes.
pub fn chunks(
    body: Body,
    batch_bytes: usize,
    max_line: usize,
    buffers: Buffers,
) -> Box<dyn Iterator<Item = Result<Chunk, ObjectError>>> {
    match lines::maybe_gzip(BufReader::with_capacity(READ_BUFFER, body)) {
        Ok(reader) => Box::new(
            Chunker::new(reader, max_line)
                .with_buffers(buffers)
                .into_chunks(batch_bytes)
                .map(|item| item.map_err(ObjectError::from)),
        ),
        Err(e) => Box::new(std::iter::once(Err(ObjectError::from(e)))),
    }
}

/// What one object's lines came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub lines: u64,
    pub parsed: u64,
    pub failed: u64,
}

impl Counted {
    fn add(&mut self, o: &BatchOutcome) {
        self.lines += o.lines;
        self.parsed += o.parsed;
        self.failed += o.failed();
    }
}

/// Reads `body` into `input`'s partition and waits until the workers have counted every batch
/// (blocking: run it on a blocking thread). On an error the batches already queued are still
/// counted, and waited for, before it returns.
pub fn count(
    body: Body,
    input: &PartitionInput,
    batch_bytes: usize,
    max_line: usize,
    stop: &Shutdown,
) -> Result<Counted, ObjectError> {
    let (done_tx, done_rx) = mpsc::channel();
    let mut queued = 0usize;
    let mut result = Ok(());
    for item in chunks(body, batch_bytes, max_line, input.buffers().clone()) {
        if stop.is_set() {
            result = Err(ObjectError::Interrupted);
            break;
        }
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let done = done_tx.clone();
        let mut batch = files::batch_of(chunk);
        batch.ack = Some(Box::new(move |o| {
            let _ = done.send(o);
        }));
        if input.submit(batch).is_err() {
            result = Err(ObjectError::Interrupted);
            break;
        }
        queued += 1;
    }
    drop(done_tx);
    let mut counted = Counted::default();
    for outcome in done_rx.iter().take(queued) {
        counted.add(&outcome);
    }
    result.map(|()| counted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body whose fetching task sends `pieces` and then goes.
    fn body(pieces: Vec<Piece>) -> Body {
        let (tx, rx) = async_mpsc::channel(pieces.len().max(1));
        for p in pieces {
            let _ = tx.try_send(p);
        }
        Body {
            rx,
            current: Bytes::new(),
            ended: false,
        }
    }

    fn lines_of(body: Body) -> Result<Vec<u8>, ObjectError> {
        let mut all = Vec::new();
        for chunk in chunks(body, 8, 1024, Buffers::default()) {
            all.extend_from_slice(&chunk?.lines);
        }
        Ok(all)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn a_body_in_pieces_reads_as_its_lines() {
        let b = body(vec![
            Piece::Data(Bytes::from_static(b"one\ntw")),
            Piece::Data(Bytes::from_static(b"o\nthree")),
            Piece::End,
        ]);
        assert_eq!(lines_of(b).unwrap(), b"one\ntwo\nthree\n");
    }

    #[test]
    fn gzip_is_decoded_as_it_streams_across_pieces() {
        let packed = gzip(b"a\nb\nc\n");
        let (head, tail) = packed.split_at(5);
        let b = body(vec![
            Piece::Data(Bytes::copy_from_slice(head)),
            Piece::Data(Bytes::copy_from_slice(tail)),
            Piece::End,
        ]);
        assert_eq!(lines_of(b).unwrap(), b"a\nb\nc\n");
    }

    #[test]
    fn a_download_that_stops_early_is_unreadable_never_a_short_object() {
        let b = body(vec![Piece::Data(Bytes::from_static(b"one\n"))]);
        assert!(matches!(lines_of(b), Err(ObjectError::Unreadable(_))));
        let failed = AwsError::new(Fault::Network, "connection reset");
        let b = body(vec![Piece::Failed(failed)]);
        match lines_of(b) {
            Err(ObjectError::Unreadable(e)) => assert_eq!(e.message, "connection reset"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_gzip_is_corrupt() {
        let mut packed = gzip(b"a line\n".repeat(100).as_slice());
        packed.truncate(packed.len() / 2);
        let b = body(vec![Piece::Data(Bytes::from(packed)), Piece::End]);
        assert!(matches!(lines_of(b), Err(ObjectError::Corrupt(_))));
    }
}
