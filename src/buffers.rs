//! Batch buffers recycled between the inputs and the worker pool: an input fills a buffer
//! taken from [`Buffers`] with lines, the pipeline's worker hands it back once the batch is
//! counted. It owns nothing but the idle buffers and bounds them in count and size.

use std::sync::{Arc, Mutex, PoisonError};

/// A buffer kept between batches (a worker's decoded lines, a recycled batch) holds at most
/// this much: one outsized batch must not pin more for good.
pub const RETAIN_BYTES: usize = 32 * 1024 * 1024;

/// Batch buffers the workers hand back once a batch is counted, for the inputs to fill again.
/// Allocating a fresh megabyte per batch on the reading thread and freeing it on a worker made
/// the allocator map, fault in and return memory at every batch (tens of thousands of page
/// faults and thousands of `mprotect` calls per million lines); a recycled buffer is already
/// faulted in. At most `keep` buffers of at most [`RETAIN_BYTES`] each are kept; the rest are
/// freed. Cloning shares the pool.
#[derive(Clone, Default)]
pub struct Buffers {
    inner: Arc<BufferShelf>,
}

#[derive(Default)]
struct BufferShelf {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Buffers {
    /// A pool keeping up to `keep` buffers (`Buffers::default()` keeps none: every
    /// [`Buffers::take`] allocates).
    pub fn new(keep: usize) -> Self {
        Buffers {
            inner: Arc::new(BufferShelf {
                free: Mutex::new(Vec::with_capacity(keep)),
                keep,
            }),
        }
    }

    /// An empty buffer: a returned one, with its capacity, when there is one.
    pub fn take(&self) -> Vec<u8> {
        let mut buf = self.take_with_bytes();
        buf.clear();
        buf
    }

    /// A returned buffer with the bytes it was handed back with still in it (or a new empty
    /// one): a reader can read over them in place instead of zeroing fresh memory first.
    pub fn take_with_bytes(&self) -> Vec<u8> {
        self.shelf().pop().unwrap_or_default()
    }

    /// Hands `buf` back for a later [`Buffers::take`], or frees it when the pool is full or
    /// the buffer outsized.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > RETAIN_BYTES {
            return;
        }
        let mut free = self.shelf();
        if free.len() < self.inner.keep {
            free.push(buf);
        }
    }

    fn shelf(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
