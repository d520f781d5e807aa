//! The capped interner of label series: maps the `(elb, target_group, target)` of an entry to
//! a small id and owns the label strings, so the windows and the exposition never hold more
//! than `max_series` distinct series however many targets churn through. Entries that would
//! exceed the cap go to one `__overflow__` series (and are counted); series idle for the TTL are
//! released and their ids reused.

use std::collections::HashMap;
use std::sync::Arc;

/// The label value given to entries that did not fit under the cap.
pub const OVERFLOW: &str = "__overflow__";

/// The labels of one series. Target groups are their short name (`targetgroup/NAME/…`);
/// entries without a target or target group use `-`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesLabels {
    pub elb: String,
    pub target_group: String,
    pub target: String,
}

/// Builds the lookup key of a series into `out`: the three labels separated by NUL bytes
/// (which no label can contain).
pub fn series_key(out: &mut Vec<u8>, elb: &[u8], target_group: &[u8], target: &[u8]) {
    out.clear();
    out.extend_from_slice(elb);
    out.push(0);
    out.extend_from_slice(target_group);
    out.push(0);
    out.extend_from_slice(target);
}

fn labels_of(key: &[u8]) -> SeriesLabels {
    let mut parts = key.splitn(3, |&b| b == 0);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    SeriesLabels {
        elb: next(),
        target_group: next(),
        target: next(),
    }
}

/// Series ids by key, with a cap and a free list.
#[derive(Debug)]
pub struct SeriesTable {
    index: HashMap<Box<[u8]>, u32>,
    labels: Vec<Option<Arc<SeriesLabels>>>,
    free: Vec<u32>,
    max_series: usize,
    overflow: Option<u32>,
    /// Entries mapped to the overflow series because the table was full.
    pub overflowed_entries: u64,
}

impl SeriesTable {
    pub fn new(max_series: usize) -> Self {
        SeriesTable {
            index: HashMap::new(),
            labels: Vec::new(),
            free: Vec::new(),
            max_series,
            overflow: None,
            overflowed_entries: 0,
        }
    }

    /// The id of the series `key` (see [`series_key`]), creating it if there is room and
    /// falling back to the overflow series (counting `entries` as overflowed) otherwise.
    pub fn intern(&mut self, key: &[u8], entries: u64) -> u32 {
        if let Some(&id) = self.index.get(key) {
            return id;
        }
        if self.index.len() < self.max_series {
            return self.insert(key.into());
        }
        self.overflowed_entries += entries;
        match self.overflow {
            Some(id) => id,
            None => {
                let mut k = Vec::new();
                series_key(
                    &mut k,
                    OVERFLOW.as_bytes(),
                    OVERFLOW.as_bytes(),
                    OVERFLOW.as_bytes(),
                );
                let id = self.insert(k.into());
                self.overflow = Some(id);
                id
            }
        }
    }

    fn insert(&mut self, key: Box<[u8]>) -> u32 {
        let labels = Some(Arc::new(labels_of(&key)));
        let id = match self.free.pop() {
            Some(id) => {
                self.labels[id as usize] = labels;
                id
            }
            None => {
                self.labels.push(labels);
                // The table never holds more than `max_series` + 1 ids, far below u32::MAX.
                (self.labels.len() - 1) as u32
            }
        };
        self.index.insert(key, id);
        id
    }

    /// Releases the series `id`; its id may be handed out again.
    pub fn release(&mut self, id: u32) {
        let Some(labels) = self.labels.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        let mut k = Vec::new();
        series_key(
            &mut k,
            labels.elb.as_bytes(),
            labels.target_group.as_bytes(),
            labels.target.as_bytes(),
        );
        self.index.remove(&k[..]);
        if self.overflow == Some(id) {
            self.overflow = None;
        }
        self.free.push(id);
    }

    pub fn labels(&self, id: u32) -> Option<&Arc<SeriesLabels>> {
        self.labels.get(id as usize).and_then(Option::as_ref)
    }

    /// Live series, the overflow series included.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
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
        let mut t = SeriesTable::new(2);
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
        let mut t = SeriesTable::new(1);
        let a = t.intern(&key("a:1"), 1);
        t.release(a);
        assert!(t.is_empty());
        let b = t.intern(&key("b:1"), 1);
        assert_eq!(a, b);
        assert_eq!(t.labels(b).expect("labels").target, "b:1");
        assert_eq!(t.len(), 1);
    }
}
