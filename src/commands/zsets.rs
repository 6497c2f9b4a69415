//! Sorted sets: ZADD, ZINCRBY, ZREM, ZPOPMIN, ZPOPMAX (typed writes, see [`crate::crdt::zset`]) and ZSCORE,
//! ZMSCORE (quorum reads of the named members) and ZCOUNT, ZRANK, ZREVRANK, ZRANGE, ZRANGEBYSCORE, ZREVRANGE,
//! ZREVRANGEBYSCORE (reads of the order: [`crate::crdt::zorder`]), with Redis's replies. ZCARD is a count
//! (`commands::card`).

use bytes::Bytes;

use super::parse::Parse;
use super::{NodeContext, check_row_kind, coord_error, integer_reply, parse_int, read_collection, syntax_error};
use crate::coordinator::now_ms;
use crate::crdt::rows;
use crate::crdt::zorder::{ScoreBound, ZAnswer, ZBounds, ZQuery};
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
fn score_bound(b: &[u8]) -> Option<ScoreBound> {
    match b.strip_prefix(b"(") {
        Some(rest) => zset::parse_score(rest).map(|score| ScoreBound { score, exclusive: true }),
        None => zset::parse_score(b).map(|score| ScoreBound { score, exclusive: false }),
    }
}

/// A range read's options after its start and stop.
#[derive(Default)]
struct RangeOptions {
    by_score: bool,
    rev: bool,
    limit: Option<(i64, i64)>,
    with_scores: bool,
}

/// Parses the options after ZRANGE's start and stop (or after ZRANGEBYSCORE's min and max).
fn range_options(args: &[Bytes], mut q: RangeOptions) -> Result<RangeOptions, Reply> {
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
    /// ZSCORE.
    Score(Bytes),
    /// ZMSCORE.
    MScore(Vec<Bytes>),
    /// ZRANGE and its kin, ZRANK and ZREVRANK, ZCOUNT: a read of the order, with scores in the reply or not.
    Ordered { query: ZQuery, with_scores: bool },
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
                ZRead::Ordered { query: ZQuery::Count(min, max), with_scores: false }
            }
            "zrank" | "zrevrank" => {
                let member = p.bytes()?;
                let with_scores = match p.rest() {
                    [] => false,
                    [a] if a.eq_ignore_ascii_case(b"WITHSCORE") => true,
                    _ => return Err(syntax_error()),
                };
                ZRead::Ordered { query: ZQuery::Rank { member, rev: name == "zrevrank" }, with_scores }
            }
            _ => {
                let base = RangeOptions {
                    by_score: name.ends_with("byscore"),
                    rev: name.starts_with("zrev"),
                    ..RangeOptions::default()
                };
                let (start, stop) = (p.next()?, p.next()?);
                let q = range_options(p.rest(), base)?;
                let bounds = if q.by_score {
                    // With REV (or ZREVRANGEBYSCORE) the first bound is the maximum.
                    let (a, b) = bounds(start, stop)?;
                    if q.rev { ZBounds::Score(b, a) } else { ZBounds::Score(a, b) }
                } else {
                    ZBounds::Index(parse_int(start)?, parse_int(stop)?)
                };
                ZRead::Ordered {
                    query: ZQuery::Range { rev: q.rev, bounds, limit: q.limit },
                    with_scores: q.with_scores,
                }
            }
        })
    }

    /// Runs the read on the sorted set at `key`: scores by reading the named members' rows, the others from the
    /// replicas' score orders when they agree (`Coordinator::read_ranked`), else from every member.
    pub async fn apply(self, node: &NodeContext, key: Bytes) -> Reply {
        let (asked, one) = match self {
            ZRead::Score(m) => (vec![m], true),
            ZRead::MScore(ms) => (ms, false),
            ZRead::Ordered { query, with_scores } => return ordered(node, key, query, with_scores).await,
        };
        let all = match read_collection(node, &key, RowKind::ZSet, Some(&asked)).await {
            Ok(rows) => rows::scored(&rows, now_ms()),
            Err(reply) => return reply,
        };
        let score = |m: &Bytes| all.iter().find(|(x, _)| x == m).map_or(Reply::Nil, |(_, s)| Reply::Double(*s));
        match one {
            true => score(&asked[0]),
            false => Reply::Array(asked.iter().map(score).collect()),
        }
    }
}

/// ZRANGE and its kin, ZRANK and ZREVRANK, ZCOUNT: the answer to `query` in Redis's reply shape, or WRONGTYPE.
async fn ordered(node: &NodeContext, key: Bytes, query: ZQuery, with_scores: bool) -> Reply {
    let answer = match node.coordinator.read_ranked(&key, &query).await {
        Ok((answer, key_row)) => match check_row_kind(key_row.as_ref(), RowKind::ZSet) {
            Ok(()) => answer,
            Err(reply) => return reply,
        },
        Err(e) => return coord_error(e),
    };
    let score = |bits: u64| Reply::Double(f64::from_bits(bits));
    match answer {
        ZAnswer::Count(n) => Reply::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
        ZAnswer::Rank(None) => Reply::Nil,
        ZAnswer::Rank(Some((rank, s))) if with_scores => Reply::Array(vec![Reply::Integer(rank as i64), score(s)]),
        ZAnswer::Rank(Some((rank, _))) => Reply::Integer(rank as i64),
        ZAnswer::Members(picked) if with_scores => {
            Reply::Pairs(picked.into_iter().map(|(m, s)| (Reply::Bulk(m), score(s))).collect())
        }
        ZAnswer::Members(picked) => Reply::Array(picked.into_iter().map(|(m, _)| Reply::Bulk(m)).collect()),
    }
}
