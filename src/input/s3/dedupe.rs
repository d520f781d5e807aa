//! A bounded memory of the S3 objects already counted. SQS delivers at least once, and S3 may
//! notify the same object more than once, so the caller asks [`Seen::contains`] before it
//! reads an object and calls [`Seen::insert`] once its lines are counted; this module owns
//! only the memory. It keeps a 128-bit digest of each (bucket, key, ETag), not the strings,
//! so an entry costs tens of bytes whatever the key's length, and forgets the oldest entry
//! first when full, counting each one forgotten so the caller can export it (a nonzero rate
//! says the memory is too small for the redelivery window).

use std::collections::{HashSet, VecDeque};

use md5::{Digest, Md5};

/// The objects remembered, oldest first in `order`, all of them in `digests`.
#[derive(Debug)]
pub struct Seen {
    capacity: usize,
    digests: HashSet<u128>,
    order: VecDeque<u128>,
    evictions: u64,
}

impl Seen {
    /// A memory of up to `capacity` objects; 0 turns it off (nothing is remembered).
    pub fn new(capacity: usize) -> Self {
        Seen {
            capacity,
            digests: HashSet::new(),
            order: VecDeque::new(),
            evictions: 0,
        }
    }

    /// Whether this object was inserted and not forgotten since. A new ETag under the same key
    /// is another object: an overwrite holds other lines.
    pub fn contains(&self, bucket: &str, key: &str, etag: Option<&str>) -> bool {
        self.capacity > 0 && self.digests.contains(&digest(bucket, key, etag))
    }

    /// Remembers the object, forgetting the oldest one first when full. Inserting an object
    /// already remembered changes nothing: it keeps its place in the order.
    pub fn insert(&mut self, bucket: &str, key: &str, etag: Option<&str>) {
        if self.capacity == 0 {
            return;
        }
        let digest = digest(bucket, key, etag);
        if !self.digests.insert(digest) {
            return;
        }
        self.order.push_back(digest);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.digests.remove(&oldest);
                self.evictions += 1;
            }
        }
    }

    /// How many objects were forgotten to make room, since creation.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// MD5 of the three fields, each length-prefixed so no two triples share an input (a key may
/// hold any character, so no separator would do), and an absent ETag apart from an empty
/// one. MD5 is no defence against someone crafting collisions, but whoever can write keys to
/// the bucket can write log lines too; it only has to spread honest keys.
fn digest(bucket: &str, key: &str, etag: Option<&str>) -> u128 {
    let mut md5 = Md5::new();
    for field in [Some(bucket), Some(key), etag] {
        match field {
            Some(text) => {
                md5.update([1]);
                md5.update((text.len() as u64).to_le_bytes());
                md5.update(text.as_bytes());
            }
            None => md5.update([0]),
        }
    }
    u128::from_le_bytes(md5.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AWSLogs/123456789012/elasticloadbalancing/eu-west-1/2026/12/06/\
        123456789012_elasticloadbalancing_eu-west-1_app.my-lb.50dc6c495c0c9188_20261206T1005Z_\
        10.0.12.34_2mebsj6o.log.gz";

    #[test]
    fn remembers_what_was_inserted() {
        let mut seen = Seen::new(10);
        assert!(seen.is_empty());
        assert!(!seen.contains("b", KEY, Some("e1")));
        seen.insert("b", KEY, Some("e1"));
        assert!(seen.contains("b", KEY, Some("e1")));
        assert_eq!(seen.len(), 1);
        seen.insert("b", KEY, Some("e1"));
        assert_eq!(seen.len(), 1, "a second insert changes nothing");
    }

    #[test]
    fn every_field_tells_objects_apart() {
        let mut seen = Seen::new(10);
        seen.insert("b", KEY, Some("e1"));
        assert!(
            !seen.contains("b", KEY, Some("e2")),
            "overwritten: another ETag"
        );
        assert!(!seen.contains("b", KEY, None));
        assert!(!seen.contains("c", KEY, Some("e1")));
        assert!(!seen.contains("b", "other", Some("e1")));
        // Where one field ends and the next starts matters, and an empty ETag is not none.
        seen.insert("ab", "c", None);
        assert!(!seen.contains("a", "bc", None));
        assert!(!seen.contains("ab", "c", Some("")));
        assert_ne!(digest("a", "b", Some("")), digest("a", "b", None));
        assert_ne!(digest("a", "", Some("b")), digest("a", "b", Some("")));
    }

    #[test]
    fn forgets_the_oldest_first_and_counts() {
        let mut seen = Seen::new(3);
        for key in ["k0", "k1", "k2"] {
            seen.insert("b", key, Some("e"));
        }
        assert_eq!(seen.evictions(), 0);
        seen.insert("b", "k1", Some("e"));
        assert_eq!(seen.evictions(), 0, "already there: nothing to forget");
        seen.insert("b", "k3", Some("e"));
        assert_eq!(seen.evictions(), 1);
        assert!(!seen.contains("b", "k0", Some("e")));
        for key in ["k1", "k2", "k3"] {
            assert!(seen.contains("b", key, Some("e")), "{key}");
        }
        seen.insert("b", "k4", Some("e"));
        seen.insert("b", "k5", Some("e"));
        assert_eq!(seen.evictions(), 3);
        assert_eq!(seen.len(), 3);
        assert!(!seen.contains("b", "k2", Some("e")));
        assert!(seen.contains("b", "k3", Some("e")));
        // Forgotten objects can be remembered again.
        seen.insert("b", "k0", Some("e"));
        assert!(seen.contains("b", "k0", Some("e")));
        assert_eq!(seen.evictions(), 4);
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let mut seen = Seen::new(0);
        seen.insert("b", KEY, Some("e"));
        assert!(!seen.contains("b", KEY, Some("e")));
        assert_eq!((seen.len(), seen.evictions(), seen.capacity()), (0, 0, 0));
    }
}
