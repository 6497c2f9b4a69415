//! A sorted set's members in score order, and the reads that walk it (ZRANGE and its kin, ZRANK, ZCOUNT).
//!
//! A read is a [`ZQuery`], answered by [`ZQuery::answer`] over any [`Order`]: a replica's [`ScoreOrder`] (kept in
//! step with its element rows, so a range costs the members it returns, not the set's size) or, after a read of
//! every member, the sorted list of the merge. One function answers both ways, so the two cannot disagree.
//!
//! Members are ordered by score (`f64::total_cmp`), then by member bytes, as `crdt::rows::scored` sorts them.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One end of a score range: the score (never NaN: the parse refuses it, as Redis does), and whether it is
/// excluded (`(5`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreBound {
    /// The score.
    pub score: f64,
    /// Excluded from the range.
    pub exclusive: bool,
}

#[cfg(test)]
impl ScoreBound {
    /// Whether `score` lies above this bound, as a minimum.
    fn below(self, score: f64) -> bool {
        if self.exclusive { score > self.score } else { score >= self.score }
    }

    /// Whether `score` lies under this bound, as a maximum.
    fn above(self, score: f64) -> bool {
        if self.exclusive { score < self.score } else { score <= self.score }
    }
}

/// What a range read selects.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ZBounds {
    /// Redis's inclusive index range (negative: from the end).
    Index(i64, i64),
    /// Minimum and maximum scores.
    Score(ScoreBound, ScoreBound),
}

/// A read of a sorted set's order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ZQuery {
    /// ZRANGE and its kin: the members in the bounds, highest first with `rev`, and with score bounds a LIMIT
    /// (offset, count; a negative count: all).
    Range {
        /// Highest score first.
        rev: bool,
        /// Which members.
        bounds: ZBounds,
        /// LIMIT offset count (score bounds only).
        limit: Option<(i64, i64)>,
    },
    /// ZRANK and ZREVRANK: the member's rank (from the highest with `rev`) and score.
    Rank {
        /// The member.
        member: Bytes,
        /// Counted from the highest score.
        rev: bool,
    },
    /// ZCOUNT: how many members' scores lie between the bounds.
    Count(ScoreBound, ScoreBound),
}

/// The answer to a [`ZQuery`]; scores as their bits, so that answers compare exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZAnswer {
    /// Members with their scores, in the order asked.
    Members(Vec<(Bytes, u64)>),
    /// The rank and score, or none for a member not in the set.
    Rank(Option<(u64, u64)>),
    /// A count.
    Count(u64),
}

/// Members in score order, as a read walks them.
pub trait Order {
    /// How many members.
    fn len(&self) -> usize;
    /// Whether it holds no member.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Members in order from the lowest score (the highest with `rev`), from the `index`th on.
    fn walk_at(&self, rev: bool, index: usize) -> Box<dyn Iterator<Item = (&Bytes, f64)> + '_>;
    /// How many members' order keys ([`order_key`]) lie below `key`.
    fn below(&self, key: u64) -> usize;
    /// A member's score.
    fn score(&self, member: &Bytes) -> Option<f64>;
    /// How many members come before `member` (whose score is `score`), counting from the highest with `rev`.
    fn rank(&self, member: &Bytes, score: f64, rev: bool) -> u64;
}

impl ScoreBound {
    /// How many members of `order` lie outside this bound as a minimum: their scores are below it (or equal, when
    /// it is exclusive). Scores -0.0 and 0.0 are equal, though `total_cmp` orders them; NaN lies beyond every bound.
    fn under_min(self, order: &(impl Order + ?Sized)) -> usize {
        match self.exclusive {
            false => order.below(order_key(if self.score == 0.0 { -0.0 } else { self.score })),
            true => order.below(order_key(if self.score == 0.0 { 0.0 } else { self.score }) + 1),
        }
    }

    /// How many members of `order` lie under this bound as a maximum (and below every member above it).
    fn under_max(self, order: &(impl Order + ?Sized)) -> usize {
        ScoreBound { exclusive: !self.exclusive, ..self }.under_min(order)
    }
}

impl ZQuery {
    /// The answer over `order`. Every part is found by position (how many members lie below a bound), so over a
    /// kept order a read costs the members it returns and a walk of the order's blocks, not of its members.
    pub fn answer(&self, order: &(impl Order + ?Sized)) -> ZAnswer {
        let members = |it: &mut dyn Iterator<Item = (&Bytes, f64)>| {
            ZAnswer::Members(it.map(|(m, s)| (m.clone(), s.to_bits())).collect())
        };
        match self {
            ZQuery::Count(min, max) => ZAnswer::Count(max.under_max(order).saturating_sub(min.under_min(order)) as u64),
            ZQuery::Rank { member, rev } => {
                ZAnswer::Rank(order.score(member).map(|s| (order.rank(member, s, *rev), s.to_bits())))
            }
            ZQuery::Range { rev, bounds: ZBounds::Index(first, last), .. } => {
                let range = super::list::index_range(*first, *last, order.len());
                members(&mut order.walk_at(*rev, range.start).take(range.len()))
            }
            ZQuery::Range { rev, bounds: ZBounds::Score(min, max), limit } => {
                let (low, high) = (min.under_min(order), max.under_max(order));
                let matching = high.saturating_sub(low);
                // The first in the direction of the walk: past those below the minimum, or above the maximum.
                let first = if *rev { order.len() - high } else { low };
                let (offset, count) = match *limit {
                    Some((offset, _)) if offset < 0 => return ZAnswer::Members(Vec::new()),
                    Some((offset, count)) => (offset as usize, if count < 0 { usize::MAX } else { count as usize }),
                    None => (0, usize::MAX),
                };
                let take = matching.saturating_sub(offset).min(count);
                if take == 0 {
                    return ZAnswer::Members(Vec::new());
                }
                members(&mut order.walk_at(*rev, first + offset).take(take))
            }
        }
    }

    /// The answer for a key holding no sorted set.
    pub fn empty(&self) -> ZAnswer {
        match self {
            ZQuery::Range { .. } => ZAnswer::Members(Vec::new()),
            ZQuery::Rank { .. } => ZAnswer::Rank(None),
            ZQuery::Count(..) => ZAnswer::Count(0),
        }
    }
}

/// Every member of a read, sorted by score then member (`crdt::rows::scored`).
impl Order for [(Bytes, f64)] {
    fn len(&self) -> usize {
        <[(Bytes, f64)]>::len(self)
    }

    fn walk_at(&self, rev: bool, index: usize) -> Box<dyn Iterator<Item = (&Bytes, f64)> + '_> {
        fn pair((m, s): &(Bytes, f64)) -> (&Bytes, f64) {
            (m, *s)
        }
        let n = <[(Bytes, f64)]>::len(self);
        match rev {
            false => Box::new(self[index.min(n)..].iter().map(pair)),
            true => Box::new(self[..n.saturating_sub(index)].iter().rev().map(pair)),
        }
    }

    fn below(&self, key: u64) -> usize {
        self.partition_point(|(_, s)| order_key(*s) < key)
    }

    fn score(&self, member: &Bytes) -> Option<f64> {
        self.iter().find(|(m, _)| m == member).map(|(_, s)| *s)
    }

    fn rank(&self, member: &Bytes, _score: f64, rev: bool) -> u64 {
        let at = self.iter().position(|(m, _)| m == member).unwrap_or(0);
        (if rev { <[(Bytes, f64)]>::len(self) - 1 - at } else { at }) as u64
    }
}

/// A score as a key that sorts as `f64::total_cmp` does.
fn order_key(score: f64) -> u64 {
    let bits = score.to_bits();
    if bits >> 63 == 1 { !bits } else { bits | 1 << 63 }
}

/// The score an [`order_key`] holds.
fn from_order_key(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 { key & !(1 << 63) } else { !key })
}

/// Entries a block of a [`ScoreOrder`] holds before it splits in two (a few in unit tests, so that they split and
/// merge blocks).
const BLOCK: usize = if cfg!(test) { 8 } else { 1024 };

/// An entry of a [`ScoreOrder`]: the score's [`order_key`], then the member.
type Entry = (u64, Bytes);

/// A replica's sorted-set members in score order, kept in step with its element rows (`KvStore` updates it under
/// the key's lock as rows are written and deleted).
///
/// The entries lie in sorted blocks of at most [`BLOCK`] (a block split in two when it grows past it, merged with
/// a neighbour when it shrinks below a quarter of it), so a member's rank, or where the `i`th member lies, is a sum
/// over the blocks' lengths and a search in one block: O(n / BLOCK + log BLOCK), a few microseconds at a million
/// members, where a balanced tree without counts walks every member before it. A change moves at most one block's
/// entries.
#[derive(Clone, Debug, Default)]
pub struct ScoreOrder {
    blocks: Vec<Vec<Entry>>,
    scores: HashMap<Bytes, u64>,
}

impl ScoreOrder {
    /// Sets a member's score (`None`: it is no member).
    pub fn set(&mut self, member: &[u8], score: Option<f64>) {
        let new = score.map(order_key);
        if self.scores.get(member).copied() == new {
            return;
        }
        if let Some((member, old)) = self.scores.remove_entry(member) {
            self.remove(&(old, member));
        }
        if let Some(key) = new {
            let member = Bytes::copy_from_slice(member);
            self.scores.insert(member.clone(), key);
            self.insert((key, member));
        }
    }

    /// The block an entry belongs in (the first whose last entry is not below it; the last block past them all).
    fn block_of(&self, entry: &Entry) -> usize {
        let b = self.blocks.partition_point(|block| block.last().is_some_and(|last| last < entry));
        b.min(self.blocks.len().saturating_sub(1))
    }

    fn insert(&mut self, entry: Entry) {
        if self.blocks.is_empty() {
            self.blocks.push(Vec::with_capacity(BLOCK));
        }
        let b = self.block_of(&entry);
        let block = &mut self.blocks[b];
        let at = block.partition_point(|e| *e < entry);
        block.insert(at, entry);
        if block.len() > BLOCK {
            let upper = block.split_off(BLOCK / 2);
            self.blocks.insert(b + 1, upper);
        }
    }

    fn remove(&mut self, entry: &Entry) {
        let b = self.block_of(entry);
        let block = &mut self.blocks[b];
        let Ok(at) = block.binary_search(entry) else { return };
        block.remove(at);
        if block.is_empty() {
            self.blocks.remove(b);
        } else if block.len() < BLOCK / 4 {
            // Merge with a neighbour that leaves room, so blocks stay few.
            let fits = |other: &Vec<Entry>| other.len() + self.blocks[b].len() <= BLOCK;
            if b + 1 < self.blocks.len() && fits(&self.blocks[b + 1]) {
                let next = self.blocks.remove(b + 1);
                self.blocks[b].extend(next);
            } else if b > 0 && fits(&self.blocks[b - 1]) {
                let this = self.blocks.remove(b);
                self.blocks[b - 1].extend(this);
            }
        }
    }

    /// How many entries lie below `entry`.
    fn position(&self, entry: &Entry) -> usize {
        if self.blocks.is_empty() {
            return 0;
        }
        let b = self.block_of(entry);
        self.blocks[..b].iter().map(Vec::len).sum::<usize>() + self.blocks[b].partition_point(|e| e < entry)
    }

    /// The block and place in it of the `index`th entry (past the end: the number of blocks).
    fn locate(&self, mut index: usize) -> (usize, usize) {
        for (b, block) in self.blocks.iter().enumerate() {
            if index < block.len() {
                return (b, index);
            }
            index -= block.len();
        }
        (self.blocks.len(), 0)
    }
}

impl Order for ScoreOrder {
    fn len(&self) -> usize {
        self.scores.len()
    }

    fn walk_at(&self, rev: bool, index: usize) -> Box<dyn Iterator<Item = (&Bytes, f64)> + '_> {
        fn pair((k, m): &Entry) -> (&Bytes, f64) {
            (m, from_order_key(*k))
        }
        let n = self.scores.len();
        if index >= n {
            return Box::new(std::iter::empty());
        }
        match rev {
            false => {
                let (b, at) = self.locate(index);
                Box::new(self.blocks[b][at..].iter().chain(self.blocks[b + 1..].iter().flatten()).map(pair))
            }
            true => {
                let (b, at) = self.locate(n - 1 - index);
                let earlier = self.blocks[..b].iter().rev().flat_map(|block| block.iter().rev());
                Box::new(self.blocks[b][..=at].iter().rev().chain(earlier).map(pair))
            }
        }
    }

    fn below(&self, key: u64) -> usize {
        self.position(&(key, Bytes::new()))
    }

    fn score(&self, member: &Bytes) -> Option<f64> {
        self.scores.get(member).map(|k| from_order_key(*k))
    }

    fn rank(&self, member: &Bytes, score: f64, rev: bool) -> u64 {
        let before = self.position(&(order_key(score), member.clone()));
        (if rev { self.scores.len() - 1 - before } else { before }) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bound(score: f64, exclusive: bool) -> ScoreBound {
        ScoreBound { score, exclusive }
    }

    /// Scores a bound can hold: never NaN, which the parse refuses as Redis does.
    fn bound_scores() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-3i32..4).prop_map(f64::from),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            (-3.0f64..3.0),
        ]
    }

    /// Scores a member can hold: NaN too, which a merge of concurrent increments of +inf and -inf can give.
    fn scores() -> impl Strategy<Value = f64> {
        prop_oneof![4 => bound_scores(), 1 => Just(f64::NAN), 1 => Just(-f64::NAN)]
    }

    fn queries() -> impl Strategy<Value = ZQuery> {
        let score_bounds = || {
            (bound_scores(), any::<bool>(), bound_scores(), any::<bool>())
                .prop_map(|(a, x, b, y)| (bound(a, x), bound(b, y)))
        };
        prop_oneof![
            (any::<bool>(), -45i64..45, -45i64..45).prop_map(|(rev, a, b)| ZQuery::Range {
                rev,
                bounds: ZBounds::Index(a, b),
                limit: None
            }),
            (any::<bool>(), score_bounds(), proptest::option::of((-1i64..30, -1i64..30)))
                .prop_map(|(rev, (min, max), limit)| ZQuery::Range { rev, bounds: ZBounds::Score(min, max), limit }),
            (any::<bool>(), 0u8..40).prop_map(|(rev, m)| ZQuery::Rank { member: Bytes::from(vec![m]), rev }),
            score_bounds().prop_map(|(min, max)| ZQuery::Count(min, max)),
        ]
    }

    /// The answer as Redis's definitions give it, over every member: filter, then order, then cut.
    fn model(all: &[(Bytes, f64)], q: &ZQuery) -> ZAnswer {
        let mut sorted = all.to_vec();
        sorted.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let bits = |v: Vec<(Bytes, f64)>| ZAnswer::Members(v.into_iter().map(|(m, s)| (m, s.to_bits())).collect());
        match q {
            ZQuery::Count(min, max) => {
                ZAnswer::Count(sorted.iter().filter(|(_, s)| min.below(*s) && max.above(*s)).count() as u64)
            }
            ZQuery::Rank { member, rev } => {
                if *rev {
                    sorted.reverse();
                }
                ZAnswer::Rank(sorted.iter().position(|(m, _)| m == member).map(|i| (i as u64, sorted[i].1.to_bits())))
            }
            ZQuery::Range { rev, bounds, limit } => {
                if *rev {
                    sorted.reverse();
                }
                match bounds {
                    ZBounds::Index(a, b) => {
                        bits(sorted[super::super::list::index_range(*a, *b, sorted.len())].to_vec())
                    }
                    ZBounds::Score(min, max) => {
                        let within = sorted.into_iter().filter(|(_, s)| min.below(*s) && max.above(*s));
                        bits(match *limit {
                            Some((o, _)) if o < 0 => Vec::new(),
                            Some((o, c)) => {
                                within.skip(o as usize).take(if c < 0 { usize::MAX } else { c as usize }).collect()
                            }
                            None => within.collect(),
                        })
                    }
                }
            }
        }
    }

    proptest! {
        /// Every query answers the same over a kept order (built by any sequence of score changes) and over the
        /// sorted members, and both answer as the model does.
        #[test]
        fn an_order_answers_as_the_sorted_members(
            changes in proptest::collection::vec((0u8..40, proptest::option::of(scores())), 0..200),
            q in queries(),
        ) {
            let mut order = ScoreOrder::default();
            let mut model_scores: std::collections::BTreeMap<u8, f64> = Default::default();
            for (m, s) in &changes {
                order.set(&[*m], *s);
                match s {
                    Some(s) => model_scores.insert(*m, *s),
                    None => model_scores.remove(m),
                };
            }
            let mut all: Vec<(Bytes, f64)> = model_scores.iter().map(|(m, s)| (Bytes::from(vec![*m]), *s)).collect();
            all.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
            let expected = model(&all, &q);
            prop_assert_eq!(q.answer(&order), expected.clone());
            prop_assert_eq!(q.answer(all.as_slice()), expected);
            prop_assert_eq!(order.len(), all.len());
        }
    }

    #[test]
    fn order_keys_sort_as_total_cmp() {
        let xs = [f64::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-300, 3.0, f64::INFINITY];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{} < {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(from_order_key(order_key(x)).to_bits(), x.to_bits());
        }
    }
}
