//! Actors, dots and version vectors: the vocabulary of causality.
//!
//! A *dot* `(actor, counter)` names one write event. A *version vector* maps each actor to the highest counter
//! whose fate this replica has accounted for: the dot is either held as a live version or known to be superseded.
//! Counters of one actor grow monotonically across all keys (a node-wide sequence), so the dots of an actor on one
//! key are increasing but not contiguous; "covers" only ever compares counters, never enumerates them.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch by this node's wall clock: version timestamps and deadlines.
pub fn now_ms() -> u64 {
    crate::sys::now_ms()
}

/// The writer identity stamped into dots: derived from a node id and the epoch of its data directory, so a node
/// whose disk was wiped (or that crashed and may have lost its last writes) never reissues an old dot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Actor(pub u64);

impl Actor {
    /// The actor of `node_id` in data-directory `epoch`: the first 8 bytes of MD5(node_id ‖ 0 ‖ epoch).
    pub fn derive(node_id: &str, epoch: u64) -> Actor {
        let mut input = Vec::with_capacity(node_id.len() + 9);
        input.extend_from_slice(node_id.as_bytes());
        input.push(0);
        input.extend_from_slice(&epoch.to_be_bytes());
        let digest = md5::compute(&input).0;
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Actor(u64::from_be_bytes(first))
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One write event: the actor that coordinated it and that actor's counter at the time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// Who stamped the write.
    pub actor: Actor,
    /// The actor's node-wide sequence number for this write (≥ 1).
    pub counter: u64,
}

/// One entry of a version vector. The timestamp (milliseconds since the Unix epoch) records when the entry last
/// advanced; it only decides which entry to prune first (paper §4.4), never causality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The actor this entry counts for.
    pub actor: Actor,
    /// Highest counter of `actor` accounted for.
    pub counter: u64,
    /// When the counter last advanced, in ms since the Unix epoch.
    pub timestamp_ms: u64,
}

/// A version vector, kept sorted by actor so merges are linear and the encoding is canonical.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector {
    entries: Vec<Entry>,
}

impl VersionVector {
    /// The empty vector: covers nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a vector from entries in any order; duplicate actors keep their maximum.
    pub fn from_entries(entries: impl IntoIterator<Item = Entry>) -> Self {
        let mut vv = Self::new();
        for e in entries {
            vv.advance(e.actor, e.counter, e.timestamp_ms);
        }
        vv
    }

    /// The entries, sorted by actor.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Number of actors in the vector.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the vector covers nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counter recorded for `actor` (0 when absent).
    pub fn get(&self, actor: Actor) -> u64 {
        match self.entries.binary_search_by_key(&actor, |e| e.actor) {
            Ok(i) => self.entries[i].counter,
            Err(_) => 0,
        }
    }

    /// True when the dot's fate is accounted for by this vector.
    pub fn covers(&self, dot: Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// Raises `actor`'s entry to at least `counter` and its timestamp to at least `timestamp_ms`.
    pub fn advance(&mut self, actor: Actor, counter: u64, timestamp_ms: u64) {
        match self.entries.binary_search_by_key(&actor, |e| e.actor) {
            Ok(i) => {
                // Both fields take their maximum independently, which keeps merge commutative.
                let e = &mut self.entries[i];
                e.counter = e.counter.max(counter);
                e.timestamp_ms = e.timestamp_ms.max(timestamp_ms);
            }
            Err(i) => self.entries.insert(i, Entry { actor, counter, timestamp_ms }),
        }
    }

    /// Pointwise maximum (the join of the lattice): commutative, associative, idempotent.
    pub fn merge(&mut self, other: &VersionVector) {
        for e in &other.entries {
            self.advance(e.actor, e.counter, e.timestamp_ms);
        }
    }

    /// True when every event `other` accounts for is accounted for here too.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.entries.iter().all(|e| self.get(e.actor) >= e.counter)
    }

    /// True when neither vector descends the other.
    pub fn concurrent_with(&self, other: &VersionVector) -> bool {
        !self.descends(other) && !other.descends(self)
    }

    /// Drops the oldest entries until at most `max` remain, never an entry `keep` protects (actors of versions still
    /// held, whose dots must stay covered). Returns how many entries were dropped.
    ///
    /// Pruning can only make a superseded version reappear as a false sibling, never hide a live one: a dropped
    /// entry covers less, not more.
    pub fn prune(&mut self, max: usize, keep: impl Fn(Actor) -> bool) -> usize {
        let mut dropped = 0;
        while self.entries.len() > max {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| !keep(e.actor))
                .min_by_key(|(_, e)| (e.timestamp_ms, e.actor))
                .map(|(i, _)| i);
            match oldest {
                Some(i) => {
                    self.entries.remove(i);
                    dropped += 1;
                }
                None => break,
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vv(pairs: &[(u64, u64)]) -> VersionVector {
        VersionVector::from_entries(pairs.iter().map(|&(a, c)| Entry { actor: Actor(a), counter: c, timestamp_ms: c }))
    }

    #[test]
    fn covers_and_descends() {
        let a = vv(&[(1, 3), (2, 1)]);
        let b = vv(&[(1, 2)]);
        assert!(a.covers(Dot { actor: Actor(1), counter: 3 }));
        assert!(!a.covers(Dot { actor: Actor(1), counter: 4 }));
        assert!(!a.covers(Dot { actor: Actor(9), counter: 1 }));
        assert!(a.descends(&b));
        assert!(!b.descends(&a));
        assert!(a.descends(&VersionVector::new()));
        let c = vv(&[(3, 1)]);
        assert!(a.concurrent_with(&c));
    }

    #[test]
    fn prune_drops_oldest_unprotected() {
        let mut v = vv(&[(1, 5), (2, 1), (3, 9), (4, 2)]);
        let dropped = v.prune(2, |a| a == Actor(2));
        assert_eq!(dropped, 2);
        // Actor 2 is the oldest but protected; actors 4 (ts 2) and 1 (ts 5) go.
        assert_eq!(v.get(Actor(2)), 1);
        assert_eq!(v.get(Actor(3)), 9);
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn actor_depends_on_epoch() {
        assert_ne!(Actor::derive("n1", 1), Actor::derive("n1", 2));
        assert_eq!(Actor::derive("n1", 1), Actor::derive("n1", 1));
        assert_ne!(Actor::derive("n1", 1), Actor::derive("n2", 1));
    }

    fn arb_vv() -> impl Strategy<Value = VersionVector> {
        proptest::collection::vec((0u64..6, 0u64..20), 0..6).prop_map(|p| vv(&p))
    }

    proptest! {
        #[test]
        fn merge_laws(a in arb_vv(), b in arb_vv(), c in arb_vv()) {
            let mut ab = a.clone(); ab.merge(&b);
            let mut ba = b.clone(); ba.merge(&a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(&c);
            let mut bc = b.clone(); bc.merge(&c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = a.clone(); aa.merge(&a);
            prop_assert_eq!(&aa, &a);
            prop_assert!(ab.descends(&a) && ab.descends(&b));
        }
    }
}
