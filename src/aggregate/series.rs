//! The capped interner of label series: maps the `(elb, target_group, target)` of an entry,
//! plus the values of the configured attribute labels (Firehose common attributes), to a small
//! id and owns the label strings, so the windows and the exposition never hold more than
//! `max_series` distinct series however many targets (or attribute values) churn through.
//! Entries that would exceed the cap go to one `__overflow__` series (and are counted); series
//! idle for the TTL are released and their ids reused.
//!
//! Past the cap every entry of a new key asks the table and is told "overflow", so that answer
//! is one hash and one probe with no allocation: the index holds ids by a hash kept in the
//! slot, and a key is copied only when it becomes a series.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;

use crate::ids::IdTable;

/// The label value given to entries that did not fit under the cap.
pub const OVERFLOW: &str = "__overflow__";

/// The labels of one series. Target groups are their short name (`targetgroup/NAME/…`);
/// entries without a target or target group use `-`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesLabels {
    pub elb: String,
    pub target_group: String,
    pub target: String,
    /// One value per configured attribute label, in config order; `""` = not sent (the
    /// label is then left out, as Prometheus reads an empty label as absent).
    pub attributes: Vec<String>,
}

/// Builds the lookup key of a series into `out`: the three labels separated by NUL bytes
/// (which no label can contain). The attribute part, if any, follows from
/// [`push_attributes`].
pub fn series_key(out: &mut Vec<u8>, elb: &[u8], target_group: &[u8], target: &[u8]) {
    out.clear();
    out.extend_from_slice(elb);
    out.push(0);
    out.extend_from_slice(target_group);
    out.push(0);
    out.extend_from_slice(target);
}

/// Appends the attribute part of a series key to `out`: exactly `count` NUL-led values, taken
/// from `values` by position (missing ones empty, extra ones ignored), so that "not sent" has
/// one spelling and a key always has `3 + count` parts.
pub fn push_attributes<T: AsRef<str>>(out: &mut Vec<u8>, count: usize, values: &[T]) {
    for i in 0..count {
        out.push(0);
        if let Some(v) = values.get(i) {
            out.extend_from_slice(v.as_ref().as_bytes());
        }
    }
}

fn labels_of(key: &[u8], attribute_count: usize) -> SeriesLabels {
    let mut parts = key
        .split(|&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let mut next = || parts.next().unwrap_or_default();
    SeriesLabels {
        elb: next(),
        target_group: next(),
        target: next(),
        attributes: (0..attribute_count).map(|_| next()).collect(),
    }
}

/// A live series: its key and its labels.
#[derive(Debug)]
struct Slot {
    key: Box<[u8]>,
    labels: Arc<SeriesLabels>,
}

/// Series ids by key, with a cap and a free list.
#[derive(Debug)]
pub struct SeriesTable {
    hasher: DefaultHashBuilder,
    /// Live series (the overflow series too) by id, found by the hash of their key.
    slots: IdTable<Slot>,
    max_series: usize,
    attribute_count: usize,
    overflow: Option<u32>,
    /// Entries mapped to the overflow series because the table was full.
    pub overflowed_entries: u64,
}

impl SeriesTable {
    /// A table of at most `max_series` series (plus the overflow one) whose keys carry
    /// `attribute_count` attribute values.
    pub fn new(max_series: usize, attribute_count: usize) -> Self {
        SeriesTable {
            hasher: DefaultHashBuilder::default(),
            slots: IdTable::default(),
            max_series,
            attribute_count,
            overflow: None,
            overflowed_entries: 0,
        }
    }

    /// The id of the series `key` (see [`series_key`]), creating it if there is room and
    /// falling back to the overflow series (counting `entries` as overflowed) otherwise.
    pub fn intern(&mut self, key: &[u8], entries: u64) -> u32 {
        let hash = self.hasher.hash_one(key);
        if let Some(id) = self.slots.find(hash, |s| *s.key == *key) {
            return id;
        }
        if self.slots.len() < self.max_series {
            return self.insert(key.into(), hash);
        }
        self.overflowed_entries += entries;
        match self.overflow {
            Some(id) => id,
            None => {
                // One overflow series, whatever the attributes: its values are unknown ("").
                let mut k = Vec::new();
                series_key(
                    &mut k,
                    OVERFLOW.as_bytes(),
                    OVERFLOW.as_bytes(),
                    OVERFLOW.as_bytes(),
                );
                push_attributes::<&str>(&mut k, self.attribute_count, &[]);
                let hash = self.hasher.hash_one(&k[..]);
                let id = self.insert(k.into(), hash);
                self.overflow = Some(id);
                id
            }
        }
    }

    fn insert(&mut self, key: Box<[u8]>, hash: u64) -> u32 {
        let labels = Arc::new(labels_of(&key, self.attribute_count));
        self.slots.insert(hash, Slot { key, labels })
    }

    /// Releases the series `id`; its id may be handed out again.
    pub fn release(&mut self, id: u32) {
        if self.slots.remove(id).is_some() && self.overflow == Some(id) {
            self.overflow = None;
        }
    }

    pub fn labels(&self, id: u32) -> Option<&Arc<SeriesLabels>> {
        self.slots.get(id).map(|s| &s.labels)
    }

    /// Live series, the overflow series included.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(target: &str) -> Vec<u8> {
        let mut k = Vec::new();
        series_key(&mut k, b"app/lb/1", b"web", target.as_bytes());
        k
    }

    #[test]
    fn interns_up_to_the_cap_then_overflows() {
        let mut t = SeriesTable::new(2, 0);
        let a = t.intern(&key("10.0.0.1:80"), 1);
        assert_eq!(t.intern(&key("10.0.0.1:80"), 1), a);
        let b = t.intern(&key("10.0.0.2:80"), 1);
        assert_ne!(a, b);
        let o = t.intern(&key("10.0.0.3:80"), 5);
        assert_eq!(t.intern(&key("10.0.0.4:80"), 2), o);
        assert_eq!(t.overflowed_entries, 7);
        let labels = t.labels(o).expect("overflow labels");
        assert_eq!(labels.target, OVERFLOW);
        assert_eq!(t.labels(a).expect("labels").target, "10.0.0.1:80");
        assert_eq!(t.labels(a).expect("labels").target_group, "web");
    }

    #[test]
    fn released_ids_are_reused_and_room_comes_back() {
        let mut t = SeriesTable::new(1, 0);
        let a = t.intern(&key("a:1"), 1);
        t.release(a);
        assert!(t.is_empty());
        let b = t.intern(&key("b:1"), 1);
        assert_eq!(a, b);
        assert_eq!(t.labels(b).expect("labels").target, "b:1");
        assert_eq!(t.len(), 1);
    }

    fn key_with(target: &str, env: &str) -> Vec<u8> {
        let mut k = key(target);
        push_attributes(&mut k, 1, &[env]);
        k
    }

    #[test]
    fn attribute_values_split_series_and_share_the_cap() {
        let mut t = SeriesTable::new(2, 1);
        let prod = t.intern(&key_with("a:1", "prod"), 1);
        let staging = t.intern(&key_with("a:1", "staging"), 1);
        assert_ne!(prod, staging);
        assert_eq!(t.labels(prod).expect("labels").attributes, ["prod"]);
        assert_eq!(t.labels(staging).expect("labels").target, "a:1");
        // A third value of the same target is a third series: over the cap.
        let o = t.intern(&key_with("a:1", "dev"), 3);
        assert_eq!(t.overflowed_entries, 3);
        let overflow = t.labels(o).expect("overflow labels");
        assert_eq!(overflow.target, OVERFLOW);
        assert_eq!(overflow.attributes, [""]);
        // Released by its own key, attributes and all: room comes back.
        t.release(prod);
        t.release(o);
        assert_eq!(t.len(), 1);
        let dev = t.intern(&key_with("a:1", "dev"), 1);
        assert_eq!(t.labels(dev).expect("labels").attributes, ["dev"]);
        assert_eq!(t.overflowed_entries, 3);
    }

    #[test]
    fn a_missing_value_has_one_spelling() {
        let mut none = key("a:1");
        push_attributes::<&str>(&mut none, 2, &[]);
        let mut empty = key("a:1");
        push_attributes(&mut empty, 2, &["", ""]);
        let mut short = key("a:1");
        push_attributes(&mut short, 2, &[""]);
        assert_eq!(none, empty);
        assert_eq!(none, short);
        assert_eq!(labels_of(&none, 2).attributes, ["", ""]);
    }
}
