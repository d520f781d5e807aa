//! Idempotency per `X-Amz-Firehose-Request-Id`. [`RequestLog`] remembers which ids are being
//! processed right now and, in a bounded LRU, which were committed (every line acknowledged by
//! the pipeline). The handler asks it once per request: a committed id is answered 200 without
//! reprocessing, an id in flight is answered 503 (a Firehose retry that overtook a slow first
//! attempt must not count the batch twice), a new id gets a [`Claim`] that either commits or,
//! when dropped, releases the id for the next attempt.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// What the log knows about an id.
#[derive(Debug)]
pub(crate) enum Seen {
    /// Never seen, or its last attempt failed: the caller now holds it.
    New(Claim),
    /// Another attempt with this id is being processed.
    InFlight,
    /// Already delivered.
    Committed,
}

/// Ids in flight, and the last `capacity` committed ids in least-recently-used order.
#[derive(Debug)]
pub(crate) struct RequestLog {
    capacity: usize,
    /// Committed id → the generation of its newest entry in `order`.
    committed: HashMap<Box<str>, u64>,
    /// Oldest first. Touching an id appends a new entry instead of moving the old one (O(1));
    /// stale entries — an older generation than `committed` holds — are skipped at eviction
    /// and dropped when the queue grows past twice the capacity.
    order: VecDeque<(Box<str>, u64)>,
    generation: u64,
    /// Bounded by the number of concurrent requests, which the server bounds.
    in_flight: HashSet<Box<str>>,
}

impl RequestLog {
    pub(crate) fn new(capacity: usize) -> Self {
        RequestLog {
            capacity,
            committed: HashMap::new(),
            order: VecDeque::new(),
            generation: 0,
            in_flight: HashSet::new(),
        }
    }

    fn touch(&mut self, id: &str) {
        self.generation += 1;
        let generation = self.generation;
        if let Some(g) = self.committed.get_mut(id) {
            *g = generation;
            self.order.push_back((id.into(), generation));
        }
        if self.order.len() > 2 * self.capacity + 16 {
            let committed = &self.committed;
            self.order.retain(|(id, g)| committed.get(id) == Some(g));
        }
    }

    fn commit(&mut self, id: &str) {
        self.in_flight.remove(id);
        if self.capacity == 0 {
            return;
        }
        self.committed.insert(id.into(), 0);
        self.touch(id);
        while self.committed.len() > self.capacity {
            let Some((old, g)) = self.order.pop_front() else {
                break;
            };
            if self.committed.get(&old) == Some(&g) {
                self.committed.remove(&old);
            }
        }
    }

    fn release(&mut self, id: &str) {
        self.in_flight.remove(id);
    }

    #[cfg(test)]
    pub(crate) fn committed_len(&self) -> usize {
        self.committed.len()
    }
}

/// The shared log; cloning shares it. A plain mutex: it is held for a hash lookup, never
/// across an `.await`.
#[derive(Debug, Clone)]
pub(crate) struct SharedLog(Arc<Mutex<RequestLog>>);

impl SharedLog {
    pub(crate) fn new(capacity: usize) -> Self {
        SharedLog(Arc::new(Mutex::new(RequestLog::new(capacity))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RequestLog> {
        // The log's invariants hold between statements; a panic elsewhere cannot break them.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks `id` up and, if it is new, marks it in flight for the returned [`Claim`].
    pub(crate) fn claim(&self, id: &str) -> Seen {
        let mut log = self.lock();
        if log.committed.contains_key(id) {
            log.touch(id);
            return Seen::Committed;
        }
        if !log.in_flight.insert(id.into()) {
            return Seen::InFlight;
        }
        Seen::New(Claim {
            log: self.clone(),
            id: id.into(),
            committed: false,
        })
    }

    #[cfg(test)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&RequestLog) -> R) -> R {
        f(&self.lock())
    }
}

/// An id this attempt is processing. [`Claim::commit`] records it as delivered; dropping the
/// claim otherwise (an error, a cancelled request) frees the id so a retry is processed.
#[derive(Debug)]
pub(crate) struct Claim {
    log: SharedLog,
    id: Box<str>,
    committed: bool,
}

impl Claim {
    pub(crate) fn commit(mut self) {
        self.committed = true;
        self.log.lock().commit(&self.id);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.committed {
            self.log.lock().release(&self.id);
        }
    }
}
