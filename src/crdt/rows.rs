//! Collections kept as a row per element: sets (a row per member) and hashes (a row per field), so that a write of
//! one element reads, stores and replicates that element's row and the key row, whatever the collection's size.
//!
//! A collection key has a **key row** (the key's own row, as a string has) and one **element row** per element
//! ever written, under the key in storage ([`crate::storage::layout`]). Each row is a [`Siblings`] of its own:
//!
//! * an element row holds the versions of one element, exactly the versions the whole-key state held for it
//!   before (`Value::Member`, `Value::Field`, ...), so the [`super::set`] and [`super::hash`] rules apply to it
//!   unchanged: an add stamps a fresh dot and drops the element's versions it saw, a remove drops them and leaves a
//!   tombstone (so an element row is reaped like a deleted key), and add wins over a remove that did not see it;
//! * the key row holds the collection's **header** (`Value::Header`: its kind, and the key's deadline) and its
//!   **cleared** vector ([`Siblings::cleared`]).
//!
//! Every element write also writes a fresh header, superseding the key row versions it saw. So the key row's context
//! covers every element write that reached it, and:
//!
//! * a `DEL`, a `SET`, an expiry or a write of another type that leaves the key row without a header
//!   *clears* the collection: `cleared` takes the key row's context, and every element version it covers is gone
//!   (reads skip it, writes drop it, and reaping removes the rows). That is O(1), and it removes exactly the
//!   element writes the removal saw;
//! * an element write concurrent with the removal (not seen by it) wrote a header the removal did not cover, so
//!   the key stays a collection and that element stays: add wins, for whole-key removals too;
//! * a collection created anew (no live header of its kind) clears first, so nothing from an earlier life of the key
//!   comes back.
//!
//! A collection whose every element was removed (SREM of its last member) keeps its header: it reads as absent
//! (no live element), and the key row is reaped with the element rows.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::{Kind, Op, OpError, OpReply, Stamp, check_kind, hash, set, zset};
use crate::versioning::{Dot, RowKind, Siblings, Value, Version, VersionVector};

/// The tag that begins an element row of a set (its member follows).
const SET_TAG: u8 = b's';
/// The tag that begins an element row of a hash (its field follows).
const HASH_TAG: u8 = b'h';
/// The tag that begins an element row of a sorted set (its member follows).
const ZSET_TAG: u8 = b'z';
/// The tag that begins a list item's row while the item is live (its rank and dot follow, in an order-preserving
/// encoding, so a list's live items are one range in list order).
const LIST_TAG: u8 = b'l';
/// The tag of a removed list item's row (the same rank and dot follow): its second home, outside the live items'
/// range, so that reading a list's ends never walks past the items popped before (see [`item_homes`]).
const REMOVED_ITEM_TAG: u8 = b'L';

/// The row of `element` in a collection of `kind`.
pub fn element_row(kind: RowKind, element: &[u8]) -> Bytes {
    let mut row = BytesMut::with_capacity(1 + element.len());
    row.put_u8(match kind {
        RowKind::Set => SET_TAG,
        RowKind::Hash => HASH_TAG,
        RowKind::ZSet => ZSET_TAG,
        RowKind::List => LIST_TAG,
    });
    row.put_slice(element);
    row.freeze()
}

/// The kind and element of an element row (`None` for the key row or a row of no known kind).
pub fn parse_row(row: &[u8]) -> Option<(RowKind, &[u8])> {
    match row.split_first()? {
        (&SET_TAG, element) => Some((RowKind::Set, element)),
        (&HASH_TAG, element) => Some((RowKind::Hash, element)),
        (&ZSET_TAG, element) => Some((RowKind::ZSet, element)),
        (&LIST_TAG, element) => Some((RowKind::List, element)),
        _ => None,
    }
}

/// The collection kind a key kind is kept as, if it is one kept as rows.
pub fn row_kind(kind: Kind) -> Option<RowKind> {
    match kind {
        Kind::Set => Some(RowKind::Set),
        Kind::Hash => Some(RowKind::Hash),
        Kind::ZSet => Some(RowKind::ZSet),
        Kind::List => Some(RowKind::List),
        _ => None,
    }
}

/// The row of a list item pushed with `rank` under `dot`.
pub fn item_row(rank: i64, dot: Dot) -> Bytes {
    let mut row = BytesMut::with_capacity(25);
    row.put_u8(LIST_TAG);
    // Flipping the sign bit makes the big-endian bytes of an i64 sort as the numbers do.
    row.put_u64(rank as u64 ^ (1 << 63));
    row.put_u64(dot.actor.0);
    row.put_u64(dot.counter);
    row.freeze()
}

/// The rank and dot of a list item's row (either home).
pub fn item_of(row: &[u8]) -> Option<(i64, Dot)> {
    let (&tag, rest) = row.split_first()?;
    if (tag != LIST_TAG && tag != REMOVED_ITEM_TAG) || rest.len() != 24 {
        return None;
    }
    let word = |i: usize| u64::from_be_bytes(rest[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Some(((word(0) ^ (1 << 63)) as i64, Dot { actor: crate::versioning::Actor(word(1)), counter: word(2) }))
}

/// The two homes of a list item's row (given either): where it is stored while live, and once removed. A store
/// keeps a row in exactly one of them (`KvStore::update_rows`), and presents it under the first, so an item row is
/// one logical row whatever its state. `None` for any other row.
pub fn item_homes(row: &[u8]) -> Option<(Bytes, Bytes)> {
    item_of(row)?;
    let mut live = BytesMut::from(row);
    live[0] = LIST_TAG;
    let mut removed = BytesMut::from(row);
    removed[0] = REMOVED_ITEM_TAG;
    Some((live.freeze(), removed.freeze()))
}

/// The range of rows (after a key's key row) holding its live list items, in list order: `[start, end)`.
pub fn live_items_range() -> ([u8; 1], [u8; 1]) {
    ([LIST_TAG], [LIST_TAG + 1])
}

/// The rows of one key that a read found or a write changes: its key row (the empty row) and some element rows,
/// sorted by row. What replicas send each other for a collection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rows {
    rows: Vec<(Bytes, Siblings)>,
}

impl Rows {
    /// No rows.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key row alone (a string's state, as replicated).
    pub fn key_only(state: Siblings) -> Self {
        Rows { rows: vec![(Bytes::new(), state)] }
    }

    /// Rows from (row, state) pairs in any order (a row given twice: the states merge).
    pub fn from_rows(rows: impl IntoIterator<Item = (Bytes, Siblings)>) -> Self {
        let mut out = Rows::new();
        for (row, state) in rows {
            out.merge_row(row, &state);
        }
        out
    }

    /// Every row, in row order (the key row first, when present).
    pub fn rows(&self) -> &[(Bytes, Siblings)] {
        &self.rows
    }

    /// Takes the rows out.
    pub fn into_rows(self) -> Vec<(Bytes, Siblings)> {
        self.rows
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// How many rows are held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The state of `row`, if held.
    pub fn get(&self, row: &[u8]) -> Option<&Siblings> {
        self.rows.binary_search_by(|(r, _)| r.as_ref().cmp(row)).ok().map(|i| &self.rows[i].1)
    }

    /// The state of `row`, added empty when not held.
    pub fn entry(&mut self, row: &[u8]) -> &mut Siblings {
        let i = match self.rows.binary_search_by(|(r, _)| r.as_ref().cmp(row)) {
            Ok(i) => i,
            Err(i) => {
                self.rows.insert(i, (Bytes::copy_from_slice(row), Siblings::new()));
                i
            }
        };
        &mut self.rows[i].1
    }

    /// The key row, if held.
    pub fn key_row(&self) -> Option<&Siblings> {
        self.get(&[])
    }

    /// Merges one row's state in.
    pub fn merge_row(&mut self, row: Bytes, state: &Siblings) {
        match self.rows.binary_search_by(|(r, _)| r.cmp(&row)) {
            Ok(i) => self.rows[i].1.merge(state),
            Err(i) => self.rows.insert(i, (row, state.clone())),
        }
    }

    /// As [`merge_row`](Self::merge_row), taking the state: a row not held yet keeps it without a copy (a scan's
    /// rows are decoded once and moved in).
    pub fn merge_row_owned(&mut self, row: Bytes, state: Siblings) {
        match self.rows.binary_search_by(|(r, _)| r.cmp(&row)) {
            Ok(i) => self.rows[i].1.merge(&state),
            Err(i) => self.rows.insert(i, (row, state)),
        }
    }

    /// The join of two replicas' rows: row by row.
    pub fn merge(&mut self, other: &Rows) {
        for (row, state) in &other.rows {
            self.merge_row(row.clone(), state);
        }
    }
}

/// Whether a key row holds a collection header (live or expired).
pub fn has_header(key_row: &Siblings) -> bool {
    key_row.versions().iter().any(|v| matches!(v.value, Some(Value::Header(_))))
}

/// After a write to a key row that held a header before it (`had_header`): a write that left no header clears the
/// collection (see the module documentation).
pub fn settle(key_row: &mut Siblings, had_header: bool) {
    if had_header && !has_header(key_row) {
        key_row.clear_elements();
    }
}

/// The collection kind the key row says the key is, at `now_ms`: its newest live value is a header.
pub fn live_kind(key_row: &Siblings, now_ms: u64) -> Option<RowKind> {
    key_row
        .versions()
        .iter()
        .filter(|v| v.value.is_some() && !v.is_expired(now_ms))
        .max_by_key(|v| (v.timestamp_ms, v.dot))
        .and_then(|v| match v.value {
            Some(Value::Header(k)) => Some(k),
            _ => None,
        })
}

/// The versions of an element row that the key row has not cleared.
fn uncleared<'a>(key_row: &'a Siblings, row: &'a Siblings) -> impl Iterator<Item = &'a Version> + Clone {
    uncleared_by(key_row.cleared(), row)
}

/// The versions of an element row that `cleared` (a key row's cleared element writes) does not cover.
fn uncleared_by<'a>(cleared: &'a VersionVector, row: &'a Siblings) -> impl Iterator<Item = &'a Version> + Clone {
    row.versions().iter().filter(|v| !cleared.covers(v.dot))
}

/// The kind of collection whose live element the stored row `row` (a row's name under its key, in either home)
/// holds, given its key row's cleared element writes: what LLEN, SCARD, HLEN and ZCARD count, and what a reply
/// shows (a hash field with a value, a sorted-set member with a score, a list item in its live home). `None` for
/// the key row, a removed element, or a list item's removed home.
pub fn counted_kind(cleared: &VersionVector, row: &[u8], state: &Siblings) -> Option<RowKind> {
    let (kind, element) = parse_row(row)?;
    let mut live = uncleared_by(cleared, state).filter(|v| v.value.is_some()).peekable();
    live.peek()?;
    let visible = || {
        let mut visible = state.clone();
        visible.remove_versions(|v| cleared.covers(v.dot));
        visible
    };
    let counted = match kind {
        RowKind::Set => true,
        RowKind::List => live.any(|v| matches!(v.value, Some(Value::Item { .. }))),
        RowKind::Hash => hash::get(&visible(), &Bytes::copy_from_slice(element)).is_some(),
        RowKind::ZSet => zset::score(&visible(), &Bytes::copy_from_slice(element)).is_some(),
    };
    counted.then_some(kind)
}

/// The sorted-set member the stored row `row` holds, with its score, under a key row that cleared `cleared`: what
/// a replica's score order ([`crate::crdt::zorder::ScoreOrder`]) keeps of the row (`None`: no row of a member, or
/// no score). As [`scored`] sees the row, so an order kept from the rows and a read of them answer alike.
pub fn ranked_entry(cleared: &VersionVector, row: &[u8], state: &Siblings) -> Option<(Bytes, f64)> {
    let (RowKind::ZSet, member) = parse_row(row)? else { return None };
    uncleared_by(cleared, state).find(|v| v.value.is_some())?;
    let mut visible = state.clone();
    visible.remove_versions(|v| cleared.covers(v.dot));
    let member = Bytes::copy_from_slice(member);
    let score = zset::score(&visible, &member)?;
    Some((member, score))
}

/// How many live elements the collection of `kind` at `rows` (a read of every row of the key at `now_ms`) holds:
/// LLEN, SCARD, HLEN and ZCARD (0 when it is not a live collection of that kind).
pub fn card(rows: &Rows, kind: RowKind, now_ms: u64) -> u64 {
    let Some(key_row) = rows.key_row() else { return 0 };
    if live_kind(key_row, now_ms) != Some(kind) {
        return 0;
    }
    let counted = rows.rows().iter().filter(|(row, state)| counted_kind(key_row.cleared(), row, state) == Some(kind));
    counted.count() as u64
}

/// One replica's count of a collection key's live elements by kind ([`counted_kind`]), with the XOR of the
/// hash-tree digests of every element row it stores (both homes of a list item). Replicas whose key rows and
/// tallies are equal hold equal rows (up to a collision of the digests), so the count of their merge is the count
/// each has: a count is read from R replicas' tallies instead of from every element row they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Live elements, by [`RowKind`] (set, hash, sorted set, list).
    pub counts: [u64; 4],
    /// XOR of the digests of the element rows.
    pub digest: u128,
}

impl Tally {
    /// The live elements of `kind` counted.
    pub fn count(&self, kind: RowKind) -> u64 {
        self.counts[kind as usize]
    }

    /// Takes in (`entering`) or out a stored element row: its digest, and its element if it holds a live one.
    pub fn account(&mut self, cleared: &VersionVector, row: &[u8], state: &Siblings, digest: u128, entering: bool) {
        self.digest ^= digest;
        if let Some(kind) = counted_kind(cleared, row, state) {
            self.step(kind, entering);
        }
    }

    /// Applies a change (`forward`), or undoes it: the tally as it was before it.
    pub fn apply(&mut self, change: &TallyChange, forward: bool) {
        self.digest ^= change.before.0 ^ change.after.0;
        let (gone, came) = if forward { (change.before.1, change.after.1) } else { (change.after.1, change.before.1) };
        if let Some(kind) = gone {
            self.step(kind, false);
        }
        if let Some(kind) = came {
            self.step(kind, true);
        }
    }

    fn step(&mut self, kind: RowKind, up: bool) {
        let n = &mut self.counts[kind as usize];
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }
}

/// An element row as a tally sees it: its digest (0: absent) and the kind it counts as live of ([`counted_kind`]).
pub type RowSide = (u128, Option<RowKind>);

/// One change of a replica's element row, as its tally took it: which element (an MD5 of its row's name, the
/// same for both homes of a list item, so that a change stays small whatever the element's size) and which home,
/// with the row's digest and [`counted_kind`] before and after (digest 0: absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyChange {
    /// The element.
    pub element: u128,
    /// The home: 0 for a row's only home (or a list item's live one), 1 for a removed list item's.
    pub home: u8,
    /// Its digest and counted kind before the change.
    pub before: RowSide,
    /// Its digest and counted kind after it.
    pub after: RowSide,
}

impl TallyChange {
    /// The change of stored row `row` (its name under the key) from `before` to `after` (each a state with its
    /// digest; `None`: absent), counted under a key row that cleared `cleared`.
    pub fn of(
        cleared: &VersionVector,
        row: &[u8],
        before: Option<(&Siblings, u128)>,
        after: Option<(&Siblings, u128)>,
    ) -> TallyChange {
        let side =
            |s: Option<(&Siblings, u128)>| s.map_or((0, None), |(s, digest)| (digest, counted_kind(cleared, row, s)));
        let (element, home) = match item_of(row) {
            // Both homes of a list item name one element: its live home's name.
            Some(_) => (md5::compute([&[LIST_TAG][..], &row[1..]].concat()).0, u8::from(row[0] == REMOVED_ITEM_TAG)),
            None => (md5::compute(row).0, 0),
        };
        TallyChange { element: u128::from_be_bytes(element), home, before: side(before), after: side(after) }
    }
}

/// A replica's answer to a count: its key row, its tally, and the last changes its tally took, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyReply {
    /// The key row (`None`: absent).
    pub key_row: Option<Siblings>,
    /// The tally now.
    pub tally: Tally,
    /// Its latest changes, oldest first.
    pub recent: Vec<TallyChange>,
    /// The answer to a read of the sorted set's order asked with the tally (`ReadTally::ranked`), from the
    /// replica's score order; its latest changes are left out then (two replicas in one state answer alike).
    pub answer: Option<super::zorder::ZAnswer>,
}

/// The number of live elements of `kind` in the merge of the replicas that gave `replies` (at `now_ms`), with
/// their merged key row; `None` when the replies cannot tell, and only a read of the rows can.
///
/// Replicas apply the same writes at different moments: while writes to a key keep coming, two replicas' tallies
/// rarely match at the instant each answers. Undoing each one's latest changes finds the tally it had before
/// them: where those earlier tallies match (digests included), the replicas passed through one state P, and each
/// holds P changed by its own latest changes since. Every change leaves a row at a state that includes the one
/// before (a join; a list item moving home leaves its live home empty, and its removed home holds the item's
/// removal), so the merge of the replicas is P with each changed row at its newest state: the one every replica
/// that changed it reached, or, when two reached different states of one row, unknown (`None`). The key rows must
/// have cleared the same writes, for the counts to count the same rows as live.
pub fn merged_count(replies: &[TallyReply], kind: RowKind, now_ms: u64) -> Option<(u64, Option<Siblings>)> {
    let first = replies.first()?;
    let cleared = |r: &TallyReply| r.key_row.as_ref().map(|k| k.cleared().clone()).unwrap_or_default();
    if replies.iter().any(|r| cleared(r) != cleared(first)) {
        return None;
    }
    let key_row = replies.iter().filter_map(|r| r.key_row.as_ref()).fold(None, |acc: Option<Siblings>, k| {
        Some(match acc {
            Some(mut merged) => {
                merged.merge(k);
                merged
            }
            None => k.clone(),
        })
    });
    // Each reply's earlier tallies, by how many of its latest changes are undone.
    let earlier = |r: &TallyReply| -> Vec<Tally> {
        let mut at = r.tally;
        let mut out = vec![at];
        for change in r.recent.iter().rev() {
            at.apply(change, false);
            out.push(at);
        }
        out
    };
    let histories: Vec<Vec<Tally>> = replies.iter().map(earlier).collect();
    // The most recent state of the first reply that every other one passed through too.
    let undone: Vec<usize> = histories[0]
        .iter()
        .find_map(|p| histories.iter().map(|h| h.iter().position(|t| t == p)).collect::<Option<Vec<usize>>>())?;
    let base = histories[0][undone[0]];
    // Each changed element: its rows (one per home) in P and at the newest state a replica that changed it gave
    // them. Two replicas that changed one element must have made the same change: a list item one replica took
    // in while another removed it lies in two homes, and only both states merged tell whether it is live.
    type Homes = std::collections::BTreeMap<u8, (RowSide, RowSide)>;
    let mut elements: std::collections::BTreeMap<u128, Homes> = std::collections::BTreeMap::new();
    for (reply, &n) in replies.iter().zip(&undone) {
        let mut mine: std::collections::BTreeMap<u128, Homes> = std::collections::BTreeMap::new();
        for change in &reply.recent[reply.recent.len() - n..] {
            let homes = mine.entry(change.element).or_default();
            homes.entry(change.home).or_insert((change.before, change.after)).1 = change.after;
        }
        for (element, homes) in mine {
            match elements.get(&element) {
                Some(theirs) if *theirs != homes => return None,
                Some(_) => {}
                None => drop(elements.insert(element, homes)),
            }
        }
    }
    let mut count = base.count(kind);
    for (before, after) in elements.values().flat_map(|homes| homes.values()) {
        count = (count + u64::from(after.1 == Some(kind))).saturating_sub(u64::from(before.1 == Some(kind)));
    }
    let live = key_row.as_ref().and_then(|k| live_kind(k, now_ms));
    Some((if live == Some(kind) { count } else { 0 }, key_row))
}

/// The element rows of `kind` in `rows` that hold a live element their key row has not cleared.
fn live_element_rows(rows: &Rows, kind: RowKind) -> BTreeSet<Bytes> {
    let empty = Siblings::new();
    let key_row = rows.key_row().unwrap_or(&empty);
    rows.rows()
        .iter()
        .filter(|(row, state)| parse_row(row).is_some_and(|(k, _)| k == kind) && element_is_live(key_row, state))
        .map(|(row, _)| row.clone())
        .collect()
}

/// An element row without the versions the key row cleared: what the element is now.
pub fn visible(key_row: &Siblings, row: &Siblings) -> Siblings {
    let mut row = row.clone();
    row.remove_versions(|v| key_row.cleared().covers(v.dot));
    row
}

/// Whether an element row holds a live element the key row has not cleared.
pub fn element_is_live(key_row: &Siblings, row: &Siblings) -> bool {
    uncleared(key_row, row).any(|v| v.value.is_some())
}

/// The live elements of `kind` in `rows` (a read of the key at `now_ms`), each with its visible state, in element
/// order; none when the key is not a live collection of that kind.
pub fn elements(rows: &Rows, kind: RowKind, now_ms: u64) -> Vec<(Bytes, Siblings)> {
    let Some(key_row) = rows.key_row() else { return Vec::new() };
    if live_kind(key_row, now_ms) != Some(kind) {
        return Vec::new();
    }
    rows.rows()
        .iter()
        .filter_map(|(row, state)| match parse_row(row) {
            Some((k, element)) if k == kind && element_is_live(key_row, state) => {
                Some((Bytes::copy_from_slice(element), visible(key_row, state)))
            }
            _ => None,
        })
        .collect()
}

/// What kind `rows` (a read of the key row and its element rows) says the key is at `now_ms`, counting a
/// collection with no live element as absent.
pub fn kind_of(rows: &Rows, now_ms: u64) -> Option<Kind> {
    let mut key_row = rows.key_row()?.clone();
    key_row.drop_expired(now_ms);
    match super::kind(&key_row)? {
        Kind::Set => (!elements(rows, RowKind::Set, now_ms).is_empty()).then_some(Kind::Set),
        Kind::Hash => (!elements(rows, RowKind::Hash, now_ms).is_empty()).then_some(Kind::Hash),
        Kind::ZSet => (!elements(rows, RowKind::ZSet, now_ms).is_empty()).then_some(Kind::ZSet),
        Kind::List => (!elements(rows, RowKind::List, now_ms).is_empty()).then_some(Kind::List),
        other => Some(other),
    }
}

/// A set's members (sorted).
pub fn members(rows: &Rows, now_ms: u64) -> Vec<Bytes> {
    elements(rows, RowKind::Set, now_ms).into_iter().map(|(m, _)| m).collect()
}

/// A sorted set's members with their scores, ordered by score, then member (as Redis orders them).
pub fn scored(rows: &Rows, now_ms: u64) -> Vec<(Bytes, f64)> {
    let mut all: Vec<(Bytes, f64)> = elements(rows, RowKind::ZSet, now_ms)
        .into_iter()
        .filter_map(|(m, state)| Some((m.clone(), zset::score(&state, &m)?)))
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    all
}

/// A list's items in list order, as (row, value), of those `rows` holds.
pub fn items(rows: &Rows, now_ms: u64) -> Vec<(Bytes, Bytes)> {
    match rows.key_row() {
        Some(key_row) if live_kind(key_row, now_ms) == Some(RowKind::List) => uncleared_items(rows),
        _ => Vec::new(),
    }
}

/// The items `rows` holds that are live and not cleared by its key row, whatever the key row's kind.
fn uncleared_items(rows: &Rows) -> Vec<(Bytes, Bytes)> {
    let empty = Siblings::new();
    let key_row = rows.key_row().unwrap_or(&empty);
    rows.rows()
        .iter()
        .filter(|(row, _)| row.first() == Some(&LIST_TAG))
        .filter_map(|(row, state)| {
            let value = uncleared(key_row, state).find_map(|v| match &v.value {
                Some(Value::Item { value, .. }) => Some(value.clone()),
                _ => None,
            })?;
            Some((row.clone(), value))
        })
        .collect()
}

/// A hash's fields with their values (sorted by field).
pub fn fields(rows: &Rows, now_ms: u64) -> Vec<(Bytes, Bytes)> {
    elements(rows, RowKind::Hash, now_ms)
        .into_iter()
        .filter_map(|(f, state)| Some((f.clone(), hash::get(&state, &f)?)))
        .collect()
}

impl Op {
    /// A pop: it takes elements it chooses by reading them (SPOP, ZPOPMIN, ZPOPMAX, LPOP, RPOP).
    pub fn is_pop(&self) -> bool {
        matches!(self, Op::SetPop { .. } | Op::ZPop { .. } | Op::ListPop { .. })
    }

    /// The collection kind this write changes, when it is a write of elements kept as rows.
    pub fn row_kind(&self) -> Option<RowKind> {
        match self {
            Op::SetAdd { .. } | Op::SetRemove { .. } | Op::SetPop { .. } => Some(RowKind::Set),
            Op::HashSet { .. } | Op::HashDel { .. } | Op::HashIncr { .. } => Some(RowKind::Hash),
            Op::ZAdd { .. } | Op::ZIncr { .. } | Op::ZRemove { .. } | Op::ZPop { .. } => Some(RowKind::ZSet),
            Op::ListPush { .. } | Op::ListPop { .. } | Op::ListRemove { .. } | Op::ListTrim { .. } => {
                Some(RowKind::List)
            }
            _ => None,
        }
    }

    /// The rows a write reads and writes besides the key row: the rows of the elements it names (with, for a
    /// remove, a probe for other live elements, so that it knows whether it empties the collection), a sample of
    /// live members (SPOP), items at a list's end, every live element (ZPOPMIN and ZPOPMAX find the lowest or
    /// highest scores; their coordinator names them from a read of the order instead, `Coordinator::apply`, and
    /// reads every live element only past an emptied key), every row (LREM and LTRIM walk the list), or none (a
    /// write of the key row alone).
    pub fn rows_read(&self) -> RowSelect {
        let named = |kind, elements: &mut dyn Iterator<Item = &Bytes>, removes: bool| {
            let unique: BTreeSet<Bytes> = elements.map(|e| element_row(kind, e)).collect();
            // One live element past those it removes, if there is one.
            let first_live = if removes { unique.len() as u32 + 1 } else { 0 };
            RowSelect::Named { rows: unique.into_iter().collect(), first_live }
        };
        match self {
            Op::SetAdd { members } => named(RowKind::Set, &mut members.iter(), false),
            Op::SetRemove { members } => named(RowKind::Set, &mut members.iter(), true),
            Op::HashSet { pairs, .. } => named(RowKind::Hash, &mut pairs.iter().map(|(f, _)| f), false),
            Op::HashDel { fields } => named(RowKind::Hash, &mut fields.iter(), true),
            Op::HashIncr { field, .. } => named(RowKind::Hash, &mut std::iter::once(field), false),
            Op::ZAdd { entries, .. } => named(RowKind::ZSet, &mut entries.iter().map(|(_, m)| m), false),
            Op::ZIncr { member, .. } => named(RowKind::ZSet, &mut std::iter::once(member), false),
            Op::ZRemove { members } => named(RowKind::ZSet, &mut members.iter(), true),
            // A push reads the item at its end (its rank comes next), a pop the items it takes and one more (to know
            // whether it empties the list); LREM and LTRIM read every item.
            Op::ListPush { head, .. } => RowSelect::End { head: *head, count: 1 },
            Op::ListPop { head, count } => RowSelect::End { head: *head, count: (*count as u32).saturating_add(1) },
            // SPOP picks among a sample and one member more (to know whether it empties the set).
            Op::SetPop { count, seed } => {
                RowSelect::Sample { seed: *seed, count: u32::try_from(*count).unwrap_or(u32::MAX).saturating_add(1) }
            }
            Op::ZPop { .. } => RowSelect::Live,
            Op::ListRemove { .. } | Op::ListTrim { .. } => RowSelect::All,
            _ => RowSelect::Named { rows: Vec::new(), first_live: 0 },
        }
    }
}

/// Which rows of a key a read asks for besides its key row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowSelect {
    /// Every row of the key.
    All,
    /// The element rows named, and up to `first_live` more element rows that hold a live element, in row order.
    Named {
        /// Rows (each an [`element_row`]).
        rows: Vec<Bytes>,
        /// How many further live element rows to add.
        first_live: u32,
    },
    /// Up to `count` live items at one end of a list.
    End {
        /// The head (else the tail).
        head: bool,
        /// How many.
        count: u32,
    },
    /// Every element row holding a live element (not the rows of removed ones, which `All` reads too).
    Live,
    /// Up to `count` element rows holding a live element, in row order from a point `seed` picks between the
    /// first and the last of them, wrapping around: a random sample that reads `count` rows, not the collection.
    Sample {
        /// Picks the point.
        seed: u64,
        /// How many.
        count: u32,
    },
}

impl RowSelect {
    /// The named rows of these elements of a collection of `kind`.
    pub fn elements(kind: RowKind, elements: &[Bytes]) -> RowSelect {
        RowSelect::Named { rows: elements.iter().map(|e| element_row(kind, e)).collect(), first_live: 0 }
    }

    /// The rows named (none but for [`RowSelect::Named`]).
    pub fn named(&self) -> &[Bytes] {
        match self {
            RowSelect::All | RowSelect::Live | RowSelect::End { .. } | RowSelect::Sample { .. } => &[],
            RowSelect::Named { rows, .. } => rows,
        }
    }
}

/// Applies a write of elements (an [`Op::row_kind`] op) to `rows`: the coordinator's own rows of the key merged
/// with what its quorum read found, holding at least the key row and the op's element rows (every row for SPOP).
/// Returns the reply and whether anything changed; on an error `rows` is unchanged.
pub fn apply(rows: &mut Rows, op: &Op, stamp: &Stamp) -> Result<(OpReply, bool), OpError> {
    let kind = op.row_kind().expect("a write of elements");
    let mut next = rows.clone();
    let key_row = next.entry(&[]);
    let seen_here = key_row.context().clone();
    let had_header = has_header(key_row);
    let stamp = &Stamp { timestamp_ms: key_row.causal_timestamp(stamp.timestamp_ms), ..*stamp };
    key_row.drop_expired(stamp.now_ms);
    settle(key_row, had_header);
    check_kind(key_row, Kind::from(kind))?;
    let live = live_kind(key_row, stamp.now_ms) == Some(kind);
    if !live {
        match op {
            Op::SetAdd { .. }
            | Op::HashSet { .. }
            | Op::HashIncr { .. }
            | Op::ZAdd { .. }
            | Op::ZIncr { .. }
            | Op::ListPush { .. } => {}
            // A remove or a pop of a key that is no collection of this kind: nothing to do, nothing written.
            Op::SetPop { .. } | Op::ZPop { .. } | Op::ListPop { .. } => {
                return Ok((OpReply::Members(Vec::new()), false));
            }
            _ => return Ok((OpReply::Integer(0), false)),
        }
        // A new collection. What a delete, an overwrite or an expiry of an earlier one removed, it cleared then
        // (`settle`); an element that no removal saw lives on in it.
    }
    let cleared = key_row.cleared().clone();
    // Versions of elements the key row cleared are gone: drop them (their dots stay covered by the row's own
    // context, so every replica drops them too).
    for (_, state) in next.rows.iter_mut().filter(|(r, _)| parse_row(r).is_some()) {
        state.remove_versions(|v| cleared.covers(v.dot));
    }
    let live_before = live_element_rows(&next, kind);
    let (reply, added) = apply_elements(&mut next, op, kind, stamp)?;
    let removed = match (op, &reply) {
        (
            Op::SetRemove { .. }
            | Op::HashDel { .. }
            | Op::ZRemove { .. }
            | Op::ListRemove { .. }
            | Op::ListTrim { .. },
            OpReply::Integer(n),
        ) => *n > 0,
        (Op::SetPop { .. } | Op::ZPop { .. } | Op::ListPop { .. }, OpReply::Members(m)) => !m.is_empty(),
        _ => false,
    };
    if removed && stamp.may_empty && elements(&next, kind, stamp.now_ms).is_empty() {
        // What the read saw: its key row's context, and the live elements it showed besides those removed here.
        let (seen, others_read) = match stamp.read {
            Some(read) => {
                let gone: BTreeSet<Bytes> = live_before.difference(&live_element_rows(&next, kind)).cloned().collect();
                let others = live_element_rows(read, kind).difference(&gone).count();
                (read.key_row().map(|k| k.context().clone()).unwrap_or_default(), others)
            }
            None => (seen_here, 0),
        };
        if others_read == 0 {
            // The remove emptied the collection: the key goes, as in Redis. Its header is superseded and the elements
            // its read saw are cleared; an element added since the read wrote a header this did not see, and keeps
            // the key.
            let key_row = next.entry(&[]);
            key_row.update_value(&seen, (stamp.next_dot)(), stamp.timestamp_ms, None);
            key_row.clear_seen(&seen);
        }
    }
    if added {
        // A fresh header supersedes every version of the key row this write saw: its own earlier headers, a value
        // of another kind that lost to the collection, a tombstone; it keeps the key's deadline.
        let key_row = next.entry(&[]);
        let deadline = key_row.deadline(stamp.now_ms).flatten();
        let covered = key_row.context().clone();
        let dot = (stamp.next_dot)();
        key_row.update_value(&covered, dot, stamp.timestamp_ms, Some(Value::Header(kind)));
        if deadline.is_some() {
            let expiry = crate::versioning::Expiry::new(deadline, stamp.timestamp_ms, stamp.actor);
            key_row.set_expiry(|v| v.dot == dot, expiry);
        }
    }
    let changed = next != *rows;
    *rows = next;
    Ok((reply, changed))
}

/// The element part of [`apply`]: each element's row, by the rules of its type. Returns the reply and whether an
/// element was added or written (which writes a header).
fn apply_elements(rows: &mut Rows, op: &Op, kind: RowKind, stamp: &Stamp) -> Result<(OpReply, bool), OpError> {
    let row = |e: &Bytes| element_row(kind, e);
    match op {
        Op::SetAdd { members } => {
            let unique: BTreeSet<&Bytes> = members.iter().collect();
            let mut added = 0;
            for m in unique {
                added += set::add(rows.entry(&row(m)), std::slice::from_ref(m), stamp)?;
            }
            Ok((OpReply::Integer(added), true))
        }
        Op::SetRemove { members } => {
            let unique: BTreeSet<&Bytes> = members.iter().collect();
            let mut removed = 0;
            for m in unique {
                if let Some(state) = rows_get_mut(rows, &row(m)) {
                    removed += set::remove(state, std::slice::from_ref(m), stamp)?;
                }
            }
            Ok((OpReply::Integer(removed), false))
        }
        Op::SetPop { count, seed } => {
            let present: Vec<Bytes> = rows
                .rows()
                .iter()
                .filter_map(|(r, s)| match parse_row(r) {
                    Some((RowKind::Set, m)) if s.has_live_value() => Some(Bytes::copy_from_slice(m)),
                    _ => None,
                })
                .collect();
            let picked = set::sample(present, *count, *seed);
            for m in &picked {
                if let Some(state) = rows_get_mut(rows, &row(m)) {
                    set::remove(state, std::slice::from_ref(m), stamp)?;
                }
            }
            Ok((OpReply::Members(picked), false))
        }
        Op::HashSet { pairs, only_new } => {
            // The last value given for a field repeated wins, as in Redis.
            let last: std::collections::BTreeMap<&Bytes, &Bytes> = pairs.iter().map(|(f, v)| (f, v)).collect();
            let (mut added, mut wrote) = (0, false);
            for (f, v) in last {
                let new = hash::set(rows.entry(&row(f)), &[(f.clone(), v.clone())], *only_new, stamp)?;
                // HSETNX of a field that exists writes nothing.
                wrote |= !*only_new || new > 0;
                added += new;
            }
            Ok((OpReply::Integer(added), wrote))
        }
        Op::HashDel { fields } => {
            let unique: BTreeSet<&Bytes> = fields.iter().collect();
            let mut removed = 0;
            for f in unique {
                if let Some(state) = rows_get_mut(rows, &row(f)) {
                    removed += hash::delete(state, std::slice::from_ref(f), stamp)?;
                }
            }
            Ok((OpReply::Integer(removed), false))
        }
        Op::HashIncr { field, by } => {
            let total = hash::increment(rows.entry(&row(field)), field, *by, stamp)?;
            Ok((OpReply::Integer(total), true))
        }
        Op::ZAdd { entries, flags } => {
            if flags.incr {
                // One member (the command refuses more).
                let (by, member) = &entries[0];
                let state = rows.entry(&row(member));
                let before = state.clone();
                let reply = zset::add(state, std::slice::from_ref(&(*by, member.clone())), *flags, stamp)?;
                let wrote = *state != before;
                return Ok((reply, wrote));
            }
            // The last score given for a member counts, as in Redis.
            let last: std::collections::BTreeMap<&Bytes, u64> = entries.iter().map(|(s, m)| (m, *s)).collect();
            let (mut count, mut wrote) = (0, false);
            for (member, score) in last {
                let state = rows.entry(&row(member));
                let before = state.clone();
                if let OpReply::Integer(n) = zset::add(state, &[(score, member.clone())], *flags, stamp)? {
                    count += n;
                }
                wrote |= *state != before;
            }
            Ok((OpReply::Integer(count), wrote))
        }
        Op::ZIncr { member, by } => {
            let score = zset::increment(rows.entry(&row(member)), member, f64::from_bits(*by), stamp)?;
            Ok((OpReply::Bulk(Some(zset::format(score))), true))
        }
        Op::ZRemove { members } => {
            let unique: BTreeSet<&Bytes> = members.iter().collect();
            let mut removed = 0;
            for m in unique {
                if let Some(state) = rows_get_mut(rows, &row(m)) {
                    removed += zset::remove(state, std::slice::from_ref(m), stamp)?;
                }
            }
            Ok((OpReply::Integer(removed), false))
        }
        Op::ZPop { max, count } => {
            let mut all = scored(rows, stamp.now_ms);
            if *max {
                all.reverse();
            }
            all.truncate(*count);
            for (m, _) in &all {
                if let Some(state) = rows_get_mut(rows, &row(m)) {
                    zset::remove(state, std::slice::from_ref(m), stamp)?;
                }
            }
            Ok((OpReply::Members(all.into_iter().flat_map(|(m, s)| [m, zset::format(s)]).collect()), false))
        }
        Op::ListPush { head, values } => {
            // The key was checked: a new list, or one that goes on (its header is written after).
            let live = uncleared_items(rows);
            let end = if *head { live.first() } else { live.last() };
            let mut rank = end.and_then(|(row, _)| item_of(row)).map_or(0, |(rank, _)| rank);
            for value in values {
                rank = if *head { rank.checked_sub(1) } else { rank.checked_add(1) }.ok_or(OpError::Overflow)?;
                let dot = (stamp.next_dot)();
                let item = Value::Item { rank, value: value.clone() };
                rows.entry(&item_row(rank, dot)).update_value(&Default::default(), dot, stamp.timestamp_ms, Some(item));
            }
            // The length of the list these rows hold (the coordinator answers its replica's own count).
            Ok((OpReply::Integer(uncleared_items(rows).len() as i64), true))
        }
        Op::ListPop { head, count } => {
            let mut live = items(rows, stamp.now_ms);
            if !*head {
                live.reverse();
            }
            live.truncate(*count);
            for (row, _) in &live {
                remove_item(rows, row, stamp);
            }
            Ok((OpReply::Members(live.into_iter().map(|(_, v)| v).collect()), false))
        }
        Op::ListRemove { count, value } => {
            let mut live = items(rows, stamp.now_ms);
            if *count < 0 {
                live.reverse();
            }
            let limit = if *count == 0 { usize::MAX } else { count.unsigned_abs() as usize };
            let gone: Vec<Bytes> = live.into_iter().filter(|(_, v)| v == value).take(limit).map(|(r, _)| r).collect();
            for row in &gone {
                remove_item(rows, row, stamp);
            }
            Ok((OpReply::Integer(gone.len() as i64), false))
        }
        Op::ListTrim { start, stop } => {
            let live = items(rows, stamp.now_ms);
            let keep = super::list::index_range(*start, *stop, live.len());
            let gone: Vec<Bytes> =
                live.into_iter().enumerate().filter(|(i, _)| !keep.contains(i)).map(|(_, (r, _))| r).collect();
            for row in &gone {
                remove_item(rows, row, stamp);
            }
            Ok((OpReply::Integer(gone.len() as i64), false))
        }
        _ => unreachable!("not a write of elements kept as rows"),
    }
}

/// Removes a list item: its version goes, and a tombstone dates the removal (its row then moves to the removed
/// items' home, and is reaped like a deleted key).
fn remove_item(rows: &mut Rows, row: &Bytes, stamp: &Stamp) {
    if let Some(state) = rows_get_mut(rows, row) {
        state.remove_versions(|v| v.value.is_some());
        state.update_value(&Default::default(), (stamp.next_dot)(), stamp.timestamp_ms, None);
    }
}

fn rows_get_mut<'a>(rows: &'a mut Rows, row: &[u8]) -> Option<&'a mut Siblings> {
    let i = rows.rows.binary_search_by(|(r, _)| r.as_ref().cmp(row)).ok()?;
    Some(&mut rows.rows[i].1)
}

/// The rows of a key whose whole state was one row (data format 2): each set member's and hash field's versions
/// move to their element row (with the state's context, which covers exactly what the state saw of them), and
/// the key row keeps the rest, with a header when the collection is what the key holds. Deterministic, so
/// replicas that held the same state hold the same rows.
pub fn split_whole_state(state: &Siblings) -> Rows {
    let element = |v: &Version| match &v.value {
        Some(Value::Member(m)) => Some(element_row(RowKind::Set, m)),
        Some(Value::Field { field, .. } | Value::FieldCounter { field, .. } | Value::FieldBase { field, .. }) => {
            Some(element_row(RowKind::Hash, field))
        }
        Some(Value::Scored { member, .. } | Value::ScoreBase { member, .. } | Value::ScoreIncr { member, .. }) => {
            Some(element_row(RowKind::ZSet, member))
        }
        Some(Value::Item { rank, .. }) => Some(item_row(*rank, v.dot)),
        _ => None,
    };
    if !state.versions().iter().any(|v| element(v).is_some()) {
        return Rows::key_only(state.clone());
    }
    let mut by_row: std::collections::BTreeMap<Bytes, Vec<Version>> = std::collections::BTreeMap::new();
    let mut rest = Vec::new();
    for v in state.versions() {
        match element(v) {
            Some(row) => by_row.entry(row).or_default().push(v.clone()),
            // Removals' tombstones go: the element rows keep what they removed covered.
            None if v.value.is_none() => {}
            None => rest.push(v.clone()),
        }
    }
    let newest = state.newest_live_version().filter(|v| element(v).is_some()).cloned();
    if let Some(newest) = newest {
        let kind = match super::Kind::of(newest.value.as_ref().expect("live")) {
            Kind::Set => RowKind::Set,
            Kind::ZSet => RowKind::ZSet,
            Kind::List => RowKind::List,
            _ => RowKind::Hash,
        };
        rest.push(Version { value: Some(Value::Header(kind)), ..newest });
    }
    let mut rows = Rows::key_only(state.with_versions(rest));
    for (row, versions) in by_row {
        rows.merge_row(row, &state.with_versions(versions));
    }
    rows
}

impl From<Siblings> for Rows {
    /// A key row's state, as the rows of its key.
    fn from(state: Siblings) -> Rows {
        Rows::key_only(state)
    }
}

impl From<RowKind> for Kind {
    fn from(k: RowKind) -> Kind {
        match k {
            RowKind::Set => Kind::Set,
            RowKind::Hash => Kind::Hash,
            RowKind::ZSet => Kind::ZSet,
            RowKind::List => Kind::List,
        }
    }
}

/// A replica of one key for the `crdt` tests: its rows, and the dots its actor issued.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::crdt::apply_rows_as;
    use crate::versioning::{Actor, Dot};
    use std::cell::Cell;

    pub(crate) struct Replica {
        pub(crate) actor: u64,
        pub(crate) counter: Cell<u64>,
        pub(crate) rows: Rows,
    }

    impl Replica {
        /// A replica of actor `actor` holding nothing.
        pub(crate) fn new(actor: u64) -> Self {
            Self::with(actor, Rows::new())
        }

        /// A replica of actor `actor` holding `rows`.
        pub(crate) fn with(actor: u64, rows: Rows) -> Self {
            Replica { actor, counter: Cell::new(0), rows }
        }

        /// Coordinates `op` here at `now_ms`.
        pub(crate) fn run(&mut self, op: Op, now_ms: u64) -> Result<OpReply, OpError> {
            apply_rows_as(&mut self.rows, self.actor, &self.counter, now_ms, &op)
        }

        /// A blind SET (`Some`) or a DEL (`None`) of the key, as the coordinator writes it: it supersedes every
        /// version of the key row it holds.
        pub(crate) fn put(&mut self, value: Option<&str>, now_ms: u64) {
            let key_row = self.rows.entry(&[]);
            let had_header = has_header(key_row);
            key_row.drop_expired(now_ms);
            self.counter.set(self.counter.get() + 1);
            let dot = Dot { actor: Actor(self.actor), counter: self.counter.get() };
            let covered = key_row.context().clone();
            key_row.update(&covered, dot, now_ms, value.map(|v| Bytes::copy_from_slice(v.as_bytes())));
            settle(key_row, had_header);
        }

        /// Coordinates `op` here as a node does after the quorum read `read`: on its own key row and the rows the
        /// read found, merged with the read, then keeps what the write changed.
        pub(crate) fn coordinate(&mut self, read: &Rows, op: Op, now_ms: u64) -> Result<OpReply, OpError> {
            let mut rows = Rows::from_rows(
                self.rows.rows().iter().filter(|(row, _)| row.is_empty() || read.get(row).is_some()).cloned(),
            );
            rows.merge(read);
            let counter = &self.counter;
            let next = || {
                counter.set(counter.get() + 1);
                Dot { actor: Actor(self.actor), counter: counter.get() }
            };
            let stamp = Stamp {
                actor: Actor(self.actor),
                next_dot: &next,
                now_ms,
                timestamp_ms: now_ms,
                siblings: crate::config::PlainSiblings::Newest,
                may_empty: true,
                read: Some(read),
            };
            let (reply, _) = apply(&mut rows, &op, &stamp)?;
            self.rows.merge(&rows);
            Ok(reply)
        }

        /// The set's members as this replica reads them at time 0.
        pub(crate) fn members(&self) -> Vec<Bytes> {
            members(&self.rows, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Replica;
    use super::*;
    use crate::versioning::{Actor, Dot};
    use proptest::prelude::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_delete_clears_what_it_saw_and_a_concurrent_add_survives_it() {
        let mut r1 = Replica::new(1);
        r1.run(Op::SetAdd { members: vec![b("a"), b("b")] }, 1).unwrap();
        let mut r2 = Replica::with(2, r1.rows.clone());
        r1.run(Op::SetAdd { members: vec![b("c")] }, 2).unwrap();
        r2.put(None, 3);
        assert_eq!(kind_of(&r2.rows, 3), None);
        let mut merged = r1.rows.clone();
        merged.merge(&r2.rows);
        assert_eq!(members(&merged, 3), vec![b("c")], "a and b were seen by the delete, c was not");
        // The key's element rows are still stored; a new set on the key does not bring a or b back.
        let mut r3 = Replica::with(3, r2.rows.clone());
        assert_eq!(r3.run(Op::SetAdd { members: vec![b("a")] }, 4), Ok(OpReply::Integer(1)), "a is new again");
        assert_eq!(members(&r3.rows, 4), vec![b("a")]);
        // A string written over a set, then deleted: the next set starts empty.
        let mut r4 = Replica::with(4, merged.clone());
        r4.put(Some("text"), 5);
        assert_eq!(kind_of(&r4.rows, 5), Some(Kind::String));
        assert_eq!(r4.run(Op::SetAdd { members: vec![b("z")] }, 6), Err(OpError::WrongType));
        r4.put(None, 7);
        r4.run(Op::SetAdd { members: vec![b("z")] }, 8).unwrap();
        assert_eq!(members(&r4.rows, 8), vec![b("z")]);
    }

    /// A pop that empties the list its read saw, while a push reached the coordinator's replica between that read
    /// and the pop's apply: the pushed item survives, and so does the key.
    #[test]
    fn a_remove_that_empties_what_it_read_keeps_what_arrived_since() {
        let mut r = Replica::new(1);
        r.run(Op::ListPush { head: false, values: vec![b("a"), b("b")] }, 1).unwrap();
        let read = r.rows.clone();
        r.run(Op::ListPush { head: false, values: vec![b("c")] }, 2).unwrap();
        let reply = r.coordinate(&read, Op::ListPop { head: true, count: 2 }, 3).unwrap();
        assert_eq!(reply, OpReply::Members(vec![b("a"), b("b")]));
        assert_eq!(items(&r.rows, 3).into_iter().map(|(_, v)| v).collect::<Vec<_>>(), vec![b("c")]);
        assert_eq!(kind_of(&r.rows, 3), Some(Kind::List));
    }

    /// A pop whose read showed two items, one of which another pop took before this one applied: the items past
    /// the read are not cleared, though none the pop holds is left.
    #[test]
    fn a_pop_whose_read_went_stale_does_not_empty_the_list() {
        let mut r = Replica::new(1);
        r.run(Op::ListPush { head: false, values: vec![b("a"), b("b"), b("c")] }, 1).unwrap();
        let all = r.rows.clone();
        let named: Vec<Bytes> = items(&all, 1).into_iter().take(2).map(|(row, _)| row).collect();
        // The read: the key row and the first two items.
        let read = Rows::from_rows(all.rows().iter().filter(|(row, _)| row.is_empty() || named.contains(row)).cloned());
        // Another node pops b meanwhile; the coordinator's replica merges that before this pop applies.
        let mut other = Replica::with(2, all.clone());
        other.run(Op::ListRemove { count: 1, value: b("b") }, 2).unwrap();
        r.rows.merge(&other.rows);
        let reply = r.coordinate(&read, Op::ListPop { head: true, count: 1 }, 3).unwrap();
        assert_eq!(reply, OpReply::Members(vec![b("a")]));
        assert_eq!(items(&r.rows, 3).into_iter().map(|(_, v)| v).collect::<Vec<_>>(), vec![b("c")]);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Add { at: usize, m: u8 },
        Remove { at: usize, m: u8 },
        Delete { at: usize },
        Sync { from: usize, to: usize },
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => (0usize..3, 0u8..5).prop_map(|(at, m)| Step::Add { at, m }),
            2 => (0usize..3, 0u8..5).prop_map(|(at, m)| Step::Remove { at, m }),
            1 => (0usize..3).prop_map(|at| Step::Delete { at }),
            3 => (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Sync { from, to }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// With deletes of the whole key among the adds and removes: the rows merge as a join, and a member is in
        /// the merged set exactly when one of its adds was observed by no later add, remove or delete (a delete
        /// observes every add its key row's context covers).
        #[test]
        fn no_add_is_lost_but_to_a_removal_that_saw_it(steps in proptest::collection::vec(arb_step(), 0..50)) {
            let mut rs: Vec<Replica> = (1..=3).map(Replica::new).collect();
            let mut adds: Vec<(u8, Dot, bool)> = Vec::new();
            for (t, step) in steps.iter().enumerate() {
                let t = t as u64;
                match *step {
                    Step::Add { at, m } | Step::Remove { at, m } => {
                        let row = element_row(RowKind::Set, &b(&m.to_string()));
                        let key_row = rs[at].rows.key_row().cloned().unwrap_or_default();
                        let held: Vec<Dot> = rs[at].rows.get(&row).map_or(Vec::new(), |s| {
                            uncleared(&key_row, s).filter(|v| v.value.is_some()).map(|v| v.dot).collect()
                        });
                        for a in adds.iter_mut().filter(|a| held.contains(&a.1)) {
                            a.2 = true;
                        }
                        if matches!(step, Step::Add { .. }) {
                            rs[at].run(Op::SetAdd { members: vec![b(&m.to_string())] }, t).unwrap();
                            let dot = Dot { actor: Actor(rs[at].actor), counter: rs[at].counter.get() - 1 };
                            adds.push((m, dot, false));
                        } else {
                            rs[at].run(Op::SetRemove { members: vec![b(&m.to_string())] }, t).unwrap();
                        }
                    }
                    Step::Delete { at } => {
                        let context = rs[at].rows.key_row().map(|k| k.context().clone()).unwrap_or_default();
                        for a in adds.iter_mut().filter(|a| context.covers(a.1)) {
                            a.2 = true;
                        }
                        rs[at].put(None, t);
                    }
                    Step::Sync { from, to } => {
                        let s = rs[from].rows.clone();
                        rs[to].rows.merge(&s);
                    }
                }
            }
            let (a, b_, c) = (&rs[0].rows, &rs[1].rows, &rs[2].rows);
            let mut ab = a.clone(); ab.merge(b_);
            let mut ba = b_.clone(); ba.merge(a);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone(); ab_c.merge(c);
            let mut bc = b_.clone(); bc.merge(c);
            let mut a_bc = a.clone(); a_bc.merge(&bc);
            prop_assert_eq!(&ab_c, &a_bc);
            for m in 0u8..5 {
                let present = members(&ab_c, 100).contains(&b(&m.to_string()));
                let unobserved = adds.iter().any(|a| a.0 == m && !a.2);
                prop_assert_eq!(present, unobserved, "member {}", m);
            }
        }
    }
}

#[cfg(test)]
mod tally_tests {
    use super::*;
    use proptest::prelude::*;

    /// A model replica: each row at a version (0: absent), changed only by joins (the newer version wins), with
    /// its tally and latest changes as a store keeps them. A row counts as a live set member at an odd version.
    #[derive(Clone, Default)]
    struct Model {
        rows: std::collections::BTreeMap<u8, u32>,
        tally: Tally,
        recent: Vec<TallyChange>,
    }

    fn side(row: u8, version: u32) -> RowSide {
        match version {
            0 => (0, None),
            v => {
                let digest = md5::compute([&[row][..], &v.to_be_bytes()].concat()).0;
                (u128::from_be_bytes(digest), (v % 2 == 1).then_some(RowKind::Set))
            }
        }
    }

    impl Model {
        fn write(&mut self, row: u8, version: u32, keep: usize) {
            let before = self.rows.get(&row).copied().unwrap_or(0);
            if version <= before {
                return;
            }
            self.rows.insert(row, version);
            let change =
                TallyChange { element: u128::from(row), home: 0, before: side(row, before), after: side(row, version) };
            self.tally.apply(&change, true);
            self.recent.push(change);
            if self.recent.len() > keep {
                self.recent.remove(0);
            }
        }

        fn reply(&self) -> TallyReply {
            TallyReply { key_row: Some(header()), tally: self.tally, recent: self.recent.clone(), answer: None }
        }
    }

    fn header() -> Siblings {
        let mut s = Siblings::new();
        let dot = crate::versioning::Dot { actor: crate::versioning::Actor(1), counter: 1 };
        s.update_value(&VersionVector::default(), dot, 1, Some(Value::Header(RowKind::Set)));
        s
    }

    proptest! {
        /// Replicas that applied overlapping parts of one stream of writes, each in its own order: whenever
        /// `merged_count` answers, it answers the count of their merge, and it answers when the writes they do not
        /// share are among the changes they keep.
        #[test]
        fn merged_counts_are_the_count_of_the_merge(
            shared in proptest::collection::vec((0u8..12, 1u32..40), 0..30),
            apart in proptest::collection::vec((0u8..12, 1u32..40, 0u8..3), 0..12),
            keep in 1usize..20,
        ) {
            let mut replicas = [Model::default(), Model::default()];
            for &(row, version) in &shared {
                replicas.iter_mut().for_each(|r| r.write(row, version, keep));
            }
            // Writes one replica, the other, or both applied after the shared ones (the latest in flight).
            for &(row, version, to) in &apart {
                for (i, r) in replicas.iter_mut().enumerate() {
                    if to == 2 || usize::from(to) == i {
                        r.write(row, version, keep);
                    }
                }
            }
            let mut merged = replicas[0].rows.clone();
            for (&row, &v) in &replicas[1].rows {
                let e = merged.entry(row).or_insert(0);
                *e = (*e).max(v);
            }
            let expected = merged.values().filter(|&&v| v % 2 == 1).count() as u64;
            let replies: Vec<TallyReply> = replicas.iter().map(Model::reply).collect();
            match merged_count(&replies, RowKind::Set, 0) {
                Some((n, _)) => prop_assert_eq!(n, expected),
                None => prop_assert!(
                    apart.len() >= keep || replicas.iter().any(|r| r.rows != replicas[0].rows),
                    "no answer though the replicas are equal"
                ),
            }
            if replicas[0].rows == replicas[1].rows {
                prop_assert_eq!(merged_count(&replies, RowKind::Set, 0).map(|(n, _)| n), Some(expected));
            }
        }
    }

    /// A list item lives in one of two homes: a replica that took a push in and one that took the pop of the same
    /// item changed different rows, and only their states merged tell that the item is gone.
    #[test]
    fn a_list_item_changed_in_two_homes_is_not_counted_from_tallies() {
        let item = |home: u8, before: RowSide, after: RowSide| TallyChange { element: 9, home, before, after };
        let live = (11, Some(RowKind::List));
        let reply = |changes: Vec<TallyChange>| {
            let mut tally = Tally { counts: [0, 0, 0, 5], digest: 1 };
            changes.iter().for_each(|c| tally.apply(c, true));
            let mut key_row = Siblings::new();
            let dot = crate::versioning::Dot { actor: crate::versioning::Actor(1), counter: 1 };
            key_row.update_value(&VersionVector::default(), dot, 1, Some(Value::Header(RowKind::List)));
            TallyReply { key_row: Some(key_row), tally, recent: changes, answer: None }
        };
        let pushed = reply(vec![item(0, (0, None), live)]);
        let popped_elsewhere = reply(vec![item(1, (0, None), (12, None))]);
        assert_eq!(merged_count(&[pushed.clone(), popped_elsewhere], RowKind::List, 0), None);
        // One replica pushed and popped it (the live home emptied, the removed one holds it): it is not counted.
        let pushed_and_popped =
            reply(vec![item(0, (0, None), live), item(0, live, (0, None)), item(1, (0, None), (12, None))]);
        let untouched = reply(vec![]);
        assert_eq!(merged_count(&[pushed_and_popped, untouched.clone()], RowKind::List, 0).map(|(n, _)| n), Some(5));
        assert_eq!(merged_count(&[pushed, untouched], RowKind::List, 0).map(|(n, _)| n), Some(6));
    }

    #[test]
    fn replicas_apart_by_a_few_writes_are_counted_without_their_rows() {
        let (mut a, mut b) = (Model::default(), Model::default());
        for i in 0..50u8 {
            a.write(i % 20, u32::from(i) + 1, 32);
            b.write(i % 20, u32::from(i) + 1, 32);
        }
        // In flight: a has two more, b one other.
        a.write(30, 1, 32);
        a.write(31, 2, 32);
        b.write(32, 3, 32);
        let expected = [&a, &b].iter().flat_map(|r| r.rows.iter()).collect::<std::collections::BTreeMap<_, _>>();
        let expected = expected.values().filter(|&&&v| v % 2 == 1).count() as u64;
        assert_eq!(merged_count(&[a.reply(), b.reply()], RowKind::Set, 0).map(|(n, _)| n), Some(expected));
        // The same row at two different states on two replicas: only its rows can tell.
        let mut c = b.clone();
        a.write(33, 5, 32);
        c.write(33, 7, 32);
        assert_eq!(merged_count(&[a.reply(), c.reply()], RowKind::Set, 0), None);
        // Keys that cleared different writes count different rows as live.
        let mut other = b.reply();
        other.key_row.as_mut().unwrap().clear_elements();
        assert_ne!(other.key_row, b.reply().key_row);
        assert_eq!(merged_count(&[b.reply(), other], RowKind::Set, 0), None);
    }
}
