//! The versioned state of one key: a causal context plus the dotted versions not yet superseded.
//!
//! This is the "dotted version vector set" model (Preguiça et al. 2012; Riak 2.0's DVVSet), kept in its explicit
//! form: `context` is a version vector over every dot whose fate this replica knows, and `versions` are the
//! concurrent values that survive, each tagged with the dot that created it. Invariant: every held version's dot is
//! covered by `context`.
//!
//! * A write with client context `C` removes exactly the versions whose dots `C` covers and adds the new value with
//!   a fresh dot from the coordinator. Two clients writing with the same `C` through the same coordinator therefore
//!   end as two siblings; a plain vector clock would let the second overwrite the first silently.
//! * Replicas merge whole states: a version survives unless the other side's context covers its dot and the other
//!   side no longer holds it (then the other side saw it superseded). The merge is commutative, associative and
//!   idempotent, so anti-entropy, read repair and hinted handoff can apply states in any order, any number of times.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::clock::{Actor, Dot, VersionVector};

/// What a version holds: the value of one write, typed by the kind of key it was written to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// A string's bytes (SET): concurrent ones are siblings.
    String(Bytes),
    /// A counter's entry (INCR): the running total of every increment its actor coordinated. A counter key holds at
    /// most one entry per actor (each increment supersedes its actor's previous entry), and its value is the sum of
    /// the entries: a PN-counter whose per-actor slots are dotted, so a DELETE removes exactly the entries it saw.
    /// 128 bits: the key's value is checked against 64 bits, but one actor's share of it may go beyond (a base
    /// near the minimum plus increments near the maximum).
    Counter(i128),
    /// A counter's base: the integer a string held when an INCR made it a counter. The newest base counts, once.
    CounterBase(i64),
    /// A set's member (SADD): the set is the members of its live versions (an add-wins observed-remove set: a
    /// remove drops the versions it saw, and an add it did not see survives it).
    Member(Bytes),
    /// A hash field's value (HSET): concurrent values of one field resolve by last writer (coordinator clock,
    /// ties by dot).
    Field {
        /// The field.
        field: Bytes,
        /// Its value.
        value: Bytes,
    },
    /// A list's item (LPUSH, RPUSH): the list is its items ordered by rank, then dot. A push to the head takes a
    /// rank below the lowest its coordinator holds, a push to the tail one above the highest, so concurrent pushes
    /// through different nodes all land, in an order every replica agrees on.
    Item {
        /// Position in the list.
        rank: i64,
        /// The element.
        value: Bytes,
    },
    /// A sorted set's member with the score ZADD gave it (IEEE 754 bits): concurrent scores of one member resolve
    /// by last writer.
    Scored {
        /// The member.
        member: Bytes,
        /// Its score, as `f64::to_bits`.
        score: u64,
    },
    /// A sorted set member's score base (ZINCRBY of a member with a ZADD score), as [`Value::CounterBase`].
    ScoreBase {
        /// The member.
        member: Bytes,
        /// The score it had, as `f64::to_bits`.
        base: u64,
    },
    /// A sorted set member's per-actor running total of ZINCRBY increments, as [`Value::Counter`].
    ScoreIncr {
        /// The member.
        member: Bytes,
        /// The actor's total, as `f64::to_bits`.
        total: u64,
    },
    /// A hash field's counter base (HINCRBY of a field holding an integer): as [`Value::CounterBase`], per field.
    FieldBase {
        /// The field.
        field: Bytes,
        /// The integer the field held.
        base: i64,
    },
    /// A hash field's counter entry (HINCRBY): as [`Value::Counter`], per field.
    FieldCounter {
        /// The field.
        field: Bytes,
        /// The actor's running total for it (128 bits, as [`Value::Counter`]).
        total: i128,
    },
    /// The header of a collection kept as a row per element (sets, hashes, sorted sets): held in the key's own row, it says
    /// what kind of collection the key is and carries its deadline. Every write of an element writes a fresh header
    /// (superseding the ones it saw), so a delete that did not see that write cannot take the key away from under
    /// it (see `crdt::rows`).
    Header(RowKind),
}

/// The kinds of collection kept as a row per element (the `Value::Header` of their key row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RowKind {
    /// A set: a row per member.
    Set,
    /// A hash: a row per field.
    Hash,
    /// A sorted set: a row per member.
    ZSet,
    /// A list: a row per item, ordered by (rank, dot).
    List,
}

impl Value {
    /// The string's bytes, or `None` for another kind.
    pub fn as_string(&self) -> Option<&Bytes> {
        match self {
            Value::String(b) => Some(b),
            _ => None,
        }
    }

    /// Bytes the value takes (a counter entry: 8).
    pub fn len(&self) -> usize {
        match self {
            Value::String(b) | Value::Member(b) => b.len(),
            Value::Counter(_) | Value::CounterBase(_) => 8,
            Value::Field { field, value } => field.len() + value.len(),
            Value::FieldCounter { field, .. } | Value::FieldBase { field, .. } => field.len() + 8,
            Value::Item { value, .. } => value.len() + 8,
            Value::Scored { member, .. } | Value::ScoreBase { member, .. } | Value::ScoreIncr { member, .. } => {
                member.len() + 8
            }
            Value::Header(_) => 1,
        }
    }

    /// True for an empty string.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One surviving version of a key: a value or a tombstone, and the dot of the write that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The write event that created this version.
    pub dot: Dot,
    /// When the coordinator accepted the write, in ms since the Unix epoch (informational, for tombstone reaping,
    /// and to pick which kind of value a key holds when writes of two kinds were concurrent; never used to decide
    /// which versions supersede which).
    pub timestamp_ms: u64,
    /// The value, or `None` for a tombstone (a versioned delete).
    pub value: Option<Value>,
    /// When the value expires (a key's TTL lives in its versions): set when the version is written (SET EX, a
    /// typed write to a key with a TTL), and changed in place by EXPIRE and PERSIST (see [`Expiry`]).
    pub expiry: Expiry,
}

/// A version's deadline, as a last-writer-wins register: EXPIRE and PERSIST change the deadline of versions
/// already written, so two replicas may hold one dot with different deadlines; the one set last (by its
/// coordinator's clock, then actor, then the deadline itself) wins everywhere. The default (never set) loses to
/// any setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Expiry {
    /// When it was set: the setting write's timestamp, ms since the Unix epoch ([`Siblings::causal_timestamp`]).
    pub set_ms: u64,
    /// The coordinator that set it.
    pub set_by: Actor,
    /// The deadline in ms since the Unix epoch; `None`: the version never expires.
    pub at_ms: Option<u64>,
}

impl Expiry {
    /// A deadline (or none) set at `set_ms` by `set_by`.
    pub fn new(at_ms: Option<u64>, set_ms: u64, set_by: Actor) -> Self {
        Expiry { set_ms, set_by, at_ms }
    }
}

impl Version {
    /// True for a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// True for a value whose deadline has passed at `now_ms`: it reads as absent, like a tombstone.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.value.is_some() && self.expiry.at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Since when this version has been dead at `now_ms` (a tombstone: since its write; an expired value: since
    /// its deadline), or `None` while it is a live value.
    pub fn dead_since(&self, now_ms: u64) -> Option<u64> {
        match (&self.value, self.expiry.at_ms) {
            (None, _) => Some(self.timestamp_ms),
            (Some(_), Some(at)) if at <= now_ms => Some(at),
            (Some(_), _) => None,
        }
    }
}

/// The full versioned state of a key (or of one row of a collection) on one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Siblings {
    context: VersionVector,
    versions: Vec<Version>,
    /// In a collection's key row: the element writes cleared by a delete, an overwrite or an expiry of the whole
    /// collection (every element version whose dot this covers is gone). A join like the context (entrywise max);
    /// empty in every other row. See `crdt::rows`.
    cleared: VersionVector,
}

impl Siblings {
    /// The state of a key never written: empty context, no versions.
    pub fn new() -> Self {
        Self::default()
    }

    /// The causal context: every dot accounted for.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    /// The context, taken from a set that is done with.
    pub fn into_context(self) -> VersionVector {
        self.context
    }

    /// The surviving versions (values and tombstones), sorted by dot.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The same context (and cleared writes) with other versions, sorted by dot: one row's share of a state split
    /// into rows (an upgrade of a collection kept in one row).
    pub fn with_versions(&self, mut versions: Vec<Version>) -> Siblings {
        versions.sort_by_key(|v| v.dot);
        Siblings { context: self.context.clone(), versions, cleared: self.cleared.clone() }
    }

    /// The element writes a whole-collection removal cleared (key rows of collections kept as rows).
    pub fn cleared(&self) -> &VersionVector {
        &self.cleared
    }

    /// Clears every element write this key row has seen: each element write advances the key row's context (it
    /// writes a fresh header), so the context covers exactly the elements the removal saw.
    pub fn clear_elements(&mut self) {
        self.cleared.merge(&self.context);
    }

    /// Clears the element writes `seen` covers (what a removal's read saw of this key row's context).
    pub fn clear_seen(&mut self, seen: &VersionVector) {
        self.cleared.merge(seen);
    }

    /// The string values of the live (non-tombstone) versions, in dot order.
    pub fn live_values(&self) -> impl Iterator<Item = &Bytes> {
        self.versions.iter().filter_map(|v| v.value.as_ref().and_then(Value::as_string))
    }

    /// The live version whose write its coordinator accepted last (wall clock, ties broken by dot): the same pick
    /// on every replica that holds the same versions. Plain-mode reads and the choice between two kinds of value
    /// use it; causality never does.
    pub fn newest_live_version(&self) -> Option<&Version> {
        self.versions.iter().filter(|v| v.value.is_some()).max_by_key(|v| (v.timestamp_ms, v.dot))
    }

    /// The newest live string value (see [`Siblings::newest_live_version`]).
    pub fn newest_live(&self) -> Option<&Bytes> {
        self.versions
            .iter()
            .filter(|v| v.value.as_ref().is_some_and(|v| v.as_string().is_some()))
            .max_by_key(|v| (v.timestamp_ms, v.dot))
            .and_then(|v| v.value.as_ref().and_then(Value::as_string))
    }

    /// The same versions with every string value emptied: what a key scan needs to merge replicas' states and tell
    /// live keys from deleted ones, without carrying the values.
    pub fn without_values(&self) -> Siblings {
        let empty = |v: &Value| match v {
            Value::String(_) => Value::String(Bytes::new()),
            Value::Member(_) => Value::Member(Bytes::new()),
            Value::Field { .. } => Value::Field { field: Bytes::new(), value: Bytes::new() },
            Value::FieldCounter { total, .. } => Value::FieldCounter { field: Bytes::new(), total: *total },
            Value::FieldBase { base, .. } => Value::FieldBase { field: Bytes::new(), base: *base },
            Value::Item { rank, .. } => Value::Item { rank: *rank, value: Bytes::new() },
            Value::Scored { score, .. } => Value::Scored { member: Bytes::new(), score: *score },
            Value::ScoreBase { base, .. } => Value::ScoreBase { member: Bytes::new(), base: *base },
            Value::ScoreIncr { total, .. } => Value::ScoreIncr { member: Bytes::new(), total: *total },
            Value::Counter(n) => Value::Counter(*n),
            Value::CounterBase(n) => Value::CounterBase(*n),
            Value::Header(k) => Value::Header(*k),
        };
        Siblings {
            context: self.context.clone(),
            cleared: self.cleared.clone(),
            versions: self
                .versions
                .iter()
                .map(|v| Version { value: v.value.as_ref().map(empty), ..v.clone() })
                .collect(),
        }
    }

    /// True when at least one version holds a value (expired or not: see [`Siblings::is_live_at`]).
    pub fn has_live_value(&self) -> bool {
        self.versions.iter().any(|v| v.value.is_some())
    }

    /// True when at least one version holds a value that has not expired at `now_ms`.
    pub fn is_live_at(&self, now_ms: u64) -> bool {
        self.versions.iter().any(|v| v.value.is_some() && !v.is_expired(now_ms))
    }

    /// Applies a write coordinated by `dot.actor`: every version whose dot `covered` covers is superseded, and the
    /// new value (or tombstone) is added under `dot`. `covered` is the client's context, or this state's own context
    /// for a blind write. The caller guarantees `dot` is fresh: greater than any counter `dot.actor` issued before.
    pub fn update(&mut self, covered: &VersionVector, dot: Dot, timestamp_ms: u64, value: Option<Bytes>) {
        self.update_value(covered, dot, timestamp_ms, value.map(Value::String));
    }

    /// The timestamp for a write to this state by a clock reading `now_ms`: `now_ms`, or 1 ms past the newest
    /// timestamp the state holds (any write its context covers, any deadline set) when that is later. A hybrid
    /// logical clock per key: physical time while the clocks agree, and a write always orders after every write it
    /// read, whatever its coordinator's clock says, so last-writer-wins never lets an older write win over one
    /// that saw it. Under more than one write per ms to one key, timestamps run ahead of the wall clock until the
    /// writes slow down; they only order writes of that key (and date its removal for reaping, later).
    pub fn causal_timestamp(&self, now_ms: u64) -> u64 {
        let written = self.context.entries().iter().map(|e| e.timestamp_ms);
        let deadlines_set = self.versions.iter().map(|v| v.expiry.set_ms);
        written.chain(deadlines_set).max().map_or(now_ms, |newest| now_ms.max(newest.saturating_add(1)))
    }

    /// [`Siblings::update`] with a value of any kind.
    pub fn update_value(&mut self, covered: &VersionVector, dot: Dot, timestamp_ms: u64, value: Option<Value>) {
        debug_assert!(!self.context.covers(dot), "dot {dot:?} reused");
        self.versions.retain(|v| !covered.covers(v.dot));
        self.context.merge(covered);
        self.context.advance(dot.actor, dot.counter, timestamp_ms);
        let at = self.versions.partition_point(|v| v.dot < dot);
        self.versions.insert(at, Version { dot, timestamp_ms, value, expiry: Expiry::default() });
    }

    /// Sets the deadline of the versions `pick` selects (see [`Expiry`]); returns how many it set.
    pub fn set_expiry(&mut self, pick: impl Fn(&Version) -> bool, expiry: Expiry) -> usize {
        let mut n = 0;
        for v in self.versions.iter_mut().filter(|v| pick(v)) {
            v.expiry = expiry;
            n += 1;
        }
        n
    }

    /// Drops the values whose deadline has passed at `now_ms` (their dots stay covered, as after a delete);
    /// returns how many. What a read shows, and what a write starts from.
    pub fn drop_expired(&mut self, now_ms: u64) -> usize {
        self.remove_versions(|v| v.is_expired(now_ms))
    }

    /// The key's deadline at `now_ms`, over its live values: `None` when it has none, `Some(None)` when one of
    /// them never expires, else the last deadline (the key is gone when every value is).
    pub fn deadline(&self, now_ms: u64) -> Option<Option<u64>> {
        self.versions.iter().filter(|v| v.value.is_some() && !v.is_expired(now_ms)).fold(None, |acc, v| {
            match (acc, v.expiry.at_ms) {
                (Some(None), _) | (_, None) => Some(None),
                (None, Some(at)) => Some(Some(at)),
                (Some(Some(a)), Some(b)) => Some(Some(a.max(b))),
            }
        })
    }

    /// Since when every version has been dead at `now_ms` (tombstones and expired values; see
    /// [`Version::dead_since`]), or `None` while one is live. A state left with no version at all (its expired
    /// values dropped) is dead since its context last advanced: the last write that superseded anything.
    pub fn dead_since(&self, now_ms: u64) -> Option<u64> {
        if self.versions.is_empty() {
            return self.context.entries().iter().map(|e| e.timestamp_ms).max();
        }
        self.versions.iter().try_fold(None, |acc: Option<u64>, v| {
            let since = v.dead_since(now_ms)?;
            Some(Some(acc.map_or(since, |a| a.max(since))))
        })?
    }

    /// Drops the versions `remove` picks, each exactly (unlike a covering context, which drops every earlier dot of
    /// an actor). The context still covers them, so a merge drops them from replicas that hold them.
    pub fn remove_versions(&mut self, remove: impl Fn(&Version) -> bool) -> usize {
        let before = self.versions.len();
        self.versions.retain(|v| !remove(v));
        before - self.versions.len()
    }

    /// Merges another replica's state of the same key into this one (the join of the two states).
    pub fn merge(&mut self, other: &Siblings) {
        let mut merged = Vec::with_capacity(self.versions.len().max(other.versions.len()));
        let (mut i, mut j) = (0, 0);
        // Both lists are sorted by dot, and a dot names one write, so equal dots hold equal versions.
        while i < self.versions.len() || j < other.versions.len() {
            let mine = self.versions.get(i);
            let theirs = other.versions.get(j);
            match (mine, theirs) {
                (Some(a), Some(b)) if a.dot == b.dot => {
                    // The same write; only its deadline may differ (EXPIRE, PERSIST): the later setting wins.
                    merged.push(if b.expiry > a.expiry { b.clone() } else { a.clone() });
                    i += 1;
                    j += 1;
                }
                (Some(a), b) if b.is_none_or(|b| a.dot < b.dot) => {
                    if !other.context.covers(a.dot) {
                        merged.push(a.clone());
                    }
                    i += 1;
                }
                (_, Some(b)) => {
                    // The simulator's planted bug (tests/sim.rs): a replica that holds a version the other side has
                    // not seen drops the other side's new versions, as a last-writer-wins store would.
                    #[cfg(feature = "sim")]
                    if crate::sys::sim::merge_bug_planted()
                        && self.versions.iter().any(|a| !a.is_tombstone() && !other.context.covers(a.dot))
                    {
                        j += 1;
                        continue;
                    }
                    if !self.context.covers(b.dot) {
                        merged.push(b.clone());
                    }
                    j += 1;
                }
                (Some(_), None) | (None, None) => {
                    unreachable!("guarded by the loop condition and arms above")
                }
            }
        }
        self.versions = merged;
        self.context.merge(&other.context);
        self.cleared.merge(&other.cleared);
    }

    /// Keeps the causal context within `max_entries` actors by dropping the oldest entries of actors that hold no
    /// version (paper §4.4's clock truncation). Returns how many entries were dropped.
    pub fn prune_context(&mut self, max_entries: usize) -> usize {
        let versions = &self.versions;
        self.context.prune(max_entries, |actor: Actor| versions.iter().any(|v| v.dot.actor == actor))
    }

    /// Number of surviving versions, tombstones included.
    pub fn sibling_count(&self) -> usize {
        self.versions.len()
    }
}

/// The stored form of a sibling set before versions were typed (value format 1: every value a string). Read only
/// to upgrade a data directory written by an older build.
#[derive(Deserialize)]
pub struct LegacySiblings {
    context: VersionVector,
    versions: Vec<LegacyVersion>,
}

#[derive(Deserialize)]
struct LegacyVersion {
    dot: Dot,
    timestamp_ms: u64,
    value: Option<Bytes>,
}

impl From<LegacySiblings> for Siblings {
    fn from(old: LegacySiblings) -> Self {
        Siblings {
            context: old.context,
            versions: old
                .versions
                .into_iter()
                .map(|v| Version {
                    dot: v.dot,
                    timestamp_ms: v.timestamp_ms,
                    value: v.value.map(Value::String),
                    expiry: Expiry::default(),
                })
                .collect(),
            cleared: VersionVector::new(),
        }
    }
}

/// The stored form of a sibling set before versions carried deadlines (value format 2). Read only to upgrade a
/// data directory written by an older build.
#[derive(Deserialize)]
pub struct Format2Siblings {
    context: VersionVector,
    versions: Vec<Format2Version>,
}

#[derive(Deserialize)]
struct Format2Version {
    dot: Dot,
    timestamp_ms: u64,
    value: Option<Value>,
}

impl From<Format2Siblings> for Siblings {
    fn from(old: Format2Siblings) -> Self {
        Siblings {
            context: old.context,
            versions: old
                .versions
                .into_iter()
                .map(|v| Version {
                    dot: v.dot,
                    timestamp_ms: v.timestamp_ms,
                    value: v.value,
                    expiry: Expiry::default(),
                })
                .collect(),
            cleared: VersionVector::new(),
        }
    }
}

/// The stored form of a sibling set before key rows carried their cleared element writes (value format 3). Read
/// only to upgrade a data directory written by an older build.
#[derive(Deserialize)]
pub struct Format3Siblings {
    context: VersionVector,
    versions: Vec<Version>,
}

impl From<Format3Siblings> for Siblings {
    fn from(old: Format3Siblings) -> Self {
        Siblings { context: old.context, versions: old.versions, cleared: VersionVector::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const A: Actor = Actor(1);
    const B: Actor = Actor(2);

    fn dot(actor: Actor, counter: u64) -> Dot {
        Dot { actor, counter }
    }

    fn values(s: &Siblings) -> Vec<&[u8]> {
        s.live_values().map(|b| b.as_ref()).collect()
    }

    /// The case a plain vector clock gets wrong: two clients read the same context and write through the same
    /// coordinator. Both values must survive as siblings.
    #[test]
    fn concurrent_writes_through_one_coordinator_become_siblings() {
        let mut s = Siblings::new();
        s.update(&VersionVector::new(), dot(A, 1), 1, Some(Bytes::from_static(b"v0")));
        let read_ctx = s.context().clone();
        s.update(&read_ctx, dot(A, 2), 2, Some(Bytes::from_static(b"x")));
        s.update(&read_ctx, dot(A, 3), 3, Some(Bytes::from_static(b"y")));
        assert_eq!(values(&s), vec![b"x".as_ref(), b"y".as_ref()]);
        // A write whose context covers both collapses them.
        let ctx = s.context().clone();
        s.update(&ctx, dot(A, 4), 4, Some(Bytes::from_static(b"xy")));
        assert_eq!(values(&s), vec![b"xy".as_ref()]);
    }

    #[test]
    fn tombstone_can_be_a_sibling_of_a_value() {
        let mut s = Siblings::new();
        s.update(&VersionVector::new(), dot(A, 1), 1, Some(Bytes::from_static(b"v")));
        let ctx = s.context().clone();
        s.update(&ctx, dot(A, 2), 2, None);
        s.update(&ctx, dot(A, 3), 3, Some(Bytes::from_static(b"w")));
        assert_eq!(s.sibling_count(), 2);
        assert_eq!(values(&s), vec![b"w".as_ref()]);
        assert!(s.versions()[0].is_tombstone());
    }

    #[test]
    fn newest_live_is_the_latest_accepted_value_and_ignores_tombstones() {
        let mut s = Siblings::new();
        assert_eq!(s.newest_live(), None);
        let empty = VersionVector::new();
        // B's write carries the later timestamp although A's dot sorts after it.
        s.update(&empty, dot(B, 1), 20, Some(Bytes::from_static(b"b")));
        s.update(&empty, dot(A, 7), 10, Some(Bytes::from_static(b"a")));
        assert_eq!(s.newest_live().map(|b| b.as_ref()), Some(b"b".as_ref()));
        // A later tombstone is not a value; equal timestamps fall back to the dot, so every replica agrees.
        s.update(&empty, dot(A, 8), 30, None);
        s.update(&empty, dot(A, 9), 20, Some(Bytes::from_static(b"a9")));
        assert_eq!(s.newest_live().map(|b| b.as_ref()), Some(b"b".as_ref()));
        s.update(&empty, dot(B, 2), 20, Some(Bytes::from_static(b"b2")));
        assert_eq!(s.newest_live().map(|b| b.as_ref()), Some(b"b2".as_ref()));
    }

    #[test]
    fn merge_keeps_concurrent_and_drops_superseded() {
        let mut r1 = Siblings::new();
        r1.update(&VersionVector::new(), dot(A, 1), 1, Some(Bytes::from_static(b"a1")));
        let mut r2 = r1.clone();
        // r2 supersedes a1 with b1; r1 concurrently writes a2 blind-but-unaware of b1.
        let ctx = r2.context().clone();
        r2.update(&ctx, dot(B, 1), 2, Some(Bytes::from_static(b"b1")));
        let ctx = r1.context().clone();
        r1.update(&ctx, dot(A, 2), 3, Some(Bytes::from_static(b"a2")));
        let mut m = r1.clone();
        m.merge(&r2);
        assert_eq!(values(&m), vec![b"a2".as_ref(), b"b1".as_ref()]);
    }

    #[test]
    fn prune_keeps_actors_of_live_versions() {
        let mut s = Siblings::new();
        for i in 0..15u64 {
            let ctx = s.context().clone();
            s.update(&ctx, dot(Actor(100 + i), 1), i, Some(Bytes::from(vec![i as u8])));
        }
        assert_eq!(s.context().len(), 15);
        assert_eq!(s.prune_context(10), 5);
        assert_eq!(s.context().len(), 10);
        let live = s.versions()[0].dot;
        assert!(s.context().covers(live));
    }

    /// One step of a random history across three replicas.
    #[derive(Clone, Debug)]
    enum Op {
        /// A client reads the replicas in the mask, then writes through `coord` with the merged context
        /// (or blind, when `blind`).
        Write { coord: usize, read_mask: u8, blind: bool, delete: bool },
        /// Replica `from` sends its state to `to` (replication, read repair, anti-entropy, handoff).
        Sync { from: usize, to: usize },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..3, 0u8..8, any::<bool>(), proptest::bool::weighted(0.15))
                .prop_map(|(coord, read_mask, blind, delete)| Op::Write { coord, read_mask, blind, delete }),
            (0usize..3, 0usize..3).prop_map(|(from, to)| Op::Sync { from, to }),
        ]
    }

    /// Runs a history and returns the replica states plus, for every write, its dot and the context it
    /// superseded.
    fn run(ops: &[Op]) -> (Vec<Siblings>, Vec<(Dot, VersionVector)>) {
        let actors = [Actor(11), Actor(22), Actor(33)];
        let mut counters = [0u64; 3];
        let mut replicas = vec![Siblings::new(); 3];
        let mut writes = Vec::new();
        for (t, op) in ops.iter().enumerate() {
            match *op {
                Op::Write { coord, read_mask, blind, delete } => {
                    let covered = if blind {
                        replicas[coord].context().clone()
                    } else {
                        let mut read = Siblings::new();
                        for (i, r) in replicas.iter().enumerate() {
                            if read_mask & (1 << i) != 0 {
                                read.merge(r);
                            }
                        }
                        read.context().clone()
                    };
                    counters[coord] += 1;
                    let d = dot(actors[coord], counters[coord]);
                    let value = (!delete).then(|| Bytes::from(format!("w{t}")));
                    replicas[coord].update(&covered, d, t as u64, value);
                    writes.push((d, covered));
                }
                Op::Sync { from, to } => {
                    let s = replicas[from].clone();
                    replicas[to].merge(&s);
                }
            }
        }
        (replicas, writes)
    }

    fn merged(states: &[Siblings]) -> Siblings {
        let mut m = Siblings::new();
        for s in states {
            m.merge(s);
        }
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Merge is commutative, associative and idempotent on reachable states.
        #[test]
        fn merge_laws(ops in proptest::collection::vec(arb_op(), 0..40)) {
            let (r, _) = run(&ops);
            let (a, b, c) = (&r[0], &r[1], &r[2]);
            let mut ab = a.clone(); ab.merge(b);
            let mut ba = b.clone(); ba.merge(a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(c);
            let mut bc = b.clone(); bc.merge(c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            let mut aa = a.clone(); aa.merge(a);
            prop_assert_eq!(&aa, a);
        }

        /// No lost writes: after every replica has merged everything, a write's version is gone exactly when some
        /// later write's context covered its dot. Nothing disappears silently, and nothing superseded comes back.
        #[test]
        fn nothing_lost_nothing_resurrected(ops in proptest::collection::vec(arb_op(), 0..60)) {
            let (replicas, writes) = run(&ops);
            let all = merged(&replicas);
            let held: BTreeSet<Dot> = all.versions().iter().map(|v| v.dot).collect();
            for (d, _) in &writes {
                let superseded = writes.iter().any(|(_, covered)| covered.covers(*d));
                prop_assert_eq!(held.contains(d), !superseded, "dot {:?}", d);
            }
            // Every replica that then merges the full state converges to it.
            for r in &replicas {
                let mut x = r.clone();
                x.merge(&all);
                prop_assert_eq!(&x, &all);
            }
        }
    }
}
