//! Sorted sets: ZADD, ZINCRBY, ZREM, ZPOPMIN, ZPOPMAX (typed writes, see [`crate::crdt::zset`]) and ZSCORE,
//! ZMSCORE, ZCOUNT, ZRANK, ZREVRANK, ZRANGE, ZRANGEBYSCORE, ZREVRANGE, ZREVRANGEBYSCORE (quorum reads of the merged
//! set), with Redis's replies. ZCARD is a count (`commands::card`).

use bytes::Bytes;

use super::parse::Parse;
use super::{NodeContext, coord_error, integer_reply, parse_int, read_collection, syntax_error};
use crate::coordinator::now_ms;
use crate::crdt::rows;
use crate::crdt::zset::{self, AddFlags};
use crate::crdt::{Op, OpReply};
use crate::resp::Reply;
use crate::versioning::RowKind;

fn not_a_float() -> Reply {
    Reply::error("ERR value is not a valid float")
}

/// A score argument, or Redis's refusal.
pub fn score(arg: &[u8]) -> Result<f64, Reply> {
    zset::parse_score(arg).ok_or_else(not_a_float)
}

/// ZADD, parsed.
#[derive(Debug)]
pub struct ZAdd {
    key: Bytes,
    flags: AddFlags,
    /// Each member with its score's bits.
    entries: Vec<(u64, Bytes)>,
}

impl ZAdd {
    /// ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...].
    pub fn parse(p: &mut Parse) -> Result<Self, Reply> {
        let key = p.key()?;
        let mut flags = AddFlags::default();
        while let Some(option) = p.peek() {
            match option.to_ascii_uppercase().as_slice() {
                b"NX" => flags.nx = true,
                b"XX" => flags.xx = true,
                b"GT" => flags.gt = true,
                b"LT" => flags.lt = true,
                b"CH" => flags.ch = true,
                b"INCR" => flags.incr = true,
                _ => break,
            }
            p.next()?;
        }
        let rest = p.rest();
        if rest.is_empty() || !rest.len().is_multiple_of(2) {
            return Err(syntax_error());
        }
        if flags.nx && flags.xx {
            return Err(Reply::error("ERR XX and NX options at the same time are not compatible"));
        }
        if [flags.gt, flags.lt, flags.nx].iter().filter(|f| **f).count() > 1 {
            return Err(Reply::error("ERR GT, LT, and/or NX options at the same time are not compatible"));
        }
        if flags.incr && rest.len() != 2 {
            return Err(Reply::error("ERR INCR option supports a single increment-element pair"));
        }
        let entries =
            rest.chunks(2).map(|pair| Ok((score(&pair[0])?.to_bits(), pair[1].clone()))).collect::<Result<_, _>>()?;
        Ok(ZAdd { key, flags, entries })
    }

    /// How many members were added (with CH: changed), or with INCR the new score (nil when a condition stopped it).
    pub async fn apply(self, node: &NodeContext) -> Reply {
        match node.coordinator.apply(self.key, Op::ZAdd { entries: self.entries, flags: self.flags }, None).await {
            Ok(OpReply::Integer(n)) => Reply::Integer(n),
            Ok(OpReply::Bulk(score)) => score.map_or(Reply::Nil, |s| Reply::Double(parse(&s))),
            Ok(other) => unreachable!("ZADD answers a count or a score, not {other:?}"),
            Err(e) => coord_error(e),
        }
    }
}

/// A score this node printed, read back.
fn parse(b: &Bytes) -> f64 {
    zset::parse_score(b).unwrap_or(f64::NAN)
}

/// ZINCRBY key increment member: the new score.
pub async fn zincrby(node: &NodeContext, key: Bytes, by: u64, member: Bytes) -> Reply {
    match node.coordinator.apply(key, Op::ZIncr { member, by }, None).await {
        Ok(OpReply::Bulk(Some(score))) => Reply::Double(parse(&score)),
        Ok(other) => unreachable!("ZINCRBY answers a score, not {other:?}"),
        Err(e) => coord_error(e),
    }
}

/// ZREM key member [member ...]: how many were members.
pub async fn zrem(node: &NodeContext, key: Bytes, members: Vec<Bytes>) -> Reply {
    integer_reply(node.coordinator.apply(key, Op::ZRemove { members }, None).await)
}

/// ZPOPMIN and ZPOPMAX key [count]: without a count the member and its score (empty when none); with one, pairs.
pub async fn zpop(node: &NodeContext, key: Bytes, max: bool, count: Option<usize>) -> Reply {
    let op = Op::ZPop { max, count: count.unwrap_or(1) };
    match node.coordinator.apply(key, op, None).await {
        Ok(OpReply::Members(flat)) => {
            let pairs: Vec<(Reply, Reply)> =
                flat.chunks(2).map(|p| (Reply::Bulk(p[0].clone()), Reply::Double(parse(&p[1])))).collect();
            match count {
                None => Reply::Array(pairs.into_iter().flat_map(|(m, s)| [m, s]).collect()),
                Some(_) => Reply::Pairs(pairs),
            }
        }
        Ok(other) => unreachable!("a pop answers members, not {other:?}"),
        Err(e) => coord_error(e),
    }
}

/// One end of a score range: the score and whether it is excluded (`(5`).
fn score_bound(b: &[u8]) -> Option<(f64, bool)> {
    match b.strip_prefix(b"(") {
        Some(rest) => zset::parse_score(rest).map(|s| (s, true)),
        None => zset::parse_score(b).map(|s| (s, false)),
    }
}

fn within(score: f64, min: (f64, bool), max: (f64, bool)) -> bool {
    (if min.1 { score > min.0 } else { score >= min.0 }) && (if max.1 { score < max.0 } else { score <= max.0 })
}

/// How a range read answers.
#[derive(Debug)]
pub struct RangeQuery {
    by_score: bool,
    rev: bool,
    limit: Option<(i64, i64)>,
    with_scores: bool,
}

/// Parses the options after ZRANGE's start and stop (or after ZRANGEBYSCORE's min and max).
fn range_options(args: &[Bytes], mut q: RangeQuery) -> Result<RangeQuery, Reply> {
    let mut i = 0;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"BYSCORE" => q.by_score = true,
            b"BYLEX" => {
                return Err(Reply::error("ERR ZRANGE BYLEX is not supported: order members by score"));
            }
            b"REV" => q.rev = true,
            b"WITHSCORES" => q.with_scores = true,
            b"LIMIT" if i + 2 < args.len() => {
                q.limit = Some((parse_int(&args[i + 1])?, parse_int(&args[i + 2])?));
                i += 2;
            }
            _ => return Err(syntax_error()),
        }
        i += 1;
    }
    if q.limit.is_some() && !q.by_score {
        return Err(Reply::error(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        ));
    }
    Ok(q)
}

/// A read of a sorted set, its arguments parsed (and refused, as Redis does, before the key is read).
#[derive(Debug)]
pub enum ZRead {
    Score(Bytes),
    MScore(Vec<Bytes>),
    Count((f64, bool), (f64, bool)),
    Rank { member: Bytes, rev: bool, with_score: bool },
    Range(RangeQuery, Bounds),
}

/// What a range read selects.
#[derive(Debug)]
pub enum Bounds {
    /// Redis's inclusive index range.
    Index(i64, i64),
    /// Minimum and maximum scores, each maybe exclusive.
    Score((f64, bool), (f64, bool)),
}

impl ZRead {
    /// The read command `name`'s arguments after the key.
    pub fn parse(name: &str, p: &mut Parse) -> Result<Self, Reply> {
        let bounds = |a: &Bytes, b: &Bytes| match (score_bound(a), score_bound(b)) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Reply::error("ERR min or max is not a float")),
        };
        Ok(match name {
            "zscore" => ZRead::Score(p.bytes()?),
            "zmscore" => ZRead::MScore(p.rest().to_vec()),
            "zcount" => {
                let (min, max) = bounds(p.next()?, p.next()?)?;
                ZRead::Count(min, max)
            }
            "zrank" | "zrevrank" => {
                let member = p.bytes()?;
                let with_score = match p.rest() {
                    [] => false,
                    [a] if a.eq_ignore_ascii_case(b"WITHSCORE") => true,
                    _ => return Err(syntax_error()),
                };
                ZRead::Rank { member, rev: name == "zrevrank", with_score }
            }
            _ => {
                let base = RangeQuery {
                    by_score: name.ends_with("byscore"),
                    rev: name.starts_with("zrev"),
                    limit: None,
                    with_scores: false,
                };
                let (start, stop) = (p.next()?, p.next()?);
                let q = range_options(p.rest(), base)?;
                let b = if q.by_score {
                    // With REV (or ZREVRANGEBYSCORE) the first bound is the maximum.
                    let (a, b) = bounds(start, stop)?;
                    if q.rev { Bounds::Score(b, a) } else { Bounds::Score(a, b) }
                } else {
                    Bounds::Index(parse_int(start)?, parse_int(stop)?)
                };
                ZRead::Range(q, b)
            }
        })
    }

    /// Runs the read on the sorted set at `key`, after a quorum read.
    pub async fn apply(self, node: &NodeContext, key: Bytes) -> Reply {
        // Scores of named members read those members' rows; the others read every member.
        let asked = match &self {
            ZRead::Score(m) => Some(std::slice::from_ref(m)),
            ZRead::MScore(ms) => Some(ms.as_slice()),
            _ => None,
        };
        let all = match read_collection(node, &key, RowKind::ZSet, asked).await {
            Ok(rows) => rows::scored(&rows, now_ms()),
            Err(reply) => return reply,
        };
        let score = |m: &Bytes| all.iter().find(|(x, _)| x == m).map(|(_, s)| *s);
        match self {
            ZRead::Score(m) => score(&m).map_or(Reply::Nil, Reply::Double),
            ZRead::MScore(ms) => Reply::Array(ms.iter().map(|m| score(m).map_or(Reply::Nil, Reply::Double)).collect()),
            ZRead::Count(min, max) => Reply::Integer(all.iter().filter(|(_, s)| within(*s, min, max)).count() as i64),
            ZRead::Rank { member, rev, with_score } => {
                let mut all = all;
                if rev {
                    all.reverse();
                }
                match all.iter().position(|(m, _)| *m == member) {
                    None => Reply::Nil,
                    Some(i) if with_score => Reply::Array(vec![Reply::Integer(i as i64), Reply::Double(all[i].1)]),
                    Some(i) => Reply::Integer(i as i64),
                }
            }
            ZRead::Range(q, bounds) => range(all, &q, bounds),
        }
    }
}

/// ZRANGE, ZRANGEBYSCORE, ZREVRANGE and ZREVRANGEBYSCORE over every member, ordered by score.
fn range(mut all: Vec<(Bytes, f64)>, q: &RangeQuery, bounds: Bounds) -> Reply {
    if q.rev {
        all.reverse();
    }
    let picked: Vec<(Bytes, f64)> = match bounds {
        Bounds::Score(min, max) => {
            let matching = all.into_iter().filter(|(_, s)| within(*s, min, max));
            match q.limit {
                Some((offset, _)) if offset < 0 => Vec::new(),
                Some((offset, count)) => {
                    let count = if count < 0 { usize::MAX } else { count as usize };
                    matching.skip(offset as usize).take(count).collect()
                }
                None => matching.collect(),
            }
        }
        Bounds::Index(start, stop) => {
            let r = crate::crdt::list::index_range(start, stop, all.len());
            all[r].to_vec()
        }
    };
    if q.with_scores {
        Reply::Pairs(picked.into_iter().map(|(m, s)| (Reply::Bulk(m), Reply::Double(s))).collect())
    } else {
        Reply::Array(picked.into_iter().map(|(m, _)| Reply::Bulk(m)).collect())
    }
}
