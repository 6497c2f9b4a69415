//! The tallies a replica keeps of collections whose count was asked ([`crate::crdt::rows::Tally`]), each with its
//! latest changes, within bounds: at most [`MAX_TALLIES`] keys (past it every tally is counted again when next
//! asked), [`TALLY_CHANGES`] changes per key, and [`MAX_CHANGES`] changes in all (past it every key's changes are
//! dropped, and the hot keys note theirs again). The store keeps each entry in step with its rows under the key's
//! lock (`KvStore::tally`).
//!
//! A sorted set whose order was read (ZRANGE, ZRANK, ZCOUNT) also keeps its members in score order
//! ([`ScoreOrder`]), within [`MAX_ORDERED`] members over every key: past it the other orders are dropped, and a set
//! larger than it alone keeps none (its reads read every member).

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::crdt::rows::{Tally, TallyChange};
use crate::crdt::zorder::{Order, ScoreOrder};
use crate::versioning::VersionVector;

/// Collections whose tally is kept.
pub const MAX_TALLIES: usize = 100_000;
/// How many of its latest changes a tally keeps: enough to span the writes one replica has applied and another not
/// yet, under a stream of writes to the key on a busy node (32 fell short on a 2-core machine running three nodes
/// and redis-benchmark).
pub const TALLY_CHANGES: usize = 256;
/// Changes kept over every tally (about 100 bytes each).
pub const MAX_CHANGES: usize = 1 << 16;
/// Sorted-set members kept in score order over every key (about 100 bytes each, plus the member).
pub const MAX_ORDERED: usize = 1 << 19;

/// A collection's tally as a replica keeps it.
pub struct TallyEntry {
    /// The tally.
    pub tally: Tally,
    /// The key row's cleared element writes it was counted under.
    pub cleared: VersionVector,
    /// Its latest changes, oldest first.
    recent: VecDeque<TallyChange>,
    /// Its sorted-set members in score order, if kept.
    order: Option<ScoreOrder>,
}

impl TallyEntry {
    /// A tally just counted, with no changes yet.
    pub fn new(tally: Tally, cleared: VersionVector) -> Self {
        Self { tally, cleared, recent: VecDeque::new(), order: None }
    }

    /// Its sorted-set members in score order, if kept.
    pub fn order(&self) -> Option<&ScoreOrder> {
        self.order.as_ref()
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
    /// Members kept in score order over every entry.
    ordered: usize,
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
            self.ordered -= entry.order.map_or(0, |o| o.len());
        }
    }

    /// Drops every tally.
    pub fn clear(&mut self) {
        self.keys.clear();
        self.changes = 0;
        self.ordered = 0;
    }

    /// Keeps `order` as the score order of `user_key`'s tally (kept): false, and not kept, when it alone passes
    /// [`MAX_ORDERED`]; every other order is dropped first when together they would.
    pub fn keep_order(&mut self, user_key: &[u8], order: ScoreOrder) -> bool {
        let n = order.len();
        if n > MAX_ORDERED || !self.keys.contains_key(user_key) {
            return false;
        }
        if self.ordered + n > MAX_ORDERED {
            self.keys.values_mut().for_each(|e| e.order = None);
            self.ordered = 0;
        }
        let entry = self.keys.get_mut(user_key).expect("checked above");
        self.ordered += n;
        self.ordered -= entry.order.replace(order).map_or(0, |o| o.len());
        true
    }

    /// Sets `member`'s score (`None`: no member) in the score order of `user_key`, if it keeps one; an order that
    /// grows past [`MAX_ORDERED`] is dropped.
    pub fn reorder(&mut self, user_key: &[u8], member: &[u8], score: Option<f64>) {
        let Some(order) = self.keys.get_mut(user_key).and_then(|e| e.order.as_mut()) else { return };
        let before = order.len();
        order.set(member, score);
        self.ordered = self.ordered + order.len() - before;
        if self.ordered > MAX_ORDERED {
            self.ordered -= order.len();
            self.keys.get_mut(user_key).expect("found above").order = None;
        }
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

    fn order(from: usize, n: usize) -> ScoreOrder {
        let mut o = ScoreOrder::default();
        (from..from + n).for_each(|i| o.set(&i.to_be_bytes(), Some(i as f64)));
        o
    }

    /// Members kept in score order stay within their bound, and the count of them stays true as orders are kept,
    /// grow, shrink and go with their tallies.
    #[test]
    fn orders_stay_within_their_bound() {
        let mut t = Tallies::default();
        assert!(!t.keep_order(b"untallied", order(0, 1)), "no order without its tally");
        t.insert(b"a", TallyEntry::new(Tally::default(), VersionVector::default()));
        t.insert(b"b", TallyEntry::new(Tally::default(), VersionVector::default()));
        assert!(!t.keep_order(b"a", order(0, MAX_ORDERED + 1)), "too large alone");
        assert!(t.keep_order(b"a", order(0, MAX_ORDERED - 10)));
        t.reorder(b"a", &1usize.to_be_bytes(), None);
        t.reorder(b"a", b"new", Some(0.5));
        t.reorder(b"b", b"unordered", Some(1.0));
        assert_eq!(t.ordered, MAX_ORDERED - 10);
        // Another order that does not fit beside it drops it.
        assert!(t.keep_order(b"b", order(0, 20)));
        assert!(t.get(b"a").unwrap().order().is_none());
        assert_eq!(t.ordered, 20);
        // An order growing past the bound is dropped.
        assert!(t.keep_order(b"b", order(0, MAX_ORDERED)));
        t.reorder(b"b", b"one more", Some(2.0));
        assert!(t.get(b"b").unwrap().order().is_none());
        assert_eq!(t.ordered, 0);
        assert!(t.keep_order(b"a", order(0, 5)));
        t.remove(b"a");
        assert_eq!(t.ordered, 0);
    }
}
