//! A sorted set's members in score order, and the reads that walk it (ZRANGE and its kin, ZRANK, ZCOUNT).
//!
//! A read is a [`ZQuery`], answered by [`ZQuery::answer`] over any [`Order`]: a replica's [`ScoreOrder`] (kept in
//! step with its element rows, so a range costs the members it returns, not the set's size) or, after a read of
//! every member, the sorted list of the merge. One function answers both ways, so the two cannot disagree.
//!
//! Members are ordered by score (`f64::total_cmp`), then by member bytes, as `crdt::rows::scored` sorts them.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One end of a score range: the score, and whether it is excluded (`(5`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreBound {
    /// The score.
    pub score: f64,
    /// Excluded from the range.
    pub exclusive: bool,
}

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
    /// Members in order from the lowest score (the highest with `rev`), starting at the first whose score is not
    /// before `from` in that direction (`None`: the first of all).
    fn walk(&self, rev: bool, from: Option<f64>) -> Box<dyn Iterator<Item = (&Bytes, f64)> + '_>;
    /// A member's score.
    fn score(&self, member: &Bytes) -> Option<f64>;
    /// How many members come before `member` (whose score is `score`), counting from the highest with `rev`.
    fn rank(&self, member: &Bytes, score: f64, rev: bool) -> u64;
}

/// The first score a walk starting at `bound` must look at: -0.0 and 0.0 compare equal as scores but not in
/// `total_cmp`'s order, so a walk up starts at -0.0 and a walk down at 0.0 for either.
fn start(bound: ScoreBound, rev: bool) -> f64 {
    match (bound.score == 0.0, rev) {
        (true, false) => -0.0,
        (true, true) => 0.0,
        (false, _) => bound.score,
    }
}

impl ZQuery {
    /// The answer over `order`.
    pub fn answer(&self, order: &(impl Order + ?Sized)) -> ZAnswer {
        let members = |it: &mut dyn Iterator<Item = (&Bytes, f64)>| {
            ZAnswer::Members(it.map(|(m, s)| (m.clone(), s.to_bits())).collect())
        };
        match self {
            ZQuery::Count(min, max) => {
                let n = order.walk(false, Some(start(*min, false))).skip_while(|(_, s)| !min.below(*s));
                ZAnswer::Count(n.take_while(|(_, s)| max.above(*s)).count() as u64)
            }
            ZQuery::Rank { member, rev } => {
                ZAnswer::Rank(order.score(member).map(|s| (order.rank(member, s, *rev), s.to_bits())))
            }
            ZQuery::Range { rev, bounds: ZBounds::Index(first, last), .. } => {
                let range = super::list::index_range(*first, *last, order.len());
                members(&mut order.walk(*rev, None).skip(range.start).take(range.len()))
            }
            ZQuery::Range { rev, bounds: ZBounds::Score(min, max), limit } => {
                let (from, until) = if *rev { (*max, *min) } else { (*min, *max) };
                let mut matching = order
                    .walk(*rev, Some(start(from, *rev)))
                    .skip_while(move |(_, s)| if *rev { !from.above(*s) } else { !from.below(*s) })
                    .take_while(move |(_, s)| if *rev { until.below(*s) } else { until.above(*s) });
                match *limit {
                    Some((offset, _)) if offset < 0 => ZAnswer::Members(Vec::new()),
                    Some((offset, count)) => {
                        let count = if count < 0 { usize::MAX } else { count as usize };
                        members(&mut matching.skip(offset as usize).take(count))
                    }
                    None => members(&mut matching),
                }
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

    fn walk(&self, rev: bool, from: Option<f64>) -> Box<dyn Iterator<Item = (&Bytes, f64)> + '_> {
        fn pair((m, s): &(Bytes, f64)) -> (&Bytes, f64) {
            (m, *s)
        }
        match (rev, from) {
            (false, None) => Box::new(self.iter().map(pair)),
            (true, None) => Box::new(self.iter().rev().map(pair)),
            (false, Some(x)) => {
                let at = self.partition_point(|(_, s)| s.total_cmp(&x).is_lt());
                Box::new(self[at..].iter().map(pair))
            }
            (true, Some(x)) => {
                let end = self.partition_point(|(_, s)| s.total_cmp(&x).is_le());
                Box::new(self[..end].iter().rev().map(pair))
            }
        }
    }

    fn score(&self, member: &Bytes) -> Option<f64> {
        self.iter().find(|(m, _)| m == member).map(|(_, s)| *s)
    }

    fn rank(&self, member: &Bytes, _score: f64, rev: bool) -> u64 {
        let at = self.iter().position(|(m, _)| m == member).unwrap_or(0);
        (if rev { self.len() - 1 - at } else { at }) as u64
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

/// A replica's sorted-set members in score order, kept in step with its element rows (`KvStore` updates it under
/// the key's lock as rows are written and deleted).
#[derive(Clone, Debug, Default)]
pub struct ScoreOrder {
    by_score: BTreeSet<(u64, Bytes)>,
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
            self.by_score.remove(&(old, member));
        }
        if let Some(key) = new {
            let member = Bytes::copy_from_slice(member);
            self.scores.insert(member.clone(), key);
            self.by_score.insert((key, member));
        }
    }
}

impl Order for ScoreOrder {
    fn len(&self) -> usize {
        self.scores.len()
    }

    fn walk(&self, rev: bool, from: Option<f64>) -> Box<dyn Iterator<Item = (&Bytes, f64)> + '_> {
        fn pair((k, m): &(u64, Bytes)) -> (&Bytes, f64) {
            (m, from_order_key(*k))
        }
        match (rev, from) {
            (false, None) => Box::new(self.by_score.iter().map(pair)),
            (true, None) => Box::new(self.by_score.iter().rev().map(pair)),
            (false, Some(x)) => Box::new(self.by_score.range((order_key(x), Bytes::new())..).map(pair)),
            (true, Some(x)) => {
                let end = match order_key(x).checked_add(1) {
                    Some(next) => Bound::Excluded((next, Bytes::new())),
                    None => Bound::Unbounded,
                };
                Box::new(self.by_score.range((Bound::Unbounded, end)).rev().map(pair))
            }
        }
    }

    fn score(&self, member: &Bytes) -> Option<f64> {
        self.scores.get(member).map(|k| from_order_key(*k))
    }

    fn rank(&self, member: &Bytes, score: f64, rev: bool) -> u64 {
        let at = (order_key(score), member.clone());
        let n = if rev {
            self.by_score.range((Bound::Excluded(at), Bound::Unbounded)).count()
        } else {
            self.by_score.range(..at).count()
        };
        n as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bound(score: f64, exclusive: bool) -> ScoreBound {
        ScoreBound { score, exclusive }
    }

    fn scores() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-3i32..4).prop_map(f64::from),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            (-3.0f64..3.0),
        ]
    }

    fn queries() -> impl Strategy<Value = ZQuery> {
        let score_bounds =
            || (scores(), any::<bool>(), scores(), any::<bool>()).prop_map(|(a, x, b, y)| (bound(a, x), bound(b, y)));
        prop_oneof![
            (any::<bool>(), -8i64..8, -8i64..8).prop_map(|(rev, a, b)| ZQuery::Range {
                rev,
                bounds: ZBounds::Index(a, b),
                limit: None
            }),
            (any::<bool>(), score_bounds(), proptest::option::of((-1i64..4, -1i64..4)))
                .prop_map(|(rev, (min, max), limit)| ZQuery::Range { rev, bounds: ZBounds::Score(min, max), limit }),
            (any::<bool>(), 0u8..8).prop_map(|(rev, m)| ZQuery::Rank { member: Bytes::from(vec![m]), rev }),
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
            changes in proptest::collection::vec((0u8..8, proptest::option::of(scores())), 0..40),
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
