//! The tallies a replica keeps of collections whose count was asked ([`crate::crdt::rows::Tally`]), each with its
//! latest changes, within bounds: at most [`MAX_TALLIES`] keys (past it every tally is counted again when next
//! asked), [`TALLY_CHANGES`] changes per key, and [`MAX_CHANGES`] changes in all (past it every key's changes are
//! dropped, and the hot keys note theirs again). The store keeps each entry in step with its rows under the key's
//! lock (`KvStore::tally`).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::crdt::rows::{Tally, TallyChange};
use crate::versioning::VersionVector;

/// Collections whose tally is kept.
pub const MAX_TALLIES: usize = 100_000;
/// How many of its latest changes a tally keeps: enough to span the writes one replica has applied and another not
/// yet, under a stream of writes to the key on a busy node (32 fell short on a 2-core machine running three nodes
/// and redis-benchmark).
pub const TALLY_CHANGES: usize = 256;
/// Changes kept over every tally (about 100 bytes each).
pub const MAX_CHANGES: usize = 1 << 16;

/// A collection's tally as a replica keeps it.
pub struct TallyEntry {
    /// The tally.
    pub tally: Tally,
    /// The key row's cleared element writes it was counted under.
    pub cleared: VersionVector,
    /// Its latest changes, oldest first.
    recent: VecDeque<TallyChange>,
}

impl TallyEntry {
    /// A tally just counted, with no changes yet.
    pub fn new(tally: Tally, cleared: VersionVector) -> Self {
        Self { tally, cleared, recent: VecDeque::new() }
    }

    /// Its latest changes, oldest first.
    pub fn recent(&self) -> Vec<TallyChange> {
        self.recent.iter().cloned().collect()
    }
}

/// Every kept tally, by user key.
#[derive(Default)]
pub struct Tallies {
    keys: HashMap<Bytes, TallyEntry>,
    /// Changes kept over every entry.
    changes: usize,
}

impl Tallies {
    /// The tally of `user_key`, if kept.
    pub fn get(&self, user_key: &[u8]) -> Option<&TallyEntry> {
        self.keys.get(user_key)
    }

    /// Whether no tally is kept.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keeps a tally just counted (every other one is dropped first when [`MAX_TALLIES`] are kept).
    pub fn insert(&mut self, user_key: &[u8], entry: TallyEntry) {
        if self.keys.len() >= MAX_TALLIES {
            self.clear();
        }
        self.remove(user_key);
        self.keys.insert(Bytes::copy_from_slice(user_key), entry);
    }

    /// Drops the tally of `user_key`: counted again when next asked.
    pub fn remove(&mut self, user_key: &[u8]) {
        if let Some(entry) = self.keys.remove(user_key) {
            self.changes -= entry.recent.len();
        }
    }

    /// Drops every tally.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.changes = 0;
    }

    /// Applies `change` to the tally of `user_key` and notes it among its latest changes, if the key has one.
    pub fn apply(&mut self, user_key: &[u8], change: TallyChange) {
        if self.changes >= MAX_CHANGES {
            self.keys.values_mut().for_each(|e| e.recent.clear());
            self.changes = 0;
        }
        let Some(entry) = self.keys.get_mut(user_key) else { return };
        entry.tally.apply(&change, true);
        if entry.recent.len() == TALLY_CHANGES {
            entry.recent.pop_front();
            self.changes -= 1;
        }
        entry.recent.push_back(change);
        self.changes += 1;
    }

    /// Forgets the latest changes of `user_key`'s tally: no merge of counts reaches back past now.
    pub fn forget_changes(&mut self, user_key: &[u8]) {
        if let Some(entry) = self.keys.get_mut(user_key) {
            self.changes -= entry.recent.len();
            entry.recent.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(n: u8) -> TallyChange {
        TallyChange { element: u128::from(n), home: 0, before: (0, None), after: (u128::from(n) + 1, None) }
    }

    /// The kept changes stay within their bounds, and the count of them stays true as keys come and go.
    #[test]
    fn changes_stay_within_their_bounds() {
        let mut t = Tallies::default();
        t.insert(b"a", TallyEntry::new(Tally::default(), VersionVector::default()));
        t.insert(b"b", TallyEntry::new(Tally::default(), VersionVector::default()));
        for i in 0..(TALLY_CHANGES + 10) {
            t.apply(b"a", change(i as u8));
        }
        assert_eq!(t.get(b"a").unwrap().recent().len(), TALLY_CHANGES);
        assert_eq!(t.changes, TALLY_CHANGES);
        t.apply(b"b", change(1));
        t.apply(b"missing", change(1));
        assert_eq!(t.changes, TALLY_CHANGES + 1);
        t.forget_changes(b"a");
        assert_eq!((t.changes, t.get(b"a").unwrap().recent().len()), (1, 0));
        t.remove(b"b");
        assert_eq!(t.changes, 0);
        // Past the budget every key's changes go, and the tallies stay.
        for key in 0..(MAX_CHANGES / TALLY_CHANGES + 1) {
            let key = key.to_be_bytes();
            t.insert(&key, TallyEntry::new(Tally::default(), VersionVector::default()));
            (0..TALLY_CHANGES).for_each(|i| t.apply(&key, change(i as u8)));
        }
        assert!(t.changes <= MAX_CHANGES);
        assert_eq!(t.get(&0usize.to_be_bytes()).unwrap().recent().len(), 0);
        assert_eq!(t.keys.len(), MAX_CHANGES / TALLY_CHANGES + 2);
    }
}
