//! Small, reusable `u32` ids for values found by their hash: a slot vector with a free list
//! and a `hashbrown` index of live ids. The aggregator's series table and the alert engine's
//! group table hand these ids out, so hot loops index a vector instead of hashing strings,
//! and a released id is handed out again rather than growing the vector.

use hashbrown::HashTable;

/// Values by id, each found again by its hash; see the module docs.
#[derive(Debug)]
pub struct IdTable<T> {
    /// Live ids by the hash of their value.
    index: HashTable<u32>,
    /// Each id's value and hash; `None` for a free id.
    slots: Vec<Option<(u64, T)>>,
    free: Vec<u32>,
}

impl<T> Default for IdTable<T> {
    fn default() -> Self {
        IdTable {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> IdTable<T> {
    /// The id of a live value with `hash` for which `eq` holds (the hash only narrows the
    /// search: `eq` decides).
    pub fn find(&self, hash: u64, eq: impl Fn(&T) -> bool) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash, |&id| {
                slots
                    .get(id as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|(_, v)| eq(v))
            })
            .copied()
    }

    /// Adds `value`, whose hash is `hash`, under a free id or a new one.
    pub fn insert(&mut self, hash: u64, value: T) -> u32 {
        let slot = Some((hash, value));
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                // Both users hold a bounded number of values (the series cap; three groups
                // per series), far below u32::MAX.
                (self.slots.len() - 1) as u32
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(hash, id, |&i| {
            slots
                .get(i as usize)
                .and_then(Option::as_ref)
                .map_or(0, |(h, _)| *h)
        });
        id
    }

    /// Takes the value of `id` out; the id may be handed out again.
    pub fn remove(&mut self, id: u32) -> Option<T> {
        let (hash, value) = self.slots.get_mut(id as usize).and_then(Option::take)?;
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == id) {
            entry.remove();
        }
        self.free.push(id);
        Some(value)
    }

    pub fn get(&self, id: u32) -> Option<&T> {
        self.slots
            .get(id as usize)
            .and_then(Option::as_ref)
            .map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        self.slots
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .map(|(_, v)| v)
    }

    /// Every live value.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten().map(|(_, v)| v)
    }

    /// Keeps the values for which `keep` holds (visiting every live one, which it may
    /// change) and removes the rest.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        for id in 0..self.slots.len() {
            if let Some((_, value)) = self.slots[id].as_mut()
                && !keep(value)
            {
                // Slot ids are below u32::MAX (see `insert`).
                self.remove(id as u32);
            }
        }
    }

    /// Live values.
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

    #[test]
    fn ids_are_found_by_hash_and_value_and_reused_after_removal() {
        let mut t = IdTable::default();
        let a = t.insert(7, "a");
        let b = t.insert(7, "b");
        assert_ne!(a, b);
        assert_eq!(t.find(7, |v| *v == "b"), Some(b));
        assert_eq!(
            t.find(7, |v| *v == "z"),
            None,
            "the value decides, not the hash alone"
        );
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(t.remove(a), None, "removed once");
        assert_eq!(t.find(7, |v| *v == "a"), None);
        assert_eq!(t.insert(9, "c"), a, "the freed id");
        assert_eq!(t.len(), 2);
        t.retain(|v| {
            *v = "kept";
            false
        });
        assert!(t.is_empty());
        assert_eq!(t.values().count(), 0);
        assert_eq!(t.get(b), None);
    }

    #[test]
    fn retain_keeps_and_changes_what_it_keeps() {
        let mut t = IdTable::default();
        let ids: Vec<u32> = (0..4u64).map(|i| t.insert(i, i)).collect();
        t.retain(|v| {
            *v *= 10;
            *v != 20
        });
        assert_eq!(t.get(ids[3]), Some(&30));
        assert_eq!(t.get(ids[2]), None);
        assert_eq!(t.find(1, |v| *v == 10), Some(ids[1]));
        if let Some(v) = t.get_mut(ids[0]) {
            *v = 5;
        }
        assert_eq!(t.values().copied().collect::<Vec<_>>(), [5, 10, 30]);
    }
}
